//! The connector table as apply leaves it, with the recent changes that led to it, so that
//! a watcher that saw an earlier version can be sent only what changed since.
//!
//! Fronts hold the table to tell a tenant's mail from a stranger's; sending all of it on
//! every change costs O(connectors) per write per front, which a provider with hundreds
//! of thousands of tenants cannot afford. A watcher remembers the `index` it last sent and
//! asks `changes_since` for the rest; one that fell further behind than the journal
//! reaches gets the whole table again.

use std::collections::HashMap;
use std::sync::Arc;

use ratchet_policy::connectors::{Connector, ConnectorTable};

/// How many changes the journal keeps: enough for any watcher that keeps up, small enough
/// to cost nothing (a connector is about a hundred bytes).
const JOURNAL_CHANGES: usize = 4096;

/// One connector added or removed by the entry at `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectorChange {
    pub index: u64,
    pub connector: Connector,
    pub added: bool,
}

/// What changed between two versions of the table, each connector once.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ConnectorDelta {
    pub added: Vec<Connector>,
    pub removed: Vec<Connector>,
}

#[derive(Clone, Default)]
pub struct ConnectorFeed {
    pub table: Arc<ConnectorTable>,
    /// The log index of the last change to the table (or of the state it was loaded from).
    pub index: u64,
    /// The changes after `forgotten_through`, oldest first.
    journal: imbl::Vector<ConnectorChange>,
    /// Changes at or before this index may be missing from the journal.
    forgotten_through: u64,
}

impl ConnectorFeed {
    /// A table loaded whole (at start, or from an installed snapshot) at `index`.
    pub fn loaded(table: ConnectorTable, index: u64) -> Self {
        ConnectorFeed {
            table: Arc::new(table),
            index,
            journal: imbl::Vector::new(),
            forgotten_through: index,
        }
    }

    /// The next version: `table`, which `changes` (all at indexes above `self.index`) made.
    pub fn changed(&self, table: ConnectorTable, changes: Vec<ConnectorChange>) -> Self {
        let mut next = self.clone();
        next.table = Arc::new(table);
        for change in changes {
            next.index = next.index.max(change.index);
            next.journal.push_back(change);
        }
        while next.journal.len() > JOURNAL_CHANGES {
            let oldest = next.journal.pop_front().expect("longer than the bound");
            next.forgotten_through = oldest.index;
        }
        next
    }

    /// What changed after the version at `seen` (a `self.index` of an earlier version),
    /// netted so that each connector appears once; `None` when the journal no longer
    /// reaches back that far, and the whole table must be sent.
    pub fn changes_since(&self, seen: u64) -> Option<ConnectorDelta> {
        if seen < self.forgotten_through {
            return None;
        }
        let mut last: HashMap<&Connector, bool> = HashMap::new();
        let mut order = Vec::new();
        for change in self.journal.iter().filter(|change| change.index > seen) {
            if last.insert(&change.connector, change.added).is_none() {
                order.push(&change.connector);
            }
        }
        let mut delta = ConnectorDelta::default();
        for connector in order {
            match last[connector] {
                true => delta.added.push(connector.clone()),
                false => delta.removed.push(connector.clone()),
            }
        }
        Some(delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(tenant: &str, cidr: &str) -> Connector {
        Connector {
            tenant: tenant.into(),
            cidr: Some(cidr.parse().unwrap()),
            cert_name: None,
        }
    }

    fn change(index: u64, connector: &Connector, added: bool) -> ConnectorChange {
        ConnectorChange {
            index,
            connector: connector.clone(),
            added,
        }
    }

    #[test]
    fn a_watcher_gets_each_connector_once_as_its_last_change_left_it() {
        let (a, b, c) = (
            connector("a", "10.0.0.0/8"),
            connector("b", "10.1.0.0/16"),
            connector("c", "10.2.0.0/16"),
        );
        let start = ConnectorFeed::loaded(ConnectorTable::new([a.clone()]), 5);
        let next = start.changed(
            ConnectorTable::new([b.clone()]),
            vec![change(6, &b, true), change(7, &c, true), change(7, &a, false), change(8, &c, false)],
        );
        assert_eq!(next.index, 8);
        assert_eq!(
            next.changes_since(5),
            Some(ConnectorDelta {
                added: vec![b.clone()],
                removed: vec![c.clone(), a.clone()],
            })
        );
        assert_eq!(
            next.changes_since(7),
            Some(ConnectorDelta {
                added: vec![],
                removed: vec![c],
            })
        );
        assert_eq!(next.changes_since(8), Some(ConnectorDelta::default()));
        assert_eq!(next.changes_since(4), None, "from before the load: the whole table");
    }

    #[test]
    fn a_watcher_behind_the_journal_gets_the_whole_table() {
        let a = connector("a", "10.0.0.0/8");
        let mut feed = ConnectorFeed::loaded(ConnectorTable::default(), 0);
        for index in 1..=JOURNAL_CHANGES as u64 + 10 {
            feed = feed.changed(ConnectorTable::default(), vec![change(index, &a, index % 2 == 1)]);
        }
        assert_eq!(feed.changes_since(9), None);
        assert_eq!(
            feed.changes_since(10),
            Some(ConnectorDelta {
                added: vec![],
                removed: vec![a],
            }),
            "the journal holds every change after index 10"
        );
    }
}
