"""joblet.hash: joblib's hashing rules (joblib/test/test_hashing.py checks the same
behaviour), on joblet's own digest."""

import collections
import decimal
import gc
import io
import pickle
import random

import numpy as np
import pytest

import joblet
from joblet import hash

pytestmark = pytest.mark.timeout(60)


Pair = collections.namedtuple("Pair", "a b")


class Point:
    def __init__(self, x, tags):
        self.x = x
        self.tags = tags

    def method(self, y):
        return self.x + y


DISTINCT = [
    1,
    2,
    1.0,
    2.0,
    1 + 1j,
    2.0 + 1j,
    True,
    False,
    None,
    "a",
    "b",
    b"a",
    bytearray(b"a"),
    (1,),
    (1, 1),
    [1],
    [1, 1],
    {1: 1},
    {1: 2},
    {2: 1},
    {1},
    frozenset({1}),
    set(("a", 1)),
    set(("a", 1, ("a", 1))),
    {"a": 1, 1: 2},
    {"a": 1, 1: 2, "d": {"a": 1}},
    2**70,
    -(2**70),
    gc.collect,
    [1].append,
    Point,
    Point(1, ["x"]),
    Point(2, ["x"]),
]


@pytest.mark.parametrize("i", range(len(DISTINCT)))
def test_distinct_objects_hash_differently_and_copies_alike(i):
    obj = DISTINCT[i]
    digests = [hash(x) for x in DISTINCT]
    assert digests.count(digests[i]) == 1, obj
    # A copy (another object, same content) gives the same digest.
    if not callable(obj) or isinstance(obj, Point):
        assert hash(pickle.loads(pickle.dumps(obj))) == digests[i]


def test_digest_lengths_are_joblibs():
    assert len(hash("x")) == 32
    assert len(hash("x", hash_name="md5")) == 32
    assert len(hash("x", hash_name="sha1")) == 40
    assert int(hash("x", hash_name="sha1"), 16) >= 0
    # The same digest, truncated: only the length changes with hash_name.
    assert hash("x", hash_name="sha1").startswith(hash("x"))


@pytest.mark.parametrize("name", ["sha256", "MD5", "", None, 5])
def test_bad_hash_name_raises_value_error(name):
    with pytest.raises(ValueError, match="Valid options for 'hash_name' are"):
        hash({"foo": "bar"}, hash_name=name)


def test_equal_content_in_other_objects():
    a = {"key": [1, 2.5, "x", (None, b"y")], "other": {"n": 3}}
    b = {"other": {"n": 3}, "key": [1, 2.5, "x", (None, b"y")]}
    assert hash(a) == hash(b)
    # Strings with another history (joblib's test_string).
    s = "foo"
    c = pickle.loads(pickle.dumps({s: "bar"}))
    assert hash([{s: "bar"}, {s: "bar"}]) == hash([{s: "bar"}, c])
    # A list met twice hashes like two equal lists (no pickle memo).
    inner = [1, 2]
    assert hash([inner, inner]) == hash([inner, [1, 2]])


def test_one_changed_element_is_a_miss():
    base = {"k": list(range(100)), "s": {"a", "b"}}
    changed = {"k": list(range(99)) + [100], "s": {"a", "b"}}
    assert hash(base) != hash(changed)
    assert hash(base) != hash({"k": list(range(100)), "s": {"a", "c"}})


def test_dict_and_set_order_do_not_count():
    keys = [f"#s{i}__c_maps.nii.gz" for i in range(50)]
    shuffled = keys[:]
    random.Random(0).shuffle(shuffled)
    assert hash({k: [33] for k in keys}) == hash({k: [33] for k in shuffled})
    assert hash(set(keys)) == hash(set(shuffled))
    assert hash(frozenset(keys)) == hash(frozenset(shuffled))
    # Unorderable and incomparable items (joblib: test_set_decimal_hash).
    assert hash({decimal.Decimal(0), decimal.Decimal("NaN")}) == hash(
        {decimal.Decimal("NaN"), decimal.Decimal(0)}
    )
    assert hash({"a": 1, 1: 2}) == hash({1: 2, "a": 1})


def test_structure_counts():
    assert hash(("ab", "c")) != hash(("a", "bc"))
    assert hash([[1], []]) != hash([[], [1]])
    assert hash((1, 2)) != hash([1, 2])
    assert hash({1: 2}) != hash({(1, 2)})
    assert hash(1) != hash(True)
    assert hash(1) != hash(1.0)
    assert hash("a") != hash(b"a")


