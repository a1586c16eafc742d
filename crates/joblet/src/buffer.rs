//! `Buffer<T>`: a vector of plain numbers that crosses process boundaries at memory speed.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// A `Vec<T>` of plain numbers (`f64`, `u8`, `i32`, ... any [`bytemuck::Pod`] type) that is
/// encoded as one block of bytes.
///
/// serde encodes a `Vec<f64>` number by number: about 2 GB/s each way. A `Buffer` is copied
/// whole, at memory speed, which is what makes big arguments and results of
/// [`crate::Backend::Processes`] cheap. It dereferences to a `Vec<T>`.
///
/// ```
/// use joblet::Buffer;
///
/// let b = Buffer::from(vec![1.0f64, 2.0, 3.0]);
/// assert_eq!(b.iter().sum::<f64>(), 6.0);
/// let v: Vec<f64> = b.into_inner();
/// assert_eq!(v.len(), 3);
/// ```
#[derive(Clone, Default, PartialEq)]
pub struct Buffer<T>(pub Vec<T>);

impl<T> Buffer<T> {
    /// The vector inside.
    pub fn into_inner(self) -> Vec<T> {
        self.0
    }
}

impl<T> From<Vec<T>> for Buffer<T> {
    fn from(v: Vec<T>) -> Self {
        Buffer(v)
    }
}

impl<T> Deref for Buffer<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

impl<T> DerefMut for Buffer<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.0
    }
}

impl<T: fmt::Debug> fmt::Debug for Buffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Buffer").field(&self.0).finish()
    }
}

impl<T: bytemuck::Pod> Serialize for Buffer<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Native byte order: the bytes only ever travel between processes of the same binary
        // on the same machine.
        serializer.serialize_bytes(bytemuck::cast_slice(&self.0))
    }
}

impl<'de, T: bytemuck::Pod> Deserialize<'de> for Buffer<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(BytesVisitor(PhantomData))
    }
}

struct BytesVisitor<T>(PhantomData<T>);

impl<T: bytemuck::Pod> Visitor<'_> for BytesVisitor<T> {
    type Value = Buffer<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a byte string holding {}-byte numbers",
            std::mem::size_of::<T>()
        )
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Buffer<T>, E> {
        let size = std::mem::size_of::<T>().max(1);
        if !bytes.len().is_multiple_of(size) {
            return Err(E::invalid_length(bytes.len(), &self));
        }
        // The received bytes may sit at any alignment (inside a frame): copy them into an
        // aligned vector in one memcpy, without zeroing it first.
        let count = bytes.len() / size;
        // Zero for a zero-sized `T`, whose vector has no memory to copy into.
        let nbytes = count * std::mem::size_of::<T>();
        let mut values: Vec<T> = Vec::with_capacity(count);
        // SAFETY: `values` has room for `count` elements, that is `nbytes` bytes; the
        // regions cannot overlap (one is freshly allocated); any bytes are a valid `T`
        // (`Pod`), so the first `count` elements are initialized by the copy.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), values.as_mut_ptr().cast::<u8>(), nbytes);
            values.set_len(count);
        }
        Ok(Buffer(values))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_postcard_as_one_byte_string() {
        let b = Buffer(vec![1.5f64, -2.0, f64::MAX]);
        let bytes = postcard::to_stdvec(&b).unwrap();
        assert_eq!(bytes.len(), 1 + 3 * 8, "a length and the raw bytes");
        let back: Buffer<f64> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, b);
        // A payload whose length is not a whole number of elements is refused.
        let short = postcard::to_stdvec(&serde_bytes::Bytes::new(&[0u8; 7])).unwrap();
        assert!(postcard::from_bytes::<Buffer<f64>>(&short).is_err());
    }
}
