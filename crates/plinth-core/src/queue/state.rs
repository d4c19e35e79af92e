//! QueueState: every queue, its messages and the indexes `Tick` walks; apply and queries.

use super::error::NameField;
use super::{
    AckFailure, DeadLetter, Delivery, MessageInfo, NewMessage, QueueCommand, QueueConfig,
    QueueError, QueueInfo, QueueOutput, QueueStats, Receipt, SendResult,
};
use crate::limits::{
    QUEUE_ACK_MAX, QUEUE_ATTRIBUTE_BYTES_MAX, QUEUE_ATTRIBUTES_MAX, QUEUE_BODY_BYTES_MAX,
    QUEUE_DEDUP_ID_BYTES_MAX, QUEUE_DEDUP_WINDOW_MS_MAX, QUEUE_DELAY_MS_MAX,
    QUEUE_MAX_RECEIVES_MAX, QUEUE_MESSAGES_MAX, QUEUE_REASON_BYTES_MAX, QUEUE_RECEIVE_MAX,
    QUEUE_RETENTION_MS_MAX, QUEUE_RETENTION_MS_MIN, QUEUE_SEND_BATCH_MAX, QUEUE_VISIBILITY_MS_MAX,
    QUEUES_MAX,
};
use crate::names::check_name;
use crate::queue;
use crate::{Ctx, Millis, Revision, Wake};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Where a message is. Gone messages are not kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Place {
    Delayed { until: Millis },
    Visible,
    InFlight { until: Millis },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Message {
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    attributes: BTreeMap<String, String>,
    group: Option<String>,
    sent_at: Millis,
    place: Place,
    /// Receives in this queue since the message arrived here: what `max_receives` counts.
    receive_count: u32,
    /// Deliveries over the message's whole life, never reset: the attempt of its receipts, so
    /// that a receipt is never valid twice.
    deliveries: u32,
    first_received_at: Option<Millis>,
    last_reason: String,
    dead_letter: Option<DeadLetter>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Queue {
    config: QueueConfig,
    created_revision: Revision,
    messages: BTreeMap<u64, Message>,
    visible: BTreeSet<u64>,
    /// FIFO queues: each group's messages in arrival order; only the first can be received.
    groups: BTreeMap<String, VecDeque<u64>>,
    /// dedup id → (the first message's id, when the entry ends).
    dedup: BTreeMap<String, (u64, Millis)>,
    sent: u64,
    acked: u64,
    dead_lettered: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    queues: BTreeMap<String, Queue>,
    /// (deadline, queue, message) of every delayed and in-flight message.
    timers: BTreeSet<(Millis, String, u64)>,
    /// (expiry, queue, message) of every message.
    retention: BTreeSet<(Millis, String, u64)>,
    /// (expiry, queue, dedup id) of every dedup entry.
    dedup_expiry: BTreeSet<(Millis, String, String)>,
    next_id: u64,
}

fn name(field: NameField, value: &str) -> Result<(), QueueError> {
    check_name(value).map_err(|error| QueueError::Name { field, error })
}

fn check_config(config: &QueueConfig) -> Result<(), QueueError> {
    if config.visibility_ms > QUEUE_VISIBILITY_MS_MAX {
        return Err(QueueError::Visibility {
            ms: config.visibility_ms,
        });
    }
    if config.max_receives == 0 || config.max_receives > QUEUE_MAX_RECEIVES_MAX {
        return Err(QueueError::MaxReceives {
            value: config.max_receives,
        });
    }
    if !(QUEUE_RETENTION_MS_MIN..=QUEUE_RETENTION_MS_MAX).contains(&config.retention_ms) {
        return Err(QueueError::Retention {
            ms: config.retention_ms,
        });
    }
    if config.max_body_bytes == 0 || config.max_body_bytes > QUEUE_BODY_BYTES_MAX {
        return Err(QueueError::MaxBodyBytes {
            value: config.max_body_bytes,
        });
    }
    if config.delay_ms > QUEUE_DELAY_MS_MAX {
        return Err(QueueError::Delay {
            ms: config.delay_ms,
        });
    }
    if config.dedup_window_ms > QUEUE_DEDUP_WINDOW_MS_MAX {
        return Err(QueueError::DedupWindow {
            ms: config.dedup_window_ms,
        });
    }
    if let Some(dlq) = &config.dead_letter_queue {
        name(NameField::DeadLetterQueue, dlq)?;
    }
    Ok(())
}

fn check_message(queue: &str, index: usize, m: &NewMessage) -> Result<(), QueueError> {
    if m.body.len() as u64 > QUEUE_BODY_BYTES_MAX {
        return Err(QueueError::BodyTooLarge {
            queue: queue.to_owned(),
            index,
            bytes: m.body.len(),
            max: QUEUE_BODY_BYTES_MAX,
        });
    }
    let bytes: usize = m.attributes.iter().map(|(k, v)| k.len() + v.len()).sum();
    if m.attributes.len() > QUEUE_ATTRIBUTES_MAX || bytes > QUEUE_ATTRIBUTE_BYTES_MAX {
        return Err(QueueError::Attributes {
            index,
            count: m.attributes.len(),
            bytes,
        });
    }
    if let Some(delay) = m.delay_ms
        && delay > QUEUE_DELAY_MS_MAX
    {
        return Err(QueueError::Delay { ms: delay });
    }
    if let Some(dedup) = &m.dedup_id
        && (dedup.is_empty() || dedup.len() > QUEUE_DEDUP_ID_BYTES_MAX)
    {
        return Err(QueueError::DedupId {
            index,
            bytes: dedup.len(),
        });
    }
    if let Some(group) = &m.group {
        check_name(group).map_err(|error| QueueError::Group { index, error })?;
    }
    Ok(())
}

impl QueueState {
    /// Checks a command's shape against the limits without looking at the data.
    pub fn validate(command: &QueueCommand) -> Result<(), QueueError> {
        match command {
            QueueCommand::Create(queue::Create { name: n, config }) => {
                name(NameField::Name, n)?;
                check_config(config)
            }
            QueueCommand::Delete(queue::Delete { name: n })
            | QueueCommand::Purge(queue::Purge { queue: n }) => name(NameField::Name, n),
            QueueCommand::Send(queue::Send { queue, messages }) => {
                name(NameField::Name, queue)?;
                if messages.is_empty() || messages.len() > QUEUE_SEND_BATCH_MAX {
                    return Err(QueueError::BatchSize {
                        count: messages.len(),
                    });
                }
                for (index, m) in messages.iter().enumerate() {
                    check_message(queue, index, m)?;
                }
                Ok(())
            }
            QueueCommand::Receive(queue::Receive {
                queue,
                max,
                visibility_ms,
            })
            | QueueCommand::AckAndReceive(queue::AckAndReceive {
                queue,
                max,
                visibility_ms,
                ..
            }) => {
                name(NameField::Name, queue)?;
                if let QueueCommand::AckAndReceive(queue::AckAndReceive { ack, .. }) = command
                    && ack.len() > QUEUE_ACK_MAX
                {
                    return Err(QueueError::AckCount { count: ack.len() });
                }
                if *max == 0 || *max > QUEUE_RECEIVE_MAX {
                    return Err(QueueError::ReceiveMax { max: *max });
                }
                match visibility_ms {
                    Some(ms) if *ms > QUEUE_VISIBILITY_MS_MAX => {
                        Err(QueueError::Visibility { ms: *ms })
                    }
                    _ => Ok(()),
                }
            }
            QueueCommand::Ack(queue::Ack { queue, .. }) => name(NameField::Name, queue),
            QueueCommand::Nack(queue::Nack {
                queue,
                delay_ms,
                reason,
                ..
            }) => {
                name(NameField::Name, queue)?;
                if *delay_ms > QUEUE_DELAY_MS_MAX {
                    return Err(QueueError::Delay { ms: *delay_ms });
                }
                if reason.len() > QUEUE_REASON_BYTES_MAX {
                    return Err(QueueError::Reason {
                        bytes: reason.len(),
                    });
                }
                Ok(())
            }
            QueueCommand::ChangeVisibility(queue::ChangeVisibility {
                queue,
                visibility_ms,
                ..
            }) => {
                name(NameField::Name, queue)?;
                if *visibility_ms > QUEUE_VISIBILITY_MS_MAX {
                    return Err(QueueError::Visibility { ms: *visibility_ms });
                }
                Ok(())
            }
            QueueCommand::Redrive(queue::Redrive { dlq, to, .. }) => {
                name(NameField::Name, dlq)?;
                match to {
                    Some(to) => name(NameField::To, to),
                    None => Ok(()),
                }
            }
        }
    }

    /// Applies a command, and wakes the receives waiting on a queue where a message may now be
    /// receivable: one sent to, given back to, acked in (which frees a FIFO group), redriven
    /// into or deleted (its waiters learn it is gone), and the dead-letter queue a message may
    /// have moved to.
    pub fn apply(
        &mut self,
        command: &QueueCommand,
        ctx: &mut Ctx,
    ) -> Result<QueueOutput, QueueError> {
        let out = self.apply_command(command, ctx)?;
        match command {
            QueueCommand::Send(queue::Send { queue, .. })
            | QueueCommand::Ack(queue::Ack { queue, .. })
            | QueueCommand::AckAndReceive(queue::AckAndReceive { queue, .. })
            | QueueCommand::Nack(queue::Nack { queue, .. })
            | QueueCommand::ChangeVisibility(queue::ChangeVisibility { queue, .. })
            | QueueCommand::Delete(queue::Delete { name: queue }) => self.wake(queue, ctx),
            // The dead-letter queue too: a FIFO group there may go on once its head moved. A
            // redrive to the messages' sources may reach any queue (a source deleted and made
            // again, with another dead-letter queue or none), and redrives are rare: every
            // queue wakes.
            QueueCommand::Redrive(queue::Redrive { dlq, to, .. }) => {
                self.wake(dlq, ctx);
                match to {
                    Some(to) => self.wake(to, ctx),
                    None => {
                        for name in self.queues.keys() {
                            ctx.wake(Wake::Queue(name.clone()));
                        }
                    }
                }
            }
            QueueCommand::Create(_) | QueueCommand::Purge(_) | QueueCommand::Receive(_) => {}
        }
        Ok(out)
    }

    /// Wakes the receives waiting on `queue`, and on its dead-letter queue.
    fn wake(&self, queue: &str, ctx: &mut Ctx) {
        ctx.wake(Wake::Queue(queue.to_owned()));
        if let Some(dlq) = self
            .queues
            .get(queue)
            .and_then(|q| q.config.dead_letter_queue.as_ref())
        {
            ctx.wake(Wake::Queue(dlq.clone()));
        }
    }

    fn apply_command(
        &mut self,
        command: &QueueCommand,
        ctx: &mut Ctx,
    ) -> Result<QueueOutput, QueueError> {
        Self::validate(command)?;
        let clock = ctx.clock;
        match command {
            QueueCommand::Create(queue::Create { name, config }) => self.create(name, config, ctx),
            QueueCommand::Delete(queue::Delete { name }) => {
                self.queue(name)?;
                if let Some((source, _)) = self
                    .queues
                    .iter()
                    .find(|(_, q)| q.config.dead_letter_queue.as_deref() == Some(name.as_str()))
                {
                    return Err(QueueError::InUseAsDeadLetter {
                        name: name.clone(),
                        source_queue: source.clone(),
                    });
                }
                let messages = self.purge(name);
                let queue = self.queues.remove(name).expect("checked above");
                for (dedup_id, (_, expires)) in queue.dedup {
                    self.dedup_expiry.remove(&(expires, name.clone(), dedup_id));
                }
                ctx.changed = true;
                Ok(QueueOutput::Deleted { messages })
            }
            QueueCommand::Purge(queue::Purge { queue }) => {
                self.queue(queue)?;
                let messages = self.purge(queue);
                ctx.changed |= messages > 0;
                Ok(QueueOutput::Purged { messages })
            }
            QueueCommand::Send(queue::Send { queue, messages }) => self.send(queue, messages, ctx),
            QueueCommand::Receive(queue::Receive {
                queue,
                max,
                visibility_ms,
            }) => self.ack_and_receive(queue, &[], *max, *visibility_ms, ctx),
            QueueCommand::AckAndReceive(queue::AckAndReceive {
                queue,
                ack,
                max,
                visibility_ms,
            }) => self.ack_and_receive(queue, ack, *max, *visibility_ms, ctx),
            QueueCommand::Ack(queue::Ack { queue, receipt }) => {
                self.ack(queue, *receipt, ctx)?;
                Ok(QueueOutput::Acked)
            }
            QueueCommand::Nack(queue::Nack {
                queue,
                receipt,
                delay_ms,
                reason,
            }) => {
                self.current(queue, *receipt)?;
                let dead_lettered =
                    self.come_back(queue, receipt.message_id, *delay_ms, reason, clock);
                ctx.changed = true;
                Ok(QueueOutput::Nacked { dead_lettered })
            }
            QueueCommand::ChangeVisibility(queue::ChangeVisibility {
                queue,
                receipt,
                visibility_ms,
            }) => {
                self.current(queue, *receipt)?;
                ctx.changed = true;
                if *visibility_ms == 0 {
                    // Given back, not failed: visible at once, never dead-lettered here.
                    self.set_place(queue, receipt.message_id, Place::Visible);
                    return Ok(QueueOutput::VisibilityChanged { visible_at: clock });
                }
                let until = Millis(clock.0.saturating_add(*visibility_ms));
                self.set_place(queue, receipt.message_id, Place::InFlight { until });
                Ok(QueueOutput::VisibilityChanged { visible_at: until })
            }
            QueueCommand::Redrive(queue::Redrive { dlq, to, max }) => {
                self.redrive(dlq, to.as_deref(), *max, ctx)
            }
        }
    }

    fn create(
        &mut self,
        name: &str,
        config: &QueueConfig,
        ctx: &mut Ctx,
    ) -> Result<QueueOutput, QueueError> {
        if let Some(existing) = self.queues.get(name) {
            if existing.config == *config {
                return Ok(QueueOutput::Created { existed: true });
            }
            return Err(QueueError::AlreadyExists { name: name.into() });
        }
        if self.queues.len() >= QUEUES_MAX {
            return Err(QueueError::TooManyQueues);
        }
        if let Some(dlq) = &config.dead_letter_queue {
            if dlq == name {
                return Err(QueueError::DeadLetterLoop {
                    name: name.into(),
                    through: name.into(),
                });
            }
            let target = self
                .queues
                .get(dlq)
                .ok_or_else(|| QueueError::DeadLetterNotFound { dlq: dlq.clone() })?;
            if target.config.fifo != config.fifo {
                return Err(QueueError::DeadLetterFifo {
                    name: name.into(),
                    dlq: dlq.clone(),
                    dlq_fifo: target.config.fifo,
                });
            }
            // Follow the chain: it must end without coming back here.
            let mut at = target.config.dead_letter_queue.clone();
            while let Some(next) = at {
                if next == name {
                    return Err(QueueError::DeadLetterLoop {
                        name: name.into(),
                        through: dlq.clone(),
                    });
                }
                at = self
                    .queues
                    .get(&next)
                    .and_then(|q| q.config.dead_letter_queue.clone());
            }
        }
        self.queues.insert(
            name.into(),
            Queue {
                config: config.clone(),
                created_revision: ctx.revision,
                messages: BTreeMap::new(),
                visible: BTreeSet::new(),
                groups: BTreeMap::new(),
                dedup: BTreeMap::new(),
                sent: 0,
                acked: 0,
                dead_lettered: 0,
            },
        );
        ctx.changed = true;
        Ok(QueueOutput::Created { existed: false })
    }

    /// Deletes the message `receipt` names, if it is that message's current delivery.
    fn ack(&mut self, queue: &str, receipt: Receipt, ctx: &mut Ctx) -> Result<(), QueueError> {
        self.current(queue, receipt)?;
        self.remove(queue, receipt.message_id);
        self.queues.get_mut(queue).expect("checked").acked += 1;
        ctx.changed = true;
        Ok(())
    }

    /// Acks each of `ack` (those that cannot are reported), then makes up to `max` receivable
    /// messages in flight. Acking first frees a FIFO group for the receive that follows.
    fn ack_and_receive(
        &mut self,
        queue: &str,
        ack: &[Receipt],
        max: u32,
        visibility_ms: Option<u64>,
        ctx: &mut Ctx,
    ) -> Result<QueueOutput, QueueError> {
        let visibility = visibility_ms.unwrap_or(self.queue(queue)?.config.visibility_ms);
        let mut ack_failures = Vec::new();
        for &receipt in ack {
            if let Err(error) = self.ack(queue, receipt, ctx) {
                ack_failures.push(AckFailure { receipt, error });
            }
        }
        let clock = ctx.clock;
        let ids = self.receivable(queue, max as usize);
        let until = Millis(clock.0.saturating_add(visibility));
        let mut deliveries = Vec::with_capacity(ids.len());
        for id in ids {
            self.set_place(queue, id, Place::InFlight { until });
            let m = self.message_mut(queue, id);
            m.receive_count += 1;
            m.deliveries += 1;
            m.first_received_at.get_or_insert(clock);
            let receipt = Receipt {
                message_id: id,
                attempt: m.deliveries,
            };
            deliveries.push(Delivery {
                receipt,
                message: self.info(queue, id),
                visible_at: until,
            });
        }
        ctx.changed |= !deliveries.is_empty();
        Ok(QueueOutput::Received(queue::Received {
            deliveries,
            ack_failures,
        }))
    }

    fn send(
        &mut self,
        queue: &str,
        messages: &[NewMessage],
        ctx: &mut Ctx,
    ) -> Result<QueueOutput, QueueError> {
        let clock = ctx.clock;
        let q = self.queue(queue)?;
        // Every check first: a batch applies whole or not at all.
        for (index, m) in messages.iter().enumerate() {
            if m.body.len() as u64 > q.config.max_body_bytes {
                return Err(QueueError::BodyTooLarge {
                    queue: queue.into(),
                    index,
                    bytes: m.body.len(),
                    max: q.config.max_body_bytes,
                });
            }
            match (&m.group, q.config.fifo) {
                (None, true) => {
                    return Err(QueueError::GroupRequired {
                        queue: queue.into(),
                        index,
                    });
                }
                (Some(_), false) => {
                    return Err(QueueError::GroupNotFifo {
                        queue: queue.into(),
                        index,
                    });
                }
                _ => {}
            }
        }
        if q.messages.len() + messages.len() > QUEUE_MESSAGES_MAX {
            return Err(QueueError::QueueFull {
                queue: queue.into(),
            });
        }
        let window = q.config.dedup_window_ms;
        let default_delay = q.config.delay_ms;
        let mut results = Vec::with_capacity(messages.len());
        for m in messages {
            if let Some(dedup_id) = &m.dedup_id
                && let Some((first, expires)) = self.queues[queue].dedup.get(dedup_id)
                && *expires > clock
            {
                results.push(SendResult {
                    message_id: *first,
                    duplicate: true,
                });
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let delay = m.delay_ms.unwrap_or(default_delay);
            let place = if delay > 0 {
                Place::Delayed {
                    until: Millis(clock.0.saturating_add(delay)),
                }
            } else {
                Place::Visible
            };
            self.insert(
                queue,
                id,
                Message {
                    body: m.body.clone(),
                    attributes: m.attributes.clone(),
                    group: m.group.clone(),
                    sent_at: clock,
                    place,
                    receive_count: 0,
                    deliveries: 0,
                    first_received_at: None,
                    last_reason: String::new(),
                    dead_letter: None,
                },
            );
            if let Some(dedup_id) = &m.dedup_id
                && window > 0
            {
                let expires = Millis(clock.0.saturating_add(window));
                let q = self.queues.get_mut(queue).expect("checked");
                if let Some((_, old)) = q.dedup.insert(dedup_id.clone(), (id, expires)) {
                    self.dedup_expiry
                        .remove(&(old, queue.to_owned(), dedup_id.clone()));
                }
                self.dedup_expiry
                    .insert((expires, queue.to_owned(), dedup_id.clone()));
            }
            self.queues.get_mut(queue).expect("checked").sent += 1;
            results.push(SendResult {
                message_id: id,
                duplicate: false,
            });
        }
        ctx.changed |= results.iter().any(|r| !r.duplicate);
        Ok(QueueOutput::Sent(results))
    }

    fn redrive(
        &mut self,
        dlq: &str,
        to: Option<&str>,
        max: u64,
        ctx: &mut Ctx,
    ) -> Result<QueueOutput, QueueError> {
        let fifo = self.queue(dlq)?.config.fifo;
        if let Some(to) = to {
            let target = self.queue(to)?;
            if target.config.fifo != fifo {
                return Err(QueueError::RedriveFifo {
                    dlq: dlq.into(),
                    to: to.into(),
                    to_fifo: target.config.fifo,
                });
            }
        }
        let source = &self.queues[dlq];
        // In id order; in a FIFO queue group by group from the front, stopping at a message in
        // flight, so that a group's order survives the move.
        let order: Vec<u64> = if fifo {
            source
                .groups
                .values()
                .flat_map(|ids| {
                    ids.iter().take_while(|id| {
                        !matches!(source.messages[id].place, Place::InFlight { .. })
                    })
                })
                .copied()
                .collect()
        } else {
            source
                .messages
                .iter()
                .filter(|(_, m)| !matches!(m.place, Place::InFlight { .. }))
                .map(|(id, _)| *id)
                .collect()
        };
        let limit = if max == 0 { usize::MAX } else { max as usize };
        let mut room: BTreeMap<&str, usize> = BTreeMap::new();
        let mut candidates: Vec<(u64, String)> = Vec::new();
        // A FIFO group stops moving at its first message that stays, so that none of its later
        // messages overtakes it.
        let mut stopped: BTreeSet<&str> = BTreeSet::new();
        for id in order {
            if candidates.len() >= limit {
                break;
            }
            let m = &source.messages[&id];
            let group = m.group.as_deref().unwrap_or_default();
            if stopped.contains(group) {
                continue;
            }
            let target = match (to, &m.dead_letter) {
                (Some(to), _) => Some(to),
                (None, Some(letter)) => Some(letter.source_queue.as_str()),
                (None, None) => None,
            };
            // A target that is gone, of the other kind, full, or that takes smaller bodies
            // keeps the message here.
            let fits = target.and_then(|target| {
                let q = self.queues.get(target).filter(|_| target != dlq)?;
                let free = room
                    .entry(target)
                    .or_insert_with(|| QUEUE_MESSAGES_MAX.saturating_sub(q.messages.len()));
                let fits = q.config.fifo == fifo
                    && *free > 0
                    && m.body.len() as u64 <= q.config.max_body_bytes;
                fits.then(|| {
                    *free -= 1;
                    target
                })
            });
            match fits {
                Some(target) => candidates.push((id, target.to_owned())),
                None if fifo => {
                    stopped.insert(group);
                }
                None => {}
            }
        }
        for (id, target) in &candidates {
            let mut m = self.remove(dlq, *id);
            m.place = Place::Visible;
            m.receive_count = 0;
            m.first_received_at = None;
            m.last_reason.clear();
            m.dead_letter = None;
            self.insert(target, *id, m);
        }
        ctx.changed |= !candidates.is_empty();
        Ok(QueueOutput::Redriven {
            moved: candidates.len() as u64,
        })
    }

    /// Brings an in-flight message back: to the dead-letter queue if it has been received
    /// `max_receives` times and the queue has one, else visible (after `delay_ms`). Returns
    /// whether it was dead-lettered.
    fn come_back(
        &mut self,
        queue: &str,
        id: u64,
        delay_ms: u64,
        reason: &str,
        clock: Millis,
    ) -> bool {
        let q = &self.queues[queue];
        let m = &q.messages[&id];
        if m.receive_count >= q.config.max_receives
            && let Some(dlq) = q.config.dead_letter_queue.clone()
        {
            let mut m = self.remove(queue, id);
            m.dead_letter = Some(DeadLetter {
                source_queue: queue.to_owned(),
                receive_count: m.receive_count,
                first_received_at: m.first_received_at.unwrap_or(clock),
                last_reason: reason.to_owned(),
                dead_lettered_at: clock,
            });
            m.place = Place::Visible;
            m.receive_count = 0;
            m.first_received_at = None;
            m.last_reason = reason.to_owned();
            self.queues.get_mut(queue).expect("exists").dead_lettered += 1;
            self.insert(&dlq, id, m);
            return true;
        }
        self.message_mut(queue, id).last_reason = reason.to_owned();
        let place = if delay_ms > 0 {
            Place::Delayed {
                until: Millis(clock.0.saturating_add(delay_ms)),
            }
        } else {
            Place::Visible
        };
        self.set_place(queue, id, place);
        false
    }

    /// Runs the clock forward: delays end, visibility runs out, retention and dedup windows end.
    /// Returns whether anything changed; wakes the receives on a queue whose messages moved.
    pub fn tick(&mut self, ctx: &mut Ctx) -> bool {
        let clock = ctx.clock;
        let mut changed = false;
        while let Some((until, queue, id)) = self.timers.first().cloned() {
            if until > clock {
                break;
            }
            changed = true;
            self.wake(&queue, ctx);
            match self.queues[&queue].messages[&id].place {
                Place::Delayed { .. } => self.set_place(&queue, id, Place::Visible),
                Place::InFlight { .. } => {
                    self.come_back(&queue, id, 0, "visibility timeout expired", clock);
                }
                Place::Visible => unreachable!("Q1: a visible message has no timer"),
            }
        }
        while let Some((expires, queue, id)) = self.retention.first().cloned() {
            if expires > clock {
                break;
            }
            changed = true;
            // A FIFO group whose in-flight message is gone may go on.
            self.wake(&queue, ctx);
            self.remove(&queue, id);
        }
        while let Some((expires, queue, dedup_id)) = self.dedup_expiry.first().cloned() {
            if expires > clock {
                break;
            }
            changed = true;
            self.dedup_expiry
                .remove(&(expires, queue.clone(), dedup_id.clone()));
            self.queues
                .get_mut(&queue)
                .expect("Q4: a dedup entry's queue exists")
                .dedup
                .remove(&dedup_id);
        }
        changed
    }

    /// The earliest point on the log clock at which `tick` has work.
    pub fn next_deadline(&self) -> Option<Millis> {
        [
            self.timers.first().map(|t| t.0),
            self.retention.first().map(|t| t.0),
            self.dedup_expiry.first().map(|t| t.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether a receive on `queue` would get a message now: what a long poll waits for.
    pub fn has_receivable(&self, queue: &str) -> bool {
        !self.receivable(queue, 1).is_empty()
    }

    /// The ids of every message in `queue`, in id order.
    pub fn message_ids(&self, queue: &str) -> Vec<u64> {
        self.queues
            .get(queue)
            .map_or_else(Vec::new, |q| q.messages.keys().copied().collect())
    }

    pub fn exists(&self, queue: &str) -> bool {
        self.queues.contains_key(queue)
    }

    pub fn info(&self, queue: &str, id: u64) -> MessageInfo {
        let m = &self.queues[queue].messages[&id];
        MessageInfo {
            message_id: id,
            body: m.body.clone(),
            attributes: m.attributes.clone(),
            group: m.group.clone(),
            sent_at: m.sent_at,
            receive_count: m.receive_count,
            first_received_at: m.first_received_at,
            dead_letter: m.dead_letter.clone(),
        }
    }

    /// The queue's settings and counts, `None` if it does not exist.
    pub fn queue_info(&self, name: &str) -> Option<QueueInfo> {
        let q = self.queues.get(name)?;
        let mut stats = QueueStats {
            sent: q.sent,
            acked: q.acked,
            dead_lettered: q.dead_lettered,
            ..QueueStats::default()
        };
        for m in q.messages.values() {
            match m.place {
                Place::Delayed { .. } => stats.delayed += 1,
                Place::Visible => stats.visible += 1,
                Place::InFlight { .. } => stats.in_flight += 1,
            }
            stats.oldest_sent_at =
                Some(stats.oldest_sent_at.map_or(m.sent_at, |o| o.min(m.sent_at)));
        }
        if let Some(dlq) = &q.config.dead_letter_queue {
            stats.dead_letters = self.queues.get(dlq).map_or(0, |d| d.messages.len() as u64);
        }
        Some(QueueInfo {
            name: name.to_owned(),
            config: q.config.clone(),
            created_revision: q.created_revision,
            stats,
        })
    }

    /// Every queue in name order.
    pub fn list(&self) -> Vec<QueueInfo> {
        self.queues
            .keys()
            .filter_map(|name| self.queue_info(name))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.queues.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    pub fn check_invariants(&self) {
        let mut timers = BTreeSet::new();
        let mut retention = BTreeSet::new();
        let mut dedup_expiry = BTreeSet::new();
        for (name, q) in &self.queues {
            let visible: BTreeSet<u64> = q
                .messages
                .iter()
                .filter(|(_, m)| m.place == Place::Visible)
                .map(|(id, _)| *id)
                .collect();
            assert!(
                visible == q.visible,
                "Q1: visible set of {name} is out of step"
            );
            for (id, m) in &q.messages {
                assert!(*id < self.next_id, "Q6: message {id} not below next_id");
                match m.place {
                    Place::Delayed { until } => {
                        timers.insert((until, name.clone(), *id));
                    }
                    Place::InFlight { until } => {
                        timers.insert((until, name.clone(), *id));
                        assert!(
                            m.deliveries >= m.receive_count && m.receive_count >= 1,
                            "Q2: message {id} in flight with {} deliveries and {} receives",
                            m.deliveries,
                            m.receive_count
                        );
                    }
                    Place::Visible => {}
                }
                retention.insert((
                    Millis(m.sent_at.0.saturating_add(q.config.retention_ms)),
                    name.clone(),
                    *id,
                ));
                assert_eq!(
                    m.group.is_some(),
                    q.config.fifo,
                    "Q3: message {id} of {name} has a group iff the queue is FIFO"
                );
            }
            if q.config.fifo {
                let mut listed = 0;
                for (group, ids) in &q.groups {
                    assert!(!ids.is_empty(), "Q3: empty group {group} kept in {name}");
                    for (position, id) in ids.iter().enumerate() {
                        let m = &q.messages[id];
                        assert_eq!(m.group.as_deref(), Some(group.as_str()), "Q3: group index");
                        if position > 0 {
                            assert!(
                                !matches!(m.place, Place::InFlight { .. }),
                                "Q3: message {id} of group {group} in flight behind another"
                            );
                        }
                    }
                    listed += ids.len();
                }
                assert_eq!(
                    listed,
                    q.messages.len(),
                    "Q3: group index of {name} incomplete"
                );
            } else {
                assert!(q.groups.is_empty(), "Q3: groups in non-FIFO queue {name}");
            }
            for (dedup_id, (_, expires)) in &q.dedup {
                dedup_expiry.insert((*expires, name.clone(), dedup_id.clone()));
            }
            if let Some(dlq) = &q.config.dead_letter_queue {
                let target = self
                    .queues
                    .get(dlq)
                    .expect("Q5: a dead-letter queue exists");
                assert_eq!(
                    target.config.fifo, q.config.fifo,
                    "Q5: FIFO-ness of {name} and {dlq}"
                );
                let mut at = Some(dlq.clone());
                let mut steps = 0;
                while let Some(next) = at {
                    assert!(
                        next != *name && steps <= self.queues.len(),
                        "Q5: {name} loops"
                    );
                    steps += 1;
                    at = self.queues[&next].config.dead_letter_queue.clone();
                }
            }
        }
        assert!(timers == self.timers, "Q1: timer index out of step");
        assert!(
            retention == self.retention,
            "Q1: retention index out of step"
        );
        assert!(
            dedup_expiry == self.dedup_expiry,
            "Q4: dedup index out of step"
        );
    }

    // ---- the few functions that touch the indexes ----

    fn queue(&self, name: &str) -> Result<&Queue, QueueError> {
        self.queues
            .get(name)
            .ok_or_else(|| QueueError::NotFound { name: name.into() })
    }

    fn message_mut(&mut self, queue: &str, id: u64) -> &mut Message {
        self.queues
            .get_mut(queue)
            .and_then(|q| q.messages.get_mut(&id))
            .expect("the message exists")
    }

    /// Checks that `receipt` is the current delivery of an in-flight message of `queue`.
    fn current(&self, queue: &str, receipt: Receipt) -> Result<(), QueueError> {
        let q = self.queue(queue)?;
        match q.messages.get(&receipt.message_id) {
            Some(m)
                if matches!(m.place, Place::InFlight { .. }) && m.deliveries == receipt.attempt =>
            {
                Ok(())
            }
            _ => Err(QueueError::StaleReceipt {
                queue: queue.into(),
                receipt: receipt.to_string(),
            }),
        }
    }

    /// Up to `max` receivable ids in id order: visible, and in a FIFO queue the oldest of their
    /// group.
    fn receivable(&self, queue: &str, max: usize) -> Vec<u64> {
        let Some(q) = self.queues.get(queue) else {
            return Vec::new();
        };
        q.visible
            .iter()
            .copied()
            .filter(|id| {
                !q.config.fifo || {
                    let group = q.messages[id].group.as_ref().expect("Q3: FIFO has groups");
                    q.groups[group].front() == Some(id)
                }
            })
            .take(max)
            .collect()
    }

    fn set_place(&mut self, queue: &str, id: u64, place: Place) {
        let q = self.queues.get_mut(queue).expect("the queue exists");
        let m = q.messages.get_mut(&id).expect("the message exists");
        match m.place {
            Place::Visible => {
                q.visible.remove(&id);
            }
            Place::Delayed { until } | Place::InFlight { until } => {
                self.timers.remove(&(until, queue.to_owned(), id));
            }
        }
        m.place = place;
        match place {
            Place::Visible => {
                q.visible.insert(id);
            }
            Place::Delayed { until } | Place::InFlight { until } => {
                self.timers.insert((until, queue.to_owned(), id));
            }
        }
    }

    fn insert(&mut self, queue: &str, id: u64, m: Message) {
        let q = self.queues.get_mut(queue).expect("the queue exists");
        match m.place {
            Place::Visible => {
                q.visible.insert(id);
            }
            Place::Delayed { until } | Place::InFlight { until } => {
                self.timers.insert((until, queue.to_owned(), id));
            }
        }
        let expires = Millis(m.sent_at.0.saturating_add(q.config.retention_ms));
        self.retention.insert((expires, queue.to_owned(), id));
        if let Some(group) = &m.group {
            // Arrival order: a message moved in (to a dead-letter queue, or back by redrive)
            // queues behind the group's messages already here, whatever its id.
            q.groups.entry(group.clone()).or_default().push_back(id);
        }
        q.messages.insert(id, m);
    }

    fn remove(&mut self, queue: &str, id: u64) -> Message {
        let q = self.queues.get_mut(queue).expect("the queue exists");
        let m = q.messages.remove(&id).expect("the message exists");
        match m.place {
            Place::Visible => {
                q.visible.remove(&id);
            }
            Place::Delayed { until } | Place::InFlight { until } => {
                self.timers.remove(&(until, queue.to_owned(), id));
            }
        }
        let expires = Millis(m.sent_at.0.saturating_add(q.config.retention_ms));
        self.retention.remove(&(expires, queue.to_owned(), id));
        if let Some(group) = &m.group {
            let ids = q.groups.get_mut(group).expect("Q3: the group is listed");
            ids.retain(|other| *other != id);
            if ids.is_empty() {
                q.groups.remove(group);
            }
        }
        m
    }

    /// Removes every message of `queue`; returns how many.
    fn purge(&mut self, queue: &str) -> u64 {
        let ids: Vec<u64> = self.queues[queue].messages.keys().copied().collect();
        for id in &ids {
            self.remove(queue, *id);
        }
        ids.len() as u64
    }
}
