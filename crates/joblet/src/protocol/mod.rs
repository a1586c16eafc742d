//! The wire protocol between a parent and its worker processes. See `README.md` here.

pub(crate) mod attached;
mod channel;

pub(crate) use channel::{Channel, DEFAULT_THRESHOLD};

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::{self, Write};

/// The first bytes of every frame.
pub(crate) const MAGIC: [u8; 4] = *b"JBLT";
/// Bumped on any incompatible change to frames or messages.
pub(crate) const VERSION: u16 = 2;
/// The largest payload a frame may announce. Larger messages are refused, not allocated:
/// a corrupted length can never make the reader allocate gigabytes.
pub(crate) const MAX_PAYLOAD: u32 = 1 << 30;

const HEADER_LEN: usize = 12;
/// Header flag: the payload is not in the stream but in the memfd sent with the header.
pub(crate) const FLAG_SHARED: u8 = 1;
/// Header flag: more descriptors came with the header (after the payload's memfd, if any):
/// shared-memory segments that the message refers to by their position (see `attached.rs`).
pub(crate) const FLAG_FDS: u8 = 2;

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

/// Checks a frame header; returns its kind, flags and payload length, or what is wrong.
pub(crate) fn parse_header(header: &[u8; HEADER_LEN]) -> Result<(Kind, u8, u32), String> {
    if header[0..4] != MAGIC {
        return Err(format!("bad magic {:?}", &header[0..4]));
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != VERSION {
        return Err(format!("protocol version {version}, expected {VERSION}"));
    }
    let kind =
        Kind::from_u8(header[6]).ok_or_else(|| format!("unknown frame kind {}", header[6]))?;
    let flags = header[7];
    if flags & !(FLAG_SHARED | FLAG_FDS) != 0 {
        return Err(format!("unknown flags {flags:#04x}"));
    }
    let len = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if len > MAX_PAYLOAD {
        return Err(format!(
            "payload of {len} bytes exceeds the limit of {MAX_PAYLOAD}"
        ));
    }
    Ok((kind, flags, len))
}

/// A frame header.
pub(crate) fn header(kind: Kind, flags: u8, len: usize) -> io::Result<[u8; HEADER_LEN]> {
    let len = u32::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_PAYLOAD)
        .ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "frame payload over the limit")
        })?;
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[6] = kind as u8;
    h[7] = flags;
    h[8..12].copy_from_slice(&len.to_le_bytes());
    Ok(h)
}

/// Writes one frame (header and payload in one write where possible).
pub(crate) fn write_frame(w: &mut impl Write, kind: Kind, payload: &[u8]) -> io::Result<()> {
    let header = header(kind, 0, payload.len())?;
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.extend_from_slice(&header);
    frame.extend_from_slice(payload);
    w.write_all(&frame)?;
    w.flush()
}

/// The worker's first message: it runs, and speaks this protocol.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub(crate) pid: u32,
}

/// The head of a `RunBatch` frame: run tasks `first ..`, each naming a function of
/// `functions` (a batch usually calls one function: its name travels once). The tasks'
/// encoded arguments follow the head in the frame, back to back, `len` bytes each: the parent
/// encodes them straight into the frame (shared memory for big batches), and the worker's
/// functions decode them from there, with no copy in between.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BatchHead<'a> {
    /// Payloads above this many bytes go through shared memory (the answer too).
    pub(crate) max_nbytes: u64,
    #[serde(borrow)]
    pub(crate) functions: Vec<&'a str>,
    pub(crate) first: u64,
    pub(crate) tasks: Vec<TaskHead>,
}

/// One task of a batch: which function, and how long its encoded arguments are.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct TaskHead {
    pub(crate) function: u32,
    pub(crate) len: u64,
}

/// Reads a `RunBatch` payload back: its head, and each task's argument bytes.
pub(crate) fn split_batch(payload: &[u8]) -> Result<(BatchHead<'_>, Vec<&[u8]>), FrameError> {
    let malformed = |what: String| FrameError::Malformed { offset: 0, what };
    let (head, mut rest): (BatchHead, &[u8]) = postcard::take_from_bytes(payload)
        .map_err(|e| malformed(format!("undecodable RunBatch head: {e}")))?;
    let mut args = Vec::with_capacity(head.tasks.len());
    for (i, task) in head.tasks.iter().enumerate() {
        let len = usize::try_from(task.len).unwrap_or(usize::MAX);
        if len > rest.len() {
            return Err(malformed(format!(
                "task {i} of the batch announces {len} bytes of arguments, {} are left",
                rest.len()
            )));
        }
        let (this, tail) = rest.split_at(len);
        args.push(this);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(malformed(format!(
            "{} bytes after the last task's arguments",
            rest.len()
        )));
    }
    Ok((head, args))
}

