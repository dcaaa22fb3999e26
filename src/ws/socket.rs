//! A WebSocket connection that owns no buffer while it waits: the lean half of issue 17.
//!
//! tungstenite keeps a read buffer and a write buffer per socket, and the write buffer
//! grows to the largest frame ever sent (a snapshot) and never shrinks: ~23 KB for every
//! idle socket. Here the socket is the TCP stream and little else:
//! - reading waits for readiness, then reads into a buffer on the thread's stack and
//!   parses the frames there; only a frame cut across two reads is kept, in a buffer
//!   allocated for it and freed when it is complete;
//! - writing sends the outbox's frames (shared, encoded once for every recipient) straight
//!   from their bytes, with their headers, in one vectored write: nothing is copied and a
//!   snapshot's bytes are gone once they are sent. A delivery may write its frame itself
//!   (`DirectWrite`, see `hub::Outbox`): the stream is shared with the outbox for that.
//!
//! tungstenite still parses and formats every frame header; the handshake's accept key is
//! its too (see `upgrade`).

use std::collections::VecDeque;
use std::io::{self, Cursor, IoSlice};
use std::sync::{Arc, Mutex};

use tokio::net::TcpStream;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use crate::hub::DirectWrite;
use crate::message::Frame;

/// Bytes read from the kernel at a time, into a buffer on the reading thread's stack.
const READ_CHUNK: usize = 8 * 1024;
/// Frames written with one system call at most (each takes two slices: header, payload).
/// The header and slice arrays are made on every write (once per delivery): kept small,
/// as most writes carry one to three frames; more take another call at once.
const WRITE_BATCH: usize = 16;
/// The longest header of a frame the server writes (unmasked): 2 + 8 bytes.
const MAX_HEADER: usize = 10;
/// The largest payload of a control frame (RFC 6455, 5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// What the client sent: a complete message, or a sign of life.
#[derive(Debug)]
pub enum Incoming {
    Text(String),
    /// Binary messages carry nothing convoy reads.
    Binary,
    /// A ping (answered here) or a pong.
    Control,
    /// The client's close frame, or the end of its stream.
    Close,
}

/// Why reading stopped.
#[derive(Debug)]
pub enum ReadError {
    /// A message or frame over the size limit.
    TooBig,
    /// A frame the protocol does not allow; the reason, for the log.
    Protocol(&'static str),
    Io(io::Error),
}

/// One upgraded connection.
pub struct WebSocket {
    /// Shared with the connection's outbox while it is served.
    stream: Arc<TcpStream>,
    read: ReadState,
    control: ControlQueue,
}

/// The control frame the reader wants written: the pong of the latest ping (only that one
/// needs an answer, RFC 6455, 5.5.3). Whoever runs the reader wakes the writer for it
/// (`Reader::pong_wanted`): the socket keeps no wait of its own for it.
struct ControlQueue {
    pong: Mutex<Option<Vec<u8>>>,
}

struct ReadState {
    max_message: usize,
    /// The bytes of a frame cut across reads; empty (and unallocated) between frames.
    partial: Vec<u8>,
    /// Whether `partial` may hold complete frames not parsed yet (bytes read ahead during
    /// the handshake).
    unparsed: bool,
    /// A fragmented message being assembled.
    fragments: Option<Fragments>,
    /// Messages parsed, not yet handed out.
    inbox: VecDeque<Incoming>,
    /// The client closed: nothing more is read.
    ended: bool,
}

/// A fragmented message so far.
struct Fragments {
    text: bool,
    payload: Vec<u8>,
    /// What the message counts against the size limit: its payload, each fragment at least
    /// a byte (empty fragments cannot go on forever).
    counted: usize,
}

impl WebSocket {
    /// A socket over an upgraded stream; `read_ahead` is what the HTTP layer read past the
    /// handshake (usually nothing).
    pub fn new(stream: TcpStream, read_ahead: &[u8], max_message: usize) -> Self {
        WebSocket {
            stream: Arc::new(stream),
            read: ReadState {
                max_message,
                partial: read_ahead.to_vec(),
                unparsed: !read_ahead.is_empty(),
                fragments: None,
                inbox: VecDeque::new(),
                ended: false,
            },
            control: ControlQueue { pong: Mutex::new(None) },
        }
    }

    /// The stream, for deliveries to write through (`hub::Outbox::attach`).
    pub fn direct(&self) -> Arc<dyn DirectWrite> {
        self.stream.clone()
    }

