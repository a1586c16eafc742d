"""Stubs of the compiled module ``joblet._core`` (crates/joblet-py)."""

from typing import Any, Callable, Iterator, Optional

class Results(Iterator[Any]):
    """The results of a ``generator`` or ``generator_unordered`` call."""

    def __iter__(self) -> "Results": ...
    def __next__(self) -> Any: ...
    def close(self) -> None:
        """Stops the call; results not yet taken are lost."""

def run(
    tasks: Iterator[Any],
    *,
    backend: str,
    n_jobs: int,
    batch_size: Optional[int] = None,
    pre_dispatch: Optional[str] = None,
    timeout: Optional[float] = None,
    verbose: int = 0,
    return_as: str = "list",
    max_nbytes: Optional[int] = None,
    progress: Optional[Callable[[int, Optional[int]], None]] = None,
    nested_levels: int = 0,
) -> Any:
    """Runs ``(function, args, kwargs)`` triples on the engine's ``backend``
    (``"sequential"``, ``"threads"`` or ``"processes"``) with ``n_jobs`` workers; returns a
    list, or a ``Results`` iterator for the generator modes."""

def shutdown() -> None:
    """At interpreter exit: keeps engine threads out of Python from now on, and waits for
    those inside to leave."""

def worker_main() -> Optional[int]:
    """Serves tasks in a worker process; the exit code, or None outside a worker."""

def set_worker_command(program: str, args: list[str]) -> None:
    """The command that starts worker processes."""

def cpu_count() -> int:
    """The CPUs this process may use (affinity and cgroup quota)."""

def nesting_depth() -> int:
    """How many parallel calls enclose the calling code."""

def set_worker_idle_timeout(seconds: float) -> None:
    """How long idle worker processes wait for the next call before they exit."""
