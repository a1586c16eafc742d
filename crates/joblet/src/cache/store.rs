//! The on-disk store of `Memory`: cached calls, one directory each.
//!
//! ```text
//! <root>/
//!   <function>/                  one per cached function: `Store::function_dir_name`
//!     func_code.py               the source the entries were computed with (the front's)
//!     <hash[0:2]>/               a shard: 256 at most, so no directory holds millions
//!       <hash>/                  one entry: the arguments' hash
//!         output.pkl             the value (written by the front: joblet.dump)
//!         metadata.json          duration, input repr, time (the front's)
//!         access                 empty; its modification time is the entry's last access
//!       .tmp-<hash>-<pid>-<n>/   an entry being written (never listed)
//! ```
//!
//! An entry is written whole into a temporary directory beside its place, then renamed into
//! place ([`Store::commit`]): readers see no entry or a whole one. When another writer
//! committed the same entry first, the rename fails (the target is not empty) and ours is
//! removed: both were computed from the same arguments, so either is valid. Entries leave
//! the same way they came: renamed aside first, then deleted, so a reader never sees half
//! an entry. Temporaries of writers that died are swept by [`Store::reduce_size`] once a
//! day old.
//!
//! Last access is the modification time of the entry's `access` file, set on every hit
//! ([`Store::hit`], one `utimensat`): file access times are unreliable (`noatime`, `relatime` mounts), so
//! this store keeps its own. [`Store::reduce_size`] deletes least recently used entries
//! first.
//!
//! Directories are created `0o700` and committed files made `0o600`: cached values are the
//! user's data. Every error names the path it concerns.

use std::fmt;
use std::fs::{self, DirBuilder, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use xxhash_rust::xxh3::xxh3_64;

/// The file holding the source a function's entries were computed with.
pub const FUNC_CODE: &str = "func_code.py";
/// The file whose modification time is an entry's last access.
const ACCESS: &str = "access";
/// The prefix of temporary names (entries being written, entries being removed).
const TMP_PREFIX: &str = ".tmp-";
/// A temporary older than this was left by a writer that died: a day (writing one entry
/// takes far less, and a temporary's directory changes with every file put in it).
const STALE_TEMPORARY: Duration = Duration::from_secs(24 * 3600);

/// A failed store operation: what was done, on which path, and the system's reason.
#[derive(Debug)]
pub struct StoreError {
    op: &'static str,
    path: PathBuf,
    source: io::Error,
}

impl StoreError {
    fn new(op: &'static str, path: &Path, source: io::Error) -> StoreError {
        StoreError {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    fn invalid(op: &'static str, path: &Path, why: String) -> StoreError {
        StoreError::new(op, path, io::Error::new(io::ErrorKind::InvalidInput, why))
    }

    /// The path the operation concerned.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The system's error.
    pub fn io_error(&self) -> &io::Error {
        &self.source
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cache store: cannot {} {}: {}",
            self.op,
            self.path.display(),
            self.source
        )
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// One committed entry, as listed by [`Store::entries`].
#[derive(Debug, Clone)]
pub struct Entry {
    /// The function's directory name.
    pub function: String,
    /// The arguments' hash.
    pub hash: String,
    /// The entry's directory.
    pub path: PathBuf,
    /// The bytes of its files.
    pub size: u64,
    /// When it was last read or written.
    pub last_access: SystemTime,
}

/// What [`Store::commit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Ours is now the entry.
    Committed,
    /// Another writer's entry was there first; ours was removed.
    AlreadyThere,
}

/// A store of cached calls under one root directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

fn make_dir(path: &Path) -> Result<(), StoreError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| StoreError::new("create directory", path, e))
}

/// Removes a directory tree; one already gone is not an error.
fn remove_tree(path: &Path) -> Result<(), StoreError> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StoreError::new("remove", path, e)),
        _ => Ok(()),
    }
}

