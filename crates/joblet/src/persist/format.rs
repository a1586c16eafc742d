//! The container's header and table of contents: fixed little-endian layouts, checked field
//! by field when read, every refusal naming the byte offset it is about.

use super::codec::Compression;
use xxhash_rust::xxh3::xxh3_64;

/// The first bytes of every container: a non-ASCII byte first (a file mangled as text shows),
/// then the name.
pub const MAGIC: [u8; 8] = *b"\x93JOBLET\n";
/// The version this code writes. Version 2 added chunked sections (`persist/chunks.rs`);
/// this code still reads version 1 files (which have none), while a joblet that knows only
/// version 1 refuses a version 2 file by its version instead of misreading its chunks.
pub const VERSION: u32 = 2;
/// The oldest version this code reads.
pub const OLDEST_VERSION: u32 = 1;
/// The header's size; sections start after it.
pub const HEADER_LEN: usize = 64;
/// Sections start at multiples of this, so that arrays mapped in place are aligned for any
/// element type (and for SIMD loads).
pub const ALIGN: u64 = 64;
/// One entry of the table of contents.
const ENTRY_LEN: usize = 40;
/// The flag of a section whose checksum no longer holds (see [`Section::checked`]).
const UNCHECKED: u8 = 1;
/// The flag of a section stored as independent chunks (see [`Section::chunked`]; version 2).
const CHUNKED: u8 = 2;

/// What a section holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The object stream (pickle, postcard...): exactly one, the first section.
    Objects,
    /// A raw buffer (an array's bytes) that the object stream refers to by position.
    Buffer,
}

/// Where a section is and how it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section {
    pub kind: Kind,
    pub compression: Compression,
    /// Byte offset of the stored bytes in the file (a multiple of [`ALIGN`]).
    pub offset: u64,
    /// Stored bytes (compressed, or the raw bytes).
    pub stored_len: u64,
    /// Bytes once decompressed.
    pub raw_len: u64,
    /// xxh3-64 of the stored bytes.
    pub checksum: u64,
    /// Whether the checksum still holds: false once the section was mapped writable in
    /// place (`mmap_mode="r+"`), after which its bytes are the user's to change.
    pub checked: bool,
    /// Whether the stored bytes are a chunk table and independently compressed chunks
    /// (`persist/chunks.rs`) rather than one compressed stream: compressed sections bigger
    /// than a chunk, from version 2 on.
    pub chunked: bool,
}

/// The header: the format's version, where the table of contents is, with checksums of
/// both.
pub struct Header {
    /// [`VERSION`] when written; when read, any version from [`OLDEST_VERSION`] on.
    pub version: u32,
    pub toc_offset: u64,
    pub toc_len: u64,
    pub toc_checksum: u64,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&self.version.to_le_bytes());
        // 12..16: flags, none defined.
        h[16..24].copy_from_slice(&self.toc_offset.to_le_bytes());
        h[24..32].copy_from_slice(&self.toc_len.to_le_bytes());
        h[32..40].copy_from_slice(&self.toc_checksum.to_le_bytes());
        let own = xxh3_64(&h[0..40]);
        h[40..48].copy_from_slice(&own.to_le_bytes());
        h
    }

    /// The header of a file of `file_len` bytes whose first bytes are `h`.
    pub fn decode(h: &[u8], file_len: u64) -> Result<Header, Refusal> {
        if h.len() < 8 || h[0..8] != MAGIC {
            return Err(Refusal::NotAContainer);
        }
        if h.len() < HEADER_LEN {
            return Err(Refusal::at(
                h.len() as u64,
                format!("the file ends inside its {HEADER_LEN}-byte header"),
            ));
        }
        let version = u32_at(h, 8);
        if !(OLDEST_VERSION..=VERSION).contains(&version) {
            return Err(Refusal::Version(version));
        }
        if xxh3_64(&h[0..40]) != u64_at(h, 40) {
            return Err(Refusal::at(
                40,
                "the header's checksum does not match it".into(),
            ));
        }
        let flags = u32_at(h, 12);
        if flags != 0 {
            return Err(Refusal::at(12, format!("unknown flags {flags:#x}")));
        }
        let header = Header {
            version,
            toc_offset: u64_at(h, 16),
            toc_len: u64_at(h, 24),
            toc_checksum: u64_at(h, 32),
        };
        let end = header.toc_offset.checked_add(header.toc_len);
        if header.toc_offset < HEADER_LEN as u64 || end.is_none_or(|e| e > file_len) {
            return Err(Refusal::at(
                16,
                format!(
                    "the table of contents ({} bytes at {}) is not inside the file ({file_len} \
                     bytes): truncated?",
                    header.toc_len, header.toc_offset
                ),
            ));
        }
        Ok(header)
    }
}

