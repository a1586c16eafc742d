//! The one function process workers run for Python: a task pickled by `joblet._codec`.

use joblet::Buffer;
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::mem::ManuallyDrop;
use std::os::raw::{c_int, c_void};

/// A pickle stream and its out-of-band buffers (pickle protocol 5): the buffers travel as
/// raw blocks, so big arrays are copied at memory speed and never through the pickle stream.
#[derive(Serialize, Deserialize)]
pub(crate) struct Pickled {
    pub(crate) data: Buffer<u8>,
    pub(crate) buffers: Vec<Block>,
}

/// An out-of-band buffer: a Python object's memory, lent until it is encoded into a frame
/// (the one copy on the sending side), or bytes this process owns (received, or copied
/// from an object without a contiguous view).
pub(crate) enum Block {
    Lent(Lent),
    Owned(Vec<u8>),
}

impl Block {
    fn bytes(&self) -> &[u8] {
        match self {
            Block::Lent(l) => l.bytes(),
            Block::Owned(v) => v,
        }
    }

    /// The bytes as a Python object that numpy (or any buffer consumer) can use in place.
    pub(crate) fn into_python(self, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        match self {
            Block::Owned(v) => Ok(Bound::new(py, ReceivedBuffer::new(v))?.into_any()),
            Block::Lent(l) => Ok(PyBytes::new(py, l.bytes()).into_any()),
        }
    }
}

impl Serialize for Block {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.bytes())
    }
}

impl<'de> Deserialize<'de> for Block {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Buffer::<u8>::deserialize(deserializer).map(|b| Block::Owned(b.into_inner()))
    }
}

/// A Python buffer held (so its memory cannot move or be freed) until it has been copied
/// into a frame, possibly on an engine thread without the GIL: the bytes are read in place.
pub(crate) struct Lent(ManuallyDrop<PyBuffer<u8>>);

impl Lent {
    /// A contiguous byte view of `obj` (a `PickleBuffer`, whose `raw()` view is bytes
    /// whatever its item type), or None when it has none.
    fn of(py: Python<'_>, obj: &Bound<'_, PyAny>) -> Option<Lent> {
        let raw = obj.call_method0(pyo3::intern!(py, "raw")).ok()?;
        let buffer = PyBuffer::<u8>::get(&raw).ok()?;
        buffer
            .is_c_contiguous()
            .then(|| Lent(ManuallyDrop::new(buffer)))
    }

    fn bytes(&self) -> &[u8] {
        let len = self.0.len_bytes();
        if len == 0 {
            return &[];
        }
        // SAFETY: a contiguous buffer of `len` bytes (checked in `of`), which its exporter
        // keeps in place until the buffer is released (in `drop`).
        unsafe { std::slice::from_raw_parts(self.0.buf_ptr().cast::<u8>(), len) }
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        // SAFETY: taken once, here.
        let mut buffer = Some(unsafe { ManuallyDrop::take(&mut self.0) });
        // Released with the GIL; after the interpreter has shut down there is nothing left
        // to release it to, so it is forgotten.
        if crate::with_gil(|_| drop(buffer.take())).is_none() {
            std::mem::forget(buffer);
        }
    }
}

/// Bytes received from another process, lent to Python as a writable buffer without a copy:
/// the arrays pickle rebuilds over it are writable and belong to their receiver alone.
#[pyclass(module = "joblet._core", frozen)]
pub(crate) struct ReceivedBuffer {
    /// The address of `bytes`' memory, which never moves: the vector is never touched again.
    address: usize,
    bytes: Vec<u8>,
}

impl ReceivedBuffer {
    fn new(mut bytes: Vec<u8>) -> Self {
        let address = bytes.as_mut_ptr() as usize;
        ReceivedBuffer { address, bytes }
    }
}

#[pymethods]
impl ReceivedBuffer {
    /// The buffer protocol: one contiguous, writable run of bytes.
    ///
    /// # Safety
    /// Called by Python with a valid `view` to fill.
    unsafe fn __getbuffer__(
        slf: Bound<'_, Self>,
        view: *mut pyo3::ffi::Py_buffer,
        flags: c_int,
    ) -> PyResult<()> {
        let this = slf.get();
        // SAFETY: `view` is Python's; the memory is `bytes.len()` bytes owned by `slf`, which
        // the view keeps alive (FillInfo takes a reference to it).
        let rc = unsafe {
            pyo3::ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                this.address as *mut c_void,
                this.bytes.len() as pyo3::ffi::Py_ssize_t,
                0,
                flags,
            )
        };
        if rc != 0 {
            return Err(PyErr::fetch(slf.py()));
        }
        Ok(())
    }

    fn __len__(&self) -> usize {
        self.bytes.len()
    }
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
    // Writable and the task's own: a task may write to the arrays it receives (as with
    // joblib's copy-on-write memmaps), which were copied once, out of the frame.
    let buffers = PyList::empty(py);
    for b in call.buffers {
        buffers.append(b.into_python(py)?)?;
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

/// A pickle stream (copied: it is small) and its out-of-band buffers (lent: they are copied
/// once, straight into the frame).
pub(crate) fn pickled(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    buffers: &Bound<'_, PyAny>,
) -> PyResult<Pickled> {
    let mut out = Vec::new();
    for b in buffers.try_iter()? {
        let b = b?;
        out.push(match Lent::of(py, &b) {
            Some(lent) => Block::Lent(lent),
            None => Block::Owned(bytes_of(py, &b)?),
        });
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
