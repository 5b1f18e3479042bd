//! Where a state directory keeps its objects: the [`StateStore`] trait, the local directory
//! ([`LocalDir`]), and the lock protocol that works without `flock` ([`object_lock`]).
//!
//! A state directory holds small objects (state files, locks) and archives, all named by
//! plain names without `/`. Everything [`super::StateDir`] does goes through this trait, so a
//! prefix in an object store can stand in for a local directory: such a store implements
//! the primitives (read, atomic write, create-exclusive, delete, list by prefix) and keeps
//! the default [`StateStore::lock`], which needs nothing but create-exclusive (a
//! conditional PUT with `If-None-Match: *`, or the claims of [`super::objects`]).
//!
//! This module owns the names' safety (plain names only) and the lock protocol; it does not
//! know what the objects hold.

use std::fs::{self, File};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// Who holds a lock: written into the lock object, shown when another run finds it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct LockOwner {
    /// Host name (`/proc/sys/kernel/hostname`; `unknown` when unreadable).
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// When the run started (RFC 3339).
    pub started: String,
    /// A random token: a run removes the lock at its end only if it still holds this token
    /// (a lock broken with `--break-lock` and taken by another run is not removed).
    pub token: String,
}

impl LockOwner {
    /// This process, now.
    pub(crate) fn current() -> LockOwner {
        let host = fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "unknown".into());
        LockOwner {
            host,
            pid: std::process::id(),
            started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            token: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// `host H, pid P, started T`, for messages.
    fn describe(&self) -> String {
        format!(
            "host {}, pid {}, started {}",
            self.host, self.pid, self.started
        )
    }
}

/// A held lock; dropping it releases the lock.
pub(crate) trait LockGuard: Send {}

/// The objects of a state directory: small objects (state files, locks) read and written
/// whole, archives written and read where [`StateStore::location`] says.
///
/// Names are plain (no `/`, not starting with `.`); implementations may refuse others.
pub(crate) trait StateStore: Send + Sync {
    /// How messages name the object `name` (a path, a URL); `""`: the directory or prefix.
    fn describe(&self, name: &str) -> String;

    /// The object's bytes; `None` when there is none.
    ///
    /// # Errors
    /// I/O errors.
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>>;

    /// Replace (or create) the object: readers see the old bytes or the new ones, never a
    /// part.
    ///
    /// # Errors
    /// I/O errors.
    fn write_atomic(&self, name: &str, data: &[u8]) -> Result<()>;

    /// Create the object only if none exists: `false` when one does. Two callers racing
    /// for one name: exactly one gets `true`.
    ///
    /// # Errors
    /// I/O errors.
    fn create_exclusive(&self, name: &str, data: &[u8]) -> Result<bool>;

    /// Delete the object: `false` when there was none.
    ///
    /// # Errors
    /// I/O errors.
    fn delete(&self, name: &str) -> Result<bool>;

    /// The names starting with `prefix`, sorted.
    ///
    /// # Errors
    /// I/O errors.
    fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// Where the archive `name` is written and read: a path (or a URL) that `backup -o`,
    /// `restore` and `list` take.
    fn location(&self, name: &str) -> String;

    /// The store's own lock `name` for `owner`, where it has one that frees itself when
    /// its holder dies (a local `flock`); `None`: it has none, and [`lock`] takes the
    /// [`object_lock`].
    ///
    /// # Errors
    /// [`Error::Conflict`] when another run holds it; I/O errors.
    fn native_lock(&self, _name: &str, _owner: &LockOwner) -> Result<Option<Box<dyn LockGuard>>> {
        Ok(None)
    }

    /// Remove the lock object `name` of a run that died (`--break-lock`), and whatever
    /// else the store's create-exclusive left of it.
    ///
    /// # Errors
    /// I/O errors.
    fn break_lock(&self, name: &str) -> Result<()> {
        self.delete(name).map(|_| ())
    }

