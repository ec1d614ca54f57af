//! Publishers: one persistent connection to the broker under test, paced closed-loop (at
//! most K events in flight), at a fixed rate, or as fast as the broker accepts.
//! rustorium-broker is fed `publish` frames over WebSocket (PROTOCOL.md section 8) or HTTP
//! batches; nats-server is fed `PUB` over plain NATS.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use memchr::memmem::Finder;

use super::client::tcp;
use super::payload::write_payload;
use super::rawws::{frame, RawWs, TEXT};
use super::scenario::Scenario;
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

/// Most events one write of the publisher carries by default: 1, every frame (every
/// `PUB`) written on its own, as a publisher that sends each event as it happens does.
/// `--write-events N` lets one write carry up to N events when the pace allows that many,
/// still one event per frame (`batch` per frame) and one `PUB` per message, the same for
/// both brokers: the generator then spends less per event (on loopback a write costs the
/// writer about as much as the reader's handling of it), and the brokers read bursts.
pub const WRITE_EVENTS: u64 = 1;

/// One way of handing events to a broker.
pub trait Sink {
    /// Publishes events `seqs` (each on the channel [`Tally::topic_of`] names), stamped
    /// now, in one write: in frames (or HTTP requests) of at most `per_frame` events to
    /// rustorium-broker, one `PUB` each to nats-server.
    async fn send(
        &mut self,
        seqs: std::ops::Range<u64>,
        per_frame: u64,
        tally: &Tally,
    ) -> Result<(), String>;
    /// Waits (bounded) until the broker has taken everything sent; returns events taken.
    async fn finish(&mut self, sent: u64) -> Result<u64, String>;
}

/// Appends the events `seqs` as a JSON array's members, all stamped `ts`.
fn events_json(out: &mut Vec<u8>, seqs: std::ops::Range<u64>, ts: u64, tally: &Tally, size: usize) {
    for seq in seqs.clone() {
        if seq != seqs.start {
            out.push(b',');
        }
        let topic = tally.topic_of(seq);
        out.extend_from_slice(b"{\"channel\":\"");
        out.extend_from_slice(topic.channel().as_bytes());
        out.extend_from_slice(b"\",\"data\":");
        write_payload(out, seq, ts, size, &topic.routing_fields(seq));
        out.push(b'}');
    }
}

/// The replies the publisher's reader looks for.
static PUBLISH_SUCCESS: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"publish_success"));
static ERROR: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\":{"));

/// `publish` frames on a WebSocket, several per write; a reader task counts the
/// acknowledgements (one per frame) and answers pings.
pub struct RustoriumWs {
    writer: Rc<tokio::sync::Mutex<OwnedWriteHalf>>,
    /// Events per frame sent and not yet acknowledged, oldest first.
    batches: Rc<RefCell<VecDeque<u64>>>,
    acked: Rc<Cell<u64>>,
    error: Rc<RefCell<Option<String>>>,
    size: usize,
    next_id: u64,
    /// The frames of one write, reused.
    out: Vec<u8>,
    /// One frame's text before it is framed, reused.
    text: Vec<u8>,
}

impl RustoriumWs {
    /// Connects a publisher with the load key.
    pub async fn connect(addr: SocketAddr, size: usize) -> Result<RustoriumWs, String> {
        let ws = RawWs::connect(addr, Ipv4Addr::LOCALHOST, &format!("/ws?token={KEY}")).await?;
        let (mut reader, mut frames, writer) = ws.into_split();
        let writer = Rc::new(tokio::sync::Mutex::new(writer));
        let batches = Rc::new(RefCell::new(VecDeque::new()));
        let acked = Rc::new(Cell::new(0));
        let error = Rc::new(RefCell::new(None));
        let (w, b, a, e) = (
            writer.clone(),
            batches.clone(),
            acked.clone(),
            error.clone(),
        );
        tokio::task::spawn_local(async move {
            let mut pongs = Vec::new();
            loop {
                let read = match frames.fill(&mut reader).await {
                    Ok(()) => frames.drain(&mut pongs, |_, t| {
                        if PUBLISH_SUCCESS.find(t).is_some() {
                            let n = b.borrow_mut().pop_front().unwrap_or(0);
                            a.set(a.get() + n);
                        } else if ERROR.find(t).is_some() {
                            b.borrow_mut().pop_front();
                            e.borrow_mut()
                                .get_or_insert_with(|| String::from_utf8_lossy(t).into_owned());
                        }
                    }),
                    Err(why) => Err(why),
                };
                if !pongs.is_empty() {
                    let _ = w.lock().await.write_all(&pongs).await;
                    pongs.clear();
                }
                if let Err(why) = read {
                    e.borrow_mut()
                        .get_or_insert_with(|| format!("publisher connection: {why}"));
                    return;
                }
            }
        });
        Ok(RustoriumWs {
            writer,
            batches,
            acked,
            error,
            size,
            next_id: 0,
            out: Vec::new(),
            text: Vec::new(),
        })
    }
}

