"""``Memory`` on store backends other than the engine's: ``register_store_backend``, a
backend instance as ``location``, joblet's ``StoreBackendBase``/``StoreBackendMixin``, and
backend classes written against joblib's own base classes (as joblib 1.6's test_memory.py
registers them). Two stores: a dict in memory (items are bytes, nothing on disk) and plain
files in a directory."""

import asyncio
import datetime
import io
import os
import pickle
import shutil
import time

import joblib
import joblib._store_backends as joblib_backends
import numpy as np
import pytest

import joblet
from joblet import Memory, MemorizedResult, register_store_backend
from joblet import _core, _store_backends
from joblet._memory import NotMemorizedResult
from joblet._store_backends import (
    CacheItemInfo,
    CacheWarning,
    StoreBackendBase,
    StoreBackendMixin,
)

# -- two stores, written once as primitives ------------------------------------------------

#: The dict store's "servers": one dict of items (name -> bytes) per location, shared by
#: every backend object configured with that location.
_SERVERS = {}


class _Written(io.BytesIO):
    """What ``_open_item(name, "wb")`` returns: stored under ``name`` on close."""

    def __init__(self, files, name):
        super().__init__()
        self._files, self._name = files, name

    def close(self):
        if not self.closed:
            self._files[self._name] = self.getvalue()
        super().close()


class _DictPrimitives:
    """Items in a dict (bytes by name), locations in a set; records every item opened."""

    def configure(self, location, verbose=0, backend_options=None):
        options = dict(backend_options or {})
        self.location = location
        self.verbose = verbose
        self.compress = options.get("compress", False)
        self.mmap_mode = options.get("mmap_mode")
        self.options = options
        server = _SERVERS.setdefault(location, {"files": {}, "dirs": set(), "access": {}})
        self.files, self.dirs, self.access = server["files"], server["dirs"], server["access"]
        self.opened = []

    def _open_item(self, name, mode):
        self.opened.append((name, mode))
        if mode == "rb":
            if name not in self.files:
                raise FileNotFoundError(name)
            self.access[os.path.dirname(name)] = time.time()
            return io.BytesIO(self.files[name])
        assert mode == "wb", mode
        return _Written(self.files, name)

    def _under(self, location):
        return [k for k in self.files if k == location or k.startswith(location + "/")]

    def _item_exists(self, location):
        return location in self.dirs or bool(self._under(location))

    def _move_item(self, src, dst):
        self.files[dst] = self.files.pop(src)

    def create_location(self, location):
        self.dirs.add(location)

    def clear_location(self, location):
        for name in self._under(location):
            del self.files[name]
        for d in [d for d in self.dirs if d == location or d.startswith(location + "/")]:
            if d != self.location:
                self.dirs.discard(d)

    def get_items(self):
        items = []
        for name in self.files:
            if os.path.basename(name) == "output.pkl":
                d = os.path.dirname(name)
                size = sum(len(self.files[k]) for k in self._under(d))
                last = self.access.get(d, 0.0)
                items.append(CacheItemInfo(d, size, datetime.datetime.fromtimestamp(last)))
        return items


class _DirectoryPrimitives:
    """Plain files in a directory (last access: the output's modification time)."""

    _open_item = staticmethod(open)
    _item_exists = staticmethod(os.path.exists)
    _move_item = staticmethod(os.replace)

    def configure(self, location, verbose=0, backend_options=None):
        options = dict(backend_options or {})
        self.location = str(location)
        self.verbose = verbose
        self.compress = options.get("compress", False)
        self.mmap_mode = options.get("mmap_mode")
        self.options = options
        os.makedirs(self.location, exist_ok=True)

    def create_location(self, location):
        os.makedirs(location, exist_ok=True)

    def clear_location(self, location):
        if location == self.location:
            for name in os.listdir(location):
                self.clear_location(os.path.join(location, name))
        elif os.path.isdir(location):
            shutil.rmtree(location, ignore_errors=True)
        elif os.path.exists(location):
            os.remove(location)

    def get_items(self):
        items = []
        for dirpath, _, filenames in os.walk(self.location):
            if "output.pkl" in filenames:
                size = sum(os.path.getsize(os.path.join(dirpath, f)) for f in filenames)
                last = os.path.getmtime(os.path.join(dirpath, "output.pkl"))
                items.append(CacheItemInfo(dirpath, size, datetime.datetime.fromtimestamp(last)))
        return items


