"""``Parallel`` and ``delayed``: joblib's API, run by joblet's engine."""

from __future__ import annotations

import functools
import json
import multiprocessing
import numbers
import sys
import uuid
import warnings
import weakref
from typing import Any, Callable, Generator, Iterable, Optional

from . import _core, _custom
from ._config import DEFAULTS, _Unset, active_backend, resolve, _backend_instance
from ._backends import BACKENDS, SequentialBackend, looks_like_backend, runs_on_engine


class _Delayed(_core.Delayed):
    """What ``delayed(function)`` returns: calling it captures a call. It stands for the
    function (``__name__``, ``__qualname__``, ``__wrapped__`` and other attributes are the
    function's). Built in Rust: it runs once per task in the caller's own loop."""

    __slots__ = ()

    @property  # type: ignore[misc]
    def __doc__(self) -> Optional[str]:  # type: ignore[override]
        return getattr(self.__wrapped__, "__doc__", None)


def delayed(function: Callable[..., Any]) -> Callable[..., tuple]:
    """Captures a call for ``Parallel``: ``delayed(f)(*args, **kwargs)`` is the triple
    ``(f, args, kwargs)``. Hand-made triples work the same.

    >>> from joblet import delayed
    >>> delayed(pow)(2, 5)
    (<built-in function pow>, (2, 5), {})
    >>> delayed(pow).__name__
    'pow'
    """
    return _Delayed(function)


_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def memstr_to_bytes(text: str) -> int:
    """``"1M"`` → 1048576 (joblib's sizes: a number and K, M or G)."""
    unit = text[-1:].upper()
    try:
        return int(float(text[:-1]) * _UNITS[unit])
    except (KeyError, ValueError):
        raise ValueError(
            f"Invalid literal for size: '{text}' should be a string like '1K', '500M', '50G'"
        ) from None


_MMAP_MODES = (None, "r+", "r", "w+", "c")


