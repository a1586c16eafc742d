"""``joblet.dump`` / ``joblet.load``: round trips of nested values with arrays of every kind,
every compressor, memory maps, damaged files, the safe mode, and writers racing on one
file. (pytest-timeout bounds every test: pyproject's ``timeout``.)"""

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import joblet

COMPRESSORS = ["zlib", "gzip", "bz2", "lzma", "xz", "lz4", "zstd"]


def _arrays():
    rng = np.random.default_rng(0)
    structured = np.zeros(4, dtype=[("x", "<f8"), ("n", "<i4"), ("tag", "S3")])
    structured["x"] = [1.5, 2.5, 3.5, 4.5]
    structured["tag"] = [b"a", b"bc", b"def", b""]
    return {
        "bool": rng.random(100) > 0.5,
        "int8": np.arange(-50, 50, dtype=np.int8),
        "uint16": np.arange(1000, dtype=np.uint16),
        "int64": np.arange(-(10**12), -(10**12) + 77, dtype=np.int64),
        "float16": np.linspace(0, 1, 33, dtype=np.float16),
        "float32": rng.random((7, 9), dtype=np.float32),
        "float64": rng.random((5, 6, 7)),
        "complex128": rng.random(10) + 1j * rng.random(10),
        "datetime": np.arange("2020-01-01", "2020-02-01", dtype="datetime64[D]"),
        "timedelta": np.arange(5, dtype="timedelta64[s]"),
        "unicode": np.array(["α", "beta", ""], dtype="U4"),
        "bytes": np.array([b"x", b"yz"], dtype="S2"),
        "structured": structured,
        "fortran": np.asfortranarray(rng.random((4, 3))),
        "big_endian": np.arange(20, dtype=">f8"),
        "non_contiguous": np.arange(100.0).reshape(10, 10)[::2, 1::3],
        "empty": np.zeros((0, 3)),
        "zero_d": np.array(3.25),
        "objects": np.array([{"k": 1}, None, "s", 4], dtype=object),
        "read_only": np.frombuffer(b"\x01\x02\x03\x04", dtype=np.uint8),
    }


def _value():
    return {
        "arrays": _arrays(),
        "nested": [1, 2.5, "text", b"bytes", (None, True), {"inner": np.arange(3)}],
        "set": {1, 2, 3},
        "scalar": np.float32(1.25),
    }


def _assert_same(got, want, path="value"):
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), path
        assert got.shape == want.shape, path
        assert got.dtype.newbyteorder("=") == want.dtype.newbyteorder("="), path
        if want.dtype.hasobject:
            assert list(got) == list(want), path
        else:
            np.testing.assert_array_equal(got, want, err_msg=path)
        return
    if isinstance(want, dict):
        assert set(got) == set(want), path
        for k in want:
            _assert_same(got[k], want[k], f"{path}[{k!r}]")
        return
    if isinstance(want, (list, tuple)):
        assert type(got) is type(want) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same(g, w, f"{path}[{i}]")
        return
    assert got == want and type(got) is type(want), path


@pytest.mark.parametrize("compress", [0, 3, True] + COMPRESSORS + [("zstd", 19), ("lz4", 1)])
def test_nested_values_round_trip_with_every_compressor(tmp_path, compress):
    value = _value()
    path = tmp_path / "value.pkl"
    assert joblet.dump(value, path, compress=compress) == [str(path)]
    got = joblet.load(path)
    _assert_same(got, value)
    arrays = got["arrays"]
    assert arrays["fortran"].flags.f_contiguous
    assert arrays["big_endian"].dtype.isnative, "ensure_native_byte_order='auto' swaps"
    assert arrays["float64"].flags.writeable, "loaded arrays belong to the caller"
    assert os.listdir(tmp_path) == ["value.pkl"], "no temporary file left"


CHUNK = 4 << 20  # the container's chunk size: compressed arrays above it are chunks