class DictBackend(_DictPrimitives, StoreBackendBase, StoreBackendMixin):
    """On joblet's base classes."""


class DirectoryBackend(_DirectoryPrimitives, StoreBackendBase, StoreBackendMixin):
    """On joblet's base classes."""


class JoblibDirectoryBackend(
    _DirectoryPrimitives, joblib_backends.StoreBackendBase, joblib_backends.StoreBackendMixin
):
    """The same store, written against joblib (its base and its mixin: joblib pickles)."""


class JoblibBaseDictBackend(_DictPrimitives, joblib_backends.StoreBackendBase, StoreBackendMixin):
    """joblib's base class with joblet's mixin."""


JOBLET_MIXIN = ("test-dict", "test-dir", "test-joblib-base-dict")
ON_DISK = ("test-dir", "test-joblib-dir")
ALL = ("test-dict", "test-dir", "test-joblib-dir", "test-joblib-base-dict")
CLASSES = {
    "test-dict": DictBackend,
    "test-dir": DirectoryBackend,
    "test-joblib-dir": JoblibDirectoryBackend,
    "test-joblib-base-dict": JoblibBaseDictBackend,
}


@pytest.fixture(autouse=True)
def registry():
    """Registers the test backends; puts joblet's registry back afterwards."""
    saved = dict(_store_backends._STORE_BACKENDS)
    for name, cls in CLASSES.items():
        register_store_backend(name, cls)
    try:
        yield
    finally:
        _store_backends._STORE_BACKENDS.clear()
        _store_backends._STORE_BACKENDS.update(saved)
        _SERVERS.clear()


def _memory(tmp_path, name, **kwargs):
    kwargs.setdefault("verbose", 0)
    return Memory(str(tmp_path / "cache"), backend=name, **kwargs)


def _outputs(backend):
    """The outputs stored in a backend, by location."""
    return sorted(item.path for item in backend.get_items())


def _damage(backend, item_path):
    """Cuts a stored output to its first 20 bytes."""
    name = os.path.join(item_path, "output.pkl")
    if isinstance(backend, _DictPrimitives):
        backend.files[name] = backend.files[name][:20]
    else:
        with open(name, "r+b") as f:
            f.truncate(20)


def plus_one(x):
    return x + 1


# -- the whole Memory API through each backend -------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_hits_and_misses_go_through_the_backend(tmp_path, name):
    memory = _memory(tmp_path, name)
    backend = memory.store_backend
    assert isinstance(backend, CLASSES[name])
    assert backend.location == os.path.join(str(tmp_path / "cache"), "joblet")
    calls = []

    @memory.cache
    def f(x, y=2):
        calls.append(x)
        return {"x": x, "y": y}

    assert f(1) == {"x": 1, "y": 2}
    assert f(1, y=2) == {"x": 1, "y": 2}  # defaults bound: the same entry
    assert f(3) == {"x": 3, "y": 2}
    assert calls == [1, 3]
    outputs = _outputs(backend)
    assert len(outputs) == 2
    assert all(p.startswith(backend.location + os.sep + f.func_id) for p in outputs)
    # Nothing went to the engine's store.
    assert not os.path.exists(os.path.join(str(tmp_path / "cache"), "joblet", ".gitignore"))
    if isinstance(backend, _DictPrimitives):
        assert not (tmp_path / "cache").exists()
        written = [n for n, mode in backend.opened if mode == "wb"]
        assert any(".tmp" in n for n in written)  # written aside, then moved
        assert os.path.join(outputs[0], "output.pkl") in backend.files
        assert os.path.join(backend.location, f.func_id, "func_code.py") in backend.files


@pytest.mark.parametrize("name", ALL)
def test_call_and_metadata(tmp_path, name):
    memory = _memory(tmp_path, name)
    calls = []

    @memory.cache
    def f(x):
        calls.append(x)
        return -x

    out, metadata = f.call(4)
    assert out == -4
    assert metadata["input_args"] == {"x": "4"}
    assert metadata["duration"] >= 0 and "time" in metadata
    assert f.call(4)[0] == -4
    assert f(4) == -4
    assert calls == [4, 4]
    call_id = (f.func_id, f._get_args_id(4))
    assert memory.store_backend.get_metadata(call_id)["input_args"] == {"x": "4"}


