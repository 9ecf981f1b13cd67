//! train, evaluate, submit with the real binary: determinism across threads, resume after a
//! kill, a model that beats the mean, the Kaggle submission format.

use super::support::*;

fn history_losses(dir: &std::path::Path) -> Vec<(u32, Option<u32>, f64)> {
    use arrow::array::{Array, Float64Array, UInt32Array};
    let mut out = Vec::new();
    for b in galaxy_pipe::artifacts::read_parquet(&dir.join("history.parquet")).unwrap() {
        let e = b
            .column_by_name("epoch")
            .unwrap()
            .as_any()
            .downcast_ref::<UInt32Array>()
            .unwrap()
            .clone();
        let n = b
            .column_by_name("batch")
            .unwrap()
            .as_any()
            .downcast_ref::<UInt32Array>()
            .unwrap()
            .clone();
        let l = b
            .column_by_name("loss")
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .clone();
        for r in 0..b.num_rows() {
            out.push((e.value(r), (!n.is_null(r)).then(|| n.value(r)), l.value(r)));
        }
    }
    out
}

#[test]
fn training_gives_the_same_bytes_on_one_thread_as_on_every_core() {
    // flex runs its kernels on rayon's threads: the model must not depend on how many there are.
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 120, 4, 5);
    std::fs::write(dir.path().join("p.toml"), NN_PIPELINE).unwrap();
    let mut trained = Vec::new();
    for threads in ["1", "2"] {
        let cache = format!("cache-{threads}");
        let mut args = vec!["run", "p.toml", "--until", "train", "--cache-dir", &cache];
        args.extend(SMALL_NET);
        let out = bin()
            .current_dir(dir.path())
            .env("RAYON_NUM_THREADS", threads)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        trained.push(artifact_bytes(&dir.path().join(&cache)));
    }
    assert!(
        trained[0]
            .iter()
            .any(|(name, _)| name.ends_with("model.bin"))
    );
    assert!(
        trained[0] == trained[1],
        "the same artifacts, model.bin included"
    );
}

#[test]
fn training_killed_mid_run_resumes_to_the_same_result_as_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 400, 20, 4);
    std::fs::write(dir.path().join("p.toml"), NN_PIPELINE).unwrap();
    let mut args: Vec<&str> = vec![
        "run",
        "p.toml",
        "--until",
        "evaluate",
        "--set",
        "train.epochs=6",
    ];
    args.extend(SMALL_NET);

    // Uninterrupted, in its own cache.
    let clean_cache = dir.path().join("clean-cache");
    let mut clean_args = args.clone();
    clean_args.extend(["--cache-dir", clean_cache.to_str().unwrap()]);
    let clean = Invocation::real(dir.path(), &clean_args).succeeds().json;

    // Killed once the first epoch's checkpoint exists, then resumed.
    let cache = dir.path().join("cache");
    kill_at_the_first_checkpoint(dir.path(), &args, &cache);
    let resumed = Invocation::real(dir.path(), &args).succeeds().json;
    assert_eq!(
        ids_with(&resumed, "ran"),
        ["train", "evaluate"],
        "{resumed}"
    );
    let train = resumed["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "train")
        .unwrap();
    assert!(
        train["notes"]
            .to_string()
            .contains("resumed from the checkpoint after epoch"),
        "{train}"
    );
    assert_eq!(
        history_losses(&object_of(&resumed, &cache, "train")),
        history_losses(&object_of(&clean, &clean_cache, "train"))
    );
    let rmse = |v: &serde_json::Value| {
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == "evaluate")
            .unwrap()["metrics"]["rmse"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(
        rmse(&resumed),
        rmse(&clean),
        "the resumed model predicts exactly as the uninterrupted one"
    );
    assert!(
        std::fs::read_dir(cache.join("work"))
            .unwrap()
            .next()
            .is_none(),
        "checkpoints removed after publishing"
    );
}

#[test]
fn a_trained_model_beats_the_mean_on_synthetic_galaxies_and_submits() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("cache")).unwrap();
    synth(dir.path(), 600, 30, 8);
    std::fs::write(dir.path().join("p.toml"), NN_PIPELINE).unwrap();
    let mut args: Vec<&str> = vec![
        "run",
        "p.toml",
        "--set",
        "train.epochs=8",
        "--set",
        "train.output=\"tree\"",
        "--set",
        "evaluate.tta=true",
    ];
    args.extend(SMALL_NET);
    let v = Invocation::real(dir.path(), &args).succeeds().json;
    let m = &v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "evaluate")
        .unwrap()["metrics"];
    assert!(
        m["rmse"].as_f64().unwrap() < m["rmse_baseline_mean"].as_f64().unwrap(),
        "{m}"
    );
    assert_eq!(
        m["tree_consistent"].as_f64().unwrap(),
        1.0,
        "the tree head only gives consistent answers: {m}"
    );
    let csv = std::fs::read_to_string(dir.path().join("out/submission.csv")).unwrap();
    assert_eq!(csv.lines().count(), 31);
}

#[test]
fn submission_for_the_real_sample_has_the_kaggle_format() {
    let Some(sample) = sample_dir() else { return };
    let work = tempfile::tempdir().unwrap();
    let out_csv = work.path().join("submission.csv");
    let set_output = format!("submit.output={}", out_csv.display());
    let mut args: Vec<&str> = vec![
        "run",
        "pipelines/sample.toml",
        "--until",
        "submit",
        "--cache-dir",
        work.path().to_str().unwrap(),
    ];
    args.extend(["--set", "train.epochs=1", "--set", &set_output]);
    args.extend(SMALL_NET);
    let _ = Invocation::real(&repo_root(), &args).succeeds().json;
    let csv = std::fs::read_to_string(&out_csv).unwrap();
    let mut lines = csv.lines();
    let header = lines.next().unwrap();
    assert_eq!(
        header,
        format!("GalaxyID,{}", galaxy_pipe::labels::CLASS_NAMES.join(","))
    );
    let ids: Vec<u64> = lines
        .map(|l| {
            let fields: Vec<&str> = l.split(',').collect();
            assert_eq!(fields.len(), 38, "{l}");
            assert!(
                fields[1..]
                    .iter()
                    .all(|v| (0.0..=1.0).contains(&v.parse::<f64>().unwrap())),
                "{l}"
            );
            fields[0].parse().unwrap()
        })
        .collect();
    let mut expected: Vec<u64> = std::fs::read_dir(sample.join("images_test_rev1"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".jpg")
                .parse()
                .unwrap()
        })
        .collect();
    expected.sort();
    assert_eq!(ids, expected, "one row per test image, sorted by id");
}
