//! The socket's own frame handling, seen from a client written by hand over TCP: the
//! handshake, fragments, frames cut across reads or packed in one write, pings, and the
//! close code each kind of bad frame gets. tungstenite's client would never send most of
//! these frames, so they are built here byte by byte.

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::helpers::*;

// The first byte of a frame: FIN, the reserved bits, the opcode.
const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const RSV2: u8 = 0x20;
const RSV3: u8 = 0x10;
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Every client frame's mask: not zero, so a server that forgot to unmask reads garbage.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// The key and accept value of RFC 6455's own example (section 1.3).
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

const PROTOCOL_ERROR: u16 = 1002;
const TOO_BIG: u16 = 1009;

/// A masked client frame's header: `first` (FIN, reserved bits, opcode) and `length` in
/// the shortest of the 7, 16 and 64-bit forms.
fn header(first: u8, length: u64) -> Vec<u8> {
    let mut out = vec![first];
    match length {
        0..=125 => out.push(0x80 | length as u8),
        126..=0xFFFF => {
            out.push(0x80 | 126);
            out.extend((length as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend(length.to_be_bytes());
        }
    }
    out.extend(MASK);
    out
}

/// A masked client frame.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = header(first, payload.len() as u64);
    out.extend(payload.iter().enumerate().map(|(i, byte)| byte ^ MASK[i % 4]));
    out
}

/// One final text frame holding `message`.
fn text(message: &Value) -> Vec<u8> {
    frame(FIN | TEXT, message.to_string().as_bytes())
}

/// A native `ping` message of exactly `length` bytes (padded in its data).
fn padded_ping(length: usize) -> String {
    let (start, end) = (r#"{"type":"ping","data":{"pad":""#, r#""}}"#);
    format!("{start}{}{end}", "x".repeat(length - start.len() - end.len()))
}

/// A frame from the server: final and unmasked, as a server's must be.
struct ServerFrame {
    opcode: u8,
    payload: Vec<u8>,
}

/// A parsed HTTP response.
struct Response {
    status: u16,
    /// Names in lower case.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A socket driven by hand over a TCP stream.
struct RawSocket {
    stream: TcpStream,
    /// Bytes read and not parsed yet.
    read: Vec<u8>,
}

impl RawSocket {
    async fn tcp(app: &TestApp) -> Self {
        let stream = TcpStream::connect(app.addr).await.unwrap();
        // Each small write goes out as its own segment.
        stream.set_nodelay(true).unwrap();
        Self { stream, read: Vec::new() }
    }

    /// Opens /ws with `token`, checks the 101 and reads the snapshot.
    async fn connect(app: &TestApp, token: &str) -> (Self, Value) {
        Self::connect_sending(app, token, &[]).await
    }

    /// `connect`, with `frames` sent in the same write as the handshake request.
    async fn connect_sending(app: &TestApp, token: &str, frames: &[u8]) -> (Self, Value) {
        let mut socket = Self::tcp(app).await;
        let mut request = upgrade_request(app, token, &[]).into_bytes();
        request.extend_from_slice(frames);
        socket.send(&request).await;
        let response = socket.response().await;
        assert_eq!(response.status, 101, "{}", String::from_utf8_lossy(&response.body));
        assert_eq!(response.header("sec-websocket-accept"), Some(ACCEPT));
        assert!(response.header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")));
        let snapshot = socket.next_json().await;
        assert_eq!(snapshot["type"], "session_state", "first message is the snapshot");
        (socket, snapshot)
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Reads more; panics if the connection ended.
    async fn fill(&mut self) {
        let read = self.stream.read_buf(&mut self.read).await;
        assert!(read.as_ref().is_ok_and(|&n| n > 0), "the connection ended early: {read:?}");
    }

    /// The HTTP response at the start of the stream; what follows it is left unread.
    async fn response(&mut self) -> Response {
        let end = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(at) = self.read.windows(4).position(|w| w == b"\r\n\r\n") {
                    return at + 4;
                }
                self.fill().await;
            }
        })
        .await
        .expect("a response in time");
        let head = String::from_utf8(self.read[..end].to_vec()).expect("an ASCII head");
        let mut lines = head.lines();
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let length =
            headers.iter().find(|(n, _)| n == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
        while self.read.len() < end + length {
            tokio::time::timeout(WAIT, self.fill()).await.expect("the body in time");
        }
        let body = self.read[end..end + length].to_vec();
        self.read.drain(..end + length);
        Response { status, headers, body }
    }

    /// The next frame from the server.
    async fn next_frame(&mut self) -> ServerFrame {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(frame) = self.take_frame() {
                    return frame;
                }
                self.fill().await;
            }
        })
        .await
        .expect("a frame in time")
    }

    fn take_frame(&mut self) -> Option<ServerFrame> {
        let bytes = &self.read;
        let (&first, &second) = (bytes.first()?, bytes.get(1)?);
        assert_eq!(first & 0xF0, FIN, "a server frame is final, no reserved bit set: {first:#x}");
        assert_eq!(second & 0x80, 0, "a server frame is unmasked");
        let (length, start) = match second & 0x7F {
            126 => (usize::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().unwrap())), 4),
            127 => (usize::try_from(u64::from_be_bytes(bytes.get(2..10)?.try_into().unwrap())).unwrap(), 10),
            short => (usize::from(short), 2),
        };
        let payload = bytes.get(start..start + length)?.to_vec();
        self.read.drain(..start + length);
        Some(ServerFrame { opcode: first & 0x0F, payload })
    }

    /// The payload of the next frame with `opcode`, skipping others (but a close).
    async fn next_of(&mut self, opcode: u8) -> Vec<u8> {
        loop {
            let frame = self.next_frame().await;
            if frame.opcode == opcode {
                return frame.payload;
            }
            assert_ne!(frame.opcode, CLOSE, "closed with {:?}", close_code(&frame.payload));
        }
    }

    /// The next text message as JSON, skipping control frames and presence (as `WsClient`).
    async fn next_json(&mut self) -> Value {
        loop {
            let payload = self.next_of(TEXT).await;
            let message: Value = serde_json::from_slice(&payload).expect("JSON text");
            if !matches!(message["type"].as_str(), Some("presence_state" | "presence_diff")) {
                return message;
            }
        }
    }

    /// Reads until the server's close frame; its code. The server then ends the connection.
    async fn closed(&mut self) -> u16 {
        let code = close_code(&self.next_of(CLOSE).await).expect("a close frame with a code");
        let end = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.read)).await;
        assert!(matches!(end, Ok(Ok(0) | Err(_))), "the connection ends after the close: {end:?}");
        code
    }
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

