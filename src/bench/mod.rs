//! `galaxy-pipe bench`: the performance figures of BENCHMARKS.md, each as a ratio against a
//! baseline measured in the same run (these machines are noisy).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde_json::json;

mod command;
mod remote;
mod train;

pub struct BenchOptions {
    /// The real Kaggle sample (for the crop and training figures).
    pub sample: PathBuf,
    /// Where the large data set and caches are built (kept between runs).
    pub work: PathBuf,
    /// Images in the large data set (61,578 = the Kaggle training set).
    pub count: usize,
    /// Training batches to time.
    pub train_batches: usize,
    /// Which groups of figures to measure (all when empty).
    pub only: Vec<Part>,
    /// The remote cache for the `remote` group (skipped without one).
    pub remote: Option<String>,
    /// An accelerator to time training on beside the CPU (`train` group).
    pub device: Option<crate::model::recipe::Device>,
}

/// A group of figures that can be measured on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Crop stage vs decode-only, on the real sample.
    Crop,
    /// The large set: ingest hashing, no-op run, crops loading, peak memory.
    Large,
    /// CPU training of the seed network.
    Train,
    /// The remote cache (needs `--remote URL`): push vs `cp`, pull vs compute, no-op run.
    Remote,
    /// The `command` kind: no-op run against a built-in stage, deps edit → re-run.
    Command,
}

/// An accelerator `bench --device` can time training on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AcceleratorArg {
    Cuda,
    Wgpu,
}

impl AcceleratorArg {
    pub fn device(self) -> crate::model::recipe::Device {
        match self {
            AcceleratorArg::Cuda => crate::model::recipe::Device::Cuda,
            AcceleratorArg::Wgpu => crate::model::recipe::Device::Wgpu,
        }
    }
}

/// One measured figure.
struct Figure {
    what: String,
    value: f64,
    unit: &'static str,
    baseline: f64,
    baseline_what: &'static str,
    target: &'static str,
}

fn jpegs(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jpg"))
        .collect();
    files.sort();
    Ok(files)
}

/// Run the CLI (same code path as a user's `run`) and return its JSON result.
fn cli_json(args: &[&str]) -> Result<serde_json::Value, String> {
    cli_json_with(args, &[])
}

