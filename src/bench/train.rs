//! The CPU training and inference figures: images/s against PyTorch running the same network on
//! the same machine in the same run (`benchmarks/pytorch_train.py`, when `python3` can import
//! `torch`), CPU use (user + sys ÷ wall), and the share of the machine's floating-point peak (the
//! network's FLOPs per image against a large matrix product on the same backend). Two networks:
//! the seed (`full.toml`) on the sample's real crops, and `best.toml`'s on random crops of its
//! size (throughput does not depend on the pixels); inference is 8-fold TTA prediction.

use std::path::Path;
use std::time::Instant;

use super::{BenchOptions, Figure, train_subset};
use crate::artifacts::{Crops, Split};
use crate::model::recipe::TrainParams;
use crate::model::{Architecture, Resolved};

/// One network to time: its training parameters and the crops it trains on.
struct Network {
    name: &'static str,
    params: TrainParams,
    crops: Crops,
}

impl Network {
    fn arch(&self) -> Architecture {
        Architecture {
            input_size: self.crops.size,
            conv: self.params.conv.clone(),
            dense: self.params.dense.clone(),
            activation: self.params.activation,
            output: self.params.output,
        }
    }
}

/// The training figures of the seed and `best.toml` networks, and TTA inference of the seed
/// network (`v`: the sample pipeline's run, whose crops the seed network trains on).
pub(super) fn train_figures(
    work: &Path,
    sample_cache: &Path,
    v: &serde_json::Value,
    opts: &BenchOptions,
    figures: &mut Vec<Figure>,
) -> Result<(), String> {
    let mut seed: TrainParams = toml::from_str("epochs = 1").map_err(|e| e.to_string())?;
    seed.device = crate::model::recipe::Device::Cpu;
    let n = opts.train_batches * seed.batch_size as usize;
    let seed = Network {
        name: "seed network (full.toml)",
        crops: train_subset(sample_cache, v, n)?,
        params: seed,
    };
    let best = best_network(n)?;
    let on_device = device_to_measure(opts);
    for network in [&seed, &best] {
        let cpu_rate = training_figures(work, network, opts, figures)?;
        if let Some(device) = on_device {
            device_figures(work, network, device, cpu_rate, opts, figures)?;
        }
    }
    inference_figure(&seed, figures)
}

/// The accelerator `--device` asks for, when this build and machine have it (said when not).
fn device_to_measure(opts: &BenchOptions) -> Option<Resolved> {
    let requested = opts.device?;
    match crate::model::device::resolve(requested) {
        Ok((device, notice)) => {
            if let Some(notice) = notice {
                eprintln!("bench: {notice}");
            }
            eprintln!("bench: measuring training on {}", device.name());
            Some(device)
        }
        Err(why) => {
            eprintln!("bench: NO DEVICE FIGURES: {why}");
            None
        }
    }
}

/// Training `network` on `device`: images/s against the CPU kernels (`cpu_rate`, this run), and
/// its GFLOP/s against the device's own matrix-product peak.
fn device_figures(
    work: &Path,
    network: &Network,
    device: Resolved,
    cpu_rate: f64,
    opts: &BenchOptions,
    figures: &mut Vec<Figure>,
) -> Result<(), String> {
    let device_name = device.name();
    eprintln!(
        "bench: training {} batches of the {} on {device_name} …",
        opts.train_batches, network.name
    );
    let rate = train_timed(work, network, device)?.0.images_per_sec;
    figures.push(Figure {
        what: format!(
            "training, {}: {device_name} vs the CPU kernels",
            network.name
        ),
        value: rate,
        unit: "images/s",
        baseline: cpu_rate,
        baseline_what: "this crate's CPU kernels, same network and batches, this run",
        target: "report",
    });
    figures.push(Figure {
        what: format!("training, {}: {device_name} GFLOP/s", network.name),
        value: rate * 3.0 * network.arch().forward_flops() / 1e9,
        unit: "GFLOP/s",
        baseline: device_matmul_peak(device),
        baseline_what: "f32 2048² matrix product on the device",
        target: "report",
    });
    Ok(())
}

