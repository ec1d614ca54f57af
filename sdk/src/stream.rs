//! The streams an application reads: [`EventStream`] (node API events) and
//! [`UpdateStream`] (typed subscriptions), each over one resumable connection.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::mpsc;

use crate::driver::{Counters, Out};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::subscription::Update;

/// What a stream's connection task has counted so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Connections that came up with every subscription in place (the first one included).
    pub connections: u64,
    /// Resumes the broker answered (`reconnect` replies).
    pub resumes: u64,
    /// Gaps reported: resumes the broker could not make whole.
    pub gaps: u64,
    /// Events received twice and dropped (the broker does not send them; counted to show it).
    pub duplicates_dropped: u64,
    /// Tokens replaced in place by a `refresh` (with a [`crate::TokenProvider`]).
    pub token_refreshes: u64,
}

fn stats(counters: &Counters) -> StreamStats {
    StreamStats {
        connections: counters.connections.load(Ordering::Relaxed),
        resumes: counters.resumes.load(Ordering::Relaxed),
        gaps: counters.gaps.load(Ordering::Relaxed),
        duplicates_dropped: counters.duplicates.load(Ordering::Relaxed),
        token_refreshes: counters.refreshes.load(Ordering::Relaxed),
    }
}

/// The node API events of [`subscribe_events`](crate::WebSocketClient::subscribe_events): a
/// `futures::Stream` of [`Event`]. It ends only after a fatal error (the key was refused),
/// which it yields first. Dropping it closes its connection (code 1000), which ends its
/// subscriptions at the broker.
#[derive(Debug)]
pub struct EventStream {
    items: mpsc::Receiver<Out>,
    counters: Arc<Counters>,
}

impl EventStream {
    pub(crate) fn new(items: mpsc::Receiver<Out>, counters: Arc<Counters>) -> Self {
        Self { items, counters }
    }

    /// What the stream's connection task has counted so far.
    pub fn stats(&self) -> StreamStats {
        stats(&self.counters)
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.items.poll_recv(cx).map(|item| {
            item.map(|out| match out {
                Out::Event(event) => Event::from_raw(event),
                Out::Gap(gap) => Event::Error(Error::Gap(gap)),
                Out::Error(error) => Event::Error(error),
            })
        })
    }
}

/// The items of [`subscribe`](crate::WebSocketClient::subscribe): a `futures::Stream` of
/// `Result<Update>`. Lost events come as [`Update::Gap`]; an event whose data does not
/// have its channel's documented shape, and a subscription the broker refused on a
/// reconnect, as `Err` (the stream goes on); a refused key as a last `Err`.
#[derive(Debug)]
pub struct UpdateStream {
    items: mpsc::Receiver<Out>,
    counters: Arc<Counters>,
}

impl UpdateStream {
    pub(crate) fn new(items: mpsc::Receiver<Out>, counters: Arc<Counters>) -> Self {
        Self { items, counters }
    }

    /// What the stream's connection task has counted so far.
    pub fn stats(&self) -> StreamStats {
        stats(&self.counters)
    }
}

impl Stream for UpdateStream {
    type Item = Result<Update>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Update>>> {
        self.items.poll_recv(cx).map(|item| {
            item.map(|out| match out {
                Out::Event(event) => Update::from_raw(event),
                Out::Gap(gap) => Ok(Update::Gap(gap)),
                Out::Error(error) => Err(error),
            })
        })
    }
}
