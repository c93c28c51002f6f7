//! The adapter between an SSH session channel and russh-sftp.
//!
//! russh-sftp 3.0 runs over any byte stream, and russh 0.65 offers `Channel::into_stream()`. Used
//! directly, that pair has two defects (reproduced, see `shared/notes/crates.md`):
//!
//! 1. **Flow-control deadlock.** russh-sftp answers one request at a time and blocks while a
//!    response waits for the client's window. Meanwhile the client keeps sending requests; russh's
//!    per-channel queue (100 messages) fills and russh's connection loop blocks delivering into it —
//!    so it never reads the client's WINDOW_ADJUST that would unblock the response. paramiko's
//!    `getfo` of 64 MiB hangs this way.
//! 2. **Stream desync.** russh-sftp logs an over-long packet but doesn't skip it, then parses the
//!    packet's body as a stream of packets (one 300,000-byte packet drew 75,000 bogus replies).
//!
//! The fix here keeps russh's connection loop always able to make progress and only ever hands
//! russh-sftp whole, well-formed frames:
//!
//! - a **pump** task drains the channel's read half as fast as russh delivers, checks the SFTP
//!   framing (4-byte big-endian length, `0 < length <= max_packet_len`) and queues whole frames in
//!   a queue capped in *bytes* by a semaphore ([`TransportConfig::queue_bytes`]);
//! - a **writer** task owns the channel's write half and copies russh-sftp's responses from an
//!   in-memory pipe (a bounded `tokio::io::duplex`) to the channel, waiting for the client's window without holding up the pump;
//! - russh-sftp gets a stream made of the frame queue (read) and the pipe (write).
//!
//! A framing violation is logged, nothing of the bad frame is forwarded, the frames still queued
//! are discarded, russh-sftp sees end-of-stream and the channel is closed (EOF + CLOSE). The rest
//! of the SSH connection is unaffected.
//!
//! A third defect of the same family: a request russh-sftp can't parse (truncated fields, an
//! unknown or server-side packet type) is answered by russh-sftp with request id **0**, so the
//! client never gets an answer to its own id and waits forever (paramiko) or aborts ("ID
//! mismatch", OpenSSH). The pump therefore checks each request the way russh-sftp will parse it
//! and answers a bad one itself — `SSH_FX_BAD_MESSAGE` (or `SSH_FX_OP_UNSUPPORTED` for an unknown
//! type) with the client's id — in request order; a packet too short to hold an id is a violation.
//! Paths that are not UTF-8 are refused the same way: russh-sftp would silently replace the bad
//! bytes with U+FFFD, so `caf\xe9` and `caf\xe8` (Latin-1 names) would be the same document.
//!
//! The transport is attached when the channel is opened, before any subsystem is requested, so
//! that a channel which never becomes an SFTP session (a refused shell or exec) is still drained
//! and can't stall the connection; such a channel may queue at most
//! [`TransportConfig::pre_start_bytes`] before it is closed.

use super::SftpError;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, warn};

/// Tuning of the channel adapter. The defaults suit every client tested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// The largest SFTP packet accepted from a client, as its length field counts it (the 4-byte
    /// length itself excluded). Larger packets close the session. Default 262,144 (256 KiB), the
    /// limit of OpenSSH's `sftp-server` and russh-sftp's default; OpenSSH's client writes 32 KiB.
    pub max_packet_len: u32,
    /// How many bytes of client requests may wait for russh-sftp, per session. Default 32 MiB. The
    /// pump stops draining (back-pressure onto the SSH connection) only when this is full, which a
    /// client reading its responses never reaches. Must be at least `max_packet_len + 4`. Each
    /// queued request is charged its length plus a fixed overhead for its bookkeeping.
    pub queue_bytes: usize,
    /// How many of those bytes may belong to large requests (longer than 4 KiB: in practice
    /// WRITEs), per session. Default 1 MiB: four of the 255 KiB WRITEs OpenSSH's client sends
    /// once `limits@openssh.com` is offered (32 of its 32 KiB ones). Their answers are small
    /// status packets, so holding writes back can't cause the flow-control deadlock that small
    /// requests (READs, whose answers are large) could; it bounds the memory an upload can queue
    /// while the server is slower than the client. A session handles one request at a time and a
    /// queued frame's share is released as soon as russh-sftp has read it, so one frame waiting
    /// keeps a session busy; behind this budget russh's own channel queue holds up to
    /// `channel_buffer_size` more messages of the client's packet size. (4 MiB per session put
    /// 8 concurrent uploads' heap peak at ~60 MiB, 39 of it received data; see BENCHMARKS.md.)
    /// Must be at least `max_packet_len + 4 + 64` and at most `queue_bytes`.
    pub bulk_bytes: usize,
    /// Bytes of responses buffered between russh-sftp and the writer task. Default 1 MiB: four
    /// of the 255 KiB read replies OpenSSH's client asks for once `limits@openssh.com` offers
    /// them (the buffer fills only while the client's window is closed).
    pub write_buffer: usize,
    /// Bytes a channel may send before its `sftp` subsystem has started. Default 64 KiB.
    pub pre_start_bytes: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_packet_len: 256 * 1024,
            queue_bytes: 32 * 1024 * 1024,
            bulk_bytes: 1024 * 1024,
            write_buffer: 1024 * 1024,
            pre_start_bytes: 64 * 1024,
        }
    }
}

