//! One CLI call and what a test expects of it, built the way `just`'s `Test` is: the arguments
//! (and environment), then the expectation, which runs it and says what went wrong with the
//! call's stderr in view. `--json` is always added: the JSON document comes back parsed.
//!
//! ```ignore
//! let run = p.invoke(&["run", "p.toml"]).succeeds();          // the fake-stage registry
//! let run = Invocation::real(dir, &["run", "p.toml"]).exits(1); // the real binary
//! assert_eq!(ids_with(&run.json, "ran"), ["ingest"]);
//! ```

use std::path::Path;
use std::process::Command;

use super::{Project, json_line};

pub struct Invocation {
    command: Command,
    args: Vec<String>,
}

/// How a call ended: its exit code, the JSON document on stdout (`Null` if none) and stderr.
pub struct Finished {
    pub code: i32,
    pub json: serde_json::Value,
    pub stderr: String,
}

impl Invocation {
    /// The real `galaxy-pipe` binary in `dir`.
    pub fn real(dir: &Path, args: &[&str]) -> Invocation {
        let mut command = Command::new(assert_cmd::cargo::cargo_bin("galaxy-pipe"));
        command
            .env_remove("GALAXY_PIPE_CACHE_DIR")
            .env("NO_COLOR", "1")
            .current_dir(dir)
            .args(args)
            .arg("--json");
        Invocation {
            command,
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Invocation {
        self.command.env(key, value);
        self
    }

    /// Runs it, whatever it exits with.
    pub fn finish(mut self) -> Finished {
        let out = self.command.output().unwrap();
        Finished {
            code: out.status.code().unwrap_or(-1),
            json: json_line(&out.stdout).unwrap_or_default(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs it and expects exit 0.
    pub fn succeeds(self) -> Finished {
        self.exits(0)
    }

    /// Runs it and expects exit `code`.
    pub fn exits(self, code: i32) -> Finished {
        let args = self.args.join(" ");
        let done = self.finish();
        assert_eq!(
            done.code, code,
            "`galaxy-pipe {args}` exited {} (expected {code}); stderr:\n{}\nstdout JSON: {}",
            done.code, done.stderr, done.json
        );
        done
    }
}

impl Project {
    /// This project's CLI with the fake-stage registry (see [`Project::command`]).
    pub fn invoke(&self, args: &[&str]) -> Invocation {
        let mut full = vec!["galaxy-pipe".to_string()];
        full.extend(args.iter().map(|s| s.to_string()));
        full.push("--json".into());
        let mut command = self.command(&[]);
        command.env(super::CHILD_ARGS, serde_json::to_string(&full).unwrap());
        Invocation {
            command,
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }
}
