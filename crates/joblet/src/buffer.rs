//! `Buffer<T>`: a vector of plain numbers that crosses process boundaries at memory speed.
//!
//! Outside the process backend a `Buffer` encodes as one byte string (serde would go number
//! by number). Inside it, a buffer of `max_nbytes` or more is copied once, into a pooled
//! shared segment that travels with the frame as a descriptor (`protocol/attached.rs`); the
//! worker maps that segment and the task reads the caller's bytes in place. The worker keeps
//! its mappings of the caller's segments from one batch to the next (`received`), since the
//! caller reuses them, so a warm pool pays neither a copy nor a page fault on that side.

use crate::shm::PrivateView;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

/// A vector of plain numbers (`f64`, `u8`, `i32`, ... any [`bytemuck::Pod`] type) that a
/// process worker gets without a copy of its own.
///
/// serde encodes a `Vec<f64>` number by number: about 2 GB/s each way. A `Buffer` is copied
/// whole, at memory speed, and on [`crate::Backend::Processes`] a big one (at least
/// `max_nbytes`, 1 MiB by default) is copied once into shared memory that the worker reads
/// in place. It dereferences to a slice; cloning it is cheap (the values are shared, and
/// copied on the first write to a shared buffer, like `Arc::make_mut`).
///
/// In a worker, a received buffer is a read-only view of the caller's segment: writing to it
/// (`DerefMut`, [`Buffer::as_mut_vec`]) first copies it. A task may keep it past its call
/// (in a static, a thread): it then gets its own copy when the batch ends.
///
/// ```
/// use joblet::Buffer;
///
/// let b = Buffer::from(vec![1.0f64, 2.0, 3.0]);
/// assert_eq!(b.iter().sum::<f64>(), 6.0);
/// let mut c = b.clone(); // no copy yet
/// c[0] = 10.0; // now c has its own values
/// assert_eq!((b[0], c[0]), (1.0, 10.0));
/// let v: Vec<f64> = c.into_inner();
/// assert_eq!(v.len(), 3);
/// ```
pub struct Buffer<T> {
    data: Data<T>,
}

enum Data<T> {
    Owned(Arc<Vec<T>>),
    /// The first `len` values of a segment received from the caller.
    Viewed {
        view: Arc<PrivateView>,
        len: usize,
    },
}

impl<T> Clone for Data<T> {
    fn clone(&self) -> Self {
        match self {
            Data::Owned(v) => Data::Owned(Arc::clone(v)),
            Data::Viewed { view, len } => Data::Viewed {
                view: Arc::clone(view),
                len: *len,
            },
        }
    }
}

impl<T: bytemuck::Pod> Buffer<T> {
    /// The values, as a vector (a copy only when they are shared or viewed).
    pub fn into_inner(self) -> Vec<T> {
        match self.data {
            Data::Owned(v) => Arc::try_unwrap(v).unwrap_or_else(|shared| shared.to_vec()),
            Data::Viewed { .. } => self.to_vec(),
        }
    }

    /// The values as a vector this buffer alone owns, to change or grow in place (copied
    /// first if they are shared or viewed).
    pub fn as_mut_vec(&mut self) -> &mut Vec<T> {
        if let Data::Viewed { .. } = self.data {
            self.data = Data::Owned(Arc::new(self.to_vec()));
        }
        match &mut self.data {
            Data::Owned(v) => Arc::make_mut(v),
            Data::Viewed { .. } => unreachable!("made owned above"),
        }
    }
}

impl<T> Clone for Buffer<T> {
    /// Shares the values: no copy.
    fn clone(&self) -> Self {
        Buffer {
            data: self.data.clone(),
        }
    }
}

impl<T> Default for Buffer<T> {
    fn default() -> Self {
        Buffer::from(Vec::new())
    }
}

impl<T> From<Vec<T>> for Buffer<T> {
    fn from(v: Vec<T>) -> Self {
        Buffer {
            data: Data::Owned(Arc::new(v)),
        }
    }
}

impl<T: Clone> From<&[T]> for Buffer<T> {
    fn from(v: &[T]) -> Self {
        Buffer::from(v.to_vec())
    }
}

impl<T> FromIterator<T> for Buffer<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Buffer::from(iter.into_iter().collect::<Vec<T>>())
    }
}

