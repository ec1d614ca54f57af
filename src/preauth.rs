//! Connections that have not presented a valid key yet: at most
//! `limits.max_unauthenticated_per_address` per IP address and `limits.max_unauthenticated`
//! in all, counted from the moment the server accepts the socket until a request on it
//! presents a valid key (an admitted upgrade, a publish, the dashboard's stream).
//!
//! The server's `on_connect` ([`crate::Broker::on_connect`]) asks [`Unauthenticated::admit`]
//! for every accepted socket; past a bound it shuts the socket down before a byte of it is
//! read, and counts `rustorium_rejections_total{reason="address_limit"}`. An admitted socket
//! carries a [`Pending`] in its connection data; the routes mark it ([`seen`],
//! [`authenticated`]), and dropping it (the socket closed) gives its place back. One that
//! closes before any route saw a request (a request head that timed out, an oversized
//! head, a scanner) is counted in `rustorium_closed_without_request_total`.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use actix_web::HttpRequest;
use rustorium_actors::metrics::{Metrics, Rejection};

/// The count of unauthenticated connections, per address and in all.
pub struct Unauthenticated {
    per_address: u32,
    max_total: u32,
    /// Addresses with at least one unauthenticated connection; entries go at zero, so
    /// the map never holds more than `max_total` entries.
    by_address: Mutex<HashMap<IpAddr, u32>>,
    metrics: Arc<Metrics>,
}

/// Why a socket was refused at accept.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its address has `limits.max_unauthenticated_per_address` already.
    Address,
    /// The broker has `limits.max_unauthenticated` already.
    Total,
}

impl Unauthenticated {
    /// Bounds from `[limits]`.
    pub fn new(per_address: u32, max_total: u32, metrics: Arc<Metrics>) -> Arc<Unauthenticated> {
        Arc::new(Unauthenticated {
            per_address,
            max_total,
            by_address: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    fn table(&self) -> MutexGuard<'_, HashMap<IpAddr, u32>> {
        // Only counts are kept under the lock; a poisoned one is still consistent.
        self.by_address
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a place for a socket just accepted from `ip`, or says why not (counted).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Pending, Refusal> {
        let mut table = self.table();
        let total = self.metrics.unauthenticated.load(Ordering::Relaxed);
        let refusal = if total >= i64::from(self.max_total) {
            Some(Refusal::Total)
        } else if table.get(&ip).copied().unwrap_or(0) >= self.per_address {
            Some(Refusal::Address)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            drop(table);
            self.metrics.reject(Rejection::AddressLimit);
            return Err(refusal);
        }
        let n = table.entry(ip).or_insert(0);
        *n = n.saturating_add(1);
        self.metrics.unauthenticated.fetch_add(1, Ordering::Relaxed);
        Ok(Pending {
            ip,
            owner: self.clone(),
            state: Cell::new(State::Waiting),
        })
    }

    fn release(&self, ip: IpAddr) {
        let mut table = self.table();
        if let Some(n) = table.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                table.remove(&ip);
            }
        }
        self.metrics.unauthenticated.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// No request reached a route yet.
    Waiting,
    /// A request reached a route, none presented a valid key yet.
    Seen,
    /// A request presented a valid key: the place was given back.
    Authenticated,
}

/// One accepted socket's place among the unauthenticated; lives in its connection data
/// and gives the place back when dropped (the socket closed) or authenticated.
pub struct Pending {
    ip: IpAddr,
    owner: Arc<Unauthenticated>,
    state: Cell<State>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        match self.state.get() {
            State::Authenticated => {}
            State::Seen => self.owner.release(self.ip),
            State::Waiting => {
                self.owner.release(self.ip);
                let metrics = &self.owner.metrics;
                metrics
                    .closed_without_request
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Marks `req`'s connection as having reached one of the broker's routes.
pub fn seen(req: &HttpRequest) {
    if let Some(p) = req.conn_data::<Pending>() {
        if p.state.get() == State::Waiting {
            p.state.set(State::Seen);
        }
    }
}

/// Marks `req`'s connection as authenticated: its place is given back at once.
pub fn authenticated(req: &HttpRequest) {
    if let Some(p) = req.conn_data::<Pending>() {
        if p.state.get() != State::Authenticated {
            p.state.set(State::Authenticated);
            p.owner.release(p.ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_per_address_and_in_all_and_gives_places_back() {
        let metrics = Arc::new(Metrics::default());
        let u = Unauthenticated::new(2, 3, metrics.clone());
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let c: IpAddr = [10, 0, 0, 3].into();
        let a1 = u.admit(a).ok();
        let a2 = u.admit(a).ok();
        assert!(a1.is_some() && a2.is_some());
        assert_eq!(u.admit(a).err(), Some(Refusal::Address));
        let b1 = u.admit(b).ok();
        assert!(b1.is_some());
        assert_eq!(u.admit(c).err(), Some(Refusal::Total));
        assert_eq!(metrics.unauthenticated.load(Ordering::Relaxed), 3);
        drop(a1);
        let c1 = u.admit(c);
        assert!(c1.is_ok(), "a dropped socket's place is free again");
        assert_eq!(metrics.unauthenticated.load(Ordering::Relaxed), 3);
        drop((a2, b1, c1));
        assert_eq!(metrics.unauthenticated.load(Ordering::Relaxed), 0);
        assert!(u.table().is_empty(), "addresses at zero leave the map");
        assert_eq!(metrics.closed_without_request.load(Ordering::Relaxed), 4);
    }
}
