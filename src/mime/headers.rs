//! Extracting display headers (`From`, `Subject`, `Message-ID`) from the start of a message,
//! with RFC 2047 encoded words decoded for UTF-8, US-ASCII and ISO-8859-1. Pure, bounded.

use base64::Engine as _;

/// Maximum length of the decoded `from`, `subject` and `message_id` fields (the archive
/// format's limit for display fields, `format::spec::FIELD_LIMIT`).
pub const FIELD_LIMIT: usize = 256;

/// Display headers of one message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DisplayHeaders {
    /// Decoded `From:`.
    pub from: Option<String>,
    /// Decoded `Subject:`.
    pub subject: Option<String>,
    /// `Message-ID:`.
    pub message_id: Option<String>,
}

/// Parse the header block at the start of `msg` (only its first bytes are needed).
pub fn parse(msg: &[u8]) -> DisplayHeaders {
    let mut out = DisplayHeaders::default();
    let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
    for line in msg.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, v)) = fields.last_mut() {
                v.push(b' ');
                v.extend_from_slice(line.trim_ascii_start());
            }
            continue;
        }
        if let Some(c) = line.iter().position(|&b| b == b':') {
            let name = String::from_utf8_lossy(&line[..c]).to_ascii_lowercase();
            fields.push((name, line[c + 1..].trim_ascii().to_vec()));
        }
    }
    for (name, value) in fields {
        let slot = match name.as_str() {
            "from" => &mut out.from,
            "subject" => &mut out.subject,
            "message-id" => &mut out.message_id,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(truncate(decode_words(&value)));
        }
    }
    out
}

fn truncate(mut s: String) -> String {
    if s.len() > FIELD_LIMIT {
        let mut end = FIELD_LIMIT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn latin1(b: &[u8]) -> String {
    b.iter().map(|&c| c as char).collect()
}

fn decode_one(word: &str) -> Option<String> {
    // =?charset?enc?text?=
    let inner = word.strip_prefix("=?")?.strip_suffix("?=")?;
    let mut p = inner.splitn(3, '?');
    let charset = p.next()?.to_ascii_lowercase();
    let charset = charset.split('*').next().unwrap_or("");
    let enc = p.next()?;
    let text = p.next()?;
    let bytes = match enc {
        "B" | "b" => {
            let engine = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            );
            engine.decode(text).ok()?
        }
        "Q" | "q" => {
            let mut v = Vec::new();
            let b = text.as_bytes();
            let mut i = 0;
            while i < b.len() {
                match b[i] {
                    b'_' => v.push(b' '),
                    b'=' if i + 2 < b.len() => {
                        let h = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
                        v.push(u8::from_str_radix(h, 16).ok()?);
                        i += 2;
                    }
                    c => v.push(c),
                }
                i += 1;
            }
            v
        }
        _ => return None,
    };
    match charset {
        "utf-8" | "us-ascii" | "utf8" => Some(String::from_utf8_lossy(&bytes).into_owned()),
        "iso-8859-1" | "latin1" | "windows-1252" | "iso-8859-15" => Some(latin1(&bytes)),
        _ => None,
    }
}

/// Decode RFC 2047 encoded words in a header value; other bytes as UTF-8 (lossy).
pub(crate) fn decode_words(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v);
    let mut out = String::with_capacity(s.len());
    let mut last_was_word = false;
    let mut pending_space = String::new();
    for token in s.split_inclusive(' ') {
        let t = token.trim_end_matches(' ');
        let spaces = &token[t.len()..];
        if let Some(d) = (t.starts_with("=?") && t.ends_with("?="))
            .then(|| decode_one(t))
            .flatten()
        {
            // Whitespace between two encoded words is dropped (RFC 2047 6.2).
            if !last_was_word {
                out.push_str(&pending_space);
            }
            out.push_str(&d);
            last_was_word = true;
        } else {
            out.push_str(&pending_space);
            out.push_str(t);
            last_was_word = false;
        }
        pending_space = spaces.to_string();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_folded() {
        let h = parse(b"From: Alice <a@x>\r\nSubject: hello\r\n  world\r\nMessage-ID: <1@x>\r\n\r\nSubject: body");
        assert_eq!(h.from.as_deref(), Some("Alice <a@x>"));
        assert_eq!(h.subject.as_deref(), Some("hello world"));
        assert_eq!(h.message_id.as_deref(), Some("<1@x>"));
    }

    #[test]
    fn encoded_words() {
        assert_eq!(decode_words(b"=?UTF-8?B?w4l0w6k=?= report"), "Été report");
        assert_eq!(
            decode_words(b"=?iso-8859-1?Q?caf=E9_au_lait?="),
            "café au lait"
        );
        assert_eq!(decode_words(b"=?UTF-8?Q?a?= =?UTF-8?Q?b?="), "ab");
        assert_eq!(decode_words(b"=?x-unknown?Q?a?="), "=?x-unknown?Q?a?=");
    }

    #[test]
    fn long_values_are_truncated() {
        let mut m = b"Subject: ".to_vec();
        m.extend(std::iter::repeat_n(b'x', 1000));
        assert_eq!(parse(&m).subject.unwrap().len(), FIELD_LIMIT);
    }
}
