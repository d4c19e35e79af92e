//! KV unit tests: each is a short script of commands and the answers and state it must give.

use crate::kv;
use crate::kv::{
    Compare, CompareOp, CompareTarget, EventKind, KeySpan, KvCommand, KvError, KvOutput,
    RangeRequest, Txn, TxnOp,
};
use crate::lease;
use crate::lease::{LeaseCommand, LeaseOutput};
use crate::limits::{HISTORY_RETENTION_MS, KEY_BYTES_MAX, VALUE_BYTES_MAX};
use crate::tests::run;
use crate::{Command, LeaseId, Millis, Output, Revision, State, StateError};

fn put(key: &str, value: &str) -> Command {
    Command::Kv(KvCommand::Put(kv::Put {
        key: key.into(),
        value: value.into(),
        lease: None,
    }))
}

fn range_all(state: &State) -> Vec<(String, String)> {
    let request = RangeRequest {
        span: KeySpan::Prefix(vec![]),
        limit: 0,
        keys_only: false,
        count_only: false,
    };
    let out = state.kv().range(&request).unwrap();
    out.kvs
        .into_iter()
        .map(|kv| {
            (
                String::from_utf8(kv.key).unwrap(),
                String::from_utf8(kv.value).unwrap(),
            )
        })
        .collect()
}

fn grant(state: &mut State, at_ms: u64, ttl_ms: u64) -> LeaseId {
    match run(
        state,
        at_ms,
        Command::Lease(LeaseCommand::Grant(lease::Grant { id: None, ttl_ms })),
    )
    .result
    {
        Ok(Output::Lease(LeaseOutput::Granted(info))) => info.id,
        other => panic!("grant answered {other:?}"),
    }
}

#[test]
fn each_put_gets_the_next_revision_and_versions_count_puts() {
    let mut s = State::default();
    assert_eq!(run(&mut s, 1, put("a", "1")).revision, Revision(1));
    assert_eq!(run(&mut s, 2, put("b", "1")).revision, Revision(2));
    assert_eq!(run(&mut s, 3, put("a", "2")).revision, Revision(3));
    let a = s.kv().get(b"a").unwrap();
    assert_eq!(
        (a.create_revision, a.mod_revision, a.version),
        (Revision(1), Revision(3), 2)
    );
    assert_eq!(
        range_all(&s),
        vec![("a".into(), "2".into()), ("b".into(), "1".into())]
    );
}

#[test]
fn refused_commands_change_nothing_and_take_no_revision() {
    let mut s = State::default();
    run(&mut s, 1, put("a", "1"));
    let long_key = Command::Kv(KvCommand::Put(kv::Put {
        key: vec![b'k'; KEY_BYTES_MAX + 1],
        value: vec![],
        lease: None,
    }));
    let applied = run(&mut s, 2, long_key);
    assert_eq!(applied.revision, Revision(1));
    let err = applied.result.unwrap_err();
    assert_eq!(err.field(), "key");
    assert_eq!(
        err.to_string(),
        format!(
            "key is {} bytes; the limit is {KEY_BYTES_MAX}",
            KEY_BYTES_MAX + 1
        )
    );
    let big = Command::Kv(KvCommand::Put(kv::Put {
        key: b"v".to_vec(),
        value: vec![0; VALUE_BYTES_MAX + 1],
        lease: None,
    }));
    assert!(matches!(
        run(&mut s, 3, big).result,
        Err(StateError::Kv(KvError::ValueTooLarge { .. }))
    ));
    let unknown = Command::Kv(KvCommand::Put(kv::Put {
        key: b"x".to_vec(),
        value: vec![],
        lease: Some(LeaseId(42)),
    }));
    let err = run(&mut s, 4, unknown).result.unwrap_err();
    assert_eq!(err.code(), crate::ErrorCode::NotFound);
    assert_eq!(s.revision(), Revision(1));
    assert_eq!(range_all(&s), vec![("a".into(), "1".into())]);
}

