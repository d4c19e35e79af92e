//! Registry unit tests and a property test of random registrations, heartbeats, status changes,
//! deregistrations, lease revokes and ticks, with a watcher that replays the events.

use crate::lease;
use crate::lease::LeaseCommand;
use crate::registry;
use crate::registry::{
    DownReason, InstanceInfo, RegistryCommand, RegistryError, RegistryEventKind, RegistryOutput,
    Status,
};
use crate::tests::run;
use crate::{
    Applied, Command, ErrorCode, LeaseId, Millis, Output, Request, Revision, State, StateError,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn register(service: &str, instance: &str, ttl_ms: u64) -> Command {
    Command::Registry(RegistryCommand::Register(registry::Register {
        service: service.into(),
        instance: instance.into(),
        address: format!("10.0.0.1:{}", instance.len() + 8000),
        metadata: BTreeMap::from([("zone".to_owned(), "a".to_owned())]),
        ttl_ms,
        status: Status::Passing,
    }))
}

fn heartbeat(service: &str, instance: &str, lease: LeaseId) -> Command {
    Command::Registry(RegistryCommand::Heartbeat(registry::Heartbeat {
        service: service.into(),
        instance: instance.into(),
        lease,
    }))
}

fn set_status(service: &str, instance: &str, lease: Option<LeaseId>, status: Status) -> Command {
    Command::Registry(RegistryCommand::SetStatus(registry::SetStatus {
        service: service.into(),
        instance: instance.into(),
        lease,
        status,
    }))
}

fn deregister(service: &str, instance: &str, lease: Option<LeaseId>) -> Command {
    Command::Registry(RegistryCommand::Deregister(registry::Deregister {
        service: service.into(),
        instance: instance.into(),
        lease,
    }))
}

fn registered(applied: &Applied) -> InstanceInfo {
    match &applied.result {
        Ok(Output::Registry(RegistryOutput::Registered(i))) => i.clone(),
        other => panic!("expected a registration, got {other:?}"),
    }
}

fn registry_error(applied: &Applied) -> RegistryError {
    match &applied.result {
        Err(StateError::Registry(e)) => e.clone(),
        other => panic!("expected a registry error, got {other:?}"),
    }
}

fn resolved(s: &State, service: &str, all: bool) -> Vec<String> {
    s.registry()
        .resolve(service, all, s.leases(), s.clock())
        .into_iter()
        .map(|i| i.instance)
        .collect()
}

#[test]
fn an_instance_is_listed_while_its_lease_lives_and_leaves_in_the_revision_it_expires() {
    let mut s = State::default();
    let a = registered(&run(&mut s, 1_000, register("api", "a", 2_000)));
    let b = registered(&run(&mut s, 1_000, register("api", "b", 2_000)));
    assert_eq!(resolved(&s, "api", false), ["a", "b"]);
    // a heartbeats; b does not.
    match run(&mut s, 2_500, heartbeat("api", "a", a.lease)).result {
        Ok(Output::Registry(RegistryOutput::HeartbeatOk(registry::HeartbeatOk {
            deadline,
            ttl_ms,
        }))) => {
            assert_eq!((deadline, ttl_ms), (Millis(4_500), 2_000));
        }
        other => panic!("{other:?}"),
    }
    // Past b's deadline but before the tick: hidden from resolve, refused a heartbeat.
    let mut peek = s.clone();
    peek.advance_clock(Millis(3_000));
    assert_eq!(resolved(&peek, "api", true), ["a"]);
    let e = registry_error(&run(&mut peek, 3_000, heartbeat("api", "b", b.lease)));
    assert_eq!(e.code(), ErrorCode::NotFound);

    let tick = run(&mut s, 3_000, Command::Tick);
    assert_eq!(resolved(&s, "api", true), ["a"]);
    let events = s.registry().events_after("api", Revision(0), 100).unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.revision, tick.revision);
    assert_eq!(last.kind, RegistryEventKind::Down(DownReason::Expired));
    assert_eq!(last.instance.instance, "b");
    assert_eq!(
        events.len(),
        3,
        "a up, b up, b down: a heartbeat is no event"
    );
}

