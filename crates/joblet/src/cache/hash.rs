//! Content hashes: blake3 over a framed stream of a value's parts.
//!
//! The stream is *prefix-free*: every part starts with a tag (its kind) and says its own
//! length (strings, bytes) or ends with an end mark and its count (sequences, structs), so
//! two different structures never produce the same stream: `("ab", "c")` and `("a", "bc")`
//! differ, and so do `[[1], []]` and `[[], [1]]`. Maps are hashed order-independently: each
//! entry gets its own digest and the sorted digests enter the stream (a `HashMap`'s iteration
//! order is random, and two maps with the same entries are the same content).
//!
//! **Big byte runs** (`serialize_bytes`, [`ContentHasher::write_bytes`] from
//! [`ContentHasher::BULK_MIN`] bytes) are read where they lie, never copied, and enter the
//! stream as the xxh3-128 digests of their 1 MiB blocks, hashed on every core. Why not
//! blake3 throughout: it hashes 4.7 GB/s on one core of the 2-core VM (AVX-512, and its
//! rayon mode gave nothing more there: the two vCPUs share a core), a seventh of the memory
//! read bandwidth (about 30 GB/s), while xxh3 runs at 25-27 GB/s, memory speed, which is the
//! issue's target. xxh3 is not a cryptographic hash: someone who crafts two arrays on purpose
//! could make them collide (so could they with joblib's md5); a cache key of one's own data
//! only needs accidental collisions to be out of reach, and 128 bits per block under blake3
//! gives that. The digest of everything else, and of the blocks' digests, is blake3's.
//!
//! Numbers enter by value and width class: every signed integer as an `i64` (`i128`
//! apart), every unsigned one as a `u64`, so `1u8` and `1u64` agree but `1u64` and `1i64`
//! do not; floats by their bits (`0.0` and `-0.0` differ, a NaN equals itself).

use rayon::prelude::*;
use serde::ser::{self, Serialize};
use std::fmt;

const PARALLEL_MIN: usize = ContentHasher::PARALLEL_MIN;

/// A blake3 digest: 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The digest as 64 lowercase hexadecimal digits.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(DIGITS[usize::from(byte >> 4)] as char);
            out.push(DIGITS[usize::from(byte & 15)] as char);
        }
        out
    }
}

impl From<[u8; 32]> for Digest {
    fn from(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

/// A value's `Serialize` implementation reported an error (a `serde::ser::Error::custom`):
/// there is no content to hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashError(String);

impl fmt::Display for HashError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot hash the value: {}", self.0)
    }
}

impl std::error::Error for HashError {}

impl ser::Error for HashError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        HashError(msg.to_string())
    }
}

/// The content hash of `value`: equal content gives an equal [`Digest`], whatever object
/// holds it (a `HashMap` or a `BTreeMap`, a `Vec` or a slice); any changed element, length
/// or structure gives another.
///
/// ```
/// use std::collections::HashMap;
///
/// let a: HashMap<&str, Vec<f64>> = [("x", vec![1.0, 2.0]), ("y", vec![3.0])].into();
/// let mut b = HashMap::new();
/// b.insert("y", vec![3.0]);
/// b.insert("x", vec![1.0, 2.0]);
/// assert_eq!(joblet::hash(&a), joblet::hash(&b));
///
/// b.insert("y", vec![3.5]);
/// assert_ne!(joblet::hash(&a), joblet::hash(&b));
/// assert_eq!(joblet::hash(&"key").to_hex().len(), 64);
/// ```
///
/// # Panics
///
/// If `value`'s `Serialize` implementation fails (std's and derived implementations never
/// do; a `Mutex` that is poisoned does): use [`ContentHasher::write_value`] to get the error.
pub fn hash<T: Serialize + ?Sized>(value: &T) -> Digest {
    let mut hasher = ContentHasher::new();
    if let Err(e) = hasher.write_value(value) {
        panic!("joblet::hash: {e}");
    }
    hasher.finish()
}

/// Small writes are gathered here before they go to blake3: one call per tag or length
/// costs more than the copy.
const PENDING: usize = 256;

