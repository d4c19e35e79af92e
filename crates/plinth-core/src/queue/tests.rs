//! Queue unit tests (scripts of commands and the answers they must give) and a property test of
//! random sends, receives, acks, nacks, visibility changes, redrives, purges and ticks.

use crate::limits::{QUEUE_ACK_MAX, QUEUE_RECEIVE_MAX, QUEUE_SEND_BATCH_MAX};
use crate::queue;
use crate::queue::{
    Delivery, NewMessage, QueueCommand, QueueConfig, QueueError, QueueOutput, Receipt, SendResult,
};
use crate::tests::run;
use crate::{Applied, Command, ErrorCode, Millis, Output, Request, State, StateError};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn config() -> QueueConfig {
    QueueConfig {
        visibility_ms: 1_000,
        max_receives: 3,
        dead_letter_queue: None,
        retention_ms: 60_000,
        max_body_bytes: 1024,
        delay_ms: 0,
        dedup_window_ms: 5_000,
        fifo: false,
    }
}

fn create(name: &str, config: QueueConfig) -> Command {
    Command::Queue(QueueCommand::Create(queue::Create {
        name: name.into(),
        config,
    }))
}

fn message(body: &str) -> NewMessage {
    NewMessage {
        body: body.into(),
        attributes: BTreeMap::new(),
        delay_ms: None,
        dedup_id: None,
        group: None,
    }
}

fn send(queue: &str, messages: Vec<NewMessage>) -> Command {
    Command::Queue(QueueCommand::Send(queue::Send {
        queue: queue.into(),
        messages,
    }))
}

fn receive(queue: &str, max: u32) -> Command {
    Command::Queue(QueueCommand::Receive(queue::Receive {
        queue: queue.into(),
        max,
        visibility_ms: None,
    }))
}

fn ack_and_receive(queue: &str, ack: Vec<Receipt>, max: u32) -> Command {
    Command::Queue(QueueCommand::AckAndReceive(queue::AckAndReceive {
        queue: queue.into(),
        ack,
        max,
        visibility_ms: None,
    }))
}

fn ack(queue: &str, receipt: Receipt) -> Command {
    Command::Queue(QueueCommand::Ack(queue::Ack {
        queue: queue.into(),
        receipt,
    }))
}

fn nack(queue: &str, receipt: Receipt, reason: &str) -> Command {
    Command::Queue(QueueCommand::Nack(queue::Nack {
        queue: queue.into(),
        receipt,
        delay_ms: 0,
        reason: reason.into(),
    }))
}

fn sent(applied: &Applied) -> Vec<SendResult> {
    match &applied.result {
        Ok(Output::Queue(QueueOutput::Sent(results))) => results.clone(),
        other => panic!("expected sent, got {other:?}"),
    }
}

fn received(applied: &Applied) -> Vec<Delivery> {
    match &applied.result {
        Ok(Output::Queue(QueueOutput::Received(queue::Received { deliveries, .. }))) => {
            deliveries.clone()
        }
        other => panic!("expected deliveries, got {other:?}"),
    }
}

fn queue_error(applied: &Applied) -> QueueError {
    match &applied.result {
        Err(StateError::Queue(e)) => e.clone(),
        other => panic!("expected a queue error, got {other:?}"),
    }
}

fn bodies(deliveries: &[Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|d| String::from_utf8(d.message.body.clone()).unwrap())
        .collect()
}

