//! The enforcement policy in the stored schema: it travels in the log (`SetPolicy`) and
//! sits in the state, so unlike the TOML an operator writes, it tolerates fields a newer
//! release added. Enforcement modes (a product's, a tenant's) are stored here too.

use ratchet_policy::products::Product;
use ratchet_policy::stages::Stage;
use ratchet_policy::{BuildVersion, Mode, Policy, Retention, TenantMode};

use super::{each, messages, pb, Codec, DecodeError};
use crate::schedule::VersionedPolicy;

impl Codec for VersionedPolicy {
    type Message = pb::VersionedPolicy;

    fn to_message(&self) -> pb::VersionedPolicy {
        pb::VersionedPolicy {
            version: self.version,
            policy: Some(self.policy.to_message()),
            effective_at: self.effective_at.as_ref().map(Codec::to_message),
        }
    }

    fn from_message(message: pb::VersionedPolicy) -> Result<Self, DecodeError> {
        Ok(VersionedPolicy {
            version: message.version,
            policy: super::required("policy", message.policy)?,
            effective_at: super::optional(message.effective_at)?,
        })
    }
}

impl Codec for Policy {
    type Message = pb::Policy;

    fn to_message(&self) -> pb::Policy {
        pb::Policy {
            service_name: self.service_name.clone(),
            info_url: self.info_url.clone(),
            pause_freezes_clock: self.pause_freezes_clock,
            pause_budget_days: self.pause_budget_days,
            relapse_window_days: self.relapse_window_days,
            warning_days: self.warning_days,
            stages: messages(&self.stages),
            products: messages(&self.products),
            retention: (self.retention != Retention::default()).then(|| pb::Retention {
                forget_after_days: self.retention.forget_after_days,
                keep_events_days: self.retention.keep_events_days,
            }),
        }
    }

    fn from_message(message: pb::Policy) -> Result<Self, DecodeError> {
        Ok(Policy {
            service_name: message.service_name,
            info_url: message.info_url,
            pause_freezes_clock: message.pause_freezes_clock,
            pause_budget_days: message.pause_budget_days,
            relapse_window_days: message.relapse_window_days,
            warning_days: message.warning_days,
            stages: each(message.stages)?,
            products: each(message.products)?,
            retention: message.retention.map_or_else(Retention::default, |r| Retention {
                forget_after_days: r.forget_after_days,
                keep_events_days: r.keep_events_days,
            }),
        })
    }
}

impl Codec for Stage {
    type Message = pb::Stage;

    fn to_message(&self) -> pb::Stage {
        pb::Stage {
            from_days: self.from_days,
            throttle_min: self.throttle_min,
            block_min: self.block_min,
        }
    }

    fn from_message(message: pb::Stage) -> Result<Self, DecodeError> {
        Ok(Stage {
            from_days: message.from_days,
            throttle_min: message.throttle_min,
            block_min: message.block_min,
        })
    }
}

impl Codec for Product {
    type Message = pb::Product;

    fn to_message(&self) -> pb::Product {
        pb::Product {
            name: self.name.clone(),
            from: self.from.to_string(),
            until: self.until.map(|b| b.to_string()),
            compliant_from: self.compliant_from.map(|b| b.to_string()),
            recommended: self.recommended.iter().map(BuildVersion::to_string).collect(),
            mode: mode_number(self.mode),
        }
    }

    fn from_message(message: pb::Product) -> Result<Self, DecodeError> {
        let build = |field: &'static str, text: &str| text.parse::<BuildVersion>().map_err(|e| DecodeError::invalid(field, e.to_string()));
        Ok(Product {
            from: build("product.from", &message.from)?,
            until: message.until.as_deref().map(|b| build("product.until", b)).transpose()?,
            compliant_from: message
                .compliant_from
                .as_deref()
                .map(|b| build("product.compliant_from", b))
                .transpose()?,
            recommended: message
                .recommended
                .iter()
                .map(|b| build("product.recommended", b))
                .collect::<Result<_, _>>()?,
            mode: mode_from("product.mode", message.mode)?,
            name: message.name,
        })
    }
}

/// The stored number of a mode (a protobuf enum is a number, not a message).
pub(super) fn mode_number(mode: Mode) -> i32 {
    let stored = match mode {
        Mode::Enforce => pb::EnforcementMode::Enforce,
        Mode::ReportOnly => pb::EnforcementMode::ReportOnly,
        Mode::Off => pb::EnforcementMode::Off,
    };
    stored.into()
}

pub(super) fn mode_from(field: &'static str, stored: i32) -> Result<Mode, DecodeError> {
    match pb::EnforcementMode::try_from(stored) {
        Ok(pb::EnforcementMode::Enforce) => Ok(Mode::Enforce),
        Ok(pb::EnforcementMode::ReportOnly) => Ok(Mode::ReportOnly),
        Ok(pb::EnforcementMode::Off) => Ok(Mode::Off),
        Err(_) => Err(DecodeError::invalid(field, format!("{stored} is not a mode this release knows"))),
    }
}

/// A tenant's mode: any mode but off.
pub(super) fn tenant_mode_from(field: &'static str, stored: i32) -> Result<TenantMode, DecodeError> {
    match mode_from(field, stored)? {
        Mode::Enforce => Ok(TenantMode::Enforce),
        Mode::ReportOnly => Ok(TenantMode::ReportOnly),
        Mode::Off => Err(DecodeError::invalid(field, "a tenant cannot be off, only a product")),
    }
}
