//! The adapter between an SSH session channel and an SFTP request handler.
//!
//! russh-sftp 3.0 runs over any byte stream, and russh 0.65 offers `Channel::into_stream()`. Used
//! directly, that pair has two defects (reproduced, see `shared/notes/crates.md`):
//!
//! 1. **Flow-control deadlock.** russh-sftp answers one request at a time and blocks while a
//!    response waits for the client's window. Meanwhile the client keeps sending requests; russh's
//!    per-channel queue (`channel_buffer_size` messages) fills and russh's connection loop blocks
//!    delivering into it — so it never reads the client's WINDOW_ADJUST that would unblock the
//!    response. paramiko's `getfo` of 64 MiB hangs this way.
//! 2. **Stream desync.** russh-sftp logs an over-long packet but doesn't skip it, then parses the
//!    packet's body as a stream of packets (one 300,000-byte packet drew 75,000 bogus replies).
//!
//! So russh-sftp's own loop (`russh_sftp::server::run`) is not used: this module keeps only its
//! packet types and its [`Handler`] trait, and runs **one task per
//! channel** that does the whole job:
//!
//! - it **drains** the channel's read half as fast as russh delivers, checks the SFTP framing
//!   (4-byte big-endian length, `0 < length <= max_packet_len`) and queues whole frames in a
//!   queue capped in *bytes* ([`TransportConfig::queue_bytes`], of which large requests — writes
//!   — may take [`TransportConfig::bulk_bytes`]); it stops reading the channel only while the
//!   next frame doesn't fit, which a client that reads its responses never causes;
//! - it **handles** the queued requests strictly in order, one at a time, through the handler
//!   (each in a `sftp_request` tracing span with the request's id and type);
//! - it **sends** each response with the channel's write half, waiting for the client's window
//!   while it goes on draining and handling: up to [`TransportConfig::write_buffer`] bytes of
//!   responses may wait to be sent before the next request is held back. Small responses waiting
//!   together go out in one SSH packet.
//!
//! One `tokio::select!` loop multiplexes the three (the next channel message when the budget
//! allows, the request being handled, the response being sent). The handler is moved into the
//! future that handles a request and comes back with its response, so nothing is shared.
//!
//! Why one task: an earlier design had a pump task (drain and check), russh-sftp's loop task and
//! a writer task, joined by a queue and an in-memory pipe. Every request then crossed four tasks
//! (russh's session task, pump, russh-sftp, writer, back to the session), and with many small
//! requests the task switches dominated: a do-nothing handler served ~950 small files per second
//! (2,000 × 4 KiB gets with OpenSSH `sftp -b`; see BENCHMARKS.md). Now a request goes from
//! russh's session task to this task and its response straight back.
//!
//! A framing violation is logged, nothing of the bad frame is handled, the frames still queued
//! are discarded and the channel is closed (EOF + CLOSE). The rest of the SSH connection is
//! unaffected. A request in progress at that moment (or at shutdown) is left to finish in a task
//! of its own, so that its effects are not cut off halfway; its answer is dropped.
//!
//! A third defect of the same family: a request russh-sftp can't parse (truncated fields, an
//! unknown or server-side packet type) is answered by russh-sftp with request id **0**, so the
//! client never gets an answer to its own id and waits forever (paramiko) or aborts ("ID
//! mismatch", OpenSSH). Each request is therefore checked the way russh-sftp parses it and a bad
//! one is answered here — `SSH_FX_BAD_MESSAGE` (or `SSH_FX_OP_UNSUPPORTED` for an unknown type)
//! with the client's id — in request order; a packet too short to hold an id is a violation.
//! Paths that are not UTF-8 are refused the same way: russh-sftp would silently replace the bad
//! bytes with U+FFFD, so `caf\xe9` and `caf\xe8` (Latin-1 names) would be the same document.
//!
//! Client EOF: the requests queued before it are handled and answered, then the channel is
//! closed. The transport is attached when the channel is opened, before any subsystem is
//! requested, so that a channel which never becomes an SFTP session (a refused shell or exec) is
//! still drained and can't stall the connection; such a channel may send at most
//! [`TransportConfig::pre_start_bytes`] before it is closed.

use super::SftpError;
use bytes::{BufMut, Bytes, BytesMut};
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use russh_sftp::protocol::{Packet, StatusCode};
use russh_sftp::server::{Handler, StatusReply};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::{OwnedSemaphorePermit, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, warn};

/// Tuning of the channel adapter. The defaults suit every client tested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// The largest SFTP packet accepted from a client, as its length field counts it (the 4-byte
    /// length itself excluded). Larger packets close the session. Default 262,144 (256 KiB), the
    /// limit of OpenSSH's `sftp-server` and russh-sftp's default; OpenSSH's client writes 32 KiB.
    pub max_packet_len: u32,
    /// How many bytes of client requests may wait to be handled, per session. Default 32 MiB. The
    /// channel's task stops reading the channel (back-pressure onto the SSH connection) only when
    /// the next request doesn't fit, which a client reading its responses never causes. Must be at least `max_packet_len + 4`. Each
    /// queued request is charged its length plus a fixed overhead for its bookkeeping.
    pub queue_bytes: usize,
    /// How many of those bytes may belong to large requests (longer than 4 KiB: in practice
    /// WRITEs), per session. Default 1 MiB: four of the 255 KiB WRITEs OpenSSH's client sends
    /// once `limits@openssh.com` is offered (32 of its 32 KiB ones). Their answers are small
    /// status packets, so holding writes back can't cause the flow-control deadlock that small
    /// requests (READs, whose answers are large) could; it bounds the memory an upload can queue
    /// while the server is slower than the client. A session handles one request at a time and a
    /// queued frame's share is released as soon as it is taken for handling, so one frame waiting
    /// keeps a session busy; behind this budget russh's own channel queue holds up to
    /// `channel_buffer_size` more messages of the client's packet size. (4 MiB per session put
    /// 8 concurrent uploads' heap peak at ~60 MiB, 39 of it received data; see BENCHMARKS.md.)
    /// Must be at least `max_packet_len + 4 + 64` and at most `queue_bytes`.
    pub bulk_bytes: usize,
    /// Bytes of responses that may wait to be sent (for the client's window) before the next
    /// request is held back. Default 1 MiB: four of the 255 KiB read replies OpenSSH's client
    /// asks for once `limits@openssh.com` offers them (the buffer fills only while the client's
    /// window is closed).
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

/// What is done with one well-framed packet.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A request russh-sftp's parser accepts: handle it.
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

