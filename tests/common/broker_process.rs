//! The `rustorium-broker` binary as a child process: started with arguments, its address
//! read from the banner, killed on drop.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Instant;

use super::{lines_of, stdout_lines, WAIT};

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
    /// Its stderr (the log, at `RUST_LOG=warn` unless the arguments say otherwise), line
    /// by line.
    pub log: Receiver<String>,
}

impl BrokerProcess {
    /// Starts the binary with these arguments (no `RUSTORIUM_CONFIG` from the environment,
    /// `RUST_LOG=warn`) and waits for its `listening on` line.
    pub fn spawn(args: &[&str]) -> BrokerProcess {
        BrokerProcess::spawn_logging(args, "warn")
    }

    /// [`BrokerProcess::spawn`] with `RUST_LOG=log_level`.
    pub fn spawn_logging(args: &[&str], log_level: &str) -> BrokerProcess {
        let mut child = Command::new(BIN)
            .args(args)
            .env_remove("RUSTORIUM_CONFIG")
            .env("RUST_LOG", log_level)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn broker");
        let lines = stdout_lines(&mut child);
        let log = lines_of(child.stderr.take().expect("stderr piped"));
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
            log,
        }
    }

    /// Reads log lines until one contains `text`, within WAIT; returns it.
    pub fn log_until(&self, text: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(e) => panic!("no log line containing {text:?} in time: {e}"),
            }
        }
    }

    /// Sends SIGHUP: reload the configuration.
    pub fn hangup(&self) {
        let pid = i32::try_from(self.child.id()).expect("pid fits i32");
        // SAFETY: kill only sends a signal to the child we started.
        let rc = unsafe { libc::kill(pid, libc::SIGHUP) };
        assert_eq!(rc, 0, "SIGHUP sent");
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

/// Runs the broker binary on the config file `config` and waits (within [`WAIT`]) for it
/// to stop by itself, as it must on a refused start; returns its exit code and what it
/// wrote to stderr. Fails the test if it is still running after [`WAIT`].
pub fn exit_of(config: &std::path::Path) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = Command::new(BIN)
        .args(["--config", config.to_str().expect("utf-8 path")])
        .env_remove("RUSTORIUM_CONFIG")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the broker");
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the broker did not stop within {WAIT:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    (status.code(), err)
}
