//! Which task each worker slot runs, and since when: the scheduler reads it to find overdue
//! tasks; the process backend keeps it in memory shared with the worker process.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Storage of a slot's clock: `[running task index + 1 (0: idle), start in CLOCK_MONOTONIC ns]`.
pub(crate) trait ClockCells: Send + Sync {
    fn cells(&self) -> &[AtomicU64; 2];
}

impl ClockCells for [AtomicU64; 2] {
    fn cells(&self) -> &[AtomicU64; 2] {
        self
    }
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process of the machine.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A slot's view of its running task. Written only when the call has a timeout (threads),
/// or always (worker processes, where it also names the task of a crash).
pub(crate) struct TaskClock {
    cells: Arc<dyn ClockCells>,
}

impl TaskClock {
    pub(crate) fn in_memory() -> Self {
        TaskClock {
            cells: Arc::new([AtomicU64::new(0), AtomicU64::new(0)]),
        }
    }

    pub(crate) fn new(cells: Arc<dyn ClockCells>) -> Self {
        TaskClock { cells }
    }

    pub(crate) fn start(&self, index: usize) {
        let [running, started] = self.cells.cells();
        // Start time first: a reader that pairs the previous index with the new start time
        // only sees a shorter run, never a false timeout (the worker process does the same).
        started.store(monotonic_ns(), Ordering::Release);
        running.store(index as u64 + 1, Ordering::Release);
    }

    pub(crate) fn elapsed(&self) -> Duration {
        let started = self.cells.cells()[1].load(Ordering::Acquire);
        Duration::from_nanos(monotonic_ns().saturating_sub(started))
    }

    pub(crate) fn idle(&self) {
        self.cells.cells()[0].store(0, Ordering::Release);
    }

    /// The index of the running task, if any.
    pub(crate) fn running(&self) -> Option<usize> {
        (self.cells.cells()[0].load(Ordering::Acquire) as usize).checked_sub(1)
    }
}

/// One worker slot of a call, as the caller sees it.
pub(crate) struct Slot {
    pub(crate) clock: Arc<TaskClock>,
    /// Stops the slot's running batch for good (kills its worker process); `None` for threads.
    kill: Option<Box<dyn Fn() + Send + Sync>>,
    /// Whether the slot is running a batch now.
    busy: AtomicBool,
}

impl Slot {
    pub(crate) fn new(
        cells: Arc<dyn ClockCells>,
        kill: Option<Box<dyn Fn() + Send + Sync>>,
    ) -> Self {
        Slot {
            clock: Arc::new(TaskClock::new(cells)),
            kill,
            busy: AtomicBool::new(false),
        }
    }

    pub(crate) fn in_memory() -> Self {
        Slot {
            clock: Arc::new(TaskClock::in_memory()),
            kill: None,
            busy: AtomicBool::new(false),
        }
    }

    pub(crate) fn set_busy(&self, busy: bool) {
        self.busy.store(busy, Ordering::Release);
    }

    /// Kills the slot's worker if it is running a batch.
    pub(crate) fn kill_if_busy(&self) {
        if let Some(kill) = &self.kill {
            if self.busy.load(Ordering::Acquire) {
                kill();
            }
        }
    }
}
