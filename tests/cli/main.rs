//! Integration tests: the CLI as users run it, one topic per module. Config and schema checks
//! drive the real binary; runner and cache checks run the same CLI code with fake downstream
//! stages (see support/) in separate processes, so kills and concurrent runs are real.

#[path = "../support/mod.rs"]
mod support;

mod cache;
mod config_errors;
mod data;
mod ensemble;
mod history;
mod report;
mod shipped;
mod training;

/// Entry point of the re-executed child process; a no-op in a normal test run.
#[test]
fn child_entry() {
    support::child_main();
}
