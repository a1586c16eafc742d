//! Descriptors attached to a frame: shared-memory segments that a message's encoding refers
//! to by position, so that big buffers cross without being copied into the frame.
//!
//! While the process backend encodes a batch, a value's `Serialize` may call [`attach_fd`]
//! with a descriptor it owns (a memfd holding its bytes) and encode the index it gets back;
//! the descriptors travel with the frame's header (`SCM_RIGHTS`). While the worker decodes
//! and runs that batch, `Deserialize` calls [`take_fd`] with the index. The sender keeps its
//! descriptors (and their contents) unchanged until the answer to the batch has arrived.
//!
//! A value that needs a copy of its bytes in a segment anyway ([`crate::Buffer`]) calls
//! [`lend`] instead: the copy goes into a spare segment that the collection keeps (once per
//! value, however many times the message is encoded), and the sender keeps the collection
//! until the answer.

use crate::shm::Spare;
use std::cell::RefCell;
use std::os::fd::{OwnedFd, RawFd};

/// The most descriptors one frame carries; past this, [`attach_fd`] says no and the value
/// travels in the frame.
pub const MAX_ATTACHED: usize = 128;

/// What the encoding of one frame has attached so far.
#[derive(Default)]
pub(crate) struct Outgoing {
    /// The descriptors, in the order of their positions.
    pub(crate) fds: Vec<RawFd>,
    /// Copies made by [`lend`], by the identity of the value they copy.
    lent: Vec<(usize, Spare)>,
    /// [`lend`] copies values of at least this many bytes.
    lend_min: usize,
}

impl Outgoing {
    /// A collection in which [`lend`] takes values of `lend_min` bytes or more.
    pub(crate) fn new(lend_min: usize) -> Self {
        Outgoing {
            fds: Vec::new(),
            lent: Vec::new(),
            lend_min,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.fds.len()
    }
}

thread_local! {
    static OUTGOING: RefCell<Option<Outgoing>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Vec<Option<OwnedFd>>> = const { RefCell::new(Vec::new()) };
}

/// Attaches `fd` to the frame being encoded on this thread and returns its position, or
/// `None` outside the encoding of a frame (the value must then travel in the message) or
/// when the frame has no room left. Attaching the same descriptor again returns the same
/// position (messages are encoded twice: once to size them).
#[doc(hidden)]
pub fn attach_fd(fd: RawFd) -> Option<u32> {
    OUTGOING.with(|out| {
        let mut out = out.borrow_mut();
        let out = &mut out.as_mut()?.fds;
        if let Some(i) = out.iter().position(|&f| f == fd) {
            return Some(i as u32);
        }
        if out.len() >= MAX_ATTACHED {
            return None;
        }
        out.push(fd);
        Some(out.len() as u32 - 1)
    })
}

/// Lends `bytes` to the frame being encoded on this thread: copies them into a spare
/// segment (once per `identity`, a value's address, for as long as the collection lasts)
/// and attaches it. Returns the segment's position, or `None` (the bytes must then travel
/// in the message) outside the encoding of a frame, below the collection's threshold, or
/// when no segment can be had or attached.
pub(crate) fn lend(identity: usize, bytes: &[u8]) -> Option<u32> {
    let fd = OUTGOING.with(|out| {
        let mut out = out.borrow_mut();
        let out = out.as_mut()?;
        if bytes.is_empty() || bytes.len() < out.lend_min {
            return None;
        }
        if let Some((_, spare)) = out.lent.iter().find(|(id, _)| *id == identity) {
            return Some(spare.fd());
        }
        if out.fds.len() >= MAX_ATTACHED {
            return None;
        }
        let spare = Spare::copy_of(bytes)?;
        let fd = spare.fd();
        out.lent.push((identity, spare));
        Some(fd)
    })?;
    attach_fd(fd)
}

/// Takes the descriptor at `index` of the frame being decoded on this thread (each index
/// once), or `None` if there is none.
#[doc(hidden)]
pub fn take_fd(index: u32) -> Option<OwnedFd> {
    INCOMING.with(|inc| inc.borrow_mut().get_mut(index as usize)?.take())
}

/// The descriptors collected so far on this thread (empty outside a collection).
pub(crate) fn snapshot() -> Vec<RawFd> {
    OUTGOING.with(|out| {
        out.borrow()
            .as_ref()
            .map(|o| o.fds.clone())
            .unwrap_or_default()
    })
}

/// Runs `f` collecting the descriptors that values attach, starting from `attached`;
/// returns them with `f`'s result. (A panic in `f` still ends the collection.) What was
/// lent must stay alive, unchanged, until the receiver has answered.
pub(crate) fn collecting<R>(attached: Outgoing, f: impl FnOnce() -> R) -> (R, Outgoing) {
    struct Restore(Option<Option<Outgoing>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(previous) = self.0.take() {
                OUTGOING.with(|out| *out.borrow_mut() = previous);
            }
        }
    }
    let mut restore = Restore(Some(
        OUTGOING.with(|out| out.borrow_mut().replace(attached)),
    ));
    let r = f();
    let previous = restore.0.take().expect("set above");
    let collected = OUTGOING.with(|out| std::mem::replace(&mut *out.borrow_mut(), previous));
    (r, collected.unwrap_or_default())
}