impl TransportConfig {
    /// Check that the values are usable together.
    pub fn validate(&self) -> Result<(), SftpError> {
        if self.max_packet_len < 1024 {
            return Err(SftpError::Config(format!(
                "max_packet_len {} is below 1024 bytes",
                self.max_packet_len
            )));
        }
        let frame = self.max_packet_len as usize + 4;
        if self.queue_bytes < frame {
            return Err(SftpError::Config(format!(
                "queue_bytes {} can't hold one packet of max_packet_len {} plus its length",
                self.queue_bytes, self.max_packet_len
            )));
        }
        if self.bulk_bytes < frame + FRAME_OVERHEAD || self.bulk_bytes > self.queue_bytes {
            return Err(SftpError::Config(format!(
                "bulk_bytes {} must hold one packet of max_packet_len {} and not exceed \
                 queue_bytes {}",
                self.bulk_bytes, self.max_packet_len, self.queue_bytes
            )));
        }
        if self.queue_bytes > Semaphore::MAX_PERMITS {
            return Err(SftpError::Config(format!(
                "queue_bytes {} is too large",
                self.queue_bytes
            )));
        }
        if self.write_buffer < 4096 {
            return Err(SftpError::Config(format!(
                "write_buffer {} is below 4096 bytes",
                self.write_buffer
            )));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Framing

/// What a queued frame costs the queue's budget beyond its bytes (its bookkeeping).
const FRAME_OVERHEAD: usize = 64;
/// Frames up to this length are copied out of the framer's buffer when queued, so that a small
/// request doesn't keep a whole received chunk alive; longer ones are charged to the bulk budget.
const SMALL_FRAME: usize = 4096;

/// A violation of SFTP framing by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    /// A packet with length zero (not even a type byte).
    #[error("SFTP packet with length 0")]
    Empty,
    /// A packet longer than allowed.
    #[error("SFTP packet of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// The length the client announced.
        len: u32,
        /// The configured maximum.
        max: u32,
    },
}

/// One whole SFTP frame (length prefix included), as the pieces of the received chunks it spans
/// (no copy of its bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    parts: VecDeque<Bytes>,
    len: usize,
}

impl Frame {
    /// One contiguous piece.
    fn whole(b: Bytes) -> Self {
        let len = b.len();
        Frame {
            parts: VecDeque::from([b]),
            len,
        }
    }

    /// Its length, prefix included.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Its bytes in one piece in an allocation of their own (copied unless it is one piece
    /// already).
    pub(crate) fn to_bytes(&self) -> Bytes {
        match (self.parts.len(), self.parts.front()) {
            (1, Some(b)) => b.clone(),
            _ => {
                let mut out = BytesMut::with_capacity(self.len);
                for p in &self.parts {
                    out.extend_from_slice(p);
                }
                out.freeze()
            }
        }
    }

    /// A copy of its first `n` bytes (fewer if it is shorter).
    fn prefix(&self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n.min(self.len));
        for p in &self.parts {
            let want = n - out.len();
            if want == 0 {
                break;
            }
            out.extend_from_slice(p.get(..want.min(p.len())).unwrap_or_default());
        }
        out
    }
}

/// Splits a byte stream into SFTP frames (length prefix included), checking each length as soon
/// as its 4 bytes have arrived. Keeps the received chunks as they are and hands out frames made
/// of slices of them, so the bulk of an upload is not copied here.
#[derive(Debug)]
pub(crate) struct Framer {
    max: u32,
    chunks: VecDeque<Bytes>,
    /// Bytes held in `chunks`.
    len: usize,
}

impl Framer {
    pub(crate) fn new(max: u32) -> Self {
        Framer {
            max,
            chunks: VecDeque::new(),
            len: 0,
        }
    }

    /// Append received bytes.
    pub(crate) fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.len += data.len();
            self.chunks.push_back(data);
        }
    }

    /// The next complete frame, `None` if more bytes are needed, or the framing error.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.len < 4 {
            return Ok(None);
        }
        let mut h = [0u8; 4];
        let mut got = 0;
        for c in &self.chunks {
            let n = (4 - got).min(c.len());
            if let (Some(dst), Some(src)) = (h.get_mut(got..got + n), c.get(..n)) {
                dst.copy_from_slice(src);
            }
            got += n;
            if got == 4 {
                break;
            }
        }
        let len = u32::from_be_bytes(h);
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max {
            return Err(FrameError::TooLong { len, max: self.max });
        }
        let total = len as usize + 4;
        if self.len < total {
            return Ok(None);
        }
        let mut parts = VecDeque::new();
        let mut need = total;
        while need > 0 {
            let Some(mut c) = self.chunks.pop_front() else {
                break;
            };
            if c.len() > need {
                let rest = c.split_off(need);
                self.chunks.push_front(rest);
            }
            need -= c.len();
            parts.push_back(c);
        }
        self.len -= total;
        Ok(Some(Frame { parts, len: total }))
    }

    /// Bytes of an incomplete frame held back.
    pub(crate) fn pending(&self) -> usize {
        self.len
    }
}

// ---------------------------------------------------------------------------------------------
// Request checks

const SSH_FXP_INIT: u8 = 1;
const SSH_FXP_WRITE: u8 = 6;
const SSH_FXP_STATUS: u8 = 101;
const SSH_FX_BAD_MESSAGE: u32 = 5;
const SSH_FX_OP_UNSUPPORTED: u32 = 8;

/// What the pump does with one well-framed packet.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A request russh-sftp can parse: hand it over.
    Forward,
    /// A request russh-sftp could not parse (it would answer with request id 0, and the client
    /// would wait forever for its own id): answer it here, in order, with this STATUS packet.
    Reply(Bytes),
    /// Not even a request id to answer to: close the session.
    Violation(String),
}

/// A STATUS packet (length prefix included).
pub(crate) fn status_packet(id: u32, code: u32, message: &str) -> Bytes {
    const LANG: &[u8] = b"en-US";
    let body_len = 1 + 4 + 4 + 4 + message.len() + 4 + LANG.len();
    let mut b = BytesMut::with_capacity(4 + body_len);
    b.put_u32(u32::try_from(body_len).unwrap_or(u32::MAX));
    b.put_u8(SSH_FXP_STATUS);
    b.put_u32(id);
    b.put_u32(code);
    b.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    b.put_slice(message.as_bytes());
    b.put_u32(LANG.len() as u32);
    b.put_slice(LANG);
    b.freeze()
}

/// Checks a WRITE body (after type and id) without copying its data: handle string, offset,
/// data string, each within the packet — what russh-sftp's parser requires.
fn check_write(mut rest: &[u8]) -> Result<(), &'static str> {
    let mut take = |n: usize| -> Result<&[u8], &'static str> {
        let (head, tail) = rest.split_at_checked(n).ok_or("truncated")?;
        rest = tail;
        Ok(head)
    };
    let handle_len = be_u32(take(4)?)?;
    take(handle_len).map_err(|_| "handle longer than the packet")?;
    take(8).map_err(|_| "no offset")?;
    let data_len = be_u32(take(4)?)?;
    take(data_len).map_err(|_| "data longer than the packet")?;
    Ok(())
}

