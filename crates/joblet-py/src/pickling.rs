//! Pickle protocol 5 from Rust, for both sides of the process backend: the C pickler first
//! (several times cheaper per call than cloudpickle, and no Python frame in between), with
//! out-of-band buffers lent in place on the way out and handed to Python without a copy on
//! the way in. Whatever the C pickler cannot do is for `joblet._codec` (cloudpickle).

use joblet::Buffer;
use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyComplex, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::mem::ManuallyDrop;
use std::os::raw::{c_int, c_void};

/// An object encoded for the other process: a `marshal` stream for plain data, else a pickle
/// stream and its out-of-band buffers (pickle protocol 5), which travel as raw blocks, so big
/// arrays are copied at memory speed and never through the pickle stream.
#[derive(Serialize, Deserialize)]
pub(crate) struct Pickled {
    pub(crate) format: Format,
    pub(crate) data: Buffer<u8>,
    pub(crate) buffers: Vec<Block>,
}

/// How `Pickled::data` is encoded.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Pickle,
    /// `marshal`: two to three times cheaper than pickle for small plain data (the arguments
    /// and results of most small tasks). Both processes run the same interpreter, so its
    /// version-specific format is safe here.
    Marshal,
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
            Block::Lent(l) => Ok(PyByteArray::new(py, l.bytes()).into_any()),
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

/// `pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)`, with what one caller
/// reuses from one pickling to the next. One per thread of use: it owns its buffer list.
pub(crate) struct Pickler {
    marshal_dumps: Py<PyAny>,
    dumps: Py<PyAny>,
    kwargs: Py<PyDict>,
    /// Receives the out-of-band buffers of one pickling; emptied after each.
    buffers: Py<PyList>,
}

impl Pickler {
    pub(crate) fn new(py: Python<'_>) -> PyResult<Self> {
        let buffers = PyList::empty(py);
        let kwargs = PyDict::new(py);
        kwargs.set_item("protocol", 5)?;
        kwargs.set_item("buffer_callback", buffers.getattr("append")?)?;
        Ok(Pickler {
            marshal_dumps: py.import("marshal")?.getattr("dumps")?.unbind(),
            dumps: py.import("pickle")?.getattr("dumps")?.unbind(),
            kwargs: kwargs.unbind(),
            buffers: buffers.unbind(),
        })
    }

    /// `obj` pickled by the C pickler, or None when it cannot be (a lambda, a closure) or
    /// its stream names `__main__`, which the other process cannot import: cloudpickle's
    /// turn then, which sends such objects by value.
    pub(crate) fn dump(&self, py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Option<Pickled>> {
        let mut walk = PlainWalk::new();
        if walk.plain(obj, PLAIN_DEPTH) {
            let version = if walk.shared { 4 } else { 2 };
            if let Ok(data) = self.marshal_dumps.bind(py).call1((obj, version)) {
                return Ok(Some(Pickled {
                    format: Format::Marshal,
                    data: Buffer::from(bytes_of(py, &data)?),
                    buffers: Vec::new(),
                }));
            }
        }
        let buffers = self.buffers.bind(py);
        let out = match self.dumps.bind(py).call((obj,), Some(self.kwargs.bind(py))) {
            Ok(data) if !names_main(&data) => pickled(py, &data, buffers).map(Some),
            _ => Ok(None),
        };
        if !buffers.is_empty() {
            buffers.del_slice(0, buffers.len())?;
        }
        out
    }
}

/// How many objects and how deep [`PlainWalk`] looks before it gives the object to pickle:
/// walking a big container costs more than marshal saves over pickle.
const PLAIN_BUDGET: usize = 256;
const PLAIN_DEPTH: usize = 8;

/// Looks through an object for [`PlainWalk::plain`].
struct PlainWalk {
    budget: usize,
    /// The lists and dicts seen, by address.
    containers: Vec<usize>,
    /// Whether a list or dict was seen twice: marshal's format 2 would send two copies, so
    /// the referencing format (slower: it builds a table for every call) is needed.
    shared: bool,
}

impl PlainWalk {
    fn new() -> Self {
        PlainWalk {
            budget: PLAIN_BUDGET,
            containers: Vec::new(),
            shared: false,
        }
    }

    /// Whether `obj` is plain data that `marshal` gives back exactly: None, bools, ints,
    /// floats, complex numbers, strings and bytes, in tuples, lists and dicts. Exact types
    /// only: marshal would turn an int subclass (an `IntEnum`) into a plain int, which
    /// pickle would not.
    fn plain(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> bool {
        if self.budget == 0 || depth == 0 {
            return false;
        }
        self.budget -= 1;
        if obj.is_none()
            || obj.is_exact_instance_of::<PyInt>()
            || obj.is_exact_instance_of::<PyFloat>()
            || obj.is_exact_instance_of::<PyString>()
            || obj.is_exact_instance_of::<PyBool>()
            || obj.is_exact_instance_of::<PyBytes>()
            || obj.is_exact_instance_of::<PyComplex>()
        {
            return true;
        }
        if let Ok(t) = obj.cast_exact::<PyTuple>() {
            return t.iter().all(|x| self.plain(&x, depth - 1));
        }
        if let Ok(l) = obj.cast_exact::<PyList>() {
            self.saw(obj);
            return l.iter().all(|x| self.plain(&x, depth - 1));
        }
        if let Ok(d) = obj.cast_exact::<PyDict>() {
            self.saw(obj);
            return d
                .iter()
                .all(|(k, v)| self.plain(&k, depth - 1) && self.plain(&v, depth - 1));
        }
        false
    }

    fn saw(&mut self, container: &Bound<'_, PyAny>) {
        let address = container.as_ptr() as usize;
        if self.containers.contains(&address) {
            self.shared = true;
        } else {
            self.containers.push(address);
        }
    }
}

/// Whether a pickle stream refers to the module `__main__`.
fn names_main(data: &Bound<'_, PyAny>) -> bool {
    data.cast::<PyBytes>()
        .map(|b| b.as_bytes().windows(8).any(|w| w == b"__main__"))
        .unwrap_or(true)
}

fn pickle_loads(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    LOADS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("pickle")?.getattr("loads")?.unbind())
        })
        .map(|f| f.bind(py))
}

fn marshal_loads(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    LOADS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("marshal")?.getattr("loads")?.unbind())
        })
        .map(|f| f.bind(py))
}

/// `pickle.loads` of a stream without out-of-band buffers.
pub(crate) fn loads<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    pickle_loads(py)?.call1((PyBytes::new(py, data),))
}

/// The object back from a stream and its buffers, which Python uses in place (arrays over
/// them are writable and belong to this side alone).
pub(crate) fn load(py: Python<'_>, p: Pickled) -> PyResult<Bound<'_, PyAny>> {
    if p.format == Format::Marshal {
        return marshal_loads(py)?.call1((PyBytes::new(py, &p.data),));
    }
    if p.buffers.is_empty() {
        return loads(py, &p.data);
    }
    let buffers = PyList::empty(py);
    for b in p.buffers {
        buffers.append(b.into_python(py)?)?;
    }
    let kwargs = PyDict::new(py);
    kwargs.set_item(pyo3::intern!(py, "buffers"), buffers)?;
    pickle_loads(py)?.call((PyBytes::new(py, &p.data),), Some(&kwargs))
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
        format: Format::Pickle,
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
