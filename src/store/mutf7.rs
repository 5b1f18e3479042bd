//! Modified UTF-7 (RFC 3501 section 5.1.3), the encoding of Maildir folder names on disk
//! unless the location has `:UTF-8`.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Base64 with `+` and `,` (RFC 3501), no padding; built once, at compile time.
const ENGINE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::IMAP_MUTF7,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

fn engine() -> &'static GeneralPurpose {
    &ENGINE
}

/// Encode UTF-8 text as modified UTF-7.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&engine().encode(bytes));
        out.push('-');
        pending.clear();
    };
    for c in s.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut pending, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut pending, &mut out);
    out
}

/// Decode modified UTF-7; `None` when the text is not valid modified UTF-7.
pub fn decode(s: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c != b'&' {
            if !(0x20..0x7f).contains(&c) {
                return None;
            }
            out.push(c as char);
            i += 1;
            continue;
        }
        let end = s[i + 1..].iter().position(|&b| b == b'-')? + i + 1;
        if end == i + 1 {
            out.push('&');
        } else {
            let bytes = engine().decode(&s[i + 1..end]).ok()?;
            if bytes.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = bytes
                .chunks(2)
                .map(|p| u16::from_be_bytes([p[0], p[1]]))
                .collect();
            out.push_str(&String::from_utf16(&units).ok()?);
        }
        i = end + 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(encode("Ünï Box"), "&ANw-n&AO8- Box");
        assert_eq!(encode("Été"), "&AMk-t&AOk-");
        assert_eq!(encode("R&D"), "R&-D");
        assert_eq!(decode(b"&ANw-n&AO8- Box").unwrap(), "Ünï Box");
        assert_eq!(decode(b"R&-D").unwrap(), "R&D");
        assert_eq!(decode(b"&AMk-t&AOk-").unwrap(), "Été");
        assert!(decode(b"&ANw").is_none());
        for s in ["日本語", "a😀b", "~&x&"] {
            assert_eq!(decode(encode(s).as_bytes()).unwrap(), s);
        }
    }
}
