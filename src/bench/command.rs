//! The `command` kind's figures, on the real sample (ingest → crop cached): the no-op run with a
//! cached `command` stage against the same run with a cached built-in stage in its place, and
//! the time from an edit of a `deps` file to the finished re-run against the program alone. The
//! program is `cp` of `crops.parquet` (no interpreter), so the figures are galaxy-pipe's own cost.

use std::path::Path;
use std::time::Instant;

use super::{Figure, cli_json, pipeline_file};

const COMMAND_STAGE: &str = "\n[stages.copy]\nkind = \"command\"\ninputs = [\"crop\"]\n\
    run = [\"cp\", \"{crop}/crops.parquet\", \"{out}/copy.parquet\"]\ndeps = [\"model.txt\"]\n\
    outputs = [\"copy.parquet\"]\n";
const BUILTIN_STAGE: &str =
    "\n[stages.copy]\nkind = \"baseline\"\ninputs = [\"ingest\", \"crop\"]\n";

pub(super) fn command_figures(
    work: &Path,
    sample: &Path,
    cache: &Path,
    figures: &mut Vec<Figure>,
) -> Result<(), String> {
    eprintln!("bench: the command kind on the real sample …");
    let dep = work.join("model.txt");
    std::fs::write(&dep, "version 0\n").map_err(|e| e.to_string())?;
    let cache = cache.to_string_lossy().into_owned();
    let with_command = pipeline_file(work, "bench-command", sample, COMMAND_STAGE)?;
    let with_builtin = pipeline_file(work, "bench-builtin", sample, BUILTIN_STAGE)?;
    let with_command = with_command.to_str().ok_or("non-UTF-8 path")?;
    let with_builtin = with_builtin.to_str().ok_or("non-UTF-8 path")?;
    cli_json(&["run", with_command, "--cache-dir", &cache])?;
    cli_json(&["run", with_builtin, "--cache-dir", &cache])?;
    let (mut command_noop, mut builtin_noop) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..5 {
        command_noop = command_noop.min(noop_seconds(with_command, &cache)?);
        builtin_noop = builtin_noop.min(noop_seconds(with_builtin, &cache)?);
    }
    figures.push(Figure {
        what: "no-op `run` with a cached `command` stage (ingest → crop → command)".into(),
        value: command_noop,
        unit: "s",
        baseline: builtin_noop,
        baseline_what: "the same with a cached built-in stage (baseline)",
        target: "≤ 1.2×",
    });
    edit_to_rerun(with_command, &cache, &dep, figures)
}

/// A `run` that must compute nothing, timed as a whole process.
fn noop_seconds(pipeline: &str, cache: &str) -> Result<f64, String> {
    let t = Instant::now();
    let v = cli_json(&["run", pipeline, "--cache-dir", cache])?;
    let s = t.elapsed().as_secs_f64();
    if v.to_string().contains("\"ran\"") {
        return Err(format!("the no-op run of {pipeline} ran a stage"));
    }
    Ok(s)
}

/// Edit the dependency, re-run (only the command stage may run), against `cp` alone.
fn edit_to_rerun(
    pipeline: &str,
    cache: &str,
    dep: &Path,
    figures: &mut Vec<Figure>,
) -> Result<(), String> {
    let (mut rerun, mut alone) = (f64::INFINITY, f64::INFINITY);
    for round in 1..=3 {
        // New content every time, so even a second bench run finds nothing cached.
        let stamp = std::time::UNIX_EPOCH
            .elapsed()
            .unwrap_or_default()
            .as_nanos();
        let text = format!("version {round} at {stamp}\n");
        std::fs::write(dep, text).map_err(|e| e.to_string())?;
        let t = Instant::now();
        let v = cli_json(&["run", pipeline, "--cache-dir", cache])?;
        rerun = rerun.min(t.elapsed().as_secs_f64());
        let ran: Vec<&str> = v["stages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["outcome"] == "ran")
            .filter_map(|s| s["id"].as_str())
            .collect();
        if ran != ["copy"] {
            return Err(format!(
                "after a deps edit, {ran:?} ran (only `copy` should)"
            ));
        }
        alone = alone.min(cp_alone(cache)?);
    }
    figures.push(Figure {
        what: "`deps` edit → finished re-run of the `command` stage (`cp` of crops.parquet)".into(),
        value: rerun,
        unit: "s",
        baseline: alone,
        baseline_what: "the program alone (`cp` of the same file)",
        target: "report",
    });
    Ok(())
}

/// Seconds of the program alone: `cp` of the sample's `crops.parquet` out of the cache.
fn cp_alone(cache: &str) -> Result<f64, String> {
    let crops = std::fs::read_dir(Path::new(cache).join("objects"))
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path().join("out/crops.parquet"))
        .find(|p| p.is_file())
        .ok_or("no crops.parquet in the bench cache")?;
    let target = std::env::temp_dir().join(format!("galaxy-pipe-bench-cp-{}", std::process::id()));
    let t = Instant::now();
    let status = std::process::Command::new("cp")
        .arg(&crops)
        .arg(&target)
        .status()
        .map_err(|e| e.to_string())?;
    let s = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&target);
    status
        .success()
        .then_some(s)
        .ok_or_else(|| "cp failed".into())
}
