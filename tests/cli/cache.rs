//! The cache contract: no-op re-runs, what re-runs after a change, kills, concurrent runs, gc,
//! corrupt artifacts, the stat cache.

use std::process::Stdio;
use std::time::Duration;

use super::support::*;

#[test]
fn second_run_executes_nothing() {
    let p = Project::new(20, 4);
    let first = p.invoke(&["run", "p.toml"]).succeeds().json;
    assert_eq!(
        ids_with(&first, "ran"),
        ["ingest", "crop", "baseline", "train", "evaluate"]
    );
    p.clear_log();
    let second = p.invoke(&["run", "p.toml"]).succeeds().json;
    assert_eq!(ids_with(&second, "cached").len(), 5);
    assert!(p.starts().is_empty(), "no stage executed: {:?}", p.starts());
    let keys = |v: &serde_json::Value| {
        v["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["key"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&first), keys(&second));
}

#[test]
fn comments_formatting_key_order_and_explicit_defaults_do_not_rerun() {
    let p = Project::new(10, 0);
    assert_eq!(p.run_json(&["run", "p.toml"]).0, 0);
    p.clear_log();
    // Same pipeline: comments, reordered keys and tables, odd spacing, defaults written out.
    p.write(
        "p.toml",
        r#"
# rewritten by hand
[stages.crop]
size   =   32          # same value
inputs = [ "ingest" ]
kind = "crop"
threshold = 10         # the default, now explicit

[pipeline]
seed = 7
name = "test"

[stages.ingest]
valid_fraction = 0.1   # default
data_dir = "data"
kind = "ingest"

[stages.train]
inputs = ["crop"]
kind = "train"
epochs = 3

[stages.baseline]
kind = "baseline"
inputs = ["ingest", "crop"]

[stages.evaluate]
kind = "evaluate"
inputs = ["train", "crop", "baseline"]
"#,
    );
    let v = p.invoke(&["run", "p.toml"]).succeeds().json;
    assert_eq!(ids_with(&v, "cached").len(), 5, "{v}");
    assert!(p.starts().is_empty());
}

#[test]
fn set_reruns_exactly_the_affected_stages() {
    let p = Project::new(10, 0);
    assert_eq!(p.run_json(&["run", "p.toml"]).0, 0);
    // train's param: train and evaluate (whose input changed) re-run; nothing upstream.
    p.clear_log();
    let (_, v) = p.run_json(&["run", "p.toml", "--set", "train.epochs=2"]);
    assert_eq!(ids_with(&v, "ran"), ["train", "evaluate"]);
    assert_eq!(p.starts(), ["train", "evaluate"]);
    // crop's threshold changes crop's key, but (in this fake) not its bytes: early cutoff.
    p.clear_log();
    let (_, v) = p.run_json(&["run", "p.toml", "--set", "crop.threshold=20"]);
    assert_eq!(ids_with(&v, "ran"), ["crop"], "{v}");
    assert_eq!(
        ids_with(&v, "cached"),
        ["ingest", "baseline", "train", "evaluate"]
    );
    // crop's size changes its bytes: everything downstream of crop re-runs.
    p.clear_log();
    let (_, v) = p.run_json(&["run", "p.toml", "--set", "crop.size=48"]);
    assert_eq!(
        ids_with(&v, "ran"),
        ["crop", "baseline", "train", "evaluate"]
    );
}

#[test]
fn overrides_are_recorded_in_the_run_record() {
    let p = Project::new(5, 0);
    let (_, v) = p.run_json(&["run", "p.toml", "--set", "train.epochs=1"]);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(v["record"].as_str().unwrap()).unwrap()).unwrap();
    assert_eq!(record["overrides"], serde_json::json!(["train.epochs=1"]));
    assert_eq!(record["stages"].as_array().unwrap().len(), 5);
    assert!(record["stages"][0]["key"].as_str().unwrap().len() == 64);
    assert!(record["stages"][1]["metrics"]["fake_metric"].is_number());
}

#[test]
fn changed_input_file_reruns_ingest_and_why_names_it() {
    let p = Project::new(10, 2);
    assert_eq!(p.run_json(&["run", "p.toml"]).0, 0);
    std::fs::write(
        p.path().join("data/images_training_rev1/100003.jpg"),
        "different bytes",
    )
    .unwrap();
    let out = p.run(&["why", "p.toml", "ingest"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("input files `images`: 1 changed (100003.jpg)"),
        "{text}"
    );
    let (_, v) = p.run_json(&["run", "p.toml"]);
    assert!(ids_with(&v, "ran").contains(&"ingest".to_string()), "{v}");
}

#[test]
fn why_and_status_explain_a_param_change() {
    let p = Project::new(5, 0);
    assert_eq!(p.run_json(&["run", "p.toml"]).0, 0);
    let out = p.run(&[
        "why",
        "p.toml",
        "train",
        "--set",
        "train.learning_rate=0.01",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("param `learning_rate`: 0.001 → 0.01"),
        "{text}"
    );
    let (_, v) = p.run_json(&["status", "p.toml", "--set", "train.learning_rate=0.01"]);
    let states: Vec<(String, String)> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().into(),
                s["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(states[3], ("train".into(), "stale".into()));
    assert_eq!(states[4], ("evaluate".into(), "pending".into()));
    assert_eq!(states[0], ("ingest".into(), "fresh".into()));
    assert_eq!(
        p.starts().len(),
        4,
        "status runs nothing (the four fake stages ran once, in the first run)"
    );
}

#[test]
fn dry_run_plans_without_running() {
    let p = Project::new(5, 0);
    let v = p.invoke(&["run", "p.toml", "--dry-run"]).succeeds().json;
    assert_eq!(ids_with(&v, "miss").len(), 5, "everything would run: {v}");
    assert!(
        v["stages"][1]["key"].is_null(),
        "crop's key depends on ingest's future output"
    );
    assert!(p.starts().is_empty());
    assert_eq!(
        entries(&p.path().join("cache/objects")),
        0,
        "nothing published"
    );
    assert_eq!(p.run_json(&["run", "p.toml", "--until", "crop"]).0, 0);
    let (_, v) = p.run_json(&["run", "p.toml", "--dry-run"]);
    assert_eq!(ids_with(&v, "hit"), ["ingest", "crop"]);
    assert_eq!(ids_with(&v, "miss"), ["baseline", "train", "evaluate"]);
}

#[test]
fn until_only_and_force_select_stages() {
    let p = Project::new(5, 0);
    let (_, v) = p.run_json(&["run", "p.toml", "--until", "crop"]);
    assert_eq!(outcomes(&v).len(), 2);
    // --only needs its inputs cached: train's input crop is.
    p.clear_log();
    let v = p
        .invoke(&["run", "p.toml", "--only", "train"])
        .succeeds()
        .json;
    assert_eq!(ids_with(&v, "ran"), ["train"]);
    // evaluate's input baseline is not cached: skipped, exit 1, nothing ran.
    p.clear_log();
    let v = p
        .invoke(&["run", "p.toml", "--only", "evaluate"])
        .exits(1)
        .json;
    assert_eq!(ids_with(&v, "skipped"), ["evaluate"]);
    assert!(p.starts().is_empty());
    // --force re-runs a cached stage.
    let (_, v) = p.run_json(&["run", "p.toml", "--until", "crop", "--force", "crop"]);
    assert_eq!(ids_with(&v, "ran"), ["crop"]);
    let (_, v) = p.run_json(&["run", "p.toml", "--until", "crop", "--force-all"]);
    assert_eq!(ids_with(&v, "ran"), ["ingest", "crop"]);
    let _ = p
        .invoke(&["run", "p.toml", "--force", "crpo"])
        .exits(2)
        .json;
}

#[test]
fn a_failing_stage_exits_1_skips_downstream_and_publishes_nothing() {
    let p = Project::new(5, 0);
    let mut cmd = p.command(&["run", "p.toml", "--json"]);
    let out = cmd.env("GP_FAIL", "train").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(stdout.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(ids_with(&v, "failed"), ["train"]);
    assert_eq!(ids_with(&v, "skipped"), ["evaluate"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("injected failure in train"));
    assert_eq!(
        entries(&p.path().join("cache/tmp")),
        0,
        "no temp left behind"
    );
    // The next run re-runs only what failed.
    p.clear_log();
    let _ = p.invoke(&["run", "p.toml"]).succeeds().json;
    assert_eq!(p.starts(), ["train", "evaluate"]);
}

#[test]
fn a_flipped_byte_in_a_cached_artifact_is_detected_and_recomputed() {
    let p = Project::new(5, 0);
    let (_, v) = p.run_json(&["run", "p.toml"]);
    let crop_key = v["stages"][1]["key"].as_str().unwrap().to_string();
    let file = p
        .path()
        .join("cache/objects")
        .join(&crop_key)
        .join("out/out.bin");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[3] ^= 0x40;
    std::fs::write(&file, &bytes).unwrap();
    p.clear_log();
    let out = p.run(&["run", "p.toml"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cached output of `crop` is damaged (out.bin does not match its digest)"),
        "{err}"
    );
    assert_eq!(
        p.starts(),
        ["crop"],
        "recomputed, and downstream still cached (same bytes)"
    );
    // Truncation and a garbled fingerprint are caught too.
    std::fs::write(&file, b"").unwrap();
    p.clear_log();
    assert!(p.run(&["run", "p.toml"]).status.success());
    assert_eq!(p.starts(), ["crop"]);
    std::fs::write(
        p.path()
            .join("cache/objects")
            .join(&crop_key)
            .join("fingerprint.json"),
        "{not json",
    )
    .unwrap();
    p.clear_log();
    assert!(p.run(&["run", "p.toml"]).status.success());
    assert_eq!(p.starts(), ["crop"]);
}

#[test]
fn kill_mid_stage_then_rerun_resumes_from_the_last_published_stage() {
    let p = Project::new(8, 2);
    // One stage at a time, so the stages before train are published when train starts.
    let mut child = p
        .command(&["run", "p.toml", "-j", "1"])
        .env("GP_SLEEP_MS", "300")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until train has finished one epoch, then SIGKILL the run.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !p.log_lines().iter().any(|l| l.starts_with("train epoch-0")) {
        assert!(
            std::time::Instant::now() < deadline,
            "train never started: {:?}",
            p.log_lines()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        entries(&p.path().join("cache/tmp")) > 0,
        "the killed run left its temp folder"
    );
    assert_eq!(
        entries(&p.path().join("cache/objects")),
        3,
        "ingest, crop, baseline published"
    );
    p.clear_log();
    let v = p.invoke(&["run", "p.toml"]).succeeds().json;
    assert_eq!(
        ids_with(&v, "ran"),
        ["train", "evaluate"],
        "published stages were reused"
    );
    assert!(
        p.log_lines()
            .iter()
            .any(|l| l.starts_with("train resume-from-1")),
        "train resumed: {:?}",
        p.log_lines()
    );
    assert_eq!(
        entries(&p.path().join("cache/tmp")),
        0,
        "orphaned temp folders were swept"
    );
    assert_eq!(entries(&p.path().join("cache/locks")), 0, "no locks left");
    assert_eq!(
        entries(&p.path().join("cache/work")),
        0,
        "work area removed after publishing"
    );
}

#[test]
fn kill_then_rerun_in_place_gives_the_same_bytes_as_an_uninterrupted_run() {
    let p = Project::new(8, 0);
    let mut child = p
        .command(&["run", "p.toml"])
        .env("GP_SLEEP_MS", "200")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !p.log_lines().iter().any(|l| l.starts_with("train epoch-1")) {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (_, resumed) = p.run_json(&["run", "p.toml"]);
    let resumed_objects = artifact_bytes(&p.path().join("cache"));
    // Now recompute everything from scratch in the same folder and compare.
    std::fs::remove_dir_all(p.path().join("cache")).unwrap();
    std::fs::create_dir(p.path().join("cache")).unwrap();
    let (_, clean) = p.run_json(&["run", "p.toml"]);
    assert_eq!(stage_field(&resumed, "key"), stage_field(&clean, "key"));
    assert_eq!(resumed_objects, artifact_bytes(&p.path().join("cache")));
}

#[test]
fn concurrent_runs_compute_each_key_once() {
    let p = Project::new(8, 0);
    let outputs = p.run_simultaneously(&vec![vec!["run", "p.toml", "--json"]; 3], 150);
    let mut starts = p.starts();
    starts.sort();
    assert_eq!(
        starts,
        ["baseline", "crop", "evaluate", "train"],
        "one execution per key"
    );
    // Across the three runs every stage (ingest included) ran exactly once; the rest reused it.
    let mut ran = Vec::new();
    for o in &outputs {
        let stdout = String::from_utf8_lossy(&o.stdout);
        let v: serde_json::Value =
            serde_json::from_str(stdout.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
        assert_eq!(ids_with(&v, "ran").len() + ids_with(&v, "cached").len(), 5);
        ran.extend(ids_with(&v, "ran"));
    }
    ran.sort();
    assert_eq!(ran, ["baseline", "crop", "evaluate", "ingest", "train"]);
    let waited = outputs
        .iter()
        .any(|o| String::from_utf8_lossy(&o.stderr).contains("waiting: another run is computing"));
    assert!(waited, "a second run says it is waiting");
    assert_eq!(entries(&p.path().join("cache/locks")), 0);
}

#[test]
fn gc_deletes_only_unreferenced_artifacts() {
    let p = Project::new(5, 0);
    assert_eq!(
        p.run_json(&["run", "p.toml", "--set", "train.epochs=1"]).0,
        0
    );
    assert_eq!(p.run_json(&["run", "p.toml"]).0, 0);
    let objects = || entries(&p.path().join("cache/objects"));
    assert_eq!(objects(), 7, "two train and two evaluate variants");
    let (_, dry) = p.run_json(&["gc", "--keep-runs", "1", "--dry-run"]);
    assert_eq!(dry["removed"].as_array().unwrap().len(), 2);
    assert_eq!(objects(), 7, "dry run deletes nothing");
    let v = p.invoke(&["gc", "--keep-runs", "1"]).succeeds().json;
    assert_eq!(v["removed"], dry["removed"]);
    assert_eq!(objects(), 5);
    p.clear_log();
    assert_eq!(p.run_json(&["run", "p.toml"]).0, 0);
    assert!(p.starts().is_empty(), "gc kept what the pipeline uses");
}

#[test]
fn stat_cache_avoids_rehashing_and_verify_inputs_rehashes() {
    let p = Project::new(30, 0);
    assert_eq!(p.run_json(&["run", "p.toml", "--until", "ingest"]).0, 0);
    // Rewrite one image with the same bytes: its mtime changes, so it is re-hashed, but the
    // manifest (and so ingest's key) is unchanged.
    let img = p.path().join("data/images_training_rev1/100001.jpg");
    let bytes = std::fs::read(&img).unwrap();
    std::thread::sleep(Duration::from_millis(10));
    std::fs::write(&img, &bytes).unwrap();
    let (_, v) = p.run_json(&["run", "p.toml", "--until", "ingest"]);
    assert_eq!(ids_with(&v, "cached"), ["ingest"]);
    // A same-size, same-mtime change is invisible to stat; --verify-inputs catches it.
    let meta = std::fs::metadata(&img).unwrap();
    let mut changed = bytes.clone();
    changed[0] ^= 1;
    std::fs::write(&img, &changed).unwrap();
    let f = std::fs::File::options().write(true).open(&img).unwrap();
    f.set_modified(meta.modified().unwrap()).unwrap();
    drop(f);
    // (inode and size unchanged, mtime restored)
    let (_, v) = p.run_json(&["run", "p.toml", "--until", "ingest", "--verify-inputs"]);
    assert_eq!(ids_with(&v, "ran"), ["ingest"]);
}
