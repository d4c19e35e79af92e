//! Lock unit tests (scripts of commands and the answers they must give) and a property test that
//! interleaves acquires, renews, releases, expiries, revokes and abandons across owners and locks.

use crate::kv;
use crate::kv::{Compare, CompareOp, CompareTarget, KvCommand, KvOutput, Txn, TxnOp};
use crate::lease;
use crate::lease::LeaseCommand;
use crate::limits::LOCK_WAIT_MS_MAX;
use crate::lock;
use crate::lock::{LockCommand, LockError, LockOutput, TicketStatus};
use crate::tests::run;
use crate::{
    Applied, Command, ErrorCode, FencingToken, LeaseId, Millis, Output, Request, Revision, State,
};
use proptest::prelude::*;
use std::collections::BTreeSet;

fn acquire(name: &str, owner: &str, ttl_ms: u64, wait_ms: u64, permits: u32) -> Command {
    Command::Lock(LockCommand::Acquire(lock::Acquire {
        name: name.into(),
        owner: owner.into(),
        ttl_ms,
        wait_ms,
        permits,
        value: Vec::new(),
        node: 1,
    }))
}

fn release(name: &str, token: FencingToken) -> Command {
    Command::Lock(LockCommand::Release(lock::Release {
        name: name.into(),
        token,
    }))
}

fn renew(name: &str, token: FencingToken) -> Command {
    Command::Lock(LockCommand::Renew(lock::Renew {
        name: name.into(),
        token,
        ttl_ms: None,
    }))
}

fn acquired(applied: &Applied) -> FencingToken {
    match &applied.result {
        Ok(Output::Lock(LockOutput::Acquire(lock::Acquired::Held(hold)))) => hold.token,
        other => panic!("expected a hold, got {other:?}"),
    }
}

fn queued(applied: &Applied) -> Revision {
    match &applied.result {
        Ok(Output::Lock(LockOutput::Acquire(lock::Acquired::Queued { ticket, .. }))) => *ticket,
        other => panic!("expected a queued ticket, got {other:?}"),
    }
}

fn lock_error(applied: &Applied) -> LockError {
    match &applied.result {
        Err(crate::StateError::Lock(e)) => e.clone(),
        other => panic!("expected a lock error, got {other:?}"),
    }
}

fn holders(state: &State, name: &str) -> Vec<(String, FencingToken)> {
    let info = state.locks().get(name, state.leases(), state.clock());
    info.holders
        .into_iter()
        .map(|h| (h.owner, h.token))
        .collect()
}

fn fenced_put(lock: &str, token: FencingToken, value: &str) -> Command {
    Command::Kv(KvCommand::Txn(Txn {
        compares: vec![Compare {
            key: Vec::new(),
            op: CompareOp::Equal,
            target: CompareTarget::Fence {
                lock: lock.into(),
                token,
            },
        }],
        then: vec![TxnOp::Put {
            key: b"counter".to_vec(),
            value: value.into(),
            lease: None,
        }],
        otherwise: vec![],
    }))
}

fn txn_succeeded(applied: &Applied) -> bool {
    match &applied.result {
        Ok(Output::Kv(KvOutput::Txn(kv::TxnOutput { succeeded, .. }))) => *succeeded,
        other => panic!("expected a txn answer, got {other:?}"),
    }
}

#[test]
fn a_free_lock_is_granted_with_the_revision_as_token_and_its_own_lease() {
    let mut s = State::default();
    let a = run(&mut s, 1_000, acquire("db", "a", 5_000, 0, 1));
    let Ok(Output::Lock(LockOutput::Acquire(lock::Acquired::Held(hold)))) = &a.result else {
        panic!("{a:?}")
    };
    assert_eq!(hold.token, FencingToken(a.revision.0));
    assert_eq!(hold.deadline, Millis(6_000));
    assert_eq!(hold.owner, "a");
    assert!(s.leases().is_alive(hold.lease));
    assert_eq!(holders(&s, "db"), vec![("a".into(), hold.token)]);
    assert!(
        s.locks()
            .is_current("db", hold.token, s.leases(), s.clock())
    );
}

#[test]
fn a_held_lock_without_wait_is_refused_and_nothing_changes() {
    let mut s = State::default();
    let token = acquired(&run(&mut s, 1_000, acquire("db", "a", 5_000, 0, 1)));
    let before = s.clone();
    let b = run(&mut s, 1_000, acquire("db", "b", 5_000, 0, 1));
    let e = lock_error(&b);
    assert_eq!(e.code(), ErrorCode::FailedPrecondition);
    assert_eq!(
        e.to_string(),
        format!(
            "lock db is held (1 of 1 permits taken; the newest holder is \"a\" with token {token}); pass a wait to queue for it"
        )
    );
    assert_eq!(s, before);
}

