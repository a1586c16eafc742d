//! `dump` / `load` on the engine's container (`joblet::persist`): the pickle stream and the
//! out-of-band buffers of pickle protocol 5 (arrays' bytes, never copied into the stream) go
//! in as sections; reading and writing run without the GIL.

use crate::pickling::ReceivedBuffer;
use joblet::persist::{Compression, Container, PersistError, Writer};
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyPermissionError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use std::path::PathBuf;

/// The engine's error as the Python exception a caller expects: `FileNotFoundError` and
/// friends for the file system, `ValueError` for a damaged or foreign file.
fn to_python(e: PersistError) -> PyErr {
    let message = e.to_string();
    match e {
        PersistError::Io { source, .. } => os_error(source.kind(), message),
        _ => PyValueError::new_err(message),
    }
}

fn os_error(kind: std::io::ErrorKind, message: String) -> PyErr {
    match kind {
        std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(message),
        std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(message),
        _ => PyOSError::new_err(message),
    }
}

/// A contiguous byte view of a pickle out-of-band buffer (a `PickleBuffer`, whose `raw()` is
/// bytes whatever its item type) or of any object with a contiguous buffer.
fn byte_view(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<PyBuffer<u8>> {
    let raw = obj.call_method0(pyo3::intern!(py, "raw"));
    let buffer = match raw {
        Ok(raw) => PyBuffer::<u8>::get(&raw)?,
        Err(_) => PyBuffer::<u8>::get(obj)?,
    };
    if !buffer.is_c_contiguous() {
        return Err(PyValueError::new_err("dump: a buffer is not contiguous"));
    }
    Ok(buffer)
}

/// Writes `objects` (the pickle stream) and `buffers` to a container at `filename`, every
/// section compressed with `compressor` at `level` (level 0: stored, which keeps arrays
/// mappable).
#[pyfunction]
pub(crate) fn dump_container(
    py: Python<'_>,
    filename: PathBuf,
    objects: Bound<'_, PyBytes>,
    buffers: Bound<'_, PyList>,
    compressor: &str,
    level: u32,
) -> PyResult<()> {
    let compression = Compression::from_name(compressor, level).map_err(PyValueError::new_err)?;
    let views = buffers
        .iter()
        .map(|b| byte_view(py, &b))
        .collect::<PyResult<Vec<_>>>()?;
    let slices: Vec<(usize, usize)> = views
        .iter()
        .map(|v| (v.buf_ptr() as usize, v.len_bytes()))
        .collect();
    let stream = objects.as_bytes();
    let written = py.detach(|| {
        let mut writer = Writer::create(&filename, stream, compression)?;
        for &(address, len) in &slices {
            let bytes = if len == 0 {
                &[][..]
            } else {
                // SAFETY: `len` contiguous bytes at `address`, which their exporters keep in
                // place while `views` holds the buffers (until this function returns).
                unsafe { std::slice::from_raw_parts(address as *const u8, len) }
            };
            writer.buffer(bytes, compression)?;
        }
        writer.finish()
    });
    drop(views);
    written.map_err(to_python)
}

/// Reads the container at `filename`: `(objects, buffers)`, each buffer an object made by
/// `alloc(nbytes)` (a writable buffer: numpy's allocator, so that arrays are numpy's own)
/// and filled in place, or a `ReceivedBuffer` without `alloc`; with `mappable`, an
/// `(offset, length)` pair instead for each buffer stored uncompressed (checked first only
/// with `verify`), to be memory-mapped by the caller.
#[pyfunction]
#[pyo3(signature = (filename, mappable=false, verify=true, alloc=None))]
pub(crate) fn load_container<'py>(
    py: Python<'py>,
    filename: PathBuf,
    mappable: bool,
    verify: bool,
    alloc: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyTuple>> {
    enum Plan {
        Read(u64),
        At(u64, u64),
    }
    let opened = py.detach(|| -> Result<_, PersistError> {
        let container = Container::open(&filename)?;
        let objects = container.objects()?;
        let mut plans = Vec::with_capacity(container.buffer_count());
        for k in 0..container.buffer_count() {
            plans.push(match container.buffer_location(k)? {
                Some((offset, len)) if mappable => {
                    if verify {
                        container.verify_buffer(k)?;
                    }
                    Plan::At(offset, len)
                }
                _ => Plan::Read(container.buffer_len(k)?),
            });
        }
        Ok((container, objects, plans))
    });
    let (container, objects, plans) = opened.map_err(to_python)?;
    let list = PyList::empty(py);
    // The destinations, held (and so kept in place) until they are filled.
    let mut targets: Vec<(usize, PyBuffer<u8>)> = Vec::new();
    let mut owned: Vec<(usize, Vec<u8>)> = Vec::new();
    for (k, plan) in plans.iter().enumerate() {
        match *plan {
            Plan::At(offset, len) => list.append((offset, len))?,
            Plan::Read(len) => {
                let len = usize::try_from(len)
                    .map_err(|_| PyValueError::new_err(format!("buffer {k} is too big")))?;
                match &alloc {
                    Some(alloc) => {
                        let target = alloc.call1((len,))?;
                        let view = PyBuffer::<u8>::get(&target)?;
                        if view.readonly() || !view.is_c_contiguous() || view.len_bytes() != len {
                            return Err(PyValueError::new_err(format!(
                                "alloc({len}) must give a writable, contiguous buffer of {len} \
                                 bytes"
                            )));
                        }
                        list.append(&target)?;
                        targets.push((k, view));
                    }
                    None => {
                        list.append(py.None())?;
                        owned.push((k, Vec::new()));
                    }
                }
            }
        }
    }
    let spans: Vec<(usize, usize, usize)> = targets
        .iter()
        .map(|(k, v)| (*k, v.buf_ptr() as usize, v.len_bytes()))
        .collect();
    let filled = py.detach(|| -> Result<(), PersistError> {
        for &(k, address, len) in &spans {
            let out = if len == 0 {
                &mut [][..]
            } else {
                // SAFETY: `len` writable, contiguous bytes at `address` (checked above),
                // kept in place while `targets` holds their buffers; nothing else writes
                // them meanwhile (they were just made by `alloc`).
                unsafe { std::slice::from_raw_parts_mut(address as *mut u8, len) }
            };
            container.read_buffer_into(k, out)?;
        }
        for (k, bytes) in owned.iter_mut() {
            *bytes = container.buffer(*k)?;
        }
        Ok(())
    });
    drop(targets);
    filled.map_err(to_python)?;
    for (k, bytes) in owned {
        list.set_item(k, Bound::new(py, ReceivedBuffer::owning(bytes))?)?;
    }
    PyTuple::new(py, [PyBytes::new(py, &objects).into_any(), list.into_any()])
}

/// Marks the container's uncompressed buffers as no longer checked (before they are mapped
/// writable in place: the caller's writes would read as damage to every later load).
#[pyfunction]
pub(crate) fn unchecked_for_writing(py: Python<'_>, filename: PathBuf) -> PyResult<()> {
    py.detach(|| Container::unchecked_for_writing(&filename))
        .map_err(to_python)
}

/// `data` decompressed by `compressor` (one of `joblet.persist`'s names), however long: for
/// files written by `joblib.dump`, compressed whole.
#[pyfunction]
pub(crate) fn decompress<'py>(
    py: Python<'py>,
    compressor: &str,
    data: Bound<'py, PyBytes>,
) -> PyResult<Bound<'py, PyBytes>> {
    let codec = Compression::from_name(compressor, 1).map_err(PyValueError::new_err)?;
    let bytes = data.as_bytes();
    let out = py
        .detach(|| codec.decompress_all(bytes))
        .map_err(|e| PyValueError::new_err(format!("cannot decompress {compressor} data: {e}")))?;
    Ok(PyBytes::new(py, &out))
}

/// Whether the file at `filename` starts like a joblet container.
#[pyfunction]
pub(crate) fn is_container(filename: PathBuf) -> PyResult<bool> {
    use std::io::Read;
    let failed = |e: std::io::Error| os_error(e.kind(), format!("{}: {e}", filename.display()));
    let mut head = [0u8; 8];
    let mut file = std::fs::File::open(&filename).map_err(failed)?;
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..]).map_err(failed)? {
            0 => break,
            got => n += got,
        }
    }
    Ok(n == head.len() && head == joblet::persist::MAGIC)
}
