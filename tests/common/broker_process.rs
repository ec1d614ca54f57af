//! The `rustorium-broker` binary as a child process: started with arguments, its address
//! read from the banner, killed on drop.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Instant;

use super::{stdout_lines, WAIT};

/// The broker binary of this package.
pub const BIN: &str = env!("CARGO_BIN_EXE_rustorium-broker");

/// A running broker process.
pub struct BrokerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// The banner lines read so far (up to the `listening on` line).
    pub banner: Vec<String>,
    /// The rest of its stdout, line by line.
    pub lines: Receiver<String>,
}

impl BrokerProcess {
    /// Starts the binary with these arguments (no `RUSTORIUM_CONFIG` from the environment,
    /// `RUST_LOG=warn`, stderr discarded) and waits for its `listening on` line.
    pub fn spawn(args: &[&str]) -> BrokerProcess {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("RUSTORIUM_CONFIG")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn broker");
        let lines = stdout_lines(&mut child);
        let deadline = Instant::now() + WAIT;
        let mut banner = Vec::new();
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = lines.recv_timeout(left).expect("banner printed in time");
            let addr = line
                .strip_prefix("rustorium-broker listening on ")
                .and_then(|a| a.trim().parse().ok());
            banner.push(line);
            if let Some(addr) = addr {
                break addr;
            }
        };
        BrokerProcess {
            child,
            addr,
            banner,
            lines,
        }
    }

    /// Reads stdout lines (after the banner so far) until `want` returns a value, within WAIT.
    pub fn read_until<T>(&mut self, mut want: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).expect("line printed in time");
            let found = want(&line);
            self.banner.push(line);
            if let Some(found) = found {
                return found;
            }
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
