//! The splitter: byte-exact round trips for every layout it accepts, and the layouts it
//! leaves whole.

use super::*;
use crate::mime::parts::{base64_lines, matches};

/// Deterministic bytes (xorshift), `n` of them.
fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `data` as the canonical base64 text of spec 6.8 rule 2.
fn b64(data: &[u8], line: u32, crlf: bool) -> Vec<u8> {
    base64_lines(data, Some(line), crlf).unwrap()
}

/// A multipart/mixed message with a text part and one part per attachment text; `eol`
/// ends every line of the structure.
fn mixed(eol: &str, attachments: &[&[u8]], after_last: &str) -> Vec<u8> {
    let mut m = format!(
        "From: a@example.org{eol}Subject: test{eol}MIME-Version: 1.0{eol}Content-Type: multipart/mixed;{eol}\tboundary=\"=_b1\"{eol}{eol}preamble{eol}--=_b1{eol}Content-Type: text/plain{eol}{eol}Hello{eol}"
    )
    .into_bytes();
    for (i, a) in attachments.iter().enumerate() {
        m.extend_from_slice(
            format!("--=_b1{eol}Content-Type: application/pdf; name=\"f{i}.pdf\"{eol}Content-Transfer-Encoding: BASE64{eol}{eol}").as_bytes(),
        );
        m.extend_from_slice(a);
        m.extend_from_slice(eol.as_bytes());
    }
    m.extend_from_slice(format!("--=_b1--{after_last}").as_bytes());
    m
}

/// Split `msg`, check it gives `msg` back, and return the split.
fn round_trip(msg: &[u8]) -> Split {
    let s = split(msg, SPLIT_MIN).expect("split");
    assert!(matches(&s.parts, &s.data, &s.blobs, msg), "not byte-exact");
    assert!(!matches(&s.parts, &s.data, &s.blobs, &msg[..msg.len() - 1]));
    s
}

fn blob_parts(s: &Split) -> Vec<(u64, Option<u32>, bool)> {
    s.parts
        .iter()
        .filter(|p| p.blob.is_some())
        .map(|p| (p.size, p.line, p.crlf))
        .collect()
}

#[test]
fn line_lengths_and_padding() {
    // Line 76, 64, 72; last line short; an exact multiple of the line; `=` and `==`.
    for (line, n) in [(76, 10_000), (64, 9_001), (72, 9_002), (76, 57 * 100)] {
        let data = bytes(n, n as u64);
        let text = b64(&data, line, false);
        let msg = mixed("\n", &[&text], "\n");
        let s = round_trip(&msg);
        assert_eq!(blob_parts(&s), vec![(n as u64, Some(line), false)]);
        assert_eq!(s.blobs, vec![data]);
        // The data member keeps everything but the encoded text.
        assert_eq!(s.data.len(), msg.len() - text.len());
    }
    assert!(b64(&bytes(9_001, 1), 64, false).ends_with(b"=="));
    assert!(b64(&bytes(9_002, 1), 72, false).ends_with(b"="));
}

#[test]
fn crlf_and_several_attachments() {
    let (a, b) = (bytes(20_000, 1), bytes(7_000, 2));
    let (ta, tb) = (b64(&a, 76, true), b64(&b, 76, true));
    let msg = mixed("\r\n", &[&ta, &tb], "\r\n");
    let s = round_trip(&msg);
    assert_eq!(
        blob_parts(&s),
        vec![(20_000, Some(76), true), (7_000, Some(76), true)]
    );
    assert_eq!(s.blobs, vec![a, b]);
    // Ranges between the blobs: the header, the text between, the tail.
    assert_eq!(s.parts.len(), 5);
}

#[test]
fn nested_multiparts_and_rfc822() {
    let data = bytes(12_345, 3);
    let text = b64(&data, 76, false);
    let inner = {
        let mut m = b"Content-Type: multipart/alternative; boundary=inner\n\n--inner\nContent-Type: text/plain\n\nhi\n--inner\nContent-Type: image/png\nContent-Transfer-Encoding: base64\n\n".to_vec();
        m.extend_from_slice(&text);
        m.extend_from_slice(b"\n--inner--\n");
        m
    };
    let mut msg =
        b"Subject: x\nContent-Type: multipart/mixed; boundary=outer\n\n--outer\n".to_vec();
    msg.extend_from_slice(&inner);
    msg.extend_from_slice(b"--outer\nContent-Type: message/rfc822\n\nSubject: fwd\nContent-Transfer-Encoding: base64\n\n");
    msg.extend_from_slice(&text);
    msg.extend_from_slice(b"\n--outer--\nepilogue\n");
    let s = round_trip(&msg);
    assert_eq!(s.blobs, vec![data.clone(), data]);
}

#[test]
fn attachment_at_the_very_end() {
    let data = bytes(10_000, 4);
    let text = b64(&data, 76, false);
    // A single-part message whose body is the attachment, with and without a line end.
    for tail in [&b""[..], b"\n", b"\n\n"] {
        let mut msg =
            b"Subject: x\nContent-Type: application/zip\nContent-Transfer-Encoding: base64\n\n"
                .to_vec();
        msg.extend_from_slice(&text);
        msg.extend_from_slice(tail);
        let s = round_trip(&msg);
        assert_eq!(s.blobs, vec![data.clone()]);
        // No range after the blob when the message ends with it.
        assert_eq!(s.parts.last().unwrap().blob.is_some(), tail.is_empty());
    }
    // The closing delimiter as the last bytes, without a line end.
    let msg = mixed("\n", &[&text], "");
    assert_eq!(round_trip(&msg).blobs, vec![data]);
}

