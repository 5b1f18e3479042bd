//! Writing below the root of a restore or export target without ever following a symbolic
//! link: the one place every store writer writes through.
//!
//! The target's root is opened once ([`DirFd::open_target`]: symlinks in its own path are
//! the administrator's, e.g. `/srv/mail -> /data/mail`, and are followed); everything below
//! it is reached from an open directory handle, one plain name at a time, with
//! `O_NOFOLLOW` (or `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`), and written
//! with the `*at` calls relative to the handle of the directory it is in: `mkdirat`, then
//! an `O_NOFOLLOW` open of what was made; files created with `O_CREAT | O_EXCL |
//! O_NOFOLLOW`; `renameat`, `linkat` (never following), `unlinkat`; owner and mode set on
//! the open descriptor (`fchown`, `fchmod`); directories made durable with `fsync` of their
//! handle. A symlink met anywhere below the root, even one swapped in while the restore
//! runs, is refused ([`crate::Error::UnsafeTarget`], exit 6) and nothing is written
//! through it.
//!
//! Modes from an archive are masked to what Dovecot itself creates ([`dir_mode`],
//! [`file_mode`]).

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use super::nofollow::{DirFd, Kind, Side};
use crate::error::{Error, IoContext, Result};

/// Mode of a directory a restore creates from the mode an archive recorded: what Dovecot
/// itself creates (`mailbox_list_get_permissions`: the directory's `mode & 0777 | 0700`,
/// setgid only for group-shared directories), never setuid, never sticky, never
/// world-writable. No mode recorded: `0700`.
pub(crate) fn dir_mode(archived: Option<u32>) -> u32 {
    archived.map_or(0o700, |m| (m & 0o2775) | 0o700)
}

/// Mode of a file a restore creates from the mode an archive recorded: as Dovecot creates
/// mail files (`file_create_mode = mode & 0666 | 0600`), never executable, never set-id,
/// never world-writable. No mode recorded: `0600`.
pub(crate) fn file_mode(archived: Option<u32>) -> u32 {
    archived.map_or(0o600, |m| (m & 0o664) | 0o600)
}

/// When something written below a target must be durable.
///
/// A restore builds what is new in a directory Dovecot does not see (a new mail root's
/// hidden sibling, a new mailbox under the root's `tmp/`) and renames it into place at the
/// end: what is written there needs to be durable only before that rename, and one
/// `syncfs` of the file system makes all of it durable at once ([`DirFd::syncfs`]) instead
/// of an `fsync` (a journal commit) per file and directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Durable {
    /// Before the write returns (`fsync`): the file is, or may at once be, visible.
    Now,
    /// By the `syncfs` that precedes the rename making its hidden directory visible.
    Later,
}

/// Mode and owner of something created below a target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Perms {
    /// Permission bits (already masked).
    pub(crate) mode: u32,
    /// Owner and group to give it (only when running as root).
    pub(crate) ids: Option<(u32, u32)>,
}

impl Perms {
    /// A private file or directory with `mode`, owned by `ids`.
    pub(crate) fn new(mode: u32, ids: Option<(u32, u32)>) -> Perms {
        Perms { mode, ids }
    }
}

/// Give the open `f` (at `path`, for messages) the owner `ids`, if any. An id of `-1`
/// means "unchanged" to the kernel; it is never passed on.
///
/// # Errors
/// `fchown` fails.
pub(crate) fn set_owner(f: impl AsFd, path: &Path, ids: Option<(u32, u32)>) -> Result<()> {
    let Some((u, g)) = ids else { return Ok(()) };
    let u = (u != u32::MAX).then(|| rustix::fs::Uid::from_raw(u));
    let g = (g != u32::MAX).then(|| rustix::fs::Gid::from_raw(g));
    rustix::fs::fchown(f, u, g).map_err(|e| Error::io(path, e.into()))
}

fn mode_of(bits: u32) -> Mode {
    Mode::from_bits_truncate(bits & 0o7777)
}

const CREATE: OFlags = OFlags::WRONLY
    .union(OFlags::CREATE)
    .union(OFlags::EXCL)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY);