/// A streaming content hasher: the framing primitives that [`hash`] (through serde) and the
/// Python front (through its own walk of Python objects) write values with. Whoever writes
/// must keep the stream prefix-free: a tag first, then parts that say their own length.
pub struct ContentHasher {
    inner: blake3::Hasher,
    pending: [u8; PENDING],
    used: usize,
}

impl Default for ContentHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ContentHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentHasher").finish_non_exhaustive()
    }
}

impl ContentHasher {
    /// Byte runs from this length on are hashed on every core
    /// (`blake3::Hasher::update_rayon`). Below it the hand-off to rayon's threads (waking
    /// them, splitting the input) costs more than the other cores save: blake3 hashes 1 MiB
    /// in about 100-200 µs on one core, a wake-up costs tens of µs, and blake3's own docs put
    /// the break-even near 128 KiB.
    pub const PARALLEL_MIN: usize = 1 << 20;

    /// [`ContentHasher::write_bytes`] runs from this length on are hashed by blocks (xxh3):
    /// blake3 at 4.7 GB/s costs 14 µs here, xxh3 2.5 µs.
    pub const BULK_MIN: usize = 64 << 10;

    /// The block of a bulk run: one xxh3-128 digest each, one rayon task each. Big enough
    /// that a task's hand-off is noise (1 MiB hashes in about 40 µs), small enough that a
    /// few blocks keep every core busy.
    pub const BLOCK: usize = 1 << 20;

    /// An empty stream.
    pub fn new() -> Self {
        ContentHasher {
            inner: blake3::Hasher::new(),
            pending: [0; PENDING],
            used: 0,
        }
    }

    /// Empties the stream, as if new (cheaper than a new hasher: one per map, not per entry).
    pub fn reset(&mut self) {
        self.inner.reset();
        self.used = 0;
    }

    /// Writes a one-byte marker of what comes next.
    #[inline]
    pub fn write_tag(&mut self, tag: u8) {
        self.small(&[tag]);
    }

    /// Writes an unsigned integer (8 bytes, little-endian).
    #[inline]
    pub fn write_u64(&mut self, v: u64) {
        self.small(&v.to_le_bytes());
    }

    /// Writes a signed integer (8 bytes, little-endian).
    #[inline]
    pub fn write_i64(&mut self, v: i64) {
        self.small(&v.to_le_bytes());
    }

    /// Writes a float by its bits.
    #[inline]
    pub fn write_f64(&mut self, v: f64) {
        self.small(&v.to_bits().to_le_bytes());
    }

    /// Writes a length, then `bytes`: as they are below [`ContentHasher::BULK_MIN`], else as
    /// the xxh3-128 digests of their [`ContentHasher::BLOCK`]-byte blocks, hashed in place
    /// and in parallel (the length says which, so the stream stays prefix-free). The digest
    /// thus depends on how a long run is cut into `write_bytes` calls: a value is always
    /// written the same way, so equal values agree.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        self.write_u64(bytes.len() as u64);
        if bytes.len() < Self::BULK_MIN {
            self.write_raw(bytes);
            return;
        }
        let block = |b: &[u8]| xxhash_rust::xxh3::xxh3_128(b).to_le_bytes();
        let digests: Vec<[u8; 16]> = if bytes.len() > Self::BLOCK {
            bytes.par_chunks(Self::BLOCK).map(block).collect()
        } else {
            vec![block(bytes)]
        };
        self.write_raw(bytemuck::cast_slice(&digests));
    }

    /// Writes `bytes` with no length before them: for parts whose length the stream already
    /// says. From [`ContentHasher::PARALLEL_MIN`] bytes on they are hashed on every core, in
    /// place.
    pub fn write_raw(&mut self, bytes: &[u8]) {
        if self.used + bytes.len() <= PENDING {
            self.small(bytes);
            return;
        }
        self.flush();
        if bytes.len() >= PARALLEL_MIN {
            self.inner.update_rayon(bytes);
        } else {
            self.inner.update(bytes);
        }
    }

    /// Writes a slice of plain numbers as its bytes (native byte order), after its element
    /// size and length: `[1u32]` and `[1u64]` differ.
    pub fn write_pod<T: bytemuck::Pod>(&mut self, values: &[T]) {
        self.write_u64(std::mem::size_of::<T>() as u64);
        self.write_bytes(bytemuck::cast_slice(values));
    }

    /// Writes another stream's digest (32 bytes).
    pub fn write_digest(&mut self, digest: &Digest) {
        self.write_raw(&digest.0);
    }

    /// Writes a collection whose order does not count (a map's entries, a set's elements),
    /// each already hashed on its own: their number, then their digests in sorted order.
    pub fn write_unordered(&mut self, digests: &mut [Digest]) {
        digests.sort_unstable();
        self.write_u64(digests.len() as u64);
        for d in digests.iter() {
            self.write_digest(d);
        }
    }

    /// Writes a `Serialize` value through the framing described in the module docs.
    pub fn write_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), HashError> {
        value.serialize(&mut *self)
    }

    /// The digest of everything written so far (the hasher can go on).
    pub fn finish(&mut self) -> Digest {
        self.flush();
        Digest(*self.inner.finalize().as_bytes())
    }

    #[inline]
    fn small(&mut self, bytes: &[u8]) {
        if self.used + bytes.len() > PENDING {
            self.flush();
        }
        if bytes.len() > PENDING {
            self.inner.update(bytes);
            return;
        }
        self.pending[self.used..self.used + bytes.len()].copy_from_slice(bytes);
        self.used += bytes.len();
    }

    fn flush(&mut self) {
        if self.used > 0 {
            self.inner.update(&self.pending[..self.used]);
            self.used = 0;
        }
    }
}