@pytest.mark.parametrize("name", ALL)
def test_call_and_shelve(tmp_path, name):
    memory = _memory(tmp_path, name)
    calls = []

    @memory.cache
    def f(x):
        calls.append(x)
        return [x] * 3

    result = f.call_and_shelve(2)
    assert isinstance(result, MemorizedResult)
    assert result.store_backend is memory.store_backend
    assert result.get() == [2, 2, 2]
    assert result.metadata["input_args"] == {"x": "2"}
    assert f.call_and_shelve(2).get() == [2, 2, 2]
    assert calls == [2]
    assert memory.store_backend.location in repr(result)
    result.clear()
    with pytest.raises(KeyError):
        result.get()
    assert f.check_call_in_cache(2) is False


@pytest.mark.parametrize("name", ALL)
def test_check_call_in_cache_and_clear(tmp_path, name):
    memory = _memory(tmp_path, name)

    @memory.cache
    def f(x):
        return x

    @memory.cache
    def g(x):
        return x

    assert f.check_call_in_cache(1) is False
    f(1)
    g(1)
    assert f.check_call_in_cache(1) is True
    f.clear(warn=False)
    assert f.check_call_in_cache(1) is False
    assert g.check_call_in_cache(1) is True
    memory.clear(warn=False)
    assert g.check_call_in_cache(1) is False
    assert memory.store_backend.get_items() == []
    assert g(1) == 1 and g.check_call_in_cache(1) is True  # usable after a clear


@pytest.mark.parametrize("name", ALL)
def test_a_changed_function_clears_its_items(tmp_path, name):
    memory = _memory(tmp_path, name)
    namespace = {}
    exec("def f(x):\n    return x * 2\n", namespace)
    first = memory.cache(namespace["f"])
    assert first(5) == 10
    assert first.check_call_in_cache(5) is True
    backend = memory.store_backend
    code_before = backend.get_cached_func_code([first.func_id])
    exec("def f(x):\n    return x * 3\n", namespace)
    second = memory.cache(namespace["f"])
    assert second.func_id == first.func_id
    with pytest.warns(joblet._memory.JobLibCollisionWarning):
        assert second.check_call_in_cache(5) is False
    assert second(5) == 15
    assert len(backend.get_items()) == 1
    assert backend.get_cached_func_code([second.func_id]) != code_before


@pytest.mark.parametrize("name", ALL)
def test_expires_after_reads_the_backends_metadata(tmp_path, name):
    memory = _memory(tmp_path, name)
    calls = []

    def f(x):
        calls.append(x)
        return x

    long_lived = memory.cache(f, cache_validation_callback=joblet.expires_after(seconds=1000))
    long_lived(1)
    long_lived(1)
    assert calls == [1]
    short_lived = memory.cache(f, cache_validation_callback=joblet.expires_after(microseconds=1))
    short_lived(1)
    assert calls == [1, 1]
    seen = []
    checked = memory.cache(f, cache_validation_callback=lambda m: seen.append(m) or True)
    checked(1)
    assert calls == [1, 1] and seen[0]["input_args"] == {"x": "1"}


def _three_items(tmp_path, name):
    memory = _memory(tmp_path, name)
    f = memory.cache(lambda n: np.zeros(n))
    for n in (1000, 1001, 1002):
        f(n)
    backend = memory.store_backend
    paths = []
    now = time.time()
    for n, age in zip((1000, 1001, 1002), (300, 200, 100)):
        path = os.path.join(backend.location, f.func_id, f._get_args_id(n))
        paths.append(path)
        if isinstance(backend, _DictPrimitives):
            backend.access[path] = now - age
        else:
            os.utime(os.path.join(path, "output.pkl"), (now - age, now - age))
    return memory, paths


@pytest.mark.parametrize("name", ALL)
def test_reduce_size(tmp_path, name):
    memory, paths = _three_items(tmp_path, name)
    backend = memory.store_backend
    memory.reduce_size(items_limit=2)
    assert _outputs(backend) == sorted(paths[1:])
    memory.reduce_size(age_limit=datetime.timedelta(seconds=150))
    assert _outputs(backend) == paths[2:]
    memory.reduce_size(bytes_limit="1K")
    assert _outputs(backend) == []
    with pytest.raises(ValueError):
        memory.reduce_size(bytes_limit="lots")
    with pytest.raises(ValueError):
        memory.reduce_size(age_limit=datetime.timedelta(seconds=-1))


