//! The remote-cache figures: pushing the large set's artifacts (the 61,578-image `crops.parquet`)
//! against `cp` of the same bytes, pulling them into an empty cache against computing them, and
//! a no-op run with a remote configured against one without.

use std::path::Path;
use std::time::Instant;

use super::{Figure, cli_json, large_set, pipeline_file};

/// Everything is written under `<remote>/galaxy-pipe-bench-<unix time>/`, a fresh prefix.
pub(super) fn remote_figures(
    work: &Path,
    sample: &Path,
    opts: &super::BenchOptions,
    remote: &str,
    figures: &mut Vec<Figure>,
) -> Result<(), String> {
    let large = large_set(work, sample, opts)?;
    let lp = pipeline_file(work, "bench-large", &large, "")?;
    let lp = lp.to_str().ok_or("non-UTF-8 path")?;
    let stamp = std::time::UNIX_EPOCH
        .elapsed()
        .map_err(|e| e.to_string())?
        .as_secs();
    let url = format!("{}/galaxy-pipe-bench-{stamp}", remote.trim_end_matches('/'));
    let fresh = |name: &str| {
        let dir = work.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        dir.to_string_lossy().into_owned()
    };
    eprintln!("bench: computing ingest → crop of the large set into an empty cache …");
    let computed = fresh("cache-remote-computed");
    let t = Instant::now();
    cli_json(&["run", lp, "--cache-dir", &computed])?;
    let compute_s = t.elapsed().as_secs_f64();

    eprintln!("bench: pushing it to {url} …");
    let t = Instant::now();
    let pushed = cli_json(&["push", lp, "--cache-dir", &computed, "--remote", &url])?;
    let push_s = t.elapsed().as_secs_f64();
    let bytes: u64 = pushed["artifacts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["bytes"].as_u64())
        .sum();
    let cp_s = cp_seconds(Path::new(&computed), &work.join("cp-copy"))?;
    figures.push(Figure {
        what: "push of the large set's artifacts (61,578-image crops.parquet + catalog)".into(),
        value: bytes as f64 / push_s / 1e6,
        unit: "MB/s",
        baseline: bytes as f64 / cp_s / 1e6,
        baseline_what: "`cp` of the same files on this disk",
        target: "report",
    });

    let pulled = fresh("cache-remote-pulled");
    pull_figures(lp, &pulled, &url, compute_s, figures)?;
    noop_with_remote(lp, &pulled, &url, figures)
}

/// Pulls the pushed artifacts into the empty cache `pulled`: in ranges (the default), then one
/// request per file, each against computing them.
fn pull_figures(
    lp: &str,
    pulled: &str,
    url: &str,
    compute_s: f64,
    figures: &mut Vec<Figure>,
) -> Result<(), String> {
    let one_request = [(crate::cache::remote::RANGE_VAR, "0")];
    let ways: [(&'static str, &[(&str, &str)]); 2] = [
        (
            "pull of the same into an empty cache (16 MiB ranges, 4 at once)",
            &[],
        ),
        (
            "pull of the same, one request per file (`GALAXY_PIPE_REMOTE_RANGE_MB=0`)",
            &one_request,
        ),
    ];
    for (what, env) in ways {
        eprintln!("bench: {what} …");
        let _ = std::fs::remove_dir_all(pulled);
        let t = Instant::now();
        let v = super::cli_json_with(&["pull", lp, "--cache-dir", pulled, "--remote", url], env)?;
        let pull_s = t.elapsed().as_secs_f64();
        let all_remote = v["stages"]
            .as_array()
            .is_some_and(|s| s.iter().all(|s| s["outcome"] == "remote"));
        if !all_remote {
            return Err(format!("the pull computed something: {v}"));
        }
        figures.push(Figure {
            what: what.into(),
            value: pull_s,
            unit: "s",
            baseline: compute_s,
            baseline_what: "computing them: `run` from an empty cache",
            target: "≪ 1×",
        });
    }
    Ok(())
}

/// Copies every file of the artifacts under `cache`'s `objects/` with `cp`; the seconds it took.
fn cp_seconds(cache: &Path, to: &Path) -> Result<f64, String> {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    for object in std::fs::read_dir(cache.join("objects"))
        .map_err(|e| e.to_string())?
        .flatten()
    {
        for f in std::fs::read_dir(object.path().join("out"))
            .into_iter()
            .flatten()
            .flatten()
        {
            files.push(f.path());
        }
    }
    let t = Instant::now();
    for (i, f) in files.iter().enumerate() {
        let status = std::process::Command::new("cp")
            .arg(f)
            .arg(to.join(i.to_string()))
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("cp {} failed", f.display()));
        }
    }
    // The push reads from and the copy writes to the page cache alike; both end with the data
    // handed to the kernel, neither waits for the disk.
    let s = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(to);
    Ok(s)
}

/// A fully cached run with the remote configured against the same run without (best of 5).
fn noop_with_remote(
    lp: &str,
    cache: &str,
    url: &str,
    figures: &mut Vec<Figure>,
) -> Result<(), String> {
    let best = |extra: &[&str]| -> Result<f64, String> {
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let mut args = vec!["run", lp, "--cache-dir", cache];
            args.extend(extra);
            let t = Instant::now();
            let v = cli_json(&args)?;
            best = best.min(t.elapsed().as_secs_f64());
            if v.to_string().contains("\"ran\"") || v.to_string().contains("\"remote\"") {
                return Err("the no-op run was not a no-op".into());
            }
        }
        Ok(best)
    };
    let without = best(&[])?;
    let with = best(&["--remote", url])?;
    figures.push(Figure {
        what: "no-op `run` (ingest → crop, all cached) with `--remote`".into(),
        value: with,
        unit: "s",
        baseline: without,
        baseline_what: "the same run without a remote",
        target: "1.0× (no request)",
    });
    Ok(())
}
