//! `backup --state-dir DIR`: unattended chains for cron and timers.
//!
//! DIR holds the archives, `state.json` (the archives written, oldest first, each with the
//! chain it belongs to) and `lock`. A run takes an exclusive lock on `DIR/lock` for its
//! whole duration (a second run fails at once with [`Error::Conflict`]), decides between a
//! full backup (no chain yet, or `--full-every` elapsed since the chain's full) and an
//! incremental against the newest archive of the current chain, writes the archive, and
//! only then records it in `state.json` (written to a temporary file, synced, renamed).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// Name of the state file in the state directory.
pub const STATE_FILE: &str = "state.json";
/// Name of the lock file in the state directory.
pub(crate) const LOCK_FILE: &str = "lock";

/// One archive recorded in `state.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StateEntry {
    /// File name in the state directory.
    pub file: String,
    /// Its `archive_id`.
    pub archive_id: String,
    /// Its `created`.
    pub created: String,
    /// `full` or `incremental`.
    pub kind: String,
    /// `archive_id` of the full archive its chain starts with.
    pub chain: String,
}

/// The contents of `state.json`.
#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct State {
    /// Always 1.
    pub version: u32,
    /// Archives written, oldest first.
    pub archives: Vec<StateEntry>,
}

impl State {
    /// What `DIR/state.json` says (empty when there is none), read without the lock: for
    /// `estimate` and `selfcheck`, which write nothing.
    ///
    /// # Errors
    /// I/O errors; a damaged `state.json` ([`Error::Corrupt`]).
    pub fn read(dir: &Path) -> Result<State> {
        let sp = dir.join(STATE_FILE);
        match fs::read(&sp) {
            Ok(data) => serde_json::from_slice(&data)
                .map_err(|e| Error::corrupt_from(sp.display().to_string(), "", e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
                version: 1,
                archives: Vec::new(),
            }),
            Err(e) => Err(Error::io(&sp, e)),
        }
    }
}

/// A locked state directory.
pub struct StateDir {
    dir: PathBuf,
    _lock: File,
    /// What `state.json` says.
    pub state: State,
    /// Partial archives left by runs that died (`.maildump-*.partial` nobody holds a lock
    /// on), removed when the directory was opened.
    pub removed_partials: Vec<PathBuf>,
}

/// What the next run writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// A full backup, starting a new chain.
    Full,
    /// An incremental against this archive file, of the chain starting with `chain`.
    Incremental {
        /// The base archive's path.
        base: PathBuf,
        /// The chain's full archive id.
        chain: String,
    },
}

/// Remove the partial archives (`.maildump-*.partial`, regular files) in `dir` that no
/// process holds a lock on: a run writes its partial file under an exclusive lock, so one
/// that can be locked was left by a run that died (killed, power loss). One being written by
/// a concurrent run (`backup -o` into the same directory) is locked and kept.
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