/// What is queued for one frame: its pieces (a request to handle) or a reply of its own.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Checked {
    /// Handle the request in these pieces.
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
// The byte-capped request queue

/// What is queued for one frame.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Work {
    /// A well-formed request: the pieces of its frame (length prefix included).
    Request(VecDeque<Bytes>),
    /// The STATUS packet answering a request that was refused (see [`Verdict::Reply`]).
    Reply(Bytes),
}

#[derive(Debug)]
struct Queued {
    work: Work,
    /// Its share of the queue's budget: the frame's length plus [`FRAME_OVERHEAD`].
    charge: usize,
    /// Whether the share also counts against the bulk budget.
    bulk: bool,
}

/// The requests received and not yet taken for handling, capped in bytes: frames come out of the
/// [`Framer`], are checked, and are admitted while they fit [`TransportConfig::queue_bytes`] (and,
/// for large ones, [`TransportConfig::bulk_bytes`]). A frame that doesn't fit is held until
/// enough is taken off the queue; meanwhile the channel is not read ([`Inbox::wants_data`]).
#[derive(Debug)]
pub(crate) struct Inbox {
    framer: Framer,
    held: Option<Queued>,
    items: VecDeque<Queued>,
    queued: usize,
    bulk_queued: usize,
    queue_bytes: usize,
    bulk_bytes: usize,
    /// No more requests are taken (client EOF, channel closed or session aborted).
    closed: bool,
}

impl Inbox {
    pub(crate) fn new(config: &TransportConfig) -> Self {
        Inbox {
            framer: Framer::new(config.max_packet_len),
            held: None,
            items: VecDeque::new(),
            queued: 0,
            bulk_queued: 0,
            queue_bytes: config.queue_bytes,
            bulk_bytes: config.bulk_bytes,
            closed: false,
        }
    }

    /// Whether more data may be read from the channel: no checked frame waits for room.
    pub(crate) fn wants_data(&self) -> bool {
        self.held.is_none()
    }

    /// Whether nothing is queued or held.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty() && self.held.is_none()
    }

    /// Takes received bytes: queues the frames they complete, as far as they fit. `Err` is a
    /// violation that ends the session (bad framing, or a packet without a request id).
    pub(crate) fn push(&mut self, data: Bytes) -> Result<(), String> {
        if self.closed {
            return Ok(());
        }
        self.framer.push(data);
        self.admit()
    }

    /// Queues frames (the held one first) while they fit.
    pub(crate) fn admit(&mut self) -> Result<(), String> {
        loop {
            if let Some(q) = self.held.take() {
                let fits = self.queued + q.charge <= self.queue_bytes
                    && (!q.bulk || self.bulk_queued + q.charge <= self.bulk_bytes);
                if !fits {
                    self.held = Some(q);
                    return Ok(());
                }
                self.queued += q.charge;
                if q.bulk {
                    self.bulk_queued += q.charge;
                }
                self.items.push_back(q);
            }
            if self.closed {
                return Ok(());
            }
            let frame = match self.framer.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            let len = frame.len();
            // A frame is at most max_packet_len + 4 (+ overhead) <= bulk_bytes <= queue_bytes
            // (validated), so it fits an empty queue.
            let (work, bulk) = match check_frame(frame) {
                Checked::Forward(parts) => (Work::Request(parts), len > SMALL_FRAME),
                Checked::Reply(status) => (Work::Reply(status), false),
                Checked::Violation(why) => return Err(why),
            };
            self.held = Some(Queued {
                work,
                charge: len + FRAME_OVERHEAD,
                bulk,
            });
        }
    }

    /// The next request in order, releasing its share of the budgets. Call [`Inbox::admit`]
    /// afterwards to queue a frame that was held for lack of room.
    pub(crate) fn pop(&mut self) -> Option<Work> {
        let q = self.items.pop_front()?;
        self.queued -= q.charge;
        if q.bulk {
            self.bulk_queued -= q.charge;
        }
        Some(q.work)
    }

    /// No more requests (client EOF or channel closed): what is queued stays, an incomplete
    /// frame is dropped and later data is ignored.
    pub(crate) fn close(&mut self) {
        if self.framer.pending() > 0 {
            debug!(
                bytes = self.framer.pending(),
                "client EOF in the middle of an SFTP packet; the partial packet is dropped"
            );
        }
        self.closed = true;
        self.framer = Framer::new(0);
    }

    /// The session is over: everything queued is discarded.
    pub(crate) fn abort(&mut self) {
        self.close();
        self.items.clear();
        self.held = None;
        self.queued = 0;
        self.bulk_queued = 0;
    }
}

// ---------------------------------------------------------------------------------------------
// Handling a request

const SSH_FX_FAILURE: u32 = 4;

/// A request being handled: resolves to the handler (moved in, handed back) and the response
/// packet, length prefix included.
type Handling = Pin<Box<dyn Future<Output = (Box<dyn Serve>, Bytes)> + Send>>;

/// A russh-sftp [`Handler`] behind a trait object (so that a
/// [`SessionFactory`](super::SessionFactory) can be one).
trait Serve: Send {
    /// Handle one request.
    fn serve(self: Box<Self>, request: Packet) -> Handling;
}

impl<H: Handler + Send + 'static> Serve for H {
    fn serve(mut self: Box<Self>, request: Packet) -> Handling {
        let id = request.get_request_id();
        let span = tracing::debug_span!("sftp_request", id, kind = request_kind(&request));
        Box::pin(
            async move {
                let response = process_request(request, &mut *self).await;
                (self as Box<dyn Serve>, encode(id, response))
            }
            .instrument(span),
        )
    }
}

/// A STATUS packet for a handler's error.
fn status_reply(id: u32, reply: StatusReply) -> Packet {
    let StatusReply {
        status_code,
        error_message,
        language_tag,
    } = reply;
    Packet::Status(russh_sftp::protocol::Status {
        id,
        status_code,
        error_message: error_message.unwrap_or_else(|| status_code.to_string()),
        language_tag: language_tag.unwrap_or_else(|| "en-US".to_owned()),
    })
}