#[test]
fn waiters_are_granted_in_order_in_the_revision_that_frees_the_permit() {
    let mut s = State::default();
    let a = acquired(&run(&mut s, 1_000, acquire("db", "a", 5_000, 0, 1)));
    let b = queued(&run(&mut s, 1_001, acquire("db", "b", 5_000, 10_000, 1)));
    let c = queued(&run(&mut s, 1_002, acquire("db", "c", 5_000, 10_000, 1)));
    assert_eq!(
        s.locks().ticket_status("db", c, s.leases(), s.clock()),
        TicketStatus::Waiting { position: 1 }
    );
    let released = run(&mut s, 1_003, release("db", a));
    let held = holders(&s, "db");
    assert_eq!(held, vec![("b".into(), FencingToken(released.revision.0))]);
    assert!(matches!(
        s.locks().ticket_status("db", b, s.leases(), s.clock()),
        TicketStatus::Held(_)
    ));
    assert!(!s.locks().is_current("db", a, s.leases(), s.clock()));
    // The released token is stale from now on.
    let before = s.clone();
    let again = run(&mut s, 1_003, release("db", a));
    assert_eq!(lock_error(&again).code(), ErrorCode::StaleToken);
    assert_eq!(s, before);
}

#[test]
fn expiry_releases_the_hold_and_grants_the_next_waiter_in_the_same_revision() {
    let mut s = State::default();
    let a = acquired(&run(&mut s, 1_000, acquire("db", "a", 1_000, 0, 1)));
    let b = queued(&run(&mut s, 1_000, acquire("db", "b", 1_000, 60_000, 1)));
    let tick = run(&mut s, 2_000, Command::Tick);
    let TicketStatus::Held(hold) = s.locks().ticket_status("db", b, s.leases(), s.clock()) else {
        panic!("b should hold the lock")
    };
    assert_eq!(hold.token, FencingToken(tick.revision.0));
    assert!(hold.token > a);
    // The stale holder wakes up: it can neither renew nor release nor write through a fence.
    assert_eq!(
        lock_error(&run(&mut s, 2_001, renew("db", a))).code(),
        ErrorCode::StaleToken
    );
    assert!(!txn_succeeded(&run(
        &mut s,
        2_002,
        fenced_put("db", a, "stale")
    )));
    assert!(txn_succeeded(&run(
        &mut s,
        2_003,
        fenced_put("db", hold.token, "fresh")
    )));
    assert_eq!(s.kv().get(b"counter").unwrap().value, b"fresh");
}

#[test]
fn a_waiter_gives_up_at_its_deadline() {
    let mut s = State::default();
    acquired(&run(&mut s, 1_000, acquire("db", "a", 10_000, 0, 1)));
    let b = queued(&run(&mut s, 1_000, acquire("db", "b", 10_000, 2_000, 1)));
    assert_eq!(s.next_deadline(), Some(Millis(3_000)));
    run(&mut s, 3_000, Command::Tick);
    assert_eq!(
        s.locks().ticket_status("db", b, s.leases(), s.clock()),
        TicketStatus::Gone
    );
    assert_eq!(s.next_deadline(), Some(Millis(11_000)));
}

#[test]
fn renew_moves_the_deadline_and_can_change_the_ttl() {
    let mut s = State::default();
    let a = acquired(&run(&mut s, 1_000, acquire("db", "a", 1_000, 0, 1)));
    let r = run(
        &mut s,
        1_500,
        Command::Lock(LockCommand::Renew(lock::Renew {
            name: "db".into(),
            token: a,
            ttl_ms: Some(3_000),
        })),
    );
    let Ok(Output::Lock(LockOutput::Renewed(hold))) = r.result else {
        panic!("{r:?}")
    };
    assert_eq!(
        (hold.deadline, hold.ttl_ms, hold.token),
        (Millis(4_500), 3_000, a)
    );
    run(&mut s, 2_100, Command::Tick);
    assert!(s.locks().is_current("db", a, s.leases(), s.clock()));
}

