//! Choosing what to restore: users, mailboxes (exact, IMAP `*`/`%` wildcards, sub-folders),
//! and messages (UID sequence sets, GUIDs, Message-IDs, received dates, restore lists).

use std::collections::HashSet;

use crate::error::{Error, Result};
use crate::model::{MessageMeta, Name};

/// An IMAP sequence set of UIDs (`1:5,9,20:*`); `*` is the largest UID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqSet(Vec<(u32, u32)>);

impl SeqSet {
    /// Parse `1:5,9,12:*`.
    ///
    /// # Errors
    /// [`Error::Usage`] for anything else.
    pub fn parse(s: &str) -> Result<SeqSet> {
        let bad = || {
            Error::Usage(format!(
                "--uid {s:?}: expected an IMAP sequence set such as 1:5,9,20:*"
            ))
        };
        let num = |t: &str| -> Result<u32> {
            if t == "*" {
                Ok(u32::MAX)
            } else {
                t.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(bad)
            }
        };
        let mut v = Vec::new();
        for part in s.split(',') {
            let (a, b) = match part.split_once(':') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let n = num(part)?;
                    (n, n)
                }
            };
            v.push((a.min(b), a.max(b)));
        }
        if v.is_empty() {
            return Err(bad());
        }
        Ok(SeqSet(v))
    }

    /// True when `uid` is in the set.
    pub fn contains(&self, uid: u32) -> bool {
        self.0.iter().any(|&(a, b)| a <= uid && uid <= b)
    }
}

/// IMAP LIST-style match: `*` matches anything, `%` anything but the separator `/`.
///
/// Linear in the name for each pattern byte (O(pattern x name) time, O(name) memory): one
/// pass over the pattern keeps the set of name prefixes matched so far, so patterns with
/// many wildcards cannot make it backtrack exponentially.
pub(crate) fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    // ok[j]: the pattern so far matches name[..j].
    let mut ok = vec![false; name.len() + 1];
    ok[0] = true;
    for &p in pattern {
        match p {
            b'*' => {
                // Any prefix at or after the first matched one.
                if let Some(first) = ok.iter().position(|&b| b) {
                    ok[first..].fill(true);
                }
            }
            b'%' => {
                // Extend each matched prefix over bytes other than `/`.
                for j in 1..=name.len() {
                    if !ok[j] && ok[j - 1] && name[j - 1] != b'/' {
                        ok[j] = true;
                    }
                }
            }
            c => {
                // Shift by one where the next name byte is `c`.
                for j in (1..=name.len()).rev() {
                    ok[j] = ok[j - 1] && name[j - 1] == c;
                }
                ok[0] = false;
            }
        }
        if !ok.contains(&true) {
            return false;
        }
    }
    ok[name.len()]
}

/// What to restore.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Only this user of the archive.
    pub user: Option<String>,
    /// Mailbox patterns (exact names or with `*` / `%`); empty = all.
    pub mailboxes: Vec<String>,
    /// Also the sub-folders of each mailbox matched.
    pub recursive: bool,
    /// Only these UIDs.
    pub uids: Option<SeqSet>,
    /// Only these message GUIDs.
    pub guids: Vec<String>,
    /// Only messages with these Message-IDs (with or without `<>`).
    pub message_ids: Vec<String>,
    /// Only messages received at or after this time (Unix seconds).
    pub received_since: Option<i64>,
    /// Only messages received before this time (Unix seconds).
    pub received_before: Option<i64>,
    /// Only these (user, mailbox, UID) triples (from a restore list).
    pub list: Option<HashSet<(Name, Name, u32)>>,
}

impl Selection {
    /// True when no message-level filter is set (whole mailboxes are selected).
    pub(crate) fn whole_mailboxes(&self) -> bool {
        self.uids.is_none()
            && self.guids.is_empty()
            && self.message_ids.is_empty()
            && self.received_since.is_none()
            && self.received_before.is_none()
            && self.list.is_none()
    }

    /// Does the user match?
    pub(crate) fn user_matches(&self, user: &Name) -> bool {
        self.user
            .as_ref()
            .is_none_or(|u| u.as_bytes() == user.as_bytes())
    }

    /// Does the mailbox match (name, pattern, or sub-folder with `recursive`)?
    pub(crate) fn mailbox_matches(&self, user: &Name, name: &Name) -> bool {
        if let Some(l) = &self.list
            && !l.iter().any(|(u, m, _)| u == user && m == name)
        {
            return false;
        }
        if self.mailboxes.is_empty() {
            return true;
        }
        let n = name.as_bytes();
        self.mailboxes.iter().any(|p| {
            let p = p.as_bytes();
            glob_match(p, n)
                || (self.recursive && (1..n.len()).any(|i| n[i] == b'/' && glob_match(p, &n[..i])))
        })
    }

    /// Does one message match?
    pub(crate) fn message_matches(&self, user: &Name, mailbox: &Name, m: &MessageMeta) -> bool {
        if let Some(s) = &self.uids
            && !s.contains(m.uid.0)
        {
            return false;
        }
        if !self.guids.is_empty() && !self.guids.iter().any(|g| g.as_bytes() == m.guid.as_bytes()) {
            return false;
        }
        if !self.message_ids.is_empty() {
            let id = m
                .message_id
                .as_deref()
                .unwrap_or("")
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>');
            if !self.message_ids.iter().any(|w| {
                w.trim().trim_start_matches('<').trim_end_matches('>') == id && !id.is_empty()
            }) {
                return false;
            }
        }
        if self.received_since.is_some_and(|t| m.received.secs < t) {
            return false;
        }
        if self.received_before.is_some_and(|t| m.received.secs >= t) {
            return false;
        }
        if let Some(l) = &self.list
            && !l.contains(&(user.clone(), mailbox.clone(), m.uid.0))
        {
            return false;
        }
        true
    }
}

