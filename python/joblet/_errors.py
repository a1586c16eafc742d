"""The exceptions joblet raises besides the tasks' own, with joblib's names and bases."""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool


class TerminatedWorkerError(BrokenProcessPool):
    """A worker process died while running a task (a crash, ``os._exit``, a signal such as
    SIGSEGV or SIGKILL from the OOM killer). The message names the task and how the worker
    ended. The pool replaces the worker; the next call works."""


class RemoteTraceback(Exception):
    """The traceback of a task's exception as formatted in its worker process. joblet raises
    the task's own exception with this as its ``__cause__``, so that the report shows where
    the task failed."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


class WorkerTaskError(Exception):
    """Stands for a task's exception whose own type could not be brought back from the
    worker (its class is not importable in the caller, or it cannot be pickled): the message
    says what it was."""