/// The results of a batch: the encoded values of its first tasks, and how it ended.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BatchDone<'a> {
    #[serde(borrow)]
    pub(crate) values: Vec<Bytes<'a>>,
    #[serde(borrow)]
    pub(crate) end: BatchEnd<'a>,
}

/// Encoded bytes inside a message: one length and the bytes, borrowed when decoded.
#[derive(Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Bytes<'a>(#[serde(with = "serde_bytes")] pub(crate) &'a [u8]);

/// How a batch ended in the worker; failures are about the task after the last value.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum BatchEnd<'a> {
    Complete,
    /// The task returned `Err`; its encoded error.
    Error(#[serde(borrow)] Bytes<'a>),
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
    use std::os::unix::net::UnixStream;

    fn frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        write_frame(&mut v, kind, payload).unwrap();
        v
    }

    /// A channel reading `bytes`, as if a peer had written them.
    fn reading(bytes: &[u8]) -> Channel {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(bytes).unwrap();
        drop(a);
        Channel::new(b, DEFAULT_THRESHOLD)
    }

    #[test]
    fn frames_round_trip() {
        let mut bytes = frame(Kind::Hello, b"abc");
        bytes.extend(frame(Kind::BatchDone, &[]));
        let mut r = reading(&bytes);
        let (k, p) = r.recv().unwrap();
        assert_eq!((k, &*p), (Kind::Hello, &b"abc"[..]));
        let (k, p) = r.recv().unwrap();
        assert_eq!((k, p.len()), (Kind::BatchDone, 0));
        assert!(matches!(r.recv(), Err(FrameError::Closed)));
    }

    #[test]
    fn garbage_is_reported_with_its_offset() {
        let good = frame(Kind::Hello, b"abc");
        let check = |bytes: Vec<u8>, expect: &str| {
            let mut r = reading(&bytes);
            let _ = r.recv().unwrap();
            match r.recv() {
                Err(FrameError::Malformed { offset, what }) => {
                    assert_eq!(offset, good.len() as u64);
                    assert!(what.contains(expect), "{what}");
                }
                other => panic!("{:?}", other.map(|(k, _)| k)),
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
        let mut flags = good.clone();
        let mut f = frame(Kind::Hello, b"");
        f[7] = 0x80;
        flags.extend(f);
        check(flags, "unknown flags");
    }

    #[test]
    fn undecodable_messages_are_errors_not_panics() {
        let e = decode::<BatchDone>("BatchDone", &[0xff, 0xff, 0xff]).unwrap_err();
        assert!(
            e.to_string().contains("undecodable BatchDone message"),
            "{e}"
        );
        let e = split_batch(&[0xff, 0xff, 0xff]).unwrap_err();
        assert!(e.to_string().contains("undecodable RunBatch head"), "{e}");
    }

    #[test]
    fn a_batch_is_a_head_then_each_tasks_arguments() {
        let head = BatchHead {
            max_nbytes: 0,
            functions: vec!["f"],
            first: 0,
            tasks: vec![
                TaskHead {
                    function: 0,
                    len: 4,
                },
                TaskHead {
                    function: 0,
                    len: 6,
                },
            ],
        };
        let mut payload = encode(&head);
        payload.extend([1, 2, 3, 4, 5, 6]);
        let e = split_batch(&payload).unwrap_err();
        assert!(
            e.to_string()
                .contains("task 1 of the batch announces 6 bytes"),
            "{e}"
        );
        payload.extend([7, 8, 9, 10]);
        let (head, args) = split_batch(&payload).unwrap();
        assert_eq!(head.functions, vec!["f"]);
        assert_eq!(args, vec![&[1u8, 2, 3, 4][..], &[5, 6, 7, 8, 9, 10][..]]);
        payload.push(0);
        assert!(split_batch(&payload)
            .unwrap_err()
            .to_string()
            .contains("1 bytes after"));
    }
}
