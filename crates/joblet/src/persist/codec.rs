//! The compressors of a container's sections: joblib's names (zlib, gzip, bz2, lzma, xz, lz4)
//! and zstd, each with a level, chosen by argument or by the file's extension.

use std::io::{self, Read, Write};
use std::path::Path;

/// How a section is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Stored as it is: an uncompressed array can be memory-mapped.
    None,
    /// zlib (deflate with a zlib header), level 0-9.
    Zlib(u32),
    /// gzip (deflate with a gzip header), level 0-9.
    Gzip(u32),
    /// bzip2, level 1-9.
    Bz2(u32),
    /// LZMA ("alone" format), level 0-9.
    Lzma(u32),
    /// xz, level 0-9.
    Xz(u32),
    /// LZ4 frames (one speed: levels are ignored).
    Lz4,
    /// zstd, level 1-22.
    Zstd(i32),
}

/// The names [`Compression::from_name`] knows, in joblib's order, then joblet's own.
pub const NAMES: [&str; 7] = ["zlib", "gzip", "bz2", "lzma", "xz", "lz4", "zstd"];

impl Compression {
    /// joblib's default when a level is given without a name.
    pub const DEFAULT_NAME: &'static str = "zlib";

    /// The compressor called `name` (one of [`NAMES`]) at `level` (0 means stored, as in
    /// joblib; levels above a compressor's maximum are refused).
    pub fn from_name(name: &str, level: u32) -> Result<Compression, String> {
        if level == 0 {
            return Ok(Compression::None);
        }
        let capped = |max: u32| {
            if level > max {
                Err(format!(
                    "compress level {level} is out of range for {name} (1 to {max})"
                ))
            } else {
                Ok(level)
            }
        };
        Ok(match name {
            "zlib" => Compression::Zlib(capped(9)?),
            "gzip" => Compression::Gzip(capped(9)?),
            "bz2" => Compression::Bz2(capped(9)?),
            "lzma" => Compression::Lzma(capped(9)?),
            "xz" => Compression::Xz(capped(9)?),
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd(capped(22)? as i32),
            other => {
                return Err(format!(
                    "unknown compressor {other:?}: expected one of {}",
                    NAMES.join(", ")
                ))
            }
        })
    }