/// The tags of the serde framing. Each names one serde data-model kind, so a value's kind is
/// part of its key (`Some(1)` is not `1`, a unit variant is not its name as a string).
mod tag {
    pub const BOOL: u8 = 1;
    pub const INT: u8 = 2;
    pub const UINT: u8 = 3;
    pub const I128: u8 = 4;
    pub const U128: u8 = 5;
    pub const F32: u8 = 6;
    pub const F64: u8 = 7;
    pub const CHAR: u8 = 8;
    pub const STR: u8 = 9;
    pub const BYTES: u8 = 10;
    pub const NONE: u8 = 11;
    pub const SOME: u8 = 12;
    pub const UNIT: u8 = 13;
    pub const UNIT_STRUCT: u8 = 14;
    pub const UNIT_VARIANT: u8 = 15;
    pub const NEWTYPE_STRUCT: u8 = 16;
    pub const NEWTYPE_VARIANT: u8 = 17;
    pub const SEQ: u8 = 18;
    pub const TUPLE: u8 = 19;
    pub const TUPLE_STRUCT: u8 = 20;
    pub const TUPLE_VARIANT: u8 = 21;
    pub const MAP: u8 = 22;
    pub const STRUCT: u8 = 23;
    pub const STRUCT_VARIANT: u8 = 24;
    pub const SKIPPED_FIELD: u8 = 25;
    /// Closes a sequence, tuple or struct, followed by its element count.
    pub const END: u8 = 0;
}

impl ContentHasher {
    fn name(&mut self, name: &str) {
        self.write_bytes(name.as_bytes());
    }

    fn variant(&mut self, t: u8, name: &str, index: u32, variant: &str) {
        self.write_tag(t);
        self.name(name);
        self.write_u64(u64::from(index));
        self.name(variant);
    }
}

/// A sequence, tuple or struct being written: its elements follow the opening tag, then
/// [`tag::END`] and their count (a `Serialize` may not know its length in advance).
#[doc(hidden)]
pub struct Compound<'a> {
    hasher: &'a mut ContentHasher,
    count: u64,
}

impl Compound<'_> {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), HashError> {
        self.count += 1;
        value.serialize(&mut *self.hasher)
    }

    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), HashError> {
        self.hasher.name(key);
        self.element(value)
    }

    fn close(self) -> Result<(), HashError> {
        self.hasher.write_tag(tag::END);
        self.hasher.write_u64(self.count);
        Ok(())
    }
}

/// A map being written: each entry is hashed on its own and the digests, sorted, close it.
#[doc(hidden)]
pub struct Entries<'a> {
    hasher: &'a mut ContentHasher,
    entry: Option<ContentHasher>,
    digests: Vec<Digest>,
}

