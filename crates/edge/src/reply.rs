//! Every reply the edge's SMTP server gives, in one place, so that codes, enhanced status
//! codes (RFC 3463, RFC 5248) and texts stay consistent and reviewable together.

use std::fmt;

/// One SMTP reply, possibly multi-line. Its text never contains CR or LF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    lines: Vec<String>,
}

impl Reply {
    /// A single-line reply; `text` starts with the enhanced status code where one applies.
    pub fn new(code: u16, text: impl Into<String>) -> Self {
        Self {
            code,
            lines: vec![sanitize(&text.into())],
        }
    }

    pub fn multi(code: u16, lines: impl IntoIterator<Item = String>) -> Self {
        Self {
            code,
            lines: lines.into_iter().map(|l| sanitize(&l)).collect(),
        }
    }

    /// A full reply line as a decider sends it (`450 4.7.230 ...`), if it is one.
    pub fn parse_line(line: &str) -> Option<Self> {
        let code: u16 = line.get(..3)?.parse().ok()?;
        if !(200..600).contains(&code) || !matches!(line.as_bytes().get(3), Some(b' ') | None) {
            return None;
        }
        Some(Self::new(code, line.get(4..).unwrap_or("")))
    }

    /// The wire form, CRLF-terminated.
    pub fn to_wire(&self) -> String {
        self.to_string()
    }
}

fn sanitize(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.lines.len().saturating_sub(1);
        if self.lines.is_empty() {
            return write!(f, "{}\r\n", self.code);
        }
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            write!(f, "{}{}{}\r\n", self.code, sep, line)?;
        }
        Ok(())
    }
}

pub fn greeting(host: &str) -> Reply {
    Reply::new(220, format!("{host} ESMTP Ratchet"))
}
pub fn bye() -> Reply {
    Reply::new(221, "2.0.0 Bye")
}
pub fn ok(esc: &str) -> Reply {
    Reply::new(250, format!("{esc} Ok"))
}
pub fn start_data() -> Reply {
    Reply::new(354, "End data with <CR><LF>.<CR><LF>")
}
pub fn vrfy() -> Reply {
    Reply::new(252, "2.1.5 Cannot VRFY user, but will accept message and attempt delivery")
}
pub fn help() -> Reply {
    Reply::new(214, "2.0.0 Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY")
}

// Shutdown, limits and timeouts (421 closes the session).
pub fn shutting_down(host: &str) -> Reply {
    Reply::new(421, format!("4.3.2 {host} Service shutting down, try again later"))
}
pub fn too_many_sessions(host: &str) -> Reply {
    Reply::new(421, format!("4.3.2 {host} Too many connections, try again later"))
}
pub fn too_many_from_ip(host: &str) -> Reply {
    Reply::new(421, format!("4.7.0 {host} Too many connections from your address"))
}
pub fn too_many_errors(host: &str) -> Reply {
    Reply::new(421, format!("4.7.0 {host} Too many errors, closing connection"))
}
pub fn timeout(host: &str) -> Reply {
    Reply::new(421, format!("4.4.2 {host} Timeout exceeded, closing connection"))
}

// Syntax and sequence (RFC 5321 4.2.2 / 4.3.2).
pub fn unknown_command() -> Reply {
    Reply::new(500, "5.5.2 Error: command not recognized")
}
pub fn line_too_long() -> Reply {
    Reply::new(500, "5.5.2 Error: line too long")
}
pub fn bad_characters() -> Reply {
    Reply::new(500, "5.5.2 Error: command contains NUL or non-UTF-8 characters")
}
pub fn bare_lf() -> Reply {
    Reply::new(550, "5.5.2 Error: bare <LF> received")
}
pub fn syntax(usage: &str) -> Reply {
    Reply::new(501, format!("5.5.4 Syntax: {usage}"))
}
pub fn not_implemented(command: &str) -> Reply {
    Reply::new(502, format!("5.5.1 Error: {command} not implemented"))
}
pub fn bad_sequence(what: &str) -> Reply {
    Reply::new(503, format!("5.5.1 Error: {what}"))
}
pub fn unsupported_parameter(param: &str) -> Reply {
    Reply::new(555, format!("5.5.4 Unsupported option: {param}"))
}
pub fn bad_sender() -> Reply {
    Reply::new(501, "5.1.7 Bad sender address syntax")
}
pub fn bad_recipient() -> Reply {
    Reply::new(501, "5.1.3 Bad recipient address syntax")
}
/// RCPT TO a domain outside `accepted_domains` (no open relay).
pub fn relay_denied(domain: &str) -> Reply {
    if domain.is_empty() {
        return Reply::new(550, "5.7.1 Relaying denied: a recipient needs a domain this edge accepts mail for");
    }
    Reply::new(
        550,
        format!("5.7.1 Relaying denied: {domain} is not a domain this edge accepts mail for"),
    )
}

