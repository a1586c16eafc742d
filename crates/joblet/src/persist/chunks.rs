//! Big compressed sections as independent chunks, compressed and decompressed in parallel.
//!
//! One compressed stream decodes on one thread: a 1 GB array at zstd's default level took
//! 0.85 s to load on the 2-core VM, all of it one thread in zstd's decoder (zstdmt shared
//! the compression between threads but wrote one frame, whose decoding is serial). So a
//! compressed section of more than [`CHUNK_LEN`] raw bytes is cut into chunks of that many
//! bytes, each compressed alone with the section's compressor; rayon compresses them at
//! dump and decompresses them at load, each chunk straight into its own slice of the
//! output. Every compressor is chunked, not only zstd.
//!
//! ```text
//!  stored bytes of a chunked section (flag CHUNKED in its table-of-contents entry)
//!  +0         chunk count n (u32), then 4 zero bytes
//!  +8         raw chunk size c (u64): every chunk decompresses to c bytes but the last,
//!             which holds the rest (1 to c bytes): n = ceil(raw length / c)
//!  +16        each chunk's stored length (n x u64)
//!  +16 + 8n   chunk 0, chunk 1, ..., chunk n-1, back to back: each a whole stream of the
//!             section's compressor; their stored lengths add up to the rest of the section
//! ```
//!
//! The table is part of the section's stored bytes, so the section's checksum covers it. It
//! is checked against the section (count, sizes, lengths) before anything is decompressed,
//! and each chunk must decompress to exactly its length: damage is a refusal naming the
//! byte offset, and no allocation is sized by the table alone.
//!
//! The output does not depend on the number of threads: each chunk is compressed alone,
//! single-threaded, and the chunks are written in order.

use super::codec::{Compression, PLAUSIBLE_RATIO};
use super::format::{u32_at, u64_at, Refusal};
use rayon::prelude::*;
use std::io;
use std::ops::Range;

/// Raw bytes per chunk, and the size above which a compressed section is chunked.
///
/// 4 MiB, because both ends of the trade hold there. Enough chunks to share: a 64 MiB array
/// is 16 chunks (a chunk for each core of a 16-core machine), a 1 GB one 256, so rayon's
/// work stealing ends with at most one chunk (a few milliseconds) on the last thread. Big
/// enough that what a chunk costs on its own vanishes: about 3 ms of zstd decoding at level
/// 3 against a decoder context, a rayon task, 8 bytes of table and a frame header each.
/// And a chunk with the output it writes stays within a core's share of the caches while
/// it is decoded (zstd level 3 refers back at most 2 MiB, inside the chunk). Ratios on the
/// bench's data (smooth values at 3 decimals) at 4 MiB against one stream: zstd 3 18.45 and
/// 17.84 (no loss: zstd's parameters suit a 4 MiB input better), xz 3 43.5 against 44.1
/// (-1.3 %), zlib, bz2 and lz4 unchanged; zstd 2 loses most, 23.8 against 25.3 (-6 %;
/// 8 MiB chunks would lose 3.5 % but halve the chunks a medium array is shared in).
pub(crate) const CHUNK_LEN: usize = 4 << 20;

/// The raw chunk sizes a reader takes: below, a table would be mostly lengths; above, a
/// chunk is no longer a piece of work for one thread (and the room made for one chunk at a
/// time when a section's claimed size is implausible, below, stays bounded).
const MIN_CHUNK_LEN: u64 = 4 << 10;
const MAX_CHUNK_LEN: u64 = 64 << 20;

/// The fixed part of the chunk table (count, four zero bytes, chunk size).
const TABLE_HEAD: usize = 16;

/// Raw bytes made room for at a time when a section claims more than its stored bytes
/// plausibly hold (see [`decompress`]).
const GROWTH: usize = 64 << 20;

/// A section's bytes compressed as chunks: its stored bytes are the table, then the chunks.
pub(crate) struct Chunked {
    table: Vec<u8>,
    chunks: Vec<Vec<u8>>,
}

impl Chunked {
    /// The stored bytes, in order.
    pub(crate) fn parts(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(&self.table[..]).chain(self.chunks.iter().map(|c| &c[..]))
    }
}

