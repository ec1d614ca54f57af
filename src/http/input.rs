//! A WebSocket connection's input, one frame at a time: the bytes read from the client
//! are handed to actix-web-actors' frame decoder one whole WebSocket frame per request
//! for the next message, and nothing more is read from the socket until the connection
//! actor asks for the next message.
//!
//! actix-web-actors' decoder reads everything the request body has each time it is asked
//! for a message, so a client that sends faster than its messages are handled (a
//! publisher held by flow control) would pile up unparsed frames without bound. With this
//! adapter what a connection holds unread is at most one frame plus one read of the
//! body (the HTTP layer stops reading the socket past its own small buffer), and TCP
//! slows the client down, as NATS does with a publisher whose subscribers fall behind.
//!
//! The connection's [`ReadGate`] stops it altogether: while a publisher's frames in
//! flight are at their bound, no frame is handed on and nothing more is read.
//!
//! A frame whose header declares more than the connection's limit is refused as soon as
//! its header is read: the adapter marks the refusal on the gate and hands the decoder an
//! empty pong in the frame's place, which the connection takes as the refusal and closes
//! 1009; the frame's payload is read and dropped as it arrives, never held. (actix-http's
//! decoder would wait for the whole frame before it looked at its length.) Every request
//! for a message that this adapter answers is one whole frame, or ends the stream: no
//! request waits for a wake-up that nothing will send.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::error::PayloadError;
use actix_web::web::{Buf, Bytes, BytesMut};
use futures_util::Stream;
use rustorium_actors::read_gate::ReadGate;
use std::sync::Arc;

/// What stands in for a refused frame: an empty, masked pong (a frame the decoder takes
/// whole, so it leaves nothing behind in its buffer).
const REFUSED_STAND_IN: [u8; 6] = [0x8A, 0x80, 0, 0, 0, 0];