/// A name no other thread or process of this machine uses at the same time.
fn unique_suffix() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A directory's entries, none if it does not exist.
fn read_dir(path: &Path) -> Result<Vec<fs::DirEntry>, StoreError> {
    match fs::read_dir(path) {
        Ok(it) => it
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StoreError::new("list", path, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(StoreError::new("list", path, e)),
    }
}

/// The bytes of the files under `path` (0 for what vanished meanwhile).
fn tree_size(path: &Path) -> u64 {
    let Ok(it) = fs::read_dir(path) else { return 0 };
    it.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => tree_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Makes every file under `path` private (`0o600`), directories `0o700`.
fn make_private(path: &Path) -> Result<(), StoreError> {
    for e in read_dir(path)? {
        let p = e.path();
        let is_dir = e
            .file_type()
            .map_err(|err| StoreError::new("inspect", &p, err))?
            .is_dir();
        let mode = if is_dir { 0o700 } else { 0o600 };
        fs::set_permissions(&p, fs::Permissions::from_mode(mode))
            .map_err(|err| StoreError::new("set permissions of", &p, err))?;
        if is_dir {
            make_private(&p)?;
        }
    }
    Ok(())
}

impl Store {
    /// The store at `root`, created (private) if missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        make_dir(&root)?;
        Ok(Store { root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A function's directory name from its module and qualified name: the readable part
    /// made filesystem-safe (letters, digits, `_`, `-`, `.`; anything else `_`; at most
    /// 120 bytes), then 16 hex digits of a hash of the exact names, so that two functions
    /// whose names clean to the same text still get apart.
    pub fn function_dir_name(module: &str, qualname: &str) -> String {
        let mut readable: String = format!("{module}.{qualname}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .take(120)
            .collect();
        if readable.starts_with('.') {
            readable.replace_range(0..1, "_");
        }
        let exact = format!("{module}\0{qualname}");
        format!("{readable}-{:016x}", xxh3_64(exact.as_bytes()))
    }

    fn function_dir(&self, function: &str) -> Result<PathBuf, StoreError> {
        let ok =
            !function.is_empty() && !function.starts_with('.') && !function.contains(['/', '\0']);
        if !ok {
            return Err(StoreError::invalid(
                "use function directory",
                &self.root.join(function),
                format!("{function:?} is not a function directory name"),
            ));
        }
        Ok(self.root.join(function))
    }

    /// The directory of the entry `hash` of `function` (which may not exist).
    pub fn entry_path(&self, function: &str, hash: &str) -> Result<PathBuf, StoreError> {
        let dir = self.function_dir(function)?;
        let ok = hash.len() >= 3 && hash.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok {
            return Err(StoreError::invalid(
                "use entry",
                &dir.join(hash),
                format!("{hash:?} is not a hexadecimal hash of 3 or more digits"),
            ));
        }
        Ok(dir.join(&hash[..2]).join(hash))
    }

    /// Whether the entry is committed.
    pub fn contains(&self, function: &str, hash: &str) -> Result<bool, StoreError> {
        Ok(self.entry_path(function, hash)?.is_dir())
    }

    /// A new, empty, private temporary directory beside the entry's place: write the
    /// entry's files into it, then [`commit`](Store::commit) or [`abort`](Store::abort).
    pub fn begin(&self, function: &str, hash: &str) -> Result<PathBuf, StoreError> {
        let entry = self.entry_path(function, hash)?;
        let shard = entry.parent().expect("an entry has a shard");
        make_dir(shard)?;
        let tmp = shard.join(format!("{TMP_PREFIX}{hash}-{}", unique_suffix()));
        DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(|e| StoreError::new("create directory", &tmp, e))?;
        Ok(tmp)
    }

    /// Moves the temporary directory `tmp` (from [`begin`](Store::begin)) into place as the
    /// entry, its files made private and its access time now. If the entry is already there
    /// (another writer), `tmp` is removed and the other entry kept.
    pub fn commit(&self, function: &str, hash: &str, tmp: &Path) -> Result<Commit, StoreError> {
        let entry = self.entry_path(function, hash)?;
        if tmp.parent() != entry.parent() {
            return Err(StoreError::invalid(
                "commit",
                tmp,
                format!("not a temporary directory of {}", entry.display()),
            ));
        }
        File::create(tmp.join(ACCESS))
            .map_err(|e| StoreError::new("create", &tmp.join(ACCESS), e))?;
        make_private(tmp)?;
        match fs::rename(tmp, &entry) {
            Ok(()) => Ok(Commit::Committed),
            // Linux says ENOTEMPTY, others EEXIST, for a directory renamed onto a full one.
            Err(e)
                if entry.is_dir()
                    && matches!(e.raw_os_error(), Some(libc::ENOTEMPTY | libc::EEXIST)) =>
            {
                remove_tree(tmp)?;
                Ok(Commit::AlreadyThere)
            }
            Err(e) => Err(StoreError::new("rename into place", tmp, e)),
        }
    }

    /// Removes an entry being written (from [`begin`](Store::begin)).
    pub fn abort(&self, tmp: &Path) -> Result<(), StoreError> {
        remove_tree(tmp)
    }

    /// Records an access to the entry now (for least-recently-used eviction). An entry
    /// removed meanwhile is not an error.
    pub fn touch(&self, function: &str, hash: &str) -> Result<(), StoreError> {
        let path = self.entry_path(function, hash)?.join(ACCESS);
        let file = match File::options().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::new("open", &path, e)),
        };
        file.set_modified(SystemTime::now())
            .map_err(|e| StoreError::new("set the access time of", &path, e))
    }

    /// A cache hit: the entry's directory if it is committed, its access recorded now (one
    /// system call on the usual path); `None` if there is no such entry.
    pub fn hit(&self, function: &str, hash: &str) -> Result<Option<PathBuf>, StoreError> {
        use std::os::unix::ffi::OsStrExt;
        let entry = self.entry_path(function, hash)?;
        let access = entry.join(ACCESS);
        let c_path = std::ffi::CString::new(access.as_os_str().as_bytes()).map_err(|_| {
            StoreError::invalid("touch", &access, "the path holds a NUL byte".into())
        })?;
        // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call; a null
        // `times` means "now" for both times (utimensat(2)), and flags 0 follows links.
        let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c_path.as_ptr(), std::ptr::null(), 0) };
        if rc == 0 {
            return Ok(Some(entry));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::NotFound {
            return Err(StoreError::new("set the access time of", &access, e));
        }
        if !entry.is_dir() {
            return Ok(None);
        }
        // An entry without its access file (written by hand, or the file lost): give it one.
        match File::create(&access) {
            Ok(_) => Ok(Some(entry)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None), // removed meanwhile
            Err(e) => Err(StoreError::new("create", &access, e)),
        }
    }

    /// Removes one entry (renamed aside first: readers never see half of it). Returns
    /// whether it was there.
    pub fn remove(&self, function: &str, hash: &str) -> Result<bool, StoreError> {
        let entry = self.entry_path(function, hash)?;
        self.remove_dir(&entry)
    }

    fn remove_dir(&self, dir: &Path) -> Result<bool, StoreError> {
        let name = dir.file_name().unwrap_or_default().to_string_lossy();
        let aside = dir.with_file_name(format!("{TMP_PREFIX}rm-{name}-{}", unique_suffix()));
        match fs::rename(dir, &aside) {
            Ok(()) => {
                // Out of the way: the entry is gone. A writer that found its path before the
                // rename may still add a file to it (found by review: "Directory not empty"
                // from clear during writes); try again, then leave the rest to the next
                // sweep rather than fail a removal that has happened.
                for _ in 0..3 {
                    if remove_tree(&aside).is_ok() {
                        break;
                    }
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::new("move aside for removal", dir, e)),
        }
    }

    /// The functions with a directory in the store.
    pub fn functions(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for e in read_dir(&self.root)? {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && e.path().is_dir() {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every committed entry (of `function`, or of all), with its size and last access.
    pub fn entries(&self, function: Option<&str>) -> Result<Vec<Entry>, StoreError> {
        let functions = match function {
            Some(f) => vec![f.to_owned()],
            None => self.functions()?,
        };
        let mut out = Vec::new();
        for function in functions {
            let dir = self.function_dir(&function)?;
            for shard in read_dir(&dir)? {
                if shard.file_name().len() != 2 || !shard.path().is_dir() {
                    continue;
                }
                for e in read_dir(&shard.path())? {
                    let hash = e.file_name().to_string_lossy().into_owned();
                    let path = e.path();
                    if hash.starts_with('.') || !path.is_dir() {
                        continue;
                    }
                    // An entry removed while we list it is simply not listed.
                    let Ok(dir_meta) = fs::metadata(&path) else {
                        continue;
                    };
                    let last_access = fs::metadata(path.join(ACCESS))
                        .and_then(|m| m.modified())
                        .or_else(|_| dir_meta.modified())
                        .unwrap_or(SystemTime::UNIX_EPOCH);
                    out.push(Entry {
                        function: function.clone(),
                        hash,
                        size: tree_size(&path),
                        path,
                        last_access,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Removes what writers that died left behind: temporary entries, sources and
    /// directories set aside for removal, last changed more than `older_than` ago. Returns
    /// how many were removed.
    pub fn sweep_temporaries(&self, older_than: Duration) -> Result<usize, StoreError> {
        let now = SystemTime::now();
        let removal = format!("{TMP_PREFIX}rm-");
        let stale = |e: &fs::DirEntry| {
            let name = e.file_name().to_string_lossy().into_owned();
            // Directories set aside for removal are garbage whatever their age.
            name.starts_with(&removal)
                || name.starts_with(TMP_PREFIX)
                    && e.metadata()
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > older_than))
        };
        let mut dirs = vec![self.root.clone()];
        for function in self.functions()? {
            let dir = self.function_dir(&function)?;
            for shard in read_dir(&dir)? {
                if shard.file_name().len() == 2 && shard.path().is_dir() {
                    dirs.push(shard.path());
                }
            }
            dirs.push(dir);
        }
        let mut removed = 0;
        for dir in dirs {
            for e in read_dir(&dir)?.iter().filter(|e| stale(e)) {
                let path = e.path();
                let gone = if path.is_dir() {
                    remove_tree(&path)
                } else {
                    match fs::remove_file(&path) {
                        Err(err) if err.kind() != io::ErrorKind::NotFound => {
                            Err(StoreError::new("remove", &path, err))
                        }
                        _ => Ok(()),
                    }
                };
                gone?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Deletes entries, least recently used first, until at most `bytes_limit` bytes and
    /// `items_limit` entries are left, and every entry not accessed within `age_limit`.
    /// Temporaries a dead writer left (older than a day) go too. Returns the
    /// entries deleted.
    pub fn reduce_size(
        &self,
        bytes_limit: Option<u64>,
        items_limit: Option<usize>,
        age_limit: Option<Duration>,
    ) -> Result<Vec<Entry>, StoreError> {
        self.sweep_temporaries(STALE_TEMPORARY)?;
        let mut entries = self.entries(None)?;
        // Most recent first: what is kept is a prefix.
        entries.sort_by_key(|e| std::cmp::Reverse(e.last_access));
        let now = SystemTime::now();
        let mut kept_bytes = 0u64;
        let mut kept_items = 0usize;
        let mut removed = Vec::new();
        for entry in entries {
            let too_old = age_limit.is_some_and(|limit| {
                now.duration_since(entry.last_access)
                    .is_ok_and(|age| age > limit)
            });
            let too_many = items_limit.is_some_and(|limit| kept_items >= limit);
            let too_big = bytes_limit.is_some_and(|limit| kept_bytes + entry.size > limit);
            if too_old || too_many || too_big {
                if self.remove_dir(&entry.path)? {
                    removed.push(entry);
                }
            } else {
                kept_bytes += entry.size;
                kept_items += 1;
            }
        }
        Ok(removed)
    }

    /// Removes every entry of `function` (and its recorded source), or of every function.
    pub fn clear(&self, function: Option<&str>) -> Result<(), StoreError> {
        let functions = match function {
            Some(f) => vec![f.to_owned()],
            None => self.functions()?,
        };
        for f in functions {
            let dir = self.function_dir(&f)?;
            self.remove_dir(&dir)?;
        }
        Ok(())
    }

    /// The source recorded for `function`, if any.
    pub fn func_code(&self, function: &str) -> Result<Option<String>, StoreError> {
        let path = self.function_dir(function)?.join(FUNC_CODE);
        match fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::new("read", &path, e)),
        }
    }

    /// Records the source of `function` (a temporary file renamed into place, private).
    pub fn set_func_code(&self, function: &str, code: &str) -> Result<(), StoreError> {
        let dir = self.function_dir(function)?;
        make_dir(&dir)?;
        let tmp = dir.join(format!("{TMP_PREFIX}{FUNC_CODE}-{}", unique_suffix()));
        let write = || -> io::Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(code.as_bytes())?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::new("write", &tmp, e));
        }
        let target = dir.join(FUNC_CODE);
        fs::rename(&tmp, &target).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            StoreError::new("rename into place", &target, e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_root(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("joblet-store-{name}-{}", unique_suffix()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn put(store: &Store, f: &str, hash: &str, bytes: usize) -> Commit {
        let tmp = store.begin(f, hash).unwrap();
        fs::write(tmp.join("output.pkl"), vec![7u8; bytes]).unwrap();
        fs::write(tmp.join("metadata.json"), b"{}").unwrap();
        store.commit(f, hash, &tmp).unwrap()
    }

    fn set_access(store: &Store, f: &str, hash: &str, secs_ago: u64) {
        let p = store.entry_path(f, hash).unwrap().join(ACCESS);
        let t = SystemTime::now() - Duration::from_secs(secs_ago);
        File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn function_names_are_safe_and_distinct() {
        let a = Store::function_dir_name("__main__", "f.<locals>.<lambda>");
        assert!(a.starts_with("__main__.f._locals_._lambda_-"), "{a}");
        assert!(!a.contains(['/', '<', '>']));
        let b = Store::function_dir_name("__main__", "f.<locals>.[lambda]");
        assert_ne!(a, b, "names that clean alike stay apart");
        let c = Store::function_dir_name("../x", "y/z");
        assert!(!c.starts_with('.') && !c.contains('/'), "{c}");
        let long = Store::function_dir_name(&"m".repeat(1000), "f");
        assert!(long.len() <= 120 + 17);
    }

    #[test]
    fn commit_is_sharded_private_and_listed() {
        let root = temp_root("commit");
        let store = Store::open(&root).unwrap();
        let f = Store::function_dir_name("mod", "f");
        assert!(!store.contains(&f, "abcdef").unwrap());
        assert_eq!(put(&store, &f, "abcdef", 100), Commit::Committed);
        let entry = store.entry_path(&f, "abcdef").unwrap();
        assert_eq!(entry, root.join(&f).join("ab").join("abcdef"));
        assert!(store.contains(&f, "abcdef").unwrap());
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join(&f)), 0o700);
        assert_eq!(mode(&entry), 0o700);
        assert_eq!(mode(&entry.join("output.pkl")), 0o600);
        let listed = store.entries(None).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].hash, "abcdef");
        assert_eq!(listed[0].size, 102);
        // No temporary directory left beside the entry.
        assert_eq!(fs::read_dir(entry.parent().unwrap()).unwrap().count(), 1);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_second_commit_keeps_the_first() {
        let root = temp_root("race");
        let store = Store::open(&root).unwrap();
        let first = store.begin("f", "0123").unwrap();
        let second = store.begin("f", "0123").unwrap();
        assert_ne!(first, second);
        fs::write(first.join("output.pkl"), b"first").unwrap();
        fs::write(second.join("output.pkl"), b"second").unwrap();
        assert_eq!(
            store.commit("f", "0123", &first).unwrap(),
            Commit::Committed
        );
        assert_eq!(
            store.commit("f", "0123", &second).unwrap(),
            Commit::AlreadyThere
        );
        assert!(!second.exists());
        let out = store.entry_path("f", "0123").unwrap().join("output.pkl");
        assert_eq!(fs::read(out).unwrap(), b"first");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn bad_names_are_errors_naming_the_path() {
        let root = temp_root("names");
        let store = Store::open(&root).unwrap();
        let e = store.entry_path("f", "../../etc").unwrap_err();
        assert!(e.to_string().contains(&*root.to_string_lossy()), "{e}");
        assert!(store.entry_path("../f", "abcd").is_err());
        assert!(store.entry_path("f", "ab").is_err());
        let e = store
            .commit("f", "abcd", Path::new("/elsewhere"))
            .unwrap_err();
        assert!(e.to_string().contains("/elsewhere"), "{e}");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn open_failure_names_the_path() {
        let root = temp_root("file");
        fs::write(&root, b"not a directory").unwrap();
        let e = Store::open(root.join("sub")).unwrap_err();
        assert!(e.to_string().contains("sub"), "{e}");
        assert_eq!(e.path(), root.join("sub"));
        fs::remove_file(root).unwrap();
    }

    #[test]
    fn reduce_size_deletes_least_recently_used_first() {
        let root = temp_root("reduce");
        let store = Store::open(&root).unwrap();
        for (i, h) in ["aaa1", "bbb2", "ccc3", "ddd4"].iter().enumerate() {
            put(&store, "f", h, 1000);
            set_access(&store, "f", h, 100 * (4 - i as u64)); // aaa1 oldest
        }
        let removed = store.reduce_size(None, Some(3), None).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].hash, "aaa1");
        // A hit makes bbb2 the most recent: ccc3 goes next.
        assert_eq!(
            store.hit("f", "bbb2").unwrap(),
            Some(store.entry_path("f", "bbb2").unwrap())
        );
        assert_eq!(store.hit("f", "bbb9").unwrap(), None);
        let removed = store.reduce_size(Some(2100), None, None).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].hash, "ccc3");
        let removed = store
            .reduce_size(None, None, Some(Duration::from_secs(50)))
            .unwrap();
        let hashes: Vec<_> = removed.iter().map(|e| e.hash.as_str()).collect();
        assert_eq!(hashes, ["ddd4"]);
        let left: Vec<_> = store.entries(None).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].hash, "bbb2");
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_hit_on_an_entry_without_access_file_gives_it_one() {
        let root = temp_root("hit");
        let store = Store::open(&root).unwrap();
        put(&store, "f", "abc", 1);
        let access = store.entry_path("f", "abc").unwrap().join(ACCESS);
        fs::remove_file(&access).unwrap();
        assert!(store.hit("f", "abc").unwrap().is_some());
        assert!(access.exists());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn stale_temporaries_are_swept() {
        let root = temp_root("sweep");
        let store = Store::open(&root).unwrap();
        put(&store, "f", "abc", 1);
        let dead = store.begin("f", "abd").unwrap();
        fs::write(dead.join("output.pkl"), b"half").unwrap();
        let live = store.begin("f", "abe").unwrap();
        let old = SystemTime::now() - STALE_TEMPORARY - Duration::from_secs(60);
        File::open(&dead).unwrap().set_modified(old).unwrap();
        assert_eq!(store.reduce_size(None, None, None).unwrap().len(), 0);
        assert!(!dead.exists());
        assert!(live.exists(), "a recent temporary may still be written");
        assert!(store.contains("f", "abc").unwrap());
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn clear_one_function_or_all_and_func_code() {
        let root = temp_root("clear");
        let store = Store::open(&root).unwrap();
        put(&store, "f", "abc", 1);
        put(&store, "g", "abc", 1);
        store.set_func_code("f", "def f(): pass\n").unwrap();
        assert_eq!(
            store.func_code("f").unwrap().as_deref(),
            Some("def f(): pass\n")
        );
        assert_eq!(mode(&root.join("f").join(FUNC_CODE)), 0o600);
        assert_eq!(store.func_code("g").unwrap(), None);
        store.clear(Some("f")).unwrap();
        assert!(!store.contains("f", "abc").unwrap());
        assert_eq!(store.func_code("f").unwrap(), None);
        assert!(store.contains("g", "abc").unwrap());
        store.clear(None).unwrap();
        assert!(store.entries(None).unwrap().is_empty());
        assert!(store.functions().unwrap().is_empty());
        assert!(!store.remove("g", "abc").unwrap());
        fs::remove_dir_all(root).unwrap();
    }
}