@pytest.mark.parametrize("name", ALL)
def test_reduce_size_by_bytes(tmp_path, name):
    memory, paths = _three_items(tmp_path, name)
    sizes = {item.path: item.size for item in memory.store_backend.get_items()}
    memory.reduce_size(bytes_limit=sizes[paths[1]] + sizes[paths[2]] + 10)
    assert _outputs(memory.store_backend) == sorted(paths[1:])


@pytest.mark.parametrize("name", ALL)
def test_a_damaged_item_is_recomputed_with_a_warning(tmp_path, name):
    memory = _memory(tmp_path, name)
    calls = []

    @memory.cache
    def f(n):
        calls.append(n)
        return np.arange(n, dtype=np.float64)

    f(1000)
    (path,) = _outputs(memory.store_backend)
    _damage(memory.store_backend, path)
    with pytest.warns(UserWarning, match="could not load"):
        again = f(1000)
    np.testing.assert_array_equal(again, np.arange(1000.0))
    assert calls == [1000, 1000]
    np.testing.assert_array_equal(f(1000), np.arange(1000.0))
    assert len(calls) == 2


@pytest.mark.parametrize("name", JOBLET_MIXIN)
def test_a_damaged_shelved_item_is_a_key_error(tmp_path, name):
    memory = _memory(tmp_path, name)
    result = memory.cache(lambda n: np.arange(n)).call_and_shelve(1000)
    _damage(memory.store_backend, _outputs(memory.store_backend)[0])
    with pytest.raises(KeyError, match="damaged"):
        result.get()


@pytest.mark.parametrize("name", JOBLET_MIXIN)
def test_values_are_joblet_containers_written_through_open_item(tmp_path, name):
    memory = _memory(tmp_path, name)
    value = {"a": np.arange(100.0), "b": "text"}
    f = memory.cache(lambda: value)
    f()
    backend = memory.store_backend
    (path,) = _outputs(backend)
    with backend._open_item(os.path.join(path, "output.pkl"), "rb") as stored:
        data = stored.read()
    assert data[:8] == open(joblet.dump(value, str(tmp_path / "ref.joblet"))[0], "rb").read(8)
    loaded = joblet.load(io.BytesIO(data))
    np.testing.assert_array_equal(loaded["a"], value["a"])


@pytest.mark.parametrize("name", JOBLET_MIXIN)
def test_compress_reaches_the_backend(tmp_path, name):
    plain = _memory(tmp_path / "plain", name)
    packed = _memory(tmp_path / "packed", name, compress=3)
    assert packed.store_backend.options["compress"] == 3
    big = np.zeros(100_000)
    for memory in (plain, packed):
        np.testing.assert_array_equal(memory.cache(lambda: big)(), big)
    sizes = [m.store_backend.get_items()[0].size for m in (plain, packed)]
    assert sizes[1] * 10 < sizes[0]


@pytest.mark.parametrize("name", ON_DISK)
def test_mmap_mode_maps_items_on_disk(tmp_path, name):
    memory = _memory(tmp_path, name, mmap_mode="r")
    assert memory.store_backend.options["mmap_mode"] == "r"
    f = memory.cache(lambda n: np.arange(n, dtype=np.float64))
    first, second = f(1000), f(1000)
    assert isinstance(first, np.memmap) and isinstance(second, np.memmap)
    assert second.mode == "r"
    np.testing.assert_array_equal(second, np.arange(1000.0))
    # The function's own mmap_mode reaches joblet's mixin (joblib's reads the backend's).
    plain = _memory(tmp_path / "other", name)
    g = plain.cache(lambda n: np.arange(n, dtype=np.float64), mmap_mode="r")
    g(10)
    assert isinstance(g(10), np.memmap) == (name == "test-dir")


def test_mmap_mode_in_a_store_of_bytes_loads_in_memory_with_a_warning(tmp_path):
    memory = _memory(tmp_path, "test-dict", mmap_mode="r")
    f = memory.cache(lambda n: np.arange(n, dtype=np.float64))
    with pytest.warns(UserWarning, match="cannot be memory-mapped"):
        out = f(100)
    assert type(out) is np.ndarray
    np.testing.assert_array_equal(out, np.arange(100.0))


