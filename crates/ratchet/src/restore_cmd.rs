//! `ratchet restore`: seeds one node of a new group from a backup file (see
//! `ratchet_decider::restore`). Run it once per member, with the same file and the same
//! `--initial-cluster`, then start each node with `ratchet decider`.

use std::path::PathBuf;

use ratchet_decider::DeciderConfig;

#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The backup, from `ratchet ctl snapshot save`.
    #[arg(long)]
    snapshot: PathBuf,
    /// This node's name in the new group.
    #[arg(long)]
    name: String,
    /// The new node's data directory: must not exist yet, or be empty.
    #[arg(long)]
    data_dir: PathBuf,
    /// Every member of the new group, NAME=ADDR,... (the same list for each of them).
    #[arg(long, value_delimiter = ',', value_parser = crate::decider_cmd::parse_member, required = true)]
    initial_cluster: Vec<(String, String)>,
}

pub fn run(args: RestoreArgs) -> anyhow::Result<()> {
    let storage = DeciderConfig::default().storage_options();
    let meta = ratchet_decider::restore::seed(&args.snapshot, &args.name, &args.data_dir, &args.initial_cluster, storage)?;
    let index = meta.last_log_id.map_or(0, |id| id.index);
    println!(
        "{} seeded from {} (state at index {index}) in {}; start it with: ratchet decider --name {} --data-dir {} --listen ADDR",
        args.name,
        meta.snapshot_id,
        args.data_dir.display(),
        args.name,
        args.data_dir.display()
    );
    Ok(())
}
