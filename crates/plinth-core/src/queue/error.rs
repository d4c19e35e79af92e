//! Every refusal of the queue primitive, with the values that caused it.

use crate::ErrorCode;
use crate::limits::{
    QUEUE_ACK_MAX, QUEUE_ATTRIBUTE_BYTES_MAX, QUEUE_ATTRIBUTES_MAX, QUEUE_BODY_BYTES_MAX,
    QUEUE_DEDUP_ID_BYTES_MAX, QUEUE_DEDUP_WINDOW_MS_MAX, QUEUE_DELAY_MS_MAX,
    QUEUE_MAX_RECEIVES_MAX, QUEUE_MESSAGES_MAX, QUEUE_REASON_BYTES_MAX, QUEUE_RECEIVE_MAX,
    QUEUE_RETENTION_MS_MAX, QUEUE_RETENTION_MS_MIN, QUEUE_SEND_BATCH_MAX, QUEUE_VISIBILITY_MS_MAX,
    QUEUES_MAX,
};
use crate::names::NameError;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum QueueError {
    #[error("{}: {error}", field.as_str())]
    Name { field: NameField, error: NameError },
    #[error("queue {name} does not exist")]
    NotFound { name: String },
    #[error("queue {name} already exists with other settings; delete it first to change them")]
    AlreadyExists { name: String },
    #[error("visibility is {ms}ms; the maximum is {QUEUE_VISIBILITY_MS_MAX}ms")]
    Visibility { ms: u64 },
    #[error("max_receives is {value}; it must be 1 to {QUEUE_MAX_RECEIVES_MAX}")]
    MaxReceives { value: u32 },
    #[error(
        "retention is {ms}ms; it must be {QUEUE_RETENTION_MS_MIN}ms to {QUEUE_RETENTION_MS_MAX}ms"
    )]
    Retention { ms: u64 },
    #[error("max_body_bytes is {value}; it must be 1 to {QUEUE_BODY_BYTES_MAX}")]
    MaxBodyBytes { value: u64 },
    #[error("delay is {ms}ms; the maximum is {QUEUE_DELAY_MS_MAX}ms")]
    Delay { ms: u64 },
    #[error("dedup_window is {ms}ms; the maximum is {QUEUE_DEDUP_WINDOW_MS_MAX}ms")]
    DedupWindow { ms: u64 },
    #[error("queue {name} cannot be its own dead-letter queue (directly or through {through})")]
    DeadLetterLoop { name: String, through: String },
    #[error(
        "dead-letter queue {dlq} is {} but queue {name} is {}; they must match",
        if *dlq_fifo { "FIFO" } else { "not FIFO" },
        if *dlq_fifo { "not FIFO" } else { "FIFO" }
    )]
    DeadLetterFifo {
        name: String,
        dlq: String,
        dlq_fifo: bool,
    },
    #[error("queue {name} is the dead-letter queue of {source_queue}; delete {source_queue} first")]
    InUseAsDeadLetter { name: String, source_queue: String },
    #[error("{QUEUES_MAX} queues exist; the limit is {QUEUES_MAX}")]
    TooManyQueues,
    #[error("a send holds {count} messages; it must hold 1 to {QUEUE_SEND_BATCH_MAX}")]
    BatchSize { count: usize },
    #[error("messages[{index}].body is {bytes} bytes; queue {queue} takes at most {max}")]
    BodyTooLarge {
        queue: String,
        index: usize,
        bytes: usize,
        max: u64,
    },
    #[error(
        "messages[{index}] has {count} attributes of {bytes} bytes; the limits are {QUEUE_ATTRIBUTES_MAX} attributes and {QUEUE_ATTRIBUTE_BYTES_MAX} bytes"
    )]
    Attributes {
        index: usize,
        count: usize,
        bytes: usize,
    },
    #[error(
        "messages[{index}].dedup_id is {bytes} bytes; it must be 1 to {QUEUE_DEDUP_ID_BYTES_MAX}"
    )]
    DedupId { index: usize, bytes: usize },
    #[error("messages[{index}].group is required: queue {queue} is FIFO")]
    GroupRequired { queue: String, index: usize },
    #[error("messages[{index}].group is given but queue {queue} is not FIFO")]
    GroupNotFifo { queue: String, index: usize },
    #[error("messages[{index}].group: {error}")]
    Group { index: usize, error: NameError },
    #[error("queue {queue} holds {QUEUE_MESSAGES_MAX} messages; the limit is {QUEUE_MESSAGES_MAX}")]
    QueueFull { queue: String },
    #[error("max is {max}; it must be 1 to {QUEUE_RECEIVE_MAX}")]
    ReceiveMax { max: u32 },
    #[error("ack holds {count} receipts; the limit is {QUEUE_ACK_MAX}")]
    AckCount { count: usize },
    #[error(
        "receipt {receipt} of queue {queue} is not the current delivery: the message was acked, redelivered or moved"
    )]
    StaleReceipt { queue: String, receipt: String },
    #[error("reason is {bytes} bytes; the limit is {QUEUE_REASON_BYTES_MAX}")]
    Reason { bytes: usize },
    #[error("redrive target {to} is {} but dead-letter queue {dlq} is {}; they must match", if *to_fifo { "FIFO" } else { "not FIFO" }, if *to_fifo { "not FIFO" } else { "FIFO" })]
    RedriveFifo {
        dlq: String,
        to: String,
        to_fifo: bool,
    },
    #[error("dead-letter queue {dlq} does not exist; create it first")]
    DeadLetterNotFound { dlq: String },
}