/// Checks that the first `n` strings of a request body (after type and id) are UTF-8. russh-sftp
/// would replace invalid bytes with U+FFFD, so two different names could land on one document.
fn check_utf8_paths(mut rest: &[u8], n: usize) -> Result<(), &'static str> {
    for _ in 0..n {
        let (len, tail) = rest.split_at_checked(4).ok_or("truncated")?;
        let (s, tail) = tail
            .split_at_checked(be_u32(len)?)
            .ok_or("string longer than the packet")?;
        std::str::from_utf8(s).map_err(|_| "a path must be UTF-8")?;
        rest = tail;
    }
    Ok(())
}

fn be_u32(b: &[u8]) -> Result<usize, &'static str> {
    let a: [u8; 4] = b.try_into().map_err(|_| "truncated")?;
    Ok(u32::from_be_bytes(a) as usize)
}

/// What the pump queues for one frame: its pieces (a request for russh-sftp) or a reply of its own.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Checked {
    /// Forward these pieces to russh-sftp.
    Forward(VecDeque<Bytes>),
    /// Answer with this STATUS packet (see [`Verdict::Reply`]).
    Reply(Bytes),
    /// Close the session.
    Violation(String),
}

/// How much of a large frame is looked at to check a WRITE's header without copying its data.
const WRITE_HEAD: usize = 1024;

/// [`check_request`] for a frame in pieces. Small frames are copied into one allocation of their
/// own (a small request must not keep a whole received chunk alive); a well-formed WRITE is
/// checked from a copy of its header only and forwarded as it arrived; anything else is made
/// contiguous and checked in full.
pub(crate) fn check_frame(frame: Frame) -> Checked {
    if frame.len() > SMALL_FRAME {
        let head = frame.prefix(WRITE_HEAD);
        if write_head_ok(&head, frame.len()) {
            return Checked::Forward(frame.parts);
        }
    }
    let b = if frame.len() <= SMALL_FRAME {
        Bytes::copy_from_slice(&frame.to_bytes())
    } else {
        frame.to_bytes()
    };
    match check_request(&b) {
        Verdict::Forward => Checked::Forward(Frame::whole(b).parts),
        Verdict::Reply(r) => Checked::Reply(r),
        Verdict::Violation(v) => Checked::Violation(v),
    }
}

/// Whether `head` (the first bytes of a frame of `total` bytes, length prefix included) starts a
/// WRITE whose handle, offset and data all lie within the frame. `false` means "not shown here":
/// the caller checks the whole frame.
fn write_head_ok(head: &[u8], total: usize) -> bool {
    let field = |at: usize| -> Option<usize> {
        let b: [u8; 4] = head.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(u32::from_be_bytes(b) as usize)
    };
    if head.get(4) != Some(&SSH_FXP_WRITE) {
        return false;
    }
    // length(4) type(1) id(4) handle-length(4) handle offset(8) data-length(4) data
    let Some(handle_len) = field(9) else {
        return false;
    };
    let Some(data_len_at) = 13usize
        .checked_add(handle_len)
        .and_then(|x| x.checked_add(8))
    else {
        return false;
    };
    let Some(data_len) = field(data_len_at) else {
        return false;
    };
    data_len_at
        .checked_add(4)
        .and_then(|x| x.checked_add(data_len))
        .is_some_and(|end| end <= total)
}

