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
//!
//! Everything is read and written through handles on the mailbox directory and its
//! `cur/`, `new/`, `tmp/`: a symlink in the live mailbox (the directory, `cur/`, `tmp/`,
//! the uidlist, its lock, the keywords) is refused, never written through.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use super::MaildirWriter;
use super::uidlist::{self, UidRecord, Uidlist, parse_filename};
use super::write::{info_letters, safe_filename};
use crate::error::{Error, IoContext, Result};
use crate::model::{MailboxMeta, MessageMeta, Name};
use crate::store::nofollow::DirFd;
use crate::store::stage::{BATCH, Pending};
use crate::store::target::{Perms, set_owner};

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

/// The held uidlist lock (in the mailbox directory `dir`); removed on drop unless it was
/// renamed over the uidlist.
struct UidlistLock<'a> {
    dir: &'a DirFd,
    file: Option<File>,
}

const LOCK: &[u8] = b"dovecot-uidlist.lock";

impl Drop for UidlistLock<'_> {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = self.dir.remove(LOCK);
        }
    }
}

/// Take `dovecot-uidlist.lock` in `dir` (created with `O_EXCL`, never through a symlink; a
/// symlink there is refused), waiting for another holder up to [`LOCK_WAIT`]; a lock
/// older than [`LOCK_STALE`] is removed. Readable at once (0644) so that a Dovecot
/// process running as the mailbox owner can watch it; owned by `ids` and 0600 right after.
fn take_lock(dir: &DirFd, ids: Option<(u32, u32)>) -> Result<UidlistLock<'_>> {
    let path = dir.join(LOCK);
    let start = Instant::now();
    loop {
        match dir.create(LOCK, 0o644) {
            Ok(f) => {
                let lock = UidlistLock { dir, file: Some(f) };
                if let Some(f) = &lock.file {
                    set_owner(f, &path, ids)?;
                    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
                        .at(&path)?;
                }
                return Ok(lock);
            }
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
                let stale = dir
                    .stat_at(LOCK)
                    .ok()
                    .and_then(|st| {
                        let t = std::time::UNIX_EPOCH
                            + Duration::from_secs(u64::try_from(st.mtime).unwrap_or(0));
                        SystemTime::now().duration_since(t).ok()
                    })
                    .is_some_and(|age| age > LOCK_STALE);
                if stale {
                    dir.remove(LOCK)?;
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
            Err(e) => return Err(e),
        }
    }
}

/// The SHA-256 of the file `name` of `dir` (never through a symlink).
fn sha256_file(dir: &DirFd, name: &[u8]) -> Option<String> {
    let mut f = dir.open_file(name).ok()?;
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

/// A message file of a live mailbox: its name, and whether it is in `new/`.
struct DirEntry {
    name: Vec<u8>,
    new: bool,
}

/// The message files of the live mailbox `dirs` (`new/` and `cur/`) by base name.
fn list_messages(dirs: &LiveDirs) -> Result<HashMap<Vec<u8>, DirEntry>> {
    let mut map: HashMap<Vec<u8>, DirEntry> = HashMap::new();
    for (d, new) in [(&dirs.new, true), (&dirs.cur, false)] {
        for (name, _) in d.entries()? {
            if name.first() == Some(&b'.') {
                continue;
            }
            let base = parse_filename(&name).base.to_vec();
            // cur/ wins over new/ when both hold the same base (Dovecot prefers cur/).
            map.insert(base, DirEntry { name, new });
        }
    }
    Ok(map)
}

/// Handles on a live mailbox's directory and its `cur/`, `new/`, `tmp/`.
struct LiveDirs {
    dir: DirFd,
    cur: Arc<DirFd>,
    new: Arc<DirFd>,
    tmp: Arc<DirFd>,
}

/// Message files by (size, mtime secs), each as (in `new/`?, name).
type BySizeDate = HashMap<(u64, i64), Vec<(bool, Vec<u8>)>>;

/// The live mailbox as found under the lock.
struct Live {
    ul: Option<Uidlist>,
    guids: HashSet<Vec<u8>>,
    bases: HashSet<Vec<u8>>,
    /// (size, mtime secs) -> files (in `new/`?, name), for the hash comparison.
    by_size_date: BySizeDate,
    keywords: Vec<Name>,
}

fn read_live(dirs: &LiveDirs) -> Result<Live> {
    let ul = super::read_uidlist(&dirs.dir)?;
    let keywords = dirs
        .dir
        .read_target(b"dovecot-keywords")?
        .map(|d| uidlist::parse_keywords(&d))
        .unwrap_or_default();
    let files = list_messages(dirs)?;
    let mut guids = HashSet::new();
    let mut bases = HashSet::new();
    if let Some(ul) = &ul {
        for r in &ul.records {
            if files.contains_key(&r.base) {
                guids.insert(r.guid.clone().unwrap_or_else(|| r.base.clone()));
            }
        }
    }
    let mut by_size_date = BySizeDate::new();
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
        let d = if e.new { &dirs.new } else { &dirs.cur };
        if let Ok(st) = d.stat_at(&e.name) {
            by_size_date
                .entry((st.len, st.mtime))
                .or_default()
                .push((e.new, e.name.clone()));
        }
    }
    Ok(Live {
        ul,
        guids,
        bases,
        by_size_date,
        keywords,
    })
}

