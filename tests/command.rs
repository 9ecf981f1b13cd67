//! The `command` kind: a user's program as a stage, with the real binary and real Python
//! (`python3` with numpy and pyarrow, installed by `.ci/run`). Without them these tests skip
//! loudly; `GALAXY_PIPE_REQUIRE_PYTHON=1` (set by `.ci/run`) turns a skip into a failure.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::*;

/// Synthetic galaxies shared by every test here (read-only): 120 labelled, 12 test.
fn shared_data() -> &'static Path {
    static DATA: OnceLock<tempfile::TempDir> = OnceLock::new();
    synth_once(&DATA, 120, 12, 11)
}

/// Whether `python3` can import `modules`; a loud skip (or, when required, a failure) if not.
fn python_with(test: &str, modules: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("GALAXY_PIPE_REQUIRE_PYTHON").is_some() {
            panic!(
                "{test}: GALAXY_PIPE_REQUIRE_PYTHON is set but `python3 -c 'import {modules}'` fails"
            );
        }
        eprintln!(
            "SKIPPED {test}: needs `python3 -c 'import {modules}'` (pip install numpy pyarrow)"
        );
    }
    ok
}

/// ingest → crop → baseline on the shared data, `extra` stages after them.
fn project(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = shared_data().join("data");
    let head = format!(
        "[pipeline]\nname = \"t\"\n\n[stages.ingest]\nkind = \"ingest\"\ndata_dir = \"{}\"\n\n\
         [stages.crop]\nkind = \"crop\"\ninputs = [\"ingest\"]\nsize = 32\n\n\
         [stages.baseline]\nkind = \"baseline\"\ninputs = [\"ingest\", \"crop\"]\n\n",
        data.display()
    );
    std::fs::write(dir.path().join("p.toml"), head + extra).unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    std::fs::copy(
        repo_root().join("models/ridge_colour.py"),
        dir.path().join("models/ridge_colour.py"),
    )
    .unwrap();
    dir
}

const RIDGE: &str = r#"[stages.ridge]
kind = "command"
inputs = ["crop"]
run = ["python3", "models/ridge_colour.py", "--crops", "{crop}/crops.parquet", "--out", "{out}",
       "--alpha", "{params.alpha}", "--rings", "{params.rings}"]
deps = ["models/*.py"]
params = { alpha = 1.0, rings = 3 }
outputs = ["predictions.parquet", "metrics.json"]
produces = "predictions"

[stages.scored]
kind = "evaluate"
inputs = ["ridge", "crop", "baseline"]
"#;

/// A `command` stage `id` running the Python script `script` (written to `models/<id>.py`)
/// with `args` after it.
fn script_stage(dir: &Path, id: &str, script: &str, args: &str, more: &str) -> String {
    std::fs::write(dir.join(format!("models/{id}.py")), script).unwrap();
    format!(
        "[stages.{id}]\nkind = \"command\"\ninputs = [\"crop\"]\n\
         run = [\"python3\", \"models/{id}.py\"{args}]\ndeps = [\"models/{id}.py\"]\n{more}\n"
    )
}

fn stage<'v>(v: &'v serde_json::Value, id: &str) -> &'v serde_json::Value {
    v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no stage `{id}` in {v}"))
}

fn objects(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("cache/objects")).map_or(0, |d| d.count())
}