/// The table of contents for `sections`.
pub fn encode_toc(sections: &[Section]) -> Vec<u8> {
    let mut t = Vec::with_capacity(4 + sections.len() * ENTRY_LEN);
    t.extend_from_slice(&(sections.len() as u32).to_le_bytes());
    for s in sections {
        t.push(match s.kind {
            Kind::Objects => 0,
            Kind::Buffer => 1,
        });
        t.push(s.compression.code());
        t.push(if s.checked { 0 } else { UNCHECKED } | if s.chunked { CHUNKED } else { 0 });
        t.extend_from_slice(&[0u8; 5]);
        t.extend_from_slice(&s.offset.to_le_bytes());
        t.extend_from_slice(&s.stored_len.to_le_bytes());
        t.extend_from_slice(&s.raw_len.to_le_bytes());
        t.extend_from_slice(&s.checksum.to_le_bytes());
    }
    t
}

/// The sections listed by table of contents `t`, read at `header.toc_offset`.
pub fn decode_toc(t: &[u8], header: &Header) -> Result<Vec<Section>, Refusal> {
    let base = header.toc_offset;
    if xxh3_64(t) != header.toc_checksum {
        return Err(Refusal::at(
            base,
            "the table of contents does not match its checksum".into(),
        ));
    }
    if t.len() < 4 {
        return Err(Refusal::at(base, "the table of contents is empty".into()));
    }
    let count = u32_at(t, 0) as usize;
    if t.len() != 4 + count.saturating_mul(ENTRY_LEN) {
        return Err(Refusal::at(
            base,
            format!(
                "a table of contents of {} bytes cannot list {count} sections",
                t.len()
            ),
        ));
    }
    let mut sections = Vec::with_capacity(count);
    let mut end_of_previous = HEADER_LEN as u64;
    for i in 0..count {
        let e = &t[4 + i * ENTRY_LEN..4 + (i + 1) * ENTRY_LEN];
        let at = base + 4 + (i * ENTRY_LEN) as u64;
        let kind = match (i, e[0]) {
            (0, 0) => Kind::Objects,
            (1.., 1) => Kind::Buffer,
            (_, k) => {
                return Err(Refusal::at(
                    at,
                    format!("section {i} has kind {k}, which cannot come there"),
                ))
            }
        };
        let compression = Compression::from_code(e[1]).ok_or_else(|| {
            Refusal::at(
                at + 1,
                format!("section {i} has an unknown compressor code {}", e[1]),
            )
        })?;
        let known = if header.version >= 2 {
            UNCHECKED | CHUNKED
        } else {
            UNCHECKED
        };
        if e[2] & !known != 0 || e[3..8] != [0u8; 5] {
            return Err(Refusal::at(
                at + 2,
                format!(
                    "section {i} has flags unknown to version {}",
                    header.version
                ),
            ));
        }
        let chunked = e[2] & CHUNKED != 0;
        if chunked && compression == Compression::None {
            return Err(Refusal::at(
                at + 2,
                format!("section {i} is stored uncompressed but says it is chunked"),
            ));
        }
        let s = Section {
            kind,
            compression,
            offset: u64_at(e, 8),
            stored_len: u64_at(e, 16),
            raw_len: u64_at(e, 24),
            checksum: u64_at(e, 32),
            checked: e[2] & UNCHECKED == 0,
            chunked,
        };
        let end = s.offset.checked_add(s.stored_len);
        if s.offset < end_of_previous || end.is_none_or(|e| e > base) {
            return Err(Refusal::at(
                at + 8,
                format!(
                    "section {i} ({} bytes at {}) is not between the previous section and the \
                     table of contents",
                    s.stored_len, s.offset
                ),
            ));
        }
        if compression == Compression::None && s.raw_len != s.stored_len {
            return Err(Refusal::at(
                at + 24,
                format!(
                    "section {i} is stored uncompressed but says it holds {} bytes in {}",
                    s.raw_len, s.stored_len
                ),
            ));
        }
        end_of_previous = end.expect("checked above");
        sections.push(s);
    }
    if sections.is_empty() {
        return Err(Refusal::at(base, "no object stream".into()));
    }
    Ok(sections)
}

/// Makes the checksums of `file` (a container, perhaps damaged) true again, with the right
/// magic and a version this code reads (a version 1 file stays version 1), wherever its
/// header and table of contents point inside it: for the fuzzer, so that its inputs get
/// past the checksums to the checks behind them.
pub fn repair_checksums(file: &mut [u8]) {
    if file.len() < HEADER_LEN {
        return;
    }
    file[0..8].copy_from_slice(&MAGIC);
    if !(OLDEST_VERSION..=VERSION).contains(&u32_at(file, 8)) {
        file[8..12].copy_from_slice(&VERSION.to_le_bytes());
    }
    let toc_offset = u64_at(file, 16);
    let toc_len = u64_at(file, 24);
    let end = toc_offset.saturating_add(toc_len);
    if toc_offset >= HEADER_LEN as u64 && end <= file.len() as u64 && toc_len >= 4 {
        let (start, end) = (toc_offset as usize, end as usize);
        let count = u32_at(file, start) as usize;
        for i in 0..count {
            let at = start + 4 + i * ENTRY_LEN;
            if at + ENTRY_LEN > end {
                break;
            }
            let offset = u64_at(file, at + 8);
            let stored = u64_at(file, at + 16);
            let section_end = offset.saturating_add(stored);
            if section_end <= file.len() as u64 {
                let sum = xxh3_64(&file[offset as usize..section_end as usize]);
                file[at + 32..at + 40].copy_from_slice(&sum.to_le_bytes());
            }
        }
        let sum = xxh3_64(&file[start..end]);
        file[32..40].copy_from_slice(&sum.to_le_bytes());
    }
    let own = xxh3_64(&file[0..40]);
    file[40..48].copy_from_slice(&own.to_le_bytes());
}

