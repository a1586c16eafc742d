//! Frames over a Unix socket, with big payloads moved through shared memory: a payload above
//! the threshold is written to a memfd whose descriptor travels with the frame header
//! (`SCM_RIGHTS`); the receiver maps it instead of reading it through the socket.
//!
//! A memfd has no name (nothing appears in `/dev/shm`) and the kernel frees it when the last
//! descriptor and mapping are gone, so a crash on either side cannot leak a segment.

use super::{parse_header, FrameError, Kind, FLAG_FDS, FLAG_SHARED, HEADER_LEN};
use crate::shm::{self, Access, Mapping};
use std::io::{self, Read, Write};
use std::ops::Deref;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

/// Below this size a payload is copied through the socket (joblib's `max_nbytes` default).
pub(crate) const DEFAULT_THRESHOLD: usize = 1 << 20;

/// A received payload: bytes read from the socket, or the first bytes of a mapping of the
/// sender's outbox.
pub(crate) enum Payload {
    Inline(Vec<u8>),
    Shared(Arc<Mapping>, usize),
}

impl Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Payload::Inline(v) => v,
            Payload::Shared(m, len) => &m.bytes()[..*len],
        }
    }
}

/// One end of a parent-worker connection.
pub(crate) struct Channel {
    stream: UnixStream,
    /// Bytes received so far, to say where a malformed frame starts.
    offset: u64,
    threshold: usize,
    /// The shared memory big messages are encoded into, kept from one message to the next.
    outbox: Option<Outbox>,
    /// The descriptors attached to the last frame received (see `attached.rs`).
    received: Vec<OwnedFd>,
    /// The peer's outbox as last mapped here, and its identity (device, inode).
    peer_outbox: Option<((u64, u64), Arc<Mapping>)>,
}

/// A memfd mapped writable in the sender, kept from one large message to the next.
///
/// Reusing it is sound because the protocol is strictly request/response: the receiver has
/// finished reading one message before the other side sends the next (the receiver keeps
/// its mapping of the memfd from one message to the next, and reads each message anew). The memfd is sealed against shrinking, so a receiver's mapping can
/// never lose its pages (no SIGBUS), whatever the sender does.
struct Outbox {
    map: Mapping,
    fd: OwnedFd,
}

/// Outboxes above this size are not kept after the message that needed them.
const KEEP_OUTBOX: usize = 256 << 20;

impl Outbox {
    /// The kept outbox if it has room for `len` bytes, else a new one that replaces it.
    fn with_room(kept: &mut Option<Outbox>, len: usize) -> io::Result<&mut Outbox> {
        if kept.as_ref().is_none_or(|o| o.map.len() < len) {
            *kept = None;
            // Round up, so that slowly growing messages do not remap every time.
            *kept = Some(Outbox::new(len.next_power_of_two())?);
        }
        Ok(kept.as_mut().expect("just made"))
    }

    fn new(capacity: usize) -> io::Result<Self> {
        let fd = shm::memfd(c"joblet-payload", capacity, true)?;
        let map = Mapping::new(&fd, capacity, Access::Shared)?;
        Ok(Outbox { map, fd })
    }
}

impl Channel {
    pub(crate) fn new(stream: UnixStream, threshold: usize) -> Self {
        Channel {
            stream,
            offset: 0,
            threshold,
            outbox: None,
            received: Vec::new(),
            peer_outbox: None,
        }
    }

