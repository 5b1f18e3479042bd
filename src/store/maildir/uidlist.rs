//! `dovecot-uidlist` (version 3) and `dovecot-keywords`: parsing and rendering, no I/O.

use crate::model::Name;

/// One uidlist record.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) struct UidRecord {
    /// UID.
    pub uid: u32,
    /// File base name (up to the first `:`).
    pub base: Vec<u8>,
    /// `G` field: message GUID when it differs from the base.
    pub guid: Option<Vec<u8>>,
    /// `S` field: physical size.
    pub size: Option<u64>,
    /// `W` field: virtual size.
    pub vsize: Option<u64>,
    /// `P` field: POP3 UIDL.
    pub pop3_uidl: Option<Vec<u8>>,
    /// `O` field: POP3 order.
    pub pop3_order: Option<u32>,
    /// Other fields, verbatim.
    pub other: Vec<Vec<u8>>,
}

/// A parsed uidlist.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub(crate) struct Uidlist {
    /// `V`.
    pub uidvalidity: u32,
    /// `N` as written (may be lower than the effective next UID).
    pub next_uid: u32,
    /// `G`: mailbox GUID, hex.
    pub guid: Option<String>,
    /// Other header fields, verbatim.
    pub header_other: Vec<Vec<u8>>,
    /// Records in file order (ascending UIDs).
    pub records: Vec<UidRecord>,
}

impl Uidlist {
    /// Effective next UID: max(`N`, last UID + 1).
    pub(crate) fn effective_next_uid(&self) -> u32 {
        let last = self.records.iter().map(|r| r.uid).max().unwrap_or(0);
        self.next_uid.max(last.saturating_add(1)).max(1)
    }
}

/// Parse a uidlist. Returns an error text naming the line on damage.
///
/// # Errors
/// Unknown version, a malformed header or record.
pub fn parse(data: &[u8]) -> Result<Uidlist, String> {
    let mut lines = data.split(|&b| b == b'\n');
    let header = lines.next().unwrap_or_default();
    let mut fields = header.split(|&b| b == b' ').filter(|f| !f.is_empty());
    let version = fields.next().unwrap_or_default();
    if version != b"3" {
        return Err(format!(
            "unsupported uidlist version {:?} (expected 3)",
            String::from_utf8_lossy(version)
        ));
    }
    let mut ul = Uidlist::default();
    for f in fields {
        let (k, v) = (f[0], &f[1..]);
        let num = || -> Result<u32, String> {
            std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad header field {:?}", String::from_utf8_lossy(f)))
        };
        match k {
            b'V' => ul.uidvalidity = num()?,
            b'N' => ul.next_uid = num()?,
            b'G' => ul.guid = Some(String::from_utf8_lossy(v).into_owned()),
            _ => ul.header_other.push(f.to_vec()),
        }
    }
    let mut last = 0u32;
    for (i, line) in lines.enumerate() {
        if line.is_empty() {
            continue;
        }
        let lineno = i + 2;
        // As Dovecot reads a record: the UID, then space-separated fields up to the first
        // field that starts with ':', which starts the file name (a ':' inside a field,
        // e.g. in a GUID or a POP3 UIDL, is part of the field).
        let (head, base) = split_record(line)
            .ok_or_else(|| format!("line {lineno}: no ':' before the file name"))?;
        let mut parts = head.into_iter();
        let uid: u32 = parts
            .next()
            .and_then(|u| std::str::from_utf8(u).ok())
            .and_then(|u| u.parse().ok())
            .ok_or_else(|| format!("line {lineno}: bad UID"))?;
        if uid <= last {
            return Err(format!("line {lineno}: UID {uid} not ascending"));
        }
        last = uid;
        let mut rec = UidRecord {
            uid,
            base: base.to_vec(),
            ..Default::default()
        };
        for f in parts {
            let (k, v) = (f[0], &f[1..]);
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<u64>().ok());
            match (k, n) {
                (b'G', _) => rec.guid = Some(v.to_vec()),
                (b'S', Some(n)) => rec.size = Some(n),
                (b'W', Some(n)) => rec.vsize = Some(n),
                (b'P', _) => rec.pop3_uidl = Some(v.to_vec()),
                (b'O', Some(n)) => rec.pop3_order = u32::try_from(n).ok(),
                _ => rec.other.push(f.to_vec()),
            }
        }
        ul.records.push(rec);
    }
    Ok(ul)
}

/// A record line's fields before the file name (the UID first) and the file name.
fn split_record(line: &[u8]) -> Option<(Vec<&[u8]>, &[u8])> {
    let mut fields = Vec::new();
    let mut rest = line;
    loop {
        let start = rest.iter().position(|&b| b != b' ')?;
        rest = &rest[start..];
        if let Some(name) = rest.strip_prefix(b":") {
            return Some((fields, name));
        }
        // The UID may be followed by ':' directly.
        let stop = |b: &u8| *b == b' ' || (fields.is_empty() && *b == b':');
        let end = rest.iter().position(stop).unwrap_or(rest.len());
        fields.push(&rest[..end]);
        rest = &rest[end..];
    }
}