impl<T: bytemuck::Pod> Deref for Buffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.data {
            Data::Owned(v) => v,
            // SAFETY: decoding checked that the view holds `len` whole values and that the
            // mapping (page-aligned) is aligned for `T`; any bytes are a valid `T` (`Pod`);
            // nobody writes to a view while it is shared (writes copy it first).
            Data::Viewed { view, len } => unsafe {
                std::slice::from_raw_parts(view.as_ptr().cast::<T>(), *len)
            },
        }
    }
}

impl<T: bytemuck::Pod> DerefMut for Buffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_vec()
    }
}

impl<T: bytemuck::Pod + PartialEq> PartialEq for Buffer<T> {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl<T: bytemuck::Pod + fmt::Debug> fmt::Debug for Buffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Buffer").field(&&self[..]).finish()
    }
}

/// How a buffer travels: its bytes in the message, or the position of the segment that
/// holds them among the frame's attached descriptors.
#[derive(Deserialize)]
#[serde(rename = "Buffer", bound = "T: bytemuck::Pod")]
enum Wire<T> {
    Inline(Values<T>),
    Attached { index: u32, len: u64 },
}

impl<T: bytemuck::Pod> Serialize for Buffer<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStructVariant;
        // Native byte order: the bytes only ever travel between processes of the same binary
        // on the same machine.
        let bytes: &[u8] = bytemuck::cast_slice(&self[..]);
        let key = (bytes.as_ptr() as usize, bytes.len());
        let keep = || -> Box<dyn std::any::Any> {
            match &self.data {
                Data::Owned(v) => Box::new(Arc::clone(v)),
                Data::Viewed { view, .. } => Box::new(Arc::clone(view)),
            }
        };
        // A section of its own in a container being dumped, or a segment lent to a frame
        // being encoded (at most one of the two is under way on a thread).
        let attached = crate::persist::values::stash(keep(), bytes)
            .or_else(|| crate::protocol::attached::lend(key, keep(), bytes));
        if let Some(index) = attached {
            let mut v = serializer.serialize_struct_variant("Buffer", 1, "Attached", 2)?;
            v.serialize_field("index", &index)?;
            v.serialize_field("len", &(bytes.len() as u64))?;
            return v.end();
        }
        serializer.serialize_newtype_variant("Buffer", 0, "Inline", serde_bytes::Bytes::new(bytes))
    }
}

impl<'de, T: bytemuck::Pod> Deserialize<'de> for Buffer<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Wire::<T>::deserialize(deserializer)? {
            Wire::Inline(Values(v)) => Ok(Buffer::from(v)),
            Wire::Attached { index, len } => {
                let from_file = crate::persist::values::with_loading(|loading| {
                    loading.map(|(container, mapped)| from_container(container, mapped, index, len))
                });
                if let Some(buffer) = from_file {
                    return buffer.map_err(crate::decode::refuse);
                }
                let size = std::mem::size_of::<T>();
                let view = received::view(index).map_err(crate::decode::refuse)?;
                let fits = usize::try_from(len).is_ok_and(|l| l <= view.len());
                if size == 0 || !fits || !len.is_multiple_of(size as u64) {
                    return Err(crate::decode::refuse(format!(
                        "a buffer of {len} bytes of {size}-byte values does not fit the \
                         {} bytes of its segment",
                        view.len()
                    )));
                }
                if !(view.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()) {
                    return Err(crate::decode::refuse(
                        "a segment not aligned for its values",
                    ));
                }
                Ok(Buffer {
                    data: Data::Viewed {
                        view,
                        len: len as usize / size,
                    },
                })
            }
        }
    }
}

