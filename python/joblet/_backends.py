"""joblib's backend classes: the built-in ones describe where joblet's engine runs tasks; the
base class carries joblib 1.6's contract for backends that run tasks themselves.

``parallel_config`` and ``Parallel`` accept a backend name or an instance, as in joblib. The
built-in backends all run on joblet's engine (``engine`` names its backend). A backend with
``engine = None`` (a user's subclass of ``ParallelBackendBase``, registered with
``register_parallel_backend`` or passed as an instance) runs through its own ``configure`` /
``submit`` / ``retrieve_result_callback`` methods, driven by ``joblet._custom``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from typing import Any, Callable, Iterator, Optional

from . import _core


class FallbackToBackend(Exception):
    """Raised by a backend's ``configure`` to have ``Parallel`` use ``backend`` instead (for
    instance a ``SequentialBackend`` when only one worker would run)."""

    def __init__(self, backend: "ParallelBackendBase") -> None:
        super().__init__(backend)
        self.backend = backend


class ParallelBackendBase:
    """The base of every backend, and joblib 1.6's contract for custom ones.

    A custom backend runs batches of tasks on its own executor. ``Parallel`` drives it as
    joblib does (``joblet._custom``): ``configure`` once per call (or once per ``with
    Parallel(...)`` block), ``start_call``, then ``submit(batch, callback)`` for each batch,
    where ``batch()`` runs the tasks and returns their results as a list, and ``callback``
    must be called with the future-like object when the batch ends (success or failure);
    ``retrieve_result_callback(out)`` turns that object into the list or raises the task's
    exception. Backends with ``supports_retrieve_callback = False`` are read with
    ``retrieve_result(out, timeout)`` instead. ``stop_call`` ends a call, ``terminate`` the
    backend's use; ``abort_everything`` follows a task's failure. Older backends that
    define ``apply_async(func, callback)`` instead of ``submit`` work too.

    The defaults below are joblib's: one task per batch, no timeout or generator support
    unless results are retrieved through the callback, nested calls on threads one level
    down, then sequential.
    """

    #: The joblet engine backend that runs this one ("processes", "threads",
    #: "sequential"), or None for a backend with its own executor.
    engine: Optional[str] = None
    default_n_jobs = 1
    nesting_level: Optional[int] = None
    inner_max_num_threads: Optional[int] = None
    supports_inner_max_num_threads = False
    #: True when ``submit``'s callback delivers results (``retrieve_result_callback``);
    #: new backends should set it. Older ones are read with ``retrieve_result``.
    supports_retrieve_callback = False
    uses_threads = False
    supports_sharedmem = False
    #: Whether a call that gets one worker runs its tasks in the caller instead (joblib's
    #: rule). A backend whose single worker is elsewhere (a cluster) says False.
    one_worker_runs_here = True

    #: The thread-count variables of BLAS/OpenMP libraries, for ``_prepare_worker_env``.
    MAX_NUM_THREADS_VARS = [
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "BLIS_NUM_THREADS",
        "VECLIB_MAXIMUM_THREADS",
        "NUMBA_NUM_THREADS",
        "NUMEXPR_NUM_THREADS",
    ]
    TBB_ENABLE_IPC_VAR = "ENABLE_IPC"

    def __init__(
        self,
        nesting_level: Optional[int] = None,
        inner_max_num_threads: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        self.nesting_level = nesting_level
        self.inner_max_num_threads = inner_max_num_threads
        self.backend_kwargs = kwargs

    @property
    def supports_timeout(self) -> bool:
        """Whether ``Parallel(timeout=...)`` applies (a class attribute may override it)."""
        return self.supports_retrieve_callback

    @property
    def supports_return_generator(self) -> bool:
        """Whether ``return_as="generator"``/``"generator_unordered"`` are accepted."""
        return self.supports_retrieve_callback

    def effective_n_jobs(self, n_jobs: int) -> int:
        """The number of workers a call with this ``n_jobs`` gets (joblib's rule)."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs < 0:
            n_jobs = max(_core.cpu_count() + 1 + n_jobs, 1)
        return n_jobs

    # The calls Parallel makes to a custom backend, in order ---------------------------------

    def configure(
        self,
        n_jobs: int = 1,
        parallel: Any = None,
        prefer: Optional[str] = None,
        require: Optional[str] = None,
        **backend_kwargs: Any,
    ) -> int:
        """Prepares the backend for a call (or a ``with Parallel(...)`` block) and returns the
        number of workers; 1 makes ``Parallel`` run the tasks in the caller. ``parallel`` is
        the calling ``Parallel``; ``backend_kwargs`` are its settings (``max_nbytes``,
        ``temp_folder``, ``mmap_mode``, ``verbose``, ``context``) and extra keyword
        arguments. May raise ``FallbackToBackend``."""
        self.parallel = parallel
        return self.effective_n_jobs(n_jobs)

    def start_call(self) -> None:
        """Called when a call starts dispatching (after ``configure``)."""

    def compute_batch_size(self) -> int:
        """How many tasks the next batch holds, with ``batch_size="auto"``."""
        return 1

    def submit(
        self, func: Callable[[], list], callback: Optional[Callable[..., Any]] = None
    ) -> Any:
        """Starts ``func()`` (a batch: it returns the list of its tasks' results) and returns
        a future-like object; ``callback(out)`` must be called when it ends, with or without
        an error. The default hands over to ``apply_async`` (joblib's older name)."""
        if type(self).apply_async is ParallelBackendBase.apply_async:
            raise NotImplementedError(f"{type(self).__name__} must implement submit()")
        warnings.warn(
            "`apply_async` is deprecated, implement and use `submit` instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.apply_async(func, callback)

    def apply_async(
        self, func: Callable[[], list], callback: Optional[Callable[..., Any]] = None
    ) -> Any:
        """Deprecated in joblib 1.5: implement ``submit``."""
        raise NotImplementedError("Implement `submit` instead.")

    def retrieve_result_callback(self, out: Any) -> Any:
        """Called in the callback with what the backend passed it: returns the batch's list
        of results or raises the task's exception. The default reads a future
        (``out.result()``), raises an exception it is given, and returns anything else as is
        (``multiprocessing.Pool`` passes the value itself)."""
        if isinstance(out, BaseException):
            raise out
        result = getattr(out, "result", None)
        if callable(result):
            return result()
        return out

    def retrieve_result(self, out: Any, timeout: Optional[float] = None) -> Any:
        """For backends without ``supports_retrieve_callback``: waits for ``out`` (what
        ``submit`` returned) and returns its list of results, or raises. The timeout is
        passed on when the backend supports timeouts."""
        timeout = timeout if self.supports_timeout else None
        get = getattr(out, "get", None)
        if callable(get):
            return get(timeout=timeout) if timeout is not None else get()
        return out.result(timeout=timeout)

    def batch_completed(self, batch_size: int, duration: float) -> None:
        """Told after each successful batch: its size and seconds from submission to end."""

    @contextlib.contextmanager
    def retrieval_context(self) -> Iterator[None]:
        """Held while the caller waits for results: a backend whose workers may themselves
        wait on nested calls can free a worker here (Dask's ``secede``)."""
        yield

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """After a task's failure, a timeout or an abandoned generator: cancel what still
        runs. With ``ensure_ready`` the backend must stay usable (a ``with Parallel(...)``
        block goes on); without, ``terminate`` follows. Does nothing by default, as in
        joblib."""

    def stop_call(self) -> None:
        """Called when a call ends (results all in, or stopped)."""

    def terminate(self) -> None:
        """Releases what ``configure`` set up: after each call, or at the end of a ``with
        Parallel(...)`` block."""

    def get_exceptions(self) -> list[type[BaseException]]:
        """Exception types of the backend's own failures (joblib < 1.0 asked for them);
        joblet re-raises whatever retrieval raises, so none are needed."""
        return []

    # Nesting and worker environment ----------------------------------------------------------

    def get_nested_backend(self) -> tuple["ParallelBackendBase", Optional[int]]:
        """The backend (and ``n_jobs``) of calls made inside this one's tasks: threads one
        level down, then sequential."""
        level = (self.nesting_level or 0) + 1
        if level > 1:
            return SequentialBackend(nesting_level=level), None
        return ThreadingBackend(nesting_level=level), None

    def _prepare_worker_env(self, n_jobs: int) -> dict[str, str]:
        """Environment variables for worker processes a custom backend starts: BLAS/OpenMP
        thread counts of ``inner_max_num_threads``, else ``cpu_count() // n_jobs`` unless
        already set in this process (joblib's rule)."""
        default = max(_core.cpu_count() // max(n_jobs, 1), 1)
        env = {}
        for var in self.MAX_NUM_THREADS_VARS:
            if self.inner_max_num_threads is not None:
                env[var] = str(self.inner_max_num_threads)
            else:
                env[var] = os.environ.get(var, str(default))
        if self.TBB_ENABLE_IPC_VAR not in os.environ:
            env[self.TBB_ENABLE_IPC_VAR] = "1"
        return env

    @staticmethod
    def in_main_thread() -> bool:
        return threading.current_thread() is threading.main_thread()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class AutoBatchingMixin:
    """``batch_size="auto"`` for a custom backend, as joblib's mixin of the same name: the
    batch size doubles (at most) while batches take less than ``MIN_IDEAL_BATCH_DURATION``
    seconds, and shrinks at once when they take more than ``MAX_IDEAL_BATCH_DURATION``.
    Put it before ``ParallelBackendBase`` among the bases."""

    MIN_IDEAL_BATCH_DURATION = 0.2
    MAX_IDEAL_BATCH_DURATION = 2.0
    _DEFAULT_EFFECTIVE_BATCH_SIZE = 1
    _DEFAULT_SMOOTHED_BATCH_DURATION = 0.0
    # Class-level starting values, so that a subclass whose __init__ skips ours works too.
    _effective_batch_size = _DEFAULT_EFFECTIVE_BATCH_SIZE
    _smoothed_batch_duration = _DEFAULT_SMOOTHED_BATCH_DURATION

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reset_batch_stats()

    def compute_batch_size(self) -> int:
        size = self._effective_batch_size
        duration = self._smoothed_batch_duration
        if 0 < duration < self.MIN_IDEAL_BATCH_DURATION:
            # Too short to pay for dispatching: aim at twice the ideal, grow 2x at most.
            ideal = 2 * int(size * self.MIN_IDEAL_BATCH_DURATION / duration)
            new = max(min(2 * size, ideal), 1)
            why = "fast"
        elif duration > self.MAX_IDEAL_BATCH_DURATION and size >= 2:
            # Too long: stragglers would keep the last workers busy alone. Shrink at once.
            new = max(2 * int(size * self.MIN_IDEAL_BATCH_DURATION / duration), 1)
            why = "slow"
        else:
            return size
        if new != size:
            self._effective_batch_size = new
            # The smoothed duration measured batches of the old size: start again.
            self._smoothed_batch_duration = self._DEFAULT_SMOOTHED_BATCH_DURATION
            parallel = getattr(self, "parallel", None)
            if parallel is not None and getattr(parallel, "verbose", 0) >= 10:
                parallel._print(
                    f"Batch computation too {why} ({duration}s.) Setting batch_size={new}."
                )
        return new

    def batch_completed(self, batch_size: int, duration: float) -> None:
        if batch_size != self._effective_batch_size:
            return  # a batch cut before the last change of size says nothing about it
        old = self._smoothed_batch_duration
        if old == self._DEFAULT_SMOOTHED_BATCH_DURATION:
            self._smoothed_batch_duration = duration
        else:
            self._smoothed_batch_duration = 0.8 * old + 0.2 * duration

    def reset_batch_stats(self) -> None:
        """Forgets what earlier calls measured (call it from ``terminate``)."""
        self._effective_batch_size = self._DEFAULT_EFFECTIVE_BATCH_SIZE
        self._smoothed_batch_duration = self._DEFAULT_SMOOTHED_BATCH_DURATION


def runs_on_engine(backend: Any) -> bool:
    """Whether joblet's engine runs this backend (its built-ins), rather than the backend's
    own executor."""
    return getattr(backend, "engine", None) is not None


def looks_like_backend(obj: Any) -> bool:
    """A backend instance: joblet's, or one written against joblib itself (a subclass of
    joblib's ``ParallelBackendBase``, as third-party packages register with joblib)."""
    if isinstance(obj, ParallelBackendBase):
        return True
    return callable(getattr(obj, "effective_n_jobs", None)) and (
        callable(getattr(obj, "submit", None)) or callable(getattr(obj, "apply_async", None))
    )


class SequentialBackend(ParallelBackendBase):
    """Runs tasks one after the other in the caller; exceptions are raised as they are."""

    engine = "sequential"
    uses_threads = True
    supports_timeout = False
    supports_return_generator = True
    supports_sharedmem = True

    def effective_n_jobs(self, n_jobs: int) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        return 1

    def get_nested_backend(self) -> tuple[ParallelBackendBase, Optional[int]]:
        from ._config import get_active_backend

        return get_active_backend()


class ThreadingBackend(ParallelBackendBase):
    """Worker threads of this process: for tasks that release the GIL (numpy, I/O), or
    that must share memory with the caller."""

    engine = "threads"
    supports_timeout = True
    supports_return_generator = True
    uses_threads = True
    supports_sharedmem = True


class LokyBackend(ParallelBackendBase):
    """Worker processes (joblib's default backend): joblet's crash-isolated, reused pool."""

    engine = "processes"
    supports_timeout = True
    supports_return_generator = True
    supports_inner_max_num_threads = True

    def effective_n_jobs(self, n_jobs: int) -> int:
        n = super().effective_n_jobs(n_jobs)
        if n != 1 and _in_worker_thread():
            # joblib's rule and words: no processes below threads.
            warnings.warn(
                f"{self._kind}-backed parallel loops cannot be nested below threads, "
                "setting n_jobs=1",
                stacklevel=3,
            )
            return 1
        return n

    _kind = "Loky"


class MultiprocessingBackend(LokyBackend):
    """joblib's ``multiprocessing`` backend: in joblet, the same process pool as ``loky``.
    As in joblib, it does not take ``inner_max_num_threads``, nor run inside a worker."""

    supports_inner_max_num_threads = False
    _kind = "Multiprocessing"

    def effective_n_jobs(self, n_jobs: int) -> int:
        n = super().effective_n_jobs(n_jobs)
        if n != 1 and _core.nesting_depth() > 0:
            warnings.warn(
                "Multiprocessing-backed parallel loops cannot be nested, setting n_jobs=1",
                stacklevel=3,
            )
            return 1
        return n


def _in_worker_thread() -> bool:
    """Whether this runs in a task on a worker thread (of joblet's engine, or of a thread
    pool a task started), where joblib refuses to start processes."""
    return _core.nesting_depth() > 0 and threading.current_thread() is not threading.main_thread()


BACKENDS: dict[str, Any] = {
    "loky": LokyBackend,
    "multiprocessing": MultiprocessingBackend,
    "threading": ThreadingBackend,
    "sequential": SequentialBackend,
}


def _register_dask() -> None:
    """``backend="dask"`` is imported on first use, since ``dask.distributed`` is optional
    (its absence raises an ImportError that says what to install)."""
    from ._dask import DaskDistributedBackend

    BACKENDS["dask"] = DaskDistributedBackend


#: Backends registered into BACKENDS the first time they are named (joblib's registry of
#: the same name), because their packages are optional.
EXTERNAL_BACKENDS: dict[str, Callable[[], None]] = {"dask": _register_dask}
DEFAULT_BACKEND = "loky"
DEFAULT_THREAD_BACKEND = "threading"
DEFAULT_PROCESS_BACKEND = "loky"
