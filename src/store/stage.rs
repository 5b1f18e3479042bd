//! What every store writer shares: the user's mail root, built under a hidden sibling when
//! it does not exist yet and renamed into place by [`Stage::commit`]; ownership (`--owner`,
//! or the archived owner when running as root); files written through a temporary file,
//! fsync and rename; batches of new files made durable by one `syncfs`; subscriptions and
//! the METADATA dictionary.

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
        for (tmp, dest) in self.renames.drain(..) {
            fs::rename(&tmp, &dest).at(&dest)?;
        }
        for (src, dest) in self.links.drain(..) {
            fs::hard_link(&src, &dest).at(&dest)?;
        }
        Ok(())
    }
}

pub(crate) fn sync_dir(p: &Path) -> Result<()> {
    File::open(p).and_then(|d| d.sync_all()).at(p)
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