#[test]
fn send_receive_ack_and_an_acked_message_never_comes_back() {
    let mut s = State::default();
    run(&mut s, 1_000, create("jobs", config()));
    sent(&run(
        &mut s,
        1_000,
        send("jobs", vec![message("a"), message("b")]),
    ));
    let got = received(&run(&mut s, 1_000, receive("jobs", 10)));
    assert_eq!(bodies(&got), ["a", "b"]);
    assert_eq!(got[0].receipt.attempt, 1);
    assert_eq!(got[0].visible_at, Millis(2_000));
    assert!(received(&run(&mut s, 1_001, receive("jobs", 10))).is_empty());
    run(&mut s, 1_002, ack("jobs", got[0].receipt));
    // b's visibility runs out; a was acked and stays gone.
    run(&mut s, 2_000, Command::Tick);
    let again = received(&run(&mut s, 2_001, receive("jobs", 10)));
    assert_eq!(bodies(&again), ["b"]);
    assert_eq!(again[0].receipt.attempt, 2);
    // The first delivery's receipt of b is stale now.
    let before = s.clone();
    let stale = run(&mut s, 2_001, ack("jobs", got[1].receipt));
    assert_eq!(queue_error(&stale).code(), ErrorCode::StaleToken);
    assert_eq!(s, before);
    let info = s.queues().queue_info("jobs").unwrap();
    assert_eq!(
        (info.stats.in_flight, info.stats.acked, info.stats.sent),
        (1, 1, 2)
    );
}

#[test]
fn a_message_received_max_receives_times_goes_to_the_dead_letter_queue_and_redrive_brings_it_back()
{
    let mut s = State::default();
    run(&mut s, 1_000, create("dead", config()));
    let mut with_dlq = config();
    with_dlq.dead_letter_queue = Some("dead".into());
    run(&mut s, 1_000, create("jobs", with_dlq));
    let id = sent(&run(&mut s, 1_000, send("jobs", vec![message("poison")])))[0].message_id;
    for attempt in 1..=3 {
        let got = received(&run(&mut s, 1_000 + attempt, receive("jobs", 1)));
        assert_eq!(got[0].receipt.attempt, attempt as u32);
        let out = run(
            &mut s,
            1_000 + attempt,
            nack("jobs", got[0].receipt, "boom"),
        );
        assert_eq!(
            out.result,
            Ok(Output::Queue(QueueOutput::Nacked {
                dead_lettered: attempt == 3
            }))
        );
    }
    assert!(received(&run(&mut s, 1_010, receive("jobs", 1))).is_empty());
    let dead = received(&run(&mut s, 1_010, receive("dead", 1)));
    assert_eq!(dead[0].message.message_id, id);
    let letter = dead[0].message.dead_letter.clone().unwrap();
    assert_eq!(
        (
            letter.source_queue.as_str(),
            letter.receive_count,
            letter.first_received_at,
            letter.last_reason.as_str()
        ),
        ("jobs", 3, Millis(1_001), "boom")
    );
    assert_eq!(s.queues().queue_info("jobs").unwrap().stats.dead_letters, 1);
    // In flight in the dead-letter queue: not redriven until it is visible again.
    let redrive = Command::Queue(QueueCommand::Redrive(queue::Redrive {
        dlq: "dead".into(),
        to: None,
        max: 0,
    }));
    assert_eq!(
        run(&mut s, 1_011, redrive.clone()).result,
        Ok(Output::Queue(QueueOutput::Redriven { moved: 0 }))
    );
    run(&mut s, 1_011, nack("dead", dead[0].receipt, "look later"));
    assert_eq!(
        run(&mut s, 1_012, redrive).result,
        Ok(Output::Queue(QueueOutput::Redriven { moved: 1 }))
    );
    let back = received(&run(&mut s, 1_013, receive("jobs", 1)));
    // Its receive count starts again; its receipts never repeat an earlier one.
    assert_eq!(
        (
            back[0].message.message_id,
            back[0].message.receive_count,
            back[0].receipt.attempt
        ),
        (id, 1, 5)
    );
}

#[test]
fn visibility_expiry_counts_toward_max_receives() {
    let mut s = State::default();
    run(&mut s, 0, create("dead", config()));
    let mut with_dlq = config();
    with_dlq.dead_letter_queue = Some("dead".into());
    with_dlq.max_receives = 1;
    run(&mut s, 0, create("jobs", with_dlq));
    run(&mut s, 0, send("jobs", vec![message("slow")]));
    received(&run(&mut s, 0, receive("jobs", 1)));
    run(&mut s, 1_000, Command::Tick);
    let dead = received(&run(&mut s, 1_000, receive("dead", 1)));
    assert_eq!(
        dead[0].message.dead_letter.as_ref().unwrap().last_reason,
        "visibility timeout expired"
    );
}

