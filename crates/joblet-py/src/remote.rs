//! The one function process workers run for Python: a task pickled by `joblet._codec`.

use joblet::Buffer;
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyTuple};
use serde::{Deserialize, Serialize};

/// A pickle stream and its out-of-band buffers (pickle protocol 5): the buffers travel as
/// raw blocks, so big arrays are copied at memory speed and never through the pickle stream.
#[derive(Serialize, Deserialize)]
pub(crate) struct Pickled {
    pub(crate) data: Buffer<u8>,
    pub(crate) buffers: Vec<Buffer<u8>>,
}

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
    /// Runs one Python task in a worker process: unpickles the function (cached by
    /// `joblet._codec` per distinct pickle) and the arguments, calls it, pickles the outcome.
    pub fn py_task(function: Buffer<u8>, call: Pickled) -> Result<Pickled, TaskFailure> {
        Python::attach(|py| run(py, &function, call)).unwrap_or_else(|e| {
            Python::attach(|py| Err(internal_failure(py, e)))
        })
    }
}

fn run(py: Python<'_>, function: &[u8], call: Pickled) -> PyResult<Result<Pickled, TaskFailure>> {
    let codec = crate::codec(py)?;
    // Writable copies: a task may write to the arrays it receives (its own copy, as with
    // joblib's copy-on-write memmaps), and numpy sees a read-only array over `bytes`.
    let buffers = PyList::empty(py);
    for b in &call.buffers {
        buffers.append(PyByteArray::new(py, b))?;
    }
    let out = codec.call_method1(
        pyo3::intern!(py, "run_task"),
        (
            PyBytes::new(py, function),
            PyBytes::new(py, &call.data),
            buffers,
        ),
    )?;
    let out = out.cast_into::<PyTuple>()?;
    if out.get_item(0)?.is_truthy()? {
        Ok(Ok(pickled(py, &out.get_item(1)?, &out.get_item(2)?)?))
    } else {
        let exception: Option<Vec<u8>> = out.get_item(1)?.extract()?;
        Ok(Err(TaskFailure {
            exception: exception.map(Buffer::from),
            type_name: out.get_item(2)?.extract()?,
            message: out.get_item(3)?.extract()?,
            traceback: out.get_item(4)?.extract()?,
        }))
    }
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

/// Copies a pickle stream and its buffers (anything with the buffer protocol) out of Python.
pub(crate) fn pickled(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    buffers: &Bound<'_, PyAny>,
) -> PyResult<Pickled> {
    let mut out = Vec::new();
    for b in buffers.try_iter()? {
        out.push(Buffer::from(bytes_of(py, &b?)?));
    }
    Ok(Pickled {
        data: Buffer::from(bytes_of(py, data)?),
        buffers: out,
    })
}

fn bytes_of(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    // A PickleBuffer shows its object's item type (float64, ...): its raw() view is bytes.
    if let Ok(raw) = obj.call_method0(pyo3::intern!(py, "raw")) {
        return PyBuffer::<u8>::get(&raw)?.to_vec(py);
    }
    PyBuffer::<u8>::get(obj)?.to_vec(py)
}
