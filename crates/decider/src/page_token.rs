//! Page tokens: where the next (or previous) page of a listing starts, handed to clients
//! as an opaque string and taken back on the next call.
//!
//! A token names the listing (`Report`, `ListEvents` or `ListAudit`), the tenant ("" for
//! the audit trail of every tenant), the direction and
//! the key the page starts from, and ends with the first 16 bytes of a SHA-256 of all of
//! that, the whole in URL-safe base64 (so it goes in a query string as it is). Taking one
//! back checks, in order, that it decodes, that its checksum holds, and that it was issued
//! for this listing and this tenant; each failure is a bad `page_token` field, saying which.
//!
//! The checksum is not a key: a token is no credential. Everything a token can select the
//! caller may ask for directly (any viewer may read any tenant), so a hand-made token gains
//! nothing; the check is there so that a damaged, truncated or mixed-up token is refused
//! with the reason, instead of silently listing from the wrong place. The format is
//! versioned; a decider of another release refuses a token it does not know the same way.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ratchet_store::PageStart;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The field every listing's token travels in.
const FIELD: &str = "page_token";
const VERSION: u8 = 1;
const CHECKSUM_BYTES: usize = 16;

/// The listings that page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Listing {
    Report,
    Events,
    Audit,
}

impl Listing {
    fn rpc(self) -> &'static str {
        match self {
            Listing::Report => "Report",
            Listing::Events => "ListEvents",
            Listing::Audit => "ListAudit",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Token {
    listing: Listing,
    tenant: String,
    /// The page reads backwards from `key` (a previous page).
    backwards: bool,
    /// The key suffix the page starts after (or before).
    key: Vec<u8>,
}

fn checksum(payload: &[u8]) -> Vec<u8> {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"ratchet page token");
    context.update(&[VERSION]);
    context.update(payload);
    context.finish().as_ref()[..CHECKSUM_BYTES].to_vec()
}

fn invalid(problem: impl std::fmt::Display) -> Error {
    Error::bad_field(FIELD, problem)
}

/// The token of a page starting at `start` (`First` has none: an empty token).
pub fn issue(listing: Listing, tenant: &str, start: &PageStart) -> String {
    let (backwards, key) = match start {
        PageStart::First => return String::new(),
        PageStart::After(key) => (false, key),
        PageStart::Before(key) => (true, key),
    };
    let token = Token {
        listing,
        tenant: tenant.to_owned(),
        backwards,
        key: key.clone(),
    };
    let mut bytes = vec![VERSION];
    bytes.extend(serde_json::to_vec(&token).expect("tokens serialise"));
    let sum = checksum(&bytes[1..]);
    bytes.extend(sum);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Where the page a token names starts; an empty token is the first page.
pub fn redeem(listing: Listing, tenant: &str, text: &str) -> Result<PageStart, Error> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(PageStart::First);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| invalid("is not a page token (not the base64 a listing hands out)"))?;
    let Some((&version, rest)) = bytes.split_first() else {
        return Err(invalid("is not a page token (empty)"));
    };
    if version != VERSION {
        return Err(invalid(format!(
            "is of token format {version}, not {VERSION}: ask for the first page again"
        )));
    }
    if rest.len() < CHECKSUM_BYTES {
        return Err(invalid("is truncated"));
    }
    let (payload, sum) = rest.split_at(rest.len() - CHECKSUM_BYTES);
    if checksum(payload) != sum {
        return Err(invalid("is damaged or was altered (its checksum does not match)"));
    }
    let token: Token = serde_json::from_slice(payload).map_err(|_| invalid("is not a page token (unreadable)"))?;
    if token.listing != listing {
        return Err(invalid(format!("was issued by {}, not {}", token.listing.rpc(), listing.rpc())));
    }
    if token.tenant != tenant {
        return Err(invalid(format!("was issued for tenant {:?}, not {tenant:?}", token.tenant)));
    }
    Ok(if token.backwards {
        PageStart::Before(token.key)
    } else {
        PageStart::After(token.key)
    })
}

/// The page size a request asked for: `default` for 0, refused over `max`.
pub fn page_size(asked: u32, default: u32, max: u32) -> Result<usize, Error> {
    match asked {
        0 => Ok(default as usize),
        n if n > max => Err(Error::bad_field("page_size", format!("{n} is over the limit of {max}"))),
        n => Ok(n as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_gives_back_where_it_starts() {
        for start in [PageStart::After(b"exch1.bear".to_vec()), PageStart::Before(vec![0, 1, 255])] {
            let token = issue(Listing::Report, "bear", &start);
            assert_eq!(redeem(Listing::Report, "bear", &token).unwrap(), start);
        }
        assert_eq!(issue(Listing::Events, "bear", &PageStart::First), "");
        assert_eq!(redeem(Listing::Events, "bear", "").unwrap(), PageStart::First);
    }

    #[test]
    fn another_tenant_another_listing_or_an_altered_token_is_refused_by_name() {
        let token = issue(Listing::Report, "bear", &PageStart::After(b"exch1.bear".to_vec()));
        let refusal = |listing, tenant, text: &str| redeem(listing, tenant, text).unwrap_err().to_string();
        assert_eq!(
            refusal(Listing::Report, "owl", &token),
            "page_token: was issued for tenant \"bear\", not \"owl\""
        );
        assert_eq!(
            refusal(Listing::Events, "bear", &token),
            "page_token: was issued by Report, not ListEvents"
        );
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 1;
        assert_eq!(
            refusal(Listing::Report, "bear", &URL_SAFE_NO_PAD.encode(&bytes)),
            "page_token: is damaged or was altered (its checksum does not match)"
        );
        assert!(refusal(Listing::Report, "bear", "not a token!").starts_with("page_token: is not a page token"));
        let truncated = URL_SAFE_NO_PAD.encode(&URL_SAFE_NO_PAD.decode(&token).unwrap()[..10]);
        assert_eq!(refusal(Listing::Report, "bear", &truncated), "page_token: is truncated");
    }

    #[test]
    fn page_sizes_have_a_default_and_a_maximum() {
        assert_eq!(page_size(0, 100, 1000).unwrap(), 100);
        assert_eq!(page_size(1000, 100, 1000).unwrap(), 1000);
        assert_eq!(
            page_size(1001, 100, 1000).unwrap_err().to_string(),
            "page_size: 1001 is over the limit of 1000"
        );
    }
}
