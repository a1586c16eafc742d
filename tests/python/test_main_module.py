"""Functions and classes defined in a script's ``__main__`` reach process workers by value,
also inside arguments and results, without an ``if __name__ == "__main__"`` guard."""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import os
    import joblet as joblib

    class Point:
        def __init__(self, x):
            self.x = x

    def double(p):
        return Point(p.x * 2)

    def apply(f, v):
        return f(v), os.getpid()

    offset = 7
    out = joblib.Parallel(n_jobs=2)(joblib.delayed(double)(Point(i)) for i in range(6))
    assert [p.x for p in out] == [0, 2, 4, 6, 8, 10], [p.x for p in out]
    assert all(type(p).__name__ == "Point" for p in out)
    res = joblib.Parallel(n_jobs=2)(joblib.delayed(apply)(lambda v: v + offset, i) for i in range(4))
    assert [r[0] for r in res] == [7, 8, 9, 10]
    assert all(pid != os.getpid() for _, pid in res), "tasks ran in the caller"
    print("ok")
    """
)


@pytest.mark.timeout(120)
def test_main_functions_classes_and_lambdas_in_arguments_cross_to_workers(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=100
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
