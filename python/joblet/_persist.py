"""``dump`` and ``load``: values with big arrays in them, in joblet's container.

The value is pickled with protocol 5: every numeric array's bytes leave the pickle stream as
an out-of-band buffer and are stored as a raw section of the container (``joblet.persist`` in
the engine), aligned, checksummed and compressed on their own, so that ``load`` gives them
to numpy without a copy, or maps them (``mmap_mode``) without reading them.
"""

from __future__ import annotations

import io
import os
import pickle
import shutil
import tempfile
import warnings
from typing import Any, List, Optional, Sequence, Tuple, Union

from . import _compressors, _core, _safe_unpickle

#: The compressors ``compress`` may name: joblib's, then joblet's own.
COMPRESSORS = ("zlib", "gzip", "bz2", "lzma", "xz", "lz4", "zstd")

#: The compressor a file's extension picks when ``compress`` does not say (joblib's rule).
_EXTENSIONS = {
    ".z": "zlib",
    ".gz": "gzip",
    ".bz2": "bz2",
    ".lzma": "lzma",
    ".xz": "xz",
    ".lz4": "lz4",
    ".zst": "zstd",
}

_DEFAULT_LEVEL = 3
#: The first bytes of a joblet container (``joblet.persist::MAGIC``).
_MAGIC = b"\x93JOBLET\n"
_MMAP_MODES = (None, "r+", "r", "w+", "c")


#: The compressor of ``compress=True`` or a bare level. joblib's is zlib; zstd compresses
#: better and several times faster (``benchmarks/python/bench_persist.py``), and joblet's
#: files are its own anyway. ``("zlib", level)`` still gives zlib.
DEFAULT_COMPRESSOR = "zstd"


def _compression(compress: Any, filename: str) -> Tuple[str, int]:
    """joblib's ``compress`` argument as (compressor, level); level 0 means stored."""
    method = DEFAULT_COMPRESSOR
    level: Optional[int]
    explicit = False
    if compress is True:
        level = None
    elif compress is False or compress is None:
        level = 0
    elif isinstance(compress, tuple):
        if len(compress) != 2:
            raise ValueError(
                "compress: a tuple must be (compressor, level), "
                f"not {compress!r}"
            )
        method, level = compress
        explicit = True
    elif isinstance(compress, str):
        # A name says which compressor, whatever the extension (as joblib).
        method, level = compress, None
        explicit = True
    elif isinstance(compress, int):
        if not 0 <= compress <= 9:
            raise ValueError(f"compress: level {compress!r} is not valid; expected 0 to 9")
        level = compress
    else:
        raise ValueError(f"compress: expected a bool, an int, a str or a tuple, not {compress!r}")
    external = _compressors.registered(method) is not None
    if method not in COMPRESSORS and not external:
        raise ValueError(
            f"compress: unknown compressor {method!r}; expected one of {list(COMPRESSORS)} "
            "or a name given to register_compressor"
        )
    max_level = 22 if method == "zstd" and not external else 9
    if level is not None and (
        isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= max_level
    ):
        raise ValueError(
            f"compress: level {level!r} is not valid for {method}; expected 0 to {max_level}"
        )
    if not explicit:
        for extension, name in {**_EXTENSIONS, **_compressors.extensions()}.items():
            if filename.lower().endswith(extension):
                method = name
                if level == 0:
                    level = None
    if level is None:
        level = _DEFAULT_LEVEL
    return method, level


class _Pickler(pickle.Pickler):
    """Protocol 5 with every numeric array's bytes out of band: arrays that are neither C-
    nor Fortran-contiguous are stored as a contiguous copy (numpy would put them in the
    stream), and ``np.memmap`` objects as the arrays they hold."""

    def __init__(self, file: io.BytesIO, protocol: int, buffers: List[Any]) -> None:
        super().__init__(file, protocol=protocol, buffer_callback=buffers.append)
        try:
            import numpy
        except ImportError:  # pragma: no cover - numpy is optional
            numpy = None
        self._np = numpy

    def reducer_override(self, obj: Any) -> Any:
        np = self._np
        if np is None or not isinstance(obj, np.ndarray) or obj.dtype.hasobject:
            return NotImplemented
        if type(obj) is not np.ndarray:
            # np.memmap (and other subclasses kept as numpy keeps them): the data only.
            if not isinstance(obj, np.memmap):
                return NotImplemented
            obj = np.asarray(obj)
        if not (obj.flags.c_contiguous or obj.flags.f_contiguous):
            obj = np.ascontiguousarray(obj)
        return obj.__reduce_ex__(5)