/// Train `network` once on `device` in a scratch folder: the report, and the cores it kept busy
/// (user + sys CPU seconds ÷ wall seconds).
fn train_timed(
    work: &Path,
    network: &Network,
    device: Resolved,
) -> Result<(crate::model::training::TrainReport, f64), String> {
    let arch = network.arch();
    let tmp = tempfile::tempdir_in(work).map_err(|e| e.to_string())?;
    let progress = crate::progress::Progress::hidden();
    let inputs = crate::model::training::TrainInputs {
        params: &network.params,
        arch: &arch,
        crops: &network.crops,
        seed: 1,
        work_dir: tmp.path(),
        out_dir: tmp.path(),
        progress: &progress,
    };
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let report = crate::model::training::train_on(device, &inputs).map_err(|e| e.to_string())?;
    let cpu_use = (cpu_seconds() - cpu) / wall.elapsed().as_secs_f64();
    Ok((report, cpu_use))
}

/// `best.toml`'s training parameters (one epoch, on the CPU) and random crops of its crop size.
fn best_network(n: usize) -> Result<Network, String> {
    let registry = crate::stages::Registry::standard();
    let path = Path::new("pipelines/best.toml");
    let pipeline = crate::config::load(path, &[], &registry).map_err(|e| e.to_string())?;
    let params_of = |id: &str| pipeline.stage(id).map(|s| s.params.clone());
    let mut params = params_of("train")
        .and_then(|p| p.get::<TrainParams>().cloned())
        .ok_or("best.toml has no train stage")?;
    let size = params_of("crop")
        .and_then(|p| {
            p.get::<crate::stages::crop::CropParams>()
                .map(|c| c.size as usize)
        })
        .ok_or("best.toml has no crop stage")?;
    params.epochs = 1;
    params.device = crate::model::recipe::Device::Cpu;
    Ok(Network {
        name: "best.toml network",
        params,
        crops: random_crops(n, size),
    })
}

/// `n` labelled training crops of side `size` with pseudo-random pixels (fixed seed).
fn random_crops(n: usize, size: usize) -> Crops {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let pixels = (0..n * size * size * 3)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 56) as u8
        })
        .collect();
    Crops {
        size,
        ids: (0..n as u64).collect(),
        splits: vec![Split::Train; n],
        pixels,
        labels: vec![Some([0.0; crate::labels::N_CLASSES]); n],
    }
}

/// Trains `network` for the bench's batches: images/s against PyTorch, CPU use, peak share.
/// Returns the images/s.
fn training_figures(
    work: &Path,
    network: &Network,
    opts: &BenchOptions,
    figures: &mut Vec<Figure>,
) -> Result<f64, String> {
    eprintln!(
        "bench: training {} batches of the {} …",
        opts.train_batches, network.name
    );
    let arch = network.arch();
    let (report, cpu_use) = train_timed(work, network, Resolved::Cpu)?;
    let step_gflops = 3.0 * arch.forward_flops() / 1e9;
    let torch = pytorch_images_per_sec(&arch, opts.train_batches, &[]);
    let ours = report.images_per_sec;
    compared(
        figures,
        network.name,
        "training",
        ours,
        torch,
        step_gflops,
        cpu_use,
    );
    figures.push(Figure {
        what: format!(
            "training, {}: share of step time waiting for data",
            network.name
        ),
        value: 100.0 * report.data_share,
        unit: "%",
        baseline: 100.0,
        baseline_what: "the whole step",
        target: "< 10%",
    });
    Ok(ours)
}

/// 8-fold TTA prediction of 512 crops with the (untrained) network: what `evaluate` and `submit`
/// do with `tta = true`.
fn inference_figure(network: &Network, figures: &mut Vec<Figure>) -> Result<(), String> {
    eprintln!("bench: TTA inference with the {} …", network.name);
    let arch = network.arch();
    let device = burn::backend::flex::FlexDevice;
    let net = arch
        .init::<burn::backend::Flex>(&device)
        .map_err(|e| e.to_string())?;
    let indices: Vec<usize> = (0..network.crops.ids.len().min(512)).collect();
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let _ = crate::model::inference::predict_crops(&net, &device, &network.crops, &indices, true);
    let seconds = wall.elapsed().as_secs_f64();
    let cpu_use = (cpu_seconds() - cpu) / seconds;
    let ours = indices.len() as f64 / seconds;
    let batches = indices.len().div_ceil(256).to_string();
    let torch = pytorch_images_per_sec(&arch, 0, &["--inference", "--tta", "--batches", &batches]);
    let image_gflops = 8.0 * arch.forward_flops() / 1e9;
    compared(
        figures,
        network.name,
        "8-fold TTA inference",
        ours,
        torch,
        image_gflops,
        cpu_use,
    );
    Ok(())
}

