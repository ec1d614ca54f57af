//! The abusive clients of a soak, one task per abuse, each in a loop until the load ends.
//! Each checks the broker's documented answer (docs/security.md) and counts it as
//! `abuse.NAME.answered`, or `abuse.NAME.unexpected` (printed) when the answer differs.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

use super::clients::BULK;
use super::{http, Ctx, Ws, PUB_KEY, SUB_KEY};

/// The abuses, by name, as `--abuse` lists them.
pub const NAMES: [&str; 10] = [
    "slow_headers",
    "upgrade_flood",
    "big_headers",
    "ping_flood",
    "fragment_flood",
    "invalid_utf8",
    "deep_json",
    "sub_unsub_loop",
    "bulk_publisher",
    "garbage",
];

fn verdict(ctx: &Ctx, name: &str, ok: bool, what: &str) {
    if ok {
        ctx.count(&format!("abuse.{name}.answered"), 1);
    } else {
        let n = ctx.get(&format!("abuse.{name}.unexpected"));
        if n < 5 {
            eprintln!("soak: abuse {name}: unexpected answer: {what}");
        }
        ctx.count(&format!("abuse.{name}.unexpected"), 1);
    }
}

async fn connect(addr: SocketAddr, path: &str) -> Option<Ws> {
    super::websocket(addr, path, false).await.ok()
}

/// Whether an HTTP answer is `status`, or the reset a client sees when the broker answered
/// and closed while the client was still sending the rest of its request.
fn refused_with(r: &Result<(u16, String), String>, status: u16) -> bool {
    match r {
        Ok((got, _)) => *got == status,
        Err(e) => e.contains("reset"),
    }
}

/// Reads until the close frame (bounded); its code, or 0 when the stream ended without one.
async fn close_code(ws: &mut Ws) -> u16 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for _ in 0..100_000 {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => return f.map_or(0, |f| u16::from(f.code)),
            Ok(Some(Ok(_))) => continue,
            _ => return 0,
        }
    }
    0
}

/// Runs abuse `name` in a loop until the load ends.
pub async fn run(ctx: Rc<Ctx>, name: &'static str, source: [u8; 4], per_address: u32) {
    let addr = ctx.addr;
    let mut round: u64 = 0;
    while !ctx.over() {
        round += 1;
        let pause = match name {
            "slow_headers" => slow_headers(&ctx, addr).await,
            "upgrade_flood" => upgrade_flood(&ctx, addr, source, per_address).await,
            "big_headers" => big_headers(&ctx, addr).await,
            "ping_flood" => ping_flood(&ctx, addr).await,
            "fragment_flood" => fragment_flood(&ctx, addr).await,
            "invalid_utf8" => invalid_utf8(&ctx, addr).await,
            "deep_json" => deep_json(&ctx, addr).await,
            "sub_unsub_loop" => sub_unsub_loop(&ctx, addr).await,
            "bulk_publisher" => bulk_publisher(&ctx, addr, round).await,
            "garbage" => garbage(&ctx, addr, round).await,
            _ => return,
        };
        tokio::time::sleep(pause).await;
    }
}

/// Ten connections send half a request head, a line every 300 ms: each gets 408.
async fn slow_headers(ctx: &Ctx, addr: SocketAddr) -> Duration {
    let mut tasks = Vec::new();
    for _ in 0..10 {
        tasks.push(tokio::task::spawn_local(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                return String::new();
            };
            let lines = (0..30).map(|i| match i {
                0 => "GET /ws HTTP/1.1\r\n".to_owned(),
                i => format!("X-Slow-{i}: 1\r\n"),
            });
            for l in lines {
                if s.write_all(l.as_bytes()).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
            String::from_utf8_lossy(&out).into_owned()
        }));
    }
    for t in tasks {
        let reply = t.await.unwrap_or_default();
        verdict(
            ctx,
            "slow_headers",
            reply.starts_with("HTTP/1.1 408"),
            &reply,
        );
    }
    Duration::from_millis(500)
}