def test_cycles_are_hashed_not_followed():
    a = [1]
    a.append(a)
    b = [1]
    b.append(b)
    assert hash(a) == hash(b)
    c = [2]
    c.append(c)
    assert hash(a) != hash(c)
    d = {}
    d["self"] = d
    assert len(hash(d)) == 32


def test_deep_nesting_raises_recursion_error():
    deep = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(RecursionError):
        hash(deep)


def test_objects_without_a_fast_path():
    # By their pickle, with the containers inside walked: attribute dicts and sets in any
    # order, equal content equal.
    p = Point(1, {"a", "b", "c"})
    q = Point(1, {"c", "b", "a"})
    assert hash(p) == hash(q)
    assert hash(p) != hash(Point(1, {"a", "b"}))
    assert hash(Point(np.arange(5), None)) == hash(Point(np.arange(5), None))
    assert hash(Point(np.arange(5), None)) != hash(Point(np.arange(1, 6), None))
    # Instances of subclasses of builtins are their own kind.
    assert hash(Pair(1, 2)) == hash(Pair(1, 2))
    assert hash(Pair(1, 2)) != hash((1, 2))
    assert hash(collections.OrderedDict(a=1)) != hash({"a": 1})
    assert hash(decimal.Decimal("1.5")) == hash(decimal.Decimal("1.50"[:3]))


def test_methods_and_functions_by_reference():
    a = io.StringIO("a")
    assert hash(a.flush) == hash(a.flush)
    assert hash(collections.deque(range(10)).extend) != hash(
        collections.deque(range(9)).extend
    )
    assert hash(Point(1, None).method) == hash(Point(1, None).method)
    assert hash(Point(1, None).method) != hash(Point(2, None).method)
    assert hash(gc.collect) != hash(gc.enable)
    assert hash(Point) == hash(pickle.loads(pickle.dumps(Point)))


def test_unpicklable_raises_picklingerror():
    def local():
        return 42

    with pytest.raises(pickle.PicklingError, match="PicklingError while hashing"):
        hash(local)
    with pytest.raises(pickle.PicklingError, match="PicklingError while hashing"):
        hash([1, lambda: 0])


# numpy ---------------------------------------------------------------------------------------


def three_arrays():
    rnd = np.random.RandomState(0)
    a1 = rnd.random_sample((10, 10))
    a2 = a1.copy()
    a3 = a2.copy()
    a3[0] += 1
    return a1, a2, a3


def test_arrays_by_content():
    a1, a2, a3 = three_arrays()
    assert hash(a1) == hash(a2)
    assert hash(a1) != hash(a3)
    assert hash(a1) != hash(a1.T)
    assert hash({1: a1, 2: a2}) == hash({1: a2, 2: a1})
    assert hash({1: a1, 2: a2}) != hash({1: a2, 2: a3})


def test_array_dtype_shape_and_byte_order_count():
    a = np.arange(12, dtype="<i8")
    assert hash(a) != hash(a.astype("<i4"))
    assert hash(a) != hash(a.view("<f8"))
    assert hash(a) != hash(a.astype(">i8"))
    assert hash(a) != hash(a.reshape(3, 4))
    assert hash(a.reshape(3, 4)) != hash(a.reshape(4, 3))
    assert hash(np.array(0)) != hash(np.array([0]))
    assert hash(np.float64(2.0)) != hash(np.float64(3.0))
    assert hash(np.float64(2.0)) == hash(np.float64(2.0))


def test_c_and_fortran_order_differ_as_in_joblib():
    arr_c = np.random.RandomState(0).random_sample((10, 10))
    arr_f = np.asfortranarray(arr_c)
    assert hash(arr_c) != hash(arr_f)
    assert hash(arr_f) == hash(np.asfortranarray(arr_c.copy()))


def test_non_contiguous_views():
    a = np.asarray(np.arange(6000).reshape((1000, 2, 3)), order="F")[:, :1, :]
    assert hash(a) != hash(np.ascontiguousarray(a))
    assert hash(a) != hash(np.asfortranarray(a))
    b = np.asarray(np.arange(6000).reshape((1000, 2, 3)), order="F")[:, :1, :]
    assert hash(a) == hash(b)
    c = b.copy()
    c = np.asarray(np.arange(6000).reshape((1000, 2, 3)), order="F")
    c[5, 0, 1] = -1
    assert hash(a) != hash(c[:, :1, :])


