//! What Dovecot keeps of a Maildir mailbox only in its index (`dovecot.index` and
//! `dovecot.index.log`, read with the dbox index reader), and writing it back on restore.
//!
//! For Maildir the index is mostly a cache: UIDs, flags and the first 26 keywords are in
//! `dovecot-uidlist`, `dovecot-keywords` and the file names. But a keyword that gets no
//! letter because `dovecot-keywords` already names 26 exists only in the index, and so do
//! the modseqs (MODSEQ, HIGHESTMODSEQ). Dovecot's sync keeps such "index-only" keywords
//! (`maildir_sync_mail_keywords`) as long as the index record's letter keywords and flags
//! match the file name; a keyword the keywords file could still give a letter to is taken
//! from the file name instead. [`complete`] reads them at backup; [`index_for`] builds the
//! index a restore writes so that Dovecot shows them again.

use std::path::Path;

use crate::model::{Flags, MailboxMeta, MessageMeta, Name};
use crate::store::dbox::index::{NewIndex, NewRecord};

/// Keyword letters a Maildir file name can carry (`a`..`z`).
pub(crate) const LETTERS: usize = 26;

/// Whether `dovecot-keywords` gives all 26 letters away: only then does Dovecot keep
/// keywords in the index alone.
fn letters_full(table: &[Name]) -> bool {
    table.len() >= LETTERS && table[..LETTERS].iter().all(|k| !k.is_empty())
}

/// Add to a scanned Maildir mailbox what only its index holds: keywords beyond the 26
/// letters (appended to the mailbox's keyword table after the letters, and to each
/// message's keywords) and modseqs. A message the index does not know yet, or knows with
/// other flags or letter keywords than its file name, is one Dovecot's next sync changes:
/// it gets the index's highest modseq + 1, as that sync would give it. An index of
/// another UIDVALIDITY (Dovecot would reset it) is ignored. Save dates come from the
/// index cache ([`crate::store::cache`]); why a cache gave none goes to `unused`.
///
/// # Errors
/// The damaged index file, as text for a warning; nothing is changed then.
pub(super) fn complete(
    dir: &Path,
    meta: &mut MailboxMeta,
    msgs: &mut [MessageMeta],
    unused: &mut Option<crate::store::cache::Unused>,
) -> Result<(), String> {
    let idx = match crate::store::dbox::read_index(dir, "dovecot.index") {
        Ok(Some(i)) => i,
        Ok(None) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    if idx.uid_validity != meta.uidvalidity && meta.uidvalidity != 0 && idx.uid_validity != 0 {
        return Ok(());
    }
    match crate::store::cache::save_dates(dir, &idx) {
        Ok(dates) => crate::store::cache::set_saved(msgs, &dates),
        Err(e) => *unused = Some(e),
    }
    let full = letters_full(&meta.keywords);
    if full {
        for k in &idx.keywords {
            let k = Name::from_bytes(k.clone());
            if !meta.keywords.contains(&k) {
                meta.keywords.push(k);
            }
        }
    }
    let letters = &meta.keywords[..meta.keywords.len().min(LETTERS)];
    let highest = idx.highest_modseq;
    let mut changed = false;
    for m in msgs.iter_mut() {
        let Some(r) = idx.record(m.uid.0) else {
            changed = true;
            m.modseq = (highest > 0).then(|| highest.saturating_add(1));
            continue;
        };
        let names: Vec<Name> = idx
            .keyword_names(r)
            .into_iter()
            .map(Name::from_bytes)
            .collect();
        let (lettered, only): (Vec<Name>, Vec<Name>) =
            names.into_iter().partition(|k| letters.contains(k));
        let same = Flags::from_bits(r.flags) == m.flags
            && lettered.len() == m.keywords.len()
            && lettered.iter().all(|k| m.keywords.contains(k));
        if full && same {
            m.keywords.extend(only);
            m.keywords
                .sort_by_key(|k| meta.keywords.iter().position(|t| t == k));
        }
        m.modseq = if same {
            idx.modseq_of(r)
        } else {
            changed = true;
            (highest > 0).then(|| highest.saturating_add(1))
        };
    }
    if highest > 0 {
        meta.highest_modseq = Some(highest.saturating_add(u64::from(changed)));
    }
    Ok(())
}

/// What a mailbox's signature (an incremental's "unchanged" test) must cover of its index:
/// HIGHESTMODSEQ (it rises with every change Dovecot makes, also to index-only keywords)
/// and the keyword list; a damaged index gives its error, so that the mailbox is read
/// again and the damage reported. Nothing without an index (signatures of such mailboxes
/// stay what they were before maildump read indexes).
pub(super) fn signature(dir: &Path) -> Vec<u8> {
    let mut out = b"index\0".to_vec();
    match crate::store::dbox::read_index(dir, "dovecot.index") {
        Ok(None) => return Vec::new(),
        Ok(Some(i)) => {
            out.extend_from_slice(&i.uid_validity.to_le_bytes());
            out.extend_from_slice(&i.highest_modseq.to_le_bytes());
            for k in &i.keywords {
                out.extend_from_slice(&(k.len() as u64).to_le_bytes());
                out.extend_from_slice(k);
            }
        }
        Err(e) => out.extend_from_slice(e.to_string().as_bytes()),
    }
    out
}

/// The keyword table a restore writes: the mailbox's, then any keyword a message has that
/// the table lacks (a damaged archive), so that no keyword is dropped.
pub(super) fn table_for(meta: &MailboxMeta, messages: &[MessageMeta]) -> Vec<Name> {
    let mut table = meta.keywords.clone();
    for k in messages.iter().flat_map(|m| &m.keywords) {
        if !table.contains(k) {
            table.push(k.clone());
        }
    }
    table
}

/// The `dovecot.index` a restore writes beside a Maildir mailbox's uidlist, when the
/// mailbox has something only the index can hold (a keyword without a letter in `table`,
/// modseqs): every message with its flags (as its file name has them) and all its
/// keywords, the keywords in table order (letters first), and the modseqs; and when a
/// message has a save date, the index is written for its cache too. `None` when the
/// index would hold nothing the uidlist and file names do not.
pub(super) fn index_for(
    table: &[Name],
    highest_modseq: Option<u64>,
    messages: &[&MessageMeta],
    uidvalidity: u32,
    next_uid: u32,
) -> Option<NewIndex> {
    let names: Vec<&Name> = table.iter().filter(|k| !k.is_empty()).collect();
    let lettered = &table[..table.len().min(LETTERS)];
    let letterless = messages
        .iter()
        .any(|m| m.keywords.iter().any(|k| !lettered.contains(k)));
    let saved = messages.iter().any(|m| m.saved.is_some());
    if !letterless && highest_modseq.is_none() && !saved {
        return None;
    }
    let mut records: Vec<NewRecord> = messages
        .iter()
        .map(|m| NewRecord {
            uid: m.uid.0,
            flags: m.flags.bits(),
            keywords: m
                .keywords
                .iter()
                .filter_map(|k| names.iter().position(|n| *n == k))
                .filter_map(|p| u32::try_from(p).ok())
                .collect(),
            modseq: m.modseq.unwrap_or(0),
            ext: Vec::new(),
        })
        .collect();
    records.sort_by_key(|r| r.uid);
    Some(NewIndex {
        uid_validity: uidvalidity,
        next_uid,
        indexid: crate::store::dbox::write::now(),
        keywords: names.iter().map(|k| k.as_bytes().to_vec()).collect(),
        highest_modseq,
        records,
        ..NewIndex::default()
    })
}