/// Decides what to do with one frame (length prefix included, length already checked).
pub(crate) fn check_request(frame: &Bytes) -> Verdict {
    let body = frame.slice(4.min(frame.len())..);
    let Some(&kind) = body.first() else {
        return Verdict::Violation("empty SFTP packet".into());
    };
    if kind == SSH_FXP_INIT {
        return match russh_sftp::protocol::Packet::try_from(&mut body.clone()) {
            Ok(_) => Verdict::Forward,
            Err(e) => Verdict::Violation(format!("malformed SSH_FXP_INIT: {e}")),
        };
    }
    let Some(id) = body
        .get(1..5)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
    else {
        return Verdict::Violation(format!(
            "SFTP packet of type {kind} too short to carry a request id"
        ));
    };
    let refuse = |code, why: String| {
        debug!(id, kind, reason = %why, "malformed SFTP request answered");
        Verdict::Reply(status_packet(id, code, &why))
    };
    match kind {
        // The requests of SFTP v3 (OPEN..SYMLINK) and EXTENDED.
        3..=20 | 200 => {}
        // Server-to-client packets.
        2 | 101..=105 | 201 => {
            return refuse(
                SSH_FX_BAD_MESSAGE,
                format!("packet type {kind} is not a request"),
            );
        }
        _ => {
            return refuse(
                SSH_FX_OP_UNSUPPORTED,
                format!("unknown request type {kind}"),
            );
        }
    }
    let rest = body.get(5..).unwrap_or_default();
    let parsed = if kind == SSH_FXP_WRITE {
        check_write(rest).map_err(|e| e.to_owned())
    } else {
        // Requests whose first one or two strings are paths: OPEN, LSTAT, SETSTAT, OPENDIR,
        // REMOVE, MKDIR, RMDIR, REALPATH, STAT, READLINK; RENAME, SYMLINK.
        let paths = match kind {
            3 | 7 | 9 | 11 | 13..=17 | 19 => 1,
            18 | 20 => 2,
            _ => 0,
        };
        check_utf8_paths(rest, paths)
            .map_err(|e| e.to_owned())
            .and_then(|()| {
                russh_sftp::protocol::Packet::try_from(&mut body.clone())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })
    };
    match parsed {
        Ok(()) => Verdict::Forward,
        Err(e) => refuse(
            SSH_FX_BAD_MESSAGE,
            format!("malformed request of type {kind}: {e}"),
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// The byte-capped frame queue and the stream russh-sftp runs over

/// One item of the pump's queue: a request for russh-sftp, or a reply the transport writes
/// itself, in order (after every response to the requests queued before it).
struct QueuedFrame {
    /// The frame's pieces, consumed from the front.
    parts: VecDeque<Bytes>,
    reply: bool,
    _permit: OwnedSemaphorePermit,
    /// The bulk budget's share, for large frames.
    _bulk: Option<OwnedSemaphorePermit>,
}

/// The read side handed to russh-sftp: whole frames from the pump, end-of-stream when the pump
/// closes the queue or the session is aborted.
pub(crate) struct FrameReader {
    rx: mpsc::UnboundedReceiver<QueuedFrame>,
    current: Option<QueuedFrame>,
    /// A reply being written into the response pipe.
    reply: Option<QueuedFrame>,
    aborted: Arc<AtomicBool>,
}

impl FrameReader {
    /// Reads request bytes into `buf`; replies met on the way are written to `out` first.
    ///
    /// russh-sftp reads a request only once it has written and flushed the response to the
    /// previous one, so a reply written here lands between two whole responses, in request order.
    fn poll_read_with<W: AsyncWrite + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        out: &mut W,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.aborted.load(Ordering::Acquire) {
                // Discard whatever is queued: the session is over.
                self.current = None;
                self.reply = None;
                return Poll::Ready(Ok(()));
            }
            if let Some(reply) = self.reply.as_mut() {
                while let Some(part) = reply.parts.front_mut() {
                    if !part.has_remaining() {
                        reply.parts.pop_front();
                        continue;
                    }
                    match Pin::new(&mut *out).poll_write(cx, part) {
                        Poll::Ready(Ok(0)) => {
                            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                        }
                        Poll::Ready(Ok(n)) => part.advance(n.min(part.len())),
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => return Poll::Pending,
                    }
                }
                self.reply = None;
            }
            if let Some(frame) = self.current.as_mut() {
                let mut copied = false;
                while buf.remaining() > 0 {
                    let Some(part) = frame.parts.front_mut() else {
                        break;
                    };
                    let n = part.len().min(buf.remaining());
                    buf.put_slice(part.get(..n).unwrap_or_default());
                    part.advance(n);
                    copied |= n > 0;
                    if !part.has_remaining() {
                        frame.parts.pop_front();
                    }
                }
                if frame.parts.is_empty() {
                    // Releases the frame's bytes back to the queue's budget.
                    self.current = None;
                }
                if copied {
                    return Poll::Ready(Ok(()));
                }
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(item)) if item.reply => self.reply = Some(item),
                Poll::Ready(Some(frame)) => self.current = Some(frame),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// The stream russh-sftp runs over: requests from the pump's queue, responses into one end of a
/// duplex pipe read by the writer task. Unlike a split simplex pipe, a dropped `DuplexStream`
/// signals end-of-stream to the other end (russh-sftp drops its stream without shutting it down),
/// so the writer sees the session end and closes the channel.
pub(crate) struct SftpStream {
    frames: FrameReader,
    out: DuplexStream,
}

impl AsyncRead for SftpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.frames.poll_read_with(cx, buf, &mut this.out)
    }
}

impl AsyncWrite for SftpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().out).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().out).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().out).poll_shutdown(cx)
    }
}

type BoxedRun = Box<
    dyn FnOnce(SftpStream, russh_sftp::server::Config) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send,
>;

/// One SFTP session ready to run: a russh-sftp `Handler`, type-erased so that a
/// [`SessionFactory`](super::SessionFactory) can be a trait object.
pub struct SftpSession {
    run: BoxedRun,
}

impl fmt::Debug for SftpSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SftpSession")
    }
}

impl SftpSession {
    /// Wrap a russh-sftp handler.
    pub fn new<H>(handler: H) -> Self
    where
        H: russh_sftp::server::Handler + Send + 'static,
    {
        SftpSession {
            run: Box::new(move |stream, cfg| {
                Box::pin(russh_sftp::server::run_with_config(stream, handler, cfg))
            }),
        }
    }
}

/// Per-channel counters, for the end-of-session log line.
#[derive(Default)]
struct Counters {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// The adapter attached to one session channel: drains it from the moment it is opened and runs
/// an [`SftpSession`] over it once [`ChannelTransport::start`] is called.
pub struct ChannelTransport {
    start_tx: oneshot::Sender<SftpSession>,
    started: Arc<AtomicBool>,
}

impl fmt::Debug for ChannelTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelTransport")
            .field("started", &self.started.load(Ordering::Relaxed))
            .finish()
    }
}

impl ChannelTransport {
    /// Attach the adapter to a freshly opened channel. Spawns the pump and the writer tasks on the
    /// current tokio runtime (inside `span`). Cancelling `cancel` closes the channel; the adapter
    /// cancels it itself when the session ends. `slot` (e.g. a per-connection channel permit) is
    /// held until both tasks have ended. `config` must have passed [`TransportConfig::validate`].
    pub fn spawn(
        channel: Channel<Msg>,
        config: &TransportConfig,
        cancel: CancellationToken,
        span: Span,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let slot = Arc::new(slot);
        let (read_half, write_half) = channel.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let aborted = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let (start_tx, start_rx) = oneshot::channel();
        let reader = FrameReader {
            rx,
            current: None,
            reply: None,
            aborted: aborted.clone(),
        };
        let pump = Pump {
            queue: Some(tx),
            budget: Arc::new(Semaphore::new(config.queue_bytes)),
            bulk: Arc::new(Semaphore::new(config.bulk_bytes)),
            framer: Framer::new(config.max_packet_len),
            aborted,
            started: started.clone(),
            cancel: cancel.clone(),
            pre_start_left: config.pre_start_bytes,
            counters: counters.clone(),
            _slot: slot.clone(),
        };
        tokio::spawn(pump.run(read_half).instrument(span.clone()));
        let writer = Writer {
            write_half,
            aborted: reader.aborted.clone(),
            reader,
            start_rx,
            cancel,
            write_buffer: config.write_buffer,
            sftp: russh_sftp::server::Config {
                max_client_packet_len: config.max_packet_len,
            },
            counters,
            _slot: slot,
        };
        tokio::spawn(writer.run().instrument(span));
        ChannelTransport { start_tx, started }
    }

    /// Whether the channel's adapter has ended without a session having been started (the channel
    /// was closed).
    pub fn is_finished(&self) -> bool {
        self.start_tx.is_closed()
    }

