//! One `Parallel` call from Python: the input pulled from a Python iterator, the tasks run on
//! the engine, the results handed back as a list or as a Python iterator.

use crate::errors;
use crate::pickling::{self, Pickled, Pickler};
use crate::remote::{self, Function, TaskFailure};
use joblet::{Backend, Buffer, Error, Ordered, Parallel, PreDispatch, Progress, Unordered};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyIterator, PyList, PyTuple};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The first error raised by the input iterator (or by pickling one of its tasks): the call
/// stops pulling input there and raises it once the tasks before it are accounted for.
type InputFailure = Arc<Mutex<Option<PyErr>>>;

/// A task as pulled from the input: the function, its positional and keyword arguments.
struct Triple {
    function: Py<PyAny>,
    args: Py<PyTuple>,
    kwargs: Option<Py<PyDict>>,
}

/// Pulls `(function, args, kwargs)` triples from the Python iterator, taking the GIL for each.
struct Pull {
    iter: Py<PyIterator>,
    failure: InputFailure,
    index: usize,
}

impl Pull {
    /// The next triple and its index, or `None` at the end of the input or after a failure
    /// (which is then stored in `failure`).
    fn next_with<T>(
        &mut self,
        make: impl FnOnce(Python<'_>, usize, Triple) -> PyResult<T>,
    ) -> Option<T> {
        crate::with_gil(|py| {
            if self
                .failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
            {
                return None;
            }
            let index = self.index;
            let made = match self.iter.bind(py).clone().next()? {
                Ok(item) => triple(index, &item).and_then(|t| make(py, index, t)),
                Err(e) => Err(e),
            };
            self.index += 1;
            match made {
                Ok(t) => Some(t),
                Err(e) => {
                    *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    None
                }
            }
        })
        .unwrap_or_else(|| {
            // The interpreter is exiting: the call fails rather than end short and quietly.
            *self.failure.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(pyo3::exceptions::PyRuntimeError::new_err(
                    "the Python interpreter is exiting: the rest of the input was not read",
                ));
            None
        })
    }
}

/// Checks that an input item is a `delayed` triple, naming the task if not.
fn triple(index: usize, item: &Bound<'_, PyAny>) -> PyResult<Triple> {
    let bad = || {
        PyTypeError::new_err(format!(
            "task {index}: Parallel expects (function, args, kwargs) triples, as made by \
             delayed(function)(*args, **kwargs); got {}",
            item.get_type()
                .name()
                .map_or_else(|_| "?".to_string(), |n| n.to_string())
        ))
    };
    let t = item.cast::<PyTuple>().map_err(|_| bad())?;
    if t.len() != 3 {
        return Err(bad());
    }
    let function = t.get_item(0)?;
    if !function.is_callable() {
        return Err(PyTypeError::new_err(format!(
            "task {index}: {} is not callable",
            function.repr()?
        )));
    }
    let args = t.get_item(1)?;
    let args = match args.cast::<PyTuple>() {
        Ok(a) => a.clone(),
        Err(_) => PyTuple::new(item.py(), args.try_iter()?.collect::<PyResult<Vec<_>>>()?)?,
    };
    let kwargs = t.get_item(2)?;
    let kwargs = if kwargs.is_none() {
        None
    } else {
        Some(kwargs.cast_into::<PyDict>().map_err(|_| bad())?.unbind())
    };
    Ok(Triple {
        function: function.unbind(),
        args: args.unbind(),
        kwargs,
    })
}

/// Runs the triple in this thread, with the GIL.
fn call_here(t: Triple) -> Result<Py<PyAny>, PyErr> {
    crate::with_gil(|py| {
        t.function
            .bind(py)
            .call(t.args.bind(py), t.kwargs.as_ref().map(|k| k.bind(py)))
            .map(Bound::unbind)
    })
    .unwrap_or_else(|| {
        Err(pyo3::exceptions::PyRuntimeError::new_err(
            "the Python interpreter is exiting: task not run",
        ))
    })
}

/// Ids of calls and of their functions, unique in this process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// On a slot thread of the process backend: the call, and the ids of the functions sent
    /// to the slot's worker in that call, last sent last (see `TaskPickler::function`).
    static SENT: std::cell::RefCell<(u64, std::collections::VecDeque<u64>)> =
        const { std::cell::RefCell::new((0, std::collections::VecDeque::new())) };
}

