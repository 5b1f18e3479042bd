//! Reading below a mail root without ever following a symbolic link.
//!
//! Ours, not `walkdir`: walkdir walks by path (`follow_links(false)` only stops it from
//! descending through a link it has seen), so a directory swapped for a symlink between
//! its listing and its opening is followed; here every step opens relative to an open
//! directory with `O_NOFOLLOW`, which no swap can get around.
//!
//! The mail root itself is where the configuration says (it may be reached through
//! symlinks the administrator set up); everything below it is opened relative to an open
//! directory with `O_NOFOLLOW`, one component at a time (or in one `openat2` call with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` where the kernel has it), so a symlink planted
//! in a store (`Maildir/cur -> /etc`, `u.1 -> /etc/shadow`) is met, named and refused,
//! never read through, even if it is swapped in while the backup runs.
//!
//! The same handle serves the restore side ([`Side::Target`], opened with
//! [`DirFd::open_target`]): there a symlink is refused as an unsafe target (exit 6), and
//! `store::target` adds the operations that write below the handle.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};

use crate::error::{Error, Result};

/// What a directory entry is, as far as reading a store cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// Anything else (FIFO, socket, device).
    Other,
}

impl Kind {
    fn of(t: FileType) -> Option<Kind> {
        Some(match t {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::Unknown => return None,
            _ => Kind::Other,
        })
    }
}

/// What a `stat` of a store file says, in the units the readers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileStat {
    pub(crate) kind: Kind,
    pub(crate) len: u64,
    pub(crate) mtime: i64,
    pub(crate) mtime_nsec: u32,
    pub(crate) ctime: i64,
    pub(crate) ctime_nsec: u32,
    pub(crate) ino: u64,
    pub(crate) nlink: u64,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) mode: u32,
}

// The field types of `struct stat` differ between architectures (c_long, i64, u32...):
// each is converted without truncation, whatever it is here.
#[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
fn file_stat(st: &rustix::fs::Stat) -> FileStat {
    let mode = u32::try_from(st.st_mode).unwrap_or(0);
    FileStat {
        kind: Kind::of(FileType::from_raw_mode(mode)).unwrap_or(Kind::Other),
        len: u64::try_from(st.st_size).unwrap_or(0),
        mtime: i64::try_from(st.st_mtime).unwrap_or(0),
        mtime_nsec: u32::try_from(st.st_mtime_nsec).unwrap_or(0),
        ctime: i64::try_from(st.st_ctime).unwrap_or(0),
        ctime_nsec: u32::try_from(st.st_ctime_nsec).unwrap_or(0),
        ino: u64::try_from(st.st_ino).unwrap_or(0),
        nlink: u64::try_from(st.st_nlink).unwrap_or(0),
        uid: st.st_uid,
        gid: st.st_gid,
        mode: mode & 0o7777,
    }
}

impl FileStat {
    /// Owner and permission bits.
    pub(crate) fn owner(&self) -> crate::model::Owner {
        crate::model::Owner {
            uid: self.uid,
            gid: self.gid,
            mode: self.mode,
        }
    }
}

/// The error for a symbolic link met below a mail root.
pub(crate) fn symlink_refused(path: &Path) -> Error {
    Error::store(
        path,
        "is a symbolic link; not followed (nothing below a mail root is read through a symlink)",
    )
}

/// The error for a symbolic link met below the root of a restore or export target.
pub(crate) fn symlink_in_target(path: &Path) -> Error {
    Error::UnsafeTarget {
        path: path.to_path_buf(),
        detail: "is a symbolic link; not followed (nothing is read or written through a symbolic link below the target's root)".into(),
    }
}

/// Which side of maildump a directory handle serves: what meeting a symlink below it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// A store being backed up: a symlink is store damage ([`symlink_refused`]).
    Store,
    /// A restore or export target: a symlink is refused ([`symlink_in_target`]).
    Target,
}

/// A directory entry: its name, what it is, its `stat` if taken (see
/// [`DirFd::entries_stat`]).
pub(crate) type StatEntry = (Vec<u8>, Kind, Option<FileStat>);

/// An open directory at or below a mail root (or a target's root).
pub(crate) struct DirFd {
    pub(super) fd: OwnedFd,
    pub(super) path: PathBuf,
    pub(super) side: Side,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOFOLLOW);

impl DirFd {
    /// Open a mail root (symlinks in its own path are the configuration's and are followed).
    ///
    /// # Errors
    /// The root cannot be opened.
    pub(crate) fn open_root(path: &Path) -> io::Result<DirFd> {
        Self::open_followed(path, Side::Store)
    }

    /// Open the root of a restore or export target ([`Side::Target`]; symlinks in its own
    /// path are the configuration's and are followed).
    ///
    /// # Errors
    /// The root cannot be opened (`NotFound` when it does not exist).
    pub(crate) fn open_target(path: &Path) -> io::Result<DirFd> {
        Self::open_followed(path, Side::Target)
    }