/// Render a uidlist.
pub fn render(ul: &Uidlist) -> Vec<u8> {
    let mut out = format!("3 V{} N{}", ul.uidvalidity, ul.next_uid).into_bytes();
    if let Some(g) = &ul.guid {
        out.extend_from_slice(format!(" G{g}").as_bytes());
    }
    for f in &ul.header_other {
        out.push(b' ');
        out.extend_from_slice(f);
    }
    out.push(b'\n');
    for r in &ul.records {
        out.extend_from_slice(r.uid.to_string().as_bytes());
        if let Some(g) = &r.guid {
            out.extend_from_slice(b" G");
            out.extend_from_slice(g);
        }
        if let Some(s) = r.size {
            out.extend_from_slice(format!(" S{s}").as_bytes());
        }
        if let Some(w) = r.vsize {
            out.extend_from_slice(format!(" W{w}").as_bytes());
        }
        if let Some(p) = &r.pop3_uidl {
            out.extend_from_slice(b" P");
            out.extend_from_slice(p);
        }
        if let Some(o) = r.pop3_order {
            out.extend_from_slice(format!(" O{o}").as_bytes());
        }
        for f in &r.other {
            out.push(b' ');
            out.extend_from_slice(f);
        }
        out.extend_from_slice(b" :");
        out.extend_from_slice(&r.base);
        out.push(b'\n');
    }
    out
}

/// Parse `dovecot-keywords` into a table indexed 0..=25 (gaps are empty names).
pub(crate) fn parse_keywords(data: &[u8]) -> Vec<Name> {
    let mut table: Vec<Name> = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(sp) = line.iter().position(|&b| b == b' ') else {
            continue;
        };
        let Some(idx) = std::str::from_utf8(&line[..sp])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
        else {
            continue;
        };
        if idx >= 26 {
            continue;
        }
        if table.len() <= idx {
            table.resize(idx + 1, Name::default());
        }
        table[idx] = Name::from_bytes(&line[sp + 1..]);
    }
    table
}

/// Render `dovecot-keywords` (empty names are gaps and are not written).
pub(crate) fn render_keywords(table: &[Name]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, k) in table.iter().enumerate() {
        if k.is_empty() {
            continue;
        }
        out.extend_from_slice(format!("{i} ").as_bytes());
        out.extend_from_slice(k.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Facts encoded in a Maildir file name `<base>[:2,<info>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileName<'a> {
    /// Text before the last `:` (or the whole name).
    pub base: &'a [u8],
    /// Letters after `:2,`.
    pub info: &'a [u8],
    /// `,S=` value.
    pub size: Option<u64>,
    /// `,W=` value.
    pub vsize: Option<u64>,
}

/// Split a Maildir file name.
pub(crate) fn parse_filename(name: &[u8]) -> FileName<'_> {
    let (base, info) = match name.iter().rposition(|&b| b == b':') {
        Some(c) => {
            let info = &name[c + 1..];
            (&name[..c], info.strip_prefix(b"2,").unwrap_or(b""))
        }
        None => (name, &b""[..]),
    };
    let field = |key: &[u8]| -> Option<u64> {
        let pos = base.windows(key.len()).rposition(|w| w == key)?;
        let rest = &base[pos + key.len()..];
        let end = rest
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
    };
    FileName {
        base,
        info,
        size: field(b",S="),
        vsize: field(b",W="),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the archive_json fuzz target: a GUID with a ':' rendered as a G field was
    /// read back cut at the ':' (the rest taken for the file name). Dovecot reads fields
    /// up to a field that starts with ':'; so does this parser now.
    #[test]
    fn a_colon_inside_a_field_is_part_of_it() {
        let ul = parse(b"3 V1 N9\n4 Gab:cd Px:y :1.M1P1.host,S=5\n5:2.M2\n").unwrap();
        assert_eq!(ul.records[0].guid.as_deref(), Some(&b"ab:cd"[..]));
        assert_eq!(ul.records[0].pop3_uidl.as_deref(), Some(&b"x:y"[..]));
        assert_eq!(ul.records[0].base, b"1.M1P1.host,S=5");
        assert_eq!(
            (ul.records[1].uid, &ul.records[1].base[..]),
            (5, &b"2.M2"[..])
        );
        assert_eq!(parse(&render(&ul)).unwrap(), ul);
    }

    #[test]
    fn uidlist_roundtrip() {
        let text = b"3 V123456 N20 G0123456789abcdef0123456789abcdef\n5 :1600000000.A1.restore,S=156,W=163\n7 GorigGuid-7@example :1600000001.A2.restore\n";
        let ul = parse(text).unwrap();
        assert_eq!(ul.uidvalidity, 123456);
        assert_eq!(ul.effective_next_uid(), 20);
        assert_eq!(
            ul.records[1].guid.as_deref(),
            Some(&b"origGuid-7@example"[..])
        );
        assert_eq!(render(&ul), text.to_vec());
        let ul = parse(b"3 V1 N1\n1 :a\n2 :b\n3 :c\n").unwrap();
        assert_eq!(ul.effective_next_uid(), 4);
        assert!(parse(b"1 V1 N1\n").is_err());
        assert!(parse(b"3 V1 N1\n2 :a\n1 :b\n").is_err());
        assert!(parse(b"3 V1 N1\nx :a\n").is_err());
    }

    #[test]
    fn filename_fields() {
        let f = parse_filename(b"1795868817.M139148P6938.vm,S=173,W=181:2,Rab");
        assert_eq!(f.base, b"1795868817.M139148P6938.vm,S=173,W=181");
        assert_eq!(f.info, b"Rab");
        assert_eq!((f.size, f.vsize), (Some(173), Some(181)));
        let f = parse_filename(b"1500000000.foreignA.host");
        assert_eq!((f.info, f.size), (&b""[..], None));
    }

    #[test]
    fn keywords_table() {
        let t = parse_keywords(b"0 $Label1\n1 Important\n3 x\n");
        assert_eq!(t.len(), 4);
        assert!(t[2].is_empty());
        assert_eq!(
            render_keywords(&t),
            b"0 $Label1\n1 Important\n3 x\n".to_vec()
        );
    }
}
