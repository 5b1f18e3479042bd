//! Writing Maildir mailboxes the way Dovecot does (restore, exact mode).
//!
//! Message files get their original names in `cur/` or `new/`, their original mtime
//! (INTERNALDATE), owner and mode. The uidlist (original UIDVALIDITY, next UID, mailbox and
//! message GUIDs) and `dovecot-keywords` are written through a temporary file and a rename.
//! When the user's mail root does not exist, the whole root is built under a hidden sibling
//! and renamed into place by [`StoreWriter::commit`]; a new mailbox in an existing root is
//! built under the root's `tmp/` and renamed into place. There, hidden from Dovecot,
//! files are written in place without `fsync` and made durable by one `syncfs` before that
//! rename ([`Durable::Later`]); into a mailbox Dovecot can see (an existing empty INBOX)
//! they are written to `tmp/` and renamed a durable batch at a time ([`Pending`]). Either
//! way an interrupted restore leaves nothing incomplete visible to Dovecot. Existing mail is never overwritten: [`StoreWriter::check_free`] refuses.
//! Everything is written relative to open directory handles, never through a symlink
//! (`store::target`); a symlink in a mailbox's way is refused before anything is written.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use super::uidlist::{self, UidRecord, Uidlist, parse_filename};
use crate::error::{IoContext, Result};
use crate::model::{MailboxMeta, MessageMeta, Name, Owner, Timestamp};
use crate::store::location::{Layout, Location};
use crate::store::nofollow::DirFd;
use crate::store::stage::{BATCH, Pending, Stage, to_system_time};
use crate::store::target::{Durable, Perms, set_owner};
use crate::store::{StoreWriter, WriteStats, check_mailbox_name, occupied};

/// What a restore or a merge writes in a Maildir mailbox directory (each refused when it is
/// a symlink).
const MAILBOX_ENTRIES: [&str; 10] = [
    "cur",
    "new",
    "tmp",
    "dovecot-uidlist",
    "dovecot-uidlist.lock",
    "dovecot-keywords",
    "dovecot.index",
    "dovecot.index.log",
    "dovecot.index.cache",
    "maildirfolder",
];

/// Writes mailboxes into one user's Maildir.
pub struct MaildirWriter {
    pub(crate) st: Stage,
    seq: u32,
}

impl MaildirWriter {
    /// Prepare to write into `user`'s Maildir at `loc`. `owner` overrides the owner of
    /// everything written (`--owner UID:GID`); otherwise, when running as root, files get
    /// the owner recorded in the archive.
    ///
    /// # Errors
    /// A location that needs a home template without one.
    pub fn new(loc: &Location, user: &str, owner: Option<(u32, u32)>) -> Result<Self> {
        Ok(MaildirWriter {
            st: Stage::new(loc, user, owner)?,
            seq: 0,
        })
    }

    /// The final mail root.
    pub fn root(&self) -> &Path {
        &self.st.root
    }

    /// Refuse a symlink as the mail root itself (export's `-o DIR`, given by the user).
    pub(crate) fn set_strict_root(&mut self) {
        self.st.set_strict_root();
    }

    /// Refuse, before anything is written, a symlink where the user's control files are
    /// written ([`Stage::check_root`]).
    ///
    /// # Errors
    /// [`Error::UnsafeTarget`] naming the link; I/O errors.
    pub(crate) fn check_root(&self) -> Result<()> {
        self.st.check_root(&[])
    }

    /// The directory components of a mailbox below the mail root.
    pub(super) fn mailbox_comps(&self, name: &Name) -> Vec<Vec<u8>> {
        self.st.loc.mailbox_dir_components(name)
    }