/// [`cli_json`] with extra environment variables.
fn cli_json_with(args: &[&str], env: &[(&str, &str)]) -> Result<serde_json::Value, String> {
    let mut full = vec!["galaxy-pipe".to_string()];
    full.extend(args.iter().map(|s| s.to_string()));
    full.push("--json".into());
    // A child process, so stage times include everything a user's `run` pays.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::process::Command::new(exe)
        .args(&full[1..])
        .envs(env.iter().copied())
        .output()
        .map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with('{')).ok_or_else(|| {
        format!(
            "no JSON from {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(v)
}

fn stage_seconds(v: &serde_json::Value, id: &str) -> f64 {
    v["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id))
        .and_then(|s| s["seconds"].as_f64())
        .unwrap_or(f64::NAN)
}

/// Build (once) a Kaggle-layout folder of `count` labelled images by replicating the real
/// sample's JPEGs and labels under new ids (rendering 61,578 synthetic images takes ~13 minutes
/// on 2 cores; replicated real JPEGs have the real size distribution, which is what hashing,
/// stat walks and cropping cost depend on).
fn large_set(work: &Path, sample: &Path, opts: &BenchOptions) -> Result<PathBuf, String> {
    let dir = work.join(format!("kaggle-{}", opts.count));
    let done = dir.join(".complete");
    if done.exists() {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let images = dir.join("images_training_rev1");
    std::fs::create_dir_all(&images).map_err(|e| e.to_string())?;
    let labels = crate::stages::ingest::read_labels(&sample.join("training_solutions_rev1.csv"))
        .map_err(|e| e.to_string())?;
    let sources: Vec<(u64, crate::labels::Labels)> = labels
        .into_iter()
        .filter(|(id, _)| {
            sample
                .join("images_training_rev1")
                .join(format!("{id}.jpg"))
                .exists()
        })
        .collect();
    let mut csv = format!("GalaxyID,{}\n", crate::labels::CLASS_NAMES.join(","));
    (0..opts.count).into_par_iter().try_for_each(|i| {
        let (src, _) = &sources[i % sources.len()];
        std::fs::copy(
            sample
                .join("images_training_rev1")
                .join(format!("{src}.jpg")),
            images.join(format!("{}.jpg", 100_000 + i)),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    })?;
    for i in 0..opts.count {
        let (_, l) = &sources[i % sources.len()];
        csv.push_str(&(100_000 + i).to_string());
        for v in l {
            csv.push_str(&format!(",{v}"));
        }
        csv.push('\n');
    }
    std::fs::write(dir.join("training_solutions_rev1.csv"), csv).map_err(|e| e.to_string())?;
    std::fs::write(&done, b"").map_err(|e| e.to_string())?;
    Ok(dir)
}

fn pipeline_file(dir: &Path, name: &str, data: &Path, extra: &str) -> Result<PathBuf, String> {
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        "[pipeline]\nname = \"{name}\"\n\n[stages.ingest]\nkind = \"ingest\"\ndata_dir = \"{}\"\ntest_images = \"\"\n\n[stages.crop]\nkind = \"crop\"\ninputs = [\"ingest\"]\n{extra}",
        data.display()
    );
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path)
}

/// Peak resident memory of finished child processes, in bytes.
fn children_max_rss() -> u64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    usage.ru_maxrss as u64 * 1024
}

pub fn run(opts: &BenchOptions) -> Result<serde_json::Value, String> {
    std::fs::create_dir_all(&opts.work).map_err(|e| e.to_string())?;
    let work = std::path::absolute(&opts.work).map_err(|e| e.to_string())?;
    let sample = std::path::absolute(&opts.sample).map_err(|e| e.to_string())?;
    let mut figures = Vec::new();
    let cores = rayon::current_num_threads();

    let sample_cache = work.join("cache-sample");
    let p = pipeline_file(&work, "bench-sample", &sample, "")?;
    let cache_arg = sample_cache.to_string_lossy().to_string();
    let wanted = |part: Part| opts.only.is_empty() || opts.only.contains(&part);
    let v = cli_json(&["run", p.to_str().unwrap(), "--cache-dir", &cache_arg])?;
    if wanted(Part::Crop) {
        crop_figures(&p, &cache_arg, &sample, &mut figures)?;
    }
    if wanted(Part::Large) {
        large_figures(&work, &sample, opts, &mut figures)?;
    }
    if wanted(Part::Command) {
        command::command_figures(&work, &sample, &sample_cache, &mut figures)?;
    }
    if wanted(Part::Train) {
        train::train_figures(&work, &sample_cache, &v, opts, &mut figures)?;
    }
    match (&opts.remote, wanted(Part::Remote)) {
        (Some(url), true) => remote::remote_figures(&work, &sample, opts, url, &mut figures)?,
        (None, true) if opts.only.contains(&Part::Remote) => {
            return Err(
                "`bench --only remote` needs `--remote URL` (a fresh prefix is made under it)"
                    .into(),
            );
        }
        (None, true) => eprintln!("bench: no --remote given; the remote figures are skipped"),
        _ => {}
    }
    let rows: Vec<serde_json::Value> = figures
        .iter()
        .map(|f| json!({ "what": f.what, "value": f.value, "unit": f.unit, "baseline": f.baseline, "baseline_what": f.baseline_what, "ratio": f.value / f.baseline, "target": f.target }))
        .collect();
    Ok(json!({ "cores": cores, "figures": rows }))
}

/// The crop stage (a real `run --force crop`) against decode-only loops over the same JPEGs.
fn crop_figures(
    p: &Path,
    cache_arg: &str,
    sample: &Path,
    figures: &mut Vec<Figure>,
) -> Result<(), String> {
    eprintln!("bench: crop on the real sample …");
    let mut all = jpegs(&sample.join("images_training_rev1"))?;
    all.extend(jpegs(&sample.join("images_test_rev1")).unwrap_or_default());
    // Best of three for both, alternating, so both read a warm page cache and a passing
    // disturbance on this shared machine does not decide the ratio.
    let (mut decode_rate, mut crop_rate) = (0f64, 0f64);
    for _ in 0..3 {
        let t = Instant::now();
        let decoded = all
            .par_iter()
            .filter(|f| crate::vision::decode_jpeg(f, None).is_ok())
            .count();
        decode_rate = decode_rate.max(decoded as f64 / t.elapsed().as_secs_f64());
        let v = cli_json(&[
            "run",
            p.to_str().unwrap(),
            "--cache-dir",
            cache_arg,
            "--force",
            "crop",
        ])?;
        crop_rate = crop_rate.max(all.len() as f64 / stage_seconds(&v, "crop"));
    }
    figures.push(Figure {
        what: "crop stage on the real sample".into(),
        value: crop_rate,
        unit: "images/s",
        baseline: decode_rate,
        baseline_what: "decode-only loop, all cores",
        target: "≥ 0.6×",
    });
    Ok(())
}

/// Ingest hashing, the no-op run, loading crops.parquet and peak memory, on the large set.
fn large_figures(
    work: &Path,
    sample: &Path,
    opts: &BenchOptions,
    figures: &mut Vec<Figure>,
) -> Result<(), String> {
    eprintln!("bench: building a {}-image data set …", opts.count);
    let large = large_set(work, sample, opts)?;
    let large_files = jpegs(&large.join("images_training_rev1"))?;
    let t = Instant::now();
    let bytes: u64 = large_files
        .par_iter()
        .map(|f| {
            let mut buf = Vec::new();
            std::fs::File::open(f)
                .and_then(|mut h| h.read_to_end(&mut buf))
                .map(|n| n as u64)
                .unwrap_or(0)
        })
        .sum();
    let read_s = t.elapsed().as_secs_f64();
    let large_cache = work.join("cache-large");
    let _ = std::fs::remove_dir_all(&large_cache);
    let lp = pipeline_file(work, "bench-large", &large, "")?;
    let large_cache_arg = large_cache.to_string_lossy().to_string();
    eprintln!(
        "bench: first ingest (hashing {} files) …",
        large_files.len()
    );
    let first = cli_json(&[
        "run",
        lp.to_str().unwrap(),
        "--cache-dir",
        &large_cache_arg,
        "--until",
        "ingest",
    ])?;
    let hash_s = stage_seconds(&first, "ingest");
    figures.push(Figure {
        what: "first ingest (hash + catalog) of the large set".into(),
        value: bytes as f64 / hash_s / 1e6,
        unit: "MB/s",
        baseline: bytes as f64 / read_s / 1e6,
        baseline_what: "reading the same bytes, all cores",
        target: "≥ 0.8×",
    });
    eprintln!("bench: crop of the large set …");
    let rss_before = children_max_rss();
    let cropped = cli_json(&["run", lp.to_str().unwrap(), "--cache-dir", &large_cache_arg])?;
    let crop_rss = children_max_rss().max(rss_before);
    let stat_n = noop_figure(&large, &lp, &large_cache_arg, figures)?;
    load_figures(&large_cache, &cropped, crop_rss, figures)?;
    eprintln!("bench: the large set has {stat_n} images");
    Ok(())
}

/// The no-op run of the whole (ingest → crop) pipeline, cache warm, against a stat walk of
/// the same files; how many files the walk saw.
fn noop_figure(
    large: &Path,
    lp: &Path,
    large_cache_arg: &str,
    figures: &mut Vec<Figure>,
) -> Result<usize, String> {
    let t = Instant::now();
    let mut stat_n = 0;
    for f in std::fs::read_dir(large.join("images_training_rev1"))
        .map_err(|e| e.to_string())?
        .flatten()
    {
        if f.metadata().is_ok() {
            stat_n += 1;
        }
    }
    let stat_s = t.elapsed().as_secs_f64();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut noop = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let out = std::process::Command::new(&exe)
            .args([
                "run",
                lp.to_str().unwrap(),
                "--cache-dir",
                large_cache_arg,
                "--json",
            ])
            .output()
            .map_err(|e| e.to_string())?;
        let s = t.elapsed().as_secs_f64();
        if !String::from_utf8_lossy(&out.stdout).contains("\"cached\"")
            || String::from_utf8_lossy(&out.stdout).contains("\"ran\"")
        {
            return Err("the no-op run was not a no-op".into());
        }
        noop = noop.min(s);
    }
    figures.push(Figure {
        what: "no-op `run` (ingest → crop), whole process".into(),
        value: noop,
        unit: "s",
        baseline: stat_s,
        baseline_what: "stat walk of the same files",
        target: "≤ 0.5 s and ≤ 3×",
    });
    Ok(stat_n)
}

/// Loading `crops.parquet` against reading its bytes, and the peak memory of the crop run.
fn load_figures(
    large_cache: &Path,
    cropped: &serde_json::Value,
    crop_rss: u64,
    figures: &mut Vec<Figure>,
) -> Result<(), String> {
    let crops_path = {
        let key = cropped["stages"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["id"] == "crop"))
            .and_then(|s| s["key"].as_str())
            .ok_or("no crop key")?
            .to_string();
        large_cache
            .join("objects")
            .join(key)
            .join("out/crops.parquet")
    };
    // Warm the page cache first, then take the best of three for both, alternating, so
    // neither side is timed against a colder file than the other.
    let file_bytes = std::fs::read(&crops_path).map_err(|e| e.to_string())?.len() as f64;
    let (mut raw_s, mut load_s) = (f64::INFINITY, f64::INFINITY);
    let mut crops = None;
    for _ in 0..3 {
        let t = Instant::now();
        let bytes = std::fs::read(&crops_path).map_err(|e| e.to_string())?;
        raw_s = raw_s.min(t.elapsed().as_secs_f64());
        drop(bytes);
        drop(crops.take()); // free the previous copy before the next load
        let t = Instant::now();
        crops = Some(crate::artifacts::read_crops(&crops_path).map_err(|e| e.to_string())?);
        load_s = load_s.min(t.elapsed().as_secs_f64());
    }
    let crops = crops.expect("loaded three times");
    figures.push(Figure {
        what: "loading crops.parquet into memory (u8)".into(),
        value: file_bytes / load_s / 1e6,
        unit: "MB/s",
        baseline: file_bytes / raw_s / 1e6,
        baseline_what: "reading the file's bytes",
        target: "≥ 0.5×",
    });
    figures.push(Figure {
        what: "peak memory of a run that crops the large set".into(),
        value: crop_rss as f64 / (1 << 20) as f64,
        unit: "MiB",
        baseline: (crops.pixels.len()) as f64 / (1 << 20) as f64,
        baseline_what: "size of all crops' pixels",
        target: "< 2048 MiB (streaming)",
    });
    Ok(())
}

