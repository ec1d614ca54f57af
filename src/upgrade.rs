//! WebSocket upgrades served without the HTTP/1 dispatcher's buffers: the standalone
//! server hands every upgrade request to [`serve`], which runs it through the same actix-web
//! app, writes the response head, then gives the connection actor the socket's read half
//! as its input and writes its output to the write half, keeping no read or write buffer
//! between reads and writes.
//!
//! Served by actix-http's HTTP/1 dispatcher (as `HttpServer` does), an upgraded connection
//! keeps the dispatcher's 8 KiB read and 8 KiB write buffers for its whole life, about
//! half of an idle connection's memory. `HttpServiceBuilder::upgrade` hands over the
//! socket and those buffers instead (a `Framed`): [`serve`] keeps the unread bytes and
//! drops the buffers.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{ready, Context, Poll};

use actix_codec::{AsyncRead, AsyncWrite, Framed, ReadBuf};
use actix_http::body::{BoxBody, MessageBody};
use actix_http::error::PayloadError;
use actix_http::h1::{Codec, Message};
use actix_http::{BoxedPayloadStream, ConnectionType, Payload, Request, Response, StatusCode};
use actix_web::dev::{Service, ServiceResponse};
use bytes::{Buf, Bytes, BytesMut};
use futures_util::{SinkExt, Stream};
use tokio::io::{ReadHalf, WriteHalf};

/// The settings an upgraded connection's IO follows (from `[limits]`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IoLimits {
    /// How long a closed connection's input is still read (and discarded) for the client
    /// to see the end of the output (`limits.close_linger_ms`).
    pub linger: std::time::Duration,
    /// The most bytes of the actor's output joined for one write
    /// (`limits.write_coalesce_bytes`).
    pub coalesce: usize,
}

impl IoLimits {
    /// The limits `limits` sets.
    pub fn from(limits: &rustorium_actors::settings::Limits) -> IoLimits {
        IoLimits {
            linger: std::time::Duration::from_millis(limits.close_linger_ms),
            coalesce: limits.write_coalesce_bytes.max(1),
        }
    }
}

/// Bytes read from an upgraded socket at a time, into a buffer on the stack (nothing is
/// kept per connection between reads; each read becomes one chunk of the exact size).
/// Fixed, not a setting: it sizes a stack array, and a read of a larger frame simply
/// takes several chunks.
const READ_CHUNK_BYTES: usize = 8 * 1024;

/// Serves one upgrade request (a WebSocket handshake, or `CONNECT`) arriving on `framed`:
/// `app` answers it like any other request; a `101 Switching Protocols` then carries the
/// connection actor's frames until either side ends, anything else is written and the
/// connection closed. Returns when the connection is over (an error: how it broke).
pub(crate) async fn serve<T, S, B>(
    app: Rc<S>,
    req: Request,
    framed: Framed<T, Codec>,
    limits: IoLimits,
) -> Result<(), actix_web::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    // Two boxes in turn, so that the connection's task holds one pointer, and for the
    // connection's life only the small second future (the handshake's, with the `Framed`,
    // is freed once the upgrade is answered).
    match Box::pin(handshake(app, req, framed, limits)).await? {
        Some(upgraded) => Box::pin(upgraded.run()).await,
        None => Ok(()),
    }
}