    /// The reading and the writing half, to run side by side.
    pub fn split(&mut self) -> (Reader<'_>, Writer<'_>) {
        let WebSocket { stream, read, control } = self;
        (Reader { stream, state: read, control }, Writer { stream, control })
    }

    /// The next message (for a socket that reads and writes in turn: a ping's pong goes
    /// out with the next `Writer::write`).
    pub async fn recv(&mut self) -> Result<Incoming, ReadError> {
        self.split().0.next().await
    }
}

/// The reading half.
pub struct Reader<'a> {
    stream: &'a TcpStream,
    state: &'a mut ReadState,
    control: &'a ControlQueue,
}

impl Reader<'_> {
    /// Whether a ping's pong waits to be written: the writer is to be woken for it.
    pub fn pong_wanted(&self) -> bool {
        self.control.pong.lock().expect("pong lock").is_some()
    }

    /// The next message. After the client's close (or the end of its stream) every call
    /// returns `Close`.
    pub async fn next(&mut self) -> Result<Incoming, ReadError> {
        if std::mem::take(&mut self.state.unparsed) {
            self.feed(&mut [])?;
        }
        loop {
            if let Some(incoming) = self.state.inbox.pop_front() {
                return Ok(incoming);
            }
            if self.state.ended {
                return Ok(Incoming::Close);
            }
            if self.state.inbox.capacity() > 0 {
                // An emptied inbox gives its room back before the wait: a socket keeps
                // none while idle (one allocation per read that yields messages, beside
                // its system call and parsing).
                self.state.inbox = VecDeque::new();
            }
            // A client that keeps the kernel's buffer full must not keep this thread: give
            // way when the task's share of work is used up.
            tokio::task::consume_budget().await;
            // The stream's one reader slot, not `readable()`'s list of waiters: it also
            // replaces the waker the HTTP connection's task left there, which would keep
            // that finished task's memory alive as long as the socket.
            std::future::poll_fn(|cx| self.stream.poll_read_ready(cx)).await.map_err(ReadError::Io)?;
            self.read_ready()?;
        }
    }

    /// Reads what the kernel holds until a message is complete (so a flood is read no
    /// faster than it is handled) or nothing is left.
    fn read_ready(&mut self) -> Result<(), ReadError> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            let n = match self.stream.try_read(&mut chunk) {
                Ok(0) => {
                    self.state.ended = true;
                    return Ok(());
                }
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(ReadError::Io(err)),
            };
            self.feed(&mut chunk[..n])?;
            if !self.state.inbox.is_empty() || self.state.ended {
                return Ok(());
            }
        }
    }

    /// Parses `input` after what is kept from earlier reads, keeping what is left of an
    /// incomplete frame.
    fn feed(&mut self, input: &mut [u8]) -> Result<(), ReadError> {
        if self.state.partial.is_empty() {
            let used = self.parse(input)?;
            if used < input.len() && !self.state.ended {
                self.state.partial = input[used..].to_vec();
            }
            return Ok(());
        }
        let mut buffer = std::mem::take(&mut self.state.partial);
        buffer.extend_from_slice(input);
        let used = self.parse(&mut buffer)?;
        if self.state.ended || used == buffer.len() {
            return Ok(()); // nothing left: the buffer goes
        }
        self.state.partial = if used == 0 {
            buffer // still one frame short: it grows in place (a trickled frame is copied O(n))
        } else {
            buffer[used..].to_vec() // a fresh buffer the size of what is left
        };
        Ok(())
    }

    /// Handles every complete frame at the start of `bytes`; returns how many bytes they
    /// took.
    fn parse(&mut self, bytes: &mut [u8]) -> Result<usize, ReadError> {
        let mut at = 0;
        while at < bytes.len() && !self.state.ended {
            let mut cursor = Cursor::new(&bytes[at..]);
            let Some((header, length)) =
                FrameHeader::parse(&mut cursor).map_err(|_| ReadError::Protocol("malformed frame header"))?
            else {
                break;
            };
            let is_control = matches!(header.opcode, OpCode::Control(_));
            if is_control && (length > MAX_CONTROL_PAYLOAD || !header.is_final) {
                return Err(ReadError::Protocol("control frame too long or fragmented"));
            }
            // Refused on its header: a client announcing 2 GB is not waited for. A
            // continuation counts what its message holds so far.
            let assembled = match (&header.opcode, &self.state.fragments) {
                (OpCode::Data(Data::Continue), Some(fragments)) => fragments.counted as u64,
                _ => 0,
            };
            if length.saturating_add(assembled) > self.state.max_message as u64 {
                return Err(ReadError::TooBig);
            }
            let start = at + cursor.position() as usize;
            let end = start.saturating_add(usize::try_from(length).unwrap_or(usize::MAX));
            if end > bytes.len() {
                break;
            }
            if header.rsv1 || header.rsv2 || header.rsv3 {
                return Err(ReadError::Protocol("reserved bits set"));
            }
            let Some(mask) = header.mask else {
                return Err(ReadError::Protocol("unmasked client frame"));
            };
            let payload = &mut bytes[start..end];
            unmask(payload, mask);
            self.frame(header.opcode, header.is_final, payload)?;
            at = end;
        }
        Ok(at)
    }

    fn frame(&mut self, opcode: OpCode, is_final: bool, payload: &[u8]) -> Result<(), ReadError> {
        let state = &mut *self.state;
        match opcode {
            OpCode::Data(Data::Continue) => {
                let Some(fragments) = state.fragments.as_mut() else {
                    return Err(ReadError::Protocol("continuation without a message"));
                };
                fragments.counted += payload.len().max(1);
                if fragments.counted > state.max_message {
                    return Err(ReadError::TooBig);
                }
                fragments.payload.extend_from_slice(payload);
                if is_final {
                    let Fragments { text, payload, .. } = state.fragments.take().expect("checked above");
                    state.inbox.push_back(message(text, payload)?);
                }
            }
            OpCode::Data(data @ (Data::Text | Data::Binary)) => {
                if state.fragments.is_some() {
                    return Err(ReadError::Protocol("a new message inside a fragmented one"));
                }
                let text = data == Data::Text;
                if is_final {
                    state.inbox.push_back(message(text, payload.to_vec())?);
                } else {
                    let counted = payload.len().max(1);
                    state.fragments = Some(Fragments { text, payload: payload.to_vec(), counted });
                }
            }
            OpCode::Control(control @ (Control::Ping | Control::Pong)) => {
                if control == Control::Ping {
                    // Only the latest ping is answered (RFC 6455, 5.5.3).
                    *self.control.pong.lock().expect("pong lock") = Some(payload.to_vec());
                }
                // Signs of life in a row are one: a flood of pings queues one entry.
                if !matches!(state.inbox.back(), Some(Incoming::Control)) {
                    state.inbox.push_back(Incoming::Control);
                }
            }
            OpCode::Control(Control::Close) => {
                state.inbox.push_back(Incoming::Close);
                state.ended = true;
            }
            OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
                return Err(ReadError::Protocol("reserved opcode"));
            }
        }
        Ok(())
    }
}

