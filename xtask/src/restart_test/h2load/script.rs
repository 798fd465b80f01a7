//! A server scripted frame by frame (RFC 9113, sections 3.4 and 6), to show the client exactly
//! the frames a draining server can send.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
pub(super) const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;

pub(super) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

pub(super) fn goaway(last: u32, reason: h2::Reason) -> Vec<u8> {
    let mut payload = last.to_be_bytes().to_vec();
    payload.extend_from_slice(&u32::from(reason).to_be_bytes());
    frame(GOAWAY, 0, 0, &payload)
}

pub(super) fn reset(stream: u32, reason: h2::Reason) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &u32::from(reason).to_be_bytes())
}

/// `:status: 200` (HPACK static table index 8) and gracedemo's body.
pub(super) fn ok(stream: u32) -> Vec<u8> {
    let mut f = frame(HEADERS, 0x4, stream, &[0x88]);
    f.extend(frame(DATA, 0x1, stream, b"hello from pid 1"));
    f
}

/// Sends the server's SETTINGS and reads the client's preface.
pub(super) async fn greet<IO: AsyncRead + AsyncWrite + Unpin>(io: &mut IO) {
    io.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    let mut preface = [0; 24];
    io.read_exact(&mut preface).await.unwrap();
    assert_eq!(preface, PREFACE);
}

/// Reads the client's frames up to the next HEADERS and returns its stream id; `None` at the
/// end of the connection.
pub(super) async fn next_request<IO: AsyncRead + Unpin>(io: &mut IO) -> Option<u32> {
    for _ in 0..100 {
        let mut head = [0; 9];
        io.read_exact(&mut head).await.ok()?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        io.read_exact(&mut payload).await.ok()?;
        if head[3] == HEADERS {
            return Some(u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff);
        }
    }
    panic!("no HEADERS frame in 100 frames");
}