/// Buffer `index` of a container being loaded, `len` bytes: mapped where it lies (`mapped`,
/// stored uncompressed on a page boundary), else read, checked, into new values.
fn from_container<T: bytemuck::Pod>(
    container: &crate::persist::Container,
    mapped: bool,
    index: u32,
    len: u64,
) -> Result<Buffer<T>, String> {
    let size = std::mem::size_of::<T>();
    let stored = container
        .buffer_len(index as usize)
        .map_err(|e| e.to_string())?;
    if size == 0 || stored != len || !len.is_multiple_of(size as u64) {
        return Err(format!(
            "buffer {index} holds {stored} bytes, which are not {len} bytes of {size}-byte values"
        ));
    }
    let count = usize::try_from(len / size as u64).map_err(|e| e.to_string())?;
    let location = container
        .buffer_location(index as usize)
        .map_err(|e| e.to_string())?;
    if let Some((offset, _)) = location.filter(|(offset, _)| {
        mapped && count > 0 && offset.is_multiple_of(crate::shm::page_size() as u64)
    }) {
        let view = PrivateView::map_file(container.file(), offset, len as usize)
            .map_err(|e| format!("cannot map buffer {index}: {e}"))?;
        return Ok(Buffer {
            data: Data::Viewed {
                view: Arc::new(view),
                len: count,
            },
        });
    }
    // The length comes from the file: room for it is asked for, not assumed (found by
    // review: a file claiming 2^50 bytes aborted the process).
    let mut values: Vec<T> = bytemuck::try_zeroed_vec(count)
        .map_err(|()| format!("buffer {index} claims {len} bytes: more than can be allocated"))?;
    container
        .read_buffer_into(index as usize, bytemuck::cast_slice_mut(&mut values))
        .map_err(|e| e.to_string())?;
    Ok(Buffer::from(values))
}

/// Values decoded from a byte string.
struct Values<T>(Vec<T>);

impl<'de, T: bytemuck::Pod> Deserialize<'de> for Values<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(BytesVisitor(PhantomData))
    }
}

struct BytesVisitor<T>(PhantomData<T>);

impl<T: bytemuck::Pod> Visitor<'_> for BytesVisitor<T> {
    type Value = Values<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a byte string holding {}-byte numbers",
            std::mem::size_of::<T>()
        )
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Values<T>, E> {
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
        Ok(Values(values))
    }
}

/// The worker's mappings of segments received from the caller.
///
/// The caller's spare segments come back batch after batch (`shm::Spare`), so a worker maps
/// each once, keyed by the memfd's inode, instead of mapping (and faulting in) 8 MiB for
/// every big argument. That is sound because the caller rewrites a segment only after this
/// worker has answered the batch that carried it, and views are never written to (a write
/// copies the buffer first). A view still held when its batch ends (kept by a task) gets its
/// own pages then ([`PrivateView::privatize`]) and leaves the cache for good.
///
/// A mapping keeps its segment's memory alive after the caller dropped it, so the cache
/// stays within the caller's own pool (`shm::SPARE_COUNT` segments, `shm::SPARE_BYTES`),
/// holds no segment the pool would not keep, and forgets a mapping once [`FORGET_AFTER`]
/// other segments have arrived since its own last did (the pool's segments come back
/// sooner than that).
pub(crate) mod received {
    use crate::shm::{PrivateView, SPARE_BYTES, SPARE_COUNT};
    use std::sync::{Arc, Mutex};

    /// Segments received after which an unused mapping is dropped: twice the pool's size.
    const FORGET_AFTER: u64 = 2 * SPARE_COUNT as u64;

    struct Entry {
        /// The segment's (device, inode).
        id: (u64, u64),
        view: Arc<PrivateView>,
        /// The segment count when it last arrived.
        used: u64,
    }

    struct Cache {
        entries: Vec<Entry>,
        /// The views of the batch now running, by position in its frame.
        batch: Vec<(u32, Arc<PrivateView>)>,
        /// Segments received so far.
        received: u64,
    }

    static CACHE: Mutex<Cache> = Mutex::new(Cache {
        entries: Vec::new(),
        batch: Vec::new(),
        received: 0,
    });

