//! Writing a container: sections appended to a temporary file beside the target, then the
//! table of contents and the header, then one rename, so that a reader (or a crash) never
//! sees half a file under the target's name.

use super::chunks::{self, CHUNK_LEN};
use super::codec::Compression;
use super::format::{encode_toc, Header, Kind, Section, ALIGN, HEADER_LEN, VERSION};
use super::PersistError;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use xxhash_rust::xxh3::{xxh3_64, Xxh3Default};

/// A container being written. Dropped without [`Writer::finish`], it leaves nothing behind.
pub struct Writer {
    file: Option<File>,
    temporary: PathBuf,
    target: PathBuf,
    position: u64,
    sections: Vec<Section>,
    /// Compressed sections of more raw bytes than this are stored as chunks of this many.
    chunk_len: usize,
}

impl Writer {
    /// Starts a container that [`Writer::finish`] puts at `path`, with its object stream
    /// (`objects`, compressed with `compression`) as the first section.
    pub fn create(
        path: &Path,
        objects: &[u8],
        compression: Compression,
    ) -> Result<Writer, PersistError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = path.file_name().ok_or_else(|| PersistError::Invalid {
            what: format!("{} does not name a file", path.display()),
        })?;
        let mut temporary_name = std::ffi::OsString::from(".");
        temporary_name.push(name);
        temporary_name.push(format!(
            ".joblet-tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let temporary = path.with_file_name(temporary_name);
        let file = File::create(&temporary).map_err(|e| PersistError::io(&temporary, e))?;
        let mut writer = Writer {
            file: Some(file),
            temporary,
            target: path.to_path_buf(),
            position: 0,
            sections: Vec::new(),
            chunk_len: CHUNK_LEN,
        };
        writer.write(&[0u8; HEADER_LEN])?;
        writer.section(Kind::Objects, objects, compression)?;
        Ok(writer)
    }

    /// Chunks of `chunk_len` raw bytes for the sections written from now on (the tests' and
    /// fuzz seeds' small chunks).
    #[cfg(test)]
    pub(crate) fn set_chunk_len(&mut self, chunk_len: usize) {
        self.chunk_len = chunk_len;
    }

    /// Appends a buffer and returns its position among the buffers (0 for the first).
    pub fn buffer(
        &mut self,
        bytes: &[u8],
        compression: Compression,
    ) -> Result<usize, PersistError> {
        self.section(Kind::Buffer, bytes, compression)?;
        Ok(self.sections.len() - 2)
    }

    fn section(
        &mut self,
        kind: Kind,
        bytes: &[u8],
        compression: Compression,
    ) -> Result<(), PersistError> {
        // Big uncompressed buffers start on a page, so that they can be mapped where they
        // lie; everything else on 64 bytes.
        let align = if kind == Kind::Buffer
            && compression == Compression::None
            && bytes.len() >= super::values::SECTION_MIN
        {
            crate::shm::page_size() as u64
        } else {
            ALIGN
        };
        let padding = self.position.next_multiple_of(align) - self.position;
        self.write(&vec![0u8; padding as usize])?;
        let offset = self.position;
        let failed = |e| PersistError::io(&self.temporary, e);
        // Big compressed sections as chunks, so that they decompress in parallel.
        let chunked = compression != Compression::None && bytes.len() > self.chunk_len;
        let checksum = if chunked {
            let stored = chunks::compress(compression, bytes, self.chunk_len).map_err(failed)?;
            let mut checksum = Xxh3Default::new();
            for part in stored.parts() {
                checksum.update(part);
                self.write(part)?;
            }
            checksum.digest()
        } else if compression == Compression::None {
            self.write(bytes)?;
            xxh3_64(bytes)
        } else {
            let packed = compression.compress(bytes).map_err(failed)?;
            self.write(&packed)?;
            xxh3_64(&packed)
        };
        self.sections.push(Section {
            kind,
            compression,
            offset,
            stored_len: self.position - offset,
            raw_len: bytes.len() as u64,
            checksum,
            checked: true,
            chunked,
        });
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), PersistError> {
        let file = self.file.as_mut().expect("open until finished");
        file.write_all(bytes)
            .map_err(|e| PersistError::io(&self.temporary, e))?;
        self.position += bytes.len() as u64;
        Ok(())
    }

    /// Writes the table of contents and the header, and puts the file in place.
    pub fn finish(mut self) -> Result<(), PersistError> {
        let toc = encode_toc(&self.sections);
        let header = Header {
            version: VERSION,
            toc_offset: self.position,
            toc_len: toc.len() as u64,
            toc_checksum: xxh3_64(&toc),
        };
        self.write(&toc)?;
        let file = self.file.as_mut().expect("open until finished");
        let written = file
            .seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&header.encode()));
        written.map_err(|e| PersistError::io(&self.temporary, e))?;
        // Closed first: then the rename is the last step, and a failed rename removes the
        // temporary file here.
        drop(self.file.take());
        std::fs::rename(&self.temporary, &self.target).map_err(|e| {
            let _ = std::fs::remove_file(&self.temporary);
            PersistError::io(&self.target, e)
        })
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Not finished (an error, a panic): the temporary file goes.
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}