impl StateDir {
    /// Create `dir` if needed, take its lock, read its state.
    ///
    /// # Errors
    /// [`Error::Conflict`] when another run holds the lock; I/O errors; a damaged
    /// `state.json` ([`Error::Corrupt`]).
    pub fn open(dir: &Path) -> Result<StateDir> {
        fs::create_dir_all(dir).at(dir)?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .at(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::Conflict(format!(
                    "another maildump run holds {}; not starting a second one",
                    lock_path.display()
                )));
            }
            Err(fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }
        let state = State::read(dir)?;
        let removed_partials = remove_stale_partials(dir)?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
            _lock: lock,
            state,
            removed_partials,
        })
    }

    /// Decide what to write now.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the archive to build on is recorded but its file is gone.
    pub fn next(
        &self,
        full_every: Option<chrono::Duration>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Next> {
        let Some(newest) = self.state.archives.last() else {
            return Ok(Next::Full);
        };
        if let Some(every) = full_every {
            let full = self
                .state
                .archives
                .iter()
                .find(|e| e.archive_id == newest.chain);
            let started = full
                .and_then(|f| chrono::DateTime::parse_from_rfc3339(&f.created).ok())
                .map(|t| t.with_timezone(&chrono::Utc));
            // A timer that fires a little early (a minute per day of the period, at most an
            // hour) still starts the new chain: `7d` means "at the weekly run", not "7 x 86400
            // seconds to the second".
            let slack = (every / 1440).min(chrono::Duration::hours(1));
            if started.is_none_or(|t| now - t >= every - slack) {
                return Ok(Next::Full);
            }
        }
        let base = self.dir.join(&newest.file);
        if !base.exists() {
            return Err(Error::NotFound(format!(
                "{} is recorded in {} as the newest archive, but the file is gone; restore it, or remove the state file to start a new chain",
                base.display(),
                self.dir.join(STATE_FILE).display()
            )));
        }
        Ok(Next::Incremental {
            base,
            chain: newest.chain.clone(),
        })
    }

    /// A new, unused archive path in the directory.
    pub fn new_path(&self, created: &str, kind: &str) -> PathBuf {
        let stamp: String = created
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        let mut n = 0;
        loop {
            let name = if n == 0 {
                format!("maildump-{stamp}-{kind}.mdump")
            } else {
                format!("maildump-{stamp}-{kind}-{n}.mdump")
            };
            let p = self.dir.join(name);
            if !p.exists() {
                return p;
            }
            n += 1;
        }
    }

    /// Record a written archive in `state.json`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn record(&mut self, entry: StateEntry) -> Result<()> {
        self.state.archives.push(entry);
        self.write_state()
    }

    fn write_state(&self) -> Result<()> {
        let sp = self.dir.join(STATE_FILE);
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).at(&self.dir)?;
        let json = serde_json::to_vec_pretty(&self.state)
            .map_err(|e| Error::io(&sp, std::io::Error::other(e)))?;
        tmp.write_all(&json).at(&sp)?;
        tmp.write_all(b"\n").at(&sp)?;
        tmp.as_file().sync_all().at(&sp)?;
        tmp.persist(&sp).map_err(|e| Error::io(&sp, e.error))?;
        Ok(())
    }

    /// Retention: keep the newest `keep` chains, delete the archives of older ones (only files
    /// recorded in `state.json`), and record that. Returns the files deleted.
    ///
    /// # Errors
    /// I/O errors.
    pub fn prune(&mut self, keep: usize) -> Result<Vec<PathBuf>> {
        let mut chains: Vec<&str> = Vec::new();
        for e in &self.state.archives {
            if !chains.contains(&e.chain.as_str()) {
                chains.push(&e.chain);
            }
        }
        if chains.len() <= keep.max(1) {
            return Ok(Vec::new());
        }
        let old: Vec<String> = chains[..chains.len() - keep.max(1)]
            .iter()
            .map(|c| c.to_string())
            .collect();
        let (drop, kept): (Vec<StateEntry>, Vec<StateEntry>) = self
            .state
            .archives
            .drain(..)
            .partition(|e| old.contains(&e.chain));
        self.state.archives = kept;
        // Record first: a crash then leaves unrecorded files, never records of missing ones.
        self.write_state()?;
        let mut removed = Vec::new();
        for e in drop {
            // Only plain file names written by maildump; never a path.
            if e.file.contains('/') || e.file.starts_with('.') {
                continue;
            }
            let p = self.dir.join(&e.file);
            match fs::remove_file(&p) {
                Ok(()) => removed.push(p),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => return Err(Error::io(p, err)),
            }
        }
        Ok(removed)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(file: &str, chain: &str) -> StateEntry {
        StateEntry {
            file: file.into(),
            archive_id: file.into(),
            created: "2026-01-01T00:00:00Z".into(),
            kind: if file.ends_with("full") {
                "full".into()
            } else {
                "incremental".into()
            },
            chain: chain.into(),
        }
    }

    #[test]
    fn prune_keeps_newest_chains_and_only_recorded_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut sd = StateDir::open(dir.path()).unwrap();
        for (f, c) in [
            ("a-full", "a"),
            ("a-inc", "a"),
            ("b-full", "b"),
            ("c-full", "c"),
        ] {
            fs::write(dir.path().join(f), b"x").unwrap();
            sd.record(entry(f, c)).unwrap();
        }
        fs::write(dir.path().join("unrelated"), b"x").unwrap();
        let removed = sd.prune(2).unwrap();
        assert_eq!(removed.len(), 2);
        assert!(!dir.path().join("a-full").exists() && !dir.path().join("a-inc").exists());
        assert!(dir.path().join("b-full").exists() && dir.path().join("unrelated").exists());
        drop(sd);
        let sd = StateDir::open(dir.path()).unwrap();
        let files: Vec<&str> = sd.state.archives.iter().map(|e| e.file.as_str()).collect();
        assert_eq!(files, ["b-full", "c-full"]);
    }

    #[test]
    fn a_second_open_is_refused_while_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _first = StateDir::open(dir.path()).unwrap();
        assert!(matches!(
            StateDir::open(dir.path()),
            Err(Error::Conflict(_))
        ));
    }

    #[test]
    fn stale_partials_are_removed_held_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join(".maildump-dead.partial");
        let held = dir.path().join(".maildump-live.partial");
        let other = dir.path().join(".other.partial");
        for p in [&stale, &held, &other] {
            fs::write(p, b"x").unwrap();
        }
        let h = File::open(&held).unwrap();
        h.lock().unwrap();
        let sd = StateDir::open(dir.path()).unwrap();
        assert_eq!(sd.removed_partials, std::slice::from_ref(&stale));
        assert!(!stale.exists() && held.exists() && other.exists());
    }

    #[test]
    fn full_every_tolerates_an_early_timer() {
        let dir = tempfile::tempdir().unwrap();
        let mut sd = StateDir::open(dir.path()).unwrap();
        fs::write(dir.path().join("a-full"), b"x").unwrap();
        sd.record(entry("a-full", "a-full")).unwrap();
        let at = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .with_timezone(&chrono::Utc)
        };
        let week = Some(chrono::Duration::days(7));
        // The full was made 2026-01-01T00:00:00Z; the weekly timer fires 30 s early.
        assert_eq!(
            sd.next(week, at("2026-01-07T23:59:30Z")).unwrap(),
            Next::Full
        );
        // Eight minutes early is no longer "the weekly run" (slack: 7 days / 1440 = 7 min).
        assert!(matches!(
            sd.next(week, at("2026-01-07T23:52:00Z")).unwrap(),
            Next::Incremental { .. }
        ));
    }
}
