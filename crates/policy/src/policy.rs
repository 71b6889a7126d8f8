//! The enforcement policy: stage table, build baseline, reply texts and clock rules, as
//! one value that the cluster versions and replicates, and its TOML file format.
//!
//! A policy is validated before it is used anywhere; an invalid one is refused with an
//! error that names the broken rule, and the policy in force stays.

use serde::{Deserialize, Serialize};

use crate::products::{default_products, Product};
use crate::retention::{Retention, MAX_RETENTION_DAYS};
use crate::stages::{default_stages, Stage};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Name of the protected service in reply texts.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Where reply texts send the administrator.
    #[serde(default = "default_info_url")]
    pub info_url: String,
    /// Whether paused time is subtracted from a server's age.
    #[serde(default = "default_true")]
    pub pause_freezes_clock: bool,
    /// Days of pause each tenant may use per calendar year (UTC).
    #[serde(default = "default_pause_budget_days")]
    pub pause_budget_days: u32,
    /// A server seen out of date again within this many days of its remediation resumes
    /// its old episode; later, it starts a new one.
    #[serde(default = "default_relapse_window_days")]
    pub relapse_window_days: u32,
    /// How many days ahead tenants are told that throttling or blocking will start.
    #[serde(default = "default_warning_days")]
    pub warning_days: u32,
    /// How long servers no longer seen, and events, are kept (`[retention]`).
    #[serde(default)]
    pub retention: Retention,
    #[serde(default = "default_stages", rename = "stage")]
    pub stages: Vec<Stage>,
    #[serde(
        default = "default_products",
        rename = "product",
        deserialize_with = "crate::products::deserialize_products"
    )]
    pub products: Vec<Product>,
}

fn default_service_name() -> String {
    "Exchange Online".to_owned()
}
fn default_info_url() -> String {
    "https://aka.ms/BlockUnsafeExchange".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_pause_budget_days() -> u32 {
    90
}
fn default_relapse_window_days() -> u32 {
    30
}
fn default_warning_days() -> u32 {
    7
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            service_name: default_service_name(),
            info_url: default_info_url(),
            pause_freezes_clock: default_true(),
            pause_budget_days: default_pause_budget_days(),
            relapse_window_days: default_relapse_window_days(),
            warning_days: default_warning_days(),
            retention: Retention::default(),
            stages: default_stages(),
            products: default_products(),
        }
    }
}

