//! The process backend: tasks run in worker processes, which may crash, hang or be killed
//! without taking the caller down.
//!
//! ```text
//!  caller thread            slot threads (one per worker, in the parent)      worker processes
//!  ─────────────            ─────────────────────────────────────────────     ────────────────
//!  Call ◄── Msg::Done ───── loop { feed.next_batch()                          worker_hook():
//!   │                              encode jobs → RunBatch ───── fd 3 ───────►  decode, look up
//!   │  overdue? / failed?          read BatchDone ◄──────────── socket ──────  the function, run,
//!   │      │                       decode values }                            encode BatchDone
//!   │      └─► kill(-pgid) ─────────────────────────────────────────────────► (whole group)
//!   │                              EOF → waitpid → exit code or signal
//!   └─ TaskClock ◄──────────── status page (memfd on fd 4): running task, since when ◄── worker
//!
//!  pool (process-wide): idle workers reused across calls; a pool thread starts every worker
//!  (parent-death signal armed) and ends idle ones after the idle timeout.
//! ```
//!
//! 1. A call checks out `n_jobs` workers (idle ones first) and gives each slot thread one.
//! 2. A slot ships a batch as one frame: a table of function names and each task's encoded
//!    arguments. The worker runs the tasks in order, writing the running task's index and start
//!    time into the shared status page, and answers with the encoded values and how the batch
//!    ended.
//! 3. If the socket reaches EOF instead, the worker died: the slot reaps it, reads the exit
//!    code or signal, and reports the task the status page names.
//! 4. On a timeout or the first failure the caller kills every busy worker's process group;
//!    dead workers are not returned to the pool, which starts new ones on the next call.

mod pool;
pub(crate) mod spawn;
mod status;
pub(crate) mod worker;

pub use spawn::WorkerExit;

use crate::error::Failure;
use crate::protocol::{self, BatchDone, BatchHead, FrameError, Kind, TaskHead};
use crate::scheduler::batching::IdealDuration;
use crate::scheduler::feed::Batch;
use crate::scheduler::{BatchEnd, BatchReport, ClockCells, RunContext, Runner, Slot, TaskClock};
use crate::task::Job;
use spawn::{Process, StartError, Worker};
use status::Cells;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) use pool::set_idle_timeout;

/// A batch costs a round trip through a socket and the encoding of its tasks (tens of
/// microseconds); batches of 20-200 ms make that negligible while keeping the end of a call
/// balanced on a small machine.
pub(crate) const IDEAL_BATCH: IdealDuration = IdealDuration {
    min: Duration::from_millis(20),
    max: Duration::from_millis(200),
};

impl ClockCells for status::StatusPage {
    fn cells(&self) -> &Cells {
        status::StatusPage::cells(self)
    }
}

/// Runs batches in one worker process, for one call; gives the worker back when dropped.
pub(crate) struct ProcessRunner {
    worker: Option<Worker>,
    /// The process that the slot's kill reaches. Cleared before the worker goes back to the
    /// pool, so that a late kill (fail-fast, drop) can never reach a worker that another call
    /// has checked out since.
    lease: Arc<Mutex<Option<Arc<Process>>>>,
    /// Payloads above this size travel through shared memory.
    max_nbytes: usize,
}

/// Checks out `n` workers for a call of `n_jobs`, started as `recipe` says (`share()`
/// threads where it leaves the count to the CPU share).
pub(crate) fn runners(
    n: usize,
    n_jobs: usize,
    recipe: &spawn::Recipe,
    share: impl FnOnce() -> usize,
    max_nbytes: usize,
) -> Result<Vec<ProcessRunner>, StartError> {
    let workers = pool::checkout(n, n_jobs, recipe, share)?;
    Ok(workers
        .into_iter()
        .map(|w| ProcessRunner {
            lease: Arc::new(Mutex::new(Some(w.process.clone()))),
            worker: Some(w),
            max_nbytes,
        })
        .collect())
}

