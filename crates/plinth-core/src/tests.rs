//! Property tests over the whole state machine: random sequences of KV, lease, lock, queue,
//! registry and config commands with random (and sometimes backwards) stamps, invariants after
//! every apply, a small model to compare with, and determinism of the snapshot bytes.

use crate::config;
use crate::config::ConfigCommand;
use crate::kv;
use crate::kv::{Compare, CompareOp, CompareTarget, KeySpan, KvCommand, RangeRequest, Txn, TxnOp};
use crate::lease;
use crate::lease::LeaseCommand;
use crate::lock;
use crate::lock::LockCommand;
use crate::queue;
use crate::queue::{NewMessage, QueueCommand, QueueConfig, Receipt};
use crate::registry;
use crate::registry::{RegistryCommand, Status};
use crate::schedule::{self, Misfire, Overlap, Policy, RunId, Spec};
use crate::{Command, FencingToken, LeaseId, Millis, Output, Request, Revision, State};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec!["a", "b", "b/1", "b/2", "c", "d/x"])
        .prop_map(|k| k.as_bytes().to_vec())
}

fn lease() -> impl Strategy<Value = Option<LeaseId>> {
    prop_oneof![3 => Just(None), 2 => (1u64..6).prop_map(|l| Some(LeaseId(l)))]
}

fn span() -> impl Strategy<Value = KeySpan> {
    prop_oneof![
        key().prop_map(KeySpan::Key),
        prop::sample::select(vec!["", "b", "b/", "d"])
            .prop_map(|p| KeySpan::Prefix(p.as_bytes().to_vec())),
        (key(), key()).prop_map(|(a, b)| KeySpan::Range {
            start: a.clone().min(b.clone()),
            end: a.max(b)
        }),
    ]
}