    fn open_followed(path: &Path, side: Side) -> io::Result<DirFd> {
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(DirFd {
            fd,
            path: path.to_path_buf(),
            side,
        })
    }

    /// The path of this directory (for messages).
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this directory (for messages).
    pub(crate) fn join(&self, name: &[u8]) -> PathBuf {
        self.path.join(OsStr::from_bytes(name))
    }

    /// Open the subdirectory `name`, never through a symlink.
    ///
    /// # Errors
    /// [`Error::StoreDamaged`] naming a symlink; [`Error::Io`] otherwise (`NotFound` when
    /// it does not exist).
    pub(crate) fn open_dir(&self, name: &[u8]) -> Result<DirFd> {
        let path = self.join(name);
        match rustix::fs::openat(&self.fd, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => Ok(DirFd {
                fd,
                path,
                side: self.side,
            }),
            Err(e) => Err(self.refusal(name, e)),
        }
    }

    /// Open the directory `rel` (plain components only) below this one, never through a
    /// symlink.
    ///
    /// # Errors
    /// As [`DirFd::open_dir`]; a component that is not a plain name is refused.
    pub(crate) fn open_rel(&self, rel: &Path) -> Result<DirFd> {
        let mut comps = Vec::new();
        for c in rel.components() {
            let Component::Normal(name) = c else {
                return Err(self.not_plain(&self.path.join(rel)));
            };
            comps.push(name.as_bytes());
        }
        self.open_comps(&comps)
    }

    /// Open the directory below this one whose path components are `comps`, never through
    /// a symlink: in one `openat2` call where the kernel has it, else (and to name what is
    /// wrong when it fails) one component at a time.
    ///
    /// # Errors
    /// As [`DirFd::open_dir`]; a component that is not a plain name is refused.
    pub(crate) fn open_comps<C: AsRef<[u8]>>(&self, comps: &[C]) -> Result<DirFd> {
        let mut joined = Vec::new();
        for c in comps {
            let c = c.as_ref();
            if c.is_empty() || c == b"." || c == b".." || c.contains(&b'/') || c.contains(&0) {
                let shown = self.join(c);
                return Err(self.not_plain(&shown));
            }
            if !joined.is_empty() {
                joined.push(b'/');
            }
            joined.extend_from_slice(c);
        }
        if comps.len() > 1
            && let Some(fd) = open_beneath(&self.fd, &joined)
        {
            return Ok(DirFd {
                fd,
                path: self.join(&joined),
                side: self.side,
            });
        }
        let mut cur: Option<DirFd> = None;
        for c in comps {
            let next = cur.as_ref().unwrap_or(self).open_dir(c.as_ref())?;
            cur = Some(next);
        }
        match cur {
            Some(d) => Ok(d),
            None => self.reopen(),
        }
    }

    fn not_plain(&self, path: &Path) -> Error {
        match self.side {
            Side::Store => Error::store(path, "not a plain path below the mail root"),
            Side::Target => Error::UnsafeTarget {
                path: path.to_path_buf(),
                detail: "not a plain path below the target's root".into(),
            },
        }
    }

    /// A second handle on this directory.
    pub(crate) fn reopen(&self) -> Result<DirFd> {
        let fd = rustix::fs::openat(&self.fd, ".", DIR_FLAGS, Mode::empty())
            .map_err(|e| Error::io(&self.path, e.into()))?;
        Ok(DirFd {
            fd,
            path: self.path.clone(),
            side: self.side,
        })
    }

