"""Compressors registered by users (joblib's ``register_compressor``).

joblet's own compressors run in Rust, section by section. A registered one is joblib's
kind: a file-object class (``gzip.GzipFile``-like) behind a ``CompressorWrapper``. ``dump``
runs it in Python on the pickle stream and on each array's bytes, and stores the results as
raw sections of the container, after a small marker stream that names the compressor, so
that ``load`` knows which registered compressor to ask (and says so when it is missing).
"""

from __future__ import annotations

import io
from typing import Any, Dict, Optional

#: The object stream of a container whose sections a registered compressor made: these
#: bytes, then the compressor's name (UTF-8). No pickle stream starts like this.
EXTERNAL_MARK = b"JOBLET-EXTERNAL-COMPRESSOR\x00"

_REGISTERED: Dict[str, Any] = {}


class CompressorWrapper:
    """joblib's interface for a compressor: ``obj`` is a file-object class opened as
    ``obj(fileobj, "wb", compresslevel=...)`` to compress and ``obj(fileobj, "rb")`` to
    decompress; ``prefix`` is its magic bytes; ``extension`` the file extension that picks
    it in ``dump``."""

    def __init__(self, obj: Any, prefix: bytes = b"", extension: str = "") -> None:
        self.fileobj_factory = obj
        self.prefix = prefix
        self.extension = extension

    def compressor_file(self, fileobj: Any, compresslevel: Optional[int] = None) -> Any:
        if compresslevel is None:
            return self.fileobj_factory(fileobj, "wb")
        return self.fileobj_factory(fileobj, "wb", compresslevel=compresslevel)

    def decompressor_file(self, fileobj: Any) -> Any:
        return self.fileobj_factory(fileobj, "rb")


def register_compressor(compressor_name: str, compressor: Any, force: bool = False) -> None:
    """Register ``compressor`` (a ``CompressorWrapper``, joblet's or joblib's) under
    ``compressor_name`` for ``dump(..., compress=(compressor_name, level))`` and for files
    named with its extension; joblib's checks and errors."""
    if not isinstance(compressor_name, str):
        raise ValueError(f"Compressor name should be a string, '{compressor_name}' given.")
    if not all(
        hasattr(compressor, a) for a in ("compressor_file", "decompressor_file", "fileobj_factory")
    ):
        raise ValueError(
            f"Compressor should implement the CompressorWrapper interface, '{compressor}' given."
        )
    factory = compressor.fileobj_factory
    if factory is not None and not all(
        hasattr(factory, a) for a in ("read", "write", "seek", "tell")
    ):
        raise ValueError(
            "Compressor 'fileobj_factory' attribute should implement the file object "
            f"interface, '{factory}' given."
        )
    if compressor_name in _REGISTERED and not force:
        raise ValueError(f"Compressor '{compressor_name}' already registered.")
    _REGISTERED[compressor_name] = compressor


def registered(name: str) -> Optional[Any]:
    """The compressor registered as ``name``, if any."""
    return _REGISTERED.get(name)


def extensions() -> Dict[str, str]:
    """Extension -> name of the registered compressors that have one."""
    return {c.extension: n for n, c in _REGISTERED.items() if getattr(c, "extension", "")}


def compress(name: str, level: Optional[int], data: Any) -> bytes:
    out = io.BytesIO()
    with _REGISTERED[name].compressor_file(out, compresslevel=level) as f:
        f.write(memoryview(data).cast("B"))
    return out.getvalue()


def decompress(name: str, data: bytes, path: str) -> bytearray:
    wrapper = _REGISTERED.get(name)
    if wrapper is None:
        raise ValueError(
            f"{path}: written with the compressor {name!r}, which is not registered here; "
            "register it with joblet.register_compressor first"
        )
    with wrapper.decompressor_file(io.BytesIO(data)) as f:
        return bytearray(f.read())