fn txn_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        (key(), any::<u8>(), lease()).prop_map(|(key, v, lease)| TxnOp::Put {
            key,
            value: vec![v],
            lease
        }),
        span().prop_map(|span| TxnOp::Delete { span }),
        span().prop_map(|span| TxnOp::Range(RangeRequest {
            span,
            limit: 0,
            keys_only: false,
            count_only: false
        })),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        4 => (key(), any::<u8>(), lease()).prop_map(|(key, v, lease)| Command::Kv(KvCommand::Put(kv::Put { key, value: vec![v], lease }))),
        2 => span().prop_map(|span| Command::Kv(KvCommand::Delete(kv::Delete { span }))),
        2 => (key(), 0u64..4, prop::collection::vec(txn_op(), 0..4), prop::collection::vec(txn_op(), 0..4)).prop_map(
            |(key, version, then, otherwise)| Command::Kv(KvCommand::Txn(Txn {
                compares: vec![Compare { key, op: CompareOp::Equal, target: CompareTarget::Version(version) }],
                then,
                otherwise,
            }))
        ),
        1 => (0u64..40).prop_map(|r| Command::Kv(KvCommand::Compact(kv::Compact { revision: Revision(r) }))),
        2 => (prop::option::of(1u64..6), 400u64..3_000).prop_map(|(id, ttl_ms)| Command::Lease(LeaseCommand::Grant(lease::Grant { id: id.map(LeaseId), ttl_ms }))),
        2 => (1u64..6).prop_map(|id| Command::Lease(LeaseCommand::KeepAlive(lease::KeepAlive { id: LeaseId(id) }))),
        1 => (1u64..6).prop_map(|id| Command::Lease(LeaseCommand::Revoke(lease::Revoke { id: LeaseId(id) }))),
        1 => Just(Command::Lease(LeaseCommand::Refresh(lease::Refresh))),
        3 => Just(Command::Tick),
        3 => (prop::sample::select(vec!["l1", "l2"]), 0u8..4, 400u64..3_000, prop_oneof![Just(0u64), 1u64..3_000], 1u32..3).prop_map(
            |(name, owner, ttl_ms, wait_ms, permits)| Command::Lock(LockCommand::Acquire(lock::Acquire {
                name: name.into(), owner: format!("o{owner}"), ttl_ms, wait_ms, permits, value: vec![owner], node: u64::from(owner % 2),
            }))
        ),
        2 => (prop::sample::select(vec!["l1", "l2"]), 1u64..120).prop_map(|(name, t)| Command::Lock(LockCommand::Release(lock::Release { name: name.into(), token: FencingToken(t) }))),
        1 => (prop::sample::select(vec!["l1", "l2"]), 1u64..120).prop_map(|(name, t)| Command::Lock(LockCommand::Renew(lock::Renew { name: name.into(), token: FencingToken(t), ttl_ms: None }))),
        1 => (prop::sample::select(vec!["l1", "l2"]), 1u64..120).prop_map(|(name, t)| Command::Lock(LockCommand::Abandon(lock::Abandon { name: name.into(), ticket: Revision(t) }))),
        1 => (0u64..2).prop_map(|node| Command::Lock(LockCommand::AbandonNode(lock::AbandonNode { node }))),
        1 => any::<bool>().prop_map(|fifo| Command::Queue(QueueCommand::Create(queue::Create { name: if fifo { "qf" } else { "q" }.into(), config: QueueConfig {
            visibility_ms: 1_000, max_receives: 2, dead_letter_queue: None, retention_ms: 60_000,
            max_body_bytes: 64, delay_ms: 0, dedup_window_ms: 2_000, fifo,
        } }))),
        2 => (any::<bool>(), 0u8..3, prop::option::of(0u8..3), 0u64..1_500).prop_map(|(fifo, g, dedup, delay)| Command::Queue(QueueCommand::Send(queue::Send {
            queue: if fifo { "qf" } else { "q" }.into(),
            messages: vec![NewMessage { body: vec![g], attributes: Default::default(), delay_ms: Some(delay), dedup_id: dedup.map(|d| d.to_string()), group: fifo.then(|| format!("g{g}")) }],
        }))),
        2 => (any::<bool>(), 1u32..3).prop_map(|(fifo, max)| Command::Queue(QueueCommand::Receive(queue::Receive { queue: if fifo { "qf" } else { "q" }.into(), max, visibility_ms: None }))),
        2 => (any::<bool>(), prop::collection::vec((0u64..20, 1u32..3), 0..3), 1u32..3).prop_map(|(fifo, ack, max)| Command::Queue(QueueCommand::AckAndReceive(queue::AckAndReceive {
            queue: if fifo { "qf" } else { "q" }.into(),
            ack: ack.into_iter().map(|(message_id, attempt)| Receipt { message_id, attempt }).collect(),
            max, visibility_ms: None,
        }))),
        1 => (any::<bool>(), 0u64..20, 1u32..3).prop_map(|(fifo, message_id, attempt)| Command::Queue(QueueCommand::Ack(queue::Ack { queue: if fifo { "qf" } else { "q" }.into(), receipt: Receipt { message_id, attempt } }))),
        1 => (any::<bool>(), 0u64..20, 1u32..3).prop_map(|(fifo, message_id, attempt)| Command::Queue(QueueCommand::Nack(queue::Nack { queue: if fifo { "qf" } else { "q" }.into(), receipt: Receipt { message_id, attempt }, delay_ms: 100, reason: "r".into() }))),
        1 => (prop::sample::select(vec!["l1", "l2"]), 1u64..120, key(), any::<u8>()).prop_map(|(lock, t, key, v)| Command::Kv(KvCommand::Txn(Txn {
            compares: vec![Compare { key: vec![], op: CompareOp::Equal, target: CompareTarget::Fence { lock: lock.into(), token: FencingToken(t) } }],
            then: vec![TxnOp::Put { key, value: vec![v], lease: None }],
            otherwise: vec![],
        }))),
        2 => (0u8..3, 400u64..3_000).prop_map(|(i, ttl_ms)| Command::Registry(RegistryCommand::Register(registry::Register {
            service: "svc".into(), instance: format!("i{i}"), address: "10.0.0.1:80".into(),
            metadata: Default::default(), ttl_ms, status: Status::Passing,
        }))),
        1 => (0u8..3, 1u64..12).prop_map(|(i, lease)| Command::Registry(RegistryCommand::Heartbeat(registry::Heartbeat {
            service: "svc".into(), instance: format!("i{i}"), lease: LeaseId(lease),
        }))),
        1 => (0u8..3, prop::option::of(1u64..12)).prop_map(|(i, lease)| Command::Registry(RegistryCommand::Deregister(registry::Deregister {
            service: "svc".into(), instance: format!("i{i}"), lease: lease.map(LeaseId),
        }))),
        1 => (prop::sample::select(vec!["a", "b"]), 0u8..9).prop_map(|(key, v)| Command::Config(ConfigCommand::Put(config::Put {
            service: "cfg".into(), set: [(key.to_owned(), v.to_string())].into(), delete: Default::default(), expected_version: None,
        }))),
        1 => (1u64..6).prop_map(|to_version| Command::Config(ConfigCommand::Rollback(config::Rollback {
            service: "cfg".into(), to_version, expected_version: None,
        }))),
        1 => (schedule_id(), 1u64..4, 1u64..4, 0usize..3, 0usize..3).prop_map(|(id, every, timeout, overlap, misfire)| schedule::Create {
            spec: if id == "s1" {
                Spec::Every { interval_ms: every * 1_000 }
            } else {
                Spec::Cron { expr: "*/2 * * * * *".into(), tz: "Europe/Paris".into() }
            },
            id: id.into(),
            job: b"{}".to_vec(),
            policy: Policy {
                max_attempts: 2,
                backoff_ms: 300,
                timeout_ms: timeout * 1_000,
                overlap: [Overlap::Allow, Overlap::Skip, Overlap::Queue][overlap],
                misfire: [Misfire::RunOnce, Misfire::RunAll, Misfire::Skip][misfire],
                misfire_grace_ms: 1_000,
            },
        }.into()),
        2 => (1u32..3, any::<bool>()).prop_map(|(max, only_s1)| schedule::Claim {
            worker: "w".into(), max, schedules: if only_s1 { vec!["s1".into()] } else { Vec::new() },
        }.into()),
        2 => (schedule_id(), 1u64..60, 1u64..200, 0u8..3).prop_map(|(id, fire, token, act)| {
            let run = RunId { schedule: id.into(), fire_time: Millis(fire * 1_000) };
            let token = FencingToken(token);
            match act {
                0 => schedule::Heartbeat { run, token }.into(),
                1 => schedule::Complete { run, token, result: b"ok".to_vec() }.into(),
                _ => schedule::Fail { run, token, error: "e".into() }.into(),
            }
        }),
        1 => (schedule_id(), 0u8..4).prop_map(|(id, act)| {
            let id = id.to_owned();
            match act {
                0 => schedule::Pause { id }.into(),
                1 => schedule::Resume { id }.into(),
                2 => schedule::Trigger { id }.into(),
                _ => schedule::Cancel { id }.into(),
            }
        }),
    ]
}

