//! Publishers: one persistent connection to the broker under test, paced closed-loop (at
//! most K events in flight), at a fixed rate, or as fast as the broker accepts.
//! rustorium-broker is fed `publish` frames over WebSocket (PROTOCOL.md section 8) or HTTP
//! batches; nats-server is fed `PUB` over plain NATS.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::client::{tcp, websocket};
use super::payload::payload_with;
use super::tally::Tally;
use super::target::KEY;

/// How the publisher paces itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// At most this many events published and not yet delivered to every subscriber.
    Closed(usize),
    /// This many events per second.
    Rate(f64),
    /// Batches back to back, as fast as the broker takes them.
    Open,
}

/// How events reach rustorium-broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `publish` frames on one WebSocket connection, pipelined.
    WebSocket,
    /// `POST /api/publish` batches on one keep-alive HTTP connection.
    Http,
}

/// What the publisher did.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// Events handed to the broker (and, for rustorium, acknowledged).
    pub events: u64,
    /// Time from the first publish to the last acknowledgement.
    pub elapsed: Duration,
    /// The first error, if publishing stopped early.
    pub error: Option<String>,
}

/// One way of handing a batch of events to a broker.
pub trait Sink {
    /// Publishes events `seqs` (each on channel `seq % channels`), stamped now.
    async fn send(&mut self, seqs: std::ops::Range<u64>, tally: &Tally) -> Result<(), String>;
    /// Waits (bounded) until the broker has taken everything sent; returns events taken.
    async fn finish(&mut self, sent: u64) -> Result<u64, String>;
}

fn events_json(seqs: std::ops::Range<u64>, tally: &Tally, size: usize) -> String {
    let mut out = String::with_capacity(seqs.clone().count() * (size + 48));
    for seq in seqs {
        if !out.is_empty() {
            out.push(',');
        }
        let topic = tally.topic_of(seq);
        out.push_str("{\"channel\":\"");
        out.push_str(&topic.channel());
        out.push_str("\",\"data\":");
        let fields = topic.routing_fields(seq);
        out.push_str(&payload_with(seq, tally.now_ns(), size, &fields));
        out.push('}');
    }
    out
}

/// `publish` frames on a WebSocket; a reader task counts the acknowledgements.
pub struct RustoriumWs {
    sink: SplitSink<WebSocketStream<TcpStream>, Message>,
    batches: Rc<RefCell<VecDeque<u64>>>,
    acked: Rc<Cell<u64>>,
    error: Rc<RefCell<Option<String>>>,
    size: usize,
    next_id: u64,
}

impl RustoriumWs {
    /// Connects a publisher with the load key.
    pub async fn connect(addr: SocketAddr, size: usize) -> Result<RustoriumWs, String> {
        let ws = websocket(addr, Ipv4Addr::LOCALHOST, &format!("/ws?token={KEY}")).await?;
        let (sink, mut stream) = ws.split();
        let batches = Rc::new(RefCell::new(VecDeque::new()));
        let acked = Rc::new(Cell::new(0));
        let error = Rc::new(RefCell::new(None));
        let (b, a, e) = (batches.clone(), acked.clone(), error.clone());
        tokio::task::spawn_local(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(t) = msg else { continue };
                if t.contains("publish_success") {
                    let n = b.borrow_mut().pop_front().unwrap_or(0);
                    a.set(a.get() + n);
                } else if t.contains("\"error\":{") {
                    b.borrow_mut().pop_front();
                    e.borrow_mut().get_or_insert_with(|| t.to_string());
                }
            }
        });
        Ok(RustoriumWs {
            sink,
            batches,
            acked,
            error,
            size,
            next_id: 0,
        })
    }
}

impl Sink for RustoriumWs {
    async fn send(&mut self, seqs: std::ops::Range<u64>, tally: &Tally) -> Result<(), String> {
        if let Some(e) = self.error.borrow().clone() {
            return Err(e);
        }
        self.next_id += 1;
        let n = seqs.end - seqs.start;
        let frame = format!(
            "{{\"type\":\"publish\",\"id\":\"p{}\",\"data\":{{\"events\":[{}]}}}}",
            self.next_id,
            events_json(seqs, tally, self.size)
        );
        self.batches.borrow_mut().push_back(n);
        self.sink
            .send(Message::text(frame))
            .await
            .map_err(|e| format!("publish: {e}"))
    }

    async fn finish(&mut self, sent: u64) -> Result<u64, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.acked.get() < sent && self.error.borrow().is_none() && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        match self.error.borrow().clone() {
            Some(e) => Err(e),
            None => Ok(self.acked.get()),
        }
    }
}

/// `POST /api/publish` on one keep-alive connection, one batch per request.
pub struct RustoriumHttp {
    addr: SocketAddr,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    size: usize,
    acked: u64,
}

impl RustoriumHttp {
    /// Opens the HTTP connection.
    pub async fn connect(addr: SocketAddr, size: usize) -> Result<RustoriumHttp, String> {
        let (r, writer) = tcp(addr, Ipv4Addr::LOCALHOST).await?.into_split();
        Ok(RustoriumHttp {
            addr,
            reader: BufReader::new(r),
            writer,
            size,
            acked: 0,
        })
    }
}