@pytest.mark.parametrize("name", JOBLET_MIXIN)
def test_an_unpicklable_output_is_returned_and_not_stored(tmp_path, name):
    memory = _memory(tmp_path, name)
    calls = []

    @memory.cache
    def f(x):
        calls.append(x)
        return lambda: x  # pickle refuses a local function

    with pytest.warns(CacheWarning, match="could not be stored"):
        assert f(1)() == 1
    with pytest.warns(CacheWarning):
        shelved = f.call_and_shelve(1)
    assert isinstance(shelved, NotMemorizedResult) and shelved.get()() == 1
    assert calls == [1, 1]
    assert memory.store_backend.get_items() == []
    if isinstance(memory.store_backend, _DictPrimitives):
        assert not [n for n in memory.store_backend.files if ".tmp" in n]
    else:
        leftovers = [n for _, _, fs in os.walk(memory.store_backend.location) for n in fs]
        assert not [n for n in leftovers if ".tmp" in n]


@pytest.mark.parametrize("name", ("test-dict", "test-joblib-dir"))
def test_verbose_messages(tmp_path, name, capsys):
    memory = _memory(tmp_path, name, verbose=1)
    f = memory.cache(plus_one)
    f(3)
    out = capsys.readouterr().out
    assert "[Memory] Calling" in out and "plus_one(3)" in out
    f(3)
    assert capsys.readouterr().out == ""
    loud = memory.cache(plus_one, verbose=2)
    loud(4)
    capsys.readouterr()
    loud(4)
    out = capsys.readouterr().out
    assert "Loading" in out and "plus_one" in out and "x=4" in out
    if name == "test-dict":
        assert "Loading plus_one(x=4)" in out


@pytest.mark.parametrize("name", ("test-dict", "test-joblib-dir"))
def test_coroutine_functions(tmp_path, name):
    memory = _memory(tmp_path, name)
    calls = []

    @memory.cache
    async def f(x):
        calls.append(x)
        return x * 10

    assert asyncio.run(f(2)) == 20
    assert asyncio.run(f(2)) == 20
    assert calls == [2]
    assert asyncio.run(f.call_and_shelve(2)).get() == 20


@pytest.mark.parametrize("name", ON_DISK)
def test_memorized_objects_pickle_with_their_backend(tmp_path, name):
    memory = _memory(tmp_path, name)
    cached = memory.cache(plus_one)
    assert cached(1) == 2
    again = pickle.loads(pickle.dumps(cached))
    assert type(again.store_backend) is CLASSES[name]
    assert again.check_call_in_cache(1) is True
    result = pickle.loads(pickle.dumps(cached.call_and_shelve(1)))
    assert result.get() == 2
    assert pickle.loads(pickle.dumps(memory)).cache(plus_one).check_call_in_cache(1)


@pytest.mark.parametrize("cls", (DirectoryBackend, JoblibDirectoryBackend))
def test_a_backend_instance_as_location(tmp_path, cls):
    backend = cls()
    backend.configure(str(tmp_path / "store"))
    memory = Memory(backend, verbose=0)
    assert memory.store_backend is backend
    f = memory.cache(lambda x: x * 2)
    assert f(2) == 4 and f.check_call_in_cache(2)
    assert f.store_backend is backend
    assert len(backend.get_items()) == 1
    assert str(tmp_path / "store") in repr(memory)
    # A MemorizedResult made from the instance and a call id, as joblib allows.
    result = MemorizedResult(backend, (f.func_id, f._get_args_id(2)))
    assert result.get() == 4
    assert not os.path.exists(tmp_path / "joblet")


def test_memorized_result_from_a_location_and_a_backend_name(tmp_path):
    memory = _memory(tmp_path, "test-dir", mmap_mode="r")
    f = memory.cache(lambda n: np.arange(n, dtype=np.float64))
    shelved = f.call_and_shelve(10)
    direct = MemorizedResult(
        memory.store_backend.location, shelved._call_id, backend="test-dir", mmap_mode="r"
    )
    assert type(direct.store_backend) is DirectoryBackend
    assert isinstance(direct.get(), np.memmap)


def test_backend_options_reach_configure(tmp_path):
    memory = _memory(tmp_path, "test-dict", backend_options={"region": "eu", "retries": 3})
    options = memory.store_backend.options
    assert options == {"compress": False, "mmap_mode": None, "region": "eu", "retries": 3}


# -- joblib's own classes ------------------------------------------------------------------


def test_joblib_backend_classes_count_as_store_backends():
    assert issubclass(joblib_backends.FileSystemStoreBackend, StoreBackendBase)
    assert issubclass(JoblibDirectoryBackend, joblet.StoreBackendBase)
    assert isinstance(JoblibDirectoryBackend(), StoreBackendBase)
    assert not issubclass(dict, StoreBackendBase)
    assert not isinstance(_core.Store, StoreBackendBase)
    assert not isinstance("a/path", StoreBackendBase)


