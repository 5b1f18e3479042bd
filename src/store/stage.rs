//! What every store writer shares: the user's mail root, built under a hidden sibling when
//! it does not exist yet and renamed into place by [`Stage::commit`]; ownership (`--owner`,
//! or the archived owner when running as root); files written through a temporary file,
//! fsync and rename; batches of new files made durable by one `syncfs`; subscriptions and
//! the METADATA dictionary; the mail root's UIDVALIDITY counter (`dovecot-uidvalidity`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, IoContext, Result};
use crate::model::{Name, Owner, Timestamp};
use crate::store::location::Location;

/// A file time from a timestamp.
pub(crate) fn to_system_time(t: Timestamp) -> SystemTime {
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
pub(crate) struct Pending {
    renames: Vec<(PathBuf, PathBuf)>,
    links: Vec<(PathBuf, PathBuf)>,
}

/// Files per batch: bounds the memory of [`Pending`] and the work lost to a crash.
pub(crate) const BATCH: usize = 2000;

impl Pending {
    pub(crate) fn rename(&mut self, tmp: PathBuf, dest: PathBuf) {
        self.renames.push((tmp, dest));
    }

    /// A hard link to `src`, the destination of an earlier rename of this batch or a file
    /// already in place.
    pub(crate) fn link(&mut self, src: PathBuf, dest: PathBuf) {
        self.links.push((src, dest));
    }

    pub(crate) fn len(&self) -> usize {
        self.renames.len() + self.links.len()
    }

    /// Forget the batch after a failure, removing its temporary files (nothing of it
    /// became visible).
    fn discard(&mut self) {
        for (tmp, _) in self.renames.drain(..) {
            // Cleanup after an error: a file already gone is fine, and the first error is
            // the one reported.
            let _ = fs::remove_file(tmp);
        }
        self.links.clear();
    }

    /// Make every pending file durable (one `syncfs` of the file system holding `dir`),
    /// then move them into place.
    pub(crate) fn flush(&mut self, dir: &Path) -> Result<()> {
        if self.len() == 0 {
            return Ok(());
        }
        if !self.renames.is_empty() {
            let d = File::open(dir).at(dir)?;
            rustix::fs::syncfs(&d).map_err(|e| Error::io(dir, io::Error::from(e)))?;
        }
        while let Some((tmp, dest)) = self.renames.first().cloned() {
            fs::rename(&tmp, &dest).at(&dest)?;
            self.renames.remove(0);
        }
        for (src, dest) in self.links.drain(..) {
            fs::hard_link(&src, &dest).at(&dest)?;
        }
        Ok(())
    }
}

/// A batch dropped unflushed (an error, e.g. a full disk) leaves no temporary file behind.
impl Drop for Pending {
    fn drop(&mut self) {
        self.discard();
    }
}

/// Remove a file that may already be gone.
pub(crate) fn remove_if_exists(p: &Path) -> Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(p, e)),
        _ => Ok(()),
    }
}

pub(crate) fn sync_dir(p: &Path) -> Result<()> {
    File::open(p).and_then(|d| d.sync_all()).at(p)
}

/// The mail root's UIDVALIDITY counter: `dovecot-uidvalidity` holds the last value handed
/// out (8 hex digits), and an empty marker `dovecot-uidvalidity.<same hex>` beside it is
/// renamed to the next value by whoever takes one (Dovecot's `mailbox-uidvalidity.c`).
const UIDVALIDITY_FILE: &str = "dovecot-uidvalidity";
/// Renames tried before the markers are listed again (Dovecot's `RETRY_COUNT`).
const UIDVALIDITY_RETRIES: u32 = 10;

/// The counter's value after `v` (0 is skipped, as in Dovecot).
fn uidvalidity_after(v: u32) -> u32 {
    v.wrapping_add(1).max(1)
}

fn uidvalidity_marker(dir: &Path, v: u32) -> PathBuf {
    dir.join(format!("{UIDVALIDITY_FILE}.{v:08x}"))
}