/// Why a policy is refused. Each names the rule it breaks and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy file is not valid TOML for a policy: {0}")]
    Syntax(String),
    #[error("stage table is empty: at least one [[stage]] is needed")]
    EmptyStageTable,
    #[error("stage 1 must start at from_days = 0, not {0}")]
    FirstStageNotAtZero(u32),
    #[error("stages not increasing: stage {stage} starts at day {from_days}, not after stage {previous} (day {previous_from_days})")]
    StagesNotIncreasing {
        stage: usize,
        from_days: u32,
        previous: usize,
        previous_from_days: u32,
    },
    #[error("stage {stage}: {field} = {minutes} is over 60 minutes per hour")]
    MinutesOver60 { stage: usize, field: &'static str, minutes: u32 },
    #[error("stage {stage}: throttle_min + block_min = {total} is over 60 minutes per hour")]
    WindowsOver60 { stage: usize, total: u32 },
    #[error("product list is empty: at least one [[product]] is needed")]
    EmptyProductList,
    #[error("product {name:?}: until ({until}) must be after from ({from})")]
    EmptyProductRange { name: String, from: String, until: String },
    #[error("product {name:?}: compliant_from ({compliant_from}) lies outside its range")]
    CompliantFromOutsideRange { name: String, compliant_from: String },
    #[error("products {first:?} and {second:?} overlap: a build would belong to both")]
    OverlappingProducts { first: String, second: String },
    #[error("product name is empty")]
    EmptyProductName,
    #[error("{field} must not be empty")]
    EmptyText { field: &'static str },
    #[error("pause_budget_days = {0} is over 366 days per year")]
    PauseBudgetOverYear(u32),
    #[error("{key} = {days} is out of range: 1 to {MAX_RETENTION_DAYS} days")]
    RetentionOutOfRange { key: &'static str, days: u32 },
}

impl Policy {
    /// Reads and validates a policy from TOML. Keys left out take the spec's defaults.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| PolicyError::Syntax(syntax_message(text, &e)))?;
        policy.validate()?;
        Ok(policy)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a policy always serialises")
    }

    /// Checks every rule; the first broken one is returned.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.validate_texts()?;
        self.validate_stages()?;
        self.validate_products()
    }

    fn validate_texts(&self) -> Result<(), PolicyError> {
        if self.service_name.trim().is_empty() {
            return Err(PolicyError::EmptyText { field: "service_name" });
        }
        if self.info_url.trim().is_empty() {
            return Err(PolicyError::EmptyText { field: "info_url" });
        }
        if self.pause_budget_days > 366 {
            return Err(PolicyError::PauseBudgetOverYear(self.pause_budget_days));
        }
        for (key, days) in self.retention.periods() {
            if !(1..=MAX_RETENTION_DAYS).contains(&days) {
                return Err(PolicyError::RetentionOutOfRange { key, days });
            }
        }
        Ok(())
    }

    fn validate_stages(&self) -> Result<(), PolicyError> {
        let first = self.stages.first().ok_or(PolicyError::EmptyStageTable)?;
        if first.from_days != 0 {
            return Err(PolicyError::FirstStageNotAtZero(first.from_days));
        }
        for (index, stage) in self.stages.iter().enumerate() {
            let number = index + 1;
            for (field, minutes) in [("throttle_min", stage.throttle_min), ("block_min", stage.block_min)] {
                if minutes > 60 {
                    return Err(PolicyError::MinutesOver60 {
                        stage: number,
                        field,
                        minutes,
                    });
                }
            }
            let total = stage.throttle_min + stage.block_min;
            if total > 60 {
                return Err(PolicyError::WindowsOver60 { stage: number, total });
            }
            if let Some(previous) = index.checked_sub(1).map(|i| self.stages[i]) {
                if stage.from_days <= previous.from_days {
                    return Err(PolicyError::StagesNotIncreasing {
                        stage: number,
                        from_days: stage.from_days,
                        previous: index,
                        previous_from_days: previous.from_days,
                    });
                }
            }
        }
        Ok(())
    }

    fn validate_products(&self) -> Result<(), PolicyError> {
        if self.products.is_empty() {
            return Err(PolicyError::EmptyProductList);
        }
        for product in &self.products {
            if product.name.trim().is_empty() {
                return Err(PolicyError::EmptyProductName);
            }
            if let Some(until) = product.until.filter(|until| until <= &product.from) {
                return Err(PolicyError::EmptyProductRange {
                    name: product.name.clone(),
                    from: product.from.to_string(),
                    until: until.to_string(),
                });
            }
            if let Some(first) = product.compliant_from {
                if first < product.from || product.until.is_some_and(|until| first >= until) {
                    return Err(PolicyError::CompliantFromOutsideRange {
                        name: product.name.clone(),
                        compliant_from: first.to_string(),
                    });
                }
            }
        }
        let mut by_start: Vec<&Product> = self.products.iter().collect();
        by_start.sort_by_key(|p| p.from);
        for pair in by_start.windows(2) {
            if pair[0].until.is_none_or(|until| until > pair[1].from) {
                return Err(PolicyError::OverlappingProducts {
                    first: pair[0].name.clone(),
                    second: pair[1].name.clone(),
                });
            }
        }
        Ok(())
    }
}

