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
mod delayed;
mod errors;
mod hashing;
mod persist;
mod pickling;
mod remote;
mod store;

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Whether engine threads may still enter Python: closed by [`shutdown`] when the
/// interpreter exits, so that no thread calls into an interpreter being torn down.
static OPEN: AtomicBool = AtomicBool::new(true);
/// Engine threads inside [`with_gil`] right now.
static INSIDE: AtomicUsize = AtomicUsize::new(0);

/// Runs `f` with the GIL from an engine thread; `None` once the interpreter is exiting.
///
/// Engine threads are not Python threads: `Python::attach` on them creates a thread state
/// and destroys it again at the end, every time (microseconds, most of the cost of a tiny
/// task, measured with py-spy). The first call on a thread takes one extra, never released
/// `PyGILState_Ensure`, so that the state lives as long as the thread and later calls only
/// take and drop the GIL.
pub(crate) fn with_gil<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    thread_local! {
        static KEPT: std::cell::RefCell<Option<Option<KeptState>>> =
            const { std::cell::RefCell::new(None) };
    }
    INSIDE.fetch_add(1, Ordering::SeqCst);
    let _leave = Leave;
    // Checked after announcing ourselves: `shutdown` closes, then waits for INSIDE to drain.
    if !is_open() {
        return None;
    }
    KEPT.with(|k| {
        let mut k = k.borrow_mut();
        if k.is_none() {
            // Only threads without a Python thread state need one kept: a thread Python
            // started (the caller's, a `threading` thread) has its own, which Python
            // deletes when that thread ends.
            // SAFETY: the interpreter is initialized (checked above). With no thread state,
            // this thread cannot hold the GIL: Ensure takes it with a new state, and
            // SaveThread gives the GIL back, keeping the state (count 1).
            unsafe {
                if pyo3::ffi::PyGILState_GetThisThreadState().is_null() {
                    pyo3::ffi::PyGILState_Ensure();
                    pyo3::ffi::PyEval_SaveThread();
                    *k = Some(Some(KeptState));
                } else {
                    *k = Some(None);
                }
            }
        }
    });
    Some(Python::attach(f))
}

/// Whether Python may be entered from an engine thread.
pub(crate) fn is_open() -> bool {
    // SAFETY: Py_IsInitialized may be called at any time.
    OPEN.load(Ordering::SeqCst) && unsafe { pyo3::ffi::Py_IsInitialized() } != 0
}

/// The extra `PyGILState_Ensure` a thread took in [`with_gil`], given back when the thread
/// exits, so that CPython deletes its thread state (and what tasks stored in
/// `threading.local`) instead of keeping it until the interpreter ends.
struct KeptState;

impl Drop for KeptState {
    fn drop(&mut self) {
        if !is_open() {
            return;
        }
        INSIDE.fetch_add(1, Ordering::SeqCst);
        let _leave = Leave;
        if !is_open() {
            return;
        }
        // SAFETY: this engine thread holds the one kept Ensure of the thread state it made
        // (count 1), and not the GIL (engine threads exit outside `with_gil`). Ensure takes
        // the GIL (count 2); releasing "locked" keeps the GIL (count 1); releasing the
        // original "unlocked" brings the count to 0, which clears and deletes the thread
        // state and drops the GIL.
        unsafe {
            let state = pyo3::ffi::PyGILState_Ensure();
            pyo3::ffi::PyGILState_Release(pyo3::ffi::PyGILState_STATE::PyGILState_LOCKED);
            pyo3::ffi::PyGILState_Release(state);
        }
    }
}

struct Leave;

impl Drop for Leave {
    fn drop(&mut self) {
        INSIDE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Called at interpreter exit (`atexit`): stops engine threads from entering Python, then
/// waits, without the GIL, for those inside to leave: like Python's own non-daemon threads,
/// a task still running on a thread holds the exit until it returns (its call has already
/// been stopped, so nothing new starts). Letting the interpreter finalize under a thread
/// with Rust frames on its stack would abort the process.
#[pyfunction]
fn shutdown(py: Python<'_>) {
    OPEN.store(false, Ordering::SeqCst);
    py.detach(|| {
        while INSIDE.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

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
fn worker_main(py: Python<'_>) -> PyResult<Option<i32>> {
    // A child forked by a task must not share pages of argument segments with the caller.
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item(
        "before",
        wrap_pyfunction!(pickling::privatize_before_fork, py)?,
    )?;
    py.import("os")?
        .getattr("register_at_fork")?
        .call((), Some(&kwargs))?;
    // The GIL is taken once per batch (each task's own `attach` is then a cheap nested one)
    // and given back while the worker waits for the next batch. At the end of a batch, the
    // argument segments that tasks kept are made private (the caller reuses them).
    Ok(py.detach(|| {
        joblet::run_worker_scoped(|run| {
            Python::attach(|_| {
                run();
                pickling::batch_done();
            })
        })
    }))
}

/// Makes the process backend start workers with `program args..` and `env` added to their
/// environment (the Python front passes its interpreter and `-m joblet._worker`).
#[pyfunction]
#[pyo3(signature = (program, args, env=Vec::new()))]
fn set_worker_command(program: String, args: Vec<String>, env: Vec<(String, String)>) {
    joblet::set_worker_command(program, args, env);
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
    m.add_function(wrap_pyfunction!(shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(set_worker_command, m)?)?;
    m.add_function(wrap_pyfunction!(cpu_count, m)?)?;
    m.add_function(wrap_pyfunction!(nesting_depth, m)?)?;
    m.add_function(wrap_pyfunction!(set_worker_idle_timeout, m)?)?;
    m.add_function(wrap_pyfunction!(hashing::content_hash, m)?)?;
    m.add_function(wrap_pyfunction!(persist::dump_container, m)?)?;
    m.add_function(wrap_pyfunction!(persist::load_container, m)?)?;
    m.add_function(wrap_pyfunction!(persist::is_container, m)?)?;
    m.add_function(wrap_pyfunction!(persist::unchecked_for_writing, m)?)?;
    m.add_function(wrap_pyfunction!(persist::decompress, m)?)?;
    m.add_class::<call::Results>()?;
    m.add_class::<delayed::Delayed>()?;
    m.add_class::<pickling::ReceivedBuffer>()?;
    m.add_class::<store::Store>()?;
    Ok(())
}
