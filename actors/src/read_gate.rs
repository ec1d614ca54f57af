//! A connection's read gate: closed while the connection has as many publish bytes in
//! flight as it may, so the broker stops reading its socket and TCP slows the publisher
//! (as NATS does); opened again as replies go out.
//!
//! The connection actor pauses and resumes it; the WebSocket input adapter of the HTTP
//! layer polls it before it reads or hands on another frame. The adapter also leaves word
//! here when it refused a frame over the connection's limit at its header, which the
//! connection takes with the next frame it reads and closes 1009.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

/// Shared by a connection (which pauses and resumes) and its input (which waits).
#[derive(Debug, Default)]
pub struct ReadGate {
    paused: AtomicBool,
    waker: AtomicWaker,
    /// The input refused a frame over the limit; the frame it handed on in its place
    /// stands for that refusal.
    oversized: AtomicBool,
}

impl ReadGate {
    /// Stops reading: the input returns no more frames until [`ReadGate::resume`].
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Release);
    }

    /// Reading may go on; wakes the input if it was waiting.
    pub fn resume(&self) {
        if self.paused.swap(false, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// Set by the input: the frame it hands on next stands for a frame it refused for
    /// being over the limit.
    pub fn mark_oversized(&self) {
        self.oversized.store(true, Ordering::Release);
    }

    /// Taken by the connection when it reads an empty pong (the input's stand-in):
    /// whether that frame stands for a refused one.
    pub fn take_oversized(&self) -> bool {
        self.oversized.swap(false, Ordering::AcqRel)
    }

    /// Whether reading is paused now.
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Ready when reading may go on; otherwise registers `cx` to be woken by
    /// [`ReadGate::resume`].
    pub fn poll_open(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.is_paused() {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // A resume between the check and the registration must not be missed.
        if self.is_paused() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_paused_gate_waits_and_a_resume_wakes_it_once() {
        let gate = ReadGate::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = std::task::Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(gate.poll_open(&mut cx).is_ready());
        gate.pause();
        assert!(gate.poll_open(&mut cx).is_pending());
        gate.resume();
        gate.resume();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(gate.poll_open(&mut cx).is_ready());
    }
}
