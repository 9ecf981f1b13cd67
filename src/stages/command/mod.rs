//! `command`: the user's own program as a stage (a PyTorch or scikit-learn model, a feature
//! script, any CLI tool). It is started with an argument vector, never through a shell, in the
//! pipeline file's folder (or `workdir`); its key holds the `run` template, `params`, the
//! content of its `deps` files, its upstream keys and the seed. What it writes into `{out}` is
//! its artifact, published only after the program exited 0, its declared outputs exist, its
//! inputs are untouched and, with `produces = "predictions"`, its predictions are well formed.

mod checks;
mod process;
mod template;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::artifacts::{self, Split};
use crate::config::StageSpec;
use crate::kind::{Invalid, JobShape, KindDecl, Params, Place, SeedUse, StageKind};

use super::{FileInput, StageContext, StageError, StageKindDef, StageOutcome};

pub use checks::METRICS_JSON;

pub struct CommandStage;

/// Every kind a `command` may read: all of them (a command reads whatever it is given).
const ANY_KIND: &[&str] = &[
    "ingest", "explore", "crop", "baseline", "train", "ensemble", "evaluate", "submit", "command",
];

impl StageKindDef for CommandStage {
    const KIND: StageKind = StageKind::new(&KindDecl {
        name: "command",
        code_version: 1,
        seed: SeedUse::InKey,
        path_params: &["workdir"],
        accepts: ANY_KIND,
        requires: &[],
        job: JobShape::PARALLEL,
    });
    type Params = CommandParams;

    fn file_inputs(&self, p: &CommandParams, spec: &StageSpec) -> Vec<FileInput> {
        let dir = p.workdir(spec);
        let files: BTreeSet<String> = p
            .deps
            .iter()
            .flat_map(|pattern| matches(&dir, pattern).unwrap_or_default())
            .collect();
        files
            .into_iter()
            .map(|rel| FileInput {
                path: dir.join(&rel),
                group: format!("deps:{rel}"),
            })
            .collect()
    }

    fn run(&self, p: &CommandParams, ctx: &StageContext) -> Result<StageOutcome, StageError> {
        let inputs: BTreeMap<String, PathBuf> = ctx
            .inputs
            .iter()
            .map(|(id, input)| (id.clone(), input.dir.clone()))
            .collect();
        let program = p.program(ctx, &inputs)?;
        std::fs::create_dir_all(&ctx.log_dir)
            .map_err(|e| StageError::io("creating", &ctx.log_dir, e))?;
        let log = ctx.log_dir.join("command.log");
        let before = checks::input_state(&inputs);
        ctx.progress.message("running the program");
        let finished = process::run(&program, &log, ctx.progress).map_err(StageError::msg)?;
        if let Some(problem) = checks::changed_input(&before, &checks::input_state(&inputs)) {
            return Err(StageError::msg(problem));
        }
        ended_well(&finished, &program.argv[0], &log)?;
        checks::check_outputs(&ctx.out_dir, &p.outputs).map_err(StageError::msg)?;
        if p.produces == Some(Produces::Predictions) {
            check_predictions(ctx)?;
        }
        let metrics = checks::read_metrics(&ctx.out_dir).map_err(StageError::msg)?;
        Ok(StageOutcome {
            metrics,
            notes: Vec::new(),
        })
    }
}

