//! The stage table: how enforcement escalates with a server's age.

use serde::{Deserialize, Serialize};

/// One row of the stage table. A stage runs from its `from_days` until the next stage's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub from_days: u32,
    pub throttle_min: u32,
    pub block_min: u32,
}

/// A stage as found for a given age: its 1-based number and its row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StageAt {
    pub number: u32,
    pub stage: Stage,
    /// The stage that follows, if any.
    pub next: Option<Stage>,
}

/// Finds the stage for an age in days. The table is validated (first row at day 0,
/// strictly increasing), so every non-negative age has a stage.
pub fn stage_for_age(table: &[Stage], age_days: f64) -> StageAt {
    let index = table.iter().rposition(|s| f64::from(s.from_days) <= age_days).unwrap_or(0);
    StageAt {
        number: index as u32 + 1,
        stage: table[index],
        next: table.get(index + 1).copied(),
    }
}

/// The spec's default table (enforcement.md, "Stages").
pub fn default_stages() -> Vec<Stage> {
    [
        (0, 0, 0),
        (30, 5, 0),
        (40, 10, 0),
        (50, 20, 0),
        (60, 30, 5),
        (70, 30, 10),
        (80, 30, 20),
        (90, 0, 60),
    ]
    .into_iter()
    .map(|(from_days, throttle_min, block_min)| Stage {
        from_days,
        throttle_min,
        block_min,
    })
    .collect()
}
