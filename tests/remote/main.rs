//! The shared remote cache: a `file://` remote always, and an S3-compatible server on 127.0.0.1
//! when `.ci/run` started one (`GALAXY_PIPE_TEST_S3=s3://bucket`, with `AWS_ENDPOINT_URL` etc.);
//! without it the S3 test skips loudly, and `GALAXY_PIPE_REQUIRE_S3=1` turns that into a failure.

#[path = "../support/mod.rs"]
mod support;

mod hostile;

use std::path::{Path, PathBuf};

use support::*;

#[test]
fn child_entry() {
    child_main();
}

/// The S3 bucket `.ci/run` started (moto on 127.0.0.1), or None after a loud skip; with
/// `GALAXY_PIPE_REQUIRE_S3` set, no bucket is a failure.
fn s3_bucket() -> Option<String> {
    let bucket = std::env::var("GALAXY_PIPE_TEST_S3").ok();
    if bucket.is_none() {
        assert!(
            std::env::var_os("GALAXY_PIPE_REQUIRE_S3").is_none(),
            "GALAXY_PIPE_REQUIRE_S3 is set but no S3 server was given (GALAXY_PIPE_TEST_S3)"
        );
        eprintln!(
            "\n!!! SKIPPED: no S3 server (set GALAXY_PIPE_TEST_S3=s3://bucket; .ci/run starts moto) !!!\n"
        );
    }
    bucket
}

/// Machine A computes and pushes to `url`; the key of its `crop` stage.
fn push_and_key_of_crop(p: &Project, url: &str) -> String {
    assert_eq!(run_on(p, "cache-a", url, &["--push"]).0, 0);
    let (_, a) = p.run_json(&["status", "p.toml", "--cache-dir", "cache-a"]);
    a["stages"][1]["key"].as_str().unwrap().to_string()
}