/// Runs `f` with `fds` available to [`take_fd`]; those not taken are closed afterwards.
pub(crate) fn receiving<R>(fds: Vec<OwnedFd>, f: impl FnOnce() -> R) -> R {
    struct Restore(Vec<Option<OwnedFd>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = std::mem::take(&mut self.0);
            INCOMING.with(|inc| *inc.borrow_mut() = previous);
        }
    }
    let _restore = Restore(INCOMING.with(|inc| {
        std::mem::replace(&mut *inc.borrow_mut(), fds.into_iter().map(Some).collect())
    }));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_only_while_collecting_and_the_same_fd_keeps_its_place() {
        assert_eq!(attach_fd(7), None);
        let ((), out) = collecting(Outgoing::new(1), || {
            assert_eq!(attach_fd(7), Some(0));
            assert_eq!(attach_fd(9), Some(1));
            assert_eq!(attach_fd(7), Some(0));
        });
        assert_eq!(out.fds, vec![7, 9]);
        assert_eq!(attach_fd(7), None);
        // A second pass over the same message finds the same places.
        let ((), again) = collecting(out, || assert_eq!(attach_fd(9), Some(1)));
        assert_eq!(again.fds, vec![7, 9]);
    }

    #[test]
    fn lend_copies_once_per_value_and_only_from_the_threshold() {
        let big = vec![5u8; 4096];
        let other = vec![6u8; 4096];
        assert_eq!(lend(1, &big), None, "outside a collection");
        let ((), out) = collecting(Outgoing::new(4096), || {
            assert_eq!(lend(1, &big[..4095]), None, "below the threshold");
            assert_eq!(lend(1, &big), Some(0));
            assert_eq!(lend(2, &other), Some(1));
            // The same value again (the writing pass after the sizing pass): same segment.
            assert_eq!(lend(1, &big), Some(0));
        });
        assert_eq!(out.lent.len(), 2);
        assert_eq!(out.lent[0].1.bytes(), &big[..]);
        assert_eq!(out.lent[1].1.bytes(), &other[..]);
        assert_eq!(out.fds, vec![out.lent[0].1.fd(), out.lent[1].1.fd()]);
    }

    #[test]
    fn take_only_while_receiving_and_each_once() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = OwnedFd::from(a);
        assert!(take_fd(0).is_none());
        receiving(vec![fd], || {
            assert!(take_fd(1).is_none());
            assert!(take_fd(0).is_some());
            assert!(take_fd(0).is_none());
        });
        assert!(take_fd(0).is_none());
    }
}
