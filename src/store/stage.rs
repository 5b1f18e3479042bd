//! What every store writer shares: the user's mail root, built under a hidden sibling when
//! it does not exist yet and renamed into place by [`Stage::commit`]; ownership (`--owner`,
//! else when running as root the existing root's owner, or for a new root the archived
//! owner) and modes (masked as `store::target` says); batches of new files made durable
//! by one `syncfs`; subscriptions and the METADATA dictionary; the mail root's
//! UIDVALIDITY counter (`store::uidvalidity`). Everything is written below an open handle
//! on the root, never through a symlink (`store::target`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, IoContext, Result};
use crate::model::{Name, Owner, Timestamp};
use crate::store::location::Location;
use crate::store::nofollow::DirFd;
use crate::store::target::{Durable, Perms, dir_mode, file_mode, split};
use crate::store::uidvalidity;
use crate::store::writeback::Writeback;

/// A file time from a timestamp.
pub(crate) fn to_system_time(t: Timestamp) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs.unsigned_abs(), t.nanos.min(999_999_999))
    } else {
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs())
    }
}

/// One file moved or linked by a batch: (directory, name) to (directory, name).
type Move = (Arc<DirFd>, Vec<u8>, Arc<DirFd>, Vec<u8>);

/// Message files written to `tmp/` and not yet durable: made durable together by one
/// `syncfs`, then renamed (and hard-linked) into place, each relative to the handles of
/// the directories involved (never through a symlink). One `fsync` per file would cost a
/// journal commit per message (20,000 messages: ~15 s on ext4); a batch costs one.
/// Nothing is visible in `cur/`/`new/` before it is durable.
#[derive(Default)]
pub(crate) struct Pending {
    renames: Vec<Move>,
    links: Vec<Move>,
}

/// Files per batch: bounds the memory of [`Pending`] and the work lost to a crash.
pub(crate) const BATCH: usize = 2000;

impl Pending {
    pub(crate) fn rename(&mut self, from: (&Arc<DirFd>, Vec<u8>), to: (&Arc<DirFd>, Vec<u8>)) {
        self.renames
            .push((from.0.clone(), from.1, to.0.clone(), to.1));
    }

    /// A hard link to `src`, the destination of an earlier rename of this batch or a file
    /// already in place.
    pub(crate) fn link(&mut self, src: (&Arc<DirFd>, Vec<u8>), dest: (&Arc<DirFd>, Vec<u8>)) {
        self.links
            .push((src.0.clone(), src.1, dest.0.clone(), dest.1));
    }

    pub(crate) fn len(&self) -> usize {
        self.renames.len() + self.links.len()
    }

    /// Forget the batch after a failure, removing its temporary files (nothing of it
    /// became visible).
    fn discard(&mut self) {
        for (dir, tmp, _, _) in self.renames.drain(..) {
            // Cleanup after an error: a file already gone is fine, and the first error is
            // the one reported.
            let _ = dir.remove(&tmp);
        }
        self.links.clear();
    }

