//! Which engines share a compiler state, exactly.
//!
//! A cell compiled for a state assumes every variable of that state exists on the engine that
//! runs it; an engine missing one aborts. So engines are kept in groups whose members are known to
//! hold the same state, and a cell is compiled once per group it touches. A cell that targets part
//! of a group splits it; an engine that restarts (a new incarnation) joins the group of fresh
//! engines; groups whose states have the same lineage merge again.

use std::collections::{BTreeMap, BTreeSet};

use crate::EngineId;

/// One group: its state (whatever the compiler uses), members with their incarnations, and the
/// lineage of its state (equal lineage = equal state).
pub struct Group<S> {
    pub state: S,
    pub lineage: u64,
    pub members: BTreeMap<EngineId, u64>,
}

/// All groups, plus the state a fresh engine starts in.
pub struct Groups<S> {
    fresh: S,
    groups: Vec<Group<S>>,
    next_lineage: u64,
}

/// The lineage of the fresh state.
const FRESH: u64 = 0;

impl<S: Clone> Groups<S> {
    pub fn new(fresh: S) -> Self {
        Groups {
            fresh,
            groups: Vec::new(),
            next_lineage: FRESH + 1,
        }
    }

    /// Brings membership in line with the live engines (id to incarnation): the dead and the
    /// replaced leave, new processes join the fresh group, equal lineages merge.
    pub fn sync(&mut self, live: &BTreeMap<EngineId, u64>) {
        for group in &mut self.groups {
            group.members.retain(|id, inc| live.get(id) == Some(inc));
        }
        self.groups.retain(|g| !g.members.is_empty());
        for (&id, &incarnation) in live {
            if self.groups.iter().any(|g| g.members.contains_key(&id)) {
                continue;
            }
            match self.groups.iter_mut().find(|g| g.lineage == FRESH) {
                Some(group) => {
                    group.members.insert(id, incarnation);
                }
                None => self.groups.push(Group {
                    state: self.fresh.clone(),
                    lineage: FRESH,
                    members: BTreeMap::from([(id, incarnation)]),
                }),
            }
        }
        self.merge();
    }

    fn merge(&mut self) {
        let mut merged: Vec<Group<S>> = Vec::new();
        for group in self.groups.drain(..) {
            match merged.iter_mut().find(|g| g.lineage == group.lineage) {
                Some(existing) => existing.members.extend(group.members),
                None => merged.push(group),
            }
        }
        self.groups = merged;
    }

    /// Splits groups so that `targets` is exactly a union of groups; returns their indices.
    pub fn partition(&mut self, targets: &[EngineId]) -> Vec<usize> {
        let wanted: BTreeSet<EngineId> = targets.iter().copied().collect();
        let mut chosen = Vec::new();
        let count = self.groups.len();
        for index in 0..count {
            let inside: BTreeMap<EngineId, u64> = self.groups[index]
                .members
                .iter()
                .filter(|(id, _)| wanted.contains(id))
                .map(|(id, inc)| (*id, *inc))
                .collect();
            if inside.is_empty() {
                continue;
            }
            if inside.len() == self.groups[index].members.len() {
                chosen.push(index);
                continue;
            }
            let group = &mut self.groups[index];
            group.members.retain(|id, _| !inside.contains_key(id));
            let split = Group {
                state: group.state.clone(),
                lineage: group.lineage,
                members: inside,
            };
            self.groups.push(split);
            chosen.push(self.groups.len() - 1);
        }
        chosen
    }

    pub fn group(&self, index: usize) -> &Group<S> {
        &self.groups[index]
    }

    /// The group's cell ran and left it in `state`. If the cell `changed` what later cells
    /// compile against, the group gets a lineage of its own; if not (statements that defined
    /// nothing), it keeps its lineage and merges back with the engines that did not run it.
    pub fn advance(&mut self, index: usize, state: S, changed: bool) {
        let group = &mut self.groups[index];
        group.state = state;
        if changed {
            group.lineage = self.next_lineage;
            self.next_lineage += 1;
        }
    }

    /// How many groups there are now (a diagnostic).
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether no engine has run anything yet.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(ids: &[(EngineId, u64)]) -> BTreeMap<EngineId, u64> {
        ids.iter().copied().collect()
    }

    fn members<S: Clone>(groups: &Groups<S>, index: usize) -> Vec<EngineId> {
        groups.group(index).members.keys().copied().collect()
    }

    #[test]
    fn new_engines_share_the_fresh_group() {
        let mut g = Groups::new("fresh");
        g.sync(&live(&[(0, 1), (1, 2), (2, 3), (3, 4)]));
        assert_eq!(g.len(), 1);
        assert_eq!(g.partition(&[0, 1, 2, 3]), vec![0]);
    }

    #[test]
    fn a_subset_splits_and_diverges_until_it_is_compiled_again() {
        let mut g = Groups::new("fresh");
        g.sync(&live(&[(0, 1), (1, 2), (2, 3), (3, 4)]));
        let parts = g.partition(&[0, 1]);
        assert_eq!(parts.len(), 1);
        assert_eq!(members(&g, parts[0]), vec![0, 1]);
        g.advance(parts[0], "with x", true);
        g.sync(&live(&[(0, 1), (1, 2), (2, 3), (3, 4)]));
        assert_eq!(g.len(), 2);
        // A cell on all engines now compiles once per group.
        let parts = g.partition(&[0, 1, 2, 3]);
        assert_eq!(parts.len(), 2);
        let states: Vec<&str> = parts.iter().map(|&i| g.group(i).state).collect();
        assert!(states.contains(&"with x") && states.contains(&"fresh"));
    }

    #[test]
    fn a_split_without_progress_merges_back() {
        let mut g = Groups::new("fresh");
        g.sync(&live(&[(0, 1), (1, 2)]));
        g.partition(&[0]);
        assert_eq!(g.len(), 2);
        g.sync(&live(&[(0, 1), (1, 2)]));
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn a_subset_cell_that_defines_nothing_does_not_diverge() {
        let mut g = Groups::new("fresh");
        g.sync(&live(&[(0, 1), (1, 2), (2, 3)]));
        let parts = g.partition(&[1]);
        g.advance(parts[0], "fresh after a println", false);
        g.sync(&live(&[(0, 1), (1, 2), (2, 3)]));
        assert_eq!(g.len(), 1);
    }

    #[test]
    fn a_restarted_engine_is_fresh_again() {
        let mut g = Groups::new("fresh");
        g.sync(&live(&[(0, 1), (1, 2)]));
        let all = g.partition(&[0, 1]);
        g.advance(all[0], "with x", true);
        // Engine 1 restarted: a new incarnation.
        g.sync(&live(&[(0, 1), (1, 7)]));
        assert_eq!(g.len(), 2);
        let parts = g.partition(&[1]);
        assert_eq!(g.group(parts[0]).state, "fresh");
        assert_eq!(g.group(parts[0]).members[&1], 7);
    }

    #[test]
    fn dead_engines_leave() {
        let mut g = Groups::new("fresh");
        g.sync(&live(&[(0, 1), (1, 2)]));
        g.sync(&live(&[(0, 1)]));
        assert_eq!(members(&g, 0), vec![0]);
        assert!(g.partition(&[1]).is_empty());
    }
}
