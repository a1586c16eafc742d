//! The errors a call can end with.
//!
//! A task's failure travels as a value from the worker that saw it to the caller that waits
//! for it; it always carries the input index of the task, so the user can find the item.

use std::any::Any;
use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

/// Why a `Parallel` call stopped before delivering every result.
///
/// `E` is the error type of the tasks (`Infallible` for tasks that return plain values).
/// The enum is `non_exhaustive`: later backends (worker processes) add variants.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error<E = Infallible> {
    /// Task `index` returned `Err(source)`.
    Task {
        /// Input index of the failed task.
        index: usize,
        /// The task's own error.
        source: E,
    },
    /// Task `index` panicked; `message` is the panic payload when it was a string.
    Panicked {
        /// Input index of the task that panicked.
        index: usize,
        /// The panic message.
        message: String,
    },
    /// Task `index` was still running `timeout` after it started.
    TimedOut {
        /// Input index of the overdue task.
        index: usize,
        /// The configured timeout.
        timeout: Duration,
    },
    /// The input iterator panicked while producing item `index`.
    Input {
        /// Index of the item the iterator was producing.
        index: usize,
        /// The panic message.
        message: String,
    },
    /// The worker process running task `index` died: it crashed (a signal such as SIGSEGV or
    /// SIGABRT), exited, or was killed (SIGKILL: the OOM killer, or someone else).
    WorkerDied {
        /// Input index of the task the worker was running.
        index: usize,
        /// How the worker process ended.
        exit: crate::WorkerExit,
    },
    /// Task `index` could not be sent to a worker process or its outcome not brought back:
    /// arguments or result that do not encode or decode, a function that is not registered.
    Transport {
        /// Input index of the task.
        index: usize,
        /// What went wrong.
        message: String,
    },
    /// Worker processes could not be started; nothing ran.
    WorkerStart(String),
    /// The call was configured with an invalid value; nothing ran.
    Config(ConfigError),
    /// The call's interrupt check ([`crate::Parallel::interrupt_check`]) asked it to stop:
    /// tasks not started never ran, busy worker processes were killed.
    Interrupted,
}

impl<E> Error<E> {
    /// The input index of the task (or input item) the error is about, if any.
    pub fn index(&self) -> Option<usize> {
        match self {
            Error::Task { index, .. }
            | Error::Panicked { index, .. }
            | Error::TimedOut { index, .. }
            | Error::Input { index, .. }
            | Error::WorkerDied { index, .. }
            | Error::Transport { index, .. } => Some(*index),
            Error::Config(_) | Error::WorkerStart(_) | Error::Interrupted => None,
        }
    }

    /// Turns a task [`Failure`] into the call error for task `index`.
    pub(crate) fn from_failure(index: usize, failure: Failure<E>) -> Self {
        match failure {
            Failure::Error(source) => Error::Task { index, source },
            Failure::Panic(message) => Error::Panicked { index, message },
        }
    }
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Task { index, source } => write!(f, "task {index} failed: {source}"),
            Error::Panicked { index, message } => write!(f, "task {index} panicked: {message}"),
            Error::TimedOut { index, timeout } => {
                write!(
                    f,
                    "task {index} did not finish within the timeout of {timeout:?}"
                )
            }
            Error::Input { index, message } => {
                write!(
                    f,
                    "the input iterator panicked while producing item {index}: {message}"
                )
            }
            Error::WorkerDied { index, exit } => {
                write!(f, "the worker process running task {index} died ({exit})")
            }
            Error::Transport { index, message } => {
                write!(
                    f,
                    "task {index} could not be run in a worker process: {message}"
                )
            }
            Error::WorkerStart(message) => write!(f, "cannot start worker processes: {message}"),
            Error::Config(e) => e.fmt(f),
            Error::Interrupted => f.write_str("the call was interrupted"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for Error<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Task { source, .. } => Some(source),
            Error::Config(e) => Some(e),
            _ => None,
        }
    }
}

impl<E> From<ConfigError> for Error<E> {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

/// How one task failed, when the call collects every outcome ([`crate::Parallel::outcomes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure<E> {
    /// The task returned `Err`.
    Error(E),
    /// The task panicked with this message.
    Panic(String),
}

impl<E: fmt::Display> fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Error(e) => e.fmt(f),
            Failure::Panic(m) => write!(f, "panicked: {m}"),
        }
    }
}

/// A configuration value that cannot be used. Names the parameter and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    parameter: &'static str,
    message: String,
}

impl ConfigError {
    pub(crate) fn new(parameter: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            parameter,
            message: message.into(),
        }
    }

    /// The name of the offending parameter (`"n_jobs"`, `"batch_size"`, `"pre_dispatch"`, ...).
    pub fn parameter(&self) -> &'static str {
        self.parameter
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.parameter, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The text of a panic payload, which is then dropped without letting a panic in its own
/// `Drop` escape (a payload is user data: its destructor may panic too).
pub(crate) fn take_panic_message(payload: Box<dyn Any + Send>) -> String {
    let message = panic_message(&*payload);
    if let Err(again) =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(payload)))
    {
        // The second payload could misbehave the same way: leak it rather than risk it.
        std::mem::forget(again);
    }
    message
}

/// The text of a panic payload: the `&str` or `String` passed to `panic!`, else a placeholder.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_owned()
    }
}