    /// Make every pending file durable (one `syncfs` of the file system holding `dir`),
    /// then move them into place.
    pub(crate) fn flush(&mut self, dir: &DirFd) -> Result<()> {
        if self.len() == 0 {
            return Ok(());
        }
        if !self.renames.is_empty() {
            dir.syncfs()?;
        }
        for i in 0..self.renames.len() {
            let (from, tmp, to, dest) = &self.renames[i];
            if let Err(e) = from.rename_to(tmp, to, dest) {
                // The ones renamed are in place; the others are discarded on drop.
                self.renames.drain(..i);
                return Err(e);
            }
        }
        self.renames.clear();
        for (from, src, to, dest) in self.links.drain(..) {
            from.link_to(&src, &to, &dest)?;
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

/// Whether this process runs as root (and may chown). The effective uid itself, not
/// `/proc/self`, which a chroot or container may not have mounted.
pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// One user's mail root being written. Every write goes through a handle on the root
/// ([`Stage::work_root`]) and `store::target`'s operations: nothing below the root is
/// reached through a symlink.
pub(crate) struct Stage {
    pub(crate) loc: Location,
    pub(crate) user: String,
    /// The final mail root.
    pub(crate) root: PathBuf,
    /// The root being written: the existing root, or the staging root.
    work: Option<Arc<DirFd>>,
    /// Where the root is being built when it did not exist: the home and the name there.
    staging: Option<(Arc<DirFd>, Vec<u8>)>,
    pub(crate) owner_override: Option<(u32, u32)>,
    pub(crate) can_chown: bool,
    /// Owner of the root when it existed before the restore: what is written below it
    /// gets this owner, not the archive's.
    existing_owner: Option<(u32, u32)>,
    pub(crate) attr_file: Option<PathBuf>,
    /// Directories being built that nothing visible refers to yet (a mailbox built aside
    /// before its rename into place): removed if the restore stops before they are.
    scratch: Vec<(Arc<DirFd>, Vec<u8>)>,
    /// The home this restore created for the new root (its parent and its name): removed
    /// (when still empty) if the restore stops before the root is in place.
    created_home: Option<(DirFd, Vec<u8>)>,
    /// The root's own last component is not followed (export's `-o DIR`).
    strict_root: bool,
    /// Message files written, their pages dropped once written back.
    writeback: Mutex<Writeback>,
}

/// A restore that stops early (an error such as a full disk, or a signal) removes what it
/// built that is not visible yet: the hidden root it was building, mailboxes built aside.
/// Mail already renamed into place in an existing mailbox stays (it is complete).
impl Drop for Stage {
    fn drop(&mut self) {
        for (dir, name) in self.scratch.drain(..) {
            // Best effort after an error: the error that stopped the restore is the one
            // reported.
            let _ = dir.remove_tree(&name);
        }
        if let Some((home, name)) = self.staging.take() {
            let _ = home.remove_tree(&name);
            if let Some((parent, h)) = self.created_home.take() {
                let _ = parent.rmdir(&h);
            }
        }
    }
}

impl Stage {
    /// Prepare to write into `user`'s mail root at `loc`. `owner` overrides the owner of
    /// everything written (`--owner UID:GID`); otherwise, when running as root, files get
    /// the owner of the existing mail root, or (a new root) the owner the archive recorded.
    ///
    /// # Errors
    /// A location that needs a home template without one.
    pub(crate) fn new(loc: &Location, user: &str, owner: Option<(u32, u32)>) -> Result<Self> {
        let root = loc.root_of(user)?;
        Ok(Stage {
            loc: loc.clone(),
            user: user.to_string(),
            work: None,
            staging: None,
            root,
            owner_override: owner,
            can_chown: is_root(),
            existing_owner: None,
            attr_file: loc.attribute_file_of(user)?,
            scratch: Vec::new(),
            created_home: None,
            strict_root: false,
            writeback: Mutex::default(),
        })
    }

    /// A message or storage file is completely written (`len` bytes): its writeback
    /// starts now, and its pages leave the cache once written ([`Writeback`]).
    pub(crate) fn written(&self, f: std::fs::File, len: u64) {
        self.writeback
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .written(f, len);
    }

    /// Do not follow the root's own last component (export's `-o DIR`, given by the user).
    pub(crate) fn set_strict_root(&mut self) {
        self.strict_root = true;
    }

    /// Whether the root is being built aside (it did not exist).
    pub(crate) fn is_staging(&self) -> bool {
        self.staging.is_some()
    }

    /// When what is written below the root must be durable: later (at [`Stage::commit`])
    /// in a root built aside, else at once.
    pub(crate) fn durable(&self) -> Durable {
        if self.is_staging() {
            Durable::Later
        } else {
            Durable::Now
        }
    }

    /// The final root, if it exists (opened as the location says: followed, or for a
    /// strict root its last component not).
    ///
    /// # Errors
    /// A symlink as a strict root; I/O errors.
    pub(crate) fn existing_root(&self) -> Result<Option<DirFd>> {
        if self.strict_root {
            return DirFd::open_target_strict(&self.root);
        }
        match DirFd::open_target(&self.root) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&self.root, e)),
        }
    }

    /// Owner for something written with the archived `owner`: `--owner`, else the existing
    /// root's owner, else the archived one; `None` when not running as root.
    pub(crate) fn ids(&self, owner: Option<Owner>) -> Option<(u32, u32)> {
        if !self.can_chown {
            return None;
        }
        self.owner_override
            .or(self.existing_owner)
            .or(owner.map(|o| (o.uid, o.gid)))
    }

    /// Mode and owner of a directory made for the archived `owner`.
    pub(crate) fn dir_perms(&self, owner: Option<Owner>) -> Perms {
        Perms::new(dir_mode(owner.map(|o| o.mode)), self.ids(owner))
    }

    /// Mode and owner of a file made for the archived `owner`.
    pub(crate) fn file_perms(&self, owner: Option<Owner>) -> Perms {
        Perms::new(file_mode(owner.map(|o| o.mode)), self.ids(owner))
    }

