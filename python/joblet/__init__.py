"""joblet: joblib's ``Parallel`` and ``delayed`` on a Rust engine.

``import joblet as joblib`` runs joblib code unchanged: worker processes that survive crashes
and are killed on timeout, threads, batching of tiny tasks, big arrays through shared memory.
"""

from ._backends import ParallelBackendBase
from ._config import (
    cpu_count,
    effective_n_jobs,
    parallel_backend,
    parallel_config,
    register_parallel_backend,
)
from ._errors import RemoteTraceback, TerminatedWorkerError, WorkerTaskError
from ._hashing import hash
from ._memory import MemorizedResult, Memory, expires_after
from ._store_backends import StoreBackendBase, register_store_backend
from ._parallel import Parallel, delayed
from ._compressors import CompressorWrapper, register_compressor
from ._persist import dump, load

__version__ = "0.1.0"


def _at_exit() -> None:
    # Engine threads of calls still running (an unfinished generator) must not enter the
    # interpreter while it is torn down.
    from . import _core

    _core.shutdown()


import atexit as _atexit  # noqa: E402

_atexit.register(_at_exit)

__all__ = [
    "CompressorWrapper",
    "MemorizedResult",
    "Memory",
    "Parallel",
    "ParallelBackendBase",
    "RemoteTraceback",
    "StoreBackendBase",
    "TerminatedWorkerError",
    "WorkerTaskError",
    "cpu_count",
    "delayed",
    "dump",
    "effective_n_jobs",
    "expires_after",
    "hash",
    "load",
    "parallel_backend",
    "parallel_config",
    "register_compressor",
    "register_parallel_backend",
    "register_store_backend",
]
