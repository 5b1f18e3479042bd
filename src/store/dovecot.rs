//! Dovecot's small text files shared by all store formats: `subscriptions`, the
//! `dovecot-attributes` METADATA dictionary, and the tab-escaping both use.
//! Pure functions over bytes; no I/O.

use crate::model::Name;

/// Dovecot's `str_tabescape`: `\x01`→`\x011`, TAB→`\x01t`, LF→`\x01n`, CR→`\x01r`.
pub(crate) fn tab_escape(s: &[u8], out: &mut Vec<u8>) {
    for &b in s {
        match b {
            0x01 => out.extend_from_slice(b"\x011"),
            b'\t' => out.extend_from_slice(b"\x01t"),
            b'\n' => out.extend_from_slice(b"\x01n"),
            b'\r' => out.extend_from_slice(b"\x01r"),
            _ => out.push(b),
        }
    }
}

/// Reverse of [`tab_escape`]; unknown escapes keep the escaped byte.
pub(crate) fn tab_unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == 0x01 && i + 1 < s.len() {
            out.push(match s[i + 1] {
                b'1' => 0x01,
                b't' => b'\t',
                b'n' => b'\n',
                b'r' => b'\r',
                o => o,
            });
            i += 2;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// Parse a `subscriptions` file into storage-encoded names with `/` between levels.
/// Version 2 (`V\t2`) joins levels with TAB; version 1 lists plain names.
pub(crate) fn parse_subscriptions(data: &[u8]) -> Vec<Vec<u8>> {
    let mut lines = data.split(|&b| b == b'\n');
    let mut out = Vec::new();
    let v2 = data.starts_with(b"V\t2");
    if v2 {
        lines.next();
    }
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if v2 {
            let levels: Vec<Vec<u8>> = line.split(|&b| b == b'\t').map(tab_unescape).collect();
            out.push(levels.join(&b'/'));
        } else {
            out.push(line.to_vec());
        }
    }
    out
}

/// Render a version-2 `subscriptions` file from storage-encoded `/`-separated names.
pub(crate) fn render_subscriptions(names: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"V\t2\n\n".to_vec();
    for n in names {
        for (i, level) in n.split(|&b| b == b'/').enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            tab_escape(level, &mut out);
        }
        out.push(b'\n');
    }
    out
}

/// Parse a `file:` dict (alternating escaped key and value lines).
pub(crate) fn parse_dict(data: &[u8]) -> Vec<(Name, Name)> {
    let mut out = Vec::new();
    let mut lines = data.split(|&b| b == b'\n');
    while let Some(k) = lines.next() {
        if k.is_empty() {
            continue;
        }
        let v = lines.next().unwrap_or_default();
        out.push((
            Name::from_bytes(tab_unescape(k)),
            Name::from_bytes(tab_unescape(v)),
        ));
    }
    out
}

/// Render a `file:` dict.
pub(crate) fn render_dict(entries: &[(Name, Name)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in entries {
        tab_escape(k.as_bytes(), &mut out);
        out.push(b'\n');
        tab_escape(v.as_bytes(), &mut out);
        out.push(b'\n');
    }
    out
}

/// Prefix of server METADATA keys below a mailbox GUID (stored on INBOX).
pub(crate) const SERVER_ATTR_PREFIX: &[u8] = b"vendor/vendor.dovecot/pvt/server/";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_roundtrip() {
        let f = b"V\t2\n\nINBOX\nWork\n&ANw-n&AO8- Box\nWork\tSub\n";
        let names = parse_subscriptions(f);
        assert_eq!(names[3], b"Work/Sub");
        assert_eq!(render_subscriptions(&names), f.to_vec());
        assert_eq!(
            parse_subscriptions(b"INBOX\nA/B\n"),
            vec![b"INBOX".to_vec(), b"A/B".to_vec()]
        );
    }

    #[test]
    fn dict_roundtrip_with_escapes() {
        let e = vec![
            (Name::from("priv/0011/comment"), Name::from("a\tb\nc\x01")),
            (Name::from("shared/0011/x"), Name::from("")),
        ];
        let r = render_dict(&e);
        assert_eq!(parse_dict(&r), e);
    }
}
