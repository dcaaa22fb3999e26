//! One socket, two halves run side by side: the reader parses and acts on client frames
//! (through the socket's `Protocol`: the native one or Phoenix's) and rebuilds what the
//! client holds when asked to resynchronise; the writer drains the connection's outbox,
//! snapshot first, and writes each batch in one vectored write. Everything that ends a
//! connection goes through `Outbox::close`, so both halves stop together and the client
//! always gets a close code.

use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::socket::{Incoming, ReadError, Reader, WebSocket, Writer};
use crate::clock::Clock;
use crate::domain::UserId;
use crate::hub::{Drained, Outbox};
use crate::message::{CloseReason, close_code};
use crate::metrics::RealtimeMetrics;
use crate::state::AppState;

/// How long a close frame may take to go out before the socket is simply dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a wire protocol does with what the reader gets.
pub(super) trait Protocol {
    /// A text frame the rate limits let through.
    async fn text(&mut self, text: &str);
    /// A binary frame the rate limits let through.
    fn binary(&mut self);
    /// A frame refused by a rate limit (`text` if it was text). `tell` is true at most once
    /// a second: a protocol without per-message replies tells the client only then.
    async fn rate_limited(&mut self, text: Option<&str>, message: &str, tell: bool);
    /// Messages may have been lost between instances: rebuild what the client holds.
    async fn resync(&mut self);
    /// When the socket's token expires (Unix seconds); a refresh may move it on. The
    /// socket is closed with 1008 then.
    fn token_expires_at(&self) -> i64;
}

/// Runs both halves of a socket until it closes.
pub(super) async fn serve<P: Protocol>(
    socket: &mut WebSocket,
    state: &AppState,
    user_id: UserId,
    outbox: &Outbox,
    protocol: &mut P,
) {
    outbox.attach(socket.direct());
    let _detach = DetachOnDrop(outbox);
    let (reader, writer) = socket.split();
    let writer_done = Notify::new();
    tokio::join!(
        write_loop(writer, outbox, &state.metrics, &writer_done),
        read_loop(reader, state, user_id, outbox, protocol, &writer_done),
    );
}

async fn write_loop(writer: Writer<'_>, outbox: &Outbox, metrics: &RealtimeMetrics, done: &Notify) {
    let _done = NotifyOnDrop(done);
    // The wait lives as long as the loop and is renewed each time it fires. Everything
    // wakes the writer through it: frames queued, a ping due, a pong wanted (the reader
    // asks), a close (a shutdown comes as one, `Hub::close_all`).
    let ready = outbox.ready();
    tokio::pin!(ready);
    loop {
        (&mut ready).await;
        ready.set(outbox.ready());
        // A due ping goes before the frames: a steady stream of frames cannot starve it.
        // The list is made for each write and freed after it: most deliveries are written
        // through, and an idle socket keeps no room for a list it rarely needs.
        let mut batch = Vec::new();
        let Drained { resume_at, ping, close } = outbox.drain(&mut batch);
        metrics.frames_out.increment(batch.len() as u64);
        // Boxed: most deliveries are written through (`Outbox`), so this is the rare path,
        // and an idle socket's task keeps no room for it.
        let written = Box::pin(write(&writer, outbox, ping, &batch, resume_at, close.is_some())).await;
        drop(batch);
        if !written {
            return;
        }
        outbox.written();
        if let Some(reason) = close {
            Box::pin(send_close(&writer, reason)).await;
            return;
        }
    }
}

/// Writes what the writer drained; false if the connection failed or is to be dropped.
///
/// A client that stopped reading must not keep a close waiting: once one is asked for (or
/// `closing`, the drained frames end with one), the write in progress gets CLOSE_TIMEOUT to
/// finish (never cut short: the close must not land inside a half-written frame), else the
/// connection is dropped. The write is polled first and the waits only if it is pending: a
/// write usually completes at once.
async fn write(
    writer: &Writer<'_>,
    outbox: &Outbox,
    ping: bool,
    frames: &[crate::message::Frame],
    resume_at: usize,
    closing: bool,
) -> bool {
    let write = writer.write(ping, frames, resume_at);
    tokio::pin!(write);
    tokio::select! {
        biased;
        result = &mut write => result.is_ok(),
        _ = outbox.closing(), if !closing => {
            matches!(tokio::time::timeout(CLOSE_TIMEOUT, &mut write).await, Ok(Ok(())))
        }
        // In a block: the timer is made (and the clock read) only if the write waits.
        _ = async { tokio::time::sleep(CLOSE_TIMEOUT).await }, if closing => false,
    }
}

async fn send_close(writer: &Writer<'_>, reason: CloseReason) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer.close(reason.code, reason.reason.as_str())).await;
}