    /// The descriptors attached to the last frame received, in order.
    pub(crate) fn take_attached(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.received)
    }

    /// Sends a payload of `len` bytes that `fill` writes in place: into the shared outbox when
    /// `len` is above the threshold, else into a buffer sent through the socket. An error of
    /// `fill` is returned as `InvalidData`, and nothing is sent.
    pub(crate) fn send_filled(
        &mut self,
        kind: Kind,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), String>,
    ) -> io::Result<()> {
        self.send_filled_with(kind, len, fill, &[])
    }

    /// [`Channel::send_filled`], with descriptors attached to the frame (`attached.rs`).
    pub(crate) fn send_filled_with(
        &mut self,
        kind: Kind,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), String>,
        attached: &[RawFd],
    ) -> io::Result<()> {
        let invalid = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
        let extra = if attached.is_empty() { 0 } else { FLAG_FDS };
        if len <= self.threshold {
            let mut payload = vec![0u8; len];
            fill(&mut payload).map_err(invalid)?;
            if attached.is_empty() {
                return super::write_frame(&mut self.stream, kind, &payload);
            }
            let mut frame = super::header(kind, extra, len)?.to_vec();
            frame.extend_from_slice(&payload);
            return send_with_fds(&self.stream, &frame, attached);
        }
        let outbox = Outbox::with_room(&mut self.outbox, len)?;
        fill(&mut outbox.map.bytes_mut()[..len]).map_err(invalid)?;
        let header = super::header(kind, FLAG_SHARED | extra, len)?;
        let mut fds = vec![outbox.fd.as_raw_fd()];
        fds.extend_from_slice(attached);
        let sent = send_with_fds(&self.stream, &header, &fds);
        if outbox.map.len() > KEEP_OUTBOX {
            self.outbox = None;
        }
        sent
    }

    /// Sends `message` encoded: inline when small, else encoded in place into the shared
    /// outbox (no intermediate buffer).
    pub(crate) fn send_message<T: serde::Serialize>(
        &mut self,
        kind: Kind,
        message: &T,
    ) -> io::Result<()> {
        let size = postcard::experimental::serialized_size(message).map_err(io::Error::other)?;
        self.send_filled(kind, size, |buf| {
            postcard::to_slice(message, buf)
                .map(|_| ())
                .map_err(|e| e.to_string())
        })
    }

    pub(crate) fn stream(&self) -> &UnixStream {
        &self.stream
    }

    pub(crate) fn set_threshold(&mut self, threshold: usize) {
        self.threshold = threshold;
    }

    /// Sends one small frame through the socket (the handshake).
    pub(crate) fn send(&mut self, kind: Kind, payload: &[u8]) -> io::Result<()> {
        super::write_frame(&mut self.stream, kind, payload)
    }

    /// Receives one frame.
    pub(crate) fn recv(&mut self) -> Result<(Kind, Payload), FrameError> {
        let start = self.offset;
        let mut header = [0u8; HEADER_LEN];
        let (got, mut fds) = recv_with_fds(&self.stream, &mut header).map_err(FrameError::Io)?;
        self.received.clear();
        if got == 0 {
            return Err(FrameError::Closed);
        }
        let got = got + read_full(&mut self.stream, &mut header[got..])?;
        self.offset += got as u64;
        let malformed = |what: String| FrameError::Malformed {
            offset: start,
            what,
        };
        if got < HEADER_LEN {
            return Err(malformed(format!(
                "truncated header ({got} of {HEADER_LEN} bytes)"
            )));
        }
        let (kind, flags, len) = parse_header(&header).map_err(malformed)?;
        let payload_fd = if flags & FLAG_SHARED != 0 && !fds.is_empty() {
            Some(fds.remove(0))
        } else {
            None
        };
        if (flags & FLAG_FDS != 0) == fds.is_empty() {
            return Err(malformed(format!(
                "{} attached descriptors for a frame whose header says {}",
                fds.len(),
                if flags & FLAG_FDS != 0 {
                    "some"
                } else {
                    "none"
                }
            )));
        }
        self.received = fds;
        if flags & FLAG_SHARED != 0 {
            let fd = payload_fd.ok_or_else(|| {
                malformed("a shared-memory frame came without its descriptor".into())
            })?;
            let mapping = self.map_peer_outbox(&fd, len as usize).map_err(|e| {
                malformed(format!("cannot map the shared payload of {len} bytes: {e}"))
            })?;
            return Ok((kind, Payload::Shared(mapping, len as usize)));
        }
        // Grown as bytes arrive: a lying length cannot make us allocate it up front.
        let mut payload = Vec::new();
        let done = (&mut self.stream)
            .take(u64::from(len))
            .read_to_end(&mut payload)
            .map_err(FrameError::Io)?;
        self.offset += done as u64;
        if done < len as usize {
            return Err(malformed(format!(
                "truncated payload ({done} of {len} bytes)"
            )));
        }
        Ok((kind, Payload::Inline(payload)))
    }
}

