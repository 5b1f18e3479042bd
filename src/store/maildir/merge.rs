//! Merging messages into an existing, possibly live Maildir mailbox (`restore --mode merge`).
//!
//! The rules Dovecot itself follows when it saves mail: take `dovecot-uidlist.lock` (created
//! with `O_EXCL`; a lock older than two minutes is stale, as in Dovecot), read the uidlist
//! under the lock, write each new message to `tmp/`, fsync, set its mtime (INTERNALDATE) and
//! rename it into `cur/` or `new/`, then write the whole new uidlist into the lock file and
//! rename it over `dovecot-uidlist`, which also releases the lock. Dovecot processes that
//! deliver or change flags meanwhile wait for the lock; UIDVALIDITY and the UIDs of mail
//! already there never change, new mail gets UIDs from the uidlist's next UID on.
//!
//! A message is already there when its GUID is, or when a file of the same size and
//! received date has the same SHA-256; such messages are skipped, so a second run adds
//! nothing.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use super::uidlist::{self, UidRecord, Uidlist, parse_filename};
use super::write::{info_letters, safe_filename};
use super::{MaildirWriter, list_messages};
use crate::error::{Error, IoContext, Result};
use crate::model::{MailboxMeta, MessageMeta, Name, Owner};
use crate::store::stage::{BATCH, Pending, sync_dir};

/// How long to wait for `dovecot-uidlist.lock` before giving up.
const LOCK_WAIT: Duration = Duration::from_secs(30);
/// A lock file older than this is stale (Dovecot's own limit for the uidlist lock).
const LOCK_STALE: Duration = Duration::from_secs(120);

/// What a merge did (or, in a dry run, would do) with each message.
#[derive(Clone, Debug, Default)]
pub struct MergeReport {
    /// (archived UID, new UID) of each message added.
    pub added: Vec<(u32, u32)>,
    /// (archived UID, why) of each message skipped as already there.
    pub present: Vec<(u32, String)>,
    /// Messages whose bytes could not be read from the archive (not written).
    pub lost: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Keywords that did not fit into the mailbox's 26 keyword letters (dropped).
    pub dropped_keywords: Vec<Name>,
}

/// The held uidlist lock; removed on drop unless it was renamed over the uidlist.
struct UidlistLock {
    path: PathBuf,
    file: Option<File>,
}