    /// The compressor a file name asks for by its extension (`.z`, `.gz`, `.bz2`, `.lzma`,
    /// `.xz`, `.lz4`, `.zst`), at joblib's default level of 3, if any.
    pub fn from_extension(path: &Path) -> Option<Compression> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        let name = match ext.as_str() {
            "z" => "zlib",
            "gz" => "gzip",
            "bz2" => "bz2",
            "lzma" => "lzma",
            "xz" => "xz",
            "lz4" => "lz4",
            "zst" | "zstd" => "zstd",
            _ => return None,
        };
        Compression::from_name(name, 3).ok()
    }

    /// The name (`none` for stored).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zlib(_) => "zlib",
            Compression::Gzip(_) => "gzip",
            Compression::Bz2(_) => "bz2",
            Compression::Lzma(_) => "lzma",
            Compression::Xz(_) => "xz",
            Compression::Lz4 => "lz4",
            Compression::Zstd(_) => "zstd",
        }
    }

    /// The code stored in the table of contents.
    pub(crate) fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zlib(_) => 1,
            Compression::Gzip(_) => 2,
            Compression::Bz2(_) => 3,
            Compression::Lzma(_) => 4,
            Compression::Xz(_) => 5,
            Compression::Lz4 => 6,
            Compression::Zstd(_) => 7,
        }
    }

    /// The compressor of a stored code (its level does not matter to decompress).
    pub(crate) fn from_code(code: u8) -> Option<Compression> {
        Some(match code {
            0 => Compression::None,
            1 => Compression::Zlib(0),
            2 => Compression::Gzip(0),
            3 => Compression::Bz2(0),
            4 => Compression::Lzma(0),
            5 => Compression::Xz(0),
            6 => Compression::Lz4,
            7 => Compression::Zstd(0),
            _ => return None,
        })
    }

    /// `data` compressed, on this thread (big sections are compressed as chunks, in
    /// parallel: `persist/chunks.rs`).
    pub(crate) fn compress(self, data: &[u8]) -> io::Result<Vec<u8>> {
        let out = Vec::with_capacity(data.len() / 2 + 64);
        match self {
            Compression::None => Ok(data.to_vec()),
            Compression::Zlib(level) => {
                let mut e = flate2::write::ZlibEncoder::new(out, flate2::Compression::new(level));
                e.write_all(data)?;
                e.finish()
            }
            Compression::Gzip(level) => {
                let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::new(level));
                e.write_all(data)?;
                e.finish()
            }
            Compression::Bz2(level) => {
                let mut e = bzip2::write::BzEncoder::new(out, bzip2::Compression::new(level));
                e.write_all(data)?;
                e.finish()
            }
            Compression::Lzma(level) => {
                let options =
                    liblzma::stream::LzmaOptions::new_preset(level).map_err(io::Error::other)?;
                let stream = liblzma::stream::Stream::new_lzma_encoder(&options)
                    .map_err(io::Error::other)?;
                let mut e = liblzma::write::XzEncoder::new_stream(out, stream);
                e.write_all(data)?;
                e.finish()
            }
            Compression::Xz(level) => {
                let mut e = liblzma::write::XzEncoder::new(out, level);
                e.write_all(data)?;
                e.finish()
            }
            Compression::Lz4 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(out);
                e.write_all(data)?;
                e.finish().map_err(io::Error::other)
            }
            Compression::Zstd(level) => {
                let mut e = zstd::stream::write::Encoder::new(out, level)?;
                e.include_contentsize(true)?;
                e.set_pledged_src_size(Some(data.len() as u64))?;
                e.write_all(data)?;
                e.finish()
            }
        }
    }

    /// A streaming decoder of `data`. `members`: several concatenated streams, as joblib's
    /// gzip, bz2 and xz files may hold (a section is always one).
    fn decoder<'a>(self, data: &'a [u8], members: bool) -> io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(data),
            Compression::Zlib(_) => Box::new(flate2::read::ZlibDecoder::new(data)),
            Compression::Gzip(_) if members => Box::new(flate2::read::MultiGzDecoder::new(data)),
            Compression::Gzip(_) => Box::new(flate2::read::GzDecoder::new(data)),
            Compression::Bz2(_) if members => Box::new(bzip2::read::MultiBzDecoder::new(data)),
            Compression::Bz2(_) => Box::new(bzip2::read::BzDecoder::new(data)),
            Compression::Lzma(_) => {
                let stream = liblzma::stream::Stream::new_lzma_decoder(u64::MAX)
                    .map_err(io::Error::other)?;
                Box::new(liblzma::read::XzDecoder::new_stream(data, stream))
            }
            Compression::Xz(_) if members => {
                Box::new(liblzma::read::XzDecoder::new_multi_decoder(data))
            }
            Compression::Xz(_) => Box::new(liblzma::read::XzDecoder::new(data)),
            Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(data)),
            Compression::Zstd(_) => Box::new(zstd::stream::read::Decoder::with_buffer(data)?),
        })
    }

    /// All of `data` decompressed, however long (for streams that do not say: files written
    /// by joblib).
    pub fn decompress_all(self, data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(data.len().saturating_mul(2));
        self.decoder(data, true)?.read_to_end(&mut out)?;
        Ok(out)
    }

    /// `data` decompressed into `out`, which it must fill exactly; anything else is an error
    /// (damage). No intermediate buffer: `out` can be the caller's array.
    pub(crate) fn decompress_into(self, data: &[u8], out: &mut [u8]) -> io::Result<()> {
        let want = out.len();
        let wrong = |got: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} data decompressed to {got} bytes, not {want}",
                    self.name()
                ),
            )
        };
        match self {
            Compression::None if data.len() != out.len() => {
                return Err(wrong(&data.len().to_string()))
            }
            Compression::None => out.copy_from_slice(data),
            Compression::Zstd(_) => {
                let n = zstd::bulk::Decompressor::new()?.decompress_to_buffer(data, out)?;
                if n != out.len() {
                    return Err(wrong(&n.to_string()));
                }
            }
            _ => {
                let mut decoder = self.decoder(data, false)?;
                decoder.read_exact(out)?;
                // Nothing may follow.
                if decoder.read(&mut [0u8; 1])? != 0 {
                    return Err(wrong("more than"));
                }
            }
        }
        Ok(())
    }

    /// `data` decompressed into exactly `raw_len` bytes; anything else is an error (damage).
    pub(crate) fn decompress(self, data: &[u8], raw_len: usize) -> io::Result<Vec<u8>> {
        if let Compression::None = self {
            return Ok(data.to_vec());
        }
        // The length comes from the file, and a damaged one may claim any size: room is made
        // up front only for what the stored bytes could plausibly hold; beyond that the
        // output grows as data actually comes (and stops one byte past the claim).
        let plausible = data.len().saturating_mul(PLAUSIBLE_RATIO).max(1 << 20);
        let mut out = Vec::with_capacity(raw_len.min(plausible));
        if matches!(self, Compression::Zstd(_)) && raw_len <= plausible {
            // One call into the output (the streaming decoder copies through a buffer).
            zstd::bulk::Decompressor::new()?.decompress_to_buffer(data, &mut out)?;
        } else {
            // One byte more than expected must not fit: a longer stream is damage too.
            let limit = raw_len as u64 + 1;
            self.decoder(data, false)?
                .take(limit)
                .read_to_end(&mut out)?;
        }
        if out.len() != raw_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} data decompressed to {} bytes, not {raw_len}",
                    self.name(),
                    out.len()
                ),
            ));
        }
        Ok(out)
    }
}