    /// A private (0600) file owned like the directory `dir` (control files: uidlist,
    /// index, counter, subscriptions).
    ///
    /// # Errors
    /// `fstat` fails.
    pub(crate) fn private_perms(&self, dir: &DirFd) -> Result<Perms> {
        let st = dir.stat()?;
        let ids = self.can_chown.then_some((st.uid, st.gid));
        Ok(Perms::new(0o600, self.owner_override.or(ids)))
    }

    /// The root being written (the staging root when the final one did not exist).
    ///
    /// # Errors
    /// A symlink in the way; I/O errors.
    pub(crate) fn work_root(&mut self, owner: Option<Owner>) -> Result<Arc<DirFd>> {
        if let Some(w) = &self.work {
            return Ok(w.clone());
        }
        if let Some(r) = self.existing_root()? {
            let st = r.stat()?;
            self.existing_owner = Some((st.uid, st.gid));
            let r = Arc::new(r);
            self.work = Some(r.clone());
            return Ok(r);
        }
        let (parent, name) = split(&self.root)?;
        let (parent, name) = (parent.to_path_buf(), name.to_vec());
        let home = match DirFd::open_target(&parent) {
            Ok(h) => h,
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.create_home(&parent, owner)?,
            Err(e) => return Err(Error::io(&parent, e)),
        };
        let mut staging = b".".to_vec();
        staging.extend_from_slice(&name);
        staging.extend_from_slice(format!(".maildump-restore-{}", std::process::id()).as_bytes());
        // Left by a run that died with our process id: ours to replace.
        home.remove_tree(&staging)?;
        let w = Arc::new(home.mkdir(&staging, self.dir_perms(owner))?);
        self.staging = Some((Arc::new(home), staging));
        self.work = Some(w.clone());
        Ok(w)
    }

    /// Make the home `path` (the root's parent) for a new root: owned by the user like the
    /// mail root, 0700; directories above it are created as plain system directories (the
    /// administrator's path).
    fn create_home(&mut self, path: &Path, owner: Option<Owner>) -> Result<DirFd> {
        let (grand, name) = split(path)?;
        std::fs::create_dir_all(grand).at(grand)?;
        let g = DirFd::open_target(grand).at(grand)?;
        let existed = g.refuse_symlink(name)?;
        let home = g.mkdir(name, Perms::new(0o700, self.ids(owner)))?;
        if !existed {
            self.created_home = Some((g, name.to_vec()));
        }
        Ok(home)
    }

    /// Move a mailbox built aside as `name` in `dir` to the mailbox directory `comps` of
    /// `root` (creating its parents with `owner`): everything written aside is made durable
    /// first (one `syncfs`: it was written [`Durable::Later`]), then the rename.
    ///
    /// # Errors
    /// A symlink in the way; I/O errors.
    pub(crate) fn publish<C: AsRef<[u8]>>(
        &self,
        (dir, name): (&DirFd, &[u8]),
        root: &DirFd,
        comps: &[C],
        owner: Option<Owner>,
    ) -> Result<()> {
        let Some((last, parents)) = comps.split_last() else {
            return Err(Error::Internal("a mailbox built aside has no name".into()));
        };
        let parent = root.mkdir_comps(parents, self.dir_perms(owner))?;
        dir.syncfs()?;
        dir.rename_to(name, &parent, last.as_ref())?;
        parent.sync()
    }

    /// Remember a directory being built aside, removed if the restore stops early.
    pub(crate) fn track(&mut self, dir: &Arc<DirFd>, name: &[u8]) {
        self.scratch.push((dir.clone(), name.to_vec()));
    }

    /// A directory built aside is in place (or its contents are): no longer removed.
    pub(crate) fn untrack(&mut self, name: &[u8]) {
        self.scratch.retain(|(_, n)| n != name);
    }

    /// A new UIDVALIDITY from the mail root's counter ([`uidvalidity::next`]).
    ///
    /// # Errors
    /// A symlink in the way; I/O errors on the root.
    pub(crate) fn next_uidvalidity(&mut self) -> Result<u32> {
        let dir = self.work_root(None)?;
        let perms = self.private_perms(&dir)?;
        uidvalidity::next(&dir, perms)
    }

