//! The shipped pipelines and their schema, a fresh clone without the Kaggle data, adding a
//! stage kind, and a closed stdout.

use std::process::Stdio;

use super::support::*;

#[test]
fn shipped_pipelines_validate() {
    for name in [
        "full.toml",
        "sample.toml",
        "demo.toml",
        "best.toml",
        "ensemble.toml",
    ] {
        bin()
            .current_dir(repo_root())
            .args(["validate", &format!("pipelines/{name}")])
            .assert()
            .success();
    }
}

#[test]
fn the_shipped_ensemble_is_best_toml_trained_with_two_seeds() {
    let registry = galaxy_pipe::stages::Registry::standard();
    let load = |name: &str| {
        galaxy_pipe::config::load(&repo_root().join("pipelines").join(name), &[], &registry)
            .unwrap()
    };
    let (best, ensemble) = (load("best.toml"), load("ensemble.toml"));
    let params =
        |p: &galaxy_pipe::config::Pipeline, id: &str| p.stage(id).unwrap().params.canonical();
    let mut second = params(&ensemble, "train_b");
    assert_eq!(second["seed"], 7);
    second.as_object_mut().unwrap().remove("seed");
    assert_eq!(
        second,
        params(&best, "train"),
        "train_b drifted from best.toml's train"
    );
    assert_eq!(params(&ensemble, "train"), params(&best, "train"));
}

#[test]
fn committed_schema_matches_the_types() {
    let committed =
        std::fs::read_to_string(repo_root().join("schemas/pipeline.schema.json")).unwrap();
    assert!(
        committed
            == galaxy_pipe::schema::pipeline_schema_text(&galaxy_pipe::stages::Registry::standard()),
        "schemas/pipeline.schema.json is stale: run `cargo run -- schema > schemas/pipeline.schema.json`"
    );
}

#[test]
fn committed_artifact_schemas_match_the_code() {
    let committed = std::fs::read_to_string(repo_root().join("schemas/artifacts.json")).unwrap();
    assert!(
        committed == galaxy_pipe::artifacts::documented_schemas_text(),
        "schemas/artifacts.json is stale: run `cargo run -- schema --artifacts > schemas/artifacts.json`"
    );
}

#[test]
fn schema_describes_every_stage_kind() {
    let schema = galaxy_pipe::schema::pipeline_schema(&galaxy_pipe::stages::Registry::standard());
    let variants = schema["properties"]["stages"]["additionalProperties"]["oneOf"]
        .as_array()
        .unwrap();
    // One variant per kind, then the override table (no `kind`: keys of any kind).
    let (overrides, variants) = variants.split_last().unwrap();
    assert_eq!(overrides["not"]["required"][0], "kind", "{overrides}");
    assert!(
        overrides["properties"]["epochs"].is_object()
            && overrides["properties"]["size"].is_object()
    );
    let kinds: Vec<&str> = variants
        .iter()
        .map(|v| v["properties"]["kind"]["const"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "ingest", "explore", "crop", "baseline", "train", "ensemble", "evaluate", "submit",
            "command"
        ]
    );
    assert!(variants.iter().all(|v| v["additionalProperties"] == false));
    // A training's own seed (for the members of an ensemble); `ensemble` takes no parameters.
    let params = |kind: &str| {
        variants
            .iter()
            .find(|v| v["properties"]["kind"]["const"] == kind)
            .unwrap()["properties"]
            .clone()
    };
    assert!(params("train")["seed"].is_object(), "{}", params("train"));
    let ensemble = params("ensemble");
    let ensemble: Vec<&String> = ensemble.as_object().unwrap().keys().collect();
    assert!(
        ensemble
            .iter()
            .all(|k| ["kind", "inputs", "resources", "like"].contains(&k.as_str())),
        "{ensemble:?}"
    );
}

/// A fresh clone: the shipped `pipelines/full.toml`, no `data/` folder.
fn fresh_clone() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("pipelines")).unwrap();
    std::fs::create_dir_all(dir.path().join("cache")).unwrap();
    std::fs::copy(
        repo_root().join("pipelines/full.toml"),
        dir.path().join("pipelines/full.toml"),
    )
    .unwrap();
    dir
}

/// The message with the temp folder's path replaced, for the snapshot.
fn anonymise(text: &str, dir: &std::path::Path) -> String {
    let real = dir.canonicalize().unwrap();
    text.replace(&real.display().to_string(), "[PROJECT]")
        .replace(&dir.display().to_string(), "[PROJECT]")
}

