//! The process-wide pool of idle workers, reused across calls.
//!
//! Created on the first process call (never at load time), per process: a forked child sees
//! that the pool belongs to another pid and starts its own. A long-lived pool thread starts
//! every worker (so that the parent-death signal stays armed) and ends idle workers that
//! outlived the idle timeout, reaping them (no zombies).

use super::spawn::{self, Recipe, StartError, Worker};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Default time an idle worker waits for work before it exits (loky's default too).
pub(crate) const DEFAULT_IDLE: Duration = Duration::from_secs(300);

struct Idle {
    worker: Worker,
    since: Instant,
}

struct Pool {
    pid: u32,
    idle: Vec<Idle>,
    idle_timeout: Duration,
    requests: Sender<Request>,
}

struct Request {
    recipe: Recipe,
    share: usize,
    idle: Duration,
    reply: Sender<std::io::Result<spawn::Started>>,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

fn pool() -> MutexGuard<'static, Option<Pool>> {
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if guard.as_ref().is_some_and(|p| p.pid != pid) {
        // A forked child inherited its parent's pool: those workers are the parent's. Forget
        // them without touching them (no kill, no wait) and start afresh.
        if let Some(old) = guard.take() {
            std::mem::forget(old);
        }
    }
    if guard.is_none() {
        let (requests, inbox) = mpsc::channel();
        std::thread::Builder::new()
            .name("joblet-pool".into())
            .spawn(move || pool_thread(inbox))
            .expect("the joblet pool thread starts");
        *guard = Some(Pool {
            pid,
            idle: Vec::new(),
            idle_timeout: DEFAULT_IDLE,
            requests,
        });
    }
    guard
}

/// Starts workers on request, and every second ends the idle workers past their time.
fn pool_thread(inbox: Receiver<Request>) {
    loop {
        match inbox.recv_timeout(Duration::from_secs(1)) {
            Ok(req) => {
                let _ = req
                    .reply
                    .send(spawn::start(&req.recipe, req.share, req.idle));
            }
            Err(RecvTimeoutError::Timeout) => reap_expired(),
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn reap_expired() {
    let expired: Vec<Idle> = {
        let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pool) = guard.as_mut().filter(|p| p.pid == std::process::id()) else {
            return;
        };
        let timeout = pool.idle_timeout;
        let (old, keep) = pool
            .idle
            .drain(..)
            .partition(|i| i.since.elapsed() >= timeout);
        pool.idle = keep;
        old
    };
    for i in expired {
        i.worker.process.terminate();
    }
}

/// Sets how long idle workers wait for the next call before they exit.
pub(crate) fn set_idle_timeout(timeout: Duration) {
    if let Some(pool) = pool().as_mut() {
        pool.idle_timeout = timeout;
    }
}

/// Takes `n` workers for a call of `n_jobs` whose workers are started as `recipe` says, with
/// `share()` threads in the variables the recipe leaves to the CPU share: idle ones started
/// that way first, new ones for the rest. `share()` reads the CPU count, so it is asked only
/// when an idle worker last served another `n_jobs` or a worker must start. Idle workers
/// started another way, or beyond `n_jobs`, are ended: the pool follows the calls it serves,
/// as loky's does.
pub(crate) fn checkout(
    n: usize,
    n_jobs: usize,
    recipe: &Recipe,
    share: impl FnOnce() -> usize,
) -> Result<Vec<Worker>, StartError> {
    let known = std::cell::OnceCell::new();
    let mut share = Some(share);
    let mut share = || *known.get_or_init(|| share.take().map_or(1, |f| f()));
    let (mut workers, stale, requests, idle) = {
        let mut guard = pool();
        let pool = guard.as_mut().expect("pool() creates the pool");
        let mut workers = Vec::with_capacity(n);
        let mut kept = Vec::new();
        let mut stale = Vec::new();
        // Reuse what fits; keep idle ones up to n_jobs (a short call does not shrink the
        // pool); end the rest.
        for mut i in pool.idle.drain(..) {
            let fits = i.worker.recipe == *recipe
                && i.worker.process.is_alive()
                && (!recipe.uses_share() || i.worker.n_jobs == n_jobs || i.worker.share == share());
            if fits && workers.len() < n {
                i.worker.n_jobs = n_jobs;
                workers.push(i.worker);
            } else if fits && workers.len() + kept.len() < n_jobs {
                i.worker.n_jobs = n_jobs;
                kept.push(i);
            } else {
                stale.push(i.worker);
            }
        }
        pool.idle = kept;
        (workers, stale, pool.requests.clone(), pool.idle_timeout)
    };
    for w in stale {
        w.process.terminate();
    }
    // Start the missing workers at once, then wait for each one's hello.
    let share = if workers.len() < n { share() } else { 0 };
    let mut pending = Vec::new();
    for _ in workers.len()..n {
        let (reply, answer) = mpsc::channel();
        requests
            .send(Request {
                recipe: recipe.clone(),
                share,
                idle,
                reply,
            })
            .map_err(|_| StartError("the joblet pool thread is gone".into()))?;
        pending.push(answer);
    }
    let mut error = None;
    for answer in pending {
        let started = answer
            .recv()
            .map_err(|_| StartError("the joblet pool thread is gone".into()));
        match started
            .and_then(|r| r.map_err(|e| StartError(format!("cannot start a worker process: {e}"))))
        {
            Ok((child, stream, status)) => {
                match spawn::handshake(child, stream, status, recipe.clone(), share, n_jobs) {
                    Ok(w) => workers.push(w),
                    Err(e) => error = error.or(Some(e)),
                }
            }
            Err(e) => error = error.or(Some(e)),
        }
    }
    match error {
        None => Ok(workers),
        Some(e) => {
            for w in workers {
                checkin(w);
            }
            Err(e)
        }
    }
}

/// Returns a healthy worker to the pool after a call.
pub(crate) fn checkin(worker: Worker) {
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    match guard.as_mut().filter(|p| p.pid == std::process::id()) {
        Some(pool) => pool.idle.push(Idle {
            worker,
            since: Instant::now(),
        }),
        None => {
            drop(guard);
            worker.process.terminate();
        }
    }
}