/// Why a file is not read, before the path is known to the message.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    NotAContainer,
    Version(u32),
    Damaged { offset: u64, what: String },
}

impl Refusal {
    pub fn at(offset: u64, what: String) -> Refusal {
        Refusal::Damaged { offset, what }
    }
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(super) fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Header, Vec<u8>) {
        let sections = [
            Section {
                kind: Kind::Objects,
                compression: Compression::None,
                offset: 64,
                stored_len: 10,
                raw_len: 10,
                checksum: 1,
                checked: true,
                chunked: false,
            },
            Section {
                kind: Kind::Buffer,
                compression: Compression::Zstd(3),
                offset: 128,
                stored_len: 100,
                raw_len: 1000,
                checksum: 2,
                checked: false,
                chunked: true,
            },
        ];
        let toc = encode_toc(&sections);
        let header = Header {
            version: VERSION,
            toc_offset: 256,
            toc_len: toc.len() as u64,
            toc_checksum: xxh3_64(&toc),
        };
        (header, toc)
    }

    #[test]
    fn header_and_toc_round_trip() {
        let (header, toc) = sample();
        let bytes = header.encode();
        let back = Header::decode(&bytes, 256 + toc.len() as u64).unwrap();
        let sections = decode_toc(&toc, &back).unwrap();
        assert_eq!(sections.len(), 2);
        assert_eq!(sections[1].raw_len, 1000);
        assert_eq!(sections[1].compression.name(), "zstd");
        assert!(sections[0].checked && !sections[1].checked);
        assert!(!sections[0].chunked && sections[1].chunked);
    }

    #[test]
    fn version_1_is_read_without_chunks() {
        let (mut header, toc) = sample();
        let len = 256 + toc.len() as u64;
        header.version = 1;
        let back = Header::decode(&header.encode(), len).unwrap();
        assert_eq!(back.version, 1);
        // The chunked flag did not exist in version 1: there it is an unknown flag.
        assert!(matches!(
            decode_toc(&toc, &back),
            Err(Refusal::Damaged { offset, .. }) if offset == 256 + 4 + 40 + 2
        ));
        let mut unchunked = toc.clone();
        unchunked[4 + 40 + 2] &= !CHUNKED;
        header.toc_checksum = xxh3_64(&unchunked);
        let sections = decode_toc(&unchunked, &header).unwrap();
        assert!(!sections[1].chunked && !sections[1].checked);
        // A chunked section must be compressed.
        let (header, mut stored) = sample();
        stored[4 + 40 + 1] = Compression::None.code();
        let header = Header {
            toc_checksum: xxh3_64(&stored),
            ..header
        };
        let err = decode_toc(&stored, &header).unwrap_err();
        assert!(format!("{err:?}").contains("uncompressed"), "{err:?}");
    }

    #[test]
    fn every_damaged_field_is_refused_with_its_offset() {
        let (header, toc) = sample();
        let len = 256 + toc.len() as u64;
        let bytes = header.encode();
        assert_eq!(
            Header::decode(b"not a container", len).err(),
            Some(Refusal::NotAContainer)
        );
        assert!(matches!(
            Header::decode(&bytes[..20], len),
            Err(Refusal::Damaged { offset: 20, .. })
        ));
        for version in [0, VERSION + 1] {
            let mut other = bytes;
            other[8..12].copy_from_slice(&version.to_le_bytes());
            assert_eq!(
                Header::decode(&other, len).err(),
                Some(Refusal::Version(version))
            );
        }
        let mut flipped = bytes;
        flipped[20] ^= 1;
        assert!(matches!(
            Header::decode(&flipped, len),
            Err(Refusal::Damaged { offset: 40, .. })
        ));
        assert!(matches!(
            Header::decode(&bytes, len - 1),
            Err(Refusal::Damaged { offset: 16, .. })
        ));
        let mut t = toc.clone();
        t[4 + 40 + 1] = 99;
        assert!(matches!(
            decode_toc(&t, &header),
            Err(Refusal::Damaged { offset: 256, .. })
        ));
    }
}