impl ProcessRunner {
    /// The slot's clock (the worker's status page) and the way to kill its worker.
    pub(crate) fn slot(&self) -> Slot {
        let w = self.worker.as_ref().expect("a new runner has its worker");
        let lease = self.lease.clone();
        let kill = move || {
            if let Some(process) = lease.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                process.kill();
            }
        };
        Slot::new(w.status.clone(), Some(Box::new(kill)))
    }

    /// Takes the worker out of this runner (and out of reach of the slot's kill).
    fn take_worker(&mut self) -> Option<Worker> {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.worker.take()
    }

    /// The worker died, or the connection to it broke (EOF, a failed write or read): make sure
    /// it is dead, reap it, and name the task it was running. Killing first means a worker
    /// that is in fact alive (the connection broke on this side) cannot make this wait
    /// forever; a worker already exiting keeps its own exit status.
    fn died<T, E>(&mut self, first: usize, len: usize, values: Vec<T>) -> BatchReport<T, E> {
        let worker = self.take_worker().expect("only called with a worker");
        worker.process.kill();
        let exit = worker.process.wait();
        let running = worker.status.cells()[0].load(std::sync::atomic::Ordering::Acquire);
        // 0 (or nonsense): it died before starting a task of this batch (reading the batch).
        let index = running
            .checked_sub(1)
            .map(|i| i as usize)
            .filter(|i| (first..first + len.max(1)).contains(i))
            .unwrap_or(first);
        BatchReport {
            first,
            values,
            end: BatchEnd::Died { index, exit },
        }
    }
}

impl Drop for ProcessRunner {
    fn drop(&mut self) {
        if let Some(w) = self.take_worker() {
            if w.process.is_alive() {
                pool::checkin(w);
            } else {
                w.process.terminate();
            }
        }
    }
}

