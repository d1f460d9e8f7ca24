//! What the tools (`shoal verify`, `shoal cluster ...`) show while they work: their report on
//! stdout, and the progress of a long step on stderr, with counts, rate and the time left. On a
//! terminal that is an `indicatif` bar (or a spinner when the amount of work is unknown); when
//! stderr is not a terminal (a log, CI) indicatif would draw nothing, so the step's start, a
//! plain line when one is due (at most every second, and at each tenth of the work: see
//! `shoal_server::progress::Pace`) and its end are written instead.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use shoal_server::cluster_tool::Report;
use shoal_server::progress::Pace;

/// How often a spinner turns on a terminal.
const TICK: Duration = Duration::from_millis(100);

/// The report of a tool run from the command line.
pub struct Console {
    terminal: bool,
    bar: Option<ProgressBar>,
    step: Option<Step>,
}

/// The long step under way.
struct Step {
    what: String,
    pace: Pace,
    /// The last count reported, for the average rate at the end.
    done: u64,
}

impl Console {
    pub fn new() -> Console {
        Console {
            terminal: std::io::stderr().is_terminal(),
            bar: None,
            step: None,
        }
    }
}

impl Report for Console {
    fn say(&mut self, line: &str) {
        match &self.bar {
            // Printed above the bar, which is drawn again below.
            Some(bar) => bar.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    fn begin(&mut self, what: &str, total: Option<u64>) {
        self.end("");
        if self.terminal {
            let bar = match total {
                Some(n) => ProgressBar::new(n).with_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {wide_msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{prefix} {spinner} {elapsed} {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner())
                        .tick_chars("|/-\\ "),
                ),
            };
            bar.set_prefix(what.to_string());
            bar.enable_steady_tick(TICK);
            self.bar = Some(bar);
        } else {
            eprintln!("{what} ...");
        }
        self.step = Some(Step {
            what: what.to_string(),
            pace: Pace::new(total),
            done: 0,
        });
    }

    fn progress(&mut self, done: u64, detail: &str) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            bar.set_message(detail.to_string());
            if let Some(step) = self.step.as_mut() {
                step.done = done;
            }
            return;
        }
        let Some(step) = self.step.as_mut() else {
            return;
        };
        step.done = done;
        if !step.pace.due(done) {
            return;
        }
        let e = step.pace.estimate(done);
        let eta = e.eta_s.map_or(String::new(), |s| format!(", eta {s:.0}s"));
        match step.pace.total() {
            Some(total) => eprintln!(
                "{}: {done}/{total} {detail} ({:.1}/s{eta}, {:.0}s)",
                step.what, e.rate, e.elapsed_s
            ),
            None => eprintln!("{}: {detail} ({:.0}s)", step.what, e.elapsed_s),
        }
    }

    fn end(&mut self, outcome: &str) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let Some(step) = self.step.take()
            && !outcome.is_empty()
        {
            let e = step.pace.estimate(step.done);
            let rate = if step.done > 0 {
                format!(", {:.1}/s", e.rate)
            } else {
                String::new()
            };
            eprintln!("{}: {outcome} ({:.1}s{rate})", step.what, e.elapsed_s);
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        self.end("");
    }
}