/// Pickles tasks for worker processes, with what one call can reuse from task to task.
struct TaskPickler {
    pickler: Pickler,
    /// This call, for [`SENT`].
    call: u64,
    /// The last few functions of this call pickled, by identity, with their ids: a call
    /// usually has one.
    functions: Vec<(Py<PyAny>, u64, Buffer<u8>)>,
    /// `numpy.memmap`, when numpy is loaded: such arguments travel by reference to their file.
    memmap: Option<Py<PyAny>>,
}

impl TaskPickler {
    fn new(py: Python<'_>) -> PyResult<Self> {
        Ok(TaskPickler {
            pickler: Pickler::new(py, false)?,
            call: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            functions: Vec::new(),
            memmap: py
                .import("sys")?
                .getattr("modules")?
                .get_item("numpy")
                .ok()
                .and_then(|np| np.getattr("memmap").ok())
                .map(Bound::unbind),
        })
    }

    /// The arguments with each `numpy.memmap` among them (positional, or a keyword's value)
    /// replaced by a reference to its file, when it has one; unchanged (no copy) otherwise.
    fn by_reference<'py>(
        &self,
        py: Python<'py>,
        args: Bound<'py, PyTuple>,
        kwargs: Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyAny>)> {
        let Some(memmap) = &self.memmap else {
            return Ok((args, kwargs));
        };
        let memmap = memmap.bind(py);
        let kwargs_dict = kwargs.cast::<PyDict>()?;
        let is_memmap = |x: &Bound<'py, PyAny>| x.is_instance(memmap).unwrap_or(false);
        if !args.iter().any(|a| is_memmap(&a))
            && !kwargs_dict.values().iter().any(|v| is_memmap(&v))
        {
            return Ok((args, kwargs));
        }
        let codec = crate::codec(py)?;
        let swap = |x: Bound<'py, PyAny>| -> PyResult<Bound<'py, PyAny>> {
            if !is_memmap(&x) {
                return Ok(x);
            }
            let reference = codec.call_method1(pyo3::intern!(py, "memmap_reference"), (&x,))?;
            Ok(if reference.is_none() { x } else { reference })
        };
        let args = PyTuple::new(py, args.iter().map(&swap).collect::<PyResult<Vec<_>>>()?)?;
        let swapped = PyDict::new(py);
        for (k, v) in kwargs_dict.iter() {
            swapped.set_item(k, swap(v)?)?;
        }
        Ok((args, swapped.into_any()))
    }

    /// The task's function for the wire: pickled the first time this call sends it to the
    /// worker that will run this batch, else known by its id. Tasks are pulled, and their
    /// batch sent, by the slot thread of that worker (one worker per slot for the whole
    /// call): [`SENT`], per thread, is what that worker was sent.
    fn function(
        &mut self,
        py: Python<'_>,
        index: usize,
        function: &Py<PyAny>,
    ) -> PyResult<Function> {
        let (id, bytes) = match self.functions.iter().find(|(f, _, _)| f.is(function)) {
            Some((_, id, bytes)) => (*id, bytes),
            None => {
                let bytes: Vec<u8> = crate::codec(py)?
                    .call_method1(pyo3::intern!(py, "encode_function"), (index, function))?
                    .extract()?;
                // A few at most: a task list that makes a new callable per task (bound
                // methods, partials) must not grow this, nor keep those callables alive.
                if self.functions.len() >= 8 {
                    self.functions.remove(0);
                }
                let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                self.functions
                    .push((function.clone_ref(py), id, Buffer::from(bytes)));
                let (_, id, bytes) = self.functions.last().expect("just pushed");
                (*id, bytes)
            }
        };
        let known = SENT.with(|sent| {
            let mut sent = sent.borrow_mut();
            if sent.0 != self.call {
                *sent = (self.call, std::collections::VecDeque::new());
            }
            if sent.1.contains(&id) {
                return true;
            }
            sent.1.push_back(id);
            if sent.1.len() > remote::KNOWN_BY_CALLER {
                sent.1.pop_front();
            }
            false
        });
        Ok(if known {
            Function::Known(id)
        } else {
            Function::Pickled {
                id,
                bytes: bytes.clone(),
            }
        })
    }

    /// The task as a job for `py_task`: its function pickled once per call (cloudpickle),
    /// its arguments with the C pickler unless the stream names `__main__` (which workers
    /// cannot import) or the C pickler fails; then `joblet._codec` uses cloudpickle.
    fn task(
        &mut self,
        py: Python<'_>,
        index: usize,
        t: Triple,
    ) -> PyResult<joblet::Remote<(Function, Pickled), Pickled, TaskFailure>> {
        let function = self.function(py, index, &t.function)?;
        let kwargs: Bound<'_, PyAny> = match &t.kwargs {
            Some(k) => k.bind(py).clone().into_any(),
            None => PyDict::new(py).into_any(),
        };
        let (args, kwargs) = self.by_reference(py, t.args.bind(py).clone(), kwargs)?;
        let payload = PyTuple::new(py, [args.clone().into_any(), kwargs.clone()])?;
        let call = match self.pickler.dump(py, payload.as_any())? {
            Some(call) => call,
            None => {
                let out = crate::codec(py)?
                    .call_method1(pyo3::intern!(py, "encode_args"), (index, args, kwargs))?
                    .cast_into::<PyTuple>()?;
                pickling::pickled(py, &out.get_item(0)?, &out.get_item(1)?, false)?
            }
        };
        Ok(remote::py_task::task(function, call))
    }
}