#[test]
fn a_python_model_is_scored_by_evaluate_beside_the_baselines_and_cached() {
    if !python_with("python model scored", "numpy, pyarrow") {
        return;
    }
    let p = project(RIDGE);
    let run = Invocation::real(p.path(), &["run", "p.toml"])
        .succeeds()
        .json;
    assert_eq!(
        ids_with(&run, "ran"),
        ["ingest", "crop", "baseline", "ridge", "scored"]
    );
    // The script's own figure (metrics.json) and evaluate's score of its predictions agree.
    let own = stage(&run, "ridge")["metrics"]["rmse"].as_f64().unwrap();
    let scored = &stage(&run, "scored")["metrics"];
    assert!(
        (own - scored["rmse"].as_f64().unwrap()).abs() < 1e-5,
        "{run}"
    );
    assert!(scored["rmse_baseline_mean"].as_f64().is_some(), "{scored}");
    // Its lines reached the log beside the artifact.
    let key = stage(&run, "ridge")["key"].as_str().unwrap();
    let log = std::fs::read_to_string(p.path().join(format!("cache/logs/{key}/command.log")));
    assert!(log.unwrap().contains("validation RMSE"));
    let again = Invocation::real(p.path(), &["run", "p.toml"])
        .succeeds()
        .json;
    assert_eq!(ids_with(&again, "cached").len(), 5, "{again}");
}

#[test]
fn editing_the_script_reruns_it_and_what_depends_on_it_and_a_toml_comment_reruns_nothing() {
    if !python_with("script edit", "numpy, pyarrow") {
        return;
    }
    let p = project(RIDGE);
    Invocation::real(p.path(), &["run", "p.toml"]).succeeds();
    let toml = std::fs::read_to_string(p.path().join("p.toml")).unwrap();
    std::fs::write(p.path().join("p.toml"), format!("# a comment\n{toml}")).unwrap();
    let run = Invocation::real(p.path(), &["run", "p.toml"])
        .succeeds()
        .json;
    assert!(ids_with(&run, "ran").is_empty(), "{run}");

    let script = p.path().join("models/ridge_colour.py");
    let text = std::fs::read_to_string(&script).unwrap();
    std::fs::write(
        &script,
        text.replace("args.alpha * np.eye", "3 * args.alpha * np.eye"),
    )
    .unwrap();
    let why = Invocation::real(p.path(), &["why", "p.toml", "ridge"]).succeeds();
    assert!(
        why.json.to_string().contains("models/ridge_colour.py"),
        "{}",
        why.json
    );
    let run = Invocation::real(p.path(), &["run", "p.toml"])
        .succeeds()
        .json;
    assert_eq!(ids_with(&run, "ran"), ["ridge", "scored"], "{run}");
    // A parameter from the command line is a new key too.
    let run = Invocation::real(
        p.path(),
        &["run", "p.toml", "--set", "ridge.params.alpha=4"],
    )
    .succeeds()
    .json;
    assert_eq!(ids_with(&run, "ran"), ["ridge", "scored"], "{run}");
}

const FAILING: &str = "import sys\nfor i in range(30):\n    print('line', i, flush=True)\nprint('boom: the model diverged', file=sys.stderr)\nsys.exit(3)\n";

#[test]
fn a_failing_script_is_a_stage_error_with_its_log_tail_and_publishes_nothing() {
    if !python_with("failing script", "sys") {
        return;
    }
    let p = project("");
    let stage_toml = script_stage(p.path(), "bad", FAILING, "", "");
    let after = "[stages.after]\nkind = \"command\"\ninputs = [\"bad\"]\nrun = [\"true\"]\n";
    append(p.path(), &(stage_toml + after));
    let done = Invocation::real(p.path(), &["run", "p.toml"]).exits(1);
    let error = stage(&done.json, "bad")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("`python3` exited with code 3"), "{error}");
    assert!(error.contains("boom: the model diverged"), "{error}");
    assert!(
        error.contains("line 29") && !error.contains("line 5\n"),
        "last 20 lines: {error}"
    );
    assert_eq!(ids_with(&done.json, "skipped"), ["after"]);
    assert_eq!(
        objects(p.path()),
        3,
        "only ingest, crop, baseline are published"
    );
}

