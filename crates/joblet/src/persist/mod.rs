//! Persistence: joblet's container for values with big arrays in them (`dump` / `load`).
//!
//! ```text
//!  offset 0   header (64 bytes)   magic "\x93JOBLET\n", version (2; 1 is still read), flags,
//!                                 where the table of contents is and its checksum, the
//!                                 header's own checksum
//!  64         section 0           the object stream (pickle for Python, postcard for Rust)
//!  aligned    section 1..n        raw buffers (arrays' bytes) the stream refers to by
//!                                 position, each at a multiple of 64 bytes
//!  end        table of contents   per section: kind, compressor, flags (unchecked, chunked),
//!                                 offset, stored and raw lengths, xxh3-64 checksum of the
//!                                 stored bytes
//!
//!  a chunked section's stored bytes (compressed, more than 4 MiB raw; version 2 on):
//!  +0         chunk table         chunk count n, raw chunk size c (4 MiB), n stored lengths
//!  +16 + 8n   chunk 0..n-1        each compressed alone; each decompresses to c bytes, the
//!                                 last to the rest
//! ```
//!
//! Every section has its own compressor ([`Compression`]: joblib's zlib, gzip, bz2, lzma, xz,
//! lz4, and zstd), so an array stored uncompressed can be memory-mapped in place while the
//! small object stream is compressed. A compressed section of more than 4 MiB is stored as
//! independent chunks, compressed and decompressed in parallel (rayon), each chunk straight
//! into its place in the output (`chunks.rs`); the bytes written do not depend on the number
//! of threads. Every section is checked against its checksum before it is used: damage is
//! an error naming the file and the byte offset, never a wrong value. A container is written
//! under a temporary name beside its target and renamed at the end, so that nobody sees half
//! of one.
//!
//! ```
//! use joblet::persist::{self, Compression};
//!
//! let dir = std::env::temp_dir().join(format!("joblet-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("values.joblet");
//! let values = (vec![1.5f64, 2.5], "label".to_string());
//! persist::dump(&values, &path, Compression::Zstd(3)).unwrap();
//! let back: (Vec<f64>, String) = persist::load(&path).unwrap();
//! assert_eq!(back, values);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

mod chunks;
mod codec;
mod format;
mod read;
pub(crate) mod values;
mod write;

pub use codec::{Compression, NAMES as COMPRESSORS};
pub use format::{ALIGN, MAGIC, OLDEST_VERSION, VERSION};
pub use read::Container;
pub use write::Writer;

/// For the fuzz target (`crates/joblet/fuzz`); not part of the API.
#[doc(hidden)]
pub mod __fuzz {
    pub use super::format::repair_checksums;
}

use format::Refusal;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Why a container could not be written or read.
#[derive(Debug)]
#[non_exhaustive]
pub enum PersistError {
    /// The file system said no.
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
    /// The file is not a joblet container (its first bytes are not [`MAGIC`]).
    NotAContainer {
        /// The file.
        path: PathBuf,
    },
    /// The file was written in a version of the format this code does not read (a later
    /// one, or a damaged version field).
    Version {
        /// The file.
        path: PathBuf,
        /// The version it says it has.
        found: u32,
    },
    /// The file is damaged (truncated, changed): where, and what does not hold there.
    Damaged {
        /// The file.
        path: PathBuf,
        /// The byte where the damaged part starts.
        offset: u64,
        /// What does not hold there.
        what: String,
    },
    /// A value or an argument that cannot be stored or read this way.
    Invalid {
        /// What, and why.
        what: String,
    },
}

impl PersistError {
    pub(crate) fn io(path: &Path, source: io::Error) -> Self {
        PersistError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn refused(path: &Path, refusal: Refusal) -> Self {
        let path = path.to_path_buf();
        match refusal {
            Refusal::NotAContainer => PersistError::NotAContainer { path },
            Refusal::Version(found) => PersistError::Version { path, found },
            Refusal::Damaged { offset, what } => PersistError::Damaged { path, offset, what },
        }
    }
}

impl fmt::Display for PersistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PersistError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            PersistError::NotAContainer { path } => write!(
                f,
                "{}: not a joblet container (it does not start with joblet's magic bytes)",
                path.display()
            ),
            PersistError::Version { path, found } => write!(
                f,
                "{}: written in container version {found}; this joblet reads versions \
                 {OLDEST_VERSION} to {VERSION}",
                path.display()
            ),
            PersistError::Damaged { path, offset, what } => {
                write!(f, "{}: damaged at byte {offset}: {what}", path.display())
            }
            PersistError::Invalid { what } => f.write_str(what),
        }
    }
}

