//! Config unit tests (scripts of commands and the answers they must give) and a property test of
//! random puts, rollbacks, schemas and retention against a model that keeps every version.

use crate::config;
use crate::config::{ConfigCommand, ConfigError, ConfigOutput, ConfigVersion, canonical_json};
use crate::tests::run;
use crate::{Applied, Command, ErrorCode, Output, State, StateError};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn put(service: &str, set: &[(&str, &str)], delete: &[&str], expected: Option<u64>) -> Command {
    Command::Config(ConfigCommand::Put(config::Put {
        service: service.into(),
        set: set
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        delete: delete.iter().map(|k| (*k).to_owned()).collect(),
        expected_version: expected,
    }))
}

fn rollback(service: &str, to_version: u64) -> Command {
    Command::Config(ConfigCommand::Rollback(config::Rollback {
        service: service.into(),
        to_version,
        expected_version: None,
    }))
}

fn set_schema(service: &str, schema: Option<&str>) -> Command {
    Command::Config(ConfigCommand::SetSchema(config::SetSchema {
        service: service.into(),
        schema: schema.map(str::to_owned),
    }))
}

fn retention(service: &str, versions_kept: u32) -> Command {
    Command::Config(ConfigCommand::SetRetention(config::SetRetention {
        service: service.into(),
        versions_kept,
    }))
}

fn committed(applied: &Applied) -> ConfigVersion {
    match &applied.result {
        Ok(Output::Config(ConfigOutput::Committed(v))) => v.clone(),
        other => panic!("expected a new version, got {other:?}"),
    }
}

fn config_error(applied: &Applied) -> ConfigError {
    match &applied.result {
        Err(StateError::Config(e)) => e.clone(),
        other => panic!("expected a config error, got {other:?}"),
    }
}