impl DirFd {
    /// Open `path` as a target root whose last component must not be a symlink (export's
    /// `-o DIR`, given by the user): the parent's path is followed, the root itself not.
    /// `None` when it does not exist.
    ///
    /// # Errors
    /// [`Error::UnsafeTarget`] for a symlink; I/O errors.
    pub(crate) fn open_target_strict(path: &Path) -> Result<Option<DirFd>> {
        let (parent, name) = split(path)?;
        let p = match DirFd::open_target(parent) {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(parent, e)),
        };
        p.try_open_dir(name)
    }

    /// The subdirectory `name`, never through a symlink; `None` when it does not exist.
    ///
    /// # Errors
    /// A symlink ([`DirFd::open_dir`]); I/O errors.
    pub(crate) fn try_open_dir(&self, name: &[u8]) -> Result<Option<DirFd>> {
        not_found_none(self.open_dir(name))
    }

    /// The directory `comps` below this one ([`DirFd::open_comps`]); `None` when a
    /// component does not exist.
    ///
    /// # Errors
    /// As [`DirFd::open_comps`].
    pub(crate) fn try_open_comps<C: AsRef<[u8]>>(&self, comps: &[C]) -> Result<Option<DirFd>> {
        not_found_none(self.open_comps(comps))
    }

    /// Refuse a symlink at `name`; whether something is there.
    ///
    /// # Errors
    /// [`Error::UnsafeTarget`] (or the store side's error) for a symlink; I/O errors.
    pub(crate) fn refuse_symlink(&self, name: &[u8]) -> Result<bool> {
        match self.stat_at(name) {
            Ok(st) if st.kind == Kind::Symlink => Err(self.symlink_error(&self.join(name))),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(self.join(name), e)),
        }
    }

    /// The subdirectory `name`, made with `perms` if it does not exist (mode and owner are
    /// set only on a directory made here), opened without following a symlink.
    ///
    /// # Errors
    /// A symlink at `name`; I/O errors.
    pub(crate) fn mkdir(&self, name: &[u8], perms: Perms) -> Result<DirFd> {
        let created = match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o700)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => return Err(Error::io(self.join(name), e.into())),
        };
        let d = self.open_dir(name)?;
        if created {
            rustix::fs::fchmod(&d.fd, mode_of(perms.mode))
                .map_err(|e| Error::io(&d.path, e.into()))?;
            set_owner(&d.fd, &d.path, perms.ids)?;
        }
        Ok(d)
    }

    /// The directory `comps` below this one, each missing component made with `perms`.
    ///
    /// # Errors
    /// As [`DirFd::mkdir`]; a component that is not a plain name.
    pub(crate) fn mkdir_comps<C: AsRef<[u8]>>(&self, comps: &[C], perms: Perms) -> Result<DirFd> {
        if let Some(d) = self.try_open_comps(comps)? {
            return Ok(d);
        }
        let mut cur: Option<DirFd> = None;
        for c in comps {
            let next = cur.as_ref().unwrap_or(self).mkdir(c.as_ref(), perms)?;
            cur = Some(next);
        }
        match cur {
            Some(d) => Ok(d),
            None => self.reopen(),
        }
    }

    /// Create the new file `name` (`O_EXCL`, never through a symlink) for writing, with
    /// the permission bits `mode` (less the umask).
    ///
    /// # Errors
    /// [`Error::UnsafeTarget`] for a symlink at `name`; an `AlreadyExists` I/O error for
    /// anything else there; I/O errors.
    pub(crate) fn create(&self, name: &[u8], mode: u32) -> Result<File> {
        match rustix::fs::openat(&self.fd, name, CREATE, mode_of(mode)) {
            Ok(fd) => Ok(File::from(fd)),
            Err(e) => {
                self.refuse_symlink(name)?;
                Err(Error::io(self.join(name), e.into()))
            }
        }
    }

    /// Open the file `name` for reading and writing, creating it with `mode` when missing
    /// (never through a symlink, never truncated).
    ///
    /// # Errors
    /// [`Error::UnsafeTarget`] for a symlink; I/O errors.
    pub(crate) fn open_rw(&self, name: &[u8], mode: u32) -> Result<File> {
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match rustix::fs::openat(&self.fd, name, flags, mode_of(mode)) {
            Ok(fd) => Ok(File::from(fd)),
            Err(e) => {
                self.refuse_symlink(name)?;
                Err(Error::io(self.join(name), e.into()))
            }
        }
    }

    /// Rename `from` (in this directory) to `to_name` in `to` (`renameat`: neither name
    /// is followed).
    ///
    /// # Errors
    /// I/O errors (`NotFound` when `from` is gone), naming the destination.
    pub(crate) fn rename_to(&self, from: &[u8], to: &DirFd, to_name: &[u8]) -> Result<()> {
        rustix::fs::renameat(&self.fd, from, &to.fd, to_name)
            .map_err(|e| Error::io(to.join(to_name), e.into()))
    }

    /// Rename `from` to `to_name` in `to` unless something is there (`RENAME_NOREPLACE`);
    /// `false` when something is.
    ///
    /// # Errors
    /// I/O errors, naming the destination.
    pub(crate) fn rename_new(&self, from: &[u8], to: &DirFd, to_name: &[u8]) -> Result<bool> {
        let r = rustix::fs::renameat_with(&self.fd, from, &to.fd, to_name, RenameFlags::NOREPLACE);
        match r {
            Ok(()) => Ok(true),
            Err(Errno::EXIST) => Ok(false),
            // A file system without RENAME_NOREPLACE: look, then rename (racy only there).
            Err(Errno::INVAL | Errno::NOSYS) => {
                if to.refuse_symlink(to_name)? {
                    return Ok(false);
                }
                self.rename_to(from, to, to_name).map(|()| true)
            }
            Err(e) => Err(Error::io(to.join(to_name), e.into())),
        }
    }

    /// A hard link `to_name` in `to` to the file `from` of this directory (`linkat`
    /// without `AT_SYMLINK_FOLLOW`: a symlink at `from` would be linked, never its target).
    ///
    /// # Errors
    /// I/O errors, naming the new link.
    pub(crate) fn link_to(&self, from: &[u8], to: &DirFd, to_name: &[u8]) -> Result<()> {
        rustix::fs::linkat(&self.fd, from, &to.fd, to_name, AtFlags::empty())
            .map_err(|e| Error::io(to.join(to_name), e.into()))
    }

    /// Remove the file (or symlink) `name`; fine when it is gone.
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) fn remove(&self, name: &[u8]) -> Result<()> {
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::io(self.join(name), e.into())),
        }
    }

    /// Remove the empty directory `name`.
    ///
    /// # Errors
    /// I/O errors (not empty, gone).
    pub(crate) fn rmdir(&self, name: &[u8]) -> io::Result<()> {
        rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR).map_err(Into::into)
    }

    /// Remove `name` and, if it is a directory, everything below it, never following a
    /// symlink (a symlink is removed, not what it points to); fine when it is gone.
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) fn remove_tree(&self, name: &[u8]) -> Result<()> {
        let st = match self.stat_at(name) {
            Ok(st) => st,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(self.join(name), e)),
        };
        if st.kind != Kind::Dir {
            return self.remove(name);
        }
        let d = match self.open_dir(name) {
            Ok(d) => d,
            // Replaced by a symlink or a file meanwhile: remove that instead.
            Err(Error::UnsafeTarget { .. } | Error::StoreDamaged { .. }) => {
                return self.remove(name);
            }
            Err(e) => return Err(e),
        };
        for (n, _) in d.entries()? {
            d.remove_tree(&n)?;
        }
        match self.rmdir(name) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(self.join(name), e)),
        }
    }

    /// Make this directory's entries durable (`fsync` of the directory).
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) fn sync(&self) -> Result<()> {
        rustix::fs::fsync(&self.fd).map_err(|e| Error::io(&self.path, e.into()))
    }

    /// The device of this directory's file system (one `syncfs` per device).
    ///
    /// # Errors
    /// `fstat` fails.
    pub(crate) fn device(&self) -> Result<u64> {
        rustix::fs::fstat(&self.fd)
            .map(|st| st.st_dev)
            .map_err(|e| Error::io(&self.path, e.into()))
    }

    /// Make everything written to this directory's file system durable (`syncfs`).
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) fn syncfs(&self) -> Result<()> {
        rustix::fs::syncfs(&self.fd).map_err(|e| Error::io(&self.path, e.into()))
    }

    /// Write `data` to `name` through a temporary file in this directory (created with
    /// `O_EXCL`), `fsync` and a rename; a symlink at `name` is refused, never replaced.
    ///
    /// # Errors
    /// [`Error::UnsafeTarget`]; I/O errors (nothing half-written stays).
    pub(crate) fn write_atomic(&self, name: &[u8], data: &[u8], perms: Perms) -> Result<()> {
        self.write_atomic_as(name, data, perms, Durable::Now)
    }

    /// [`DirFd::write_atomic`], with the `fsync` left out when the file is in a directory
    /// nothing visible refers to yet ([`Durable::Later`]).
    ///
    /// # Errors
    /// As [`DirFd::write_atomic`].
    pub(crate) fn write_atomic_as(
        &self,
        name: &[u8],
        data: &[u8],
        perms: Perms,
        when: Durable,
    ) -> Result<()> {
        self.refuse_symlink(name)?;
        let mut tmp = b".".to_vec();
        tmp.extend_from_slice(name);
        tmp.extend_from_slice(b".maildump-tmp");
        // A temporary file left by a run that died is ours to replace.
        self.remove(&tmp)?;
        let mut f = self.create(&tmp, perms.mode)?;
        let tmp_path = self.join(&tmp);
        let written = (|| {
            f.write_all(data).at(&tmp_path)?;
            if when == Durable::Now {
                f.sync_all().at(&tmp_path)?;
            }
            set_owner(&f, &tmp_path, perms.ids)?;
            self.rename_to(&tmp, self, name)
        })();
        if written.is_err() {
            // Nothing half-written stays; the write's error is the one reported.
            let _ = self.remove(&tmp);
        }
        written
    }

    /// The bytes of the file `name` below a target; `None` when it does not exist.
    ///
    /// # Errors
    /// [`Error::UnsafeTarget`] for a symlink; I/O errors.
    pub(crate) fn read_target(&self, name: &[u8]) -> Result<Option<Vec<u8>>> {
        debug_assert_eq!(self.side, Side::Target);
        self.read_optional(name)
    }
}