/// Escape a name for one tab-separated field of a restore list: `%`, tab, CR, LF and other
/// control bytes as `%XX`, invalid UTF-8 bytes too.
pub(crate) fn escape_field(name: &Name) -> String {
    let mut out = String::new();
    for chunk in name.as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '%' || (c as u32) < 0x20 || c == '\u{7f}' {
                out.push_str(&format!("%{:02X}", c as u32));
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Undo [`escape_field`].
///
/// # Errors
/// A malformed `%XX`.
pub(crate) fn unescape_field(s: &str) -> Result<Name> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::Usage(format!("restore list: bad escape in {s:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(Name::from_bytes(out))
}

/// Parse a restore list: lines `user<TAB>mailbox<TAB>uid<TAB>...`; lines starting with `;`
/// or `#` and empty lines are ignored.
///
/// # Errors
/// [`Error::Usage`] naming the line for a malformed one.
pub fn parse_restore_list(text: &str) -> Result<HashSet<(Name, Name, u32)>> {
    let mut set = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim_end_matches('\r');
        if t.trim().is_empty() || t.starts_with(';') || t.starts_with('#') {
            continue;
        }
        let mut f = t.split('\t');
        let (Some(u), Some(m), Some(uid)) = (f.next(), f.next(), f.next()) else {
            return Err(Error::Usage(format!(
                "restore list line {}: expected user, mailbox and UID separated by tabs",
                n + 1
            )));
        };
        let uid: u32 = uid
            .trim()
            .parse()
            .map_err(|_| Error::Usage(format!("restore list line {}: bad UID {uid:?}", n + 1)))?;
        set.insert((unescape_field(u)?, unescape_field(m)?, uid));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqsets() {
        let s = SeqSet::parse("1:5,9,20:*").unwrap();
        assert!(s.contains(1) && s.contains(5) && s.contains(9) && s.contains(4000));
        assert!(!s.contains(6) && !s.contains(19));
        assert!(SeqSet::parse("0").is_err());
        assert!(SeqSet::parse("a:3").is_err());
        assert!(SeqSet::parse("5:2").unwrap().contains(3));
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"Work/*", b"Work/Sub/Deep"));
        assert!(!glob_match(b"Work/%", b"Work/Sub/Deep"));
        assert!(glob_match(b"Work/%", b"Work/Sub"));
        assert!(glob_match(b"INBOX", b"INBOX"));
        assert!(!glob_match(b"INBOX", b"INBOX2"));
        let sel = Selection {
            mailboxes: vec!["Work".into()],
            recursive: true,
            ..Default::default()
        };
        let u = Name::from("u");
        assert!(sel.mailbox_matches(&u, &Name::from("Work/Sub")));
        assert!(sel.mailbox_matches(&u, &Name::from("Work")));
        assert!(!sel.mailbox_matches(&u, &Name::from("Workshop")));
    }

    /// Issue 13 item 10: 40 `*` against 80 bytes that almost match. The old recursive
    /// matcher tried every way to split the name between the stars (more than 10^20) and
    /// never finished; this one takes one pass per pattern byte.
    #[test]
    fn many_wildcards_do_not_backtrack_exponentially() {
        let pattern = "*a".repeat(40) + "b";
        let name = "a".repeat(80);
        assert!(!glob_match(pattern.as_bytes(), name.as_bytes()));
        assert!(glob_match(
            pattern.as_bytes(),
            format!("{name}b").as_bytes()
        ));
        let pct = "%a".repeat(40) + "b";
        assert!(!glob_match(pct.as_bytes(), name.as_bytes()));
        assert!(!glob_match(pct.as_bytes(), format!("a/{name}b").as_bytes()));
        assert!(glob_match(pct.as_bytes(), format!("{name}b").as_bytes()));
    }

    /// The straightforward recursive definition, for short inputs.
    fn reference(p: &[u8], n: &[u8]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some(b'*') => (0..=n.len()).any(|i| reference(&p[1..], &n[i..])),
            Some(b'%') => {
                let stop = n.iter().position(|&b| b == b'/').unwrap_or(n.len());
                (0..=stop).any(|i| reference(&p[1..], &n[i..]))
            }
            Some(&c) => n.first() == Some(&c) && reference(&p[1..], &n[1..]),
        }
    }

    #[test]
    fn glob_agrees_with_the_recursive_definition() {
        let alphabet = b"ab/*%";
        let mut s = 7u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut checked = 0;
        for _ in 0..20_000 {
            let pl = (next() % 7) as usize;
            let nl = (next() % 8) as usize;
            let p: Vec<u8> = (0..pl).map(|_| alphabet[(next() % 5) as usize]).collect();
            let n: Vec<u8> = (0..nl).map(|_| alphabet[(next() % 3) as usize]).collect();
            assert_eq!(glob_match(&p, &n), reference(&p, &n), "{p:?} {n:?}");
            checked += 1;
        }
        assert_eq!(checked, 20_000);
    }

    #[test]
    fn restore_list_fields_roundtrip() {
        let n = Name::from_bytes(b"a\tb%c\xff".to_vec());
        assert_eq!(unescape_field(&escape_field(&n)).unwrap(), n);
        let set = parse_restore_list("; comment\nalice\tINBOX\t3\tx\n;bob\tINBOX\t4\n\n").unwrap();
        assert_eq!(set.len(), 1);
        assert!(set.contains(&(Name::from("alice"), Name::from("INBOX"), 3)));
        assert!(parse_restore_list("alice\tINBOX\n").is_err());
    }
}