    /// The existing directory of mailbox `name`, checked: a symlink at the mailbox
    /// directory, on its way, or at any entry a restore or merge writes in it is refused.
    /// `None` when the root or the mailbox does not exist.
    ///
    /// # Errors
    /// [`Error::UnsafeTarget`] naming a symlink; I/O errors.
    pub(super) fn existing_mailbox(&self, name: &Name) -> Result<Option<DirFd>> {
        let Some(root) = self.st.existing_root()? else {
            return Ok(None);
        };
        let Some(dir) = root.try_open_comps(&self.mailbox_comps(name))? else {
            return Ok(None);
        };
        for entry in MAILBOX_ENTRIES {
            dir.refuse_symlink(entry.as_bytes())?;
        }
        Ok(Some(dir))
    }

    /// See [`crate::store::Writer::live_state`]: the uidlist's UIDVALIDITY and next UID,
    /// and the index's HIGHESTMODSEQ (a damaged index tells none).
    pub(crate) fn live_state(&self, name: &Name) -> Result<Option<crate::model::MailboxStatus>> {
        let Some(dir) = self.existing_mailbox(name)? else {
            return Ok(None);
        };
        let ul = super::read_uidlist(&dir)?;
        // A damaged index tells nothing (a symlink is refused all the same).
        let index = crate::store::stage::read_index_at(&dir, "dovecot.index")?.and_then(|r| r.ok());
        let (uidvalidity, uidnext) = match (&ul, &index) {
            (Some(ul), _) => (ul.uidvalidity, ul.effective_next_uid()),
            (None, Some(i)) => (i.uid_validity, i.next_uid),
            (None, None) => return Ok(None),
        };
        let highest_modseq = index
            .filter(|i| i.uid_validity == uidvalidity)
            .map(|i| i.highest_modseq)
            .filter(|&h| h > 0);
        Ok(Some(crate::model::MailboxStatus {
            uidvalidity,
            uidnext,
            highest_modseq,
        }))
    }

    /// Write one message file `name` in the directory `tmp` (a new file): its bytes from
    /// `body`, its mtime the received date, the archived mode (masked), the owner `ids`.
    /// Not synced: [`Pending::flush`] makes a batch durable before it becomes visible, or
    /// the `syncfs` before its hidden mailbox or root is renamed into place.
    /// Returns `false` (and removes the file) when `body` could not supply the bytes.
    pub(super) fn write_message_file(
        &self,
        (tmp, name): (&DirFd, &[u8]),
        msg: &MessageMeta,
        ids: Option<(u32, u32)>,
        body: &mut dyn FnMut(&mut dyn Write) -> Result<bool>,
    ) -> Result<bool> {
        let mode = crate::store::target::file_mode(msg.owner.map(|o| o.mode));
        let mut f = tmp.create(name, mode)?;
        let ok = (|| {
            let mut bw = io::BufWriter::with_capacity(1 << 16, &mut f);
            let ok = body(&mut bw)?;
            bw.flush().at(tmp.join(name))?;
            Ok(ok)
        })();
        let ok = match ok {
            Ok(ok) => ok,
            Err(e) => {
                // A full disk or a stop: no partial file stays in tmp/ (the write's error
                // is the one reported).
                drop(f);
                let _ = tmp.remove(name);
                return Err(e);
            }
        };
        if !ok {
            drop(f);
            tmp.remove(name)?;
            return Ok(false);
        }
        let t = to_system_time(msg.received);
        f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
            .at(tmp.join(name))?;
        set_owner(&f, &tmp.join(name), ids)?;
        self.st.written(f, msg.content.size);
        Ok(true)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }
}

/// A file name from the archive, if it is safe to use; else `None`.
pub(super) fn safe_filename(name: &[u8]) -> Option<&[u8]> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name[0] != b'.'
        && !name.contains(&b'/')
        && !name.contains(&0)
        && !name.contains(&b'\n')
        && !name.contains(&b' ');
    ok.then_some(name)
}

