//! `synth` and `bench`: synthetic data, and the performance figures of BENCHMARKS.md.

use std::time::Instant;

use serde_json::json;

use super::output::emit;
use super::{BenchArgs, CliError, Context, SynthArgs, exit};
use crate::progress::{Bars, bars_enabled};

pub fn synth(ctx: &Context, args: SynthArgs) -> Result<i32, CliError> {
    let SynthArgs {
        out,
        count,
        test_count,
        seed,
    } = args;
    let bars = Bars::new(bars_enabled(ctx.json));
    let progress = bars.stage("synth");
    progress.start((count + test_count) as u64, "galaxies", "rendering");
    let start = Instant::now();
    let opts = crate::synth::SynthOptions {
        out: out.clone(),
        count,
        test_count,
        seed,
    };
    crate::synth::generate(&opts, &|| progress.inc(1))
        .map_err(|e| CliError::Synth(crate::runner::chain(&e)))?;
    drop(progress);
    let seconds = start.elapsed().as_secs_f64();
    if ctx.json {
        let value = json!({ "out": out, "count": count, "test_count": test_count, "seed": seed, "seconds": seconds });
        super::output::println(value)?;
    } else {
        eprintln!(
            "wrote {count} labelled + {test_count} test galaxies to {} in {seconds:.1}s",
            out.display()
        );
    }
    Ok(exit::OK)
}

pub fn bench(ctx: &Context, args: BenchArgs) -> Result<i32, CliError> {
    let opts = crate::bench::BenchOptions {
        sample: args.sample,
        work: args.work,
        count: args.count,
        train_batches: args.train_batches,
        only: args.only,
        remote: ctx.remote.map(str::to_string),
        device: args.device.map(crate::bench::AcceleratorArg::device),
    };
    let value = crate::bench::run(&opts).map_err(CliError::Bench)?;
    emit(ctx.json, &value, &crate::bench::table_text(&value))?;
    Ok(exit::OK)
}

pub fn devices(ctx: &Context) -> Result<i32, CliError> {
    let devices = crate::model::device::survey();
    let auto = crate::model::device::resolve(crate::model::recipe::Device::Auto)
        .map(|(device, _)| device.name())
        .unwrap_or_else(|e| e.to_string());
    let mut text = String::new();
    for d in &devices {
        let state = if d.usable { "usable" } else { "not usable" };
        text.push_str(&format!("{:<5} {state}: {}\n", d.device, d.detail));
    }
    text.push_str(&format!("auto  picks {auto}\n"));
    let value = json!({ "devices": devices, "auto": auto });
    emit(ctx.json, &value, &text)?;
    Ok(exit::OK)
}