    /// Remove what runs that died left behind (partial archives); the names removed.
    ///
    /// # Errors
    /// I/O errors.
    fn remove_leftovers(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// Take the lock `name` of `store` for `owner`: its [`StateStore::native_lock`], else the
/// [`object_lock`].
///
/// # Errors
/// [`Error::Conflict`] when another run holds it; I/O errors.
pub(crate) fn lock(
    store: &Arc<dyn StateStore>,
    name: &str,
    owner: &LockOwner,
    break_lock: bool,
) -> Result<Box<dyn LockGuard>> {
    match store.native_lock(name, owner)? {
        Some(g) => Ok(g),
        None => object_lock(store.clone(), name, owner, break_lock),
    }
}

/// The lock of a store without `flock`: the object `name`, created exclusively and holding
/// its [`LockOwner`], removed when the guard is dropped (if it still holds our token).
///
/// A run that dies without removing it (killed, power loss, a lost network) leaves it: the
/// next run fails with [`Error::Conflict`] naming host, pid and start time, and `break_lock`
/// (`--break-lock`) removes it first. There is deliberately no age limit: a full backup of a
/// large store may take longer than any limit one would pick, and a second run let in by
/// one would write into the same chain as the first.
///
/// # Errors
/// [`Error::Conflict`]; I/O errors.
pub(crate) fn object_lock(
    store: Arc<dyn StateStore>,
    name: &str,
    owner: &LockOwner,
    break_lock: bool,
) -> Result<Box<dyn LockGuard>> {
    let body = serde_json::to_vec(owner).map_err(|e| Error::Internal(e.to_string()))?;
    match store.create_exclusive(name, &body) {
        Ok(true) => {
            return Ok(Box::new(ObjectLock {
                store,
                name: name.to_string(),
                token: owner.token.clone(),
            }));
        }
        Ok(false) => {}
        // A store's own conflict (e.g. a claim left while taking the lock): broken below.
        Err(Error::Conflict(_)) if break_lock => {}
        Err(e) => return Err(e),
    }
    let holder = store
        .read(name)?
        .and_then(|b| serde_json::from_slice::<LockOwner>(&b).ok());
    let who = holder
        .as_ref()
        .map_or_else(|| "owner unreadable".to_string(), LockOwner::describe);
    if break_lock {
        store.break_lock(name)?;
        if store.create_exclusive(name, &body)? {
            return Ok(Box::new(ObjectLock {
                store,
                name: name.to_string(),
                token: owner.token.clone(),
            }));
        }
        return Err(Error::Conflict(format!(
            "{}: broke the lock ({who}), but another run took it first; not starting a second one",
            store.describe(name)
        )));
    }
    Err(Error::Conflict(format!(
        "another maildump run holds {} ({who}); not starting a second one (if that run is dead, run again with --break-lock)",
        store.describe(name)
    )))
}

/// A lock object we created.
struct ObjectLock {
    store: Arc<dyn StateStore>,
    name: String,
    token: String,
}

impl LockGuard for ObjectLock {}

impl Drop for ObjectLock {
    fn drop(&mut self) {
        // Only our own lock: one broken and taken by another run stays. (Reading and then
        // deleting are two requests: a store that can delete on a condition, such as S3's
        // `If-Match` on the ETag read, should use it here.) An error here (the store
        // unreachable at the end) leaves the lock; the next run names it and `--break-lock`
        // removes it. A `Drop` cannot report it.
        let ours = self
            .store
            .read(&self.name)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<LockOwner>(&b).ok())
            .is_some_and(|o| o.token == self.token);
        if ours {
            drop(self.store.delete(&self.name));
        }
    }
}

/// A state directory on a local file system.
///
/// Its lock is an `flock` on the lock file (as before namespaces: a dead process's lock is
/// free, and `flock -x DIR/lock` from a script keeps maildump out); the holder's
/// [`LockOwner`] is written into the file for messages.
#[derive(Debug)]
pub(crate) struct LocalDir {
    dir: PathBuf,
}

impl LocalDir {
    /// The directory `dir`, created if needed.
    ///
    /// # Errors
    /// It cannot be created.
    pub(crate) fn create(dir: &Path) -> Result<LocalDir> {
        fs::create_dir_all(dir).at(dir)?;
        Ok(LocalDir {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory `dir`, which may not exist (reading only).
    pub(crate) fn at(dir: &Path) -> LocalDir {
        LocalDir {
            dir: dir.to_path_buf(),
        }
    }

    /// The path of `name`, refusing anything but a plain name.
    fn path(&self, name: &str) -> Result<PathBuf> {
        if name.is_empty() || name.contains('/') || name.contains('\0') || name.starts_with('.') {
            return Err(Error::Internal(format!(
                "state directory object name {name:?} is not a plain name"
            )));
        }
        Ok(self.dir.join(name))
    }
}

impl StateStore for LocalDir {
    fn describe(&self, name: &str) -> String {
        if name.is_empty() {
            return self.dir.display().to_string();
        }
        self.dir.join(name).display().to_string()
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let p = self.path(name)?;
        match fs::read(&p) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    fn write_atomic(&self, name: &str, data: &[u8]) -> Result<()> {
        let p = self.path(name)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).at(&self.dir)?;
        tmp.write_all(data).at(&p)?;
        tmp.as_file().sync_all().at(&p)?;
        tmp.persist(&p).map_err(|e| Error::io(&p, e.error))?;
        Ok(())
    }

    fn create_exclusive(&self, name: &str, data: &[u8]) -> Result<bool> {
        let p = self.path(name)?;
        // Written in full under a temporary name, then linked: the name appears with its
        // contents, and `link` fails when it exists.
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).at(&self.dir)?;
        tmp.write_all(data).at(&p)?;
        tmp.as_file().sync_all().at(&p)?;
        match fs::hard_link(tmp.path(), &p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    fn delete(&self, name: &str) -> Result<bool> {
        let p = self.path(name)?;
        match fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(p, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        for e in entries {
            let e = e.at(&self.dir)?;
            // A name that is not UTF-8 was not written by maildump.
            if let Some(n) = e.file_name().to_str()
                && n.starts_with(prefix)
                && !n.starts_with('.')
            {
                names.push(n.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn location(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn native_lock(&self, name: &str, owner: &LockOwner) -> Result<Option<Box<dyn LockGuard>>> {
        // `--break-lock` changes nothing here: an flock is held only by a live process.
        let p = self.path(name)?;
        let mut f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&p)
            .at(&p)?;
        match f.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut text = String::new();
                let who = f
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| serde_json::from_str::<LockOwner>(&text).ok())
                    .map(|o| format!(" ({})", o.describe()))
                    .unwrap_or_default();
                return Err(Error::Conflict(format!(
                    "another maildump run holds {}{who}; not starting a second one",
                    p.display()
                )));
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(&p, e)),
        }
        let body = serde_json::to_vec(owner).map_err(|e| Error::Internal(e.to_string()))?;
        f.set_len(0).at(&p)?;
        f.rewind().at(&p)?;
        f.write_all(&body).at(&p)?;
        Ok(Some(Box::new(FlockGuard(f))))
    }

    fn remove_leftovers(&self) -> Result<Vec<String>> {
        Ok(remove_stale_partials(&self.dir)?
            .into_iter()
            .map(|p| p.display().to_string())
            .collect())
    }
}

/// An flock held on an open lock file; released when the file is closed.
struct FlockGuard(File);

impl LockGuard for FlockGuard {}

impl Drop for FlockGuard {
    fn drop(&mut self) {
        // The holder's name goes with the lock (the flock itself ends when the file is
        // closed, right after); a failure only leaves a stale name in a free lock file.
        drop(self.0.set_len(0));
    }
}

/// Remove the partial archives (`.maildump-*.partial`, regular files) in `dir` that no
/// process holds a lock on: a run writes its partial file under an exclusive lock, so one
/// that can be locked was left by a run that died (killed, power loss). One being written by
/// a concurrent run (`backup -o` into the same directory, or another agent of the same state
/// directory) is locked and kept.
///
/// # Errors
/// The directory cannot be read, or a stale file cannot be removed.
pub(crate) fn remove_stale_partials(dir: &Path) -> Result<Vec<PathBuf>> {
    use std::os::unix::ffi::OsStrExt;
    let mut removed = Vec::new();
    for e in fs::read_dir(dir).at(dir)? {
        let e = e.at(dir)?;
        let name = e.file_name();
        let n = name.as_bytes();
        if !(n.starts_with(b".maildump-") && n.ends_with(b".partial")) {
            continue;
        }
        let p = e.path();
        if !e.file_type().at(&p)?.is_file() {
            continue;
        }
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(Error::io(p, err)),
        };
        match f.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => continue,
            Err(fs::TryLockError::Error(err)) => return Err(Error::io(p, err)),
        }
        match fs::remove_file(&p) {
            Ok(()) => removed.push(p),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(Error::io(p, err)),
        }
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local directory without flock: the primitives of [`LocalDir`], the default
    /// (object-store) lock.
    struct NoFlock(LocalDir);

    impl StateStore for NoFlock {
        fn describe(&self, name: &str) -> String {
            self.0.describe(name)
        }
        fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
            self.0.read(name)
        }
        fn write_atomic(&self, name: &str, data: &[u8]) -> Result<()> {
            self.0.write_atomic(name, data)
        }
        fn create_exclusive(&self, name: &str, data: &[u8]) -> Result<bool> {
            self.0.create_exclusive(name, data)
        }
        fn delete(&self, name: &str) -> Result<bool> {
            self.0.delete(name)
        }
        fn list(&self, prefix: &str) -> Result<Vec<String>> {
            self.0.list(prefix)
        }
        fn location(&self, name: &str) -> String {
            self.0.location(name)
        }
    }

    fn owner(pid: u32) -> LockOwner {
        LockOwner {
            host: "h".into(),
            pid,
            started: "2026-01-01T00:00:00Z".into(),
            token: format!("t{pid}"),
        }
    }

    #[test]
    fn create_exclusive_has_one_winner() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalDir::create(dir.path()).unwrap();
        assert!(s.create_exclusive("x", b"one").unwrap());
        assert!(!s.create_exclusive("x", b"two").unwrap());
        assert_eq!(s.read("x").unwrap().unwrap(), b"one");
        assert_eq!(s.list("").unwrap(), ["x"], "no temporary file left");
        assert!(s.delete("x").unwrap() && !s.delete("x").unwrap());
        assert!(s.read("x").unwrap().is_none());
        assert!(s.path("../x").is_err() && s.path(".x").is_err());
    }

    #[test]
    fn object_lock_refuses_a_second_names_the_holder_and_is_removed_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let s: Arc<dyn StateStore> = Arc::new(NoFlock(LocalDir::create(dir.path()).unwrap()));
        let first = lock(&s, "lock-a", &owner(1), false).unwrap();
        // Another namespace's lock is another object.
        let other = lock(&s, "lock-b", &owner(3), false).unwrap();
        let err = lock(&s, "lock-a", &owner(2), false).err().unwrap();
        let text = err.to_string();
        assert!(matches!(err, Error::Conflict(_)), "{text}");
        assert!(
            text.contains("pid 1") && text.contains("--break-lock"),
            "{text}"
        );
        drop(first);
        assert!(s.read("lock-a").unwrap().is_none(), "removed at the end");
        let again = lock(&s, "lock-a", &owner(2), false).unwrap();
        drop(again);
        drop(other);
        assert!(s.list("lock").unwrap().is_empty());
    }

    #[test]
    fn break_lock_takes_a_stale_lock_and_the_old_holder_leaves_it() {
        let dir = tempfile::tempdir().unwrap();
        let s: Arc<dyn StateStore> = Arc::new(NoFlock(LocalDir::create(dir.path()).unwrap()));
        let dead = lock(&s, "lock", &owner(1), false).unwrap();
        let new = lock(&s, "lock", &owner(2), true).unwrap();
        // The "dead" run's guard must not remove the lock the new run holds.
        drop(dead);
        let held: LockOwner = serde_json::from_slice(&s.read("lock").unwrap().unwrap()).unwrap();
        assert_eq!(held.pid, 2);
        drop(new);
        assert!(s.read("lock").unwrap().is_none());
    }

    #[test]
    fn flock_names_its_holder_and_frees_at_drop() {
        let dir = tempfile::tempdir().unwrap();
        let s: Arc<dyn StateStore> = Arc::new(LocalDir::create(dir.path()).unwrap());
        let held = lock(&s, "lock", &owner(7), false).unwrap();
        let err = lock(&s, "lock", &owner(8), true).err().unwrap();
        assert!(
            matches!(err, Error::Conflict(_)) && err.to_string().contains("pid 7"),
            "{err}"
        );
        drop(held);
        drop(lock(&s, "lock", &owner(8), false).unwrap());
    }
}
