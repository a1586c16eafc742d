"""The entry of a worker process: ``python -m joblet._worker SYS_PATH_JSON``.

The parent's ``sys.path`` comes first in the argument list, so that functions pickled by
reference import here as they do in the caller. ``__main__`` is never imported: functions
defined there travel by value (cloudpickle). ``JOBLET_MP_AUTHKEY`` in the environment is the
caller's multiprocessing authkey (hex).
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    if len(sys.argv) > 1:
        for entry in reversed(json.loads(sys.argv[1])):
            if entry not in sys.path:
                sys.path.insert(0, entry)
    authkey = os.environ.pop("JOBLET_MP_AUTHKEY", None)
    if authkey is not None:
        # The caller's, so that multiprocessing Manager proxies in tasks can connect back.
        import multiprocessing

        multiprocessing.current_process().authkey = bytes.fromhex(authkey)
    from joblet import _core

    code = _core.worker_main()
    if code is None:
        sys.stderr.write(
            "joblet._worker is started by joblet's process backend; it does nothing alone\n"
        )
        code = 2
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    # Skip interpreter teardown: the parent is gone or let this worker go.
    os._exit(code)


if __name__ == "__main__":
    main()