/// The figures of one measured rate: against PyTorch (when it ran), CPU use, and both rates'
/// share of the machine's peak (`gflops` per image).
fn compared(
    figures: &mut Vec<Figure>,
    network: &str,
    what: &str,
    ours: f64,
    torch: Option<f64>,
    gflops: f64,
    cpu_use: f64,
) {
    let peak = matmul_peak_gflops();
    let cores = rayon::current_num_threads() as f64;
    if let Some(torch) = torch {
        figures.push(Figure {
            what: format!("{what}, {network}: galaxy-pipe vs PyTorch"),
            value: ours,
            unit: "images/s",
            baseline: torch,
            baseline_what: "PyTorch, same network and batches, all cores",
            target: "≥ 1.0×",
        });
        figures.push(Figure {
            what: format!("{what}, {network}: PyTorch GFLOP/s"),
            value: torch * gflops,
            unit: "GFLOP/s",
            baseline: peak,
            baseline_what: "f32 1024² matrix product, all cores (flex's gemm)",
            target: "report",
        });
    }
    figures.push(Figure {
        what: format!("{what}, {network}: galaxy-pipe GFLOP/s"),
        value: ours * gflops,
        unit: "GFLOP/s",
        baseline: peak,
        baseline_what: "f32 1024² matrix product, all cores (flex's gemm)",
        target: "report",
    });
    figures.push(Figure {
        what: format!("{what}, {network}: CPU use (user + sys ÷ wall)"),
        value: cpu_use,
        unit: "cores",
        baseline: cores,
        baseline_what: "cores",
        target: "≥ 0.85×",
    });
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
    static PEAK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *PEAK.get_or_init(|| {
        matmul_peak_on::<burn::backend::Flex>(&burn::backend::flex::FlexDevice, 1024, 1.0)
    })
}

/// The best GFLOP/s of f32 2048×2048 matrix products on `device` over ~2 s.
fn device_matmul_peak(device: Resolved) -> f64 {
    match device {
        Resolved::Cpu => matmul_peak_gflops(),
        #[cfg(feature = "cuda")]
        Resolved::Cuda => matmul_peak_on::<burn::backend::Cuda>(&Default::default(), 2048, 2.0),
        #[cfg(feature = "wgpu")]
        Resolved::Wgpu(adapter) => {
            matmul_peak_on::<burn::backend::Wgpu>(&adapter.device, 2048, 2.0)
        }
    }
}

/// The best GFLOP/s of f32 n×n matrix products on `device` over about `seconds` (after one
/// product that warms it up: kernel compilation, allocation).
fn matmul_peak_on<B: burn::tensor::backend::Backend>(
    device: &B::Device,
    n: usize,
    seconds: f64,
) -> f64 {
    use burn::tensor::{Distribution, Tensor};
    let a = Tensor::<B, 2>::random([n, n], Distribution::Default, device);
    let b = Tensor::<B, 2>::random([n, n], Distribution::Default, device);
    let _ = a.clone().matmul(b.clone()).into_data();
    let mut best = 0.0f64;
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        let _ = a.clone().matmul(b.clone()).into_data();
        best = best.max(2.0 * (n as f64).powi(3) / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// Images/s of `benchmarks/pytorch_train.py` for `arch` (training `batches` batches, or with
/// `extra` arguments), on every core; None (said on stderr) when PyTorch cannot run here.
fn pytorch_images_per_sec(arch: &Architecture, batches: usize, extra: &[&str]) -> Option<f64> {
    // Relative to the repository root, where `bench` runs (like its `--sample` default).
    let script = Path::new("benchmarks/pytorch_train.py");
    let threads = rayon::current_num_threads().to_string();
    let mut args = vec!["--threads".to_string(), threads, "--arch".into()];
    args.push(serde_json::to_string(arch).expect("serialise"));
    if batches > 0 {
        args.extend(["--batches".to_string(), batches.to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(&args)
        .output();
    let parsed = out.ok().filter(|o| o.status.success()).and_then(|o| {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        let line = text.lines().find(|l| l.starts_with('{'))?.to_string();
        serde_json::from_str::<serde_json::Value>(&line).ok()
    });
    let rate = parsed.and_then(|v| v["images_per_sec"].as_f64());
    if rate.is_none() {
        eprintln!("bench: PyTorch does not run here (`pip install torch`); no PyTorch ratio");
    }
    rate
}
