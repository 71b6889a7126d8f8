//! `ratchet ctl snapshot save FILE`: a backup, a consistent and checksummed copy of the
//! whole state that `ratchet restore` reads.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use clap::Subcommand;
use ratchet_proto::v1 as pb;
use ratchet_store::types::SnapshotMeta;
use serde::Serialize;

use super::client::refusal;
use super::output::Output;
use super::Admin;

#[derive(Subcommand)]
pub enum SnapshotCommand {
    /// Save a backup to FILE (refused if FILE exists); `ratchet restore` reads it.
    Save { file: PathBuf },
}

#[derive(Serialize)]
pub struct Saved {
    file: PathBuf,
    snapshot_id: String,
    /// The log index the saved state is at.
    index: u64,
    bytes: u64,
}

pub async fn run(admin: &mut Admin, command: SnapshotCommand) -> anyhow::Result<Saved> {
    let SnapshotCommand::Save { file } = command;
    let (meta, bytes) = save(admin, &file).await?;
    Ok(Saved {
        file,
        snapshot_id: meta.snapshot_id,
        index: meta.last_log_id.map_or(0, |id| id.index),
        bytes,
    })
}

/// Streams a backup into FILE.part, verifies it whole, and renames it to FILE: a file at
/// FILE is always a complete, checked backup.
async fn save(admin: &mut Admin, file: &Path) -> anyhow::Result<(SnapshotMeta, u64)> {
    if file.exists() {
        return Err(anyhow!("{}: already exists; nothing was written", file.display()));
    }
    let part = file.with_extension("part");
    let mut out = std::fs::File::create(&part).with_context(|| format!("{}: cannot create", part.display()))?;
    let saved = async {
        let mut stream = admin.save_snapshot(pb::SaveSnapshotRequest {}).await.map_err(refusal)?.into_inner();
        let mut bytes = 0u64;
        while let Some(chunk) = stream.message().await.map_err(refusal)? {
            out.write_all(&chunk.data)
                .with_context(|| format!("{}: cannot write", part.display()))?;
            bytes += chunk.data.len() as u64;
        }
        out.sync_all().with_context(|| format!("{}: cannot write", part.display()))?;
        let reader = std::io::BufReader::new(std::fs::File::open(&part)?);
        let meta = ratchet_store::snapshot::verify(reader, ratchet_store::rocks::STATE_FAMILIES.len())
            .map_err(|e| anyhow!("the saved snapshot does not verify: {e}"))?;
        std::fs::rename(&part, file).with_context(|| format!("{}: cannot write", file.display()))?;
        anyhow::Ok((meta, bytes))
    }
    .await;
    if saved.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    saved
}

impl Output for Saved {
    fn human(&self) {
        println!(
            "saved {} (state at index {}, {} bytes, checksum verified) to {}",
            self.snapshot_id,
            self.index,
            self.bytes,
            self.file.display()
        );
    }
}
