//! Reading archives for people and scripts: `list`, `cat` and `verify`.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::index::{Location, MessageRecord};
use crate::format::reader::{Archive, FrameCursor, scan};
use crate::model::{Flags, Name};

/// One line of `list --json`.
#[derive(Serialize, Debug)]
pub struct ListEntry<'a> {
    /// User.
    pub user: &'a Name,
    /// Mailbox.
    pub mailbox: &'a Name,
    /// UID.
    pub uid: u32,
    /// Message GUID.
    pub guid: &'a Name,
    /// INTERNALDATE, RFC 3339 UTC.
    pub received: String,
    /// Bytes of the message.
    pub size: u64,
    /// System flags.
    pub flags: Flags,
    /// Keywords.
    pub keywords: &'a [Name],
    /// Decoded From.
    pub from: Option<&'a str>,
    /// Decoded Subject.
    pub subject: Option<&'a str>,
    /// SHA-256 of the bytes.
    pub sha256: &'a str,
}

/// Which messages `list` shows.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only this user.
    pub user: Option<String>,
    /// Only this mailbox.
    pub mailbox: Option<String>,
}

fn matches(f: &ListFilter, user: &Name, mailbox: &Name) -> bool {
    f.user
        .as_ref()
        .is_none_or(|u| u.as_bytes() == user.as_bytes())
        && f.mailbox
            .as_ref()
            .is_none_or(|m| m.as_bytes() == mailbox.as_bytes())
}

/// Write the listing of `archive` to `out`: tab-separated text (with `;` comment lines, like
/// `pg_restore -l`) or JSON Lines.
///
/// # Errors
/// Damaged catalogs, write errors.
pub fn list(
    archive: &Archive,
    filter: &ListFilter,
    json: bool,
    out: &mut dyn Write,
) -> Result<u64> {
    let w = |e: std::io::Error| Error::io("<stdout>", e);
    let m = archive.manifest();
    if !json {
        writeln!(
            out,
            "; maildump archive {} created {} by {}",
            m.archive_id, m.created, m.writer
        )
        .map_err(w)?;
        writeln!(
            out,
            "; format {}.{}, source {} {}; {} users, {} mailboxes, {} messages",
            archive.version.0,
            archive.version.1,
            m.source.store,
            m.source.location,
            archive.dir.users.len(),
            archive.dir.mailboxes.len(),
            archive.dir.stats.messages
        )
        .map_err(w)?;
        writeln!(
            out,
            "; user\tmailbox\tuid\treceived\tsize\tflags\tfrom\tsubject"
        )
        .map_err(w)?;
    }
    let mut n = 0;
    for (i, e) in archive.dir.mailboxes.iter().enumerate() {
        if !matches(filter, &e.user, &e.name) {
            continue;
        }
        let cat = archive.catalog(i)?;
        for r in &cat.messages {
            let msg = &r.message;
            let entry = ListEntry {
                user: &cat.user,
                mailbox: &cat.mailbox.name,
                uid: msg.uid.0,
                guid: &msg.guid,
                received: msg.received.to_rfc3339(),
                size: msg.content.size,
                flags: msg.flags,
                keywords: &msg.keywords,
                from: msg.from.as_deref(),
                subject: msg.subject.as_deref(),
                sha256: &msg.content.sha256,
            };
            if json {
                serde_json::to_writer(&mut *out, &entry).map_err(|e| w(e.into()))?;
                writeln!(out).map_err(w)?;
            } else {
                let mut flags: Vec<String> =
                    msg.flags.names().iter().map(|s| s.to_string()).collect();
                flags.extend(msg.keywords.iter().map(|k| k.to_string()));
                let clean = |s: Option<&str>| s.unwrap_or("").replace(['\t', '\n', '\r'], " ");
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    cat.user,
                    cat.mailbox.name,
                    msg.uid,
                    entry.received,
                    msg.content.size,
                    flags.join(" "),
                    clean(msg.from.as_deref()),
                    clean(msg.subject.as_deref())
                )
                .map_err(w)?;
            }
            n += 1;
        }
    }
    Ok(n)
}

/// How `cat` names a message.
#[derive(Clone, Debug)]
pub enum MessageKey {
    /// By UID in the given mailbox.
    Uid(u32),
    /// By message GUID.
    Guid(String),
}

