//! The HTML report in Chromium, and a benchmark group run alone.

use super::support::*;

/// Debian's Chromium (or another Chrome) for the report check; `None` (with a loud message)
/// when there is none, unless `GALAXY_PIPE_REQUIRE_CHROMIUM` is set, as `.ci/run` does once it
/// has installed it.
fn chromium() -> Option<String> {
    let candidates = std::env::var("GALAXY_PIPE_CHROMIUM")
        .into_iter()
        .chain(["chromium", "chromium-browser", "google-chrome"].map(String::from));
    for name in candidates {
        if std::process::Command::new(&name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(name);
        }
    }
    if std::env::var_os("GALAXY_PIPE_REQUIRE_CHROMIUM").is_some() {
        panic!("Chromium is required (GALAXY_PIPE_REQUIRE_CHROMIUM) but not found");
    }
    eprintln!("\n!!! SKIPPED: no Chromium found; the report was not checked in a browser !!!\n");
    None
}

fn headless(chrome: &str, profile: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(chrome);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

#[test]
fn report_is_one_self_contained_html_file_that_renders_in_chromium() {
    let dir = small_full_project(150, 6);
    let v = Invocation::real(dir.path(), &["run", "p.toml"])
        .succeeds()
        .json;
    let run_id = v["run_id"].as_str().unwrap().to_string();
    let valid = v["stages"][0]["metrics"]["valid_rows"].as_f64().unwrap() as usize;
    // A later run makes the first one not the newest.
    assert_eq!(
        run_real(dir.path(), &["run", "p.toml", "--set", "train.epochs=1"]).0,
        0
    );
    let _ = Invocation::real(
        dir.path(),
        &["report", &run_id[..20], "--out", "report.html"],
    )
    .succeeds()
    .json;
    let html = std::fs::read_to_string(dir.path().join("report.html")).unwrap();
    assert!(html.contains(&run_id));
    for section in [
        "<h2>Pipeline</h2>",
        "<svg class=\"dag\"",
        "Stages: timings and cache hits",
        "<h2>Parameters</h2>",
        "<h2>Data exploration</h2>",
        "<h2>Crops</h2>",
        "<h2>Training</h2>",
        "<h2>Evaluation against the baselines</h2>",
        "<h2>Worst-predicted validation galaxies</h2>",
    ] {
        assert!(html.contains(section), "missing {section}");
    }
    assert!(!html.contains("class=\"missing\""), "every part was found");
    // Self-contained: every image is inlined, nothing is fetched.
    let images = html.matches("<img ").count();
    assert_eq!(
        html.matches("<img src=\"data:image/png;base64,").count()
            + html
                .matches("<img class=\"crop\" src=\"data:image/png;base64,")
                .count(),
        images
    );
    for external in ["src=\"http", "href=\"http", "src=\"file:", "<link ", "url("] {
        assert!(!html.contains(external), "{external}");
    }
    let worst = html.matches("class=\"crop\"").count();
    assert_eq!(worst, valid.min(12), "worst-predicted gallery");
    // 3 explore figures + gallery + 11 correlation maps + contact sheet + loss curve + per-class chart.
    assert_eq!(images, 18 + worst);
    // The newest run is the default.
    let Finished {
        json: _, stderr: _, ..
    } = Invocation::real(dir.path(), &["report", "--out", "newest.html"]).succeeds();
    assert!(
        std::fs::read_to_string(dir.path().join("newest.html"))
            .unwrap()
            .contains("train.epochs=1")
    );

    // After gc, a report of the older run still renders and says what is gone.
    assert_eq!(run_real(dir.path(), &["gc", "--keep-runs", "1"]).0, 0);
    let _ = Invocation::real(dir.path(), &["report", &run_id, "--out", "old.html"])
        .succeeds()
        .json;
    let old = std::fs::read_to_string(dir.path().join("old.html")).unwrap();
    assert!(
        old.contains("are no longer in the cache") && old.contains("<h2>Crops</h2>"),
        "names what gc removed"
    );

    let Some(chrome) = chromium() else { return };
    let page = format!("file://{}", dir.path().join("report.html").display());
    let dom = headless(&chrome, &dir.path().join("profile-dom"))
        .args(["--virtual-time-budget=10000", "--dump-dom", &page])
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains(&format!(
            "data-images-total=\"{images}\" data-images-loaded=\"{images}\""
        )),
        "Chromium decoded every figure: {}",
        dom.lines()
            .find(|l| l.contains("<body"))
            .unwrap_or("no <body> in the DOM dump")
    );
    let shot = dir.path().join("report.png");
    let out = headless(&chrome, &dir.path().join("profile-shot"))
        .args(["--window-size=1366,2400", "--virtual-time-budget=10000"])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&page)
        .output()
        .unwrap();
    assert!(shot.exists(), "{}", String::from_utf8_lossy(&out.stderr));
    let png = image::open(&shot).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (1366, 2400));
    // Not a blank page: many distinct colours (text, figures, galaxies).
    let colours: std::collections::BTreeSet<[u8; 3]> = png.pixels().map(|p| p.0).collect();
    assert!(colours.len() > 500, "{} colours", colours.len());
}

#[test]
fn bench_only_crop_measures_only_the_crop_figure_against_its_baseline() {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 24, 4, 3);
    let bench = |only: &str| {
        let args = [
            "bench", "--only", only, "--sample", "data", "--work", "bench",
        ];
        run_real(dir.path(), &args)
    };
    let (code, v, stderr) = bench("crop");
    assert_eq!(code, 0, "{stderr}");
    let figures = v["figures"].as_array().unwrap();
    assert_eq!(figures.len(), 1, "{v}");
    let crop = &figures[0];
    assert!(crop["what"].as_str().unwrap().starts_with("crop stage"));
    let (value, baseline) = (
        crop["value"].as_f64().unwrap(),
        crop["baseline"].as_f64().unwrap(),
    );
    assert!(value > 0.0 && baseline > 0.0, "{crop}");
    assert!((crop["ratio"].as_f64().unwrap() - value / baseline).abs() < 1e-9);
    // An unknown group is refused before anything is measured.
    let (code, _, stderr) = bench("gpu");
    assert_eq!(code, 2);
    assert!(stderr.contains("crop"), "{stderr}");
}
