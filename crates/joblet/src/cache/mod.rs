//! What `Memory` needs beside the execution path. So far: content hashes of values
//! ([`hash`], [`ContentHasher`]), the key of a cached call's arguments. Equal content in
//! another object gives the same [`Digest`]; one changed element gives another.
//!
//! The Python front's `joblet.hash` walks Python objects in `joblet-py` and feeds the same
//! [`ContentHasher`], so both fronts hash big buffers the same way: whole, without a copy,
//! on every core.
//!
//! [`Store`] (`store.rs`) is the on-disk store of cached calls: one directory per
//! function, one per argument hash, committed atomically, evicted least recently used first.
//! [`Memory`] (`memory.rs`) is joblib's `Memory` for Rust on that store, with functions
//! named and versioned by [`cached_fn!`](crate::cached_fn).

mod hash;
mod memory;
mod store;

pub use hash::{hash, ContentHasher, Digest, HashError};
pub use memory::{CachedFn, Memory, MemoryError};
pub use store::{Commit, Entry, Store, StoreError};
