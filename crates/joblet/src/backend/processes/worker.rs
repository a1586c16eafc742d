//! The worker side: what a re-executed binary does once [`crate::worker_hook`] finds that it
//! was started as a worker. It never returns to the program's `main`.

use super::spawn::{ENV_IDLE_MS, ENV_PROTOCOL_FD, ENV_STATUS_FD};
use super::status::StatusPage;
use crate::protocol::{
    self, BatchDone, BatchEnd, Channel, FrameError, Hello, Kind, RunBatch, DEFAULT_THRESHOLD,
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
    HOOK_CALLED.load(Ordering::Acquire)
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
/// # main();
/// ```
pub fn worker_hook() {
    HOOK_CALLED.store(true, Ordering::Release);
    let Some(fd) = std::env::var_os(ENV_PROTOCOL_FD) else {
        return;
    };
    let code = match serve(fd.to_string_lossy().parse().ok()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("joblet worker {}: {e}", std::process::id());
            70
        }
    };
    std::process::exit(code);
}

fn serve(fd: Option<i32>) -> io::Result<()> {
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
        let batch: RunBatch =
            protocol::decode("RunBatch", &payload).map_err(|e| io::Error::other(e.to_string()))?;
        channel.set_threshold(usize::try_from(batch.max_nbytes).unwrap_or(usize::MAX));
        let done = run_batch(batch, &status);
        channel.send(Kind::BatchDone, &protocol::encode(&done))?;
        // Only now is the batch over: a crash while encoding or sending the answer is still
        // charged to its last task.
        status.cells()[0].store(0, Ordering::Release);
    }
}

fn run_batch(batch: RunBatch, status: &StatusPage) -> BatchDone {
    let [running, started] = status.cells();
    let mut values = Vec::with_capacity(batch.tasks.len());
    let mut end = BatchEnd::Complete;
    for (i, (function, args)) in batch.tasks.iter().enumerate() {
        let index = batch.first + i as u64;
        started.store(monotonic_ns(), Ordering::Release);
        running.store(index + 1, Ordering::Release);
        let Some(call) = batch
            .functions
            .get(*function as usize)
            .and_then(|name| lookup(name))
        else {
            let name = batch
                .functions
                .get(*function as usize)
                .map_or("?", |s| s.as_str());
            end = BatchEnd::Broken(format!(
                "no function {name:?} is registered in the worker (define it with joblet::remote_fn!)"
            ));
            break;
        };
        match catch_unwind(AssertUnwindSafe(|| call(args))) {
            Ok(Called::Value(v)) => values.push(v),
            Ok(Called::Error(e)) => {
                end = BatchEnd::Error(e);
                break;
            }
            Ok(Called::Broken(why)) => {
                end = BatchEnd::Broken(why);
                break;
            }
            Err(payload) => {
                end = BatchEnd::Panic(crate::error::take_panic_message(payload));
                break;
            }
        }
    }
    BatchDone { values, end }
}