#[test]
fn txn_applies_one_branch_atomically_in_one_revision() {
    let mut s = State::default();
    run(&mut s, 1, put("a", "1"));
    let txn = |expected: u64| {
        Command::Kv(KvCommand::Txn(Txn {
            compares: vec![Compare {
                key: b"a".to_vec(),
                op: CompareOp::Equal,
                target: CompareTarget::Version(expected),
            }],
            then: vec![
                TxnOp::Put {
                    key: b"b".to_vec(),
                    value: b"then".to_vec(),
                    lease: None,
                },
                TxnOp::Put {
                    key: b"c".to_vec(),
                    value: b"then".to_vec(),
                    lease: None,
                },
            ],
            otherwise: vec![TxnOp::Delete {
                span: KeySpan::Key(b"a".to_vec()),
            }],
        }))
    };
    let applied = run(&mut s, 2, txn(1));
    assert_eq!(applied.revision, Revision(2));
    assert!(matches!(
        applied.result,
        Ok(Output::Kv(KvOutput::Txn(kv::TxnOutput {
            succeeded: true,
            ..
        })))
    ));
    assert_eq!(applied.events.len(), 2);
    assert!(applied.events.iter().all(|e| e.revision() == Revision(2)));
    let applied = run(&mut s, 3, txn(7));
    assert!(matches!(
        applied.result,
        Ok(Output::Kv(KvOutput::Txn(kv::TxnOutput {
            succeeded: false,
            ..
        })))
    ));
    assert_eq!(
        range_all(&s),
        vec![("b".into(), "then".into()), ("c".into(), "then".into())]
    );
}

#[test]
fn txn_with_a_dead_lease_in_its_branch_applies_nothing() {
    let mut s = State::default();
    let txn = Command::Kv(KvCommand::Txn(Txn {
        compares: vec![],
        then: vec![
            TxnOp::Put {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                lease: None,
            },
            TxnOp::Put {
                key: b"b".to_vec(),
                value: b"1".to_vec(),
                lease: Some(LeaseId(9)),
            },
        ],
        otherwise: vec![],
    }));
    assert!(run(&mut s, 1, txn).result.is_err());
    assert!(s.kv().is_empty());
    assert_eq!(s.revision(), Revision(0));
}

#[test]
fn compares_on_a_missing_key_see_zero_and_no_value() {
    let mut s = State::default();
    let create_if_absent = |value: &str| {
        Command::Kv(KvCommand::Txn(Txn {
            compares: vec![Compare {
                key: b"k".to_vec(),
                op: CompareOp::Equal,
                target: CompareTarget::CreateRevision(Revision(0)),
            }],
            then: vec![TxnOp::Put {
                key: b"k".to_vec(),
                value: value.into(),
                lease: None,
            }],
            otherwise: vec![],
        }))
    };
    assert!(matches!(
        run(&mut s, 1, create_if_absent("first")).result,
        Ok(Output::Kv(KvOutput::Txn(kv::TxnOutput {
            succeeded: true,
            ..
        })))
    ));
    assert!(matches!(
        run(&mut s, 2, create_if_absent("second")).result,
        Ok(Output::Kv(KvOutput::Txn(kv::TxnOutput {
            succeeded: false,
            ..
        })))
    ));
    assert_eq!(s.kv().get(b"k").unwrap().value, b"first");
    let value_on_missing = Command::Kv(KvCommand::Txn(Txn {
        compares: vec![Compare {
            key: b"nope".to_vec(),
            op: CompareOp::NotEqual,
            target: CompareTarget::Value(b"x".to_vec()),
        }],
        then: vec![TxnOp::Put {
            key: b"z".to_vec(),
            value: vec![],
            lease: None,
        }],
        otherwise: vec![],
    }));
    assert!(matches!(
        run(&mut s, 3, value_on_missing).result,
        Ok(Output::Kv(KvOutput::Txn(kv::TxnOutput {
            succeeded: false,
            ..
        })))
    ));
}

