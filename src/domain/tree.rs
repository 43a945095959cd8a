//! A VM's snapshot tree and the one tree rule: closing a set of snapshots re-attaches the
//! survivors to their nearest surviving ancestor and moves the active marker the same way.

use std::collections::{HashMap, HashSet};

use super::SnapshotState;

/// One non-closed snapshot, as the rules see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The snapshot's id.
    pub id: i64,
    /// Its parent snapshot's id; `None` for a root.
    pub parent_id: Option<i64>,
    /// The name the user typed (unique among the VM's non-closed snapshots), not the host's.
    pub name: String,
    /// Its state now.
    pub state: SnapshotState,
    /// Whether it is the VM's active snapshot (at most one node is).
    pub active: bool,
    /// Kept from every delete until unprotected.
    pub protected: bool,
    /// When the expiry sweep may delete it; `None`: never.
    pub expires_at: Option<chrono::NaiveDateTime>,
}

/// What an action or a robot step changes in a VM's tree, applied in one transaction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    /// New states, in order.
    pub states: Vec<(i64, SnapshotState)>,
    /// New parents (`None`: becomes a root).
    pub parents: Vec<(i64, Option<i64>)>,
    /// `Some(x)` when the VM's active snapshot becomes `x` (`None`: no active snapshot).
    pub active: Option<Option<i64>>,
}

/// A VM's non-closed snapshots.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    /// The snapshots, in the order they were given or inserted.
    nodes: Vec<Node>,
    /// Each snapshot's id to its position in `nodes`; rebuilt when closed snapshots leave.
    index: HashMap<i64, usize>,
}

impl Tree {
    pub fn new(nodes: Vec<Node>) -> Self {
        let index = nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
        Self { nodes, index }
    }

