//! Helpers of the crate's unit tests.

use std::path::PathBuf;

/// A fresh, empty folder under the system's temporary folder, removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    /// `joblet-<name>-<pid>`, emptied first (a run killed before its drop leaves one).
    pub(crate) fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("joblet-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    /// The names in the folder, sorted.
    pub(crate) fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The file that `address` is mapped from in this process, if any (from /proc/self/maps):
/// how tests tell a mapped value from one read into memory.
pub(crate) fn mapped_file(address: usize) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().find_map(|line| {
        // "start-end perms offset dev inode path"; the path may hold spaces.
        let mut fields = line.splitn(6, ' ');
        let (a, b) = fields.next()?.split_once('-')?;
        let range = usize::from_str_radix(a, 16).ok()?..usize::from_str_radix(b, 16).ok()?;
        let path = fields.nth(4)?.trim_start();
        (range.contains(&address) && path.starts_with('/')).then(|| path.to_string())
    })
}
