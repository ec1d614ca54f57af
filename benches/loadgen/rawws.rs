//! A minimal WebSocket client for the subscribers: the upgrade, masked frames out, and
//! frames in parsed straight from the read buffer with no per-frame allocation and no
//! UTF-8 pass, so the generator stays cheap per delivery on the cores it shares with the
//! broker. Pings are answered; a close or error ends the stream.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::client::tcp;

/// Frame opcodes.
pub const TEXT: u8 = 0x1;
/// Binary frame.
pub const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

/// How much is read from the socket at most per call.
const READ_CHUNK: usize = 64 * 1024;
/// The (fixed) masking key of client frames.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// One client WebSocket connection.
pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

/// Appends a masked client frame to `out`.
fn frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&MASK);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
}

impl RawWs {
    /// Connects from `source` and upgrades `ws://addr{path}`.
    pub async fn connect(addr: SocketAddr, source: Ipv4Addr, path: &str) -> Result<RawWs, String> {
        let mut stream = tcp(addr, source).await?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        let mut buf = Vec::with_capacity(4096);
        loop {
            if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                if !buf.starts_with(b"HTTP/1.1 101") {
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    return Err(format!("upgrade refused: {head}"));
                }
                buf.drain(..end + 4);
                return Ok(RawWs {
                    stream,
                    buf,
                    start: 0,
                });
            }
            if buf.len() > 16 * 1024 {
                return Err("upgrade: response head too long".into());
            }
            let mut chunk = [0u8; 2048];
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| format!("upgrade: {e}"))?;
            if n == 0 {
                return Err("upgrade: connection closed".into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends one frame.
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), String> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        frame(&mut out, opcode, payload);
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| format!("send: {e}"))
    }

    /// Reads once from the socket and calls `f(opcode, payload)` for every complete data
    /// frame now buffered (continuations carry opcode 0). Answers pings. Err on close,
    /// end of stream or a socket error.
    pub async fn read(&mut self, mut f: impl FnMut(u8, &[u8])) -> Result<(), String> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > READ_CHUNK {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + READ_CHUNK, 0);
        let n = match self.stream.read(&mut self.buf[len..]).await {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(len);
                return Err(e.to_string());
            }
        };
        self.buf.truncate(len + n);
        if n == 0 {
            return Err("stream ended".into());
        }
        let mut pongs: Vec<u8> = Vec::new();
        let mut closed = None;
        while let Some((opcode, range, next)) = parse(&self.buf, self.start) {
            let payload = &self.buf[range];
            match opcode {
                TEXT | BINARY | CONTINUATION => f(opcode, payload),
                PING => frame(&mut pongs, 0xA, payload),
                CLOSE => {
                    let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[]));
                    closed = Some(format!("closed: {code:?} {reason}"));
                }
                _ => {}
            }
            self.start = next;
            if closed.is_some() {
                break;
            }
        }
        if !pongs.is_empty() {
            self.stream
                .write_all(&pongs)
                .await
                .map_err(|e| format!("pong: {e}"))?;
        }
        match closed {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }
}

/// The frame at `at` in `buf`, if complete: opcode, payload range, where the next starts.
/// Server frames are unmasked.
fn parse(buf: &[u8], at: usize) -> Option<(u8, std::ops::Range<usize>, usize)> {
    let b = buf.get(at..)?;
    if b.len() < 2 {
        return None;
    }
    let opcode = b[0] & 0x0f;
    let (len, head) = match b[1] & 0x7f {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => {
            let bytes: [u8; 8] = b.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(bytes) as usize, 10)
        }
        n => (n as usize, 2),
    };
    let start = at + head;
    let end = start.checked_add(len)?;
    if end > buf.len() {
        return None;
    }
    Some((opcode, start..end, end))
}