#[test]
fn a_dedup_id_inside_the_window_returns_the_first_id_and_stores_nothing() {
    let mut s = State::default();
    run(&mut s, 1_000, create("jobs", config()));
    let with_id = |body: &str| NewMessage {
        dedup_id: Some("order-7".into()),
        ..message(body)
    };
    let first = sent(&run(&mut s, 1_000, send("jobs", vec![with_id("a")])))[0].clone();
    let before = s.revision();
    let again = run(&mut s, 5_999, send("jobs", vec![with_id("b")]));
    assert_eq!(
        sent(&again),
        vec![SendResult {
            message_id: first.message_id,
            duplicate: true
        }]
    );
    assert_eq!(again.revision, before, "a duplicate takes no revision");
    run(&mut s, 6_000, Command::Tick);
    let later = sent(&run(&mut s, 6_000, send("jobs", vec![with_id("c")])))[0].clone();
    assert!(!later.duplicate);
    assert_eq!(s.queues().queue_info("jobs").unwrap().stats.visible, 2);
}

#[test]
fn a_receive_acks_its_receipts_first_and_reports_the_ones_that_cannot_ack() {
    let fifo = QueueConfig {
        fifo: true,
        ..config()
    };
    let mut s = State::default();
    run(&mut s, 0, create("orders", fifo));
    let in_group = |body: &str| NewMessage {
        group: Some("g".into()),
        ..message(body)
    };
    run(
        &mut s,
        0,
        send("orders", vec![in_group("a1"), in_group("a2")]),
    );
    let first = received(&run(&mut s, 0, ack_and_receive("orders", vec![], 10)));
    assert_eq!(bodies(&first), ["a1"]);
    // Acking a1 in the receive frees its group for that same receive; a receipt that never was
    // current cannot ack, is reported, and does not stop the receive.
    let bogus = Receipt {
        message_id: 99,
        attempt: 1,
    };
    let applied = run(
        &mut s,
        1,
        ack_and_receive("orders", vec![first[0].receipt, bogus], 10),
    );
    let Ok(Output::Queue(QueueOutput::Received(queue::Received {
        deliveries,
        ack_failures,
    }))) = &applied.result
    else {
        panic!("expected deliveries, got {:?}", applied.result);
    };
    assert_eq!(bodies(deliveries), ["a2"]);
    assert_eq!(ack_failures.len(), 1);
    assert_eq!(ack_failures[0].receipt, bogus);
    assert_eq!(ack_failures[0].error.code(), ErrorCode::StaleToken);
    let info = s.queues().queue_info("orders").unwrap();
    assert_eq!((info.stats.acked, info.stats.in_flight), (1, 1));
    // Acking the same receipt twice: the second is stale, as a second `Ack` would be.
    let again = run(
        &mut s,
        2,
        ack_and_receive("orders", vec![first[0].receipt], 1),
    );
    let Ok(Output::Queue(QueueOutput::Received(queue::Received { ack_failures, .. }))) =
        &again.result
    else {
        panic!("expected deliveries, got {:?}", again.result);
    };
    assert_eq!(ack_failures.len(), 1);
}

#[test]
fn a_receive_from_a_log_written_before_acks_rode_on_receives_applies_as_one_with_nothing_to_ack() {
    let mut old = State::default();
    run(&mut old, 0, create("jobs", config()));
    run(&mut old, 0, send("jobs", vec![message("a"), message("b")]));
    let mut new = old.clone();
    let a = run(&mut old, 5, receive("jobs", 1));
    let b = run(&mut new, 5, ack_and_receive("jobs", vec![], 1));
    assert_eq!(a.result, b.result);
    assert_eq!(old, new);
}

