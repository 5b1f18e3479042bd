//! Finding the base64 attachments of a message read whole, so that each can be stored once,
//! decoded, as a blob part (format 1.2, spec 6.8 and 7.5 "When"). Pure: works on the
//! message's bytes, does no I/O.
//!
//! The walk follows RFC 2045/2046: the message's header, `multipart/*` bodies cut at their
//! boundary delimiters (nested, up to [`MAX_DEPTH`] levels), `message/rfc822` bodies as
//! messages, and leaf bodies with `Content-Transfer-Encoding: base64`. A leaf is taken out
//! only when its text is exactly what spec 6.8 rule 2 makes of the decoded bytes: standard
//! alphabet, canonical `=` padding and padding bits, lines of one length (a multiple of 4)
//! but the last, which may be shorter, all ended by LF or all by CRLF, no line end after the
//! last line (line ends after it stay in the data). Anything else leaves that leaf in the
//! data; a message whose structure does not parse (a multipart without its closing
//! delimiter, nesting too deep) is not split at all. The caller still checks the result
//! byte for byte (`parts::matches`) before recording it: a mistake here can only cost
//! space, never give wrong bytes.

use base64_simd::STANDARD;

use crate::mime::parts::{blob, range};
use crate::model::Part;

/// Encoded attachments shorter than this stay in the message: a blob part costs a tar
/// member (at least 1 KiB of header and padding), a catalog entry (~120 B) and a SHA-256;
/// below a few KiB that outweighs what storing the attachment once and decoded saves, and
/// small attachments (signatures, logos, vCards) rarely repeat anyway.
pub(crate) const SPLIT_MIN: usize = 4096;

/// Deepest MIME nesting followed; a deeper message is stored whole.
pub(crate) const MAX_DEPTH: usize = 32;

/// A message as its data (the message without the attachments' text) and blob parts.
#[derive(Debug)]
pub struct Split {
    /// The message without the attachments' encoded text.
    pub data: Vec<u8>,
    /// Ranges of `data` and blob parts (SHA-256 left empty, for the writer to fill in).
    pub parts: Vec<Part>,
    /// The decoded bytes of each blob part, in order.
    pub blobs: Vec<Vec<u8>>,
}

/// An attachment found: its encoded text is `msg[start..end]`.
struct Found {
    start: usize,
    end: usize,
    line: u32,
    crlf: bool,
    decoded: Vec<u8>,
}

/// The parts of `msg` when it has base64 attachments of at least `min` encoded bytes that
/// re-encode exactly; `None` to store it whole.
pub fn split(msg: &[u8], min: usize) -> Option<Split> {
    // Most messages are shorter than one attachment worth taking out: no MIME walk for
    // them (this runs for every message a backup reads whole).
    if msg.len() < min {
        return None;
    }
    let mut found = Vec::new();
    entity(msg, 0, msg.len(), 0, min.max(4), &mut found).ok()?;
    if found.is_empty() {
        return None;
    }
    let kept: usize = msg.len() - found.iter().map(|f| f.end - f.start).sum::<usize>();
    let mut data = Vec::with_capacity(kept);
    let mut parts = Vec::with_capacity(found.len() * 2 + 1);
    let mut blobs = Vec::with_capacity(found.len());
    let mut at = 0;
    for f in found {
        if f.start > at {
            parts.push(range(data.len() as u64, (f.start - at) as u64));
            data.extend_from_slice(&msg[at..f.start]);
        }
        parts.push(blob(
            String::new(),
            f.decoded.len() as u64,
            Some(f.line),
            f.crlf,
        ));
        blobs.push(f.decoded);
        at = f.end;
    }
    if at < msg.len() {
        parts.push(range(data.len() as u64, (msg.len() - at) as u64));
        data.extend_from_slice(&msg[at..]);
    }
    Some(Split { data, parts, blobs })
}

/// The structure does not parse: store the message whole.
struct Unparsed;

/// What the header of an entity says about its body.
#[derive(Default)]
struct Fields {
    multipart_boundary: Option<Vec<u8>>,
    rfc822: bool,
    base64: bool,
}