/// The results of a `generator` or `generator_unordered` call, as a Python iterator.
#[pyclass(module = "joblet._core")]
pub(crate) struct Results {
    stream: Mutex<Option<Stream>>,
    failure: InputFailure,
}

enum Stream {
    Here(Ordered<Py<PyAny>, PyErr>),
    HereUnordered(Unordered<Py<PyAny>, PyErr>),
    Workers(Ordered<Pickled, TaskFailure>),
    WorkersUnordered(Unordered<Pickled, TaskFailure>),
}

/// One item of a stream, before it meets Python.
enum Item {
    Here(Result<Py<PyAny>, Error<PyErr>>),
    Workers(Result<Pickled, Error<TaskFailure>>),
}

impl Stream {
    fn next(&mut self) -> Option<Item> {
        Some(match self {
            Stream::Here(s) => Item::Here(s.next()?),
            Stream::HereUnordered(s) => Item::Here(s.next()?.map(|(_, v)| v)),
            Stream::Workers(s) => Item::Workers(s.next()?),
            Stream::WorkersUnordered(s) => Item::Workers(s.next()?.map(|(_, v)| v)),
        })
    }
}

#[pymethods]
impl Results {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// Stops the call: tasks not yet started never run, and busy worker processes are
    /// killed. Results not yet taken are lost.
    fn close(&self, py: Python<'_>) {
        let stream = py.detach(|| self.stream.lock().unwrap_or_else(|e| e.into_inner()).take());
        py.detach(move || drop(stream));
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        // Wait without the GIL (tasks and the input need it), and take the lock only then.
        let item = py.detach(|| {
            let mut stream = self.stream.lock().unwrap_or_else(|e| e.into_inner());
            let item = stream.as_mut().and_then(Stream::next);
            if item.is_none() {
                *stream = None;
            }
            item
        });
        let result = match item {
            None => return raise_stored(&self.failure).map(|()| None),
            Some(Item::Here(r)) => r.map_err(|e| engine_error(py, e, errors::raw, &self.failure)),
            Some(Item::Workers(r)) => r
                .map_err(|e| engine_error(py, e, errors::from_worker, &self.failure))
                .and_then(|p| unpickle(py, p)),
        };
        if result.is_err() {
            // The call is over: drop the stream, which stops its workers.
            self.close(py);
        }
        result.map(Some).map_err(|e| {
            // A task's StopIteration would read as the end of the results (PEP 479's case).
            if e.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) {
                let wrapped =
                    pyo3::exceptions::PyRuntimeError::new_err("a task raised StopIteration");
                wrapped.set_cause(py, Some(e));
                wrapped
            } else {
                e
            }
        })
    }
}

