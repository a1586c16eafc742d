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
use std::any::Any;
use std::cell::RefCell;
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;

/// The most descriptors one frame carries; past this, [`attach_fd`] says no and the value
/// travels in the frame.
pub const MAX_ATTACHED: usize = 128;

/// What the encoding of one frame has attached so far.
///
/// A batch is encoded twice: once to size it, then into the frame. [`lend`] decides in the
/// first pass (copy into a spare segment, or travel inline) and records each decision in
/// order; the second pass replays them, so both passes encode the same message even when a
/// value builds its `Buffer` anew each time, or when segments ran out in between.
#[derive(Default)]
pub(crate) struct Outgoing {
    /// The descriptors, in the order of their positions.
    pub(crate) fds: Vec<RawFd>,
    /// [`lend`]'s decisions of the sizing pass, in the order it was called.
    decisions: Vec<Decision>,
    /// In the writing pass, how many decisions have been replayed.
    replayed: Option<usize>,
    /// [`lend`] copies values of at least this many bytes.
    lend_min: usize,
}

struct Decision {
    /// The value's address and length, for values lent twice in one batch (copied once).
    key: (usize, usize),
    copy: Option<Rc<Spare>>,
    /// The value itself, kept alive so that its address cannot be taken by another value
    /// while the batch is encoded.
    _keep: Box<dyn Any>,
}

impl Outgoing {
    /// A collection in which [`lend`] takes values of `lend_min` bytes or more.
    pub(crate) fn new(lend_min: usize) -> Self {
        Outgoing {
            lend_min,
            ..Outgoing::default()
        }
    }

    /// The same collection, for the writing pass: [`lend`] replays the sizing pass's
    /// decisions instead of making new ones.
    pub(crate) fn replaying(mut self) -> Self {
        self.replayed = Some(0);
        self
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

/// Lends `bytes` (the value `keep`, at address and length `key`) to the frame being encoded
/// on this thread: copies them into a spare segment and attaches it. Returns the segment's
/// position, or `None` (the bytes must then travel in the message) outside the encoding of
/// a frame, below the collection's threshold, or when no segment can be had or attached.
/// A value lent twice in one batch is copied once.
pub(crate) fn lend(key: (usize, usize), keep: Box<dyn Any>, bytes: &[u8]) -> Option<u32> {
    let fd = OUTGOING.with(|out| {
        let mut out = out.borrow_mut();
        let out = out.as_mut()?;
        if let Some(k) = out.replayed {
            // Writing: the sizing pass decided.
            out.replayed = Some(k + 1);
            let copy = out.decisions.get(k)?.copy.as_ref()?;
            return (copy.len() == bytes.len()).then(|| copy.fd());
        }
        let copy = if bytes.is_empty() || bytes.len() < out.lend_min {
            None
        } else if let Some(same) = out
            .decisions
            .iter()
            .find(|d| d.key == key && d.copy.is_some())
        {
            same.copy.clone()
        } else if out.fds.len() >= MAX_ATTACHED {
            None
        } else {
            Spare::copy_of(bytes).map(Rc::new)
        };
        let fd = copy.as_ref().map(|c| c.fd());
        out.decisions.push(Decision {
            key,
            copy,
            _keep: keep,
        });
        fd
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
    fn lend_copies_once_per_value_and_the_writing_pass_replays() {
        let big = vec![5u8; 4096];
        let other = vec![6u8; 4096];
        let key = |b: &[u8]| (b.as_ptr() as usize, b.len());
        let keep = || Box::new(()) as Box<dyn Any>;
        assert_eq!(lend(key(&big), keep(), &big), None, "outside a collection");
        let ((), out) = collecting(Outgoing::new(4096), || {
            assert_eq!(
                lend(key(&big), keep(), &big[..4095]),
                None,
                "below the threshold"
            );
            assert_eq!(lend(key(&big), keep(), &big), Some(0));
            assert_eq!(lend(key(&other), keep(), &other), Some(1));
            assert_eq!(
                lend(key(&big), keep(), &big),
                Some(0),
                "the same value: one copy"
            );
        });
        assert_eq!(out.decisions.len(), 4);
        let copies: Vec<&[u8]> = out.decisions[1..3]
            .iter()
            .map(|d| d.copy.as_ref().unwrap().bytes())
            .collect();
        assert_eq!(copies, vec![&big[..], &other[..]]);
        // The writing pass gets the same answers in the same order, whatever the addresses
        // (values built anew for each pass).
        let fresh = vec![7u8; 4096];
        let ((), again) = collecting(out.replaying(), || {
            assert_eq!(lend((1, 4095), keep(), &big[..4095]), None);
            assert_eq!(lend(key(&fresh), keep(), &fresh), Some(0));
            assert_eq!(lend((2, 4096), keep(), &fresh), Some(1));
            assert_eq!(lend((3, 4096), keep(), &fresh), Some(0));
            assert_eq!(lend((4, 4096), keep(), &fresh), None, "no fifth decision");
        });
        assert_eq!(again.fds.len(), 2);
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
