//! The queue calls and their gRPC service. `Receive` long-polls: when nothing is visible it
//! waits on the applied state (woken by every apply, not by polling) until a message becomes
//! receivable or the wait runs out. The receipts a receive carries to ack are acked in its first
//! proposal, before any wait.

use crate::api::Api;
use crate::error::ApiError;
use plinth_core::Wake;
use plinth_core::limits::{self, QUEUE_WAIT_MS_MAX};
use plinth_core::queue;
use plinth_core::queue::{AckFailure, Delivery, NewMessage, QueueConfig, QueueInfo, Receipt};
use plinth_core::{ErrorCode, StateError};
use plinth_proto::v1 as pb;
use plinth_proto::v1::queue_server::QueueServer;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// The config with each 0 read as its default.
fn config(c: pb::QueueConfig) -> QueueConfig {
    let or = |value: u64, default: u64| if value == 0 { default } else { value };
    QueueConfig {
        visibility_ms: or(c.visibility_ms, limits::QUEUE_VISIBILITY_MS_DEFAULT),
        max_receives: if c.max_receives == 0 {
            limits::QUEUE_MAX_RECEIVES_DEFAULT
        } else {
            c.max_receives
        },
        dead_letter_queue: (!c.dead_letter_queue.is_empty()).then_some(c.dead_letter_queue),
        retention_ms: or(c.retention_ms, limits::QUEUE_RETENTION_MS_DEFAULT),
        max_body_bytes: or(c.max_body_bytes, limits::QUEUE_BODY_BYTES_MAX),
        delay_ms: c.delay_ms,
        dedup_window_ms: or(c.dedup_window_ms, limits::QUEUE_DEDUP_WINDOW_MS_DEFAULT),
        fifo: c.fifo,
    }
}

fn config_out(c: QueueConfig) -> pb::QueueConfig {
    pb::QueueConfig {
        visibility_ms: c.visibility_ms,
        max_receives: c.max_receives,
        dead_letter_queue: c.dead_letter_queue.unwrap_or_default(),
        retention_ms: c.retention_ms,
        max_body_bytes: c.max_body_bytes,
        delay_ms: c.delay_ms,
        dedup_window_ms: c.dedup_window_ms,
        fifo: c.fifo,
    }
}

fn info_out(i: QueueInfo) -> pb::QueueInfo {
    let s = i.stats;
    pb::QueueInfo {
        name: i.name,
        config: Some(config_out(i.config)),
        stats: Some(pb::QueueStats {
            visible: s.visible,
            in_flight: s.in_flight,
            delayed: s.delayed,
            dead_letters: s.dead_letters,
            oldest_sent_at_ms: s.oldest_sent_at.map_or(0, |t| t.0),
            sent: s.sent,
            acked: s.acked,
            dead_lettered: s.dead_lettered,
        }),
    }
}

fn entry(e: pb::QueueSendEntry) -> NewMessage {
    NewMessage {
        body: e.body,
        attributes: e.attributes.into_iter().collect::<BTreeMap<_, _>>(),
        delay_ms: e.delay_ms,
        dedup_id: (!e.dedup_id.is_empty()).then_some(e.dedup_id),
        group: (!e.group.is_empty()).then_some(e.group),
    }
}

fn delivery(d: Delivery) -> pb::QueueDelivery {
    let m = d.message;
    pb::QueueDelivery {
        receipt: d.receipt.to_string(),
        message_id: m.message_id,
        body: m.body,
        attributes: m.attributes.into_iter().collect(),
        group: m.group.unwrap_or_default(),
        sent_at_ms: m.sent_at.0,
        receive_count: m.receive_count,
        first_received_at_ms: m.first_received_at.map_or(0, |t| t.0),
        visible_at_ms: d.visible_at.0,
        dead_letter: m.dead_letter.map(|l| pb::QueueDeadLetter {
            source_queue: l.source_queue,
            receive_count: l.receive_count,
            first_received_at_ms: l.first_received_at.0,
            last_reason: l.last_reason,
            dead_lettered_at_ms: l.dead_lettered_at.0,
        }),
    }
}

/// The failed acks as the caller wrote their receipts: the failures come in the order given, a
/// subsequence of `parsed` (whose entries are `texts` parsed).
fn as_given(
    texts: &[String],
    parsed: &[Receipt],
    failed: Vec<AckFailure>,
) -> Vec<pb::QueueAckFailure> {
    let mut failed = failed.into_iter().peekable();
    let mut out = Vec::new();
    for (text, receipt) in texts.iter().zip(parsed) {
        if let Some(f) = failed.next_if(|f| f.receipt == *receipt) {
            out.push(pb::QueueAckFailure {
                receipt: text.clone(),
                error: Some(ApiError::from(StateError::from(f.error)).detail()),
            });
        }
    }
    out
}

/// Parses the receipt in `field`.
fn receipt(field: &str, text: &str) -> Result<Receipt, ApiError> {
    Receipt::parse(text).ok_or_else(|| {
        ApiError::invalid(
            field,
            format!("{field} {text:?} is not a receipt; receipts read <message_id>.<attempt>"),
        )
    })
}