#[test]
fn small_attachments_stay() {
    let text = b64(&bytes(1_000, 5), 76, false);
    assert!(split(&mixed("\n", &[&text], "\n"), SPLIT_MIN).is_none());
}

/// Layouts left whole: each is a quirk the spec's encoding cannot reproduce.
#[test]
fn refusals() {
    let data = bytes(10_000, 6);
    let good = b64(&data, 76, false);
    let refuse = |text: &[u8], why: &str| {
        let msg = mixed("\n", &[text], "\n");
        assert!(split(&msg, SPLIT_MIN).is_none(), "{why}: split");
    };
    // Mixed line endings: one CRLF among LF.
    let mut t = good.clone();
    t.splice(76..77, b"\r\n".iter().copied());
    refuse(&t, "mixed line endings");
    // A line of another length in the middle.
    let mut t = good.clone();
    t.remove(77 * 3 + 5);
    t.insert(77 * 5, b'A');
    refuse(&t, "odd line mid-body");
    // Trailing whitespace on a line and after the last line.
    let mut t = good.clone();
    t.insert(76, b' ');
    refuse(&t, "trailing space on a line");
    let mut t = good.clone();
    t.extend_from_slice(b" ");
    refuse(&t, "trailing space at the end");
    // Non-zero padding bits: 10 000 bytes end in `==`, so the character before carries 4
    // padding bits, which must be zero; set the lowest.
    let mut t = good.clone();
    assert!(t.ends_with(b"=="));
    let last = t.len() - 3;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let i = alphabet.iter().position(|&x| x == t[last]).unwrap();
    assert_eq!(i % 16, 0);
    t[last] = alphabet[i | 1];
    refuse(&t, "non-zero padding bits");
    // Invalid characters; padding in the middle; no padding.
    let mut t = good.clone();
    t[100] = b'*';
    refuse(&t, "invalid character");
    let mut t = good.clone();
    t[200] = b'=';
    refuse(&t, "padding mid-body");
    let mut t = good.clone();
    t.pop();
    refuse(&t, "padding left out");
    // Lines not a multiple of 4 characters.
    refuse(&b64(&data, 75, false), "line of 75");
    // A multipart without its closing delimiter is not split at all.
    let mut msg = mixed("\n", &[&good], "\n");
    msg.truncate(msg.len() - b"--=_b1--\n".len());
    assert!(split(&msg, SPLIT_MIN).is_none(), "missing closing boundary");
    // Not base64 at all (the same text declared quoted-printable).
    let mut msg = mixed("\n", &[&good], "\n");
    let at = memchr::memmem::find(&msg, b"BASE64").unwrap();
    msg.splice(at..at + 6, b"7bit".iter().copied());
    assert!(split(&msg, SPLIT_MIN).is_none(), "not base64");
}

#[test]
fn quirky_part_left_good_part_taken() {
    let (a, b) = (bytes(10_000, 7), bytes(10_000, 8));
    let ta = b64(&a, 76, false);
    let mut tb = b64(&b, 76, false);
    tb.insert(76, b' ');
    let s = round_trip(&mixed("\n", &[&tb, &ta], "\n"));
    assert_eq!(s.blobs, vec![a]);
}

/// A boundary string inside a part's text that is longer than the delimiter line
/// (`--=_b1x`) is text, not a delimiter.
#[test]
fn longer_boundary_is_text() {
    let data = bytes(10_000, 9);
    let text = b64(&data, 76, false);
    let mut msg = b"Content-Type: multipart/mixed; boundary=\"=_b1\"\n\n--=_b1\nContent-Type: text/plain\n\n--=_b1x is not a delimiter\n".to_vec();
    msg.extend_from_slice(b"--=_b1\nContent-Transfer-Encoding: base64\n\n");
    msg.extend_from_slice(&text);
    msg.extend_from_slice(b"\n--=_b1--  \n");
    assert_eq!(round_trip(&msg).blobs, vec![data]);
}

#[test]
fn streaming_encoder_matches_whole_encoding() {
    use base64::Engine as _;
    for n in [0, 1, 2, 3, 56, 57, 58, 57 * 640, 57 * 640 + 1, 100_000] {
        let data = bytes(n, n as u64 + 11);
        let text = base64::engine::general_purpose::STANDARD.encode(&data);
        for (line, crlf) in [(76, false), (76, true), (64, false), (75, false), (4, true)] {
            let eol = if crlf { "\r\n" } else { "\n" };
            let want: Vec<&str> = text
                .as_bytes()
                .chunks(line)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect();
            let want = want.join(eol);
            let got = base64_lines(&data, Some(line as u32), crlf).unwrap();
            assert_eq!(got, want.as_bytes(), "n {n} line {line}");
        }
    }
}