fn message(text: bool, payload: Vec<u8>) -> Result<Incoming, ReadError> {
    if !text {
        return Ok(Incoming::Binary);
    }
    String::from_utf8(payload).map(Incoming::Text).map_err(|_| ReadError::Protocol("text is not UTF-8"))
}

/// Client frames are masked (RFC 6455, 5.3).
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    for (i, byte) in payload.iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// The writing half.
pub struct Writer<'a> {
    stream: &'a TcpStream,
    control: &'a ControlQueue,
}

impl<'a> Writer<'a> {
    /// Writes a ping (if `ping`), then `frames` (text), then the pong the reader asked for
    /// (if any): all of it in as few system calls as the kernel takes. `resume_at` bytes of
    /// the first frame were already written (a delivery wrote it through, cut short): its
    /// rest goes first, before the ping.
    pub async fn write(&self, ping: bool, frames: &[Frame], resume_at: usize) -> io::Result<()> {
        let mut frames = frames;
        if resume_at > 0
            && let Some((first, rest)) = frames.split_first()
        {
            let outgoing = Outgoing { ping: false, frames: std::slice::from_ref(first), last: None };
            write_all(self.stream, &outgoing, Progress { frame: 0, offset: resume_at }).await?;
            frames = rest;
        }
        let pong = self.control.pong.lock().expect("pong lock").take();
        let outgoing = Outgoing { ping, frames, last: pong.as_deref().map(|p| (Control::Pong, p)) };
        write_all(self.stream, &outgoing, Progress::default()).await
    }

    /// Writes a close frame with `code` and `reason` (cut to the 123 bytes that fit).
    pub async fn close(&self, code: u16, reason: &str) -> io::Result<()> {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = Vec::with_capacity(2 + end);
        payload.extend_from_slice(&code.to_be_bytes());
        payload.extend_from_slice(&reason.as_bytes()[..end]);
        let outgoing = Outgoing { ping: false, frames: &[], last: Some((Control::Close, &payload)) };
        write_all(self.stream, &outgoing, Progress::default()).await
    }
}