#[test]
fn fifo_groups_deliver_in_order_one_at_a_time() {
    let mut s = State::default();
    let fifo = QueueConfig {
        fifo: true,
        ..config()
    };
    run(&mut s, 0, create("orders", fifo));
    let in_group = |body: &str, group: &str| NewMessage {
        group: Some(group.into()),
        ..message(body)
    };
    run(
        &mut s,
        0,
        send(
            "orders",
            vec![
                in_group("a1", "a"),
                in_group("a2", "a"),
                in_group("b1", "b"),
            ],
        ),
    );
    let got = received(&run(&mut s, 0, receive("orders", 10)));
    assert_eq!(bodies(&got), ["a1", "b1"]);
    assert!(received(&run(&mut s, 0, receive("orders", 10))).is_empty());
    // a1 comes back: it is still first in its group.
    run(&mut s, 0, nack("orders", got[0].receipt, "retry"));
    let again = received(&run(&mut s, 0, receive("orders", 10)));
    assert_eq!(bodies(&again), ["a1"]);
    run(&mut s, 0, ack("orders", again[0].receipt));
    assert_eq!(
        bodies(&received(&run(&mut s, 0, receive("orders", 10)))),
        ["a2"]
    );
    let e = queue_error(&run(&mut s, 0, send("orders", vec![message("no group")])));
    assert_eq!((e.code(), e.field()), (ErrorCode::InvalidArgument, "group"));
}

#[test]
fn delays_hold_a_message_back_until_a_tick_passes_them() {
    let mut s = State::default();
    run(&mut s, 1_000, create("jobs", config()));
    let later = NewMessage {
        delay_ms: Some(500),
        ..message("later")
    };
    run(&mut s, 1_000, send("jobs", vec![later]));
    assert!(!s.queues().has_receivable("jobs"));
    assert_eq!(s.next_deadline(), Some(Millis(1_500)));
    run(&mut s, 1_500, Command::Tick);
    assert!(s.queues().has_receivable("jobs"));
}

#[test]
fn retention_removes_old_messages_whatever_their_state() {
    let mut s = State::default();
    run(&mut s, 0, create("jobs", config()));
    run(
        &mut s,
        0,
        send("jobs", vec![message("old"), message("older")]),
    );
    received(&run(&mut s, 0, receive("jobs", 1)));
    run(&mut s, 60_000, Command::Tick);
    assert_eq!(
        s.queues().queue_info("jobs").unwrap().stats,
        crate::queue::QueueStats {
            sent: 2,
            ..Default::default()
        }
    );
}

#[test]
fn bad_input_is_refused_with_the_field_and_the_limit_and_changes_nothing() {
    let mut s = State::default();
    run(&mut s, 0, create("jobs", config()));
    let before = s.clone();
    let cases: Vec<(Command, ErrorCode, &str, String)> = vec![
        (
            send("jobs", vec![message(&"x".repeat(1025))]),
            ErrorCode::InvalidArgument,
            "body",
            "messages[0].body is 1025 bytes; queue jobs takes at most 1024".into(),
        ),
        (
            send("nope", vec![message("a")]),
            ErrorCode::NotFound,
            "name",
            "queue nope does not exist".into(),
        ),
        (
            send("jobs", vec![message("a"); QUEUE_SEND_BATCH_MAX + 1]),
            ErrorCode::InvalidArgument,
            "messages",
            format!("a send holds 101 messages; it must hold 1 to {QUEUE_SEND_BATCH_MAX}"),
        ),
        (
            receive("jobs", QUEUE_RECEIVE_MAX + 1),
            ErrorCode::InvalidArgument,
            "max",
            "max is 101; it must be 1 to 100".into(),
        ),
        (
            ack_and_receive(
                "jobs",
                vec![
                    Receipt {
                        message_id: 0,
                        attempt: 1
                    };
                    QUEUE_ACK_MAX + 1
                ],
                1,
            ),
            ErrorCode::InvalidArgument,
            "ack",
            format!("ack holds 101 receipts; the limit is {QUEUE_ACK_MAX}"),
        ),
        (
            create(
                "loop",
                QueueConfig {
                    dead_letter_queue: Some("loop".into()),
                    ..config()
                },
            ),
            ErrorCode::InvalidArgument,
            "dead_letter_queue",
            "queue loop cannot be its own dead-letter queue (directly or through loop)".into(),
        ),
        (
            create(
                "jobs",
                QueueConfig {
                    max_receives: 9,
                    ..config()
                },
            ),
            ErrorCode::AlreadyExists,
            "name",
            "queue jobs already exists with other settings; delete it first to change them".into(),
        ),
        (
            create(
                "x",
                QueueConfig {
                    dead_letter_queue: Some("missing".into()),
                    ..config()
                },
            ),
            ErrorCode::NotFound,
            "dead_letter_queue",
            "dead-letter queue missing does not exist; create it first".into(),
        ),
    ];
    for (command, code, field, message) in cases {
        let e = queue_error(&run(&mut s, 0, command));
        assert_eq!((e.code(), e.field(), e.to_string()), (code, field, message));
        assert_eq!(s, before);
    }
    // A queue in use as a dead-letter queue cannot be deleted.
    run(
        &mut s,
        0,
        create(
            "main",
            QueueConfig {
                dead_letter_queue: Some("jobs".into()),
                ..config()
            },
        ),
    );
    let e = queue_error(&run(
        &mut s,
        0,
        Command::Queue(QueueCommand::Delete(queue::Delete {
            name: "jobs".into(),
        })),
    ));
    assert_eq!(
        (e.code(), e.field()),
        (ErrorCode::FailedPrecondition, "name")
    );
}

