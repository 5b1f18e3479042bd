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
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::encode_component;
use super::uidlist::{self, UidRecord, Uidlist, parse_filename};
use crate::error::{Error, IoContext, Result};
use crate::model::{MailboxMeta, MessageMeta, Name, Owner, Timestamp};
use crate::store::location::{Layout, Location};
use crate::store::{StoreWriter, WriteStats, check_mailbox_name};

/// Writes mailboxes into one user's Maildir.
pub struct MaildirWriter {
    loc: Location,
    user: String,
    root: PathBuf,
    /// Where the root is being built when it did not exist.
    staging_root: Option<PathBuf>,
    owner_override: Option<(u32, u32)>,
    can_chown: bool,
    attr_file: Option<PathBuf>,
    seq: u32,
}

fn to_system_time(t: Timestamp) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs.unsigned_abs(), t.nanos.min(999_999_999))
    } else {
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs())
    }
}

/// Message files written to `tmp/` and not yet durable: made durable together by one
/// `syncfs`, then renamed (and hard-linked) into place. One `fsync` per file would cost a
/// journal commit per message (20,000 messages: ~15 s on ext4); a batch costs one.
/// Nothing is visible in `cur/`/`new/` before it is durable.
#[derive(Default)]
pub(super) struct Pending {
    renames: Vec<(PathBuf, PathBuf)>,
    links: Vec<(PathBuf, PathBuf)>,
}

/// Files per batch: bounds the memory of [`Pending`] and the work lost to a crash.
pub(super) const BATCH: usize = 2000;

impl Pending {
    pub(super) fn rename(&mut self, tmp: PathBuf, dest: PathBuf) {
        self.renames.push((tmp, dest));
    }

    /// A hard link to `src`, the destination of an earlier rename of this batch or a file
    /// already in place.
    pub(super) fn link(&mut self, src: PathBuf, dest: PathBuf) {
        self.links.push((src, dest));
    }

    pub(super) fn len(&self) -> usize {
        self.renames.len() + self.links.len()
    }

    /// Make every pending file durable (one `syncfs` of the file system holding `dir`),
    /// then move them into place.
    pub(super) fn flush(&mut self, dir: &Path) -> Result<()> {
        if self.len() == 0 {
            return Ok(());
        }
        if !self.renames.is_empty() {
            let d = File::open(dir).at(dir)?;
            rustix::fs::syncfs(&d).map_err(|e| Error::io(dir, io::Error::from(e)))?;
        }
        for (tmp, dest) in self.renames.drain(..) {
            fs::rename(&tmp, &dest).at(&dest)?;
        }
        for (src, dest) in self.links.drain(..) {
            fs::hard_link(&src, &dest).at(&dest)?;
        }
        Ok(())
    }
}

pub(super) fn sync_dir(p: &Path) -> Result<()> {
    File::open(p).and_then(|d| d.sync_all()).at(p)
}

impl MaildirWriter {
    /// Prepare to write into `user`'s Maildir at `loc`. `owner` overrides the owner of
    /// everything written (`--owner UID:GID`); otherwise, when running as root, files get
    /// the owner recorded in the archive.
    ///
    /// # Errors
    /// A location that needs a home template without one.
    pub fn new(loc: &Location, user: &str, owner: Option<(u32, u32)>) -> Result<Self> {
        let root = loc.root_of(user)?;
        let can_chown = is_root();
        Ok(MaildirWriter {
            loc: loc.clone(),
            user: user.to_string(),
            staging_root: None,
            root,
            owner_override: owner,
            can_chown,
            attr_file: loc.attribute_file_of(user),
            seq: 0,
        })
    }

    /// The final mail root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of a mailbox under `root`.
    pub(super) fn mailbox_dir(&self, root: &Path, name: &Name) -> PathBuf {
        if name.as_bytes() == b"INBOX" {
            return root.to_path_buf();
        }
        let comps: Vec<Vec<u8>> = name
            .as_bytes()
            .split(|&b| b == b'/')
            .map(|c| encode_component(&self.loc, c))
            .collect();
        match self.loc.layout {
            Layout::MaildirPlusPlus => {
                let mut n = b".".to_vec();
                n.extend_from_slice(&comps.join(&b'.'));
                root.join(std::ffi::OsStr::from_bytes(&n))
            }
            Layout::Fs => {
                let mut p = root.to_path_buf();
                for c in comps {
                    p.push(std::ffi::OsStr::from_bytes(&c));
                }
                p
            }
        }
    }