#[test]
fn bad_input_names_the_field_and_the_limit() {
    let mut s = State::default();
    run(&mut s, 1_000, Command::Tick);
    let before = s.clone();
    let cases = [
        (
            acquire("db", "a", 0, 0, 1),
            "ttl",
            "ttl is 0ms; the minimum is 500ms",
        ),
        (
            acquire("db", "a", 1_000, LOCK_WAIT_MS_MAX + 1, 1),
            "wait",
            "wait is 300001ms; the maximum is 300000ms",
        ),
        (
            acquire("db", "a", 1_000, 0, 0),
            "permits",
            "permits is 0; it must be 1 to 1024",
        ),
        (
            acquire("d b", "a", 1_000, 0, 1),
            "name",
            "name has ' ' at byte 1; names are 1 to 256 bytes of [A-Za-z0-9._/-]",
        ),
        (
            acquire("db", "", 1_000, 0, 1),
            "owner",
            "owner is 0 bytes; it must be 1 to 256 bytes",
        ),
    ];
    for (command, field, message) in cases {
        assert!(State::validate(&command).is_err());
        let applied = run(&mut s, 1_000, command);
        let e = lock_error(&applied);
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert_eq!((e.field(), e.to_string().as_str()), (field, message));
        assert_eq!(s, before);
    }
}

#[test]
fn a_semaphore_gives_each_holder_its_own_token() {
    let mut s = State::default();
    let a = acquired(&run(&mut s, 1_000, acquire("pool", "a", 1_000, 0, 2)));
    let b = acquired(&run(&mut s, 1_000, acquire("pool", "b", 1_000, 0, 2)));
    assert!(b > a);
    let c = queued(&run(&mut s, 1_000, acquire("pool", "c", 1_000, 60_000, 2)));
    let d = queued(&run(&mut s, 1_000, acquire("pool", "d", 1_000, 60_000, 2)));
    let mismatch = lock_error(&run(&mut s, 1_000, acquire("pool", "e", 1_000, 0, 3)));
    assert_eq!(
        (mismatch.code(), mismatch.field()),
        (ErrorCode::FailedPrecondition, "permits")
    );
    // Both holders expire in one tick: both waiters are granted in that revision, with distinct,
    // increasing tokens, and c (queued first) gets the smaller.
    let tick = run(&mut s, 2_000, Command::Tick);
    let status = |t| s.locks().ticket_status("pool", t, s.leases(), s.clock());
    let (TicketStatus::Held(hc), TicketStatus::Held(hd)) = (status(c), status(d)) else {
        panic!("both waiters should hold")
    };
    assert_eq!(hc.token, FencingToken(tick.revision.0));
    assert_eq!(hd.token, FencingToken(tick.revision.0 + 1));
    // The next grant anywhere gets a token above both, though its revision is only one more.
    let e = run(&mut s, 2_000, acquire("other", "e", 1_000, 0, 1));
    assert_eq!(e.revision.0, tick.revision.0 + 1);
    assert_eq!(acquired(&e), FencingToken(tick.revision.0 + 2));
}

#[test]
fn revoking_the_hold_lease_releases_the_lock_and_its_keys() {
    let mut s = State::default();
    let a = run(&mut s, 1_000, acquire("db", "a", 5_000, 0, 1));
    let Ok(Output::Lock(LockOutput::Acquire(lock::Acquired::Held(hold)))) = a.result else {
        panic!()
    };
    run(
        &mut s,
        1_000,
        Command::Kv(KvCommand::Put(kv::Put {
            key: b"owner".to_vec(),
            value: b"a".to_vec(),
            lease: Some(hold.lease),
        })),
    );
    let b = queued(&run(&mut s, 1_000, acquire("db", "b", 5_000, 5_000, 1)));
    let revoke = run(
        &mut s,
        1_100,
        Command::Lease(LeaseCommand::Revoke(lease::Revoke { id: hold.lease })),
    );
    assert!(s.kv().get(b"owner").is_none());
    assert_eq!(revoke.events.len(), 1);
    let TicketStatus::Held(hb) = s.locks().ticket_status("db", b, s.leases(), s.clock()) else {
        panic!()
    };
    assert_eq!(hb.token, FencingToken(revoke.revision.0));
}

