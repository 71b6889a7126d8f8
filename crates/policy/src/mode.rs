//! Enforcement modes: whether the verdict the rules reach is given, only reported, or not
//! reached at all.
//!
//! A tenant is in `enforce` or `report-only` mode (`ratchet ctl tenant mode`); a product of
//! the policy is in `enforce`, `report-only` or `off` (`mode = ...` in its `[[product]]`).
//! A server gets the least enforcing of its tenant's mode and its product's: in
//! `report-only` its verdict is computed, counted and reported (`would_verdict`) but its
//! mail is accepted; `off`, its product is not enforced at all (no clock, no stage). The
//! rule lives here, once, so that the decider, the report and the tests agree on it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a product, or a server, is enforced. Ordered from most to least enforcing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Verdicts are given: throttled and blocked mail is refused.
    #[default]
    Enforce,
    /// Verdicts are computed, counted and reported, but mail is always accepted.
    ReportOnly,
    /// Not enforced at all: no clock starts, no stage, every message accepted.
    Off,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::ReportOnly => "report-only",
            Mode::Off => "off",
        }
    }

    /// For `skip_serializing_if`: a product in the default mode writes no `mode` key.
    pub fn is_enforce(&self) -> bool {
        *self == Mode::Enforce
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tenant's mode: a tenant is enforced or report-only; only a product can be off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TenantMode {
    #[default]
    Enforce,
    ReportOnly,
}

impl TenantMode {
    /// Every tenant mode, in the order `--help` lists them.
    pub const ALL: [TenantMode; 2] = [TenantMode::Enforce, TenantMode::ReportOnly];

    pub fn as_str(self) -> &'static str {
        Mode::from(self).as_str()
    }
}

impl fmt::Display for TenantMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<TenantMode> for Mode {
    fn from(mode: TenantMode) -> Mode {
        match mode {
            TenantMode::Enforce => Mode::Enforce,
            TenantMode::ReportOnly => Mode::ReportOnly,
        }
    }
}

/// A word that is not a tenant mode, named in the refusal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a tenant mode: enforce or report-only")]
pub struct UnknownTenantMode(pub String);

impl FromStr for TenantMode {
    type Err = UnknownTenantMode;

    fn from_str(word: &str) -> Result<Self, Self::Err> {
        TenantMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == word)
            .ok_or_else(|| UnknownTenantMode(word.to_owned()))
    }
}

/// The mode a server of a tenant in `tenant` mode, of a product in `product` mode, is in:
/// the least enforcing of the two.
pub fn effective_mode(tenant: TenantMode, product: Mode) -> Mode {
    Mode::from(tenant).max(product)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_enforcing_mode_wins() {
        use Mode::*;
        let cases = [
            (TenantMode::Enforce, Enforce, Enforce),
            (TenantMode::Enforce, ReportOnly, ReportOnly),
            (TenantMode::Enforce, Off, Off),
            (TenantMode::ReportOnly, Enforce, ReportOnly),
            (TenantMode::ReportOnly, ReportOnly, ReportOnly),
            (TenantMode::ReportOnly, Off, Off),
        ];
        for (tenant, product, expected) in cases {
            assert_eq!(effective_mode(tenant, product), expected, "tenant {tenant}, product {product}");
        }
    }

    #[test]
    fn mode_words_are_their_serialised_names() {
        for mode in [Mode::Enforce, Mode::ReportOnly, Mode::Off] {
            assert_eq!(serde_json::to_value(mode).unwrap(), mode.as_str());
        }
        for mode in TenantMode::ALL {
            assert_eq!(serde_json::to_value(mode).unwrap(), mode.as_str());
            assert_eq!(mode.as_str().parse::<TenantMode>(), Ok(mode));
        }
    }

    #[test]
    fn an_unknown_tenant_mode_is_named() {
        let refused = "sometimes".parse::<TenantMode>().unwrap_err();
        assert_eq!(refused.to_string(), "\"sometimes\" is not a tenant mode: enforce or report-only");
        assert!("off".parse::<TenantMode>().is_err(), "only a product can be off");
    }
}
