//! Where stages run: the executor (`local` or `slurm`) and each stage's `[stages.<id>.resources]`
//! for a cluster scheduler. Validated like parameters, recorded in the run record, never part of
//! a cache key: where a stage runs never changes what it produces.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::kind::{Invalid, Params};

/// What one stage's job asks for. Unset values take the kind's default (see [`Resources::or`]),
/// then the cluster's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPUs for the job (`--cpus-per-task`).
    #[schemars(range(min = 1, max = 4096))]
    pub cpus: Option<u32>,
    /// Memory (`--mem`): a whole number with an optional K, M, G or T suffix, e.g. "32G".
    pub mem: Option<String>,
    /// Wall-clock limit (`--time`): "MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM" or
    /// "D-HH:MM:SS".
    pub time: Option<String>,
    /// GPUs (`--gpus`); 0 asks for none.
    #[schemars(range(max = 64))]
    pub gpus: Option<u32>,
    /// Partition (`--partition`), or several separated by commas.
    pub partition: Option<String>,
    /// Further `sbatch` options, one per item, each starting with `-` (e.g. "--qos=long").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
}

impl Params for Resources {
    fn validate(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        out.extend(self.mem.as_deref().and_then(|m| {
            Invalid::unless(
                memory_ok(m),
                "mem",
                format!("`{m}` is not a memory size like \"32G\" or \"500M\""),
            )
        }));
        out.extend(self.time.as_deref().and_then(|t| {
            Invalid::unless(
                time_ok(t),
                "time",
                format!("`{t}` is not a Slurm time like \"04:00:00\", \"90\" or \"1-12:00:00\""),
            )
        }));
        out.extend(self.partition.as_deref().and_then(|p| {
            let ok = !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.,".contains(c));
            Invalid::unless(
                ok,
                "partition",
                format!(
                    "`{}` is not a partition name (letters, digits, `_-.,`)",
                    p.escape_debug()
                ),
            )
        }));
        for (i, option) in self.extra.iter().enumerate() {
            let ok = option.starts_with('-') && !option.chars().any(char::is_control);
            if let Some(mut bad) = Invalid::unless(
                ok,
                "extra",
                format!(
                    "`{}` must be one sbatch option starting with `-`, without newlines or control characters",
                    option.escape_debug()
                ),
            ) {
                bad.path = format!("extra[{i}]");
                out.push(bad);
            }
        }
        out
    }
}

impl Resources {
    /// These resources, each unset value taken from `defaults`.
    pub fn or(&self, defaults: &Resources) -> Resources {
        Resources {
            cpus: self.cpus.or(defaults.cpus),
            mem: self.mem.clone().or_else(|| defaults.mem.clone()),
            time: self.time.clone().or_else(|| defaults.time.clone()),
            gpus: self.gpus.or(defaults.gpus),
            partition: self
                .partition
                .clone()
                .or_else(|| defaults.partition.clone()),
            extra: if self.extra.is_empty() {
                defaults.extra.clone()
            } else {
                self.extra.clone()
            },
        }
    }

    /// The `sbatch` options these resources ask for, one argument each.
    pub fn sbatch_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(cpus) = self.cpus {
            args.push(format!("--cpus-per-task={cpus}"));
        }
        if let Some(mem) = &self.mem {
            args.push(format!("--mem={mem}"));
        }
        if let Some(time) = &self.time {
            args.push(format!("--time={time}"));
        }
        if let Some(gpus) = self.gpus.filter(|g| *g > 0) {
            args.push(format!("--gpus={gpus}"));
        }
        if let Some(partition) = &self.partition {
            args.push(format!("--partition={partition}"));
        }
        args.extend(self.extra.iter().cloned());
        args
    }
}

/// "32G", "500M", "1024" (megabytes).
fn memory_ok(m: &str) -> bool {
    let digits = m
        .strip_suffix(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't'])
        .unwrap_or(m);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Slurm's time formats: "MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS".
fn time_ok(t: &str) -> bool {
    let number = |s: &str| !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit());
    let (days, clock) = match t.split_once('-') {
        Some((d, rest)) => (Some(d), rest),
        None => (None, t),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    days.is_none_or(number) && parts.len() <= 3 && parts.iter().all(|p| number(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slurm_time_and_memory_formats() {
        for ok in ["90", "30:00", "04:00:00", "1-12", "1-12:30", "2-00:00:00"] {
            assert!(time_ok(ok), "{ok}");
        }
        for bad in ["", "4h", "1:2:3:4", "-1", "1-", "a-01:00", "01:00\n#SBATCH"] {
            assert!(!time_ok(bad), "{bad:?}");
        }
        for ok in ["32G", "500M", "1024", "2t"] {
            assert!(memory_ok(ok), "{ok}");
        }
        for bad in ["", "G", "32GB", "1.5G", "-1G"] {
            assert!(!memory_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn values_that_could_break_the_job_script_are_rejected() {
        let r = Resources {
            partition: Some("gpu\nrm -rf /".into()),
            extra: vec![
                "--qos=long".into(),
                "--comment=x\n#SBATCH --uid=0".into(),
                "qos".into(),
            ],
            ..Resources::default()
        };
        let keys: Vec<String> = r.validate().into_iter().map(|i| i.path).collect();
        assert_eq!(keys, ["partition", "extra[1]", "extra[2]"]);
    }

    #[test]
    fn unset_values_come_from_the_defaults_and_become_sbatch_options() {
        let defaults = Resources {
            cpus: Some(4),
            gpus: Some(1),
            ..Resources::default()
        };
        let mine = Resources {
            cpus: Some(8),
            time: Some("01:00:00".into()),
            ..Resources::default()
        };
        assert_eq!(
            mine.or(&defaults).sbatch_args(),
            ["--cpus-per-task=8", "--time=01:00:00", "--gpus=1"]
        );
    }
}
