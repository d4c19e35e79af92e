//! The ticker: while this node leads, it proposes `Tick` when a lease or a lock waiter is due, and `Refresh` when
//! a new term of leadership begins; on every replica it triggers a snapshot when one is due.
//!
//! Time enters the log only through stamped commands, so leases expire when a `Tick` is applied,
//! never by a timer inside the state machine. The ticker proposes one only when the earliest
//! deadline has passed on the wall clock, so an idle server writes nothing.

use std::sync::Weak;
use std::time::Duration;

use plinth_core::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::node::{Node, NodeInner, now_ms};

pub(crate) struct Ticker {
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

impl Ticker {
    /// Starts ticking every `interval`. `refreshed_term` is the term whose leadership duties
    /// `start` already did. The task holds the node weakly, so a dropped node stops it too.
    pub(crate) fn spawn(node: Weak<NodeInner>, interval: Duration, refreshed_term: u64) -> Ticker {
        let (stop, stopped) = watch::channel(false);
        let handle = tokio::spawn(run(node, interval, refreshed_term, stopped));
        Ticker { stop, handle }
    }

    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.handle.await {
            tracing::error!(error = %e, "ticker task failed");
        }
    }
}

async fn run(
    node: Weak<NodeInner>,
    interval: Duration,
    mut refreshed_term: u64,
    mut stopped: watch::Receiver<bool>,
) {
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.changed() => return,
            _ = timer.tick() => {}
        }
        let Some(inner) = node.upgrade() else { return };
        let node = Node::from_inner(inner);
        node.maybe_snapshot().await;
        tokio::select! {
            _ = stopped.changed() => return,
            result = tick_once(&node, &mut refreshed_term) => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "ticker could not propose");
                }
            }
        }
    }
}

async fn tick_once(node: &Node, refreshed_term: &mut u64) -> Result<(), crate::NodeError> {
    let Some(term) = node.leader_term() else {
        return Ok(());
    };
    if term != *refreshed_term {
        node.leadership_began().await?;
        *refreshed_term = term;
    }
    let due = node
        .state_machine()
        .read()
        .state
        .next_deadline()
        .is_some_and(|deadline| deadline.0 <= now_ms());
    if due {
        // Stamped with the wall clock, which has passed the deadline: the lease expires in this
        // apply, and every key and lock hold attached to it ends in the same revision.
        node.propose(Command::Tick).await?;
    }
    Ok(())
}
