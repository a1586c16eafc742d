"""The seed document's three examples, run as scripts with this interpreter."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO, "examples")

pytestmark = pytest.mark.timeout(120)


def run_example(name):
    proc = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, name)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert proc.returncode == 0, (
        f"{name} exited with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    )
    return proc.stdout


def parse(printed):
    """The printed list back as Python objects: numpy's reprs are evaluated with numpy."""
    namespace = {"np": np, "array": np.array, "inf": math.inf, "nan": math.nan, "__builtins__": {}}
    value = eval(printed.strip(), namespace)  # noqa: S307 - our own examples' output
    assert isinstance(value, list), printed
    return value


def test_seed_1_prints_ten_numbers():
    out = run_example("seed_1.py")
    values = parse(out)
    assert len(values) == 10
    for v in values:
        assert isinstance(v, (float, np.floating)), type(v)
        # The sum of squares of 1000 uniform draws: about 333, and certainly in (0, 1000).
        assert 0 < float(v) < 1000
    assert len(set(float(v) for v in values)) == 10


def test_seed_2_prints_eleven_items_ending_in_inf():
    out = run_example("seed_2.py")
    values = parse(out)
    assert len(values) == 11
    assert values[-1] == math.inf
    for v in values[:-1]:
        a = np.asarray(v, dtype=float)
        assert a.size == 1
        assert float(a.ravel()[0]) >= 1.0  # 1/x for x in [0, 1)


def test_seed_3_prints_three_10_by_2_arrays():
    out = run_example("seed_3.py")
    values = parse(out)
    assert len(values) == 3
    for v in values:
        assert isinstance(v, np.ndarray)
        assert v.shape == (10, 2)
        assert np.all(np.isfinite(v)) and np.all(v >= 0)
