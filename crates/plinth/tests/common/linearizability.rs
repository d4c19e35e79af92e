//! A linearizability checker for register histories (Wing & Gong's search, with the memo of
//! Lowe's refinement, as in Porcupine): one history per key, each operation with its invocation
//! and completion times. A history is linearizable when every completed operation can be put at
//! one instant inside its own interval so that the sequence is a legal run of a register.
//!
//! An operation whose outcome is unknown (it timed out or failed after it may have reached the
//! server) may take effect at any instant after its invocation, or never: the search may place
//! it, and need not.

use std::collections::{BTreeMap, HashSet};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Act {
    /// Wrote this value (values are unique per history).
    Put(u64),
    /// Read this value (`None`: the key did not exist).
    Get(Option<u64>),
}

#[derive(Clone, Debug)]
pub struct Op {
    pub client: usize,
    /// Nanoseconds from the start of the test.
    pub invoke: u64,
    /// `None`: the outcome is unknown (only a put is recorded so; a failed get tells nothing).
    pub complete: Option<u64>,
    pub act: Act,
}

/// Checks every key's history; the error names the key and shows its operations.
pub fn check(histories: &BTreeMap<String, Vec<Op>>) -> Result<(), String> {
    for (key, ops) in histories {
        if !linearizable(ops) {
            let mut shown = ops.clone();
            shown.sort_by_key(|o| o.invoke);
            let lines: Vec<String> = shown
                .iter()
                .map(|o| {
                    format!(
                        "  client {} {:?} [{} .. {}]",
                        o.client,
                        o.act,
                        o.invoke,
                        o.complete.map_or("?".to_owned(), |c| c.to_string())
                    )
                })
                .collect();
            return Err(format!(
                "the history of key {key} is not linearizable:\n{}",
                lines.join("\n")
            ));
        }
    }
    Ok(())
}

/// The most search states `linearizable` visits before it gives up (a test failure, not an
/// answer): the search is exponential in the operations that overlap.
const STATES_MAX: usize = 2_000_000;

/// Whether one register's history (starting from "no value") is linearizable.
pub fn linearizable(ops: &[Op]) -> bool {
    // A put of unknown outcome whose value nobody read need never be placed, and placing it
    // could only make later reads harder to explain: leave it out. (Values are unique, so
    // "nobody read it" is exact.) What remains unknown is the few puts that were seen.
    let read: HashSet<u64> = ops
        .iter()
        .filter_map(|o| match o.act {
            Act::Get(Some(v)) => Some(v),
            _ => None,
        })
        .collect();
    let ops: Vec<&Op> = ops
        .iter()
        .filter(|o| o.complete.is_some() || matches!(o.act, Act::Put(v) if read.contains(&v)))
        .collect();
    let n = ops.len();
    let words = n.div_ceil(64).max(1);
    let required: usize = ops.iter().filter(|o| o.complete.is_some()).count();
    let mut seen: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
    // Depth-first over (placed operations, register value); `placed` counts completed ones.
    let mut stack: Vec<(Vec<u64>, Option<u64>, usize)> = vec![(vec![0; words], None, 0)];
    while let Some((done, value, placed)) = stack.pop() {
        if placed == required {
            return true;
        }
        if !seen.insert((done.clone(), value)) {
            continue;
        }
        assert!(
            seen.len() <= STATES_MAX,
            "the linearizability search passed {STATES_MAX} states on a history of {n} operations"
        );
        let is_done = |i: usize| done[i / 64] & (1 << (i % 64)) != 0;
        // An operation can go next only if it was invoked before every remaining completed
        // operation finished.
        let horizon = (0..n)
            .filter(|&i| !is_done(i))
            .filter_map(|i| ops[i].complete)
            .min()
            .unwrap_or(u64::MAX);
        for i in (0..n).filter(|&i| !is_done(i) && ops[i].invoke <= horizon) {
            let next = match ops[i].act {
                Act::Put(v) => Some(v),
                Act::Get(read) if read == value => value,
                Act::Get(_) => continue,
            };
            let mut done = done.clone();
            done[i / 64] |= 1 << (i % 64);
            let placed = placed + usize::from(ops[i].complete.is_some());
            stack.push((done, next, placed));
        }
    }
    false
}
