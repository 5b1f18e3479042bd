//! The incremental part of a backup, pure (no I/O): what the parent archive knew of a
//! user's mail ([`UserBase`], built from the parent's catalogs), what to do with each
//! scanned message ([`UserBase::verdict`]: carry over, record unread, or read), and which
//! mail was deleted since the parent ([`UserBase::deletions`]).

use std::collections::{HashMap, HashSet};

use crate::chain::{Deletions, deleted_since};
use crate::format::index::{ContentRef, MailboxRecord};
use crate::model::{Content, MailboxMeta, MessageMeta, Name, Timestamp};

/// What a message known from the parent archive carries over without reading its file.
#[derive(Clone, Debug)]
pub(crate) struct Known {
    pub(crate) content: Content,
    pub(crate) from: Option<String>,
    pub(crate) subject: Option<String>,
    pub(crate) message_id: Option<String>,
    /// Where the bytes are; `None` for a since-archive's unread message.
    pub(crate) at: Option<ContentRef>,
}

/// What identifies a message's bytes across backups without reading them: the Maildir file
/// base (Dovecot never reuses one), or the dbox message GUID.
fn identity_key(m: &MessageMeta) -> Option<&[u8]> {
    match &m.maildir {
        Some(md) => Some(md.base()),
        None => Some(m.guid.as_bytes()).filter(|g| !g.is_empty()),
    }
}

/// The parent's messages of one mailbox, by UID: the Maildir file base (dbox: the message
/// GUID) and what carries over.
pub(crate) type KnownMailbox = HashMap<u32, (Vec<u8>, Known)>;

/// What a backup does with one scanned message.
#[derive(Debug)]
pub(crate) enum Verdict<'a> {
    /// The parent knew it (same file, or moved/copied): carry its content over unread.
    Known(&'a Known),
    /// A since-archive and the file did not change after `--since`: recorded, not read.
    Unchanged,
    /// Read its bytes.
    Read,
}

/// Per-user knowledge from the parent archive.
#[derive(Default)]
pub(crate) struct UserBase {
    /// (mailbox GUID, UIDVALIDITY) -> the parent's messages of that mailbox.
    by_mailbox: HashMap<(String, u32), KnownMailbox>,
    /// (file base, size) -> content, for messages moved or copied between mailboxes.
    by_file: HashMap<(Vec<u8>, u64), Known>,
    /// The parent's catalogs of the user's mailboxes.
    pub(crate) parent: Vec<MailboxRecord>,
    parent_id: String,
    parent_created: String,
}

impl UserBase {
    /// From the parent's catalogs of one user (`parent`), the parent's archive id and
    /// creation time.
    pub(crate) fn from_parent(
        parent: Vec<MailboxRecord>,
        parent_id: &str,
        parent_created: &str,
    ) -> UserBase {
        let mut ub = UserBase {
            parent_id: parent_id.to_string(),
            parent_created: parent_created.to_string(),
            ..Default::default()
        };
        for cat in &parent {
            let mut mb = cat
                .mailbox
                .guid
                .clone()
                .map(|g| (g, cat.mailbox.uidvalidity, KnownMailbox::new()));
            for r in &cat.messages {
                let Some(base) = identity_key(&r.message).map(<[u8]>::to_vec) else {
                    continue;
                };
                let known = Known {
                    content: r.message.content.clone(),
                    from: r.message.from.clone(),
                    subject: r.message.subject.clone(),
                    message_id: r.message.message_id.clone(),
                    at: r.content_ref(parent_id),
                };
                if known.at.is_some() {
                    ub.by_file
                        .insert((base.clone(), r.message.content.size), known.clone());
                }
                if let Some((_, _, m)) = &mut mb {
                    m.insert(r.message.uid.0, (base, known));
                }
            }
            if let Some((g, uv, m)) = mb {
                ub.by_mailbox.insert((g, uv), m);
            }
        }
        ub.parent = parent;
        ub
    }

    /// The parent's messages of the mailbox `mb` (same GUID and UIDVALIDITY), if any.
    pub(crate) fn mailbox(&self, mb: &MailboxMeta) -> Option<&KnownMailbox> {
        let g = mb.guid.as_ref()?;
        self.by_mailbox.get(&(g.clone(), mb.uidvalidity))
    }