#[test]
fn a_missing_declared_output_and_a_link_in_out_are_stage_errors() {
    if !python_with("missing output", "sys") {
        return;
    }
    let p = project("");
    let script = "import os, sys\nout = sys.argv[1]\nopen(os.path.join(out, 'a.txt'), 'w').write('a')\n\
                  if sys.argv[2] == 'link':\n    os.symlink('/etc/passwd', os.path.join(out, 'b.txt'))\n";
    let toml = script_stage(
        p.path(),
        "w",
        script,
        ", \"{out}\", \"{params.mode}\"",
        "params = { mode = \"plain\" }\noutputs = [\"a.txt\", \"b.txt\"]",
    );
    append(p.path(), &toml);
    let done = Invocation::real(p.path(), &["run", "p.toml"]).exits(1);
    let error = stage(&done.json, "w")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("declared output(s) `b.txt`"), "{error}");
    let done =
        Invocation::real(p.path(), &["run", "p.toml", "--set", "w.params.mode=link"]).exits(1);
    let error = stage(&done.json, "w")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("`b.txt` is a symbolic link"), "{error}");
    assert_eq!(objects(p.path()), 3);
}

/// Writes predictions for the crops' validation and test galaxies, spoiled as `mode` says.
const PREDICTIONS: &str = r#"import sys, os
import numpy as np, pyarrow as pa, pyarrow.parquet as pq
crops, out, mode = sys.argv[1], sys.argv[2], sys.argv[3]
t = pq.read_table(crops, columns=["GalaxyID", "split"])
split = np.array(t.column("split").to_pylist())
ids = t.column("GalaxyID").to_numpy()[(split == "valid") | (split == "test")].astype(np.int64)
names = ["Class1.1","Class1.2","Class1.3","Class2.1","Class2.2","Class3.1","Class3.2","Class4.1","Class4.2","Class5.1","Class5.2","Class5.3","Class5.4","Class6.1","Class6.2","Class7.1","Class7.2","Class7.3","Class8.1","Class8.2","Class8.3","Class8.4","Class8.5","Class8.6","Class8.7","Class9.1","Class9.2","Class9.3","Class10.1","Class10.2","Class10.3","Class11.1","Class11.2","Class11.3","Class11.4","Class11.5","Class11.6"]
cols = {"GalaxyID": ids}
for n in names:
    cols[n] = np.full(len(ids), 0.25)
if mode == "no_column": del cols["Class6.2"]
if mode == "has_nan": cols["Class3.1"][2] = float("nan")
if mode == "unknown_id": cols["GalaxyID"] = ids + 10**9
pq.write_table(pa.table(cols), os.path.join(out, "predictions.parquet"))
"#;

