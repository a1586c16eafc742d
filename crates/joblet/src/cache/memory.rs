//! `Memory` for Rust: a function's results kept on disk, keyed by the function's name, its
//! version and the content of its arguments, in the same store as the Python front's.
//!
//! ```text
//!  call(args) ─ key = hash(version, args) ─► store.hit(function, key)?
//!      │ hit: persist::load (or load_mapped) of output.joblet ─► value
//!      │ damaged or unreadable: warn, then as a miss
//!      └ miss: value = f(args) ─► dump into a temporary entry ─► commit (rename) ─► value
//!                                 (cannot be stored: warn, no entry, value)
//! ```

use super::hash::hash;
use super::store::{Store, StoreError};
use crate::persist::{self, Compression};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// The file an entry's value is stored in.
const OUTPUT: &str = "output.joblet";

/// A function that [`Memory`] can cache: its stable name (module path and name), its
/// version (the text of its body, so that editing it invalidates its results), and the
/// function. [`cached_fn!`](crate::cached_fn) makes one.
pub struct CachedFn<A, R> {
    name: &'static str,
    version: &'static str,
    f: fn(A) -> R,
}

impl<A, R> CachedFn<A, R> {
    /// A cached function called `name` (unique in the program, stable across builds) whose
    /// results are valid for as long as `version` is the same.
    pub const fn new(name: &'static str, version: &'static str, f: fn(A) -> R) -> Self {
        CachedFn { name, version, f }
    }

    /// The function's name in the store.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

/// Results of functions kept on disk: joblib's `Memory` for Rust.
///
/// ```
/// use joblet::Memory;
///
/// joblet::cached_fn! {
///     /// A slow square.
///     pub fn square(x: u64) -> u64 { x * x }
/// }
///
/// fn main() {
///     let dir = std::env::temp_dir().join(format!("joblet-memory-doc-{}", std::process::id()));
///     let memory = Memory::new(&dir).unwrap();
///     assert_eq!(square::cached(&memory, 12).unwrap(), 144); // computed and stored
///     assert_eq!(square::cached(&memory, 12).unwrap(), 144); // loaded
///     assert!(memory.contains(&square::CACHED, &(12u64,)).unwrap());
///     memory.clear().unwrap();
///     std::fs::remove_dir_all(&dir).unwrap();
/// }
/// ```
pub struct Memory {
    store: Option<Store>,
    compression: Compression,
    mapped: bool,
    /// Per function name, once its recorded version was checked in this process: the
    /// version's text, the function's directory and the version's digest (both the same
    /// for every call: worked out once).
    placed: Mutex<HashMap<&'static str, Placed>>,
}

/// Where a cached function's results go, worked out once per process.
struct Placed {
    version_text: &'static str,
    function: String,
    version: String,
}

/// Why a cached call could not be made: the store could not be read or written.
pub type MemoryError = StoreError;

impl Memory {
    /// A memory at `location` (created, private to the user, if missing). Entries go under
    /// `location/joblet/`, as the Python front's.
    pub fn new(location: impl Into<PathBuf>) -> Result<Memory, MemoryError> {
        Ok(Memory {
            store: Some(Store::open(location.into().join("joblet"))?),
            compression: Compression::None,
            mapped: false,
            placed: Mutex::new(HashMap::new()),
        })
    }

    /// A memory that keeps nothing: every call computes (joblib's `location=None`).
    pub fn disabled() -> Memory {
        Memory {
            store: None,
            compression: Compression::None,
            mapped: false,
            placed: Mutex::new(HashMap::new()),
        }
    }

    /// How stored values are compressed (default: not; then their buffers can be mapped).
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Whether loaded values' [`crate::Buffer`]s are mapped from the store's files
    /// instead of read (joblib's `mmap_mode`, copy-on-write).
    pub fn mapped(mut self, mapped: bool) -> Self {
        self.mapped = mapped;
        self
    }

    /// The store, if any.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// `f(args)`, from the store when it holds this call of this version of `f`, else
    /// computed and stored. A stored value that cannot be read (damaged) is reported on
    /// standard error and computed again; a value that cannot be stored is returned all
    /// the same, reported, leaving no entry.
    pub fn call<A, R>(&self, f: &CachedFn<A, R>, args: A) -> Result<R, MemoryError>
    where
        A: Serialize,
        R: Serialize + DeserializeOwned,
    {
        let Some(store) = &self.store else {
            return Ok((f.f)(args));
        };
        let (function, key) = self.place(store, f, &args)?;
        if let Some(entry) = store.hit(&function, &key)? {
            let path = entry.join(OUTPUT);
            let loaded = if self.mapped {
                persist::load_mapped(&path)
            } else {
                persist::load(&path)
            };
            match loaded {
                Ok(value) => return Ok(value),
                Err(e) => {
                    eprintln!("joblet::Memory: {e}; computing {} again", f.name);
                    store.remove(&function, &key)?;
                }
            }
        }
        let value = (f.f)(args);
        let tmp = store.begin(&function, &key)?;
        match persist::dump(&value, &tmp.join(OUTPUT), self.compression) {
            Ok(()) => {
                store.commit(&function, &key, &tmp)?;
            }
            Err(e) => {
                eprintln!("joblet::Memory: cannot store the result of {}: {e}", f.name);
                store.abort(&tmp)?;
            }
        }
        Ok(value)
    }

