//! The progress line of an audit: on a terminal only, on stderr, redrawn a few times a
//! second (indicatif does the drawing and the rate limiting). Nothing is drawn, and no
//! thread is started, when stderr is not a terminal: piped output stays exactly the report.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::summary::{group, size, Summary};

/// Redraws per second at most.
const DRAWS_PER_SECOND: u8 = 4;

/// The progress line, or nothing.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Progress {
    /// A progress line when stderr is a terminal; `total_bytes` (the inputs' size, when
    /// every input is a regular file) adds a percentage and the time left.
    pub fn start(total_bytes: Option<u64>) -> Progress {
        let started = Instant::now();
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None, started };
        }
        let target = ProgressDrawTarget::stderr_with_hz(DRAWS_PER_SECOND);
        let bar = match total_bytes {
            Some(total) => {
                let bar = ProgressBar::with_draw_target(Some(total), target);
                if let Ok(style) =
                    ProgressStyle::with_template("audit: {msg}, {percent}% ({eta} left)")
                {
                    bar.set_style(style);
                }
                bar
            }
            None => {
                let bar = ProgressBar::with_draw_target(None, target);
                if let Ok(style) = ProgressStyle::with_template("audit: {msg}") {
                    bar.set_style(style);
                }
                bar
            }
        };
        bar.enable_steady_tick(Duration::from_millis(1000 / u64::from(DRAWS_PER_SECOND)));
        let progress = Progress {
            bar: Some(bar),
            started,
        };
        progress.update(&Summary::default());
        progress
    }

    /// Shows the counts so far.
    pub fn update(&self, summary: &Summary) {
        let Some(bar) = &self.bar else {
            return;
        };
        let t = &summary.total;
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        bar.set_position(t.bytes);
        bar.set_message(format!(
            "{} records, {}, {} records/s, ok {} rejected {} crashed {}",
            group(t.records),
            size(t.bytes),
            group((t.records as f64 / secs).round() as u64),
            group(t.ok),
            group(t.rejected),
            group(t.crashed),
        ));
    }

    /// Takes the line off the terminal.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
