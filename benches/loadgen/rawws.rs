//! A minimal WebSocket client for the generator: the upgrade, masked frames out (several
//! may go in one write), and frames in parsed straight from the read buffer with no
//! per-frame allocation, no UTF-8 pass and no zeroing of the buffer before a read, so the
//! generator stays cheap per delivery on the cores it shares with the broker. Pings are
//! answered; a close or error ends the stream.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::client::tcp;

/// Frame opcodes.
pub const TEXT: u8 = 0x1;
/// Binary frame.
pub const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// The room a read is given at least: a read takes whatever the socket holds up to the
/// buffer's spare capacity (at least this), and the buffer only grows when frames are
/// larger or come faster than they are consumed.
const READ_ROOM: usize = 8 * 1024;
/// The (fixed) masking key of client frames.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Frames read from one connection: the bytes received and not yet consumed.
#[derive(Default)]
pub struct Frames {
    buf: Vec<u8>,
    start: usize,
}

impl Frames {
    /// Reads once from `stream` into the buffer's spare room (never zeroed first).
    /// Err at end of stream or on a socket error.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, stream: &mut R) -> Result<(), String> {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > self.buf.capacity() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        if self.buf.capacity() - self.buf.len() < READ_ROOM {
            self.buf.reserve(READ_ROOM);
        }
        match stream.read_buf(&mut self.buf).await {
            Ok(0) => Err("stream ended".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Calls `f(opcode, payload)` for every complete data frame buffered (continuations
    /// carry opcode 0) and appends a pong to `pongs` for every ping. Err on a close.
    pub fn drain(
        &mut self,
        pongs: &mut Vec<u8>,
        mut f: impl FnMut(u8, &[u8]),
    ) -> Result<(), String> {
        while let Some((opcode, range, next)) = parse(&self.buf, self.start) {
            let payload = &self.buf[range];
            self.start = next;
            match opcode {
                TEXT | BINARY | CONTINUATION => f(opcode, payload),
                PING => frame(pongs, PONG, payload),
                CLOSE => {
                    let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                    let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or(&[]));
                    return Err(format!("closed: {code:?} {reason}"));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// One client WebSocket connection.
pub struct RawWs {
    stream: TcpStream,
    frames: Frames,
}

/// Appends a masked client frame to `out`.
pub fn frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    let at = begin_frame(out, opcode, payload.len());
    out.extend_from_slice(payload);
    mask_from(out, at);
}

/// Appends the head of a masked client frame whose payload is `len` bytes; returns where
/// the payload goes.
fn begin_frame(out: &mut Vec<u8>, opcode: u8, len: usize) -> usize {
    out.push(0x80 | opcode);
    match len {
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
    out.len()
}

/// Masks `out[at..]` (a payload just appended after [`begin_frame`]), eight bytes at a
/// time.
fn mask_from(out: &mut [u8], at: usize) {
    let word = u64::from_ne_bytes([
        MASK[0], MASK[1], MASK[2], MASK[3], MASK[0], MASK[1], MASK[2], MASK[3],
    ]);
    let payload = &mut out[at..];
    let mut chunks = payload.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ word).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= MASK[i % 4];
    }
}

/// Upgrades `ws://addr{path}` on `stream`; returns the bytes read past the response head.
async fn upgrade(stream: &mut TcpStream, addr: SocketAddr, path: &str) -> Result<Vec<u8>, String> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("upgrade: {e}"))?;
    let mut buf = Vec::with_capacity(1024);
    loop {
        if let Some(end) = memchr::memmem::find(&buf, b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 101") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                return Err(format!("upgrade refused: {head}"));
            }
            buf.drain(..end + 4);
            return Ok(buf);
        }
        if buf.len() > 16 * 1024 {
            return Err("upgrade: response head too long".into());
        }
        buf.reserve(1024);
        let n = stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        if n == 0 {
            return Err("upgrade: connection closed".into());
        }
    }
}

impl RawWs {
    /// Connects from `source` and upgrades `ws://addr{path}`.
    pub async fn connect(addr: SocketAddr, source: Ipv4Addr, path: &str) -> Result<RawWs, String> {
        let mut stream = tcp(addr, source).await?;
        let buf = upgrade(&mut stream, addr, path).await?;
        Ok(RawWs {
            stream,
            frames: Frames { buf, start: 0 },
        })
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
    pub async fn read(&mut self, f: impl FnMut(u8, &[u8])) -> Result<(), String> {
        self.frames.fill(&mut self.stream).await?;
        let mut pongs = Vec::new();
        let drained = self.frames.drain(&mut pongs, f);
        if !pongs.is_empty() {
            self.stream
                .write_all(&pongs)
                .await
                .map_err(|e| format!("pong: {e}"))?;
        }
        drained
    }

    /// The two directions apart (a publisher writes while a task of its own reads the
    /// replies), with the frames already buffered.
    pub fn into_split(self) -> (OwnedReadHalf, Frames, OwnedWriteHalf) {
        let (r, w) = self.stream.into_split();
        (r, self.frames, w)
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