    /// Whether the store holds `f(args)` for this version of `f`.
    pub fn contains<A: Serialize, R>(
        &self,
        f: &CachedFn<A, R>,
        args: &A,
    ) -> Result<bool, MemoryError> {
        let Some(store) = &self.store else {
            return Ok(false);
        };
        let (function, key) = self.place(store, f, args)?;
        store.contains(&function, &key)
    }

    /// Evicts stored results, least recently used first, until at most `bytes_limit` bytes
    /// and `items_limit` entries remain, and removes those not used for `age_limit`
    /// (joblib's `reduce_size`); returns what was removed.
    pub fn reduce_size(
        &self,
        bytes_limit: Option<u64>,
        items_limit: Option<usize>,
        age_limit: Option<std::time::Duration>,
    ) -> Result<Vec<super::Entry>, MemoryError> {
        match &self.store {
            Some(store) => store.reduce_size(bytes_limit, items_limit, age_limit),
            None => Ok(Vec::new()),
        }
    }

    /// Removes every stored result.
    pub fn clear(&self) -> Result<(), MemoryError> {
        match &self.store {
            Some(store) => store.clear(None),
            None => Ok(()),
        }
    }

    /// The function's directory and the call's key; the first time in this process, the
    /// function's stored results are dropped if another version of it wrote them.
    fn place<A: Serialize, R>(
        &self,
        store: &Store,
        f: &CachedFn<A, R>,
        args: &A,
    ) -> Result<(String, String), MemoryError> {
        let mut placed = self.placed.lock().unwrap_or_else(|e| e.into_inner());
        let known = placed.get(f.name).filter(|p| p.version_text == f.version);
        let place = match known {
            Some(place) => place,
            None => {
                let (module, name) = f.name.rsplit_once("::").unwrap_or(("", f.name));
                let function = Store::function_dir_name(module, name);
                let version = hash(f.version).to_hex();
                if store.func_code(&function)?.as_deref() != Some(&version) {
                    store.clear(Some(&function))?;
                    store.set_func_code(&function, &version)?;
                }
                let place = Placed {
                    version_text: f.version,
                    function,
                    version,
                };
                placed.insert(f.name, place);
                &placed[f.name]
            }
        };
        let key = hash(&(place.version.as_str(), args)).to_hex();
        Ok((place.function.clone(), key))
    }
}

/// Defines a function and a cached way to call it: `name::cached(&memory, args..)` returns
/// its result from a [`Memory`] when stored, else computes and stores it. The function's
/// name in the store is its module path; its version is the text of its signature and body,
/// so that editing it drops its stored results. Arguments must be serde-serializable (they
/// are hashed), the result serde both ways.
///
/// ```
/// joblet::cached_fn! {
///     pub fn total(values: Vec<f64>) -> f64 { values.iter().sum() }
/// }
///
/// fn main() {
///     let memory = joblet::Memory::disabled();
///     assert_eq!(total::cached(&memory, vec![1.0, 2.5]).unwrap(), 3.5);
/// }
/// ```
#[macro_export]
macro_rules! cached_fn {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) -> $ret $body