fn not_found(name: &str) -> ApiError {
    ApiError::from(plinth_core::StateError::from(
        plinth_core::queue::QueueError::NotFound { name: name.into() },
    ))
}

impl Api {
    pub async fn queue_create(
        &self,
        r: pb::QueueCreateRequest,
    ) -> Result<pb::QueueCreateResponse, ApiError> {
        let name = r.name.clone();
        let create = queue::Create {
            name: r.name,
            config: config(r.config.unwrap_or_default()),
        };
        let (existed, header) = self.call(create).await?;
        let (info, _) = self
            .read(false, move |s| s.queues().queue_info(&name))
            .await?;
        Ok(pb::QueueCreateResponse {
            header: Some(header),
            existed,
            queue: info.map(info_out),
        })
    }

    pub async fn queue_delete(
        &self,
        r: pb::QueueDeleteRequest,
    ) -> Result<pb::QueueDeleteResponse, ApiError> {
        let (messages, header) = self.call(queue::Delete { name: r.name }).await?;
        Ok(pb::QueueDeleteResponse {
            header: Some(header),
            messages,
        })
    }

    pub async fn queue_list(
        &self,
        r: pb::QueueListRequest,
    ) -> Result<pb::QueueListResponse, ApiError> {
        let (queues, header) = self.read(r.serializable, |s| s.queues().list()).await?;
        Ok(pb::QueueListResponse {
            header: Some(header),
            queues: queues.into_iter().map(info_out).collect(),
        })
    }

    pub async fn queue_stats(
        &self,
        r: pb::QueueStatsRequest,
    ) -> Result<pb::QueueStatsResponse, ApiError> {
        let name = r.name.clone();
        let (info, header) = self
            .read(r.serializable, move |s| s.queues().queue_info(&name))
            .await?;
        let info = info.ok_or_else(|| not_found(&r.name))?;
        Ok(pb::QueueStatsResponse {
            header: Some(header),
            queue: Some(info_out(info)),
        })
    }

    pub async fn queue_send(
        &self,
        r: pb::QueueSendRequest,
    ) -> Result<pb::QueueSendResponse, ApiError> {
        let message = entry(pb::QueueSendEntry {
            body: r.body,
            attributes: r.attributes,
            delay_ms: r.delay_ms,
            dedup_id: r.dedup_id,
            group: r.group,
        });
        let send = queue::Send {
            queue: r.queue,
            messages: vec![message],
        };
        let (results, header) = self.call(send).await?;
        let first = &results[0];
        Ok(pb::QueueSendResponse {
            header: Some(header),
            message_id: first.message_id,
            duplicate: first.duplicate,
        })
    }

    pub async fn queue_send_batch(
        &self,
        r: pb::QueueSendBatchRequest,
    ) -> Result<pb::QueueSendBatchResponse, ApiError> {
        let send = queue::Send {
            queue: r.queue,
            messages: r.messages.into_iter().map(entry).collect(),
        };
        let (results, header) = self.call(send).await?;
        Ok(pb::QueueSendBatchResponse {
            header: Some(header),
            results: results
                .into_iter()
                .map(|r| pb::QueueSendResult {
                    message_id: r.message_id,
                    duplicate: r.duplicate,
                })
                .collect(),
        })
    }

    pub async fn queue_receive(
        &self,
        r: pb::QueueReceiveRequest,
    ) -> Result<pb::QueueReceiveResponse, ApiError> {
        if r.wait_ms > QUEUE_WAIT_MS_MAX {
            return Err(ApiError::invalid(
                "wait",
                format!(
                    "wait is {}ms; the maximum is {QUEUE_WAIT_MS_MAX}ms",
                    r.wait_ms
                ),
            ));
        }
        let given = r
            .ack
            .iter()
            .enumerate()
            .map(|(i, text)| receipt(&format!("ack[{i}]"), text))
            .collect::<Result<Vec<_>, _>>()?;
        let deadline = Instant::now() + Duration::from_millis(r.wait_ms);
        let receive = queue::Receive {
            queue: r.queue.clone(),
            max: r.max.max(1),
            visibility_ms: (r.visibility_ms != 0).then_some(r.visibility_ms),
        };
        // The acks ride on the first proposal only: they are made at once, before any wait. A
        // receive without acks is proposed as the log's older `Receive`, which a member not yet
        // upgraded still reads.
        let (first, header) = if given.is_empty() {
            self.call(receive.clone()).await?
        } else {
            self.call(queue::AckAndReceive {
                queue: r.queue.clone(),
                ack: given.clone(),
                max: receive.max,
                visibility_ms: receive.visibility_ms,
            })
            .await?
        };
        let ack_failures = as_given(&r.ack, &given, first.ack_failures);
        let mut reply = pb::QueueReceiveResponse {
            header: Some(header),
            messages: first.deliveries.into_iter().map(delivery).collect(),
            acked: (given.len() - ack_failures.len()) as u32,
            ack_failures,
        };
        // Once acks were made the call answers them: a wait that then fails ends with no
        // messages rather than an error that would hide what was acked.
        let acks_made = !given.is_empty();
        while reply.messages.is_empty() && Instant::now() < deadline {
            // Nothing visible: wait until an apply makes something receivable (a send, a nack,
            // a tick that ends a delay or a visibility timeout), or the wait runs out.
            let queue = r.queue.clone();
            // A queue deleted meanwhile wakes the poll too: the next receive says NOT_FOUND.
            let ready = self.node.wait_for(Wake::Queue(r.queue.clone()), move |s| {
                (!s.queues().exists(&queue) || s.queues().has_receivable(&queue)).then_some(())
            });
            let mut shutdown = self.shutdown.clone();
            let woken = tokio::select! {
                ready = ready => ready.map_err(ApiError::from),
                _ = tokio::time::sleep_until(deadline) => break,
                _ = shutdown.wait_for(|stop| *stop) => {
                    Err(ApiError::new(ErrorCode::Unavailable, "", "the server is shutting down"))
                }
            };
            let next = match woken {
                Ok(()) => self.call(receive.clone()).await,
                Err(e) => Err(e),
            };
            match next {
                Ok((received, header)) => {
                    reply.header = Some(header);
                    reply.messages = received.deliveries.into_iter().map(delivery).collect();
                }
                Err(_) if acks_made => break,
                Err(e) => return Err(e),
            }
        }
        Ok(reply)
    }

