//! KvState: the ordered map, the lease index, the event history, apply and queries.

use super::error::KeyField;
use super::{
    Compare, CompareOp, CompareTarget, Event, EventKind, KeySpan, KeyValue, KvCommand, KvError,
    KvOutput, RangeOutput, RangeRequest, Txn, TxnOp, TxnOpOutput,
};
use crate::kv;
use crate::lease::LeaseState;
use crate::limits::{
    HISTORY_EVENTS_MAX, HISTORY_RETENTION_MS, KEY_BYTES_MAX, RANGE_BYTES_MAX, RANGE_LIMIT_MAX,
    TXN_COMPARES_MAX, TXN_OPS_MAX, VALUE_BYTES_MAX,
};
use crate::lock::LockState;
use crate::names::check_name;
use crate::state::Ctx;
use crate::{LeaseId, Millis, Revision};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct HistoryEntry {
    /// Log time of the command that produced the event, for retention.
    at: Millis,
    event: Event,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvState {
    #[serde(with = "crate::codec::byte_keys")]
    map: BTreeMap<Vec<u8>, KeyValue>,
    /// lease → the keys that carry it, so that a lease's end deletes them without a scan.
    #[serde(with = "crate::codec::byte_sets")]
    by_lease: BTreeMap<LeaseId, BTreeSet<Vec<u8>>>,
    history: VecDeque<HistoryEntry>,
    compacted_revision: Revision,
}

impl KvState {
    /// Checks the shape of a command against the limits, without looking at the data. The server
    /// calls it before proposing, so that a bad request never reaches the log.
    pub fn validate(command: &KvCommand) -> Result<(), KvError> {
        match command {
            KvCommand::Put(kv::Put { key, value, .. }) => check_put(key, value),
            KvCommand::Delete(kv::Delete { span }) => check_span(span),
            KvCommand::Txn(txn) => check_txn(txn),
            KvCommand::Compact(kv::Compact { .. }) => Ok(()),
        }
    }

    pub fn apply(
        &mut self,
        command: &KvCommand,
        leases: &LeaseState,
        locks: &LockState,
        ctx: &mut Ctx,
    ) -> Result<KvOutput, KvError> {
        Self::validate(command)?;
        match command {
            KvCommand::Put(kv::Put { key, value, lease }) => {
                check_lease(leases, *lease)?;
                let prev = self.put(key, value, *lease, ctx);
                Ok(KvOutput::Put { prev })
            }
            KvCommand::Delete(kv::Delete { span }) => Ok(KvOutput::Delete {
                deleted: self.delete(span, ctx),
            }),
            KvCommand::Txn(txn) => self.txn(txn, leases, locks, ctx),
            KvCommand::Compact(kv::Compact { revision }) => {
                let current = ctx.revision.0.saturating_sub(1);
                if revision.0 > current {
                    return Err(KvError::FutureRevision {
                        revision: *revision,
                        current: Revision(current),
                    });
                }
                self.compact(*revision);
                Ok(KvOutput::Compact {
                    compacted_revision: self.compacted_revision,
                })
            }
        }
    }

    pub fn get(&self, key: &[u8]) -> Option<&KeyValue> {
        self.map.get(key)
    }

    pub fn range(&self, request: &RangeRequest) -> Result<RangeOutput, KvError> {
        check_span(&request.span)?;
        if request.limit as usize > RANGE_LIMIT_MAX {
            return Err(KvError::LimitTooLarge {
                limit: request.limit,
            });
        }
        let limit = if request.limit == 0 {
            RANGE_LIMIT_MAX
        } else {
            request.limit as usize
        };
        let mut kvs = Vec::new();
        let mut count = 0u64;
        let (mut bytes, mut full) = (0usize, false);
        for kv in self.span_iter(&request.span) {
            count += 1;
            if request.count_only || full || kvs.len() >= limit {
                continue;
            }
            let size = kv.key.len() + if request.keys_only { 0 } else { kv.value.len() };
            if !kvs.is_empty() && bytes + size > RANGE_BYTES_MAX {
                full = true;
                continue;
            }
            bytes += size;
            let mut kv = kv.clone();
            if request.keys_only {
                kv.value.clear();
            }
            kvs.push(kv);
        }
        let more = count > kvs.len() as u64 && !request.count_only;
        Ok(RangeOutput { kvs, more, count })
    }

    /// Every event with a revision after `after`, in order, at most `max` of them (more may
    /// follow); `Compacted` if some of them are gone.
    pub fn events_after(&self, after: Revision, max: usize) -> Result<Vec<Event>, KvError> {
        if after < self.compacted_revision {
            return Err(KvError::Compacted {
                revision: after,
                compacted_revision: self.compacted_revision,
            });
        }
        let start = self
            .history
            .partition_point(|h| h.event.revision() <= after);
        Ok(self
            .history
            .iter()
            .skip(start)
            .take(max)
            .map(|h| h.event.clone())
            .collect())
    }

    /// The keys carrying `lease`, in key order.
    pub fn lease_keys(&self, lease: LeaseId) -> Vec<Vec<u8>> {
        self.by_lease
            .get(&lease)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn compacted_revision(&self) -> Revision {
        self.compacted_revision
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Deletes every key carrying `lease`, in the revision of `ctx`. Called when the lease ends.
    pub fn release_lease(&mut self, lease: LeaseId, ctx: &mut Ctx) {
        let keys = self.by_lease.remove(&lease).unwrap_or_default();
        for key in keys {
            self.delete_key(&key, ctx);
        }
    }

    /// Drops history beyond the retention limits, whole revisions at a time.
    pub fn trim_history(&mut self, clock: Millis) {
        while let Some(front) = self.history.front() {
            let too_many = self.history.len() > HISTORY_EVENTS_MAX;
            let too_old = front.at.0.saturating_add(HISTORY_RETENTION_MS) < clock.0;
            if !(too_many || too_old) {
                break;
            }
            let revision = front.event.revision();
            self.compact(revision);
        }
    }

    pub fn check_invariants(&self, revision: Revision, leases: &LeaseState) {
        for (key, kv) in &self.map {
            assert_eq!(&kv.key, key, "K1: entry filed under another key");
            assert!(
                kv.create_revision <= kv.mod_revision && kv.mod_revision <= revision,
                "K1: key {key:?} has create {} mod {} at revision {revision}",
                kv.create_revision,
                kv.mod_revision
            );
            assert!(kv.version >= 1, "K1: key {key:?} has version 0");
            if let Some(lease) = kv.lease {
                assert!(
                    leases.is_alive(lease),
                    "K2: key {key:?} carries dead lease {lease}"
                );
                assert!(
                    self.by_lease
                        .get(&lease)
                        .is_some_and(|keys| keys.contains(key)),
                    "K2: key {key:?} missing from the index of lease {lease}"
                );
            }
        }
        for (lease, keys) in &self.by_lease {
            assert!(!keys.is_empty(), "K2: empty key set kept for lease {lease}");
            for key in keys {
                assert_eq!(
                    self.map.get(key).and_then(|kv| kv.lease),
                    Some(*lease),
                    "K2: lease {lease} indexes key {key:?} that does not carry it"
                );
            }
        }
        let mut last = self.compacted_revision;
        for h in &self.history {
            let r = h.event.revision();
            assert!(
                r > self.compacted_revision && r <= revision && r >= last,
                "K3: history event at {r} out of order or range (compacted {}, previous {last}, revision {revision})",
                self.compacted_revision
            );
            last = r;
        }
    }

    fn compact(&mut self, revision: Revision) {
        if revision <= self.compacted_revision {
            return;
        }
        while self
            .history
            .front()
            .is_some_and(|h| h.event.revision() <= revision)
        {
            self.history.pop_front();
        }
        self.compacted_revision = revision;
    }

    fn span_iter<'a>(&'a self, span: &'a KeySpan) -> Box<dyn Iterator<Item = &'a KeyValue> + 'a> {
        match span {
            KeySpan::Key(key) => Box::new(self.map.get(key).into_iter()),
            KeySpan::Prefix(prefix) => Box::new(
                self.map
                    .range::<Vec<u8>, _>((Bound::Included(prefix), Bound::Unbounded))
                    .take_while(move |(k, _)| k.starts_with(prefix))
                    .map(|(_, kv)| kv),
            ),
            KeySpan::Range { start, end } => Box::new(
                self.map
                    .range::<Vec<u8>, _>((Bound::Included(start), Bound::Excluded(end)))
                    .map(|(_, kv)| kv),
            ),
        }
    }

    fn put(
        &mut self,
        key: &[u8],
        value: &[u8],
        lease: Option<LeaseId>,
        ctx: &mut Ctx,
    ) -> Option<KeyValue> {
        let prev = self.map.get(key).cloned();
        let (create_revision, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (ctx.revision, 1),
        };
        if let Some(old) = prev.as_ref().and_then(|p| p.lease) {
            self.unindex_lease(old, key);
        }
        if let Some(new) = lease {
            self.by_lease.entry(new).or_default().insert(key.to_vec());
        }
        let kv = KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            create_revision,
            mod_revision: ctx.revision,
            version,
            lease,
        };
        self.map.insert(key.to_vec(), kv.clone());
        self.record(
            Event {
                kind: EventKind::Put,
                kv,
            },
            ctx,
        );
        prev
    }

    fn delete(&mut self, span: &KeySpan, ctx: &mut Ctx) -> Vec<KeyValue> {
        let keys: Vec<Vec<u8>> = self.span_iter(span).map(|kv| kv.key.clone()).collect();
        keys.iter()
            .filter_map(|key| self.delete_key(key, ctx))
            .collect()
    }

    fn delete_key(&mut self, key: &[u8], ctx: &mut Ctx) -> Option<KeyValue> {
        let prev = self.map.remove(key)?;
        if let Some(lease) = prev.lease {
            self.unindex_lease(lease, key);
        }
        let tombstone = KeyValue {
            key: key.to_vec(),
            value: Vec::new(),
            create_revision: prev.create_revision,
            mod_revision: ctx.revision,
            version: 0,
            lease: None,
        };
        self.record(
            Event {
                kind: EventKind::Delete,
                kv: tombstone,
            },
            ctx,
        );
        Some(prev)
    }

    fn unindex_lease(&mut self, lease: LeaseId, key: &[u8]) {
        if let Some(keys) = self.by_lease.get_mut(&lease) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_lease.remove(&lease);
            }
        }
    }

    fn record(&mut self, event: Event, ctx: &mut Ctx) {
        ctx.changed = true;
        self.history.push_back(HistoryEntry {
            at: ctx.clock,
            event: event.clone(),
        });
        ctx.events.push(event);
    }

    fn txn(
        &mut self,
        txn: &Txn,
        leases: &LeaseState,
        locks: &LockState,
        ctx: &mut Ctx,
    ) -> Result<KvOutput, KvError> {
        let succeeded = txn
            .compares
            .iter()
            .all(|c| self.holds(c, leases, locks, ctx.clock));
        let ops = if succeeded { &txn.then } else { &txn.otherwise };
        // Every lease is checked before anything changes, so a branch applies whole or not at all.
        for op in ops {
            if let TxnOp::Put { lease, .. } = op {
                check_lease(leases, *lease)?;
            }
        }
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(match op {
                TxnOp::Put { key, value, lease } => TxnOpOutput::Put {
                    prev: self.put(key, value, *lease, ctx),
                },
                TxnOp::Delete { span } => TxnOpOutput::Delete {
                    deleted: self.delete(span, ctx),
                },
                TxnOp::Range(request) => TxnOpOutput::Range(self.range(request)?),
            });
        }
        Ok(KvOutput::Txn(kv::TxnOutput { succeeded, results }))
    }

    fn holds(
        &self,
        compare: &Compare,
        leases: &LeaseState,
        locks: &LockState,
        clock: Millis,
    ) -> bool {
        if let CompareTarget::Fence { lock, token } = &compare.target {
            let current = locks.is_current(lock, *token, leases, clock);
            return match compare.op {
                CompareOp::Equal => current,
                _ => !current,
            };
        }
        let kv = self.map.get(&compare.key);
        let ordering = match &compare.target {
            CompareTarget::Value(v) => match kv {
                Some(kv) => kv.value.as_slice().cmp(v.as_slice()),
                None => return false,
            },
            CompareTarget::Version(v) => kv.map_or(0, |kv| kv.version).cmp(v),
            CompareTarget::CreateRevision(r) => {
                kv.map_or(Revision(0), |kv| kv.create_revision).cmp(r)
            }
            CompareTarget::ModRevision(r) => kv.map_or(Revision(0), |kv| kv.mod_revision).cmp(r),
            CompareTarget::Lease(l) => kv.and_then(|kv| kv.lease).unwrap_or(LeaseId(0)).cmp(l),
            CompareTarget::Fence { .. } => unreachable!("answered above"),
        };
        match compare.op {
            CompareOp::Equal => ordering.is_eq(),
            CompareOp::NotEqual => ordering.is_ne(),
            CompareOp::Greater => ordering.is_gt(),
            CompareOp::Less => ordering.is_lt(),
        }
    }
}