impl QueueError {
    pub fn code(&self) -> ErrorCode {
        match self {
            QueueError::NotFound { .. } | QueueError::DeadLetterNotFound { .. } => {
                ErrorCode::NotFound
            }
            QueueError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            QueueError::InUseAsDeadLetter { .. } | QueueError::RedriveFifo { .. } => {
                ErrorCode::FailedPrecondition
            }
            QueueError::TooManyQueues | QueueError::QueueFull { .. } => {
                ErrorCode::ResourceExhausted
            }
            QueueError::StaleReceipt { .. } => ErrorCode::StaleToken,
            _ => ErrorCode::InvalidArgument,
        }
    }

    /// The request field that was wrong.
    pub fn field(&self) -> &'static str {
        match self {
            QueueError::Name { field, .. } => field.as_str(),
            QueueError::NotFound { .. }
            | QueueError::AlreadyExists { .. }
            | QueueError::InUseAsDeadLetter { .. }
            | QueueError::TooManyQueues
            | QueueError::QueueFull { .. } => "name",
            QueueError::Visibility { .. } => "visibility",
            QueueError::MaxReceives { .. } => "max_receives",
            QueueError::Retention { .. } => "retention",
            QueueError::MaxBodyBytes { .. } => "max_body_bytes",
            QueueError::Delay { .. } => "delay",
            QueueError::DedupWindow { .. } => "dedup_window",
            QueueError::DeadLetterLoop { .. } | QueueError::DeadLetterFifo { .. } => {
                "dead_letter_queue"
            }
            QueueError::BatchSize { .. } => "messages",
            QueueError::BodyTooLarge { .. } => "body",
            QueueError::Attributes { .. } => "attributes",
            QueueError::DedupId { .. } => "dedup_id",
            QueueError::GroupRequired { .. }
            | QueueError::GroupNotFifo { .. }
            | QueueError::Group { .. } => "group",
            QueueError::ReceiveMax { .. } => "max",
            QueueError::AckCount { .. } => "ack",
            QueueError::StaleReceipt { .. } => "receipt",
            QueueError::Reason { .. } => "reason",
            QueueError::RedriveFifo { .. } => "to",
            QueueError::DeadLetterNotFound { .. } => "dead_letter_queue",
        }
    }
}

/// Which name field of a request a name error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NameField {
    Name,
    DeadLetterQueue,
    To,
}

impl NameField {
    pub fn as_str(self) -> &'static str {
        match self {
            NameField::Name => "name",
            NameField::DeadLetterQueue => "dead_letter_queue",
            NameField::To => "to",
        }
    }
}
