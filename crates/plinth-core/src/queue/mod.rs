//! Work queues with visibility timeouts, retries, dead-letter queues and redrive, like SQS.
//!
//! Contract: `Send` stores a message durably and answers its id; a `dedup_id` seen inside the
//! queue's dedup window answers the first message's id and stores nothing. A message is delayed
//! (until its delay passes), visible, in flight (received, until its visibility timeout passes), or
//! gone (acked, purged, expired by retention, or moved to the dead-letter queue). `Receive` hands
//! out visible messages, each with a receipt — the message id and its delivery attempt, the fencing
//! token of that delivery — and makes them in flight. `Ack` deletes; a receive may carry receipts
//! to ack first, in the same write (a consumer acks what it finished as it takes more; a receipt
//! that cannot ack is reported and does not stop the receive). `Nack` makes the message visible
//! again (after an optional delay); `ChangeVisibility` moves the in-flight deadline. Only
//! the receipt of the current delivery is accepted: after a redelivery, an older receipt gets
//! `STALE_TOKEN` and changes nothing. When an in-flight message's visibility runs out it becomes
//! visible again. A message whose receive count has reached `max_receives` and that comes back
//! (nack or visibility expiry) moves to the queue's dead-letter queue with its attempt count, its
//! first-receive time and the last nack reason; `Redrive` moves dead letters back (never past a
//! target's limits, and group by group in a FIFO queue). `ChangeVisibility` to 0 gives a message
//! back without counting it as a failure. Without a
//! dead-letter queue a message is redelivered until retention removes it, as in SQS. Delivery is
//! at least once. Delays, visibility expiry, retention and the dedup window all run on `Tick`.
//!
//! A FIFO queue requires a message group on every send and delivers each group in arrival order
//! with at most one message of a group in flight: only a group's first message can be received. A
//! message that arrives by redrive (or in a dead-letter queue) joins the end of its group.
//!
//! Invariants:
//! - Q1: every message is in exactly one state, and the indexes agree: the visible set holds
//!   exactly the visible messages, the timer index exactly the delayed and in-flight ones at their
//!   deadlines, the retention index every message at its expiry.
//! - Q2: an in-flight message has been received; its one valid receipt carries its delivery
//!   count, which never goes back, so no receipt is valid twice.
//! - Q3: in a FIFO queue each group lists exactly its messages in arrival order, and at most one
//!   message of a group is in flight — and only the group's first.
//! - Q4: the dedup index lists exactly the live dedup entries at their expiry.
//! - Q5: a dead-letter queue exists, has the same FIFO-ness, and no chain of dead-letter queues
//!   loops.
//! - Q6: message ids are below `next_id`, so they are never reused.

mod command;
mod error;
mod state;
#[cfg(test)]
mod tests;

pub use command::{
    Ack, AckAndReceive, AckFailure, ChangeVisibility, Create, DeadLetter, Delete, Delivery,
    MessageInfo, Nack, NewMessage, Purge, QueueCommand, QueueConfig, QueueInfo, QueueOutput,
    QueueStats, Receipt, Receive, Received, Redrive, Send, SendResult,
};
pub use error::QueueError;
pub use state::QueueState;
