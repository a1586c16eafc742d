//! The worker side: what a re-executed binary does once [`crate::worker_hook`] finds that it
//! was started as a worker. It never returns to the program's `main`.

use super::spawn::{ENV_IDLE_MS, ENV_PROTOCOL_FD, ENV_STATUS_FD};
use super::status::StatusPage;
use crate::protocol::{
    self, BatchDone, BatchEnd, BatchHead, Bytes, Channel, FrameError, Hello, Kind,
    DEFAULT_THRESHOLD,
};
use crate::remote::{lookup, Called};
use crate::scheduler::monotonic_ns;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static HOOK_CALLED: AtomicBool = AtomicBool::new(false);

/// Whether this program called [`worker_hook`] (so that re-executing it makes a worker).
pub(crate) fn hook_called() -> bool {
    HOOK_CALLED.load(Ordering::Acquire) || super::spawn::has_worker_command()
}

/// Turns this process into a joblet worker if it was started as one; otherwise returns at once.
///
/// The process backend starts workers by running the program's own executable again. Call
/// this first thing in `main`, before anything that should not happen in a worker (parsing
/// arguments, opening files, printing): in a worker it serves tasks and exits, and never
/// returns. Without it, process calls fail with [`crate::Error::Config`] naming it.
///
/// ```
/// fn main() {
///     joblet::worker_hook();
///     // ... the program, which may use Backend::Processes
/// }
/// ```
#[allow(clippy::needless_doctest_main)] // the example is about what goes first in `main`
pub fn worker_hook() {
    HOOK_CALLED.store(true, Ordering::Release);
    if let Some(code) = run_worker() {
        std::process::exit(code);
    }
}

/// Serves tasks if this process was started as a joblet worker, and returns the exit code it
/// should end with once its parent lets it go; returns `None` at once otherwise.
///
/// [`worker_hook`] is this plus the exit. Programs that start workers with their own command
/// ([`crate::set_worker_command`]) call it from that command, and flush what they must before
/// exiting (the Python front flushes `sys.stdout`).
pub fn run_worker() -> Option<i32> {
    run_worker_scoped(|run| run())
}

/// [`run_worker`], running each batch of tasks inside `scope`, which must call the function
/// it is given exactly once. The Python front holds the GIL for a whole batch this way,
/// rather than taking it again for every task.
pub fn run_worker_scoped(scope: impl Fn(&mut dyn FnMut())) -> Option<i32> {
    let fd = std::env::var_os(ENV_PROTOCOL_FD)?;
    // A worker can make process calls of its own (they run sequentially in it).
    HOOK_CALLED.store(true, Ordering::Release);
    Some(match serve(fd.to_string_lossy().parse().ok(), &scope) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("joblet worker {}: {e}", std::process::id());
            70
        }
    })
}