    /// Raise the mail root's counter to at least `v` ([`uidvalidity::raise`]).
    ///
    /// # Errors
    /// A symlink in the way; I/O errors on the root.
    pub(crate) fn raise_uidvalidity(&mut self, v: u32) -> Result<()> {
        let dir = self.work_root(None)?;
        let perms = self.private_perms(&dir)?;
        uidvalidity::raise(&dir, v, perms)
    }

    /// Write a hand-made Dovecot index `<dir>/<base>` (e.g. `dovecot.index`) with its log
    /// `<base>.log` holding only a header and its cache `<base>.cache` when given (the log
    /// and cache first: the index names them), each through a temporary file and a rename;
    /// a rotated log or a cache of an earlier index is removed (their index id would not
    /// match). `when`: whether each file is made durable at once (in a visible directory)
    /// or by the `syncfs` before its hidden directory is renamed into place.
    ///
    /// # Errors
    /// A symlink in the way; I/O errors; an index that cannot be encoded (a bug) as an I/O
    /// error naming it.
    pub(crate) fn write_index_files(
        &self,
        dir: &DirFd,
        base: &str,
        new: &crate::store::dbox::index::NewIndex,
        cache: Option<&[u8]>,
        (owner, when): (Option<Owner>, Durable),
    ) -> Result<()> {
        use crate::store::dbox::index::{write_index, write_log_header};
        let bytes = write_index(new).map_err(|e| Error::io(dir.join(base.as_bytes()), e))?;
        dir.remove(format!("{base}.log.2").as_bytes())?;
        let perms = Perms::new(0o600, self.ids(owner));
        let cache_name = format!("{base}.cache");
        match cache {
            Some(c) => dir.write_atomic_as(cache_name.as_bytes(), c, perms, when)?,
            None => dir.remove(cache_name.as_bytes())?,
        }
        let log = write_log_header(new.indexid, new.highest_modseq.unwrap_or(1));
        dir.write_atomic_as(format!("{base}.log").as_bytes(), &log, perms, when)?;
        dir.write_atomic_as(base.as_bytes(), &bytes, perms, when)
    }

    /// Refuse, before anything is written, a symlink where the user's control files are
    /// written (`subscriptions`, the UIDVALIDITY counter, the METADATA dictionary) and at
    /// each of `dirs` of an existing root.
    ///
    /// # Errors
    /// [`Error::UnsafeTarget`] naming the link; I/O errors.
    pub(crate) fn check_root(&self, dirs: &[&[u8]]) -> Result<()> {
        if let Some(root) = self.existing_root()? {
            for name in [b"subscriptions".as_slice(), b"dovecot-uidvalidity"]
                .iter()
                .chain(dirs)
            {
                root.refuse_symlink(name)?;
            }
        }
        if let Some(path) = &self.attr_file {
            let (parent, name) = split(path)?;
            let dir = match parent.strip_prefix(&self.root) {
                Ok(rel) => match self.existing_root()? {
                    Some(r) => r.try_open_comps(&plain_comps(rel)?)?,
                    None => None,
                },
                Err(_) => match DirFd::open_target(parent) {
                    Ok(d) => Some(d),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(Error::io(parent, e)),
                },
            };
            if let Some(d) = dir {
                d.refuse_symlink(name)?;
            }
        }
        Ok(())
    }