#[test]
fn malformed_predictions_are_rejected_naming_the_column_or_row() {
    if !python_with("malformed predictions", "numpy, pyarrow") {
        return;
    }
    let p = project("");
    let toml = script_stage(
        p.path(),
        "preds",
        PREDICTIONS,
        ", \"{crop}/crops.parquet\", \"{out}\", \"{params.mode}\"",
        "params = { mode = \"good\" }\nproduces = \"predictions\"",
    );
    append(p.path(), &toml);
    append(
        p.path(),
        "[stages.scored]\nkind = \"evaluate\"\ninputs = [\"preds\", \"crop\"]\n",
    );
    Invocation::real(p.path(), &["run", "p.toml"]).succeeds();
    for (mode, said) in [
        (
            "no_column",
            "column `Class6.2` is missing (37 columns found, 38 expected",
        ),
        ("has_nan", "row 2 (GalaxyID"),
        (
            "unknown_id",
            "is not a validation or test galaxy of the input crops",
        ),
    ] {
        let set = format!("preds.params.mode={mode}");
        let done = Invocation::real(p.path(), &["run", "p.toml", "--set", &set]).exits(1);
        let error = stage(&done.json, "preds")["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(error.contains(said), "{mode}: {error}");
        assert_eq!(ids_with(&done.json, "skipped"), ["scored"], "{mode}");
    }
}

#[test]
fn a_hostile_parameter_reaches_the_program_as_one_argument() {
    if !python_with("hostile parameter", "json") {
        return;
    }
    let p = project("");
    std::fs::create_dir(p.path().join("victim")).unwrap();
    let script = "import json, os, sys\njson.dump(sys.argv[1:], open(os.path.join(sys.argv[1], 'argv.json'), 'w'))\n";
    let toml = script_stage(
        p.path(),
        "echo",
        script,
        ", \"{out}\", \"{params.x}\", \"x{{y}}\"",
        "params = { x = \"; rm -rf victim $(touch pwned)\" }",
    );
    append(p.path(), &toml);
    let run = Invocation::real(p.path(), &["run", "p.toml"])
        .succeeds()
        .json;
    let key = stage(&run, "echo")["key"].as_str().unwrap();
    let argv = std::fs::read_to_string(p.path().join(format!("cache/objects/{key}/out/argv.json")))
        .unwrap();
    let argv: Vec<String> = serde_json::from_str(&argv).unwrap();
    assert_eq!(argv[1..], ["; rm -rf victim $(touch pwned)", "x{y}"]);
    assert!(p.path().join("victim").is_dir());
    assert!(!p.path().join("pwned").exists());
}

#[test]
fn placeholders_inputs_and_deps_are_checked_before_anything_runs() {
    let p = project("");
    for (bad, said) in [
        (
            "run = [\"true\", \"{crpo}\"]",
            "unknown placeholder `{crpo}`",
        ),
        (
            "run = [\"true\", \"{params.lr}\"]",
            "`params` has no entries",
        ),
        ("run = [\"true\", \"{out\"]", "without a closing"),
        (
            "run = [\"true\"]\ndeps = [\"models/nothing*.py\"]",
            "matches no file",
        ),
        (
            "run = [\"true\"]\ntimeout = \"2 days\"",
            "is not a duration",
        ),
        (
            "run = [\"true\"]\noutputs = [\"../escape\"]",
            "relative path inside {out}",
        ),
    ] {
        let toml = format!("[stages.c]\nkind = \"command\"\ninputs = [\"crop\"]\n{bad}\n");
        std::fs::write(
            p.path().join("q.toml"),
            format!("extends = \"p.toml\"\n\n{toml}"),
        )
        .unwrap();
        let done = Invocation::real(p.path(), &["run", "q.toml"]).exits(2);
        assert!(done.stderr.contains(said), "{bad}: {}", done.stderr);
        assert!(
            done.stderr.contains("q.toml:"),
            "names the file and line: {}",
            done.stderr
        );
        assert_eq!(objects(p.path()), 0, "nothing ran");
    }
}

#[test]
fn a_program_that_writes_into_its_input_fails_and_the_input_is_recomputed() {
    if !python_with("input damage", "sys") {
        return;
    }
    let p = project("");
    let script = "import sys\nopen(sys.argv[1], 'ab').write(b'spoiled')\n";
    let toml = script_stage(p.path(), "vandal", script, ", \"{crop}/crops.parquet\"", "");
    append(p.path(), &toml);
    let done = Invocation::real(p.path(), &["run", "p.toml"]).exits(1);
    let error = stage(&done.json, "vandal")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("changed `crops.parquet` of its input `crop`"),
        "{error}"
    );
    // The damaged artifact is never reused.
    let run = Invocation::real(p.path(), &["run", "p.toml", "--until", "crop"])
        .succeeds()
        .json;
    assert_eq!(ids_with(&run, "ran"), ["crop"], "{run}");
}

#[test]
fn a_program_past_its_timeout_is_ended_and_named() {
    if !python_with("timeout", "time") {
        return;
    }
    let p = project("");
    let script = "import time\nprint('sleeping', flush=True)\ntime.sleep(60)\n";
    let toml = script_stage(p.path(), "slow", script, "", "timeout = \"1s\"");
    append(p.path(), &toml);
    let start = Instant::now();
    let done = Invocation::real(p.path(), &["run", "p.toml"]).exits(1);
    assert!(start.elapsed() < Duration::from_secs(30));
    let error = stage(&done.json, "slow")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(error.contains("ran past its timeout (1s)"), "{error}");
}

