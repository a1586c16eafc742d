//! joblet runs many independent tasks in parallel and hands the results back the way the
//! caller wants them: all at once in input order, lazily in input order, or as they finish.
//! It is joblib's model (`Parallel`, `delayed`) for Rust.
//!
//! ```
//! use joblet::{delayed, Backend, Parallel};
//!
//! fn sum_of_squares(x: Vec<f64>) -> f64 {
//!     x.iter().map(|v| v * v).sum()
//! }
//!
//! let data: Vec<Vec<f64>> = (0..10).map(|i| vec![i as f64; 1000]).collect();
//! let results = Parallel::new()
//!     .n_jobs(4)
//!     .backend(Backend::Threads)
//!     .run(data.into_iter().map(|x| delayed(sum_of_squares, (x,))))
//!     .unwrap();
//! assert_eq!(results[3], 9.0 * 1000.0);
//! ```
//!
//! What the engine does for every backend:
//! - **order**: [`Parallel::run`] returns a `Vec` in input order; [`Parallel::iter`] yields
//!   in input order while work goes on; [`Parallel::iter_unordered`] yields as tasks finish.
//! - **errors**: the first failing task (an `Err` or a panic) stops the call; the error
//!   carries the task's index and its own error. [`Parallel::outcomes`] runs everything and
//!   reports each outcome instead.
//! - **bounded memory**: the input is pulled lazily, at most `pre_dispatch` batches ahead.
//! - **batching**: `batch_size="auto"` groups tiny tasks so that their dispatch costs nothing.
//! - **timeouts**, **progress** (callback, joblib's `verbose` lines, a progress bar), and
//!   **nesting** (calls inside tasks run sequentially).
//!
//! Beside the engine, sharing its data paths: [`Buffer`] (numbers that process workers read
//! in place, in shared memory), [`persist`] (`dump` / `load`: a checksummed container whose
//! big `Buffer`s `load_mapped` maps from the file), [`hash`] (content hashes at memory
//! speed) and [`Memory`] with [`cached_fn!`] (results kept on disk, keyed by their
//! arguments' content).
//!
//! Cargo features (none on by default):
//! - `progress-bar`: a terminal progress bar, `Parallel::progress_bar` (indicatif).
//! - `ndarray`: `NdBuffer<A, D>`, an `ndarray` array whose values are a `Buffer`, so that
//!   it persists, is cached (mapped on a hit with `Memory::mapped(true)`) and reaches
//!   process workers as a `Buffer` does, where ndarray's own serde goes value by value.

mod backend;
mod buffer;
mod cache;
mod config;
mod context;
mod cpu;
mod decode;
mod error;
#[cfg(feature = "ndarray")]
mod ndbuffer;
mod parallel;
pub mod persist;
mod progress;
mod protocol;
mod remote;
mod scheduler;
mod shm;
mod task;
#[cfg(test)]
mod test_support;

pub use backend::processes::worker::{run_worker, run_worker_scoped, worker_hook};
pub use backend::processes::WorkerExit;
pub use backend::Backend;
pub use buffer::Buffer;
pub use cache::{
    hash, CachedFn, Commit, ContentHasher, Digest, Entry, HashError, Memory, MemoryError, Store,
    StoreError,
};
pub use config::{BatchSize, PreDispatch};
pub use context::{is_cancelled, nesting_depth};
pub use cpu::cpu_count;
pub use error::{ConfigError, Error, Failure};
#[cfg(feature = "ndarray")]
pub use ndbuffer::{NdBuffer, NdShapeError};
pub use parallel::Parallel;
pub use progress::{Event, Progress};
pub use remote::Remote;
pub use scheduler::{Ordered, Unordered};
pub use task::{delayed, Args, Job};

/// Items the macros expand to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::protocol::attached::{attach_fd, take_fd};
    pub use crate::remote::{call_encoded, Called, Never, Registered};
    pub use crate::shm::{PrivateView, Spare, SPARE_MIN};
    pub use inventory;
}

/// Sets how long idle worker processes wait for the next call before they exit (default 300 s).
pub fn set_worker_idle_timeout(timeout: std::time::Duration) {
    backend::processes::set_idle_timeout(timeout);
}

/// Makes the process backend start workers by running `program` with `args`, and `env`
/// added to their environment, instead of re-running this binary: for programs that embed
/// joblet in another runtime (the Python front starts `python -m joblet._worker`). That
/// program must call [`run_worker`] first thing. [`worker_hook`] is then not needed in this
/// program. Idle workers started with another command are not reused.
pub fn set_worker_command<P, A, K, V>(
    program: P,
    args: impl IntoIterator<Item = A>,
    env: impl IntoIterator<Item = (K, V)>,
) where
    P: Into<std::ffi::OsString>,
    A: Into<std::ffi::OsString>,
    K: Into<std::ffi::OsString>,
    V: Into<std::ffi::OsString>,
{
    backend::processes::spawn::set_worker_command(backend::processes::spawn::External {
        program: program.into(),
        args: args.into_iter().map(Into::into).collect(),
        env: env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
    });
}

/// The README's Rust example runs as a doctest, so it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
