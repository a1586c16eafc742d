//! The wire protocol between a parent and its worker processes. See `README.md` here.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{self, Read, Write};

/// The first bytes of every frame.
pub(crate) const MAGIC: [u8; 4] = *b"JBLT";
/// Bumped on any incompatible change to frames or messages.
pub(crate) const VERSION: u16 = 1;
/// The largest payload a frame may announce. Larger messages are refused, not allocated:
/// a corrupted length can never make the reader allocate gigabytes.
pub(crate) const MAX_PAYLOAD: u32 = 1 << 30;

const HEADER_LEN: usize = 12;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// worker → parent, once, first: [`Hello`].
    Hello = 1,
    /// parent → worker: [`RunBatch`].
    RunBatch = 2,
    /// worker → parent: [`BatchDone`].
    BatchDone = 3,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::RunBatch,
            3 => Kind::BatchDone,
            _ => return None,
        })
    }
}

/// A frame that could not be read: what was wrong, where in the stream.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The peer closed the stream between frames.
    Closed,
    Io(io::Error),
    /// The bytes are not a frame of this protocol.
    Malformed {
        offset: u64,
        what: String,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Closed => f.write_str("the stream was closed"),
            FrameError::Io(e) => write!(f, "i/o error: {e}"),
            FrameError::Malformed { offset, what } => {
                write!(f, "malformed frame at byte {offset}: {what}")
            }
        }
    }
}

/// Reads frames from a byte stream, counting bytes so that errors can say where they are.
pub(crate) struct FrameReader<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> FrameReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        FrameReader { inner, offset: 0 }
    }

    pub(crate) fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The next frame's kind and payload.
    pub(crate) fn read(&mut self) -> Result<(Kind, Vec<u8>), FrameError> {
        let start = self.offset;
        let mut header = [0u8; HEADER_LEN];
        let got = read_full(&mut self.inner, &mut header).map_err(FrameError::Io)?;
        self.offset += got as u64;
        if got == 0 {
            return Err(FrameError::Closed);
        }
        let malformed = |what: String| FrameError::Malformed {
            offset: start,
            what,
        };
        if got < HEADER_LEN {
            return Err(malformed(format!(
                "truncated header ({got} of {HEADER_LEN} bytes)"
            )));
        }
        if header[0..4] != MAGIC {
            return Err(malformed(format!("bad magic {:?}", &header[0..4])));
        }
        let version = u16::from_le_bytes([header[4], header[5]]);
        if version != VERSION {
            return Err(malformed(format!(
                "protocol version {version}, expected {VERSION}"
            )));
        }
        let kind = Kind::from_u8(header[6])
            .ok_or_else(|| malformed(format!("unknown frame kind {}", header[6])))?;
        let len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if len > MAX_PAYLOAD {
            return Err(malformed(format!(
                "payload of {len} bytes exceeds the limit of {MAX_PAYLOAD}"
            )));
        }
        let mut payload = vec![0u8; len as usize];
        let got = read_full(&mut self.inner, &mut payload).map_err(FrameError::Io)?;
        self.offset += got as u64;
        if got < payload.len() {
            return Err(malformed(format!(
                "truncated payload ({got} of {len} bytes)"
            )));
        }
        Ok((kind, payload))
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match r.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Writes one frame (header and payload in one write where possible).
pub(crate) fn write_frame(w: &mut impl Write, kind: Kind, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| l <= MAX_PAYLOAD)
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "frame payload over the limit")
        })?;
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&VERSION.to_le_bytes());
    frame.push(kind as u8);
    frame.push(0);
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(payload);
    w.write_all(&frame)?;
    w.flush()
}

/// The worker's first message: it runs, and speaks this protocol.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub(crate) pid: u32,
}

/// Run tasks `first ..`: each names a function of `functions` and carries its encoded
/// arguments. (A batch usually calls one function: its name travels once.)
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RunBatch {
    pub(crate) functions: Vec<String>,
    pub(crate) first: u64,
    pub(crate) tasks: Vec<(u32, Vec<u8>)>,
}

/// The results of a batch: the encoded values of its first tasks, and how it ended.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BatchDone {
    pub(crate) values: Vec<Vec<u8>>,
    pub(crate) end: BatchEnd,
}

/// How a batch ended in the worker; failures are about the task after the last value.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum BatchEnd {
    Complete,
    /// The task returned `Err`; its encoded error.
    Error(Vec<u8>),
    Panic(String),
    /// The worker could not run the task (unknown function, undecodable arguments, an
    /// unencodable result): a bug or a mismatch between parent and worker, not the task's.
    Broken(String),
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // The protocol's own messages contain only strings, numbers and byte vectors, which
    // postcard always encodes.
    postcard::to_stdvec(value).expect("protocol messages always encode")
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(kind: &str, bytes: &'a [u8]) -> Result<T, FrameError> {
    postcard::from_bytes(bytes).map_err(|e| FrameError::Malformed {
        offset: 0,
        what: format!("undecodable {kind} message: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        write_frame(&mut v, kind, payload).unwrap();
        v
    }

    #[test]
    fn frames_round_trip() {
        let mut bytes = frame(Kind::Hello, b"abc");
        bytes.extend(frame(Kind::BatchDone, &[]));
        let mut r = FrameReader::new(&bytes[..]);
        assert_eq!(r.read().unwrap(), (Kind::Hello, b"abc".to_vec()));
        assert_eq!(r.read().unwrap(), (Kind::BatchDone, vec![]));
        assert!(matches!(r.read(), Err(FrameError::Closed)));
    }

    #[test]
    fn garbage_is_reported_with_its_offset() {
        let good = frame(Kind::Hello, b"abc");
        let check = |bytes: Vec<u8>, expect: &str| {
            let mut r = FrameReader::new(&bytes[..]);
            let _ = r.read().unwrap();
            match r.read() {
                Err(FrameError::Malformed { offset, what }) => {
                    assert_eq!(offset, good.len() as u64);
                    assert!(what.contains(expect), "{what}");
                }
                other => panic!("{other:?}"),
            }
        };
        let mut truncated = good.clone();
        truncated.extend(&frame(Kind::Hello, b"abcdef")[..15]);
        check(truncated, "truncated payload (3 of 6 bytes)");
        let mut short = good.clone();
        short.extend(&MAGIC[..3]);
        check(short, "truncated header");
        let mut oversized = good.clone();
        let mut f = frame(Kind::Hello, b"");
        f[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        oversized.extend(f);
        check(oversized, "exceeds the limit");
        let mut version = good.clone();
        let mut f = frame(Kind::Hello, b"");
        f[4] = 99;
        version.extend(f);
        check(version, "protocol version 99");
        let mut magic = good.clone();
        magic.extend(b"HTTP/1.1 200 OK\r\n");
        check(magic, "bad magic");
        let mut kind = good.clone();
        let mut f = frame(Kind::Hello, b"");
        f[6] = 77;
        kind.extend(f);
        check(kind, "unknown frame kind 77");
    }
}
