//! `joblet.hash`: content hashes of Python objects, joblib's rules on joblet's
//! [`ContentHasher`] (blake3).
//!
//! The walk writes a prefix-free stream (a tag, then parts that say their own length):
//!
//! - None, bools, ints, floats, complex numbers, str, bytes, bytearray: by value (exact types
//!   only; a subclass such as an `IntEnum` is its own kind, hashed as below).
//! - tuples and lists: their elements in order; dicts, sets and frozensets: their entries in
//!   any order (each entry hashed on its own, the digests sorted), as joblib sorts them.
//! - numpy arrays (not of objects): their class (np.memmap counts as np.ndarray with
//!   `coerce_mmap`), dtype, shape and strides, then their bytes as joblib takes them: the
//!   memory of a C- or Fortran-contiguous array read in place, a C-order copy of any other.
//!   From [`ContentHasher::BULK_MIN`] bytes on, the bytes are hashed without the GIL, on
//!   every core (by blocks: see `joblet::ContentHasher::write_bytes`).
//! - numpy dtypes: their pickle, made apart from anything else (equal dtypes, equal hashes,
//!   whether interned or not).
//! - anything else: the C pickler (protocol 5), whose out-of-band buffers are hashed in
//!   place, never copied, and whose `persistent_id` hands every container and array met
//!   inside back to this walk, so they follow the rules above at any depth (an object's
//!   attribute dict is order-independent, its arrays hashed raw). Functions and classes are
//!   thus hashed by reference (module and name), as pickle saves them.
//!
//! Equal content in another object hashes the same: a list met twice is hashed twice (no
//! memo, unlike pickle), and a container that holds itself is hashed as a reference to the
//! enclosing level (no endless walk).