#[test]
fn delete_covers_a_key_a_prefix_or_a_half_open_range() {
    let mut s = State::default();
    for k in ["a", "b/1", "b/2", "c", "d"] {
        run(&mut s, 1, put(k, "v"));
    }
    let del = |span| Command::Kv(KvCommand::Delete(kv::Delete { span }));
    run(&mut s, 2, del(KeySpan::Prefix(b"b/".to_vec())));
    assert_eq!(s.kv().len(), 3);
    run(
        &mut s,
        3,
        del(KeySpan::Range {
            start: b"c".to_vec(),
            end: b"d".to_vec(),
        }),
    );
    assert_eq!(
        range_all(&s)
            .into_iter()
            .map(|(k, _)| k)
            .collect::<Vec<_>>(),
        vec!["a", "d"]
    );
    let applied = run(&mut s, 4, del(KeySpan::Key(b"zzz".to_vec())));
    assert!(applied.events.is_empty());
    assert_eq!(
        applied.revision,
        s.revision(),
        "a delete of nothing takes no revision"
    );
}

#[test]
fn range_limit_reports_more_and_the_full_count() {
    let mut s = State::default();
    for i in 0..5 {
        run(&mut s, 1, put(&format!("k{i}"), "v"));
    }
    let out = s
        .kv()
        .range(&RangeRequest {
            span: KeySpan::Prefix(b"k".to_vec()),
            limit: 2,
            keys_only: true,
            count_only: false,
        })
        .unwrap();
    assert_eq!((out.kvs.len(), out.more, out.count), (2, true, 5));
    assert!(out.kvs.iter().all(|kv| kv.value.is_empty()));
    let err = s
        .kv()
        .range(&RangeRequest {
            span: KeySpan::Prefix(vec![]),
            limit: 1_000_000,
            keys_only: false,
            count_only: false,
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "limit is 1000000; the maximum is 10000");
}

#[test]
fn lease_expiry_deletes_attached_keys_in_one_revision() {
    let mut s = State::default();
    let lease = grant(&mut s, 1_000, 1_000);
    for k in ["x", "y"] {
        let c = Command::Kv(KvCommand::Put(kv::Put {
            key: k.into(),
            value: b"v".to_vec(),
            lease: Some(lease),
        }));
        run(&mut s, 1_100, c).result.unwrap();
    }
    run(&mut s, 1_200, put("z", "stays"));
    let early = run(&mut s, 1_999, Command::Tick);
    assert!(early.events.is_empty(), "not due yet");
    let before = s.revision();
    let due = run(&mut s, 2_000, Command::Tick);
    assert_eq!(
        due.result,
        Ok(Output::Tick {
            expired: vec![lease]
        })
    );
    assert_eq!(due.revision, Revision(before.0 + 1));
    assert_eq!(due.events.len(), 2);
    assert!(
        due.events
            .iter()
            .all(|e| e.kind == EventKind::Delete && e.revision() == due.revision)
    );
    assert_eq!(range_all(&s), vec![("z".into(), "stays".into())]);
}

#[test]
fn revoke_deletes_attached_keys_and_a_put_can_move_a_key_off_a_lease() {
    let mut s = State::default();
    let lease = grant(&mut s, 0, 10_000);
    let with = |k: &str, l| {
        Command::Kv(KvCommand::Put(kv::Put {
            key: k.into(),
            value: b"v".to_vec(),
            lease: l,
        }))
    };
    run(&mut s, 1, with("a", Some(lease)));
    run(&mut s, 1, with("b", Some(lease)));
    run(&mut s, 2, with("b", None));
    assert_eq!(s.kv().lease_keys(lease), vec![b"a".to_vec()]);
    let revoked = run(
        &mut s,
        3,
        Command::Lease(LeaseCommand::Revoke(lease::Revoke { id: lease })),
    );
    assert_eq!(revoked.events.len(), 1);
    assert_eq!(range_all(&s), vec![("b".into(), "v".into())]);
    assert!(
        run(
            &mut s,
            4,
            Command::Lease(LeaseCommand::KeepAlive(lease::KeepAlive { id: lease }))
        )
        .result
        .is_err()
    );
}

#[test]
fn history_serves_events_after_a_revision_until_compacted() {
    let mut s = State::default();
    for i in 0..10 {
        run(&mut s, 1, put("k", &i.to_string()));
    }
    let events = s.kv().events_after(Revision(7), 100).unwrap();
    assert_eq!(
        events.iter().map(|e| e.revision().0).collect::<Vec<_>>(),
        vec![8, 9, 10]
    );
    assert_eq!(s.kv().events_after(Revision(0), 100).unwrap().len(), 10);
    run(
        &mut s,
        2,
        Command::Kv(KvCommand::Compact(kv::Compact {
            revision: Revision(5),
        })),
    );
    assert_eq!(
        s.kv().events_after(Revision(3), 100).unwrap_err(),
        KvError::Compacted {
            revision: Revision(3),
            compacted_revision: Revision(5)
        }
    );
    assert_eq!(s.kv().events_after(Revision(5), 100).unwrap().len(), 5);
    let future = run(
        &mut s,
        3,
        Command::Kv(KvCommand::Compact(kv::Compact {
            revision: Revision(99),
        })),
    );
    assert!(matches!(
        future.result,
        Err(StateError::Kv(KvError::FutureRevision { .. }))
    ));
}

#[test]
fn history_older_than_the_retention_is_compacted_automatically() {
    let mut s = State::default();
    run(&mut s, 1_000, put("old", "1"));
    run(&mut s, 2_000, put("newer", "1"));
    run(&mut s, 2_000 + HISTORY_RETENTION_MS, put("now", "1"));
    assert_eq!(s.kv().compacted_revision(), Revision(1));
    assert_eq!(s.kv().events_after(Revision(1), 10).unwrap().len(), 2);
}

#[test]
fn the_clock_never_goes_backwards() {
    let mut s = State::default();
    run(&mut s, 5_000, Command::Tick);
    run(&mut s, 4_000, Command::Tick);
    assert_eq!(s.clock(), Millis(5_000));
}

/// A range of large values answered them all: 10,000 values of 1 MiB made one reply of 10 GB.
/// A reply now stops at `RANGE_BYTES_MAX` of keys and values, with `more`, and always holds at
/// least one key.
#[test]
fn a_range_of_large_values_stops_at_its_byte_limit_and_says_more() {
    use crate::limits::RANGE_BYTES_MAX;
    let mut s = State::default();
    for i in 0..10 {
        let put = crate::kv::Put {
            key: format!("big/{i}").into_bytes(),
            value: vec![b'v'; VALUE_BYTES_MAX],
            lease: None,
        };
        assert!(run(&mut s, 0, put.into()).result.is_ok());
    }
    let range = |keys_only| RangeRequest {
        span: KeySpan::Prefix(b"big/".to_vec()),
        limit: 0,
        keys_only,
        count_only: false,
    };
    let out = s.kv().range(&range(false)).unwrap();
    let bytes: usize = out.kvs.iter().map(|kv| kv.key.len() + kv.value.len()).sum();
    assert!(bytes <= RANGE_BYTES_MAX, "{bytes}");
    assert_eq!(out.kvs.len(), RANGE_BYTES_MAX / (VALUE_BYTES_MAX + 5));
    assert!(out.more);
    assert_eq!(out.count, 10);
    // Keys alone are small: all of them.
    let out = s.kv().range(&range(true)).unwrap();
    assert_eq!((out.kvs.len(), out.more), (10, false));
}