    /// What the parent knew of `msg`: the same UID and file base in the same mailbox
    /// (`known`, from [`Self::mailbox`]), else the same file base and size anywhere in the
    /// user's mail (moved or copied). Allocates only when the first lookup misses.
    pub(crate) fn lookup<'a>(
        &'a self,
        known: Option<&'a KnownMailbox>,
        msg: &MessageMeta,
    ) -> Option<&'a Known> {
        let base = identity_key(msg)?;
        let size = msg.content.size;
        known
            .and_then(|m| m.get(&msg.uid.0))
            .filter(|(b, k)| b.as_slice() == base && k.content.size == size)
            .map(|(_, k)| k)
            .or_else(|| self.by_file.get(&(base.to_vec(), size)))
    }

    /// What to do with `msg` of a mailbox whose parent messages are `known`, in a
    /// since-archive (`since`) or not.
    pub(crate) fn verdict<'a>(
        &'a self,
        known: Option<&'a KnownMailbox>,
        msg: &MessageMeta,
        since: Option<Timestamp>,
    ) -> Verdict<'a> {
        if let Some(k) = self.lookup(known, msg) {
            return Verdict::Known(k);
        }
        if since.is_some_and(|s| msg.changed.is_some_and(|c| c.secs < s.secs)) {
            return Verdict::Unchanged;
        }
        Verdict::Read
    }

    /// Mail of the parent's state that `live` (the scanned mailboxes) no longer has,
    /// recorded as deleted by the archive created at `created`. Mailboxes in `kept` (damaged
    /// ones whose parent state is carried over) are left out: their mail is not deleted.
    pub(crate) fn deletions(
        &self,
        live: &[(MailboxMeta, Vec<MessageMeta>)],
        kept: &HashSet<Name>,
        created: &str,
    ) -> Deletions {
        let live: Vec<_> = live.iter().map(|(m, v)| (m, v.iter().collect())).collect();
        let prev: Vec<MailboxRecord>;
        let prev = if kept.is_empty() {
            &self.parent
        } else {
            prev = self
                .parent
                .iter()
                .filter(|c| !kept.contains(&c.mailbox.name))
                .cloned()
                .collect();
            &prev
        };
        deleted_since(prev, &self.parent_id, &live, &self.parent_created, created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::{Location, MessageRecord};

    fn mailbox(name: &str, guid: &str) -> MailboxMeta {
        MailboxMeta {
            guid: Some(guid.to_string()),
            uidvalidity: 7,
            uidnext: 100,
            ..MailboxMeta::named(Name::from(name))
        }
    }

    /// A dbox-like message (identity: its GUID) of `size` bytes, changed at `changed`.
    fn message(uid: u32, guid: &str, size: u64, changed: i64) -> MessageMeta {
        let json = serde_json::json!({
            "uid": uid, "guid": guid, "flags": [], "received": {"secs": 1},
            "size_physical": size, "content": {"sha256": "ab", "size": size}
        });
        let mut m: MessageMeta = serde_json::from_value(json).expect("message meta");
        m.changed = Some(Timestamp {
            secs: changed,
            nanos: 0,
        });
        m
    }

    /// The parent's catalog of `mb`: messages (UID, GUID), stored (`loc`) or unread.
    fn catalog(mb: &MailboxMeta, msgs: &[(u32, &str, bool)]) -> MailboxRecord {
        let messages = msgs
            .iter()
            .map(|&(uid, guid, stored)| {
                let mut r = MessageRecord::bare_at(format!("m{uid}"), message(uid, guid, 10, 1));
                r.loc = stored.then_some(Location {
                    frame: 0,
                    offset: u64::from(uid),
                });
                r
            })
            .collect();
        MailboxRecord {
            user: Name::from("alice"),
            mailbox: mb.clone(),
            messages,
            deleted: Vec::new(),
        }
    }

    fn base() -> UserBase {
        let inbox = mailbox("INBOX", "g1");
        let prev = vec![catalog(&inbox, &[(1, "a", true), (2, "b", false)])];
        UserBase::from_parent(prev, "P", "T1")
    }

    #[test]
    fn the_same_message_in_the_same_mailbox_is_carried_over() {
        let ub = base();
        let inbox = mailbox("INBOX", "g1");
        let known = ub.mailbox(&inbox);
        match ub.verdict(known, &message(1, "a", 10, 5), None) {
            Verdict::Known(k) => {
                let at = k.at.as_ref().expect("bytes in the parent");
                assert_eq!((at.archive.as_str(), at.loc.offset), ("P", 1));
            }
            v => panic!("{v:?}"),
        }
        // Known but unread in the parent (a since-archive): carried over, still unread.
        assert!(matches!(
            ub.verdict(known, &message(2, "b", 10, 5), None),
            Verdict::Known(Known { at: None, .. })
        ));
    }

    #[test]
    fn a_moved_message_is_found_by_identity_and_size_only_when_stored() {
        let ub = base();
        let work = mailbox("Work", "g2");
        assert!(ub.mailbox(&work).is_none());
        assert!(matches!(
            ub.verdict(None, &message(9, "a", 10, 5), None),
            Verdict::Known(_)
        ));
        // Another size is other bytes; an unread parent record has no bytes to refer to.
        assert!(matches!(
            ub.verdict(None, &message(9, "a", 11, 5), None),
            Verdict::Read
        ));
        assert!(matches!(
            ub.verdict(None, &message(9, "b", 10, 5), None),
            Verdict::Read
        ));
    }

    #[test]
    fn a_since_archive_reads_only_files_changed_after_since() {
        let ub = UserBase::default();
        let since = Some(Timestamp { secs: 20, nanos: 0 });
        let old = message(1, "x", 10, 19);
        let new = message(2, "y", 10, 20);
        assert!(matches!(ub.verdict(None, &old, since), Verdict::Unchanged));
        assert!(matches!(ub.verdict(None, &new, since), Verdict::Read));
        assert!(matches!(ub.verdict(None, &old, None), Verdict::Read));
    }

    #[test]
    fn deletions_leave_out_mailboxes_kept_from_the_parent() {
        let (inbox, damaged) = (mailbox("INBOX", "g1"), mailbox("Damaged", "g3"));
        let prev = vec![
            catalog(&inbox, &[(1, "a", true), (2, "b", true)]),
            catalog(&damaged, &[(1, "d", true)]),
        ];
        let ub = UserBase::from_parent(prev, "P", "T1");
        let live = vec![(inbox, vec![message(1, "a", 10, 1)])];
        let (per_live, gone) = ub.deletions(&live, &HashSet::new(), "T2");
        assert_eq!(per_live[&0].len(), 1);
        assert_eq!(per_live[&0][0].message.uid.0, 2);
        assert_eq!(per_live[&0][0].archive.as_deref(), Some("P"));
        assert_eq!(gone.len(), 1, "the damaged mailbox would be gone");
        let kept = HashSet::from([Name::from("Damaged")]);
        let (_, gone) = ub.deletions(&live, &kept, "T2");
        assert!(gone.is_empty());
    }
}