def dump(
    value: Any,
    filename: Union[str, "os.PathLike[str]"],
    compress: Any = 0,
    protocol: Optional[int] = None,
) -> List[str]:
    """Persist ``value`` into ``filename``; joblib's ``dump``.

    ``compress``: 0/False (stored: arrays can be memory-mapped by ``load``), True (zstd,
    level 3: where joblib uses zlib, since zstd is faster and smaller), an int 1-9 (zstd at
    that level), a compressor's name (level 3), or a ``(name, level)`` tuple; the names are
    joblib's (zlib, gzip, bz2, lzma, xz, lz4) and ``zstd`` (levels up to 22). Without a tuple, a file name ending in ``.z``, ``.gz``,
    ``.bz2``, ``.lzma``, ``.xz``, ``.lz4`` or ``.zst`` picks its compressor. Each array is
    compressed on its own. The file appears whole or not at all (written under a temporary
    name, then renamed). Returns ``[filename]``, as joblib does; ``filename`` may also be an
    open binary file object, written into (then None is returned, as joblib does).
    """
    if hasattr(filename, "write"):
        # A file object (joblib writes into it and returns None): the container is written
        # to a temporary file (its writer needs to seek and rename), then copied into it.
        method, level = _compression(compress, getattr(filename, "name", "") or "")
        fd, temporary = tempfile.mkstemp(prefix="joblet-dump-")
        os.close(fd)
        try:
            _dump_to_path(value, temporary, method, level, protocol)
            with open(temporary, "rb") as f:
                shutil.copyfileobj(f, filename)
        finally:
            os.remove(temporary)
        return None  # type: ignore[return-value]
    if not isinstance(filename, (str, os.PathLike)):
        raise ValueError(
            "joblet.dump: the second argument must be a file name, "
            f"not {filename!r} (of type {type(filename).__name__})"
        )
    path = os.fspath(filename)
    method, level = _compression(compress, path)
    _dump_to_path(value, path, method, level, protocol)
    return [path]


def _dump_to_path(value: Any, path: str, method: str, level: int, protocol: Optional[int]) -> None:
    if protocol is None or protocol < 0:
        protocol = pickle.HIGHEST_PROTOCOL
    buffers: List[Any] = []
    stream = io.BytesIO()
    if protocol >= 5:
        _Pickler(stream, protocol, buffers).dump(value)
    else:
        pickle.Pickler(stream, protocol=protocol).dump(value)
    if level and _compressors.registered(method) is not None and method not in COMPRESSORS:
        # A registered compressor (Python): every section compressed by it, stored raw,
        # behind a marker stream naming it.
        sections = [_compressors.compress(method, level, stream.getbuffer())]
        sections += [_compressors.compress(method, level, b.raw()) for b in buffers]
        marker = _compressors.EXTERNAL_MARK + method.encode()
        _core.dump_container(path, marker, sections, "zlib", 0)
        return
    _core.dump_container(path, stream.getvalue(), buffers, method, level)