    pub(super) fn chown(&self, p: &Path, owner: Option<Owner>) -> Result<()> {
        if !self.can_chown {
            return Ok(());
        }
        let ids = self.owner_override.or(owner.map(|o| (o.uid, o.gid)));
        if let Some((u, g)) = ids {
            std::os::unix::fs::lchown(p, Some(u), Some(g)).at(p)?;
        }
        Ok(())
    }

    pub(super) fn mkdir(&self, p: &Path, owner: Option<Owner>) -> Result<()> {
        match fs::create_dir(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(Error::io(p, e)),
        }
        let mode = owner
            .map(|o| o.mode & 0o7777)
            .filter(|m| *m != 0)
            .unwrap_or(0o700);
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).at(p)?;
        self.chown(p, owner)
    }

    pub(super) fn mkdir_all(&self, p: &Path, owner: Option<Owner>) -> Result<()> {
        if p.is_dir() {
            return Ok(());
        }
        if let Some(parent) = p.parent() {
            self.mkdir_all(parent, owner)?;
        }
        self.mkdir(p, owner)
    }

    /// The root being written (staging root when the final one did not exist).
    pub(super) fn work_root(&mut self, owner: Option<Owner>) -> Result<PathBuf> {
        if let Some(s) = &self.staging_root {
            return Ok(s.clone());
        }
        if self.root.exists() {
            return Ok(self.root.clone());
        }
        // The home (the root's parent) belongs to the user like the mail root; directories
        // above it are created as plain system directories.
        let parent = self.root.parent().unwrap_or(Path::new("/")).to_path_buf();
        if !parent.exists() {
            if let Some(grand) = parent.parent() {
                fs::create_dir_all(grand).at(grand)?;
            }
            self.mkdir(&parent, owner.map(|o| Owner { mode: 0o700, ..o }))?;
        }
        let name = self
            .root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let staging = parent.join(format!(".{name}.maildump-restore-{}", std::process::id()));
        if staging.exists() {
            fs::remove_dir_all(&staging).at(&staging)?;
        }
        self.mkdir(&staging, owner)?;
        self.staging_root = Some(staging.clone());
        Ok(staging)
    }

    /// Write `data` to `path` through a temporary file, fsync and rename.
    pub(super) fn write_atomic(
        &self,
        path: &Path,
        data: &[u8],
        owner: Option<Owner>,
        mode: u32,
    ) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(
            ".{}.maildump-tmp",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .at(&tmp)?;
        f.write_all(data).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        drop(f);
        self.chown(&tmp, owner)?;
        fs::rename(&tmp, path).at(path)
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
        let ok = {
            let mut bw = io::BufWriter::with_capacity(1 << 16, &mut f);
            let ok = body(&mut bw)?;
            bw.flush().at(tmp)?;
            ok
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
        self.chown(tmp, owner)?;
        Ok(true)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }
}