/// Exit 0, or an error naming the exit code, signal or time limit with the log's last lines.
fn ended_well(finished: &process::Finished, program: &str, log: &Path) -> Result<(), StageError> {
    let how = match finished.ending {
        process::Ending::Exited(0) => return Ok(()),
        process::Ending::Exited(code) => format!("exited with code {code}"),
        process::Ending::Signalled(signal) => format!("was killed by signal {signal}"),
        process::Ending::TimedOut(limit) => {
            format!("ran past its timeout ({}) and was ended", human(limit))
        }
    };
    let tail = if finished.tail.is_empty() {
        "(it printed nothing)".to_string()
    } else {
        finished.tail.join("\n")
    };
    Err(StageError::msg(format!(
        "`{}` {how}; last lines of {}:\n{tail}",
        crate::untrusted::escape(program),
        log.display()
    )))
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `predictions.parquet` against its family, for the validation and test galaxies of the
/// stage's `crop` input (its ids and splits only: the pixels are not read).
fn check_predictions(ctx: &StageContext) -> Result<(), StageError> {
    let crop = ctx.optional_input::<super::crop::Crop>().ok_or_else(|| {
        StageError::msg("`produces = \"predictions\"` needs a `crop` stage among `inputs`")
    })?;
    let rows = artifacts::read_crop_splits(&crop.dir.join(artifacts::CROPS))?;
    let expected = rows
        .into_iter()
        .filter(|(_, split)| matches!(split, Split::Valid | Split::Test))
        .map(|(id, _)| id)
        .collect();
    let path = ctx.out_dir.join(artifacts::CLASS_PREDICTIONS);
    artifacts::read_class_predictions(&path, &expected)?;
    Ok(())
}

/// For `evaluate` and `submit`: when `model` is a `command` stage, the predictions its program
/// wrote for the crops `rows` (checked again: it is a file a program wrote); None for a network.
pub fn predictions_of(
    model: &super::Input,
    crops: &artifacts::Crops,
    rows: &[usize],
) -> Result<Option<Vec<crate::labels::Labels>>, StageError> {
    if model.kind != CommandStage::KIND {
        return Ok(None);
    }
    let path = model.dir.join(artifacts::CLASS_PREDICTIONS);
    if !path.is_file() {
        return Err(StageError::msg(
            "its model input is a `command` stage without `produces = \"predictions\"` (no predictions.parquet)",
        ));
    }
    let by_id = artifacts::read_class_predictions(&path, &predicted_ids(crops))?;
    Ok(Some(rows.iter().map(|&i| by_id[&crops.ids[i]]).collect()))
}

/// The galaxies a `predictions` artifact has one row for: the crops' validation and test ones.
fn predicted_ids(crops: &artifacts::Crops) -> BTreeSet<u64> {
    (0..crops.ids.len())
        .filter(|&i| matches!(crops.splits[i], Split::Valid | Split::Test))
        .map(|i| crops.ids[i])
        .collect()
}

/// The files (relative to `dir`, `/`-separated) that `pattern` matches there.
fn matches(dir: &Path, pattern: &str) -> Result<Vec<String>, String> {
    let full = dir.join(pattern);
    let paths = glob::glob(&full.to_string_lossy()).map_err(|e| e.to_string())?;
    Ok(paths
        .flatten()
        .filter(|p| p.is_file())
        .filter_map(|p| {
            let rel = p.strip_prefix(dir).ok()?;
            Some(rel.to_string_lossy().replace('\\', "/"))
        })
        .collect())
}

/// The artifact families a program may declare that it writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Produces {
    /// `predictions.parquet`: GalaxyID and the 37 `Class…` columns, one row per validation and
    /// test galaxy of the `crop` input; `evaluate` and `submit` then read it like a model.
    Predictions,
}

/// `command`: a program run with declared inputs, dependencies and outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandParams {
    /// The program and its arguments, one string each (no shell). Placeholders: `{out}` (the
    /// output folder), `{<input id>}` (that input's artifact folder), `{params.NAME}`, `{seed}`,
    /// `{cores}`; `{{` and `}}` are literal braces.
    #[schemars(length(min = 1))]
    pub run: Vec<String>,
    /// Files whose content enters the key: paths or glob patterns (`lib/*.py`), relative to
    /// the working directory; each must match a file.
    #[serde(default)]
    pub deps: Vec<String>,
    /// Free-form parameters: in the key, `{params.NAME}` in `run`, set with `--set
    /// ID.params.NAME=…` and swept with `--sweep`.
    #[serde(default)]
    pub params: BTreeMap<String, serde_json::Value>,
    /// Environment variables passed to the program (besides PATH, HOME, USER, LANG, LC_ALL,
    /// TMPDIR). Their names are in the key, their values are not.
    #[serde(default)]
    pub env: Vec<String>,
    /// Files the program must write into `{out}` (relative paths).
    #[serde(default)]
    pub outputs: Vec<String>,
    /// The artifact family its outputs hold, checked before publishing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub produces: Option<Produces>,
    /// Longest it may run: "90s", "30m", "2h" (unset: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Working directory, relative to the pipeline file that sets it (default: that file's
    /// folder); `deps` resolve against it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
}