/// Flag letters for a file name, from flags and keywords against the keyword table.
pub(super) fn info_letters(msg: &MessageMeta, table: &[Name]) -> Vec<u8> {
    use crate::model::Flags;
    let mut l = Vec::new();
    for (f, c) in [
        (Flags::DRAFT, b'D'),
        (Flags::FLAGGED, b'F'),
        (Flags::ANSWERED, b'R'),
        (Flags::SEEN, b'S'),
        (Flags::DELETED, b'T'),
    ] {
        if msg.flags.contains(f) {
            l.push(c);
        }
    }
    for k in &msg.keywords {
        if let Some(i) = table.iter().position(|t| t == k)
            && i < 26
        {
            l.push(b'a' + i as u8);
        }
    }
    l.sort_unstable();
    l
}

/// A mailbox directory being written: its handle and those of `cur/`, `new/`, `tmp/`,
/// where it is built when aside (to be renamed into place), and when what is written in
/// it must be durable: later when Dovecot cannot see it yet (aside, or in a mail root
/// being built aside).
struct Work {
    root: Arc<DirFd>,
    dir: Arc<DirFd>,
    cur: Arc<DirFd>,
    new: Arc<DirFd>,
    tmp: Arc<DirFd>,
    aside: Option<(Arc<DirFd>, Vec<u8>)>,
    when: Durable,
}

/// Message files written, by (SHA-256, date, owner): (in `new/`?, name), for hard links.
type Copies = HashMap<(String, Timestamp, Option<Owner>), (bool, Vec<u8>)>;

/// What [`MaildirWriter::write_messages`] wrote: counts, the messages, their uidlist
/// records.
type Written<'a> = (WriteStats, Vec<&'a MessageMeta>, Vec<UidRecord>);

impl MaildirWriter {
    /// Make (or open) the directory mailbox `meta` is written into: the mailbox's own
    /// directory, or, for a new non-INBOX mailbox in an existing root, one built under the
    /// root's `tmp/` and renamed into place at the end.
    fn open_work(&mut self, meta: &MailboxMeta) -> Result<Work> {
        let root = self.st.work_root(meta.owner)?;
        let perms = self.st.dir_perms(meta.owner);
        let is_inbox = meta.name.as_bytes() == b"INBOX";
        let comps = self.mailbox_comps(&meta.name);
        let staged = !is_inbox && !self.st.is_staging() && root.try_open_comps(&comps)?.is_none();
        let (dir, aside) = if staged {
            let tmpdir = Arc::new(root.mkdir(b"tmp", perms)?);
            let n = self.next_seq();
            let name = format!("maildump-restore-{}-{n}", std::process::id()).into_bytes();
            tmpdir.remove_tree(&name)?;
            self.st.track(&tmpdir, &name);
            let w = tmpdir.mkdir(&name, perms)?;
            (w, Some((tmpdir, name)))
        } else {
            (root.mkdir_comps(&comps, perms)?, None)
        };
        let [cur, new, tmp] = [b"cur".as_slice(), b"new", b"tmp"].map(|s| dir.mkdir(s, perms));
        let when = if aside.is_some() {
            Durable::Later
        } else {
            self.st.durable()
        };
        let work = Work {
            root,
            cur: Arc::new(cur?),
            new: Arc::new(new?),
            tmp: Arc::new(tmp?),
            dir: Arc::new(dir),
            aside,
            when,
        };
        if !is_inbox && self.st.loc.layout == Layout::MaildirPlusPlus {
            let perms = Perms::new(0o600, self.st.ids(meta.owner));
            work.dir
                .write_atomic_as(b"maildirfolder", b"", perms, when)?;
        }
        Ok(work)
    }

