//! Integration tests: the CLI as users run it. Config and schema checks drive the real binary;
//! runner and cache checks run the same CLI code with fake downstream stages (see support/) in
//! separate processes, so kills and concurrent runs are real.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::*;

/// Entry point of the re-executed child process; a no-op in a normal test run.
#[test]
fn child_entry() {
    child_main();
}

// ---------------------------------------------------------------- pipelines and the schema

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
            "ingest", "explore", "crop", "baseline", "train", "ensemble", "evaluate", "submit"
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

// ---------------------------------------------------------------- first contact: no data yet

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

// ---------------------------------------------------------------- adding a stage kind

const TALLY_PIPELINE: &str = "[pipeline]\nname = \"tally\"\nseed = 7\n\n[stages.ingest]\nkind = \"ingest\"\ndata_dir = \"data\"\n\n[stages.crop]\nkind = \"crop\"\ninputs = [\"ingest\"]\n\n[stages.tally]\nkind = \"tally\"\ninputs = [\"ingest\"]\nsample = 2\n";

/// `tests/support/tally.rs` is a whole new kind in one file, registered with one line in
/// `test_registry()`: it validates, runs, caches, is in the schema, and its key records the seed
/// because it declares so (crop, which does not, stays cached when the seed changes).
#[test]
fn a_new_stage_kind_is_one_file_and_one_registration_line() {
    let p = Project::new(12, 0);
    p.write("t.toml", TALLY_PIPELINE);
    let (code, v) = p.run_json(&["run", "t.toml"]);
    assert_eq!(code, 0, "{v}");
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

// ---------------------------------------------------------------- config errors: exit 2 + message

fn config_error(files: &[(&str, &str)], extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let mut args = vec!["validate", "p.toml"];
    args.extend(extra);
    let out = bin().current_dir(dir.path()).args(&args).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "config errors exit with 2");
    String::from_utf8(out.stderr).unwrap()
}

const HEAD: &str =
    "[pipeline]\nname = \"t\"\n\n[stages.ingest]\nkind = \"ingest\"\ndata_dir = \"data\"\n";

#[test]
fn unknown_key_suggests_the_near_miss() {
    let err = config_error(&[("p.toml", &format!("{HEAD}valid_fractoin = 0.2\n"))], &[]);
    insta::assert_snapshot!(err);
}

