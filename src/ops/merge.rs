//! `merge`: build a synthetic full archive from a chain, offline, without the mail store.
//!
//! The result records the state of the chain's last archive with every message's bytes in
//! itself, so restoring it equals restoring the chain. Its manifest lists the archives it
//! `replaces`; an incremental made later against the chain's last archive chains onto it.
//! With `keep_deleted`, records of deleted mail whose deletion was seen within that duration
//! before the last archive are kept, with their bytes.

use std::collections::BTreeMap;
use std::io::{Seek, SeekFrom, Write};

use crate::chain::Chain;
use crate::chain::ListFilter;
use crate::error::{Error, IoContext, Result};
use crate::format::index::{Manifest, MessageRecord, ParentRef};
use crate::format::spec::{FORMAT_MAJOR, FORMAT_MINOR, FORMAT_MINOR_POINT};
use crate::format::writer::{ArchiveWriter, WriterOptions};
use crate::model::{MailboxMeta, Name};
use crate::progress::{Event, Progress};

/// Options of [`merge`].
#[derive(Clone, Debug, Default)]
pub struct MergeOptions {
    /// Compression settings.
    pub writer: WriterOptions,
    /// Keep records of mail deleted at most this long before the last archive was made.
    pub keep_deleted: Option<chrono::Duration>,
    /// Archive id to record (`None`: a random UUID).
    pub archive_id: Option<String>,
}

/// Counts of a finished merge.
#[derive(Clone, Debug, Default)]
pub struct MergeStats {
    /// Messages in the merged state.
    pub messages: u64,
    /// Distinct bodies stored.
    pub bodies: u64,
    /// Records of deleted mail kept.
    pub deleted: u64,
    /// Named problems (messages whose bytes no archive holds).
    pub warnings: Vec<String>,
}

/// Bytes of one message, spooled to memory (or a temporary file when large).
fn fetch(
    chain: &Chain,
    cursors: &mut Vec<crate::format::reader::FrameCursor>,
    res: &crate::chain::Resolved,
    item: &str,
) -> Result<tempfile::SpooledTempFile> {
    let mut buf = tempfile::spooled_tempfile(64 << 20);
    chain.copy(cursors, res, item, &mut buf)?;
    buf.seek(SeekFrom::Start(0)).at("<temporary file>")?;
    Ok(buf)
}

