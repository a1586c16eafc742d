//! Starting one worker process: re-execute this program with a socket on fd 3 and its status
//! page on fd 4, in its own process group, killed by the kernel if the parent dies.
//!
//! [`Launcher`] is the seam for other kinds of workers (the Python front will launch
//! `python -m joblet._worker` here); everything after `exec` speaks the same protocol.

use super::status::StatusPage;
use crate::protocol::{self, Channel, FrameError, Hello, Kind, DEFAULT_THRESHOLD};
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const ENV_PROTOCOL_FD: &str = "JOBLET_WORKER_FD";
pub(crate) const ENV_STATUS_FD: &str = "JOBLET_WORKER_STATUS_FD";
pub(crate) const ENV_IDLE_MS: &str = "JOBLET_WORKER_IDLE_MS";

/// Thread-count variables of the common native thread pools; workers get
/// `max(cpu_count / n_jobs, 1)` in each one the user did not set.
pub(crate) const THREAD_LIMIT_VARS: [&str; 7] = [
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "RAYON_NUM_THREADS",
];

/// How long a new worker may take to say hello.
const HANDSHAKE: Duration = Duration::from_secs(30);

/// Makes the command that starts a worker process.
pub(crate) trait Launcher: Send + Sync {
    fn command(&self) -> Command;
}

/// Runs this very program again. `/proc/self/exe`, resolved by the child between `fork` and
/// `exec`, is the running binary even if its file has since been replaced on disk.
pub(crate) struct ReExec;

impl Launcher for ReExec {
    fn command(&self) -> Command {
        let mut cmd = Command::new("/proc/self/exe");
        if let Some(arg0) = std::env::args_os().next() {
            cmd.arg0(arg0);
        }
        cmd
    }
}

/// Runs a program given by the embedding application (the Python front runs its
/// interpreter with `-m joblet._worker`), which must call [`crate::run_worker`] first thing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct External {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, OsString)>,
}

impl Launcher for External {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }
}

static WORKER_COMMAND: Mutex<Option<Arc<External>>> = Mutex::new(None);

/// Makes every worker started from now on run `program args..` (with `env` added to its
/// environment) instead of this binary. Idle workers started another way are not reused.
pub(crate) fn set_worker_command(external: External) {
    let mut current = WORKER_COMMAND.lock().unwrap_or_else(|e| e.into_inner());
    if current.as_deref() != Some(&external) {
        *current = Some(Arc::new(external));
    }
}

/// How a worker is started. A call reuses an idle worker only if it would start a new one
/// the same way: the same command, the same thread-count variables (which a process cannot
/// change once started, and which the caller may have changed since, or asked otherwise
/// with `inner_max_num_threads`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Recipe {
    /// The application's command, or `None` to re-execute this binary.
    command: Option<Arc<External>>,
    /// Every variable of [`THREAD_LIMIT_VARS`] with its value for the worker, or `None` for
    /// the call's CPU share, which a worker gets when it starts (reading the CPU count costs
    /// a warm call a third of its time: it is read only when a worker starts or an idle one
    /// served another `n_jobs`).
    threads: Vec<(&'static str, Option<OsString>)>,
}

impl Recipe {
    /// The recipe for a worker started now: in each thread-count variable, `inner` if given,
    /// else the caller's own value if it has one, else the CPU share.
    pub(crate) fn now(inner: Option<usize>) -> Recipe {
        let threads = THREAD_LIMIT_VARS
            .iter()
            .map(|&var| {
                let value = match inner {
                    Some(n) => Some(OsString::from(n.to_string())),
                    None => std::env::var_os(var),
                };
                (var, value)
            })
            .collect();
        let command = WORKER_COMMAND
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Recipe { command, threads }
    }

    /// Whether some thread-count variable gets the CPU share.
    pub(crate) fn uses_share(&self) -> bool {
        self.threads.iter().any(|(_, v)| v.is_none())
    }

    fn launcher(&self) -> Arc<dyn Launcher> {
        match &self.command {
            Some(external) => external.clone(),
            None => Arc::new(ReExec),
        }
    }
}

/// Whether workers are started by a command set with [`set_worker_command`].
pub(crate) fn has_worker_command() -> bool {
    WORKER_COMMAND
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_some()
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerExit {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal (9 is SIGKILL: the OOM killer, a timeout, or a user).
    Signal(i32),
}

impl WorkerExit {
    pub(crate) fn from_status(status: ExitStatus) -> Self {
        match (status.code(), status.signal()) {
            (Some(code), _) => WorkerExit::Code(code),
            (None, Some(sig)) => WorkerExit::Signal(sig),
            (None, None) => WorkerExit::Code(-1),
        }
    }
}

impl fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerExit::Code(c) => write!(f, "exit code {c}"),
            WorkerExit::Signal(s) => {
                let name = match *s {
                    libc::SIGSEGV => "SIGSEGV",
                    libc::SIGABRT => "SIGABRT",
                    libc::SIGKILL => "SIGKILL",
                    libc::SIGBUS => "SIGBUS",
                    libc::SIGILL => "SIGILL",
                    libc::SIGFPE => "SIGFPE",
                    libc::SIGTERM => "SIGTERM",
                    _ => "",
                };
                write!(
                    f,
                    "signal {s}{}{name}",
                    if name.is_empty() { "" } else { " " }
                )
            }
        }
    }
}

/// The process of a worker, shared with whoever may need to kill it (timeouts, fail-fast), so
/// that a kill can never reach a process id that was reaped and reused.
pub(crate) struct Process {
    child: Mutex<Option<Child>>,
    pid: u32,
    /// Set by `kill`: the worker is dying even if it still looks alive, and must never be
    /// handed to another call.
    killed: AtomicBool,
}