/// Answers the request; `Some` when it was upgraded, with the dispatcher's buffers gone.
async fn handshake<T, S, B>(
    app: Rc<S>,
    req: Request,
    mut framed: Framed<T, Codec>,
    limits: IoLimits,
) -> Result<Option<Upgraded<T>>, actix_web::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + 'static,
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody + 'static,
{
    // The request head is all the dispatcher read; the actor's input is attached below,
    // once the upgrade is answered.
    let (input, attach) = Deferred::new();
    let input: BoxedPayloadStream = Box::pin(input);
    let (req, _) = req.replace_payload(Payload::Stream { payload: input });
    // Boxed so that the (large, short-lived) handler future is not part of this one.
    let res: Response<BoxBody> = match Box::pin(app.call(req)).await {
        Ok(res) => res.map_into_boxed_body().into_parts().1.into(),
        Err(e) => e.error_response().into(),
    };
    let (mut head, mut body) = res.into_parts();
    if head.status() != StatusCode::SWITCHING_PROTOCOLS {
        head.head_mut().set_connection_type(ConnectionType::Close);
        framed.send(Message::Item((head, body.size()))).await?;
        while let Some(chunk) = poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await {
            let chunk = chunk.map_err(|e| io::Error::other(e.to_string()))?;
            framed.send(Message::Chunk(Some(chunk))).await?;
        }
        framed.send(Message::Chunk(None)).await?;
        return Ok(None);
    }
    framed.send(Message::Item((head, body.size()))).await?;
    let parts = framed.into_parts();
    let (read, write) = tokio::io::split(parts.io);
    // What the client sent after its request head (its first frames) is the input's
    // start; the dispatcher's buffers go with `parts`.
    let first = (!parts.read_buf.is_empty()).then(|| Bytes::copy_from_slice(&parts.read_buf));
    drop(parts.read_buf);
    drop(parts.write_buf);
    attach.attach(Input {
        first,
        read,
        ended: false,
    });
    Ok(Some(Upgraded {
        output: Output {
            io: write,
            body: Some(body),
            out: Bytes::new(),
            unflushed: false,
            coalesce: limits.coalesce,
        },
        attach,
        linger: limits.linger,
    }))
}

/// An upgraded connection: the actor's output to write, its input to drain at the end.
struct Upgraded<T> {
    output: Output<T>,
    attach: Attach<T>,
    /// How long to drain the input after the output ended.
    linger: std::time::Duration,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Upgraded<T> {
    /// Writes the actor's output until it ends, then lingers.
    async fn run(mut self) -> Result<(), actix_web::Error> {
        poll_fn(|cx| self.output.poll(cx)).await?;
        // Closing a socket with unread input resets it, and a reset can discard what the
        // client has not read yet (the close frame): read and discard until the client
        // closes too, for at most `linger`, as the HTTP/1 dispatcher does.
        let linger = self.linger;
        let drain = poll_fn(|cx| self.attach.poll_drain(cx));
        let _ = actix_web::rt::time::timeout(linger, drain).await;
        Ok(())
    }
}

/// The request's payload: empty until the upgrade is answered, then the socket's input.
/// The slot is shared with the [`Attach`] that fills it (both on the connection's thread).
struct Deferred<T> {
    slot: Rc<std::cell::RefCell<Slot<T>>>,
}

/// What a [`Deferred`] reads from.
enum Slot<T> {
    /// Not upgraded yet: whoever reads waits here.
    Waiting(Option<std::task::Waker>),
    /// Upgraded: the socket's input.
    Ready(Input<T>),
    /// Never upgraded (the request ended).
    Gone,
}

/// Fills a [`Deferred`], and drains the input once the output is over; dropping it
/// unattached ends the payload.
struct Attach<T> {
    slot: Rc<std::cell::RefCell<Slot<T>>>,
}

impl<T> Deferred<T> {
    fn new() -> (Deferred<T>, Attach<T>) {
        let slot = Rc::new(std::cell::RefCell::new(Slot::Waiting(None)));
        (Deferred { slot: slot.clone() }, Attach { slot })
    }
}

impl<T> Attach<T> {
    fn attach(&self, input: Input<T>) {
        let before = std::mem::replace(&mut *self.slot.borrow_mut(), Slot::Ready(input));
        if let Slot::Waiting(Some(waker)) = before {
            waker.wake();
        }
    }
}

impl<T: AsyncRead + Unpin> Attach<T> {
    /// Reads and discards the input until it ends (or fails).
    fn poll_drain(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut slot = self.slot.borrow_mut();
        let Slot::Ready(input) = &mut *slot else {
            return Poll::Ready(());
        };
        input.first = None;
        while let Some(Ok(_)) = ready!(Pin::new(&mut *input).poll_next(cx)) {}
        Poll::Ready(())
    }
}

impl<T> Drop for Attach<T> {
    fn drop(&mut self) {
        let mut slot = self.slot.borrow_mut();
        if let Slot::Waiting(waker) = &mut *slot {
            if let Some(waker) = waker.take() {
                waker.wake();
            }
            *slot = Slot::Gone;
        }
    }
}

impl<T: AsyncRead + Unpin> Stream for Deferred<T> {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut slot = self.slot.borrow_mut();
        match &mut *slot {
            Slot::Waiting(waker) => {
                *waker = Some(cx.waker().clone());
                Poll::Pending
            }
            Slot::Gone => Poll::Ready(None),
            Slot::Ready(input) => Pin::new(input).poll_next(cx),
        }
    }
}

