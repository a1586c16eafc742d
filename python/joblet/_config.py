"""``parallel_config`` and friends: the settings a ``Parallel`` takes from its context.

An explicit argument to ``Parallel`` wins over the innermost ``parallel_config`` that set the
same key, which wins over the default. The configuration is per thread, as in joblib.
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Optional

from . import _backends, _core
from ._backends import BACKENDS, ParallelBackendBase


class _Unset:
    """A default that ``parallel_config`` may override (joblib's sentinel)."""

    __slots__ = ("default_value",)

    def __init__(self, default_value: Any) -> None:
        self.default_value = default_value

    def __repr__(self) -> str:
        return f"default({self.default_value!r})"


DEFAULTS: dict[str, _Unset] = {
    "n_jobs": _Unset(None),
    "backend": _Unset(None),
    "verbose": _Unset(0),
    "temp_folder": _Unset(None),
    "max_nbytes": _Unset("1M"),
    "mmap_mode": _Unset("r"),
    "prefer": _Unset(None),
    "require": _Unset(None),
}

VALID_BACKEND_HINTS = ("processes", "threads", None)
VALID_BACKEND_CONSTRAINTS = ("sharedmem", None)

_local = threading.local()


def _current() -> dict[str, Any]:
    return getattr(_local, "config", DEFAULTS)


def resolve(value: Any, key: str, config: Optional[dict[str, Any]] = None) -> Any:
    """An explicit value, else the context's, else the default."""
    if value is not DEFAULTS[key]:
        return value
    config = _current() if config is None else config
    if config[key] is not DEFAULTS[key]:
        return config[key]
    return value.default_value


def _backend_instance(backend: Any, nesting_level: Optional[int], **params: Any) -> ParallelBackendBase:
    if isinstance(backend, str):
        if backend not in BACKENDS and backend in _backends.EXTERNAL_BACKENDS:
            _backends.EXTERNAL_BACKENDS[backend]()
        factory = BACKENDS.get(backend) or _registered_with_joblib(backend)
        if factory is None:
            raise ValueError(f"Invalid backend: {backend}, expected one of {sorted(BACKENDS)}")
        instance = factory(**params) if params else factory()
    elif hasattr(backend, "Pool") and hasattr(backend, "Lock"):
        # A multiprocessing context (joblib's way to pick a start method): joblet's workers
        # are always fresh interpreters, so any context means its process pool.
        instance = BACKENDS["multiprocessing"]()
    else:
        instance = backend
    if getattr(instance, "nesting_level", None) is None:
        instance.nesting_level = nesting_level
    return instance


def _registered_with_joblib(name: str) -> Any:
    """A backend factory registered with joblib itself under a name joblet does not know:
    third-party packages (ray's ``register_ray()``, for one) register their backends with
    joblib, and these run as custom backends here. Only looked up when joblib is already
    imported."""
    registry = getattr(sys.modules.get("joblib.parallel"), "BACKENDS", None)
    return registry.get(name) if isinstance(registry, dict) else None


def get_active_backend(
    prefer: Any = DEFAULTS["prefer"],
    require: Any = DEFAULTS["require"],
    verbose: Any = DEFAULTS["verbose"],
) -> tuple[ParallelBackendBase, Any]:
    """The backend and ``n_jobs`` a ``Parallel`` without arguments would use here."""
    backend, config = active_backend(prefer, require, verbose)
    return backend, resolve(DEFAULTS["n_jobs"], "n_jobs", config)


def active_backend(
    prefer: Any = DEFAULTS["prefer"],
    require: Any = DEFAULTS["require"],
    verbose: Any = DEFAULTS["verbose"],
) -> tuple[ParallelBackendBase, dict[str, Any]]:
    config = _current()
    backend = resolve(DEFAULTS["backend"], "backend", config)
    prefer = resolve(prefer, "prefer", config)
    require = resolve(require, "require", config)
    verbose = resolve(verbose, "verbose", config)
    if prefer not in VALID_BACKEND_HINTS:
        raise ValueError(
            f"prefer={prefer} is not a valid backend hint, expected one of {VALID_BACKEND_HINTS}"
        )
    if require not in VALID_BACKEND_CONSTRAINTS:
        raise ValueError(
            f"require={require} is not a valid backend constraint, "
            f"expected one of {VALID_BACKEND_CONSTRAINTS}"
        )
    if prefer == "processes" and require == "sharedmem":
        raise ValueError(
            "prefer == 'processes' and require == 'sharedmem' are inconsistent settings"
        )
    explicit = backend is not None
    if not explicit:
        depth = _core.nesting_depth()
        if depth == 0:
            backend = BACKENDS[_backends.DEFAULT_BACKEND](nesting_level=0)
        else:
            # Inside a task of a call (a worker thread or process): joblib's nested backend,
            # threads one level down, then sequential.
            name = "threading" if depth == 1 else "sequential"
            backend = BACKENDS[name](nesting_level=depth)
    level = backend.nesting_level
    # (getattr: a backend written against joblib may lack the attributes.)
    uses_threads = getattr(backend, "uses_threads", False)
    sharedmem = getattr(backend, "supports_sharedmem", False)
    threads_needed = (require == "sharedmem" and not sharedmem) or (
        not explicit and prefer == "threads" and not uses_threads
    )
    if threads_needed:
        if verbose >= 10 and explicit:
            print(
                f"Using ThreadingBackend as joblib backend instead of "
                f"{type(backend).__name__} as the latter does not provide shared memory "
                "semantics."
            )
        config = dict(config)
        config["n_jobs"] = 1
        return BACKENDS[_backends.DEFAULT_THREAD_BACKEND](nesting_level=level), config
    if not explicit and prefer == "processes" and uses_threads:
        return BACKENDS[_backends.DEFAULT_PROCESS_BACKEND](nesting_level=level), dict(config)
    return backend, config


class parallel_config:
    """Sets defaults for the ``Parallel`` calls made inside a ``with`` block (or until
    ``unregister()``): ``backend``, ``n_jobs``, ``verbose``, ``temp_folder``, ``max_nbytes``,
    ``mmap_mode``, ``prefer``, ``require``. Blocks nest; an argument given to ``Parallel``
    itself always wins.

    >>> from joblet import Parallel, delayed, parallel_config
    >>> with parallel_config(backend="threading", n_jobs=2):
    ...     Parallel()(delayed(abs)(-i) for i in range(3))
    [0, 1, 2]
    """

    def __init__(
        self,
        backend: Any = DEFAULTS["backend"],
        *,
        n_jobs: Any = DEFAULTS["n_jobs"],
        verbose: Any = DEFAULTS["verbose"],
        temp_folder: Any = DEFAULTS["temp_folder"],
        max_nbytes: Any = DEFAULTS["max_nbytes"],
        mmap_mode: Any = DEFAULTS["mmap_mode"],
        prefer: Any = DEFAULTS["prefer"],
        require: Any = DEFAULTS["require"],
        inner_max_num_threads: Optional[int] = None,
        **backend_params: Any,
    ) -> None:
        self.old_parallel_config = _current()
        backend = self._check_backend(backend, inner_max_num_threads, **backend_params)
        new = {
            "n_jobs": n_jobs,
            "verbose": verbose,
            "temp_folder": temp_folder,
            "max_nbytes": max_nbytes,
            "mmap_mode": mmap_mode,
            "prefer": prefer,
            "require": require,
            "backend": backend,
        }
        self.parallel_config = dict(self.old_parallel_config)
        self.parallel_config.update({k: v for k, v in new.items() if not isinstance(v, _Unset)})
        _local.config = self.parallel_config

    def _check_backend(self, backend: Any, inner_max_num_threads: Optional[int], **params: Any) -> Any:
        if backend is DEFAULTS["backend"]:
            if inner_max_num_threads is not None or params:
                raise ValueError(
                    "inner_max_num_threads and other constructor parameters backend_params "
                    "are only supported when backend is not None."
                )
            return backend
        if not isinstance(backend, str) and params:
            raise ValueError(
                "Constructor parameters backend_params are only supported when backend is a "
                "string."
            )
        parent = self.old_parallel_config["backend"]
        if parent is DEFAULTS["backend"]:
            # No enclosing configuration: the level of where this runs (1 inside a task).
            level = _core.nesting_depth()
        else:
            level = parent.nesting_level
        instance = _backend_instance(backend, level, **params)
        if inner_max_num_threads is not None:
            if not getattr(instance, "supports_inner_max_num_threads", False):
                raise AssertionError(
                    f"{type(instance).__name__} does not accept setting the "
                    "inner_max_num_threads argument."
                )
            instance.inner_max_num_threads = inner_max_num_threads
        return instance

    def __enter__(self) -> dict[str, Any]:
        return self.parallel_config

    def __exit__(self, *exc: Any) -> None:
        self.unregister()

    def unregister(self) -> None:
        _local.config = self.old_parallel_config


class parallel_backend(parallel_config):
    """joblib's older form of ``parallel_config``: ``with parallel_backend("threading",
    n_jobs=2) as (backend, n_jobs):``."""

    def __init__(
        self,
        backend: Any,
        n_jobs: int = -1,
        inner_max_num_threads: Optional[int] = None,
        **backend_params: Any,
    ) -> None:
        super().__init__(
            backend=backend,
            n_jobs=n_jobs,
            inner_max_num_threads=inner_max_num_threads,
            **backend_params,
        )
        old = self.old_parallel_config
        self.old_backend_and_jobs = (
            None if old is None else (old["backend"], old["n_jobs"])
        )
        self.new_backend_and_jobs = (
            self.parallel_config["backend"],
            self.parallel_config["n_jobs"],
        )

    def __enter__(self) -> tuple[Any, Any]:  # type: ignore[override]
        return self.new_backend_and_jobs


def register_parallel_backend(name: str, factory: Any, make_default: bool = False) -> None:
    """Makes ``factory`` (a ``ParallelBackendBase`` subclass or any callable returning an
    instance) selectable as ``backend=name``; with ``make_default``, the default backend.
    A backend with its own ``submit`` runs its tasks itself, driven as joblib drives it."""
    BACKENDS[name] = factory
    if make_default:
        _backends.DEFAULT_BACKEND = name


def effective_n_jobs(n_jobs: Any = -1) -> int:
    """The number of workers a call with this ``n_jobs`` gets under the active backend."""
    if n_jobs == 1:
        return 1
    backend, context_n_jobs = get_active_backend()
    if n_jobs is None:
        n_jobs = context_n_jobs
    if n_jobs is None:
        n_jobs = backend.default_n_jobs
    return backend.effective_n_jobs(n_jobs=n_jobs)


def cpu_count(only_physical_cores: bool = False) -> int:
    """The number of CPUs this process may use: its CPU affinity and cgroup quota count.
    ``only_physical_cores`` is accepted for joblib compatibility; joblet counts the CPUs
    the kernel lets it run on."""
    return _core.cpu_count()