impl Process {
    /// Kills the worker and everything it started (its process group).
    pub(crate) fn kill(&self) {
        let child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        self.killed.store(true, Ordering::Release);
        if child.is_some() {
            // SAFETY: signalling our own child's process group, which exists until reaped
            // (and it is not reaped while we hold the lock).
            unsafe { libc::kill(-(self.pid as i32), libc::SIGKILL) };
        }
    }

    /// Waits for the worker to end and reaps it.
    pub(crate) fn wait(&self) -> WorkerExit {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match child.take() {
            Some(mut c) => c
                .wait()
                .map_or(WorkerExit::Code(-1), WorkerExit::from_status),
            None => WorkerExit::Code(-1),
        }
    }

    /// Whether the worker is still running and was not killed (reaps it if it ended).
    pub(crate) fn is_alive(&self) -> bool {
        if self.killed.load(Ordering::Acquire) {
            return false;
        }
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        match child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                *child = None;
                false
            }
            None => false,
        }
    }

    /// Kills the process group and reaps the worker.
    pub(crate) fn terminate(&self) {
        self.kill();
        self.wait();
    }
}

/// A running worker, as the parent holds it.
pub(crate) struct Worker {
    pub(crate) process: Arc<Process>,
    pub(crate) channel: Channel,
    pub(crate) status: Arc<StatusPage>,
    /// How it was started (which cannot change later), and the CPU share it got.
    pub(crate) recipe: Recipe,
    pub(crate) share: usize,
    /// The `n_jobs` of the last call it served, whose CPU share is `share`: a call with the
    /// same `n_jobs` can reuse it without reading the CPU count again.
    pub(crate) n_jobs: usize,
}

/// A worker process just started, before its handshake.
pub(crate) type Started = (Child, UnixStream, StatusPage);

/// Why a worker could not be started.
#[derive(Debug)]
pub(crate) struct StartError(pub(crate) String);

/// Starts a worker process. Must run on a thread that lives as long as the program: the
/// kernel's parent-death signal fires when the thread that forked the child exits.
pub(crate) fn start(recipe: &Recipe, share: usize, idle: Duration) -> io::Result<Started> {
    let (parent_end, child_end) = UnixStream::pair()?;
    let status = StatusPage::create()?;
    let mut cmd = recipe.launcher().command();
    cmd.env(ENV_PROTOCOL_FD, "3")
        .env(ENV_STATUS_FD, "4")
        .env(ENV_IDLE_MS, idle.as_millis().to_string())
        .stdin(Stdio::null());
    let share = OsString::from(share.to_string());
    cmd.envs(
        recipe
            .threads
            .iter()
            .map(|(k, v)| (k, v.as_ref().unwrap_or(&share))),
    );
    let socket_fd = child_end.as_raw_fd();
    let status_fd = status.fd().as_raw_fd();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and calls only async-signal-safe
    // functions (fcntl, dup2, setpgid, prctl, getppid), touching no locks or allocations.
    unsafe {
        cmd.pre_exec(move || {
            // Move both descriptors out of the way first, so that placing one on 3 or 4 cannot
            // overwrite the other; the copies are close-on-exec, the final fds 3 and 4 are not.
            let socket = libc::fcntl(socket_fd, libc::F_DUPFD_CLOEXEC, 10);
            let page = libc::fcntl(status_fd, libc::F_DUPFD_CLOEXEC, 10);
            if socket < 0 || page < 0 || libc::dup2(socket, 3) < 0 || libc::dup2(page, 4) < 0 {
                return Err(io::Error::last_os_error());
            }
            // Its own process group: a timeout kills the worker and all it started, and the
            // terminal's Ctrl-C reaches the parent, which decides.
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the line above: then nobody would kill us.
            if libc::getppid() != parent {
                libc::_exit(0);
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(child_end);
    Ok((child, parent_end, status))
}

/// Waits for a started worker's hello; on failure the process is killed and reaped.
pub(crate) fn handshake(
    child: Child,
    stream: UnixStream,
    status: StatusPage,
    recipe: Recipe,
    share: usize,
    n_jobs: usize,
) -> Result<Worker, StartError> {
    let pid = child.id();
    let process = Arc::new(Process {
        child: Mutex::new(Some(child)),
        pid,
        killed: AtomicBool::new(false),
    });
    let fail = |why: String| {
        process.kill();
        let exit = process.wait();
        StartError(format!(
            "worker process {pid} did not start ({why}; it ended with {exit})"
        ))
    };
    let started = Instant::now();
    stream
        .set_read_timeout(Some(HANDSHAKE))
        .map_err(|e| fail(e.to_string()))?;
    let mut channel = Channel::new(stream, DEFAULT_THRESHOLD);
    match channel.recv() {
        Ok((Kind::Hello, ref payload)) if protocol::decode::<Hello>("Hello", payload).is_ok() => {}
        Ok((kind, _)) => return Err(fail(format!("it sent {kind:?} instead of Hello"))),
        Err(FrameError::Closed) => {
            return Err(fail(if recipe.command.is_none() {
                "it exited before the handshake: does the program call joblet::worker_hook() \
                 at the start of main?"
                    .into()
            } else {
                "it exited before the handshake: its standard error says why".into()
            }))
        }
        Err(e) => {
            return Err(fail(format!(
                "no handshake after {:?}: {e}",
                started.elapsed()
            )))
        }
    }
    channel
        .stream()
        .set_read_timeout(None)
        .map_err(|e| fail(e.to_string()))?;
    Ok(Worker {
        process,
        channel,
        status: Arc::new(status),
        recipe,
        share,
        n_jobs,
    })
}