async fn read_loop<P: Protocol>(
    mut reader: Reader<'_>,
    state: &AppState,
    user_id: UserId,
    outbox: &Outbox,
    protocol: &mut P,
    writer_done: &Notify,
) {
    let timeout = Duration::from_secs(state.config.client_timeout_seconds);
    let heartbeat = Duration::from_secs(state.config.heartbeat_interval_seconds);
    // One timer for three deadlines: the next heartbeat ping (asked of the writer), the
    // client's silence (any frame from it, a pong included, moves it on) and the token's
    // expiry (a refresh moves it on). Moving a deadline does not touch the timer: when it
    // fires early it is set again for the deadline that is then nearest.
    let mut ping_at = Instant::now() + heartbeat;
    let mut heard_until = Instant::now() + timeout;
    let mut token_expires_at = protocol.token_expires_at();
    let mut token_deadline = instant_of(&state.clock, token_expires_at);
    let alarm = tokio::time::sleep_until(ping_at.min(heard_until).min(token_deadline));
    let mut alarmed = false;
    let mut limiter = state.limits.connection();
    let writer_finished = writer_done.notified();
    let resync = outbox.resync_requested();
    tokio::pin!(writer_finished, resync, alarm);
    loop {
        let message = tokio::select! {
            biased;
            _ = &mut writer_finished => {
                // The writer sent a close: finish the closing handshake (read until the
                // client's close), so the client reads ours before the TCP connection goes.
                let _ = Box::pin(tokio::time::timeout(CLOSE_TIMEOUT, async {
                    while let Ok(message) = reader.next().await {
                        if matches!(message, Incoming::Close) {
                            break;
                        }
                    }
                }))
                .await;
                return;
            }
            _ = &mut resync => {
                resync.set(outbox.resync_requested());
                if !outbox.is_closing() {
                    // Bounded: after a bus outage every socket asks at once.
                    // Boxed, as every rare and large wait here: the socket's task keeps
                    // room only for what it does while idle.
                    Box::pin(async {
                        let _permit = state.resync_permits.acquire().await;
                        protocol.resync().await;
                    })
                    .await;
                }
                continue;
            }
            _ = &mut alarm, if !alarmed => {
                let now = Instant::now();
                if now >= token_deadline {
                    tracing::info!("closing: the token expired");
                    outbox.close([], CloseReason::new(close_code::POLICY_VIOLATION, "token expired: refresh it before it does"));
                    alarmed = true;
                } else if now >= heard_until {
                    tracing::info!("closing: the client stopped answering");
                    outbox.close([], CloseReason::new(close_code::HEARTBEAT_TIMEOUT, "heartbeat timeout"));
                    state.metrics.heartbeat_timeouts.increment(1);
                    alarmed = true;
                } else {
                    if now >= ping_at {
                        outbox.ping();
                        ping_at = now + heartbeat;
                    }
                    alarm.as_mut().reset(ping_at.min(heard_until).min(token_deadline));
                }
                continue; // after a close: on to the closing handshake once the writer sent it
            }
            message = reader.next() => message,
        };
        heard_until = Instant::now() + timeout;
        match message {
            // Every message a client sends counts against the rate limits, whatever it is.
            // Removed, ended or timed out: nothing more is handled.
            Ok(Incoming::Text(_) | Incoming::Binary) if outbox.is_closing() => {}
            Ok(message @ (Incoming::Text(_) | Incoming::Binary)) => {
                match state.limits.allow_message(&limiter, user_id) {
                    Ok(()) => {
                        match &message {
                            Incoming::Text(text) => Box::pin(protocol.text(text)).await,
                            _ => protocol.binary(),
                        }
                        // A `refresh_token` moves the expiry on.
                        if protocol.token_expires_at() != token_expires_at {
                            token_expires_at = protocol.token_expires_at();
                            token_deadline = instant_of(&state.clock, token_expires_at);
                            if token_deadline < alarm.deadline() {
                                alarm.as_mut().reset(token_deadline);
                            }
                        }
                    }
                    Err(scope) => {
                        state.metrics.rate_limited(scope).increment(1);
                        let message_text =
                            format!("too many messages ({} limit): this one was dropped", scope.as_str());
                        let text =
                            if let Incoming::Text(text) = &message { Some(text.as_str()) } else { None };
                        Box::pin(protocol.rate_limited(text, &message_text, limiter.should_reply())).await;
                    }
                }
            }
            Ok(Incoming::Control) => {
                if reader.pong_wanted() {
                    outbox.wake_writer();
                }
            }
            Ok(Incoming::Close) => {
                outbox.close([], CloseReason::new(close_code::NORMAL, "bye"));
                return;
            }
            Err(ReadError::Io(err)) => {
                tracing::debug!(error = %err, "closing: the connection failed");
                outbox.close([], CloseReason::new(close_code::NORMAL, "bye"));
                return;
            }
            Err(ReadError::TooBig) => {
                tracing::info!("closing: message over the size limit");
                outbox.close([], CloseReason::new(close_code::TOO_BIG, "message too big"));
                return;
            }
            Err(ReadError::Protocol(what)) => {
                tracing::info!(what, "closing: protocol error");
                outbox.close([], CloseReason::new(close_code::PROTOCOL_ERROR, "protocol error"));
                return;
            }
        }
    }
}

/// Deliveries stop writing to the socket however serving it ends.
struct DetachOnDrop<'a>(&'a Outbox);

impl Drop for DetachOnDrop<'_> {
    fn drop(&mut self) {
        self.0.detach();
    }
}

/// Tells the reader the writer is done, however the writer ends.
struct NotifyOnDrop<'a>(&'a Notify);

impl Drop for NotifyOnDrop<'_> {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

/// The tokio instant of a Unix time in seconds on the server's clock (now, if it is past).
fn instant_of(clock: &Clock, unix_secs: i64) -> Instant {
    let left = unix_secs.saturating_sub(clock.now().timestamp()).max(0);
    Instant::now() + Duration::from_secs(left.unsigned_abs())
}
