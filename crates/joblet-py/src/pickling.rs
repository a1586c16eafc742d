//! Pickle protocol 5 from Rust, for both sides of the process backend: the C pickler first
//! (several times cheaper per call than cloudpickle, and no Python frame in between), with
//! out-of-band buffers lent in place on the way out and handed to Python without a copy on
//! the way in. Whatever the C pickler cannot do is for `joblet._codec` (cloudpickle).

use joblet::__private::{PrivateView, Spare, SPARE_MIN};
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
use std::sync::Arc;

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

/// An out-of-band buffer: a Python object's memory, lent until it is encoded into a frame;
/// a copy in a shared segment (the caller's copy of a writable argument), attached to the
/// frame as a descriptor; bytes this process owns (decoded from a frame, or copied from an
/// object without a contiguous view); or a received segment, mapped copy-on-write.
pub(crate) enum Block {
    Lent(Lent),
    Owned(Vec<u8>),
    /// A copy in a segment that goes back to the engine's pool when dropped (after the worker
    /// answered: the process backend keeps a batch's arguments until then).
    Copied(Spare),
    Mapped(Arc<PrivateView>),
}

impl Block {
    fn bytes(&self) -> &[u8] {
        match self {
            Block::Lent(l) => l.bytes(),
            Block::Owned(v) => v,
            Block::Copied(c) => c.bytes(),
            Block::Mapped(m) => view_bytes(m),
        }
    }

    /// The bytes as a Python object that numpy (or any buffer consumer) can use in place.
    pub(crate) fn into_python(self, py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        match self {
            Block::Owned(v) => Ok(Bound::new(py, ReceivedBuffer::owning(v))?.into_any()),
            Block::Mapped(m) => Ok(Bound::new(py, ReceivedBuffer::viewing(m))?.into_any()),
            Block::Copied(c) => Ok(PyByteArray::new(py, c.bytes()).into_any()),
            Block::Lent(l) => Ok(PyByteArray::new(py, l.bytes()).into_any()),
        }
    }
}

fn view_bytes(view: &PrivateView) -> &[u8] {
    if view.is_empty() {
        return &[];
    }
    // SAFETY: `len` mapped bytes for as long as the view lives.
    unsafe { std::slice::from_raw_parts(view.as_ptr(), view.len()) }
}

/// How a [`Block`] is encoded: its bytes, or the position of the segment holding them among
/// the descriptors attached to the frame (and how many bytes of it).
#[derive(Deserialize)]
enum BlockWire {
    Inline(serde_bytes::ByteBuf),
    Attached { index: u32, len: u64 },
}

/// Bytes encoded as one byte string (what `BlockWire::Inline` decodes).
struct RawBytes<'a>(&'a [u8]);

impl Serialize for RawBytes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.0)
    }
}

impl Serialize for Block {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStructVariant;
        if let Block::Copied(c) = self {
            // Only while the process backend encodes a frame, and while it has room.
            if let Some(index) = joblet::__private::attach_fd(c.fd()) {
                let mut v = serializer.serialize_struct_variant("BlockWire", 1, "Attached", 2)?;
                v.serialize_field("index", &index)?;
                v.serialize_field("len", &(c.len() as u64))?;
                return v.end();
            }
        }
        serializer.serialize_newtype_variant("BlockWire", 0, "Inline", &RawBytes(self.bytes()))
    }
}

impl<'de> Deserialize<'de> for Block {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match BlockWire::deserialize(deserializer)? {
            BlockWire::Inline(b) => Ok(Block::Owned(b.into_vec())),
            BlockWire::Attached { index, len } => {
                let fd = joblet::__private::take_fd(index).ok_or_else(|| {
                    D::Error::custom(format!("no segment attached at position {index}"))
                })?;
                let len = usize::try_from(len).map_err(D::Error::custom)?;
                let view = PrivateView::map(fd, len).map_err(|e| {
                    D::Error::custom(format!("cannot map a segment of {len} bytes: {e}"))
                })?;
                let view = Arc::new(view);
                BATCH_VIEWS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(view.clone());
                Ok(Block::Mapped(view))
            }
        }
    }
}

/// The segments received in the batch running in this worker.
static BATCH_VIEWS: std::sync::Mutex<Vec<Arc<PrivateView>>> = std::sync::Mutex::new(Vec::new());

/// The end of a batch in a worker: the caller will reuse the segments of its arguments, so
/// the views that tasks kept (an array stored in a global, a thread still using it) get
/// their own copy of every page now. Views nobody kept are just unmapped.
pub(crate) fn batch_done() {
    let views = std::mem::take(&mut *BATCH_VIEWS.lock().unwrap_or_else(|e| e.into_inner()));
    for view in views {
        if Arc::strong_count(&view) > 1 {
            view.privatize();
        }
    }
}

/// Before a task forks (`os.fork`, multiprocessing's fork start method): the child inherits
/// the views of the running batch, which privatizing in the parent would not reach, and
/// would see the caller's later data in the segments. They get their own pages first.
#[pyfunction]
pub(crate) fn privatize_before_fork() {
    for view in BATCH_VIEWS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        view.privatize();
    }
}

/// A Python buffer held (so its memory cannot move or be freed) until it has been copied
/// into a frame, possibly on an engine thread without the GIL: the bytes are read in place.
pub(crate) struct Lent(ManuallyDrop<PyBuffer<u8>>);

