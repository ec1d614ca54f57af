//! A real `redis-server` for the Redis engine's tests: started on a free loopback port
//! without persistence, killed on drop. When it is not installed the caller skips, unless
//! `RUSTORIUM_REQUIRE_REDIS` is set (the test command sets it when it installed Redis).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` on a free loopback port, without persistence, killed on drop.
pub struct RedisServer {
    child: Child,
    /// `redis://127.0.0.1:PORT/`.
    pub url: String,
}

impl RedisServer {
    /// A client of this server.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url.as_str()).expect("a Redis URL")
    }

    /// A new connection, as one node of a cluster holds.
    pub async fn node(&self) -> redis::aio::MultiplexedConnection {
        self.client()
            .get_multiplexed_async_connection()
            .await
            .expect("a connection to redis-server")
    }

    /// A new pub/sub connection.
    pub async fn pubsub(&self) -> redis::aio::PubSub {
        self.client()
            .get_async_pubsub()
            .await
            .expect("a pub/sub connection to redis-server")
    }
}

impl RedisServer {
    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.url
            .trim_end_matches('/')
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a port in the URL")
    }

    /// Kills it (SIGKILL): its data is gone, as after a crash without persistence.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it as an operator would (`SHUTDOWN SAVE`): its data is written to disk first,
    /// and [`RedisServer::restart`] loads it again.
    pub async fn shutdown_saving(&mut self) {
        let mut con = self.node().await;
        // Redis closes the connection instead of answering.
        let _: redis::RedisResult<()> = redis::cmd("SHUTDOWN")
            .arg("SAVE")
            .query_async(&mut con)
            .await;
        let _ = self.child.wait();
    }

    /// Starts it again on the same port: empty after [`RedisServer::kill`], with its data
    /// after [`RedisServer::shutdown_saving`].
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(self.port()).expect("redis-server starts again");
        wait_listening(self.port());
    }
}

/// Generous stream bounds for the tests: nothing they append is trimmed.
pub const TRIM: rustorium_actors::engine::redis::eventlog::Trim =
    rustorium_actors::engine::redis::eventlog::Trim {
        max_len: 1000,
        ttl_secs: 120,
    };

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(port: u16) -> std::io::Result<Child> {
    let dir = std::env::temp_dir().join(format!("rustorium-redis-{port}"));
    std::fs::create_dir_all(&dir)?;
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts one, or `None` when Redis is not installed and not required.
pub fn redis_server() -> Option<RedisServer> {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = match spawn(port) {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("RUSTORIUM_REQUIRE_REDIS").is_none(),
                "RUSTORIUM_REQUIRE_REDIS is set but redis-server cannot be started: {e}"
            );
            eprintln!("redis-server is not installed: the Redis tests are skipped");
            return None;
        }
    };
    wait_listening(port);
    Some(RedisServer {
        child,
        url: format!("redis://127.0.0.1:{port}/"),
    })
}