impl std::error::Error for PersistError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PersistError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Writes `value` (serde, encoded with postcard) to a container at `path`. Every
/// [`crate::Buffer`] of 64 KiB or more in it is stored as a section of its own, aligned to
/// the page size when uncompressed, which [`load_mapped`] maps instead of reading.
pub fn dump<T: Serialize + ?Sized>(
    value: &T,
    path: &Path,
    compression: Compression,
) -> Result<(), PersistError> {
    values::stashing(
        || postcard::to_stdvec(value),
        |encoded, buffers| {
            let stream = encoded.map_err(|e| PersistError::Invalid {
                what: format!("cannot encode the value: {e}"),
            })?;
            let mut writer = Writer::create(path, &stream, compression)?;
            for bytes in buffers {
                writer.buffer(bytes, compression)?;
            }
            writer.finish()
        },
    )
}

/// Reads the value that [`dump`] wrote to `path`; its buffers are read into memory, each
/// checked against its checksum.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, PersistError> {
    load_with(path, false)
}

/// Like [`load`], but the [`crate::Buffer`]s stored uncompressed are mapped from the file,
/// copy-on-write, instead of read: nothing of them is read until used (and so they are not
/// checked against their checksums; the rest of the file is). A write to one copies it
/// first, as for any shared buffer. The file must not be changed in place while mapped
/// (joblet never does: it replaces files whole).
pub fn load_mapped<T: DeserializeOwned>(path: &Path) -> Result<T, PersistError> {
    load_with(path, true)
}

