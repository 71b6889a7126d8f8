//! How every `ratchet ctl` answer is printed. Each command returns a typed output: its
//! `Serialize` is the stable JSON of shared/spec/cli.md and its `human` is the text form, so
//! the two forms of one answer are written side by side and nowhere else.

use serde::Serialize;

pub trait Output: Serialize {
    /// Prints the text form: a line, an aligned table, or both.
    fn human(&self);

    /// Prints the JSON form with `--json`, the text form without.
    fn print(&self, json: bool) {
        if json {
            // Through `Value`, whose objects keep their keys sorted: the order cli.md shows.
            let value = serde_json::to_value(self).expect("outputs serialise");
            println!("{}", serde_json::to_string_pretty(&value).expect("JSON values serialise"));
        } else {
            self.human();
        }
    }
}

/// A milliseconds-since-epoch field as RFC 3339, with 0 meaning "none".
pub fn date(unix_ms: i64) -> Option<String> {
    use chrono::{DateTime, SecondsFormat, Utc};
    (unix_ms != 0)
        .then(|| DateTime::<Utc>::from_timestamp_millis(unix_ms).map(|at| at.to_rfc3339_opts(SecondsFormat::Secs, true)))
        .flatten()
}

/// A proto string field whose empty value means "none" (null in JSON).
pub fn nonempty(text: &str) -> Option<String> {
    Some(text.to_owned()).filter(|text| !text.is_empty())
}

/// An optional cell of a table or line: the value, or `-`.
pub fn or_dash(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_owned(), |value| value.to_string())
}

/// The end of "tenant bear added" and its kin: whether an add created something.
pub fn added(created: bool) -> &'static str {
    if created {
        "added"
    } else {
        "already exists"
    }
}