/// The length of the WebSocket frame at the start of `buf` (header and payload), when
/// its header is complete. Lengths past `usize` saturate.
fn frame_len(buf: &[u8]) -> Option<usize> {
    let second = *buf.get(1)?;
    let masked = second & 0x80 != 0;
    let (payload, header) = match second & 0x7f {
        126 => {
            let b = buf.get(2..4)?;
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let b: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    let header = header + if masked { 4 } else { 0 };
    let payload = usize::try_from(payload).unwrap_or(usize::MAX);
    Some(payload.saturating_add(header))
}

/// The adapter. See the module documentation.
pub struct OneFrameAtATime<S> {
    inner: S,
    /// Read and not yet handed on; at most one frame plus one read.
    buf: BytesMut,
    /// A frame was handed on in this request for a message: hand nothing more until the
    /// decoder asks again.
    handed: bool,
    /// The request body ended: after what is held, the stream ends.
    done: bool,
    /// Frames declaring more than this (header included) are refused at their header
    /// (see the module documentation), so that a large or lying header cannot make this
    /// buffer grow.
    max_frame: usize,
    /// Bytes of a refused frame's payload still to be read and dropped.
    skip: usize,
    /// Closed while the connection takes no more input.
    gate: Arc<ReadGate>,
}

impl<S> OneFrameAtATime<S> {
    /// Wraps a request body; `max_frame` is the connection's frame limit, `gate` the
    /// connection's read gate.
    pub fn new(inner: S, max_frame: usize, gate: Arc<ReadGate>) -> OneFrameAtATime<S> {
        OneFrameAtATime {
            gate,
            inner,
            buf: BytesMut::new(),
            handed: false,
            done: false,
            skip: 0,
            // Room for the longest header.
            max_frame: max_frame.saturating_add(14),
        }
    }

    /// The next whole frame; for a frame over the limit, its stand-in (the refusal is
    /// marked on the gate, the frame's own bytes are dropped); at the end, everything held.
    fn take_frame(&mut self) -> Option<Bytes> {
        match frame_len(&self.buf) {
            Some(n) if n > self.max_frame => {
                let held = n.min(self.buf.len());
                self.buf.advance(held);
                self.skip = n - held;
                self.gate.mark_oversized();
                Some(Bytes::from_static(&REFUSED_STAND_IN))
            }
            Some(n) if n <= self.buf.len() => Some(self.buf.split_to(n).freeze()),
            _ if self.done && !self.buf.is_empty() => Some(self.buf.split().freeze()),
            _ => None,
        }
    }

    /// Drops what was read of a refused frame's payload.
    fn drop_skipped(&mut self) {
        let n = self.skip.min(self.buf.len());
        self.buf.advance(n);
        self.skip -= n;
    }
}

impl<S> Stream for OneFrameAtATime<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.handed {
            // The decoder asked for more bytes in the same request for a message: it has a
            // whole frame already and will return it; the next request comes
            // back here. At the end of the body the stream ends instead, so that a
            // decoder holding part of a frame is not left waiting.
            this.handed = false;
            if this.done {
                return Poll::Ready(None);
            }
            return Poll::Pending;
        }
        if this.gate.poll_open(cx).is_pending() {
            return Poll::Pending;
        }
        loop {
            if let Some(frame) = this.take_frame() {
                this.handed = true;
                return Poll::Ready(Some(Ok(frame)));
            }
            if this.done {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    this.buf.extend_from_slice(&chunk);
                    this.drop_skipped();
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => this.done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    /// A masked text frame with `payload`.
    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x81];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend_from_slice(payload);
        f
    }

    /// Drives the adapter as actix-web-actors' decoder does: read until pending, then
    /// take one frame; returns what each request for a message got.
    fn requests(chunks: Vec<Vec<u8>>, max_frame: usize) -> Vec<Vec<u8>> {
        requests_with(chunks, max_frame, Arc::default())
    }

    /// [`requests`] with the connection's gate.
    fn requests_with(chunks: Vec<Vec<u8>>, max_frame: usize, gate: Arc<ReadGate>) -> Vec<Vec<u8>> {
        let inner = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, PayloadError>(Bytes::from(c))),
        );
        let mut s = OneFrameAtATime::new(inner, max_frame, gate);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut got = Vec::new();
        for _ in 0..100 {
            let mut one = Vec::new();
            let mut ended = false;
            loop {
                match s.poll_next_unpin(&mut cx) {
                    Poll::Ready(Some(Ok(b))) => one.extend_from_slice(&b),
                    Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                        ended = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            if !one.is_empty() {
                got.push(one);
            }
            if ended {
                break;
            }
        }
        got
    }

    #[test]
    fn frames_split_across_and_packed_into_chunks_come_out_one_per_request() {
        let (a, b, c) = (frame(b"hello"), frame(&[7; 300]), frame(&[9; 70_000]));
        let all: Vec<u8> = [a.clone(), b.clone(), c.clone()].concat();
        // Every split of the bytes into two chunks.
        for cut in [
            1,
            2,
            3,
            7,
            a.len(),
            a.len() + 3,
            a.len() + b.len() + 5,
            all.len() - 1,
        ] {
            let chunks = vec![all[..cut].to_vec(), all[cut..].to_vec()];
            let got = requests(chunks, 1 << 20);
            assert_eq!(got, vec![a.clone(), b.clone(), c.clone()], "cut at {cut}");
        }
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_at_its_header_and_its_payload_dropped() {
        let big = frame(&[b'x'; 5000]);
        let next = frame(b"after");
        let all = [big.clone(), next.clone()].concat();
        // The oversized frame arriving whole, and in two pieces around its header and its
        // end.
        for cut in [all.len(), 3, 9, big.len() - 1, big.len() + 2] {
            let chunks = vec![all[..cut].to_vec(), all[cut..].to_vec()];
            let gate = Arc::new(ReadGate::default());
            let got = requests_with(chunks, 1024, gate.clone());
            assert!(gate.take_oversized(), "cut at {cut}: the refusal is marked");
            assert_eq!(
                got,
                vec![REFUSED_STAND_IN.to_vec(), next.clone()],
                "cut at {cut}: the stand-in, then framing goes on after the payload"
            );
        }
    }

    #[test]
    fn a_header_declaring_more_than_usize_is_refused_and_nothing_after_it_is_read() {
        let mut lying = vec![0x81, 0x80 | 127];
        lying.extend_from_slice(&u64::MAX.to_be_bytes());
        lying.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        let gate = Arc::new(ReadGate::default());
        let got = requests_with(vec![lying, frame(b"never")], 1024, gate.clone());
        assert_eq!(got, vec![REFUSED_STAND_IN.to_vec()]);
        assert!(gate.take_oversized());
    }

    #[test]
    fn the_stand_in_is_one_whole_frame_to_the_decoder() {
        use actix_http::ws::{Codec, Frame};
        use tokio_util::codec::Decoder;
        let mut buf = BytesMut::from(&REFUSED_STAND_IN[..]);
        let frame = Codec::new().max_size(16).decode(&mut buf);
        assert!(matches!(frame, Ok(Some(Frame::Pong(ref b))) if b.is_empty()));
        assert!(buf.is_empty(), "nothing left behind");
    }

    #[test]
    fn a_closed_gate_hands_on_nothing_until_it_opens() {
        let f = frame(b"abc");
        let inner = futures_util::stream::iter(vec![Ok::<_, PayloadError>(Bytes::from(f.clone()))]);
        let gate = Arc::new(ReadGate::default());
        let mut s = OneFrameAtATime::new(inner, 1024, gate.clone());
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        gate.pause();
        assert!(s.poll_next_unpin(&mut cx).is_pending());
        gate.resume();
        match s.poll_next_unpin(&mut cx) {
            Poll::Ready(Some(Ok(b))) => assert_eq!(&b[..], &f[..]),
            other => panic!("expected the frame, got {other:?}"),
        }
    }

    #[test]
    fn a_partial_frame_at_the_end_is_handed_on_and_the_stream_ends() {
        let f = frame(b"abcdef");
        let inner =
            futures_util::stream::iter(vec![Ok::<_, PayloadError>(Bytes::from(f[..5].to_vec()))]);
        let mut s = OneFrameAtATime::new(inner, 1024, Arc::default());
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        match s.poll_next_unpin(&mut cx) {
            Poll::Ready(Some(Ok(b))) => assert_eq!(&b[..], &f[..5]),
            other => panic!("expected the partial frame, got {other:?}"),
        }
        // The decoder cannot make a message of it: the next request must not wait.
        assert!(matches!(s.poll_next_unpin(&mut cx), Poll::Ready(None)));
    }
}