/// A TOML error as one line that says where: toml's own messages may span several lines.
fn syntax_message(text: &str, error: &toml::de::Error) -> String {
    let message: Vec<&str> = error.message().lines().map(str::trim).filter(|line| !line.is_empty()).collect();
    let message = message.join(", ");
    match error.span() {
        Some(span) => format!(
            "line {}: {message}",
            text.get(..span.start).unwrap_or(text).matches('\n').count() + 1
        ),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> PolicyError {
        Policy::from_toml(text).expect_err("policy should be refused")
    }

    #[test]
    fn an_empty_file_is_the_default_policy() {
        assert_eq!(Policy::from_toml("").unwrap(), Policy::default());
        Policy::default().validate().unwrap();
    }

    #[test]
    fn the_default_policy_survives_a_round_trip() {
        assert_eq!(Policy::from_toml(&Policy::default().to_toml()).unwrap(), Policy::default());
    }

    #[test]
    fn every_validation_error_names_its_rule() {
        let stage = |from: u32, throttle: u32, block: u32| {
            format!("[[stage]]\nfrom_days = {from}\nthrottle_min = {throttle}\nblock_min = {block}\n")
        };
        let cases: Vec<(String, PolicyError)> = vec![
            ("stage = []".into(), PolicyError::EmptyStageTable),
            (stage(1, 0, 0), PolicyError::FirstStageNotAtZero(1)),
            (
                stage(0, 0, 0) + &stage(30, 5, 0) + &stage(30, 10, 0),
                PolicyError::StagesNotIncreasing {
                    stage: 3,
                    from_days: 30,
                    previous: 2,
                    previous_from_days: 30,
                },
            ),
            (
                stage(0, 0, 0) + &stage(30, 5, 0) + &stage(20, 10, 0),
                PolicyError::StagesNotIncreasing {
                    stage: 3,
                    from_days: 20,
                    previous: 2,
                    previous_from_days: 30,
                },
            ),
            (
                stage(0, 61, 0),
                PolicyError::MinutesOver60 {
                    stage: 1,
                    field: "throttle_min",
                    minutes: 61,
                },
            ),
            (
                stage(0, 0, 0) + &stage(5, 0, 90),
                PolicyError::MinutesOver60 {
                    stage: 2,
                    field: "block_min",
                    minutes: 90,
                },
            ),
            (
                stage(0, 0, 0) + &stage(5, 40, 30),
                PolicyError::WindowsOver60 { stage: 2, total: 70 },
            ),
            ("product = []".into(), PolicyError::EmptyProductList),
            ("[[product]]\nname = \" \"\nfrom = \"8.0\"\n".into(), PolicyError::EmptyProductName),
            (
                "[[product]]\nname = \"X\"\nfrom = \"9.0\"\nuntil = \"8.0\"\n".into(),
                PolicyError::EmptyProductRange {
                    name: "X".into(),
                    from: "9.0".into(),
                    until: "8.0".into(),
                },
            ),
            (
                "[[product]]\nname = \"X\"\nfrom = \"8.0\"\nuntil = \"9.0\"\ncompliant_from = \"9.1\"\n".into(),
                PolicyError::CompliantFromOutsideRange {
                    name: "X".into(),
                    compliant_from: "9.1".into(),
                },
            ),
            (
                "[[product]]\nname = \"A\"\nfrom = \"8.0\"\nuntil = \"9.0\"\n[[product]]\nname = \"B\"\nfrom = \"8.5\"\n".into(),
                PolicyError::OverlappingProducts {
                    first: "A".into(),
                    second: "B".into(),
                },
            ),
            ("service_name = \"\"".into(), PolicyError::EmptyText { field: "service_name" }),
            ("info_url = \"  \"".into(), PolicyError::EmptyText { field: "info_url" }),
            ("pause_budget_days = 400".into(), PolicyError::PauseBudgetOverYear(400)),
            (
                "[retention]\nforget_after_days = 0\n".into(),
                PolicyError::RetentionOutOfRange {
                    key: "retention.forget_after_days",
                    days: 0,
                },
            ),
            (
                "[retention]\nkeep_events_days = 36501\n".into(),
                PolicyError::RetentionOutOfRange {
                    key: "retention.keep_events_days",
                    days: 36_501,
                },
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(refused(&text), expected, "policy:\n{text}");
        }
    }

    #[test]
    fn a_product_mode_is_one_of_three_words_and_a_wrong_one_names_its_product() {
        let text = "[[product]]\nname = \"Old\"\nfrom = \"8.0\"\nuntil = \"9.0\"\nmode = \"off\"\n[[product]]\nname = \"New\"\nfrom = \"9.0\"\nmode = \"report-only\"\n";
        let policy = Policy::from_toml(text).unwrap();
        let modes: Vec<_> = policy.products.iter().map(|p| p.mode).collect();
        assert_eq!(modes, [crate::mode::Mode::Off, crate::mode::Mode::ReportOnly]);
        assert_eq!(Policy::from_toml(&policy.to_toml()).unwrap(), policy, "modes survive a round trip");
        assert!(
            !Policy::default().to_toml().contains("mode"),
            "enforce is the default and not written"
        );

        let message = refused("[[product]]\nname = \"Old\"\nfrom = \"8.0\"\nmode = \"sometimes\"\n").to_string();
        assert!(
            message.contains("product \"Old\"") && message.contains("sometimes") && message.contains("report-only"),
            "{message}"
        );
        assert!(!message.contains('\n'), "one line: {message}");
    }
    #[test]
    fn retention_keeps_400_days_unless_told_otherwise() {
        assert_eq!(Policy::default().retention.forget_after_days, 400);
        assert_eq!(Policy::default().retention.keep_events_days, 400);
        let policy = Policy::from_toml("[retention]\nforget_after_days = 30\n").unwrap();
        assert_eq!((policy.retention.forget_after_days, policy.retention.keep_events_days), (30, 400));
        assert_eq!(Policy::from_toml(&policy.to_toml()).unwrap(), policy);
        let message = refused("[retention]\nforget_after_days = 0\n").to_string();
        assert_eq!(message, "retention.forget_after_days = 0 is out of range: 1 to 36500 days");
        let message = refused("[retention]\nkeep_event_days = 5\n").to_string();
        assert!(message.contains("unknown field `keep_event_days`"), "{message}");
        let message = refused("[retention]\nkeep_events_days = -1\n").to_string();
        assert!(message.contains("keep_events_days") || message.contains("line 2"), "{message}");
    }

    #[test]
    fn syntax_errors_name_the_problem() {
        let message = refused("stage = 7").to_string();
        assert!(message.contains("invalid type"), "{message}");
        let message = refused("[[product]]\nname = \"X\"\nfrom = \"eight\"\n").to_string();
        assert!(message.contains("product \"X\": malformed build \"eight\""), "{message}");
        let message = refused("servce_name = \"typo\"").to_string();
        assert!(message.contains("unknown field `servce_name`"), "{message}");
        let message = refused("service_name = \"x\"\nstage = [").to_string();
        assert!(message.contains("line 2: invalid array, expected `]`"), "{message}");
        assert!(!message.contains('\n'), "one line: {message}");
    }
}