#[test]
fn abandon_dequeues_a_waiter_or_releases_an_unreported_hold() {
    let mut s = State::default();
    let a = acquired(&run(&mut s, 1_000, acquire("db", "a", 5_000, 0, 1)));
    let b = queued(&run(&mut s, 1_000, acquire("db", "b", 5_000, 5_000, 1)));
    let c = queued(&run(&mut s, 1_000, acquire("db", "c", 5_000, 5_000, 1)));
    run(
        &mut s,
        1_000,
        Command::Lock(LockCommand::Abandon(lock::Abandon {
            name: "db".into(),
            ticket: b,
        })),
    );
    run(&mut s, 1_000, release("db", a));
    let TicketStatus::Held(hc) = s.locks().ticket_status("db", c, s.leases(), s.clock()) else {
        panic!("c is next once b left the queue")
    };
    let out = run(
        &mut s,
        1_000,
        Command::Lock(LockCommand::Abandon(lock::Abandon {
            name: "db".into(),
            ticket: c,
        })),
    );
    assert_eq!(
        out.result,
        Ok(Output::Lock(LockOutput::Abandoned {
            ticket: c,
            released: Some(hc.token)
        }))
    );
    assert!(s.locks().is_empty());
    assert!(s.leases().is_empty());
}

#[test]
fn a_restarted_node_abandons_the_waits_of_its_previous_process() {
    let mut s = State::default();
    let queue = |owner: &str, node: u64| {
        Command::Lock(LockCommand::Acquire(lock::Acquire {
            name: "db".into(),
            owner: owner.into(),
            ttl_ms: 5_000,
            wait_ms: 60_000,
            permits: 1,
            value: Vec::new(),
            node,
        }))
    };
    let a = acquired(&run(&mut s, 1_000, queue("a", 1)));
    queued(&run(&mut s, 1_000, queue("b", 1)));
    let c = queued(&run(&mut s, 1_000, queue("c", 2)));
    assert_eq!(s.locks().waiters_by_node().get(&1), Some(&1));
    let out = run(
        &mut s,
        1_000,
        Command::Lock(LockCommand::AbandonNode(lock::AbandonNode { node: 1 })),
    );
    assert_eq!(
        out.result,
        Ok(Output::Lock(LockOutput::AbandonedNode { waiters: 1 }))
    );
    // The hold stays (its owner may have been told); only the waits go.
    assert!(s.locks().is_current("db", a, s.leases(), s.clock()));
    let again = run(
        &mut s,
        1_000,
        Command::Lock(LockCommand::AbandonNode(lock::AbandonNode { node: 1 })),
    );
    assert_eq!(
        again.revision, out.revision,
        "nothing to abandon takes no revision"
    );
    run(&mut s, 1_000, release("db", a));
    assert!(matches!(
        s.locks().ticket_status("db", c, s.leases(), s.clock()),
        TicketStatus::Held(_)
    ));
}

#[test]
fn an_election_leader_proclaims_and_the_next_candidate_takes_over_on_resign() {
    let mut s = State::default();
    let campaign = |who: &str| {
        Command::Lock(LockCommand::Acquire(lock::Acquire {
            name: "leader".into(),
            owner: who.into(),
            ttl_ms: 5_000,
            wait_ms: 60_000,
            permits: 1,
            value: format!("{who}:8080").into_bytes(),
            node: 1,
        }))
    };
    let a = acquired(&run(&mut s, 1_000, campaign("a")));
    queued(&run(&mut s, 1_000, campaign("b")));
    run(
        &mut s,
        1_000,
        Command::Lock(LockCommand::Proclaim(lock::Proclaim {
            name: "leader".into(),
            token: a,
            value: b"a:9090".to_vec(),
        })),
    );
    let leader = s.locks().leader("leader", s.leases(), s.clock()).unwrap();
    assert_eq!(
        (leader.owner.as_str(), leader.value.as_slice()),
        ("a", &b"a:9090"[..])
    );
    run(&mut s, 1_000, release("leader", a));
    let leader = s.locks().leader("leader", s.leases(), s.clock()).unwrap();
    assert_eq!(
        (leader.owner.as_str(), leader.value.as_slice()),
        ("b", &b"b:8080"[..])
    );
    assert!(leader.token > a);
}

#[test]
fn fence_compares_take_equal_or_not_equal_only() {
    let mut s = State::default();
    let a = acquired(&run(&mut s, 1_000, acquire("db", "a", 5_000, 0, 1)));
    let not_held = Command::Kv(KvCommand::Txn(Txn {
        compares: vec![Compare {
            key: Vec::new(),
            op: CompareOp::NotEqual,
            target: CompareTarget::Fence {
                lock: "db".into(),
                token: a,
            },
        }],
        then: vec![],
        otherwise: vec![],
    }));
    assert!(!txn_succeeded(&run(&mut s, 1_000, not_held)));
    let greater = Command::Kv(KvCommand::Txn(Txn {
        compares: vec![Compare {
            key: Vec::new(),
            op: CompareOp::Greater,
            target: CompareTarget::Fence {
                lock: "db".into(),
                token: a,
            },
        }],
        then: vec![],
        otherwise: vec![],
    }));
    let e = State::validate(&greater).unwrap_err();
    assert_eq!((e.code(), e.field()), (ErrorCode::InvalidArgument, "op"));
}

