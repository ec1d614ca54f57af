//! A second handle on a connection's TCP socket, so the broker can drop a connection whose
//! actor cannot run: actix-web-actors polls a connection only while its socket accepts
//! writes, so a client that stopped reading can only be cut off from outside.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

/// A duplicate of the connection's socket descriptor (closed when the last clone drops).
#[derive(Clone, Debug)]
pub struct Socket(Arc<OwnedFd>);

impl Socket {
    /// Wraps a duplicated descriptor.
    pub fn new(fd: OwnedFd) -> Socket {
        Socket(Arc::new(fd))
    }

    /// Resets the connection: no lingering over unsent data, both directions shut down.
    /// The server's pending write then fails and actix drops the connection.
    pub fn reset(&self) {
        let sock = socket2::SockRef::from(&*self.0);
        let _ = sock.set_linger(Some(Duration::ZERO));
        let _ = sock.shutdown(std::net::Shutdown::Both);
    }
}