impl Sink for RustoriumHttp {
    async fn send(&mut self, seqs: std::ops::Range<u64>, tally: &Tally) -> Result<(), String> {
        let n = seqs.end - seqs.start;
        let body = format!("[{}]", events_json(seqs, tally, self.size));
        let head = format!(
            "POST /api/publish HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let io = |e: std::io::Error| format!("http publish: {e}");
        self.writer.write_all(head.as_bytes()).await.map_err(io)?;
        self.writer.write_all(body.as_bytes()).await.map_err(io)?;
        let (mut status, mut length, mut line) = (String::new(), 0usize, String::new());
        self.reader.read_line(&mut status).await.map_err(io)?;
        loop {
            line.clear();
            if self.reader.read_line(&mut line).await.map_err(io)? == 0 {
                return Err("http publish: connection closed".into());
            }
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body).await.map_err(io)?;
        if !status.starts_with("HTTP/1.1 200") {
            return Err(format!(
                "{} {}",
                status.trim(),
                String::from_utf8_lossy(&body)
            ));
        }
        self.acked += n;
        Ok(())
    }

    async fn finish(&mut self, _sent: u64) -> Result<u64, String> {
        Ok(self.acked)
    }
}

/// `PUB` on plain NATS; a reader task answers pings and counts pongs.
pub struct NatsPub {
    writer: Rc<tokio::sync::Mutex<OwnedWriteHalf>>,
    pongs: Rc<Cell<u64>>,
    error: Rc<RefCell<Option<String>>>,
    size: usize,
}

impl NatsPub {
    /// Connects to the NATS client port and waits for the handshake's `PONG`.
    pub async fn connect(addr: SocketAddr, size: usize) -> Result<NatsPub, String> {
        let (r, mut w) = tcp(addr, Ipv4Addr::LOCALHOST).await?.into_split();
        w.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"echo\":false}\r\nPING\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let writer = Rc::new(tokio::sync::Mutex::new(w));
        let pongs = Rc::new(Cell::new(0));
        let error = Rc::new(RefCell::new(None));
        let (wr, p, e) = (writer.clone(), pongs.clone(), error.clone());
        tokio::task::spawn_local(async move {
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line == "PING" {
                    let _ = wr.lock().await.write_all(b"PONG\r\n").await;
                } else if line == "PONG" {
                    p.set(p.get() + 1);
                } else if line.starts_with("-ERR") {
                    e.borrow_mut().get_or_insert(line);
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while pongs.get() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if pongs.get() == 0 {
            return Err("nats publisher: no PONG".into());
        }
        Ok(NatsPub {
            writer,
            pongs,
            error,
            size,
        })
    }
}

impl Sink for NatsPub {
    async fn send(&mut self, seqs: std::ops::Range<u64>, tally: &Tally) -> Result<(), String> {
        if let Some(e) = self.error.borrow().clone() {
            return Err(e);
        }
        let mut out = Vec::with_capacity(seqs.clone().count() * (self.size + 32));
        for seq in seqs {
            let topic = tally.topic_of(seq);
            let p = payload_with(seq, tally.now_ns(), self.size, &topic.routing_fields(seq));
            out.extend_from_slice(format!("PUB {} {}\r\n", topic.subject(), p.len()).as_bytes());
            out.extend_from_slice(p.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.writer
            .lock()
            .await
            .write_all(&out)
            .await
            .map_err(|e| format!("nats publish: {e}"))
    }

    async fn finish(&mut self, sent: u64) -> Result<u64, String> {
        let before = self.pongs.get();
        self.writer
            .lock()
            .await
            .write_all(b"PING\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.pongs.get() == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        match self.error.borrow().clone() {
            Some(e) => Err(e),
            None if self.pongs.get() > before => Ok(sent),
            None => Err("nats publisher: no PONG after publishing".into()),
        }
    }
}

/// Publishes `events` events through `sink` at `pace` (batches of at most `batch`),
/// stopping at `deadline` or when deliveries stall for `stall`.
pub async fn drive<S: Sink>(
    sink: &mut S,
    tally: &Tally,
    events: u64,
    pace: Pace,
    batch: u64,
    deadline: Instant,
    stall: Duration,
) -> Published {
    let started = Instant::now();
    let mut next = 0u64;
    let mut error = None;
    while next < events && Instant::now() < deadline {
        let n = match pace {
            Pace::Open => batch.min(events - next),
            Pace::Closed(k) => {
                let in_flight = next - tally.completed();
                if in_flight >= k as u64 {
                    let wait = tokio::time::timeout(stall, tally.progress.notified()).await;
                    if wait.is_err() && next - tally.completed() >= k as u64 {
                        error = Some(format!(
                            "no event completed for {stall:?} with {in_flight} in flight"
                        ));
                        break;
                    }
                    continue;
                }
                (k as u64 - in_flight).min(batch).min(events - next)
            }
            Pace::Rate(r) => {
                let due = ((started.elapsed().as_secs_f64() * r) as u64 + 1).min(events);
                if due <= next {
                    let at = started + Duration::from_secs_f64(next as f64 / r);
                    tokio::time::sleep_until(at.into()).await;
                    continue;
                }
                (due - next).min(batch)
            }
        };
        if let Err(e) = sink.send(next..next + n, tally).await {
            error = Some(e);
            break;
        }
        next += n;
    }
    let events = match sink.finish(next).await {
        Ok(n) => n,
        Err(e) => {
            error.get_or_insert(e);
            next
        }
    };
    Published {
        events,
        elapsed: started.elapsed(),
        error,
    }
}
