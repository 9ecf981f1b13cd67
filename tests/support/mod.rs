//! Test scaffolding: a stage registry whose non-ingest stages are small, deterministic fakes
//! (allowed by the runner issue), a tiny fake Kaggle layout, and a way to run the CLI with that
//! registry in a separate process (this test binary re-executes itself).

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use assert_cmd::Command as BinCommand;
use galaxy_pipe::config::StageSpec;
use galaxy_pipe::kind::{self, Invalid, KindParams, ParseError, StageKind, StageParams};
use galaxy_pipe::labels::CLASS_NAMES;
use galaxy_pipe::stages::{
    FileInput, Registry, Stage, StageContext, StageError, StageKindDef, StageOutcome, baseline,
    crop, evaluate, explore, ingest, train,
};
use galaxy_pipe::stages::{crop::CropParams, train::TrainParams};

pub mod invocation;
pub mod tally;

#[allow(unused_imports)] // not every test binary uses it
pub use invocation::{Finished, Invocation};

/// Env var carrying the CLI arguments to the re-executed child.
pub const CHILD_ARGS: &str = "GP_CHILD_ARGS";

/// The body of each test binary's `child_entry` test: when `CHILD_ARGS` is set, run the CLI
/// with the fake registry and exit with its code.
///
/// A Slurm job runs `<launcher> compute-job <job.json>` with [`job_launcher`] as the launcher:
/// the test binary, this test, then the subcommand as extra test-name filters, which are taken
/// as the CLI's arguments instead.
pub fn child_main() {
    let Ok(args) = std::env::var(CHILD_ARGS) else {
        return;
    };
    let argv: Vec<String> = std::env::args().collect();
    let args: Vec<String> = match argv.iter().position(|a| a == "compute-job") {
        Some(i) => std::iter::once("galaxy-pipe".to_string())
            .chain(argv[i..].iter().cloned())
            .collect(),
        None => serde_json::from_str(&args).unwrap(),
    };
    let code =
        galaxy_pipe::cli::main_with(args.into_iter().map(Into::into).collect(), &test_registry());
    std::process::exit(code);
}

/// The test registry: the real `ingest`, fakes with the real declarations of the other kinds
/// (no `submit`: a pipeline naming it is refused), and the toy kind `tally` (one file, one line).
/// Each fake appends `<stage id> <pid>` to `$GP_EXEC_LOG` when it starts, sleeps `$GP_SLEEP_MS`
/// (per epoch for train), and fails if `$GP_FAIL` names it.
pub fn test_registry() -> Registry {
    Registry::default()
        .with(ingest::Ingest)
        .with_stage(Box::new(Faked::<explore::Explore>::default()))
        .with_stage(Box::new(Faked::<crop::Crop>::default()))
        .with_stage(Box::new(Faked::<baseline::Baseline>::default()))
        .with_stage(Box::new(Faked::<train::Train>::default()))
        .with_stage(Box::new(Faked::<evaluate::Evaluate>::default()))
        .with(tally::Tally)
}

/// A kind's real declaration and parameters with [`Fake`]'s implementation.
struct Faked<K>(std::marker::PhantomData<K>);

impl<K> Default for Faked<K> {
    fn default() -> Self {
        Faked(std::marker::PhantomData)
    }
}

impl<K: StageKindDef> KindParams for Faked<K> {
    fn kind(&self) -> StageKind {
        K::KIND
    }
    fn parse(&self, value: toml::Value) -> Result<StageParams, ParseError> {
        kind::parse_params::<K::Params>(value)
    }
    fn parse_json(&self, value: serde_json::Value) -> Result<StageParams, serde_json::Error> {
        galaxy_pipe::kind::parse_json_params::<K::Params>(value)
    }
    fn validate(&self, params: &StageParams, place: &kind::Place) -> Vec<Invalid> {
        kind::validate_params_at::<K::Params>(params, place)
    }
    fn schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<K::Params>()
    }
}

