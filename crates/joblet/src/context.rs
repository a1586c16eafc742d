//! What a running task can ask about the call it belongs to: has the call been cancelled, and
//! how deeply is it nested inside other `Parallel` calls.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The cancellation flag of one call, shared by the caller and its workers.
#[derive(Clone, Default, Debug)]
pub(crate) struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub(crate) fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    #[inline]
    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[derive(Clone, Default)]
struct TaskContext {
    depth: usize,
    cancel: Option<CancelToken>,
}

thread_local! {
    static CONTEXT: RefCell<TaskContext> = RefCell::new(TaskContext::default());
}

/// Marks the current thread as running tasks of a call, for as long as the guard lives.
pub(crate) struct EnterWorker {
    previous: TaskContext,
}

impl EnterWorker {
    /// `depth` is the nesting depth of the calling `Parallel` (0 at top level).
    pub(crate) fn new(depth: usize, cancel: CancelToken) -> Self {
        let next = TaskContext {
            depth: depth + 1,
            cancel: Some(cancel),
        };
        let previous = CONTEXT.with(|c| c.replace(next));
        EnterWorker { previous }
    }
}

impl Drop for EnterWorker {
    fn drop(&mut self) {
        let previous = std::mem::take(&mut self.previous);
        CONTEXT.with(|c| *c.borrow_mut() = previous);
    }
}

/// How many parallel calls enclose the current code: 0 in ordinary code, 1 inside a task that
/// a worker of a top-level call runs, and so on. Calls made at depth 1 or more run
/// sequentially. A call that runs sequentially in the caller's thread (one worker, or the
/// sequential backend) does not add a level, as in joblib.
pub fn nesting_depth() -> usize {
    CONTEXT.with(|c| c.borrow().depth)
}

/// Whether the call running the current task has been abandoned (another task failed, a
/// timeout fired, or the caller dropped the result iterator).
///
/// Threads cannot be killed, so a long task that wants to stop early should check this now and
/// then and return. Outside a task it is always `false`.
///
/// ```
/// use joblet::{is_cancelled, Parallel};
///
/// let r = Parallel::new().n_jobs(2).run((0..4).map(|i| move || {
///     // a long loop would break out here: `if is_cancelled() { return 0 }`
///     assert!(!is_cancelled());
///     i
/// }));
/// assert_eq!(r.unwrap(), vec![0, 1, 2, 3]);
/// ```
pub fn is_cancelled() -> bool {
    CONTEXT.with(|c| {
        c.borrow()
            .cancel
            .as_ref()
            .is_some_and(CancelToken::is_cancelled)
    })
}
