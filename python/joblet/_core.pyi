"""Stubs of the compiled module ``joblet._core`` (crates/joblet-py)."""

import os
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

class Delayed:
    """The base of what ``delayed(function)`` returns: calling it returns
    ``(function, args, kwargs)``; other attributes are the function's."""

    def __init__(self, function: Callable[..., Any]) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> tuple[Callable[..., Any], tuple, dict]: ...
    @property
    def __wrapped__(self) -> Callable[..., Any]: ...
    def __getattr__(self, name: str) -> Any: ...

class ReceivedBuffer:
    """Bytes received from a worker or the caller, lent to Python as a writable buffer
    (numpy arrays rebuilt by pickle use it in place)."""

    def __len__(self) -> int: ...
    def __buffer__(self, flags: int) -> memoryview: ...

class Results(Iterator[Any]):
    """The results of a ``generator`` or ``generator_unordered`` call."""

    def __iter__(self) -> "Results": ...
    def __next__(self) -> Any: ...
    def close(self) -> None:
        """Stops the call; results not yet taken are lost."""

def run(
    tasks: Iterator[Any],
    *,
    backend: str,
    n_jobs: int,
    batch_size: Optional[int] = None,
    pre_dispatch: Optional[str] = None,
    timeout: Optional[float] = None,
    verbose: int = 0,
    return_as: str = "list",
    max_nbytes: Optional[int] = None,
    progress: Optional[Callable[[int, Optional[int]], None]] = None,
    nested_levels: int = 0,
    inner_max_num_threads: Optional[int] = None,
    backend_name: Optional[str] = None,
) -> Any:
    """Runs ``(function, args, kwargs)`` triples on the engine's ``backend``
    (``"sequential"``, ``"threads"`` or ``"processes"``) with ``n_jobs`` workers; returns a
    list, or a ``Results`` iterator for the generator modes. ``inner_max_num_threads`` sets the
    workers' thread-count variables; ``backend_name`` names the backend in verbose lines."""

def shutdown() -> None:
    """At interpreter exit: keeps engine threads out of Python from now on, and waits for
    those inside to leave."""

def worker_main() -> Optional[int]:
    """Serves tasks in a worker process; the exit code, or None outside a worker."""

def set_worker_command(
    program: str, args: list[str], env: list[tuple[str, str]] = ...
) -> None:
    """The command that starts worker processes, and variables added to their environment.
    Idle workers started another way are not reused."""

def cpu_count() -> int:
    """The CPUs this process may use (affinity and cgroup quota)."""

def nesting_depth() -> int:
    """How many parallel calls enclose the calling code."""

def set_worker_idle_timeout(seconds: float) -> None:
    """How long idle worker processes wait for the next call before they exit."""

def dump_container(
    filename: str, objects: bytes, buffers: list[Any], compressor: str, level: int
) -> None:
    """Writes a container: the pickle stream and its out-of-band buffers (each a section),
    compressed with ``compressor`` at ``level`` (0: stored). Atomic: a temporary file,
    renamed at the end."""

def load_container(
    filename: str,
    mappable: bool = False,
    verify: bool = True,
    alloc: Optional[Callable[[int], Any]] = None,
) -> tuple[bytes, list[Any]]:
    """Reads a container: the pickle stream and its buffers, each checked against its
    checksum and read into ``alloc(nbytes)`` (a writable buffer; a ``ReceivedBuffer``
    without ``alloc``); with ``mappable``, ``(offset, length)`` for the buffers stored
    uncompressed, checked only with ``verify``."""

def unchecked_for_writing(filename: str) -> None:
    """Marks the container's uncompressed buffers as no longer checked, before they are
    mapped writable in place."""

def decompress(compressor: str, data: bytes) -> bytes:
    """``data`` decompressed by ``compressor`` (zlib, gzip, bz2, lzma, xz, lz4 or zstd),
    however long."""

def content_hash(obj: Any, coerce_mmap: bool = False) -> str:
    """The blake3 content digest of ``obj`` (64 hex digits) by joblib's hashing rules;
    ``joblet.hash`` truncates it to the length of ``hash_name``'s digest."""

def is_container(filename: str) -> bool:
    """Whether the file starts with a joblet container's magic bytes."""

# One store entry: (function directory, argument hash, entry path, bytes, last access as
# seconds since the epoch).
_Entry = tuple[str, str, Path, int, float]

class Store:
    """The on-disk store of ``Memory`` (``joblet::Store``): ``<location>/<function>/
    <hash[:2]>/<hash>/``, entries committed by renaming a temporary directory into place,
    everything private to the user. Errors are ``OSError`` (``ValueError`` for a bad name),
    naming the path."""

    def __init__(self, location: Union[str, "os.PathLike[str]"]) -> None: ...
    @property
    def location(self) -> Path: ...
    @staticmethod
    def function_dir_name(module: str, qualname: str) -> str:
        """A filesystem-safe directory name for the function ``module.qualname``."""
    def entry_path(self, function: str, hash: str) -> Path: ...
    def contains(self, function: str, hash: str) -> bool: ...
    def begin(self, function: str, hash: str) -> Path:
        """A new private temporary directory to write the entry's files into."""
    def commit(self, function: str, hash: str, tmp: Union[str, "os.PathLike[str]"]) -> bool:
        """Renames ``tmp`` into place; False if another writer's entry was kept (``tmp`` is
        removed)."""
    def abort(self, tmp: Union[str, "os.PathLike[str]"]) -> None: ...
    def hit(self, function: str, hash: str) -> Optional[str]:
        """The entry's directory, its access recorded now; None if there is no entry."""
    def touch(self, function: str, hash: str) -> None:
        """Records an access now (least recently used entries are evicted first)."""
    def remove(self, function: str, hash: str) -> bool: ...
    def entries(self, function: Optional[str] = None) -> list[_Entry]: ...
    def reduce_size(
        self,
        bytes_limit: Optional[int] = None,
        items_limit: Optional[int] = None,
        age_limit: Optional[float] = None,
    ) -> list[_Entry]:
        """Deletes least recently used entries first until within the limits (age in
        seconds); returns those deleted."""
    def clear(self, function: Optional[str] = None) -> None: ...
    def func_code(self, function: str) -> Optional[str]: ...
    def set_func_code(self, function: str, code: str) -> None: ...
