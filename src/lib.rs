//! galaxy-pipe: reproducible, cached Galaxy Zoo pipelines.
//!
//! Data flows one way: [`config`] (TOML → typed pipeline) → [`graph`] (validated DAG) →
//! [`runner`] (plans through the [`cache`]) → [`executor`] (computes [`stages`], here or as
//! cluster jobs) → [`records`] of each run.

pub mod artifacts;
pub mod bench;
pub mod cache;
pub mod cli;
pub mod compare;
pub mod config;
pub mod executor;
pub mod figures;
pub mod gc;
pub mod graph;
pub mod io_error;
pub mod kind;
pub mod labels;
pub mod metrics;
pub mod model;
pub mod progress;
pub mod records;
pub mod report;
pub mod runner;
pub mod schema;
pub mod stages;
pub mod synth;
pub mod untrusted;
pub mod vision;
