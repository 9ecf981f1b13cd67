//! The Slurm executor on a real one-node Slurm (`.ci/slurm start`: slurmctld, slurmd, munge from
//! Debian). They run only when asked (`GALAXY_PIPE_TEST_SLURM=1`, set by `.ci/run`), never because
//! some cluster's `sinfo` happens to answer: on a login node, `cargo test` must not submit jobs to
//! a production cluster (some of these tests stop the controller). Not asked, they skip loudly;
//! `GALAXY_PIPE_REQUIRE_SLURM=1` (set by `.ci/run`) turns a skip into a failure. The fake-stage tests run their jobs with this
//! test binary as the launcher (`GALAXY_PIPE_JOB_LAUNCHER`), the byte-identity test with the real
//! binary.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

#[test]
fn child_entry() {
    child_main();
}

/// The tests watch the queue for their own jobs by name: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The cluster to oneself while the guard lives, if a Slurm cluster answers here; a loud skip
/// (or, when required, a failure) if not.
fn slurm_up(test: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    if std::env::var("GALAXY_PIPE_TEST_SLURM").as_deref() != Ok("1") {
        if std::env::var_os("GALAXY_PIPE_REQUIRE_SLURM").is_some() {
            panic!("{test}: GALAXY_PIPE_REQUIRE_SLURM is set but GALAXY_PIPE_TEST_SLURM=1 is not");
        }
        eprintln!(
            "\n!!! SKIPPED {test}: the Slurm tests run only with GALAXY_PIPE_TEST_SLURM=1 (on a test cluster: `.ci/slurm start`) !!!\n"
        );
        return None;
    }
    let up = Command::new("sinfo")
        .args(["-h", "-o", "%t"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if !up {
        if std::env::var_os("GALAXY_PIPE_REQUIRE_SLURM").is_some() {
            panic!(
                "{test}: no Slurm cluster answers (`sinfo`), and GALAXY_PIPE_REQUIRE_SLURM is set"
            );
        }
        eprintln!(
            "\n!!! SKIPPED {test}: no Slurm cluster (`sinfo` fails); run `.ci/slurm start` as root !!!\n"
        );
    }
    up.then_some(guard)
}

/// Ids and states of the jobs named `name`, from `squeue --json`.
fn jobs_named(name: &str) -> Vec<(String, String)> {
    let out = Command::new("squeue")
        .args(["--json", "--states=all"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|j| j["name"] == name)
        .map(|j| {
            let state = match &j["job_state"] {
                serde_json::Value::Array(a) => a[0].as_str().unwrap_or("").to_string(),
                s => s.as_str().unwrap_or("").to_string(),
            };
            (j["job_id"].to_string(), state)
        })
        .collect()
}

/// The record of stage `id` in a run's JSON.
fn stage_of(v: &serde_json::Value, id: &str) -> serde_json::Value {
    let stages = v["stages"]
        .as_array()
        .expect("a run's JSON lists its stages");
    stages
        .iter()
        .find(|s| s["id"] == id)
        .expect("the stage ran")
        .clone()
}

/// Waits (up to a minute) until a job named `name` not in `before` is RUNNING; its id.
fn wait_running(name: &str, before: &[(String, String)]) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let running = jobs_named(name)
            .into_iter()
            .find(|(id, s)| s == "RUNNING" && !before.iter().any(|(b, _)| b == id));
        if let Some((id, _)) = running {
            return id;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("no new `{name}` job started running within a minute");
}

/// Waits until Slurm job `id`'s log under `cache` says the job began computing its stage, so a
/// cancel afterwards lands inside the computation, not before its first line is written.
fn wait_computing(cache: &Path, id: &str) {
    let name = format!("slurm-{id}.out");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let logs = std::fs::read_dir(cache.join("logs")).into_iter().flatten();
        let started = logs.flatten().any(|key| {
            std::fs::read_to_string(key.path().join(&name))
                .is_ok_and(|log| log.contains("compute-job: stage"))
        });
        if started {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("Slurm job {id} wrote no `compute-job` line within a minute");
}

/// A fake-stage project whose jobs run this test binary.
fn slurm_project(extra: &str) -> Project {
    let p = Project::new(8, 2);
    p.write("p.toml", &format!("{PIPELINE}{extra}"));
    p
}

/// `slurm_project` with everything upstream of `train` computed (here), so that a slow run's
/// first job is the training.
fn slurm_project_before_train(extra: &str) -> Project {
    let p = slurm_project(extra);
    let out = p.run(&["run", "p.toml", "--until", "baseline"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    p.clear_log();
    p
}

/// `p.command(args)` with the job launcher set and fake stages sleeping `sleep_ms`.
fn slurm_command(p: &Project, args: &[&str], sleep_ms: u64) -> Command {
    let mut cmd = p.command(args);
    cmd.env("GALAXY_PIPE_JOB_LAUNCHER", Project::job_launcher())
        .env("GP_SLEEP_MS", sleep_ms.to_string());
    cmd
}

/// Appends a `command` stage (Python, standard library only) that writes the digest of the
/// crops it is given.
fn add_digest_command(dir: &Path) {
    let script = "import hashlib, sys\n\
                  digest = hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest()\n\
                  open(sys.argv[2], 'w').write(digest + '\\n')\n";
    std::fs::write(dir.join("digest.py"), script).unwrap();
    let stage = "\n[stages.digest]\nkind = \"command\"\ninputs = [\"crop\"]\n\
                 run = [\"python3\", \"digest.py\", \"{crop}/crops.parquet\", \"{out}/digest.txt\"]\n\
                 deps = [\"digest.py\"]\noutputs = [\"digest.txt\"]\n";
    let toml = std::fs::read_to_string(dir.join("p.toml")).unwrap();
    std::fs::write(dir.join("p.toml"), toml + stage).unwrap();
}

#[test]
fn the_demo_as_slurm_jobs_is_byte_identical_to_a_local_run_and_a_rerun_submits_nothing() {
    let Some(_cluster) = slurm_up("slurm demo") else {
        return;
    };
    let dir = small_full_project(60, 8);
    // A user's program among the stages: it runs inside its job like any kind.
    add_digest_command(dir.path());
    let local = ["run", "p.toml", "--cache-dir", "cache-local"];
    let (code, _, err) = run_real(dir.path(), &local);
    assert_eq!(code, 0, "{err}");
    let local_csv = std::fs::read(dir.path().join("out/submission.csv")).unwrap();
    std::fs::remove_file(dir.path().join("out/submission.csv")).unwrap();

    let on_slurm = [
        "run",
        "p.toml",
        "--cache-dir",
        "cache",
        "--executor",
        "slurm",
    ];
    let (code, v, err) = run_real(dir.path(), &on_slurm);
    assert_eq!(code, 0, "{err}");
    let stages = v["stages"].as_array().unwrap();
    assert!(stages.len() >= 5, "{v}");
    for s in stages {
        assert_eq!(s["outcome"], "ran", "{s}");
        let id = s["job"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no job id: {s}"));
        assert!(id.parse::<u64>().is_ok(), "{s}");
        assert!(s["job"]["resources"]["cpus"].as_u64().is_some(), "{s}");
    }
    // The run record on disk carries the job ids too.
    let record = dir.path().join(v["record"].as_str().unwrap());
    let record = std::fs::read_to_string(record).unwrap();
    assert!(record.contains("\"job\""), "{record}");
    assert_eq!(
        artifact_bytes(&dir.path().join("cache-local")),
        artifact_bytes(&dir.path().join("cache"))
    );
    let slurm_csv = std::fs::read(dir.path().join("out/submission.csv")).unwrap();
    assert!(slurm_csv == local_csv, "the submission is byte-identical");
    // Each job's script and log are in the cache's log folder.
    let key = stages[0]["key"].as_str().unwrap();
    let logs = dir.path().join("cache/logs").join(key);
    let script = std::fs::read_to_string(logs.join("job.sh")).unwrap();
    assert!(
        script.contains("compute-job") && script.contains("sbatch"),
        "{script}"
    );
    let job_id = stages[0]["job"]["id"].as_str().unwrap();
    assert!(logs.join(format!("slurm-{job_id}.out")).exists());

    let (code, again, err) = run_real(dir.path(), &on_slurm);
    assert_eq!(code, 0, "{err}");
    assert!(
        outcomes(&again).iter().all(|(_, o)| o == "cached"),
        "{again}"
    );
    assert!(
        !err.contains("submitted"),
        "a second run submits nothing: {err}"
    );
}

#[test]
fn a_sweep_runs_its_trainings_as_concurrent_jobs_and_computes_shared_stages_once() {
    let Some(_cluster) = slurm_up("slurm sweep") else {
        return;
    };
    let p = slurm_project("");
    let before = jobs_named("gp-train");
    let mut cmd = slurm_command(
        &p,
        &[
            "run",
            "p.toml",
            "--executor",
            "slurm",
            "--sweep",
            "train.learning_rate=0.001,0.002,0.003",
        ],
        2000,
    );
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Watch the queue while the sweep runs: the three trainings must be RUNNING together.
    let mut most_at_once = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let running = jobs_named("gp-train")
            .into_iter()
            .filter(|(id, s)| s == "RUNNING" && !before.iter().any(|(b, _)| b == id))
            .count();
        most_at_once = most_at_once.max(running);
        if most_at_once == 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(most_at_once, 3, "three trainings ran at once: {err}");
    // crop and baseline are shared by the three points: each computed once (as is ingest, which
    // is real here and leaves no trace in the log).
    let starts = p.starts();
    for shared in ["crop", "baseline"] {
        assert_eq!(
            starts.iter().filter(|s| *s == shared).count(),
            1,
            "{starts:?}"
        );
    }
    assert_eq!(
        starts.iter().filter(|s| *s == "train").count(),
        3,
        "{starts:?}"
    );
}

#[test]
fn a_cancelled_or_timed_out_job_is_a_clear_stage_error_and_a_rerun_completes() {
    let Some(_cluster) = slurm_up("slurm cancel/timeout") else {
        return;
    };
    // Cancelled from outside: `scancel` while it runs.
    let p = slurm_project_before_train("");
    let before = jobs_named("gp-train");
    let child = slurm_command(
        &p,
        &["run", "p.toml", "--executor", "slurm", "--json"],
        30_000,
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let id = wait_running("gp-train", &before);
    wait_computing(&p.path().join("cache"), &id);
    assert!(Command::new("scancel").arg(&id).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v = json_line(&out.stdout).unwrap();
    let train = &stage_of(&v, "train");
    let error = train["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("Slurm job {id} ended CANCELLED")),
        "{error}"
    );
    assert!(error.contains("last lines of"), "{error}");
    // The job's log says where it was: it started computing `train` (and how it ended).
    assert!(
        error.contains("compute-job: stage `train` (train)"),
        "{error}"
    );
    assert!(
        ids_with(&v, "skipped").contains(&"evaluate".to_string()),
        "{v}"
    );
    // Nothing of it was published: a re-run computes it.
    let out = slurm_command(&p, &["run", "p.toml", "--executor", "slurm", "--json"], 0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_line(&out.stdout).unwrap();
    assert_eq!(ids_with(&v, "ran"), ["train", "evaluate"], "{v}");
    assert!(
        ids_with(&v, "ran").len() + ids_with(&v, "cached").len() == 5,
        "{v}"
    );

    // Over its time limit (one minute, the shortest Slurm has): TIMEOUT.
    let p = slurm_project_before_train("\n[stages.train.resources]\ntime = \"1\"\n");
    let out = slurm_command(
        &p,
        &["run", "p.toml", "--executor", "slurm", "--json"],
        200_000,
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v = json_line(&out.stdout).unwrap();
    let train = stage_of(&v, "train");
    assert!(
        train["error"].as_str().unwrap().contains("ended TIMEOUT"),
        "{train}"
    );
}

#[test]
fn interrupting_the_runner_cancels_its_jobs_and_a_killed_runners_job_is_reused() {
    let Some(_cluster) = slurm_up("slurm interrupt") else {
        return;
    };
    let p = slurm_project_before_train("");
    let before = jobs_named("gp-train");
    let child = slurm_command(&p, &["run", "p.toml", "--executor", "slurm"], 60_000)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = wait_running("gp-train", &before);
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains(&format!("cancelled Slurm job(s) {id}")),
        "{err}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = jobs_named("gp-train")
            .into_iter()
            .find(|(j, _)| *j == id)
            .map(|(_, s)| s);
        if state.as_deref() == Some("CANCELLED") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} was not cancelled: {state:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Killed with -9 instead: its job goes on, publishes, and the next run waits for it.
    let before = jobs_named("gp-train");
    let mut child = slurm_command(&p, &["run", "p.toml", "--executor", "slurm"], 3_000)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let id = wait_running("gp-train", &before);
    child.kill().unwrap();
    child.wait().unwrap();
    // `status` says the training is out there as a job.
    let status = p.command(&["status", "p.toml"]).output().unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(&format!("Slurm job {id} was submitted")),
        "{text}"
    );
    let out = slurm_command(&p, &["run", "p.toml", "--executor", "slurm", "--json"], 0)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // It waits for the job: for its lock while it computes (`waiting: another run is computing`),
    // or for the job itself while it is queued (`already job N`), then takes what it published.
    let waited = err.contains(&format!("already job {id}; waiting for it"))
        || err.contains("waiting: another run is computing `train`");
    assert!(waited, "{err}");
    let v = json_line(&out.stdout).unwrap();
    let train = stage_of(&v, "train");
    let reused = train["outcome"] == "cached" || train["job"]["id"] == id.as_str();
    assert!(reused, "{train}");
    let trainings = p.starts().iter().filter(|s| *s == "train").count();
    assert_eq!(
        trainings,
        2,
        "interrupted, killed run's job, nothing more: {:?}",
        p.starts()
    );
}

#[test]
fn bad_resources_are_config_errors_before_anything_is_submitted() {
    let cases = [
        ("cpu = 4", "unknown key `cpu` for `resources`", "cpus"),
        (
            "mem = \"lots\"",
            "`train.resources.mem` `lots` is not a memory size",
            "32G",
        ),
        (
            "time = \"4h\"",
            "`train.resources.time` `4h` is not a Slurm time",
            "04:00:00",
        ),
        (
            "cpus = 0",
            "`train.resources.cpus` must be in [1, 4096]",
            "cpus = 0",
        ),
        (
            "extra = [\"--qos=long\\n#SBATCH --uid=0\"]",
            "`train.resources.extra[0]`",
            "without newlines",
        ),
        (
            "partition = \"gpu; rm -rf ~\"",
            "`train.resources.partition`",
            "partition name",
        ),
    ];
    for (line, message, hint) in cases {
        let p = slurm_project(&format!("\n[stages.train.resources]\n{line}\n"));
        let out = p
            .command(&["run", "p.toml", "--executor", "slurm"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{line}: {err}");
        assert!(err.contains(message) && err.contains(hint), "{line}: {err}");
        assert!(
            err.contains("p.toml"),
            "the diagnostic names the file: {err}"
        );
        assert!(p.starts().is_empty(), "nothing ran or was submitted");
    }
}

#[test]
fn the_slurm_executor_without_sbatch_is_a_clear_usage_error() {
    let p = slurm_project("");
    let empty = tempfile::tempdir().unwrap();
    let out = p
        .command(&["run", "p.toml", "--executor", "slurm"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("`sbatch` was not found on PATH"), "{err}");
    assert!(p.starts().is_empty());
    // The pipeline file can ask for it too; a wrong name is a config error.
    p.write(
        "p.toml",
        &PIPELINE.replace("seed = 7", "seed = 7\nexecutor = \"slurn\""),
    );
    let out = p.command(&["validate", "p.toml"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`pipeline.executor`: unknown variant `slurn`, expected `local` or `slurm`"),
        "{err}"
    );
}

/// Stops `slurmctld` while it lives and starts it again when dropped (also when a test fails).
struct ControllerDown;

impl ControllerDown {
    fn now() -> ControllerDown {
        let stopped = Command::new("pkill")
            .args(["-x", "slurmctld"])
            .status()
            .unwrap();
        assert!(stopped.success(), "slurmctld was running");
        ControllerDown
    }
}

impl Drop for ControllerDown {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/slurmctld").arg("-i").status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let up = Command::new("sinfo").args(["-h", "-o", "%t"]).output();
            if up.is_ok_and(|o| o.status.success() && !o.stdout.is_empty()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// `squeue --json` during an outage exits 0 with an `errors` list and no jobs. A controller down
/// for longer than the old limit (3 such polls, ~30 s) while the training runs: the run waits,
/// says so once and again when it is back, and completes with the artifacts of a local run.
#[test]
fn a_controller_outage_longer_than_the_old_limit_does_not_fail_a_running_stage() {
    let Some(_cluster) = slurm_up("slurm controller outage") else {
        return;
    };
    let p = slurm_project_before_train("");
    let local = p.run(&["run", "p.toml", "--cache-dir", "cache-local"]);
    assert!(local.status.success());
    p.clear_log();
    let before = jobs_named("gp-train");
    // Three epochs of 20 s: the job runs through the outage.
    let child = slurm_command(
        &p,
        &["run", "p.toml", "--executor", "slurm", "--json"],
        20_000,
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    wait_running("gp-train", &before);
    let outage = Instant::now();
    {
        let _down = ControllerDown::now();
        std::thread::sleep(Duration::from_secs(45));
    }
    let survived = outage.elapsed();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        err.matches("the Slurm controller does not answer").count(),
        1,
        "{err}"
    );
    assert!(err.contains("the controller answers again"), "{err}");
    let v = json_line(&out.stdout).unwrap();
    assert_eq!(ids_with(&v, "ran"), ["train", "evaluate"], "{v}");
    assert_eq!(
        artifact_bytes(&p.path().join("cache-local")),
        artifact_bytes(&p.path().join("cache"))
    );
    eprintln!(
        "survived a controller outage of {:.0} s",
        survived.as_secs_f64()
    );
}

/// A job asking for more CPUs than any node has pends with `PartitionConfig` forever: the stage
/// fails fast naming the reason, what was asked and where to change it, and the job is cancelled.
#[test]
fn a_job_that_can_never_start_fails_fast_naming_the_reason() {
    let Some(_cluster) = slurm_up("slurm unschedulable") else {
        return;
    };
    let p = slurm_project_before_train("\n[stages.train.resources]\ncpus = 64\n");
    let before = jobs_named("gp-train");
    let start = Instant::now();
    let out = slurm_command(&p, &["run", "p.toml", "--executor", "slurm", "--json"], 0)
        .output()
        .unwrap();
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(1));
    let v = json_line(&out.stdout).unwrap();
    let error = stage_of(&v, "train")["error"].as_str().unwrap().to_string();
    for part in [
        "can never start: PENDING (PartitionConfig)",
        "--cpus-per-task=64",
        "[stages.train.resources]",
        "was cancelled",
    ] {
        assert!(error.contains(part), "{part}: {error}");
    }
    let id = jobs_named("gp-train")
        .into_iter()
        .find(|(id, _)| !before.iter().any(|(b, _)| b == id))
        .expect("the job was submitted");
    assert_eq!(id.1, "CANCELLED", "{id:?}");
    eprintln!(
        "an unschedulable job reported in {:.1} s",
        took.as_secs_f64()
    );
}

/// `--force` under Slurm recomputes: the job replaces the published key, and the run says which
/// job did it.
#[test]
fn force_under_slurm_recomputes_and_records_the_new_job() {
    let Some(_cluster) = slurm_up("slurm --force") else {
        return;
    };
    let p = slurm_project_before_train("");
    let first = slurm_command(&p, &["run", "p.toml", "--executor", "slurm", "--json"], 0)
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let first = stage_of(&json_line(&first.stdout).unwrap(), "train");
    let forced = slurm_command(
        &p,
        &[
            "run",
            "p.toml",
            "--executor",
            "slurm",
            "--force",
            "train",
            "--json",
        ],
        0,
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&forced.stderr);
    assert!(forced.status.success(), "{err}");
    let train = stage_of(&json_line(&forced.stdout).unwrap(), "train");
    assert_eq!(train["outcome"], "ran", "{train}");
    assert_ne!(train["job"]["id"], first["job"]["id"], "{train}");
    let trainings = p.starts().iter().filter(|s| *s == "train").count();
    assert_eq!(
        trainings,
        2,
        "the forced job computed again: {:?}",
        p.starts()
    );
}

/// Ctrl-C while the controller is down: `scancel` fails, and the runner says the job may still be
/// queued and how to cancel it (exit 130 all the same), instead of claiming it cancelled it.
#[test]
fn ctrl_c_with_the_controller_down_says_the_job_may_still_run() {
    let Some(_cluster) = slurm_up("slurm cancel while down") else {
        return;
    };
    let p = slurm_project_before_train("");
    let before = jobs_named("gp-train");
    let child = slurm_command(&p, &["run", "p.toml", "--executor", "slurm"], 60_000)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = wait_running("gp-train", &before);
    let out = {
        let _down = ControllerDown::now();
        // SAFETY: sending SIGINT to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        child.wait_with_output().unwrap()
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains(&format!("could NOT cancel Slurm job(s) {id}")),
        "{err}"
    );
    assert!(err.contains(&format!("`scancel {id}`")), "{err}");
    assert!(!err.contains("interrupted: cancelled"), "{err}");
    let _ = Command::new("scancel").arg(&id).status();
}

/// `squeue` (or `scancel`) missing: a usage error before anything is submitted.
#[test]
fn the_slurm_executor_without_squeue_is_a_usage_error_before_submitting() {
    let p = slurm_project("");
    let Ok(sbatch) = which("sbatch") else {
        eprintln!("\n!!! SKIPPED the squeue check: no sbatch here to keep on PATH !!!\n");
        assert!(
            std::env::var_os("GALAXY_PIPE_REQUIRE_SLURM").is_none(),
            "sbatch is required"
        );
        return;
    };
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(sbatch, bin.path().join("sbatch")).unwrap();
    let out = p
        .command(&["run", "p.toml", "--executor", "slurm"])
        .env("PATH", bin.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("`squeue` was not found on PATH"), "{err}");
    assert!(p.starts().is_empty());
}

/// The absolute path of `tool` on PATH.
fn which(tool: &str) -> Result<std::path::PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .ok_or(())
}
