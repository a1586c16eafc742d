//! Backends: where the tasks of a call run. One file each.
//!
//! 1. [`Backend::Sequential`]: in the caller's thread, one batch at a time, when the caller
//!    asks for results. The reference semantics: every other backend behaves the same, only
//!    in parallel.
//! 2. [`Backend::Threads`]: in worker threads started for the call.
//! 3. [`Backend::Processes`]: in worker processes from a pool reused across calls
//!    (`processes/`).
//!
//! A backend contributes runners (see `scheduler::Runner`) and the batch durations it wants;
//! the scheduler does the rest (dispatch window, batching, order, errors, timeouts, progress).

pub(crate) mod processes;
mod sequential;
mod threads;

use crate::scheduler::batching::IdealDuration;
use crate::scheduler::feed::Batch;
use crate::scheduler::{run_here, BatchReport, RunContext, Runner};
use crate::task::Job;
use std::fmt;

/// Where the tasks of a call run (joblib's `backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Backend {
    /// In the caller's thread, one after another (joblib's `"sequential"`).
    Sequential,
    /// In `n_jobs` worker threads (joblib's `"threading"`), the default for closures.
    #[default]
    Threads,
    /// In `n_jobs` worker processes (joblib's `"loky"`): crashes, aborts and stuck tasks are
    /// contained, reported and survived. Runs [`crate::remote_fn!`] tasks; the program must call
    /// [`crate::worker_hook`] first thing in `main`.
    Processes,
}

impl Backend {
    pub(crate) fn ideal_batch_duration(self) -> IdealDuration {
        match self {
            Backend::Sequential => sequential::IDEAL_BATCH,
            Backend::Threads => threads::IDEAL_BATCH,
            Backend::Processes => processes::IDEAL_BATCH,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sequential => "Sequential",
            Backend::Threads => "Threads",
            Backend::Processes => "Processes",
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = crate::ConfigError;

    /// Parses joblib's names: `"sequential"`, `"threading"` (or `"threads"`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sequential" => Ok(Backend::Sequential),
            "threading" | "threads" => Ok(Backend::Threads),
            "loky" | "processes" | "multiprocessing" => Ok(Backend::Processes),
            other => Err(crate::ConfigError::new(
                "backend",
                format!(
                    "unknown backend {other:?}; expected \"sequential\", \"threading\" or \"loky\""
                ),
            )),
        }
    }
}

/// Runs batches in the thread that calls it: the runner of both in-process backends.
pub(crate) struct Here;

impl<J: Job> Runner<J> for Here {
    fn run_batch(&mut self, batch: Batch<J>, ctx: &RunContext) -> BatchReport<J::Output, J::Error> {
        run_here(batch, ctx)
    }
}