fn values(s: &State, service: &str, version: u64) -> BTreeMap<String, String> {
    s.config().snapshot(service, version).unwrap().values
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Runs a command that must be refused and checks it changed nothing but the clock.
fn refused(s: &mut State, at: u64, command: Command) -> ConfigError {
    let mut before = s.clone();
    let applied = run(s, at, command);
    before.advance_clock(crate::Millis(at));
    assert_eq!(*s, before, "a refused command changed the state");
    config_error(&applied)
}

#[test]
fn each_put_makes_one_version_and_every_kept_version_reads_back() {
    let mut s = State::default();
    let v1 = committed(&run(
        &mut s,
        10,
        put("api", &[("timeout", "30")], &[], None),
    ));
    assert_eq!((v1.version, v1.rollback_of), (1, None));
    let v2 = committed(&run(
        &mut s,
        20,
        put(
            "api",
            &[
                ("mode", "\"fast\""),
                ("limits", "{ \"z\": 1, \"a\": [1, 2.5] }"),
            ],
            &["timeout"],
            Some(1),
        ),
    ));
    assert_eq!(v2.version, 2);
    assert!(v2.revision > v1.revision);
    // Values are kept in canonical form: keys sorted, no spaces.
    assert_eq!(
        values(&s, "api", 0),
        map(&[("limits", "{\"a\":[1,2.5],\"z\":1}"), ("mode", "\"fast\"")])
    );
    assert_eq!(values(&s, "api", 1), map(&[("timeout", "30")]));
    let snapshot = s.config().snapshot("api", 1).unwrap();
    assert_eq!((snapshot.version, snapshot.time.0), (1, 10));
    assert_eq!(s.config().version("api"), 2);
    assert_eq!(s.config().version("other"), 0);
    let history = s.config().history("api", 0, 100).unwrap();
    assert_eq!(history, (vec![v1.clone(), v2.clone()], false));
    assert_eq!(
        s.config().history("api", 0, 1).unwrap(),
        (vec![v1.clone()], true)
    );
    assert_eq!(
        s.config().history("api", 1, 100).unwrap(),
        (vec![v2.clone()], false)
    );
    assert_eq!(s.config().versions_after("api", 1, 10).unwrap(), vec![v2]);
    assert_eq!(s.config().versions_after("api", 2, 10).unwrap(), vec![]);
    // A watch on a service with no config yet waits for its first version.
    assert_eq!(s.config().versions_after("later", 0, 10).unwrap(), vec![]);
}

#[test]
fn a_stale_expected_version_is_refused_and_makes_no_version() {
    let mut s = State::default();
    committed(&run(&mut s, 1, put("api", &[("a", "1")], &[], Some(0))));
    let e = refused(&mut s, 2, put("api", &[("a", "2")], &[], Some(0)));
    assert_eq!(
        (e.code(), e.field()),
        (ErrorCode::FailedPrecondition, "expected_version")
    );
    assert_eq!(
        e.to_string(),
        "api is at version 1, not the expected 0; read it again and retry"
    );
    committed(&run(&mut s, 3, put("api", &[("a", "2")], &[], Some(1))));
    assert_eq!(values(&s, "api", 0), map(&[("a", "2")]));
}

#[test]
fn rollback_makes_a_new_version_equal_to_the_old_snapshot() {
    let mut s = State::default();
    run(&mut s, 1, put("api", &[("a", "1"), ("b", "2")], &[], None));
    run(
        &mut s,
        2,
        put("api", &[("a", "10"), ("c", "3")], &["b"], None),
    );
    let v3 = committed(&run(&mut s, 3, rollback("api", 1)));
    assert_eq!(v3.version, 3);
    assert_eq!(v3.rollback_of, Some(1));
    assert_eq!(v3.set, map(&[("a", "1"), ("b", "2")]));
    assert_eq!(v3.delete, BTreeSet::from(["c".to_owned()]));
    assert_eq!(values(&s, "api", 3), values(&s, "api", 1));
    // Rolling back to the latest version still makes a version, with no change.
    let v4 = committed(&run(&mut s, 4, rollback("api", 3)));
    assert!(v4.set.is_empty() && v4.delete.is_empty());

    let e = refused(&mut s, 5, rollback("api", 9));
    assert_eq!((e.code(), e.field()), (ErrorCode::NotFound, "to_version"));
    let e = refused(&mut s, 5, rollback("api", 0));
    assert_eq!(
        (e.code(), e.field()),
        (ErrorCode::InvalidArgument, "to_version")
    );
    let e = refused(&mut s, 5, rollback("nope", 1));
    assert_eq!((e.code(), e.field()), (ErrorCode::NotFound, "service"));
    // Outside retention.
    run(&mut s, 6, retention("api", 2));
    let e = refused(&mut s, 7, rollback("api", 1));
    assert_eq!((e.code(), e.field()), (ErrorCode::Compacted, "to_version"));
    assert_eq!(
        e.to_string(),
        "version 1 of api is no longer kept; the oldest kept is 2"
    );
    assert_eq!(s.config().version("api"), 4);
}

#[test]
fn the_schema_keeps_an_invalid_config_from_ever_becoming_a_version() {
    let mut s = State::default();
    run(&mut s, 1, put("api", &[("timeout", "30")], &[], None));
    let schema = r#"{"type": "object",
        "properties": {"timeout": {"type": "integer", "minimum": 1}},
        "required": ["timeout"]}"#;
    assert_eq!(
        run(&mut s, 2, set_schema("api", Some(schema))).result,
        Ok(Output::Config(ConfigOutput::SchemaSet))
    );
    let e = refused(&mut s, 3, put("api", &[("timeout", "\"soon\"")], &[], None));
    assert_eq!((e.code(), e.field()), (ErrorCode::InvalidArgument, "set"));
    assert!(
        e.to_string().starts_with(
            "the config of api at version 2 would fail its schema: at /timeout: \"soon\" is not of type \"integer\""
        ),
        "{e}"
    );
    let e = refused(&mut s, 3, put("api", &[], &["timeout"], None));
    assert!(
        e.to_string().contains("\"timeout\" is a required property"),
        "{e}"
    );
    committed(&run(&mut s, 4, put("api", &[("timeout", "5")], &[], None)));

    // A schema the current config fails is refused, and so is one that is not a schema.
    let strict = r#"{"properties": {"timeout": {"maximum": 3}}}"#;
    let e = refused(&mut s, 5, set_schema("api", Some(strict)));
    assert_eq!(
        (e.code(), e.field()),
        (ErrorCode::InvalidArgument, "schema")
    );
    assert!(
        e.to_string()
            .starts_with("the current config of api (version 2) fails this schema"),
        "{e}"
    );
    let e = refused(&mut s, 5, set_schema("api", Some(r#"{"type": 12}"#)));
    assert_eq!(
        (e.code(), e.field()),
        (ErrorCode::InvalidArgument, "schema")
    );
    let e = refused(&mut s, 5, set_schema("api", Some("{not json")));
    assert_eq!(e.field(), "schema");

    // A rollback to a version the schema now refuses is refused too.
    run(&mut s, 6, set_schema("api", None));
    run(
        &mut s,
        7,
        put("api", &[("timeout", "\"never\"")], &[], None),
    );
    run(&mut s, 8, put("api", &[("timeout", "7")], &[], None));
    run(&mut s, 9, set_schema("api", Some(schema)));
    let e = refused(&mut s, 10, rollback("api", 3));
    assert_eq!(e.field(), "set");
    assert_eq!(
        s.config().schema("api").unwrap().as_deref(),
        Some(canonical_json(schema).unwrap().as_str())
    );
}

#[test]
fn retention_folds_old_versions_into_the_base_and_old_watchers_are_told_compacted() {
    let mut s = State::default();
    for i in 1..=10u64 {
        let value = i.to_string();
        run(&mut s, i, put("api", &[("n", value.as_str())], &[], None));
    }
    match run(&mut s, 11, retention("api", 3)).result {
        Ok(Output::Config(ConfigOutput::RetentionSet { base_version })) => {
            assert_eq!(base_version, 7)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.config().history("api", 0, 100).unwrap().0.len(), 3);
    assert_eq!(values(&s, "api", 7), map(&[("n", "7")]));
    assert_eq!(values(&s, "api", 9), map(&[("n", "9")]));
    let e = s.config().snapshot("api", 6).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Compacted);
    let e = s.config().versions_after("api", 6, 10).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Compacted);
    let after: Vec<u64> = s
        .config()
        .versions_after("api", 7, 10)
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(after, [8, 9, 10]);
}

#[test]
fn bad_input_names_the_field_and_changes_nothing() {
    let mut s = State::default();
    run(&mut s, 1, put("api", &[("a", "1")], &[], None));
    let cases = [
        (
            put("api", &[], &[], None),
            ErrorCode::InvalidArgument,
            "set",
        ),
        (
            put("api", &[("a", "not json")], &[], None),
            ErrorCode::InvalidArgument,
            "set",
        ),
        (
            put("api", &[("bad key", "1")], &[], None),
            ErrorCode::InvalidArgument,
            "set",
        ),
        (
            put("api", &[("a", "1")], &["a"], None),
            ErrorCode::InvalidArgument,
            "delete",
        ),
        (
            put("api", &[], &["bad key"], None),
            ErrorCode::InvalidArgument,
            "delete",
        ),
        (
            put("no spaces", &[("a", "1")], &[], None),
            ErrorCode::InvalidArgument,
            "service",
        ),
        (
            retention("api", 0),
            ErrorCode::InvalidArgument,
            "versions_kept",
        ),
        (
            retention("api", crate::limits::CONFIG_HISTORY_VERSIONS_MAX + 1),
            ErrorCode::InvalidArgument,
            "versions_kept",
        ),
    ];
    for (command, code, field) in cases {
        let e = refused(&mut s, 2, command);
        assert_eq!((e.code(), e.field()), (code, field), "{e}");
    }
    let big = format!(
        "\"{}\"",
        "x".repeat(crate::limits::CONFIG_SNAPSHOT_BYTES_MAX)
    );
    let e = refused(&mut s, 2, put("api", &[("b", big.as_str())], &[], None));
    assert_eq!((e.code(), e.field()), (ErrorCode::InvalidArgument, "set"));
    let e = refused(&mut s, 2, put("api", &[("a", "{\"x\": }")], &[], None));
    assert!(
        e.to_string().starts_with("value of \"a\" is not JSON"),
        "{e}"
    );
}

#[derive(Clone, Debug)]
enum Op {
    Put {
        service: usize,
        set: Vec<(usize, u8)>,
        delete: Vec<usize>,
        expect: Option<u64>,
    },
    Rollback {
        service: usize,
        to: u64,
    },
    Schema {
        service: usize,
        max: Option<u8>,
    },
    Retention {
        service: usize,
        kept: u32,
    },
}

const SERVICES: [&str; 2] = ["api", "web"];
const KEYS: [&str; 4] = ["a", "b", "c", "d"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, prop::collection::vec((0..4usize, any::<u8>()), 0..3),
              prop::collection::vec(0..4usize, 0..2), prop::option::of(0..8u64))
            .prop_map(|(service, set, delete, expect)| Op::Put { service, set, delete, expect }),
        2 => (0..2usize, 0..10u64).prop_map(|(service, to)| Op::Rollback { service, to }),
        1 => (0..2usize, prop::option::of(100..=255u8))
            .prop_map(|(service, max)| Op::Schema { service, max }),
        1 => (0..2usize, 1..6u32).prop_map(|(service, kept)| Op::Retention { service, kept }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// After every command: the invariants hold; every kept version reads back exactly as the
    /// model (which keeps every version ever made) has it; versions only grow, one per commit;
    /// a refused command changes nothing.
    #[test]
    fn every_kept_version_matches_the_model_after_every_command(ops in prop::collection::vec(op(), 1..60)) {
        let mut s = State::default();
        let mut model: Vec<Vec<BTreeMap<String, String>>> = vec![vec![BTreeMap::new()]; 2];
        for (at, op) in ops.into_iter().enumerate() {
            let at = at as u64 + 1;
            let (service, command) = match op {
                Op::Put { service, set, delete, expect } => {
                    let set: BTreeMap<String, String> = set.iter().map(|(k, v)| (KEYS[*k].to_owned(), v.to_string())).collect();
                    let delete: BTreeSet<String> = delete.iter().map(|k| KEYS[*k].to_owned()).collect();
                    (service, Command::Config(ConfigCommand::Put(config::Put { service: SERVICES[service].into(), set, delete, expected_version: expect })))
                }
                Op::Rollback { service, to } => (service, rollback(SERVICES[service], to)),
                Op::Schema { service, max } => {
                    let schema = max.map(|m| format!(r#"{{"additionalProperties": {{"type": "integer", "maximum": {m}}}}}"#));
                    (service, set_schema(SERVICES[service], schema.as_deref()))
                }
                Op::Retention { service, kept } => (service, retention(SERVICES[service], kept)),
            };
            let before = s.clone();
            let applied = s.apply(&crate::Request { stamp: crate::Millis(at), command });
            s.check_invariants();
            match &applied.result {
                Ok(Output::Config(ConfigOutput::Committed(v))) => {
                    prop_assert_eq!(v.version as usize, model[service].len());
                    model[service].push(values(&s, SERVICES[service], 0));
                    if let Some(to) = v.rollback_of {
                        prop_assert_eq!(&model[service][to as usize], model[service].last().unwrap());
                    }
                }
                Ok(_) => {}
                Err(_) => {
                    let mut expected = before.clone();
                    expected.advance_clock(crate::Millis(at));
                    prop_assert_eq!(&s, &expected, "a refused command changed the state");
                }
            }
            for (i, name) in SERVICES.iter().enumerate() {
                if let Some(info) = s.config().list().into_iter().find(|l| l.service == *name) {
                    prop_assert_eq!(info.version as usize, model[i].len() - 1);
                    for v in info.base_version..=info.version {
                        prop_assert_eq!(&values(&s, name, v.max(1).min(info.version)), &model[i][v.max(1).min(info.version) as usize]);
                    }
                    let replay: Vec<u64> = s.config().versions_after(name, info.base_version, usize::MAX).unwrap().iter().map(|c| c.version).collect();
                    prop_assert_eq!(replay, (info.base_version + 1..=info.version).collect::<Vec<_>>());
                }
            }
        }
    }
}
