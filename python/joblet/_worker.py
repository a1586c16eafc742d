"""The entry of a worker process: ``python -m joblet._worker SYS_PATH_JSON``.

The parent's ``sys.path`` comes first in the argument list, so that functions pickled by
reference import here as they do in the caller. ``__main__`` is never imported: functions
defined there travel by value (cloudpickle). ``JOBLET_MP_AUTHKEY`` in the environment is the
caller's multiprocessing authkey (hex); ``JOBLET_WORKER_INIT`` the call's ``initializer`` and
``initargs`` (pickled, hex), run once before serving.
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
    init = os.environ.pop("JOBLET_WORKER_INIT", None)
    if init is not None:
        # The call's initializer (after the authkey: its arguments may be Manager proxies).
        # If it fails, this worker never says hello, and the call fails to start it.
        import pickle
        import traceback

        try:
            initializer, initargs = pickle.loads(bytes.fromhex(init))
            initializer(*initargs)
        except BaseException:
            sys.stderr.write("joblet worker: the initializer failed:\n" + traceback.format_exc())
            sys.stderr.flush()
            os._exit(3)
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