impl Channel {
    /// A mapping of the peer's outbox `fd`, holding at least `len` bytes: the one kept from
    /// an earlier frame when the peer still uses the same outbox (it keeps it from one
    /// message to the next), which saves mapping, faulting in and unmapping every page of
    /// every big message. Reading a kept mapping is sound for the same reason as reusing the
    /// outbox: a message has been read before the peer writes the next.
    fn map_peer_outbox(&mut self, fd: &OwnedFd, len: usize) -> io::Result<Arc<Mapping>> {
        let st = shm::stat(fd)?;
        let id = st.id;
        if let Some((kept, mapping)) = &self.peer_outbox {
            if *kept == id && mapping.len() >= len {
                // Maps what the last messages did not reach; quick where they did.
                mapping.populate(len);
                return Ok(Arc::clone(mapping));
            }
        }
        self.peer_outbox = None;
        let size = usize::try_from(st.size).unwrap_or(0);
        if size > KEEP_OUTBOX || size < len {
            // Not kept (or too short, which `Mapping::new` reports): this message only.
            return Ok(Arc::new(Mapping::new(fd, len, Access::ReadPopulated)?));
        }
        // All of it (the peer rounds its outbox up), so that the next, bigger messages fit;
        // only this message's pages are mapped now (reading the rest would make the kernel
        // allocate pages the peer never wrote).
        let mapping = Arc::new(Mapping::new(fd, size, Access::Read)?);
        mapping.populate(len);
        self.peer_outbox = Some((id, Arc::clone(&mapping)));
        Ok(mapping)
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full(stream: &mut UnixStream, buf: &mut [u8]) -> Result<usize, FrameError> {
    let mut done = 0;
    while done < buf.len() {
        match stream.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(done)
}

/// Sends `data` with descriptors attached (to its first bytes).
fn send_with_fds(stream: &UnixStream, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let fds_len = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fds_len as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: msghdr is plain data; all pointers set below point into live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the control buffer has room for one cmsg carrying these fds (CMSG_SPACE above).
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fds_len as u32) as _;
        let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
        for (i, &fd) in fds.iter().enumerate() {
            std::ptr::write_unaligned(data.add(i), fd);
        }
    }
    loop {
        // SAFETY: a valid socket and a fully initialized msghdr.
        let sent = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if sent >= 0 {
            if (sent as usize) < data.len() {
                // The descriptors went with the first bytes; the rest is plain data.
                let mut s = stream;
                s.write_all(&data[sent as usize..])?;
            }
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives into `buf`, and the descriptors that came with these bytes.
fn recv_with_fds(stream: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // Room for the payload's memfd and the most segments a frame may carry, and one more: a
    // peer sending more is refused below, not ignored into a leak (each one received is
    // owned and closed).
    let room = (super::attached::MAX_ATTACHED + 2) * std::mem::size_of::<RawFd>();
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(room as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: msghdr is plain data; all pointers set below point into live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let got = loop {
        // SAFETY: a valid socket and msghdr; MSG_CMSG_CLOEXEC keeps received fds from leaking
        // into programs we start.
        let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: walking the control buffer the kernel filled, with the CMSG_* accessors.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let n = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for i in 0..n {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 || fds.len() > super::attached::MAX_ATTACHED + 1 {
        return Err(io::Error::other(
            "the peer attached more descriptors than the protocol allows",
        ));
    }
    Ok((got, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Bytes;

    #[test]
    fn big_payloads_travel_through_shared_memory_and_small_ones_inline() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut tx, mut rx) = (Channel::new(a, 1024), Channel::new(b, 1024));
        let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let bigger: Vec<u8> = big.iter().chain(&big).copied().collect();
        tx.send_message(Kind::BatchDone, &Bytes(b"small")).unwrap();
        tx.send_message(Kind::RunBatch, &Bytes(&big)).unwrap();
        let (k, p) = rx.recv().unwrap();
        assert!(matches!(p, Payload::Inline(_)) && k == Kind::BatchDone);
        assert_eq!(super::super::decode::<Bytes>("", &p).unwrap().0, b"small");
        let (k, p) = rx.recv().unwrap();
        assert!(matches!(p, Payload::Shared(..)) && k == Kind::RunBatch);
        assert!(super::super::decode::<Bytes>("", &p).unwrap().0 == &big[..]);
        drop(p);
        // The outbox is reused (grown here) once the receiver is done with a message.
        tx.send_message(Kind::RunBatch, &Bytes(&bigger)).unwrap();
        let (_, p) = rx.recv().unwrap();
        assert!(super::super::decode::<Bytes>("", &p).unwrap().0 == &bigger[..]);
        tx.send(Kind::Hello, &[]).unwrap();
        let (k, p) = rx.recv().unwrap();
        assert!(k == Kind::Hello && p.is_empty());
        drop(tx);
        assert!(matches!(rx.recv(), Err(FrameError::Closed)));
    }

    #[test]
    fn attached_descriptors_travel_with_inline_and_shared_frames() {
        use crate::shm::{PrivateView, Segment};
        let (a, b) = UnixStream::pair().unwrap();
        let (mut tx, mut rx) = (Channel::new(a, 1024), Channel::new(b, 1024));
        let mut seg = Segment::new(10).unwrap();
        seg.bytes_mut()[..5].copy_from_slice(b"hello");
        for len in [16, 4096] {
            // Inline (under the threshold), then through the shared outbox.
            tx.send_filled_with(
                Kind::RunBatch,
                len,
                |b| {
                    b.fill(7);
                    Ok(())
                },
                &[seg.fd(), seg.fd()],
            )
            .unwrap();
            let (kind, payload) = rx.recv().unwrap();
            assert_eq!((kind, payload.len()), (Kind::RunBatch, len));
            assert!(payload.iter().all(|&b| b == 7));
            let fds = rx.take_attached();
            assert_eq!(fds.len(), 2);
            let view = PrivateView::map(fds.into_iter().next().unwrap(), 5).unwrap();
            // SAFETY: 5 mapped bytes.
            let bytes = unsafe { std::slice::from_raw_parts(view.as_ptr(), 5) };
            assert_eq!(bytes, b"hello");
        }
        // A frame without attachments leaves none from the one before.
        tx.send(Kind::Hello, &[]).unwrap();
        let _ = rx.recv().unwrap();
        assert!(rx.take_attached().is_empty());
    }

    #[test]
    fn attachments_and_the_header_must_agree() {
        let seg = crate::shm::Segment::new(10).unwrap();
        // Descriptors without the flag.
        let (a, b) = UnixStream::pair().unwrap();
        let frame = super::super::header(Kind::Hello, 0, 0).unwrap();
        send_with_fds(&a, &frame, &[seg.fd()]).unwrap();
        let mut rx = Channel::new(b, 1024);
        assert!(matches!(rx.recv(), Err(FrameError::Malformed { .. })));
        // The flag without descriptors.
        let (a, b) = UnixStream::pair().unwrap();
        let mut raw = a;
        raw.write_all(&super::super::header(Kind::Hello, FLAG_FDS, 0).unwrap())
            .unwrap();
        let mut rx = Channel::new(b, 1024);
        match rx.recv() {
            Err(FrameError::Malformed { what, .. }) => assert!(what.contains("attached"), "{what}"),
            other => panic!("{:?}", other.map(|(k, _)| k)),
        }
    }

    #[test]
    fn a_shared_frame_without_its_descriptor_is_malformed() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut raw = a;
        raw.write_all(&super::super::header(Kind::Hello, FLAG_SHARED, 10).unwrap())
            .unwrap();
        let mut rx = Channel::new(b, 1024);
        match rx.recv() {
            Err(FrameError::Malformed { offset: 0, what }) => {
                assert!(what.contains("without its descriptor"), "{what}")
            }
            other => panic!("{:?}", other.map(|(k, _)| k)),
        }
    }
}
