//! Build detection: which server stamped a message, and with which software version.
//!
//! Enforcement keys on the version a sending server writes into the trace headers of the
//! mail it sends. Exchange writes it into its own `Received:` header; other MTAs stamp
//! theirs elsewhere, so detection sits behind [`BuildDetector`] and the edge only ever
//! sees a [`BuildStamp`].

/// One header field of a message, unfolded (RFC 5322 2.2.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

/// The sending server and the build it stamped. `build` may be empty or malformed: the
/// decision service classifies it (an unidentified build is never enforced).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildStamp {
    /// Lower-cased.
    pub server_fqdn: String,
    pub build: String,
}

pub trait BuildDetector: Send + Sync {
    /// The stamp in a message's header fields (topmost first), if this MTA left one.
    fn detect(&self, headers: &[Header]) -> Option<BuildStamp>;
}

/// The header section of a message: fields in order, unfolded. Stops at the empty line
/// that ends the header section, or at the first line that is not a header field.
pub fn parse_headers(message: &[u8]) -> Vec<Header> {
    let mut headers: Vec<Header> = Vec::new();
    for raw in message.split(|&b| b == b'\n') {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.is_empty() {
            break;
        }
        let line = String::from_utf8_lossy(line);
        if line.starts_with([' ', '\t']) {
            match headers.last_mut() {
                Some(h) => h.value.push_str(&line),
                None => break,
            }
            continue;
        }
        match line.split_once(':') {
            Some((name, value)) if !name.is_empty() && !name.contains([' ', '\t']) => headers.push(Header {
                name: name.to_string(),
                value: value.trim_start().to_string(),
            }),
            _ => break,
        }
    }
    headers
}

/// Exchange: the topmost `Received:` header that says `with Microsoft SMTP Server`; the
/// server is its `by` host and the build its `id`, e.g.
/// `from EXCH1.bear.local (10.0.0.5) by EXCH1.bear.local (10.0.0.5) with Microsoft SMTP
/// Server (version=TLS1_2, cipher=...) id 15.1.2507.16; Mon, 20 May 2024 10:00:00 +0000`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ExchangeDetector;

impl BuildDetector for ExchangeDetector {
    fn detect(&self, headers: &[Header]) -> Option<BuildStamp> {
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("received"))
            .find_map(|h| exchange_stamp(&h.value))
    }
}

fn exchange_stamp(value: &str) -> Option<BuildStamp> {
    let clauses = strip_comments(value);
    // The date follows the last ';' (RFC 5322 3.6.7); the clauses precede it.
    let clauses = clauses.split(';').next().unwrap_or("");
    let words: Vec<&str> = clauses.split_whitespace().collect();
    let is_exchange = words.windows(4).any(|w| {
        w[0].eq_ignore_ascii_case("with")
            && w[1].eq_ignore_ascii_case("microsoft")
            && w[2].eq_ignore_ascii_case("smtp")
            && w[3].eq_ignore_ascii_case("server")
    });
    if !is_exchange {
        return None;
    }
    let after = |keyword: &str| words.windows(2).find(|w| w[0].eq_ignore_ascii_case(keyword)).map(|w| w[1]);
    let server_fqdn = after("by")?.trim_end_matches('.').to_ascii_lowercase();
    let build = after("id").unwrap_or("").to_string();
    Some(BuildStamp { server_fqdn, build })
}

/// Removes RFC 5322 comments, `(...)`, nested and with quoted-pairs, keeping a space.
fn strip_comments(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut depth = 0usize;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if depth > 0 => {
                chars.next();
            }
            '(' => depth += 1,
            ')' if depth > 0 => {
                depth -= 1;
                if depth == 0 {
                    out.push(' ');
                }
            }
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(message: &str) -> Option<BuildStamp> {
        ExchangeDetector.detect(&parse_headers(message.as_bytes()))
    }

    fn stamp(fqdn: &str, build: &str) -> Option<BuildStamp> {
        Some(BuildStamp {
            server_fqdn: fqdn.into(),
            build: build.into(),
        })
    }

    #[test]
    fn the_spec_example() {
        let m = "Received: from EXCH1.bear.local (10.0.0.5) by EXCH1.bear.local (10.0.0.5) with Microsoft SMTP Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.1.2507.16; Mon, 20 May 2024 10:00:00 +0000\r\nSubject: hi\r\n\r\nbody\r\n";
        assert_eq!(detect(m), stamp("exch1.bear.local", "15.1.2507.16"));
    }

    #[test]
    fn folded_headers_as_exchange_writes_them() {
        let m = "Received: from EXCH2.contoso.local (10.1.0.6) by\r\n EXCH1.Contoso.Local (10.1.0.5) with Microsoft SMTP Server\r\n (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id\r\n 15.2.1544.4 via Frontend Transport; Tue, 21 May 2024 08:12:44 +0200\r\nFrom: a@contoso.com\r\n\r\nx\r\n";
        assert_eq!(detect(m), stamp("exch1.contoso.local", "15.2.1544.4"));
    }

    #[test]
    fn the_topmost_exchange_header_wins_and_others_are_skipped() {
        let m = "Received: from edge.example (edge.example [192.0.2.1]) by mx.example (Postfix) with ESMTP id 4Vx; Mon, 20 May 2024 10:00:01 +0000\n\
                 Received: from EXCH1.bear.local (10.0.0.5) by EXCH1.bear.local (10.0.0.5) with Microsoft SMTP Server id 15.0.1497.2; Mon, 20 May 2024 10:00:00 +0000\n\
                 Received: from EXCH9.bear.local (10.0.0.9) by EXCH9.bear.local (10.0.0.9) with Microsoft SMTP Server id 15.1.2507.61; Mon, 20 May 2024 09:59:00 +0000\n\
                 \n";
        assert_eq!(detect(m), stamp("exch1.bear.local", "15.0.1497.2"));
    }

    #[test]
    fn an_exchange_header_without_id_is_unidentified_not_absent() {
        let m = "Received: from a (10.0.0.5) by MAIL.bear.local. (10.0.0.5) with Microsoft SMTP Server; Mon, 20 May 2024 10:00:00 +0000\r\n\r\n";
        assert_eq!(detect(m), stamp("mail.bear.local", ""));
    }

    #[test]
    fn comments_cannot_fake_the_clauses() {
        let m = "Received: from x (by evil.example with Microsoft SMTP Server id 15.2.9999.1) by mx.example with ESMTP id 123; Mon, 20 May 2024 10:00:00 +0000\r\n\r\n";
        assert_eq!(detect(m), None);
    }

    #[test]
    fn headers_in_the_body_do_not_count() {
        let m = "Subject: fwd\r\n\r\nReceived: from a by EXCH1.bear.local with Microsoft SMTP Server id 15.1.2507.16; Mon, 20 May 2024 10:00:00 +0000\r\n";
        assert_eq!(detect(m), None);
        assert_eq!(detect(""), None);
    }

    #[test]
    fn unfolding_keeps_every_field_in_order() {
        let h = parse_headers(b"A: 1\r\n 2\r\n\tthree\r\nB:x\r\n\r\nC: no\r\n");
        assert_eq!(
            h,
            vec![
                Header {
                    name: "A".into(),
                    value: "1 2\tthree".into()
                },
                Header {
                    name: "B".into(),
                    value: "x".into()
                }
            ]
        );
    }
}
