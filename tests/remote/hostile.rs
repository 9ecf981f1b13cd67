//! Broken and hostile S3 servers: one that dies mid-answer, refuses writes, freezes, or serves
//! rewritten entries. Fake endpoints on 127.0.0.1, and moto where a real server is needed.

use std::path::Path;

use super::support::*;
use super::*;

/// A server that dies in the middle of every answer (headers promise 4096 bytes, 16 arrive, then
/// the connection closes): each stage is computed locally, one warning, nothing half-published.
#[test]
fn a_server_dying_mid_transfer_leaves_nothing_half_published() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut request = [0u8; 8192];
            let _ = s.read(&mut request);
            let head = "HTTP/1.1 200 OK\r\nContent-Length: 4096\r\nETag: \"x\"\r\nLast-Modified: Mon, 30 Nov 2026 12:00:00 GMT\r\n\r\n";
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&[b'{'; 16]);
            // Dropped here: the transfer ends early.
        }
    });
    let p = Project::new(6, 0);
    let args = ["run", "p.toml", "--remote", "s3://bucket/prefix", "--json"];
    let v = run_with_broken_s3(&p, &args, &format!("http://127.0.0.1:{port}"));
    assert_eq!(ids_with(&v, "ran").len(), 5, "{v}");
    assert_eq!(
        entries(&p.path().join("cache/tmp")),
        0,
        "no staging folder left behind"
    );
}

/// What a fake S3 endpoint answers to one request (method, target with its query).
enum Answer {
    /// Write these bytes and close the connection.
    Reply(String),
    /// Write these bytes, then hold the connection open and send nothing more.
    Stall(String),
}

