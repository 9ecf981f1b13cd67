//! Progress reporting: indicatif bars on a terminal, nothing in CI, with `--json`, or in pipes.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// Whether progress bars should be drawn at all.
pub fn bars_enabled(json: bool) -> bool {
    !json && std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

/// Creates one bar per running stage.
#[derive(Clone)]
pub struct Bars {
    multi: Option<MultiProgress>,
}

impl Bars {
    pub fn new(enabled: bool) -> Self {
        let multi = enabled.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Bars { multi }
    }

    pub fn stage(&self, id: &str) -> Progress {
        let bar = self.multi.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new(0));
            bar.set_style(style("items"));
            bar.set_prefix(id.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress { bar, log: None }
    }

    /// Print a line above the bars (or to stderr when there are none).
    pub fn println(&self, line: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}

/// The bar's look, counting `unit` (`928 images/s`, `2.4 batches/s`).
fn style(unit: &'static str) -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {rate} ETA {eta} {msg}")
        .expect("valid template")
        .with_key(
            "rate",
            move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = w.write_str(&rate(state.per_sec(), unit));
            },
        )
        .progress_chars("=> ")
}

/// A rate as a person writes it: whole numbers from 10 up, one decimal below.
pub fn rate(per_sec: f64, unit: &str) -> String {
    if !per_sec.is_finite() {
        return format!("- {unit}/s");
    }
    if per_sec >= 10.0 {
        format!("{per_sec:.0} {unit}/s")
    } else {
        format!("{per_sec:.1} {unit}/s")
    }
}

/// Bytes as a person reads them: `812 B`, `3.4 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// One stage's progress handle; a no-op when bars are off.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// Without bars, each phase as a timestamped line on stderr under this label (a cluster
    /// job's log, so a killed job's tail says where it died).
    log: Option<String>,
}

impl Progress {
    pub fn hidden() -> Self {
        Progress {
            bar: None,
            log: None,
        }
    }

    /// No bars; each phase a line `<time> <label>: <phase>` on stderr.
    pub fn log_lines(label: &str) -> Self {
        Progress {
            bar: None,
            log: Some(label.to_string()),
        }
    }

    /// Start a phase of `total` `unit`s (resets the position).
    pub fn start(&self, total: u64, unit: &'static str, message: &str) {
        if let Some(label) = &self.log {
            let now = chrono::Local::now().format("%H:%M:%S");
            eprintln!("{now} {label}: {message} ({total} {unit})");
        }
        if let Some(b) = &self.bar {
            b.set_style(style(unit));
            b.set_length(total);
            b.set_position(0);
            b.reset_eta();
            b.set_message(message.to_string());
        }
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn set_position(&self, pos: u64) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
    }

    /// Print a line above the bars (or to stderr when there are none).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn message(&self, message: &str) {
        if let Some(b) = &self.bar {
            b.set_message(message.to_string());
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_read_like_a_person_wrote_them() {
        assert_eq!(super::rate(928.0401, "images"), "928 images/s");
        assert_eq!(super::rate(2.437, "batches"), "2.4 batches/s");
        assert_eq!(super::rate(f64::INFINITY, "files"), "- files/s");
    }
}