#[test]
fn a_version_1_snapshot_loads_with_no_locks() {
    let mut s = State::default();
    run(
        &mut s,
        1_000,
        Command::Kv(KvCommand::Put(kv::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: None,
        })),
    );
    let body = postcard::to_allocvec(&(s.revision(), s.clock(), s.kv(), s.leases())).unwrap();
    let mut bytes = b"PLNS".to_vec();
    bytes.extend_from_slice(&1u32.to_le_bytes());
    bytes.extend_from_slice(&body);
    assert_eq!(State::from_snapshot(&bytes).unwrap(), s);
}

// ---- the property test ----

const LOCKS: [&str; 3] = ["one", "two", "three"];

/// Permits by lock: a mutex, and semaphores of 2 and 3.
fn permits_of(lock: usize) -> u32 {
    lock as u32 + 1
}

#[derive(Clone, Debug)]
enum Step {
    Acquire {
        lock: usize,
        owner: u8,
        ttl_ms: u64,
        wait_ms: u64,
        wrong_permits: bool,
    },
    /// Renew, release, proclaim or abandon something seen before, chosen by index.
    Renew(usize, usize),
    Release(usize, usize),
    Abandon(usize, usize),
    Revoke(usize),
    Proclaim(usize, usize),
    AbandonNode,
    Tick,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0..3usize, 0..6u8, 500u64..3_000, prop_oneof![Just(0u64), 1u64..4_000], prop::bool::weighted(0.05))
            .prop_map(|(lock, owner, ttl_ms, wait_ms, wrong_permits)| Step::Acquire { lock, owner, ttl_ms, wait_ms, wrong_permits }),
        3 => (0..3usize, any::<usize>()).prop_map(|(l, i)| Step::Renew(l, i)),
        2 => (0..3usize, any::<usize>()).prop_map(|(l, i)| Step::Release(l, i)),
        1 => (0..3usize, any::<usize>()).prop_map(|(l, i)| Step::Abandon(l, i)),
        1 => any::<usize>().prop_map(Step::Revoke),
        1 => (0..3usize, any::<usize>()).prop_map(|(l, i)| Step::Proclaim(l, i)),
        1 => Just(Step::AbandonNode),
        3 => Just(Step::Tick),
    ]
}