    pub fn get(&self, id: i64) -> Option<&Node> {
        self.index.get(&id).map(|&i| &self.nodes[i])
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The snapshot the VM runs from.
    pub fn active(&self) -> Option<i64> {
        self.nodes.iter().find(|n| n.active).map(|n| n.id)
    }

    pub fn has_name(&self, name: &str) -> bool {
        self.nodes.iter().any(|n| n.name == name)
    }

    /// `id` and all its descendants, parents before children.
    pub fn subtree(&self, id: i64) -> Vec<i64> {
        let mut out = vec![id];
        let mut i = 0;
        while i < out.len() {
            let parent = out[i];
            out.extend(
                self.nodes
                    .iter()
                    .filter(|n| n.parent_id == Some(parent))
                    .map(|n| n.id),
            );
            i += 1;
        }
        out
    }

    /// Adds a snapshot just created.
    pub fn insert(&mut self, node: Node) {
        self.index.insert(node.id, self.nodes.len());
        self.nodes.push(node);
    }

    /// The tree after `changes` were written: what the same transaction sees next,
    /// without reading it back. Snapshots that close leave it.
    pub fn apply(&mut self, changes: &Changes) {
        for &(child, parent) in &changes.parents {
            if let Some(&i) = self.index.get(&child) {
                self.nodes[i].parent_id = parent;
            }
        }
        if let Some(active) = changes.active {
            for node in &mut self.nodes {
                node.active = Some(node.id) == active;
            }
        }
        for &(id, state) in &changes.states {
            if let Some(&i) = self.index.get(&id) {
                self.nodes[i].state = state;
            }
        }
        if changes
            .states
            .iter()
            .any(|(_, s)| *s == SnapshotState::Closed)
        {
            let nodes = std::mem::take(&mut self.nodes);
            *self = Tree::new(
                nodes
                    .into_iter()
                    .filter(|n| n.state != SnapshotState::Closed)
                    .collect(),
            );
        }
    }

    /// The first ancestor of `id` (itself excluded) that is not in `gone`.
    fn surviving_ancestor(&self, id: i64, gone: &HashSet<i64>) -> Option<i64> {
        let mut parent = self.get(id).and_then(|n| n.parent_id);
        while let Some(p) = parent.filter(|p| gone.contains(p)) {
            parent = self.get(p).and_then(|n| n.parent_id);
        }
        parent
    }

    /// Closes `ids`: each becomes CLOSED, surviving children move up to their nearest
    /// surviving ancestor, and if the active snapshot is closed, that ancestor of it
    /// becomes active.
    pub fn close(&self, ids: &[i64]) -> Changes {
        let gone: HashSet<i64> = ids.iter().copied().collect();
        let mut changes = Changes {
            states: ids.iter().map(|&id| (id, SnapshotState::Closed)).collect(),
            ..Changes::default()
        };
        for node in &self.nodes {
            if !gone.contains(&node.id) && node.parent_id.is_some_and(|p| gone.contains(&p)) {
                changes
                    .parents
                    .push((node.id, self.surviving_ancestor(node.id, &gone)));
            }
        }
        if let Some(active) = self.active().filter(|a| gone.contains(a)) {
            changes.active = Some(self.surviving_ancestor(active, &gone));
        }
        changes
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use SnapshotState::*;

    /// Builds a tree from `(id, parent)` pairs, all RUNNING, `active` marked.
    pub(crate) fn tree(pairs: &[(i64, Option<i64>)], active: Option<i64>) -> Tree {
        Tree::new(
            pairs
                .iter()
                .map(|&(id, parent_id)| Node {
                    id,
                    parent_id,
                    name: format!("s{id}"),
                    state: Running,
                    active: Some(id) == active,
                    protected: false,
                    expires_at: None,
                })
                .collect(),
        )
    }

    //      1
    //     / \
    //    2   3
    //   / \
    //  4   5
    const SHAPE: &[(i64, Option<i64>)] = &[
        (1, None),
        (2, Some(1)),
        (3, Some(1)),
        (4, Some(2)),
        (5, Some(2)),
    ];

    #[test]
    fn applied_changes_are_what_reading_the_tree_again_would_give() {
        let mut t = tree(SHAPE, Some(5));
        let changes = t.close(&[2]);
        t.apply(&changes);
        assert!(t.get(2).is_none());
        assert_eq!(t.get(4).unwrap().parent_id, Some(1));
        assert_eq!(t.active(), Some(5));
        t.apply(&Changes {
            states: vec![(3, Scrub)],
            active: Some(Some(3)),
            ..Changes::default()
        });
        assert_eq!(t.get(3).unwrap().state, Scrub);
        assert_eq!(t.active(), Some(3));
        assert!(!t.get(5).unwrap().active);
        t.insert(Node {
            id: 9,
            parent_id: Some(3),
            name: "new".into(),
            state: Requested,
            active: false,
            protected: false,
            expires_at: None,
        });
        assert_eq!(t.subtree(3), vec![3, 9]);
    }

    #[test]
    fn subtree_lists_parents_before_children() {
        assert_eq!(tree(SHAPE, None).subtree(2), vec![2, 4, 5]);
        assert_eq!(tree(SHAPE, None).subtree(1), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn closing_one_reattaches_its_children_to_its_parent() {
        let changes = tree(SHAPE, Some(3)).close(&[2]);
        assert_eq!(changes.states, vec![(2, Closed)]);
        assert_eq!(changes.parents, vec![(4, Some(1)), (5, Some(1))]);
        assert_eq!(changes.active, None, "active 3 was not closed");
    }

    #[test]
    fn closing_a_root_makes_its_children_roots() {
        let changes = tree(SHAPE, None).close(&[1]);
        assert_eq!(changes.parents, vec![(2, None), (3, None)]);
    }

    #[test]
    fn closing_the_active_one_activates_its_parent() {
        assert_eq!(tree(SHAPE, Some(2)).close(&[2]).active, Some(Some(1)));
        assert_eq!(tree(SHAPE, Some(1)).close(&[1]).active, Some(None));
    }

    #[test]
    fn closing_a_subtree_with_the_active_one_inside_activates_the_subtree_parent() {
        let t = tree(SHAPE, Some(5));
        let changes = t.close(&t.subtree(2));
        assert_eq!(changes.states, vec![(2, Closed), (4, Closed), (5, Closed)]);
        assert!(changes.parents.is_empty());
        assert_eq!(changes.active, Some(Some(1)));
    }

    #[test]
    fn closing_a_chain_link_skips_every_closed_ancestor() {
        let t = tree(
            &[(1, None), (2, Some(1)), (3, Some(2)), (4, Some(3))],
            Some(4),
        );
        let changes = t.close(&[2, 3]);
        assert_eq!(changes.parents, vec![(4, Some(1))]);
        assert_eq!(changes.active, None);
    }
}
