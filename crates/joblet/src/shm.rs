//! Anonymous shared memory: memfds and their mappings, in one place. A memfd has no name in
//! `/dev/shm`; the kernel frees it when its last descriptor and mapping are gone, so no crash
//! can leak one.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

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

/// What `fstat` says of an open file.
pub(crate) struct Stat {
    /// (device, inode): the same for every descriptor of the same file.
    pub(crate) id: (u64, u64),
    pub(crate) size: u64,
}

/// The identity and size of the file open on `fd`.
pub(crate) fn stat(fd: &impl AsRawFd) -> io::Result<Stat> {
    // SAFETY: fstat into a zeroed struct on a valid descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(clippy::unnecessary_cast)] // u64 on some targets, not on all
    Ok(Stat {
        id: (st.st_dev as u64, st.st_ino as u64),
        size: st.st_size as u64,
    })
}

/// How a mapping may be used.
#[derive(Clone, Copy)]
pub(crate) enum Access {
    /// Shared and writable: both processes see each other's writes.
    Shared,
    /// A private read-only view, with every page mapped at once (MAP_POPULATE) instead of
    /// one fault per page as it is read.
    ReadPopulated,
    /// A private read-only view whose pages are mapped as they are read (or by
    /// [`Mapping::populate`]).
    Read,
    /// A private writable view (copy-on-write) whose pages are mapped as they are read: a
    /// file's section mapped without reading it.
    PrivateLazy,
    /// A private writable view: copy-on-write, page by page, on the first write. Mapped
    /// read-only and populated first (populating a writable private mapping would copy every
    /// page at once), then made writable.
    CopyOnWrite,
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
        Self::new_at(fd, 0, len, access)
    }

    /// Maps `len` bytes of `fd` from `offset` (a multiple of the page size), which the file
    /// must hold (checked).
    pub(crate) fn new_at(
        fd: &impl AsRawFd,
        offset: u64,
        len: usize,
        access: Access,
    ) -> io::Result<Self> {
        let file_size = stat(fd)?.size;
        if !offset.is_multiple_of(page_size() as u64) {
            return Err(io::Error::other(format!(
                "offset {offset} is not a multiple of the page size"
            )));
        }
        if file_size < offset.saturating_add(len as u64) {
            return Err(io::Error::other(format!(
                "the file holds {file_size} bytes, not {len} from {offset}"
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
            Access::ReadPopulated | Access::CopyOnWrite => {
                (libc::PROT_READ, libc::MAP_PRIVATE | libc::MAP_POPULATE)
            }
            Access::Read => (libc::PROT_READ, libc::MAP_PRIVATE),
            Access::PrivateLazy => (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE),
        };
        // SAFETY: mapping `len` bytes of a file that holds them from `offset` (checked above,
        // and `offset` is page-aligned); the result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                flags,
                fd.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        let mapping = Mapping { ptr, len };
        if let Access::CopyOnWrite = access {
            // SAFETY: changing the protection of exactly the pages mapped above.
            let rc = unsafe {
                libc::mprotect(ptr.as_ptr().cast(), len, libc::PROT_READ | libc::PROT_WRITE)
            };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(mapping)
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

    /// Maps the pages of the first `len` bytes at once (`MADV_POPULATE_READ`, Linux 5.14)
    /// instead of one fault per page as they are read; where the kernel cannot, they fault
    /// in as before.
    pub(crate) fn populate(&self, len: usize) {
        const MADV_POPULATE_READ: libc::c_int = 22;
        let len = len.min(self.len);
        if len > 0 {
            // SAFETY: advice on pages of this mapping; it changes no byte.
            unsafe { libc::madvise(self.ptr.as_ptr().cast(), len, MADV_POPULATE_READ) };
        }
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

/// A memfd its creator maps shared and writable: a segment that a frame carries as an
/// attached descriptor (see `protocol/attached.rs`), for bytes that must not be copied into
/// the frame. Reusable: the receiver's view is private (copy-on-write), and the sender
/// rewrites a segment only once the receiver has answered.
#[doc(hidden)]
pub struct Segment {
    map: Mapping,
    fd: OwnedFd,
}

impl Segment {
    /// A new segment of at least `capacity` bytes (zeros).
    pub fn new(capacity: usize) -> io::Result<Segment> {
        let capacity = capacity.max(1).next_multiple_of(page_size());
        let fd = memfd(c"joblet-segment", capacity, true)?;
        let map = Mapping::new(&fd, capacity, Access::Shared)?;
        Ok(Segment { map, fd })
    }

    pub fn capacity(&self) -> usize {
        self.map.len()
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        self.map.bytes_mut()
    }

    pub fn bytes(&self) -> &[u8] {
        self.map.bytes()
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A received segment's first `len` bytes, mapped private and writable (copy-on-write): the
/// receiver may write to it, and nobody else sees those writes.
#[doc(hidden)]
pub struct PrivateView {
    map: Mapping,
}

impl PrivateView {
    pub fn map(fd: OwnedFd, len: usize) -> io::Result<PrivateView> {
        Ok(PrivateView {
            map: Mapping::new(&fd, len, Access::CopyOnWrite)?,
        })
    }

    /// `len` bytes of a file from `offset` (page-aligned), copy-on-write, mapped as they are
    /// read: nothing is read now.
    pub(crate) fn map_file(file: &std::fs::File, offset: u64, len: usize) -> io::Result<Self> {
        Ok(PrivateView {
            map: Mapping::new_at(file, offset, len, Access::PrivateLazy)?,
        })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Gives every page not yet written its own copy, so that the view no longer shows the
    /// segment's later contents (the sender reuses segments). For views kept past their
    /// batch only: it copies up to the whole view.
    pub fn privatize(&self) {
        const MADV_POPULATE_WRITE: libc::c_int = 23;
        if self.map.len() == 0 {
            return;
        }
        // Linux 5.14 and later: the kernel breaks copy-on-write on every page as if each were
        // written, without writing anything (so no thread reading the view can race a write).
        // SAFETY: advice on exactly this view's pages, which are writable (private).
        let rc = unsafe {
            libc::madvise(
                self.map.as_ptr().cast(),
                self.map.len(),
                MADV_POPULATE_WRITE,
            )
        };
        if rc == 0 {
            return;
        }
        let page = page_size();
        let mut offset = 0;
        while offset < self.map.len() {
            // SAFETY: a byte of this writable mapping, accessed atomically.
            let byte =
                unsafe { std::sync::atomic::AtomicU8::from_ptr(self.map.as_ptr().add(offset)) };
            // A compare-and-swap of a byte with itself writes it (a locked write: the page is
            // copied) without changing it, even if another thread writes there meanwhile.
            // (An atomic add of zero does not do: compilers turn it into a plain load.)
            let mut current = byte.load(std::sync::atomic::Ordering::Relaxed);
            while let Err(now) = byte.compare_exchange(
                current,
                current,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            ) {
                current = now;
            }
            offset += page;
        }
    }
}

/// Bytes worth lending through a segment when they need a copy anyway: below this, the
/// allocator reuses memory well enough, and a copy into the frame costs less than a
/// descriptor.
#[doc(hidden)]
pub const SPARE_MIN: usize = 64 << 10;
/// At most this much memory is kept in spare segments, in at most this many.
pub(crate) const SPARE_BYTES: usize = 128 << 20;
pub(crate) const SPARE_COUNT: usize = 16;

/// Shared-memory segments for the caller's copies of big arguments (Python's writable
/// arrays, Rust's [`crate::Buffer`]s), kept from one batch to the next. The copy is the only
/// one on the way: the segment travels with the frame as a descriptor and the worker maps
/// it. A copy into fresh memory faults its pages in one by one (about two thirds of the time
/// of sending an 8 MB array, measured), which a reused segment does not pay.
static SPARES: Mutex<Vec<Segment>> = Mutex::new(Vec::new());

/// Segments in use (holding a copy), and the most that may be: a frame carries at most
/// `MAX_ATTACHED` of them anyway, and each is an open descriptor.
static LIVE: AtomicUsize = AtomicUsize::new(0);
const LIVE_MAX: usize = 64;

/// A copy in a spare segment, which goes back to the pool when dropped (the sender drops it
/// once the worker has answered the batch that carried it).
#[doc(hidden)]
pub struct Spare {
    segment: Option<Segment>,
    len: usize,
}

impl Spare {
    /// A copy of `bytes` in a segment, or None when `LIVE_MAX` segments are in use or none
    /// can be made (each holds a descriptor: the process's limit on open files is the bound).
    pub fn copy_of(bytes: &[u8]) -> Option<Spare> {
        if LIVE.fetch_add(1, Ordering::Relaxed) >= LIVE_MAX {
            LIVE.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        let reused = {
            let mut spares = SPARES.lock().unwrap_or_else(|e| e.into_inner());
            // A segment big enough but not wastefully so.
            spares
                .iter()
                .position(|s| (bytes.len()..=2 * bytes.len()).contains(&s.capacity()))
                .map(|i| spares.swap_remove(i))
        };
        let Some(mut segment) = reused.or_else(|| Segment::new(bytes.len()).ok()) else {
            LIVE.fetch_sub(1, Ordering::Relaxed);
            return None;
        };
        segment.bytes_mut()[..bytes.len()].copy_from_slice(bytes);
        Some(Spare {
            segment: Some(segment),
            len: bytes.len(),
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.segment.as_ref().expect("until dropped").bytes()[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn fd(&self) -> RawFd {
        self.segment.as_ref().expect("until dropped").fd()
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        let Some(segment) = self.segment.take() else {
            return;
        };
        LIVE.fetch_sub(1, Ordering::Relaxed);
        let mut spares = SPARES.lock().unwrap_or_else(|e| e.into_inner());
        let kept: usize = spares.iter().map(Segment::capacity).sum();
        if spares.len() < SPARE_COUNT && kept + segment.capacity() <= SPARE_BYTES {
            spares.push(segment);
        }
    }
}

pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096).max(1)
}
