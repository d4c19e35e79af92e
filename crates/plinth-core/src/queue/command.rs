//! The queue commands and what they answer.

use crate::queue::QueueError;
use crate::{Millis, Revision};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A queue's settings, fixed at creation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    pub visibility_ms: u64,
    /// Receives after which a message that comes back moves to the dead-letter queue.
    pub max_receives: u32,
    pub dead_letter_queue: Option<String>,
    pub retention_ms: u64,
    pub max_body_bytes: u64,
    /// The delay of a send that gives none.
    pub delay_ms: u64,
    pub dedup_window_ms: u64,
    pub fifo: bool,
}

/// A message as sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMessage {
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    pub attributes: BTreeMap<String, String>,
    /// `None`: the queue's default delay.
    pub delay_ms: Option<u64>,
    pub dedup_id: Option<String>,
    pub group: Option<String>,
}

/// Names one delivery of one message: what `Ack`, `Nack` and `ChangeVisibility` take. On the
/// wire it reads `<message_id>.<attempt>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Receipt {
    pub message_id: u64,
    /// The delivery attempt: 1 for the first receive. It counts every delivery of the message
    /// over its life (also across a dead-letter queue and redrive), so no receipt is valid twice.
    pub attempt: u32,
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.message_id, self.attempt)
    }
}

impl Receipt {
    /// Parses `<message_id>.<attempt>`.
    pub fn parse(text: &str) -> Option<Receipt> {
        let (id, attempt) = text.split_once('.')?;
        Some(Receipt {
            message_id: id.parse().ok()?,
            attempt: attempt.parse().ok()?,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Create {
    pub name: String,
    pub config: QueueConfig,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delete {
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Send {
    pub queue: String,
    pub messages: Vec<NewMessage>,
}

/// A receive with nothing to ack; it applies as an `AckAndReceive` with nothing to ack. The
/// server still proposes it for such a receive, so that a member of an older build, which
/// does not know `AckAndReceive`, can apply the log during a rolling upgrade.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receive {
    pub queue: String,
    pub max: u32,
    pub visibility_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub queue: String,
    pub receipt: Receipt,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    pub queue: String,
    pub receipt: Receipt,
    pub delay_ms: u64,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeVisibility {
    pub queue: String,
    pub receipt: Receipt,
    pub visibility_ms: u64,
}

/// Moves up to `max` (all when 0) dead letters of `dlq` back to `to`, or to the queue each
/// came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redrive {
    pub dlq: String,
    pub to: Option<String>,
    pub max: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purge {
    pub queue: String,
}

/// Acks each receipt of `ack` as [`QueueCommand::Ack`] would, then makes up to `max` visible
/// messages in flight for `visibility_ms` (the queue's when `None`): a consumer acks what it
/// finished in the same write as it takes more. A receipt that cannot ack is reported in
/// the output and does not stop the receive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckAndReceive {
    pub queue: String,
    pub ack: Vec<Receipt>,
    pub max: u32,
    pub visibility_ms: Option<u64>,
}

/// Every queue command, each a type of its own (see `crate::Call`). The log encodes the
/// variants by position: they are only ever appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueCommand {
    Create(Create),
    Delete(Delete),
    Send(Send),
    Receive(Receive),
    Ack(Ack),
    Nack(Nack),
    ChangeVisibility(ChangeVisibility),
    Redrive(Redrive),
    Purge(Purge),
    AckAndReceive(AckAndReceive),
}

/// A receipt of an `AckAndReceive` that did not ack, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckFailure {
    pub receipt: Receipt,
    pub error: QueueError,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendResult {
    pub message_id: u64,
    /// The dedup id was seen inside the window: this is the first message's id, nothing new was
    /// stored.
    pub duplicate: bool,
}

/// Where a dead letter came from and how it got here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub source_queue: String,
    pub receive_count: u32,
    pub first_received_at: Millis,
    pub last_reason: String,
    pub dead_lettered_at: Millis,
}

/// A message handed out by `Receive`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub receipt: Receipt,
    pub message: MessageInfo,
    /// When this delivery's visibility ends, on the log clock.
    pub visible_at: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageInfo {
    pub message_id: u64,
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    pub attributes: BTreeMap<String, String>,
    pub group: Option<String>,
    pub sent_at: Millis,
    pub receive_count: u32,
    pub first_received_at: Option<Millis>,
    pub dead_letter: Option<DeadLetter>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    pub visible: u64,
    pub in_flight: u64,
    pub delayed: u64,
    /// Messages in the queue's dead-letter queue.
    pub dead_letters: u64,
    /// When the oldest message still in the queue was sent.
    pub oldest_sent_at: Option<Millis>,
    pub sent: u64,
    pub acked: u64,
    pub dead_lettered: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueInfo {
    pub name: String,
    pub config: QueueConfig,
    pub created_revision: Revision,
    pub stats: QueueStats,
}

/// What a receive handed out, and which of the receipts it was to ack did not ack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    pub deliveries: Vec<Delivery>,
    /// The receipts of an `AckAndReceive` that did not ack.
    pub ack_failures: Vec<AckFailure>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueOutput {
    Created { existed: bool },
    Deleted { messages: u64 },
    Sent(Vec<SendResult>),
    Received(Received),
    Acked,
    Nacked { dead_lettered: bool },
    VisibilityChanged { visible_at: Millis },
    Redriven { moved: u64 },
    Purged { messages: u64 },
}