_FROMBUFFER = {("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}


def _find_class(path: str, allow_pickle: bool) -> Any:
    """``find_class`` for a file at ``path``: any name, or only the safe ones (what they
    stand for in a safe load: ``_safe_unpickle``)."""
    safe = None if allow_pickle else _safe_unpickle.safe_globals()

    def find(module: str, name: str) -> Any:
        if safe is not None:
            if (module, name) not in safe:
                raise pickle.UnpicklingError(
                    f"{path}: loading {module}.{name} could run code from the file, and "
                    "allow_pickle=False; load it with allow_pickle=True only if you trust it"
                )
            return safe[(module, name)]
        return pickle.Unpickler.find_class(_PLAIN, module, name)

    find.safe = safe is not None  # type: ignore[attr-defined]
    return find


#: An unpickler whose ``find_class`` is the standard one (imports the name).
_PLAIN = pickle.Unpickler(io.BytesIO(b""))


class _ArrayHooks:
    """What both unpicklers add: numpy's out-of-band arrays rebuilt over the container's
    buffers (or maps), and ``find_class`` as the file's trust allows."""

    _native: bool
    _find: Any

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _FROMBUFFER:
            # Not a bound method: the unpickler's memo keeps what find_class returns, and a
            # method would make memo -> method -> unpickler a cycle, keeping every loaded
            # array alive until Python's next full garbage collection.
            return _native_arrays if self._native else _arrays
        return self._find(module, name)


def _arrays(buffer: Any, dtype: Any, shape: Any, order: str, native: bool = False) -> Any:
    """numpy's out-of-band array rebuilt over a container's buffer (or map); with
    ``native``, in the machine's byte order (``ensure_native_byte_order``)."""
    import numpy as np

    source = buffer.obj if isinstance(buffer, memoryview) else buffer
    if isinstance(source, np.memmap):
        return source.view(dtype).reshape(shape, order=order)
    array = np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)
    if native and not array.dtype.isnative:
        array = array.byteswap().view(array.dtype.newbyteorder("="))
    return array


def _native_arrays(buffer: Any, dtype: Any, shape: Any, order: str) -> Any:
    return _arrays(buffer, dtype, shape, order, native=True)


class _Unpickler(_ArrayHooks, pickle.Unpickler):
    """The C unpickler, for files one trusts."""

    def __init__(
        self, stream: io.BytesIO, buffers: Sequence[Any], path: str, native: bool
    ) -> None:
        super().__init__(stream, buffers=buffers)
        self._native = native
        self._find = _find_class(path, True)


class _SafeUnpickler(_ArrayHooks, pickle._Unpickler):  # type: ignore[name-defined,misc]
    """The pure-Python unpickler, whose BUILD step can be checked, for allow_pickle=False."""

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]
    _safe = True

    def __init__(
        self, stream: io.BytesIO, buffers: Sequence[Any], path: str, native: bool
    ) -> None:
        super().__init__(stream, buffers=buffers)
        self._path = path
        self._native = native
        self._find = _find_class(path, False)


_safe_unpickle.install_safe_build(_SafeUnpickler.dispatch)


def load(
    filename: Union[str, "os.PathLike[str]"],
    mmap_mode: Optional[str] = None,
    ensure_native_byte_order: Union[bool, str] = "auto",
    allow_pickle: bool = True,
) -> Any:
    """Reconstruct the value that ``dump`` stored in ``filename``; joblib's ``load``.

    ``mmap_mode`` (``"r"``, ``"r+"``, ``"c"``, ``"w+"`` as numpy names them): arrays stored
    uncompressed come back as ``np.memmap`` objects over the file, without being read
    (arrays of compressed files are decompressed, as joblib does). Every section read is
    checked against its checksum first: a damaged file raises ``ValueError`` naming the file
    and the byte offset, never loads wrong values. Mapped arrays are not read, so not
    checked; ``"r+"`` (and ``"w+"``, which maps an existing file as ``"r+"``) marks them
    unchecked in the file, since writes through the map change them for good.

    ``ensure_native_byte_order``: as joblib's (``"auto"``: True without ``mmap_mode``).

    Files written by ``joblib.dump`` (joblib 0.10 and later, compressed or not) load too,
    without joblib installed, with the same ``mmap_mode`` and ``allow_pickle``. ``filename``
    may also be an open binary file object (read from its position; nothing is mapped).

    ``allow_pickle=False`` loads only arrays of plain dtypes, numbers, strings, bytes and
    Python's built-in containers, and refuses anything else the file names (a class, a
    function, a structured dtype) with ``pickle.UnpicklingError`` before it could run any
    code or touch memory it should not (``_safe_unpickle``): for files you do not trust. It
    does not bound how much memory a file may ask for.
    """
    if mmap_mode not in _MMAP_MODES:
        raise ValueError(f"mmap_mode must be one of {list(_MMAP_MODES)}, not {mmap_mode!r}")
    if ensure_native_byte_order == "auto":
        ensure_native_byte_order = mmap_mode is None
    if ensure_native_byte_order and mmap_mode is not None:
        raise ValueError(
            "ensure_native_byte_order can only be True without mmap_mode, "
            f"but mmap_mode={mmap_mode!r}"
        )
    if hasattr(filename, "read"):
        return _load_file_object(filename, mmap_mode, bool(ensure_native_byte_order), allow_pickle)
    path = os.fspath(filename)
    native = bool(ensure_native_byte_order)
    try:
        if mmap_mode in ("r+", "w+"):
            # Writes through the maps change the arrays' bytes for good: their checksums no
            # longer hold, and later loads must not call that damage.
            _core.unchecked_for_writing(path)
        # Mapped arrays are not read, so not checked (the rest of the file is).
        objects, raw = _core.load_container(
            path, mmap_mode is not None, verify=False, alloc=_allocate
        )
    except ValueError:
        # Not read as a container: damaged, or another kind of file (only then is it
        # opened once more, to tell; a cache hit does not pay for the question).
        if _core.is_container(path):
            raise
        return _load_other(path, mmap_mode, native, allow_pickle)
    if objects.startswith(_compressors.EXTERNAL_MARK):
        # Sections a registered compressor made (never mapped: they are compressed).
        name = objects[len(_compressors.EXTERNAL_MARK) :].decode()
        if mmap_mode is not None:
            objects, raw = _core.load_container(path, False, alloc=_allocate)
        parts = [_compressors.decompress(name, bytes(b), path) for b in raw]
        if not parts:
            raise ValueError(f"{path}: damaged: no object stream after the compressor's name")
        objects, raw = bytes(parts[0]), parts[1:]
    buffers: List[Any] = []
    for b in raw:
        if isinstance(b, tuple):
            buffers.append(_map(path, mmap_mode, *b))
        else:
            buffers.append(b)
    if allow_pickle:
        return _Unpickler(io.BytesIO(objects), buffers, path, native).load()
    return _SafeUnpickler(io.BytesIO(objects), buffers, path, native).load()