// ---- the property test ----

const QUEUES: [&str; 4] = ["main", "dead", "fifo", "fifo-dead"];
/// How many of the latest receipts each step picks from and probes.
const RECENT: usize = 24;

fn setup() -> State {
    let mut s = State::default();
    run(&mut s, 0, create("dead", config()));
    run(
        &mut s,
        0,
        create(
            "fifo-dead",
            QueueConfig {
                fifo: true,
                ..config()
            },
        ),
    );
    run(
        &mut s,
        0,
        create(
            "main",
            QueueConfig {
                dead_letter_queue: Some("dead".into()),
                ..config()
            },
        ),
    );
    run(
        &mut s,
        0,
        create(
            "fifo",
            QueueConfig {
                fifo: true,
                dead_letter_queue: Some("fifo-dead".into()),
                ..config()
            },
        ),
    );
    s
}

#[derive(Clone, Debug)]
enum Step {
    Send {
        queue: usize,
        n: usize,
        dedup: Option<u8>,
        group: u8,
        delay_ms: u64,
    },
    /// A receive that first acks the receipts at these indexes (any queue's: a receipt of
    /// another queue cannot ack here); with none, the log's older `Receive` every other time.
    Receive {
        queue: usize,
        max: u32,
        ack: Vec<usize>,
        legacy: bool,
    },
    Ack(usize),
    Nack(usize, u64),
    ChangeVisibility(usize, u64),
    Redrive(bool),
    Purge(usize),
    Tick,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..4usize, 1..4usize, prop::option::of(0..4u8), 0..3u8, prop_oneof![3 => Just(0u64), 1 => 1u64..2_000])
            .prop_map(|(queue, n, dedup, group, delay_ms)| Step::Send { queue, n, dedup, group, delay_ms }),
        4 => (0..4usize, 1..4u32, prop::collection::vec(any::<usize>(), 0..3), any::<bool>())
            .prop_map(|(queue, max, ack, legacy)| Step::Receive { queue, max, ack, legacy }),
        3 => any::<usize>().prop_map(Step::Ack),
        2 => (any::<usize>(), prop_oneof![Just(0u64), 1u64..1_500]).prop_map(|(i, d)| Step::Nack(i, d)),
        1 => (any::<usize>(), 0u64..3_000).prop_map(|(i, v)| Step::ChangeVisibility(i, v)),
        1 => any::<bool>().prop_map(Step::Redrive),
        1 => (0..40usize).prop_map(Step::Purge),
        3 => Just(Step::Tick),
    ]
}