fn pick<T: Copy>(items: &[T], i: usize) -> Option<T> {
    (!items.is_empty()).then(|| items[i % items.len()])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn at_most_permits_holders_increasing_tokens_fifo_and_no_stale_token_accepted(
        steps in prop::collection::vec((step(), 0u64..900), 1..150)
    ) {
        let mut s = State::default();
        let mut now = 1_000u64;
        // Every token ever granted per lock, every ticket ever queued per lock, leases of holds.
        let mut tokens: Vec<Vec<FencingToken>> = vec![Vec::new(); 3];
        let mut tickets: Vec<Vec<Revision>> = vec![Vec::new(); 3];
        let mut leases: Vec<LeaseId> = Vec::new();
        let mut last_token: Vec<FencingToken> = vec![FencingToken(0); 3];
        let mut ended: Vec<BTreeSet<FencingToken>> = vec![BTreeSet::new(); 3];
        for (step, advance) in steps {
            now += advance;
            let before: Vec<_> = LOCKS.iter().map(|l| s.locks().get(l, s.leases(), s.clock())).collect();
            let acquiring = match step { Step::Acquire { lock, .. } => Some(lock), _ => None };
            let command = match step {
                Step::Acquire { lock, owner, ttl_ms, wait_ms, wrong_permits } => {
                    let permits = if wrong_permits { permits_of(lock) + 1 } else { permits_of(lock) };
                    acquire(LOCKS[lock], &format!("o{owner}"), ttl_ms, wait_ms, permits)
                }
                Step::Renew(l, i) => match pick(&tokens[l], i) { Some(t) => renew(LOCKS[l], t), None => Command::Tick },
                Step::Release(l, i) => match pick(&tokens[l], i) { Some(t) => release(LOCKS[l], t), None => Command::Tick },
                Step::Abandon(l, i) => match pick(&tickets[l], i) {
                    Some(ticket) => Command::Lock(LockCommand::Abandon(lock::Abandon { name: LOCKS[l].into(), ticket })),
                    None => Command::Tick,
                },
                Step::Revoke(i) => match pick(&leases, i) { Some(id) => Command::Lease(LeaseCommand::Revoke(lease::Revoke { id })), None => Command::Tick },
                Step::Proclaim(l, i) => match pick(&tokens[l], i) {
                    Some(token) => Command::Lock(LockCommand::Proclaim(lock::Proclaim { name: LOCKS[l].into(), token, value: vec![i as u8] })),
                    None => Command::Tick,
                },
                Step::AbandonNode => Command::Lock(LockCommand::AbandonNode(lock::AbandonNode { node: 1 })),
                Step::Tick => Command::Tick,
            };
            let mut unchanged = s.clone();
            unchanged.advance_clock(Millis(now));
            let applied = run(&mut s, now, command);
            if applied.result.is_err() {
                prop_assert!(s == unchanged, "a refused command changed state: {:?}", applied.result);
            }
            if let (Ok(Output::Lock(LockOutput::Acquire(lock::Acquired::Queued { ticket, .. }))), Some(l)) = (&applied.result, acquiring) {
                tickets[l].push(*ticket);
            }
            for (l, name) in LOCKS.iter().enumerate() {
                let after = s.locks().get(name, s.leases(), s.clock());
                // A free lock takes the permits of its next acquirer, so a wrong count can win
                // on a free lock: compare with the lock's own count.
                prop_assert!(after.holders.len() as u32 <= after.permits, "more holders than permits on {}", name);
                let was: BTreeSet<FencingToken> = before[l].holders.iter().map(|h| h.token).collect();
                let is: BTreeSet<FencingToken> = after.holders.iter().map(|h| h.token).collect();
                let mut granted_tickets = Vec::new();
                for hold in after.holders.iter().filter(|h| !was.contains(&h.token)) {
                    prop_assert!(hold.token > last_token[l], "token {} on {} not above {}", hold.token, name, last_token[l]);
                    last_token[l] = hold.token;
                    tokens[l].push(hold.token);
                    tickets[l].push(hold.ticket);
                    leases.push(hold.lease);
                    if hold.ticket.0 < hold.token.0 && before[l].waiters.iter().any(|w| w.ticket == hold.ticket) {
                        granted_tickets.push(hold.ticket);
                    }
                }
                for gone in was.difference(&is) {
                    ended[l].insert(*gone);
                }
                // FIFO: nobody still waiting was queued before a waiter granted in this step.
                if let Some(newest) = granted_tickets.iter().max() {
                    for w in &after.waiters {
                        prop_assert!(w.ticket > *newest, "waiter {} on {} was overtaken by {}", w.ticket, name, newest);
                    }
                }
                // A hold whose deadline has passed is stale even before the tick that ends it.
                for hold in &after.holders {
                    let mut probe = s.clone();
                    let late = probe.apply(&Request { stamp: hold.deadline, command: renew(name, hold.token) });
                    prop_assert_eq!(late.result.unwrap_err().code(), ErrorCode::StaleToken);
                    prop_assert!(!probe.locks().is_current(name, hold.token, probe.leases(), hold.deadline));
                }
                // No stale token is ever accepted: renew, release and the fence all refuse it,
                // and refusing changes nothing.
                for token in &ended[l] {
                    prop_assert!(!s.locks().is_current(name, *token, s.leases(), s.clock()));
                    for command in [renew(name, *token), release(name, *token)] {
                        let mut probe = s.clone();
                        let refused = probe.apply(&Request { stamp: s.clock(), command });
                        prop_assert_eq!(refused.result.unwrap_err().code(), ErrorCode::StaleToken);
                        prop_assert!(probe == s);
                    }
                    let mut probe = s.clone();
                    let fenced = probe.apply(&Request { stamp: s.clock(), command: fenced_put(name, *token, "x") });
                    prop_assert!(!txn_succeeded(&fenced), "a stale token wrote through the fence");
                }
            }
        }
        // Tokens never repeat across locks.
        let all: Vec<FencingToken> = tokens.iter().flatten().copied().collect();
        let unique: BTreeSet<FencingToken> = all.iter().copied().collect();
        prop_assert_eq!(all.len(), unique.len());
    }
}