/// Variables every program gets from galaxy-pipe's environment, whatever `env` lists.
const BASE_ENV: &[&str] = &["PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR"];

impl CommandParams {
    fn workdir(&self, spec: &StageSpec) -> PathBuf {
        spec.resolve(self.workdir.as_deref().unwrap_or("."))
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout.as_deref().and_then(parse_duration)
    }

    /// The program with its placeholders filled in for this run.
    fn program(
        &self,
        ctx: &StageContext,
        inputs: &BTreeMap<String, PathBuf>,
    ) -> Result<process::Program, StageError> {
        let values = template::Values {
            out: absolute(&ctx.out_dir),
            inputs: inputs
                .iter()
                .map(|(k, v)| (k.clone(), absolute(v)))
                .collect(),
            params: &self.params,
            seed: ctx.seed.unwrap_or_default(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let argv = self
            .run
            .iter()
            .map(|arg| template::render(arg, &values))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StageError::msg)?;
        let env: Vec<(String, OsString)> = BASE_ENV
            .iter()
            .map(|k| k.to_string())
            .chain(self.env.iter().cloned())
            .filter_map(|k| std::env::var_os(&k).map(|v| (k, v)))
            .collect();
        Ok(process::Program {
            argv,
            workdir: self.workdir(ctx.spec),
            env,
            timeout: self.timeout(),
            label: ctx.spec.id.clone(),
        })
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// "90s", "30m", "2h", "1h30m" as a duration; None when it is not one.
fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.trim().chars() {
        match c {
            '0'..='9' => number.push(c),
            's' | 'm' | 'h' => {
                let n: u64 = std::mem::take(&mut number).parse().ok()?;
                total += n * [1, 60, 3600][usize::from(c == 'm') + 2 * usize::from(c == 'h')];
            }
            _ => return None,
        }
    }
    (number.is_empty() && total > 0).then(|| Duration::from_secs(total))
}

impl Params for CommandParams {
    fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        out.extend(self.timeout.as_deref().and_then(|t| {
            Invalid::unless(
                parse_duration(t).is_some(),
                "timeout",
                format!("`{t}` is not a duration like \"90s\", \"30m\", \"2h\" or \"1h30m\""),
            )
        }));
        out.extend(self.outputs.iter().find_map(|p| {
            Invalid::unless(
                is_relative_inside(p),
                "outputs",
                format!("`{p}` must be a relative path inside {{out}} (no `..`, no `/` first)"),
            )
        }));
        out.extend(self.deps.iter().find_map(|p| {
            Invalid::unless(
                !p.is_empty() && !p.starts_with('/'),
                "deps",
                format!("`{p}` must be a path relative to the working directory"),
            )
        }));
        out.extend(self.env.iter().find_map(|name| {
            let ok =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            Invalid::unless(
                ok,
                "env",
                format!("`{name}` is not an environment variable name"),
            )
        }));
        out
    }

    fn validate_at(&self, place: &Place) -> Vec<Invalid> {
        let mut out = Vec::new();
        for (i, arg) in self.run.iter().enumerate() {
            let problem = template::pieces(arg).and_then(|pieces| {
                pieces.iter().try_for_each(|piece| match piece {
                    template::Piece::Slot(slot) => {
                        template::check_slot(slot, place.inputs, &self.params)
                    }
                    template::Piece::Text(_) => Ok(()),
                })
            });
            if let Err(message) = problem {
                out.push(Invalid {
                    key: "run".into(),
                    path: format!("run[{i}]"),
                    message,
                });
            }
        }
        let dir = place.base_dir.join(self.workdir.as_deref().unwrap_or("."));
        for pattern in &self.deps {
            let problem = match matches(&dir, pattern) {
                Ok(found) if found.is_empty() => {
                    format!("`{pattern}` matches no file in {}", dir.display())
                }
                Ok(_) => continue,
                Err(e) => format!("`{pattern}` is not a glob pattern: {e}"),
            };
            out.push(Invalid {
                key: "deps".into(),
                path: "deps".into(),
                message: problem,
            });
        }
        out
    }
}

/// A relative path with no `..`, no root and no empty part.
fn is_relative_inside(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path.split('/').all(|part| !part.is_empty() && part != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("2"), None);
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("1d"), None);
    }
}