impl Sink for RustoriumWs {
    async fn send(
        &mut self,
        seqs: std::ops::Range<u64>,
        per_frame: u64,
        tally: &Tally,
    ) -> Result<(), String> {
        if let Some(e) = self.error.borrow().clone() {
            return Err(e);
        }
        let ts = tally.now_ns();
        self.out.clear();
        let mut seq = seqs.start;
        while seq < seqs.end {
            let end = (seq + per_frame.max(1)).min(seqs.end);
            self.next_id += 1;
            self.text.clear();
            self.text
                .extend_from_slice(b"{\"type\":\"publish\",\"id\":\"p");
            self.text
                .extend_from_slice(itoa::Buffer::new().format(self.next_id).as_bytes());
            self.text.extend_from_slice(b"\",\"data\":{\"events\":[");
            events_json(&mut self.text, seq..end, ts, tally, self.size);
            self.text.extend_from_slice(b"]}}");
            frame(&mut self.out, TEXT, &self.text);
            self.batches.borrow_mut().push_back(end - seq);
            seq = end;
        }
        self.writer
            .lock()
            .await
            .write_all(&self.out)
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

    /// Posts one batch and reads its response.
    async fn post(
        &mut self,
        seqs: std::ops::Range<u64>,
        ts: u64,
        tally: &Tally,
    ) -> Result<(), String> {
        let n = seqs.end - seqs.start;
        let mut body = vec![b'['];
        events_json(&mut body, seqs, ts, tally, self.size);
        body.push(b']');
        let head = format!(
            "POST /api/publish HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let io = |e: std::io::Error| format!("http publish: {e}");
        self.writer.write_all(head.as_bytes()).await.map_err(io)?;
        self.writer.write_all(&body).await.map_err(io)?;
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
}

impl Sink for RustoriumHttp {
    async fn send(
        &mut self,
        seqs: std::ops::Range<u64>,
        per_frame: u64,
        tally: &Tally,
    ) -> Result<(), String> {
        let ts = tally.now_ns();
        let mut seq = seqs.start;
        while seq < seqs.end {
            let end = (seq + per_frame.max(1)).min(seqs.end);
            self.post(seq..end, ts, tally).await?;
            seq = end;
        }
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
    /// The `PUB`s of one write, reused.
    out: Vec<u8>,
    /// One message's payload, reused.
    payload: Vec<u8>,
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
            out: Vec::new(),
            payload: Vec::new(),
        })
    }
}

impl Sink for NatsPub {
    async fn send(
        &mut self,
        seqs: std::ops::Range<u64>,
        _per_frame: u64,
        tally: &Tally,
    ) -> Result<(), String> {
        if let Some(e) = self.error.borrow().clone() {
            return Err(e);
        }
        let ts = tally.now_ns();
        self.out.clear();
        for seq in seqs {
            let topic = tally.topic_of(seq);
            self.payload.clear();
            write_payload(
                &mut self.payload,
                seq,
                ts,
                self.size,
                &topic.routing_fields(seq),
            );
            self.out.extend_from_slice(b"PUB ");
            self.out.extend_from_slice(topic.subject().as_bytes());
            self.out.push(b' ');
            self.out
                .extend_from_slice(itoa::Buffer::new().format(self.payload.len()).as_bytes());
            self.out.extend_from_slice(b"\r\n");
            self.out.extend_from_slice(&self.payload);
            self.out.extend_from_slice(b"\r\n");
        }
        self.writer
            .lock()
            .await
            .write_all(&self.out)
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

/// Publishes the scenario's events through `sink` at its pace (frames of at most `batch`
/// events, at most `write_events` or `batch` events per write, whichever is more),
/// stopping at `deadline` or when deliveries stall for the scenario's `stall`.
pub async fn drive<S: Sink>(
    sink: &mut S,
    tally: &Tally,
    s: &Scenario,
    deadline: Instant,
) -> Published {
    let (events, pace, batch, stall) = (s.events, s.pace, s.batch, s.stall);
    let started = Instant::now();
    let mut next = 0u64;
    let mut error = None;
    while next < events && Instant::now() < deadline {
        let per_write = s.write_events.max(batch);
        let n = match pace {
            Pace::Open => per_write.min(events - next),
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
                (k as u64 - in_flight).min(per_write).min(events - next)
            }
            Pace::Rate(r) => {
                let due = ((started.elapsed().as_secs_f64() * r) as u64 + 1).min(events);
                if due <= next {
                    let at = started + Duration::from_secs_f64(next as f64 / r);
                    tokio::time::sleep_until(at.into()).await;
                    continue;
                }
                (due - next).min(per_write)
            }
        };
        if let Err(e) = sink.send(next..next + n, batch, tally).await {
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
