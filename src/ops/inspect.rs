//! Reading archives for people and scripts: `list`, `cat` and `verify`.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::chain::Chain;
pub use crate::chain::deleted::ListFilter;
use crate::chain::deleted::{deleted_records, matches};
use crate::error::{Error, Result};
use crate::format::index::{Location, MailboxRecord, MessageRecord};
use crate::format::reader::{Archive, FrameCursor, scan};
use crate::model::{Flags, Name};
use crate::ops::restore::select::escape_field;

/// One line of `list --json`.
#[derive(Serialize, Debug)]
pub(crate) struct ListEntry<'a> {
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
    /// SHA-256 of the bytes (empty when a since-archive did not read them).
    pub sha256: &'a str,
    /// Deleted mail only: creation time of the newest archive still holding the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<&'a str>,
    /// Deleted mail only: creation time of the first archive no longer holding it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_by: Option<&'a str>,
    /// Deleted mail only: id of the newest archive whose state still held it, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub archive: Option<&'a str>,
}

/// A `--user` or `--mailbox` that names nothing in `archives` (their current mailboxes,
/// and with `gone` their deleted ones too) is an error, as it is for cat and restore.
fn check_filter<'a>(
    f: &ListFilter,
    archives: impl Iterator<Item = &'a Archive> + Clone,
    gone: bool,
) -> Result<()> {
    let entries = archives.flat_map(|a| {
        a.dir
            .mailboxes
            .iter()
            .chain(a.dir.gone.iter().filter(move |_| gone))
    });
    if let Some(u) = &f.user
        && !entries.clone().any(|e| e.user.as_bytes() == u.as_bytes())
    {
        return Err(Error::NotFound(format!("user {u} is not in the archive")));
    }
    if let Some(m) = &f.mailbox
        && !entries.clone().any(|e| matches(f, &e.user, &e.name))
    {
        let whose = f
            .user
            .as_deref()
            .map(|u| format!("user {u} "))
            .unwrap_or_default();
        return Err(Error::NotFound(format!(
            "{whose}mailbox {m} is not in the archive"
        )));
    }
    Ok(())
}

/// Write the listing of `archive` to `out`: tab-separated text (with `;` comment lines, like
/// `pg_restore -l`) or JSON Lines.
///
/// # Errors
/// Damaged catalogs, write errors.
pub fn list(
    chain: &Chain,
    at: usize,
    filter: &ListFilter,
    json: bool,
    out: &mut dyn Write,
) -> Result<u64> {
    let archive = &chain.archives[at];
    check_filter(filter, std::iter::once(archive), false)?;
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
        if let Some(p) = &m.parent {
            writeln!(
                out,
                "; incremental of archive {} created {}",
                p.archive_id, p.created
            )
            .map_err(w)?;
        }
        if let Some(since) = &m.since {
            writeln!(out, "; holds the bytes of mail changed since {since}").map_err(w)?;
        }
        writeln!(
            out,
            "; a restore list: delete or comment out (;) lines, then `maildump restore ... --restore-list FILE`\n; user\tmailbox\tuid\treceived\tsize\tflags\tfrom\tsubject"
        )
        .map_err(w)?;
    }
    let mut n = 0;
    for (i, e) in archive.dir.mailboxes.iter().enumerate() {
        if !matches(filter, &e.user, &e.name) {
            continue;
        }
        let mut cat = archive.catalog(i)?;
        // A since-archive does not hash files it did not read: take the hash from the
        // earlier archive holding the same message.
        let fill: Vec<(usize, String)> = cat
            .messages
            .iter()
            .enumerate()
            .filter(|(_, r)| r.message.content.sha256.is_empty())
            .filter_map(|(k, r)| chain.resolve(at, &cat, r).map(|x| (k, x.sha256)))
            .collect();
        for (k, sha) in fill {
            cat.messages[k].message.content.sha256 = sha;
        }
        n += write_entries(&cat, &cat.messages, None, json, out)?;
    }
    Ok(n)
}

