//! Where `-o PATH` writes (`backup`, `merge`, `export --format mbox`).
//!
//! - Nothing at PATH, or a regular file: the output is written to a temporary file in the
//!   same directory, synced, and renamed to PATH when complete, so PATH only ever holds a
//!   complete file (an existing regular file is replaced only where the caller allows it).
//! - A character or block device or a FIFO (`/dev/null`, `/dev/st0`, a named pipe): it is
//!   written in place, never replaced (no temporary file, no rename).
//! - A symbolic link: refused ([`Error::Usage`]). Following it would let whoever can put a
//!   link into the output directory choose which file a backup running as root replaces;
//!   give the path it points to instead.
//! - A directory or a socket: refused.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// An output opened for writing ([`OutputFile::open`]); [`OutputFile::finish`] makes it
/// complete. Dropped unfinished, a temporary file is removed and PATH is left as it was.
pub struct OutputFile {
    file: File,
    path: PathBuf,
    /// The temporary file renamed to `path` at the end; `None` when writing in place.
    tmp: Option<tempfile::TempPath>,
    /// Whether the rename may replace a file that appeared at `path` meanwhile.
    replace: bool,
}

/// How often [`locked_partial`] makes a new partial file when the one it made was taken
/// away before it could lock it.
const PARTIAL_ATTEMPTS: usize = 8;

/// A new partial file (`.maildump-*.partial`) in `dir`, locked. Locked while it is written:
/// a `--state-dir` run removes only partial files nobody holds (left by a run that died),
/// never one a concurrent run is writing. Creating and locking are two steps, so such a
/// run (another agent of a shared state directory starting at the same moment) may remove
/// the file in between: then the path no longer names the file locked, and a new one is
/// made.
///
/// # Errors
/// I/O errors; the file taken away [`PARTIAL_ATTEMPTS`] times in a row.
fn locked_partial(dir: &Path) -> Result<(File, tempfile::TempPath)> {
    for _ in 0..PARTIAL_ATTEMPTS {
        let (file, tmp) = tempfile::Builder::new()
            .prefix(".maildump-")
            .suffix(".partial")
            .tempfile_in(dir)
            .at(dir)?
            .into_parts();
        file.lock().at(&*tmp)?;
        if names_file(&tmp, &file)? {
            return Ok((file, tmp));
        }
    }
    Err(Error::io(
        dir,
        std::io::Error::other(format!(
            "each of {PARTIAL_ATTEMPTS} partial files made here was removed before it could be locked"
        )),
    ))
}

/// Whether `path` (not followed) is the file `file` is open on.
fn names_file(path: &Path, file: &File) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let open = file.metadata().at(path)?;
    match std::fs::symlink_metadata(path) {
        Ok(md) => Ok(md.dev() == open.dev() && md.ino() == open.ino()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

impl OutputFile {
    /// Open `path` for writing as the module doc says; `replace` allows replacing an
    /// existing regular file.
    ///
    /// # Errors
    /// [`Error::Usage`] for a symbolic link, a directory or a socket; [`Error::Conflict`]
    /// for an existing regular file without `replace`; I/O errors.
    pub fn open(path: &Path, replace: bool) -> Result<Self> {
        let refuse = |why: &str| Err(Error::Usage(format!("{}: {why}", path.display())));
        let md = match std::fs::symlink_metadata(path) {
            Ok(md) => Some(md),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(path, e)),
        };
        let ft = md.as_ref().map(|m| m.file_type());
        match ft {
            Some(t) if t.is_symlink() => {
                return refuse("is a symbolic link; refused (give the path it points to)");
            }
            Some(t) if t.is_dir() => return refuse("is a directory"),
            Some(t) if t.is_socket() => return refuse("is a socket"),
            Some(t) if t.is_file() && !replace => {
                return Err(Error::Conflict(format!(
                    "{} exists; export never overwrites",
                    path.display()
                )));
            }
            Some(t) if !t.is_file() => return Self::in_place(path),
            _ => {}
        }
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let (file, tmp) = locked_partial(dir)?;
        Ok(OutputFile {
            file,
            path: path.to_path_buf(),
            tmp: Some(tmp),
            replace,
        })
    }

    /// A device or FIFO, opened without following a link put there meanwhile, and
    /// checked to be one once open.
    fn in_place(path: &Path) -> Result<Self> {
        let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NOCTTY;
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(i32::try_from(flags.bits()).unwrap_or(0))
            .open(path)
            .at(path)?;
        let t = file.metadata().at(path)?.file_type();
        if t.is_file() || t.is_dir() {
            return Err(Error::Usage(format!(
                "{}: changed while being opened; refused",
                path.display()
            )));
        }
        Ok(OutputFile {
            file,
            path: path.to_path_buf(),
            tmp: None,
            replace: false,
        })
    }

    /// The file to write to.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// The path given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Make the output complete: a temporary file is synced and renamed to the path (it
    /// appears only now); a device or FIFO is left as it is.
    ///
    /// # Errors
    /// I/O errors naming the path.
    pub fn finish(self) -> Result<()> {
        let Some(tmp) = self.tmp else {
            return Ok(());
        };
        // Durable before it becomes visible under its name.
        self.file.sync_all().at(&self.path)?;
        let done = if self.replace {
            tmp.persist(&self.path)
        } else {
            tmp.persist_noclobber(&self.path)
        };
        done.map_err(|e| Error::io(&self.path, e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_taken_away_before_its_lock_is_noticed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".maildump-x.partial");
        let f = File::create(&p).unwrap();
        assert!(names_file(&p, &f).unwrap());
        // Another run removed it (and a new file may have its name): not ours any more.
        std::fs::remove_file(&p).unwrap();
        assert!(!names_file(&p, &f).unwrap());
        std::fs::write(&p, b"other").unwrap();
        assert!(!names_file(&p, &f).unwrap());
        let (locked, tmp) = locked_partial(dir.path()).unwrap();
        assert!(names_file(&tmp, &locked).unwrap());
        assert!(matches!(
            File::open(&tmp).unwrap().try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ));
    }
}