fn serve(fd: Option<i32>, scope: &dyn Fn(&mut dyn FnMut())) -> io::Result<()> {
    let fd =
        fd.ok_or_else(|| io::Error::other(format!("{ENV_PROTOCOL_FD} is not a descriptor")))?;
    let status_fd: i32 = std::env::var(ENV_STATUS_FD)
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other(format!("{ENV_STATUS_FD} is not a descriptor")))?;
    let idle: Option<Duration> = std::env::var(ENV_IDLE_MS)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis);
    // The worker's own children (a nested process call) must not mistake themselves for
    // workers of this parent.
    for var in [ENV_PROTOCOL_FD, ENV_STATUS_FD, ENV_IDLE_MS] {
        std::env::remove_var(var);
    }
    // Tasks here are inside the parent's parallel call: calls they make run sequentially.
    crate::context::enter_worker_process();
    keep_freed_memory();
    privatize_views_before_fork();
    // The fds were placed without close-on-exec (to survive exec); set it again, or programs
    // that tasks start would inherit the socket and keep it open after this worker dies.
    for raw in [fd, status_fd] {
        // SAFETY: fcntl on descriptors this process received from its parent.
        if unsafe { libc::fcntl(raw, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: the parent put a socket on `fd` and a memfd on `status_fd` for this process
    // alone (spawn.rs); nothing else in this process owns them.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    let status = StatusPage::map(unsafe { OwnedFd::from_raw_fd(status_fd) })?;
    // The parent ends idle workers itself (and reaps them); this only guards against a
    // parent that stopped reaping, well after the parent's own deadline so the two never race.
    stream.set_read_timeout(idle.map(|d| d * 2 + Duration::from_secs(10)))?;
    let mut channel = Channel::new(stream, DEFAULT_THRESHOLD);
    let hello = protocol::encode(&Hello {
        pid: std::process::id(),
    });
    channel.send(Kind::Hello, &hello)?;
    loop {
        let (kind, payload) = match channel.recv() {
            Ok(frame) => frame,
            // The parent is gone (or dropped this worker): exit quietly.
            Err(FrameError::Closed) => return Ok(()),
            // Idle for longer than allowed: the parent reaps us as an idle worker.
            Err(FrameError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(())
            }
            Err(e) => return Err(io::Error::other(e.to_string())),
        };
        if kind != Kind::RunBatch {
            return Err(io::Error::other(format!(
                "unexpected {kind:?} frame from the parent"
            )));
        }
        let (batch, args) =
            protocol::split_batch(&payload).map_err(|e| io::Error::other(e.to_string()))?;
        channel.set_threshold(usize::try_from(batch.max_nbytes).unwrap_or(usize::MAX));
        // Segments the arguments refer to (`attached.rs`) are theirs to take while the batch
        // runs; those left are closed after it.
        let mut attached = Some(channel.take_attached());
        let mut outcome = None;
        scope(&mut || {
            let fds = attached.take().unwrap_or_default();
            outcome = Some(protocol::attached::receiving(fds, || {
                run_batch(&batch, &args, &status)
            }))
        });
        let outcome = outcome.ok_or_else(|| io::Error::other("the batch scope did not run it"))?;
        drop((batch, args));
        drop(payload);
        // The caller may reuse the segments of this batch once it has the answer.
        crate::buffer::received::batch_done();
        channel.send_message(Kind::BatchDone, &outcome.message())?;
        // Only now is the batch over: a crash while encoding or sending the answer is still
        // charged to its last task.
        status.cells()[0].store(0, Ordering::Release);
    }
}

/// A task that forks (`fork()`, not `posix_spawn`) would leave its child with views of the
/// caller's segments, which the caller rewrites after the batch: they get their own pages
/// first (`buffer::received`).
fn privatize_views_before_fork() {
    extern "C" fn prepare() {
        crate::buffer::received::privatize_before_fork();
    }
    // SAFETY: registers a handler with no preconditions; it only takes a mutex that no
    // thread holds across a fork of its own.
    unsafe { libc::pthread_atfork(Some(prepare), None, None) };
}

/// A worker decodes arguments and encodes results of similar sizes batch after batch. By
/// default glibc returns big freed blocks to the kernel and the next batch faults fresh,
/// zeroed pages back in (most of the time of an 8 MB round trip, measured with perf). This
/// process is ours: keep freed memory for the next batch instead.
fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator thresholds; called before the worker allocates
    // anything big, with values glibc accepts (bytes, within i32).
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// The outcome of a batch in the worker, owning the encoded values until they are sent.
struct Outcome {
    values: Vec<Vec<u8>>,
    end: End,
}

enum End {
    Complete,
    Error(Vec<u8>),
    Panic(String),
    Broken(String),
}

impl Outcome {
    fn message(&self) -> BatchDone<'_> {
        BatchDone {
            values: self.values.iter().map(|v| Bytes(v)).collect(),
            end: match &self.end {
                End::Complete => BatchEnd::Complete,
                End::Error(e) => BatchEnd::Error(Bytes(e)),
                End::Panic(m) => BatchEnd::Panic(m.clone()),
                End::Broken(m) => BatchEnd::Broken(m.clone()),
            },
        }
    }
}

fn run_batch(batch: &BatchHead<'_>, args: &[&[u8]], status: &StatusPage) -> Outcome {
    let [running, started] = status.cells();
    let mut values = Vec::with_capacity(batch.tasks.len());
    for (i, (task, args)) in batch.tasks.iter().zip(args).enumerate() {
        let index = batch.first + i as u64;
        started.store(monotonic_ns(), Ordering::Release);
        running.store(index + 1, Ordering::Release);
        let name = batch.functions.get(task.function as usize).copied();
        let Some(call) = name.and_then(lookup) else {
            let end = End::Broken(format!(
                "no function {:?} is registered in the worker (define it with joblet::remote_fn!)",
                name.unwrap_or("?")
            ));
            return Outcome { values, end };
        };
        let end = match catch_unwind(AssertUnwindSafe(|| call(args))) {
            Ok(Called::Value(v)) => {
                values.push(v);
                continue;
            }
            Ok(Called::Error(e)) => End::Error(e),
            Ok(Called::Broken(why)) => End::Broken(why),
            Err(payload) => End::Panic(crate::error::take_panic_message(payload)),
        };
        return Outcome { values, end };
    }
    Outcome {
        values,
        end: End::Complete,
    }
}