@pytest.mark.parametrize("dtype", ["datetime64[s]", "timedelta64[D]"])
def test_datetime_arrays(dtype):
    array = np.arange(0, 10, dtype=dtype)
    assert hash(array) != hash(np.arange(10))
    assert hash(array) == hash(np.arange(0, 10, dtype=dtype))
    assert hash(array) != hash(np.arange(1, 11, dtype=dtype))


def test_object_arrays():
    a = np.array([np.arange(i) for i in range(6)], dtype=object)
    b = np.array([np.arange(i) for i in range(6)], dtype=object)
    assert hash(a) == hash(b)
    b[5][0] = 99
    assert hash(a) != hash(b)


def test_structured_dtypes_and_dtype_objects():
    dt = np.dtype("f4")
    rt = pickle.loads(pickle.dumps(dt))
    assert hash(dt) == hash(rt)
    assert hash([dt, dt]) == hash([dt, rt])
    complex_dt = np.dtype([("name", np.str_, 16), ("grades", np.float64, (2,))])
    complex_rt = pickle.loads(pickle.dumps(complex_dt))
    assert hash(complex_dt) == hash(complex_rt)
    assert hash([complex_dt, complex_dt]) == hash([complex_rt, complex_dt])
    assert hash(np.dtype("f4")) != hash(np.dtype("f8"))
    x = np.zeros(3, dtype=complex_dt)
    y = np.zeros(3, dtype=complex_rt)
    assert hash(x) == hash(y)
    y["grades"][1, 1] = 1.0
    assert hash(x) != hash(y)


@pytest.mark.parametrize("coerce_mmap", [True, False])
def test_memmap_with_and_without_coerce_mmap(tmp_path, coerce_mmap):
    m = np.memmap(tmp_path / "m.dat", shape=(10, 10), mode="w+")
    m[:] = 7
    a = np.asarray(m)
    equal = hash(a, coerce_mmap=coerce_mmap) == hash(m, coerce_mmap=coerce_mmap)
    assert equal == coerce_mmap
    assert hash(np.array(m), coerce_mmap=coerce_mmap) == hash(a, coerce_mmap=coerce_mmap)
    del m, a
    gc.collect()


def test_big_arrays_multithreaded_path():
    # 64 MB: hashed by blocks, without the GIL, on every core.
    a = np.arange(8 << 20, dtype=np.float64)
    b = a.copy()
    assert hash(a) == hash(b)
    for at in (0, (4 << 20) + 3, len(a) - 1):
        b[at] += 1
        assert hash(a) != hash(b), at
        b[at] -= 1
    assert hash(a) == hash(b)
    # The same bytes in another container type, shape or order are another key.
    assert hash(a) != hash(a.reshape(2, -1))
    assert hash(a.reshape(2048, -1)) != hash(np.asfortranarray(a.reshape(2048, -1)))
    # bytes and memoryview-less paths agree with themselves too.
    assert hash(a.tobytes()) == hash(b.tobytes())
    assert hash(a.tobytes()) != hash(bytearray(a.tobytes()))


def test_big_arrays_inside_objects_hash_in_place():
    a = np.random.RandomState(1).random_sample(1 << 20)
    assert hash(Point(a, None)) == hash(Point(a.copy(), None))
    b = a.copy()
    b[-1] += 1
    assert hash(Point(a, None)) != hash(Point(b, None))


def test_hash_is_hashing_in_other_threads_too():
    a = np.random.RandomState(2).random_sample(1 << 20)
    expected = hash(a)
    results = joblet.Parallel(n_jobs=2, backend="threading")(
        joblet.delayed(hash)(a) for _ in range(8)
    )
    assert results == [expected] * 8


def test_same_digest_in_another_process():
    obj = {
        -3333: np.arange(15, dtype="<f4").reshape(3, 5),
        0: [np.arange(20, dtype="<i8"), "text", {1, 2, 3}],
        "f": np.asfortranarray(np.arange(100, dtype="<i8").reshape((10, 10))),
    }
    here = hash(obj)
    there = joblet.Parallel(n_jobs=2, backend="loky")(
        joblet.delayed(hash)(obj) for _ in range(2)
    )
    assert there == [here, here]
