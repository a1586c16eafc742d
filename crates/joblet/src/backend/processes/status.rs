//! A page of memory shared by the parent and one worker process: which task the worker is
//! running and since when. The worker writes it with two atomic stores per task (no system
//! call); the parent reads it to name the task of a crash, and to see a task overrun its
//! timeout.

use crate::shm::{self, Access, Mapping};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicU64;

/// The shared cells: `[running task index + 1 (0: idle), start time in CLOCK_MONOTONIC ns]`.
pub(crate) type Cells = [AtomicU64; 2];

const PAGE: usize = 4096;

/// A mapping of a memfd holding [`Cells`].
pub(crate) struct StatusPage {
    map: Mapping,
    fd: OwnedFd,
}

impl StatusPage {
    /// Creates a fresh page (in the parent).
    pub(crate) fn create() -> io::Result<Self> {
        Self::map(shm::memfd(c"joblet-status", PAGE, true)?)
    }

    /// Maps a page received from the parent (in the worker).
    pub(crate) fn map(fd: OwnedFd) -> io::Result<Self> {
        let map = Mapping::new(&fd, PAGE, Access::Shared)?;
        Ok(StatusPage { map, fd })
    }

    pub(crate) fn cells(&self) -> &Cells {
        // SAFETY: the mapping is page-aligned, PAGE >= size_of::<Cells>() bytes, initialized
        // (a fresh memfd reads as zeros: both cells idle), and lives as long as `self`;
        // AtomicU64 has the layout of u64, and the cells are only accessed atomically.
        unsafe { &*self.map.as_ptr().cast::<Cells>() }
    }

    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }
}