/// Walk the entity (header and body) `msg[s..e]`, collecting attachments in order.
fn entity(
    msg: &[u8],
    s: usize,
    e: usize,
    depth: usize,
    min: usize,
    found: &mut Vec<Found>,
) -> Result<(), Unparsed> {
    if depth > MAX_DEPTH {
        return Err(Unparsed);
    }
    let Some((fields, body)) = header(msg, s, e) else {
        return Ok(()); // A header without a body: nothing to take out.
    };
    if let Some(b) = fields.multipart_boundary {
        multipart(msg, body, e, &b, depth, min, found)
    } else if fields.rfc822 {
        entity(msg, body, e, depth + 1, min, found)
    } else {
        if fields.base64
            && let Some(f) = leaf(msg, body, e, min)
        {
            found.push(f);
        }
        Ok(())
    }
}

/// Parse the header of `msg[s..e]`: the fields that matter and where the body starts
/// (after the empty line); `None` when there is no empty line.
fn header(msg: &[u8], s: usize, e: usize) -> Option<(Fields, usize)> {
    let mut fields: Vec<(usize, usize)> = Vec::new(); // (start, end) of each unfolded field
    let mut at = s;
    loop {
        let rest = msg.get(at..e)?;
        let nl = memchr::memchr(b'\n', rest)?;
        let line = &rest[..nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            let mut out = Fields::default();
            for &(fs, fe) in &fields {
                field(&msg[fs..fe], &mut out);
            }
            return Some((out, at + nl + 1));
        }
        match (line.first(), fields.last_mut()) {
            (Some(b' ' | b'\t'), Some(last)) => last.1 = at + nl,
            _ => fields.push((at, at + nl)),
        }
        at += nl + 1;
    }
}

/// Note what one (possibly folded) header field says, if it matters.
fn field(raw: &[u8], out: &mut Fields) {
    let Some(colon) = memchr::memchr(b':', raw) else {
        return;
    };
    let name = raw[..colon].trim_ascii();
    let value: Vec<u8> = raw[colon + 1..]
        .iter()
        .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b })
        .collect();
    let value = value.trim_ascii();
    if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
        out.base64 = value.eq_ignore_ascii_case(b"base64");
    } else if name.eq_ignore_ascii_case(b"content-type") {
        let end = memchr::memchr(b';', value).unwrap_or(value.len());
        let kind = value[..end].trim_ascii();
        out.rfc822 = kind.eq_ignore_ascii_case(b"message/rfc822");
        out.multipart_boundary = None;
        if kind.len() > 10 && kind[..10].eq_ignore_ascii_case(b"multipart/") {
            out.multipart_boundary = param(&value[end..], b"boundary");
        }
    }
}