/// The first `n` crops of the sample pipeline's run `v`, all as labelled training rows.
pub(super) fn train_subset(
    sample_cache: &Path,
    v: &serde_json::Value,
    n: usize,
) -> Result<crate::artifacts::Crops, String> {
    let key = v["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == "crop"))
        .and_then(|s| s["key"].as_str())
        .ok_or("no crop key")?;
    let path = sample_cache
        .join("objects")
        .join(key)
        .join("out")
        .join(crate::artifacts::CROPS);
    let crops = crate::artifacts::read_crops(&path).map_err(|e| e.to_string())?;
    let n = n.min(crops.ids.len());
    Ok(crate::artifacts::Crops {
        size: crops.size,
        ids: crops.ids[..n].to_vec(),
        splits: vec![crate::artifacts::Split::Train; n],
        pixels: crops.pixels[..n * crops.size * crops.size * 3].to_vec(),
        labels: crops.labels[..n]
            .iter()
            .map(|l| l.or(Some([0.0; crate::labels::N_CLASSES])))
            .collect(),
    })
}

/// The figures as a Markdown table.
pub fn table_text(v: &serde_json::Value) -> String {
    let mut out =
        String::from("| figure | value | baseline (same run) | value / baseline | target |\n");
    out.push_str("|---|---|---|---|---|\n");
    for f in v["figures"].as_array().into_iter().flatten() {
        out += &format!(
            "| {} | {:.3} {} | {:.3} ({}) | {:.2}× | {} |\n",
            f["what"].as_str().unwrap_or(""),
            f["value"].as_f64().unwrap_or(f64::NAN),
            f["unit"].as_str().unwrap_or(""),
            f["baseline"].as_f64().unwrap_or(f64::NAN),
            f["baseline_what"].as_str().unwrap_or(""),
            f["ratio"].as_f64().unwrap_or(f64::NAN),
            f["target"].as_str().unwrap_or("")
        );
    }
    out
}