/// List records of deleted mail in the chain: messages an archive held that are gone in a
/// later one, with `last_seen` and `deleted_by`.
///
/// # Errors
/// Damaged catalogs, write errors.
pub fn list_deleted(
    chain: &Chain,
    filter: &ListFilter,
    json: bool,
    out: &mut dyn Write,
) -> Result<u64> {
    check_filter(filter, chain.archives.iter(), true)?;
    let w = |e: std::io::Error| Error::io("<stdout>", e);
    if !json {
        writeln!(
            out,
            "; deleted mail recorded in {} archives\n; user\tmailbox\tuid\treceived\tsize\tflags\tfrom\tsubject\tlast seen\tgone by\tguid",
            chain.archives.len()
        )
        .map_err(w)?;
    }
    let hits = deleted_records(chain, filter)?;
    let mut n = 0;
    for h in &hits {
        n += write_entries(
            &h.cat,
            std::slice::from_ref(&h.rec),
            h.last_in.as_deref(),
            json,
            out,
        )?;
    }
    Ok(n)
}

fn write_entries(
    cat: &MailboxRecord,
    recs: &[MessageRecord],
    last_in: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> Result<u64> {
    let w = |e: std::io::Error| Error::io("<stdout>", e);
    let mut n = 0;
    {
        for r in recs {
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
                last_seen: r.last_seen.as_deref(),
                deleted_by: r.deleted_by.as_deref(),
                archive: last_in,
            };
            if json {
                serde_json::to_writer(&mut *out, &entry).map_err(|e| w(e.into()))?;
                writeln!(out).map_err(w)?;
            } else {
                let mut flags: Vec<String> =
                    msg.flags.names().iter().map(|s| s.to_string()).collect();
                flags.extend(msg.keywords.iter().map(|k| k.to_string()));
                let clean = |s: Option<&str>| s.unwrap_or("").replace(['\t', '\n', '\r'], " ");
                write!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    escape_field(&cat.user),
                    escape_field(&cat.mailbox.name),
                    msg.uid,
                    entry.received,
                    msg.content.size,
                    flags.join(" "),
                    clean(msg.from.as_deref()),
                    clean(msg.subject.as_deref())
                )
                .map_err(w)?;
                if let (Some(l), Some(d)) = (&r.last_seen, &r.deleted_by) {
                    writeln!(out, "\t{l}\t{d}\t{}", msg.guid).map_err(w)?;
                } else {
                    writeln!(out).map_err(w)?;
                }
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

/// Find one message in the state of archive `at`; by GUID also among records of deleted
/// mail anywhere in the chain. Returns the mailbox catalog and the record.
///
/// # Errors
/// [`Error::NotFound`] when there is no such user, mailbox or message.
pub fn find(
    chain: &Chain,
    at: usize,
    user: &str,
    mailbox: Option<&str>,
    key: &MessageKey,
) -> Result<(MailboxRecord, MessageRecord)> {
    let archive = &chain.archives[at];
    let mut seen_mailbox = false;
    let hit_of = |r: &MessageRecord| match key {
        MessageKey::Uid(u) => r.message.uid.0 == *u,
        MessageKey::Guid(g) => r.message.guid.as_bytes() == g.as_bytes(),
    };
    for (i, e) in archive.dir.mailboxes.iter().enumerate() {
        if e.user.as_bytes() != user.as_bytes() {
            continue;
        }
        if mailbox.is_some_and(|m| m.as_bytes() != e.name.as_bytes()) {
            continue;
        }
        seen_mailbox = true;
        let mut cat = match key {
            MessageKey::Uid(u) => chain.catalog_for_uid(at, i, *u)?,
            MessageKey::Guid(_) => archive.catalog(i)?,
        };
        if let Some(p) = cat.messages.iter().position(hit_of) {
            let rec = cat.messages.swap_remove(p);
            return Ok((cat, rec));
        }
    }
    if let MessageKey::Guid(_) = key {
        let filter = ListFilter {
            user: Some(user.to_string()),
            mailbox: mailbox.map(str::to_string),
        };
        if let Some(h) = deleted_records(chain, &filter)?
            .into_iter()
            .rev()
            .find(|h| hit_of(&h.rec))
        {
            return Ok((h.cat, h.rec));
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

/// One message found for `cat`: the chain, the archive whose state was searched, the
/// message's mailbox catalog and record.
pub struct Found {
    /// The archives.
    pub chain: Chain,
    /// Position of the archive whose state holds the message.
    pub at: usize,
    /// The mailbox catalog.
    pub cat: MailboxRecord,
    /// The message's record.
    pub rec: MessageRecord,
    /// Set when the point read met damage in an index (named here) and the archives were
    /// opened again with their indexes checked whole, or rebuilt by scanning.
    pub reopened: Option<String>,
}

/// Open the archives of a chain (oldest first) and find one message in the state of the
/// archive `as_of` names (default: the last), reading only what a point read needs
/// ([`Chain::open_lazily`]): footers, directories and the catalogs searched. Damage met
/// on the way does not stop it: the archives are then opened as `list` opens them
/// ([`Chain::open`]: the index checked whole, or rebuilt by scanning), and
/// [`Found::reopened`] says why. `opened` is called with each chain opened, before it is
/// searched, and the damage that made it be opened again (for warnings: the damage a
/// chain's archives were found with is in their [`Archive::damage`]). The message's bytes
/// are always checked against the SHA-256 of its record ([`cat`]).
///
/// # Errors
/// As [`Chain::open`] and [`find`].
pub fn find_for_cat(
    paths: &[&Path],
    as_of: Option<&str>,
    user: &str,
    mailbox: Option<&str>,
    key: &MessageKey,
    opened: &mut dyn FnMut(&Chain, Option<&Error>),
) -> Result<Found> {
    let mut search = |chain: Chain, why: Option<&Error>| -> Result<Found> {
        opened(&chain, why);
        let at = match as_of {
            Some(s) => chain.as_of(s)?,
            None => chain.last(),
        };
        let (cat, rec) = find(&chain, at, user, mailbox, key)?;
        // Everything of the index the copy needs, read now: damage in it is met here,
        // where the archives can still be read whole instead.
        chain.index_for(at, &cat, &rec)?;
        Ok(Found {
            chain,
            at,
            cat,
            rec,
            reopened: None,
        })
    };
    match Chain::open_lazily(paths, false).and_then(|c| search(c, None)) {
        Err(e @ Error::Corrupt { .. }) => {
            let mut found = search(Chain::open(paths, false)?, Some(&e))?;
            found.reopened = Some(e.to_string());
            Ok(found)
        }
        r => r,
    }
}

/// Write one message's bytes to `out`, checking its SHA-256.
///
/// # Errors
/// Bytes in no archive of the chain ([`Error::NotFound`], naming the archive to add),
/// damaged bytes, write errors.
pub fn cat(
    chain: &Chain,
    at: usize,
    cat: &MailboxRecord,
    rec: &MessageRecord,
    out: &mut dyn Write,
) -> Result<()> {
    let mut cursors = chain
        .archives
        .iter()
        .map(|_| FrameCursor::for_point_reads())
        .collect();
    chain.copy_record(&mut cursors, at, cat, rec, out)?;
    Ok(())
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
    /// Messages whose bytes are in other archives of a chain (not checked here).
    pub referenced: u64,
    /// Blobs checked (format 1.2).
    pub blobs: u64,
    /// Damage found, each line naming the item.
    pub damage: Vec<String>,
    /// Whether the index was usable.
    pub index_ok: bool,
}

/// Check each blob (1.2) against the member scanned at its location; the damaged ones are
/// named in `damage` and returned.
fn blob_damage(
    archive: &Archive,
    by_loc: &HashMap<Location, &crate::format::reader::ScannedMember>,
    damage: &mut Vec<String>,
) -> std::collections::HashSet<String> {
    let mut bad_blobs = std::collections::HashSet::new();
    for b in &archive.dir.blobs {
        let problem = match by_loc.get(&b.loc) {
            None => Some(format!(
                "blob {}: bytes lost (frame {} offset {})",
                b.sha256, b.loc.frame, b.loc.offset
            )),
            Some(m) => {
                let got = m.sha256.map(hex::encode).unwrap_or_default();
                (got != b.sha256 || m.size != b.size)
                    .then(|| format!("blob {}: SHA-256 mismatch (read {got})", b.sha256))
            }
        };
        if let Some(p) = problem {
            damage.push(p);
            bad_blobs.insert(b.sha256.clone());
        }
    }
    bad_blobs
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
    let file = crate::format::source::open(path)?;
    let s = scan(&*file, index_ok.then_some(archive.dir.frames.as_slice()))
        .map_err(|e| e.in_archive(path))?;
    rep.frames = s.frames.len() as u64;
    rep.damage.extend(s.damage.iter().cloned());
    // Damage found while opening: a version disagreement, and without an index what the
    // rebuild could not find.
    rep.damage.extend(
        archive
            .damage
            .iter()
            .filter(|d| !s.damage.contains(d))
            .cloned(),
    );
    if index_ok {
        rep.damage
            .extend(frame_table_damage(&archive.dir.frames, &s.frames));
    }
    // The POINT frame (1.4), checked against the index here and against each catalog below.
    let mut point = None;
    rep.damage.extend(archive.frame_field_damage()?);
    if index_ok {
        let (bad, t) = archive.point_damage(s.point_at)?;
        rep.damage.extend(bad);
        point = t;
    }
    let by_loc: HashMap<Location, &crate::format::reader::ScannedMember> = s
        .members
        .iter()
        .filter(|m| m.kind == crate::format::tar::EntryType::Regular)
        .map(|m| (m.loc, m))
        .collect();
    let mut bodies = std::collections::HashSet::new();
    let blob_sizes: HashMap<&str, u64> = archive
        .dir
        .blobs
        .iter()
        .map(|b| (b.sha256.as_str(), b.size))
        .collect();
    // Blobs first, so that each message whose attachment is damaged can be named.
    let bad_blobs = blob_damage(&archive, &by_loc, &mut rep.damage);
    let n = archive.dir.mailboxes.len();
    for i in 0..n + archive.dir.gone.len() {
        let (e, cat) = if i < n {
            (&archive.dir.mailboxes[i], archive.catalog(i))
        } else {
            (&archive.dir.gone[i - n], archive.gone_catalog(i - n))
        };
        let cat = match cat {
            Ok(c) => c,
            Err(err) => {
                rep.damage.push(format!(
                    "user {} mailbox {}: catalog unreadable: {err}",
                    e.user, e.name
                ));
                continue;
            }
        };
        if let Some(t) = point.as_ref().filter(|_| i < n)
            && let Some(bad) = archive.point_records_damage(t, i, &cat)
        {
            rep.damage.push(bad);
        }
        let live = cat.messages.len();
        for (k, r) in cat.messages.iter().chain(cat.deleted.iter()).enumerate() {
            let item = if k < live {
                rep.messages += 1;
                crate::chain::record_item(&cat, r)
            } else {
                format!("deleted mail of {}", crate::chain::record_item(&cat, r))
            };
            if r.is_external() {
                if k < live {
                    rep.referenced += 1;
                }
                continue;
            }
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
                    let (want, size) = r.stored_content();
                    if got != want || m.size != size {
                        rep.damage.push(format!(
                            "{item}: SHA-256 mismatch (stored {want}, read {got})"
                        ));
                    }
                }
            }
            let full = archive.manifest().parent.is_none();
            rep.damage
                .extend(parts_damage(&item, r, &blob_sizes, &bad_blobs, full));
        }
    }
    rep.blobs = archive.dir.blobs.len() as u64;
    rep.bodies = bodies.len() as u64;
    rep.damage.dedup();
    Ok(rep)
}

/// What is wrong with the parts of a message stored in parts (1.2) as `cat` will put it
/// together: part lists that do not fit the data member or the blobs, damaged blobs, and
/// (in a full archive, `full`) blobs the archive does not hold; in an incremental they are
/// in its chain, which `verify A B C` checks.
fn parts_damage(
    item: &str,
    r: &MessageRecord,
    blob_sizes: &HashMap<&str, u64>,
    bad_blobs: &std::collections::HashSet<String>,
    full: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let c = &r.message.content;
    if let Some(d) = &c.data {
        let size_of = |sha: &str| blob_sizes.get(sha).copied();
        if let Err(e) = crate::mime::parts::check_layout(&c.parts, d.size, &size_of) {
            out.push(format!("{item}: its parts do not fit: {e}"));
        }
    }
    for sha in c.blob_shas() {
        if bad_blobs.contains(sha) {
            out.push(format!("{item}: its attachment (blob {sha}) is damaged"));
        } else if !blob_sizes.contains_key(sha.as_str()) && full {
            out.push(format!(
                "{item}: its attachment (blob {sha}) is not in the archive"
            ));
        }
    }
    out
}

/// Where the index's frame table (what `cat` and `restore` rely on to find and decompress
/// a frame) disagrees with the frames a scan found: count, offset, compressed and
/// decompressed length. A frame the scan could not decompress is damage reported by the
/// scan itself.
fn frame_table_damage(
    table: &[crate::format::index::FrameEntry],
    found: &[crate::format::index::FrameEntry],
) -> Vec<String> {
    let mut out = Vec::new();
    if table.len() != found.len() {
        out.push(format!(
            "frame table: index lists {} data frames, the file holds {}",
            table.len(),
            found.len()
        ));
    }
    for (i, (t, f)) in table.iter().zip(found).enumerate() {
        if (t.offset, t.csize) != (f.offset, f.csize) {
            out.push(format!(
                "frame {i}: the index says offset {} and {} bytes, the file has offset {} and {} bytes",
                t.offset, t.csize, f.offset, f.csize
            ));
        } else if f.usize != 0 && t.usize != f.usize {
            out.push(format!(
                "frame {i} at offset {}: the index says {} bytes decompressed, the frame holds {}",
                t.offset, t.usize, f.usize
            ));
        }
    }
    out
}

/// Check that every message of every archive of `chain` whose bytes are in another archive
/// finds them there (its state's messages and its records of deleted mail). Returns the
/// problems, each naming the archive and message.
///
/// # Errors
/// Damaged catalogs.
pub fn verify_references(chain: &Chain) -> Result<(u64, Vec<String>)> {
    let mut checked = 0;
    let mut damage = Vec::new();
    for (i, a) in chain.archives.iter().enumerate() {
        let n = a.dir.mailboxes.len();
        for k in 0..n + a.dir.gone.len() {
            let cat = if k < n {
                a.catalog(k)?
            } else {
                a.gone_catalog(k - n)?
            };
            for r in cat.messages.iter().chain(cat.deleted.iter()) {
                if !r.is_external() && !r.in_parts() {
                    continue;
                }
                checked += 1;
                if chain.resolve(i, &cat, r).is_none() {
                    damage.push(format!(
                        "{}: user {} mailbox {} UID {}: {}",
                        a.path().display(),
                        cat.user,
                        cat.mailbox.name,
                        r.message.uid,
                        chain.missing_reason(r)
                    ));
                }
            }
        }
    }
    Ok((checked, damage))
}