#[test]
fn run_without_the_kaggle_data_says_what_is_missing_and_what_works_now() {
    let dir = fresh_clone();
    let out = bin()
        .current_dir(dir.path())
        .args(["run", "pipelines/full.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    // Normalised paths: `pipelines/../data` is printed as `data`.
    assert!(!err.contains("/../"), "{err}");
    let err = anonymise(&err, dir.path());
    // Everything but the timings is stable.
    let stable: Vec<String> = err
        .lines()
        .filter(|l| !l.starts_with("FAILED:"))
        .map(|l| match l.trim_start().strip_prefix("failed  ingest") {
            Some(rest) => format!(
                "  failed  ingest  [seconds]  {}",
                rest.trim().split_once(' ').map_or("", |x| x.1)
            ),
            None => l.to_string(),
        })
        .collect();
    insta::assert_snapshot!(stable.join("\n"));
    // The downstream stages are one line in the text; the JSON keeps every stage.
    let skipped_lines = err
        .lines()
        .filter(|l| l.trim_start().starts_with("skipped"));
    assert_eq!(skipped_lines.count(), 1, "{err}");
    let out = bin()
        .current_dir(dir.path())
        .args(["run", "pipelines/full.toml", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids_with(&v, "failed"), ["ingest"]);
    assert_eq!(ids_with(&v, "skipped").len(), 6, "{v}");
}

#[test]
fn validate_warns_when_the_input_folders_do_not_exist() {
    let dir = fresh_clone();
    let out = bin()
        .current_dir(dir.path())
        .args(["validate", "pipelines/full.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "the file itself is valid");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("warning: stage `ingest`: the Galaxy Zoo data is not in"),
        "{err}"
    );
    assert!(err.contains("pipelines/sample.toml") && err.contains("images_test_rev1/"));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("with 1 warning(s) above"), "{stdout}");
    let out = bin()
        .current_dir(dir.path())
        .args(["validate", "pipelines/full.toml", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1, "{v}");

    // With the data in place, no warning.
    synth(dir.path(), 4, 2, 1); // writes data/ in the Kaggle layout
    std::fs::rename(dir.path().join("data"), dir.path().join("galaxy-zoo")).unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::rename(
        dir.path().join("galaxy-zoo"),
        dir.path().join("data/galaxy-zoo"),
    )
    .unwrap();
    let out = bin()
        .current_dir(dir.path())
        .args(["validate", "pipelines/full.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}

const TALLY_PIPELINE: &str = "[pipeline]\nname = \"tally\"\nseed = 7\n\n[stages.ingest]\nkind = \"ingest\"\ndata_dir = \"data\"\n\n[stages.crop]\nkind = \"crop\"\ninputs = [\"ingest\"]\n\n[stages.tally]\nkind = \"tally\"\ninputs = [\"ingest\"]\nsample = 2\n";

/// `tests/support/tally.rs` is a whole new kind in one file, registered with one line in
/// `test_registry()`: it validates, runs, caches, is in the schema, and its key records the seed
/// because it declares so (crop, which does not, stays cached when the seed changes).
#[test]
fn a_new_stage_kind_is_one_file_and_one_registration_line() {
    let p = Project::new(12, 0);
    p.write("t.toml", TALLY_PIPELINE);
    let v = p.invoke(&["run", "t.toml"]).succeeds().json;
    assert_eq!(ids_with(&v, "ran"), ["ingest", "crop", "tally"]);
    let tally = v["stages"][2].clone();
    assert_eq!(tally["kind"], "tally");
    assert_eq!(
        tally["metrics"]["Train"].as_f64().unwrap()
            + tally["metrics"]["Valid"].as_f64().unwrap_or(0.0),
        12.0,
        "{tally}"
    );
    let (_, v) = p.run_json(&["run", "t.toml"]);
    assert_eq!(ids_with(&v, "cached"), ["ingest", "crop", "tally"]);

    // The seed enters ingest's and tally's keys (declared `SeedUse::InKey`), not crop's; crop
    // re-runs only because ingest's split (its input) changed, not because it saw the seed.
    let (_, v) = p.run_json(&["run", "t.toml", "--set", "pipeline.seed=8", "--dry-run"]);
    assert_eq!(ids_with(&v, "miss"), ["ingest", "crop", "tally"], "{v}");
    let (_, v) = p.run_json(&["status", "t.toml", "--set", "pipeline.seed=8"]);
    assert_eq!(v["stages"][0]["state"], "stale", "{v}");

    // Its parameters are validated like every other kind's: unknown keys, ranges.
    p.write(
        "bad.toml",
        &TALLY_PIPELINE.replace("sample = 2", "sampel = 2"),
    );
    let err = String::from_utf8(p.run(&["validate", "bad.toml"]).stderr).unwrap();
    assert!(
        err.contains("unknown key `sampel` for a `tally` stage"),
        "{err}"
    );
    assert!(err.contains("sample"), "did-you-mean: {err}");
    p.write(
        "bad.toml",
        &TALLY_PIPELINE.replace("sample = 2", "sample = 500"),
    );
    let out = p.run(&["validate", "bad.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`tally.sample` must be in [0, 100]"));

    // It accepts only what it declares.
    p.write(
        "bad.toml",
        &TALLY_PIPELINE.replace(
            "inputs = [\"ingest\"]\nsample",
            "inputs = [\"crop\"]\nsample",
        ),
    );
    let err = String::from_utf8(p.run(&["validate", "bad.toml"]).stderr).unwrap();
    assert!(err.contains("a `tally` stage cannot read `crop`"), "{err}");

    // And the pipeline schema of that registry describes it.
    let schema = galaxy_pipe::schema::pipeline_schema(&test_registry());
    let kinds: Vec<&str> = schema["properties"]["stages"]["additionalProperties"]["oneOf"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["properties"]["kind"]["const"].as_str())
        .collect();
    assert!(kinds.contains(&"tally"), "{kinds:?}");
}

/// `galaxy-pipe runs | head -1`: a closed pipe ends the command quietly with exit 0.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let p = Project::new(5, 0);
    let exe = assert_cmd::cargo::cargo_bin("galaxy-pipe");
    for args in [
        vec!["runs"],
        vec!["dag", "p.toml"],
        vec!["schema"],
        vec!["status", "p.toml"],
    ] {
        let mut child = std::process::Command::new(&exe)
            .args(&args)
            .current_dir(p.path())
            .env_remove("GALAXY_PIPE_CACHE_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader goes away before anything is written
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
    }
}