impl<'a> ser::Serializer for &'a mut ContentHasher {
    type Ok = ();
    type Error = HashError;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Entries<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    fn serialize_bool(self, v: bool) -> Result<(), HashError> {
        self.write_tag(tag::BOOL);
        self.write_tag(u8::from(v));
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), HashError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i16(self, v: i16) -> Result<(), HashError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i32(self, v: i32) -> Result<(), HashError> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i64(self, v: i64) -> Result<(), HashError> {
        self.write_tag(tag::INT);
        self.write_i64(v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Result<(), HashError> {
        self.write_tag(tag::I128);
        self.small(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), HashError> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u16(self, v: u16) -> Result<(), HashError> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u32(self, v: u32) -> Result<(), HashError> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u64(self, v: u64) -> Result<(), HashError> {
        self.write_tag(tag::UINT);
        self.write_u64(v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Result<(), HashError> {
        self.write_tag(tag::U128);
        self.small(&v.to_le_bytes());
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), HashError> {
        self.write_tag(tag::F32);
        self.small(&v.to_bits().to_le_bytes());
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Result<(), HashError> {
        self.write_tag(tag::F64);
        self.write_f64(v);
        Ok(())
    }
    fn serialize_char(self, v: char) -> Result<(), HashError> {
        self.write_tag(tag::CHAR);
        self.small(&u32::from(v).to_le_bytes());
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Result<(), HashError> {
        self.write_tag(tag::STR);
        self.write_bytes(v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), HashError> {
        self.write_tag(tag::BYTES);
        self.write_bytes(v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), HashError> {
        self.write_tag(tag::NONE);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), HashError> {
        self.write_tag(tag::SOME);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), HashError> {
        self.write_tag(tag::UNIT);
        Ok(())
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<(), HashError> {
        self.write_tag(tag::UNIT_STRUCT);
        self.name(name);
        Ok(())
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<(), HashError> {
        self.variant(tag::UNIT_VARIANT, name, index, variant);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<(), HashError> {
        self.write_tag(tag::NEWTYPE_STRUCT);
        self.name(name);
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), HashError> {
        self.variant(tag::NEWTYPE_VARIANT, name, index, variant);
        value.serialize(self)
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Compound<'a>, HashError> {
        self.write_tag(tag::SEQ);
        Ok(Compound {
            hasher: self,
            count: 0,
        })
    }
    fn serialize_tuple(self, _len: usize) -> Result<Compound<'a>, HashError> {
        self.write_tag(tag::TUPLE);
        Ok(Compound {
            hasher: self,
            count: 0,
        })
    }
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, HashError> {
        self.write_tag(tag::TUPLE_STRUCT);
        self.name(name);
        Ok(Compound {
            hasher: self,
            count: 0,
        })
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, HashError> {
        self.variant(tag::TUPLE_VARIANT, name, index, variant);
        Ok(Compound {
            hasher: self,
            count: 0,
        })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Entries<'a>, HashError> {
        self.write_tag(tag::MAP);
        Ok(Entries {
            hasher: self,
            entry: None,
            digests: Vec::with_capacity(len.unwrap_or(0)),
        })
    }
    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<Compound<'a>, HashError> {
        self.write_tag(tag::STRUCT);
        self.name(name);
        Ok(Compound {
            hasher: self,
            count: 0,
        })
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        _len: usize,
    ) -> Result<Compound<'a>, HashError> {
        self.variant(tag::STRUCT_VARIANT, name, index, variant);
        Ok(Compound {
            hasher: self,
            count: 0,
        })
    }
}

/// serde's sequence-like compounds (sequences, tuples, tuple structs and variants) all hash
/// their parts the same way.
macro_rules! element_compounds {
    ($($trait:ident::$method:ident),* $(,)?) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = HashError;
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), HashError> {
                self.element(value)
            }
            fn end(self) -> Result<(), HashError> {
                self.close()
            }
        }
    )*};
}

element_compounds!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

/// Structs and struct variants: named fields.
macro_rules! field_compounds {
    ($($trait:ident),* $(,)?) => {$(
        impl ser::$trait for Compound<'_> {
            type Ok = ();
            type Error = HashError;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result<(), HashError> {
                self.field(key, value)
            }
            fn skip_field(&mut self, key: &'static str) -> Result<(), HashError> {
                self.hasher.name(key);
                self.count += 1;
                self.hasher.write_tag(tag::SKIPPED_FIELD);
                Ok(())
            }
            fn end(self) -> Result<(), HashError> {
                self.close()
            }
        }
    )*};
}

field_compounds!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for Entries<'_> {
    type Ok = ();
    type Error = HashError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), HashError> {
        let mut entry = ContentHasher::new();
        key.serialize(&mut entry)?;
        self.entry = Some(entry);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), HashError> {
        let mut entry = self
            .entry
            .take()
            .ok_or_else(|| HashError("a map value without its key".into()))?;
        value.serialize(&mut entry)?;
        self.digests.push(entry.finish());
        Ok(())
    }
    fn end(mut self) -> Result<(), HashError> {
        if self.entry.is_some() {
            return Err(HashError("a map key without its value".into()));
        }
        self.hasher.write_unordered(&mut self.digests);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Buffer;
    use std::collections::{BTreeMap, HashMap, HashSet};

    #[test]
    fn equal_content_in_another_object_is_equal() {
        let a = vec![1.5f64, 2.5, 3.5];
        let b: Vec<f64> = a.to_vec();
        assert_eq!(hash(&a), hash(&b));
        assert_eq!(hash(&a), hash(&a[..]));
        assert_eq!(hash("text"), hash(&String::from("text")));
        let big: Buffer<f64> = Buffer::from((0..300_000).map(f64::from).collect::<Vec<_>>());
        let again: Buffer<f64> = Buffer::from(big.to_vec());
        assert_eq!(hash(&big), hash(&again));
    }

    #[test]
    fn one_changed_element_is_different() {
        let a: Vec<u64> = (0..1000).collect();
        let mut b = a.clone();
        b[999] += 1;
        assert_ne!(hash(&a), hash(&b));
        // A big buffer (the parallel path), changed in its last byte.
        let big = vec![7u8; 3 * PARALLEL_MIN + 5];
        let mut other = big.clone();
        *other.last_mut().unwrap() = 8;
        assert_ne!(
            hash(serde_bytes::Bytes::new(&big)),
            hash(serde_bytes::Bytes::new(&other))
        );
    }

    #[test]
    fn the_parallel_path_gives_the_serial_digest() {
        let data: Vec<u8> = (0..5 * PARALLEL_MIN + 3)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let mut whole = ContentHasher::new();
        whole.write_raw(&data);
        let mut pieces = ContentHasher::new();
        for piece in data.chunks(4099) {
            pieces.write_raw(piece);
        }
        assert_eq!(whole.finish(), pieces.finish());
        let mut plain = blake3::Hasher::new();
        plain.update(&data);
        assert_eq!(whole.finish().as_bytes(), plain.finalize().as_bytes());
    }

    #[test]
    fn bulk_runs_are_their_block_digests() {
        let data: Vec<u8> = (0..3 * ContentHasher::BLOCK + 17)
            .map(|i| (i * 13 % 253) as u8)
            .collect();
        let mut bulk = ContentHasher::new();
        bulk.write_bytes(&data);
        // The same stream, block by block on one thread.
        let mut by_hand = ContentHasher::new();
        by_hand.write_u64(data.len() as u64);
        for block in data.chunks(ContentHasher::BLOCK) {
            by_hand.write_raw(&xxhash_rust::xxh3::xxh3_128(block).to_le_bytes());
        }
        assert_eq!(bulk.finish(), by_hand.finish());
        // A copy elsewhere agrees; a byte changed in any block does not.
        let copy = data.clone();
        let mut again = ContentHasher::new();
        again.write_bytes(&copy);
        assert_eq!(bulk.finish(), again.finish());
        for at in [0, ContentHasher::BLOCK + 5, data.len() - 1] {
            let mut changed = data.clone();
            changed[at] ^= 1;
            let mut other = ContentHasher::new();
            other.write_bytes(&changed);
            assert_ne!(bulk.finish(), other.finish(), "byte {at}");
        }
        // Just below and at the bulk threshold: both framed by their length.
        let small = vec![1u8; ContentHasher::BULK_MIN - 1];
        let at_min = vec![1u8; ContentHasher::BULK_MIN];
        assert_ne!(
            hash(serde_bytes::Bytes::new(&small)),
            hash(serde_bytes::Bytes::new(&at_min))
        );
    }

    #[test]
    fn map_order_is_irrelevant() {
        let mut a = HashMap::new();
        let mut b = HashMap::new();
        for i in 0..1000u32 {
            a.insert(format!("k{i}"), i);
        }
        for i in (0..1000u32).rev() {
            b.insert(format!("k{i}"), i);
        }
        assert_eq!(hash(&a), hash(&b));
        let sorted: BTreeMap<_, _> = a.clone().into_iter().collect();
        assert_eq!(hash(&a), hash(&sorted));
        let set_a: HashSet<u32> = (0..100).collect();
        let set_b: HashSet<u32> = (0..100).rev().collect();
        // A set is a sequence to serde, in its (random) iteration order: hash it sorted.
        let sorted_a: std::collections::BTreeSet<_> = set_a.into_iter().collect();
        let sorted_b: std::collections::BTreeSet<_> = set_b.into_iter().collect();
        assert_eq!(hash(&sorted_a), hash(&sorted_b));
        b.insert("k0".into(), 1);
        assert_ne!(hash(&a), hash(&b));
    }

    #[test]
    fn framing_keeps_structures_apart() {
        assert_ne!(hash(&("ab", "c")), hash(&("a", "bc")));
        assert_ne!(
            hash(&vec![vec![1u8], vec![]]),
            hash(&vec![vec![], vec![1u8]])
        );
        assert_ne!(hash(&vec![0u32; 0]), hash(&vec![0u32]));
        assert_ne!(hash(&Some(1u32)), hash(&1u32));
        assert_ne!(hash(&1u64), hash(&1i64));
        assert_ne!(hash(&1.0f64), hash(&1u64));
        assert_ne!(hash(&0.0f64), hash(&-0.0f64));
        assert_ne!(hash(&("a",)), hash(&vec!["a"]));
        assert_ne!(hash("a"), hash(serde_bytes::Bytes::new(b"a")));
        // Map entries: the key/value boundary is framed too.
        let a: BTreeMap<&str, &str> = [("ab", "c")].into();
        let b: BTreeMap<&str, &str> = [("a", "bc")].into();
        assert_ne!(hash(&a), hash(&b));
        // A map of one entry is not the entry.
        assert_ne!(hash(&a), hash(&("ab", "c")));
        // Widths within a class agree: the value counts, not the Rust type.
        assert_eq!(hash(&1u8), hash(&1u64));
        assert_eq!(hash(&-1i8), hash(&-1i64));
    }

    #[derive(serde::Serialize)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[derive(serde::Serialize)]
    enum Shape {
        Dot(Point),
        Line { from: Point, to: Point },
        Empty,
    }

    #[test]
    fn structs_and_enums_by_name_and_content() {
        let p = Point { x: 1, y: 2 };
        assert_eq!(hash(&p), hash(&Point { x: 1, y: 2 }));
        assert_ne!(hash(&p), hash(&Point { x: 2, y: 1 }));
        assert_ne!(hash(&Shape::Dot(Point { x: 0, y: 0 })), hash(&Shape::Empty));
        let line = |a| Shape::Line {
            from: Point { x: a, y: 0 },
            to: Point { x: 0, y: 0 },
        };
        assert_eq!(hash(&line(3)), hash(&line(3)));
        assert_ne!(hash(&line(3)), hash(&line(4)));
    }

    #[test]
    fn pod_slices_say_their_element_size() {
        let mut a = ContentHasher::new();
        a.write_pod(&[1u32, 0]);
        let mut b = ContentHasher::new();
        b.write_pod(&[1u64]);
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn errors_of_serialize_are_reported() {
        struct Refuses;
        impl Serialize for Refuses {
            fn serialize<S: ser::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(ser::Error::custom("not hashable"))
            }
        }
        let err = ContentHasher::new().write_value(&Refuses).unwrap_err();
        assert!(err.to_string().contains("not hashable"), "{err}");
    }

    #[test]
    fn hex_is_the_digest() {
        let d = hash(&42u32);
        let hex = d.to_hex();
        assert_eq!(hex.len(), 64);
        let bytes: Vec<u8> = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert_eq!(&bytes[..], d.as_bytes());
        assert_eq!(format!("{d}"), hex);
    }
}