fn schedule_id() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["s1", "s2"])
}

/// A log: commands with stamps that mostly advance and sometimes step back (a new leader whose
/// clock is behind), which the state machine must absorb with `max`.
fn log() -> impl Strategy<Value = Vec<Request>> {
    prop::collection::vec((command(), -200i64..800), 1..120).prop_map(|steps| {
        let mut now = 1_000i64;
        steps
            .into_iter()
            .map(|(command, delta)| {
                now = (now + delta).max(0);
                Request {
                    stamp: Millis(now as u64),
                    command,
                }
            })
            .collect()
    })
}

/// Applies one command stamped `at_ms` and checks every invariant: the unit tests' one step.
pub(crate) fn run(state: &mut State, at_ms: u64, command: Command) -> crate::Applied {
    let applied = state.apply(&Request {
        stamp: Millis(at_ms),
        command,
    });
    state.check_invariants();
    applied
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn invariants_hold_after_every_apply_and_revisions_only_grow(log in log()) {
        let mut state = State::default();
        // The model: the value of every key, from the events alone.
        let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for request in &log {
            let before = state.revision();
            let applied = state.apply(request);
            state.check_invariants();
            prop_assert!(applied.revision >= before);
            prop_assert!(applied.revision.0 <= before.0 + 1, "one revision per command");
            if applied.result.is_err() {
                prop_assert_eq!(applied.revision, before, "a refused command takes no revision");
                prop_assert!(applied.events.is_empty());
            }
            for event in &applied.events {
                prop_assert_eq!(event.revision(), applied.revision);
                match event.kind {
                    crate::kv::EventKind::Put => { model.insert(event.kv.key.clone(), event.kv.value.clone()); }
                    crate::kv::EventKind::Delete => { model.remove(&event.kv.key); }
                }
            }
            if let Ok(Output::Tick { expired }) = &applied.result {
                for id in expired {
                    prop_assert!(state.kv().lease_keys(*id).is_empty());
                }
            }
            let all = state.kv().range(&RangeRequest { span: KeySpan::Prefix(vec![]), limit: 0, keys_only: false, count_only: false }).unwrap();
            let actual: BTreeMap<Vec<u8>, Vec<u8>> = all.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
            prop_assert_eq!(&actual, &model, "events replayed give the map");
        }
    }

    #[test]
    fn the_same_log_gives_byte_identical_snapshots(log in log()) {
        let mut one = State::default();
        let mut two = State::default();
        for request in &log {
            let a = one.apply(request);
            let b = two.apply(request);
            prop_assert_eq!(a, b);
        }
        prop_assert_eq!(one.to_snapshot(), two.to_snapshot());
    }

    #[test]
    fn snapshot_restore_snapshot_round_trips_and_the_restored_state_goes_on_alike(log in log(), split in 0usize..120) {
        let split = split.min(log.len());
        let mut original = State::default();
        for request in &log[..split] {
            original.apply(request);
        }
        let bytes = original.to_snapshot();
        let mut restored = State::from_snapshot(&bytes).unwrap();
        prop_assert_eq!(restored.to_snapshot(), bytes);
        for request in &log[split..] {
            prop_assert_eq!(original.apply(request), restored.apply(request));
        }
        restored.check_invariants();
        prop_assert_eq!(original.to_snapshot(), restored.to_snapshot());
    }

    #[test]
    fn history_replays_to_the_same_events_the_applies_emitted(log in log()) {
        let mut state = State::default();
        let mut emitted = Vec::new();
        for request in &log {
            emitted.extend(state.apply(request).events);
        }
        let compacted = state.kv().compacted_revision();
        let expected: Vec<_> = emitted.into_iter().filter(|e| e.revision() > compacted).collect();
        prop_assert_eq!(state.kv().events_after(compacted, usize::MAX).unwrap(), expected);
    }
}