def _load_file_object(
    fobj: Any, mmap_mode: Optional[str], native: bool, allow_pickle: bool
) -> Any:
    """A value from an open binary file object (from its current position). Nothing can be
    mapped from it: ``mmap_mode`` is ignored with a warning, as joblib does for streams."""
    name = str(getattr(fobj, "name", "") or "<file object>")
    if mmap_mode is not None:
        warnings.warn(
            f"{name}: arrays cannot be memory-mapped from a file object; loading them in memory",
            stacklevel=3,
        )
    head = fobj.read(8)
    if head != _MAGIC:
        return _load_foreign(io.BytesIO(head + fobj.read()), name, None, native, allow_pickle)
    # A container: its reader needs a file to seek in.
    fd, temporary = tempfile.mkstemp(prefix="joblet-load-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head)
            shutil.copyfileobj(fobj, f)
        try:
            return load(temporary, None, native, allow_pickle)
        except ValueError as e:
            # Name what the caller gave, not the temporary copy.
            raise ValueError(str(e).replace(temporary, name)) from e
    finally:
        os.remove(temporary)


def _load_other(path: str, mmap_mode: Optional[str], native: bool, allow_pickle: bool) -> Any:
    """A file that is not a readable joblet container."""
    with open(path, "rb") as f:
        return _load_foreign(f, path, mmap_mode, native, allow_pickle)


def _load_foreign(
    f: Any, name: str, mmap_mode: Optional[str], native: bool, allow_pickle: bool
) -> Any:
    """A stream (seekable, at its start) that is not a readable joblet container: a truncated
    one, one written by joblib.dump (a pickle stream, protocol 2 or later, maybe compressed
    whole), or neither. Arrays are mapped from ``name`` only with ``mmap_mode``."""
    from . import _joblib_files

    start = f.tell()
    head = f.read(8)
    f.seek(start)
    if _MAGIC.startswith(head):
        raise ValueError(
            f"{name}: damaged at byte {len(head)}: the file ends inside a joblet "
            "container's header (truncated?)"
        )
    if not (head.startswith(b"\x80") or _joblib_files.compressor_of(head)):
        raise ValueError(
            f"{name}: neither a joblet container nor a file written by joblib.dump "
            f"(it starts with {head!r})"
        )
    try:
        return _joblib_files.load_from(f, name, mmap_mode, native, _find_class(name, allow_pickle))
    except EOFError as e:
        raise ValueError(f"{name}: the pickle stream ends early (truncated?)") from e


def _allocate(nbytes: int) -> Any:
    """Memory for an array read from a file: numpy's, so that the arrays are numpy's own
    (and get its big-allocation care, transparent huge pages where the system has them)."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is optional
        return bytearray(nbytes)
    return np.empty(nbytes, dtype=np.uint8)


def _map(path: str, mode: Optional[str], offset: int, length: int) -> Any:
    import numpy as np

    if length == 0:
        return bytearray()
    # "w+" would truncate the file: the arrays of an existing file open as "r+".
    mode = "r+" if mode == "w+" else mode
    return np.memmap(path, dtype=np.uint8, mode=mode, offset=offset, shape=(length,))