@pytest.mark.parametrize("compress", [True] + COMPRESSORS)
def test_arrays_bigger_than_a_chunk_round_trip_with_every_compressor(tmp_path, compress):
    # Two chunks and a ragged one; one array just above a chunk, one of exactly one chunk.
    smooth = np.round(np.sin(np.arange((2 * CHUNK + 1234) // 8) * 1e-3) * 100, 3)
    value = {
        "chunks": smooth,
        "fortran": np.asfortranarray(smooth[: CHUNK // 8 + 8].reshape(-1, 8)),
        "one": np.arange(CHUNK // 4, dtype=np.int32),
        "tag": "t",
    }
    path = tmp_path / "big.pkl"
    joblet.dump(value, path, compress=compress)
    got = joblet.load(path)
    _assert_same(got, value)
    assert got["fortran"].flags.f_contiguous


def test_damage_inside_a_chunked_array_is_reported_with_the_offset(tmp_path):
    path = tmp_path / "chunked.pkl"
    value = np.round(np.sin(np.arange(3 * CHUNK // 8) * 1e-3) * 100, 3)
    joblet.dump(value, path, compress=("zstd", 3))
    good = path.read_bytes()
    size = len(good)
    # In the chunk table near the array's start, in a middle chunk, in the last one.
    positions = [300, 600, size // 2, size - 400]
    for at, message in _damage_results(tmp_path, good, positions):
        assert "d.pkl" in message and "byte" in message, (at, message)
    path.write_bytes(good)
    np.testing.assert_array_equal(joblet.load(path), value)


def test_byte_order_is_kept_when_asked():
    value = np.arange(6, dtype=">i4").reshape(2, 3)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "be.pkl")
        joblet.dump(value, path)
        kept = joblet.load(path, ensure_native_byte_order=False)
        assert kept.dtype == np.dtype(">i4")
        np.testing.assert_array_equal(kept, value)
        with pytest.raises(ValueError, match="mmap_mode"):
            joblet.load(path, mmap_mode="r", ensure_native_byte_order=True)


def test_compression_is_chosen_by_extension_unless_a_tuple_says(tmp_path):
    data = {"zeros": np.zeros(1_000_000)}
    stored = tmp_path / "plain.pkl"
    joblet.dump(data, stored)
    for name in ["a.pkl.gz", "a.pkl.z", "a.pkl.bz2", "a.pkl.xz", "a.pkl.lzma", "a.pkl.lz4", "a.zst"]:
        p = tmp_path / name
        joblet.dump(data, p)
        assert p.stat().st_size < stored.stat().st_size / 20, name
        np.testing.assert_array_equal(joblet.load(p)["zeros"], data["zeros"])
    explicit = tmp_path / "b.pkl.gz"
    joblet.dump(data, explicit, compress=("zlib", 0))
    assert explicit.stat().st_size > 8_000_000, "an explicit tuple wins over the extension"
    named = tmp_path / "c.pkl.gz"
    joblet.dump(data, named, compress="lz4")
    with open(named, "rb") as f:
        f.seek(64)
        assert not f.read(2).startswith(b"\x1f\x8b"), "a name wins over the extension"


@pytest.mark.parametrize(
    "compress, message",
    [
        (10, "level 10"),
        (-1, "level -1"),
        (("zlib", 3, 4), "tuple"),
        ("snappy", "snappy"),
        (("gzip", "high"), "high"),
        (2.5, "2.5"),
    ],
)
def test_bad_compress_arguments_are_named(tmp_path, compress, message):
    with pytest.raises(ValueError, match=message):
        joblet.dump([1], tmp_path / "x.pkl", compress=compress)
    assert os.listdir(tmp_path) == []


def test_file_objects_are_written_and_read(tmp_path):
    joblib = pytest.importorskip("joblib")
    value = {"a": np.arange(100_000.0), "t": "text"}
    for compress in [0, 3, "lz4"]:
        path = tmp_path / "f.pkl"
        with open(path, "wb") as f:
            f.write(b"prefix")
            assert joblet.dump(value, f, compress=compress) is None
        with open(path, "rb") as f:
            assert f.read(6) == b"prefix"
            got = joblet.load(f)
        _assert_same(got, value)
        assert os.listdir(tmp_path) == ["f.pkl"], "no temporary file left here"
    # A damaged container read from a file object names that file, not a temporary copy.
    damaged = bytearray((tmp_path / "f.pkl").read_bytes()[6:])
    damaged[70] ^= 1
    (tmp_path / "d.pkl").write_bytes(bytes(damaged))
    with open(tmp_path / "d.pkl", "rb") as f, pytest.raises(ValueError, match="d.pkl: damaged"):
        joblet.load(f)
    with pytest.raises(ValueError, match="damaged at byte 4"):
        joblet.load(io.BytesIO(b"\x93JOB"))
    stream = io.BytesIO()
    joblib.dump(value, stream)
    stream.seek(0)
    with pytest.warns(UserWarning, match="memory-mapped"):
        _assert_same(joblet.load(stream, mmap_mode="r", ensure_native_byte_order=False), value)


class _GzipOver:
    """A gzip file object over another file object, opened as joblib's wrappers open theirs."""

    def __new__(cls, fileobj, mode, compresslevel=9):
        import gzip

        return gzip.GzipFile(fileobj=fileobj, mode=mode, compresslevel=compresslevel)

    # The file-object interface register_compressor checks for.
    read = write = seek = tell = None


def test_registered_compressors_are_used_and_required(tmp_path):
    import gzip

    from joblet import _compressors

    with pytest.raises(ValueError, match="should be a string"):
        joblet.register_compressor(3, joblet.CompressorWrapper(gzip.GzipFile))
    with pytest.raises(ValueError, match="CompressorWrapper interface"):
        joblet.register_compressor("nope", object())
    joblet.register_compressor(
        "test-gz", joblet.CompressorWrapper(_GzipOver, prefix=b"\x1f\x8b", extension=".tgzz")
    )
    try:
        with pytest.raises(ValueError, match="already registered"):
            joblet.register_compressor("test-gz", joblet.CompressorWrapper(gzip.GzipFile))
        value = {"a": np.zeros(200_000), "b": [1, "x"]}
        explicit = tmp_path / "x.pkl"
        joblet.dump(value, explicit, compress=("test-gz", 6))
        by_extension = tmp_path / "y.tgzz"
        joblet.dump(value, by_extension)
        for path in (explicit, by_extension):
            assert path.stat().st_size < 50_000, "compressed by the registered compressor"
            _assert_same(joblet.load(path), value)
            _assert_same(joblet.load(path, mmap_mode="r"), value)
        kept = _compressors._REGISTERED.pop("test-gz")
        with pytest.raises(ValueError, match="test-gz.*register_compressor"):
            joblet.load(explicit)
        _compressors._REGISTERED["test-gz"] = kept
    finally:
        _compressors._REGISTERED.pop("test-gz", None)


def test_bad_targets_are_refused(tmp_path):
    with pytest.raises(ValueError, match="file name"):
        joblet.dump([1], 42)
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        joblet.load(tmp_path / "missing.pkl")
    with pytest.raises(FileNotFoundError):
        joblet.dump([1], tmp_path / "no" / "such" / "dir.pkl")
    with pytest.raises(ValueError, match="mmap_mode"):
        joblet.load(tmp_path / "f.pkl", mmap_mode="rw")


def test_mmap_modes_map_uncompressed_arrays(tmp_path):
    path = tmp_path / "m.pkl"
    value = {"a": np.arange(1000.0), "f": np.asfortranarray(np.ones((30, 40))), "e": np.zeros(0)}
    joblet.dump(value, path)

    r = joblet.load(path, mmap_mode="r")
    assert isinstance(r["a"], np.memmap) and isinstance(r["f"], np.memmap)
    assert r["f"].flags.f_contiguous
    np.testing.assert_array_equal(r["a"], value["a"])
    with pytest.raises(ValueError):
        r["a"][0] = 5.0

    c = joblet.load(path, mmap_mode="c")
    c["a"][0] = -1.0
    assert joblet.load(path)["a"][0] == 0.0, "copy-on-write leaves the file alone"

    rp = joblet.load(path, mmap_mode="r+")
    rp["a"][1] = 42.0
    rp["a"].flush()
    del rp
    assert joblet.load(path)["a"][1] == 42.0, "r+ writes reach the file"
    assert joblet.load(path)["e"].shape == (0,)

    packed = tmp_path / "m.pkl.gz"
    joblet.dump(value, packed)
    loaded = joblet.load(packed, mmap_mode="r")
    assert not isinstance(loaded["a"], np.memmap), "compressed arrays are read, as joblib does"
    np.testing.assert_array_equal(loaded["a"], value["a"])


def _damage_results(tmp_path, good: bytes, positions):
    path = tmp_path / "d.pkl"
    for at in positions:
        bad = bytearray(good)
        bad[at] ^= 0x40
        path.write_bytes(bytes(bad))
        with pytest.raises(ValueError) as info:
            joblet.load(path)
        yield at, str(info.value)


@pytest.mark.parametrize("compress", [0, "zstd"])
def test_damage_is_reported_with_the_file_and_offset_never_loaded(tmp_path, compress):
    path = tmp_path / "d.pkl"
    value = {"a": np.arange(50_000.0), "b": "text" * 100}
    joblet.dump(value, path, compress=compress)
    good = path.read_bytes()
    size = len(good)
    positions = [9, 20, 44, 70, 300, size // 2, size - 60, size - 5]
    for at, message in _damage_results(tmp_path, good, positions):
        assert "d.pkl" in message, (at, message)
        assert "byte" in message or "version" in message, (at, message)
    for cut in [0, 5, 63, 64, 200, size // 2, size - 1]:
        path.write_bytes(good[:cut])
        with pytest.raises(ValueError, match="d.pkl"):
            joblet.load(path)
    path.write_bytes(pickle.dumps([1, 2]))  # a plain pickle (what joblib writes): read
    assert joblet.load(path) == [1, 2]
    path.write_bytes(b"garbage, not a pickle")
    with pytest.raises(ValueError, match="neither a joblet container nor"):
        joblet.load(path)
    wrong_version = bytearray(good)
    wrong_version[8] = 9
    path.write_bytes(bytes(wrong_version))
    with pytest.raises(ValueError, match="version 9"):
        joblet.load(path)


def test_mapped_arrays_are_not_read_and_writable_maps_stop_their_checks(tmp_path):
    path = tmp_path / "d.pkl"
    joblet.dump({"a": np.arange(50_000.0), "b": [1, 2]}, path)
    good = bytearray(path.read_bytes())
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 1
    path.write_bytes(bytes(damaged))
    # A map does not read the array: only a full load sees the damage.
    assert joblet.load(path, mmap_mode="r")["b"] == [1, 2]
    with pytest.raises(ValueError, match="checksum"):
        joblet.load(path)
    # Writes through an r+ map are the user's: later loads take them as they are.
    path.write_bytes(bytes(good))
    mapped = joblet.load(path, mmap_mode="r+")
    mapped["a"][7] = -7.0
    mapped["a"].flush()
    del mapped
    assert joblet.load(path)["a"][7] == -7.0
    # The object stream is still checked.
    again = bytearray(path.read_bytes())
    again[70] ^= 1
    path.write_bytes(bytes(again))
    with pytest.raises(ValueError, match="byte"):
        joblet.load(path)


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle me")


def test_a_failed_dump_leaves_no_file(tmp_path):
    path = tmp_path / "x.pkl"
    joblet.dump([1, 2], path)
    with pytest.raises(RuntimeError, match="cannot pickle me"):
        joblet.dump([np.arange(3), Unpicklable()], path)
    assert os.listdir(tmp_path) == ["x.pkl"]
    assert joblet.load(path) == [1, 2], "the earlier file is untouched"


class Point:
    def __init__(self, x):
        self.x = x


class Payload:
    """Runs a command when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_safe_mode_loads_data_and_refuses_code(tmp_path):
    data = {"a": np.arange(5), "t": (1, 2.5, "s", b"b", None), "s": {1, 2}, "c": 1 + 2j}
    path = tmp_path / "safe.pkl"
    joblet.dump(data, path)
    got = joblet.load(path, allow_pickle=False)
    np.testing.assert_array_equal(got["a"], data["a"])
    assert got["t"] == data["t"] and got["s"] == data["s"] and got["c"] == data["c"]
    objects = tmp_path / "objects.pkl"
    joblet.dump(np.array([1, "x", None], dtype=object), objects)
    assert list(joblet.load(objects, allow_pickle=False)) == [1, "x", None]

    instance = tmp_path / "instance.pkl"
    joblet.dump({"p": Point(3)}, instance)
    with pytest.raises(pickle.UnpicklingError, match="Point") as info:
        joblet.load(instance, allow_pickle=False)
    assert "allow_pickle" in str(info.value)
    assert joblet.load(instance)["p"].x == 3

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pkl"
    joblet.dump([Payload(marker)], evil)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        joblet.load(evil, allow_pickle=False)
    assert not marker.exists(), "the refused payload ran"


WRITER = """
import sys, numpy as np, joblet
k = int(sys.argv[2])
for i in range(20):
    joblet.dump({"k": k, "a": np.full(200_000, k, dtype=np.int64)}, sys.argv[1], compress=k % 2)
"""


def test_concurrent_writers_leave_one_whole_file(tmp_path):
    path = tmp_path / "shared.pkl"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(k)]) for k in range(4)
    ]
    for p in procs:
        assert p.wait(timeout=60) == 0
    got = joblet.load(path)
    assert (got["a"] == got["k"]).all() and got["a"].shape == (200_000,)
    assert os.listdir(tmp_path) == ["shared.pkl"], "no temporary file left"


def test_paths_and_memmaps_are_accepted(tmp_path):
    source = np.memmap(tmp_path / "raw.bin", dtype=np.float32, mode="w+", shape=(10,))
    source[:] = np.arange(10)
    target = Path(tmp_path) / "mm.pkl"
    joblet.dump({"m": source}, target)
    back = joblet.load(str(target))["m"]
    assert type(back) is np.ndarray
    np.testing.assert_array_equal(back, np.arange(10, dtype=np.float32))


joblib = pytest.importorskip("joblib")


@pytest.mark.parametrize("compress", [0, 3, "gzip", "bz2", "lzma", "xz"])
def test_files_written_by_joblib_load(tmp_path, compress):
    value = _value()
    path = tmp_path / "by_joblib.pkl"
    joblib.dump(value, path, compress=compress)
    _assert_same(joblet.load(path), value)
    kept = joblet.load(path, ensure_native_byte_order=False)["arrays"]["big_endian"]
    assert kept.dtype == np.dtype(">f8")
    assert joblet.load(path)["arrays"]["fortran"].flags.f_contiguous


def test_files_written_by_joblib_map_and_obey_the_safe_mode(tmp_path):
    path = tmp_path / "by_joblib.pkl"
    data = {"a": np.arange(1000.0), "f": np.asfortranarray(np.ones((20, 30))), "n": [1, "x"]}
    joblib.dump(data, path)
    mapped = joblet.load(path, mmap_mode="r")
    assert isinstance(mapped["a"], np.memmap) and mapped["f"].flags.f_contiguous
    np.testing.assert_array_equal(mapped["a"], data["a"])
    np.testing.assert_array_equal(mapped["f"], data["f"])
    assert mapped["n"] == [1, "x"]
    safe = joblet.load(path, allow_pickle=False)
    np.testing.assert_array_equal(safe["a"], data["a"])

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pkl"
    joblib.dump([np.arange(3), Payload(marker)], evil)
    with pytest.raises(pickle.UnpicklingError, match="system"):
        joblet.load(evil, allow_pickle=False)
    assert not marker.exists()
    truncated = tmp_path / "cut.pkl"
    truncated.write_bytes(path.read_bytes()[:3000])
    with pytest.raises((ValueError, pickle.UnpicklingError, EOFError)):
        joblet.load(truncated)


class _ForgedDtype:
    """A structured dtype whose field holds Python objects while its flags say it holds
    none (found by review: numpy's dtype.__setstate__ takes it, and raw file bytes then
    become object pointers: a segfault)."""

    def __reduce__(self):
        return (
            np.dtype,
            ("V8", False, True),
            (3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, 0),
        )


class _ArrayOfForgedDtype:
    def __reduce__(self):
        import struct

        try:
            from numpy._core.multiarray import _reconstruct
        except ImportError:  # numpy < 2
            from numpy.core.multiarray import _reconstruct
        state = (1, (1,), _ForgedDtype(), False, struct.pack("<Q", 0x4141414141414141))
        return (_reconstruct, (np.ndarray, (0,), b"b"), state)


class _ArrayBeforeItsBuffer:
    """numpy.ndarray called with a negative offset: a view of the memory before a buffer
    (found by review)."""

    def __reduce__(self):
        return (np.ndarray, ((64,), "u1", bytearray(64), -64))


@pytest.mark.parametrize("payload", [_ArrayOfForgedDtype(), _ArrayBeforeItsBuffer()])
def test_safe_mode_refuses_forged_dtypes_and_raw_ndarray_calls(tmp_path, payload):
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(payload, protocol=4))
    container = tmp_path / "container.pkl"
    joblet.dump(payload, container)
    for path in (plain, container):
        with pytest.raises(pickle.UnpicklingError):
            joblet.load(path, allow_pickle=False)


def test_safe_mode_still_loads_every_plain_dtype(tmp_path):
    kinds = ["<f8", ">i4", "U4", "S2", "M8[D]", "m8[s]", "c16", "?", "u2"]
    value = {k: np.arange(6).astype(k) for k in kinds}
    value["objects"] = np.array([1, "x", None], dtype=object)
    value["dtype"] = np.dtype(">f4")
    value["scalar"] = np.float32(2.5)
    for writer in (joblet.dump, pytest.importorskip("joblib").dump):
        path = tmp_path / "plain.pkl"
        writer(value, path)
        got = joblet.load(path, allow_pickle=False, ensure_native_byte_order=False)
        for k in kinds:
            assert got[k].dtype == np.dtype(k), (writer, k)
            np.testing.assert_array_equal(got[k], value[k])
        assert list(got["objects"]) == [1, "x", None]
        assert got["dtype"] == np.dtype(">f4") and got["scalar"] == np.float32(2.5)


def test_a_loaded_array_is_freed_when_dropped_without_the_garbage_collector(tmp_path):
    # The unpickler's memo once held a bound method of the unpickler: a cycle that kept each
    # loaded array alive until Python's next full collection (a 1 GB load held 1 GB more).
    import gc
    import weakref

    path = str(tmp_path / "a.joblet")
    joblet.dump({"a": np.arange(1 << 16, dtype=np.float64)}, path)
    gc.disable()
    try:
        for allow_pickle in (True, False):
            loaded = joblet.load(path, allow_pickle=allow_pickle)["a"]
            assert loaded[-1] == (1 << 16) - 1
            ref = weakref.ref(loaded)
            del loaded
            assert ref() is None, f"allow_pickle={allow_pickle}: the array outlived the load"
    finally:
        gc.enable()