// Who the client is: PROXY protocol headers and XFORWARD (`trusted_proxies`).
/// A PROXY header or XFORWARD from an address not in `trusted_proxies` (Postfix's reply to
/// an XFORWARD it does not allow).
pub fn not_trusted(what: &str) -> Reply {
    Reply::new(
        550,
        format!("5.7.0 Error: insufficient authorization: {what} is accepted only from trusted proxies"),
    )
}
/// A trusted proxy's PROXY header that makes no sense (`why`: "v1 header ...: reason");
/// the connection is closed.
pub fn bad_proxy_header(host: &str, why: &str) -> Reply {
    Reply::new(421, format!("4.7.0 {host} Closing connection: malformed PROXY protocol {why}"))
}

// STARTTLS (RFC 3207).
pub fn ready_for_tls() -> Reply {
    Reply::new(220, "2.0.0 Ready to start TLS")
}
pub fn tls_required() -> Reply {
    Reply::new(530, "5.7.0 Must issue a STARTTLS command first")
}

// Limits on the transaction.
pub fn too_many_recipients() -> Reply {
    Reply::new(452, "4.5.3 Error: too many recipients")
}
pub fn message_too_big() -> Reply {
    Reply::new(552, "5.3.4 Error: message size exceeds fixed maximum message size")
}
pub fn nul_in_message() -> Reply {
    Reply::new(550, "5.6.0 Error: message content contains NUL characters")
}
pub fn data_line_too_long() -> Reply {
    Reply::new(500, "5.5.2 Error: message content line too long")
}

// End of DATA.
pub fn no_verdict() -> Reply {
    Reply::new(451, "4.4.3 Decision service unavailable, try again later")
}
pub fn next_hop_down() -> Reply {
    Reply::new(451, "4.4.0 Next hop unavailable, try again later")
}
/// `next_hop_tls = "verify"` and the next hop could not be reached over verified TLS.
pub fn next_hop_not_verified() -> Reply {
    Reply::new(451, "4.7.5 No verified TLS to the next hop, try again later")
}
pub fn queued(detail: &str) -> Reply {
    Reply::new(250, format!("2.0.0 Ok: {detail}"))
}
pub fn fallback_throttle() -> Reply {
    Reply::new(450, "4.7.230 Connecting server version is out-of-date; connection throttled")
}
pub fn fallback_block() -> Reply {
    Reply::new(550, "5.7.230 Connecting server version is out-of-date; connection blocked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_render_as_rfc5321_lines() {
        assert_eq!(ok("2.1.0").to_wire(), "250 2.1.0 Ok\r\n");
        assert_eq!(Reply::multi(250, ["a".into(), "B".into()]).to_wire(), "250-a\r\n250 B\r\n");
        assert_eq!(Reply::new(550, "x\r\ny").to_wire(), "550 x  y\r\n");
    }

    #[test]
    fn decider_lines_parse_verbatim() {
        let line = "450 4.7.230 Connecting Exchange server version is out-of-date; connection to Exchange Online throttled for 5 mins/hr. For more information see https://aka.ms/BlockUnsafeExchange.";
        assert_eq!(Reply::parse_line(line).unwrap().to_wire(), format!("{line}\r\n"));
        assert!(Reply::parse_line("45x oops").is_none());
        assert!(Reply::parse_line("4500 x").is_none());
    }
}