/// Calls the handler's method for `request` and turns its result into the response (what
/// russh-sftp's private `process_request` does).
async fn process_request<H: Handler + Send>(request: Packet, h: &mut H) -> Packet {
    let id = request.get_request_id();
    macro_rules! call {
        ($method:ident($($arg:expr),*)) => {
            match h.$method($($arg),*).await {
                Ok(r) => r.into(),
                Err(e) => status_reply(id, e.into()),
            }
        };
    }
    match request {
        Packet::Init(p) => call!(init(p.version, p.extensions)),
        Packet::Open(p) => call!(open(p.id, p.filename, p.pflags, p.attrs)),
        Packet::Close(p) => call!(close(p.id, p.handle)),
        Packet::Read(p) => call!(read(p.id, p.handle, p.offset, p.len)),
        Packet::Write(p) => call!(write(p.id, p.handle, p.offset, p.data)),
        Packet::Lstat(p) => call!(lstat(p.id, p.path)),
        Packet::Fstat(p) => call!(fstat(p.id, p.handle)),
        Packet::SetStat(p) => call!(setstat(p.id, p.path, p.attrs)),
        Packet::FSetStat(p) => call!(fsetstat(p.id, p.handle, p.attrs)),
        Packet::OpenDir(p) => call!(opendir(p.id, p.path)),
        Packet::ReadDir(p) => call!(readdir(p.id, p.handle)),
        Packet::Remove(p) => call!(remove(p.id, p.filename)),
        Packet::MkDir(p) => call!(mkdir(p.id, p.path, p.attrs)),
        Packet::RmDir(p) => call!(rmdir(p.id, p.path)),
        Packet::RealPath(p) => call!(realpath(p.id, p.path)),
        Packet::Stat(p) => call!(stat(p.id, p.path)),
        Packet::Rename(p) => call!(rename(p.id, p.oldpath, p.newpath)),
        Packet::ReadLink(p) => call!(readlink(p.id, p.path)),
        Packet::Symlink(p) => call!(symlink(p.id, p.linkpath, p.targetpath)),
        Packet::Extended(p) => call!(extended(p.id, p.request, p.data)),
        // check_request refuses server-side packet types before they get here.
        _ => Packet::error(id, StatusCode::BadMessage),
    }
}

/// The request's type, for its tracing span.
fn request_kind(p: &Packet) -> &'static str {
    match p {
        Packet::Init(_) => "init",
        Packet::Open(_) => "open",
        Packet::Close(_) => "close",
        Packet::Read(_) => "read",
        Packet::Write(_) => "write",
        Packet::Lstat(_) => "lstat",
        Packet::Fstat(_) => "fstat",
        Packet::SetStat(_) => "setstat",
        Packet::FSetStat(_) => "fsetstat",
        Packet::OpenDir(_) => "opendir",
        Packet::ReadDir(_) => "readdir",
        Packet::Remove(_) => "remove",
        Packet::MkDir(_) => "mkdir",
        Packet::RmDir(_) => "rmdir",
        Packet::RealPath(_) => "realpath",
        Packet::Stat(_) => "stat",
        Packet::Rename(_) => "rename",
        Packet::ReadLink(_) => "readlink",
        Packet::Symlink(_) => "symlink",
        Packet::Extended(_) => "extended",
        _ => "other",
    }
}

/// The response's bytes; a response that can't be encoded is answered with a failure status.
fn encode(id: u32, response: Packet) -> Bytes {
    match Bytes::try_from(response) {
        Ok(b) => b,
        Err(e) => {
            warn!(id, error = %e, "SFTP response could not be encoded");
            status_packet(id, SSH_FX_FAILURE, "response could not be encoded")
        }
    }
}

/// The bytes `start..start + len` of a frame in pieces, copied into one vector.
fn copy_range(parts: &VecDeque<Bytes>, mut start: usize, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    for p in parts {
        if out.len() == len {
            break;
        }
        if start >= p.len() {
            start -= p.len();
            continue;
        }
        let take = (p.len() - start).min(len - out.len());
        out.extend_from_slice(p.get(start..start + take).unwrap_or_default());
        start = 0;
    }
    out
}

/// A WRITE request whose frame arrived in several pieces, with its data copied once from them
/// (rather than joined and then copied again by the parser). `None` if it isn't a well-formed
/// WRITE (the caller then parses it the general way).
fn write_from_parts(parts: &VecDeque<Bytes>, total: usize) -> Option<Packet> {
    let head = copy_range(parts, 0, WRITE_HEAD.min(total));
    if !write_head_ok(&head, total) {
        return None;
    }
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(head.get(at..at + 4)?.try_into().ok()?))
    };
    // length(4) type(1) id(4) handle-length(4) handle offset(8) data-length(4) data
    let id = u32_at(5)?;
    let handle_len = u32_at(9)? as usize;
    let handle = head.get(13..13 + handle_len)?;
    let offset_at = 13 + handle_len;
    let offset = u64::from_be_bytes(head.get(offset_at..offset_at + 8)?.try_into().ok()?);
    let data_len = u32_at(offset_at + 8)? as usize;
    let data = copy_range(parts, offset_at + 12, data_len);
    Some(Packet::Write(russh_sftp::protocol::Write {
        id,
        // russh-sftp's parser replaces invalid UTF-8 the same way.
        handle: String::from_utf8_lossy(handle).into_owned(),
        offset,
        data,
    }))
}

