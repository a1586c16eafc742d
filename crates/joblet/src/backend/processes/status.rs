//! A page of memory shared by the parent and one worker process: which task the worker is
//! running and since when. The worker writes it with two atomic stores per task (no system
//! call); the parent reads it to name the task of a crash, and to see a task overrun its
//! timeout.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

/// The shared cells: `[running task index + 1 (0: idle), start time in CLOCK_MONOTONIC ns]`.
pub(crate) type Cells = [AtomicU64; 2];

const PAGE: usize = 4096;

/// A mapping of a memfd holding [`Cells`].
pub(crate) struct StatusPage {
    ptr: NonNull<Cells>,
    fd: OwnedFd,
}

// SAFETY: the mapping is only accessed through atomics, which may be shared between threads
// (and processes); the pointer stays valid until `drop` unmaps it.
unsafe impl Send for StatusPage {}
unsafe impl Sync for StatusPage {}

impl StatusPage {
    /// Creates a fresh page (in the parent).
    pub(crate) fn create() -> io::Result<Self> {
        // SAFETY: memfd_create takes a NUL-terminated name and flags; it returns a new fd or -1.
        let raw = unsafe { libc::memfd_create(c"joblet-status".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: ftruncate on a valid fd we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), PAGE as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Self::map(fd)
    }

    /// Maps a page received from the parent (in the worker).
    pub(crate) fn map(fd: OwnedFd) -> io::Result<Self> {
        // SAFETY: mapping PAGE bytes of a memfd that is at least PAGE long, shared, read-write;
        // the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // A fresh memfd reads as zeros: both cells start at 0 (idle). AtomicU64 has the size
        // and alignment of u64, and the mapping is page-aligned.
        let ptr = NonNull::new(ptr.cast::<Cells>()).ok_or_else(io::Error::last_os_error)?;
        Ok(StatusPage { ptr, fd })
    }

    pub(crate) fn cells(&self) -> &Cells {
        // SAFETY: the mapping is valid and initialized (zeros) for as long as `self` lives.
        unsafe { self.ptr.as_ref() }
    }

    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}

impl Drop for StatusPage {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in `map`; no reference outlives `self`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), PAGE) };
    }
}
