//! Deleted mail: what an earlier state held and a later one does not (spec 6.7.5).
//!
//! [`deleted_since`] is the pure rule (one user's catalogs against a later state), used by
//! a backup to record the deleted mail of an incremental, and by a chain to work it out
//! between archives that are not linked (a since-archive, a later full).
//! [`deleted_in_chain`] gathers every deleted message of a chain once, oldest deletion
//! first: what `list --deleted`, `restore --deleted` and `merge` read.

use std::collections::{HashMap, HashSet};

use super::Chain;
use crate::error::Result;
use crate::format::index::{MailboxRecord, MessageRecord};
use crate::format::reader::Archive;
use crate::model::{MailboxMeta, MessageMeta, Name};

/// Which messages `list` shows.
#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    /// Only this user.
    pub user: Option<String>,
    /// Only this mailbox.
    pub mailbox: Option<String>,
}

pub(crate) fn matches(f: &ListFilter, user: &Name, mailbox: &Name) -> bool {
    f.user
        .as_ref()
        .is_none_or(|u| u.as_bytes() == user.as_bytes())
        && f.mailbox
            .as_ref()
            .is_none_or(|m| m.as_bytes() == mailbox.as_bytes())
}

/// Records of deleted mail per mailbox of the later state (by index), and the mailboxes of
/// the earlier state that no longer exist, with theirs.
pub type Deletions = (
    HashMap<usize, Vec<MessageRecord>>,
    Vec<(MailboxMeta, Vec<MessageRecord>)>,
);

/// One user's mail that an earlier state (`prev`, the catalogs of archive `prev_id`) held
/// and a later state (`live`: mailboxes with their messages) does not (spec 6.7.5): the
/// same mailbox (by GUID, else by name, with the same UIDVALIDITY) lacks the UID, and the
/// message GUID is nowhere in the later state (else the message moved). Each record says
/// where its bytes are, when it was `last_seen` and which state first lacked it
/// (`deleted_by`).
pub fn deleted_since(
    prev: &[MailboxRecord],
    prev_id: &str,
    live: &[(&MailboxMeta, Vec<&MessageMeta>)],
    last_seen: &str,
    deleted_by: &str,
) -> Deletions {
    let mut by_guid: HashMap<&str, usize> = HashMap::new();
    let mut by_name: HashMap<&Name, usize> = HashMap::new();
    let mut present: HashSet<(usize, u32)> = HashSet::new();
    let mut guids: HashSet<&[u8]> = HashSet::new();
    for (i, (m, msgs)) in live.iter().enumerate() {
        match &m.guid {
            Some(g) => by_guid.insert(g.as_str(), i),
            None => by_name.insert(&m.name, i),
        };
        for msg in msgs {
            present.insert((i, msg.uid.0));
            guids.insert(msg.guid.as_bytes());
        }
    }
    let mut per_live: HashMap<usize, Vec<MessageRecord>> = HashMap::new();
    let mut gone = Vec::new();
    for cat in prev {
        let at = match cat.mailbox.guid.as_deref() {
            Some(g) => by_guid.get(g),
            None => by_name.get(&cat.mailbox.name),
        }
        .copied()
        .filter(|&i| live[i].0.uidvalidity == cat.mailbox.uidvalidity);
        let mut recs = Vec::new();
        for r in &cat.messages {
            let still_here = at.is_some_and(|i| present.contains(&(i, r.message.uid.0)));
            if still_here || guids.contains(r.message.guid.as_bytes()) {
                continue;
            }
            let mut d = r.clone();
            d.refer_to(prev_id);
            d.last_seen = Some(last_seen.to_string());
            d.deleted_by = Some(deleted_by.to_string());
            recs.push(d);
        }
        match at {
            Some(i) => per_live.entry(i).or_default().extend(recs),
            None => gone.push((cat.mailbox.clone(), recs)),
        }
    }
    (per_live, gone)
}

/// One deleted message found in a chain.
pub(crate) struct DeletedHit {
    /// The mailbox it was deleted from (its catalog without messages).
    pub(crate) cat: MailboxRecord,
    /// Its record.
    pub(crate) rec: MessageRecord,
    /// The archive whose state last held it (the parent of the archive recording it).
    pub(crate) last_in: Option<String>,
}