/// Merge the chain into one full archive written to `out`.
///
/// # Errors
/// [`Error::NotFound`] when a message of the state has its bytes in no archive of the
/// chain (nothing useful can be written then), damaged bytes, write errors.
pub fn merge<W: Write>(
    chain: &Chain,
    opts: &MergeOptions,
    out: W,
    progress: &mut dyn Progress,
) -> Result<MergeStats> {
    let at = chain.last();
    let last = &chain.archives[at];
    let manifest = merged_manifest(chain, opts);
    let mut keep = deleted_to_keep(chain, opts)?;
    let mut w = ArchiveWriter::new(out, manifest, &opts.writer)?;
    let mut stats = MergeStats::default();
    let mut cursors = Vec::new();
    let mut users: Vec<Name> = last.dir.users.iter().map(|u| u.name.clone()).collect();
    for k in keep.keys() {
        if !users.contains(&k.0) {
            users.push(k.0.clone());
        }
    }
    progress.event(&Event::Start {
        operation: "merge".into(),
        archive_id: None,
        messages: Some(last.dir.stats.messages),
        bytes: Some(last.dir.stats.message_bytes),
    });
    for user in users {
        progress.event(&Event::User {
            user: user.to_string(),
        });
        let mut names = Vec::new();
        for (i, e) in last.dir.mailboxes.iter().enumerate() {
            if e.user != user {
                continue;
            }
            let cat = last.catalog(i)?;
            progress.event(&Event::Mailbox {
                user: user.to_string(),
                mailbox: cat.mailbox.name.to_string(),
                messages: cat.messages.len() as u64,
            });
            let mut recs = Vec::with_capacity(cat.messages.len());
            for r in &cat.messages {
                crate::progress::check(progress)?;
                let rec = copy_message(chain, at, &mut w, &mut cursors, &user, &cat, r)?;
                stats.messages += 1;
                recs.push(rec);
            }
            let guid_key = (
                user.clone(),
                cat.mailbox
                    .guid
                    .clone()
                    .unwrap_or_else(|| format!("name:{}", cat.mailbox.name)),
                cat.mailbox.uidvalidity,
            );
            let deleted = match keep.remove(&guid_key) {
                Some((_, d)) => keep_bytes(
                    chain,
                    &mut w,
                    &mut cursors,
                    &user,
                    &cat.mailbox,
                    d,
                    &mut stats,
                )?,
                None => Vec::new(),
            };
            names.push(cat.mailbox.name.clone());
            w.add_mailbox(&user, cat.mailbox, recs, deleted, e.signature.clone())?;
        }
        // Deleted mail of mailboxes that no longer exist.
        let gone: Vec<(Name, String, u32)> = keep.keys().filter(|k| k.0 == user).cloned().collect();
        for k in gone {
            if let Some((mb, d)) = keep.remove(&k) {
                let d = keep_bytes(chain, &mut w, &mut cursors, &user, &mb, d, &mut stats)?;
                w.add_gone(&user, mb, d)?;
            }
        }
        if let Some(u) = last.dir.users.iter().find(|u| u.name == user) {
            w.add_user(u.clone(), names)?;
        }
    }
    stats.bodies = w.stats().bodies;
    w.finish()?;
    progress.event(&Event::Done {
        archive_id: None,
        read_bytes: None,
        messages: stats.messages,
        bytes: 0,
        warnings: stats.warnings.len() as u64,
        expunged: 0,
    });
    Ok(stats)
}

/// Store the bytes of kept deleted records in the merged archive.
fn keep_bytes<W: Write>(
    chain: &Chain,
    w: &mut ArchiveWriter<W>,
    cursors: &mut Vec<crate::format::reader::FrameCursor>,
    user: &Name,
    mailbox: &MailboxMeta,
    deleted: Vec<MessageRecord>,
    stats: &mut MergeStats,
) -> Result<Vec<MessageRecord>> {
    let cat = crate::format::index::MailboxRecord {
        user: user.clone(),
        mailbox: mailbox.clone(),
        messages: Vec::new(),
        deleted: Vec::new(),
    };
    let mut out = Vec::with_capacity(deleted.len());
    for r in deleted {
        let item = format!(
            "deleted mail of user {user} mailbox {} UID {}",
            mailbox.name, r.message.uid
        );
        let Some(res) = chain.resolve(chain.last(), &cat, &r) else {
            stats
                .warnings
                .push(format!("{item}: not kept: {}", chain.missing_reason(&r)));
            continue;
        };
        let mut body = fetch(chain, cursors, &res, &item)?;
        let mut meta = r.message.clone();
        meta.content.sha256 = res.sha256.clone();
        let mut rec = w.add_deleted_body(
            user,
            &mailbox.name,
            mailbox.uidvalidity,
            meta,
            &mut body,
            std::path::Path::new(&item),
        )?;
        rec.last_seen = r.last_seen;
        rec.deleted_by = r.deleted_by;
        stats.deleted += 1;
        out.push(rec);
    }
    Ok(out)
}

