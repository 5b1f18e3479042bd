//! Writing Maildir mailboxes the way Dovecot does (restore, exact mode).
//!
//! Message files are written to `tmp/`, fsynced, given their original mtime (INTERNALDATE),
//! owner and mode, then renamed into `cur/` or `new/` under their original names. The
//! uidlist (original UIDVALIDITY, next UID, mailbox and message GUIDs) and `dovecot-keywords`
//! are written through a temporary file and a rename. When the user's mail root does not
//! exist, the whole root is built under a hidden sibling and renamed into place by
//! [`StoreWriter::commit`]; a new mailbox in an existing root is built under the root's
//! `tmp/` and renamed into place. Either way an interrupted restore leaves nothing visible
//! to Dovecot. Existing mail is never overwritten: [`StoreWriter::check_free`] refuses.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::uidlist::{self, UidRecord, Uidlist, parse_filename};
use crate::error::{Error, IoContext, Result};
use crate::model::{MailboxMeta, MessageMeta, Name, Owner, Timestamp};
use crate::store::location::{Layout, Location};
use crate::store::stage::{BATCH, Pending, Stage, sync_dir, to_system_time};
use crate::store::{StoreWriter, WriteStats, check_mailbox_name};

/// Writes mailboxes into one user's Maildir.
pub struct MaildirWriter {
    pub(super) st: Stage,
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

    /// Directory of a mailbox under `root`.
    pub(super) fn mailbox_dir(&self, root: &Path, name: &Name) -> PathBuf {
        let mut p = root.to_path_buf();
        for c in self.st.loc.mailbox_dir_components(name) {
            p.push(std::ffi::OsStr::from_bytes(&c));
        }
        p
    }

    /// See [`crate::store::Writer::live_state`]: the uidlist's UIDVALIDITY and next UID,
    /// and the index's HIGHESTMODSEQ (a damaged index tells none).
    pub(crate) fn live_state(&self, name: &Name) -> Result<Option<crate::continuity::Known>> {
        let dir = self.mailbox_dir(&self.st.root, name);
        let path = dir.join("dovecot-uidlist");
        let ul = match fs::read(&path) {
            Ok(d) => Some(uidlist::parse(&d).map_err(|e| Error::store(&path, e))?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(path, e)),
        };
        let index = crate::store::dbox::index::MailIndex::read(&dir, "dovecot.index")
            .ok()
            .flatten();
        let (uidvalidity, uidnext) = match (&ul, &index) {
            (Some(ul), _) => (ul.uidvalidity, ul.effective_next_uid()),
            (None, Some(i)) => (i.uid_validity, i.next_uid),
            (None, None) => return Ok(None),
        };
        let highest_modseq = index
            .filter(|i| i.uid_validity == uidvalidity)
            .map(|i| i.highest_modseq)
            .filter(|&h| h > 0);
        Ok(Some(crate::continuity::Known {
            uidvalidity,
            uidnext,
            highest_modseq,
        }))
    }

