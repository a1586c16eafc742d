//! Threads kept parked between calls, so that a call does not pay for starting its worker
//! threads (about 30 µs each, most of a small call's cost).
//!
//! A parked thread waits for its next job for `PARK`, then exits. A thread whose job
//! panicked is not reused. After `fork`, the child finds the cache belongs to another process
//! (its threads do not exist there) and starts afresh.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Mutex;
use std::time::Duration;

/// How long a parked thread waits for another call before it exits.
const PARK: Duration = Duration::from_secs(10);

/// Work for a thread, and whom to tell once the thread is parked again.
type Job = (Box<dyn FnOnce() + Send>, Sender<()>);

struct Parked {
    id: u64,
    jobs: Sender<Job>,
}

struct Cache {
    pid: u32,
    parked: Vec<Parked>,
    next_id: u64,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    pid: 0,
    parked: Vec::new(),
    next_id: 0,
});

fn cache() -> std::sync::MutexGuard<'static, Cache> {
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if c.pid != pid {
        // Another process's threads (we were forked): they do not exist here.
        std::mem::forget(std::mem::take(&mut c.parked));
        c.pid = pid;
    }
    c
}

/// Signals when a job has run (the `join` of a cached thread).
pub(crate) struct Done(Receiver<()>);

impl Done {
    /// Waits until the job has returned and its thread is parked again (or gone).
    pub(crate) fn join(self) {
        let _ = self.0.recv();
    }
}

/// Runs `f` on a parked thread, or on a new one named `name`.
pub(crate) fn run(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<Done> {
    let (done_tx, done_rx) = mpsc::channel();
    let mut job: Job = (Box::new(f), done_tx);
    loop {
        let parked = cache().parked.pop();
        let Some(parked) = parked else { break };
        match parked.jobs.send(job) {
            Ok(()) => return Ok(Done(done_rx)),
            // That thread gave up waiting just now: take the job back, try another.
            Err(mpsc::SendError(back)) => job = back,
        }
    }
    let (jobs_tx, jobs_rx) = mpsc::channel();
    jobs_tx.send(job).expect("the receiver is right here");
    let id = {
        let mut c = cache();
        c.next_id += 1;
        c.next_id
    };
    std::thread::Builder::new()
        .name(name.to_owned())
        .stack_size(STACK)
        .spawn(move || serve(id, jobs_tx, jobs_rx))?;
    Ok(Done(done_rx))
}

/// The stack of an engine thread: the 8 MiB that a main thread and Python's own threads get
/// on Linux, not Rust's 2 MiB. Tasks run here, and tasks recurse: a Python task that makes
/// nested calls goes through the engine's frames at every level, and must hit Python's
/// RecursionError before the end of the stack (a crash). Only touched pages cost memory.
const STACK: usize = 8 << 20;

fn serve(id: u64, jobs_tx: Sender<Job>, jobs_rx: Receiver<Job>) {
    let mut next = jobs_rx.recv_timeout(PARK);
    loop {
        match next {
            Ok((job, done)) => {
                set_name(c"joblet-worker");
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    // Whatever the job left behind on this thread is suspect: do not reuse it.
                    let _ = done.send(());
                    return;
                }
                // Parked threads carry another name: a running call's threads are the
                // `joblet-worker` ones.
                set_name(c"joblet-parked");
                cache().parked.push(Parked {
                    id,
                    jobs: jobs_tx.clone(),
                });
                // Only now: a call that follows at once finds this thread parked.
                let _ = done.send(());
                next = jobs_rx.recv_timeout(PARK);
            }
            Err(RecvTimeoutError::Timeout) => {
                let mut c = cache();
                match c.parked.iter().position(|p| p.id == id) {
                    Some(i) => {
                        c.parked.swap_remove(i);
                        return;
                    }
                    // Someone took this thread just now: its job is on the way.
                    None => {
                        drop(c);
                        next = jobs_rx.recv().map_err(|_| RecvTimeoutError::Disconnected);
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn set_name(name: &std::ffi::CStr) {
    // SAFETY: naming the calling thread with a NUL-terminated name under 16 bytes.
    unsafe { libc::pthread_setname_np(libc::pthread_self(), name.as_ptr()) };
}