#[test]
fn registering_again_replaces_the_old_registration_whose_lease_goes_stale() {
    let mut s = State::default();
    let first = registered(&run(&mut s, 1_000, register("api", "a", 10_000)));
    let second = registered(&run(&mut s, 2_000, register("api", "a", 10_000)));
    assert_ne!(first.lease, second.lease);
    assert!(
        !s.leases().is_alive(first.lease),
        "the old lease is revoked"
    );
    assert_eq!(resolved(&s, "api", false), ["a"]);
    let before = s.clone();
    let e = registry_error(&run(&mut s, 2_000, heartbeat("api", "a", first.lease)));
    assert_eq!((e.code(), e.field()), (ErrorCode::StaleToken, "lease"));
    let e = registry_error(&run(
        &mut s,
        2_000,
        deregister("api", "a", Some(first.lease)),
    ));
    assert_eq!(e.code(), ErrorCode::StaleToken);
    assert_eq!(s, before);
    run(&mut s, 2_000, heartbeat("api", "a", second.lease));
}

#[test]
fn draining_hides_an_instance_from_resolve_and_warning_does_not() {
    let mut s = State::default();
    let a = registered(&run(&mut s, 1_000, register("api", "a", 10_000)));
    registered(&run(&mut s, 1_000, register("api", "b", 10_000)));
    run(
        &mut s,
        1_001,
        set_status("api", "a", Some(a.lease), Status::Draining),
    );
    run(&mut s, 1_001, set_status("api", "b", None, Status::Warning));
    assert_eq!(resolved(&s, "api", false), ["b"]);
    assert_eq!(resolved(&s, "api", true), ["a", "b"]);
    // The same status again is no change: no revision, no event.
    let revision = s.revision();
    run(&mut s, 1_002, set_status("api", "b", None, Status::Warning));
    assert_eq!(s.revision(), revision);
    let kinds: Vec<(String, Status)> = s
        .registry()
        .events_after("api", Revision(0), 100)
        .unwrap()
        .into_iter()
        .map(|e| (e.instance.instance, e.instance.status))
        .collect();
    assert_eq!(
        kinds,
        [
            ("a".to_owned(), Status::Passing),
            ("b".to_owned(), Status::Passing),
            ("a".to_owned(), Status::Draining),
            ("b".to_owned(), Status::Warning),
        ]
    );
}

#[test]
fn deregister_and_a_revoked_lease_each_remove_the_instance_with_their_reason() {
    let mut s = State::default();
    let a = registered(&run(&mut s, 1_000, register("api", "a", 10_000)));
    let b = registered(&run(&mut s, 1_000, register("api", "b", 10_000)));
    run(&mut s, 1_001, deregister("api", "a", Some(a.lease)));
    assert!(!s.leases().is_alive(a.lease));
    run(
        &mut s,
        1_002,
        Command::Lease(LeaseCommand::Revoke(lease::Revoke { id: b.lease })),
    );
    assert!(resolved(&s, "api", true).is_empty());
    let reasons: Vec<RegistryEventKind> = s
        .registry()
        .events_after("api", Revision(0), 100)
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .skip(2)
        .collect();
    assert_eq!(
        reasons,
        [
            RegistryEventKind::Down(DownReason::Deregistered),
            RegistryEventKind::Down(DownReason::Expired)
        ]
    );
    let e = registry_error(&run(&mut s, 1_003, deregister("api", "a", None)));
    assert_eq!((e.code(), e.field()), (ErrorCode::NotFound, "instance"));
}

