//! Authentication as the first message (seed 004's `Auth`): `/ws` opened without a token
//! is accepted, and the client must send `auth {token}` (alias `Auth`) within
//! AUTH_TIMEOUT_SECONDS. The token gets the same checks as one in the query string; on
//! success the socket carries on as any other (snapshot first). Before that, every other
//! message is answered with `error {code: "unauthenticated"}`; a refused token, the timeout
//! or too many unauthenticated messages close the socket with 1008.

use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;

use super::socket::{Incoming, WebSocket};
use crate::admission::ConnectionSlot;
use crate::domain::SessionId;
use crate::message::close_code;
use crate::protocol::native::{ClientMessage, ServerMessage, parse_client};
use crate::state::AppState;

/// Messages answered with `unauthenticated` before the socket is closed.
const MAX_UNAUTHENTICATED: usize = 10;
/// How long a close frame may take to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs the socket's first phase; `slot` is its place among MAX_CONNECTIONS and `pending`
/// its place among the sockets waiting to authenticate, both taken before the upgrade.
pub(super) async fn run(
    upgrading: super::upgrade::Upgrading,
    state: AppState,
    mut slot: ConnectionSlot,
    pending: OwnedSemaphorePermit,
    batch: Option<Duration>,
    named: Option<SessionId>,
) {
    let Some(mut socket) = upgrading.socket().await else { return };
    let deadline = tokio::time::sleep(Duration::from_secs(state.config.auth_timeout_seconds));
    tokio::pin!(deadline);
    let mut refused = 0;
    loop {
        let message = tokio::select! {
            _ = &mut deadline => {
                return close(socket, close_code::POLICY_VIOLATION, "authentication timeout: send auth {token} first").await;
            }
            _ = state.shutdown.cancelled() => {
                return close(socket, close_code::GOING_AWAY, "server shutting down").await;
            }
            message = socket.recv() => message,
        };
        let text = match message {
            Ok(Incoming::Text(text)) => text,
            Ok(Incoming::Binary) => String::new(),
            Ok(Incoming::Control) => {
                // Answered here, outside the waits above: a pong cut short by the deadline
                // would garble the close that follows.
                let (_, writer) = socket.split();
                if !matches!(
                    tokio::time::timeout(CLOSE_TIMEOUT, writer.write(false, &[], 0)).await,
                    Ok(Ok(()))
                ) {
                    return;
                }
                continue;
            }
            Ok(Incoming::Close) | Err(_) => return,
        };
        match parse_client(&text) {
            Ok(ClientMessage::Auth { token }) => match super::admit_token(&state, &token, named).await {
                Ok((session, me, claims)) => {
                    drop(pending);
                    if slot.bind(me.user_id).is_err() {
                        let max = state.config.max_connections_per_participant;
                        let reason = super::refused_participant_message(max);
                        return close(socket, close_code::TRY_AGAIN_LATER, &reason).await;
                    }
                    let admitted = super::Admitted { session, me, claims };
                    Box::pin(super::native::serve(&mut socket, &state, &admitted, batch)).await;
                    drop(slot);
                    return;
                }
                Err(err) => return close(socket, close_code::POLICY_VIOLATION, &err.message).await,
            },
            _ => {
                refused += 1;
                if refused >= MAX_UNAUTHENTICATED {
                    return close(
                        socket,
                        close_code::POLICY_VIOLATION,
                        "authenticate first: send auth {token}",
                    )
                    .await;
                }
                let error = ServerMessage::Error {
                    code: "unauthenticated",
                    message: "authenticate first: send {\"type\":\"auth\",\"data\":{\"token\":...}}",
                    topic: None,
                };
                let frame = error.to_frame();
                if socket.split().1.write(false, &[frame], 0).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if socket.split().1.close(code, reason).await.is_ok() {
            // Finish the closing handshake so the client reads the code.
            while let Ok(message) = socket.recv().await {
                if matches!(message, Incoming::Close) {
                    break;
                }
            }
        }
    })
    .await;
}