def test_joblibs_filesystem_backend_runs_under_joblet(tmp_path):
    register_store_backend("joblib-fs", joblib_backends.FileSystemStoreBackend)
    memory = Memory(str(tmp_path), backend="joblib-fs", verbose=0)
    calls = []

    @memory.cache
    def f(x):
        calls.append(x)
        return np.full(3, x)

    np.testing.assert_array_equal(f(2), np.full(3, 2))
    np.testing.assert_array_equal(f(2), np.full(3, 2))
    assert calls == [2]
    assert len(memory.store_backend.get_items()) == 1
    memory.reduce_size(items_limit=0)
    assert f.check_call_in_cache(2) is False


def test_a_name_registered_with_joblib_is_found(tmp_path):
    registry = joblib.memory._STORE_BACKENDS
    joblib.register_store_backend("registered-with-joblib", JoblibDirectoryBackend)
    try:
        memory = Memory(str(tmp_path), backend="registered-with-joblib", verbose=0)
        assert type(memory.store_backend) is JoblibDirectoryBackend
        assert memory.cache(lambda: 7)() == 7
    finally:
        registry.pop("registered-with-joblib", None)


def test_the_same_store_read_by_joblib_and_joblet(tmp_path):
    """A backend class written for joblib, used by both libraries on one store (each keeps
    its own function ids: they share the store, not entries)."""
    for lib in (joblib, joblet):
        lib.register_store_backend("shared-dir", JoblibDirectoryBackend)
    try:
        out = [
            lib.Memory(str(tmp_path), backend="shared-dir", verbose=0).cache(abs)(-3)
            for lib in (joblib, joblet)
        ]
        assert out == [3, 3]
    finally:
        joblib.memory._STORE_BACKENDS.pop("shared-dir", None)


# -- registration errors -------------------------------------------------------------------


class IncompleteBackend(StoreBackendBase):
    """Lacks every primitive: it registers, but cannot be instantiated."""


class JoblibIncompleteBackend(joblib_backends.StoreBackendBase):
    pass


@pytest.mark.parametrize("bad_name", [None, {}, [], 3])
def test_a_backend_name_must_be_a_str(bad_name):
    with pytest.raises(ValueError, match="Store backend name should be a string"):
        register_store_backend(bad_name, DictBackend)


@pytest.mark.parametrize("bad_cls", [None, dict, object, DictBackend(), "test-dict"])
def test_a_backend_must_be_a_store_backend_class(bad_cls):
    with pytest.raises(ValueError, match="Store backend should inherit StoreBackendBase"):
        register_store_backend("fs", bad_cls)
    assert "fs" not in _store_backends._STORE_BACKENDS


def test_an_unknown_backend_name_is_a_type_error_naming_it(tmp_path):
    with pytest.raises(TypeError, match="Unknown location .* or backend 'unknown'") as info:
        Memory(str(tmp_path), backend="unknown")
    assert "test-dict" in str(info.value)  # the known names are listed
    with pytest.raises(TypeError, match="backend 'unknown'"):
        joblet._memory.MemorizedFunc(abs, str(tmp_path), backend="unknown")
    # Without a location there is no store to look up, as in joblib.
    assert Memory(None, backend="unknown").cache(abs)(-1) == 1


@pytest.mark.parametrize("cls", (IncompleteBackend, JoblibIncompleteBackend))
def test_an_incomplete_backend_registers_but_cannot_be_used(tmp_path, cls):
    register_store_backend("incomplete", cls)
    with pytest.raises(TypeError, match="abstract"):
        Memory(str(tmp_path), backend="incomplete")


def test_registering_local_replaces_the_engine_store(tmp_path):
    assert isinstance(Memory(str(tmp_path / "a"), verbose=0).store_backend, _core.Store)
    register_store_backend("local", DirectoryBackend)
    memory = Memory(str(tmp_path / "b"), verbose=0)
    assert type(memory.store_backend) is DirectoryBackend
    assert memory.cache(abs)(-2) == 2


def test_exports():
    for name in ("register_store_backend", "StoreBackendBase"):
        assert name in joblib.__all__
        assert name in joblet.__all__
    assert joblet.StoreBackendBase is StoreBackendBase
    assert joblet._memory.register_store_backend is register_store_backend