impl Drop for UidlistLock {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn take_lock(dir: &Path) -> Result<UidlistLock> {
    let path = dir.join("dovecot-uidlist.lock");
    let start = Instant::now();
    loop {
        // Readable at once (0644) so that a Dovecot process running as the mailbox owner
        // can watch it before it is chowned to that owner; 0600 right after.
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
        {
            Ok(f) => {
                return Ok(UidlistLock {
                    path,
                    file: Some(f),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let stale = fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > LOCK_STALE);
                if stale {
                    let _ = fs::remove_file(&path);
                    continue;
                }
                if start.elapsed() > LOCK_WAIT {
                    return Err(Error::Conflict(format!(
                        "{} is held by another process (Dovecot?) for over {} s; try again later",
                        path.display(),
                        LOCK_WAIT.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => return Err(Error::io(path, e)),
        }
    }
}

fn sha256_file(p: &Path) -> Option<String> {
    let mut f = File::open(p).ok()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Some(hex::encode(h.finalize()))
}

/// The live mailbox as found under the lock.
struct Live {
    ul: Option<Uidlist>,
    guids: HashSet<Vec<u8>>,
    bases: HashSet<Vec<u8>>,
    /// (size, mtime secs) -> files, for the hash comparison.
    by_size_date: HashMap<(u64, i64), Vec<PathBuf>>,
    keywords: Vec<Name>,
    owner: Owner,
}

fn read_live(dir: &Path) -> Result<Live> {
    let ul_path = dir.join("dovecot-uidlist");
    let ul = match fs::read(&ul_path) {
        Ok(d) => Some(uidlist::parse(&d).map_err(|e| Error::store(&ul_path, e))?),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(ul_path, e)),
    };
    let keywords = match fs::read(dir.join("dovecot-keywords")) {
        Ok(d) => uidlist::parse_keywords(&d),
        Err(_) => Vec::new(),
    };
    let files = list_messages(dir)?;
    let mut guids = HashSet::new();
    let mut bases = HashSet::new();
    if let Some(ul) = &ul {
        for r in &ul.records {
            if files.contains_key(&r.base) {
                guids.insert(r.guid.clone().unwrap_or_else(|| r.base.clone()));
            }
        }
    }
    let mut by_size_date: HashMap<(u64, i64), Vec<PathBuf>> = HashMap::new();
    // Names the uidlist still lists (an expunged file's line stays until Dovecot rewrites
    // the file) are taken too: reusing one makes Dovecot report a duplicate entry.
    if let Some(ul) = &ul {
        bases.extend(ul.records.iter().map(|r| r.base.clone()));
    }
    for (base, e) in &files {
        bases.insert(base.clone());
        if !ul.as_ref().is_some_and(|u| {
            u.records
                .iter()
                .any(|r| &r.base == base && r.guid.is_some())
        }) {
            guids.insert(base.clone());
        }
        let p = dir
            .join(if e.new { "new" } else { "cur" })
            .join(std::ffi::OsStr::from_bytes(&e.name));
        if let Ok(md) = fs::metadata(&p) {
            by_size_date
                .entry((md.len(), md.mtime()))
                .or_default()
                .push(p);
        }
    }
    let md = fs::metadata(dir).at(dir)?;
    Ok(Live {
        ul,
        guids,
        bases,
        by_size_date,
        keywords,
        owner: Owner {
            uid: md.uid(),
            gid: md.gid(),
            mode: md.mode() & 0o7777,
        },
    })
}

impl Live {
    /// Why `m` is already in the mailbox, if it is.
    fn has(&self, m: &MessageMeta) -> Option<String> {
        if self.guids.contains(m.guid.as_bytes()) {
            return Some(format!("GUID {} is there", m.guid));
        }
        let files = self.by_size_date.get(&(m.content.size, m.received.secs))?;
        files
            .iter()
            .find(|p| sha256_file(p).is_some_and(|h| h == m.content.sha256))
            .map(|p| format!("same bytes and date as {}", p.display()))
    }
}

impl MaildirWriter {
    /// Does the mailbox exist in the target (a directory with `cur/`)?
    pub fn mailbox_exists(&self, name: &Name) -> bool {
        self.mailbox_dir(self.root(), name).join("cur").is_dir()
    }

    /// Merge `messages` into the existing mailbox `meta.name` (see the module docs). With
    /// `dry_run`, nothing is locked or written and the report says what would happen.
    ///
    /// # Errors
    /// The lock cannot be taken ([`Error::Conflict`]), a damaged live uidlist, I/O errors.
    pub fn merge_mailbox(
        &mut self,
        meta: &MailboxMeta,
        messages: &[MessageMeta],
        bodies: &mut dyn FnMut(usize, &mut dyn Write) -> Result<bool>,
        dry_run: bool,
    ) -> Result<MergeReport> {
        let dir = self.mailbox_dir(self.root(), &meta.name);
        let lock = if dry_run {
            None
        } else {
            let l = take_lock(&dir)?;
            // Owned by the mailbox's owner at once, so Dovecot (running as that user) can
            // watch it while it waits.
            let md = fs::metadata(&dir).at(&dir)?;
            self.st.chown(
                &l.path,
                Some(Owner {
                    uid: md.uid(),
                    gid: md.gid(),
                    mode: 0o600,
                }),
            )?;
            fs::set_permissions(&l.path, fs::Permissions::from_mode(0o600)).at(&l.path)?;
            Some(l)
        };
        let live = read_live(&dir)?;
        let mut rep = MergeReport::default();
        let mut next_uid = live.ul.as_ref().map_or(0, Uidlist::effective_next_uid);
        let mut table = live.keywords.clone();
        let mut add: Vec<usize> = Vec::new();
        let mut seen_guids: HashSet<Vec<u8>> = HashSet::new();
        for (i, m) in messages.iter().enumerate() {
            if let Some(why) = live.has(m) {
                rep.present.push((m.uid.0, why));
            } else if !seen_guids.insert(m.guid.as_bytes().to_vec()) {
                rep.present.push((m.uid.0, "selected twice".into()));
            } else {
                add.push(i);
            }
        }
        for &i in &add {
            for k in &messages[i].keywords {
                if !table.contains(k) {
                    if table.len() < 26 {
                        table.push(k.clone());
                    } else if !rep.dropped_keywords.contains(k) {
                        rep.dropped_keywords.push(k.clone());
                    }
                }
            }
        }
        if dry_run {
            for &i in &add {
                let uid = if next_uid == 0 { 0 } else { next_uid };
                rep.added.push((messages[i].uid.0, uid));
                if next_uid != 0 {
                    next_uid += 1;
                }
            }
            return Ok(rep);
        }
        let owner = Some(live.owner);
        let mut used = live.bases.clone();
        let mut new_records = Vec::new();
        let pid = std::process::id();
        let mut pending = Pending::default();
        for (n, &i) in add.iter().enumerate() {
            if pending.len() >= BATCH {
                pending.flush(&dir)?;
            }
            let m = &messages[i];
            let md = m.maildir.clone().unwrap_or_default();
            let letters = info_letters(m, &table);
            let orig_base = safe_filename(md.filename.as_bytes())
                .map(|f| parse_filename(f).base.to_vec())
                .filter(|b| !used.contains(b));
            let base = orig_base.unwrap_or_else(|| {
                let mut b = format!(
                    "{}.M{n}P{pid}.maildump,S={}",
                    m.received.secs.max(0),
                    m.content.size
                )
                .into_bytes();
                if let Some(w) = m.size_virtual {
                    b.extend_from_slice(format!(",W={w}").as_bytes());
                }
                b
            });
            used.insert(base.clone());
            let mut filename = base.clone();
            filename.extend_from_slice(b":2,");
            filename.extend_from_slice(&letters);
            let tmp = dir.join("tmp").join(format!("{pid}.{n}.maildump-merge"));
            if !self.write_message_file(&tmp, m, owner, &mut |out| bodies(i, out))? {
                rep.lost += 1;
                continue;
            }
            // Always cur/ with the info suffix: the flags are known (new/ files have none).
            let dest = dir.join("cur").join(std::ffi::OsStr::from_bytes(&filename));
            pending.rename(tmp, dest);
            let fname = parse_filename(&filename);
            let uid = next_uid.max(1);
            next_uid = uid + 1;
            rep.added.push((m.uid.0, uid));
            rep.bytes += m.content.size;
            new_records.push(UidRecord {
                uid,
                guid: (m.guid.as_bytes() != base.as_slice()).then(|| m.guid.as_bytes().to_vec()),
                base,
                size: if fname.size.is_none() {
                    Some(m.size_physical)
                } else {
                    None
                },
                vsize: if fname.vsize.is_none() {
                    m.size_virtual
                } else {
                    None
                },
                pop3_uidl: None,
                pop3_order: None,
                other: Vec::new(),
            });
        }
        pending.flush(&dir)?;
        for sub in ["cur", "new"] {
            sync_dir(&dir.join(sub))?;
        }
        if table != live.keywords {
            self.st.write_atomic(
                &dir.join("dovecot-keywords"),
                &uidlist::render_keywords(&table),
                owner,
                0o600,
            )?;
        }
        if let (Some(mut ul), Some(mut lock)) = (live.ul, lock) {
            if !new_records.is_empty() {
                ul.records.extend(new_records);
                ul.next_uid = next_uid.max(ul.next_uid);
                let path = dir.join("dovecot-uidlist");
                if let Some(mut f) = lock.file.take() {
                    f.write_all(&uidlist::render(&ul)).at(&lock.path)?;
                    f.sync_all().at(&lock.path)?;
                    drop(f);
                    self.st.chown(&lock.path, owner)?;
                    if let Err(e) = fs::rename(&lock.path, &path) {
                        let _ = fs::remove_file(&lock.path);
                        return Err(Error::io(path, e));
                    }
                    sync_dir(&dir)?;
                }
            }
        } else {
            // No uidlist yet: Dovecot gives the new files UIDs on its next sync.
            rep.added.iter_mut().for_each(|a| a.1 = 0);
        }
        Ok(rep)
    }
}