/// `per_address + 50` connections from one address that send nothing: the ones past the
/// cap are closed at once.
async fn upgrade_flood(ctx: &Ctx, addr: SocketAddr, source: [u8; 4], per_address: u32) -> Duration {
    let mut held = Vec::new();
    for _ in 0..per_address.saturating_add(50) {
        let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
            break;
        };
        if socket.bind(SocketAddr::from((source, 0))).is_err() {
            break;
        }
        if let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(5), socket.connect(addr)).await
        {
            held.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut closed = 0;
    for s in &mut held {
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(5), s.read(&mut b)).await {
            closed += 1;
        }
    }
    // The cap may already hold a few of the soak's own connections being accepted.
    let ok = (45..=60).contains(&closed);
    verdict(
        ctx,
        "upgrade_flood",
        ok,
        &format!("{closed} of {} closed at once", held.len()),
    );
    drop(held);
    Duration::from_secs(2)
}

/// A request head of 200 KiB: 431.
async fn big_headers(ctx: &Ctx, addr: SocketAddr) -> Duration {
    let huge = "h".repeat(200 * 1024);
    let r = http(
        addr,
        "GET",
        "/health",
        &[("X-Huge", &huge)],
        b"",
        Duration::from_secs(10),
    )
    .await;
    verdict(ctx, "big_headers", refused_with(&r, 431), &format!("{r:?}"));
    Duration::from_millis(200)
}

/// 200 pings as fast as they go: pongs up to the cap, then 4001.
async fn ping_flood(ctx: &Ctx, addr: SocketAddr) -> Duration {
    let Some(mut ws) = connect(addr, &format!("/ws?token={SUB_KEY}")).await else {
        verdict(ctx, "ping_flood", false, "no connection");
        return Duration::from_secs(1);
    };
    for i in 0..200u32 {
        if ws
            .send(Message::Ping(i.to_be_bytes().to_vec().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    let code = close_code(&mut ws).await;
    verdict(ctx, "ping_flood", code == 4001, &format!("close {code}"));
    Duration::from_millis(500)
}

/// One message in 2000 one-byte fragments: 4001 at the 1025th.
async fn fragment_flood(ctx: &Ctx, addr: SocketAddr) -> Duration {
    let Some(mut ws) = connect(addr, &format!("/ws?token={SUB_KEY}")).await else {
        verdict(ctx, "fragment_flood", false, "no connection");
        return Duration::from_secs(1);
    };
    for i in 0..2000 {
        let op = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        if ws
            .send(Message::Frame(Frame::message(vec![b' '], op, false)))
            .await
            .is_err()
        {
            break;
        }
    }
    let code = close_code(&mut ws).await;
    verdict(
        ctx,
        "fragment_flood",
        code == 4001,
        &format!("close {code}"),
    );
    Duration::from_millis(500)
}

/// A text frame that is not UTF-8: 1007.
async fn invalid_utf8(ctx: &Ctx, addr: SocketAddr) -> Duration {
    let Some(mut ws) = connect(addr, &format!("/ws?token={SUB_KEY}")).await else {
        verdict(ctx, "invalid_utf8", false, "no connection");
        return Duration::from_secs(1);
    };
    let frame = Frame::message(vec![b'{', 0xc3, 0x28, b'}'], OpCode::Data(Data::Text), true);
    let _ = ws.send(Message::Frame(frame)).await;
    let code = close_code(&mut ws).await;
    verdict(ctx, "invalid_utf8", code == 1007, &format!("close {code}"));
    Duration::from_millis(300)
}

/// JSON nested 30,000 deep and a 60 KB array of numbers past u64: each an error 4002,
/// the connection stays.
async fn deep_json(ctx: &Ctx, addr: SocketAddr) -> Duration {
    let Some(mut ws) = connect(addr, &format!("/v1?api_key={SUB_KEY}")).await else {
        verdict(ctx, "deep_json", false, "no connection");
        return Duration::from_secs(1);
    };
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let big = format!("[{}1]", "184467440737095516160,".repeat(2700));
    for text in [deep, big] {
        let _ = ws.send(Message::text(text)).await;
        let reply = loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) if t.contains("heartbeat") => continue,
                Ok(Some(Ok(Message::Text(t)))) => break t.to_string(),
                Ok(Some(Ok(Message::Ping(_)))) => continue,
                other => break format!("{other:?}"),
            }
        };
        verdict(ctx, "deep_json", reply.contains("invalid_request"), &reply);
    }
    let _ = ws.close(None).await;
    Duration::from_millis(300)
}