/// Whether this process runs as root (and may chown).
pub(crate) fn is_root() -> bool {
    // Reading the effective uid needs no unsafe code: /proc/self reports it.
    fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
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
        let dir = self.mailbox_dir(&self.root, name);
        for sub in ["cur", "new"] {
            let d = dir.join(sub);
            match fs::read_dir(&d) {
                Ok(mut rd) => {
                    if rd.next().is_some() {
                        return Err(Error::Conflict(format!(
                            "user {} mailbox {name} already exists and holds mail ({}); restore into another location or user, or remove it first",
                            self.user,
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
        let root = self.work_root(dir_owner)?;
        let is_inbox = meta.name.as_bytes() == b"INBOX";
        let final_dir = self.mailbox_dir(&root, &meta.name);
        // A new non-INBOX mailbox in an existing root is built under root/tmp and renamed.
        let staged = !is_inbox && self.staging_root.is_none() && !final_dir.exists();
        let work = if staged {
            let tmpdir = root.join("tmp");
            self.mkdir(&tmpdir, dir_owner)?;
            let n = self.next_seq();
            let w = tmpdir.join(format!("maildump-restore-{}-{n}", std::process::id()));
            if w.exists() {
                fs::remove_dir_all(&w).at(&w)?;
            }
            self.mkdir(&w, dir_owner)?;
            w
        } else {
            if let Some(parent) = final_dir.parent() {
                self.mkdir_all(parent, dir_owner)?;
            }
            self.mkdir(&final_dir, dir_owner)?;
            final_dir.clone()
        };
        for sub in ["cur", "new", "tmp"] {
            self.mkdir(&work.join(sub), dir_owner)?;
        }
        if !is_inbox && self.loc.layout == Layout::MaildirPlusPlus {
            self.write_atomic(&work.join("maildirfolder"), b"", dir_owner, 0o600)?;
        }

        let mut stats = WriteStats::default();
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
            let letters = info_letters(msg, &meta.keywords);
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
        let ul = Uidlist {
            uidvalidity: meta.uidvalidity,
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
        if !meta.keywords.is_empty() {
            self.write_atomic(
                &work.join("dovecot-keywords"),
                &uidlist::render_keywords(&meta.keywords),
                dir_owner,
                0o600,
            )?;
        }
        if ul.uidvalidity != 0 {
            self.write_atomic(
                &work.join("dovecot-uidlist"),
                &uidlist::render(&ul),
                dir_owner,
                0o600,
            )?;
        }
        sync_dir(&work)?;
        if staged {
            if let Some(parent) = final_dir.parent() {
                self.mkdir_all(parent, dir_owner)?;
            }
            fs::rename(&work, &final_dir).at(&final_dir)?;
            if let Some(parent) = final_dir.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(stats)
    }

    fn add_subscriptions(&mut self, names: &[Name]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let root = self.work_root(None)?;
        let path = root.join("subscriptions");
        let mut existing = match fs::read(&path) {
            Ok(d) => crate::store::dovecot::parse_subscriptions(&d),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(path, e)),
        };
        for n in names {
            let enc: Vec<Vec<u8>> = n
                .as_bytes()
                .split(|&b| b == b'/')
                .map(|c| encode_component(&self.loc, c))
                .collect();
            let enc = enc.join(&b'/');
            if !existing.contains(&enc) {
                existing.push(enc);
            }
        }
        let owner = fs::metadata(&root).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            Owner {
                uid: m.uid(),
                gid: m.gid(),
                mode: 0o600,
            }
        });
        self.write_atomic(
            &path,
            &crate::store::dovecot::render_subscriptions(&existing),
            owner,
            0o600,
        )
    }

    fn add_attributes(&mut self, entries: &[(Name, Name)]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let Some(path) = self.attr_file.clone() else {
            return Err(Error::Usage(format!(
                "user {}: the archive holds METADATA but no mail_attribute_dict is known; give --config or --attribute-dict",
                self.user
            )));
        };
        // The dictionary usually lives in the home, beside (not inside) the mail root.
        let staged_home = self
            .staging_root
            .as_ref()
            .and_then(|s| path.strip_prefix(&self.root).ok().map(|rel| s.join(rel)));
        let target = staged_home.unwrap_or(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).at(parent)?;
        }
        let mut existing = match fs::read(&target) {
            Ok(d) => crate::store::dovecot::parse_dict(&d),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(target, e)),
        };
        for (k, v) in entries {
            match existing.iter_mut().find(|(ek, _)| ek == k) {
                // An existing value is kept: restore never overwrites.
                Some(_) => {}
                None => existing.push((k.clone(), v.clone())),
            }
        }
        let owner = target.parent().and_then(|p| fs::metadata(p).ok()).map(|m| {
            use std::os::unix::fs::MetadataExt;
            Owner {
                uid: m.uid(),
                gid: m.gid(),
                mode: 0o600,
            }
        });
        self.write_atomic(
            &target,
            &crate::store::dovecot::render_dict(&existing),
            owner,
            0o600,
        )
    }

    fn commit(&mut self) -> Result<()> {
        if let Some(staging) = self.staging_root.take() {
            if self.root.exists() {
                return Err(Error::Conflict(format!(
                    "{} appeared during the restore; the restored tree is left at {}",
                    self.root.display(),
                    staging.display()
                )));
            }
            fs::rename(&staging, &self.root).at(&self.root)?;
            if let Some(parent) = self.root.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(())
    }
}
