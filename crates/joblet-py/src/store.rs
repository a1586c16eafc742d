//! `joblet._core.Store`: the engine's cache store (`joblet::Store`) for `joblet.Memory`.
//! Paths are `str`; errors are `OSError` and its kinds (`ValueError` for a bad name), each
//! message naming the path.

use joblet::{Commit, Store as Inner, StoreError};
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyPermissionError, PyValueError};
use pyo3::prelude::*;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

fn to_python(e: StoreError) -> PyErr {
    let message = e.to_string();
    match e.io_error().kind() {
        std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(message),
        std::io::ErrorKind::PermissionDenied => PyPermissionError::new_err(message),
        std::io::ErrorKind::InvalidInput => PyValueError::new_err(message),
        _ => PyOSError::new_err(message),
    }
}

/// One entry as Python sees it: `(function, hash, path, size, last_access)`, the time in
/// seconds since the epoch.
type EntryTuple = (String, String, PathBuf, u64, f64);

fn entry_tuple(e: joblet::Entry) -> EntryTuple {
    let t = e
        .last_access
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    (e.function, e.hash, e.path, e.size, t)
}

/// A store of cached calls under one directory.
#[pyclass(module = "joblet._core", frozen)]
pub(crate) struct Store {
    inner: Inner,
}

#[pymethods]
impl Store {
    #[new]
    fn new(location: PathBuf) -> PyResult<Store> {
        Ok(Store {
            inner: Inner::open(location).map_err(to_python)?,
        })
    }

    #[getter]
    fn location(&self) -> PathBuf {
        self.inner.root().to_path_buf()
    }

    #[staticmethod]
    fn function_dir_name(module: &str, qualname: &str) -> String {
        Inner::function_dir_name(module, qualname)
    }

    fn entry_path(&self, function: &str, hash: &str) -> PyResult<PathBuf> {
        self.inner.entry_path(function, hash).map_err(to_python)
    }

    fn contains(&self, function: &str, hash: &str) -> PyResult<bool> {
        self.inner.contains(function, hash).map_err(to_python)
    }

    fn begin(&self, function: &str, hash: &str) -> PyResult<PathBuf> {
        self.inner.begin(function, hash).map_err(to_python)
    }

    /// True if ours became the entry, False if another writer's was kept.
    fn commit(&self, function: &str, hash: &str, tmp: PathBuf) -> PyResult<bool> {
        let done = self.inner.commit(function, hash, &tmp).map_err(to_python)?;
        Ok(done == Commit::Committed)
    }

    fn abort(&self, tmp: PathBuf) -> PyResult<()> {
        self.inner.abort(&tmp).map_err(to_python)
    }

    /// The entry's directory (a `str`: building a `pathlib.Path` would cost more than the
    /// lookup), its access recorded now; None if there is no such entry.
    fn hit(&self, function: &str, hash: &str) -> PyResult<Option<std::ffi::OsString>> {
        let entry = self.inner.hit(function, hash).map_err(to_python)?;
        Ok(entry.map(PathBuf::into_os_string))
    }

    fn touch(&self, function: &str, hash: &str) -> PyResult<()> {
        self.inner.touch(function, hash).map_err(to_python)
    }

    fn remove(&self, function: &str, hash: &str) -> PyResult<bool> {
        self.inner.remove(function, hash).map_err(to_python)
    }

    #[pyo3(signature = (function=None))]
    fn entries(&self, py: Python<'_>, function: Option<&str>) -> PyResult<Vec<EntryTuple>> {
        let entries = py
            .detach(|| self.inner.entries(function))
            .map_err(to_python)?;
        Ok(entries.into_iter().map(entry_tuple).collect())
    }

    #[pyo3(signature = (bytes_limit=None, items_limit=None, age_limit=None))]
    fn reduce_size(
        &self,
        py: Python<'_>,
        bytes_limit: Option<u64>,
        items_limit: Option<usize>,
        age_limit: Option<f64>,
    ) -> PyResult<Vec<EntryTuple>> {
        let age = age_limit
            .map(|s| {
                Duration::try_from_secs_f64(s).map_err(|_| {
                    PyValueError::new_err(format!(
                        "age_limit must be a non-negative number of seconds, got {s}"
                    ))
                })
            })
            .transpose()?;
        let removed = py
            .detach(|| self.inner.reduce_size(bytes_limit, items_limit, age))
            .map_err(to_python)?;
        Ok(removed.into_iter().map(entry_tuple).collect())
    }

    #[pyo3(signature = (function=None))]
    fn clear(&self, py: Python<'_>, function: Option<&str>) -> PyResult<()> {
        py.detach(|| self.inner.clear(function)).map_err(to_python)
    }

    fn func_code(&self, function: &str) -> PyResult<Option<String>> {
        self.inner.func_code(function).map_err(to_python)
    }

    fn set_func_code(&self, function: &str, code: &str) -> PyResult<()> {
        self.inner.set_func_code(function, code).map_err(to_python)
    }
}
