//! The node's fan-out side of the engine seam: takes each appended batch in sequence
//! order, splits it into one list of steps per channel hub (events, and the head's
//! raises for the block-naming hubs), and has each hub fan its list out at once, on the
//! appending thread; the batch's [`Ticket`] then moves the node's watermark
//! ([`Progress`]) and answers the engine.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::engine::{Fed, Sink};
use crate::fanout::batch::Step;
use crate::fanout::hubs::{HubRef, Hubs};
use crate::fanout::progress::{Progress, Ticket};

/// The fan-out. See the module documentation.
pub struct Delivery {
    hubs: Arc<Hubs>,
    progress: Arc<Progress>,
    /// Batches between the engine's append and the end of their fan-out at once
    /// (`limits.hub_queue_batches`): with the Redis engine, appended batches waiting to
    /// come back through the feed.
    in_flight: Arc<Semaphore>,
}

impl Delivery {
    /// A fan-out into `hubs` with at most `max_in_flight` batches queued at once.
    pub fn new(hubs: Arc<Hubs>, progress: Arc<Progress>, max_in_flight: usize) -> Delivery {
        Delivery {
            hubs,
            progress,
            in_flight: Arc::new(Semaphore::new(max_in_flight.max(1))),
        }
    }

    /// Waits for room for one more batch; the permit is held until it is fanned out.
    pub async fn permit(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.clone().acquire_owned().await.ok()
    }

    /// The index in `lists` of `channel`'s step list (added when new); `index` finds it
    /// in one lookup however many channels the batch spans.
    fn hub_of<'a>(
        &self,
        lists: &mut Vec<(HubRef, Vec<Step>)>,
        index: &mut HashMap<&'a str, usize>,
        channel: &'a str,
    ) -> Option<usize> {
        if let Some(&i) = index.get(channel) {
            return Some(i);
        }
        let hub = self.hubs.get(channel).ok()?;
        lists.push((hub, Vec::new()));
        let i = lists.len() - 1;
        index.insert(channel, i);
        Some(i)
    }
}

impl Sink for Delivery {
    fn deliver_fed(&self, fed: &[Fed]) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if fed.is_empty() {
            let _ = tx.send(());
            return rx;
        }
        // Fences are not events: the watermark counts the rest (a fence's number may
        // repeat the last event's).
        let mut counted = fed
            .iter()
            .filter(|f| !matches!(f, Fed::Mark { .. }))
            .map(Fed::seq);
        let first = counted.next();
        let last = counted.next_back().or(first);
        let mut lists: Vec<(HubRef, Vec<Step>)> = Vec::new();
        let mut index = HashMap::new();
        for item in fed {
            match item {
                Fed::Event(event) => {
                    if let Some(i) = self.hub_of(&mut lists, &mut index, &event.channel) {
                        lists[i].1.push(Step::Event(event.clone()));
                    }
                }
                &Fed::Head { number, by } => {
                    for hub in self.hubs.block_hubs() {
                        if let Some(i) = self.hub_of(&mut lists, &mut index, &hub.name) {
                            lists[i].1.push(Step::Head { number, by });
                        }
                    }
                }
                Fed::Mark { channel, seq } => {
                    if let Some(i) = self.hub_of(&mut lists, &mut index, channel) {
                        lists[i].1.push(Step::Mark(*seq));
                    }
                }
            }
        }
        if let (Some(first), Some(last)) = (first, last) {
            self.progress.begin(first, last);
        }
        // Dropped when every hub has its share: moves the watermark, answers the engine.
        let _ticket = Ticket::new(first, self.progress.clone(), tx);
        for (hub, steps) in &lists {
            hub.core.fan_out(steps);
        }
        rx
    }
}
