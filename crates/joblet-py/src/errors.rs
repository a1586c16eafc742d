//! Engine errors as the Python exceptions joblib raises for them.

use crate::remote::TaskFailure;
use joblet::Error;
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// The exception `module.name(message)`, or a `RuntimeError` if that class cannot be found.
fn exception(py: Python<'_>, module: &str, name: &str, message: String) -> PyErr {
    let made = py
        .import(module)
        .and_then(|m| m.getattr(name))
        .and_then(|cls| cls.call1((message.clone(),)));
    match made {
        Ok(e) => PyErr::from_value(e),
        Err(_) => PyRuntimeError::new_err(message),
    }
}

/// A task's error from a thread or the caller: the exception itself, raised as it was.
pub(crate) fn raw(_: Python<'_>, _: usize, e: PyErr) -> PyErr {
    e
}

/// A task's error from a worker process: its exception rebuilt (its own type, with the
/// worker's traceback as `__cause__`) by `joblet._codec.rebuild_exception`.
pub(crate) fn from_worker(py: Python<'_>, index: usize, f: TaskFailure) -> PyErr {
    let rebuilt = crate::codec(py).and_then(|codec| {
        codec.call_method1(
            "rebuild_exception",
            (
                index,
                f.exception.as_ref().map(|b| PyBytes::new(py, b)),
                f.type_name.as_str(),
                f.message.as_str(),
                f.traceback.as_str(),
            ),
        )
    });
    match rebuilt {
        Ok(e) => PyErr::from_value(e),
        Err(e) => e,
    }
}

/// Converts an engine error; `task` converts a task's own error.
pub(crate) fn from_engine<E>(
    py: Python<'_>,
    err: Error<E>,
    task: impl FnOnce(Python<'_>, usize, E) -> PyErr,
) -> PyErr {
    match err {
        Error::Task { index, source } => task(py, index, source),
        Error::TimedOut { index, timeout } => exception(
            py,
            "multiprocessing",
            "TimeoutError",
            format!(
                "task {index} was still running after the timeout of {:.6} s; its worker was \
                 stopped",
                timeout.as_secs_f64()
            ),
        ),
        Error::WorkerDied { index, exit } => exception(
            py,
            "joblet._errors",
            "TerminatedWorkerError",
            format!(
                "A worker process managed by the executor was unexpectedly terminated while \
                 running task {index} ({exit}). This could be caused by a segmentation fault \
                 while calling the function or by an excessive memory usage causing the \
                 Operating System to kill the worker."
            ),
        ),
        Error::Transport { index, message } => exception(
            py,
            "pickle",
            "PicklingError",
            format!("task {index} could not be sent to or from its worker: {message}"),
        ),
        Error::Panicked { index, message } => {
            PyRuntimeError::new_err(format!("task {index}: joblet's engine panicked: {message}"))
        }
        Error::Input { index, message } => PyRuntimeError::new_err(format!(
            "reading task {index} from the input failed: {message}"
        )),
        // A subclass of RuntimeError, as before; joblib raises it when a worker dies at start
        // (a failing initializer, for one).
        Error::WorkerStart(message) => exception(
            py,
            "joblet._errors",
            "TerminatedWorkerError",
            format!("worker processes could not start: {message}"),
        ),
        Error::Config(c) => PyValueError::new_err(c.to_string()),
        Error::Interrupted => {
            pyo3::exceptions::PyKeyboardInterrupt::new_err("the parallel call was interrupted")
        }
        #[allow(unreachable_patterns)]
        _ => PyRuntimeError::new_err("joblet: an engine error this version cannot describe"),
    }
}