/// The value in `dovecot-uidvalidity`, if it holds a valid one.
fn read_uidvalidity_counter(dir: &Path) -> Result<Option<u32>> {
    let p = dir.join(UIDVALIDITY_FILE);
    let data = match fs::read(&p) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(p, e)),
    };
    let text = String::from_utf8_lossy(data.get(..8).unwrap_or(&data)).into_owned();
    Ok(u32::from_str_radix(text.trim(), 16)
        .ok()
        .filter(|&v| v != 0))
}

/// The lowest and highest values of the `dovecot-uidvalidity.<hex>` markers in `dir`.
fn uidvalidity_markers(dir: &Path) -> Result<Option<(u32, u32)>> {
    use std::os::unix::ffi::OsStrExt;
    let prefix = format!("{UIDVALIDITY_FILE}.");
    let mut range: Option<(u32, u32)> = None;
    for e in fs::read_dir(dir).at(dir)? {
        let name = e.at(dir)?.file_name();
        let Some(hex) = name.as_bytes().strip_prefix(prefix.as_bytes()) else {
            continue;
        };
        let Some(v) = std::str::from_utf8(hex)
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
        else {
            continue;
        };
        range = Some(range.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))));
    }
    Ok(range)
}

/// Whether this process runs as root (and may chown).
pub(crate) fn is_root() -> bool {
    // Reading the effective uid needs no unsafe code: /proc/self reports it.
    fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// One user's mail root being written.
pub(crate) struct Stage {
    pub(crate) loc: Location,
    pub(crate) user: String,
    pub(crate) root: PathBuf,
    /// Where the root is being built when it did not exist.
    pub(crate) staging_root: Option<PathBuf>,
    pub(crate) owner_override: Option<(u32, u32)>,
    pub(crate) can_chown: bool,
    pub(crate) attr_file: Option<PathBuf>,
    /// Directories being built that nothing visible refers to yet (a mailbox built aside
    /// before its rename into place): removed if the restore stops before they are.
    pub(crate) scratch: Vec<PathBuf>,
    /// The home this restore created for the new root: removed (when still empty) if the
    /// restore stops before the root is in place.
    created_home: Option<PathBuf>,
}

/// A restore that stops early (an error such as a full disk, or a signal) removes what it
/// built that is not visible yet: the hidden root it was building, mailboxes built aside.
/// Mail already renamed into place in an existing mailbox stays (it is complete).
impl Drop for Stage {
    fn drop(&mut self) {
        for d in self.scratch.drain(..) {
            // Best effort after an error: the error that stopped the restore is the one
            // reported.
            let _ = fs::remove_dir_all(d);
        }
        if let Some(s) = self.staging_root.take() {
            let _ = fs::remove_dir_all(s);
            if let Some(h) = self.created_home.take() {
                let _ = fs::remove_dir(h);
            }
        }
    }
}

impl Stage {
    /// Prepare to write into `user`'s mail root at `loc`. `owner` overrides the owner of
    /// everything written (`--owner UID:GID`); otherwise, when running as root, files get
    /// the owner recorded in the archive.
    ///
    /// # Errors
    /// A location that needs a home template without one.
    pub(crate) fn new(loc: &Location, user: &str, owner: Option<(u32, u32)>) -> Result<Self> {
        let root = loc.root_of(user)?;
        Ok(Stage {
            loc: loc.clone(),
            user: user.to_string(),
            staging_root: None,
            root,
            owner_override: owner,
            can_chown: is_root(),
            attr_file: loc.attribute_file_of(user)?,
            scratch: Vec::new(),
            created_home: None,
        })
    }

    pub(crate) fn chown(&self, p: &Path, owner: Option<Owner>) -> Result<()> {
        if !self.can_chown {
            return Ok(());
        }
        let ids = self.owner_override.or(owner.map(|o| (o.uid, o.gid)));
        if let Some((u, g)) = ids {
            std::os::unix::fs::lchown(p, Some(u), Some(g)).at(p)?;
        }
        Ok(())
    }

    pub(crate) fn mkdir(&self, p: &Path, owner: Option<Owner>) -> Result<()> {
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

    pub(crate) fn mkdir_all(&self, p: &Path, owner: Option<Owner>) -> Result<()> {
        if p.is_dir() {
            return Ok(());
        }
        if let Some(parent) = p.parent() {
            self.mkdir_all(parent, owner)?;
        }
        self.mkdir(p, owner)
    }

    /// The root being written (staging root when the final one did not exist).
    pub(crate) fn work_root(&mut self, owner: Option<Owner>) -> Result<PathBuf> {
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
            self.created_home = Some(parent.clone());
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
        self.staging_root = Some(staging.clone());
        self.mkdir(&staging, owner)?;
        Ok(staging)
    }

    /// Move a mailbox built in the work directory `work` to `final_dir` (creating its
    /// parents with `owner`) and make the rename durable.
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) fn publish(
        &self,
        work: &Path,
        final_dir: &Path,
        owner: Option<Owner>,
    ) -> Result<()> {
        if let Some(parent) = final_dir.parent() {
            self.mkdir_all(parent, owner)?;
        }
        fs::rename(work, final_dir).at(final_dir)?;
        if let Some(parent) = final_dir.parent() {
            sync_dir(parent)?;
        }
        Ok(())
    }

    /// Remember a directory being built aside, removed if the restore stops early.
    pub(crate) fn track(&mut self, dir: &Path) {
        self.scratch.push(dir.to_path_buf());
    }

    /// A directory built aside is in place (or its contents are): no longer removed.
    pub(crate) fn untrack(&mut self, dir: &Path) {
        self.scratch.retain(|d| d != dir);
    }

    /// Write `data` to `path` through a temporary file, fsync and rename.
    pub(crate) fn write_atomic(
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
        let written = (|| {
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
        })();
        if written.is_err() {
            // Nothing half-written stays; the write's error is the one reported.
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// A new UIDVALIDITY from the mail root's counter, taken exactly as Dovecot takes one:
    /// the marker of the value in `dovecot-uidvalidity` is renamed to the next value (on a
    /// lost race, to the one after, up to ten times), then the new value is written into
    /// `dovecot-uidvalidity`; a missing or broken counter is rebuilt from the highest
    /// marker. A root without any counter starts at 1, or above the value a counter
    /// without marker names (Dovecot starts at the current time; maildump never takes a
    /// UIDVALIDITY from the clock).
    ///
    /// # Errors
    /// I/O errors on the root.
    pub(crate) fn next_uidvalidity(&mut self) -> Result<u32> {
        let dir = self.work_root(None)?;
        let counter = read_uidvalidity_counter(&dir)?;
        let mut cur = match counter {
            Some(v) => Some(v),
            None => match uidvalidity_markers(&dir)? {
                Some((lo, hi)) => {
                    if lo != hi {
                        // Dovecot keeps the highest and deletes the lowest.
                        remove_if_exists(&uidvalidity_marker(&dir, lo))?;
                    }
                    Some(hi)
                }
                None => None,
            },
        };
        for _ in 0..2 {
            let Some(mut v) = cur else { break };
            for _ in 0..UIDVALIDITY_RETRIES {
                let next = uidvalidity_after(v);
                match fs::rename(uidvalidity_marker(&dir, v), uidvalidity_marker(&dir, next)) {
                    Ok(()) => {
                        self.write_uidvalidity_counter(&dir, next)?;
                        return Ok(next);
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => v = next,
                    Err(e) => return Err(Error::io(uidvalidity_marker(&dir, v), e)),
                }
            }
            // The counter named no marker: start again from the highest marker.
            cur = uidvalidity_markers(&dir)?.map(|(_, hi)| hi);
        }
        let v = uidvalidity_after(counter.unwrap_or(0));
        self.set_uidvalidity_counter(&dir, None, v)?;
        Ok(v)
    }

    /// Raise the mail root's counter to at least `v` (a UIDVALIDITY a restore wrote), so
    /// that a mailbox created later never gets a UIDVALIDITY at or below it.
    ///
    /// # Errors
    /// I/O errors on the root.
    pub(crate) fn raise_uidvalidity(&mut self, v: u32) -> Result<()> {
        if v == 0 {
            return Ok(());
        }
        let dir = self.work_root(None)?;
        let marker = uidvalidity_markers(&dir)?.map(|(_, hi)| hi);
        let cur = read_uidvalidity_counter(&dir)?.max(marker);
        if cur.is_some_and(|c| c >= v) {
            return Ok(());
        }
        self.set_uidvalidity_counter(&dir, marker, v)
    }

    /// Move the marker from `from` (or create it) to `v`, then write `v` into the counter.
    fn set_uidvalidity_counter(&self, dir: &Path, from: Option<u32>, v: u32) -> Result<()> {
        let to = uidvalidity_marker(dir, v);
        let moved = match from {
            Some(f) => match fs::rename(uidvalidity_marker(dir, f), &to) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(Error::io(&to, e)),
            },
            None => false,
        };
        if !moved {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o444)
                .open(&to)
            {
                Ok(_) => self.chown(&to, self.root_owner(dir))?,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(&to, e)),
            }
        }
        self.write_uidvalidity_counter(dir, v)
    }

    /// Write `v` over the start of `dovecot-uidvalidity` (as Dovecot does: in place).
    fn write_uidvalidity_counter(&self, dir: &Path, v: u32) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let p = dir.join(UIDVALIDITY_FILE);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&p)
            .at(&p)?;
        f.write_all_at(format!("{v:08x}").as_bytes(), 0).at(&p)?;
        drop(f);
        self.chown(&p, self.root_owner(dir))
    }

    /// Owner of the files a root's counter consists of: the root's owner.
    fn root_owner(&self, dir: &Path) -> Option<Owner> {
        fs::metadata(dir).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            Owner {
                uid: m.uid(),
                gid: m.gid(),
                mode: 0o600,
            }
        })
    }

    /// Write a hand-made Dovecot index `<dir>/<base>` (e.g. `dovecot.index`) with its log
    /// `<base>.log` holding only a header and its cache `<base>.cache` when given (the log
    /// and cache first: the index names them), each through a temporary file and a rename;
    /// a rotated log or a cache of an earlier index is removed (their index id would not
    /// match).
    ///
    /// # Errors
    /// I/O errors; an index that cannot be encoded (a bug) as an I/O error naming it.
    pub(crate) fn write_index_files(
        &self,
        dir: &Path,
        base: &str,
        new: &crate::store::dbox::index::NewIndex,
        cache: Option<&[u8]>,
        owner: Option<Owner>,
    ) -> Result<()> {
        use crate::store::dbox::index::{write_index, write_log_header};
        let path = dir.join(base);
        let bytes = write_index(new).map_err(|e| Error::io(&path, e))?;
        remove_if_exists(&dir.join(format!("{base}.log.2")))?;
        let owner = owner.map(|o| Owner { mode: 0o600, ..o });
        let cache_path = dir.join(format!("{base}.cache"));
        match cache {
            Some(c) => self.write_atomic(&cache_path, c, owner, 0o600)?,
            None => remove_if_exists(&cache_path)?,
        }
        let log = write_log_header(new.indexid, new.highest_modseq.unwrap_or(1));
        self.write_atomic(&dir.join(format!("{base}.log")), &log, owner, 0o600)?;
        self.write_atomic(&path, &bytes, owner, 0o600)
    }

    /// Merge subscriptions into the user's subscription file (names encoded for disk).
    pub(crate) fn add_subscriptions(&mut self, names: &[Name]) -> Result<()> {
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
                .map(|c| self.loc.encode_component(c))
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

    /// Merge METADATA entries into the user's dictionary; existing values are kept.
    pub(crate) fn add_attributes(&mut self, entries: &[(Name, Name)]) -> Result<()> {
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

    /// Rename a staged mail root into place.
    pub(crate) fn commit(&mut self) -> Result<()> {
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