/// An HTTP endpoint on 127.0.0.1 that answers each request with `answer`; its URL.
fn fake_s3(answer: fn(&str, &str) -> Answer) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let mut request_line = String::new();
            let _ = reader.read_line(&mut request_line);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let _ = reader
                .by_ref()
                .take(length as u64)
                .read_to_end(&mut Vec::new());
            let mut parts = request_line.split(' ');
            let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            match answer(method, target) {
                Answer::Reply(text) => {
                    let _ = s.write_all(text.as_bytes());
                }
                Answer::Stall(text) => {
                    let _ = s.write_all(text.as_bytes());
                    held.push(s);
                }
            }
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// An HTTP response with an S3 error body.
fn s3_error(status: &str, code: &str, message: &str) -> String {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The answer to a listing: an empty bucket.
fn empty_listing() -> String {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult><Name>bucket</Name><Prefix>prefix/</Prefix><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>";
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Read-only credentials: the bucket reads fine (it is empty) but refuses every write. Each
/// computed stage is a warning naming the remote, the stage and the server's reason; the
/// verdict counts what reached the remote; the run exits 3 (NOT PUSHED), not 0.
#[test]
fn a_push_the_server_refuses_is_said_per_stage_and_exits_3() {
    let endpoint = fake_s3(|method, target| match method {
        "GET" if target.contains("list-type") => Answer::Reply(empty_listing()),
        "PUT" | "POST" => Answer::Reply(s3_error("403 Forbidden", "AccessDenied", "Access Denied")),
        _ => Answer::Reply(s3_error("404 Not Found", "NoSuchKey", "no such key")),
    });
    let p = Project::new(6, 0);
    let args = ["run", "p.toml", "--remote", "s3://bucket/prefix", "--push"];
    let (code, err) = run_against(&p, &args, &endpoint, &[]);
    assert_eq!(code, 3, "{err}");
    for stage in ["ingest", "crop", "train", "evaluate", "baseline"] {
        let line = format!("stage `{stage}` not pushed to s3://bucket/prefix: ");
        assert!(err.contains(&line), "{line}\n{err}");
    }
    let warned = err.lines().filter(|l| l.starts_with("warning: stage `"));
    assert_eq!(
        warned
            .filter(|l| l.contains("AccessDenied: Access Denied"))
            .count(),
        5,
        "{err}"
    );
    assert!(
        err.contains("NOT PUSHED: 5 ran, 0 cached, 0 failed, 0 skipped, pushed 0 of 5"),
        "{err}"
    );
    // The run record says it too, stage by stage.
    let runs: Vec<_> = std::fs::read_dir(p.path().join("cache/runs"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(runs.len(), 1);
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs[0].path()).unwrap()).unwrap();
    for stage in record["stages"].as_array().unwrap() {
        assert_eq!(stage["pushed"], false, "{stage}");
    }
    // Without --push the same server is an ordinary (empty) remote: exit 0, no warning.
    let (code, err) = run_against(
        &p,
        &[
            "run",
            "p.toml",
            "--remote",
            "s3://bucket/prefix",
            "--cache-dir",
            "other",
        ],
        &endpoint,
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("warning"), "{err}");
}

/// A server that accepts and then sends nothing, and one that stops mid-answer: each run falls
/// back to computing within a few idle timeouts (here 1 s; the default is 30 s), and says so.
#[test]
fn a_frozen_server_costs_a_run_its_idle_timeout_not_five_minutes() {
    let silent = fake_s3(|_, _| Answer::Stall(String::new()));
    let midway = fake_s3(|method, target| {
        match method {
        "GET" if target.contains("list-type") => Answer::Reply(empty_listing()),
        "HEAD" => Answer::Reply(
            "HTTP/1.1 200 OK\r\nContent-Length: 4096\r\nETag: \"x\"\r\nLast-Modified: Mon, 30 Nov 2026 12:00:00 GMT\r\nConnection: close\r\n\r\n".into(),
        ),
        _ => Answer::Stall(
            "HTTP/1.1 200 OK\r\nContent-Length: 4096\r\nETag: \"x\"\r\nLast-Modified: Mon, 30 Nov 2026 12:00:00 GMT\r\n\r\n{\"format\": 1,".into(),
        ),
    }
    });
    for (endpoint, silent) in [(silent, true), (midway, false)] {
        let p = Project::new(6, 0);
        let start = std::time::Instant::now();
        let args = ["run", "p.toml", "--remote", "s3://bucket/prefix", "--json"];
        let (code, err) = run_against(
            &p,
            &args,
            &endpoint,
            &[("GALAXY_PIPE_REMOTE_IDLE_TIMEOUT", "1")],
        );
        let took = start.elapsed();
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            err.matches("the remote cache cannot be used").count(),
            1,
            "{err}"
        );
        // The silent one times out; the other times out mid-body, and its resumed range is refused.
        let why = err.contains("timed out") || err.contains("timeout");
        assert!(why || !silent, "says why: {err}");
        // Bounded by the idle timeout and its retries, far below the 300 s total.
        assert!(took < std::time::Duration::from_secs(60), "{took:?}");
        assert_eq!(entries(&p.path().join("cache/tmp")), 0);
    }
    let p = Project::new(2, 0);
    let (code, err) = run_against(
        &p,
        &["run", "p.toml", "--remote", "s3://b/x"],
        "http://127.0.0.1:9",
        &[("GALAXY_PIPE_REMOTE_IDLE_TIMEOUT", "soon")],
    );
    assert_eq!(code, 2, "a bad setting is a usage error: {err}");
    assert!(err.contains("GALAXY_PIPE_REMOTE_IDLE_TIMEOUT"), "{err}");
}

/// The blake3 artifact digest of a file list, as the cache computes it (what an attacker who
/// rewrites an entry can recompute).
fn list_digest(files: &[serde_json::Value]) -> String {
    let mut h = blake3::Hasher::new();
    for f in files {
        h.update(f["path"].as_str().unwrap().as_bytes());
        h.update(&[0]);
        h.update(f["digest"].as_str().unwrap().as_bytes());
        h.update(b"\n");
    }
    h.finalize().to_hex().to_string()
}

/// Files under `dir`, recursively (0 when it does not exist).
fn files_in(dir: &Path) -> usize {
    let Ok(read) = std::fs::read_dir(dir) else {
        return 0;
    };
    read.flatten()
        .map(|e| {
            if e.path().is_dir() {
                files_in(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// An entry that lists one file under two spellings (with its digest recomputed) is rejected
/// before anything is published: `pull` leaves no object and no temp folder, and a later run
/// without the remote computes the stage instead of calling it cached.
#[test]
fn a_rejected_entry_is_never_published_and_never_reused_later() {
    let p = Project::new(6, 0);
    let remote = p.path().join("remote");
    let url = file_url(&remote);
    let crop_key = push_and_key_of_crop(&p, &url);
    let entry_path = remote.join("entries").join(format!("{crop_key}.json"));
    let mut entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&entry_path).unwrap()).unwrap();
    let files = entry["files"].as_array_mut().unwrap();
    let mut twice = files[0].clone();
    let path = twice["path"].as_str().unwrap().to_string();
    twice["path"] = format!("extra//{path}").into();
    files.insert(0, twice.clone());
    twice["path"] = format!("extra/{path}").into();
    files.insert(0, twice);
    let digest = list_digest(files);
    entry["digest"] = digest.into();
    std::fs::write(&entry_path, serde_json::to_vec(&entry).unwrap()).unwrap();

    let out = p
        .command(&["pull", "p.toml", "--cache-dir", "cache-b", "--remote", &url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "crop is not downloaded: {err}");
    assert!(
        err.contains("unsorted or repeated") || err.contains("unnormalised"),
        "{err}"
    );
    let cache = p.path().join("cache-b");
    assert!(
        !cache.join("objects").join(&crop_key).exists(),
        "nothing published"
    );
    assert_eq!(files_in(&cache.join("tmp")), 0, "nothing left in tmp/");
    // Offline afterwards: crop is computed, never `cached` from a rejected download.
    let (code, v) = p.run_json(&["run", "p.toml", "--cache-dir", "cache-b"]);
    assert_eq!(code, 0, "{v}");
    assert!(ids_with(&v, "ran").contains(&"crop".to_string()), "{v}");
}

/// Bucket text never reaches the terminal raw: an entry path holding a terminal sequence is
/// rejected and quoted escaped (without a key), or rejected unread (with one, the MAC first).
#[test]
fn terminal_sequences_in_a_bucket_are_shown_escaped() {
    let p = Project::new(6, 0);
    let remote = p.path().join("remote");
    let url = file_url(&remote);
    let crop_key = push_and_key_of_crop(&p, &url);
    let entry_path = remote.join("entries").join(format!("{crop_key}.json"));
    let mut entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&entry_path).unwrap()).unwrap();
    entry["files"][0]["path"] = "x\u{1b}]0;owned\u{7}\u{1b}[2J".into();
    std::fs::write(&entry_path, serde_json::to_vec(&entry).unwrap()).unwrap();
    for (cache, env) in [
        ("cache-b", vec![]),
        ("cache-c", vec![("GALAXY_PIPE_REMOTE_KEY", "k")]),
    ] {
        let (_, err) = run_with_stderr_env(&p, cache, &url, &[], &env);
        assert!(!err.contains('\u{1b}') && !err.contains('\u{7}'), "{err:?}");
        if env.is_empty() {
            assert!(err.contains("x\\u{1b}]0;owned\\u{7}\\u{1b}[2J"), "{err}");
        } else {
            assert!(err.contains("not signed"), "{err}");
        }
    }
}

/// An entry built to cost memory (a 4 MiB array of numbers where the parameters go) is refused
/// by the shape check before it is parsed; the stage is computed.
#[test]
fn an_entry_built_to_exhaust_memory_is_refused_before_parsing() {
    let p = Project::new(6, 0);
    let remote = p.path().join("remote");
    let url = file_url(&remote);
    let crop_key = push_and_key_of_crop(&p, &url);
    let entry_path = remote.join("entries").join(format!("{crop_key}.json"));
    let text = std::fs::read_to_string(&entry_path).unwrap();
    // 3 MiB: under the size cap, so the shape check is what refuses it.
    let bomb = format!("[{}0]", "0,".repeat(3 << 19));
    let hostile = text.replacen(
        "\"params\": {",
        &format!("\"bomb\": {bomb}, \"params\": {{"),
        1,
    );
    assert!(hostile.len() > 3 << 20);
    std::fs::write(&entry_path, hostile).unwrap();
    let (v, err) = run_with_stderr(&p, "cache-b", &url);
    assert_eq!(ids_with(&v, "ran"), ["crop"], "{v}");
    assert!(
        err.contains("not an entry: more than 200000 values"),
        "{err}"
    );
}

/// A bucket that does not exist is said once, on any run — not taken for an empty cache — and
/// with `--push` the run exits 3 (on the S3 server `.ci/run` starts).
#[test]
fn a_bucket_that_does_not_exist_is_a_warning_not_an_empty_cache() {
    let Some(_) = s3_bucket() else {
        return;
    };
    let p = Project::new(6, 0);
    let typo = format!("s3://no-such-bucket-{}/team", std::process::id());
    let (code, err) = run_with_stderr(&p, "cache-a", &typo);
    let _ = code;
    assert_eq!(
        err.matches("the remote cache cannot be used").count(),
        1,
        "{err}"
    );
    assert!(err.contains("NoSuchBucket"), "{err}");
    let out = p
        .command(&[
            "run",
            "p.toml",
            "--cache-dir",
            "cache-b",
            "--remote",
            &typo,
            "--push",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("pushed 0 of 5"), "{err}");
    let (_, s) = p.run_json(&[
        "status",
        "p.toml",
        "--cache-dir",
        "cache-c",
        "--remote",
        &typo,
    ]);
    assert_eq!(s["stages"][0]["state"], "stale", "{s}");
}

/// The same hostile rewrite on a real S3 server (moto, started by `.ci/run`): an entry listing
/// one file under two spellings, with a terminal sequence in one of them, is rejected before
/// publishing — `pull` leaves no object and nothing in `tmp/`, and says why escaped.
#[test]
fn on_s3_a_rejected_entry_leaves_the_cache_clean_and_the_terminal_untouched() {
    let Some(bucket) = s3_bucket() else {
        return;
    };
    use object_store::{ObjectStoreExt, PutPayload};
    let p = Project::new(6, 0);
    let prefix = format!("hostile-{}", std::process::id());
    let url = format!("{bucket}/{prefix}");
    let crop_key = push_and_key_of_crop(&p, &url);
    let s3 = object_store::aws::AmazonS3Builder::from_env()
        .with_url(bucket.as_str())
        .with_allow_http(true)
        .build()
        .unwrap();
    let path = object_store::path::Path::from(format!("{prefix}/entries/{crop_key}.json"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let body = runtime.block_on(async { s3.get(&path).await.unwrap().bytes().await.unwrap() });
    let mut entry: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let files = entry["files"].as_array_mut().unwrap();
    let mut twice = files[0].clone();
    let name = twice["path"].as_str().unwrap().to_string();
    twice["path"] = format!("x\u{1b}[2J//{name}").into();
    files.insert(0, twice.clone());
    twice["path"] = format!("x\u{1b}[2J/{name}").into();
    files.insert(0, twice);
    entry["digest"] = list_digest(files).into();
    let hostile = PutPayload::from(serde_json::to_vec(&entry).unwrap());
    runtime.block_on(async { s3.put(&path, hostile).await.unwrap() });

    let out = p
        .command(&["pull", "p.toml", "--cache-dir", "cache-b", "--remote", &url])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "crop is not downloaded: {err}");
    assert!(
        err.contains("unsafe or unnormalised path `x\\u{1b}[2J"),
        "{err}"
    );
    assert!(!err.contains('\u{1b}'), "{err:?}");
    let cache = p.path().join("cache-b");
    assert!(
        !cache.join("objects").join(&crop_key).exists(),
        "nothing published"
    );
    assert_eq!(files_in(&cache.join("tmp")), 0, "nothing left in tmp/");
}
