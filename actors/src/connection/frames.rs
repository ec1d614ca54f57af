//! A connection's input frames before any request is parsed: the decoder's errors named,
//! pings and pongs held to their budget, fragments reassembled (bounded in bytes and in
//! frames), text checked as UTF-8. Pure, so the fuzz target `ws_frames` runs the same
//! code as the connection actor.

use std::time::Instant;

use actix_http::ws::Item as Fragment;
use actix_web::web::Bytes;
use actix_web_actors::ws::{self, CloseReason, ProtocolError};
use bytestring::ByteString;

use super::control::{ControlBudget, Verdict};
use crate::disconnect::Disconnect;

/// What the connection does with one input frame.
#[derive(Debug)]
pub enum Inbound {
    /// A whole text message: parse it as a request.
    Text(ByteString),
    /// A whole binary message: refused with an invalid-request error.
    Binary,
    /// A ping within the budget: answer it with this pong payload.
    Pong(Bytes),
    /// Nothing to do (a pong, a ping past the budget, a fragment of a message not yet
    /// complete).
    Nothing,
    /// A continuation frame with no first frame: an invalid-request error, the
    /// connection stays.
    Orphan,
    /// The client's close frame.
    Close(Option<CloseReason>),
    /// Close the connection for this.
    End(Disconnect),
    /// The socket failed under the connection (a reset, an I/O error): nothing can be
    /// written to it; the connection just ends (its subscriptions parked), uncounted.
    Gone,
}

/// A fragmented message being reassembled.
struct Fragments {
    text: bool,
    buf: Vec<u8>,
    frames: u32,
}

/// The state of one connection's input.
pub struct FrameInput {
    max_message: usize,
    max_fragments: u32,
    control: ControlBudget,
    fragments: Option<Fragments>,
}

impl FrameInput {
    /// Messages up to `max_message` bytes in up to `max_fragments` frames, and
    /// `control_per_second` pings and pongs a second (`[limits]`).
    pub fn new(
        max_message: usize,
        max_fragments: u32,
        control_per_second: u32,
        now: Instant,
    ) -> FrameInput {
        FrameInput {
            max_message,
            max_fragments,
            control: ControlBudget::new(control_per_second, now),
            fragments: None,
        }
    }

    /// Takes the decoder's next item, arrived at `now`.
    pub fn take(&mut self, msg: Result<ws::Message, ProtocolError>, now: Instant) -> Inbound {
        let msg = match msg {
            Ok(msg) => msg,
            Err(ProtocolError::Overflow) => {
                let max = self.max_message;
                return Inbound::End(Disconnect::TooBig { max });
            }
            // Three things arrive as I/O errors: actix-http's decoder reports reserved bits
            // set (no extension is negotiated) as `InvalidData`; actix-web-actors reports a
            // text frame that is not UTF-8 carrying the UTF-8 error's text; anything else is
            // the socket failing under the connection.
            Err(ProtocolError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                log::debug!("protocol error: {e}");
                return Inbound::End(Disconnect::ProtocolError);
            }
            Err(ProtocolError::Io(e)) if e.to_string().contains("utf-8") => {
                return Inbound::End(Disconnect::InvalidUtf8);
            }
            Err(ProtocolError::Io(e)) => {
                log::debug!("connection input failed: {e}");
                return Inbound::Gone;
            }
            Err(e) => {
                log::debug!("protocol error: {e}");
                return Inbound::End(Disconnect::ProtocolError);
            }
        };
        match msg {
            ws::Message::Text(text) => Inbound::Text(text),
            ws::Message::Binary(_) => Inbound::Binary,
            ws::Message::Continuation(item) => self.fragment(item),
            ws::Message::Ping(payload) => match self.control.count(now) {
                Verdict::Answer => Inbound::Pong(payload),
                Verdict::Ignore => Inbound::Nothing,
                Verdict::Flooding => self.control_flood(),
            },
            ws::Message::Pong(_) => match self.control.count(now) {
                Verdict::Answer | Verdict::Ignore => Inbound::Nothing,
                Verdict::Flooding => self.control_flood(),
            },
            ws::Message::Nop => Inbound::Nothing,
            ws::Message::Close(reason) => Inbound::Close(reason),
        }
    }

    fn control_flood(&self) -> Inbound {
        let max = self.control.per_second();
        Inbound::End(Disconnect::ControlFlood { max })
    }

    fn fragment(&mut self, item: Fragment) -> Inbound {
        let (first, chunk, last) = match item {
            Fragment::FirstText(b) => (Some(true), b, false),
            Fragment::FirstBinary(b) => (Some(false), b, false),
            Fragment::Continue(b) => (None, b, false),
            Fragment::Last(b) => (None, b, true),
        };
        if let Some(text) = first {
            self.fragments = Some(Fragments {
                text,
                buf: Vec::new(),
                frames: 0,
            });
        }
        let Some(frag) = self.fragments.as_mut() else {
            return Inbound::Orphan;
        };
        if frag.buf.len().saturating_add(chunk.len()) > self.max_message {
            let max = self.max_message;
            self.fragments = None;
            return Inbound::End(Disconnect::TooBig { max });
        }
        frag.frames = frag.frames.saturating_add(1);
        if frag.frames > self.max_fragments {
            let max = self.max_fragments;
            self.fragments = None;
            return Inbound::End(Disconnect::TooManyFragments { max });
        }
        frag.buf.extend_from_slice(&chunk);
        if !last {
            return Inbound::Nothing;
        }
        let Some(frag) = self.fragments.take() else {
            return Inbound::Nothing;
        };
        match (frag.text, String::from_utf8(frag.buf)) {
            (true, Ok(text)) => Inbound::Text(ByteString::from(text)),
            (true, Err(_)) => Inbound::End(Disconnect::InvalidUtf8),
            (false, _) => Inbound::Binary,
        }
    }
}