impl<J: Job> Runner<J> for ProcessRunner {
    fn run_batch(&mut self, batch: Batch<J>, ctx: &RunContext) -> BatchReport<J::Output, J::Error> {
        let first = batch.first;
        let len = batch.jobs.len();
        let broken = |values, index: usize, message: String| BatchReport {
            first,
            values,
            end: BatchEnd::Broken { index, message },
        };
        if self.worker.is_none() {
            return broken(Vec::new(), first, "the worker of this slot is gone".into());
        }
        let mut functions: Vec<&'static str> = Vec::new();
        let mut tasks = Vec::with_capacity(batch.jobs.len());
        let mut args = Vec::with_capacity(batch.jobs.len());
        let mut decoders = Vec::with_capacity(batch.jobs.len());
        // Sizing the arguments also collects the descriptors they attach (`attached.rs`);
        // encoding them into the frame finds the same ones.
        let lend_min = self.max_nbytes.max(crate::shm::SPARE_MIN);
        let outgoing = protocol::attached::Outgoing::new(lend_min);
        let (sized, attached) = protocol::attached::collecting(outgoing, || {
            for (i, job) in batch.jobs.into_iter().enumerate() {
                let Some(wire) = job.into_wire() else {
                    let why = "this task cannot be sent to a worker process".into();
                    return Err(broken(Vec::new(), first + i, why));
                };
                let len = match wire.args.encoded_len() {
                    Ok(len) => len,
                    Err(e) => {
                        let why = format!("cannot encode the arguments of {}: {e}", wire.function);
                        return Err(broken(Vec::new(), first + i, why));
                    }
                };
                let f = match functions.iter().position(|&n| n == wire.function) {
                    Some(f) => f,
                    None => {
                        functions.push(wire.function);
                        functions.len() - 1
                    }
                };
                tasks.push(TaskHead {
                    function: f as u32,
                    len: len as u64,
                });
                args.push(wire.args);
                decoders.push((wire.decode_value, wire.decode_error));
            }
            Ok(())
        });
        if let Err(report) = sized {
            return report;
        }
        let head = BatchHead {
            max_nbytes: self.max_nbytes as u64,
            functions,
            first: first as u64,
            tasks,
        };
        let head_len = match postcard::experimental::serialized_size(&head) {
            Ok(n) => n,
            Err(e) => return broken(Vec::new(), first, format!("cannot encode the batch: {e}")),
        };
        let total = head_len + head.tasks.iter().map(|t| t.len as usize).sum::<usize>();
        let worker = self.worker.as_mut().expect("checked above");
        worker.status.cells()[0].store(0, std::sync::atomic::Ordering::Release);
        worker.channel.set_threshold(self.max_nbytes);
        // The arguments are encoded straight into the frame (the shared outbox when big).
        let (sent, attached) = protocol::attached::collecting(attached.replaying(), || {
            let fds = protocol::attached::snapshot();
            worker.channel.send_filled_with(
                Kind::RunBatch,
                total,
                |buf| {
                    let (head_buf, mut rest) = buf.split_at_mut(head_len);
                    postcard::to_slice(&head, head_buf).map_err(|e| e.to_string())?;
                    for (task, args) in head.tasks.iter().zip(&args) {
                        let (this, tail) = rest.split_at_mut(task.len as usize);
                        args.encode_into(this)?;
                        rest = tail;
                    }
                    // Writing must attach what sizing did: those descriptors go with it.
                    if protocol::attached::snapshot() != fds {
                        return Err("the arguments attached other descriptors when written \
                                    than when sized"
                            .into());
                    }
                    Ok(())
                },
                &fds,
            )
        });
        debug_assert!(attached.len() <= protocol::attached::MAX_ATTACHED);
        // The arguments (and what they attached or lent) live until the worker has answered:
        // it may still be reading them.
        let _args = args;
        let _lent = attached;
        match sent {
            Ok(()) => {}
            // The batch could not be encoded, or is too big for a frame: this task's fault,
            // not the worker's.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
                ) =>
            {
                return broken(
                    Vec::new(),
                    first,
                    format!("cannot encode the arguments: {e}"),
                );
            }
            Err(_) => return self.died(first, len, Vec::new()),
        }
        if let Some(timeout) = ctx.timeout {
            if let Some(index) = wait_for_answer(worker, &ctx.clock, timeout) {
                // The slot enforces the timeout itself: a call that already ended (on another
                // task's failure or timeout) leaves no stuck worker behind.
                if let Some(w) = self.take_worker() {
                    w.process.terminate();
                }
                return BatchReport {
                    first,
                    values: Vec::new(),
                    end: BatchEnd::TimedOut { index },
                };
            }
        }
        let worker = self.worker.as_mut().expect("checked above");
        let payload = match worker.channel.recv() {
            Ok((Kind::BatchDone, payload)) => payload,
            Ok((kind, _)) => {
                let e = FrameError::Malformed {
                    offset: 0,
                    what: format!("unexpected {kind:?} frame"),
                };
                return self.garbled(first, e);
            }
            Err(FrameError::Closed) | Err(FrameError::Io(_)) => {
                return self.died(first, len, Vec::new())
            }
            Err(e) => return self.garbled(first, e),
        };
        // The values are decoded straight from the received frame (often a shared mapping).
        let done: BatchDone = match protocol::decode("BatchDone", &payload) {
            Ok(d) => d,
            Err(e) => return self.garbled(first, e),
        };
        // A worker that answers for tasks it was not given, or claims success without all the
        // values, is broken: drop it rather than trust anything it says.
        let complete = matches!(done.end, protocol::BatchEnd::Complete);
        if done.values.len() > len || (complete && done.values.len() != len) {
            let what = format!("{} values for a batch of {len} tasks", done.values.len());
            return self.garbled(first, FrameError::Malformed { offset: 0, what });
        }
        let mut values = Vec::with_capacity(done.values.len());
        for (i, bytes) in done.values.iter().enumerate() {
            match (decoders[i].0)(bytes.0) {
                Ok(v) => values.push(v),
                Err(e) => {
                    return broken(values, first + i, format!("cannot decode the result: {e}"))
                }
            }
        }
        let at = first + values.len();
        let end = match done.end {
            protocol::BatchEnd::Complete => BatchEnd::Complete,
            protocol::BatchEnd::Panic(message) => BatchEnd::Failed(Failure::Panic(message)),
            protocol::BatchEnd::Error(bytes) => {
                match decoders.get(values.len()).map(|d| (d.1)(bytes.0)) {
                    Some(Ok(e)) => BatchEnd::Failed(Failure::Error(e)),
                    Some(Err(e)) => BatchEnd::Broken {
                        index: at,
                        message: format!("cannot decode the task's error: {e}"),
                    },
                    None => BatchEnd::Broken {
                        index: at,
                        message: "an error for a task that does not exist".into(),
                    },
                }
            }
            protocol::BatchEnd::Broken(message) => BatchEnd::Broken { index: at, message },
        };
        BatchReport { first, values, end }
    }
}

/// Waits until the worker's answer can be read, watching the running task's clock: returns
/// the index of a task that ran past `timeout` (the answer is not read then).
fn wait_for_answer(worker: &Worker, clock: &TaskClock, timeout: Duration) -> Option<usize> {
    let fd = worker.channel.stream().as_raw_fd();
    loop {
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for a descriptor this worker owns; the result is checked.
        let ready = unsafe { libc::poll(&mut poll, 1, 20) };
        if ready != 0 {
            // Readable, closed, or a poll error: the read that follows finds out which.
            return None;
        }
        if let Some(index) = clock.running() {
            if clock.elapsed() > timeout {
                return Some(index);
            }
        }
    }
}

impl ProcessRunner {
    /// The worker sent something that is not a valid answer: it cannot be trusted any more.
    fn garbled<T, E>(&mut self, first: usize, e: FrameError) -> BatchReport<T, E> {
        if let Some(w) = self.take_worker() {
            w.process.terminate();
        }
        BatchReport {
            first,
            values: Vec::new(),
            end: BatchEnd::Broken {
                index: first,
                message: format!("the worker's answer is invalid: {e}"),
            },
        }
    }
}
