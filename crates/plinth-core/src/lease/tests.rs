//! Lease unit tests: grant, keep-alive, expiry, refresh and the ttl limits.

use crate::lease;
use crate::lease::{LeaseCommand, LeaseError, LeaseOutput, LeaseState};
use crate::limits::{LEASE_TTL_MS_MAX, LEASE_TTL_MS_MIN};
use crate::{LeaseId, Millis};

fn apply(s: &mut LeaseState, at: u64, c: LeaseCommand) -> Result<LeaseOutput, LeaseError> {
    let out = s.apply(&c, Millis(at));
    s.check_invariants();
    out
}

#[test]
fn ttl_outside_the_limits_is_refused_with_the_limit() {
    let mut s = LeaseState::default();
    let zero = apply(
        &mut s,
        0,
        LeaseCommand::Grant(lease::Grant {
            id: None,
            ttl_ms: 0,
        }),
    )
    .unwrap_err();
    assert_eq!(
        zero.to_string(),
        format!("ttl is 0ms; the minimum is {LEASE_TTL_MS_MIN}ms")
    );
    let huge = apply(
        &mut s,
        0,
        LeaseCommand::Grant(lease::Grant {
            id: None,
            ttl_ms: u64::MAX,
        }),
    )
    .unwrap_err();
    assert_eq!(
        huge.to_string(),
        format!("ttl is {}ms; the maximum is {LEASE_TTL_MS_MAX}ms", u64::MAX)
    );
    assert!(s.is_empty());
}

#[test]
fn ids_are_never_reused_and_chosen_ids_must_be_free() {
    let mut s = LeaseState::default();
    let a = granted(apply(
        &mut s,
        0,
        LeaseCommand::Grant(lease::Grant {
            id: None,
            ttl_ms: 1_000,
        }),
    ));
    apply(&mut s, 0, LeaseCommand::Revoke(lease::Revoke { id: a })).unwrap();
    let b = granted(apply(
        &mut s,
        0,
        LeaseCommand::Grant(lease::Grant {
            id: None,
            ttl_ms: 1_000,
        }),
    ));
    assert!(b > a);
    let chosen = granted(apply(
        &mut s,
        0,
        LeaseCommand::Grant(lease::Grant {
            id: Some(LeaseId(100)),
            ttl_ms: 1_000,
        }),
    ));
    assert_eq!(chosen, LeaseId(100));
    assert_eq!(
        apply(
            &mut s,
            0,
            LeaseCommand::Grant(lease::Grant {
                id: Some(LeaseId(100)),
                ttl_ms: 1_000
            })
        ),
        Err(LeaseError::AlreadyExists { id: LeaseId(100) })
    );
    assert_eq!(
        granted(apply(
            &mut s,
            0,
            LeaseCommand::Grant(lease::Grant {
                id: None,
                ttl_ms: 1_000
            })
        )),
        LeaseId(101)
    );
}

#[test]
fn keep_alive_moves_the_deadline_and_expiry_follows_it() {
    let mut s = LeaseState::default();
    let id = granted(apply(
        &mut s,
        1_000,
        LeaseCommand::Grant(lease::Grant {
            id: None,
            ttl_ms: 1_000,
        }),
    ));
    apply(
        &mut s,
        1_800,
        LeaseCommand::KeepAlive(lease::KeepAlive { id }),
    )
    .unwrap();
    assert!(s.expire(Millis(2_500)).is_empty());
    assert_eq!(s.expire(Millis(2_800)), vec![id]);
    assert_eq!(
        apply(
            &mut s,
            2_900,
            LeaseCommand::KeepAlive(lease::KeepAlive { id })
        ),
        Err(LeaseError::NotFound { id })
    );
}

#[test]
fn refresh_never_shortens_and_extends_to_a_full_ttl() {
    let mut s = LeaseState::default();
    let short = granted(apply(
        &mut s,
        0,
        LeaseCommand::Grant(lease::Grant {
            id: None,
            ttl_ms: 1_000,
        }),
    ));
    let long = granted(apply(
        &mut s,
        0,
        LeaseCommand::Grant(lease::Grant {
            id: None,
            ttl_ms: 60_000,
        }),
    ));
    apply(&mut s, 900, LeaseCommand::Refresh(lease::Refresh)).unwrap();
    assert_eq!(s.info(short, Millis(900)).unwrap().deadline, Millis(1_900));
    assert_eq!(s.info(long, Millis(900)).unwrap().deadline, Millis(60_900));
}

fn granted(out: Result<LeaseOutput, LeaseError>) -> LeaseId {
    match out {
        Ok(LeaseOutput::Granted(info)) => info.id,
        other => panic!("expected a grant, got {other:?}"),
    }
}

/// A caller-chosen id at the top of the range made the next ids wrap to u64::MAX, and every
/// later grant got that same id: a lock's hold and a registry instance shared one lease, keys
/// expired early and lock reads panicked. Ids a caller chooses stop at `LEASE_ID_MAX`, and the
/// ones handed out after it stay unique.
#[test]
fn lease_ids_never_wrap_nor_repeat() {
    use crate::limits::LEASE_ID_MAX;
    let mut s = LeaseState::default();
    let grant = |id: Option<u64>| {
        LeaseCommand::Grant(lease::Grant {
            id: id.map(LeaseId),
            ttl_ms: 60_000,
        })
    };
    let refused = apply(&mut s, 0, grant(Some(LEASE_ID_MAX + 1))).unwrap_err();
    assert_eq!(
        refused,
        LeaseError::IdTooLarge {
            id: LeaseId(LEASE_ID_MAX + 1)
        }
    );
    assert_eq!(refused.field(), "id");
    assert!(apply(&mut s, 0, grant(Some(u64::MAX))).is_err());
    apply(&mut s, 0, grant(Some(LEASE_ID_MAX))).unwrap();
    let mut ids = std::collections::BTreeSet::new();
    for _ in 0..5 {
        let LeaseOutput::Granted(info) = apply(&mut s, 0, grant(None)).unwrap() else {
            panic!("a grant answers Granted")
        };
        assert!(info.id.0 > LEASE_ID_MAX);
        assert!(ids.insert(info.id), "lease {} handed out twice", info.id);
    }
    assert_eq!(s.len(), 6);
}