impl<K: StageKindDef> Stage for Faked<K> {
    fn file_inputs(&self, _spec: &StageSpec) -> Vec<FileInput> {
        Vec::new()
    }
    fn exports(&self, _spec: &StageSpec) -> Vec<(String, PathBuf)> {
        Vec::new()
    }
    fn check_setup(&self, _spec: &StageSpec) -> Option<String> {
        None
    }
    fn run(&self, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        Fake.run(ctx)
    }
}

struct Fake;

fn log_exec(id: &str, what: &str) {
    if let Ok(path) = std::env::var("GP_EXEC_LOG") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(f, "{id} {what} {}", std::process::id()).unwrap();
    }
}

fn sleep() {
    let ms: u64 = std::env::var("GP_SLEEP_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    std::thread::sleep(Duration::from_millis(ms));
}

impl Fake {
    fn run(&self, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        let id = &ctx.spec.id;
        log_exec(id, "start");
        if std::env::var("GP_FAIL").is_ok_and(|f| &f == id) {
            return Err(StageError::msg(format!("injected failure in {id}")));
        }
        // Output = digest of every input file + the parameters that matter for this kind.
        let mut h = blake3::Hasher::new();
        for (name, input) in &ctx.inputs {
            h.update(name.as_bytes());
            let mut files: Vec<PathBuf> = std::fs::read_dir(&input.dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            for f in files {
                h.update(&std::fs::read(f).unwrap());
            }
        }
        let mut metrics = std::collections::BTreeMap::new();
        let params = &ctx.spec.params;
        if let Some(p) = params.get::<CropParams>() {
            // `threshold` changes the fingerprint but not these bytes: the early-cutoff case.
            h.update(&p.size.to_le_bytes());
            sleep();
        } else if let Some(p) = params.get::<TrainParams>() {
            // One checkpoint per epoch in the work area; a killed run resumes after the last.
            let done = (0..p.epochs)
                .take_while(|e| ctx.work_dir.join(format!("epoch-{e}")).exists())
                .count() as u32;
            if done > 0 {
                log_exec(id, &format!("resume-from-{done}"));
            }
            for e in done..p.epochs {
                sleep();
                let tmp = ctx.work_dir.join(format!("epoch-{e}.tmp"));
                std::fs::write(&tmp, format!("{e}")).unwrap();
                std::fs::rename(&tmp, ctx.work_dir.join(format!("epoch-{e}"))).unwrap();
                log_exec(id, &format!("epoch-{e}"));
            }
            h.update(&p.epochs.to_le_bytes());
            h.update(&p.learning_rate.to_le_bytes());
        } else {
            sleep();
        }
        let digest = h.finalize();
        std::fs::write(ctx.out_dir.join("out.bin"), digest.as_bytes()).unwrap();
        metrics.insert("fake_metric".into(), digest.as_bytes()[0] as f64);
        Ok(StageOutcome {
            metrics,
            notes: Vec::new(),
        })
    }
}

/// A small, fast network for tests (32-pixel crops), as `--set` arguments for [`NN_PIPELINE`].
pub const SMALL_NET: [&str; 6] = [
    "--set",
    "crop.size=32",
    "--set",
    "train.conv=[{filters = 16, kernel = 5, pool = 2}, {filters = 32, kernel = 3, pool = 2}]",
    "--set",
    "train.dense=[{units = 32}]",
];

pub const NN_PIPELINE: &str = "[pipeline]\nname = \"nn\"\nseed = 3\n\n[stages.ingest]\nkind = \"ingest\"\ndata_dir = \"data\"\n\n[stages.crop]\nkind = \"crop\"\ninputs = [\"ingest\"]\n\n[stages.baseline]\nkind = \"baseline\"\ninputs = [\"ingest\", \"crop\"]\n\n[stages.train]\nkind = \"train\"\ninputs = [\"crop\"]\nbatch_size = 16\n\n[stages.evaluate]\nkind = \"evaluate\"\ninputs = [\"train\", \"crop\", \"baseline\"]\n\n[stages.submit]\nkind = \"submit\"\ninputs = [\"train\", \"crop\"]\noutput = \"out/submission.csv\"\n";

/// A project folder with a fake Kaggle layout (`data/`) and a pipeline file.
pub struct Project {
    pub dir: tempfile::TempDir,
}

pub const PIPELINE: &str = r#"# a test pipeline
[pipeline]
name = "test"
seed = 7

[stages.ingest]
kind = "ingest"
data_dir = "data"

[stages.crop]
kind = "crop"
inputs = ["ingest"]
size = 32

[stages.baseline]
kind = "baseline"
inputs = ["ingest", "crop"]

[stages.train]
kind = "train"
inputs = ["crop"]
epochs = 3

[stages.evaluate]
kind = "evaluate"
inputs = ["train", "crop", "baseline"]
"#;

/// A label row that satisfies the decision tree.
pub fn label_row(id: u64) -> String {
    let mut v = [0f32; 37];
    v[0] = 0.5; // Class1.1 smooth
    v[1] = 0.5; // Class1.2 features/disk
    v[3] = 0.25; // Class2.1 edge-on yes
    v[4] = 0.25; // Class2.2 edge-on no
    v[5] = 0.25; // Class3.1
    v[7] = 0.25; // Class4.1
    v[28] = 0.25; // Class10.1
    v[31] = 0.25; // Class11.1
    v[9] = 0.25; // Class5.1
    v[13] = 1.0; // Class6.1
    v[15] = 0.5; // Class7.1
    v[18] = 1.0; // Class8.1
    v[25] = 0.25; // Class9.1
    let fields: Vec<String> = std::iter::once(id.to_string())
        .chain(v.iter().map(|x| x.to_string()))
        .collect();
    fields.join(",")
}

impl Project {
    pub fn new(n_train: u64, n_test: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("images_training_rev1")).unwrap();
        std::fs::create_dir_all(data.join("images_test_rev1")).unwrap();
        let mut csv = format!("GalaxyID,{}\n", CLASS_NAMES.join(","));
        for i in 0..n_train {
            let id = 100_000 + i;
            std::fs::write(
                data.join("images_training_rev1").join(format!("{id}.jpg")),
                format!("fake image {id}"),
            )
            .unwrap();
            csv.push_str(&label_row(id));
            csv.push('\n');
        }
        for i in 0..n_test {
            let id = 900_000 + i;
            std::fs::write(
                data.join("images_test_rev1").join(format!("{id}.jpg")),
                format!("fake test image {id}"),
            )
            .unwrap();
        }
        std::fs::write(data.join("training_solutions_rev1.csv"), csv).unwrap();
        std::fs::create_dir_all(dir.path().join("cache")).unwrap();
        std::fs::write(dir.path().join("p.toml"), PIPELINE).unwrap();
        Project { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path().join(name), text).unwrap();
    }

    pub fn exec_log(&self) -> PathBuf {
        self.path().join("exec.log")
    }

    /// Lines `<stage> start <pid>` logged so far, as stage ids.
    pub fn starts(&self) -> Vec<String> {
        std::fs::read_to_string(self.exec_log())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split(' ').nth(1) == Some("start"))
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    }

    pub fn log_lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.exec_log())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn clear_log(&self) {
        let _ = std::fs::remove_file(self.exec_log());
    }

    /// A command running the CLI with the fake registry, in the project folder.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut full = vec!["galaxy-pipe".to_string()];
        full.extend(args.iter().map(|s| s.to_string()));
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "child_entry",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(CHILD_ARGS, serde_json::to_string(&full).unwrap())
        .env("GP_EXEC_LOG", self.exec_log())
        .env_remove("GALAXY_PIPE_CACHE_DIR")
        .current_dir(self.path());
        cmd
    }

    /// `GALAXY_PIPE_JOB_LAUNCHER` for Slurm jobs of this test binary (see [`child_main`]).
    pub fn job_launcher() -> String {
        let exe = std::env::current_exe().unwrap();
        format!(
            "'{}' child_entry --exact --nocapture --test-threads=1 -q",
            exe.display()
        )
    }

    /// Starts one run per argument list at the same moment (every fake stage sleeping
    /// `sleep_ms`), waits for all of them and checks that each succeeded.
    pub fn run_simultaneously(&self, runs: &[Vec<&str>], sleep_ms: u64) -> Vec<Output> {
        let children: Vec<_> = runs
            .iter()
            .map(|args| {
                self.command(args)
                    .env("GP_SLEEP_MS", sleep_ms.to_string())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outputs: Vec<Output> = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        for o in &outputs {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        outputs
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Run with `--json` and parse the JSON document printed on stdout.
    pub fn run_json(&self, args: &[&str]) -> (i32, serde_json::Value) {
        let mut all = args.to_vec();
        all.push("--json");
        let out = self.run(&all);
        let value = json_line(&out.stdout).unwrap_or_else(|| {
            panic!(
                "no JSON on stdout; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        });
        (out.status.code().unwrap_or(-1), value)
    }
}

/// The JSON document among a child's stdout lines (the test harness prints its own lines too).
pub fn json_line(stdout: &[u8]) -> Option<serde_json::Value> {
    let text = String::from_utf8_lossy(stdout);
    let line = text.lines().find(|l| l.starts_with('{'))?;
    Some(serde_json::from_str(line).unwrap())
}

/// `(stage id, outcome)` pairs of a `run --json` result.
pub fn outcomes(v: &serde_json::Value) -> Vec<(String, String)> {
    stage_field(v, "outcome")
}

/// `(stage id, field)` pairs of a `run --json` result (`""` where the field is absent).
pub fn stage_field(v: &serde_json::Value, field: &str) -> Vec<(String, String)> {
    v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s[field].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

pub fn ids_with(v: &serde_json::Value, outcome: &str) -> Vec<String> {
    outcomes(v)
        .into_iter()
        .filter(|(_, o)| o == outcome)
        .map(|(id, _)| id)
        .collect()
}

/// How many entries `dir` holds (it must exist).
pub fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .count()
}

/// Every file under `dir` with its bytes (for comparing final outputs of two runs).
pub fn tree_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------- the real binary

pub fn bin() -> BinCommand {
    let mut cmd = BinCommand::cargo_bin("galaxy-pipe").unwrap();
    cmd.env_remove("GALAXY_PIPE_CACHE_DIR").env("NO_COLOR", "1");
    cmd
}

pub fn repo_root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn object_of(v: &serde_json::Value, cache: &std::path::Path, id: &str) -> std::path::PathBuf {
    let key = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    cache.join("objects").join(key).join("out")
}

pub fn run_real(dir: &std::path::Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = bin()
        .current_dir(dir)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let v = stdout
        .lines()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_default();
    (
        out.status.code().unwrap_or(-1),
        v,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

pub const DATA_PIPELINE: &str = "[pipeline]\nname = \"t\"\n\n[stages.ingest]\nkind = \"ingest\"\ndata_dir = \"data\"\n\n[stages.crop]\nkind = \"crop\"\ninputs = [\"ingest\"]\n\n[stages.baseline]\nkind = \"baseline\"\ninputs = [\"ingest\", \"crop\"]\n\n[stages.explore]\nkind = \"explore\"\ninputs = [\"ingest\", \"crop\"]\n";

pub fn sample_dir() -> Option<std::path::PathBuf> {
    let dir = repo_root().join("../shared/data/galaxy-zoo-sample");
    if dir.join("training_solutions_rev1.csv").exists() {
        return Some(dir);
    }
    if std::env::var_os("GALAXY_PIPE_REQUIRE_SAMPLE").is_some() {
        panic!(
            "the real Kaggle sample is required (GALAXY_PIPE_REQUIRE_SAMPLE) but {} is missing",
            dir.display()
        );
    }
    eprintln!(
        "\n!!! SKIPPED: the real Kaggle sample is not at {} !!!\n",
        dir.display()
    );
    None
}

/// A small real-JPEG data set with one bad image of the given bytes.
pub fn data_with_bad_image(bad: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("cache")).unwrap();
    synth(dir.path(), 12, 0, 9);
    std::fs::write(dir.path().join("data/images_training_rev1/100004.jpg"), bad).unwrap();
    std::fs::write(dir.path().join("p.toml"), DATA_PIPELINE).unwrap();
    dir
}

/// A real pipeline with every stage kind, small enough to run in a couple of seconds.
pub const SMALL_FULL_PIPELINE: &str = r#"[pipeline]
name = "small"
seed = 11

[stages.ingest]
kind = "ingest"
data_dir = "data"

[stages.explore]
kind = "explore"
inputs = ["ingest", "crop"]

[stages.crop]
kind = "crop"
inputs = ["ingest"]
size = 32

[stages.baseline]
kind = "baseline"
inputs = ["ingest", "crop"]

[stages.train]
kind = "train"
inputs = ["crop"]
epochs = 3
batch_size = 32
conv = [{ filters = 8, kernel = 5, pool = 2 }, { filters = 16, kernel = 3, pool = 2 }]
dense = [{ units = 32, dropout = 0.2 }]
augment = { rotate = true, flip = true }

[stages.evaluate]
kind = "evaluate"
inputs = ["train", "crop", "baseline"]

[stages.submit]
kind = "submit"
inputs = ["train", "crop"]
output = "out/submission.csv"
"#;

pub fn small_full_project(count: usize, test_count: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    synth(dir.path(), count, test_count, 7);
    std::fs::write(dir.path().join("p.toml"), SMALL_FULL_PIPELINE).unwrap();
    std::fs::create_dir(dir.path().join("cache")).unwrap();
    dir
}

/// `galaxy-pipe synth` into `dir/data`.
pub fn synth(dir: &Path, count: usize, test_count: usize, seed: u64) {
    let out = bin()
        .current_dir(dir)
        .args(["synth", "--out", "data"])
        .args(["--count", &count.to_string()])
        .args(["--test-count", &test_count.to_string()])
        .args(["--seed", &seed.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Published artifacts (`out/` files and `fingerprint.json`) of every object in a cache; the
/// timing-bearing result.json and the mtime-bearing manifest.json are left out.
pub fn artifact_bytes(cache: &Path) -> Vec<(String, Vec<u8>)> {
    tree_bytes(&cache.join("objects"))
        .into_iter()
        .filter(|(n, _)| !n.ends_with("result.json") && !n.ends_with("manifest.json"))
        .collect()
}

/// Run the real binary with `args` in `dir` and kill it (-9) as soon as a training in `cache` has
/// written its first epoch's checkpoint.
pub fn kill_at_the_first_checkpoint(dir: &std::path::Path, args: &[&str], cache: &std::path::Path) {
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("galaxy-pipe"))
        .current_dir(dir)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let checkpoint = || {
        std::fs::read_dir(cache.join("work"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().join("checkpoint/state.json").exists())
    };
    while !checkpoint() {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Synthetic galaxies made once per test binary in `cell` (read-only for the tests sharing it).
pub fn synth_once(
    cell: &'static std::sync::OnceLock<tempfile::TempDir>,
    count: usize,
    test_count: usize,
    seed: u64,
) -> &'static Path {
    cell.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        synth(dir.path(), count, test_count, seed);
        dir
    })
    .path()
}