#[test]
fn a_snapshot_with_another_header_is_refused() {
    assert!(State::from_snapshot(b"nope").is_err());
    let mut bytes = State::default().to_snapshot();
    bytes[4] = 9;
    assert_eq!(
        State::from_snapshot(&bytes).unwrap_err().to_string(),
        "snapshot format version 9 is not supported; this build reads version 3"
    );
}

/// A state whose encoding spans many of `write_snapshot`'s chunks, with values both smaller and
/// larger than a chunk.
fn a_large_state() -> State {
    let mut state = State::default();
    for i in 0..300u32 {
        let value = vec![i as u8; if i % 50 == 0 { 100_000 } else { 700 }];
        let put = Command::Kv(KvCommand::Put(kv::Put {
            key: format!("k{i:05}").into_bytes(),
            value,
            lease: None,
        }));
        state.apply(&Request {
            stamp: Millis(1),
            command: put,
        });
    }
    state
}

#[test]
fn a_snapshot_written_in_chunks_is_the_snapshot() {
    let state = a_large_state();
    let mut chunks = Vec::new();
    let written: Result<(), ()> = state.write_snapshot(|chunk| {
        chunks.push(chunk.to_vec());
        Ok(())
    });
    written.unwrap();
    assert!(chunks.len() > 4, "{} chunks", chunks.len());
    assert_eq!(chunks.concat(), state.to_snapshot());
    assert_eq!(State::from_snapshot(&chunks.concat()).unwrap(), state);
}