    pub async fn queue_ack(
        &self,
        r: pb::QueueAckRequest,
    ) -> Result<pb::QueueAckResponse, ApiError> {
        let ack = queue::Ack {
            queue: r.queue,
            receipt: receipt("receipt", &r.receipt)?,
        };
        let ((), header) = self.call(ack).await?;
        Ok(pb::QueueAckResponse {
            header: Some(header),
        })
    }

    pub async fn queue_nack(
        &self,
        r: pb::QueueNackRequest,
    ) -> Result<pb::QueueNackResponse, ApiError> {
        let nack = queue::Nack {
            queue: r.queue,
            receipt: receipt("receipt", &r.receipt)?,
            delay_ms: r.delay_ms,
            reason: r.reason,
        };
        let (dead_lettered, header) = self.call(nack).await?;
        Ok(pb::QueueNackResponse {
            header: Some(header),
            dead_lettered,
        })
    }

    pub async fn queue_change_visibility(
        &self,
        r: pb::QueueChangeVisibilityRequest,
    ) -> Result<pb::QueueChangeVisibilityResponse, ApiError> {
        let change = queue::ChangeVisibility {
            queue: r.queue,
            receipt: receipt("receipt", &r.receipt)?,
            visibility_ms: r.visibility_ms,
        };
        let (visible_at, header) = self.call(change).await?;
        Ok(pb::QueueChangeVisibilityResponse {
            header: Some(header),
            visible_at_ms: visible_at.0,
        })
    }

    pub async fn queue_redrive(
        &self,
        r: pb::QueueRedriveRequest,
    ) -> Result<pb::QueueRedriveResponse, ApiError> {
        let redrive = queue::Redrive {
            dlq: r.dlq,
            to: (!r.to.is_empty()).then_some(r.to),
            max: r.max,
        };
        let (moved, header) = self.call(redrive).await?;
        Ok(pb::QueueRedriveResponse {
            header: Some(header),
            moved,
        })
    }

    pub async fn queue_purge(
        &self,
        r: pb::QueuePurgeRequest,
    ) -> Result<pb::QueuePurgeResponse, ApiError> {
        let (messages, header) = self.call(queue::Purge { queue: r.name }).await?;
        Ok(pb::QueuePurgeResponse {
            header: Some(header),
            messages,
        })
    }
}

service! {
    pb::queue_server::Queue, QueueServer, "queue" {}
    create(pb::QueueCreateRequest) -> pb::QueueCreateResponse => queue_create;
    delete(pb::QueueDeleteRequest) -> pb::QueueDeleteResponse => queue_delete;
    list(pb::QueueListRequest) -> pb::QueueListResponse => queue_list;
    stats(pb::QueueStatsRequest) -> pb::QueueStatsResponse => queue_stats;
    send(pb::QueueSendRequest) -> pb::QueueSendResponse => queue_send;
    send_batch(pb::QueueSendBatchRequest) -> pb::QueueSendBatchResponse => queue_send_batch;
    receive(pb::QueueReceiveRequest) -> pb::QueueReceiveResponse => queue_receive;
    ack(pb::QueueAckRequest) -> pb::QueueAckResponse => queue_ack;
    nack(pb::QueueNackRequest) -> pb::QueueNackResponse => queue_nack;
    change_visibility(pb::QueueChangeVisibilityRequest) -> pb::QueueChangeVisibilityResponse => queue_change_visibility;
    redrive(pb::QueueRedriveRequest) -> pb::QueueRedriveResponse => queue_redrive;
    purge(pb::QueuePurgeRequest) -> pb::QueuePurgeResponse => queue_purge;
}