/// The merged archive's manifest: the last archive's state and time, a format minor that
/// keeps what the chain holds, and the archives it replaces.
fn merged_manifest(chain: &Chain, opts: &MergeOptions) -> Manifest {
    let lm = chain.archives[chain.last()].manifest();
    Manifest {
        format: "maildump".into(),
        format_major: FORMAT_MAJOR,
        // Attachments stored apart (1.2) stay apart, modseqs (1.3) stay in the merged
        // archive, a chain with a POINT frame (1.4) gets one.
        format_minor: chain
            .archives
            .iter()
            .map(|a| a.manifest().format_minor)
            .max()
            .unwrap_or(FORMAT_MINOR)
            .clamp(FORMAT_MINOR, FORMAT_MINOR_POINT),
        writer: format!("maildump {}", env!("CARGO_PKG_VERSION")),
        created: lm.created.clone(),
        archive_id: opts
            .archive_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        parent: None,
        bases: Vec::new(),
        since: None,
        replaces: chain
            .archives
            .iter()
            .flat_map(|a| {
                let m = a.manifest();
                std::iter::once(ParentRef {
                    archive_id: m.archive_id.clone(),
                    created: m.created.clone(),
                })
                .chain(m.replaces.iter().cloned())
            })
            .collect(),
        source: lm.source.clone(),
    }
}

/// Deleted mail to keep (`--keep-deleted`), grouped by user and mailbox as last seen.
///
/// Keyed by user, mailbox GUID (else name) and UIDVALIDITY: records go back to the same
/// mailbox only when it is the same one (a mailbox recreated with the same GUID but a new
/// UIDVALIDITY gets them as a deleted mailbox).
fn deleted_to_keep(chain: &Chain, opts: &MergeOptions) -> Result<Kept> {
    let lm = chain.archives[chain.last()].manifest();
    let mut keep: Kept = BTreeMap::new();
    if let Some(d) = opts.keep_deleted {
        let end = chrono::DateTime::parse_from_rfc3339(&lm.created)
            .map_err(|_| Error::corrupt("manifest", format!("bad created {}", lm.created)))?;
        let cutoff = end - d;
        for (cat, rec) in crate::chain::deleted_in_chain(chain, &ListFilter::default())? {
            let when = rec
                .deleted_by
                .as_deref()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            if when.is_some_and(|t| t < cutoff) {
                continue;
            }
            let key = (
                cat.user.clone(),
                cat.mailbox
                    .guid
                    .clone()
                    .unwrap_or_else(|| format!("name:{}", cat.mailbox.name)),
                cat.mailbox.uidvalidity,
            );
            keep.entry(key)
                .or_insert_with(|| (cat.mailbox.clone(), Vec::new()))
                .1
                .push(rec);
        }
    }
    Ok(keep)
}

/// Copy one message of the state into the merged archive, its bytes found through the
/// chain: whole, or (format 1.2) in parts with its attachments stored once.
fn copy_message<W: Write>(
    chain: &Chain,
    at: usize,
    w: &mut ArchiveWriter<W>,
    cursors: &mut Vec<crate::format::reader::FrameCursor>,
    user: &Name,
    cat: &crate::format::index::MailboxRecord,
    r: &MessageRecord,
) -> Result<MessageRecord> {
    let item = crate::chain::record_item(cat, r);
    let res = chain.require(at, cat, r)?;
    let mut meta = r.message.clone();
    meta.content.sha256 = res.sha256.clone();
    let rec = if res.stored.is_some() {
        // Kept in parts: the attachments stay stored once (1.2).
        let (data, blobs) = chain.copy_parts(cursors, &res, &item)?;
        w.add_message_in_parts(
            meta,
            &data,
            res.parts.clone(),
            &blobs,
            std::path::Path::new(&item),
        )?
    } else {
        let mut body = fetch(chain, cursors, &res, &item)?;
        w.add_message(
            user,
            &cat.mailbox.name,
            meta,
            &mut body,
            res.size,
            std::path::Path::new(&item),
        )?
    };
    Ok(rec)
}

/// Deleted mail kept by a merge, by (user, mailbox GUID or `name:` name, UIDVALIDITY).
type Kept = BTreeMap<(Name, String, u32), (MailboxMeta, Vec<MessageRecord>)>;