fn check_key(field: KeyField, key: &[u8]) -> Result<(), KvError> {
    if key.is_empty() {
        return Err(KvError::KeyEmpty { field });
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(KvError::KeyTooLong {
            field,
            key_bytes: key.len(),
        });
    }
    Ok(())
}

fn check_put(key: &[u8], value: &[u8]) -> Result<(), KvError> {
    check_key(KeyField::Key, key)?;
    if value.len() > VALUE_BYTES_MAX {
        return Err(KvError::ValueTooLarge {
            value_bytes: value.len(),
        });
    }
    Ok(())
}

fn check_span(span: &KeySpan) -> Result<(), KvError> {
    match span {
        KeySpan::Key(key) => check_key(KeyField::Key, key),
        KeySpan::Prefix(prefix) if prefix.len() > KEY_BYTES_MAX => Err(KvError::KeyTooLong {
            field: KeyField::Prefix,
            key_bytes: prefix.len(),
        }),
        KeySpan::Prefix(_) => Ok(()),
        KeySpan::Range { start, end } => {
            check_key(KeyField::Key, start)?;
            check_key(KeyField::RangeEnd, end)?;
            if end < start {
                return Err(KvError::RangeEndBeforeStart);
            }
            Ok(())
        }
    }
}

fn check_txn(txn: &Txn) -> Result<(), KvError> {
    if txn.compares.len() > TXN_COMPARES_MAX {
        return Err(KvError::TooManyCompares {
            compares: txn.compares.len(),
        });
    }
    for compare in &txn.compares {
        match &compare.target {
            CompareTarget::Fence { lock, .. } => {
                check_name(lock).map_err(KvError::FenceLock)?;
                if !matches!(compare.op, CompareOp::Equal | CompareOp::NotEqual) {
                    return Err(KvError::FenceOp {
                        op: format!("{:?}", compare.op).to_uppercase(),
                    });
                }
            }
            _ => check_key(KeyField::Key, &compare.key)?,
        }
    }
    for ops in [&txn.then, &txn.otherwise] {
        if ops.len() > TXN_OPS_MAX {
            return Err(KvError::TooManyOps { ops: ops.len() });
        }
        for op in ops {
            match op {
                TxnOp::Put { key, value, .. } => check_put(key, value)?,
                TxnOp::Delete { span } => check_span(span)?,
                TxnOp::Range(request) => {
                    check_span(&request.span)?;
                    if request.limit as usize > RANGE_LIMIT_MAX {
                        return Err(KvError::LimitTooLarge {
                            limit: request.limit,
                        });
                    }
                }
            }
        }
    }
    Ok(())
}

fn check_lease(leases: &LeaseState, lease: Option<LeaseId>) -> Result<(), KvError> {
    match lease {
        Some(lease) if !leases.is_alive(lease) => Err(KvError::LeaseNotFound { lease }),
        _ => Ok(()),
    }
}