/// `data` compressed by `codec` as chunks of `chunk_len` raw bytes, in parallel.
pub(crate) fn compress(codec: Compression, data: &[u8], chunk_len: usize) -> io::Result<Chunked> {
    debug_assert!((MIN_CHUNK_LEN..=MAX_CHUNK_LEN).contains(&(chunk_len as u64)));
    let chunks = data
        .par_chunks(chunk_len)
        .map(|chunk| codec.compress(chunk))
        .collect::<io::Result<Vec<_>>>()?;
    let count = u32::try_from(chunks.len())
        .map_err(|_| io::Error::other(format!("{} chunks: too many", chunks.len())))?;
    let mut table = Vec::with_capacity(TABLE_HEAD + 8 * chunks.len());
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&[0u8; 4]);
    table.extend_from_slice(&(chunk_len as u64).to_le_bytes());
    for c in &chunks {
        table.extend_from_slice(&(c.len() as u64).to_le_bytes());
    }
    Ok(Chunked { table, chunks })
}

/// A chunked section's table, checked against the section: where each chunk is.
pub(crate) struct Table {
    /// Raw bytes per chunk (the last holds the rest).
    chunk_len: usize,
    /// Raw bytes of the section.
    raw_len: usize,
    /// Each chunk's stored bytes, as a range of the section's stored bytes.
    chunks: Vec<Range<usize>>,
}

/// Which section is being read, for the refusals: its number and its offset in the file.
#[derive(Clone, Copy)]
pub(crate) struct Place {
    pub section: usize,
    pub offset: u64,
}

impl Place {
    fn refuse(self, at: usize, what: String) -> Refusal {
        Refusal::at(
            self.offset + at as u64,
            format!("section {}: {what}", self.section),
        )
    }
}

impl Table {
    /// The chunk table at the start of `stored`, the stored bytes of a section that holds
    /// `raw_len` bytes once decompressed.
    pub(crate) fn decode(stored: &[u8], raw_len: u64, place: Place) -> Result<Table, Refusal> {
        if stored.len() < TABLE_HEAD {
            return Err(place.refuse(
                0,
                format!(
                    "its {} stored bytes end inside its chunk table",
                    stored.len()
                ),
            ));
        }
        let count = u32_at(stored, 0) as usize;
        if u32_at(stored, 4) != 0 {
            return Err(place.refuse(4, "its chunk table has unknown flags".into()));
        }
        let chunk_len = u64_at(stored, 8);
        if !(MIN_CHUNK_LEN..=MAX_CHUNK_LEN).contains(&chunk_len) {
            return Err(place.refuse(
                8,
                format!(
                    "chunks of {chunk_len} bytes (a chunk holds {MIN_CHUNK_LEN} to \
                     {MAX_CHUNK_LEN})"
                ),
            ));
        }
        if raw_len == 0 || count as u64 != raw_len.div_ceil(chunk_len) {
            return Err(place.refuse(
                0,
                format!("{count} chunks of {chunk_len} bytes cannot hold its {raw_len} bytes"),
            ));
        }
        // The lengths must fit in the section: this bounds the table by the stored bytes,
        // which were read (and so exist) already.
        if count > (stored.len() - TABLE_HEAD) / 8 {
            return Err(place.refuse(
                0,
                format!(
                    "a chunk table of {count} chunks does not fit in its {} stored bytes",
                    stored.len()
                ),
            ));
        }
        let lengths_end = TABLE_HEAD + 8 * count;
        let mut chunks = Vec::with_capacity(count);
        let mut start = lengths_end;
        for k in 0..count {
            let at = TABLE_HEAD + 8 * k;
            let len = u64_at(stored, at);
            let end = (start as u64)
                .checked_add(len)
                .filter(|&end| end <= stored.len() as u64)
                .ok_or_else(|| {
                    place.refuse(
                        at,
                        format!(
                            "chunk {k} ({len} bytes from byte {start} of the section) ends past \
                             its {} stored bytes",
                            stored.len()
                        ),
                    )
                })? as usize;
            chunks.push(start..end);
            start = end;
        }
        if start != stored.len() {
            return Err(place.refuse(
                lengths_end,
                format!(
                    "its chunks hold {} bytes, where {} follow its chunk table",
                    start - lengths_end,
                    stored.len() - lengths_end
                ),
            ));
        }
        Ok(Table {
            chunk_len: chunk_len as usize,
            raw_len: raw_len as usize,
            chunks,
        })
    }
}

/// Decompresses the chunks of `stored` that `table` lists into `out`, which must be
/// exactly the section's raw length (the caller's array: no copy on the way), in parallel.
pub(crate) fn decompress_into(
    codec: Compression,
    stored: &[u8],
    table: &Table,
    out: &mut [u8],
    place: Place,
) -> Result<(), Refusal> {
    assert_eq!(out.len(), table.raw_len, "the caller checks the length");
    decode_chunks(codec, stored, table, 0, out, place)
}

