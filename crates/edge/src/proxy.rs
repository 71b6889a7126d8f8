//! The PROXY protocol (HAProxy's `send-proxy` text header, v1, and `send-proxy-v2` binary
//! header, v2): a load balancer in front of the edge tells it, in the first octets of the
//! connection, which client it is relaying, so that the edge attributes the connection to
//! that client's connector rather than to the load balancer.
//!
//! ppp parses the headers; this module only frames them in the input (a v1 header is one
//! line of at most 107 octets, a v2 header has its length in it) and says what they carry.
//! Whether a header is believed is the session's decision (`trusted_proxies`).

use std::net::{IpAddr, SocketAddr};

use ppp::{v1, v2, PartialResult};

use crate::connection::Framed;

/// The longest v1 header, CRLF included (the protocol's own limit).
const V1_MAX: usize = 107;
const V1_PREFIX: &[u8] = b"PROXY ";

/// What a PROXY header said.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// The proxy relays this client.
    Relayed(SocketAddr),
    /// The proxy speaks for itself (v2 `LOCAL`, a health check), or relays something
    /// that has no IP address (v1 `UNKNOWN`, v2 `UNSPEC` or a UNIX socket): the
    /// connection stays the proxy's own.
    Local,
}

/// A header whose octets were read: what it said, or why it makes no sense ("v1 header
/// ...: reason").
pub(crate) type Parsed = Result<Header, String>;

/// Frames a PROXY header at the start of `input`, for [`crate::connection::Connection::read_framed`]:
/// `Taken(0, None)` when the input starts with anything else (SMTP).
///
/// The v2 signature begins with CRLF, an empty SMTP command line: once a whole line is in,
/// the input is SMTP unless it already holds the whole signature, so that a client that
/// sends an empty line and waits for its `500` is not kept waiting. A proxy writes its
/// header in one piece, so its signature is never read in two.
pub(crate) fn frame(input: &[u8]) -> Framed<Option<Parsed>> {
    let line_in = input.contains(&b'\n');
    if (could_become(input, v2::PROTOCOL_PREFIX) && !line_in) || could_become(input, V1_PREFIX) {
        return Framed::More;
    }
    if input.starts_with(v2::PROTOCOL_PREFIX) {
        return frame_v2(input);
    }
    if input.starts_with(V1_PREFIX) {
        return frame_v1(input);
    }
    Framed::Taken(0, None)
}

/// `input` is a proper beginning of `prefix` (empty input included).
fn could_become(input: &[u8], prefix: &[u8]) -> bool {
    input.len() < prefix.len() && prefix.starts_with(input)
}

fn frame_v1(input: &[u8]) -> Framed<Option<Parsed>> {
    let Some(lf) = input.iter().take(V1_MAX).position(|&b| b == b'\n') else {
        if input.len() < V1_MAX {
            return Framed::More;
        }
        let reason = format!("v1 header longer than {V1_MAX} octets");
        return Framed::Taken(input.len(), Some(Err(reason)));
    };
    let line = &input[..=lf];
    let parsed = match v1::Header::try_from(line) {
        Ok(header) => Ok(match header.addresses {
            v1::Addresses::Tcp4(a) => relayed(a.source_address.into(), a.source_port),
            v1::Addresses::Tcp6(a) => relayed(a.source_address.into(), a.source_port),
            v1::Addresses::Unknown => Header::Local,
        }),
        Err(e) => Err(format!("v1 header {:?}: {e}", String::from_utf8_lossy(line).trim_end())),
    };
    Framed::Taken(line.len(), Some(parsed))
}

