//! The one function process workers run for Python: a pickled task, run in Rust with the C
//! pickler; Python code (`joblet._codec`) only for what needs cloudpickle or a traceback.

use crate::pickling::{self, Pickled, Pickler};
use joblet::Buffer;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

/// How a task failed in the worker: its exception pickled when that was possible, and its
/// type, message and formatted traceback as text in any case.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) struct TaskFailure {
    pub(crate) exception: Option<Buffer<u8>>,
    pub(crate) type_name: String,
    pub(crate) message: String,
    pub(crate) traceback: String,
}

joblet::remote_fn! {
    /// Runs one Python task in a worker process: unpickles the function (once per distinct
    /// pickle) and the arguments, calls it, pickles the outcome.
    pub fn py_task(function: Function, call: Pickled) -> Result<Pickled, TaskFailure> {
        Python::attach(|py| run(py, &function, call)).unwrap_or_else(|e| {
            Python::attach(|py| Err(internal_failure(py, e)))
        })
    }
}

/// A task's function: pickled, with an id, the first time its worker gets it in a call; then
/// known by that id. So a function travels once per worker per call, not once per task
/// (a closure that captured an array would otherwise carry it with every task).
#[derive(Serialize, Deserialize)]
pub(crate) enum Function {
    Pickled { id: u64, bytes: Buffer<u8> },
    Known(u64),
}

/// How many functions a worker keeps by id, most recently sent last. The caller refers by id
/// only to the last [`KNOWN_BY_CALLER`] it sent to that worker in the call, in the same order,
/// so it never names one the worker has dropped.
const KNOWN_BY_WORKER: usize = 64;
pub(crate) const KNOWN_BY_CALLER: usize = 32;

/// What a worker keeps from task to task.
struct Worker {
    pickler: Pickler,
    /// The last few functions unpickled, by their pickle: a call usually has one.
    functions: Mutex<Vec<(Vec<u8>, Py<PyAny>)>>,
    /// Functions by id, in the order they were last sent (see [`Function`]).
    known: Mutex<std::collections::VecDeque<(u64, Py<PyAny>)>>,
    sys: Py<PyModule>,
}

const KEEP_FUNCTIONS: usize = 16;

static WORKER: PyOnceLock<Worker> = PyOnceLock::new();

fn run(
    py: Python<'_>,
    function: &Function,
    call: Pickled,
) -> PyResult<Result<Pickled, TaskFailure>> {
    let worker = WORKER.get_or_try_init(py, || {
        Ok::<_, PyErr>(Worker {
            pickler: Pickler::new(py, true)?,
            functions: Mutex::new(Vec::new()),
            known: Mutex::new(std::collections::VecDeque::new()),
            sys: py.import("sys")?.unbind(),
        })
    })?;
    let outcome = worker.call(py, function, call);
    // What the task printed reaches the parent's streams before its result does, and is not
    // lost if the worker dies on a later task.
    worker.flush(py);
    match outcome.and_then(|result| worker.dump(py, &result)) {
        Ok(p) => Ok(Ok(p)),
        Err(e) => failure(py, e).map(Err),
    }
}

impl Worker {
    fn function(&self, py: Python<'_>, function: &Function) -> PyResult<Py<PyAny>> {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        match function {
            Function::Known(id) => known
                .iter()
                .find(|(k, _)| k == id)
                .map(|(_, f)| f.clone_ref(py))
                .ok_or_else(|| {
                    pyo3::exceptions::PyRuntimeError::new_err(format!(
                        "joblet: the task names function {id}, which this worker does not have \
                         (a bug in joblet: please report it)"
                    ))
                }),
            Function::Pickled { id, bytes } => {
                let f = self.unpickle_function(py, bytes)?;
                known.retain(|(k, _)| k != id);
                known.push_back((*id, f.clone_ref(py)));
                if known.len() > KNOWN_BY_WORKER {
                    known.pop_front();
                }
                Ok(f)
            }
        }
    }

    fn unpickle_function(&self, py: Python<'_>, blob: &[u8]) -> PyResult<Py<PyAny>> {
        let mut cache = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, f)) = cache.iter().find(|(b, _)| b == blob) {
            return Ok(f.clone_ref(py));
        }
        let f = pickling::loads(py, blob)?.unbind();
        if cache.len() >= KEEP_FUNCTIONS {
            cache.remove(0);
        }
        cache.push((blob.to_vec(), f.clone_ref(py)));
        Ok(f)
    }

    /// Calls the task; any exception is the task's (unpickling its function or arguments too).
    fn call<'py>(
        &self,
        py: Python<'py>,
        function: &Function,
        call: Pickled,
    ) -> PyResult<Bound<'py, PyAny>> {
        let f = self.function(py, function)?;
        let payload = pickling::load(py, call)?.cast_into::<PyTuple>()?;
        let args = payload.get_item(0)?.cast_into::<PyTuple>()?;
        let kwargs = payload.get_item(1)?.cast_into::<PyDict>()?;
        let kwargs = (!kwargs.is_empty()).then_some(kwargs);
        f.bind(py).call(args, kwargs.as_ref())
    }

    /// The result pickled: the C pickler, else cloudpickle (`__main__` classes, lambdas).
    fn dump(&self, py: Python<'_>, result: &Bound<'_, PyAny>) -> PyResult<Pickled> {
        if let Some(p) = self.pickler.dump(py, result)? {
            return Ok(p);
        }
        let out = crate::codec(py)?
            .call_method1(pyo3::intern!(py, "cloud_dumps"), (result,))?
            .cast_into::<PyTuple>()?;
        pickling::pickled(py, &out.get_item(0)?, &out.get_item(1)?, true)
    }

    fn flush(&self, py: Python<'_>) {
        let sys = self.sys.bind(py);
        for name in [pyo3::intern!(py, "stdout"), pyo3::intern!(py, "stderr")] {
            if let Ok(stream) = sys.getattr(name) {
                if !stream.is_none() {
                    let _ = stream.call_method0(pyo3::intern!(py, "flush"));
                }
            }
        }
    }
}

/// The task's exception, described (and pickled when possible) by `joblet._codec`.
fn failure(py: Python<'_>, e: PyErr) -> PyResult<TaskFailure> {
    let out = crate::codec(py)?
        .call_method1(pyo3::intern!(py, "task_failure"), (e.into_value(py),))?
        .cast_into::<PyTuple>()?;
    let exception: Option<Vec<u8>> = out.get_item(0)?.extract()?;
    Ok(TaskFailure {
        exception: exception.map(Buffer::from),
        type_name: out.get_item(1)?.extract()?,
        message: out.get_item(2)?.extract()?,
        traceback: out.get_item(3)?.extract()?,
    })
}

/// A failure of the codec itself (not of the task), reported as the task's failure.
fn internal_failure(py: Python<'_>, e: PyErr) -> TaskFailure {
    TaskFailure {
        exception: None,
        type_name: e
            .get_type(py)
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "Exception".into()),
        message: e.value(py).to_string(),
        traceback: format!("joblet could not run the task in the worker: {e}"),
    }
}