#[test]
fn a_snapshot_sink_that_fails_ends_the_encoding_with_its_own_error() {
    let state = a_large_state();
    let mut taken = 0;
    let written = state.write_snapshot(|chunk| {
        if taken > 100_000 {
            return Err(format!("disk full after {taken} bytes"));
        }
        taken += chunk.len();
        Ok(())
    });
    let error = written.unwrap_err();
    assert!(error.starts_with("disk full after"), "{error}");
    assert!(taken < state.to_snapshot().len());
}

/// One command of every kind, each field set, as the log holds them. The log and its entries
/// outlive any build: a command must encode the same bytes in every version that can read it.
fn one_of_each_command() -> Vec<Command> {
    use crate::schedule::ScheduleCommand;
    let run = RunId {
        schedule: "s".into(),
        fire_time: Millis(60_000),
    };
    vec![
        Command::Tick,
        Command::Kv(KvCommand::Put(kv::Put {
            key: b"k".to_vec(),
            value: vec![0, 255],
            lease: Some(LeaseId(3)),
        })),
        Command::Kv(KvCommand::Delete(kv::Delete {
            span: KeySpan::Range {
                start: b"a".to_vec(),
                end: b"b".to_vec(),
            },
        })),
        Command::Kv(KvCommand::Txn(Txn {
            compares: vec![Compare {
                key: Vec::new(),
                op: CompareOp::Equal,
                target: CompareTarget::Fence {
                    lock: "l".into(),
                    token: FencingToken(9),
                },
            }],
            then: vec![TxnOp::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                lease: None,
            }],
            otherwise: vec![TxnOp::Range(RangeRequest {
                span: KeySpan::Prefix(b"p".to_vec()),
                limit: 5,
                keys_only: true,
                count_only: false,
            })],
        })),
        Command::Kv(KvCommand::Compact(kv::Compact {
            revision: Revision(7),
        })),
        Command::Lease(LeaseCommand::Grant(lease::Grant {
            id: Some(LeaseId(4)),
            ttl_ms: 10_000,
        })),
        Command::Lease(LeaseCommand::KeepAlive(lease::KeepAlive { id: LeaseId(4) })),
        Command::Lease(LeaseCommand::Revoke(lease::Revoke { id: LeaseId(4) })),
        Command::Lease(LeaseCommand::Refresh(lease::Refresh)),
        Command::Lock(LockCommand::Acquire(lock::Acquire {
            name: "l".into(),
            owner: "o".into(),
            ttl_ms: 5_000,
            wait_ms: 1_000,
            permits: 2,
            value: b"addr".to_vec(),
            node: 3,
        })),
        Command::Lock(LockCommand::Renew(lock::Renew {
            name: "l".into(),
            token: FencingToken(11),
            ttl_ms: Some(6_000),
        })),
        Command::Lock(LockCommand::Release(lock::Release {
            name: "l".into(),
            token: FencingToken(11),
        })),
        Command::Lock(LockCommand::Proclaim(lock::Proclaim {
            name: "l".into(),
            token: FencingToken(11),
            value: b"v2".to_vec(),
        })),
        Command::Lock(LockCommand::Abandon(lock::Abandon {
            name: "l".into(),
            ticket: Revision(12),
        })),
        Command::Lock(LockCommand::AbandonNode(lock::AbandonNode { node: 2 })),
        Command::Queue(QueueCommand::Create(queue::Create {
            name: "q".into(),
            config: QueueConfig {
                visibility_ms: 1_000,
                max_receives: 3,
                dead_letter_queue: Some("dlq".into()),
                retention_ms: 60_000,
                max_body_bytes: 1_024,
                delay_ms: 5,
                dedup_window_ms: 60_000,
                fifo: true,
            },
        })),
        Command::Queue(QueueCommand::Delete(queue::Delete { name: "q".into() })),
        Command::Queue(QueueCommand::Send(queue::Send {
            queue: "q".into(),
            messages: vec![NewMessage {
                body: b"body".to_vec(),
                attributes: BTreeMap::from([("a".to_owned(), "1".to_owned())]),
                delay_ms: Some(10),
                dedup_id: Some("d".into()),
                group: Some("g".into()),
            }],
        })),
        Command::Queue(QueueCommand::Receive(queue::Receive {
            queue: "q".into(),
            max: 10,
            visibility_ms: Some(2_000),
        })),
        Command::Queue(QueueCommand::Ack(queue::Ack {
            queue: "q".into(),
            receipt: Receipt {
                message_id: 1,
                attempt: 2,
            },
        })),
        Command::Queue(QueueCommand::Nack(queue::Nack {
            queue: "q".into(),
            receipt: Receipt {
                message_id: 1,
                attempt: 2,
            },
            delay_ms: 100,
            reason: "r".into(),
        })),
        Command::Queue(QueueCommand::ChangeVisibility(queue::ChangeVisibility {
            queue: "q".into(),
            receipt: Receipt {
                message_id: 1,
                attempt: 2,
            },
            visibility_ms: 3_000,
        })),
        Command::Queue(QueueCommand::Redrive(queue::Redrive {
            dlq: "dlq".into(),
            to: Some("q".into()),
            max: 5,
        })),
        Command::Queue(QueueCommand::Purge(queue::Purge { queue: "q".into() })),
        Command::Queue(QueueCommand::AckAndReceive(queue::AckAndReceive {
            queue: "q".into(),
            ack: vec![Receipt {
                message_id: 1,
                attempt: 2,
            }],
            max: 4,
            visibility_ms: None,
        })),
        Command::Schedule(ScheduleCommand::Create(schedule::Create {
            id: "s".into(),
            spec: Spec::Cron {
                expr: "0 6 * * MON".into(),
                tz: "Europe/Paris".into(),
            },
            job: b"{}".to_vec(),
            policy: Policy {
                max_attempts: 3,
                backoff_ms: 1_000,
                timeout_ms: 30_000,
                overlap: Overlap::Queue,
                misfire: Misfire::RunAll,
                misfire_grace_ms: 60_000,
            },
        })),
        Command::Schedule(ScheduleCommand::Cancel(schedule::Cancel { id: "s".into() })),
        Command::Schedule(ScheduleCommand::Pause(schedule::Pause { id: "s".into() })),
        Command::Schedule(ScheduleCommand::Resume(schedule::Resume { id: "s".into() })),
        Command::Schedule(ScheduleCommand::Trigger(schedule::Trigger {
            id: "s".into(),
        })),
        Command::Schedule(ScheduleCommand::Claim(schedule::Claim {
            worker: "w".into(),
            max: 2,
            schedules: vec!["s".into()],
        })),
        Command::Schedule(ScheduleCommand::Heartbeat(schedule::Heartbeat {
            run: run.clone(),
            token: FencingToken(5),
        })),
        Command::Schedule(ScheduleCommand::Complete(schedule::Complete {
            run: run.clone(),
            token: FencingToken(5),
            result: b"ok".to_vec(),
        })),
        Command::Schedule(ScheduleCommand::Fail(schedule::Fail {
            run,
            token: FencingToken(5),
            error: "e".into(),
        })),
        Command::Config(ConfigCommand::Put(config::Put {
            service: "svc".into(),
            set: BTreeMap::from([("k".to_owned(), "1".to_owned())]),
            delete: ["old".to_owned()].into(),
            expected_version: Some(2),
        })),
        Command::Config(ConfigCommand::Rollback(config::Rollback {
            service: "svc".into(),
            to_version: 1,
            expected_version: None,
        })),
        Command::Config(ConfigCommand::SetSchema(config::SetSchema {
            service: "svc".into(),
            schema: Some("{}".into()),
        })),
        Command::Config(ConfigCommand::SetRetention(config::SetRetention {
            service: "svc".into(),
            versions_kept: 10,
        })),
        Command::Registry(RegistryCommand::Register(registry::Register {
            service: "svc".into(),
            instance: "i".into(),
            address: "10.0.0.1:80".into(),
            metadata: BTreeMap::from([("zone".to_owned(), "a".to_owned())]),
            ttl_ms: 10_000,
            status: Status::Warning,
        })),
        Command::Registry(RegistryCommand::Heartbeat(registry::Heartbeat {
            service: "svc".into(),
            instance: "i".into(),
            lease: LeaseId(8),
        })),
        Command::Registry(RegistryCommand::SetStatus(registry::SetStatus {
            service: "svc".into(),
            instance: "i".into(),
            lease: Some(LeaseId(8)),
            status: Status::Draining,
        })),
        Command::Registry(RegistryCommand::Deregister(registry::Deregister {
            service: "svc".into(),
            instance: "i".into(),
            lease: None,
        })),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn every_command_encodes_the_bytes_the_log_has_always_held() {
    let encoded: Vec<String> = one_of_each_command()
        .iter()
        .map(|c| hex(&postcard::to_stdvec(c).expect("encodes")))
        .collect();
    assert_eq!(
        encoded, GOLDEN,
        "a command's encoding changed: old logs would misread"
    );
    for (command, bytes) in one_of_each_command().iter().zip(GOLDEN) {
        let decoded: Command = postcard::from_bytes(
            &(0..bytes.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&bytes[i..i + 2], 16).expect("hex"))
                .collect::<Vec<u8>>(),
        )
        .expect("decodes");
        assert_eq!(&decoded, command);
    }
}