#[test]
fn events_past_the_kept_history_answer_compacted() {
    let mut s = State::default();
    let quiet = registered(&run(&mut s, 1_000, register("web", "w", 10_000)));
    let a = registered(&run(&mut s, 1_000, register("api", "a", 10_000)));
    let mut status = Status::Passing;
    for i in 0..crate::limits::REGISTRY_HISTORY_EVENTS_MAX {
        status = if status == Status::Passing {
            Status::Warning
        } else {
            Status::Passing
        };
        s.apply(&Request {
            stamp: Millis(1_000 + i as u64 / 1000),
            command: set_status("api", "a", Some(a.lease), status),
        });
    }
    s.check_invariants();
    // Two events went, whole revisions: the quiet service's registration and api's.
    assert_eq!(s.registry().compacted("api"), a.registered);
    let e = s
        .registry()
        .events_after("api", Revision(0), 10)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Compacted);
    assert_eq!(
        s.registry()
            .events_after("api", a.registered, 10)
            .unwrap()
            .len(),
        10
    );
    // A watcher of the quiet service that saw its one event misses nothing: it is not told
    // compacted because another service was busy.
    assert_eq!(s.registry().compacted("web"), quiet.registered);
    assert!(
        s.registry()
            .events_after("web", quiet.registered, 10)
            .unwrap()
            .is_empty()
    );
    assert!(
        s.registry()
            .events_after("web", s.revision(), 10)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn bad_input_names_the_field_and_changes_nothing() {
    let mut s = State::default();
    let good = || {
        RegistryCommand::Register(registry::Register {
            service: "api".into(),
            instance: "a".into(),
            address: "10.0.0.1:80".into(),
            metadata: BTreeMap::new(),
            ttl_ms: 5_000,
            status: Status::Passing,
        })
    };
    let with = |f: &dyn Fn(&mut RegistryCommand)| {
        let mut c = good();
        f(&mut c);
        Command::Registry(c)
    };
    let cases: Vec<(Command, ErrorCode, &str)> = vec![
        (
            with(&|c| {
                if let RegistryCommand::Register(registry::Register { address, .. }) = c {
                    address.clear()
                }
            }),
            ErrorCode::InvalidArgument,
            "address",
        ),
        (
            with(&|c| {
                if let RegistryCommand::Register(registry::Register { ttl_ms, .. }) = c {
                    *ttl_ms = 0
                }
            }),
            ErrorCode::InvalidArgument,
            "ttl",
        ),
        (
            with(&|c| {
                if let RegistryCommand::Register(registry::Register { metadata, .. }) = c {
                    for i in 0..=crate::limits::REGISTRY_METADATA_MAX {
                        metadata.insert(i.to_string(), String::new());
                    }
                }
            }),
            ErrorCode::InvalidArgument,
            "metadata",
        ),
        (
            with(&|c| {
                if let RegistryCommand::Register(registry::Register { instance, .. }) = c {
                    *instance = "a b".into()
                }
            }),
            ErrorCode::InvalidArgument,
            "instance",
        ),
        (
            heartbeat("api", "nobody", LeaseId(1)),
            ErrorCode::NotFound,
            "instance",
        ),
        (
            heartbeat("api", "a", LeaseId(0)),
            ErrorCode::InvalidArgument,
            "lease",
        ),
    ];
    for (command, code, field) in cases {
        let before = s.clone();
        let e = registry_error(&run(&mut s, 0, command));
        assert_eq!((e.code(), e.field()), (code, field), "{e}");
        assert_eq!(s, before);
    }
}

#[derive(Clone, Debug)]
enum Op {
    Register(usize, usize),
    Heartbeat(usize, usize),
    Status(usize, usize, u8, bool),
    Deregister(usize, usize, bool),
    Revoke(u64),
    Tick,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 0..4usize).prop_map(|(s, i)| Op::Register(s, i)),
        3 => (0..2usize, 0..4usize).prop_map(|(s, i)| Op::Heartbeat(s, i)),
        2 => (0..2usize, 0..4usize, 0..3u8, any::<bool>()).prop_map(|(s, i, st, l)| Op::Status(s, i, st, l)),
        1 => (0..2usize, 0..4usize, any::<bool>()).prop_map(|(s, i, l)| Op::Deregister(s, i, l)),
        1 => (1..12u64).prop_map(Op::Revoke),
        3 => Just(Op::Tick),
    ]
}

