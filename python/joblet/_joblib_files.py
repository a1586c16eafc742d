"""Reading files written by ``joblib.dump`` (joblib 0.10 and later), without joblib.

joblib writes one pickle stream in which every numpy array is a ``NumpyArrayWrapper``
object (its dtype, shape and order) followed, in the file, by the array's raw bytes (after
a padding byte and padding, since joblib 1.2) or, for object arrays, by a nested pickle.
The whole file may be compressed (zlib, gzip, bz2, lzma, xz, lz4), recognized by its first
bytes. Reading the raw bytes right after the wrapper is built needs the pure-Python
unpickler (its dispatch table can be extended); arrays of uncompressed files can be
memory-mapped where they lie.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, BinaryIO, Callable, Optional

from . import _core, _safe_unpickle

#: joblib's compressed files begin with these bytes (its compressors' magic numbers).
_PREFIXES = (
    (b"\x78", "zlib"),
    (b"\x1f\x8b", "gzip"),
    (b"BZ", "bz2"),
    (b"\xfd7zXZ", "xz"),
    (b"\x5d\x00\x00", "lzma"),
    (b"\x04\x22\x4d\x18", "lz4"),
)

_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")


def compressor_of(head: bytes) -> Optional[str]:
    """The compressor a joblib file's first bytes name, or None (a plain pickle)."""
    for prefix, name in _PREFIXES:
        if head.startswith(prefix):
            return name
    return None


class _ArrayInFile:
    """Stands for joblib's ``NumpyArrayWrapper``: pickle sets its attributes (subclass,
    shape, order, dtype, allow_mmap, numpy_array_alignment_bytes)."""


class _Reader(pickle._Unpickler):  # type: ignore[name-defined,misc]
    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def __init__(
        self,
        file: BinaryIO,
        path: str,
        mmap_mode: Optional[str],
        native: bool,
        find_class: Callable[[str, str], Any],
    ) -> None:
        super().__init__(file)
        self._file = file
        self._path = path
        self._safe = getattr(find_class, "safe", False)
        self._mmap_mode = mmap_mode
        self._native = native
        self._outer_find_class = find_class

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == _WRAPPER:
            return _ArrayInFile
        return self._outer_find_class(module, name)

    def _load_build(self) -> None:
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]
        if isinstance(self.stack[-1], _ArrayInFile):
            self.stack[-1] = self._read_array(self.stack[-1])

    dispatch[pickle.BUILD[0]] = _load_build
    # In safe mode, dtypes are rebuilt, never given their state (see _safe_unpickle).
    _safe_unpickle.install_safe_build(dispatch)

    def _read_array(self, wrapper: _ArrayInFile) -> Any:
        import numpy as np

        dtype = np.dtype(wrapper.dtype)  # type: ignore[attr-defined]
        shape = tuple(int(n) for n in wrapper.shape)  # type: ignore[attr-defined]
        order = wrapper.order  # type: ignore[attr-defined]
        if dtype.hasobject:
            inner = _Reader(self._file, self._path, None, False, self._outer_find_class)
            array = inner.load()
        else:
            if getattr(wrapper, "numpy_array_alignment_bytes", None) is not None:
                padding = self._file.read(1)
                if len(padding) != 1:
                    raise ValueError(f"{self._path}: truncated before an array's padding")
                self._file.read(padding[0])
            count = 1
            for n in shape:
                count *= n
            nbytes = count * dtype.itemsize
            start = self._file.tell()
            if self._mmap_mode is not None and getattr(wrapper, "allow_mmap", True) and nbytes:
                mode = "r+" if self._mmap_mode == "w+" else self._mmap_mode
                array = np.memmap(
                    self._path, dtype=dtype, mode=mode, offset=start, shape=shape, order=order
                )
                self._file.seek(start + nbytes)
                return array
            flat = np.empty(count, dtype=dtype)
            got = self._file.readinto(memoryview(flat.view(np.uint8)))  # type: ignore[attr-defined]
            if got != nbytes:
                raise ValueError(
                    f"{self._path}: truncated inside an array at byte {start}: "
                    f"{got} of its {nbytes} bytes"
                )
            if order == "F":
                array = flat.reshape(shape[::-1]).transpose()
            else:
                array = flat.reshape(shape)
        if self._native and isinstance(array, np.ndarray) and not array.dtype.isnative:
            array = array.byteswap().view(array.dtype.newbyteorder("="))
        subclass = getattr(wrapper, "subclass", np.ndarray)
        if subclass is _safe_unpickle.NdarrayTag:
            subclass = np.ndarray
        if subclass not in (np.ndarray, np.memmap) and isinstance(subclass, type):
            array = array.view(subclass)
        return array


def load_from(
    f: BinaryIO,
    path: str,
    mmap_mode: Optional[str],
    native: bool,
    find_class: Callable[[str, str], Any],
) -> Any:
    """The value in the joblib stream ``f`` (from its current position); arrays are mapped
    from ``path`` only with ``mmap_mode`` on an uncompressed stream that is that file."""
    start = f.tell()
    head = f.read(8)
    f.seek(start)
    compressor = compressor_of(head)
    if compressor is None:
        # Arrays are read (or mapped) where they lie.
        return _Reader(f, path, mmap_mode, native, find_class).load()
    data = _core.decompress(compressor, f.read())
    # Compressed: the arrays are in memory, as joblib does it (no maps).
    return _Reader(io.BytesIO(data), path, None, native, find_class).load()
