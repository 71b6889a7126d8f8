//! `ratchet restore`: seeds one node of a new group from a backup (`ctl snapshot save`).
//!
//! Every node of the new group is seeded from the same file with the same member list, and
//! starts where the backup ends: the backup's state, its last applied log id as the start
//! of the log, and the new members as the membership. Each member's id is derived from the
//! backup and the member's name, so that every node, seeded on its own machine, knows every
//! other's id without talking to it. Started, they elect a leader among themselves and go
//! on from the next index.

use std::path::Path;

use anyhow::{bail, Context};
use openraft::Membership;
use ratchet_store::snapshot::verify;
use ratchet_store::types::SnapshotMeta;
use ratchet_store::{Node, NodeId, StateMachine, StorageOptions, Store};

use crate::identity;

/// Seeds `data_dir` (which must be new or empty) as member `name` of `members`.
pub fn seed(
    backup: &Path,
    name: &str,
    data_dir: &Path,
    members: &[(String, String)],
    storage: StorageOptions,
) -> anyhow::Result<SnapshotMeta> {
    if !members.iter().any(|(member, _)| member == name) {
        bail!("--initial-cluster does not list this node's --name {name:?}");
    }
    let occupied = std::fs::read_dir(data_dir)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if occupied {
        bail!(
            "--data-dir {}: not empty; restore seeds a new node only (nothing was changed)",
            data_dir.display()
        );
    }
    let file = std::fs::File::open(backup).with_context(|| format!("--snapshot {}", backup.display()))?;
    let meta = verify(std::io::BufReader::new(file), ratchet_store::rocks::STATE_FAMILIES.len())
        .map_err(|e| anyhow::anyhow!("--snapshot {}: {e}", backup.display()))?;
    let nodes = members
        .iter()
        .map(|(member, address)| {
            let node = Node {
                name: member.clone(),
                address: address.clone(),
            };
            (member_id(&meta.snapshot_id, member), node)
        })
        .collect::<std::collections::BTreeMap<NodeId, Node>>();
    let voters = nodes.keys().copied().collect::<std::collections::BTreeSet<_>>();
    let membership = Membership::new(vec![voters], nodes);
    let seeded = (|| {
        identity::create(data_dir, name, member_id(&meta.snapshot_id, name))?;
        let store = Store::open(&data_dir.join("db"), storage)?;
        StateMachine::restore(store, &data_dir.join("snapshots"), backup, membership)?;
        anyhow::Ok(())
    })();
    if let Err(error) = seeded {
        // Leave nothing half-made behind: a second try starts from an empty directory.
        let _ = std::fs::remove_dir_all(data_dir);
        return Err(error);
    }
    Ok(meta)
}

/// A member's id in the group restored from `snapshot_id`: the same on every node.
fn member_id(snapshot_id: &str, name: &str) -> NodeId {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{snapshot_id}\0{name}").as_bytes());
    let bytes: [u8; 8] = digest.as_ref()[..8].try_into().expect("SHA-256 is 32 bytes");
    (u64::from_be_bytes(bytes) >> 1).max(1)
}
