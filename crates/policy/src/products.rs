//! Build classification: which product a build belongs to, and whether it is out of date.
//!
//! The baseline is a list of products, each a half-open range of builds `[from, until)`
//! with the first compliant build (none for a product past its end of support) and the
//! builds to recommend. A build that is missing, malformed, shorter than four parts
//! (`15.2`) or in no product's range is "unidentified": never enforced, only counted.
//! Each product also has its enforcement mode (see `mode`): a product switched `off` is
//! one whose out-of-date builds start no clock.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};

use crate::mode::Mode;
use crate::version::BuildVersion;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    pub name: String,
    /// First build of this product.
    pub from: BuildVersion,
    /// First build past this product; absent for the newest product line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<BuildVersion>,
    /// First build that is not out of date; absent when the whole product is out of support.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliant_from: Option<BuildVersion>,
    /// Builds the report recommends to a server of this product that is out of date.
    #[serde(default)]
    pub recommended: Vec<BuildVersion>,
    /// How this product's servers are enforced: `enforce`, `report-only` or `off`.
    #[serde(default, skip_serializing_if = "Mode::is_enforce")]
    pub mode: Mode,
}

impl Product {
    fn contains(&self, build: &BuildVersion) -> bool {
        &self.from <= build && self.until.is_none_or(|until| build < &until)
    }
}

/// Reads the policy's `[[product]]` tables one by one, so that a refusal names the product
/// it is about (`product "Exchange 2013": unknown variant `sometimes`, ...`).
pub(crate) fn deserialize_products<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Product>, D::Error> {
    Vec::<toml::Table>::deserialize(deserializer)?
        .into_iter()
        .map(|table| {
            let name = table.get("name").and_then(toml::Value::as_str).map(str::to_owned);
            Product::deserialize(toml::Value::Table(table)).map_err(|error| match name {
                Some(name) => D::Error::custom(format!("product {name:?}: {}", error.message())),
                None => D::Error::custom(error.message()),
            })
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    OutOfDate,
    Compliant,
    Unidentified,
}

impl BuildStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BuildStatus::OutOfDate => "out_of_date",
            BuildStatus::Compliant => "compliant",
            BuildStatus::Unidentified => "unidentified",
        }
    }
}

/// What the baseline says of one build string.
#[derive(Clone, Debug, PartialEq)]
pub struct Classification {
    pub build: Option<BuildVersion>,
    pub product: Option<String>,
    pub status: BuildStatus,
    pub recommended: Vec<BuildVersion>,
    /// The product's mode; `enforce` for a build of no product.
    pub mode: Mode,
}

impl Classification {
    /// The status a sighting of this build moves its server's episode by: that of the
    /// build, except that an out-of-date build of a product switched off starts no clock
    /// and resumes none, as if it were unidentified. A compliant one still remediates.
    pub fn clock_status(&self) -> BuildStatus {
        match (self.status, self.mode) {
            (BuildStatus::OutOfDate, Mode::Off) => BuildStatus::Unidentified,
            (status, _) => status,
        }
    }

    /// Whether the product's mode lets this build's verdicts be given: out of date, and
    /// neither report-only nor off.
    pub fn is_enforced(&self) -> bool {
        self.status == BuildStatus::OutOfDate && self.mode == Mode::Enforce
    }
}

/// Classifies a build string as a server stamped it. Never fails: what cannot be read is
/// unidentified.
pub fn classify(products: &[Product], build: &str) -> Classification {
    let unidentified = |build| Classification {
        build,
        product: None,
        status: BuildStatus::Unidentified,
        recommended: vec![],
        mode: Mode::Enforce,
    };
    let Some(version) = build.parse::<BuildVersion>().ok().filter(BuildVersion::is_complete) else {
        return unidentified(None);
    };
    let Some(product) = products.iter().find(|p| p.contains(&version)) else {
        return unidentified(Some(version));
    };
    let compliant = product.compliant_from.is_some_and(|first| version >= first);
    Classification {
        build: Some(version),
        product: Some(product.name.clone()),
        status: if compliant {
            BuildStatus::Compliant
        } else {
            BuildStatus::OutOfDate
        },
        recommended: if compliant { vec![] } else { product.recommended.clone() },
        mode: product.mode,
    }
}