/// The frames of one write, in order: a ping, text frames, a control frame.
struct Outgoing<'a> {
    ping: bool,
    frames: &'a [Frame],
    last: Option<(Control, &'a [u8])>,
}

impl Outgoing<'_> {
    fn len(&self) -> usize {
        usize::from(self.ping) + self.frames.len() + usize::from(self.last.is_some())
    }

    fn get(&self, mut index: usize) -> (OpCode, &[u8]) {
        if self.ping {
            if index == 0 {
                return (OpCode::Control(Control::Ping), &[]);
            }
            index -= 1;
        }
        match self.frames.get(index) {
            Some(frame) => (OpCode::Data(Data::Text), frame.as_str().as_bytes()),
            None => {
                let (control, payload) = self.last.expect("index within len");
                (OpCode::Control(control), payload)
            }
        }
    }
}

/// Where a write stands: the frame it is in and the bytes of it (header and payload)
/// already written.
#[derive(Default)]
struct Progress {
    frame: usize,
    offset: usize,
}

async fn write_all(stream: &TcpStream, outgoing: &Outgoing<'_>, mut progress: Progress) -> io::Result<()> {
    while progress.frame < outgoing.len() {
        match write_some(stream, outgoing, &mut progress) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                std::future::poll_fn(|cx| stream.poll_write_ready(cx)).await?;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// A delivery's frame written at once, as far as the socket takes it.
impl DirectWrite for TcpStream {
    fn try_write(&self, frame: &Frame, offset: usize) -> Option<usize> {
        let outgoing = Outgoing { ping: false, frames: std::slice::from_ref(frame), last: None };
        let mut progress = Progress { frame: 0, offset };
        match write_some(self, &outgoing, &mut progress) {
            Ok(()) if progress.frame == 1 => None,
            Ok(()) => Some(progress.offset),
            Err(_) => Some(offset),
        }
    }
}

/// One vectored write of up to WRITE_BATCH frames from `progress` on; moves it on.
fn write_some(stream: &TcpStream, outgoing: &Outgoing<'_>, progress: &mut Progress) -> io::Result<()> {
    let count = (outgoing.len() - progress.frame).min(WRITE_BATCH);
    let mut headers = [[0u8; MAX_HEADER]; WRITE_BATCH];
    let mut lengths = [0usize; WRITE_BATCH];
    for (i, (header, length)) in headers.iter_mut().zip(&mut lengths).take(count).enumerate() {
        let (opcode, payload) = outgoing.get(progress.frame + i);
        *length = format_header(header, opcode, payload.len());
    }
    let mut slices = [IoSlice::new(&[]); 2 * WRITE_BATCH];
    let mut used = 0;
    for i in 0..count {
        let (_, payload) = outgoing.get(progress.frame + i);
        let (mut header, mut payload) = (&headers[i][..lengths[i]], payload);
        if i == 0 {
            // Skip what an earlier, partial write already sent of this frame.
            let skip = progress.offset.min(header.len());
            header = &header[skip..];
            payload = &payload[progress.offset - skip..];
        }
        for part in [header, payload] {
            if !part.is_empty() {
                slices[used] = IoSlice::new(part);
                used += 1;
            }
        }
    }
    let written = stream.try_write_vectored(&slices[..used])?;
    if written == 0 && used > 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    advance(outgoing, progress, written, &lengths[..count]);
    Ok(())
}

/// Moves `progress` on by `written` bytes; `lengths` are the header lengths of the frames
/// from `progress` on.
fn advance(outgoing: &Outgoing<'_>, progress: &mut Progress, mut written: usize, lengths: &[usize]) {
    for &header in lengths {
        let (_, payload) = outgoing.get(progress.frame);
        let left = header + payload.len() - progress.offset;
        if written < left {
            progress.offset += written;
            return;
        }
        written -= left;
        progress.frame += 1;
        progress.offset = 0;
    }
}

/// Formats a server frame's header (final, unmasked) into `out`; returns its length.
fn format_header(out: &mut [u8; MAX_HEADER], opcode: OpCode, length: usize) -> usize {
    let header = FrameHeader { opcode, ..FrameHeader::default() };
    let mut cursor = Cursor::new(&mut out[..]);
    header.format(length as u64, &mut cursor).expect("a frame header fits in MAX_HEADER bytes");
    cursor.position() as usize
}
