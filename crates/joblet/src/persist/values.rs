//! Serde values whose [`crate::Buffer`]s are sections of their own: while [`super::dump`]
//! encodes a value, a big `Buffer` is set aside (its bytes, untouched) and encoded as its
//! section's position; while [`super::load`] decodes, that position is read back into a new
//! buffer, or mapped from the file without reading it ([`super::load_mapped`]).

use super::read::Container;
use std::any::Any;
use std::cell::RefCell;

/// Buffers of at least this many bytes get a section of their own (smaller ones stay in
/// the object stream: a section costs 40 bytes of table and up to 63 of padding).
pub(crate) const SECTION_MIN: usize = 64 << 10;

/// The buffers set aside by the value being dumped on this thread.
struct Stash {
    /// Each buffer's owner (kept alive, so that its bytes stay where they are) and bytes.
    buffers: Vec<(Box<dyn Any>, *const u8, usize)>,
}

thread_local! {
    static STASH: RefCell<Option<Stash>> = const { RefCell::new(None) };
    static LOADING: RefCell<Option<(*const Container, bool)>> = const { RefCell::new(None) };
}

/// Sets `bytes` aside as the next buffer section of the value being dumped on this thread,
/// and returns its position; `None` outside a dump or below [`SECTION_MIN`].
pub(crate) fn stash(keep: Box<dyn Any>, bytes: &[u8]) -> Option<u32> {
    if bytes.len() < SECTION_MIN {
        return None;
    }
    STASH.with(|s| {
        let mut s = s.borrow_mut();
        let stash = s.as_mut()?;
        stash.buffers.push((keep, bytes.as_ptr(), bytes.len()));
        Some(stash.buffers.len() as u32 - 1)
    })
}

/// Runs `encode` with buffers set aside, then `then` with its result and the bytes of the
/// buffers set aside, in order.
pub(crate) fn stashing<R, O>(encode: impl FnOnce() -> R, then: impl FnOnce(R, &[&[u8]]) -> O) -> O {
    let previous = STASH.with(|s| {
        s.borrow_mut().replace(Stash {
            buffers: Vec::new(),
        })
    });
    struct Restore(Option<Option<Stash>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(previous) = self.0.take() {
                STASH.with(|s| *s.borrow_mut() = previous);
            }
        }
    }
    let mut restore = Restore(Some(previous));
    let encoded = encode();
    let stash = STASH
        .with(|s| std::mem::replace(&mut *s.borrow_mut(), restore.0.take().expect("set above")))
        .expect("set above");
    let buffers: Vec<&[u8]> = stash
        .buffers
        .iter()
        // SAFETY: `len` bytes at `ptr`, owned by the kept value (a buffer's shared values
        // or its mapping), which `stash` keeps alive here and which nobody changes while
        // it is shared.
        .map(|(_keep, ptr, len)| unsafe { std::slice::from_raw_parts(*ptr, *len) })
        .collect();
    then(encoded, &buffers)
}

/// Runs `decode` with `container`'s buffers available to [`with_loading`].
pub(crate) fn loading<R>(container: &Container, mapped: bool, decode: impl FnOnce() -> R) -> R {
    let previous = LOADING.with(|l| l.borrow_mut().replace((container as *const _, mapped)));
    struct Restore(Option<(*const Container, bool)>);
    impl Drop for Restore {
        fn drop(&mut self) {
            LOADING.with(|l| *l.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(previous);
    decode()
}

/// `f` of the container being loaded on this thread (and whether its buffers are to be
/// mapped), or of `None` outside a load.
pub(crate) fn with_loading<R>(f: impl FnOnce(Option<(&Container, bool)>) -> R) -> R {
    let current = LOADING.with(|l| *l.borrow());
    // SAFETY: the pointer is set by `loading` from a reference that outlives its `decode`,
    // the only time it can be read here (it is reset when `loading` returns).
    f(current.map(|(c, mapped)| (unsafe { &*c }, mapped)))
}