use joblet::{ContentHasher, Digest};
use pyo3::exceptions::{PyBufferError, PyRecursionError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyComplex, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet,
    PyString, PyTuple, PyType,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The tags of the Python stream (its own namespace: Rust values are hashed apart).
mod tag {
    pub const NONE: u8 = 1;
    pub const FALSE: u8 = 2;
    pub const TRUE: u8 = 3;
    pub const INT: u8 = 4;
    pub const BIG_INT: u8 = 5;
    pub const FLOAT: u8 = 6;
    pub const COMPLEX: u8 = 7;
    pub const STR: u8 = 8;
    pub const BYTES: u8 = 9;
    pub const BYTEARRAY: u8 = 10;
    pub const TUPLE: u8 = 11;
    pub const LIST: u8 = 12;
    pub const DICT: u8 = 13;
    pub const SET: u8 = 14;
    pub const FROZENSET: u8 = 15;
    pub const NDARRAY: u8 = 16;
    pub const DTYPE: u8 = 17;
    pub const PICKLED: u8 = 18;
    /// A container met again inside itself: how many levels up.
    pub const CYCLE: u8 = 19;
    /// Closes a tuple or list, followed by its length.
    pub const END: u8 = 0;
}

/// Nesting deeper than this raises RecursionError (pickle's limit is Python's, about 1000):
/// every level holds a Rust frame and, for dicts and sets, a hasher.
const MAX_DEPTH: usize = 1000;

/// The 32-byte blake3 content digest of `obj`, as 64 hexadecimal digits.
#[pyfunction]
#[pyo3(signature = (obj, coerce_mmap = false))]
pub(crate) fn content_hash(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    coerce_mmap: bool,
) -> PyResult<String> {
    let mut walk = Walk::new(py, coerce_mmap, Vec::new());
    let mut hasher = ContentHasher::new();
    walk.value(&mut hasher, obj)?;
    Ok(hasher.finish().to_hex())
}

/// numpy's types, once numpy has been imported by someone (joblet never imports it).
struct Numpy {
    ndarray: Py<PyType>,
    memmap: Py<PyType>,
    dtype: Py<PyType>,
    uint8: Py<PyAny>,
}

fn numpy(py: Python<'_>) -> PyResult<Option<&'static Numpy>> {
    static NUMPY: PyOnceLock<Numpy> = PyOnceLock::new();
    if let Some(np) = NUMPY.get(py) {
        return Ok(Some(np));
    }
    let modules = py.import("sys")?.getattr("modules")?;
    if !modules.contains("numpy")? {
        return Ok(None);
    }
    NUMPY
        .get_or_try_init(py, || {
            let np = py.import("numpy")?;
            Ok::<_, PyErr>(Numpy {
                ndarray: np.getattr("ndarray")?.cast_into::<PyType>()?.unbind(),
                memmap: np.getattr("memmap")?.cast_into::<PyType>()?.unbind(),
                dtype: np.getattr("dtype")?.cast_into::<PyType>()?.unbind(),
                uint8: np.getattr("uint8")?.unbind(),
            })
        })
        .map(Some)
}

struct Walk<'py> {
    py: Python<'py>,
    coerce_mmap: bool,
    numpy: Option<&'static Numpy>,
    /// The containers (and pickled objects) being walked, outermost first, by address.
    path: Vec<usize>,
}

impl<'py> Walk<'py> {
    fn new(py: Python<'py>, coerce_mmap: bool, path: Vec<usize>) -> Self {
        Walk {
            py,
            coerce_mmap,
            numpy: None,
            path,
        }
    }

    fn value(&mut self, h: &mut ContentHasher, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        if obj.is_none() {
            h.write_tag(tag::NONE);
            return Ok(());
        }
        // Atoms first, exact types only (the most common keys and values).
        if let Ok(s) = obj.cast_exact::<PyString>() {
            h.write_tag(tag::STR);
            match s.to_str() {
                Ok(text) => h.write_bytes(text.as_bytes()),
                // Lone surrogates: their UTF-8 form with surrogatepass (the same bytes as
                // plain UTF-8 for every other string).
                Err(_) => {
                    let bytes = s.call_method1("encode", ("utf-8", "surrogatepass"))?;
                    h.write_bytes(bytes.cast::<PyBytes>()?.as_bytes());
                }
            }
            return Ok(());
        }
        if let Ok(i) = obj.cast_exact::<PyInt>() {
            match i.extract::<i64>() {
                Ok(v) => {
                    h.write_tag(tag::INT);
                    h.write_i64(v);
                }
                Err(_) => {
                    // Two's complement, little-endian, in as few bytes as hold the sign.
                    let bits: usize = i.call_method0("bit_length")?.extract()?;
                    let signed = PyDict::new(self.py);
                    signed.set_item("signed", true)?;
                    let bytes =
                        i.call_method("to_bytes", (bits / 8 + 1, "little"), Some(&signed))?;
                    h.write_tag(tag::BIG_INT);
                    h.write_bytes(bytes.cast::<PyBytes>()?.as_bytes());
                }
            }
            return Ok(());
        }
        if let Ok(f) = obj.cast_exact::<PyFloat>() {
            h.write_tag(tag::FLOAT);
            h.write_f64(f.value());
            return Ok(());
        }
        if let Ok(b) = obj.cast_exact::<PyBool>() {
            h.write_tag(if b.is_true() { tag::TRUE } else { tag::FALSE });
            return Ok(());
        }
        if let Ok(b) = obj.cast_exact::<PyBytes>() {
            h.write_tag(tag::BYTES);
            self.write_big(h, b.as_bytes());
            return Ok(());
        }
        if let Ok(c) = obj.cast_exact::<PyComplex>() {
            h.write_tag(tag::COMPLEX);
            h.write_f64(c.real());
            h.write_f64(c.imag());
            return Ok(());
        }
        if obj.is_exact_instance_of::<PyByteArray>() {
            h.write_tag(tag::BYTEARRAY);
            let view = RawView::get(obj)?;
            self.write_big(h, view.bytes());
            return Ok(());
        }
        // Containers: guarded against cycles and runaway depth.
        let address = obj.as_ptr() as usize;
        if let Some(level) = self.path.iter().rev().position(|&a| a == address) {
            h.write_tag(tag::CYCLE);
            h.write_u64(level as u64);
            return Ok(());
        }
        if self.path.len() >= MAX_DEPTH {
            return Err(PyRecursionError::new_err(
                "maximum nesting depth exceeded while hashing",
            ));
        }
        self.path.push(address);
        let out = self.container(h, obj);
        self.path.pop();
        out
    }

    fn container(&mut self, h: &mut ContentHasher, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        if let Ok(t) = obj.cast_exact::<PyTuple>() {
            h.write_tag(tag::TUPLE);
            for x in t.iter() {
                self.value(h, &x)?;
            }
            h.write_tag(tag::END);
            h.write_u64(t.len() as u64);
            return Ok(());
        }
        if let Ok(l) = obj.cast_exact::<PyList>() {
            h.write_tag(tag::LIST);
            let mut n = 0u64;
            for x in l.iter() {
                self.value(h, &x)?;
                n += 1;
            }
            h.write_tag(tag::END);
            h.write_u64(n);
            return Ok(());
        }
        if let Ok(d) = obj.cast_exact::<PyDict>() {
            let mut entry = Box::new(ContentHasher::new());
            let mut digests = Vec::with_capacity(d.len());
            for (k, v) in d.iter() {
                entry.reset();
                self.value(&mut entry, &k)?;
                self.value(&mut entry, &v)?;
                digests.push(entry.finish());
            }
            h.write_tag(tag::DICT);
            h.write_unordered(&mut digests);
            return Ok(());
        }
        if let Ok(s) = obj.cast_exact::<PySet>() {
            let digests = self.each(s.iter())?;
            unordered(h, tag::SET, digests);
            return Ok(());
        }
        if let Ok(s) = obj.cast_exact::<PyFrozenSet>() {
            let digests = self.each(s.iter())?;
            unordered(h, tag::FROZENSET, digests);
            return Ok(());
        }
        if self.numpy.is_none() {
            self.numpy = numpy(self.py)?;
        }
        if let Some(np) = self.numpy {
            if obj.is_instance(np.ndarray.bind(self.py))? && self.array(h, obj, np)? {
                return Ok(());
            }
            if obj.is_instance(np.dtype.bind(self.py))? {
                h.write_tag(tag::DTYPE);
                let pickled = dumps(self.py)?.call1((obj, 5))?;
                h.write_bytes(pickled.cast::<PyBytes>()?.as_bytes());
                return Ok(());
            }
        }
        self.pickled(h, obj)
    }

    fn each(&mut self, items: impl Iterator<Item = Bound<'py, PyAny>>) -> PyResult<Vec<Digest>> {
        let mut entry = Box::new(ContentHasher::new());
        let mut digests = Vec::new();
        for x in items {
            entry.reset();
            self.value(&mut entry, &x)?;
            digests.push(entry.finish());
        }
        Ok(digests)
    }

    /// An array as joblib keys it: class, dtype, shape, strides, bytes. False (nothing
    /// written) for arrays of objects, which are pickled (their elements walked).
    fn array(
        &mut self,
        h: &mut ContentHasher,
        obj: &Bound<'py, PyAny>,
        np: &Numpy,
    ) -> PyResult<bool> {
        let py = self.py;
        let dtype = obj.getattr(pyo3::intern!(py, "dtype"))?;
        if dtype.getattr(pyo3::intern!(py, "hasobject"))?.is_truthy()? {
            return Ok(false);
        }
        h.write_tag(tag::NDARRAY);
        let class = if self.coerce_mmap && obj.is_instance(np.memmap.bind(py))? {
            np.ndarray.bind(py).clone()
        } else {
            obj.get_type()
        };
        for name in [
            pyo3::intern!(py, "__module__"),
            pyo3::intern!(py, "__qualname__"),
        ] {
            let part = class.getattr(name)?;
            h.write_bytes(part.cast::<PyString>()?.to_str()?.as_bytes());
        }
        self.value(h, &dtype)?;
        for name in [pyo3::intern!(py, "shape"), pyo3::intern!(py, "strides")] {
            let dims = obj.getattr(name)?;
            let dims = dims.cast::<PyTuple>()?;
            h.write_u64(dims.len() as u64);
            for d in dims.iter() {
                h.write_i64(d.extract()?);
            }
        }
        // The memory of a contiguous array (C or Fortran order: joblib hashes the latter's
        // transpose, the same bytes), read in place; numpy refuses a buffer for some dtypes
        // (datetime64) and for other layouts, which are viewed as bytes or copied in C order
        // (joblib's `flatten`) first.
        let view = match RawView::get(obj) {
            Ok(view) => view,
            Err(_) => {
                let flags = obj.getattr(pyo3::intern!(py, "flags"))?;
                let c = flags
                    .getattr(pyo3::intern!(py, "c_contiguous"))?
                    .is_truthy()?;
                let f = flags
                    .getattr(pyo3::intern!(py, "f_contiguous"))?
                    .is_truthy()?;
                let ordered = if c && obj.getattr("ndim")?.extract::<usize>()? > 0 {
                    obj.clone()
                } else if f && !c {
                    obj.getattr("T")?
                } else {
                    obj.call_method0("flatten")?
                };
                RawView::get(&ordered.call_method1("view", (np.uint8.bind(py),))?)?
            }
        };
        self.write_big(h, view.bytes());
        Ok(true)
    }

    /// Anything else: the C pickler's stream, with containers and arrays inside it handed
    /// back to the walk (`PersistentId`) and out-of-band buffers hashed in place.
    fn pickled(&mut self, h: &mut ContentHasher, obj: &Bound<'py, PyAny>) -> PyResult<()> {
        let py = self.py;
        let sink = Bound::new(py, BufferSink(Mutex::new((ContentHasher::new(), 0))))?;
        let pid = Bound::new(
            py,
            PersistentId {
                coerce_mmap: self.coerce_mmap,
                path: self.path.clone(),
                root: obj.as_ptr() as usize,
                root_seen: AtomicBool::new(false),
            },
        )?;
        static BYTES_IO: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        static PICKLER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let stream = BYTES_IO.import(py, "io", "BytesIO")?.call0()?;
        let pickler = PICKLER
            .import(py, "pickle", "Pickler")?
            .call1((&stream, 5, &sink))?;
        pickler.setattr(pyo3::intern!(py, "persistent_id"), &pid)?;
        pickler.call_method1(pyo3::intern!(py, "dump"), (obj,))?;
        let data = stream.call_method0(pyo3::intern!(py, "getbuffer"))?;
        h.write_tag(tag::PICKLED);
        {
            let view = RawView::get(&data)?;
            self.write_big(h, view.bytes());
        }
        data.call_method0("release")?;
        let (mut buffers, count) =
            std::mem::take(&mut *sink.get().0.lock().unwrap_or_else(|e| e.into_inner()));
        h.write_u64(count);
        h.write_digest(&buffers.finish());
        Ok(())
    }

    /// Writes `bytes` with their length; big ones without the GIL, on every core.
    fn write_big(&self, h: &mut ContentHasher, bytes: &[u8]) {
        write_big(self.py, h, bytes);
    }
}

fn write_big(py: Python<'_>, h: &mut ContentHasher, bytes: &[u8]) {
    if bytes.len() >= ContentHasher::BULK_MIN {
        py.detach(|| h.write_bytes(bytes));
    } else {
        h.write_bytes(bytes);
    }
}

fn unordered(h: &mut ContentHasher, t: u8, mut digests: Vec<Digest>) {
    h.write_tag(t);
    h.write_unordered(&mut digests);
}

fn dumps(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static DUMPS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    DUMPS.import(py, "pickle", "dumps")
}

/// The pickler's `persistent_id` during a fallback: the containers, arrays and dtypes the
/// walk knows are replaced in the stream by their digest (so they are hashed by the walk's
/// rules: order-independent dicts and sets, raw array bytes, no memo); a container that is
/// being walked (a cycle) by its level.
#[pyclass(frozen)]
struct PersistentId {
    coerce_mmap: bool,
    path: Vec<usize>,
    /// The object being pickled: the pickler asks about it first, and must then go on.
    root: usize,
    root_seen: AtomicBool,
}

#[pymethods]
impl PersistentId {
    fn __call__<'py>(&self, obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let py = obj.py();
        let address = obj.as_ptr() as usize;
        if address == self.root && !self.root_seen.swap(true, Ordering::Relaxed) {
            return Ok(None);
        }
        let walked = obj.is_exact_instance_of::<PyTuple>()
            || obj.is_exact_instance_of::<PyList>()
            || obj.is_exact_instance_of::<PyDict>()
            || obj.is_exact_instance_of::<PySet>()
            || obj.is_exact_instance_of::<PyFrozenSet>()
            || self.path.contains(&address)
            || match numpy(py)? {
                Some(np) => {
                    (obj.is_instance(np.ndarray.bind(py))?
                        && !obj
                            .getattr(pyo3::intern!(py, "dtype"))?
                            .getattr(pyo3::intern!(py, "hasobject"))?
                            .is_truthy()?)
                        || obj.is_instance(np.dtype.bind(py))?
                }
                None => false,
            };
        if !walked {
            return Ok(None);
        }
        let mut walk = Walk::new(py, self.coerce_mmap, self.path.clone());
        let mut hasher = ContentHasher::new();
        walk.value(&mut hasher, obj)?;
        Ok(Some(PyBytes::new(py, hasher.finish().as_bytes())))
    }
}