/// Records of deleted mail in `chain` (with the mailbox each was deleted from), oldest
/// deletion first, each once.
///
/// # Errors
/// Damaged catalogs.
pub fn deleted_in_chain(
    chain: &Chain,
    filter: &ListFilter,
) -> Result<Vec<(MailboxRecord, MessageRecord)>> {
    Ok(deleted_records(chain, filter)?
        .into_iter()
        .map(|h| (h.cat, h.rec))
        .collect())
}

pub(crate) fn deleted_records(chain: &Chain, filter: &ListFilter) -> Result<Vec<DeletedHit>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (ai, a) in chain.archives.iter().enumerate() {
        // An archive that is not an incremental of the one before it (a since-archive, or
        // a later full) records no deleted mail: work it out from the two states.
        if ai > 0 {
            let prev = &chain.archives[ai - 1];
            let linked = a
                .manifest()
                .parent
                .as_ref()
                .is_some_and(|p| p.archive_id == prev.manifest().archive_id);
            if !linked {
                for h in deleted_between(prev, a, filter)? {
                    let key = (
                        h.cat.user.clone(),
                        h.cat.mailbox.guid.clone(),
                        h.cat.mailbox.uidvalidity,
                        h.rec.message.uid.0,
                        h.rec.message.guid.clone(),
                    );
                    if seen.insert(key) {
                        out.push(h);
                    }
                }
            }
        }
        let n = a.dir.mailboxes.len();
        for i in 0..n + a.dir.gone.len() {
            let e = if i < n {
                &a.dir.mailboxes[i]
            } else {
                &a.dir.gone[i - n]
            };
            if !matches(filter, &e.user, &e.name) {
                continue;
            }
            let mut cat = if i < n {
                a.catalog(i)?
            } else {
                a.gone_catalog(i - n)?
            };
            if cat.deleted.is_empty() {
                continue;
            }
            let deleted = std::mem::take(&mut cat.deleted);
            cat.messages.clear();
            for rec in deleted {
                let key = (
                    cat.user.clone(),
                    cat.mailbox.guid.clone(),
                    cat.mailbox.uidvalidity,
                    rec.message.uid.0,
                    rec.message.guid.clone(),
                );
                if seen.insert(key) {
                    out.push(DeletedHit {
                        cat: cat.clone(),
                        rec,
                        last_in: a.manifest().parent.as_ref().map(|p| p.archive_id.clone()),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Mail that the state of `prev` holds and the state of `next` does not
/// ([`deleted_since`], user by user).
fn deleted_between(prev: &Archive, next: &Archive, filter: &ListFilter) -> Result<Vec<DeletedHit>> {
    let (pm, nm) = (prev.manifest(), next.manifest());
    let mut users: Vec<&Name> = prev.dir.mailboxes.iter().map(|e| &e.user).collect();
    users.dedup();
    let mut out = Vec::new();
    for user in users {
        if filter
            .user
            .as_ref()
            .is_some_and(|u| u.as_bytes() != user.as_bytes())
        {
            continue;
        }
        let cats_of = |a: &Archive| -> Result<Vec<MailboxRecord>> {
            let mut v = Vec::new();
            for (i, e) in a.dir.mailboxes.iter().enumerate() {
                if &e.user == user {
                    v.push(a.catalog(i)?);
                }
            }
            Ok(v)
        };
        let (before, after) = (cats_of(prev)?, cats_of(next)?);
        let live: Vec<_> = after
            .iter()
            .map(|c| (&c.mailbox, c.messages.iter().map(|r| &r.message).collect()))
            .collect();
        let (per_live, gone) =
            deleted_since(&before, &pm.archive_id, &live, &pm.created, &nm.created);
        let mut per_live: Vec<_> = per_live.into_iter().collect();
        per_live.sort_by_key(|(i, _)| *i);
        let hits = per_live
            .into_iter()
            .map(|(i, recs)| (after[i].mailbox.clone(), recs))
            .chain(gone);
        for (mailbox, recs) in hits {
            if !matches(filter, user, &mailbox.name) {
                continue;
            }
            let cat = MailboxRecord {
                user: user.clone(),
                mailbox,
                messages: Vec::new(),
                deleted: Vec::new(),
            };
            for rec in recs {
                out.push(DeletedHit {
                    cat: cat.clone(),
                    rec,
                    last_in: Some(pm.archive_id.clone()),
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mailbox(name: &str, guid: Option<&str>, uidvalidity: u32) -> MailboxMeta {
        MailboxMeta {
            guid: guid.map(str::to_string),
            uidvalidity,
            uidnext: 100,
            ..MailboxMeta::named(Name::from(name))
        }
    }

    fn message(uid: u32, guid: &str) -> MessageMeta {
        let json = serde_json::json!({
            "uid": uid, "guid": guid, "flags": [], "received": {"secs": 1},
            "size_physical": 1, "content": {"sha256": "", "size": 1}
        });
        serde_json::from_value(json).expect("message meta")
    }

    /// The parent's catalog of one mailbox holding `msgs` (UID, message GUID).
    fn catalog(mb: &MailboxMeta, msgs: &[(u32, &str)]) -> MailboxRecord {
        MailboxRecord {
            user: Name::from("alice"),
            mailbox: mb.clone(),
            messages: msgs
                .iter()
                .map(|(u, g)| MessageRecord::bare_at(format!("m{u}"), message(*u, g)))
                .collect(),
            deleted: Vec::new(),
        }
    }

    fn run(prev: &[MailboxRecord], live: &[(MailboxMeta, Vec<MessageMeta>)]) -> Deletions {
        let live: Vec<_> = live.iter().map(|(m, v)| (m, v.iter().collect())).collect();
        deleted_since(prev, "parent-id", &live, "T1", "T2")
    }

    fn uids(recs: &[MessageRecord]) -> Vec<u32> {
        recs.iter().map(|r| r.message.uid.0).collect()
    }

    #[test]
    fn a_missing_uid_is_deleted_with_when_and_where() {
        let inbox = mailbox("INBOX", Some("g1"), 7);
        let prev = [catalog(&inbox, &[(1, "a"), (2, "b"), (3, "c")])];
        let (per_live, gone) = run(&prev, &[(inbox, vec![message(1, "a"), message(3, "c")])]);
        assert!(gone.is_empty());
        let recs = &per_live[&0];
        assert_eq!(uids(recs), [2]);
        assert_eq!(recs[0].last_seen.as_deref(), Some("T1"));
        assert_eq!(recs[0].deleted_by.as_deref(), Some("T2"));
        assert!(
            recs[0].member.is_empty(),
            "the record refers to the parent's bytes"
        );
    }

    #[test]
    fn a_message_moved_to_another_mailbox_is_not_deleted() {
        let (inbox, work) = (
            mailbox("INBOX", Some("g1"), 7),
            mailbox("Work", Some("g2"), 7),
        );
        let prev = [catalog(&inbox, &[(1, "a"), (2, "b")]), catalog(&work, &[])];
        let live = [
            (inbox, vec![message(1, "a")]),
            (work, vec![message(1, "b")]),
        ];
        let (per_live, gone) = run(&prev, &live);
        assert!(per_live.values().all(Vec::is_empty), "{per_live:?}");
        assert!(gone.is_empty());
    }

    #[test]
    fn a_new_uidvalidity_makes_every_old_message_deleted() {
        let prev = [catalog(
            &mailbox("INBOX", Some("g1"), 7),
            &[(1, "a"), (2, "b")],
        )];
        let live = [(mailbox("INBOX", Some("g1"), 8), vec![message(1, "x")])];
        let (per_live, gone) = run(&prev, &live);
        assert!(per_live.is_empty());
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0.uidvalidity, 7);
        assert_eq!(uids(&gone[0].1), [1, 2]);
    }

    #[test]
    fn a_deleted_mailbox_is_gone_with_its_mail_and_names_match_without_guids() {
        let prev = [
            catalog(&mailbox("Old", None, 3), &[(5, "e")]),
            catalog(&mailbox("Kept", None, 3), &[(1, "k")]),
        ];
        let live = [(mailbox("Kept", None, 3), vec![message(1, "k")])];
        let (per_live, gone) = run(&prev, &live);
        assert!(per_live.values().all(Vec::is_empty));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].0.name, Name::from("Old"));
        assert_eq!(uids(&gone[0].1), [5]);
    }

    #[test]
    fn nothing_changed_nothing_deleted() {
        let inbox = mailbox("INBOX", Some("g1"), 7);
        let prev = [catalog(&inbox, &[(1, "a")])];
        let (per_live, gone) = run(&prev, &[(inbox, vec![message(1, "a")])]);
        assert!(per_live.values().all(Vec::is_empty) && gone.is_empty());
    }
}
