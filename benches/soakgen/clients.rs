//! The well-behaved side of a soak: the steady publisher (numbered events, one per
//! publish frame, at a set rate), and the subscribers that must miss nothing: steady ones,
//! churning ones (connect, subscribe, drop or close, resume, leave), and slow readers
//! (stop reading past the broker's patience, are cut 4005, resume).

use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use super::check::Seq;
use super::{Ctx, Rng, Ws, PUB_KEY, SUB_KEY};

/// The channel of the steady publisher's `c`-th channel.
pub fn channel(c: usize) -> String {
    format!("soak-{c}")
}

/// The bulk abuser's channel, which the slow readers read.
pub const BULK: &str = "soak-bulk";

/// Connects to `/ws` with `key` (see [`super::websocket`]).
async fn connect(ctx: &Ctx, key: &str, small_buffer: bool) -> Result<Ws, String> {
    super::websocket(ctx.addr, &format!("/ws?token={key}"), small_buffer).await
}

/// The next JSON text frame within `within` (heartbeats included); `Err` with the close
/// code (0 without one) when the connection ends, `Ok(None)` on timeout.
async fn next(ws: &mut Ws, within: Duration) -> Result<Option<Value>, u16> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Ok(None),
            Ok(None) | Ok(Some(Err(_))) => return Err(0),
            Ok(Some(Ok(Message::Text(t)))) => {
                return Ok(serde_json::from_str(t.as_str()).ok());
            }
            Ok(Some(Ok(Message::Close(f)))) => return Err(f.map_or(0, |f| u16::from(f.code))),
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// Publishes numbered events to `channels` channels at `rate` per second, one event per
/// frame, each waiting for its reply, until the load ends; then records the last number
/// of each channel in `ctx.finals`. A refused publish is retried with the same number.
pub async fn publisher(ctx: Rc<Ctx>, channels: usize, rate: f64, pad: usize) {
    let mut seqs = vec![0u64; channels];
    let pad = "p".repeat(pad);
    let mut ws = None;
    let mut k: u64 = 0;
    let start = Instant::now();
    let every = Duration::from_secs_f64(1.0 / rate.max(0.001));
    while !ctx.over() {
        // Paced by the clock: a stall is caught up, one event per frame still.
        let due = start + every.mul_f64(k as f64);
        tokio::time::sleep_until(due.into()).await;
        let c = (k % channels as u64) as usize;
        let n = seqs[c] + 1;
        if ws.is_none() {
            match connect(&ctx, PUB_KEY, false).await {
                Ok(w) => ws = Some(w),
                Err(e) => {
                    ctx.count("publisher.connect_errors", 1);
                    eprintln!("soak: publisher connect: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        let Some(w) = ws.as_mut() else { continue };
        let frame = json!({"type":"publish","id":k,
            "data":{"channel":channel(c),"data":{"seq":n,"pad":pad}}});
        if w.send(Message::text(frame.to_string())).await.is_err() {
            ctx.count("publisher.reconnects", 1);
            ws = None;
            continue;
        }
        let reply = loop {
            match next(w, Duration::from_secs(30)).await {
                Ok(Some(v)) if v["id"] == k => break Some(v),
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => break None,
            }
        };
        match reply {
            Some(v) if v["type"] == "publish_success" => {
                seqs[c] = n;
                k += 1;
                ctx.count("publisher.events", 1);
            }
            Some(v) => {
                ctx.count("publisher.refused", 1);
                eprintln!("soak: publish refused: {v}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            None => {
                // The reply was lost with the connection: the event may be published,
                // so its number is not used again (a subscriber may see a gap there,
                // which is counted against the run).
                ctx.count("publisher.reconnects", 1);
                seqs[c] = n;
                k += 1;
                ws = None;
            }
        }
    }
    *ctx.finals.borrow_mut() = Some(seqs);
}

/// How a subscriber behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Connected all along.
    Steady,
    /// Connects, subscribes, reads a while, drops (TCP), closes 1001 or leaves (1000),
    /// then resumes (or starts afresh after leaving).
    Churn,
    /// Reads the bulk channel, stops reading for longer than the broker waits, is cut
    /// 4005, and resumes.
    Slow,
}

impl Kind {
    /// Its name in the summary.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Steady => "steady",
            Kind::Churn => "churn",
            Kind::Slow => "slow",
        }
    }
}

/// One subscriber's session state across its connections.
struct Session {
    channel: String,
    sid: Option<String>,
    last_id: Option<String>,
    seq: Seq,
}

impl Session {
    /// Connects and restores its subscription (or subscribes afresh).
    async fn open(&mut self, ctx: &Ctx, kind: Kind) -> Result<Ws, String> {
        let mut ws = connect(ctx, SUB_KEY, kind == Kind::Slow).await?;
        let name = kind.name();
        if let (Some(sid), Some(last)) = (self.sid.clone(), self.last_id.clone()) {
            let req = json!({"type":"reconnect","id":"r",
                "data":{"last_message_id":last,"subscriptions":[sid]}});
            ws.send(Message::text(req.to_string()))
                .await
                .map_err(|e| e.to_string())?;
            let reply = loop {
                match next(&mut ws, Duration::from_secs(10)).await {
                    Ok(Some(v)) if v["id"] == "r" => break v,
                    Ok(Some(_)) => continue,
                    Ok(None) => return Err("no reconnect reply".into()),
                    Err(code) => return Err(format!("closed {code} before the reconnect reply")),
                }
            };
            let restored = reply["data"]["subscriptions"]
                .as_array()
                .is_some_and(|a| a.iter().any(|s| s.as_str() == Some(sid.as_str())));
            if reply["data"]["recovered"] == true && restored {
                ctx.count(&format!("{name}.resumes_recovered"), 1);
                return Ok(ws);
            }
            ctx.count(&format!("{name}.resumes_not_recovered"), 1);
            if restored {
                // Restored, but events it may have missed are gone: start counting afresh.
                self.seq.restart();
                return Ok(ws);
            }
        }
        let req = json!({"type":"subscribe","id":"s","data":{"channel":self.channel}});
        ws.send(Message::text(req.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            match next(&mut ws, Duration::from_secs(10)).await {
                Ok(Some(v)) if v["id"] == "s" => {
                    let sid = v["data"]["subscription_id"].as_str().map(str::to_owned);
                    if sid.is_none() {
                        return Err(format!("subscribe refused: {v}"));
                    }
                    self.sid = sid;
                    self.last_id = None;
                    self.seq.restart();
                    ctx.count(&format!("{name}.subscribes"), 1);
                    return Ok(ws);
                }
                Ok(Some(_)) => continue,
                Ok(None) => return Err("no subscribe reply".into()),
                Err(code) => return Err(format!("closed {code} before the subscribe reply")),
            }
        }
    }

    /// Takes one frame: an event of its channel is checked and remembered.
    fn take(&mut self, v: &Value) {
        if v["channel"] != self.channel.as_str() {
            return;
        }
        if let Some(n) = v["data"]["seq"].as_u64() {
            self.seq.see(n);
        }
        if let Some(id) = v["id"].as_str() {
            self.last_id = Some(id.to_owned());
        }
    }
}

/// Runs one subscriber until the load ends, then drains up to the publisher's last event;
/// returns what it saw.
pub async fn subscriber(ctx: Rc<Ctx>, i: usize, kind: Kind, channels: usize) -> Seq {
    let mut rng = Rng::new(i as u64 + 1);
    let channel = match kind {
        Kind::Slow => BULK.to_owned(),
        _ => channel(i % channels.max(1)),
    };
    let mut s = Session {
        channel,
        sid: None,
        last_id: None,
        seq: Seq::default(),
    };
    let name = kind.name();
    while !ctx.over() {
        let mut ws = match s.open(&ctx, kind).await {
            Ok(ws) => ws,
            Err(e) => {
                ctx.count(&format!("{name}.open_errors"), 1);
                eprintln!("soak: {name} subscriber {i}: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let until = match kind {
            Kind::Churn => Instant::now() + rng.millis(500, 4000),
            Kind::Steady | Kind::Slow => ctx.deadline,
        };
        let mut read_until_stall = Instant::now() + rng.millis(2000, 6000);
        let mut ended = None;
        while Instant::now() < until.min(ctx.deadline) {
            if kind == Kind::Slow && Instant::now() >= read_until_stall {
                // Stop reading for longer than publish.stuck_reader_ms (5 s).
                tokio::time::sleep(Duration::from_secs(8)).await;
                ctx.count("slow.stalls", 1);
                read_until_stall = Instant::now() + rng.millis(2000, 6000);
            }
            match next(&mut ws, Duration::from_millis(500)).await {
                Ok(Some(v)) => s.take(&v),
                Ok(None) => {}
                Err(code) => {
                    ended = Some(code);
                    break;
                }
            }
        }
        if let Some(code) = ended {
            ctx.count(&format!("{name}.closed_{code}"), 1);
            continue;
        }
        if ctx.over() {
            // Keep the connection for the drain.
            return drain(&ctx, &mut s, kind, Some(ws)).await;
        }
        // A churner's ending: a dropped socket, a tab closing (1001), or leaving (1000).
        match rng.below(3) {
            0 => {
                drop(ws);
                ctx.count("churn.drops", 1);
            }
            1 => {
                let _ = ws
                    .close(Some(CloseFrame {
                        code: CloseCode::Away,
                        reason: "".into(),
                    }))
                    .await;
                ctx.count("churn.closes_1001", 1);
            }
            _ => {
                let _ = ws
                    .close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    }))
                    .await;
                s.sid = None;
                s.last_id = None;
                ctx.count("churn.leaves", 1);
            }
        }
        tokio::time::sleep(rng.millis(50, 500)).await;
    }
    drain(&ctx, &mut s, kind, None).await
}

/// After the load: reads until the subscription has the publisher's last event of its
/// channel (resuming first if it has no connection), for at most 30 s; whatever is still
/// missing then counts as lost.
async fn drain(ctx: &Ctx, s: &mut Session, kind: Kind, ws: Option<Ws>) -> Seq {
    let give_up = Instant::now() + Duration::from_secs(30);
    while ctx.finals.borrow().is_none() && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let target = {
        let finals = ctx.finals.borrow();
        match (kind, finals.as_ref()) {
            (Kind::Slow, _) | (_, None) => None,
            (_, Some(f)) => s
                .channel
                .strip_prefix("soak-")
                .and_then(|c| c.parse::<usize>().ok())
                .and_then(|c| f.get(c).copied()),
        }
    };
    let Some(target) = target else {
        return s.seq.clone();
    };
    let mut ws = ws;
    // A subscription that has seen nothing yet (just made) has nothing to catch up on.
    while s.seq.last.is_some_and(|l| l < target) && Instant::now() < give_up {
        let conn = match ws.as_mut() {
            Some(w) => w,
            None => match s.open(ctx, kind).await {
                Ok(w) => ws.insert(w),
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
        };
        match next(conn, Duration::from_millis(500)).await {
            Ok(Some(v)) => s.take(&v),
            Ok(None) => {}
            Err(_) => ws = None,
        }
    }
    if let Some(last) = s.seq.last {
        s.seq.lost += target.saturating_sub(last);
    }
    s.seq.clone()
}