    /// Start the SFTP session on this channel. Returns false if the channel is already gone.
    pub fn start(self, session: SftpSession) -> bool {
        self.started.store(true, Ordering::Release);
        self.start_tx.send(session).is_ok()
    }
}

struct Pump {
    /// `None` once the queue is closed (client EOF, violation, or russh-sftp gone).
    queue: Option<mpsc::UnboundedSender<QueuedFrame>>,
    budget: Arc<Semaphore>,
    /// The share of `budget` large frames may take.
    bulk: Arc<Semaphore>,
    framer: Framer,
    aborted: Arc<AtomicBool>,
    started: Arc<AtomicBool>,
    cancel: CancellationToken,
    pre_start_left: usize,
    counters: Arc<Counters>,
    _slot: Arc<Option<OwnedSemaphorePermit>>,
}

impl Pump {
    async fn run(mut self, mut read_half: ChannelReadHalf) {
        loop {
            let msg = tokio::select! {
                m = read_half.wait() => m,
                () = self.cancel.cancelled() => break,
            };
            match msg {
                Some(ChannelMsg::Data { data }) => {
                    self.counters
                        .bytes_in
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                    if let Err(reason) = self.on_data(data).await {
                        self.abort(&reason);
                        break;
                    }
                }
                Some(ChannelMsg::Eof) => {
                    if self.framer.pending() > 0 {
                        debug!(
                            bytes = self.framer.pending(),
                            "client EOF in the middle of an SFTP packet; the partial packet is dropped"
                        );
                    }
                    // russh-sftp processes what is queued, then sees end-of-stream.
                    self.queue = None;
                }
                Some(ChannelMsg::Close) | None => break,
                // Extended data, window adjustments, requests (answered by the connection
                // handler): nothing to do, but they must be drained.
                Some(_) => {}
            }
        }
        // Dropping the read half makes russh discard anything still sent to this channel instead
        // of blocking on it.
        drop(read_half);
        self.queue = None;
    }

    async fn on_data(&mut self, data: Bytes) -> Result<(), String> {
        if !self.started.load(Ordering::Acquire) {
            match self.pre_start_left.checked_sub(data.len()) {
                Some(left) => self.pre_start_left = left,
                None => {
                    return Err(
                        "too much data on a channel without a running sftp subsystem".to_owned(),
                    );
                }
            }
        }
        self.framer.push(data);
        loop {
            let frame = match self.framer.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            let Some(queue) = self.queue.as_ref() else {
                // Data after EOF, or russh-sftp is gone: discard.
                continue;
            };
            let len = frame.len();
            let (parts, reply) = match check_frame(frame) {
                Checked::Forward(parts) => (parts, false),
                Checked::Reply(status) => (VecDeque::from([status]), true),
                Checked::Violation(why) => return Err(why),
            };
            // A frame is at most max_packet_len + 4 (+ overhead) <= bulk_bytes <= queue_bytes
            // (validated), and a reply is far smaller, so this fits.
            let need = u32::try_from(len + FRAME_OVERHEAD).unwrap_or(u32::MAX);
            let bulk = (len > SMALL_FRAME && !reply).then(|| self.bulk.clone());
            let acquired = tokio::select! {
                p = async {
                    let b = match bulk {
                        Some(b) => Some(b.acquire_many_owned(need).await?),
                        None => None,
                    };
                    Ok::<_, tokio::sync::AcquireError>((
                        self.budget.clone().acquire_many_owned(need).await?,
                        b,
                    ))
                } => p,
                () = self.cancel.cancelled() => return Ok(()),
            };
            let Ok((permit, bulk)) = acquired else {
                return Err("internal: queue budget closed".to_owned());
            };
            let item = QueuedFrame {
                parts,
                reply,
                _permit: permit,
                _bulk: bulk,
            };
            if queue.send(item).is_err() {
                // russh-sftp ended (its reader was dropped): keep draining, forward nothing.
                self.queue = None;
            }
        }
    }

    fn abort(&mut self, reason: &str) {
        warn!(%reason, "closing the SFTP session: protocol violation");
        self.aborted.store(true, Ordering::Release);
        self.queue = None;
        self.cancel.cancel();
    }
}

struct Writer {
    write_half: ChannelWriteHalf<Msg>,
    /// Set when the writer stops: russh-sftp then sees end-of-stream instead of working through
    /// requests whose answers can no longer be sent.
    aborted: Arc<AtomicBool>,
    reader: FrameReader,
    start_rx: oneshot::Receiver<SftpSession>,
    cancel: CancellationToken,
    write_buffer: usize,
    sftp: russh_sftp::server::Config,
    counters: Arc<Counters>,
    _slot: Arc<Option<OwnedSemaphorePermit>>,
}

