//! Build version numbers as mail servers stamp them (`15.1.2507.16`).
//!
//! Builds compare numerically, part by part, so zero-padded forms such as
//! `15.01.2507.039` equal `15.1.2507.39`, and missing trailing parts count as zero
//! (`15.1` is the first build of the 15.1 line). Shorter forms bound the policy's product
//! ranges; a server's stamp has all four parts (see `is_complete`).

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A build has between two and four numeric parts, like Exchange's `major.minor.build.revision`.
const MIN_PARTS: usize = 2;
const MAX_PARTS: usize = 4;

#[derive(Clone, Copy, Debug, Eq)]
pub struct BuildVersion {
    parts: [u32; MAX_PARTS],
    len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed build {input:?}: expected 2 to 4 dot-separated numbers, like 15.1.2507.16")]
pub struct MalformedBuild {
    pub input: String,
}

impl BuildVersion {
    /// The parts as written, without padding.
    pub fn parts(&self) -> &[u32] {
        &self.parts[..self.len as usize]
    }

    /// Whether all four parts are written, as a server stamps its build: a prefix such as
    /// `15.2` names a product line, not a build, and cannot be placed against a baseline.
    pub fn is_complete(&self) -> bool {
        usize::from(self.len) == MAX_PARTS
    }
}

impl FromStr for BuildVersion {
    type Err = MalformedBuild;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let malformed = || MalformedBuild { input: input.to_owned() };
        let mut parts = [0u32; MAX_PARTS];
        let mut len = 0;
        for piece in input.trim().split('.') {
            let digits_only = !piece.is_empty() && piece.bytes().all(|b| b.is_ascii_digit());
            if len == MAX_PARTS || !digits_only {
                return Err(malformed());
            }
            parts[len] = piece.parse().map_err(|_| malformed())?;
            len += 1;
        }
        if len < MIN_PARTS {
            return Err(malformed());
        }
        Ok(BuildVersion { parts, len: len as u8 })
    }
}

/// Equality is numeric over all four parts, so `15.1` equals `15.1.0.0`.
impl PartialEq for BuildVersion {
    fn eq(&self, other: &Self) -> bool {
        self.parts == other.parts
    }
}

/// Hashes what equality compares, so that `15.1` and `15.1.0.0` hash alike.
impl Hash for BuildVersion {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.parts.hash(state);
    }
}

impl Ord for BuildVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts.cmp(&other.parts)
    }
}

impl PartialOrd for BuildVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Prints the canonical form: no zero padding, as many parts as were given.
impl fmt::Display for BuildVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text: Vec<String> = self.parts().iter().map(u32::to_string).collect();
        f.write_str(&text.join("."))
    }
}

impl Serialize for BuildVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BuildVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(text: &str) -> BuildVersion {
        text.parse().unwrap()
    }

    #[test]
    fn zero_padded_forms_are_equal() {
        assert_eq!(build("15.01.2507.039"), build("15.1.2507.39"));
        assert_eq!(build("15.01.2507.039").to_string(), "15.1.2507.39");
    }

    #[test]
    fn parts_compare_numerically_not_as_text() {
        assert!(build("15.1.2507.9") < build("15.1.2507.10"));
        assert!(build("15.2.1748.39") < build("15.2.2562.17"));
        assert!(build("8.3.485.1") < build("14.0"));
    }

    #[test]
    fn missing_parts_count_as_zero() {
        assert_eq!(build("15.1"), build("15.1.0.0"));
        assert!(build("15.1") < build("15.1.0.1"));
    }

    #[test]
    fn only_four_parts_make_a_complete_build() {
        assert!(build("15.2.2562.17").is_complete());
        assert!(!build("15.2").is_complete());
        assert!(!build("15.2.2562").is_complete());
    }

    #[test]
    fn malformed_builds_are_refused() {
        for bad in [
            "",
            "15",
            "15.",
            ".15.1",
            "15..1",
            "15.1.2.3.4",
            "15.a.1",
            "15.1 2",
            "-1.2",
            "99999999999.1",
        ] {
            assert!(bad.parse::<BuildVersion>().is_err(), "{bad:?} should be malformed");
        }
    }
}
