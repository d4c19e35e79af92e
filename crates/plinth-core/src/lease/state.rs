//! LeaseState: the live leases, their deadline index, apply and queries.

use super::error::check_ttl;
use super::{LeaseCommand, LeaseError, LeaseInfo, LeaseOutput};
use crate::lease;
use crate::limits::{LEASE_ID_MAX, LEASES_MAX};
use crate::{LeaseId, Millis};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Lease {
    ttl_ms: u64,
    deadline: Millis,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseState {
    leases: BTreeMap<LeaseId, Lease>,
    /// (deadline, id) for every lease: expiry walks it from the front.
    by_deadline: BTreeSet<(Millis, LeaseId)>,
    /// The next id `Grant` hands out when the caller chooses none.
    next_id: u64,
}

impl LeaseState {
    /// Checks a command without changing anything; `apply` of a command that passes cannot fail
    /// for a reason of its own.
    pub fn validate(&self, command: &LeaseCommand) -> Result<(), LeaseError> {
        match command {
            LeaseCommand::Grant(lease::Grant { id, ttl_ms }) => {
                check_ttl(*ttl_ms)?;
                if let Some(id) = id {
                    if id.0 == 0 {
                        return Err(LeaseError::IdZero);
                    }
                    if id.0 > LEASE_ID_MAX {
                        return Err(LeaseError::IdTooLarge { id: *id });
                    }
                    if self.leases.contains_key(id) {
                        return Err(LeaseError::AlreadyExists { id: *id });
                    }
                }
                self.check_room()
            }
            LeaseCommand::KeepAlive(lease::KeepAlive { id })
            | LeaseCommand::Revoke(lease::Revoke { id }) => self.check_alive(*id),
            LeaseCommand::Refresh(lease::Refresh) => Ok(()),
        }
    }

    /// Applies a validated command at log time `clock`. `Revoke` only removes the lease here; the
    /// caller releases what was attached to it in the same revision.
    pub fn apply(
        &mut self,
        command: &LeaseCommand,
        clock: Millis,
    ) -> Result<LeaseOutput, LeaseError> {
        self.validate(command)?;
        match command {
            LeaseCommand::Grant(lease::Grant { id, ttl_ms }) => {
                let id = match id {
                    Some(id) => *id,
                    None => self.free_id(),
                };
                debug_assert!(
                    !self.leases.contains_key(&id),
                    "L1: lease {id} granted twice"
                );
                self.next_id = self.next_id.max(id.0.saturating_add(1));
                let deadline = Millis(clock.0.saturating_add(*ttl_ms));
                self.leases.insert(
                    id,
                    Lease {
                        ttl_ms: *ttl_ms,
                        deadline,
                    },
                );
                self.by_deadline.insert((deadline, id));
                Ok(LeaseOutput::Granted(
                    self.info(id, clock).expect("just granted"),
                ))
            }
            LeaseCommand::KeepAlive(lease::KeepAlive { id }) => {
                let lease = self.leases.get(id).expect("validated");
                let deadline = Millis(clock.0.saturating_add(lease.ttl_ms));
                self.move_deadline(*id, deadline);
                Ok(LeaseOutput::KeptAlive(
                    self.info(*id, clock).expect("alive"),
                ))
            }
            LeaseCommand::Revoke(lease::Revoke { id }) => {
                self.remove(*id);
                Ok(LeaseOutput::Revoked { id: *id })
            }
            LeaseCommand::Refresh(lease::Refresh) => {
                let ids: Vec<LeaseId> = self.leases.keys().copied().collect();
                for id in &ids {
                    let lease = &self.leases[id];
                    let deadline = lease
                        .deadline
                        .max(Millis(clock.0.saturating_add(lease.ttl_ms)));
                    self.move_deadline(*id, deadline);
                }
                Ok(LeaseOutput::Refreshed {
                    leases: ids.len() as u64,
                })
            }
        }
    }

    /// Moves a live lease's deadline to `clock + ttl`, with a new ttl if one is given: a lock
    /// hold's renew.
    pub fn renew(
        &mut self,
        id: LeaseId,
        ttl_ms: Option<u64>,
        clock: Millis,
    ) -> Result<LeaseInfo, LeaseError> {
        self.check_alive(id)?;
        if let Some(ttl_ms) = ttl_ms {
            check_ttl(ttl_ms)?;
            self.leases.get_mut(&id).expect("alive").ttl_ms = ttl_ms;
        }
        let deadline = Millis(clock.0.saturating_add(self.leases[&id].ttl_ms));
        self.move_deadline(id, deadline);
        Ok(self.info(id, clock).expect("alive"))
    }

    /// Whether one more lease may be granted.
    pub fn check_room(&self) -> Result<(), LeaseError> {
        if self.leases.len() >= LEASES_MAX {
            return Err(LeaseError::TooManyLeases);
        }
        Ok(())
    }

    /// Removes and returns, in id order, every lease whose deadline is at or before `clock`.
    pub fn expire(&mut self, clock: Millis) -> Vec<LeaseId> {
        let mut expired: Vec<LeaseId> = self
            .by_deadline
            .iter()
            .take_while(|(deadline, _)| *deadline <= clock)
            .map(|(_, id)| *id)
            .collect();
        expired.sort();
        for id in &expired {
            self.remove(*id);
        }
        expired
    }

    pub fn check_alive(&self, id: LeaseId) -> Result<(), LeaseError> {
        if self.leases.contains_key(&id) {
            Ok(())
        } else {
            Err(LeaseError::NotFound { id })
        }
    }

    pub fn is_alive(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    /// The lease as seen at log time `clock`, `None` if it is not alive.
    pub fn info(&self, id: LeaseId, clock: Millis) -> Option<LeaseInfo> {
        self.leases.get(&id).map(|lease| LeaseInfo {
            id,
            ttl_ms: lease.ttl_ms,
            deadline: lease.deadline,
            remaining_ms: lease.deadline.0.saturating_sub(clock.0),
        })
    }

    /// Every live lease in id order.
    pub fn list(&self, clock: Millis) -> Vec<LeaseInfo> {
        self.leases
            .keys()
            .filter_map(|id| self.info(*id, clock))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// The earliest deadline of any live lease, so the node knows when a tick has work to do.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.by_deadline.first().map(|(deadline, _)| *deadline)
    }

    pub fn check_invariants(&self) {
        assert_eq!(
            self.by_deadline.len(),
            self.leases.len(),
            "L1: deadline index has {} entries for {} leases",
            self.by_deadline.len(),
            self.leases.len()
        );
        for (id, lease) in &self.leases {
            assert!(
                self.by_deadline.contains(&(lease.deadline, *id)),
                "L1: lease {id} missing from the deadline index at {}",
                lease.deadline
            );
            assert!(
                id.0 < self.next_id,
                "L2: lease {id} not below next_id {}",
                self.next_id
            );
        }
        assert!(
            self.leases.len() <= LEASES_MAX,
            "L3: {} leases alive",
            self.leases.len()
        );
    }

    /// The id of a lease the caller did not name: the next above every id seen. A caller's id
    /// is at most `LEASE_ID_MAX`, so counting up from it cannot wrap in any number of grants.
    fn free_id(&self) -> LeaseId {
        // Ids start at 1: 0 means "no lease" on the wire.
        LeaseId(self.next_id.max(1))
    }

    fn move_deadline(&mut self, id: LeaseId, deadline: Millis) {
        let lease = self.leases.get_mut(&id).expect("alive");
        self.by_deadline.remove(&(lease.deadline, id));
        lease.deadline = deadline;
        self.by_deadline.insert((deadline, id));
    }

    fn remove(&mut self, id: LeaseId) {
        if let Some(lease) = self.leases.remove(&id) {
            self.by_deadline.remove(&(lease.deadline, id));
        }
    }
}