/// Subscribe and unsubscribe as fast as replies come, on the v1 dialect (10 a second):
/// rate-limited errors, then 4001.
async fn sub_unsub_loop(ctx: &Ctx, addr: SocketAddr) -> Duration {
    let Some(mut ws) = connect(addr, &format!("/v1?api_key={SUB_KEY}")).await else {
        verdict(ctx, "sub_unsub_loop", false, "no connection");
        return Duration::from_secs(1);
    };
    let mut code = None;
    'outer: for i in 0..2000 {
        let sub = format!(r#"{{"type":"subscribe","id":"s{i}","data":{{"channel":"soak-0"}}}}"#);
        if ws.send(Message::text(sub)).await.is_err() {
            break;
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                    if v["id"] != format!("s{i}") {
                        continue;
                    }
                    if let Some(sid) = v["data"]["subscription_id"].as_str() {
                        let un = format!(
                            r#"{{"type":"unsubscribe","id":"u{i}","data":{{"subscription_id":"{sid}"}}}}"#
                        );
                        let _ = ws.send(Message::text(un)).await;
                    }
                    break;
                }
                Ok(Some(Ok(Message::Close(f)))) => {
                    code = Some(f.map_or(0, |f| u16::from(f.code)));
                    break 'outer;
                }
                Ok(Some(Ok(_))) => continue,
                _ => break 'outer,
            }
        }
    }
    verdict(
        ctx,
        "sub_unsub_loop",
        code == Some(4001),
        &format!("close {code:?}"),
    );
    Duration::from_millis(500)
}

/// A batch of 1000 events of about 1 KiB (just under the 1 MiB body limit), numbered for
/// the slow readers, every half second: 200 each time; and one a byte past the limit: 413.
async fn bulk_publisher(ctx: &Ctx, addr: SocketAddr, round: u64) -> Duration {
    let pad = "b".repeat(990);
    let first = (round - 1) * 1000;
    let events: Vec<String> = (1..=1000)
        .map(|k| {
            format!(
                r#"{{"channel":"{BULK}","data":{{"seq":{},"pad":"{pad}"}}}}"#,
                first + k
            )
        })
        .collect();
    let body = format!("[{}]", events.join(","));
    let auth = format!("Bearer {PUB_KEY}");
    let r = http(
        addr,
        "POST",
        "/api/publish",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
        Duration::from_secs(30),
    )
    .await;
    let ok = matches!(&r, Ok((200, _)));
    verdict(
        ctx,
        "bulk_publisher",
        ok,
        &format!(
            "{:?}",
            r.map(|(s, b)| (s, b.chars().take(200).collect::<String>()))
        ),
    );
    if ok {
        ctx.count("bulk.events", 1000);
    }
    if round.is_multiple_of(10) {
        let over = vec![b' '; 1024 * 1024 + 1];
        let r = http(
            addr,
            "POST",
            "/api/publish",
            &[("Authorization", &auth)],
            &over,
            Duration::from_secs(30),
        )
        .await;
        verdict(
            ctx,
            "bulk_publisher",
            refused_with(&r, 413),
            &format!("{r:?}"),
        );
    }
    Duration::from_millis(500)
}

/// Bytes that are not HTTP at all, then a request without a key: the first is answered
/// 400 (or dropped), the second 4000 after the upgrade.
async fn garbage(ctx: &Ctx, addr: SocketAddr, round: u64) -> Duration {
    if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
        let junk: Vec<u8> = (0..4096u64)
            .map(|i| (i.wrapping_mul(round | 1) % 251) as u8)
            .collect();
        let _ = s.write_all(&junk).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        let ok =
            out.is_empty() || text.starts_with("HTTP/1.1 400") || text.starts_with("HTTP/1.1 431");
        verdict(ctx, "garbage", ok, &text);
    }
    if let Some(mut ws) = connect(addr, "/ws?token=nope").await {
        let code = close_code(&mut ws).await;
        verdict(ctx, "garbage", code == 4000, &format!("close {code}"));
    }
    Duration::from_millis(300)
}
