//! `ratchet policy eval|show|check`: the policy engine on the command line, with no cluster.

#[derive(clap::Args)]
pub struct PolicyArgs {}

pub fn run(_args: PolicyArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