/// The encodings of `one_of_each_command()`, taken from the build before commands became one
/// type each (issue 21): that change must not move a byte.
const GOLDEN: &[&str] = &[
    "00",
    "0100016b0200ff0103",
    "01010201610162",
    "010201000005016c090100016b0176000102010170050100",
    "010307",
    "02000104904e",
    "020104",
    "020204",
    "0203",
    "0300016c016f8827e80702046164647203",
    "0301016c0b01f02e",
    "0302016c0b",
    "0303016c0b027632",
    "0304016c0c",
    "030502",
    "04000171e807030103646c71e0d403800805e0d40301",
    "04010171",
    "040201710104626f64790101610131010a010164010167",
    "040301710a01d00f",
    "040401710102",
    "040501710102640172",
    "040601710102b817",
    "040703646c7101017105",
    "04080171",
    "040901710101020400",
    "05000173030b302036202a202a204d4f4e0c4575726f70652f5061726973027b7d03e807b0ea010201e0d403",
    "05010173",
    "05020173",
    "05030173",
    "05040173",
    "0505017702010173",
    "05060173e0d40305",
    "05070173e0d40305026f6b",
    "05080173e0d403050165",
    "06000373766301016b013101036f6c640102",
    "0601037376630100",
    "06020373766301027b7d",
    "0603037376630a",
    "07000373766301690b31302e302e302e313a383001047a6f6e650161904e01",
    "070103737663016908",
    "0702037376630169010802",
    "070303737663016900",
];

