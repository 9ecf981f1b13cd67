//! Run history: `runs`, `compare`, sweeps, `dag`, and where the cache lives.

use super::support::*;

#[test]
fn runs_lists_history_and_compare_shows_what_differs() {
    let p = Project::new(5, 0);
    assert_eq!(p.run_json(&["run", "p.toml"]).0, 0);
    assert_eq!(
        p.run_json(&["run", "p.toml", "--set", "train.epochs=2"]).0,
        0
    );
    let v = p.invoke(&["runs", "p.toml"]).succeeds().json;
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        runs[0]["overrides"],
        serde_json::json!(["train.epochs=2"]),
        "newest first"
    );
    assert_eq!(
        (runs[0]["ran"].as_u64(), runs[0]["cached"].as_u64()),
        (Some(2), Some(3))
    );
    let ids: Vec<&str> = runs.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let c = p.invoke(&["compare", ids[0], ids[1]]).succeeds().json;
    assert_eq!(
        c["params"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["train.epochs"],
        "{c}"
    );
    assert_eq!(c["params"]["train.epochs"], serde_json::json!(["2", "3"]));
    assert!(c["metrics"]["train.fake_metric"].is_array());
    let _ = p.invoke(&["compare", "nonexistent"]).exits(2).json;
}

/// A 2×2 sweep; the second list holds TOML arrays with commas inside.
const GRID_SWEEP: [&str; 6] = [
    "run",
    "p.toml",
    "--sweep",
    "train.epochs=1,2",
    "--sweep",
    "train.conv=[{filters = 4, kernel = 3}],[{filters = 8, kernel = 3}, {filters = 8, kernel = 3}]",
];

#[test]
fn sweep_runs_the_grid_sharing_upstream_and_prints_the_compare_table() {
    let p = Project::new(5, 0);
    let out = p.run(&GRID_SWEEP);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("sweep 4/4: --set train.epochs=2 --set train.conv=[{filters = 8"));
    let mut starts = p.starts();
    starts.sort();
    // The fake train's output depends on `epochs` only, so evaluate runs once per epochs value
    // (early cutoff); train runs once per grid point.
    let expected: Vec<&str> = ["baseline", "crop"]
        .into_iter()
        .chain(["evaluate"; 2])
        .chain(["train"; 4])
        .collect();
    assert_eq!(starts, expected, "upstream once, train per grid point");
    assert!(stdout.contains("parameters that differ:") && stdout.contains("train.epochs"));
    assert!(stdout.contains("train.conv") && !stdout.contains("crop.size"));
    let header = stdout.lines().find(|l| l.starts_with("   ")).unwrap();
    assert_eq!(
        header.split_whitespace().count(),
        4,
        "one column per run: {stdout}"
    );
    // The same sweep again reuses everything and still prints the table; JSON too.
    p.clear_log();
    let v = p.invoke(&GRID_SWEEP).succeeds().json;
    assert!(p.starts().is_empty(), "{:?}", p.starts());
    assert_eq!(v["runs"].as_array().unwrap().len(), 4);
    assert_eq!(
        v["params"]["train.epochs"],
        serde_json::json!(["1", "1", "2", "2"])
    );
    // A bad point is reported before anything runs.
    p.clear_log();
    let out = p.run(&["run", "p.toml", "--sweep", "train.epochs=1,-3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(p.starts().is_empty());
    let out = p.run(&["run", "p.toml", "--sweep", "train.epochs"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected STAGE.KEY=V1,V2"));
}

#[test]
fn compare_pipelines_that_extend_one_another() {
    let p = Project::new(5, 0);
    p.write(
        "b.toml",
        "extends = \"p.toml\"\n\n[stages.train]\nepochs = 1\n",
    );
    assert_eq!(p.run_json(&["run", "p.toml"]).0, 0);
    let out = p.run(&["compare", "--pipelines", "p.toml", "b.toml"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("b.toml: stage `train` is stale"),
        "says what is missing"
    );
    assert_eq!(p.run_json(&["run", "b.toml"]).0, 0);
    let v = p
        .invoke(&["compare", "--pipelines", "p.toml", "b.toml"])
        .succeeds()
        .json;
    assert_eq!(v["runs"], serde_json::json!(["p.toml", "b.toml"]));
    assert_eq!(
        v["params"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["train.epochs"],
        "{v}"
    );
    assert_eq!(v["params"]["train.epochs"], serde_json::json!(["3", "1"]));
    let fake = v["metrics"]["train.fake_metric"].as_array().unwrap();
    assert!(fake.iter().all(|m| m.is_number()), "{v}");
    let out = p.run(&["compare", "--pipelines", "p.toml", "b.toml", "--csv"]);
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(csv.contains("\nname,p.toml,b.toml\n"), "{csv}");
    assert!(csv.contains("param train.epochs,3,1"), "{csv}");
}

#[test]
fn dag_renders_text_dot_and_mermaid() {
    let p = Project::new(1, 0);
    let out = p.run(&["dag", "p.toml"]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("evaluate (evaluate) ← train, crop, baseline")
    );
    let out = p.run(&["dag", "p.toml", "--format", "dot"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"crop\" -> \"train\";"));
    let out = p.run(&["dag", "p.toml", "--format", "mermaid"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("crop --> train"));
}

#[test]
fn cache_dir_flag_and_env_are_honoured() {
    let p = Project::new(3, 0);
    let elsewhere = tempfile::tempdir().unwrap();
    let dir = elsewhere.path().join("c");
    let _ = p
        .invoke(&[
            "run",
            "p.toml",
            "--until",
            "ingest",
            "--cache-dir",
            dir.to_str().unwrap(),
        ])
        .succeeds()
        .json;
    assert_eq!(entries(&dir.join("objects")), 1);
    assert_eq!(
        std::fs::read_dir(p.path().join("cache/objects"))
            .map(|d| d.count())
            .unwrap_or(0),
        0
    );
    let out = p
        .command(&["run", "p.toml", "--until", "ingest", "--json"])
        .env("GALAXY_PIPE_CACHE_DIR", &dir)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"cached\""));
}
