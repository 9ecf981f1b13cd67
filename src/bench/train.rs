//! The CPU training figures: images/s of the seed network against PyTorch training the same
//! network on the same machine in the same run (`benchmarks/pytorch_train.py`, when `python3`
//! can import `torch`), CPU use (user ÷ wall), and the share of the machine's floating-point peak
//! (the network's FLOPs per image against a large matrix product on the same backend).

use std::path::Path;
use std::time::Instant;

use super::{BenchOptions, Figure, train_subset};

/// CPU training of the seed network on the sample's crops (`v`: the sample pipeline's run),
/// against PyTorch and the machine's peak.
pub(super) fn train_figures(
    work: &Path,
    sample_cache: &Path,
    v: &serde_json::Value,
    opts: &BenchOptions,
    figures: &mut Vec<Figure>,
) -> Result<(), String> {
    let (report, arch, cpu_use) = train_seed_network(work, sample_cache, v, opts)?;
    let ours = report.images_per_sec;
    let step_flops = 3.0 * arch.forward_flops();
    let cores = rayon::current_num_threads();
    if let Some(torch) = pytorch_images_per_sec(cores, opts.train_batches) {
        figures.push(Figure {
            what: "CPU training, seed network, 64×64, batch 64: Burn flex vs PyTorch",
            value: ours,
            unit: "images/s",
            baseline: torch,
            baseline_what: "PyTorch, same network and batch, all cores",
            target: "≥ 1.0×",
        });
        let what = "PyTorch training: achieved GFLOP/s (3× forward FLOPs per image)";
        figures.push(gflops_figure(what, torch * step_flops / 1e9, cores)?);
    }
    figures.push(Figure {
        what: "CPU use of the training (user + sys ÷ wall)",
        value: cpu_use,
        unit: "cores",
        baseline: cores as f64,
        baseline_what: "cores",
        target: "≥ 0.85× (1.7 of 2)",
    });
    let what = "Burn flex training: achieved GFLOP/s (3× forward FLOPs per image)";
    figures.push(gflops_figure(what, ours * step_flops / 1e9, cores)?);
    figures.push(Figure {
        what: "CPU training, seed network: share of step time waiting for data",
        value: 100.0 * report.data_share,
        unit: "%",
        baseline: 100.0,
        baseline_what: "the whole step",
        target: "< 10%",
    });
    Ok(())
}

/// `opts.train_batches` batches of the seed network on flex: the training's report, the
/// network, and the cores it kept busy (user + sys ÷ wall).
fn train_seed_network(
    work: &Path,
    sample_cache: &Path,
    v: &serde_json::Value,
    opts: &BenchOptions,
) -> Result<
    (
        crate::model::training::TrainReport,
        crate::model::Architecture,
        f64,
    ),
    String,
> {
    eprintln!(
        "bench: training {} batches of the seed network on the CPU …",
        opts.train_batches
    );
    let mut params: crate::config::params::TrainParams =
        toml::from_str("epochs = 1").map_err(|e| e.to_string())?;
    params.device = crate::config::params::Device::Cpu;
    let n = opts.train_batches * params.batch_size as usize;
    let subset = train_subset(sample_cache, v, n)?;
    let arch = crate::model::Architecture {
        input_size: subset.size,
        conv: params.conv.clone(),
        dense: params.dense.clone(),
        activation: params.activation,
        output: params.output,
    };
    let tmp = tempfile::tempdir_in(work).map_err(|e| e.to_string())?;
    let progress = crate::progress::Progress::hidden();
    let inputs = crate::model::training::TrainInputs {
        params: &params,
        arch: &arch,
        crops: &subset,
        seed: 1,
        work_dir: tmp.path(),
        out_dir: tmp.path(),
        progress: &progress,
    };
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let report = crate::model::training::train::<burn::backend::Autodiff<burn::backend::Flex>>(
        burn::backend::flex::FlexDevice,
        &inputs,
    )
    .map_err(|e| e.to_string())?;
    let cpu_use = (cpu_seconds() - cpu) / wall.elapsed().as_secs_f64();
    Ok((report, arch, cpu_use))
}

/// Achieved GFLOP/s (`what`) against the machine's measured matrix-product peak.
fn gflops_figure(what: &'static str, gflops: f64, cores: usize) -> Result<Figure, String> {
    Ok(Figure {
        what,
        value: gflops,
        unit: "GFLOP/s",
        baseline: matmul_peak_gflops(),
        baseline_what: if cores > 1 {
            "f32 1024² matrix product, all cores (Burn flex / gemm)"
        } else {
            "f32 1024² matrix product (Burn flex / gemm)"
        },
        target: "report",
    })
}

/// This process's user + system CPU seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// The best GFLOP/s of f32 1024×1024 matrix products on flex (its gemm, every core) over ~1 s:
/// what this machine's floating-point units give a well-tuned kernel.
fn matmul_peak_gflops() -> f64 {
    use burn::tensor::{Distribution, Tensor};
    static PEAK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *PEAK.get_or_init(|| {
        type B = burn::backend::Flex;
        let device = burn::backend::flex::FlexDevice;
        let n = 1024;
        let a = Tensor::<B, 2>::random([n, n], Distribution::Default, &device);
        let b = Tensor::<B, 2>::random([n, n], Distribution::Default, &device);
        let mut best = 0.0f64;
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < 1.0 {
            let t = Instant::now();
            let _ = a.clone().matmul(b.clone()).into_data();
            best = best.max(2.0 * (n as f64).powi(3) / t.elapsed().as_secs_f64() / 1e9);
        }
        best
    })
}

/// Images/s of `benchmarks/pytorch_train.py` with `threads` threads, or None (said on stderr)
/// when PyTorch cannot run here.
fn pytorch_images_per_sec(threads: usize, batches: usize) -> Option<f64> {
    // Relative to the repository root, where `bench` runs (like its `--sample` default).
    let script = Path::new("benchmarks/pytorch_train.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args([
            "--threads",
            &threads.to_string(),
            "--batches",
            &batches.to_string(),
        ])
        .output();
    let parsed = out.ok().filter(|o| o.status.success()).and_then(|o| {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let line = text.lines().find(|l| l.starts_with('{'))?.to_string();
        serde_json::from_str::<serde_json::Value>(&line).ok()
    });
    match parsed.and_then(|v| v["images_per_sec"].as_f64()) {
        Some(rate) => Some(rate),
        None => {
            eprintln!("bench: PyTorch does not run here (`pip install torch`); no PyTorch ratio");
            None
        }
    }
}