/// Parses a checked request (length prefix included). `Err` is the STATUS reply to send instead
/// (not expected: the frame passed [`check_frame`]).
fn parse_request(parts: VecDeque<Bytes>) -> Result<Packet, Bytes> {
    let total: usize = parts.iter().map(Bytes::len).sum();
    if parts.len() > 1
        && let Some(p) = write_from_parts(&parts, total)
    {
        return Ok(p);
    }
    let frame = Frame { parts, len: total }.to_bytes();
    let mut body = frame.slice(4.min(frame.len())..);
    let id = body
        .get(1..5)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes);
    Packet::try_from(&mut body).map_err(|e| {
        warn!(id, error = %e, "checked SFTP request failed to parse");
        status_packet(id, SSH_FX_BAD_MESSAGE, &format!("malformed request: {e}"))
    })
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// One SFTP session ready to run: a russh-sftp `Handler`, type-erased so that a
/// [`SessionFactory`](super::SessionFactory) can be a trait object.
pub struct SftpSession {
    handler: Box<dyn Serve>,
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
        H: Handler + Send + 'static,
    {
        SftpSession {
            handler: Box::new(handler),
        }
    }
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
    /// Attach the adapter to a freshly opened channel. Spawns the channel's task on the current
    /// tokio runtime (inside `span`). Cancelling `cancel` closes the channel; the adapter cancels
    /// it itself when the session ends. `slot` (e.g. a per-connection channel permit) is held
    /// until the task has ended. `config` must have passed [`TransportConfig::validate`].
    pub fn spawn(
        channel: Channel<Msg>,
        config: &TransportConfig,
        cancel: CancellationToken,
        span: Span,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        let (read_half, write_half) = channel.split();
        let started = Arc::new(AtomicBool::new(false));
        let (start_tx, start_rx) = oneshot::channel();
        let task = ChannelTask {
            inbox: Inbox::new(config),
            start_rx,
            started: started.clone(),
            cancel,
            write_buffer: config.write_buffer,
            pre_start_left: config.pre_start_bytes,
        };
        tokio::spawn(
            async move {
                task.run(read_half, ChannelOut(write_half)).await;
                drop(slot);
            }
            .instrument(span),
        );
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

// ---------------------------------------------------------------------------------------------
// Without SSH: the same task over bytes in memory (fuzzing, tests)

/// The client's bytes, queued up front, then EOF.
struct MemIn(tokio::sync::mpsc::UnboundedReceiver<ChannelMsg>);

impl Inbound for MemIn {
    fn recv(&mut self) -> impl Future<Output = Option<ChannelMsg>> + Send {
        self.0.recv()
    }
}

/// Collects what the server sends; the client's window never closes.
struct MemOut(Arc<std::sync::Mutex<Vec<u8>>>);

impl Outbound for MemOut {
    async fn send(&self, data: Bytes) -> Result<(), russh::Error> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(&data);
        Ok(())
    }

    async fn close(&self) {}
}

/// Runs one SFTP session on `handler` over bytes in memory, without SSH: `input` is what a client
/// sent on the channel, delivered in pieces of `piece` bytes (at least 1) and followed by EOF; the
/// result is everything the server sent back. The path of a request is the real one: framing and
/// request checks, in-order dispatch to the handler, responses. For fuzzing and tests.
#[doc(hidden)]
pub async fn run_in_memory<H>(
    handler: H,
    config: &TransportConfig,
    input: &[u8],
    piece: usize,
) -> Vec<u8>
where
    H: Handler + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for chunk in input.chunks(piece.max(1)) {
        let _ = tx.send(ChannelMsg::Data {
            data: Bytes::copy_from_slice(chunk),
        });
    }
    let _ = tx.send(ChannelMsg::Eof);
    drop(tx);
    let (start_tx, start_rx) = oneshot::channel();
    let _ = start_tx.send(SftpSession::new(handler));
    let task = ChannelTask {
        inbox: Inbox::new(config),
        start_rx,
        started: Arc::new(AtomicBool::new(true)),
        cancel: CancellationToken::new(),
        write_buffer: config.write_buffer,
        pre_start_left: config.pre_start_bytes,
    };
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    task.run(MemIn(rx), MemOut(sent.clone())).await;
    std::mem::take(
        &mut *sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

// ---------------------------------------------------------------------------------------------
// The channel's task

/// The channel's incoming side as the task sees it (a trait so that tests can drive the task).
trait Inbound: Send {
    /// The next message; `None` once the channel is gone.
    fn recv(&mut self) -> impl Future<Output = Option<ChannelMsg>> + Send;
}

impl Inbound for ChannelReadHalf {
    fn recv(&mut self) -> impl Future<Output = Option<ChannelMsg>> + Send {
        self.wait()
    }
}

/// The channel's outgoing side as the task sees it.
trait Outbound: Send + Sync {
    /// Send data, waiting for the client's window.
    fn send(&self, data: Bytes) -> impl Future<Output = Result<(), russh::Error>> + Send;
    /// Send EOF and CLOSE (errors ignored: the channel may be gone already).
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// The write half of a russh channel.
struct ChannelOut(ChannelWriteHalf<Msg>);

impl Outbound for ChannelOut {
    fn send(&self, data: Bytes) -> impl Future<Output = Result<(), russh::Error>> + Send {
        self.0.data_bytes(data)
    }

    async fn close(&self) {
        let _ = self.0.eof().await;
        let _ = self.0.close().await;
    }
}

/// Responses waiting together are sent as one piece (one SSH packet for small ones) up to this
/// size; a larger response goes alone, without a copy.
const SEND_BATCH: usize = 64 * 1024;

/// The next piece to send: the first response, joined with the ones after it while the whole
/// stays within [`SEND_BATCH`].
fn take_batch(out: &mut VecDeque<Bytes>) -> Option<Bytes> {
    let first = out.pop_front()?;
    let fits = |len: usize, next: Option<&Bytes>| next.is_some_and(|n| len + n.len() <= SEND_BATCH);
    if !fits(first.len(), out.front()) {
        return Some(first);
    }
    let mut batch = BytesMut::with_capacity(
        SEND_BATCH.min(out.iter().map(Bytes::len).sum::<usize>() + first.len()),
    );
    batch.extend_from_slice(&first);
    while fits(batch.len(), out.front()) {
        if let Some(next) = out.pop_front() {
            batch.extend_from_slice(&next);
        }
    }
    Some(batch.freeze())
}

/// Sends one piece; resolves to its length.
async fn send_piece<O: Outbound>(out: &O, piece: Bytes) -> Result<usize, russh::Error> {
    let len = piece.len();
    out.send(piece).await?;
    Ok(len)
}

/// Waits for the future in `slot`, or forever if there is none.
async fn next_of<F: Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    match slot.as_mut() {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Why the channel's task stopped.
#[derive(Debug)]
enum End {
    /// The client sent EOF (or closed the channel) and every request was answered.
    Done,
    /// Never became an SFTP session: the channel was closed, or the connection handler let the
    /// transport go (it refused the session or saw the channel close).
    NotStarted,
    /// `cancel` was cancelled (server shutdown, connection gone).
    Cancelled,
    /// The client broke the protocol.
    Violation(String),
    /// A response could not be sent (the connection is gone).
    WriteFailed(russh::Error),
}

/// The state of one channel's task (see the module docs).
struct ChannelTask {
    inbox: Inbox,
    start_rx: oneshot::Receiver<SftpSession>,
    started: Arc<AtomicBool>,
    cancel: CancellationToken,
    write_buffer: usize,
    pre_start_left: usize,
}

impl ChannelTask {
    async fn run<I: Inbound, O: Outbound>(mut self, mut inbound: I, outbound: O) {
        // The handler while it is idle; `None` before the session starts and while it handles a
        // request (it is inside `handling` then).
        let mut handler: Option<Box<dyn Serve>> = None;
        let mut session_started = false;
        let mut handling: Option<Handling> = None;
        // Responses not yet handed to `sending`, and the bytes they and the piece being sent hold.
        let mut responses: VecDeque<Bytes> = VecDeque::new();
        let mut response_bytes = 0usize;
        let mut sending = None;
        // The channel's incoming side is open; requests are still accepted (no EOF yet).
        let mut reading = true;
        let mut requests_open = true;
        let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
        let cancelled = self.cancel.cancelled();
        tokio::pin!(cancelled);

        let end = 'session: loop {
            // Take the next requests in order while the handler is idle and the responses
            // waiting to be sent leave room.
            while handling.is_none() && response_bytes < self.write_buffer {
                let Some(h) = handler.take() else { break };
                match self.inbox.pop() {
                    None => {
                        handler = Some(h);
                        break;
                    }
                    Some(Work::Reply(status)) => {
                        handler = Some(h);
                        response_bytes += status.len();
                        responses.push_back(status);
                    }
                    Some(Work::Request(parts)) => match parse_request(parts) {
                        Ok(request) => handling = Some(h.serve(request)),
                        Err(status) => {
                            handler = Some(h);
                            response_bytes += status.len();
                            responses.push_back(status);
                        }
                    },
                }
                if let Err(why) = self.inbox.admit() {
                    break 'session End::Violation(why);
                }
            }
            if sending.is_none()
                && let Some(piece) = take_batch(&mut responses)
            {
                sending = Some(Box::pin(send_piece(&outbound, piece)));
            }
            if session_started
                && !requests_open
                && handling.is_none()
                && sending.is_none()
                && self.inbox.is_empty()
            {
                break End::Done;
            }
            if !session_started && !reading {
                break End::NotStarted;
            }
            tokio::select! {
                biased;
                () = &mut cancelled => break End::Cancelled,
                s = &mut self.start_rx, if !session_started => match s {
                    Ok(session) => {
                        debug!("sftp session started");
                        session_started = true;
                        handler = Some(session.handler);
                    }
                    Err(_) => break End::NotStarted,
                },
                (h, response) = next_of(&mut handling) => {
                    handling = None;
                    handler = Some(h);
                    response_bytes += response.len();
                    responses.push_back(response);
                }
                sent = next_of(&mut sending) => {
                    sending = None;
                    match sent {
                        Ok(n) => {
                            bytes_out += n as u64;
                            response_bytes = response_bytes.saturating_sub(n);
                        }
                        Err(e) => break End::WriteFailed(e),
                    }
                }
                msg = inbound.recv(), if reading && self.inbox.wants_data() => match msg {
                    Some(ChannelMsg::Data { data }) => {
                        bytes_in += data.len() as u64;
                        if !requests_open {
                            // Data after EOF: ignored.
                            continue;
                        }
                        if !self.started.load(Ordering::Acquire) {
                            match self.pre_start_left.checked_sub(data.len()) {
                                Some(left) => self.pre_start_left = left,
                                None => break End::Violation(
                                    "too much data on a channel without a running sftp \
                                     subsystem".to_owned(),
                                ),
                            }
                        }
                        if let Err(why) = self.inbox.push(data) {
                            break End::Violation(why);
                        }
                    }
                    Some(ChannelMsg::Eof) => {
                        requests_open = false;
                        self.inbox.close();
                    }
                    Some(ChannelMsg::Close) | None => {
                        reading = false;
                        requests_open = false;
                        self.inbox.close();
                    }
                    // Extended data, window adjustments, requests (answered by the connection
                    // handler): nothing to do, but they must be drained.
                    Some(_) => {}
                },
            }
        };

        // Dropping the read half makes russh discard anything still sent to this channel instead
        // of blocking on it.
        drop(inbound);
        self.inbox.abort();
        drop(sending);
        if let Some(h) = handling.take() {
            // Let the request in progress finish (a commit must not be cut off halfway); its
            // answer can't be sent any more.
            tokio::spawn(h.in_current_span());
        }
        let close = match &end {
            End::Done | End::Cancelled => true,
            End::NotStarted => self.cancel.is_cancelled(),
            End::Violation(reason) => {
                warn!(%reason, "closing the SFTP session: protocol violation");
                true
            }
            End::WriteFailed(e) => {
                debug!(error = %e, "sftp channel write ended");
                true
            }
        };
        // Stop anything else tied to this channel's token before closing.
        self.cancel.cancel();
        if close {
            outbound.close().await;
        }
        if session_started {
            debug!(bytes_in, bytes_out, "sftp session ended");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;
    use tokio::sync::{Semaphore, mpsc};
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

    fn inbox(queue_bytes: usize, bulk_bytes: usize, max_packet_len: u32) -> Inbox {
        Inbox::new(&TransportConfig {
            max_packet_len,
            queue_bytes,
            bulk_bytes,
            ..TransportConfig::default()
        })
    }

    fn popped_request(i: &mut Inbox) -> Vec<u8> {
        match i.pop() {
            Some(Work::Request(parts)) => parts.iter().flat_map(|p| p.iter().copied()).collect(),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn large_requests_wait_on_the_bulk_budget_small_ones_do_not() {
        let one_write = 32 * 1024 + 64 + 27;
        let mut i = inbox(1 << 20, 2 * (one_write + FRAME_OVERHEAD), 64 * 1024);
        // Two writes fit the bulk budget; small requests don't count against it.
        for id in 1..=2 {
            let w = write_request(id, 32 * 1024 + 64);
            assert_eq!(w.len(), one_write);
            i.push(Bytes::from(w)).unwrap();
            assert!(i.wants_data());
        }
        for id in 3..=50 {
            i.push(Bytes::from(stat_request(id))).unwrap();
            assert!(i.wants_data());
        }
        // A third write is held (and the channel not read) until a queued write is taken.
        i.push(Bytes::from(write_request(51, 32 * 1024 + 64)))
            .unwrap();
        assert!(!i.wants_data(), "the third write must wait");
        assert_eq!(popped_request(&mut i), write_request(1, 32 * 1024 + 64));
        i.admit().unwrap();
        assert!(i.wants_data());
        // Order is kept: the second write, the small requests, then the third write.
        assert_eq!(popped_request(&mut i), write_request(2, 32 * 1024 + 64));
        assert_eq!(popped_request(&mut i), stat_request(3));
        for _ in 4..=50 {
            popped_request(&mut i);
        }
        assert_eq!(popped_request(&mut i), write_request(51, 32 * 1024 + 64));
        assert!(i.is_empty());
        assert_eq!((i.queued, i.bulk_queued), (0, 0));
    }

    #[test]
    fn the_queue_budget_holds_small_requests_too() {
        let stat = stat_request(1).len() + FRAME_OVERHEAD;
        let mut i = inbox(2048, 2048, 1024);
        let mut all = Vec::new();
        for id in 1..=40 {
            all.extend(stat_request(id));
        }
        // One message with 40 requests: as many as fit are queued, the next is held.
        i.push(Bytes::from(all)).unwrap();
        assert!(!i.wants_data());
        assert_eq!(i.items.len(), 2048 / stat);
        assert_eq!(popped_request(&mut i), stat_request(1));
        i.admit().unwrap();
        // the rest of the message stays in the framer until there is room
        let mut ids = vec![1];
        while let Some(Work::Request(parts)) = i.pop() {
            let f: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
            ids.push(u32::from_be_bytes(f[5..9].try_into().unwrap()));
            i.admit().unwrap();
        }
        assert_eq!(ids, (1..=40).collect::<Vec<_>>());
    }

    /// The default bulk budget queues four of OpenSSH's 255 KiB WRITEs per session (so a session
    /// always has its next write waiting) and holds the fifth back until one is taken.
    #[test]
    fn default_bulk_budget_queues_four_openssh_writes() {
        let cfg = TransportConfig::default();
        // limits@openssh.com offers max_packet_len - 1024 bytes per WRITE.
        let data_len = cfg.max_packet_len as usize - 1024;
        let mut i = Inbox::new(&cfg);
        for id in 1..=4 {
            i.push(Bytes::from(write_request(id, data_len))).unwrap();
            assert!(i.wants_data(), "write {id} was held");
        }
        i.push(Bytes::from(write_request(5, data_len))).unwrap();
        assert!(!i.wants_data(), "the fifth write must wait");
        popped_request(&mut i);
        i.admit().unwrap();
        assert!(i.wants_data());
    }

    #[test]
    fn eof_keeps_what_is_queued_and_drops_the_rest() {
        let mut i = inbox(1 << 20, 1 << 19, 64 * 1024);
        let mut data = stat_request(1);
        data.extend_from_slice(&stat_request(2)[..7]);
        i.push(Bytes::from(data)).unwrap();
        i.close();
        i.push(Bytes::from(stat_request(3))).unwrap();
        assert_eq!(popped_request(&mut i), stat_request(1));
        assert!(i.pop().is_none());
        // abort discards even what was queued
        let mut i = inbox(1 << 20, 1 << 19, 64 * 1024);
        i.push(Bytes::from(stat_request(1))).unwrap();
        i.abort();
        assert!(i.pop().is_none() && i.is_empty());
    }

    #[test]
    fn writes_in_pieces_parse_with_their_data_intact() {
        let w = write_request(9, 40_000);
        for cut in [20, 32_768] {
            let parts = VecDeque::from([
                Bytes::copy_from_slice(&w[..cut]),
                Bytes::copy_from_slice(&w[cut..]),
            ]);
            match parse_request(parts) {
                Ok(Packet::Write(p)) => {
                    assert_eq!((p.id, p.handle.as_str(), p.offset), (9, "h1", 0));
                    assert_eq!(p.data, vec![7u8; 40_000]);
                }
                other => panic!("{other:?}"),
            }
        }
        // In one piece, and other requests, go through russh-sftp's parser.
        match parse_request(VecDeque::from([Bytes::from(w)])) {
            Ok(Packet::Write(p)) => assert_eq!(p.data.len(), 40_000),
            other => panic!("{other:?}"),
        }
        match parse_request(VecDeque::from([Bytes::from(stat_request(4))])) {
            Ok(Packet::Stat(p)) => assert_eq!((p.id, p.path.as_str()), (4, "/x")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn small_responses_are_sent_together_large_ones_alone() {
        let mut q: VecDeque<Bytes> = [10usize, 20, 30, 40_000, 30_000, 70_000, 5]
            .iter()
            .map(|&n| Bytes::from(vec![n as u8; n]))
            .collect();
        let sizes: Vec<usize> = std::iter::from_fn(|| take_batch(&mut q))
            .map(|b| b.len())
            .collect();
        assert_eq!(sizes, [40_060, 30_000, 70_000, 5]);
    }

    // --- The channel's task, driven without SSH -------------------------------------------

    struct TestIn(mpsc::Receiver<ChannelMsg>);

    impl Inbound for TestIn {
        fn recv(&mut self) -> impl Future<Output = Option<ChannelMsg>> + Send {
            self.0.recv()
        }
    }

    /// A channel whose client window is a semaphore of bytes.
    struct TestOut {
        sent: mpsc::UnboundedSender<Bytes>,
        window: Arc<Semaphore>,
        closed: Arc<AtomicBool>,
    }

    impl Outbound for TestOut {
        async fn send(&self, data: Bytes) -> Result<(), russh::Error> {
            let n = u32::try_from(data.len()).unwrap();
            self.window
                .acquire_many(n)
                .await
                .map_err(|_| russh::Error::SendError)?
                .forget();
            self.sent.send(data).map_err(|_| russh::Error::SendError)
        }

        async fn close(&self) {
            self.closed.store(true, Ordering::Release);
        }
    }

    /// A WRITE's offset and data.
    type Written = (u64, Vec<u8>);

    #[derive(Default, Clone)]
    struct Seen {
        reads: Arc<AtomicUsize>,
        writes: Arc<std::sync::Mutex<Vec<Written>>>,
        finished_slow: Arc<AtomicBool>,
    }

    /// A handler that answers from nothing: reads return `len` bytes, writes are recorded,
    /// `/missing` does not exist, and removing `/slow` waits for `gate`.
    struct TestHandler {
        seen: Seen,
        gate: Arc<tokio::sync::Notify>,
    }

    impl Handler for TestHandler {
        type Error = StatusCode;

        fn unimplemented(&self) -> StatusCode {
            StatusCode::OpUnsupported
        }

        async fn stat(
            &mut self,
            id: u32,
            path: String,
        ) -> Result<russh_sftp::protocol::Attrs, StatusCode> {
            if path == "/missing" {
                return Err(StatusCode::NoSuchFile);
            }
            Ok(russh_sftp::protocol::Attrs {
                id,
                attrs: Default::default(),
            })
        }

        async fn read(
            &mut self,
            id: u32,
            _handle: String,
            _offset: u64,
            len: u32,
        ) -> Result<russh_sftp::protocol::Data, StatusCode> {
            self.seen.reads.fetch_add(1, Ordering::SeqCst);
            Ok(russh_sftp::protocol::Data {
                id,
                data: vec![b'r'; len as usize],
            })
        }

        async fn write(
            &mut self,
            id: u32,
            _handle: String,
            offset: u64,
            data: Vec<u8>,
        ) -> Result<russh_sftp::protocol::Status, StatusCode> {
            self.seen.writes.lock().unwrap().push((offset, data));
            Ok(russh_sftp::protocol::Status {
                id,
                status_code: StatusCode::Ok,
                error_message: "Ok".into(),
                language_tag: "en-US".into(),
            })
        }

        async fn remove(
            &mut self,
            _id: u32,
            _filename: String,
        ) -> Result<russh_sftp::protocol::Status, StatusCode> {
            self.gate.notified().await;
            self.seen.finished_slow.store(true, Ordering::SeqCst);
            Err(StatusCode::PermissionDenied)
        }
    }

    struct Harness {
        tx: mpsc::Sender<ChannelMsg>,
        start: Option<ChannelTransportParts>,
        window: Arc<Semaphore>,
        closed: Arc<AtomicBool>,
        sent: mpsc::UnboundedReceiver<Bytes>,
        wire: Vec<u8>,
        task: tokio::task::JoinHandle<()>,
        cancel: CancellationToken,
        seen: Seen,
        gate: Arc<tokio::sync::Notify>,
    }

    struct ChannelTransportParts {
        start_tx: oneshot::Sender<SftpSession>,
        started: Arc<AtomicBool>,
    }

    /// A task over a test channel (russh's queue of 32 messages), with `window` bytes of client
    /// window.
    fn harness(config: TransportConfig, window: usize) -> Harness {
        let (tx, rx) = mpsc::channel(32);
        let (sent_tx, sent) = mpsc::unbounded_channel();
        let window = Arc::new(Semaphore::new(window));
        let closed = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicBool::new(false));
        let (start_tx, start_rx) = oneshot::channel();
        let cancel = CancellationToken::new();
        let task = ChannelTask {
            inbox: Inbox::new(&config),
            start_rx,
            started: started.clone(),
            cancel: cancel.clone(),
            write_buffer: config.write_buffer,
            pre_start_left: config.pre_start_bytes,
        };
        let out = TestOut {
            sent: sent_tx,
            window: window.clone(),
            closed: closed.clone(),
        };
        let task = tokio::spawn(task.run(TestIn(rx), out));
        Harness {
            tx,
            start: Some(ChannelTransportParts { start_tx, started }),
            window,
            closed,
            sent,
            wire: Vec::new(),
            task,
            cancel,
            seen: Seen::default(),
            gate: Arc::new(tokio::sync::Notify::new()),
        }
    }

    const QUICK: Duration = Duration::from_secs(5);

    impl Harness {
        fn start(&mut self) {
            let parts = self.start.take().unwrap();
            let t = ChannelTransport {
                start_tx: parts.start_tx,
                started: parts.started,
            };
            assert!(t.start(SftpSession::new(TestHandler {
                seen: self.seen.clone(),
                gate: self.gate.clone(),
            })));
        }

        async fn send(&self, b: impl Into<Bytes>) {
            timeout(QUICK, self.tx.send(ChannelMsg::Data { data: b.into() }))
                .await
                .expect("the task stopped draining the channel")
                .unwrap();
        }

        /// The next `n` responses as (type, id, the rest of the packet).
        async fn responses(&mut self, n: usize) -> Vec<(u8, u32, Vec<u8>)> {
            let mut out = Vec::new();
            while out.len() < n {
                if self.wire.len() >= 4 {
                    let len = u32::from_be_bytes(self.wire[..4].try_into().unwrap()) as usize;
                    if self.wire.len() >= 4 + len {
                        let p: Vec<u8> = self.wire.drain(..4 + len).collect();
                        let id = u32::from_be_bytes(p[5..9].try_into().unwrap());
                        out.push((p[4], id, p[9..].to_vec()));
                        continue;
                    }
                }
                let b = timeout(QUICK, self.sent.recv())
                    .await
                    .expect("no response")
                    .expect("the task ended");
                self.wire.extend_from_slice(&b);
            }
            out
        }

        /// Waits for the task to end; whether it closed the channel.
        async fn ended(self) -> (bool, Vec<u8>) {
            let Harness {
                task,
                closed,
                mut sent,
                mut wire,
                ..
            } = self;
            timeout(QUICK, task)
                .await
                .expect("task still running")
                .unwrap();
            while let Ok(b) = sent.try_recv() {
                wire.extend_from_slice(&b);
            }
            (closed.load(Ordering::Acquire), wire)
        }
    }

    fn init() -> Vec<u8> {
        frame(&[SSH_FXP_INIT, 0, 0, 0, 3])
    }

    fn stat_of(id: u32, path: &str) -> Vec<u8> {
        packet(17, &[&id.to_be_bytes(), &string(path.as_bytes())]).to_vec()
    }

    fn read_request(id: u32, len: u32) -> Vec<u8> {
        packet(
            5,
            &[
                &id.to_be_bytes(),
                &string(b"h1"),
                &0u64.to_be_bytes(),
                &len.to_be_bytes(),
            ],
        )
        .to_vec()
    }

    /// The in-memory entry point (the SFTP fuzz target's) takes the real path: the same replies,
    /// in order, whatever the piece size, and a violation ends the session after the replies
    /// to the requests before it.
    #[tokio::test]
    async fn run_in_memory_answers_like_the_channel_task() {
        let mut all = init();
        all.extend(stat_of(1, "/a"));
        all.extend(packet(99, &[&2u32.to_be_bytes()]));
        all.extend(stat_of(3, "/missing"));
        all.extend(write_request(4, 100));
        let kinds = |wire: &[u8]| {
            let mut rest = wire;
            let mut out = Vec::new();
            while rest.len() >= 4 {
                let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
                let p = &rest[..4 + len];
                out.push((p[4], u32::from_be_bytes(p[5..9].try_into().unwrap())));
                rest = &rest[4 + len..];
            }
            assert!(rest.is_empty(), "a reply cut short");
            out
        };
        let handler = || TestHandler {
            seen: Seen::default(),
            gate: Arc::new(tokio::sync::Notify::new()),
        };
        let cfg = TransportConfig::default();
        for piece in [1, 7, 4096, usize::MAX] {
            let wire = run_in_memory(handler(), &cfg, &all, piece).await;
            assert_eq!(
                kinds(&wire),
                [(2, 3), (105, 1), (101, 2), (101, 3), (101, 4)],
                "piece {piece}"
            );
        }
        // A lying length after two requests: their replies, then the session ends.
        let mut bad = init();
        bad.extend(stat_of(1, "/a"));
        bad.extend((u32::MAX).to_be_bytes());
        bad.extend(stat_of(2, "/b"));
        let wire = run_in_memory(handler(), &cfg, &bad, 5).await;
        assert_eq!(kinds(&wire), [(2, 3), (105, 1)]);
    }

    #[tokio::test]
    async fn requests_are_answered_in_order_with_refused_ones_between() {
        let mut h = harness(TransportConfig::default(), usize::MAX >> 4);
        h.start();
        let mut all = init();
        all.extend(stat_of(1, "/a"));
        all.extend(packet(99, &[&2u32.to_be_bytes()]));
        all.extend(stat_of(3, "/missing"));
        all.extend(write_request(4, 100));
        // split in awkward places
        let (a, b) = all.split_at(7);
        h.send(Bytes::copy_from_slice(a)).await;
        h.send(Bytes::copy_from_slice(b)).await;
        h.tx.send(ChannelMsg::Eof).await.unwrap();
        let r = h.responses(5).await;
        let kinds: Vec<(u8, u32)> = r.iter().map(|(k, id, _)| (*k, *id)).collect();
        // VERSION carries the version where the id would be
        assert_eq!(kinds, [(2, 3), (105, 1), (101, 2), (101, 3), (101, 4)]);
        let code = |r: &(u8, u32, Vec<u8>)| u32::from_be_bytes(r.2[..4].try_into().unwrap());
        assert_eq!(code(&r[2]), SSH_FX_OP_UNSUPPORTED);
        assert_eq!(code(&r[3]), 2); // NO_SUCH_FILE, from the handler
        assert_eq!(code(&r[4]), 0);
        assert_eq!(h.seen.writes.lock().unwrap()[0], (0, vec![7u8; 100]));
        // After EOF and the last answer the channel is closed.
        let (closed, rest) = h.ended().await;
        assert!(closed);
        assert!(rest.is_empty());
    }

    /// The deadlock regression, without SSH: while responses wait for a closed client window the
    /// task keeps draining the channel (russh's 32-message queue never stays full), stops
    /// handling once `write_buffer` bytes of responses wait, and catches up when the window opens.
    #[tokio::test]
    async fn keeps_draining_while_responses_wait_for_the_window() {
        let cfg = TransportConfig::default();
        let mut h = harness(cfg.clone(), 0);
        h.start();
        h.send(init()).await;
        const N: u32 = 300;
        for id in 1..=N {
            h.send(read_request(id, 32 * 1024)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let handled = h.seen.reads.load(Ordering::SeqCst);
        let most = cfg.write_buffer / (32 * 1024) + 2;
        assert!(
            (1..=most).contains(&handled),
            "{handled} reads handled with the window closed"
        );
        h.window.add_permits(usize::MAX >> 4);
        let r = h.responses(N as usize + 1).await;
        let ids: Vec<u32> = r
            .iter()
            .skip(1)
            .map(|(k, id, _)| {
                assert_eq!(*k, 103); // SSH_FXP_DATA
                *id
            })
            .collect();
        assert_eq!(ids, (1..=N).collect::<Vec<_>>());
        assert_eq!(h.seen.reads.load(Ordering::SeqCst), N as usize);
        h.tx.send(ChannelMsg::Close).await.unwrap();
        assert!(h.ended().await.0);
    }

    #[tokio::test]
    async fn a_violation_discards_queued_requests_and_closes() {
        let mut h = harness(TransportConfig::default(), usize::MAX >> 4);
        h.start();
        h.send(init()).await;
        h.send(stat_of(1, "/a")).await;
        assert_eq!(h.responses(2).await.len(), 2);
        // Requests queued behind a zero-length frame in the same message are not handled.
        let mut bad = Vec::new();
        for id in 2..=20 {
            bad.extend(write_request(id, 10));
        }
        bad.extend([0, 0, 0, 0]);
        h.send(bad).await;
        let seen = h.seen.clone();
        let (closed, rest) = h.ended().await;
        assert!(closed);
        assert!(
            rest.is_empty(),
            "{} bytes sent after the violation",
            rest.len()
        );
        assert!(seen.writes.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_unstarted_channel_is_capped_and_closed() {
        let cfg = TransportConfig::default();
        let h = harness(cfg.clone(), usize::MAX >> 4);
        // The start of a long (allowed) packet: not a framing violation by itself.
        let mut data = vec![0u8; cfg.pre_start_bytes];
        data[..4].copy_from_slice(&200_000u32.to_be_bytes());
        h.send(data).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!h.task.is_finished());
        h.send(vec![0u8; 1]).await;
        let cancel = h.cancel.clone();
        let (closed, rest) = h.ended().await;
        assert!(closed && rest.is_empty());
        assert!(cancel.is_cancelled());
    }

    #[tokio::test]
    async fn a_channel_closed_before_start_ends_quietly() {
        let mut h = harness(TransportConfig::default(), usize::MAX >> 4);
        h.tx.send(ChannelMsg::Close).await.unwrap();
        let parts = h.start.take().unwrap();
        let t = ChannelTransport {
            start_tx: parts.start_tx,
            started: parts.started,
        };
        let (closed, _) = h.ended().await;
        assert!(!closed, "the client closed it already");
        assert!(t.is_finished());
        assert!(!t.start(SftpSession::new(TestHandler {
            seen: Seen::default(),
            gate: Arc::new(tokio::sync::Notify::new()),
        })));
    }

    #[tokio::test]
    async fn cancel_closes_and_lets_the_request_in_progress_finish() {
        let mut h = harness(TransportConfig::default(), usize::MAX >> 4);
        h.start();
        h.send(init()).await;
        h.send(packet(13, &[&1u32.to_be_bytes(), &string(b"/slow")]).to_vec())
            .await;
        h.send(stat_of(2, "/a")).await;
        assert_eq!(h.responses(1).await[0].0, 2);
        h.cancel.cancel();
        let seen = h.seen.clone();
        let gate = h.gate.clone();
        let (closed, rest) = h.ended().await;
        assert!(closed);
        assert!(rest.is_empty());
        assert!(!seen.finished_slow.load(Ordering::SeqCst));
        gate.notify_one();
        timeout(QUICK, async {
            while !seen.finished_slow.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the request in progress was dropped");
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
