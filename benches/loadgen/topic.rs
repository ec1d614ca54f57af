//! Where subscriber `c` listens and event `seq` goes: one of C channels (`bench.<c>`,
//! scenarios A–E), or one of C wallets (scenario F): every wallet subscribes to
//! `transaction_updates` filtered on its own address on rustorium-broker, and to the
//! subject `transaction_updates.<address>` on NATS, so both brokers route by address.

use super::client::{channel_name, shard};

/// One place events are routed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    /// Channel (rustorium) or subject (NATS) number `c`.
    Channel(usize),
    /// Wallet number `c` on `transaction_updates`.
    Wallet(usize),
}

/// The channel every wallet subscribes to.
pub const WALLET_CHANNEL: &str = "transaction_updates";

impl Topic {
    /// Topic `c` of a run routed by wallets (`wallets`) or by channels.
    pub fn new(wallets: bool, c: usize) -> Topic {
        if wallets {
            Topic::Wallet(c)
        } else {
            Topic::Channel(c)
        }
    }

    /// The wallet's address: 40 hex digits, lower case (this shard's own range).
    pub fn address(self) -> Option<String> {
        match self {
            Topic::Channel(_) => None,
            Topic::Wallet(c) => Some(format!("0x{:02x}{c:038x}", shard())),
        }
    }

    /// The rustorium-broker channel its events are published on.
    pub fn channel(self) -> String {
        match self {
            Topic::Channel(c) => channel_name(c),
            Topic::Wallet(_) => WALLET_CHANNEL.to_owned(),
        }
    }

    /// The rustorium-broker `subscribe` request's `data`: the channel, and for a wallet
    /// its address filter, in upper-case hex (the broker compares `0x` values
    /// case-insensitively; events carry lower case).
    pub fn subscribe_data(self) -> String {
        match self {
            Topic::Channel(c) => format!(r#"{{"channel":"{}"}}"#, channel_name(c)),
            Topic::Wallet(_) => {
                let address = self.address().unwrap_or_default();
                let upper = format!("0x{}", address[2..].to_ascii_uppercase());
                format!(r#"{{"channel":"{WALLET_CHANNEL}","filter":{{"address":"{upper}"}}}}"#)
            }
        }
    }

    /// The NATS subject.
    pub fn subject(self) -> String {
        match self {
            Topic::Channel(c) => channel_name(c),
            Topic::Wallet(_) => {
                format!("{WALLET_CHANNEL}.{}", self.address().unwrap_or_default())
            }
        }
    }

    /// The fields a `transaction_updates` event needs besides the load fields (none for a
    /// plain channel), as JSON members with a trailing comma.
    pub fn routing_fields(self, seq: u64) -> String {
        match self.address() {
            None => String::new(),
            Some(a) => format!(
                r#""transaction_id":"t{seq}","status":"confirmed","timestamp":0,"address":"{a}","#
            ),
        }
    }
}