#[test]
fn a_new_leader_abandons_waits_no_call_waits_for_and_refreshes_the_leases() {
    let mut state = State::default();
    let apply = |state: &mut State, command: Command| {
        let applied = state.apply(&Request {
            stamp: Millis(1_000),
            command,
        });
        applied.result.expect("applies");
    };
    assert!(
        state.leadership_duties(1, true).is_empty(),
        "an idle state owes nothing"
    );
    for (owner, node) in [("holder", 1), ("waits-on-1", 1), ("waits-on-2", 2)] {
        let acquire = crate::lock::Acquire {
            name: "l".into(),
            owner: owner.into(),
            ttl_ms: 10_000,
            wait_ms: 60_000,
            permits: 1,
            value: Vec::new(),
            node,
        };
        apply(&mut state, acquire.into());
    }
    let abandon = |node| Command::from(crate::lock::AbandonNode { node });
    let refresh = Command::from(crate::lease::Refresh);
    // Its own process's waits only the first time this process leads: later, they are calls it
    // is still serving.
    assert_eq!(
        state.leadership_duties(1, true),
        vec![abandon(1), abandon(2), refresh.clone()]
    );
    assert_eq!(
        state.leadership_duties(1, false),
        vec![abandon(2), refresh.clone()]
    );
    assert_eq!(
        state.leadership_duties(3, false),
        vec![abandon(1), abandon(2), refresh]
    );
}