class Parallel:
    """Runs ``delayed`` calls in parallel and returns their results, with joblib's parameters.

    ``Parallel(n_jobs=2)(delayed(f)(x) for x in data)`` returns ``[f(x) for x in data]``,
    computed on two workers. ``backend`` is ``"loky"`` (the default: worker processes),
    ``"multiprocessing"`` (the same pool), ``"threading"`` or ``"sequential"``.
    ``return_as`` is ``"list"``, ``"generator"`` (input order, lazily) or
    ``"generator_unordered"`` (as tasks finish). A task's exception is raised in the caller,
    with the worker's traceback as its ``__cause__``; a dead worker raises
    ``TerminatedWorkerError``; ``timeout`` raises ``multiprocessing.TimeoutError``, and on
    processes kills the stuck worker.

    ``backend`` may also be a custom joblib backend (a ``ParallelBackendBase`` subclass
    with its own ``submit``, registered with ``register_parallel_backend`` or passed as an
    instance): it runs the batches, driven as joblib drives it (``joblet._custom``), and
    extra keyword arguments go to its ``configure``.

    Beyond joblib: ``progress`` takes a callable ``(completed, total)`` (``total`` is None
    until the input is exhausted), or ``True`` for a tqdm bar when tqdm is installed.

    >>> from joblet import Parallel, delayed
    >>> Parallel(n_jobs=2, backend="threading")(delayed(pow)(i, 2) for i in range(5))
    [0, 1, 4, 9, 16]
    """

    def __init__(
        self,
        n_jobs: Any = DEFAULTS["n_jobs"],
        backend: Any = DEFAULTS["backend"],
        return_as: str = "list",
        verbose: Any = DEFAULTS["verbose"],
        timeout: Optional[float] = None,
        pre_dispatch: Any = "2 * n_jobs",
        batch_size: Any = "auto",
        temp_folder: Any = DEFAULTS["temp_folder"],
        max_nbytes: Any = DEFAULTS["max_nbytes"],
        mmap_mode: Any = DEFAULTS["mmap_mode"],
        prefer: Any = DEFAULTS["prefer"],
        require: Any = DEFAULTS["require"],
        progress: Any = None,
        **backend_kwargs: Any,
    ) -> None:
        if n_jobs is None:
            n_jobs = DEFAULTS["n_jobs"]
        active, config = active_backend(prefer=prefer, require=require, verbose=verbose)
        level = active.nesting_level
        self.verbose = int(resolve(verbose, "verbose", config))
        if timeout is not None:
            if not isinstance(timeout, numbers.Real) or timeout <= 0:
                raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.timeout = timeout
        self.pre_dispatch = pre_dispatch
        if return_as not in {"list", "generator", "generator_unordered"}:
            raise ValueError(
                'Expected `return_as` parameter to be a string equal to "list",'
                f'"generator" or "generator_unordered", but got {return_as} instead.'
            )
        self.return_as = return_as
        self.return_generator = return_as != "list"
        self.return_ordered = return_as != "generator_unordered"
        settings = {
            key: resolve(value, key, config)
            for value, key in [
                (max_nbytes, "max_nbytes"),
                (temp_folder, "temp_folder"),
                (mmap_mode, "mmap_mode"),
                (prefer, "prefer"),
                (require, "require"),
            ]
        }
        if isinstance(settings["max_nbytes"], str):
            settings["max_nbytes"] = memstr_to_bytes(settings["max_nbytes"])
        if settings["mmap_mode"] not in _MMAP_MODES:
            raise ValueError(
                f"mmap_mode should be one of {_MMAP_MODES}, got {settings['mmap_mode']!r}"
            )
        self.max_nbytes: Optional[int] = settings["max_nbytes"]
        self.temp_folder = settings["temp_folder"]
        self.mmap_mode = settings["mmap_mode"]
        require = settings["require"]

        if backend is DEFAULTS["backend"] or backend is None:
            backend = active
        elif looks_like_backend(backend):
            if backend.nesting_level is None:
                backend.nesting_level = level
        elif isinstance(backend, str) or (hasattr(backend, "Pool") and hasattr(backend, "Lock")):
            backend = _backend_instance(backend, level, **backend_kwargs)
        else:
            raise ValueError(
                f"Invalid backend: {backend!r}, expected one of {sorted(BACKENDS)}"
            )
        n_jobs = resolve(n_jobs, "n_jobs", config)
        if n_jobs is None:
            n_jobs = backend.default_n_jobs
        try:
            n_jobs = int(n_jobs)
        except (TypeError, ValueError):
            raise ValueError("n_jobs could not be converted to int") from None
        self.n_jobs = n_jobs
        if require == "sharedmem" and not getattr(backend, "supports_sharedmem", False):
            raise ValueError(f"Backend {backend} does not support shared memory")
        if not (batch_size == "auto" or (isinstance(batch_size, numbers.Integral) and batch_size > 0)):
            raise ValueError(
                f"batch_size must be 'auto' or a positive integer, got: {batch_size!r}"
            )
        self.batch_size = batch_size
        if not isinstance(backend, SequentialBackend) and self.return_generator:
            if not backend.supports_return_generator:
                raise ValueError(f"Backend {backend} does not support return_as={return_as}")
        self._backend = backend
        self.progress = _progress_callback(progress)
        self._generator_ref: Optional[weakref.ref] = None
        self._extra_kwargs = backend_kwargs
        self._settings = settings
        self._managed_backend = False
        self._custom_call: Optional[weakref.ref] = None
        self._initializer: Optional[tuple[Callable[..., Any], tuple]] = None
        if runs_on_engine(backend):
            # parallel_config's backend parameters, then Parallel's own.
            options = {**(getattr(backend, "backend_kwargs", None) or {}), **backend_kwargs}
            initializer, initargs = options.pop("initializer", None), options.pop("initargs", ())
            unknown = sorted(options)
            if unknown:
                raise TypeError(
                    f"Parallel got backend parameters joblet does not support: "
                    f"{', '.join(unknown)} (joblet's process pool is shared and reused across "
                    "calls; executor options other than initializer/initargs are not available)"
                )
            if initializer is not None:
                if backend.engine != "processes":
                    raise TypeError(
                        f"initializer is for process backends (loky, multiprocessing), not "
                        f"{type(backend).__name__}"
                    )
                if not callable(initializer):
                    raise TypeError(f"initializer must be callable, got {initializer!r}")
                self._initializer = (initializer, tuple(initargs))

    @functools.cached_property
    def _backend_kwargs(self) -> dict[str, Any]:
        """What joblib hands a backend's ``configure``: the settings and the extra keyword
        arguments (built on first use: joblet's own backends never need it)."""
        return {
            **self._extra_kwargs,
            **self._settings,
            "verbose": max(0, self.verbose - 50),
            "context": multiprocessing.get_context(),
        }

    @functools.cached_property
    def _id(self) -> str:
        """A unique id of this ``Parallel`` (joblib's; some backends key resources by it)."""
        return uuid.uuid4().hex

    def __enter__(self) -> "Parallel":
        # A custom backend is configured once for the block and terminated at its end, as in
        # joblib; joblet's own backends need neither (the worker pool is process-wide).
        if not runs_on_engine(self._backend):
            _custom.configure(self)
        self._managed_backend = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self._managed_backend = False
        _custom.release(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_jobs={self.n_jobs})"

    def _initialize_backend(self) -> int:
        """Prepares the backend as joblib does (a custom backend's ``configure``); the number
        of workers."""
        return _custom.configure(self)

    def _effective_n_jobs(self) -> int:
        """The number of workers a call made now would get."""
        return self._backend.effective_n_jobs(self.n_jobs)

    def _print(self, msg: str) -> None:
        """A verbose line, as joblib writes it (backends call this too)."""
        if not self.verbose:
            return
        stream = sys.stderr if self.verbose < 50 else sys.stdout
        stream.write(f"[{self}]: {msg}\n")

    def _engine_plan(self) -> tuple[str, int]:
        """The engine backend and worker count for a call made here."""
        backend = self._backend
        engine = getattr(backend, "engine", None)
        if engine is None:
            # A custom backend whose configure() said one worker: the caller runs the tasks.
            return "sequential", 1
        n = backend.effective_n_jobs(self.n_jobs)
        depth = _core.nesting_depth()
        if depth >= 2 or (depth == 1 and engine == "sequential"):
            engine = "sequential"
        elif depth == 1:
            # Inside a task of another call: threads, as joblib's nested backend.
            engine = "threads"
        return engine, n

    def __call__(self, iterable: Iterable[Any]) -> Any:
        running = self._generator_ref() if self._generator_ref is not None else None
        if running is not None:
            raise RuntimeError(
                "This Parallel instance is already running ! Before submitting new tasks, "
                "you must wait for the completion of all the previous tasks, or clean all "
                "references to the output generator."
            )
        if not runs_on_engine(self._backend):
            custom = _custom.run(self, iterable)
            if custom is not None:
                return self._hand_over(custom)
        engine, n = self._engine_plan()
        if n == 1:
            engine = "sequential"
        timeout = self.timeout
        if timeout is not None and engine == "sequential":
            # As joblib: a call that runs in the caller cannot stop a task; say so, run it.
            warnings.warn(
                f"The backend class 'SequentialBackend' does not support timeout. You have "
                f"set 'timeout={timeout}' in Parallel but the 'timeout' parameter will not "
                "be used.",
                UserWarning,
                stacklevel=2,
            )
            timeout = None
        if engine == "processes":
            _core.set_worker_command(
                sys.executable,
                ["-m", "joblet._worker", json.dumps(sys.path)],
                _worker_env(self._initializer),
            )
        out = _core.run(
            iter(iterable),
            backend=engine,
            n_jobs=n,
            batch_size=None if self.batch_size == "auto" else int(self.batch_size),
            pre_dispatch=str(self.pre_dispatch).replace(" ", ""),
            timeout=timeout,
            verbose=max(int(self.verbose), 0),
            return_as=self.return_as,
            max_nbytes=self.max_nbytes if self.max_nbytes is not None else 2**62,
            progress=self.progress,
            nested_levels=1,
            inner_max_num_threads=getattr(self._backend, "inner_max_num_threads", None),
            backend_name="SequentialBackend" if engine == "sequential" else type(self._backend).__name__,
        )
        return self._hand_over(out)

    def _hand_over(self, out: Any) -> Any:
        """The call's result: the list, or a generator over the running call."""
        if not self.return_generator:
            return out
        gen = self._generate(out)
        self._generator_ref = weakref.ref(gen)
        return gen

    def _generate(self, results: Any) -> Generator[Any, None, None]:
        # A real generator, as joblib returns: close() and garbage collection stop the call.
        try:
            yield from results
        finally:
            results.close()
            self._generator_ref = None