/// A result from a worker, unpickled straight from Rust.
fn unpickle(py: Python<'_>, p: Pickled) -> PyResult<Py<PyAny>> {
    pickling::load(py, p).map(Bound::unbind)
}

fn backend_named(name: &str) -> PyResult<Backend> {
    Ok(match name {
        "sequential" => Backend::Sequential,
        "threads" => Backend::Threads,
        "processes" => Backend::Processes,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown engine backend {other:?}: expected sequential, threads or processes"
            )))
        }
    })
}

/// Runs a call. `tasks` yields `(function, args, kwargs)` triples; `n_jobs` is the
/// number of workers already resolved by the Python side; `pre_dispatch` is a count, `all`
/// or an expression in `n_jobs` (`None`: all); `return_as` is `list`, `generator` or `generator_unordered`.
#[pyfunction]
#[pyo3(signature = (tasks, *, backend, n_jobs, batch_size=None, pre_dispatch=None,
                    timeout=None, verbose=0, return_as="list", max_nbytes=None, progress=None,
                    nested_levels=0, inner_max_num_threads=None, backend_name=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn run(
    py: Python<'_>,
    tasks: &Bound<'_, PyAny>,
    backend: &str,
    n_jobs: i64,
    batch_size: Option<usize>,
    pre_dispatch: Option<String>,
    timeout: Option<f64>,
    verbose: u32,
    return_as: &str,
    max_nbytes: Option<usize>,
    progress: Option<Py<PyAny>>,
    nested_levels: usize,
    inner_max_num_threads: Option<usize>,
    backend_name: Option<String>,
) -> PyResult<Py<PyAny>> {
    let backend = backend_named(backend)?;
    if !crate::is_open() {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "joblet cannot start a parallel call: the Python interpreter is exiting",
        ));
    }
    let mut par = Parallel::new()
        .n_jobs(n_jobs)
        .backend(backend)
        .verbose(verbose)
        .nested_levels(nested_levels)
        .pre_dispatch(match pre_dispatch.as_deref() {
            None | Some("all") => PreDispatch::All,
            Some(text) => text
                .parse()
                .map_or_else(|_| PreDispatch::Expr(text.to_string()), PreDispatch::Count),
        });
    // Verbose lines go through Python's sys.stderr / sys.stdout, as joblib's do, so that
    // redirections (pytest's capsys, Jupyter, contextlib.redirect_stderr) see them.
    par = par.verbose_to(|text, to_stdout| {
        crate::with_gil(|py| {
            let name = if to_stdout { "stdout" } else { "stderr" };
            if let Ok(stream) = py.import("sys").and_then(|sys| sys.getattr(name)) {
                let _ = stream.call_method1("write", (text,));
                let _ = stream.call_method0("flush");
            }
        });
    });
    if let Some(b) = batch_size {
        par = par.batch_size(b);
    }
    if let Some(name) = backend_name {
        par = par.backend_name(name);
    }
    if let Some(n) = inner_max_num_threads {
        par = par.inner_max_num_threads(n);
    }
    if let Some(t) = timeout {
        let t = Duration::try_from_secs_f64(t).map_err(|_| {
            PyValueError::new_err(format!("timeout must be a positive number, got {t}"))
        })?;
        par = par.timeout(t);
    }
    if let Some(m) = max_nbytes {
        par = par.max_nbytes(m);
    }
    if let Some(cb) = progress {
        par = par.on_progress(move |p: &Progress| {
            crate::with_gil(|py| {
                if let Err(e) = cb.call1(py, (p.completed, p.total)) {
                    e.write_unraisable(py, Some(cb.bind(py)));
                }
            });
        });
    }
    let failure: InputFailure = Arc::default();
    // Ctrl-C: Python's handler only sets a flag, which the waiting caller checks here; the
    // KeyboardInterrupt is kept and raised once the call has stopped its workers.
    let signalled = failure.clone();
    par = par.interrupt_check(move || {
        crate::with_gil(|py| match py.check_signals() {
            Ok(()) => false,
            Err(e) => {
                *signalled.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                true
            }
        })
        .unwrap_or(false)
    });
    // The GIL once per batch of input pulled, not once per task.
    par = par.input_scope(move |pull| {
        let mut pull = Some(pull);
        crate::with_gil(|_| (pull.take().expect("runs once"))());
        if let Some(pull) = pull {
            // The interpreter is exiting: the pull finds out and says so.
            pull();
        }
    });
    let mut pull = Pull {
        iter: tasks.try_iter()?.unbind(),
        failure: failure.clone(),
        index: 0,
    };
    if matches!(backend, Backend::Processes) {
        let mut pickler = TaskPickler::new(py)?;
        let jobs =
            std::iter::from_fn(move || pull.next_with(|py, index, t| pickler.task(py, index, t)));
        match return_as {
            "list" => {
                let out = py.detach(|| par.try_run(jobs));
                let values = out.map_err(|e| engine_error(py, e, errors::from_worker, &failure))?;
                raise_stored(&failure)?;
                let list = PyList::empty(py);
                for v in values {
                    list.append(unpickle(py, v)?)?;
                }
                Ok(list.into_any().unbind())
            }
            "generator" => stream(py, &par, failure.clone(), |p| {
                p.try_iter(jobs).map(Stream::Workers)
            }),
            "generator_unordered" => stream(py, &par, failure.clone(), |p| {
                p.try_iter_unordered(jobs).map(Stream::WorkersUnordered)
            }),
            other => Err(bad_return_as(other)),
        }
    } else {
        let jobs = std::iter::from_fn(move || pull.next_with(|_, _, t| Ok(move || call_here(t))));
        match return_as {
            "list" => {
                let out = py.detach(|| par.try_run(jobs));
                let values = out.map_err(|e| engine_error(py, e, errors::raw, &failure))?;
                raise_stored(&failure)?;
                Ok(PyList::new(py, values)?.into_any().unbind())
            }
            "generator" => stream(py, &par, failure.clone(), |p| {
                p.try_iter(jobs).map(Stream::Here)
            }),
            "generator_unordered" => stream(py, &par, failure.clone(), |p| {
                p.try_iter_unordered(jobs).map(Stream::HereUnordered)
            }),
            other => Err(bad_return_as(other)),
        }
    }
}

