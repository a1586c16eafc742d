//! Decoding serde values with postcard, keeping the reason when one of joblet's own types
//! refuses what it reads.
//!
//! postcard's errors carry no text: a [`crate::Buffer`] that does not fit its section, or an
//! `NdBuffer` whose shape does not match its values, would reach the user as "Serde
//! Deserialization Error". Those types refuse through [`refuse`], which notes the reason on
//! this thread, and [`from_bytes`] (used for task arguments, results and errors, and for
//! `persist::load`) reports it.

use serde::Deserialize;
use std::cell::RefCell;
use std::fmt;

thread_local! {
    /// The first reason given by [`refuse`] in the decode under way on this thread.
    static WHY: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A serde error saying `why`, noted for [`from_bytes`] to report.
pub(crate) fn refuse<E: serde::de::Error>(why: impl fmt::Display) -> E {
    let why = why.to_string();
    WHY.with(|w| {
        w.borrow_mut().get_or_insert_with(|| why.clone());
    });
    E::custom(why)
}

/// `postcard::from_bytes`, whose error, when a joblet type refused a value, is that type's
/// reason.
pub(crate) fn from_bytes<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    // A decode inside a decode (a user's `Deserialize` may call postcard) keeps the outer
    // one's note.
    let outer = WHY.with(|w| w.borrow_mut().take());
    let result = postcard::from_bytes(bytes);
    let why = WHY.with(|w| std::mem::replace(&mut *w.borrow_mut(), outer));
    result.map_err(|e| match (e, why) {
        (postcard::Error::SerdeDeCustom, Some(why)) => why,
        (e, _) => e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_reported_and_forgotten_after_its_decode() {
        struct Picky;
        impl<'de> Deserialize<'de> for Picky {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let n = u8::deserialize(d)?;
                Err(refuse(format!("{n} is not wanted")))
            }
        }
        assert_eq!(from_bytes::<Picky>(&[7]).err().unwrap(), "7 is not wanted");
        // The next failure, of another kind, says its own words.
        let eof = from_bytes::<u32>(&[]).unwrap_err();
        assert!(!eof.contains("wanted"), "{eof}");
    }
}
