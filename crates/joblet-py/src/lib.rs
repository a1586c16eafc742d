//! `joblet._core`: the Python front's bridge to the engine. The joblib-compatible API
//! (argument checking, `parallel_config`, `delayed`) is pure Python in `python/joblet`; this
//! module runs a call on the engine and is the only place engine errors become Python
//! exceptions.
//!
//! A call hands the engine an iterator that pulls `(function, args, kwargs)` triples from the
//! Python iterator, with the GIL held only while pulling. On threads (and sequentially) a task
//! is a Rust closure that takes the GIL and calls the function; on processes it is the
//! registered function [`remote::py_task`], whose arguments are the task pickled by
//! `joblet._codec` (cloudpickle, pickle protocol 5 with out-of-band buffers). The caller
//! waits with the GIL released, so tasks on other threads can run.

mod call;
mod errors;
mod remote;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

/// `joblet._codec`, imported once: it is needed for every task that crosses a process.
pub(crate) fn codec(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    static CODEC: PyOnceLock<Py<PyModule>> = PyOnceLock::new();
    CODEC
        .get_or_try_init(py, || Ok(py.import("joblet._codec")?.unbind()))
        .map(|m| m.bind(py))
}

/// Serves tasks when this interpreter was started as a worker process
/// (`python -m joblet._worker`); returns the exit code, or `None` in any other process.
#[pyfunction]
fn worker_main(py: Python<'_>) -> Option<i32> {
    py.detach(joblet::run_worker)
}

/// Makes the process backend start workers with `program args..` (the Python front passes
/// its interpreter and `-m joblet._worker`).
#[pyfunction]
fn set_worker_command(program: String, args: Vec<String>) {
    joblet::set_worker_command(program, args);
}

/// joblib's `cpu_count()`: the CPUs this process may use (affinity and cgroup quota).
#[pyfunction]
fn cpu_count() -> usize {
    joblet::cpu_count()
}

/// Sets how long idle worker processes wait for the next call before they exit.
#[pyfunction]
fn set_worker_idle_timeout(seconds: f64) -> PyResult<()> {
    let d = std::time::Duration::try_from_secs_f64(seconds).map_err(|_| {
        pyo3::exceptions::PyValueError::new_err(format!(
            "idle timeout must be a non-negative number of seconds, got {seconds}"
        ))
    })?;
    joblet::set_worker_idle_timeout(d);
    Ok(())
}

/// How many parallel calls enclose the calling code (1 in a worker process or a worker thread
/// of a call, 0 at top level).
#[pyfunction]
fn nesting_depth() -> usize {
    joblet::nesting_depth()
}

/// The extension module.
#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(call::run, m)?)?;
    m.add_function(wrap_pyfunction!(worker_main, m)?)?;
    m.add_function(wrap_pyfunction!(set_worker_command, m)?)?;
    m.add_function(wrap_pyfunction!(cpu_count, m)?)?;
    m.add_function(wrap_pyfunction!(nesting_depth, m)?)?;
    m.add_function(wrap_pyfunction!(set_worker_idle_timeout, m)?)?;
    m.add_class::<call::Results>()?;
    Ok(())
}