/// A script that records its pid in `pids/<id>` (beside the pipeline) and sleeps.
const SLEEPER: &str = "import os, time\nos.makedirs('pids', exist_ok=True)\nopen('pids/sleeper.tmp', 'w').write(str(os.getpid()))\nos.rename('pids/sleeper.tmp', 'pids/sleeper')\ntime.sleep(120)\n";

fn alive(pid: i32) -> bool {
    // A zombie is as good as gone; /proc/<pid>/stat says which.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn wait_for_pid(dir: &Path) -> i32 {
    let file = dir.join("pids/sleeper");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(&file) {
            return text.trim().parse().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the program never started");
}

fn wait_gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn interrupting_or_killing_the_runner_leaves_no_program_running_and_nothing_published() {
    if !python_with("interrupt", "time") {
        return;
    }
    let p = project("");
    let toml = script_stage(p.path(), "sleeper", SLEEPER, "", "");
    append(p.path(), &toml);
    Invocation::real(p.path(), &["run", "p.toml", "--until", "baseline"]).succeeds();
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGKILL] {
        let _ = std::fs::remove_dir_all(p.path().join("pids"));
        let mut runner = Command::new(assert_cmd::cargo::cargo_bin("galaxy-pipe"))
            .current_dir(p.path())
            .args(["run", "p.toml"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = wait_for_pid(p.path());
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(runner.id() as i32, signal) };
        let status = runner.wait().unwrap();
        assert!(
            wait_gone(pid),
            "signal {signal}: the program {pid} outlived the runner"
        );
        if signal != libc::SIGKILL {
            assert_eq!(status.code(), Some(128 + signal), "signal {signal}");
        }
        assert_eq!(
            objects(p.path()),
            3,
            "signal {signal}: nothing of `sleeper` published"
        );
    }
}

#[test]
fn a_sweep_over_a_parameter_runs_each_point_once_and_a_file_remote_shares_it_byte_identical() {
    if !python_with("sweep and remote", "numpy, pyarrow") {
        return;
    }
    let p = project(RIDGE);
    let sweep = ["run", "p.toml", "--sweep", "ridge.params.alpha=0.5,2"];
    Invocation::real(p.path(), &sweep).succeeds();
    let ridge_keys = std::fs::read_dir(p.path().join("cache/logs"))
        .unwrap()
        .count();
    assert_eq!(ridge_keys, 2, "one program run per point");

    let remote = p.path().join("remote");
    let url = format!("file://{}", remote.display());
    Invocation::real(p.path(), &["run", "p.toml"]).succeeds();
    let push = ["push", "p.toml", "--remote", &url];
    Invocation::real(p.path(), &push).succeeds();
    let other = ["run", "p.toml", "--remote", &url, "--cache-dir", "cache-b"];
    let run = Invocation::real(p.path(), &other).succeeds().json;
    assert_eq!(ids_with(&run, "remote").len(), 5, "{run}");
    assert_eq!(
        artifact_bytes(&p.path().join("cache-b")),
        artifact_bytes(&only_keys(p.path(), &run))
    );
}

/// A copy of `cache`'s objects restricted to the keys of `run` (the sweep left more).
fn only_keys(dir: &Path, run: &serde_json::Value) -> PathBuf {
    let copy = dir.join("cache-current");
    for s in run["stages"].as_array().unwrap() {
        let key = s["key"].as_str().unwrap();
        let from = dir.join("cache/objects").join(key);
        let to = copy.join("objects").join(key);
        copy_tree(&from, &to);
    }
    copy
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn append(dir: &Path, text: &str) {
    let path = dir.join("p.toml");
    let old = std::fs::read_to_string(&path).unwrap();
    std::fs::write(path, format!("{old}\n{text}")).unwrap();
}