    /// Write one message file at `tmp` (a new file): its bytes from `body`, its mtime the
    /// received date, the archived mode, `owner`. Not synced: [`Pending::flush`] makes a
    /// batch durable before it becomes visible. Returns `false` (and removes the file) when
    /// `body` could not supply the bytes.
    pub(super) fn write_message_file(
        &self,
        tmp: &Path,
        msg: &MessageMeta,
        owner: Option<Owner>,
        body: &mut dyn FnMut(&mut dyn Write) -> Result<bool>,
    ) -> Result<bool> {
        let mode = msg
            .owner
            .map(|o| o.mode & 0o7777)
            .filter(|m| *m != 0)
            .unwrap_or(0o600);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(tmp)
            .at(tmp)?;
        let ok = (|| {
            let mut bw = io::BufWriter::with_capacity(1 << 16, &mut f);
            let ok = body(&mut bw)?;
            bw.flush().at(tmp)?;
            Ok(ok)
        })();
        let ok = match ok {
            Ok(ok) => ok,
            Err(e) => {
                // A full disk or a stop: no partial file stays in tmp/ (the write's error
                // is the one reported).
                drop(f);
                let _ = fs::remove_file(tmp);
                return Err(e);
            }
        };
        if !ok {
            drop(f);
            fs::remove_file(tmp).at(tmp)?;
            return Ok(false);
        }
        let t = to_system_time(msg.received);
        f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
            .at(tmp)?;
        drop(f);
        self.st.chown(tmp, owner)?;
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

impl StoreWriter for MaildirWriter {
    fn check_free(&self, name: &Name) -> Result<()> {
        check_mailbox_name(name, &format!("mailbox {name}"))?;
        let dir = self.mailbox_dir(&self.st.root, name);
        for sub in ["cur", "new"] {
            let d = dir.join(sub);
            match fs::read_dir(&d) {
                Ok(mut rd) => {
                    if rd.next().is_some() {
                        return Err(Error::Conflict(format!(
                            "user {} mailbox {name} already exists and holds mail ({}); restore into another location or user, or remove it first",
                            self.st.user,
                            dir.display()
                        )));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(d, e)),
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
        let dir_owner = meta.owner;
        let root = self.st.work_root(dir_owner)?;
        let is_inbox = meta.name.as_bytes() == b"INBOX";
        let final_dir = self.mailbox_dir(&root, &meta.name);
        // A new non-INBOX mailbox in an existing root is built under root/tmp and renamed.
        let staged = !is_inbox && self.st.staging_root.is_none() && !final_dir.exists();
        let work = if staged {
            let tmpdir = root.join("tmp");
            self.st.mkdir(&tmpdir, dir_owner)?;
            let n = self.next_seq();
            let w = tmpdir.join(format!("maildump-restore-{}-{n}", std::process::id()));
            if w.exists() {
                fs::remove_dir_all(&w).at(&w)?;
            }
            self.st.track(&w);
            self.st.mkdir(&w, dir_owner)?;
            w
        } else {
            if let Some(parent) = final_dir.parent() {
                self.st.mkdir_all(parent, dir_owner)?;
            }
            self.st.mkdir(&final_dir, dir_owner)?;
            final_dir.clone()
        };
        for sub in ["cur", "new", "tmp"] {
            self.st.mkdir(&work.join(sub), dir_owner)?;
        }
        if !is_inbox && self.st.loc.layout == Layout::MaildirPlusPlus {
            self.st
                .write_atomic(&work.join("maildirfolder"), b"", dir_owner, 0o600)?;
        }

        let table = super::index::table_for(meta, messages);
        let mut stats = WriteStats::default();
        let mut written_msgs: Vec<&MessageMeta> = Vec::with_capacity(messages.len());
        let mut records: Vec<UidRecord> = Vec::with_capacity(messages.len());
        let mut written: HashMap<(String, Timestamp, Option<Owner>), PathBuf> = HashMap::new();
        let mut used_bases: std::collections::HashSet<Vec<u8>> = Default::default();
        let mut pending = Pending::default();
        for (i, msg) in messages.iter().enumerate() {
            if pending.len() >= BATCH {
                pending.flush(&work)?;
            }
            let md = msg.maildir.clone().unwrap_or_default();
            // File name: the original when safe, else a new one (GUID kept in the uidlist).
            let letters = info_letters(msg, &table);
            let orig = safe_filename(md.filename.as_bytes())
                .filter(|n| !used_bases.contains(parse_filename(n).base));
            let filename: Vec<u8> = match orig {
                Some(n) => n.to_vec(),
                None => {
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
                    n.extend_from_slice(&letters);
                    n
                }
            };
            let fname = parse_filename(&filename);
            let base = fname.base.to_vec();
            used_bases.insert(base.clone());
            let sub = if md.new { "new" } else { "cur" };
            let dest = work.join(sub).join(std::ffi::OsStr::from_bytes(&filename));
            let key = (msg.content.sha256.clone(), msg.received, msg.owner);
            if let Some(src) = written.get(&key) {
                // Same bytes, same date and owner: a hard link, as Dovecot's own copy makes.
                pending.link(src.clone(), dest.clone());
            } else {
                let tmp = work
                    .join("tmp")
                    .join(format!("{}.{}.maildump", std::process::id(), i));
                if !self.write_message_file(&tmp, msg, msg.owner, &mut |out| bodies(i, out))? {
                    stats.lost += 1;
                    continue;
                }
                pending.rename(tmp, dest.clone());
                written.insert(key, dest.clone());
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
        pending.flush(&work)?;
        for sub in ["cur", "new"] {
            sync_dir(&work.join(sub))?;
        }
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
        let lettered = &table[..table.len().min(super::index::LETTERS)];
        if !lettered.is_empty() {
            self.st.write_atomic(
                &work.join("dovecot-keywords"),
                &uidlist::render_keywords(lettered),
                dir_owner,
                0o600,
            )?;
        }
        self.st.write_atomic(
            &work.join("dovecot-uidlist"),
            &uidlist::render(&ul),
            dir_owner,
            0o600,
        )?;
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
            self.st
                .write_index_files(&work, "dovecot.index", &ix, cache.as_deref(), dir_owner)?;
        }
        sync_dir(&work)?;
        if staged {
            self.st.publish(&work, &final_dir, dir_owner)?;
            self.st.untrack(&work);
        }
        Ok(stats)
    }

    fn add_subscriptions(&mut self, names: &[Name]) -> Result<()> {
        self.st.add_subscriptions(names)
    }

    fn add_attributes(&mut self, entries: &[(Name, Name)]) -> Result<()> {
        self.st.add_attributes(entries)
    }

    fn commit(&mut self) -> Result<()> {
        self.st.commit()
    }
}
