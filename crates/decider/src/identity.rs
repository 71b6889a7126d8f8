//! A node's identity for life: its Raft id, drawn at random when its data directory is
//! created and read back on every start. A pod ordinal or a name is not an id: a node
//! whose volume is lost comes back with a new id, and the group never mistakes it for
//! the old member.

use std::path::Path;

use anyhow::{bail, Context};
use ratchet_store::NodeId;
use serde::{Deserialize, Serialize};

const IDENTITY_FILE: &str = "identity.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub id: NodeId,
    pub name: String,
}

/// Reads the identity in `data_dir`, or creates one for `name` if the directory is new.
pub fn load_or_create(data_dir: &Path, name: &str) -> anyhow::Result<Identity> {
    let path = data_dir.join(IDENTITY_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let identity: Identity = serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))?;
        if identity.name != name {
            bail!(
                "--name {name:?} does not match {}: this data directory belongs to node {:?}",
                path.display(),
                identity.name
            );
        }
        return Ok(identity);
    }
    create(data_dir, name, rand::random_range(1..=u64::MAX >> 1))
}

/// Creates the identity of a new node with a chosen id (`ratchet restore`, where every node
/// of the new group must know every other's id before any starts).
pub fn create(data_dir: &Path, name: &str, id: NodeId) -> anyhow::Result<Identity> {
    let path = data_dir.join(IDENTITY_FILE);
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating --data-dir {}", data_dir.display()))?;
    let identity = Identity { id, name: name.to_owned() };
    let temporary = data_dir.join(format!("{IDENTITY_FILE}.new"));
    std::fs::write(&temporary, serde_json::to_vec_pretty(&identity)?).with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(identity)
}