/// An engine error as a Python exception; an interrupted call raises what interrupted it
/// (the KeyboardInterrupt kept by the interrupt check).
fn engine_error<E>(
    py: Python<'_>,
    e: Error<E>,
    task: impl FnOnce(Python<'_>, usize, E) -> PyErr,
    failure: &InputFailure,
) -> PyErr {
    if matches!(e, Error::Interrupted) {
        if let Some(err) = failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return err;
        }
    }
    errors::from_engine(py, e, task)
}

/// Raises what stopped the input (or interrupted the call), if anything did.
fn raise_stored(failure: &InputFailure) -> PyResult<()> {
    match failure.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn bad_return_as(other: &str) -> PyErr {
    PyValueError::new_err(format!(
        "return_as must be 'list', 'generator' or 'generator_unordered', got {other:?}"
    ))
}

/// Starts a streaming call and wraps it as a Python iterator.
fn stream<E: Send>(
    py: Python<'_>,
    par: &Parallel,
    failure: InputFailure,
    start: impl FnOnce(&Parallel) -> Result<Stream, Error<E>> + Send,
) -> PyResult<Py<PyAny>>
where
    Error<E>: Send,
{
    let started = py.detach(|| start(par));
    let stream = started.map_err(|e| errors::from_engine(py, e, |_, _, _| unreachable_task()))?;
    Ok(Py::new(
        py,
        Results {
            stream: Mutex::new(Some(stream)),
            failure,
        },
    )?
    .into_any())
}

/// Starting a stream fails only on configuration, never on a task.
fn unreachable_task() -> PyErr {
    pyo3::exceptions::PyRuntimeError::new_err("a task failed before the call started")
}