        #[doc(hidden)]
        #[allow(non_snake_case, dead_code, unused_imports)]
        $vis mod $name {
            use super::*;
            /// The function as [`Memory`](joblet::Memory) knows it.
            pub const CACHED: $crate::CachedFn<($($ty,)*), $ret> = $crate::CachedFn::new(
                module_path!(),
                stringify!(($($arg: $ty),*) -> $ret $body),
                |($($arg,)*)| super::$name($($arg),*),
            );
            /// The function's result for these arguments, from `memory` when stored there.
            pub fn cached(
                memory: &$crate::Memory,
                $($arg: $ty),*
            ) -> ::std::result::Result<$ret, $crate::MemoryError> {
                memory.call(&CACHED, ($($arg,)*))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Buffer;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static CALLS: AtomicUsize = AtomicUsize::new(0);

    fn counted(args: (u64, String)) -> (u64, String) {
        CALLS.fetch_add(1, Ordering::SeqCst);
        (args.0 * 2, args.1.to_uppercase())
    }

    use crate::test_support::TempDir as Dir;

    #[test]
    fn hits_misses_versions_and_a_disabled_memory() {
        let dir = Dir::new("memory-hits");
        let f = CachedFn::new("tests::counted_v1", "v1", counted);
        let memory = Memory::new(&dir.0).unwrap();
        let before = CALLS.load(Ordering::SeqCst);
        let a = (3u64, "x".to_string());
        assert_eq!(memory.call(&f, a.clone()).unwrap(), (6, "X".into()));
        assert_eq!(memory.call(&f, a.clone()).unwrap(), (6, "X".into()));
        assert_eq!(
            CALLS.load(Ordering::SeqCst) - before,
            1,
            "the second call is a hit"
        );
        assert!(memory.contains(&f, &a).unwrap());
        assert!(!memory.contains(&f, &(3u64, "y".to_string())).unwrap());
        memory.call(&f, (3u64, "y".to_string())).unwrap();
        assert_eq!(
            CALLS.load(Ordering::SeqCst) - before,
            2,
            "other arguments: a miss"
        );
        // Another version of the function (its body edited): a new memory in the process
        // (as after a rebuild) drops the old results.
        let f2 = CachedFn::new("tests::counted_v1", "v2", counted);
        let later = Memory::new(&dir.0).unwrap();
        assert!(!later.contains(&f2, &a).unwrap());
        assert!(!later.contains(&f, &a).unwrap(), "old results are gone");
        later.call(&f2, a.clone()).unwrap();
        assert_eq!(CALLS.load(Ordering::SeqCst) - before, 3);
        // Disabled: computes every time, stores nothing.
        let off = Memory::disabled();
        off.call(&f, a.clone()).unwrap();
        off.call(&f, a.clone()).unwrap();
        assert_eq!(CALLS.load(Ordering::SeqCst) - before, 5);
        assert!(!off.contains(&f, &a).unwrap());
    }

    fn ramp(n: (usize,)) -> Buffer<f64> {
        (0..n.0).map(|i| i as f64).collect()
    }

    #[test]
    fn buffer_results_reload_mapped_and_damage_is_recomputed() {
        let dir = Dir::new("memory-mapped");
        let f = CachedFn::new("tests::ramp", "1", ramp);
        let memory = Memory::new(&dir.0).unwrap().mapped(true);
        let made = memory.call(&f, (100_000,)).unwrap();
        let loaded = memory.call(&f, (100_000,)).unwrap();
        assert!(loaded == made);
        let in_a_stored_file = crate::test_support::mapped_file(loaded.as_ptr() as usize)
            .is_some_and(|file| file.ends_with(OUTPUT));
        assert!(
            in_a_stored_file,
            "the loaded buffer is a map of the stored file"
        );
        // Damage the stored value's object stream: the next call warns and computes again.
        let store = memory.store().unwrap();
        let entries = store.entries(None).unwrap();
        assert_eq!(entries.len(), 1);
        let output = entries[0].path.join(OUTPUT);
        let mut bytes = std::fs::read(&output).unwrap();
        bytes[64] ^= 1;
        std::fs::write(&output, bytes).unwrap();
        let again = Memory::new(&dir.0).unwrap().call(&f, (100_000,)).unwrap();
        assert!(again == made);
        assert!(
            persist::load::<Buffer<f64>>(&output).is_ok(),
            "a good entry again"
        );
    }

    #[test]
    fn threads_racing_on_one_entry_all_get_the_value_and_leave_one_entry() {
        let dir = Dir::new("memory-race");
        let memory = std::sync::Arc::new(Memory::new(&dir.0).unwrap());
        let f = std::sync::Arc::new(CachedFn::new("tests::race", "1", ramp));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (memory, f) = (memory.clone(), f.clone());
                std::thread::spawn(move || memory.call(&f, (5_000,)).unwrap())
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap().len(), 5_000);
        }
        assert_eq!(memory.store().unwrap().entries(None).unwrap().len(), 1);
        for n in 1..=4 {
            memory.call(&f, (n,)).unwrap();
        }
        let removed = memory.reduce_size(None, Some(2), None).unwrap();
        assert_eq!(removed.len(), 3, "5 entries down to 2");
        assert_eq!(memory.store().unwrap().entries(None).unwrap().len(), 2);
        assert!(memory.contains(&f, &(4,)).unwrap(), "the most recent stays");
    }

    cached_fn! {
        fn doubled(values: Vec<u32>, by: u32) -> Vec<u32> {
            values.iter().map(|v| v * by).collect()
        }
    }

    #[test]
    fn the_macro_names_and_versions_the_function() {
        let dir = Dir::new("memory-macro");
        let memory = Memory::new(&dir.0).unwrap();
        assert_eq!(doubled::cached(&memory, vec![1, 2], 3).unwrap(), vec![3, 6]);
        assert!(memory
            .contains(&doubled::CACHED, &(vec![1u32, 2], 3u32))
            .unwrap());
        assert!(doubled::CACHED.name().ends_with("::doubled"));
        assert!(
            doubled::CACHED.version.contains("v * by"),
            "the body is the version"
        );
    }
}