/// The value of parameter `want` in `; a=b; c="d"` (quoted strings unquoted).
fn param(mut s: &[u8], want: &[u8]) -> Option<Vec<u8>> {
    loop {
        s = s.trim_ascii_start().strip_prefix(b";")?.trim_ascii_start();
        let eq = memchr::memchr(b'=', s)?;
        let name = s[..eq].trim_ascii();
        s = s[eq + 1..].trim_ascii_start();
        let mut value = Vec::new();
        if let Some(q) = s.strip_prefix(b"\"") {
            let mut i = 0;
            loop {
                match q.get(i)? {
                    b'"' => break,
                    b'\\' => {
                        value.push(*q.get(i + 1)?);
                        i += 2;
                    }
                    &c => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
            s = &q[i + 1..];
        } else {
            let end = s
                .iter()
                .position(|&c| c == b';' || c.is_ascii_whitespace())
                .unwrap_or(s.len());
            value.extend_from_slice(&s[..end]);
            s = &s[end..];
        }
        if name.eq_ignore_ascii_case(want) {
            return (!value.is_empty()).then_some(value);
        }
    }
}

/// Walk the body parts of the multipart body `msg[s..e]` with boundary `b`.
fn multipart(
    msg: &[u8],
    s: usize,
    e: usize,
    b: &[u8],
    depth: usize,
    min: usize,
    found: &mut Vec<Found>,
) -> Result<(), Unparsed> {
    let mut delim = Vec::with_capacity(b.len() + 3);
    delim.extend_from_slice(b"\n--");
    delim.extend_from_slice(b);
    let finder = memchr::memmem::Finder::new(&delim);
    // The first delimiter may open the body (no preamble) or follow a line end.
    let mut search = s;
    let mut open: Option<usize> = None; // where the current body part starts
    let mut at_start = msg.get(s..e).is_some_and(|r| r.starts_with(&delim[1..]));
    loop {
        // `d`: index of the delimiter's "--"; `part_end`: where the part before it ends
        // (the line end before a delimiter belongs to the delimiter).
        let (d, part_end) = if at_start {
            at_start = false;
            (s, s)
        } else {
            let hit = finder
                .find(msg.get(search..e).ok_or(Unparsed)?)
                .ok_or(Unparsed)?;
            let nl = search + hit;
            let end = if nl > s && msg[nl - 1] == b'\r' {
                nl - 1
            } else {
                nl
            };
            (nl + 1, end)
        };
        let after = d + 2 + b.len();
        let rest = &msg[after..e];
        let close = rest.starts_with(b"--");
        let tail = if close { &rest[2..] } else { rest };
        // Transport padding (spaces, tabs) may follow, then the line end.
        let pad = tail
            .iter()
            .position(|&c| c != b' ' && c != b'\t')
            .unwrap_or(tail.len());
        let line_end = match &tail[pad..] {
            [] => Some(e),
            [b'\n', ..] => Some(e - tail.len() + pad + 1),
            [b'\r', b'\n', ..] => Some(e - tail.len() + pad + 2),
            _ => None,
        };
        let Some(next) = line_end else {
            // `--boundary` followed by more: not a delimiter, text of the part.
            search = after;
            continue;
        };
        if let Some(start) = open.take()
            && part_end >= start
        {
            entity(msg, start, part_end, depth + 1, min, found)?;
        }
        if close {
            return Ok(());
        }
        open = Some(next);
        search = next.saturating_sub(1).max(s);
    }
}

/// The leaf body `msg[s..e]` as an attachment, when it is long enough and its text is the
/// canonical encoding of what it decodes to (see the module documentation).
fn leaf(msg: &[u8], s: usize, e: usize, min: usize) -> Option<Found> {
    let mut end = e;
    while end > s && matches!(msg[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    let text = &msg[s..end];
    if text.len() < min {
        return None;
    }
    let (line, crlf) = match memchr::memchr(b'\n', text) {
        Some(nl) if nl > 0 && text[nl - 1] == b'\r' => (nl - 1, true),
        Some(nl) => (nl, false),
        None => (text.len(), false),
    };
    if line == 0 || !line.is_multiple_of(4) {
        return None;
    }
    let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
    // The characters without line ends: full lines, then a last one of 1..=line.
    let full = (text.len() - 1) / (line + eol.len());
    let chars = full * line + (text.len() - full * (line + eol.len()));
    // Decoded into spare capacity reserved once (no zero fill, no reallocation).
    let mut decoded = Vec::with_capacity(chars / 4 * 3);
    let mut gather: Vec<u8> = Vec::with_capacity(CHUNK + line);
    let mut at = 0;
    loop {
        let rest = &text[at..];
        let last = rest.len() <= line;
        let this = if last { rest } else { &rest[..line] };
        if !last && !rest[line..].starts_with(eol) {
            return None; // a line of another length, or another line end
        }
        gather.extend_from_slice(this);
        if last || gather.len() >= CHUNK {
            // Only the last chunk may hold padding: `=` ending an earlier chunk would be
            // padding in the middle of the text.
            if !last && gather.last() == Some(&b'=') {
                return None;
            }
            STANDARD.decode_append(&gather, &mut decoded).ok()?;
            gather.clear();
        }
        if last {
            break;
        }
        at += line + eol.len();
    }
    Some(Found {
        start: s,
        end,
        line: u32::try_from(line).ok()?,
        crlf,
        decoded,
    })
}

/// Encoded text gathered (line ends left out) before it is decoded at once.
const CHUNK: usize = 64 * 1024;

#[cfg(test)]
mod tests;