fn load_with<T: DeserializeOwned>(path: &Path, mapped: bool) -> Result<T, PersistError> {
    let container = Container::open(path)?;
    let bytes = container.objects()?;
    values::loading(&container, mapped, || crate::decode::from_bytes(&bytes)).map_err(|e| {
        PersistError::Invalid {
            what: format!(
                "{}: the object stream does not decode as the type asked for: {e}",
                path.display()
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::TempDir as Dir;

    fn write_sample(path: &Path, compression: Compression) -> Vec<Vec<u8>> {
        let buffers: Vec<Vec<u8>> = (0..3u8)
            .map(|k| {
                (0..100_000u32)
                    .map(|i| (i as u8).wrapping_mul(k + 1))
                    .collect()
            })
            .collect();
        let mut w = Writer::create(path, b"the object stream", compression).unwrap();
        for (k, b) in buffers.iter().enumerate() {
            assert_eq!(w.buffer(b, compression).unwrap(), k);
        }
        w.finish().unwrap();
        buffers
    }

    #[test]
    fn sections_round_trip_aligned_with_every_compressor() {
        let dir = Dir::new("persist-round");
        for name in ["none"].into_iter().chain(COMPRESSORS) {
            let c = if name == "none" {
                Compression::None
            } else {
                Compression::from_name(name, 3).unwrap()
            };
            let path = dir.0.join(format!("sample.{name}"));
            let buffers = write_sample(&path, c);
            let r = Container::open(&path).unwrap();
            assert_eq!(r.objects().unwrap(), b"the object stream");
            assert_eq!(r.buffer_count(), 3);
            for (k, b) in buffers.iter().enumerate() {
                assert_eq!(&r.buffer(k).unwrap(), b, "{name}: buffer {k}");
                match r.buffer_location(k).unwrap() {
                    Some((offset, len)) => {
                        assert_eq!(c, Compression::None);
                        assert_eq!(offset % ALIGN, 0);
                        assert_eq!(len, b.len() as u64);
                    }
                    None => assert_ne!(c, Compression::None),
                }
            }
            assert!(r.buffer(3).unwrap_err().to_string().contains("buffer 3"));
        }
        assert_eq!(
            dir.entries().len(),
            8,
            "no temporary file left: {:?}",
            dir.entries()
        );
    }

    #[test]
    fn damage_anywhere_is_an_error_naming_the_file_and_offset() {
        let dir = Dir::new("persist-damage");
        let path = dir.0.join("d.joblet");
        write_sample(&path, Compression::None);
        let good = std::fs::read(&path).unwrap();
        // Truncated anywhere: refused when opened or when the section is read.
        for cut in [0, 7, 40, 64, 1000, good.len() - 1] {
            std::fs::write(&path, &good[..cut]).unwrap();
            let err = Container::open(&path).and_then(|r| {
                r.objects()?;
                (0..r.buffer_count()).try_for_each(|k| r.buffer(k).map(drop))
            });
            let err = err.expect_err("a truncated file was read").to_string();
            assert!(err.contains("d.joblet"), "{err}");
        }
        // One flipped bit in every region: header, object stream, each buffer, the table.
        // (The padding between sections holds nothing and is not checked.)
        std::fs::write(&path, &good).unwrap();
        let r = Container::open(&path).unwrap();
        let inside = |k: usize, at: u64| (r.buffer_location(k).unwrap().unwrap().0 + at) as usize;
        let positions = [
            9,
            20,
            45,
            64,
            70,
            inside(0, 0),
            inside(1, 50_000),
            inside(2, 99_999),
        ];
        drop(r);
        for at in positions.into_iter().chain([good.len() - 10]) {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            let result = Container::open(&path).and_then(|r| {
                r.objects()?;
                (0..r.buffer_count()).try_for_each(|k| r.buffer(k).map(drop))
            });
            match result {
                Err(PersistError::Damaged { offset, .. }) => assert!(offset < good.len() as u64),
                Err(PersistError::Version { found, .. }) => assert_ne!(found, VERSION),
                other => panic!("byte {at} flipped: {other:?}"),
            }
        }
        std::fs::write(&path, b"PK\x03\x04 a zip file").unwrap();
        assert!(matches!(
            Container::open(&path),
            Err(PersistError::NotAContainer { .. })
        ));
    }

    #[test]
    fn repaired_checksums_let_changed_bytes_through_to_the_next_checks() {
        let dir = Dir::new("persist-repair");
        let path = dir.0.join("r.joblet");
        let buffers = write_sample(&path, Compression::None);
        let mut bytes = std::fs::read(&path).unwrap();
        let r = Container::open(&path).unwrap();
        let (offset, _) = r.buffer_location(1).unwrap().unwrap();
        bytes[offset as usize] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(Container::open(&path).unwrap().buffer(1).is_err());
        __fuzz::repair_checksums(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let got = Container::open(&path).unwrap().buffer(1).unwrap();
        assert_eq!(got[0], buffers[1][0] ^ 0xff);
        assert_eq!(got[1..], buffers[1][1..]);
    }

    #[test]
    fn a_section_claiming_a_huge_size_is_an_error_not_an_abort() {
        let dir = Dir::new("persist-huge");
        let path = dir.0.join("h.joblet");
        write_sample(&path, Compression::Zstd(1));
        let mut bytes = std::fs::read(&path).unwrap();
        // The last section's raw length, in the table of contents, becomes 2^62 bytes.
        let toc = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
        let entry = toc + 4 + 3 * 40;
        bytes[entry + 24..entry + 32].copy_from_slice(&(1u64 << 62).to_le_bytes());
        __fuzz::repair_checksums(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let err = Container::open(&path)
            .unwrap()
            .buffer(2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("h.joblet"), "{err}");
    }

    /// Whether `address` lies in a mapping of `path`.
    fn mapped_from(address: usize, path: &Path) -> bool {
        crate::test_support::mapped_file(address).as_deref() == path.to_str()
    }

    #[test]
    fn buffers_are_sections_read_or_mapped_and_mapped_ones_copy_on_write() {
        use crate::Buffer;
        let dir = Dir::new("persist-buffers");
        let big: Buffer<f64> = (0..100_000).map(|i| i as f64 * 0.5).collect();
        let small = Buffer::from(vec![7u32; 10]);
        let value = (
            big.clone(),
            small.clone(),
            "tag".to_string(),
            vec![big.clone()],
        );
        for compression in [Compression::None, Compression::Zstd(3), Compression::Lz4] {
            let path = dir.0.join(format!("b.{}", compression.name()));
            dump(&value, &path, compression).unwrap();
            let c = Container::open(&path).unwrap();
            assert_eq!(
                c.buffer_count(),
                2,
                "the big buffer twice, the small one inline"
            );
            type V = (Buffer<f64>, Buffer<u32>, String, Vec<Buffer<f64>>);
            let read: V = load(&path).unwrap();
            assert!(read.0 == big && read.1 == small && read.3[0] == big);
            assert!(!mapped_from(read.0.as_ptr() as usize, &path));
            let mut mapped: V = load_mapped(&path).unwrap();
            assert!(mapped.0 == big && mapped.3[0] == big && mapped.2 == "tag");
            let in_file = mapped_from(mapped.0.as_ptr() as usize, &path);
            assert_eq!(in_file, compression == Compression::None, "{compression:?}");
            mapped.0[0] = -1.0;
            assert_eq!(mapped.0[0], -1.0);
            let again: V = load(&path).unwrap();
            assert_eq!(
                again.0[0], 0.0,
                "a write to a mapped buffer stays in memory"
            );
        }
        // A buffer read back as another element type of another size is refused.
        let path = dir.0.join("b.none");
        let err = load::<(Buffer<[u8; 3]>, Buffer<u32>, String, Vec<Buffer<f64>>)>(&path);
        assert!(err.is_err());
    }

    #[test]
    fn a_buffer_claiming_a_huge_size_is_an_error_not_an_abort() {
        use crate::Buffer;
        let dir = Dir::new("persist-huge-buffer");
        let path = dir.0.join("h.joblet");
        let value: Buffer<u64> = (0..20_000u64).collect();
        dump(&value, &path, Compression::Lz4).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let toc = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
        // The buffer's section (compressed, so read into new values) claims 2^50 bytes.
        let entry = toc + 4 + 40;
        let huge = 1u64 << 50;
        bytes[entry + 24..entry + 32].copy_from_slice(&huge.to_le_bytes());
        // The object stream says the same length (postcard: tag 1, index 0, then the length
        // as a varint).
        let mut stream = vec![1u8, 0];
        let mut n = huge;
        while n >= 0x80 {
            stream.push((n as u8) | 0x80);
            n >>= 7;
        }
        stream.push(n as u8);
        // Stored uncompressed in the room before the buffer's section.
        bytes[64..64 + stream.len()].copy_from_slice(&stream);
        let first = toc + 4;
        bytes[first + 1] = Compression::None.code();
        let n = (stream.len() as u64).to_le_bytes();
        bytes[first + 16..first + 24].copy_from_slice(&n);
        bytes[first + 24..first + 32].copy_from_slice(&n);
        __fuzz::repair_checksums(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        // An error (postcard keeps no text of it), where it was an abort.
        let err = load::<Buffer<u64>>(&path).unwrap_err().to_string();
        assert!(err.contains("h.joblet"), "{err}");
    }

    /// A file written by the version 1 writer (commit c0caf62) with `Compression::Zstd(3)`:
    /// the value of [`version_1_files_still_load`].
    const VERSION_1_ZSTD: &[u8] = include_bytes!("testdata/v1-zstd.joblet");

    #[test]
    fn version_1_files_still_load() {
        use crate::Buffer;
        let dir = Dir::new("persist-v1");
        let path = dir.0.join("v1.joblet");
        std::fs::write(&path, VERSION_1_ZSTD).unwrap();
        assert_eq!(Container::open(&path).unwrap().sections().1, 1);
        type V = (Buffer<f64>, Vec<Buffer<u32>>, String);
        let (floats, ints, text): V = load(&path).unwrap();
        assert!(floats
            .iter()
            .enumerate()
            .all(|(i, &x)| x == (i % 100) as f64 * 0.25));
        assert_eq!(floats.len(), 10_000);
        assert_eq!(ints.len(), 2);
        assert!(ints[0].iter().enumerate().all(|(i, &x)| x == i as u32 % 7));
        assert_eq!((ints[0].len(), &ints[1][..]), (20_000, &[3u32; 5][..]));
        assert_eq!(text, "written by container version 1");
        // An uncompressed file in version 1 (this writer's layout without chunks is
        // version 1's, byte for byte): mapped as before, and marked unchecked in place
        // without becoming version 2.
        let big: Buffer<f64> = (0..20_000).map(|i| i as f64).collect();
        dump(&big, &path, Compression::None).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        __fuzz::repair_checksums(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let mapped: Buffer<f64> = load_mapped(&path).unwrap();
        assert!(mapped == big && mapped_from(mapped.as_ptr() as usize, &path));
        Container::unchecked_for_writing(&path).unwrap();
        let c = Container::open(&path).unwrap();
        let (sections, version) = c.sections();
        assert!(!sections[1].checked);
        assert_eq!(version, 1, "rewritten in place, still version 1");
        // A version this code does not know is refused by its number.
        bytes[8..12].copy_from_slice(&(VERSION + 1).to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        let err = load::<Buffer<f64>>(&path).unwrap_err().to_string();
        assert!(err.contains("version 3") && err.contains("1 to 2"), "{err}");
    }

    #[test]
    fn an_unfinished_writer_leaves_nothing_and_serde_values_round_trip() {
        let dir = Dir::new("persist-serde");
        let path = dir.0.join("v.joblet");
        let w = Writer::create(&path, b"x", Compression::None).unwrap();
        assert_eq!(
            dir.entries().len(),
            1,
            "the temporary file exists while writing"
        );
        drop(w);
        assert!(dir.entries().is_empty(), "{:?}", dir.entries());
        let value = std::collections::BTreeMap::from([("a", vec![1u32, 2]), ("b", vec![])]);
        dump(&value, &path, Compression::Lz4).unwrap();
        let back: std::collections::BTreeMap<String, Vec<u32>> = load(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back["a"], vec![1, 2]);
        let err = load::<Vec<f64>>(&path).unwrap_err().to_string();
        assert!(err.contains("does not decode"), "{err}");
        let missing = load::<u32>(&dir.0.join("missing")).unwrap_err().to_string();
        assert!(missing.contains("missing"), "{missing}");
    }
}