/// Find one message.
///
/// # Errors
/// [`Error::NotFound`] when there is no such user, mailbox or message.
pub fn find(
    archive: &Archive,
    user: &str,
    mailbox: Option<&str>,
    key: &MessageKey,
) -> Result<MessageRecord> {
    let mut seen_mailbox = false;
    for (i, e) in archive.dir.mailboxes.iter().enumerate() {
        if e.user.as_bytes() != user.as_bytes() {
            continue;
        }
        if mailbox.is_some_and(|m| m.as_bytes() != e.name.as_bytes()) {
            continue;
        }
        seen_mailbox = true;
        let cat = archive.catalog(i)?;
        let hit = cat.messages.into_iter().find(|r| match key {
            MessageKey::Uid(u) => r.message.uid.0 == *u,
            MessageKey::Guid(g) => r.message.guid.as_bytes() == g.as_bytes(),
        });
        if let Some(h) = hit {
            return Ok(h);
        }
    }
    let what = match key {
        MessageKey::Uid(u) => format!("UID {u}"),
        MessageKey::Guid(g) => format!("GUID {g}"),
    };
    Err(Error::NotFound(match (seen_mailbox, mailbox) {
        (false, Some(m)) => format!("user {user} has no mailbox {m} in the archive"),
        (false, None) => format!("user {user} is not in the archive"),
        (true, Some(m)) => format!("user {user} mailbox {m}: no message with {what}"),
        (true, None) => format!("user {user}: no message with {what}"),
    }))
}

/// Write one message's bytes to `out`, checking its SHA-256.
///
/// # Errors
/// Not found, damaged bytes, write errors.
pub fn cat(archive: &Archive, rec: &MessageRecord, out: &mut dyn Write) -> Result<()> {
    let loc = rec.loc.ok_or_else(|| {
        Error::corrupt(
            format!("UID {}", rec.message.uid),
            "message bytes are not in the archive",
        )
    })?;
    let item = format!("{} (UID {})", rec.member, rec.message.uid);
    archive.copy_content(
        &mut FrameCursor::new(),
        loc,
        rec.message.content.size,
        &rec.message.content.sha256,
        &item,
        out,
    )
}

/// Result of [`verify`].
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Data frames checked.
    pub frames: u64,
    /// Messages checked.
    pub messages: u64,
    /// Distinct bodies checked.
    pub bodies: u64,
    /// Damage found, each line naming the item.
    pub damage: Vec<String>,
    /// Whether the index was usable.
    pub index_ok: bool,
}

/// Read the whole archive, recheck every checksum, and name each damaged item.
///
/// # Errors
/// I/O errors, an unknown format version, or not an archive at all.
pub fn verify(path: &Path) -> Result<VerifyReport> {
    let mut rep = VerifyReport::default();
    let (archive, index_ok) = match Archive::open(path, true) {
        Ok(a) => (a, true),
        Err(e @ Error::Corrupt { .. }) => {
            rep.damage.push(format!("index: {e}"));
            (Archive::recover(path)?, false)
        }
        Err(e) => return Err(e),
    };
    rep.index_ok = index_ok;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let s = scan(&file, index_ok.then_some(archive.dir.frames.as_slice()))?;
    rep.frames = s.frames.len() as u64;
    rep.damage.extend(s.damage.iter().cloned());
    if !index_ok {
        rep.damage.extend(
            archive
                .damage
                .iter()
                .filter(|d| !s.damage.contains(d))
                .cloned(),
        );
    }
    let by_loc: HashMap<Location, &crate::format::reader::ScannedMember> = s
        .members
        .iter()
        .filter(|m| m.kind == crate::format::tar::EntryType::Regular)
        .map(|m| (m.loc, m))
        .collect();
    if index_ok && s.frames.len() != archive.dir.frames.len() {
        rep.damage.push(format!(
            "frame table: index lists {} data frames, the file holds {}",
            archive.dir.frames.len(),
            s.frames.len()
        ));
    }
    let mut bodies = std::collections::HashSet::new();
    for (i, e) in archive.dir.mailboxes.iter().enumerate() {
        let cat = match archive.catalog(i) {
            Ok(c) => c,
            Err(err) => {
                rep.damage.push(format!(
                    "user {} mailbox {}: catalog unreadable: {err}",
                    e.user, e.name
                ));
                continue;
            }
        };
        for r in &cat.messages {
            rep.messages += 1;
            let item = format!(
                "user {} mailbox {} UID {}",
                cat.user, cat.mailbox.name, r.message.uid
            );
            let Some(loc) = r.loc else {
                if index_ok {
                    rep.damage.push(format!("{item}: no location in the index"));
                }
                continue;
            };
            bodies.insert(loc);
            match by_loc.get(&loc) {
                None => rep.damage.push(format!(
                    "{item}: message bytes lost (member {}, frame {} offset {})",
                    r.link.as_deref().unwrap_or(&r.member),
                    loc.frame,
                    loc.offset
                )),
                Some(m) => {
                    let got = m.sha256.map(hex::encode).unwrap_or_default();
                    if got != r.message.content.sha256 || m.size != r.message.content.size {
                        rep.damage.push(format!(
                            "{item}: SHA-256 mismatch (stored {}, read {got})",
                            r.message.content.sha256
                        ));
                    }
                }
            }
        }
    }
    rep.bodies = bodies.len() as u64;
    rep.damage.dedup();
    Ok(rep)
}
