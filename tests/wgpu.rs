//! The wgpu backend run for real (`cargo test --features wgpu`): training, evaluate and submit on
//! the adapter wgpu finds — in CI, Mesa's software Vulkan driver lavapipe (Debian's
//! `mesa-vulkan-drivers`, `WGPU_BACKEND=vulkan`, both set up by `.ci/run`) — against the same
//! pipeline on the CPU kernels, and a training killed with -9 on wgpu and resumed. Without the
//! feature or an adapter these tests skip loudly; `GALAXY_PIPE_REQUIRE_WGPU=1` (set by `.ci/run`)
//! turns a skip into a failure.

mod support;

use std::path::Path;
use std::sync::OnceLock;

use support::*;

/// Validation RMSE of the same 2-epoch training on wgpu and on the CPU kernels may differ by this
/// much: both start from the same weights and see the same batches, and only the order of float
/// sums differs (measured on lavapipe: equal to 5 decimals, every batch loss within 1e-5).
const TRAINING_TOLERANCE: f64 = 1e-3;
/// The same trained network's predictions on wgpu and on the CPU: only rounding differs.
const INFERENCE_TOLERANCE: f64 = 1e-4;

const TWO_EPOCHS: &str = "train.epochs=2";

const ON_WGPU: [&str; 6] = [
    "--set",
    "train.device=\"wgpu\"",
    "--set",
    "evaluate.device=\"wgpu\"",
    "--set",
    "submit.device=\"wgpu\"",
];

/// Synthetic galaxies shared by the tests here (read-only): 160 labelled, 16 test.
fn shared_data() -> &'static Path {
    static DATA: OnceLock<tempfile::TempDir> = OnceLock::new();
    synth_once(&DATA, 160, 16, 5)
}

/// [`NN_PIPELINE`] on the shared data.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), NN_PIPELINE).unwrap();
    std::os::unix::fs::symlink(shared_data().join("data"), dir.path().join("data")).unwrap();
    dir
}

/// `run p.toml` with [`SMALL_NET`] trained for `epochs`, then `extra`.
fn run_args<'a>(epochs: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "p.toml", "--set", epochs];
    args.extend(SMALL_NET);
    args.extend(extra);
    args
}

/// A loud skip, or a failure when `GALAXY_PIPE_REQUIRE_WGPU` is set.
fn skip(test: &str, why: &str) {
    if std::env::var_os("GALAXY_PIPE_REQUIRE_WGPU").is_some() {
        panic!("{test}: GALAXY_PIPE_REQUIRE_WGPU is set but {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// Whether this build has wgpu and wgpu finds an adapter here (`galaxy-pipe devices`); a loud
/// skip when not.
fn wgpu_here(test: &str) -> bool {
    if !cfg!(feature = "wgpu") {
        skip(test, "this test binary was built without `--features wgpu`");
        return false;
    }
    let devices = Invocation::real(Path::new("."), &["devices"])
        .succeeds()
        .json;
    let wgpu = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["device"] == "wgpu")
        .unwrap()
        .clone();
    if wgpu["usable"] != true {
        skip(
            test,
            &format!("wgpu has no adapter here: {}", wgpu["detail"]),
        );
        return false;
    }
    eprintln!("{test}: wgpu adapters: {}", wgpu["detail"]);
    true
}

fn stage<'a>(run: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no stage {id} in {run}"))
}

fn metric(run: &serde_json::Value, id: &str, name: &str) -> f64 {
    stage(run, id)["metrics"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("no {name} for {id} in {run}"))
}

fn assert_noted_device(run: &serde_json::Value, id: &str, device: &str) {
    let notes = stage(run, id)["notes"].to_string();
    assert!(
        notes.contains(&format!("device: {device}")),
        "{id}: {notes}"
    );
}

#[test]
fn training_evaluate_and_submit_on_wgpu_agree_with_the_cpu_kernels() {
    let test = "training_evaluate_and_submit_on_wgpu_agree_with_the_cpu_kernels";
    if !wgpu_here(test) {
        return;
    }
    let dir = project();
    let mut on_gpu = run_args(TWO_EPOCHS, &["--cache-dir", "cache-wgpu"]);
    on_gpu.extend(ON_WGPU);
    let gpu = Invocation::real(dir.path(), &on_gpu).succeeds().json;
    let on_cpu = run_args(TWO_EPOCHS, &["--cache-dir", "cache-cpu"]);
    let cpu = Invocation::real(dir.path(), &on_cpu).succeeds().json;

    for id in ["train", "evaluate", "submit"] {
        assert_noted_device(&cpu, id, "cpu");
        assert_noted_device(&gpu, id, "wgpu (");
    }
    let (on_cpu, on_gpu) = (
        metric(&cpu, "evaluate", "rmse"),
        metric(&gpu, "evaluate", "rmse"),
    );
    eprintln!(
        "validation RMSE: cpu {on_cpu:.5}, wgpu {on_gpu:.5}; wgpu training {:.1} images/s",
        metric(&gpu, "train", "images_per_sec")
    );
    assert!(
        (on_cpu - on_gpu).abs() <= TRAINING_TOLERANCE,
        "cpu {on_cpu} vs wgpu {on_gpu}"
    );
    let submission = std::fs::read_to_string(dir.path().join("out/submission.csv")).unwrap();
    assert_eq!(submission.lines().count(), 17, "a header and 16 test rows");

    // The CPU-trained network evaluated on wgpu: the same predictions up to rounding.
    let args = run_args(
        TWO_EPOCHS,
        &["--cache-dir", "cache-cpu", "--force", "evaluate"],
    );
    let args = [args.as_slice(), &["--set", "evaluate.device=\"wgpu\""]].concat();
    let again = Invocation::real(dir.path(), &args).succeeds().json;
    assert_noted_device(&again, "evaluate", "wgpu (");
    let reevaluated = metric(&again, "evaluate", "rmse");
    assert!(
        (reevaluated - on_cpu).abs() <= INFERENCE_TOLERANCE,
        "one network, two devices: cpu {on_cpu} vs wgpu {reevaluated}"
    );
}

#[test]
fn a_training_killed_on_wgpu_resumes_from_its_checkpoint() {
    let test = "a_training_killed_on_wgpu_resumes_from_its_checkpoint";
    if !wgpu_here(test) {
        return;
    }
    let dir = project();
    let args = [
        run_args("train.epochs=3", &["--until", "train"]).as_slice(),
        &ON_WGPU,
    ]
    .concat();
    kill_at_the_first_checkpoint(dir.path(), &args, &dir.path().join("cache"));
    let resumed = Invocation::real(dir.path(), &args).succeeds().json;
    assert_eq!(ids_with(&resumed, "ran"), ["train"], "{resumed}");
    let notes = stage(&resumed, "train")["notes"].to_string();
    assert!(
        notes.contains("resumed from the checkpoint after epoch"),
        "{notes}"
    );
    assert_noted_device(&resumed, "train", "wgpu (");
    let rmse = metric(&resumed, "train", "valid_rmse");
    assert!(rmse.is_finite() && rmse < 0.5, "{rmse}");
}