/// Runs `args` on `p` against an S3 endpoint that cannot serve (`endpoint`); checks that the run
/// succeeded with exactly one warning about the remote, and returns its JSON.
fn run_with_broken_s3(p: &Project, args: &[&str], endpoint: &str) -> serde_json::Value {
    let out = p
        .command(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let warnings = err.matches("the remote cache cannot be used").count();
    assert_eq!(warnings, 1, "{err}");
    json_line(&out.stdout).expect("a JSON line")
}

/// `run` with `--cache-dir DIR` and `--remote URL` (plus `extra`), as JSON.
fn run_on(p: &Project, cache: &str, remote: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["run", "p.toml", "--cache-dir", cache, "--remote", remote];
    args.extend(extra);
    p.run_json(&args)
}

/// `run --json` on `cache` with `remote` (and `extra` arguments and environment), which must
/// succeed: its JSON and its stderr.
fn run_with_stderr_env(
    p: &Project,
    cache: &str,
    remote: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> (serde_json::Value, String) {
    let mut args = vec![
        "run",
        "p.toml",
        "--cache-dir",
        cache,
        "--remote",
        remote,
        "--json",
    ];
    args.extend(extra);
    let out = p.command(&args).envs(env.iter().copied()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    (json_line(&out.stdout).expect("a JSON line"), err)
}

fn run_with_stderr(p: &Project, cache: &str, remote: &str) -> (serde_json::Value, String) {
    run_with_stderr_env(p, cache, remote, &[], &[])
}

fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// `args` on `p` against the S3 endpoint `endpoint` (and `env`): the exit code and stderr.
fn run_against(p: &Project, args: &[&str], endpoint: &str, env: &[(&str, &str)]) -> (i32, String) {
    let out = p
        .command(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "read-only")
        .env("AWS_SECRET_ACCESS_KEY", "read-only")
        .env("AWS_REGION", "us-east-1")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), err)
}

/// Files under the remote's `blobs/`.
fn blobs(remote: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![remote.join("blobs")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Machine A computes and pushes; machine B (its own cache) computes nothing: every stage comes
/// from the remote, byte-identical. A third run on B makes no request at all.
fn round_trip(p: &Project, remote: &str) {
    let (code, a) = run_on(p, "cache-a", remote, &["--push"]);
    assert_eq!(code, 0, "{a}");
    assert_eq!(ids_with(&a, "ran").len(), 5, "{a}");
    assert!(
        a["stages"][0]["notes"].to_string().contains("pushed"),
        "{a}"
    );
    p.clear_log();
    let (code, b) = run_on(p, "cache-b", remote, &[]);
    assert_eq!(code, 0, "{b}");
    assert_eq!(ids_with(&b, "remote").len(), 5, "{b}");
    assert!(p.starts().is_empty(), "nothing computed on B");
    assert!(b["stages"][1]["remote_bytes"].as_u64().unwrap() > 0);
    assert_eq!(
        artifact_bytes(&p.path().join("cache-a")),
        artifact_bytes(&p.path().join("cache-b"))
    );
    // Fully cached locally: the remote is not asked (an unreachable one would warn).
    let out = p
        .command(&[
            "run",
            "p.toml",
            "--cache-dir",
            "cache-b",
            "--remote",
            "s3://nowhere/x",
        ])
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("AWS_ALLOW_HTTP", "true")
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("warning"),
        "no request when every key is local: {err}"
    );
}

#[test]
fn a_file_remote_shares_every_artifact_byte_identical() {
    let p = Project::new(10, 2);
    let remote = p.path().join("remote");
    round_trip(&p, &file_url(&remote));
    // Read-only by default: B pushed nothing new; blobs are stored once per content.
    let files: usize = artifact_bytes(&p.path().join("cache-a")).len();
    assert!(blobs(&remote).len() <= files);
    assert_eq!(entries(&remote.join("entries")), 5);
}

#[test]
fn damaged_or_hostile_entries_are_misses_never_failures() {
    let p = Project::new(10, 0);
    let remote = p.path().join("remote");
    let url = file_url(&remote);
    assert_eq!(run_on(&p, "cache-a", &url, &["--push"]).0, 0);
    // A flipped byte in every blob of one artifact: found, reported, recomputed.
    let (_, a) = p.run_json(&["status", "p.toml", "--cache-dir", "cache-a"]);
    let crop_key = a["stages"][1]["key"].as_str().unwrap().to_string();
    let entry = remote.join("entries").join(format!("{crop_key}.json"));
    let e: serde_json::Value = serde_json::from_slice(&std::fs::read(&entry).unwrap()).unwrap();
    for f in e["files"].as_array().unwrap() {
        let d = f["digest"].as_str().unwrap();
        let blob = remote.join("blobs").join(&d[..2]).join(d);
        let mut bytes = std::fs::read(&blob).unwrap();
        bytes[0] ^= 1;
        std::fs::write(&blob, bytes).unwrap();
    }
    let (v, err) = run_with_stderr(&p, "cache-b", &url);
    assert_eq!(ids_with(&v, "ran"), ["crop"], "{v}");
    assert!(err.contains("does not match its digest"), "{err}");

    // An entry naming a path outside the artifact: rejected, nothing written outside.
    let mut hostile = e.clone();
    hostile["files"][0]["path"] = serde_json::json!("../../outside");
    std::fs::write(&entry, serde_json::to_vec(&hostile).unwrap()).unwrap();
    let (v, err) = run_with_stderr(&p, "cache-c", &url);
    assert_eq!(ids_with(&v, "ran"), ["crop"], "{v}");
    assert!(err.contains("unsafe or unnormalised path"), "{err}");
    assert!(!p.path().join("outside").exists() && !p.path().join("cache-c/outside").exists());

    // A truncated entry: a garbled one, reported, recomputed.
    std::fs::write(&entry, b"{\"format\": 1, \"ke").unwrap();
    let (code, v) = run_on(&p, "cache-d", &url, &[]);
    assert_eq!(code, 0);
    assert_eq!(ids_with(&v, "ran"), ["crop"], "{v}");
}

/// `run --json` on `cache` with `remote`, the signing secret `secret` in the environment.
fn run_signed(
    p: &Project,
    cache: &str,
    remote: &str,
    secret: &str,
    push: bool,
) -> (serde_json::Value, String) {
    let extra: &[&str] = if push { &["--push"] } else { &[] };
    run_with_stderr_env(
        p,
        cache,
        remote,
        extra,
        &[("GALAXY_PIPE_REMOTE_KEY", secret)],
    )
}

#[test]
fn with_a_remote_key_entries_signed_with_another_key_are_ignored() {
    let p = Project::new(10, 0);
    let url = file_url(&p.path().join("remote"));
    let (a, _) = run_signed(&p, "cache-a", &url, "team secret", true);
    assert_eq!(ids_with(&a, "ran").len(), 5, "{a}");
    // The same key: every stage comes from the remote.
    let (b, _) = run_signed(&p, "cache-b", &url, "team secret", false);
    assert_eq!(ids_with(&b, "remote").len(), 5, "{b}");
    // Another key (a bucket someone else wrote): nothing is used, everything is computed.
    let (c, err) = run_signed(&p, "cache-c", &url, "not the team's", false);
    assert_eq!(ids_with(&c, "ran").len(), 5, "{c}");
    assert!(
        err.contains("not signed with this machine's GALAXY_PIPE_REMOTE_KEY"),
        "{err}"
    );
    // Without a key, signed entries are still ordinary entries.
    let (code, d) = run_on(&p, "cache-d", &url, &[]);
    assert_eq!((code, ids_with(&d, "remote").len()), (0, 5), "{d}");
    // An empty secret is a mistake, not "no key".
    let out = p
        .command(&["run", "p.toml", "--remote", &url])
        .env("GALAXY_PIPE_REMOTE_KEY", "")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("GALAXY_PIPE_REMOTE_KEY is set but empty")
    );
}

#[test]
fn an_unreachable_remote_warns_once_and_the_run_goes_on() {
    let p = Project::new(6, 0);
    let args = ["run", "p.toml", "--remote", "s3://bucket/prefix", "--json"];
    // Nothing listens on the discard port.
    let v = run_with_broken_s3(&p, &args, "http://127.0.0.1:9");
    assert_eq!(
        ids_with(&v, "ran").len(),
        5,
        "every stage computed locally: {v}"
    );
    // With --push the results are computed but not shared: said per stage, exit 3.
    let args = [
        "run",
        "p.toml",
        "--remote",
        "s3://bucket/prefix",
        "--push",
        "--cache-dir",
        "c2",
    ];
    let (code, err) = run_against(&p, &args, "http://127.0.0.1:9", &[]);
    assert_eq!(code, 3, "{err}");
    assert_eq!(
        err.matches("the remote cache cannot be used").count(),
        1,
        "{err}"
    );
    let warned = err.lines().filter(|l| l.starts_with("warning: stage `"));
    assert_eq!(
        warned
            .filter(|l| l.contains("not pushed to s3://bucket/prefix"))
            .count(),
        5,
        "{err}"
    );
}

#[test]
fn pull_downloads_without_computing_and_push_uploads_a_pipelines_state() {
    let p = Project::new(8, 0);
    let remote = p.path().join("remote");
    let url = file_url(&remote);
    // Computed without pushing, then pushed explicitly.
    assert_eq!(
        p.run_json(&["run", "p.toml", "--cache-dir", "cache-a"]).0,
        0
    );
    let (code, v) = p.run_json(&["push", "p.toml", "--cache-dir", "cache-a", "--remote", &url]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["artifacts"].as_array().unwrap().len(), 5);
    // status on a fresh cache says `remote hit` for the first stage; pull takes everything.
    let (_, s) = p.run_json(&[
        "status",
        "p.toml",
        "--cache-dir",
        "cache-b",
        "--remote",
        &url,
    ]);
    assert_eq!(s["stages"][0]["state"], "remote hit", "{s}");
    p.clear_log();
    let (code, v) = p.run_json(&["pull", "p.toml", "--cache-dir", "cache-b", "--remote", &url]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(ids_with(&v, "remote").len(), 5, "{v}");
    assert!(p.starts().is_empty());
    // A stage the remote lacks is skipped by pull, never computed.
    let (code, v) = p.run_json(&[
        "pull",
        "p.toml",
        "--cache-dir",
        "cache-c",
        "--remote",
        &url,
        "--set",
        "train.epochs=2",
    ]);
    assert_eq!(code, 1);
    assert_eq!(ids_with(&v, "skipped"), ["train", "evaluate"], "{v}");
    assert!(p.starts().is_empty());
}

/// Against a real S3 server (moto on 127.0.0.1, started by `.ci/run`): the round trip, and two
/// machines pushing the same keys at once leave one entry each, with no error.
#[test]
fn an_s3_remote_shares_artifacts_and_racing_pushes_leave_one_entry() {
    let Some(bucket) = s3_bucket() else {
        return;
    };
    let p = Project::new(10, 2);
    let prefix = format!("{bucket}/{}", std::process::id());
    round_trip(&p, &format!("{prefix}/a"));
    let racing = format!("{prefix}/race");
    let runs: Vec<Vec<&str>> = ["cache-x", "cache-y"]
        .iter()
        .map(|c| {
            vec![
                "run",
                "p.toml",
                "--cache-dir",
                c,
                "--remote",
                &racing,
                "--push",
            ]
        })
        .collect();
    p.run_simultaneously(&runs, 50);
    let (code, v) = run_on(&p, "cache-z", &racing, &[]);
    assert_eq!(code, 0);
    assert_eq!(ids_with(&v, "remote").len(), 5, "{v}");
}

/// `gc --remote URL` removes the remote entries no retained run or pipeline state uses (blobs
/// younger than an hour stay: a push may be between its blobs and its entry); the
/// `GALAXY_PIPE_REMOTE` variable alone never makes `gc` touch the remote.
#[test]
fn gc_on_the_remote_removes_the_entries_no_retained_run_uses() {
    let p = Project::new(8, 0);
    let remote = p.path().join("remote");
    let url = file_url(&remote);
    assert_eq!(run_on(&p, "cache-a", &url, &["--push"]).0, 0);
    let second = run_on(&p, "cache-a", &url, &["--push", "--set", "train.epochs=2"]);
    assert_eq!(ids_with(&second.1, "ran"), ["train", "evaluate"]);
    assert_eq!(entries(&remote.join("entries")), 7);
    let gc = |extra: &[&str]| {
        let mut args = vec![
            "gc",
            "--keep-runs",
            "1",
            "--cache-dir",
            "cache-a",
            "--remote",
            &url,
        ];
        args.extend(extra);
        p.run_json(&args)
    };
    let (code, v) = gc(&["--dry-run"]);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["removed_entries"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(
        entries(&remote.join("entries")),
        7,
        "a dry run deletes nothing"
    );
    let (_, v) = gc(&[]);
    assert_eq!(
        v["removed_blobs"], 0,
        "fresh blobs are in their grace period: {v}"
    );
    assert_eq!(entries(&remote.join("entries")), 5);
    // The environment variable alone: a local gc.
    let out = p
        .command(&["gc", "--cache-dir", "cache-a", "--json"])
        .env("GALAXY_PIPE_REMOTE", &url)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"removed\""));
    assert_eq!(entries(&remote.join("entries")), 5);
    // What is left is still a complete cache for the current state.
    let (code, v) = run_on(&p, "cache-b", &url, &["--set", "train.epochs=2"]);
    assert_eq!(code, 0);
    assert_eq!(ids_with(&v, "remote").len(), 5, "{v}");
}