impl Live {
    /// Why `m` is already in the mailbox `dirs`, if it is.
    fn has(&self, dirs: &LiveDirs, m: &MessageMeta) -> Option<String> {
        if self.guids.contains(m.guid.as_bytes()) {
            return Some(format!("GUID {} is there", m.guid));
        }
        let files = self.by_size_date.get(&(m.content.size, m.received.secs))?;
        files
            .iter()
            .map(|(new, name)| (if *new { &dirs.new } else { &dirs.cur }, name))
            .find(|(d, name)| sha256_file(d, name).is_some_and(|h| h == m.content.sha256))
            .map(|(d, name)| format!("same bytes and date as {}", d.join(name).display()))
    }
}

/// Which messages a merge adds (indexes into the messages given), the keyword table after
/// it, and the report so far (messages already there, keywords that do not fit).
fn choose(
    live: &Live,
    dirs: &LiveDirs,
    messages: &[MessageMeta],
) -> (Vec<usize>, Vec<Name>, MergeReport) {
    let mut rep = MergeReport::default();
    let mut table = live.keywords.clone();
    let mut add: Vec<usize> = Vec::new();
    let mut seen_guids: HashSet<Vec<u8>> = HashSet::new();
    for (i, m) in messages.iter().enumerate() {
        if let Some(why) = live.has(dirs, m) {
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
    (add, table, rep)
}

/// The base name of the message `m`, the `n`th added: its original when safe and not
/// taken, else a new one.
fn new_base(m: &MessageMeta, n: usize, used: &HashSet<Vec<u8>>) -> Vec<u8> {
    let md = m.maildir.clone().unwrap_or_default();
    let orig = safe_filename(md.filename.as_bytes())
        .map(|f| parse_filename(f).base.to_vec())
        .filter(|b| !used.contains(b));
    orig.unwrap_or_else(|| {
        let mut b = format!(
            "{}.M{n}P{}.maildump,S={}",
            m.received.secs.max(0),
            std::process::id(),
            m.content.size
        )
        .into_bytes();
        if let Some(w) = m.size_virtual {
            b.extend_from_slice(format!(",W={w}").as_bytes());
        }
        b
    })
}

impl MaildirWriter {
    /// Does the mailbox exist in the target (a directory with `cur/`)?
    ///
    /// # Errors
    /// A symlink at the mailbox, on its way or in it ([`Error::UnsafeTarget`]); I/O errors.
    pub(crate) fn mailbox_exists(&self, name: &Name) -> Result<bool> {
        match self.existing_mailbox(name)? {
            Some(d) => Ok(d.refuse_symlink(b"cur")?),
            None => Ok(false),
        }
    }

    /// Handles on the live mailbox `name` (it must exist with `cur/`, `new/`, `tmp/`).
    fn live_dirs(&self, name: &Name) -> Result<LiveDirs> {
        let Some(dir) = self.existing_mailbox(name)? else {
            return Err(Error::NotFound(format!(
                "user {} mailbox {name}: gone from {} before the merge",
                self.st.user,
                self.root().display()
            )));
        };
        let perms = self.st.dir_perms(Some(dir.stat()?.owner()));
        let [cur, new, tmp] = [b"cur".as_slice(), b"new", b"tmp"].map(|s| dir.mkdir(s, perms));
        Ok(LiveDirs {
            cur: Arc::new(cur?),
            new: Arc::new(new?),
            tmp: Arc::new(tmp?),
            dir,
        })
    }

    /// Merge `messages` into the existing mailbox `meta.name` (see the module docs). With
    /// `dry_run`, nothing is locked or written and the report says what would happen.
    ///
    /// # Errors
    /// The lock cannot be taken ([`Error::Conflict`]), a symlink in the live mailbox
    /// ([`Error::UnsafeTarget`]), a damaged live uidlist, I/O errors.
    pub(crate) fn merge_mailbox(
        &mut self,
        meta: &MailboxMeta,
        messages: &[MessageMeta],
        bodies: &mut dyn FnMut(usize, &mut dyn Write) -> Result<bool>,
        dry_run: bool,
    ) -> Result<MergeReport> {
        let dirs = self.live_dirs(&meta.name)?;
        // Owned by the mailbox's owner at once, so Dovecot (running as that user) can
        // watch it while it waits.
        let owner = dirs.dir.stat()?.owner();
        let ids = self
            .st
            .can_chown
            .then(|| self.st.owner_override.unwrap_or((owner.uid, owner.gid)));
        let lock = if dry_run {
            None
        } else {
            Some(take_lock(&dirs.dir, ids)?)
        };
        let live = read_live(&dirs)?;
        let mut next_uid = live.ul.as_ref().map_or(0, Uidlist::effective_next_uid);
        let (add, table, mut rep) = choose(&live, &dirs, messages);
        if dry_run {
            for &i in &add {
                rep.added.push((messages[i].uid.0, next_uid));
                if next_uid != 0 {
                    next_uid += 1;
                }
            }
            return Ok(rep);
        }
        let mut used = live.bases.clone();
        let mut new_records = Vec::new();
        let mut pending = Pending::default();
        for (n, &i) in add.iter().enumerate() {
            if pending.len() >= BATCH {
                pending.flush(&dirs.dir)?;
            }
            let m = &messages[i];
            let base = new_base(m, n, &used);
            used.insert(base.clone());
            let mut filename = base.clone();
            filename.extend_from_slice(b":2,");
            filename.extend_from_slice(&info_letters(m, &table));
            let tmp = format!("{}.{n}.maildump-merge", std::process::id()).into_bytes();
            if !self.write_message_file((&dirs.tmp, &tmp), m, ids, &mut |out| bodies(i, out))? {
                rep.lost += 1;
                continue;
            }
            // Always cur/ with the info suffix: the flags are known (new/ files have none).
            pending.rename((&dirs.tmp, tmp), (&dirs.cur, filename.clone()));
            let fname = parse_filename(&filename);
            let uid = next_uid.max(1);
            next_uid = uid + 1;
            rep.added.push((m.uid.0, uid));
            rep.bytes += m.content.size;
            new_records.push(UidRecord {
                uid,
                guid: (m.guid.as_bytes() != base.as_slice()).then(|| m.guid.as_bytes().to_vec()),
                base,
                size: fname.size.is_none().then_some(m.size_physical),
                vsize: m.size_virtual.filter(|_| fname.vsize.is_none()),
                pop3_uidl: None,
                pop3_order: None,
                other: Vec::new(),
            });
        }
        pending.flush(&dirs.dir)?;
        dirs.cur.sync()?;
        dirs.new.sync()?;
        if table != live.keywords {
            let kw = uidlist::render_keywords(&table);
            dirs.dir
                .write_atomic(b"dovecot-keywords", &kw, Perms::new(0o600, ids))?;
        }
        match (live.ul, lock) {
            (Some(_), _) if new_records.is_empty() => {}
            (Some(mut ul), Some(lock)) => {
                ul.records.extend(new_records);
                ul.next_uid = next_uid.max(ul.next_uid);
                write_uidlist(lock, &ul, ids)?;
            }
            // No uidlist yet: Dovecot gives the new files UIDs on its next sync.
            _ => rep.added.iter_mut().for_each(|a| a.1 = 0),
        }
        Ok(rep)
    }
}

/// Write the new uidlist `ul` into the held lock and rename it over `dovecot-uidlist`
/// (which releases the lock), as Dovecot does.
fn write_uidlist(mut lock: UidlistLock<'_>, ul: &Uidlist, ids: Option<(u32, u32)>) -> Result<()> {
    let dir = lock.dir;
    let path = dir.join(LOCK);
    let Some(mut f) = lock.file.take() else {
        return Ok(());
    };
    let written = (|| {
        f.write_all(&uidlist::render(ul)).at(&path)?;
        f.sync_all().at(&path)?;
        set_owner(&f, &path, ids)?;
        dir.rename_to(LOCK, dir, b"dovecot-uidlist")
    })();
    if written.is_err() {
        // The lock is released; the write's error is the one reported.
        let _ = dir.remove(LOCK);
    }
    written?;
    dir.sync()
}