impl Writer {
    async fn run(self) {
        let Writer {
            write_half,
            aborted,
            reader,
            start_rx,
            cancel,
            write_buffer,
            sftp,
            counters,
            _slot,
        } = self;
        let session = tokio::select! {
            s = start_rx => s.ok(),
            () = cancel.cancelled() => None,
        };
        let Some(session) = session else {
            // Never became an SFTP session. Close it if we were told to (violation, shutdown);
            // otherwise the connection handler let it go (the client closed it, or the handler
            // closed it itself). Either way, stop the pump.
            if cancel.is_cancelled() {
                let _ = write_half.eof().await;
                let _ = write_half.close().await;
            }
            cancel.cancel();
            return;
        };
        debug!("sftp session started");
        let (pipe_tx, pipe_rx) = tokio::io::duplex(write_buffer);
        (session.run)(
            SftpStream {
                frames: reader,
                out: pipe_tx,
            },
            sftp,
        )
        .await;

        let mut source = tokio::io::BufReader::with_capacity(64 * 1024, pipe_rx);
        let mut tx = write_half.make_writer();
        let outcome = tokio::select! {
            r = tokio::io::copy_buf(&mut source, &mut tx) => Some(r),
            () = cancel.cancelled() => None,
        };
        let _ = tx.flush().await;
        drop(tx);
        // Nothing more can reach the client: make russh-sftp stop at its next read rather than
        // serve the requests still queued (after a normal end the queue is already empty).
        aborted.store(true, Ordering::Release);
        drop(source);
        match outcome {
            Some(Ok(n)) => counters.bytes_out.store(n, Ordering::Relaxed),
            Some(Err(e)) => debug!(error = %e, "sftp channel write ended"),
            None => {}
        }
        let _ = write_half.eof().await;
        let _ = write_half.close().await;
        // If the writer stopped first (client vanished), make the pump and russh-sftp stop too.
        cancel.cancel();
        debug!(
            bytes_in = counters.bytes_in.load(Ordering::Relaxed),
            bytes_out = counters.bytes_out.load(Ordering::Relaxed),
            "sftp session ended"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::timeout;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn framer_splits_frames_across_and_within_chunks() {
        let mut stream = frame(b"\x01abc");
        stream.extend(frame(&[7u8; 1000]));
        stream.extend(frame(b"\x02"));
        // feed in awkward chunk sizes: 1, 3, 5, 7, ...
        let mut f = Framer::new(4096);
        let mut out = Vec::new();
        let mut rest = stream.as_slice();
        let mut step = 1;
        while !rest.is_empty() {
            let n = step.min(rest.len());
            f.push(Bytes::copy_from_slice(&rest[..n]));
            rest = &rest[n..];
            step += 2;
            while let Some(fr) = f.next_frame().unwrap() {
                out.push(fr.to_bytes());
            }
        }
        assert_eq!(out.len(), 3);
        assert_eq!(&out[0][..], &frame(b"\x01abc")[..]);
        assert_eq!(out[1].len(), 1004);
        assert_eq!(&out[2][..], &frame(b"\x02")[..]);
        assert_eq!(f.pending(), 0);
    }

    #[test]
    fn framer_rejects_oversized_length_before_the_body_arrives() {
        let mut f = Framer::new(262_144);
        f.push(Bytes::copy_from_slice(&300_000u32.to_be_bytes()[..3]));
        assert_eq!(f.next_frame(), Ok(None));
        f.push(Bytes::copy_from_slice(&300_000u32.to_be_bytes()[3..]));
        assert_eq!(
            f.next_frame(),
            Err(FrameError::TooLong {
                len: 300_000,
                max: 262_144
            })
        );
        // exactly the maximum is fine
        let mut f = Framer::new(262_144);
        f.push(Bytes::copy_from_slice(&262_144u32.to_be_bytes()));
        assert_eq!(f.next_frame(), Ok(None));
    }

    #[test]
    fn framer_rejects_zero_length_after_good_frames() {
        let mut f = Framer::new(1024);
        let mut s = frame(b"\x01\x00\x00\x00\x03");
        s.extend_from_slice(&[0, 0, 0, 0]);
        f.push(Bytes::from(s));
        assert!(f.next_frame().unwrap().is_some());
        assert_eq!(f.next_frame(), Err(FrameError::Empty));
    }

    #[test]
    fn config_validation() {
        assert!(TransportConfig::default().validate().is_ok());
        let small_queue = TransportConfig {
            queue_bytes: 1000,
            ..TransportConfig::default()
        };
        assert!(small_queue.validate().is_err());
        let tiny_packets = TransportConfig {
            max_packet_len: 10,
            ..TransportConfig::default()
        };
        assert!(tiny_packets.validate().is_err());
        let small_bulk = TransportConfig {
            bulk_bytes: 256 * 1024,
            ..TransportConfig::default()
        };
        assert!(small_bulk.validate().is_err());
        let bulk_over_queue = TransportConfig {
            bulk_bytes: 33 * 1024 * 1024,
            ..TransportConfig::default()
        };
        assert!(bulk_over_queue.validate().is_err());
    }

    fn write_request(id: u32, data_len: usize) -> Vec<u8> {
        let mut b = vec![SSH_FXP_WRITE];
        b.extend_from_slice(&id.to_be_bytes());
        b.extend_from_slice(&2u32.to_be_bytes());
        b.extend_from_slice(b"h1");
        b.extend_from_slice(&0u64.to_be_bytes());
        b.extend_from_slice(&(data_len as u32).to_be_bytes());
        b.extend(std::iter::repeat_n(7u8, data_len));
        frame(&b)
    }

    fn stat_request(id: u32) -> Vec<u8> {
        let mut b = vec![17u8];
        b.extend_from_slice(&id.to_be_bytes());
        b.extend_from_slice(&2u32.to_be_bytes());
        b.extend_from_slice(b"/x");
        frame(&b)
    }

    #[tokio::test]
    async fn large_requests_wait_on_the_bulk_budget_small_ones_do_not() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let one_write = 32 * 1024 + 64 + 27;
        let mut pump = Pump {
            queue: Some(tx),
            budget: Arc::new(Semaphore::new(1 << 20)),
            bulk: Arc::new(Semaphore::new(2 * (one_write + FRAME_OVERHEAD))),
            framer: Framer::new(64 * 1024),
            aborted: Arc::new(AtomicBool::new(false)),
            started: Arc::new(AtomicBool::new(true)),
            cancel: CancellationToken::new(),
            pre_start_left: 0,
            counters: Arc::new(Counters::default()),
            _slot: Arc::new(None),
        };
        let quick = Duration::from_millis(200);
        // Two writes fit the bulk budget; small requests never wait on it.
        for id in 1..=2 {
            let w = write_request(id, 32 * 1024 + 64);
            assert_eq!(w.len(), one_write);
            timeout(quick, pump.on_data(Bytes::from(w)))
                .await
                .unwrap()
                .unwrap();
        }
        for id in 3..=50 {
            timeout(quick, pump.on_data(Bytes::from(stat_request(id))))
                .await
                .unwrap()
                .unwrap();
        }
        // A third write waits until a queued write is taken off the queue.
        let third = write_request(51, 32 * 1024 + 64);
        let blocked = {
            let fut = pump.on_data(Bytes::from(third));
            tokio::pin!(fut);
            assert!(
                timeout(quick, &mut fut).await.is_err(),
                "the third write must wait"
            );
            let first = rx.recv().await.unwrap();
            assert_eq!(first.parts.iter().map(Bytes::len).sum::<usize>(), one_write);
            assert!(first._bulk.is_some());
            drop(first);
            timeout(quick, fut).await
        };
        blocked.unwrap().unwrap();
        // Small frames were copied out of the framer's buffer and hold no bulk permit.
        let second = rx.recv().await.unwrap();
        assert!(second._bulk.is_some());
        let small = rx.recv().await.unwrap();
        assert!(small._bulk.is_none());
        assert_eq!(small.parts.len(), 1);
        assert_eq!(&small.parts[0][..], &stat_request(3)[..]);
    }

    /// The default bulk budget queues four of OpenSSH's 255 KiB WRITEs per session (so a session
    /// always has its next write waiting) and holds the fifth back until one is taken.
    #[tokio::test]
    async fn default_bulk_budget_queues_four_openssh_writes() {
        let cfg = TransportConfig::default();
        // limits@openssh.com offers max_packet_len - 1024 bytes per WRITE.
        let data_len = cfg.max_packet_len as usize - 1024;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut pump = Pump {
            queue: Some(tx),
            budget: Arc::new(Semaphore::new(cfg.queue_bytes)),
            bulk: Arc::new(Semaphore::new(cfg.bulk_bytes)),
            framer: Framer::new(cfg.max_packet_len),
            aborted: Arc::new(AtomicBool::new(false)),
            started: Arc::new(AtomicBool::new(true)),
            cancel: CancellationToken::new(),
            pre_start_left: 0,
            counters: Arc::new(Counters::default()),
            _slot: Arc::new(None),
        };
        let quick = Duration::from_millis(200);
        for id in 1..=4 {
            timeout(
                quick,
                pump.on_data(Bytes::from(write_request(id, data_len))),
            )
            .await
            .expect("one of the first four writes waited")
            .unwrap();
        }
        let fifth = pump.on_data(Bytes::from(write_request(5, data_len)));
        tokio::pin!(fifth);
        assert!(
            timeout(quick, &mut fifth).await.is_err(),
            "the fifth write must wait"
        );
        drop(rx.recv().await.unwrap());
        timeout(quick, fifth).await.unwrap().unwrap();
    }

    fn queued(budget: &Arc<Semaphore>, b: &[u8], reply: bool) -> QueuedFrame {
        QueuedFrame {
            parts: VecDeque::from([Bytes::copy_from_slice(b)]),
            reply,
            _permit: budget
                .clone()
                .try_acquire_many_owned(b.len() as u32)
                .unwrap(),
            _bulk: None,
        }
    }

    /// A stream over a fresh queue; the other end of its response pipe.
    fn stream(
        aborted: Arc<AtomicBool>,
    ) -> (mpsc::UnboundedSender<QueuedFrame>, SftpStream, DuplexStream) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (out, far) = tokio::io::duplex(4096);
        let s = SftpStream {
            frames: FrameReader {
                rx,
                current: None,
                reply: None,
                aborted,
            },
            out,
        };
        (tx, s, far)
    }