/// What each apply woke: the waiters of the resource it changed, and nobody else's.
#[test]
fn an_apply_wakes_the_waiters_of_what_it_changed_and_no_others() {
    use crate::Wake;
    let mut state = State::default();
    let at = std::cell::Cell::new(1_000);
    let woken = |state: &mut State, command: Command| {
        at.set(at.get() + 10);
        let applied = run(state, at.get(), command);
        assert!(applied.result.is_ok(), "{:?}", applied.result);
        applied.woken
    };
    let queue = |name: &str| Wake::Queue(name.into());
    let config = |dlq: Option<&str>| QueueConfig {
        visibility_ms: 1_000,
        max_receives: 1,
        dead_letter_queue: dlq.map(Into::into),
        retention_ms: 60_000,
        max_body_bytes: 1_024,
        delay_ms: 0,
        dedup_window_ms: 60_000,
        fifo: false,
    };
    let create = |name: &str, dlq| {
        Command::from(crate::queue::Create {
            name: name.into(),
            config: config(dlq),
        })
    };
    assert!(woken(&mut state, create("dlq", None)).is_empty());
    assert!(woken(&mut state, create("q", Some("dlq"))).is_empty());
    let send = crate::queue::Send {
        queue: "q".into(),
        messages: vec![NewMessage {
            body: b"m".to_vec(),
            attributes: BTreeMap::new(),
            delay_ms: None,
            dedup_id: None,
            group: None,
        }],
    };
    assert_eq!(woken(&mut state, send.into()), [queue("dlq"), queue("q")]);
    let receive = crate::queue::Receive {
        queue: "q".into(),
        max: 1,
        visibility_ms: None,
    };
    assert!(
        woken(&mut state, receive.into()).is_empty(),
        "a receive frees nothing"
    );
    // The visibility runs out: the message goes to the dead-letter queue, whose waiters wake.
    at.set(at.get() + 5_000);
    assert!(woken(&mut state, Command::Tick).contains(&queue("dlq")));
    // A redrive back to the source wakes its waiters, and the dead-letter queue's (its head
    // moved).
    let redrive = crate::queue::Redrive {
        dlq: "dlq".into(),
        to: None,
        max: 10,
    };
    let woke = woken(&mut state, redrive.into());
    assert!(
        woke.contains(&queue("q")) && woke.contains(&queue("dlq")),
        "{woke:?}"
    );

    // A put wakes nobody: KV events reach watchers another way.
    let put = crate::kv::Put {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        lease: None,
    };
    assert!(woken(&mut state, put.into()).is_empty());

    let acquire = |owner: &str, wait_ms| {
        Command::from(crate::lock::Acquire {
            name: "l".into(),
            owner: owner.into(),
            ttl_ms: 10_000,
            wait_ms,
            permits: 1,
            value: Vec::new(),
            node: 1,
        })
    };
    assert_eq!(woken(&mut state, acquire("a", 0)), [Wake::Lock("l".into())]);
    assert!(
        woken(&mut state, acquire("b", 60_000)).is_empty(),
        "a queued acquire grants nothing"
    );
    let token = state
        .locks()
        .get("l", state.leases(), state.clock())
        .holders[0]
        .token;
    let release = crate::lock::Release {
        name: "l".into(),
        token,
    };
    assert_eq!(woken(&mut state, release.into()), [Wake::Lock("l".into())]);

    let put = crate::config::Put {
        service: "svc".into(),
        set: BTreeMap::from([("k".to_owned(), "1".to_owned())]),
        delete: Default::default(),
        expected_version: None,
    };
    assert_eq!(woken(&mut state, put.into()), [Wake::Config("svc".into())]);
    let register = crate::registry::Register {
        service: "svc".into(),
        instance: "i".into(),
        address: "10.0.0.1:80".into(),
        metadata: BTreeMap::new(),
        ttl_ms: 10_000,
        status: Status::Passing,
    };
    assert_eq!(
        woken(&mut state, register.into()),
        [Wake::Registry("svc".into())]
    );
    assert_eq!(woken(&mut state, Command::Tick), [Wake::Schedules]);
}