/// The socket's read half as the actor's input: what followed the request head, then one
/// chunk per read.
struct Input<T> {
    /// Bytes the dispatcher had read past the request head.
    first: Option<Bytes>,
    /// The socket's read half (kept to the end, for [`Attach::poll_drain`]).
    read: ReadHalf<T>,
    /// Whether the client ended its side or a read failed.
    ended: bool,
}

impl<T: AsyncRead + Unpin> Stream for Input<T> {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        let mut stack = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK_BYTES];
        let mut buf = ReadBuf::uninit(&mut stack);
        let item = match ready!(Pin::new(&mut self.read).poll_read(cx, &mut buf)) {
            Ok(()) if buf.filled().is_empty() => None,
            Ok(()) => return Poll::Ready(Some(Ok(Bytes::copy_from_slice(buf.filled())))),
            Err(e) => Some(Err(PayloadError::Io(e))),
        };
        self.ended = true;
        Poll::Ready(item)
    }
}

/// Writes the actor's output to the socket's write half.
struct Output<T> {
    /// The socket's write half.
    io: WriteHalf<T>,
    /// The actor's output (encoded frames); `None` once it ended.
    body: Option<BoxBody>,
    /// The rest of the chunk being written.
    out: Bytes,
    /// Whether something was written since the last flush (TLS holds records until then).
    unflushed: bool,
    /// The most bytes joined for one write (`limits.write_coalesce_bytes`).
    coalesce: usize,
}

impl<T: AsyncWrite> Output<T> {
    /// Writes for as long as the socket takes it; ready when the actor's output has ended
    /// and the socket's write side is shut down, or on an I/O error.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            self.gather(cx)?;
            if self.out.is_empty() {
                if self.body.is_none() {
                    ready!(Pin::new(&mut self.io).poll_flush(cx))?;
                    return Pin::new(&mut self.io).poll_shutdown(cx);
                }
                if self.unflushed {
                    ready!(Pin::new(&mut self.io).poll_flush(cx))?;
                    self.unflushed = false;
                }
                return Poll::Pending;
            }
            while !self.out.is_empty() {
                let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.out.advance(n);
                self.unflushed = true;
            }
        }
    }

    /// Takes what the actor has ready, joined into one chunk of at most about
    /// `coalesce` bytes (one write for several frames, as the HTTP/1 dispatcher's
    /// write buffer did). Chunks are appended to one growing buffer, each byte copied once;
    /// the joined chunk lives only until written.
    fn gather(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let mut joined: Option<BytesMut> = None;
        loop {
            let len = joined.as_ref().map_or(self.out.len(), BytesMut::len);
            let Some(body) = self.body.as_mut() else {
                break;
            };
            if len >= self.coalesce {
                break;
            }
            match Pin::new(body).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) if len == 0 => self.out = chunk,
                Poll::Ready(Some(Ok(chunk))) => {
                    let out = &self.out;
                    joined
                        .get_or_insert_with(|| {
                            let mut j = BytesMut::with_capacity(out.len() + chunk.len());
                            j.extend_from_slice(out);
                            j
                        })
                        .extend_from_slice(&chunk);
                }
                Poll::Ready(Some(Err(e))) => return Err(io::Error::other(e.to_string())),
                Poll::Ready(None) => self.body = None,
                Poll::Pending => break,
            }
        }
        if let Some(joined) = joined {
            self.out = joined.freeze();
        }
        Ok(())
    }
}