/// The section decompressed into new memory. Room for all of it is made at once when the
/// stored bytes plausibly hold that much (as for an unchunked section); else (a damaged
/// table, or data that compresses beyond [`PLAUSIBLE_RATIO`], such as zeros) the output
/// grows by [`GROWTH`] bytes of chunks at a time, each step only once the one before
/// decoded, so that memory follows the data, not the claim.
pub(crate) fn decompress(
    codec: Compression,
    stored: &[u8],
    table: &Table,
    place: Place,
) -> Result<Vec<u8>, Refusal> {
    decompress_growing(codec, stored, table, place, GROWTH)
}

fn decompress_growing(
    codec: Compression,
    stored: &[u8],
    table: &Table,
    place: Place,
    growth: usize,
) -> Result<Vec<u8>, Refusal> {
    let plausible = stored.len().saturating_mul(PLAUSIBLE_RATIO).max(1 << 20);
    if table.raw_len <= plausible {
        let mut out = vec![0u8; table.raw_len];
        decompress_into(codec, stored, table, &mut out, place)?;
        return Ok(out);
    }
    let per_step = (growth / table.chunk_len).max(1);
    let mut out = Vec::new();
    for first in (0..table.chunks.len()).step_by(per_step) {
        let start = first * table.chunk_len;
        let end = (start + per_step * table.chunk_len).min(table.raw_len);
        out.try_reserve(end - start).map_err(|e| {
            place.refuse(
                0,
                format!("cannot make room for {} bytes: {e}", table.raw_len),
            )
        })?;
        out.resize(end, 0);
        decode_chunks(codec, stored, table, first, &mut out[start..], place)?;
    }
    Ok(out)
}

