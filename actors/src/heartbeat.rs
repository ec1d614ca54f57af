//! The `Heartbeat` actor: one timer for the whole broker. Every interval it renders the
//! heartbeat frame once per dialect and sends a [`Tick`] to each registered connection,
//! which writes it with a ping and applies the liveness rule (PROTOCOL.md section 6).
//! It also knows every connection, so it carries the shutdown notice and a reload's keys.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::{Actor, AsyncContext, Context, Handler, Recipient};

use crate::messages::{CloseAll, ConnId, Register, Rekey, RekeyAll, Shutdown, Tick, Unregister};
use crate::protocol::{render, Dialect};

struct Registered {
    tick: Recipient<Tick>,
    shutdown: Recipient<Shutdown>,
    rekey: Recipient<Rekey>,
}

/// The heartbeat actor. One per broker.
pub struct Heartbeat {
    interval: Duration,
    /// Every open connection; bounded by the connections the limiter admitted.
    conns: HashMap<ConnId, Registered>,
}

impl Heartbeat {
    /// A heartbeat firing every `interval`.
    pub fn new(interval: Duration) -> Heartbeat {
        Heartbeat {
            interval,
            conns: HashMap::new(),
        }
    }

    fn tick(&mut self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let rfc = rfc3339(now);
        let frames = Arc::new([
            render::heartbeat(Dialect::Ws, now, &rfc),
            render::heartbeat(Dialect::V1, now, &rfc),
        ]);
        let at = Instant::now();
        for reg in self.conns.values() {
            // A full mailbox means the connection is busy writing; it misses this beat.
            let _ = reg.tick.try_send(Tick {
                frames: frames.clone(),
                at,
            });
        }
    }
}

impl Actor for Heartbeat {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.interval, |this, _| this.tick());
    }
}

impl Handler<Register> for Heartbeat {
    type Result = ();

    fn handle(&mut self, msg: Register, _: &mut Context<Self>) {
        self.conns.insert(
            msg.conn,
            Registered {
                tick: msg.tick,
                shutdown: msg.shutdown,
                rekey: msg.rekey,
            },
        );
    }
}

impl Handler<Unregister> for Heartbeat {
    type Result = ();

    fn handle(&mut self, msg: Unregister, _: &mut Context<Self>) {
        self.conns.remove(&msg.conn);
    }
}

impl Handler<CloseAll> for Heartbeat {
    type Result = usize;

    fn handle(&mut self, msg: CloseAll, _: &mut Context<Self>) -> usize {
        for reg in self.conns.values() {
            // The notice must arrive even past a full mailbox: one per connection, bounded.
            reg.shutdown.do_send(Shutdown(msg.0.clone()));
        }
        self.conns.len()
    }
}

impl Handler<RekeyAll> for Heartbeat {
    type Result = usize;

    fn handle(&mut self, msg: RekeyAll, _: &mut Context<Self>) -> usize {
        for reg in self.conns.values() {
            // Like the shutdown notice: one per connection, past a full mailbox.
            reg.rekey.do_send(msg.0.clone());
        }
        self.conns.len()
    }
}

/// `UNIX_SECONDS` as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64;
    let secs = unix_seconds % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_706_011_200), "2024-01-23T12:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