    #[tokio::test]
    async fn frame_reader_returns_bytes_releases_budget_and_ends() {
        let budget = Arc::new(Semaphore::new(100));
        let (tx, mut r, _far) = stream(Arc::new(AtomicBool::new(false)));
        tx.send(queued(&budget, b"hello ", false)).unwrap();
        tx.send(queued(&budget, b"world", false)).unwrap();
        assert_eq!(budget.available_permits(), 89);
        let mut three = [0u8; 3];
        r.read_exact(&mut three).await.unwrap();
        assert_eq!(&three, b"hel");
        // the partly read frame still holds its budget
        assert_eq!(budget.available_permits(), 89);
        drop(tx);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert_eq!(&rest, b"lo world");
        assert_eq!(budget.available_permits(), 100);
    }

    #[tokio::test]
    async fn a_frame_in_pieces_reads_back_whole_and_in_order() {
        let budget = Arc::new(Semaphore::new(100));
        let (tx, mut r, _far) = stream(Arc::new(AtomicBool::new(false)));
        let mut f = queued(&budget, b"ab", false);
        f.parts.push_back(Bytes::from_static(b"cdefg"));
        f.parts.push_back(Bytes::from_static(b"h"));
        tx.send(f).unwrap();
        tx.send(queued(&budget, b"XY", false)).unwrap();
        drop(tx);
        // Small reads cross the pieces; a read never runs into the next frame.
        let mut three = [0u8; 3];
        r.read_exact(&mut three).await.unwrap();
        assert_eq!(&three, b"abc");
        let mut big = [0u8; 64];
        let n = r.read(&mut big).await.unwrap();
        assert_eq!(&big[..n], b"defgh");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert_eq!(&rest, b"XY");
    }