fn close_code(payload: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(payload.get(..2)?.try_into().unwrap()))
}

/// A handshake request for /ws?token=: the usual headers, with `changes` replacing (or,
/// given None, removing) those of the same name.
fn upgrade_request(app: &TestApp, token: &str, changes: &[(&str, Option<&str>)]) -> String {
    let host = app.addr.to_string();
    let mut headers = vec![
        ("Host", host.as_str()),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", KEY),
    ];
    for &(name, value) in changes {
        headers.retain(|&(n, _)| n != name);
        headers.extend(value.map(|v| (name, v)));
    }
    let mut request = format!("GET /ws?token={token} HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request + "\r\n"
}

/// Opens a socket for each case, writes its bytes and asserts the server closes it with
/// `code`.
async fn assert_each_closes(app: &TestApp, token: &str, cases: Vec<(&str, Vec<u8>)>, code: u16) {
    for (case, bytes) in cases {
        let (mut socket, _) = RawSocket::connect(app, token).await;
        socket.send(&bytes).await;
        assert_eq!(socket.closed().await, code, "{case}");
    }
}

/// Bob's socket (an ordinary client) still works, and so does a new one of Ann's.
async fn assert_others_unaffected(app: &TestApp, ann: &Joined, bob_ws: &mut WsClient) {
    bob_ws.send_json(json!({ "type": "ping", "data": {} })).await;
    assert_eq!(bob_ws.next_of_type("pong").await["type"], "pong");
    let (mut ann_again, _) = RawSocket::connect(app, &ann.token).await;
    ann_again
        .send(&text(
            &json!({ "type": "location_update", "data": { "lat": 3.0, "lng": 4.0, "accuracy": 5.0 } }),
        ))
        .await;
    let seen = bob_ws.next_of_type("location_broadcast").await;
    assert_eq!(
        (seen["data"]["user_id"].as_str(), seen["data"]["lat"].as_f64()),
        (Some(&*ann.user_id), Some(3.0))
    );
}

#[tokio::test]
async fn a_text_message_in_three_fragments_is_one_message() {
    let app = spawn_app().await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let (mut socket, _) = RawSocket::connect(&app, &ann.token).await;

    // The last cut falls inside "é": UTF-8 is checked on the message, not on each fragment.
    let message = json!({ "type": "ping", "data": { "note": "café" } }).to_string();
    let inside_e = message.find('é').unwrap() + 1;
    let bytes = message.as_bytes();
    socket.send(&frame(TEXT, &bytes[..10])).await;
    socket.send(&frame(CONTINUATION, &bytes[10..inside_e])).await;
    socket.send(&frame(FIN | CONTINUATION, &bytes[inside_e..])).await;
    // The first message back is the pong: no error for a fragment taken as a message.
    assert_eq!(socket.next_json().await, json!({ "type": "pong", "data": {} }));
}

#[tokio::test]
async fn a_ping_between_fragments_is_answered_and_the_message_still_assembles() {
    let app = spawn_app().await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let (mut socket, _) = RawSocket::connect(&app, &ann.token).await;

    let message = json!({ "type": "ping", "data": {} }).to_string();
    let (head, tail) = message.as_bytes().split_at(7);
    let mut bytes = frame(TEXT, head);
    bytes.extend(frame(FIN | PING, b"mid-message"));
    bytes.extend(frame(FIN | CONTINUATION, tail));
    socket.send(&bytes).await;
    // The control pong and the message's pong may go out in either order.
    let (mut pong_frame, mut pong_message) = (None, None);
    while pong_frame.is_none() || pong_message.is_none() {
        let frame = socket.next_frame().await;
        match frame.opcode {
            PONG => pong_frame = Some(frame.payload),
            TEXT => pong_message = Some(serde_json::from_slice::<Value>(&frame.payload).unwrap()),
            other => panic!("unexpected frame {other:#x}"),
        }
    }
    assert_eq!(pong_frame.unwrap(), b"mid-message");
    assert_eq!(pong_message.unwrap(), json!({ "type": "pong", "data": {} }));
}

#[tokio::test]
async fn a_frame_written_byte_by_byte_is_understood() {
    let app = spawn_app().await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let (mut socket, _) = RawSocket::connect(&app, &ann.token).await;

    // Over 125 bytes, so its length takes the 16-bit form: the header is cut too.
    let message = padded_ping(300);
    for byte in frame(FIN | TEXT, message.as_bytes()) {
        socket.send(&[byte]).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(socket.next_json().await, json!({ "type": "pong", "data": {} }));
}

#[tokio::test]
async fn several_messages_in_one_write_are_all_handled_in_order() {
    let app = spawn_app().await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut socket, _) = RawSocket::connect(&app, &ann.token).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;

    // Direct messages, not locations: a pending location is replaced by a newer one.
    let direct =
        |n: u32| json!({ "type": "direct_message", "data": { "target_user": bob.user_id, "payload": n } });
    let mut bytes = text(&direct(1));
    bytes.extend(text(&json!({ "type": "teleport", "data": {} })));
    bytes.extend(text(&direct(2)));
    bytes.extend(frame(FIN | TEXT, b"not json"));
    bytes.extend(text(&direct(3)));
    bytes.extend(text(&json!({ "type": "ping", "data": {} })));
    socket.send(&bytes).await;

    assert_eq!(socket.next_json().await["data"]["code"], "unknown_type");
    assert_eq!(socket.next_json().await["data"]["code"], "invalid_message");
    assert_eq!(socket.next_json().await["type"], "pong");
    for n in 1..=3 {
        assert_eq!(bob_ws.next_of_type("direct_message").await["data"]["payload"], n);
    }
}

#[tokio::test]
async fn frames_sent_with_the_handshake_request_are_not_lost() {
    let app = spawn_app().await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    // Read by the HTTP layer along with the request, before the socket existed.
    let early = text(&json!({ "type": "ping", "data": {} }));
    let (mut socket, _) = RawSocket::connect_sending(&app, &ann.token, &early).await;
    assert_eq!(socket.next_json().await, json!({ "type": "pong", "data": {} }));
}

#[tokio::test]
async fn a_ping_frame_is_answered_with_a_pong_carrying_its_payload() {
    let app = spawn_app().await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let (mut socket, _) = RawSocket::connect(&app, &ann.token).await;

    let longest = [0xA5; 125]; // the most a control frame may carry
    for payload in [&b"are you there?"[..], b"", &longest] {
        socket.send(&frame(FIN | PING, payload)).await;
        assert_eq!(socket.next_of(PONG).await, payload);
    }
    socket.send(&text(&json!({ "type": "ping", "data": {} }))).await;
    assert_eq!(socket.next_json().await["type"], "pong");
}

#[tokio::test]
async fn an_unmasked_frame_closes_that_socket_with_1002_and_no_other() {
    let app = spawn_app().await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;

    let message = json!({ "type": "ping", "data": {} }).to_string();
    let mut unmasked = vec![FIN | TEXT, message.len() as u8];
    unmasked.extend(message.as_bytes());
    assert_each_closes(&app, &ann.token, vec![("unmasked", unmasked)], PROTOCOL_ERROR).await;
    assert_others_unaffected(&app, &ann, &mut bob_ws).await;
}

#[tokio::test]
async fn reserved_bits_and_opcodes_close_with_1002() {
    let app = spawn_app().await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let ping = json!({ "type": "ping", "data": {} }).to_string();
    let cases = vec![
        ("RSV1", frame(FIN | RSV1 | TEXT, ping.as_bytes())),
        ("RSV2", frame(FIN | RSV2 | TEXT, ping.as_bytes())),
        ("RSV3", frame(FIN | RSV3 | TEXT, ping.as_bytes())),
        ("reserved data opcode 0x3", frame(FIN | 0x3, ping.as_bytes())),
        ("reserved control opcode 0xB", frame(FIN | 0xB, b"")),
    ];
    assert_each_closes(&app, &ann.token, cases, PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn text_that_is_not_utf8_closes_with_1002() {
    let app = spawn_app().await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let mut across_fragments = frame(TEXT, b"caf\xC3");
    across_fragments.extend(frame(FIN | CONTINUATION, b"("));
    let cases = vec![
        ("an invalid byte", frame(FIN | TEXT, b"{\"type\":\"ping\",\"data\":{\"x\":\"\xFF\"}}")),
        ("a character cut off at the end", frame(FIN | TEXT, b"caf\xC3")),
        ("invalid once the fragments are joined", across_fragments),
    ];
    assert_each_closes(&app, &ann.token, cases, PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn a_long_or_fragmented_control_frame_closes_with_1002() {
    let app = spawn_app().await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let mut long_close = 1000u16.to_be_bytes().to_vec();
    long_close.extend([b'x'; 124]);
    let cases = vec![
        ("a ping of 126 bytes", frame(FIN | PING, &[0; 126])),
        ("a close of 126 bytes", frame(FIN | CLOSE, &long_close)),
        ("a ping without FIN", frame(PING, b"half")),
    ];
    assert_each_closes(&app, &ann.token, cases, PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn broken_fragmentation_closes_with_1002() {
    let app = spawn_app().await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let ping = json!({ "type": "ping", "data": {} }).to_string();
    let mut nested = frame(TEXT, b"{");
    nested.extend(frame(FIN | TEXT, ping.as_bytes()));
    let cases = vec![
        ("a continuation with no message", frame(FIN | CONTINUATION, ping.as_bytes())),
        ("a new message inside a fragmented one", nested),
    ];
    assert_each_closes(&app, &ann.token, cases, PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn a_frame_announced_over_the_limit_closes_with_1009_before_its_payload() {
    let app = spawn_app().await;
    let (_, [ann, bob]) = app.session_with(["Ann", "Bob"]).await;
    let (mut bob_ws, _) = app.connect(&bob.token).await;
    let max = app.state.config.ws_max_message_bytes;

    // Exactly the limit passes (64 KiB: the 64-bit length form).
    let (mut socket, _) = RawSocket::connect(&app, &ann.token).await;
    socket.send(&frame(FIN | TEXT, padded_ping(max).as_bytes())).await;
    assert_eq!(socket.next_json().await["type"], "pong");

    // Only headers are sent: a server waiting for (or buffering) the payload never closes.
    let cases = vec![
        ("one byte over", header(FIN | TEXT, max as u64 + 1)),
        ("2 GB", header(FIN | TEXT, 2 << 30)),
        ("2 GB, binary, not final", header(0x2, 2 << 30)),
    ];
    assert_each_closes(&app, &ann.token, cases, TOO_BIG).await;
    assert_others_unaffected(&app, &ann, &mut bob_ws).await;
}

#[tokio::test]
async fn fragments_over_the_limit_together_close_with_1009() {
    let app = spawn_app_on(Backend::Embedded, |c| c.ws_max_message_bytes = 4096).await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let fragmented = |message: &str| {
        let (first, rest) = message.as_bytes().split_at(message.len() / 2);
        let (second, last) = rest.split_at(rest.len() - 1);
        let mut bytes = frame(TEXT, first);
        bytes.extend(frame(CONTINUATION, second));
        bytes.extend(frame(FIN | CONTINUATION, last));
        bytes
    };

    // Exactly the limit in all passes; one byte more is refused, though each fragment fits.
    let (mut socket, _) = RawSocket::connect(&app, &ann.token).await;
    socket.send(&fragmented(&padded_ping(4096))).await;
    assert_eq!(socket.next_json().await["type"], "pong");
    // A continuation is refused on its header too: the message would outgrow the limit.
    let mut announced = frame(TEXT, &[b'x'; 4000]);
    announced.extend(header(FIN | CONTINUATION, 97));
    // Empty fragments count a byte each: a message cannot go on forever without growing.
    let mut empty = frame(TEXT, b"x");
    for _ in 0..4096 {
        empty.extend(frame(CONTINUATION, b""));
    }
    let cases = vec![
        ("4097 bytes in three fragments", fragmented(&padded_ping(4097))),
        ("a continuation announced past the limit", announced),
        ("4096 empty fragments", empty),
    ];
    assert_each_closes(&app, &ann.token, cases, TOO_BIG).await;
}

#[tokio::test]
async fn a_handshake_without_a_key_or_version_13_gets_426() {
    let app = spawn_app().await;
    let (_, [ann]) = app.session_with(["Ann"]).await;
    let cases: [&[(&str, Option<&str>)]; 3] = [
        &[("Sec-WebSocket-Key", None)],
        &[("Sec-WebSocket-Version", Some("8"))],
        &[("Sec-WebSocket-Version", None)],
    ];
    for changes in cases {
        let mut socket = RawSocket::tcp(&app).await;
        socket.send(upgrade_request(&app, &ann.token, changes).as_bytes()).await;
        let response = socket.response().await;
        assert_eq!(response.status, 426, "{changes:?}");
        let body: Value = serde_json::from_slice(&response.body).expect("a JSON body");
        assert_eq!(body["error"]["code"], "websocket_required", "{changes:?}: {body}");
        assert!(body["error"]["message"].is_string());
        // The refusal names the version convoy speaks (RFC 6455, 4.4).
        let version = response.headers.iter().find(|(name, _)| name == "sec-websocket-version");
        assert_eq!(version.map(|(_, value)| value.as_str()), Some("13"), "{changes:?}");
    }
}

/// A client too slow for its queue is closed with 1013; whatever frame the server was
/// halfway through writing when that happened is finished first, so the client reads every
/// frame whole and then the close (a close cut into a half-written frame reads as garbage).
#[tokio::test]
async fn a_client_closed_as_too_slow_reads_whole_frames_then_1013() {
    let app = spawn_app_on(Backend::Embedded, |c| {
        c.tcp_send_buffer_bytes = Some(8 * 1024); // the server's writes block after a few KiB
        c.rate_limit_enabled = false;
        c.ws_queue_capacity = 16;
    })
    .await;
    let (_, [ann, stalled]) = app.session_with(["Ann", "Stalled"]).await;
    let mut stalled_ws = app.connect_stalled(&stalled.token).await; // reads nothing for now
    let (mut ann_ws, _) = app.connect(&ann.token).await;
    // Frames of 3 KB: the server's write to the stalled client stops halfway through one.
    let payload = "x".repeat(3000);
    for n in 0..200 {
        let data = json!({ "target_user": stalled.user_id, "payload": { "n": n, "pad": payload } });
        ann_ws.send_json(json!({ "type": "direct_message", "data": data })).await;
    }
    ann_ws.until_pong().await; // every message above was handled

    let mut frames = 0;
    let code = loop {
        match stalled_ws.next().await.expect("the socket ended without a close frame") {
            Ok(tokio_tungstenite::tungstenite::Message::Text(text)) => {
                let _: Value = serde_json::from_str(&text).expect("every frame whole");
                frames += 1;
            }
            Ok(tokio_tungstenite::tungstenite::Message::Close(frame)) => {
                break frame.map(|f| u16::from(f.code));
            }
            Ok(_) => {}
            Err(err) => panic!("a garbled stream after {frames} frames: {err}"),
        }
    };
    assert_eq!(code, Some(1013));
    assert!(frames > 0, "the snapshot at least");
}
