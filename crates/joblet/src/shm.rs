//! Anonymous shared memory: memfds and their mappings, in one place. A memfd has no name in
//! `/dev/shm`; the kernel frees it when its last descriptor and mapping are gone, so no crash
//! can leak one.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

/// A new memfd of `len` bytes (zeros), close-on-exec. With `seal_shrink`, it can never
/// shrink, so that any process mapping it can never lose pages under it (no SIGBUS).
pub(crate) fn memfd(name: &CStr, len: usize, seal_shrink: bool) -> io::Result<OwnedFd> {
    let flags = libc::MFD_CLOEXEC
        | if seal_shrink {
            libc::MFD_ALLOW_SEALING
        } else {
            0
        };
    // SAFETY: a NUL-terminated name and valid flags; the result is checked.
    let raw = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ftruncate and fcntl on a valid memfd we own.
    unsafe {
        if libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) != 0 {
            return Err(io::Error::last_os_error());
        }
        if seal_shrink && libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fd)
}

/// How a mapping may be used.
#[derive(Clone, Copy)]
pub(crate) enum Access {
    /// Shared and writable: both processes see each other's writes.
    Shared,
    /// A private read-only view, with every page mapped at once (MAP_POPULATE) instead of
    /// one fault per page as it is read.
    ReadPopulated,
}

/// A mapping of the first `len` bytes of a file, unmapped on drop.
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping belongs to this value alone and stays valid until drop; what it points to
// is either read-only or accessed through atomics or by one owner at a time.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd`, which must be at least that long (checked).
    pub(crate) fn new(fd: &OwnedFd, len: usize, access: Access) -> io::Result<Self> {
        // SAFETY: fstat into a zeroed struct on a valid descriptor.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        if (st.st_size as u64) < len as u64 {
            return Err(io::Error::other(format!(
                "the file holds {} bytes, not {len}",
                st.st_size
            )));
        }
        if len == 0 {
            return Ok(Mapping {
                ptr: NonNull::dangling(),
                len: 0,
            });
        }
        let (prot, flags) = match access {
            Access::Shared => (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED),
            Access::ReadPopulated => (libc::PROT_READ, libc::MAP_PRIVATE | libc::MAP_POPULATE),
        };
        // SAFETY: mapping `len` bytes of a file at least that long (checked above); the result
        // is checked before use.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd.as_raw_fd(), 0) };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Mapping { ptr, len })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `len` mapped, readable bytes for as long as `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, writable. Only for `Access::Shared` mappings.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `len` mapped bytes owned by `self`; writable when mapped `Shared`, which the
        // callers (the sender's outbox) guarantee.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: unmapping exactly what `new` mapped; no reference outlives `self`.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}
