//! xtext (RFC 1891 section 5), the encoding of XFORWARD and XCLIENT attribute values: `+` and
//! two hex digits for an octet, every other octet printable ASCII. The edge reads it in the
//! XFORWARD an MTA in front of it sends, and writes it in what it sends the next hop.

/// The value as xtext: `+`, `=` and every octet outside `!`..`~` as `+XX`.
pub(crate) fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_graphic() && byte != b'+' && byte != b'=' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("+{byte:02X}"));
        }
    }
    out
}

/// An xtext value, decoded. It must decode to printable ASCII without space, and be at most
/// 255 characters (XFORWARD_README, note 1). `None` for an empty value.
pub(crate) fn decode(raw: &str) -> Result<Option<String>, &'static str> {
    if raw.len() > 255 {
        return Err("longer than 255 characters");
    }
    let mut out = String::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        let octet = if b == b'+' {
            let digit = |d: Option<u8>| d.and_then(|d| char::from(d).to_digit(16));
            let (Some(high), Some(low)) = (digit(bytes.next()), digit(bytes.next())) else {
                return Err("a '+' not followed by two hex digits");
            };
            (high * 16 + low) as u8
        } else {
            b
        };
        if !octet.is_ascii_graphic() {
            return Err("control, space or non-ASCII characters");
        }
        out.push(octet as char);
    }
    Ok((!out.is_empty()).then_some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_encoded_decodes_to_itself() {
        assert_eq!(encode("a+b=c.example"), "a+2Bb+3Dc.example");
        for value in ["exch1.bear.local", "a+b=c", "[192.0.2.1]", "~!"] {
            assert_eq!(decode(&encode(value)), Ok(Some(value.to_owned())), "{value}");
        }
        assert_eq!(decode(""), Ok(None));
    }

    #[test]
    fn what_cannot_be_a_value_is_named() {
        assert_eq!(encode("a b"), "a+20b");
        assert_eq!(decode("a+20b"), Err("control, space or non-ASCII characters"));
        assert_eq!(decode("a+2"), Err("a '+' not followed by two hex digits"));
        assert_eq!(decode(&"a".repeat(256)), Err("longer than 255 characters"));
    }
}
