//! Reading a container: the header and table of contents are checked when it is opened;
//! each section is checked against its checksum when it is read, before it is decompressed
//! or handed out; a chunked section's chunks are decompressed in parallel.

use super::chunks::{self, Place, Table};
use super::codec::Compression;
use super::format::{decode_toc, encode_toc, Header, Kind, Refusal, Section, HEADER_LEN};
use super::PersistError;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use xxhash_rust::xxh3::xxh3_64;

/// An open container.
pub struct Container {
    file: File,
    path: PathBuf,
    sections: Vec<Section>,
    version: u32,
    toc_offset: u64,
}

impl Container {
    /// Opens the container at `path`, checking its header and table of contents.
    pub fn open(path: &Path) -> Result<Container, PersistError> {
        let file = File::open(path).map_err(|e| PersistError::io(path, e))?;
        let len = file
            .metadata()
            .map_err(|e| PersistError::io(path, e))?
            .len();
        let refused = |r: Refusal| PersistError::refused(path, r);
        let mut head = vec![0u8; HEADER_LEN.min(len as usize)];
        file.read_exact_at(&mut head, 0)
            .map_err(|e| PersistError::io(path, e))?;
        let header = Header::decode(&head, len).map_err(refused)?;
        let toc_len = usize::try_from(header.toc_len)
            .map_err(|_| refused(Refusal::at(24, "the table of contents is too big".into())))?;
        let mut toc = vec![0u8; toc_len];
        file.read_exact_at(&mut toc, header.toc_offset)
            .map_err(|e| PersistError::io(path, e))?;
        let sections = decode_toc(&toc, &header).map_err(refused)?;
        Ok(Container {
            file,
            path: path.to_path_buf(),
            sections,
            version: header.version,
            toc_offset: header.toc_offset,
        })
    }

    /// The open file.
    pub(crate) fn file(&self) -> &File {
        &self.file
    }

    /// The sections as the table of contents lists them, and the format's version.
    #[cfg(test)]
    pub(crate) fn sections(&self) -> (&[Section], u32) {
        (&self.sections, self.version)
    }

    /// How many buffers the container holds.
    pub fn buffer_count(&self) -> usize {
        self.sections.len() - 1
    }

    /// The object stream, checked and decompressed.
    pub fn objects(&self) -> Result<Vec<u8>, PersistError> {
        self.read(0)
    }

    /// Buffer `index`, checked and decompressed.
    pub fn buffer(&self, index: usize) -> Result<Vec<u8>, PersistError> {
        self.buffer_section(index)?;
        self.read(index + 1)
    }

    /// Buffer `index`'s size once decompressed.
    pub fn buffer_len(&self, index: usize) -> Result<u64, PersistError> {
        Ok(self.buffer_section(index)?.raw_len)
    }

    /// Reads buffer `index`, checked and decompressed, into `out`, which must be exactly
    /// [`Container::buffer_len`] bytes (the caller's array: no copy on the way).
    pub fn read_buffer_into(&self, index: usize, out: &mut [u8]) -> Result<(), PersistError> {
        let s = *self.buffer_section(index)?;
        let i = index + 1;
        if out.len() as u64 != s.raw_len {
            return Err(PersistError::Invalid {
                what: format!(
                    "{}: buffer {index} holds {} bytes, not {}",
                    self.path.display(),
                    s.raw_len,
                    out.len()
                ),
            });
        }
        if s.compression == Compression::None {
            self.file
                .read_exact_at(out, s.offset)
                .map_err(|e| PersistError::io(&self.path, e))?;
            return self.check(i, out);
        }
        let stored = self.stored(i)?;
        if s.chunked {
            let place = self.place(i);
            let table = Table::decode(&stored, s.raw_len, place).map_err(|r| self.refused(r))?;
            return chunks::decompress_into(s.compression, &stored, &table, out, place)
                .map_err(|r| self.refused(r));
        }
        s.compression
            .decompress_into(&stored, out)
            .map_err(|e| self.does_not_decompress(i, e))
    }

    /// Where buffer `index` lies in the file, as `(offset, len)`, when it is stored
    /// uncompressed (it can then be memory-mapped), else `None`.
    pub fn buffer_location(&self, index: usize) -> Result<Option<(u64, u64)>, PersistError> {
        let s = self.buffer_section(index)?;
        Ok((s.compression == Compression::None).then_some((s.offset, s.stored_len)))
    }

    /// Checks buffer `index` against its checksum without keeping it (for a buffer that is
    /// going to be memory-mapped).
    pub fn verify_buffer(&self, index: usize) -> Result<(), PersistError> {
        self.buffer_section(index)?;
        self.stored(index + 1).map(drop)
    }