/// Every message id present anywhere, with its queue.
fn present(s: &State) -> BTreeMap<u64, String> {
    let mut all = BTreeMap::new();
    for q in QUEUES {
        let info = s.queues().queue_info(q).unwrap();
        let total = info.stats.visible + info.stats.in_flight + info.stats.delayed;
        let ids = s.queues().message_ids(q);
        assert_eq!(
            ids.len() as u64,
            total,
            "Q1: {q} counts {total} but holds {}",
            ids.len()
        );
        for id in ids {
            assert!(
                all.insert(id, q.to_string()).is_none(),
                "message {id} in two queues"
            );
        }
    }
    all
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn one_state_per_message_one_receipt_per_delivery_acked_never_again_dedup_and_fifo(
        steps in prop::collection::vec((step(), 0u64..1_500), 1..150)
    ) {
        let mut s = setup();
        let mut now = 0u64;
        let mut receipts: Vec<(String, Receipt)> = Vec::new();
        let mut acked: BTreeSet<u64> = BTreeSet::new();
        let mut sent_at: BTreeMap<u64, u64> = BTreeMap::new();
        // (queue, dedup id) → (first id, when it was sent).
        let mut dedup: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        let mut live = present(&s);
        for (step, advance) in steps {
            now += advance;
            let mut purged = None;
            let mut acking = None;
            let mut acking_all: Vec<Receipt> = Vec::new();
            let command = match step.clone() {
                Step::Send { queue, n, dedup: d, group, delay_ms } => {
                    let fifo = QUEUES[queue].starts_with("fifo");
                    send(QUEUES[queue], (0..n).map(|i| NewMessage {
                        body: vec![i as u8],
                        attributes: BTreeMap::new(),
                        delay_ms: Some(delay_ms),
                        dedup_id: d.map(|d| format!("d{d}")),
                        group: fifo.then(|| format!("g{group}")),
                    }).collect())
                }
                Step::Receive { queue, max, ack, legacy } => {
                    let ack: Vec<Receipt> = if receipts.is_empty() {
                        Vec::new()
                    } else {
                        ack.iter().map(|i| receipts[i % receipts.len()].1).collect()
                    };
                    acking_all = ack.clone();
                    if ack.is_empty() && legacy {
                        receive(QUEUES[queue], max)
                    } else {
                        ack_and_receive(QUEUES[queue], ack, max)
                    }
                }
                Step::Ack(i) if !receipts.is_empty() => {
                    let (q, r) = receipts[i % receipts.len()].clone();
                    acking = Some(r.message_id);
                    ack(&q, r)
                }
                Step::Nack(i, delay_ms) if !receipts.is_empty() => {
                    let (q, r) = receipts[i % receipts.len()].clone();
                    Command::Queue(QueueCommand::Nack(queue::Nack { queue: q, receipt: r, delay_ms, reason: "no".into() }))
                }
                Step::ChangeVisibility(i, visibility_ms) if !receipts.is_empty() => {
                    let (q, r) = receipts[i % receipts.len()].clone();
                    Command::Queue(QueueCommand::ChangeVisibility(queue::ChangeVisibility { queue: q, receipt: r, visibility_ms }))
                }
                Step::Redrive(fifo) => Command::Queue(QueueCommand::Redrive(queue::Redrive {
                    dlq: if fifo { "fifo-dead" } else { "dead" }.into(), to: None, max: 0,
                })),
                Step::Purge(q) if q < 4 => {
                    purged = Some(QUEUES[q]);
                    Command::Queue(QueueCommand::Purge(queue::Purge { queue: QUEUES[q].into() }))
                }
                _ => Command::Tick,
            };
            let applied = run(&mut s, now, command);
            match &applied.result {
                Ok(Output::Queue(QueueOutput::Sent(results))) => {
                    let Step::Send { queue, dedup: d, .. } = step else { unreachable!() };
                    for r in results {
                        if let Some(d) = d {
                            let key = (QUEUES[queue].to_string(), format!("d{d}"));
                            match dedup.get(&key) {
                                Some((first, at)) if now < at + config().dedup_window_ms => {
                                    prop_assert!(r.duplicate, "a dedup id inside its window stored a message");
                                    prop_assert_eq!(r.message_id, *first);
                                }
                                _ => {
                                    prop_assert!(!r.duplicate, "a dedup id outside its window was refused");
                                    dedup.insert(key, (r.message_id, now));
                                }
                            }
                        }
                        if !r.duplicate {
                            sent_at.insert(r.message_id, now);
                        }
                    }
                }
                Ok(Output::Queue(QueueOutput::Received(queue::Received { deliveries, ack_failures }))) => {
                    let Step::Receive { queue, .. } = step else { unreachable!() };
                    // Acks come first, so what they deleted is not handed out below. A receipt
                    // listed twice acks once and fails once.
                    for r in &acking_all {
                        let given = acking_all.iter().filter(|a| *a == r).count();
                        let failed = ack_failures.iter().filter(|f| f.receipt == *r).count();
                        if failed < given {
                            acked.insert(r.message_id);
                        }
                    }
                    for d in deliveries {
                        prop_assert!(!acked.contains(&d.message.message_id), "an acked message was delivered again");
                        receipts.push((QUEUES[queue].to_string(), d.receipt));
                    }
                }
                Ok(Output::Queue(QueueOutput::Acked)) => {
                    acked.insert(acking.expect("acked something"));
                }
                _ => {}
            }
            // Nothing disappears except by ack, purge or retention.
            let now_present = present(&s);
            for (id, queue) in &live {
                if !now_present.contains_key(id) {
                    let expired = sent_at.get(id).is_some_and(|at| now >= at + config().retention_ms);
                    prop_assert!(
                        acked.contains(id) || purged == Some(queue.as_str()) || expired,
                        "message {} vanished from {}", id, queue
                    );
                }
            }
            live = now_present;
            // At most one valid receipt per message, and every other recent receipt is refused
            // and changes nothing.
            let recent = receipts.len().saturating_sub(RECENT);
            receipts.drain(..recent);
            let mut valid = BTreeMap::new();
            for (q, r) in &receipts {
                let mut probe = s.clone();
                let tried = probe.apply(&Request { stamp: Millis(now), command: ack(q, *r) });
                match tried.result {
                    Ok(_) => {
                        prop_assert!(valid.insert(r.message_id, r.attempt).is_none(), "two valid receipts for one message");
                    }
                    Err(e) => {
                        prop_assert_eq!(e.code(), ErrorCode::StaleToken);
                        prop_assert!(probe == s, "a refused ack changed state");
                    }
                }
            }
        }
    }
}