    /// Write the message files of a mailbox into `w` and make up their uidlist records;
    /// copies are hard-linked. Where Dovecot may see them, files are written in `tmp/` and
    /// renamed into `cur/`/`new/` a batch at a time, each batch made durable first
    /// ([`Pending`]); where it cannot yet ([`Durable::Later`]), they are written under their
    /// final names at once: the `syncfs` before the rename that shows them makes them
    /// durable.
    fn write_messages<'a>(
        &self,
        w: &Work,
        messages: &'a [MessageMeta],
        table: &[Name],
        bodies: &mut dyn FnMut(usize, &mut dyn Write) -> Result<bool>,
    ) -> Result<Written<'a>> {
        let mut stats = WriteStats::default();
        let mut written_msgs: Vec<&MessageMeta> = Vec::with_capacity(messages.len());
        let mut records: Vec<UidRecord> = Vec::with_capacity(messages.len());
        let mut written = Copies::new();
        let mut used_bases: std::collections::HashSet<Vec<u8>> = Default::default();
        let mut pending = Pending::default();
        for (i, msg) in messages.iter().enumerate() {
            if pending.len() >= BATCH {
                pending.flush(&w.dir)?;
            }
            let md = msg.maildir.clone().unwrap_or_default();
            let filename = file_name_for(msg, i, &md, &info_letters(msg, table), &used_bases);
            let fname = parse_filename(&filename);
            let base = fname.base.to_vec();
            used_bases.insert(base.clone());
            let sub = if md.new { &w.new } else { &w.cur };
            let key = (msg.content.sha256.clone(), msg.received, msg.owner);
            if let Some((new, src)) = written.get(&key) {
                // Same bytes, same date and owner: a hard link, as Dovecot's own copy makes.
                let from = if *new { &w.new } else { &w.cur };
                if w.when == Durable::Later {
                    from.link_to(src, sub, &filename)?;
                } else {
                    pending.link((from, src.clone()), (sub, filename.clone()));
                }
            } else {
                let ids = self.st.ids(msg.owner);
                let mut body = |out: &mut dyn Write| bodies(i, out);
                if w.when == Durable::Later {
                    if !self.write_message_file((sub, &filename), msg, ids, &mut body)? {
                        stats.lost += 1;
                        continue;
                    }
                } else {
                    let tmp = format!("{}.{}.maildump", std::process::id(), i).into_bytes();
                    if !self.write_message_file((&w.tmp, &tmp), msg, ids, &mut body)? {
                        stats.lost += 1;
                        continue;
                    }
                    pending.rename((&w.tmp, tmp), (sub, filename.clone()));
                }
                written.insert(key, (md.new, filename.clone()));
            }
            stats.messages += 1;
            stats.bytes += msg.content.size;
            written_msgs.push(msg);
            let guid =
                (msg.guid.as_bytes() != base.as_slice()).then(|| msg.guid.as_bytes().to_vec());
            records.push(UidRecord {
                uid: msg.uid.0,
                base,
                guid,
                size: if fname.size.is_none() {
                    md.size_ext.or(Some(msg.size_physical))
                } else {
                    md.size_ext
                },
                vsize: if fname.vsize.is_none() {
                    md.vsize_ext.or(msg.size_virtual)
                } else {
                    md.vsize_ext
                },
                pop3_uidl: msg.pop3_uidl.as_ref().map(|n| n.as_bytes().to_vec()),
                pop3_order: msg.pop3_order,
                other: md
                    .uidlist_ext
                    .iter()
                    .map(|n| n.as_bytes().to_vec())
                    .collect(),
            });
        }
        pending.flush(&w.dir)?;
        if w.when == Durable::Now {
            w.cur.sync()?;
            w.new.sync()?;
        }
        Ok((stats, written_msgs, records))
    }
}

/// The file name of message `i`: the original when safe and its base not taken, else a
/// new one (the GUID is kept in the uidlist).
fn file_name_for(
    msg: &MessageMeta,
    i: usize,
    md: &crate::model::MaildirMessage,
    letters: &[u8],
    used_bases: &std::collections::HashSet<Vec<u8>>,
) -> Vec<u8> {
    let orig = safe_filename(md.filename.as_bytes())
        .filter(|n| !used_bases.contains(parse_filename(n).base));
    if let Some(n) = orig {
        return n.to_vec();
    }
    let mut n = format!(
        "{}.M{}P{}.maildump,S={}",
        msg.received.secs.max(0),
        i,
        std::process::id(),
        msg.content.size
    )
    .into_bytes();
    if let Some(w) = msg.size_virtual {
        n.extend_from_slice(format!(",W={w}").as_bytes());
    }
    n.extend_from_slice(b":2,");
    n.extend_from_slice(letters);
    n
}

