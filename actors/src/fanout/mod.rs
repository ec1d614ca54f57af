//! The fan-out: how an appended event reaches the outboxes of the connections whose
//! subscriptions match it. Its files import in one direction, each only from those above
//! it in this list:
//!
//! | file | what |
//! | --- | --- |
//! | [`progress`] | the watermark (how far every hub has fanned out), a batch's [`progress::Ticket`], the [`progress::Wake`] message |
//! | [`outbox`] | the bounded per-connection queue, drained in sequence order |
//! | [`index`] | a hub's subscriptions filed by filter value, prefix, or unfiltered |
//! | [`batch`] | one channel's share of a batch: its [`batch::Step`]s |
//! | [`channel_hub`] | one channel's subscriptions ([`channel_hub::HubCore`], shared as [`channel_hub::SharedHub`]) and its fan-out; the [`channel_hub::ChannelHub`] actor owns them (also uses [`crate::messages`]) |
//! | [`hubs`] | the registry: a channel name's hub |
//! | [`delivery`] | the engine's sink: batches to hubs in sequence order |

pub mod progress;

pub mod outbox;

pub mod index;

pub mod batch;

pub mod channel_hub;

pub mod hubs;

pub mod delivery;
