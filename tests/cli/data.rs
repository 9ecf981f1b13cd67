//! The data stages on real JPEGs (synthetic and the Kaggle sample): bad images, a full disk,
//! missing and malformed labels.

use super::support::*;

#[test]
fn synthetic_data_runs_through_ingest_crop_and_baseline() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("cache")).unwrap();
    synth(dir.path(), 240, 16, 5);
    // The labels obey the decision tree.
    let labels = galaxy_pipe::stages::ingest::read_labels(
        &dir.path().join("data/training_solutions_rev1.csv"),
    )
    .unwrap();
    assert_eq!(labels.len(), 240);
    assert!(
        labels
            .values()
            .all(|l| galaxy_pipe::labels::tree_deviation(l) < 1e-5)
    );

    std::fs::write(dir.path().join("p.toml"), DATA_PIPELINE).unwrap();
    let v = Invocation::real(dir.path(), &["run", "p.toml"])
        .succeeds()
        .json;
    let crops = galaxy_pipe::artifacts::read_crops(
        &object_of(&v, &dir.path().join("cache"), "crop").join("crops.parquet"),
    )
    .unwrap();
    assert_eq!((crops.ids.len(), crops.size), (256, 64));
    assert_eq!(crops.pixels.len(), 256 * 64 * 64 * 3);
    let m = &v["stages"][2]["metrics"];
    let (mean, colour) = (
        m["rmse_mean"].as_f64().unwrap(),
        m["rmse_average_colour"].as_f64().unwrap(),
    );
    assert!(
        colour < mean,
        "a regression on the synthetic images beats the mean predictor: {m}"
    );
    // explore's figures are real PNGs of the promised sizes.
    let figures = object_of(&v, &dir.path().join("cache"), "explore");
    for (name, w) in [
        ("class_counts.png", 1400),
        ("terminal_classes.png", 1400),
        ("correlation_q08.png", 560),
        ("mean_image.png", 424),
    ] {
        let img = image::open(figures.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(img.width(), w, "{name}");
    }
    assert!(image::open(figures.join("gallery.png")).unwrap().width() > 1000);
    let summary = galaxy_pipe::artifacts::read_parquet(&figures.join("summary.parquet")).unwrap();
    assert_eq!(summary[0].num_rows(), 37);
}

#[test]
fn real_sample_runs_through_ingest_crop_and_baseline() {
    let Some(_) = sample_dir() else { return };
    let cache = tempfile::tempdir().unwrap();
    let args = [
        "run",
        "pipelines/sample.toml",
        "--until",
        "baseline",
        "--cache-dir",
        cache.path().to_str().unwrap(),
    ];
    let v = Invocation::real(&repo_root(), &args).succeeds().json;
    let catalog = galaxy_pipe::artifacts::read_catalog(
        &object_of(&v, cache.path(), "ingest").join("catalog.parquet"),
    )
    .unwrap();
    assert_eq!(catalog.len(), 7_866 + 1_197);
    assert_eq!(catalog.iter().filter(|r| r.labels.is_none()).count(), 1_197);
    let valid = catalog
        .iter()
        .filter(|r| r.split == galaxy_pipe::artifacts::Split::Valid)
        .count();
    assert!(
        (600..1000).contains(&valid),
        "about 10% validation: {valid}"
    );
    let crops = galaxy_pipe::artifacts::read_crops(
        &object_of(&v, cache.path(), "crop").join("crops.parquet"),
    )
    .unwrap();
    assert_eq!(crops.ids.len(), 9_063);
    let m = &v["stages"][2]["metrics"];
    let mean = m["rmse_mean"].as_f64().unwrap();
    assert!((0.15..0.2).contains(&mean), "{m}");
    assert!(
        m["rmse_central_pixel"].as_f64().unwrap() < mean
            && m["rmse_average_colour"].as_f64().unwrap() < mean,
        "{m}"
    );
}