#[test]
fn wrong_type_points_at_the_value() {
    let err = config_error(
        &[(
            "p.toml",
            &format!(
                "{HEAD}\n[stages.crop]\nkind = \"crop\"\ninputs = [\"ingest\"]\nsize = \"big\"\n"
            ),
        )],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn unknown_kind_suggests_the_near_miss() {
    let err = config_error(
        &[(
            "p.toml",
            &format!("{HEAD}\n[stages.crop]\nkind = \"crpo\"\ninputs = [\"ingest\"]\n"),
        )],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn unknown_input_is_rejected() {
    let err = config_error(
        &[(
            "p.toml",
            &format!("{HEAD}\n[stages.crop]\nkind = \"crop\"\ninputs = [\"ingset\"]\n"),
        )],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn duplicate_stage_ids_are_rejected() {
    let err = config_error(
        &[(
            "p.toml",
            &format!("{HEAD}\n[stages.ingest]\nkind = \"ingest\"\ndata_dir = \"other\"\n"),
        )],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn cycles_are_printed_as_a_path() {
    let text = "[pipeline]\nname = \"t\"\n\n[stages.a]\nkind = \"ingest\"\ndata_dir = \"d\"\ninputs = [\"c\"]\n\n[stages.b]\nkind = \"crop\"\ninputs = [\"a\"]\n\n[stages.c]\nkind = \"explore\"\ninputs = [\"a\", \"b\"]\n";
    let err = config_error(&[("p.toml", text)], &[]);
    assert!(err.contains("cycle: c → a → c"), "{err}");
    insta::assert_snapshot!(err);
}

#[test]
fn invalid_values_are_rejected() {
    let err = config_error(&[("p.toml", &format!("{HEAD}valid_fraction = 1.5\n"))], &[]);
    insta::assert_snapshot!(err);
}

#[test]
fn toml_syntax_errors_have_a_location() {
    let err = config_error(&[("p.toml", &format!("{HEAD}valid_fraction = \n"))], &[]);
    assert!(err.contains("p.toml:7:"), "{err}");
    insta::assert_snapshot!(err);
}

#[test]
fn input_of_the_wrong_kind_is_rejected() {
    let err = config_error(
        &[(
            "p.toml",
            &format!("{HEAD}\n[stages.train]\nkind = \"train\"\ninputs = [\"ingest\"]\n"),
        )],
        &[],
    );
    insta::assert_snapshot!(err);
}

#[test]
fn bad_overrides_name_the_argument() {
    let err = config_error(&[("p.toml", HEAD)], &["--set", "ingset.valid_fraction=0.2"]);
    insta::assert_snapshot!(err);
    let err = config_error(
        &[("p.toml", HEAD)],
        &["--set", "ingest.valid_fraction=lots"],
    );
    assert!(err.contains("--set:1:"), "{err}");
}

#[test]
fn errors_in_an_extended_file_name_that_file() {
    let child = "extends = \"base.toml\"\n[stages.ingest]\nvalid_fraction = 0.3\n";
    let err = config_error(
        &[
            ("p.toml", child),
            ("base.toml", &format!("{HEAD}tree_tolerence = 0.1\n")),
        ],
        &[],
    );
    assert!(err.contains("base.toml:7:1"), "{err}");
    let err = config_error(&[("p.toml", "extends = \"missing.toml\"\n")], &[]);
    assert!(err.contains("cannot read extended pipeline"), "{err}");
}

#[test]
fn json_errors_carry_the_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), "[pipeline]\nname = 3\n").unwrap();
    let out = bin()
        .current_dir(dir.path())
        .args(["validate", "p.toml", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["exit_code"], 2);
}

// ---------------------------------------------------------------- the cache contract

#[test]
fn second_run_executes_nothing() {
    let p = Project::new(20, 4);
    let (code, first) = p.run_json(&["run", "p.toml"]);
    assert_eq!(code, 0, "{first}");
    assert_eq!(
        ids_with(&first, "ran"),
        ["ingest", "crop", "baseline", "train", "evaluate"]
    );
    p.clear_log();
    let (code, second) = p.run_json(&["run", "p.toml"]);
    assert_eq!(code, 0);
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
    let (code, v) = p.run_json(&["run", "p.toml"]);
    assert_eq!(code, 0);
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
    let (code, v) = p.run_json(&["run", "p.toml", "--dry-run"]);
    assert_eq!(code, 0);
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
    let (code, v) = p.run_json(&["run", "p.toml", "--only", "train"]);
    assert_eq!(code, 0);
    assert_eq!(ids_with(&v, "ran"), ["train"]);
    // evaluate's input baseline is not cached: skipped, exit 1, nothing ran.
    p.clear_log();
    let (code, v) = p.run_json(&["run", "p.toml", "--only", "evaluate"]);
    assert_eq!(code, 1);
    assert_eq!(ids_with(&v, "skipped"), ["evaluate"]);
    assert!(p.starts().is_empty());
    // --force re-runs a cached stage.
    let (_, v) = p.run_json(&["run", "p.toml", "--until", "crop", "--force", "crop"]);
    assert_eq!(ids_with(&v, "ran"), ["crop"]);
    let (_, v) = p.run_json(&["run", "p.toml", "--until", "crop", "--force-all"]);
    assert_eq!(ids_with(&v, "ran"), ["ingest", "crop"]);
    let (code, _) = p.run_json(&["run", "p.toml", "--force", "crpo"]);
    assert_eq!(code, 2, "unknown stage names are usage errors");
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
    let (code, _) = p.run_json(&["run", "p.toml"]);
    assert_eq!(code, 0);
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
    let (code, v) = p.run_json(&["run", "p.toml"]);
    assert_eq!(code, 0, "{v}");
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
    let (code, v) = p.run_json(&["gc", "--keep-runs", "1"]);
    assert_eq!(code, 0);
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

#[test]
fn runs_lists_history_and_compare_shows_what_differs() {
    let p = Project::new(5, 0);
    assert_eq!(p.run_json(&["run", "p.toml"]).0, 0);
    assert_eq!(
        p.run_json(&["run", "p.toml", "--set", "train.epochs=2"]).0,
        0
    );
    let (code, v) = p.run_json(&["runs", "p.toml"]);
    assert_eq!(code, 0);
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
    let (code, c) = p.run_json(&["compare", ids[0], ids[1]]);
    assert_eq!(code, 0);
    assert_eq!(
        c["params"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["train.epochs"],
        "{c}"
    );
    assert_eq!(c["params"]["train.epochs"], serde_json::json!(["2", "3"]));
    assert!(c["metrics"]["train.fake_metric"].is_array());
    let (code, _) = p.run_json(&["compare", "nonexistent"]);
    assert_eq!(code, 2);
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
    let (code, v) = p.run_json(&GRID_SWEEP);
    assert_eq!(code, 0);
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
    let (code, v) = p.run_json(&["compare", "--pipelines", "p.toml", "b.toml"]);
    assert_eq!(code, 0);
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
    let (code, _) = p.run_json(&[
        "run",
        "p.toml",
        "--until",
        "ingest",
        "--cache-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
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

// ---------------------------------------------------------------- data stages on real JPEGs

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
    let (code, v, err) = run_real(dir.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
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
    let (code, v, err) = run_real(&repo_root(), &args);
    assert_eq!(code, 0, "{err}");
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
        let (code, v, err) = run_real(dir.path(), &["run", "p.toml", "--until", "crop"]);
        assert_eq!(code, 1, "{err}");
        assert_eq!(ids_with(&v, "failed"), ["crop"]);
        assert!(err.contains("100004.jpg") && err.contains(expect), "{err}");
        assert_eq!(
            entries(&dir.path().join("cache/objects")),
            1,
            "only ingest published"
        );
        // Skipping instead: the run succeeds and the bad image is listed.
        let (code, v, err) = run_real(
            dir.path(),
            &[
                "run",
                "p.toml",
                "--until",
                "crop",
                "--set",
                "crop.on_bad_image=skip",
            ],
        );
        assert_eq!(code, 0, "{err}");
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
    let (code, _, err) = run_real(
        dir.path(),
        &["run", "p.toml", "--until", "crop", "--set", "crop.size=128"],
    );
    assert_eq!(code, 0, "with space again the run succeeds: {err}");
}

#[test]
fn label_rows_without_images_fail_ingest_or_are_skipped() {
    let dir = data_with_bad_image(b"x");
    std::fs::remove_file(dir.path().join("data/images_training_rev1/100004.jpg")).unwrap();
    let (code, _, err) = run_real(dir.path(), &["run", "p.toml", "--until", "ingest"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("1 label row(s)") && err.contains("first: 100004"),
        "{err}"
    );
    let (code, v, err) = run_real(
        dir.path(),
        &[
            "run",
            "p.toml",
            "--until",
            "ingest",
            "--set",
            "ingest.on_missing_image=skip",
        ],
    );
    assert_eq!(code, 0, "{err}");
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
    let (code, _, err) = run_real(dir.path(), &["run", "p.toml", "--until", "ingest"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("training_solutions_rev1.csv:2: Class1.1 = NaN is outside [0, 1]"),
        "{err}"
    );
}

// ---------------------------------------------------------------- train, evaluate, submit

/// A small, fast network for tests (32-pixel crops).
const SMALL_NET: [&str; 6] = [
    "--set",
    "crop.size=32",
    "--set",
    "train.conv=[{filters = 16, kernel = 5, pool = 2}, {filters = 32, kernel = 3, pool = 2}]",
    "--set",
    "train.dense=[{units = 32}]",
];

const NN_PIPELINE: &str = "[pipeline]\nname = \"nn\"\nseed = 3\n\n[stages.ingest]\nkind = \"ingest\"\ndata_dir = \"data\"\n\n[stages.crop]\nkind = \"crop\"\ninputs = [\"ingest\"]\n\n[stages.baseline]\nkind = \"baseline\"\ninputs = [\"ingest\", \"crop\"]\n\n[stages.train]\nkind = \"train\"\ninputs = [\"crop\"]\nbatch_size = 16\n\n[stages.evaluate]\nkind = \"evaluate\"\ninputs = [\"train\", \"crop\", \"baseline\"]\n\n[stages.submit]\nkind = \"submit\"\ninputs = [\"train\", \"crop\"]\noutput = \"out/submission.csv\"\n";

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

/// Run the real binary with `args` in `dir` and kill it (-9) as soon as a training in `cache` has
/// written its first epoch's checkpoint.
fn kill_at_the_first_checkpoint(dir: &std::path::Path, args: &[&str], cache: &std::path::Path) {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("galaxy-pipe"))
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let checkpoint = || {
        std::fs::read_dir(cache.join("work"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().join("checkpoint/state.json").exists())
    };
    while !checkpoint() {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
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
    let (code, clean, err) = run_real(dir.path(), &clean_args);
    assert_eq!(code, 0, "{err}");

    // Killed once the first epoch's checkpoint exists, then resumed.
    let cache = dir.path().join("cache");
    kill_at_the_first_checkpoint(dir.path(), &args, &cache);
    let (code, resumed, err) = run_real(dir.path(), &args);
    assert_eq!(code, 0, "{err}");
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
    let (code, v, err) = run_real(dir.path(), &args);
    assert_eq!(code, 0, "{err}");
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
    let (code, _, err) = run_real(&repo_root(), &args);
    assert_eq!(code, 0, "{err}");
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

// ---------------------------------------------------------------- the HTML report

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
    let (code, v, err) = run_real(dir.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    let run_id = v["run_id"].as_str().unwrap().to_string();
    let valid = v["stages"][0]["metrics"]["valid_rows"].as_f64().unwrap() as usize;
    // A later run makes the first one not the newest.
    assert_eq!(
        run_real(dir.path(), &["run", "p.toml", "--set", "train.epochs=1"]).0,
        0
    );
    let (code, _, err) = run_real(
        dir.path(),
        &["report", &run_id[..20], "--out", "report.html"],
    );
    assert_eq!(code, 0, "{err}");
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
    let (code, _, _) = run_real(dir.path(), &["report", "--out", "newest.html"]);
    assert_eq!(code, 0);
    assert!(
        std::fs::read_to_string(dir.path().join("newest.html"))
            .unwrap()
            .contains("train.epochs=1")
    );

    // After gc, a report of the older run still renders and says what is gone.
    assert_eq!(run_real(dir.path(), &["gc", "--keep-runs", "1"]).0, 0);
    let (code, _, err) = run_real(dir.path(), &["report", &run_id, "--out", "old.html"]);
    assert_eq!(code, 0, "{err}");
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

// ---------------------------------------------------------------- ensembles

/// Two small trainings that differ only by their seed (one template), averaged by an
/// `ensemble` stage that `evaluate` and `submit` read as their model.
fn ensemble_pipeline() -> String {
    let member = |id: &str, seed: u64| {
        format!(
            r#"[stages.{id}]
kind = "train"
inputs = ["crop"]
seed = {seed}
epochs = 2
batch_size = 16
conv = [{{ filters = 16, kernel = 5, pool = 2 }}, {{ filters = 32, kernel = 3, pool = 2 }}]
dense = [{{ units = 32 }}]

"#
        )
    };
    format!(
        r#"[pipeline]
name = "ens"
seed = 3

[stages.ingest]
kind = "ingest"
data_dir = "data"

[stages.crop]
kind = "crop"
inputs = ["ingest"]
size = 32

{}{}[stages.models]
kind = "ensemble"
inputs = ["train_b", "train_a"]

[stages.evaluate]
kind = "evaluate"
inputs = ["models", "crop"]

[stages.submit]
kind = "submit"
inputs = ["models", "crop"]
output = "out/submission.csv"
"#,
        member("train_a", 1),
        member("train_b", 2)
    )
}

fn ensemble_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), 160, 12, 7);
    std::fs::write(dir.path().join("p.toml"), ensemble_pipeline()).unwrap();
    dir
}

#[test]
fn an_ensemble_averages_its_members_scores_each_and_gives_the_same_bytes_twice() {
    let dir = ensemble_project();
    let (code, first, err) = run_real(dir.path(), &["run", "p.toml", "--cache-dir", "c1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        ids_with(&first, "ran"),
        [
            "ingest", "crop", "train_a", "train_b", "models", "evaluate", "submit"
        ]
    );
    let c1 = dir.path().join("c1");
    // The seeds make two different networks.
    let weights = |id: &str| std::fs::read(object_of(&first, &c1, id).join("model.bin")).unwrap();
    assert_ne!(weights("train_a"), weights("train_b"));

    // `evaluate` scores the mean and each member, and the mean is exactly what it predicts.
    let evaluate = first["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "evaluate")
        .unwrap();
    let metrics = &evaluate["metrics"];
    for key in ["rmse", "rmse_member_train_a", "rmse_member_train_b"] {
        assert!(metrics[key].as_f64().is_some(), "{key}: {metrics}");
    }
    let preds = galaxy_pipe::artifacts::read_predictions(
        &object_of(&first, &c1, "evaluate").join("predictions.parquet"),
    )
    .unwrap();
    let (mean, a, b) = (
        &preds["model"],
        &preds["member:train_a"],
        &preds["member:train_b"],
    );
    assert_eq!(mean.len(), a.len());
    for ((m, pa), pb) in mean.iter().zip(a).zip(b) {
        assert_eq!((m.0, pa.0), (pb.0, pb.0), "rows in the same galaxy order");
        for c in 0..37 {
            assert!(
                (m.1[c] - (pa.1[c] + pb.1[c]) / 2.0).abs() < 1e-6,
                "galaxy {}",
                m.0
            );
        }
    }
    let csv = std::fs::read_to_string(dir.path().join("out/submission.csv")).unwrap();
    assert_eq!(csv.lines().count(), 13);

    // A second run computes nothing; a run in a fresh cache gives the same bytes.
    let (code, again, err) = run_real(dir.path(), &["run", "p.toml", "--cache-dir", "c1"]);
    assert_eq!(code, 0, "{err}");
    assert!(ids_with(&again, "ran").is_empty(), "{again}");
    let (code, _, err) = run_real(dir.path(), &["run", "p.toml", "--cache-dir", "c2"]);
    assert_eq!(code, 0, "{err}");
    assert!(artifact_bytes(&c1) == artifact_bytes(&dir.path().join("c2")));
}

#[test]
fn an_ensemble_run_killed_during_training_resumes_to_the_same_bytes() {
    let dir = ensemble_project();
    let (code, _, err) = run_real(dir.path(), &["run", "p.toml", "--cache-dir", "clean"]);
    assert_eq!(code, 0, "{err}");

    // Killed once a training has checkpointed its first epoch, then run again.
    let cache = dir.path().join("cache");
    kill_at_the_first_checkpoint(dir.path(), &["run", "p.toml"], &cache);
    let (code, resumed, err) = run_real(dir.path(), &["run", "p.toml"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        resumed
            .to_string()
            .contains("resumed from the checkpoint after epoch 1"),
        "{resumed}"
    );
    assert!(
        artifact_bytes(&cache) == artifact_bytes(&dir.path().join("clean")),
        "the resumed ensemble, its members and its scores are byte-identical"
    );
}

#[test]
fn ensemble_inputs_and_parameters_are_checked_before_anything_runs() {
    // (what the pipeline file says instead, what the error says)
    let cases = [
        (
            (
                r#"inputs = ["train_b", "train_a"]"#,
                r#"inputs = ["train_a"]"#,
            ),
            "stage `models` (ensemble) needs at least 2 inputs of kind `train`; it has 1",
        ),
        (
            (
                r#"inputs = ["models", "crop"]"#,
                r#"inputs = ["models", "train_a", "crop"]"#,
            ),
            "stage `evaluate` (evaluate) reads one input of kind `train` or `ensemble`; it has 2",
        ),
        (
            (
                r#"inputs = ["train_b", "train_a"]"#,
                r#"inputs = ["train_b", "train_a", "crop"]"#,
            ),
            "a `ensemble` stage cannot read `crop`",
        ),
        (
            (
                "kind = \"ensemble\"\n",
                "kind = \"ensemble\"\nweights = [1, 2]\n",
            ),
            "weights",
        ),
        (("seed = 1\n", "seed = -1\n"), "seed"),
        (("seed = 1\n", "seed = 1\nema = 1.0\n"), "must be in [0, 1)"),
    ];
    let pipeline = ensemble_pipeline();
    for ((from, to), expected) in cases {
        assert!(pipeline.contains(from), "{from}");
        let text = pipeline.replacen(from, to, 1);
        let err = config_error(&[("p.toml", &text)], &[]);
        assert!(err.contains(expected), "{to}: {err}");
        assert!(err.contains("p.toml:"), "{to}: {err}");
    }
}