    /// Merge subscriptions into the user's subscription file (names encoded for disk).
    ///
    /// # Errors
    /// A symlink in the way; I/O errors.
    pub(crate) fn add_subscriptions(&mut self, names: &[Name]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let root = self.work_root(None)?;
        let mut existing = match root.read_target(b"subscriptions")? {
            Some(d) => crate::store::dovecot::parse_subscriptions(&d),
            None => Vec::new(),
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
        let perms = self.private_perms(&root)?;
        root.write_atomic_as(
            b"subscriptions",
            &crate::store::dovecot::render_subscriptions(&existing),
            perms,
            self.durable(),
        )
    }

    /// The directory of the METADATA dictionary (below the work root when the file is
    /// inside the mail root, else its own directory: the administrator's path, made when
    /// missing) and the file's name.
    fn attr_dir(&mut self, path: &Path) -> Result<(DirFd, Vec<u8>)> {
        let (parent, name) = split(path)?;
        let (parent, name) = (parent.to_path_buf(), name.to_vec());
        // The dictionary usually lives in the home, beside (not inside) the mail root.
        if let Ok(rel) = parent.strip_prefix(&self.root) {
            let comps = plain_comps(rel)?;
            let root = self.work_root(None)?;
            let perms = self.dir_perms(None);
            return Ok((root.mkdir_comps(&comps, perms)?, name));
        }
        std::fs::create_dir_all(&parent).at(&parent)?;
        Ok((DirFd::open_target(&parent).at(&parent)?, name))
    }

    /// Merge METADATA entries into the user's dictionary; existing values are kept.
    /// `Some(why)` when no dictionary is known (nothing written).
    ///
    /// # Errors
    /// A symlink in the way; I/O errors.
    pub(crate) fn add_attributes(&mut self, entries: &[(Name, Name)]) -> Result<Option<String>> {
        if entries.is_empty() {
            return Ok(None);
        }
        let Some(path) = self.attr_file.clone() else {
            return Ok(Some(format!(
                "user {}: the archive holds METADATA but no mail_attribute_dict is known; give --config or --attribute-dict",
                self.user
            )));
        };
        let (dir, name) = self.attr_dir(&path)?;
        let mut existing = match dir.read_target(&name)? {
            Some(d) => crate::store::dovecot::parse_dict(&d),
            None => Vec::new(),
        };
        for (k, v) in entries {
            // An existing value is kept: restore never overwrites.
            if !existing.iter().any(|(ek, _)| ek == k) {
                existing.push((k.clone(), v.clone()));
            }
        }
        let perms = self.private_perms(&dir)?;
        dir.write_atomic(&name, &crate::store::dovecot::render_dict(&existing), perms)?;
        Ok(None)
    }

    /// Rename a staged mail root into place, after one `syncfs` that makes everything
    /// written below it durable (it was written [`Durable::Later`]).
    ///
    /// # Errors
    /// [`Error::Conflict`] when the root appeared meanwhile (the staged tree is kept);
    /// I/O errors.
    pub(crate) fn commit(&mut self) -> Result<()> {
        if let Some((home, _)) = &self.staging {
            home.syncfs()?;
        }
        self.commit_synced(true)
    }

    /// The directory a staged root is renamed in (`None`: nothing staged): a `syncfs` of
    /// its file system makes the staged root durable.
    pub(crate) fn staged_in(&self) -> Option<&DirFd> {
        self.staging.as_ref().map(|(home, _)| &**home)
    }

    /// [`Stage::commit`] when the caller has made the staged root durable (a `syncfs` of
    /// [`Stage::staged_in`]'s file system after everything was written); the rename is
    /// made durable here (`fsync_home`) or by the caller's next `syncfs`.
    ///
    /// # Errors
    /// As [`Stage::commit`].
    pub(crate) fn commit_synced(&mut self, fsync_home: bool) -> Result<()> {
        if let Some((home, staging)) = self.staging.take() {
            let (_, name) = split(&self.root)?;
            if !home.rename_new(&staging, &home, name)? {
                return Err(Error::Conflict(format!(
                    "{} appeared during the restore; the restored tree is left at {}",
                    self.root.display(),
                    home.join(&staging).display()
                )));
            }
            if fsync_home {
                home.sync()?;
            }
        }
        Ok(())
    }
}

/// The components of a relative path, each a plain name.
///
/// # Errors
/// [`Error::Usage`] for `..`, `.` or a root in the path.
pub(crate) fn plain_comps(rel: &Path) -> Result<Vec<Vec<u8>>> {
    use std::os::unix::ffi::OsStrExt;
    rel.components()
        .map(|c| match c {
            std::path::Component::Normal(n) => Ok(n.as_bytes().to_vec()),
            _ => Err(Error::Usage(format!(
                "{}: not a plain path below the mail root",
                rel.display()
            ))),
        })
        .collect()
}

/// Read the Dovecot index `<dir>/<base>` and its logs below a target (a symlink is
/// refused): `None` when neither the index nor its log exists; the inner result is the
/// parse (a damaged index is the caller's to judge).
///
/// # Errors
/// A symlink ([`Error::UnsafeTarget`]); I/O errors.
pub(crate) fn read_index_at(
    dir: &DirFd,
    base: &str,
) -> Result<Option<io::Result<crate::store::dbox::index::MailIndex>>> {
    let index = dir.read_target(base.as_bytes())?;
    let log = dir.read_target(format!("{base}.log").as_bytes())?;
    if index.is_none() && log.is_none() {
        return Ok(None);
    }
    let log2 = match log {
        Some(_) => dir.read_target(format!("{base}.log.2").as_bytes())?,
        None => None,
    };
    Ok(Some(
        crate::store::dbox::index::MailIndex::from_bytes_named(
            base,
            index.as_deref(),
            log.as_deref(),
            log2.as_deref(),
        ),
    ))
}