# Linux refuses a single environment string above 128 KiB.
_MAX_INITIALIZER_BYTES = 60 * 1024


def _worker_env(initializer: Optional[tuple[Callable[..., Any], tuple]]) -> list[tuple[str, str]]:
    """What worker processes need in their environment: the caller's multiprocessing
    ``authkey`` (when multiprocessing is in use), so that ``Manager()`` proxies passed to
    tasks can connect (workers are new interpreters, not forks: they would have their own);
    and the call's ``initializer`` with its ``initargs``, pickled, which each worker runs once
    when it starts. Workers started with another environment are not reused by the call."""
    env = []
    mp = sys.modules.get("multiprocessing.process")
    if mp is not None:
        env.append(("JOBLET_MP_AUTHKEY", bytes(mp.current_process().authkey).hex()))
    if initializer is not None:
        import cloudpickle

        blob = cloudpickle.dumps(initializer)
        if len(blob) > _MAX_INITIALIZER_BYTES:
            raise ValueError(
                f"initializer and initargs pickle to {len(blob)} bytes; joblet passes them to "
                f"workers in their environment, which takes at most {_MAX_INITIALIZER_BYTES}"
            )
        env.append(("JOBLET_WORKER_INIT", blob.hex()))
    return env


def _progress_callback(progress: Any) -> Optional[Callable[[int, Optional[int]], None]]:
    if progress is None or progress is False:
        return None
    if callable(progress):
        return progress
    if progress is True:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            raise ValueError("progress=True needs tqdm (pip install tqdm); pass a callable instead") from None
        bar = tqdm()

        def update(done: int, total: Optional[int]) -> None:
            if total is not None and bar.total != total:
                bar.total = total
            bar.update(done - bar.n)
            if total is not None and done >= total:
                bar.close()

        return update
    raise ValueError(f"progress must be None, a bool or a callable, got {progress!r}")
