//! Progress of a call: events for a user callback, joblib's `verbose` lines, a progress bar.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What just happened in a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Tasks `first .. first + count` were handed to a worker.
    Dispatched {
        /// Index of the first task of the batch.
        first: usize,
        /// Number of tasks in the batch.
        count: usize,
    },
    /// Tasks `first .. first + count` finished successfully.
    Completed {
        /// Index of the first task of the batch.
        first: usize,
        /// Number of tasks in the batch.
        count: usize,
    },
    /// Task `index` failed (error, panic or timeout).
    Failed {
        /// Input index of the failed task.
        index: usize,
    },
    /// The call ended: every task is accounted for, or it stopped on an error.
    Finished,
}

/// An [`Event`] and the call's counters right after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// What just happened.
    pub event: Event,
    /// Tasks handed to workers so far.
    pub dispatched: usize,
    /// Tasks finished successfully so far.
    pub completed: usize,
    /// Tasks failed so far.
    pub failed: usize,
    /// The number of tasks, once the input iterator has ended.
    pub total: Option<usize>,
    /// Time since the call started.
    pub elapsed: Duration,
}

/// A user's progress callback, shared by every call of a `Parallel`.
pub(crate) type Callback = Arc<Mutex<dyn FnMut(&Progress) + Send>>;

/// Where verbose lines go instead of the process's stderr/stdout: the line (with its
/// newline), and whether joblib's rule sends it to stdout (level 50 and up).
pub(crate) type VerboseSink = Arc<dyn Fn(&str, bool) + Send + Sync>;

/// Turns scheduler happenings into [`Progress`] for the callback and the verbose printer.
pub(crate) struct Reporter {
    callback: Option<Callback>,
    verbose: Option<Verbose>,
    counts: Progress,
    started: Instant,
    batches_done: usize,
}

impl Reporter {
    pub(crate) fn new(
        callback: Option<Callback>,
        verbose: u32,
        sink: Option<VerboseSink>,
        n_jobs: usize,
        backend: &str,
    ) -> Self {
        let verbose = (verbose > 0).then(|| Verbose::new(verbose, n_jobs, sink));
        if let Some(v) = &verbose {
            v.print(&format!(
                "Using backend {backend} with {n_jobs} concurrent workers."
            ));
        }
        Reporter {
            callback,
            verbose,
            counts: Progress {
                event: Event::Finished,
                dispatched: 0,
                completed: 0,
                failed: 0,
                total: None,
                elapsed: Duration::ZERO,
            },
            started: Instant::now(),
            batches_done: 0,
        }
    }

    pub(crate) fn is_silent(&self) -> bool {
        self.callback.is_none() && self.verbose.is_none()
    }

    pub(crate) fn report(&mut self, event: Event, total: Option<usize>) {
        match event {
            Event::Dispatched { count, .. } => self.counts.dispatched += count,
            Event::Completed { count, .. } => {
                self.counts.completed += count;
                self.batches_done += 1;
            }
            Event::Failed { .. } => self.counts.failed += 1,
            Event::Finished => {}
        }
        self.counts.event = event;
        self.counts.total = total;
        self.counts.elapsed = self.started.elapsed();
        if let Some(cb) = &self.callback {
            let mut f = cb.lock().unwrap_or_else(|e| e.into_inner());
            f(&self.counts);
        }
        if let Some(v) = &self.verbose {
            v.on(&self.counts, self.batches_done);
        }
    }
}

/// joblib's `verbose` output: lines prefixed with `[Parallel(n_jobs=N)]:`, on stderr below
/// level 50 and on stdout from 50 up, more often as the level rises (every batch above 10).
struct Verbose {
    level: u32,
    prefix: String,
    sink: Option<VerboseSink>,
}

impl Verbose {
    fn new(level: u32, n_jobs: usize, sink: Option<VerboseSink>) -> Self {
        Verbose {
            level,
            prefix: format!("[Parallel(n_jobs={n_jobs})]: "),
            sink,
        }
    }

    fn print(&self, line: &str) {
        let text = format!("{}{line}\n", self.prefix);
        if let Some(sink) = &self.sink {
            return sink(&text, self.level >= 50);
        }
        // Progress output must never fail the call; a closed stream just loses the line.
        if self.level < 50 {
            let _ = std::io::stderr().write_all(text.as_bytes());
        } else {
            let _ = std::io::stdout().write_all(text.as_bytes());
        }
    }

    /// Whether the `batches`-th completed batch deserves a line: all of them above level 10,
    /// otherwise ever more sparsely (at squares of a level-dependent step), as joblib does.
    fn wants_line(&self, batches: usize) -> bool {
        if self.level > 10 || batches <= 1 {
            return true;
        }
        let step = 0.5 * f64::from(11 - self.level).powi(2);
        let now = (batches as f64 / step).sqrt() as u64;
        let before = ((batches - 1) as f64 / step).sqrt() as u64;
        now != before
    }

    fn on(&self, p: &Progress, batches_done: usize) {
        let elapsed = p.elapsed.as_secs_f64();
        match p.event {
            Event::Completed { .. } if self.wants_line(batches_done) => match p.total {
                Some(total) if p.completed < total => {
                    let remaining = elapsed / p.completed as f64 * (total - p.completed) as f64;
                    self.print(&format!(
                        "Done {:3} out of {:3} | elapsed: {} remaining: {}",
                        p.completed,
                        total,
                        short_time(elapsed),
                        short_time(remaining)
                    ));
                }
                Some(_) => {}
                None => self.print(&format!(
                    "Done {:3} tasks      | elapsed: {}",
                    p.completed,
                    short_time(elapsed)
                )),
            },
            Event::Finished => {
                let total = p.total.unwrap_or(p.completed + p.failed);
                self.print(&format!(
                    "Done {:3} out of {:3} | elapsed: {} finished",
                    p.completed,
                    total,
                    short_time(elapsed)
                ));
            }
            _ => {}
        }
    }
}

/// joblib's time format: seconds with one decimal after a space, minutes past a minute.
fn short_time(secs: f64) -> String {
    if secs > 60.0 {
        format!("{:4.1}min", secs / 60.0)
    } else {
        format!(" {secs:5.1}s")
    }
}

#[cfg(feature = "progress-bar")]
pub(crate) fn bar() -> impl FnMut(&Progress) + Send {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} tasks [{elapsed_precise} elapsed, {eta} left]",
        )
        .expect("the template is valid"),
    );
    move |p: &Progress| {
        if let Some(total) = p.total {
            bar.set_length(total as u64);
        }
        bar.set_position(p.completed as u64);
        if p.event == Event::Finished {
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format_matches_joblib() {
        assert_eq!(short_time(1.23), "   1.2s");
        assert_eq!(short_time(90.0), " 1.5min");
    }

    #[test]
    fn lines_thin_out_at_low_levels() {
        let low = Verbose::new(1, 2, None);
        let printed = (1..=1000).filter(|&b| low.wants_line(b)).count();
        assert!(printed < 20, "{printed}");
        let high = Verbose::new(11, 2, None);
        assert!((1..=1000).all(|b| high.wants_line(b)));
    }
}