/// Decompressed bytes per stored byte up to which room for a section is made at once (real
/// data is far below; zeros can exceed it, and then the output grows as it comes).
pub(super) const PLAUSIBLE_RATIO: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_compressor_round_trips_and_detects_a_wrong_length() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for name in NAMES {
            let c = Compression::from_name(name, 3).unwrap();
            assert_eq!(
                Compression::from_code(c.code()).map(|d| d.name()),
                Some(name)
            );
            let packed = c.compress(&data).unwrap();
            assert!(packed.len() < data.len(), "{name} did not compress");
            assert_eq!(c.decompress(&packed, data.len()).unwrap(), data, "{name}");
            assert!(
                c.decompress(&packed, data.len() - 1).is_err(),
                "{name}: longer"
            );
            assert!(
                c.decompress(&packed, data.len() + 1).is_err(),
                "{name}: shorter"
            );
            assert!(
                c.decompress(&packed[..packed.len() / 2], data.len())
                    .is_err(),
                "{name}"
            );
        }
    }

    #[test]
    fn names_levels_and_extensions() {
        assert_eq!(Compression::from_name("zlib", 0), Ok(Compression::None));
        assert_eq!(
            Compression::from_name("zstd", 19),
            Ok(Compression::Zstd(19))
        );
        let err = Compression::from_name("gzip", 10).unwrap_err();
        assert!(err.contains("level 10") && err.contains("gzip"), "{err}");
        let err = Compression::from_name("snappy", 3).unwrap_err();
        assert!(err.contains("snappy") && err.contains("zstd"), "{err}");
        let ext = |p: &str| Compression::from_extension(Path::new(p)).map(|c| c.name());
        assert_eq!(ext("a.pkl.gz"), Some("gzip"));
        assert_eq!(ext("a.Z"), Some("zlib"));
        assert_eq!(ext("a.zst"), Some("zstd"));
        assert_eq!(ext("a.pkl"), None);
    }
}