fn frame_v2(input: &[u8]) -> Framed<Option<Parsed>> {
    let parsed = v2::Header::try_from(input);
    if parsed.is_incomplete() {
        return Framed::More;
    }
    match parsed {
        Ok(header) => {
            let said = match (header.command, header.addresses) {
                (v2::Command::Local, _) | (_, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => Header::Local,
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => relayed(a.source_address.into(), a.source_port),
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => relayed(a.source_address.into(), a.source_port),
            };
            Framed::Taken(header.len(), Some(Ok(said)))
        }
        // Where a broken header ends is unknowable: whatever came with it goes too.
        Err(e) => Framed::Taken(input.len(), Some(Err(format!("v2 header: {e}")))),
    }
}

/// An IPv4 client behind an IPv6 proxy is `::ffff:a.b.c.d`; connectors name `a.b.c.d`.
fn relayed(ip: IpAddr, port: u16) -> Header {
    Header::Relayed(SocketAddr::new(ip.to_canonical(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(input: &[u8]) -> (usize, Option<Parsed>) {
        match frame(input) {
            Framed::Taken(len, parsed) => (len, parsed),
            Framed::More => panic!("wants more than {input:?}"),
        }
    }

    fn v2_header(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut header = v2::PROTOCOL_PREFIX.to_vec();
        header.extend([0x20 | command, family]);
        header.extend((addresses.len() as u16).to_be_bytes());
        header.extend(addresses);
        header
    }

    const IPV4_ADDRESSES: [u8; 12] = [127, 0, 0, 7, 127, 0, 0, 1, 0x30, 0x39, 0, 25];

    #[test]
    fn smtp_is_not_a_header_and_nothing_is_taken() {
        for input in [
            &b"EHLO exch1.bear.local\r\n"[..],
            b"\r\nEHLO x\r\n",
            b"QUIT\r\n",
            b"PROXX",
            b"\r\n",
            b"\r\n\r\n",
        ] {
            assert_eq!(taken(input), (0, None), "{input:?}");
        }
    }

    #[test]
    fn beginnings_of_either_signature_wait_for_more() {
        for input in [&b""[..], b"PRO", b"PROXY", b"\r", b"PROXY TCP4 127.0.0.7"] {
            assert!(matches!(frame(input), Framed::More), "{input:?}");
        }
        // v2: the fixed part, then the addresses its length announces.
        let header = v2_header(1, 0x11, &IPV4_ADDRESSES);
        for cut in [13, 15, 16, header.len() - 1] {
            assert!(matches!(frame(&header[..cut]), Framed::More), "cut at {cut}");
        }
    }

    #[test]
    fn v1_headers_carry_the_client_and_only_their_line_is_taken() {
        let input = b"PROXY TCP4 127.0.0.7 127.0.0.1 12345 25\r\nEHLO x\r\n";
        assert_eq!(taken(input), (41, Some(Ok(Header::Relayed("127.0.0.7:12345".parse().unwrap())))));
        let input = b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::1 4711 25\r\n";
        assert_eq!(taken(input).1, Some(Ok(Header::Relayed("192.0.2.1:4711".parse().unwrap()))));
        let input = b"PROXY TCP6 2001:db8::7 2001:db8::1 4711 25\r\n";
        assert_eq!(taken(input).1, Some(Ok(Header::Relayed("[2001:db8::7]:4711".parse().unwrap()))));
        assert_eq!(taken(b"PROXY UNKNOWN\r\n"), (15, Some(Ok(Header::Local))));
    }

    #[test]
    fn malformed_v1_headers_are_refused_with_the_reason() {
        for (input, why) in [
            (&b"PROXY TCP4 127.0.0.7\r\n"[..], "v1 header \"PROXY TCP4 127.0.0.7\": "),
            (b"PROXY TCP4 127.0.0.999 127.0.0.1 1 25\r\n", "IP address for the source"),
            (b"PROXY TCP5 127.0.0.7 127.0.0.1 1 25\r\n", "invalid protocol"),
            (b"PROXY TCP4 127.0.0.7 127.0.0.1 1 25\n", "v1 header"),
        ] {
            let (len, parsed) = taken(input);
            assert_eq!(len, input.len());
            let e = parsed.unwrap().unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let long = [&b"PROXY TCP4 "[..], &[b'1'; 120]].concat();
        let e = taken(&long).1.unwrap().unwrap_err();
        assert!(e.contains("longer than 107"), "{e}");
    }

    #[test]
    fn v2_headers_carry_the_client_or_say_local() {
        let mut input = v2_header(1, 0x11, &IPV4_ADDRESSES);
        let len = input.len();
        input.extend(b"EHLO x\r\n");
        assert_eq!(taken(&input), (len, Some(Ok(Header::Relayed("127.0.0.7:12345".parse().unwrap())))));
        // LOCAL (HAProxy's health checks) and UNSPEC: the proxy itself.
        assert_eq!(taken(&v2_header(0, 0x11, &IPV4_ADDRESSES)).1, Some(Ok(Header::Local)));
        assert_eq!(taken(&v2_header(1, 0x00, &[])).1, Some(Ok(Header::Local)));
        // A TLV after the addresses belongs to the header.
        let with_tlv = v2_header(1, 0x11, &[&IPV4_ADDRESSES[..], &[0x04, 0, 1, 42]].concat());
        assert_eq!(taken(&with_tlv).0, with_tlv.len());
    }

    #[test]
    fn malformed_v2_headers_are_refused_with_the_reason() {
        // Version 1 in a v2 signature; an IPv4 header too short for two addresses.
        let mut bad_version = v2_header(1, 0x11, &IPV4_ADDRESSES);
        bad_version[12] = 0x11;
        let e = taken(&bad_version).1.unwrap().unwrap_err();
        assert!(e.starts_with("v2 header: ") && e.contains("version"), "{e}");
        let short = v2_header(1, 0x11, &IPV4_ADDRESSES[..4]);
        let e = taken(&short).1.unwrap().unwrap_err();
        assert!(e.contains("cannot store"), "{e}");
    }
}