/// The spec's default baseline (enforcement.md, "Build classification").
pub fn default_products() -> Vec<Product> {
    let v = |text: &str| text.parse::<BuildVersion>().expect("default baseline builds are well-formed");
    let newest = vec![v("15.2.2562.17")];
    let product = |name: &str, from: &str, until: Option<&str>, compliant_from: Option<&str>, recommended: Vec<BuildVersion>| Product {
        name: name.to_owned(),
        from: v(from),
        until: until.map(v),
        compliant_from: compliant_from.map(v),
        recommended,
        mode: Mode::Enforce,
    };
    vec![
        product("Exchange 2007", "8.0", Some("9.0"), None, newest.clone()),
        product("Exchange 2010", "14.0", Some("15.0"), None, newest.clone()),
        product("Exchange 2013", "15.0", Some("15.1"), None, newest.clone()),
        product("Exchange 2016", "15.1", Some("15.2"), Some("15.1.2507.61"), vec![v("15.1.2507.61")]),
        product(
            "Exchange 2019",
            "15.2",
            Some("15.2.2562"),
            Some("15.2.1748.39"),
            vec![v("15.2.1748.39"), v("15.2.2562.17")],
        ),
        product("Exchange SE", "15.2.2562", Some("16.0"), Some("15.2.2562"), vec![]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(build: &str) -> (Option<String>, BuildStatus) {
        let c = classify(&default_products(), build);
        (c.product, c.status)
    }

    #[test]
    fn default_baseline_matches_the_spec_table() {
        use BuildStatus::*;
        let cases = [
            ("8.3.485.1", "Exchange 2007", OutOfDate),
            ("14.3.513.0", "Exchange 2010", OutOfDate),
            ("15.0.1497.48", "Exchange 2013", OutOfDate),
            ("15.1.2507.16", "Exchange 2016", OutOfDate),
            ("15.1.2507.60", "Exchange 2016", OutOfDate),
            ("15.1.2507.61", "Exchange 2016", Compliant),
            ("15.01.2507.061", "Exchange 2016", Compliant),
            ("15.2.1748.38", "Exchange 2019", OutOfDate),
            ("15.2.1748.39", "Exchange 2019", Compliant),
            ("15.2.2561.99", "Exchange 2019", Compliant),
            ("15.2.2562.17", "Exchange SE", Compliant),
            ("15.2.3000.1", "Exchange SE", Compliant),
        ];
        for (build, product, expected) in cases {
            assert_eq!(status(build), (Some(product.to_owned()), expected), "build {build}");
        }
    }

    #[test]
    fn unreadable_or_unknown_builds_are_unidentified() {
        for build in ["", "garbage", "15", "15.2", "15.0.1497", "6.5.7638.1", "16.0.1.1"] {
            assert_eq!(status(build), (None, BuildStatus::Unidentified), "build {build:?}");
        }
    }

    #[test]
    fn an_out_of_date_build_of_a_product_switched_off_starts_no_clock() {
        let mut products = default_products();
        products
            .iter_mut()
            .filter(|p| p.name == "Exchange 2013")
            .for_each(|p| p.mode = Mode::Off);
        let old = classify(&products, "15.0.1497.48");
        assert_eq!((old.status, old.mode), (BuildStatus::OutOfDate, Mode::Off));
        assert_eq!(old.clock_status(), BuildStatus::Unidentified);
        let enforced = classify(&products, "15.1.2507.16");
        assert_eq!(enforced.clock_status(), BuildStatus::OutOfDate);
    }

    #[test]
    fn only_out_of_date_builds_get_recommendations() {
        assert!(!classify(&default_products(), "15.0.1497.48").recommended.is_empty());
        assert!(classify(&default_products(), "15.1.2507.61").recommended.is_empty());
    }
}