impl StoreWriter for MaildirWriter {
    fn check_free(&self, name: &Name) -> Result<()> {
        check_mailbox_name(name, &format!("mailbox {name}"))?;
        let Some(dir) = self.existing_mailbox(name)? else {
            return Ok(());
        };
        for sub in [b"cur".as_slice(), b"new"] {
            let Some(d) = dir.try_open_dir(sub)? else {
                continue;
            };
            if !d.entries()?.is_empty() {
                let what = "already exists and holds mail";
                return Err(occupied(&self.st.user, name, what, dir.path()));
            }
        }
        Ok(())
    }

    fn write_mailbox(
        &mut self,
        meta: &MailboxMeta,
        messages: &[MessageMeta],
        bodies: &mut dyn FnMut(usize, &mut dyn Write) -> Result<bool>,
    ) -> Result<WriteStats> {
        self.check_free(&meta.name)?;
        let w = self.open_work(meta)?;
        let table = super::index::table_for(meta, messages);
        let (stats, written_msgs, mut records) =
            self.write_messages(&w, messages, &table, bodies)?;
        records.sort_by_key(|r| r.uid);
        // A mailbox without UIDVALIDITY (a side folder, or one Dovecot never opened) gets
        // the root counter's next; one restored with its own raises the counter to it.
        let uidvalidity = if meta.uidvalidity == 0 {
            self.st.next_uidvalidity()?
        } else {
            self.st.raise_uidvalidity(meta.uidvalidity)?;
            meta.uidvalidity
        };
        let ul = Uidlist {
            uidvalidity,
            next_uid: meta
                .uidnext
                .max(records.last().map(|r| r.uid.saturating_add(1)).unwrap_or(1)),
            guid: meta.guid.clone(),
            header_other: meta
                .uidlist_header_ext
                .iter()
                .map(|n| n.as_bytes().to_vec())
                .collect(),
            records,
        };
        let private = Perms::new(0o600, self.st.ids(meta.owner));
        let lettered = &table[..table.len().min(super::index::LETTERS)];
        if !lettered.is_empty() {
            let kw = uidlist::render_keywords(lettered);
            w.dir
                .write_atomic_as(b"dovecot-keywords", &kw, private, w.when)?;
        }
        w.dir
            .write_atomic_as(b"dovecot-uidlist", &uidlist::render(&ul), private, w.when)?;
        // Keywords beyond the 26 letters and modseqs live only in Dovecot's index.
        if let Some(mut ix) = super::index::index_for(
            &table,
            meta.highest_modseq,
            &written_msgs,
            ul.uidvalidity,
            ul.next_uid,
        ) {
            let saved = crate::store::cache::saved_of(messages);
            let cache = crate::store::cache::attach(&mut ix, &saved);
            self.st.write_index_files(
                &w.dir,
                "dovecot.index",
                &ix,
                cache.as_deref(),
                (meta.owner, w.when),
            )?;
        }
        if w.when == Durable::Now {
            w.dir.sync()?;
        }
        if let Some((tmpdir, name)) = &w.aside {
            let comps = self.mailbox_comps(&meta.name);
            self.st
                .publish((tmpdir, name), &w.root, &comps, meta.owner)?;
            self.st.untrack(name);
        }
        Ok(stats)
    }

    fn add_subscriptions(&mut self, names: &[Name]) -> Result<()> {
        self.st.add_subscriptions(names)
    }

    fn add_attributes(&mut self, entries: &[(Name, Name)]) -> Result<Option<String>> {
        self.st.add_attributes(entries)
    }

    fn commit(&mut self) -> Result<()> {
        self.st.commit()
    }
}