#[test]
fn fifo_redrive_stops_a_group_at_its_first_message_that_cannot_move() {
    let mut s = State::default();
    let fifo = QueueConfig {
        fifo: true,
        ..config()
    };
    run(&mut s, 1_000, create("dead", fifo.clone()));
    run(
        &mut s,
        1_000,
        create(
            "small",
            QueueConfig {
                max_body_bytes: 4,
                ..fifo
            },
        ),
    );
    let in_group = |body: &str, group: &str| NewMessage {
        group: Some(group.into()),
        ..message(body)
    };
    sent(&run(
        &mut s,
        1_000,
        send(
            "dead",
            vec![
                in_group("too large", "g"),
                in_group("b", "g"),
                in_group("c", "h"),
            ],
        ),
    ));
    let redrive = Command::Queue(QueueCommand::Redrive(queue::Redrive {
        dlq: "dead".into(),
        to: Some("small".into()),
        max: 0,
    }));
    match run(&mut s, 1_001, redrive).result {
        Ok(Output::Queue(QueueOutput::Redriven { moved })) => assert_eq!(moved, 1),
        other => panic!("expected a redrive, got {other:?}"),
    }
    // "b" stays behind "too large", so group g keeps its order; group h moved.
    assert_eq!(
        bodies(&received(&run(&mut s, 1_002, receive("small", 10)))),
        ["c"]
    );
    // Group g is whole in the dead-letter queue: its head comes out first, "b" waits behind it.
    let left = received(&run(&mut s, 1_002, receive("dead", 10)));
    assert_eq!(bodies(&left), ["too large"]);
    assert_eq!(s.queues().queue_info("dead").unwrap().stats.visible, 1);
}