/// `None` for a `NotFound` I/O error.
fn not_found_none<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The parent directory and the last component of `path`.
///
/// # Errors
/// [`Error::Usage`] for a path without a last component (`/`, `..`).
pub(crate) fn split(path: &Path) -> Result<(&Path, &[u8])> {
    use std::os::unix::ffi::OsStrExt;
    let name = path
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{}: not a directory name", path.display())))?;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((parent, name.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};

    #[test]
    fn modes_are_masked_to_what_dovecot_creates() {
        assert_eq!(dir_mode(Some(0o7777)), 0o2775);
        assert_eq!(dir_mode(Some(0o700)), 0o700);
        assert_eq!(dir_mode(Some(0o2770)), 0o2770);
        assert_eq!(dir_mode(Some(0)), 0o700);
        assert_eq!(dir_mode(None), 0o700);
        assert_eq!(file_mode(Some(0o7777)), 0o664);
        assert_eq!(file_mode(Some(0o4755)), 0o644);
        assert_eq!(file_mode(Some(0o600)), 0o600);
        assert_eq!(file_mode(Some(0o000)), 0o600);
        assert_eq!(file_mode(None), 0o600);
    }

    /// Every write operation refuses a symlink where it would write, and nothing appears
    /// where the link points.
    #[test]
    fn writes_never_go_through_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let away = t.path().join("away");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::create_dir_all(&away).unwrap();
        std::fs::write(away.join("f"), b"keep").unwrap();
        symlink(&away, root.join("dirlink")).unwrap();
        symlink(away.join("f"), root.join("filelink")).unwrap();
        let r = DirFd::open_target(&root).unwrap();
        let p = Perms::new(0o700, None);
        let unsafe_target = |e: Result<DirFd>| matches!(e, Err(Error::UnsafeTarget { .. }));
        assert!(unsafe_target(r.mkdir(b"dirlink", p)));
        assert!(unsafe_target(
            r.mkdir_comps(&[b"dirlink".as_slice(), b"x"], p)
        ));
        assert!(unsafe_target(r.open_comps(&[b"dirlink".as_slice(), b"x"])));
        assert!(matches!(
            r.try_open_comps(&[b"d".as_slice(), b"x"]),
            Ok(None)
        ));
        assert!(matches!(
            r.create(b"filelink", 0o600),
            Err(Error::UnsafeTarget { .. })
        ));
        assert!(matches!(
            r.open_rw(b"filelink", 0o600),
            Err(Error::UnsafeTarget { .. })
        ));
        assert!(matches!(
            r.write_atomic(b"filelink", b"x", p),
            Err(Error::UnsafeTarget { .. })
        ));
        assert!(matches!(
            r.read_target(b"filelink"),
            Err(Error::UnsafeTarget { .. })
        ));
        // A tree with a link inside is removed without touching what the link points to.
        let d = r.mkdir_comps(&[b"d".as_slice(), b"e"], p).unwrap();
        symlink(&away, d.path().join("inner")).unwrap();
        r.remove_tree(b"d").unwrap();
        assert!(!root.join("d").exists());
        r.remove_tree(b"dirlink").unwrap();
        assert_eq!(std::fs::read(away.join("f")).unwrap(), b"keep");
        assert_eq!(std::fs::read_dir(&away).unwrap().count(), 1);
        // Normal writes work, and a directory made here gets its mode whatever the umask.
        let n = r.mkdir(b"n", Perms::new(0o2750, None)).unwrap();
        assert_eq!(std::fs::metadata(n.path()).unwrap().mode() & 0o7777, 0o2750);
        n.write_atomic(b"file", b"data", p).unwrap();
        assert_eq!(std::fs::read(root.join("n/file")).unwrap(), b"data");
        assert!(!n.rename_new(b"file", &r, b"filelink").unwrap());
        assert!(n.rename_new(b"file", &r, b"moved").unwrap());
        r.link_to(b"moved", &n, b"again").unwrap();
        assert_eq!(std::fs::read(root.join("n/again")).unwrap(), b"data");
    }

    #[test]
    fn a_strict_root_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("real")).unwrap();
        symlink(t.path().join("real"), t.path().join("link")).unwrap();
        assert!(matches!(
            DirFd::open_target_strict(&t.path().join("link")),
            Err(Error::UnsafeTarget { .. })
        ));
        assert!(
            DirFd::open_target_strict(&t.path().join("real"))
                .unwrap()
                .is_some()
        );
        assert!(
            DirFd::open_target_strict(&t.path().join("none"))
                .unwrap()
                .is_none()
        );
    }
}