    /// Open the file `name` for reading, never through a symlink.
    ///
    /// # Errors
    /// [`Error::StoreDamaged`] naming a symlink; [`Error::Io`] otherwise.
    pub(crate) fn open_file(&self, name: &[u8]) -> Result<File> {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NOCTTY;
        match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => Ok(File::from(fd)),
            Err(e) => Err(self.refusal(name, e)),
        }
    }

    /// The bytes of the file `name`; `None` when it does not exist.
    ///
    /// # Errors
    /// As [`DirFd::open_file`], and read errors.
    pub(crate) fn read_optional(&self, name: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut f = match self.open_file(name) {
            Ok(f) => f,
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let mut data = Vec::new();
        io::Read::read_to_end(&mut f, &mut data).map_err(|e| Error::io(self.join(name), e))?;
        Ok(Some(data))
    }

    /// `stat` of the entry `name` itself (a symlink is reported as one).
    ///
    /// # Errors
    /// The entry cannot be stat'ed (`NotFound` when it is gone).
    pub(crate) fn stat_at(&self, name: &[u8]) -> io::Result<FileStat> {
        let st = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(file_stat(&st))
    }

    /// `stat` of this directory.
    ///
    /// # Errors
    /// I/O errors.
    pub(crate) fn stat(&self) -> Result<FileStat> {
        let st = rustix::fs::fstat(&self.fd).map_err(|e| Error::io(&self.path, e.into()))?;
        Ok(file_stat(&st))
    }

    /// The entries of this directory (without `.` and `..`), in directory order, each with
    /// what it is (from the directory entry, or a `stat` when the file system does not say).
    ///
    /// # Errors
    /// I/O errors reading the directory.
    pub(crate) fn entries(&self) -> Result<Vec<(Vec<u8>, Kind)>> {
        Ok(self
            .entries_stat(&|_| false)?
            .into_iter()
            .map(|(n, k, _)| (n, k))
            .collect())
    }

    /// Like [`DirFd::entries`], and the entries `want` names are `stat`ed right when the
    /// directory returns them (`None` when gone meanwhile): a file renamed again and again
    /// is caught under the name just read.
    ///
    /// # Errors
    /// I/O errors reading the directory, or a `stat` failing for another reason than the
    /// entry being gone.
    pub(crate) fn entries_stat(&self, want: &dyn Fn(&[u8]) -> bool) -> Result<Vec<StatEntry>> {
        let err = |e: rustix::io::Errno| Error::io(&self.path, e.into());
        let mut dir = rustix::fs::Dir::read_from(&self.fd).map_err(err)?;
        let mut out = Vec::new();
        while let Some(e) = dir.read() {
            let e = e.map_err(err)?;
            let name = e.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let kind = Kind::of(e.file_type());
            let st = if want(name) || kind.is_none() {
                match self.stat_at(name) {
                    Ok(st) => Some(st),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                    Err(e) => return Err(Error::io(self.join(name), e)),
                }
            } else {
                None
            };
            let Some(kind) = kind.or(st.map(|s| s.kind)) else {
                continue; // type unknown and gone before its stat
            };
            out.push((name.to_vec(), kind, st));
        }
        Ok(out)
    }

    /// The error for a failed open of `name`: a symlink is named as such.
    fn refusal(&self, name: &[u8], e: rustix::io::Errno) -> Error {
        let path = self.join(name);
        if (e == rustix::io::Errno::LOOP || e == rustix::io::Errno::NOTDIR)
            && self.stat_at(name).is_ok_and(|st| st.kind == Kind::Symlink)
        {
            return self.symlink_error(&path);
        }
        Error::io(path, e.into())
    }

    /// The error for a symlink at `path`, on this handle's side.
    pub(super) fn symlink_error(&self, path: &Path) -> Error {
        match self.side {
            Side::Store => symlink_refused(path),
            Side::Target => symlink_in_target(path),
        }
    }
}

/// Whether `openat2` failed for want of kernel support (then it is not tried again).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Open the directory `rel` (several components) below `dir` in one call, with
/// `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`: `None` when the kernel lacks `openat2` or the
/// call fails (the caller then walks the components and names what is wrong).
fn open_beneath(dir: &OwnedFd, rel: &[u8]) -> Option<OwnedFd> {
    if NO_OPENAT2.load(Ordering::Relaxed) {
        return None;
    }
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(dir, rel, DIR_FLAGS, Mode::empty(), how) {
        Ok(fd) => Some(fd),
        Err(rustix::io::Errno::NOSYS | rustix::io::Errno::INVAL) => {
            NO_OPENAT2.store(true, Ordering::Relaxed);
            None
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_are_named_never_followed() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("real/cur")).unwrap();
        std::fs::write(root.join("real/cur/m"), b"mail").unwrap();
        std::fs::write(t.path().join("secret"), b"secret").unwrap();
        std::os::unix::fs::symlink(t.path(), root.join("link")).unwrap();
        std::os::unix::fs::symlink(t.path().join("secret"), root.join("real/cur/s")).unwrap();
        let d = DirFd::open_root(&root).unwrap();
        let cur = d.open_rel(Path::new("real/cur")).unwrap();
        let mut e = cur.entries().unwrap();
        e.sort();
        assert_eq!(
            e,
            [(b"m".to_vec(), Kind::File), (b"s".to_vec(), Kind::Symlink)]
        );
        assert!(matches!(
            cur.open_file(b"s"),
            Err(Error::StoreDamaged { .. })
        ));
        assert!(matches!(
            d.open_rel(Path::new("link")),
            Err(Error::StoreDamaged { .. })
        ));
        assert!(matches!(
            d.open_rel(Path::new("link/secret")),
            Err(Error::StoreDamaged { .. })
        ));
        assert!(d.open_rel(Path::new("../root")).is_err());
        assert_eq!(cur.read_optional(b"m").unwrap().unwrap(), b"mail");
        assert!(cur.read_optional(b"gone").unwrap().is_none());
    }
}