    fn cache() -> std::sync::MutexGuard<'static, Cache> {
        CACHE.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The view of the segment at `index` of the frame being decoded.
    pub(crate) fn view(index: u32) -> Result<Arc<PrivateView>, String> {
        let mut cache = cache();
        if let Some((_, view)) = cache.batch.iter().find(|(i, _)| *i == index) {
            return Ok(Arc::clone(view));
        }
        let fd = crate::protocol::attached::take_fd(index)
            .ok_or_else(|| format!("no segment attached at position {index}"))?;
        cache.received += 1;
        let now = cache.received;
        let st = crate::shm::stat(&fd)
            .map_err(|e| format!("cannot stat the segment at position {index}: {e}"))?;
        let size = usize::try_from(st.size).map_err(|e| e.to_string())?;
        let found = cache
            .entries
            .iter_mut()
            .find(|e| e.id == st.id && e.view.len() == size);
        let view = match found {
            Some(entry) => {
                entry.used = now;
                Arc::clone(&entry.view)
            }
            None => {
                let view = Arc::new(
                    PrivateView::map(fd, size)
                        .map_err(|e| format!("cannot map a segment of {size} bytes: {e}"))?,
                );
                // A segment the caller's pool cannot keep never comes back.
                if size <= SPARE_BYTES / 2 {
                    cache.entries.push(Entry {
                        id: st.id,
                        view: Arc::clone(&view),
                        used: now,
                    });
                }
                view
            }
        };
        cache.batch.push((index, Arc::clone(&view)));
        Ok(view)
    }

    /// The end of a batch in a worker: views that tasks kept get their own pages and leave
    /// the cache; mappings unused for a while go; then the least recently used ones, down
    /// to the caller's pool's bounds.
    pub(crate) fn batch_done() {
        let mut cache = cache();
        cache.batch.clear();
        let now = cache.received;
        cache.entries.retain(|e| {
            let kept = Arc::strong_count(&e.view) > 1;
            if kept {
                e.view.privatize();
            }
            !kept && now - e.used <= FORGET_AFTER
        });
        loop {
            let bytes: usize = cache.entries.iter().map(|e| e.view.len()).sum();
            if cache.entries.len() <= SPARE_COUNT && bytes <= SPARE_BYTES {
                break;
            }
            let oldest = (0..cache.entries.len())
                .min_by_key(|&i| cache.entries[i].used)
                .expect("not empty: over the bounds");
            cache.entries.swap_remove(oldest);
        }
    }

    /// Before a task forks: the child inherits the views tasks hold, which must not show the
    /// caller's later data; they get their own pages. The cache is emptied (a mapping only
    /// it holds costs the child nothing, but it would be privatized for nothing later).
    pub(crate) fn privatize_before_fork() {
        let mut cache = cache();
        for e in cache.entries.drain(..) {
            if Arc::strong_count(&e.view) > 1 {
                e.view.privatize();
            }
        }
        for (_, view) in &cache.batch {
            view.privatize();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_postcard_as_one_byte_string() {
        let b = Buffer::from(vec![1.5f64, -2.0, f64::MAX]);
        let bytes = postcard::to_stdvec(&b).unwrap();
        assert_eq!(
            bytes.len(),
            1 + 1 + 3 * 8,
            "a tag, a length and the raw bytes"
        );
        let back: Buffer<f64> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, b);
        // A payload whose length is not a whole number of elements is refused.
        let short = postcard::to_stdvec(&(0u8, serde_bytes::Bytes::new(&[0u8; 7]))).unwrap();
        assert!(postcard::from_bytes::<Buffer<f64>>(&short).is_err());
        // A segment reference outside the process backend's frames is refused (postcard
        // keeps no error text).
        let attached = postcard::to_stdvec(&(1u8, 0u32, 8u64)).unwrap();
        assert!(postcard::from_bytes::<Buffer<f64>>(&attached).is_err());
        assert!(postcard::from_bytes::<Buffer<f64>>(&[1u8, 0, 8]).is_err());
    }

    #[test]
    fn clones_share_until_written() {
        let a = Buffer::from(vec![1u32, 2, 3]);
        let mut b = a.clone();
        assert_eq!(a.as_ptr(), b.as_ptr(), "a clone shares the values");
        b[1] = 20;
        assert_ne!(a.as_ptr(), b.as_ptr());
        assert_eq!((&a[..], &b[..]), (&[1, 2, 3][..], &[1, 20, 3][..]));
        b.as_mut_vec().push(4);
        assert_eq!(b.len(), 4);
        let p = b.as_ptr();
        let v = b.into_inner();
        assert_eq!(v.as_ptr(), p, "a sole owner gets its vector back, no copy");
        let c: Buffer<u8> = (0..3).collect();
        assert_eq!(&c[..], &[0, 1, 2]);
        assert_eq!(format!("{:?}", c), "Buffer([0, 1, 2])");
    }
}