impl Lent {
    /// A contiguous byte view of `obj` (a `PickleBuffer`, whose `raw()` view is bytes
    /// whatever its item type), or None when it has none, or when it is writable and
    /// `writable` is false.
    ///
    /// A writable buffer may be written by Python code (the caller's input generator, which
    /// may refill one array for every task) between now and the time the frame is written,
    /// without the GIL: the caller copies those at once instead (under the GIL, in order with
    /// the generator). Only the worker lends writable ones: it encodes each result right
    /// after the task returns, in the same thread.
    fn of(py: Python<'_>, obj: &Bound<'_, PyAny>, writable: bool) -> Option<Lent> {
        let raw = obj.call_method0(pyo3::intern!(py, "raw")).ok()?;
        let buffer = PyBuffer::<u8>::get(&raw).ok()?;
        (buffer.is_c_contiguous() && (writable || buffer.readonly()))
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
    /// The address of the memory, which never moves: the owner is never touched again.
    address: usize,
    len: usize,
    _owner: Owner,
}

/// What keeps a [`ReceivedBuffer`]'s memory alive; never read, only dropped with it.
#[allow(dead_code)]
enum Owner {
    Bytes(Vec<u8>),
    View(Arc<PrivateView>),
}

impl ReceivedBuffer {
    pub(crate) fn owning(mut bytes: Vec<u8>) -> Self {
        ReceivedBuffer {
            address: bytes.as_mut_ptr() as usize,
            len: bytes.len(),
            _owner: Owner::Bytes(bytes),
        }
    }

    fn viewing(view: Arc<PrivateView>) -> Self {
        ReceivedBuffer {
            address: view.as_ptr() as usize,
            len: view.len(),
            _owner: Owner::View(view),
        }
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
        // SAFETY: `view` is Python's; the memory is `len` writable bytes owned by `slf`, which
        // the view keeps alive (FillInfo takes a reference to it).
        let rc = unsafe {
            pyo3::ffi::PyBuffer_FillInfo(
                view,
                slf.as_ptr(),
                this.address as *mut c_void,
                this.len as pyo3::ffi::Py_ssize_t,
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
        self.len
    }
}

/// `pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)`, with what one caller
/// reuses from one pickling to the next. One per thread of use: it owns its buffer list.
pub(crate) struct Pickler {
    /// Whether writable buffers are lent rather than copied at once (see [`Lent::of`]).
    lend_writable: bool,
    marshal_dumps: Py<PyAny>,
    dumps: Py<PyAny>,
    kwargs: Py<PyDict>,
    /// Receives the out-of-band buffers of one pickling; emptied after each.
    buffers: Py<PyList>,
}

impl Pickler {
    pub(crate) fn new(py: Python<'_>, lend_writable: bool) -> PyResult<Self> {
        let buffers = PyList::empty(py);
        let kwargs = PyDict::new(py);
        kwargs.set_item("protocol", 5)?;
        kwargs.set_item("buffer_callback", buffers.getattr("append")?)?;
        Ok(Pickler {
            lend_writable,
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
            Ok(data) if !names_main(&data) => {
                pickled(py, &data, buffers, self.lend_writable).map(Some)
            }
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

/// Strings and bytes at least this long are looked for twice (see [`PlainWalk::shared`]).
const SHARED_MIN: usize = 64;

/// Looks through an object for [`PlainWalk::plain`].
struct PlainWalk {
    budget: usize,
    /// The lists, dicts, tuples and long strings and bytes seen, by address.
    containers: Vec<usize>,
    /// Whether one of them was seen twice: marshal's format 2 would send it twice (a copy
    /// each time, two objects on arrival), so the referencing format (slower: it builds a
    /// table for every call) is needed.
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
            || obj.is_exact_instance_of::<PyBool>()
            || obj.is_exact_instance_of::<PyComplex>()
        {
            return true;
        }
        if let Ok(text) = obj.cast_exact::<PyString>() {
            // A long string twice would travel twice: sharing it is worth a table.
            if text.len().is_ok_and(|n| n >= SHARED_MIN) {
                self.saw(obj);
            }
            return true;
        }
        if let Ok(bytes) = obj.cast_exact::<PyBytes>() {
            if bytes.as_bytes().len() >= SHARED_MIN {
                self.saw(obj);
            }
            return true;
        }
        if let Ok(t) = obj.cast_exact::<PyTuple>() {
            // Pickle keeps a tuple met twice one object; so does marshal's referencing format.
            self.saw(obj);
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
    LOADS.import(py, "pickle", "loads")
}

fn marshal_loads(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    LOADS.import(py, "marshal", "loads")
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
    lend_writable: bool,
) -> PyResult<Pickled> {
    let mut out = Vec::new();
    for b in buffers.try_iter()? {
        let b = b?;
        out.push(match Lent::of(py, &b, lend_writable) {
            Some(lent) => Block::Lent(lent),
            None => copy_of(py, &b)?,
        });
    }
    Ok(Pickled {
        format: Format::Pickle,
        data: Buffer::from(bytes_of(py, data)?),
        buffers: out,
    })
}

/// A copy of an out-of-band buffer, made now (under the GIL): into a spare buffer when it is
/// big and contiguous.
fn copy_of(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Block> {
    if let Ok(raw) = obj.call_method0(pyo3::intern!(py, "raw")) {
        let buffer = PyBuffer::<u8>::get(&raw)?;
        let len = buffer.len_bytes();
        if len >= SPARE_MIN && buffer.is_c_contiguous() {
            // SAFETY: a contiguous buffer of `len` bytes, held (and the GIL with it) while
            // it is copied.
            let bytes = unsafe { std::slice::from_raw_parts(buffer.buf_ptr().cast::<u8>(), len) };
            if let Some(spare) = Spare::copy_of(bytes) {
                return Ok(Block::Copied(spare));
            }
            // No segment to be had: the copy travels in the frame.
            return Ok(Block::Owned(bytes.to_vec()));
        }
    }
    bytes_of(py, obj).map(Block::Owned)
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
