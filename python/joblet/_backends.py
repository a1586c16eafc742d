"""joblib's backend classes, as descriptions of where joblet's engine runs tasks.

``parallel_config`` and ``Parallel`` accept a backend name or an instance of one of these,
as in joblib. The built-in ones all run on joblet's engine (``engine`` names its backend);
a backend registered by a user runs through its own ``submit``/``apply_async``.
"""

from __future__ import annotations

from typing import Any, Optional

from . import _core


class ParallelBackendBase:
    """The base of every backend: joblib's contract, for backends that joblet's engine does
    not run itself (``register_parallel_backend``)."""

    #: The joblet engine backend that runs this one ("processes", "threads",
    #: "sequential"), or None for a backend with its own executor.
    engine: Optional[str] = None
    default_n_jobs = 1
    supports_timeout = False
    supports_return_generator = False
    supports_inner_max_num_threads = False
    supports_retrieve_callback = False
    uses_threads = False
    supports_sharedmem = False

    def __init__(
        self, nesting_level: Optional[int] = None, inner_max_num_threads: Optional[int] = None, **kwargs: Any
    ) -> None:
        self.nesting_level = nesting_level
        self.inner_max_num_threads = inner_max_num_threads
        self.backend_kwargs = kwargs

    def effective_n_jobs(self, n_jobs: int) -> int:
        """The number of workers a call with this ``n_jobs`` gets (joblib's rule)."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs < 0:
            n_jobs = max(_core.cpu_count() + 1 + n_jobs, 1)
        return n_jobs

    def get_nested_backend(self) -> tuple["ParallelBackendBase", Optional[int]]:
        """The backend of calls made inside this one's tasks: threads one level down, then
        sequential."""
        level = (self.nesting_level or 0) + 1
        if level > 1:
            return SequentialBackend(nesting_level=level), None
        return ThreadingBackend(nesting_level=level), None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


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


class MultiprocessingBackend(LokyBackend):
    """joblib's ``multiprocessing`` backend: in joblet, the same process pool as ``loky``."""


BACKENDS: dict[str, Any] = {
    "loky": LokyBackend,
    "multiprocessing": MultiprocessingBackend,
    "threading": ThreadingBackend,
    "sequential": SequentialBackend,
}
DEFAULT_BACKEND = "loky"
DEFAULT_THREAD_BACKEND = "threading"
DEFAULT_PROCESS_BACKEND = "loky"