/// Decompresses chunks `first..` of `table` into `out` (their raw bytes, from chunk
/// `first`'s), one rayon task per chunk, each into its own slice.
fn decode_chunks(
    codec: Compression,
    stored: &[u8],
    table: &Table,
    first: usize,
    out: &mut [u8],
    place: Place,
) -> Result<(), Refusal> {
    let count = table.chunks.len();
    out.par_chunks_mut(table.chunk_len)
        .zip(table.chunks[first..].par_iter())
        .enumerate()
        .try_for_each(|(k, (out, range))| {
            codec
                .decompress_into(&stored[range.clone()], out)
                .map_err(|e| {
                    place.refuse(
                        range.start,
                        format!("chunk {} of {count} does not decompress: {e}", first + k),
                    )
                })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::codec::NAMES;
    use crate::persist::format::Section;
    use crate::persist::{__fuzz::repair_checksums, Container, PersistError, Writer};
    use crate::test_support::TempDir as Dir;
    use std::path::Path;

    /// Small chunks for the tests (the logic does not depend on the size; debug builds of
    /// the pure-Rust compressors are slow).
    const C: usize = 64 << 10;

    /// Bytes that every compressor compresses, but not to nothing.
    fn data(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| ((i / 7) as u8) ^ ((i % 13) as u8).wrapping_mul(31))
            .collect()
    }

    /// A container of one small object stream and `buffers`, in chunks of `chunk_len`.
    fn write(path: &Path, buffers: &[&[u8]], c: Compression, chunk_len: usize) {
        let mut w = Writer::create(path, b"objects", c).unwrap();
        w.set_chunk_len(chunk_len);
        for b in buffers {
            w.buffer(b, c).unwrap();
        }
        w.finish().unwrap();
    }

    fn section(path: &Path, i: usize) -> Section {
        Container::open(path).unwrap().sections().0[i]
    }

    /// Buffer `k` read both ways (into new memory, into the caller's), which must agree.
    fn read_both(path: &Path, k: usize) -> Result<Vec<u8>, PersistError> {
        let r = Container::open(path)?;
        let mut into = vec![0u8; r.buffer_len(k)? as usize];
        let read_into = r.read_buffer_into(k, &mut into);
        let read = r.buffer(k);
        match (read_into, read) {
            (Ok(()), Ok(v)) => {
                assert!(v == into, "the two reads differ");
                Ok(v)
            }
            (Err(e), Err(_)) => Err(e),
            (a, b) => panic!("one read failed, not the other: {a:?} / {:?}", b.map(drop)),
        }
    }

    #[test]
    fn every_compressor_round_trips_around_the_chunk_size() {
        let dir = Dir::new("chunks-round");
        let sizes = [C - 1, C, C + 1, 2 * C, 3 * C + 1234];
        let all: Vec<Vec<u8>> = sizes.iter().map(|&n| data(n)).collect();
        let buffers: Vec<&[u8]> = all.iter().map(|b| &b[..]).collect();
        for name in NAMES {
            let c = Compression::from_name(name, 3).unwrap();
            let path = dir.0.join(format!("round.{name}"));
            write(&path, &buffers, c, C);
            for (k, b) in all.iter().enumerate() {
                let s = section(&path, k + 1);
                assert_eq!(s.chunked, b.len() > C, "{name}: {} bytes", b.len());
                assert_eq!(
                    read_both(&path, k).unwrap(),
                    *b,
                    "{name}: {} bytes",
                    b.len()
                );
            }
            // The stored size of a chunked section: its table, then its chunks.
            let s = section(&path, 5);
            let stored = std::fs::read(&path).unwrap()
                [s.offset as usize..(s.offset + s.stored_len) as usize]
                .to_vec();
            assert_eq!(u32_at(&stored, 0), 4, "{name}: 3 chunks and a ragged one");
            assert_eq!(u64_at(&stored, 8), C as u64);
        }
        // Uncompressed sections are never chunked (they are mapped in place).
        let path = dir.0.join("round.none");
        write(&path, &buffers, Compression::None, C);
        assert!(!section(&path, 5).chunked);
        assert_eq!(read_both(&path, 4).unwrap(), all[4]);
    }

    #[test]
    fn sections_above_the_real_chunk_size_are_chunks_objects_too() {
        use crate::persist::{dump, load};
        use crate::Buffer;
        let dir = Dir::new("chunks-real");
        // The object stream (a Vec, encoded inline) and a Buffer (a section of its own),
        // each just above the chunk size, then one just below and one of exactly 2 chunks.
        let inline: Vec<u8> = data(CHUNK_LEN + 100);
        let above = Buffer::from(data(CHUNK_LEN + 1));
        let below = Buffer::from(data(CHUNK_LEN));
        let two = Buffer::from(data(2 * CHUNK_LEN));
        let value = (inline, above, below, two);
        for c in [Compression::Zstd(3), Compression::Lz4] {
            let path = dir.0.join(format!("real.{}", c.name()));
            dump(&value, &path, c).unwrap();
            let r = Container::open(&path).unwrap();
            let chunked: Vec<bool> = r.sections().0.iter().map(|s| s.chunked).collect();
            assert_eq!(chunked, [true, true, false, true], "{c:?}");
            type V = (Vec<u8>, Buffer<u8>, Buffer<u8>, Buffer<u8>);
            let back: V = load(&path).unwrap();
            assert!(back == value, "{c:?}");
        }
    }

    #[test]
    fn the_bytes_written_do_not_depend_on_the_thread_count() {
        let dir = Dir::new("chunks-threads");
        let big = data(20 * C + 77);
        let write_on = |threads: usize, c: Compression| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let path = dir.0.join(format!("t{threads}.{}", c.name()));
            pool.install(|| write(&path, &[&big, &big[..3 * C]], c, C));
            std::fs::read(&path).unwrap()
        };
        for c in [
            Compression::Zstd(3),
            Compression::Gzip(6),
            Compression::Xz(1),
        ] {
            let one = write_on(1, c);
            let four = write_on(4, c);
            assert!(one == four, "{c:?}: 1 and 4 threads wrote different bytes");
            let path = dir.0.join(format!("t4.{}", c.name()));
            assert_eq!(read_both(&path, 0).unwrap(), big);
        }
    }

    /// The container of [`damage_cases`]: one chunked buffer of 3 chunks and a ragged one.
    fn chunked_file(path: &Path) -> (Vec<u8>, Section) {
        write(path, &[&data(3 * C + 1234)], Compression::Zstd(3), C);
        (std::fs::read(path).unwrap(), section(path, 1))
    }

    #[test]
    fn damaged_chunk_tables_are_refused_with_an_offset() {
        let dir = Dir::new("chunks-damage");
        let path = dir.0.join("d.joblet");
        let (good, s) = chunked_file(&path);
        let at = s.offset as usize;
        let end = s.offset + s.stored_len;
        let lengths: Vec<u64> = (0..4).map(|k| u64_at(&good, at + 16 + 8 * k)).collect();
        let set = |bytes: &mut Vec<u8>, field: usize, value: &[u8]| {
            bytes[at + field..at + field + value.len()].copy_from_slice(value);
        };
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        for (what, field, value) in [
            ("one chunk more", 0, 5u32.to_le_bytes().to_vec()),
            ("one chunk less", 0, 3u32.to_le_bytes().to_vec()),
            ("no chunks", 0, 0u32.to_le_bytes().to_vec()),
            ("a huge count", 0, u32::MAX.to_le_bytes().to_vec()),
            ("flags", 4, 1u32.to_le_bytes().to_vec()),
            ("chunk size 0", 8, 0u64.to_le_bytes().to_vec()),
            ("chunk size 1 TiB", 8, (1u64 << 40).to_le_bytes().to_vec()),
            ("chunk size 4095", 8, 4095u64.to_le_bytes().to_vec()),
            // Still 4 chunks, but chunk 0 decompresses to C bytes, not C + 1.
            ("chunk size C + 1", 8, (C as u64 + 1).to_le_bytes().to_vec()),
            ("a length + 1", 16, (lengths[0] + 1).to_le_bytes().to_vec()),
            ("a length - 1", 24, (lengths[1] - 1).to_le_bytes().to_vec()),
            ("a length 2^64 - 1", 32, u64::MAX.to_le_bytes().to_vec()),
            ("last length 0", 40, 0u64.to_le_bytes().to_vec()),
        ] {
            let mut bad = good.clone();
            set(&mut bad, field, &value);
            cases.push((what, bad));
        }
        // Two lengths swapped: they add up, but the chunks are cut in the wrong places.
        let mut swapped = good.clone();
        set(&mut swapped, 16, &lengths[3].to_le_bytes());
        set(&mut swapped, 40, &lengths[0].to_le_bytes());
        cases.push(("lengths swapped", swapped));
        // Chunk 2's frame header changed (its checksum repaired; a changed literal would
        // decode, to other bytes, which only the checksum catches): it does not decompress.
        let mut inside = good.clone();
        let chunk2 = at + 16 + 32 + (lengths[0] + lengths[1]) as usize;
        inside[chunk2] ^= 0x55;
        cases.push(("a chunk's bytes", inside));
        // The section cut short (in the table of contents): it ends inside its table.
        let toc = u64_at(&good, 16) as usize;
        for stored_len in [10u64, 40] {
            let mut short = good.clone();
            short[toc + 4 + 40 + 16..toc + 4 + 40 + 24].copy_from_slice(&stored_len.to_le_bytes());
            cases.push(("the section cut short", short));
        }
        // The flag cleared: the table is read as a zstd stream.
        let mut unflagged = good.clone();
        unflagged[toc + 4 + 40 + 2] = 0;
        cases.push(("the flag cleared", unflagged));
        for (what, mut bad) in cases {
            repair_checksums(&mut bad);
            std::fs::write(&path, &bad).unwrap();
            match read_both(&path, 0) {
                Err(PersistError::Damaged {
                    offset, what: why, ..
                }) => {
                    assert!(
                        (s.offset..end).contains(&offset),
                        "{what}: offset {offset} outside the section ({}..{end}): {why}",
                        s.offset
                    );
                    assert!(why.contains("section 1"), "{what}: {why}");
                }
                other => panic!("{what}: {:?}", other.map(|v| v.len())),
            }
        }
        // The flag set on a section that is one stream: refused too.
        let plain = dir.0.join("plain.joblet");
        write(&plain, &[&data(C)], Compression::Zstd(3), C);
        let mut bytes = std::fs::read(&plain).unwrap();
        let toc = u64_at(&bytes, 16) as usize;
        bytes[toc + 4 + 40 + 2] = 2;
        repair_checksums(&mut bytes);
        std::fs::write(&plain, &bytes).unwrap();
        let err = read_both(&plain, 0).unwrap_err().to_string();
        assert!(
            err.contains("plain.joblet") && err.contains("byte"),
            "{err}"
        );
        // Unchanged, it still reads.
        std::fs::write(&path, &good).unwrap();
        assert_eq!(read_both(&path, 0).unwrap(), data(3 * C + 1234));
    }

    #[test]
    fn a_chunked_section_claiming_a_huge_size_is_an_error_not_an_abort() {
        let dir = Dir::new("chunks-huge");
        let path = dir.0.join("h.joblet");
        let (mut bytes, s) = chunked_file(&path);
        let toc = u64_at(&bytes, 16) as usize;
        let at = s.offset as usize;
        // The table agrees with the claim: 2^20 chunks of 64 MiB (64 TiB), but has room
        // for 4 lengths only.
        let claim = 1u64 << 46;
        bytes[toc + 4 + 40 + 24..toc + 4 + 40 + 32].copy_from_slice(&claim.to_le_bytes());
        bytes[at..at + 4].copy_from_slice(&(1u32 << 20).to_le_bytes());
        bytes[at + 8..at + 16].copy_from_slice(&MAX_CHUNK_LEN.to_le_bytes());
        repair_checksums(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let r = Container::open(&path).unwrap();
        let err = r.buffer(0).unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
        // A claim the table can hold: 4 chunks of 64 MiB. Room is made 64 MiB at a time
        // as chunks decode, and the first does not.
        bytes[at..at + 4].copy_from_slice(&4u32.to_le_bytes());
        let claim = 4 * MAX_CHUNK_LEN;
        bytes[toc + 4 + 40 + 24..toc + 4 + 40 + 32].copy_from_slice(&claim.to_le_bytes());
        repair_checksums(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
        let err = Container::open(&path).unwrap().buffer(0).unwrap_err();
        assert!(err.to_string().contains("chunk 0 of 4"), "{err}");
    }

    #[test]
    fn data_beyond_the_plausible_ratio_grows_step_by_step() {
        // Zeros compress far beyond PLAUSIBLE_RATIO: room is made a few chunks at a time.
        let zeros = vec![0u8; 40 * C + 5];
        let codec = Compression::Zstd(3);
        let chunked = compress(codec, &zeros, C).unwrap();
        let stored: Vec<u8> = chunked.parts().flatten().copied().collect();
        assert!(stored.len() * PLAUSIBLE_RATIO < zeros.len().max(1 << 20) * 2);
        let place = Place {
            section: 1,
            offset: 64,
        };
        let table = Table::decode(&stored, zeros.len() as u64, place).unwrap();
        for growth in [1, C, 3 * C, GROWTH] {
            let out = decompress_growing(codec, &stored, &table, place, growth).unwrap();
            assert!(out == zeros, "growth {growth}");
        }
        let mut out = vec![1u8; zeros.len()];
        decompress_into(codec, &stored, &table, &mut out, place).unwrap();
        assert!(out == zeros);
    }

    /// Writes the fuzz target's chunked seeds into `$JOBLET_FUZZ_SEEDS` (a folder):
    /// `JOBLET_FUZZ_SEEDS=$PWD/crates/joblet/fuzz/corpus/container_reader cargo test -p
    /// joblet --lib chunked_fuzz_seeds -- --ignored`. Small chunks (4 KiB), so that a seed
    /// holds several and stays small.
    #[test]
    #[ignore]
    fn chunked_fuzz_seeds() {
        use crate::persist::values;
        use crate::Buffer;
        let dir = std::path::PathBuf::from(std::env::var("JOBLET_FUZZ_SEEDS").unwrap());
        let scratch = Dir::new("chunks-seeds");
        let small = MIN_CHUNK_LEN as usize;
        // The fuzz target's typed value, (Buffer<u8>, Vec<Buffer<f64>>, String), its
        // buffers sections of their own, chunked.
        let bytes: Buffer<u8> = (0..17 * small + 300)
            .map(|i| (i % 97) as u8 ^ (i / small) as u8)
            .collect();
        let floats: Buffer<f64> = (0..9000).map(|i| (i % 50) as f64 * 0.5).collect();
        let value = (bytes, vec![floats], "chunked".to_string());
        for c in ["zstd", "lz4", "zlib", "xz"] {
            let c = Compression::from_name(c, 3).unwrap();
            let path = scratch.0.join("seed.joblet");
            values::stashing(
                || postcard::to_stdvec(&value).unwrap(),
                |stream, buffers| {
                    let mut w = Writer::create(&path, &stream, c).unwrap();
                    w.set_chunk_len(small);
                    for b in buffers {
                        w.buffer(b, c).unwrap();
                    }
                    w.finish().unwrap();
                },
            );
            assert!(section(&path, 1).chunked && section(&path, 2).chunked);
            let file = std::fs::read(&path).unwrap();
            for mode in [0u8, 1] {
                let mut seed = vec![mode];
                seed.extend_from_slice(&file);
                let name = format!("chunked-{}-m{mode}", c.name());
                std::fs::write(dir.join(name), &seed).unwrap();
            }
        }
    }
}
