//! `delayed(f)`: the callable that captures a call as joblib's `(f, args, kwargs)` triple.
//! In Rust because it runs once per task in the caller's own loop: as a Python class it cost
//! twice as much as the rest of building a task (a Python `__init__` and `__call__` frame).

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};

/// The base of what `delayed(function)` returns: calling it returns `(function, args,
/// kwargs)`. It stands for the function: attributes (`__name__`, `__qualname__`, ...) are the
/// function's; `joblet._parallel` subclasses it for `__doc__`.
#[pyclass(module = "joblet._core", name = "Delayed", frozen, subclass)]
pub(crate) struct Delayed {
    function: Py<PyAny>,
}

#[pymethods]
impl Delayed {
    #[new]
    fn new(function: Py<PyAny>) -> Self {
        Delayed { function }
    }

    #[pyo3(signature = (*args, **kwargs))]
    fn __call__<'py>(
        &self,
        py: Python<'py>,
        args: Bound<'py, PyTuple>,
        kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let kwargs = match kwargs {
            Some(k) => k,
            None => PyDict::new(py),
        };
        PyTuple::new(
            py,
            [
                self.function.bind(py).clone(),
                args.into_any(),
                kwargs.into_any(),
            ],
        )
    }

    #[getter]
    fn __wrapped__(&self, py: Python<'_>) -> Py<PyAny> {
        self.function.clone_ref(py)
    }

    fn __getattr__<'py>(
        &self,
        py: Python<'py>,
        name: &Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyAny>> {
        self.function.bind(py).getattr(name)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!("delayed({})", self.function.bind(py).repr()?))
    }

    /// Pickled as its class called with the function.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        PyTuple::new(
            py,
            [
                slf.get_type().into_any(),
                PyTuple::new(py, [slf.get().function.bind(py).clone()])?.into_any(),
            ],
        )
    }
}