const SERVICES: [&str; 2] = ["api", "web"];
const INSTANCES: [&str; 4] = ["a", "b", "c", "d"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// After every command the invariants hold, and a watcher that has applied every event from
    /// the start agrees with `Resolve(all)` up to the instances whose deadline passed before
    /// their tick.
    #[test]
    fn a_watcher_replaying_every_event_agrees_with_resolve(ops in prop::collection::vec((op(), 0..800u64), 1..80)) {
        let mut s = State::default();
        let mut now = 1_000u64;
        // The lease each (service, instance) was last told, as a client would remember it.
        let mut told: BTreeMap<(usize, usize), LeaseId> = BTreeMap::new();
        let mut watched: Vec<BTreeMap<String, InstanceInfo>> = vec![BTreeMap::new(); 2];
        let mut seen = Revision(0);
        for (op, step) in ops {
            now += step;
            let command = match op {
                Op::Register(sv, i) => register(SERVICES[sv], INSTANCES[i], 1_000),
                Op::Heartbeat(sv, i) => heartbeat(SERVICES[sv], INSTANCES[i], told.get(&(sv, i)).copied().unwrap_or(LeaseId(1))),
                Op::Status(sv, i, st, with_lease) => set_status(
                    SERVICES[sv], INSTANCES[i],
                    with_lease.then(|| told.get(&(sv, i)).copied().unwrap_or(LeaseId(1))),
                    [Status::Passing, Status::Warning, Status::Draining][st as usize],
                ),
                Op::Deregister(sv, i, with_lease) => deregister(
                    SERVICES[sv], INSTANCES[i],
                    with_lease.then(|| told.get(&(sv, i)).copied().unwrap_or(LeaseId(1))),
                ),
                Op::Revoke(id) => Command::Lease(LeaseCommand::Revoke(lease::Revoke { id: LeaseId(id) })),
                Op::Tick => Command::Tick,
            };
            let before = s.clone();
            let applied = run(&mut s, now, command);
            match &applied.result {
                Ok(Output::Registry(RegistryOutput::Registered(i))) => {
                    let sv = SERVICES.iter().position(|n| *n == i.service).unwrap();
                    let ix = INSTANCES.iter().position(|n| *n == i.instance).unwrap();
                    told.insert((sv, ix), i.lease);
                }
                Err(StateError::Registry(_)) => {
                    let mut expected = before;
                    expected.advance_clock(Millis(now));
                    prop_assert_eq!(&s, &expected, "a refused command changed the state");
                }
                _ => {}
            }
            for (sv, name) in SERVICES.iter().enumerate() {
                for event in s.registry().events_after(name, seen, usize::MAX).unwrap() {
                    match event.kind {
                        RegistryEventKind::Up => { watched[sv].insert(event.instance.instance.clone(), event.instance); }
                        RegistryEventKind::Down(_) => { watched[sv].remove(&event.instance.instance); }
                    }
                }
            }
            seen = s.revision();
            for (sv, name) in SERVICES.iter().enumerate() {
                let live: Vec<InstanceInfo> = s.registry().resolve(name, true, s.leases(), s.clock());
                let listed: Vec<InstanceInfo> = watched[sv].values().cloned().collect();
                // Every live instance is in the watcher's list, as it is; the list has at most
                // the instances whose deadline passed and whose tick has not come.
                for i in &live {
                    prop_assert_eq!(watched[sv].get(&i.instance), Some(i));
                }
                for i in &listed {
                    let current = s.registry().instance(name, &i.instance);
                    prop_assert_eq!(current.as_ref(), Some(i));
                }
            }
        }
    }
}