/// The pickler's `buffer_callback`: hashes each out-of-band buffer in place (big ones
/// without the GIL) and counts them; returning None keeps them out of the stream.
#[pyclass(frozen)]
struct BufferSink(Mutex<(ContentHasher, u64)>);

#[pymethods]
impl BufferSink {
    fn __call__(&self, buffer: &Bound<'_, PyAny>) -> PyResult<()> {
        let view = RawView::get(buffer)
            .or_else(|_| RawView::get(&buffer.call_method0(pyo3::intern!(buffer.py(), "raw"))?))?;
        let mut sink = self.0.lock().unwrap_or_else(|e| e.into_inner());
        sink.1 += 1;
        write_big(buffer.py(), &mut sink.0, view.bytes());
        Ok(())
    }
}

/// A contiguous (C or Fortran order) buffer of a Python object, held until dropped (with
/// the GIL). Asked without a format, so that any item type gives its bytes.
struct RawView(Box<ffi::Py_buffer>);

impl RawView {
    fn get(obj: &Bound<'_, PyAny>) -> PyResult<Self> {
        // SAFETY: a zeroed Py_buffer is what PyObject_GetBuffer expects to fill; it is boxed
        // so that it never moves while the exporter holds it.
        let mut view: Box<ffi::Py_buffer> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: `obj` is a live object (we hold the GIL through its Bound), `view` is valid
        // for writing.
        let rc =
            unsafe { ffi::PyObject_GetBuffer(obj.as_ptr(), &mut *view, ffi::PyBUF_ANY_CONTIGUOUS) };
        if rc != 0 {
            return Err(PyErr::take(obj.py())
                .unwrap_or_else(|| PyBufferError::new_err("no contiguous buffer")));
        }
        Ok(RawView(view))
    }

    fn bytes(&self) -> &[u8] {
        let len = usize::try_from(self.0.len).unwrap_or(0);
        if len == 0 || self.0.buf.is_null() {
            return &[];
        }
        // SAFETY: a contiguous buffer (PyBUF_ANY_CONTIGUOUS) of `len` bytes at `buf`, which
        // its exporter keeps in place until the view is released (in `drop`).
        unsafe { std::slice::from_raw_parts(self.0.buf.cast::<u8>(), len) }
    }
}

impl Drop for RawView {
    fn drop(&mut self) {
        // SAFETY: obtained by PyObject_GetBuffer and released once, here. Views are only
        // made and dropped by code that holds the GIL (they are not Send).
        unsafe { ffi::PyBuffer_Release(&mut *self.0) };
    }
}
