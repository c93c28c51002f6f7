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
//! - russh-sftp gets `tokio::io::join(frame reader, pipe)`.
//!
//! A framing violation is logged, nothing of the bad frame is forwarded, the frames still queued
//! are discarded, russh-sftp sees end-of-stream and the channel is closed (EOF + CLOSE). The rest
//! of the SSH connection is unaffected.
//!
//! The transport is attached when the channel is opened, before any subsystem is requested, so
//! that a channel which never becomes an SFTP session (a refused shell or exec) is still drained
//! and can't stall the connection; such a channel may queue at most
//! [`TransportConfig::pre_start_bytes`] before it is closed.

use super::SftpError;
use bytes::{Buf, Bytes, BytesMut};
use russh::server::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWriteExt, DuplexStream, ReadBuf};
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
    /// client reading its responses never reaches. Must be at least `max_packet_len + 4`.
    pub queue_bytes: usize,
    /// Bytes of responses buffered between russh-sftp and the writer task. Default 256 KiB.
    pub write_buffer: usize,
    /// Bytes a channel may send before its `sftp` subsystem has started. Default 64 KiB.
    pub pre_start_bytes: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            max_packet_len: 256 * 1024,
            queue_bytes: 32 * 1024 * 1024,
            write_buffer: 256 * 1024,
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

/// Splits a byte stream into SFTP frames (length prefix included), checking each length as soon
/// as its 4 bytes have arrived. Holds at most one partial frame plus the last chunk pushed.
#[derive(Debug)]
pub(crate) struct Framer {
    max: u32,
    buf: BytesMut,
}

impl Framer {
    pub(crate) fn new(max: u32) -> Self {
        Framer {
            max,
            buf: BytesMut::new(),
        }
    }

    /// Append received bytes.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete frame, `None` if more bytes are needed, or the framing error.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some(header) = self.buf.get(..4) else {
            return Ok(None);
        };
        let mut h = [0u8; 4];
        h.copy_from_slice(header);
        let len = u32::from_be_bytes(h);
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max {
            return Err(FrameError::TooLong { len, max: self.max });
        }
        let total = len as usize + 4;
        if self.buf.len() < total {
            if self.buf.capacity() < total {
                self.buf.reserve(total - self.buf.len());
            }
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(total).freeze()))
    }

    /// Bytes of an incomplete frame held back.
    pub(crate) fn pending(&self) -> usize {
        self.buf.len()
    }
}

// ---------------------------------------------------------------------------------------------
// The byte-capped frame queue and its reader

struct QueuedFrame {
    bytes: Bytes,
    _permit: OwnedSemaphorePermit,
}

/// The read side handed to russh-sftp: whole frames from the pump, end-of-stream when the pump
/// closes the queue or the session is aborted.
pub(crate) struct FrameReader {
    rx: mpsc::UnboundedReceiver<QueuedFrame>,
    current: Option<QueuedFrame>,
    aborted: Arc<AtomicBool>,
}

impl AsyncRead for FrameReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.aborted.load(Ordering::Acquire) {
                // Discard whatever is queued: the session is over.
                self.current = None;
                return Poll::Ready(Ok(()));
            }
            if let Some(frame) = self.current.as_mut() {
                if frame.bytes.has_remaining() {
                    let n = frame.bytes.len().min(buf.remaining());
                    buf.put_slice(frame.bytes.get(..n).unwrap_or_default());
                    frame.bytes.advance(n);
                    if !frame.bytes.has_remaining() {
                        // Releases the frame's bytes back to the queue's budget.
                        self.current = None;
                    }
                    return Poll::Ready(Ok(()));
                }
                self.current = None;
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(frame)) => self.current = Some(frame),
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// The stream russh-sftp runs over. Its write side is one end of a duplex pipe (only written):
/// unlike a split simplex pipe, a dropped `DuplexStream` signals end-of-stream to the other end,
/// and russh-sftp drops its stream without shutting it down.
pub(crate) type SftpStream = tokio::io::Join<FrameReader, DuplexStream>;

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
            aborted: aborted.clone(),
        };
        let pump = Pump {
            queue: Some(tx),
            budget: Arc::new(Semaphore::new(config.queue_bytes)),
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
                    if let Err(reason) = self.on_data(&data).await {
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

    async fn on_data(&mut self, data: &[u8]) -> Result<(), String> {
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
            // A frame is at most max_packet_len + 4 <= queue_bytes (validated), so this fits.
            let need = u32::try_from(frame.len()).unwrap_or(u32::MAX);
            let permit = tokio::select! {
                p = self.budget.clone().acquire_many_owned(need) => p,
                () = self.cancel.cancelled() => return Ok(()),
            };
            let Ok(permit) = permit else {
                return Err("internal: queue budget closed".to_owned());
            };
            let item = QueuedFrame {
                bytes: frame,
                _permit: permit,
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
        (session.run)(tokio::io::join(reader, pipe_tx), sftp).await;

        let mut source = tokio::io::BufReader::with_capacity(64 * 1024, pipe_rx);
        let mut tx = write_half.make_writer();
        let outcome = tokio::select! {
            r = tokio::io::copy_buf(&mut source, &mut tx) => Some(r),
            () = cancel.cancelled() => None,
        };
        let _ = tx.flush().await;
        drop(tx);
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
    use tokio::io::AsyncReadExt;

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
            f.push(&rest[..n]);
            rest = &rest[n..];
            step += 2;
            while let Some(fr) = f.next_frame().unwrap() {
                out.push(fr);
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
        f.push(&300_000u32.to_be_bytes()[..3]);
        assert_eq!(f.next_frame(), Ok(None));
        f.push(&300_000u32.to_be_bytes()[3..]);
        assert_eq!(
            f.next_frame(),
            Err(FrameError::TooLong {
                len: 300_000,
                max: 262_144
            })
        );
        // exactly the maximum is fine
        let mut f = Framer::new(262_144);
        f.push(&262_144u32.to_be_bytes());
        assert_eq!(f.next_frame(), Ok(None));
    }

    #[test]
    fn framer_rejects_zero_length_after_good_frames() {
        let mut f = Framer::new(1024);
        let mut s = frame(b"\x01\x00\x00\x00\x03");
        s.extend_from_slice(&[0, 0, 0, 0]);
        f.push(&s);
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
    }

    fn queued(budget: &Arc<Semaphore>, b: &[u8]) -> QueuedFrame {
        QueuedFrame {
            bytes: Bytes::copy_from_slice(b),
            _permit: budget
                .clone()
                .try_acquire_many_owned(b.len() as u32)
                .unwrap(),
        }
    }

    #[tokio::test]
    async fn frame_reader_returns_bytes_releases_budget_and_ends() {
        let budget = Arc::new(Semaphore::new(100));
        let (tx, rx) = mpsc::unbounded_channel();
        let mut r = FrameReader {
            rx,
            current: None,
            aborted: Arc::new(AtomicBool::new(false)),
        };
        tx.send(queued(&budget, b"hello ")).unwrap();
        tx.send(queued(&budget, b"world")).unwrap();
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
    async fn aborted_reader_discards_queued_frames() {
        let budget = Arc::new(Semaphore::new(100));
        let (tx, rx) = mpsc::unbounded_channel();
        let aborted = Arc::new(AtomicBool::new(false));
        let mut r = FrameReader {
            rx,
            current: None,
            aborted: aborted.clone(),
        };
        tx.send(queued(&budget, b"queued request")).unwrap();
        aborted.store(true, Ordering::Release);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