    #[test]
    fn large_writes_are_forwarded_in_their_pieces_and_checked() {
        let w = write_request(9, 40_000);
        // As received: chunks of 32 KiB (SSH packets) and the rest.
        let mut f = Framer::new(256 * 1024);
        f.push(Bytes::copy_from_slice(&w[..32_768]));
        assert_eq!(f.next_frame(), Ok(None));
        f.push(Bytes::copy_from_slice(&w[32_768..]));
        let fr = f.next_frame().unwrap().unwrap();
        assert_eq!(fr.len(), w.len());
        match check_frame(fr) {
            Checked::Forward(parts) => {
                assert_eq!(parts.len(), 2, "forwarded without being joined");
                let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
                assert_eq!(joined, w);
            }
            other => panic!("{other:?}"),
        }
        // A WRITE whose data runs past the packet gets the same answer as from check_request.
        let mut bad = w.clone();
        let at = 4 + 1 + 4 + 4 + 2 + 8;
        bad[at..at + 4].copy_from_slice(&50_000u32.to_be_bytes());
        let mut f = Framer::new(256 * 1024);
        f.push(Bytes::from(bad.clone()));
        match check_frame(f.next_frame().unwrap().unwrap()) {
            Checked::Reply(r) => {
                assert_eq!(
                    Checked::Reply(r),
                    match check_request(&Bytes::from(bad)) {
                        Verdict::Reply(r) => Checked::Reply(r),
                        v => panic!("{v:?}"),
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        // A large request of another kind (an OPEN of a long path) is checked whole.
        let long = vec![b'a'; 5000];
        let open = packet(
            3,
            &[
                &1u32.to_be_bytes(),
                &string(&long),
                &0u32.to_be_bytes(),
                &0u32.to_be_bytes(),
            ],
        );
        let mut f = Framer::new(256 * 1024);
        f.push(open.slice(..100));
        f.push(open.slice(100..));
        match check_frame(f.next_frame().unwrap().unwrap()) {
            Checked::Forward(parts) => {
                assert_eq!(parts.len(), 1);
                assert_eq!(parts[0], open);
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn aborted_reader_discards_queued_frames() {
        let budget = Arc::new(Semaphore::new(100));
        let aborted = Arc::new(AtomicBool::new(false));
        let (tx, mut r, _far) = stream(aborted.clone());
        tx.send(queued(&budget, b"queued request", false)).unwrap();
        aborted.store(true, Ordering::Release);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn replies_are_written_in_order_between_responses() {
        let budget = Arc::new(Semaphore::new(100));
        let (tx, mut s, mut far) = stream(Arc::new(AtomicBool::new(false)));
        tx.send(queued(&budget, b"req1", false)).unwrap();
        tx.send(queued(&budget, b"<reply2>", true)).unwrap();
        tx.send(queued(&budget, b"req3", false)).unwrap();
        drop(tx);
        // What russh-sftp does: read a request, write its response, read the next...
        let mut req = [0u8; 4];
        s.read_exact(&mut req).await.unwrap();
        assert_eq!(&req, b"req1");
        s.write_all(b"<resp1>").await.unwrap();
        s.read_exact(&mut req).await.unwrap();
        assert_eq!(&req, b"req3");
        s.write_all(b"<resp3>").await.unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        drop(s);
        let mut wire = Vec::new();
        far.read_to_end(&mut wire).await.unwrap();
        assert_eq!(wire, b"<resp1><reply2><resp3>");
        assert_eq!(budget.available_permits(), 100);
    }

    fn packet(kind: u8, fields: &[&[u8]]) -> Bytes {
        let mut body = vec![kind];
        for f in fields {
            body.extend_from_slice(f);
        }
        Bytes::from(frame(&body))
    }

    fn string(s: &[u8]) -> Vec<u8> {
        let mut v = (s.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(s);
        v
    }

    /// The id and code of a STATUS reply.
    fn status_of(v: &Verdict) -> (u32, u32) {
        let Verdict::Reply(b) = v else {
            panic!("expected a reply, got {v:?}")
        };
        assert_eq!(b[4], SSH_FXP_STATUS);
        let len = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
        assert_eq!(len + 4, b.len());
        (
            u32::from_be_bytes(b[5..9].try_into().unwrap()),
            u32::from_be_bytes(b[9..13].try_into().unwrap()),
        )
    }

    #[test]
    fn well_formed_requests_are_forwarded() {
        let id = 7u32.to_be_bytes();
        let init = packet(SSH_FXP_INIT, &[&3u32.to_be_bytes()]);
        assert_eq!(check_request(&init), Verdict::Forward);
        let realpath = packet(16, &[&id, &string(b"/")]);
        assert_eq!(check_request(&realpath), Verdict::Forward);
        let write = packet(
            6,
            &[&id, &string(b"h1"), &5u64.to_be_bytes(), &string(b"data")],
        );
        assert_eq!(check_request(&write), Verdict::Forward);
        let open = packet(
            3,
            &[
                &id,
                &string(b"/a"),
                &1u32.to_be_bytes(),
                &0u32.to_be_bytes(),
            ],
        );
        assert_eq!(check_request(&open), Verdict::Forward);
        let rename = packet(18, &[&id, &string("/é".as_bytes()), &string(b"/b")]);
        assert_eq!(check_request(&rename), Verdict::Forward);
    }

    #[test]
    fn malformed_requests_are_answered_with_their_own_id() {
        let id = 0xdead_beef_u32.to_be_bytes();
        // a path string longer than the packet
        let open = packet(3, &[&id, &100u32.to_be_bytes(), b"abc"]);
        assert_eq!(
            status_of(&check_request(&open)),
            (0xdead_beef, SSH_FX_BAD_MESSAGE)
        );
        // write data longer than the packet, and a truncated offset
        let write = packet(
            6,
            &[
                &id,
                &string(b"h1"),
                &5u64.to_be_bytes(),
                &100u32.to_be_bytes(),
            ],
        );
        assert_eq!(status_of(&check_request(&write)).1, SSH_FX_BAD_MESSAGE);
        let write = packet(6, &[&id, &string(b"h1"), &[0, 0]]);
        assert_eq!(status_of(&check_request(&write)).1, SSH_FX_BAD_MESSAGE);
        let write = packet(6, &[&id, &u32::MAX.to_be_bytes()]);
        assert_eq!(status_of(&check_request(&write)).1, SSH_FX_BAD_MESSAGE);
        // paths that are not UTF-8 (russh-sftp would turn them into U+FFFD)
        let stat = packet(17, &[&id, &string(b"/caf\xe9")]);
        assert_eq!(status_of(&check_request(&stat)).1, SSH_FX_BAD_MESSAGE);
        let rename = packet(18, &[&id, &string(b"/a"), &string(b"/caf\xe8")]);
        assert_eq!(status_of(&check_request(&rename)).1, SSH_FX_BAD_MESSAGE);
        // unknown type, and a server-side packet sent by the client
        let unknown = packet(99, &[&id]);
        assert_eq!(
            status_of(&check_request(&unknown)),
            (0xdead_beef, SSH_FX_OP_UNSUPPORTED)
        );
        let status = packet(SSH_FXP_STATUS, &[&id, &0u32.to_be_bytes()]);
        assert_eq!(status_of(&check_request(&status)).1, SSH_FX_BAD_MESSAGE);
    }

    #[test]
    fn packets_without_an_id_are_violations() {
        assert!(matches!(
            check_request(&packet(3, &[&[0, 0]])),
            Verdict::Violation(_)
        ));
        assert!(matches!(
            check_request(&packet(SSH_FXP_INIT, &[&[0]])),
            Verdict::Violation(_)
        ));
    }
}