#[test]
fn bad_images_fail_the_crop_naming_the_file_or_are_skipped() {
    let truncated = {
        let dir = data_with_bad_image(b"");
        let good = std::fs::read(dir.path().join("data/images_training_rev1/100003.jpg")).unwrap();
        good[..good.len() / 3].to_vec()
    };
    let mut small = Vec::new();
    image::RgbImage::new(100, 80)
        .write_to(
            &mut std::io::Cursor::new(&mut small),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    for (bytes, expect) in [
        (b"".to_vec(), "not a decodable JPEG"),
        (b"just some text".to_vec(), "not a decodable JPEG"),
        (truncated, "truncated JPEG"),
        (small, "is 100×80, expected 424×424"),
    ] {
        let dir = data_with_bad_image(&bytes);
        let Finished {
            json: v,
            stderr: err,
            ..
        } = Invocation::real(dir.path(), &["run", "p.toml", "--until", "crop"]).exits(1);
        assert_eq!(ids_with(&v, "failed"), ["crop"]);
        assert!(err.contains("100004.jpg") && err.contains(expect), "{err}");
        assert_eq!(
            entries(&dir.path().join("cache/objects")),
            1,
            "only ingest published"
        );
        // Skipping instead: the run succeeds and the bad image is listed.
        let v = Invocation::real(
            dir.path(),
            &[
                "run",
                "p.toml",
                "--until",
                "crop",
                "--set",
                "crop.on_bad_image=skip",
            ],
        )
        .succeeds()
        .json;
        let out = object_of(&v, &dir.path().join("cache"), "crop");
        assert!(out.join("skipped.parquet").exists());
        assert_eq!(
            galaxy_pipe::artifacts::read_crops(&out.join("crops.parquet"))
                .unwrap()
                .ids
                .len(),
            11
        );
    }
}

#[test]
fn a_full_disk_fails_the_stage_naming_the_file_and_publishes_nothing() {
    // RLIMIT_FSIZE stands in for a full disk: writes past 200 KiB fail with EFBIG.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("cache")).unwrap();
    synth(dir.path(), 60, 0, 2);
    std::fs::write(dir.path().join("p.toml"), DATA_PIPELINE).unwrap();
    let bin_path = assert_cmd::cargo::cargo_bin("galaxy-pipe");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -f 200 && exec '{}' run p.toml --until crop --set crop.size=128",
            bin_path.display()
        ))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stage `crop`")
            && err.contains("crops.parquet")
            && err.contains("File too large"),
        "{err}"
    );
    assert_eq!(
        entries(&dir.path().join("cache/objects")),
        1,
        "only ingest was published"
    );
    assert_eq!(
        entries(&dir.path().join("cache/tmp")),
        0,
        "the partial output was removed"
    );
    let _ = Invocation::real(
        dir.path(),
        &["run", "p.toml", "--until", "crop", "--set", "crop.size=128"],
    )
    .succeeds()
    .json;
}

#[test]
fn label_rows_without_images_fail_ingest_or_are_skipped() {
    let dir = data_with_bad_image(b"x");
    std::fs::remove_file(dir.path().join("data/images_training_rev1/100004.jpg")).unwrap();
    let Finished {
        json: _,
        stderr: err,
        ..
    } = Invocation::real(dir.path(), &["run", "p.toml", "--until", "ingest"]).exits(1);
    assert!(
        err.contains("1 label row(s)") && err.contains("first: 100004"),
        "{err}"
    );
    let v = Invocation::real(
        dir.path(),
        &[
            "run",
            "p.toml",
            "--until",
            "ingest",
            "--set",
            "ingest.on_missing_image=skip",
        ],
    )
    .succeeds()
    .json;
    assert_eq!(
        v["stages"][0]["metrics"]["train_rows"].as_f64().unwrap()
            + v["stages"][0]["metrics"]["valid_rows"].as_f64().unwrap(),
        11.0
    );
}

#[test]
fn malformed_label_csv_fails_ingest_with_file_and_line() {
    let dir = data_with_bad_image(b"x");
    let csv = dir.path().join("data/training_solutions_rev1.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut fields: Vec<&str> = lines[1].split(',').collect();
    fields[1] = "NaN";
    lines[1] = fields.join(",");
    std::fs::write(&csv, lines.join("\n") + "\n").unwrap();
    let Finished {
        json: _,
        stderr: err,
        ..
    } = Invocation::real(dir.path(), &["run", "p.toml", "--until", "ingest"]).exits(1);
    assert!(
        err.contains("training_solutions_rev1.csv:2: Class1.1 = NaN is outside [0, 1]"),
        "{err}"
    );
}