    /// Marks the uncompressed buffers as no longer checked, in the file: for a caller about
    /// to map them writable in place (`mmap_mode="r+"`), whose writes would otherwise make
    /// every later load report damage. Rewrites the table of contents and the header only.
    pub fn unchecked_for_writing(path: &Path) -> Result<(), PersistError> {
        let mut container = Container::open(path)?;
        let mut changed = false;
        for s in container.sections.iter_mut().skip(1) {
            if s.compression == Compression::None && s.checked {
                s.checked = false;
                changed = true;
            }
        }
        if !changed {
            // Already so: no write (a concurrent reader never sees a half-rewritten file
            // after the first time).
            return Ok(());
        }
        let toc = encode_toc(&container.sections);
        let io = |e| PersistError::io(path, e);
        let header = Header {
            version: container.version,
            toc_offset: container.toc_offset,
            toc_len: toc.len() as u64,
            toc_checksum: xxh3_64(&toc),
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io)?;
        file.write_all_at(&toc, header.toc_offset).map_err(io)?;
        file.write_all_at(&header.encode(), 0).map_err(io)?;
        container.file = file;
        Ok(())
    }

    fn buffer_section(&self, index: usize) -> Result<&Section, PersistError> {
        self.sections
            .get(index + 1)
            .filter(|s| s.kind == Kind::Buffer)
            .ok_or_else(|| PersistError::Invalid {
                what: format!(
                    "{}: the object stream refers to buffer {index}, but the file holds {}",
                    self.path.display(),
                    self.buffer_count()
                ),
            })
    }

    /// Section `i`'s stored bytes, checked.
    fn stored(&self, i: usize) -> Result<Vec<u8>, PersistError> {
        let s = self.sections[i];
        let len = usize::try_from(s.stored_len)
            .map_err(|_| self.refused(Refusal::at(s.offset, "a section too big".into())))?;
        let bytes =
            read_at(&self.file, s.offset, len).map_err(|e| PersistError::io(&self.path, e))?;
        self.check(i, &bytes)?;
        Ok(bytes)
    }

    /// Checks section `i`'s stored bytes against its checksum.
    fn check(&self, i: usize, bytes: &[u8]) -> Result<(), PersistError> {
        let s = self.sections[i];
        if s.checked && xxh3_64(bytes) != s.checksum {
            return Err(self.refused(Refusal::at(
                s.offset,
                format!(
                    "section {i} ({} bytes) does not match its checksum",
                    s.stored_len
                ),
            )));
        }
        Ok(())
    }

    fn read(&self, i: usize) -> Result<Vec<u8>, PersistError> {
        let s = self.sections[i];
        let stored = self.stored(i)?;
        if s.compression == Compression::None {
            return Ok(stored);
        }
        if s.chunked {
            let place = self.place(i);
            let table = Table::decode(&stored, s.raw_len, place).map_err(|r| self.refused(r))?;
            return chunks::decompress(s.compression, &stored, &table, place)
                .map_err(|r| self.refused(r));
        }
        let raw_len = usize::try_from(s.raw_len).unwrap_or(usize::MAX);
        s.compression
            .decompress(&stored, raw_len)
            .map_err(|e| self.does_not_decompress(i, e))
    }

    fn place(&self, i: usize) -> Place {
        Place {
            section: i,
            offset: self.sections[i].offset,
        }
    }

    fn refused(&self, refusal: Refusal) -> PersistError {
        PersistError::refused(&self.path, refusal)
    }

    fn does_not_decompress(&self, i: usize, e: std::io::Error) -> PersistError {
        self.refused(Refusal::at(
            self.sections[i].offset,
            format!("section {i} does not decompress: {e}"),
        ))
    }
}

/// `len` bytes of `file` from `offset`, read into memory that is not zeroed first (zeroing
/// a big buffer is one more pass over it than the read itself).
fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut bytes: Vec<u8> = Vec::with_capacity(len);
    let mut done = 0usize;
    while done < len {
        // SAFETY: the kernel writes at most `len - done` bytes into the vector's spare
        // capacity, starting `done` bytes in; no reference to those bytes exists meanwhile.
        let got = unsafe {
            libc::pread(
                file.as_raw_fd(),
                bytes.as_mut_ptr().add(done).cast(),
                len - done,
                (offset + done as u64) as libc::off_t,
            )
        };
        match got {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n if n > 0 => done += n as usize,
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    // SAFETY: the first `len` bytes were all written by the reads above.
    unsafe { bytes.set_len(len) };
    Ok(bytes)
}
