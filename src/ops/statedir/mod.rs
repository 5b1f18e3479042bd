//! `backup --state-dir DIR`: unattended chains for cron and timers, for one agent or for
//! several writing into the same directory at once.
//!
//! DIR holds, per *namespace* (one agent: a Dovecot backend with `--agent NAME`, or a shard
//! with `--shard I/N`, namespace `shard-I-of-N`), a state file (the archives written, oldest
//! first, each with the chain it belongs to), a lock and the archives:
//!
//! | namespace | state file | lock | archives |
//! |---|---|---|---|
//! | none (the default, as before namespaces) | `state.json` | `lock` | `maildump-STAMP-KIND.mdump` |
//! | `NAME` | `state-NAME.json` | `lock-NAME` | `maildump-NAME-STAMP-KIND.mdump` |
//!
//! A run takes its namespace's lock for its whole duration (a second run of the same
//! namespace fails at once with [`Error::Conflict`]; other namespaces are not touched),
//! decides between a full backup (no chain yet, or `--full-every` elapsed since the chain's
//! full) and an incremental against the newest archive of the current chain, writes the
//! archive, and only then records it in its state file (replaced atomically). Retention
//! (`--keep-chains`) deletes only archives its own state file records.
//!
//! Everything goes through a [`store::StateStore`] (a local directory today), so that a
//! prefix in an object store can hold a state directory too.

pub mod objects;
pub(crate) mod store;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use store::{LocalDir, LockGuard, LockOwner, StateStore};

/// Name of the default namespace's state file in the state directory.
pub const STATE_FILE: &str = "state.json";
/// Name of the default namespace's lock file in the state directory.
pub(crate) const LOCK_FILE: &str = "lock";
/// Longest namespace name.
const NAMESPACE_MAX: usize = 64;

/// One archive recorded in a state file.
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

/// The contents of a state file.
#[derive(Clone, Debug, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct State {
    /// Always 1.
    pub version: u32,
    /// Archives written, oldest first.
    pub archives: Vec<StateEntry>,
}

/// Whose chain a state file keeps: the default namespace (no name: `state.json`, as before
/// namespaces) or a named agent's.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Namespace(Option<String>);

impl Namespace {
    /// The namespace `name`: 1 to 64 ASCII letters, digits, `.`, `_` and `-`, starting with a
    /// letter or digit (it becomes part of file and object names).
    ///
    /// # Errors
    /// [`Error::Usage`] naming it.
    pub fn named(name: &str) -> Result<Namespace> {
        let ok = !name.is_empty()
            && name.len() <= NAMESPACE_MAX
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(Error::Usage(format!(
                "agent name {name:?}: use 1 to {NAMESPACE_MAX} letters, digits, '.', '_' and '-', starting with a letter or digit"
            )));
        }
        Ok(Namespace(Some(name.to_string())))
    }

    /// Its name; `None` for the default namespace.
    pub fn name(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// Its state file's name.
    pub fn state_file(&self) -> String {
        match &self.0 {
            None => STATE_FILE.to_string(),
            Some(n) => format!("state-{n}.json"),
        }
    }

    /// Its lock's name.
    pub fn lock_file(&self) -> String {
        match &self.0 {
            None => LOCK_FILE.to_string(),
            Some(n) => format!("lock-{n}"),
        }
    }

    /// How its archives' names start.
    fn archive_prefix(&self) -> String {
        match &self.0 {
            None => "maildump-".to_string(),
            Some(n) => format!("maildump-{n}-"),
        }
    }

    /// The namespace whose state file is called `file`, if it is one.
    fn of_state_file(file: &str) -> Option<Namespace> {
        if file == STATE_FILE {
            return Some(Namespace(None));
        }
        let name = file.strip_prefix("state-")?.strip_suffix(".json")?;
        Namespace::named(name).ok()
    }
}

impl fmt::Display for Namespace {
    /// For messages: `namespace NAME`, or `the default namespace`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("the default namespace"),
            Some(n) => write!(f, "namespace {n}"),
        }
    }
}

impl State {
    /// What `DIR/state.json` (the default namespace) says (empty when there is none), read
    /// without the lock: for `estimate` and `selfcheck`, which write nothing.
    ///
    /// # Errors
    /// I/O errors; a damaged `state.json` ([`Error::Corrupt`]).
    pub fn read(dir: &Path) -> Result<State> {
        State::read_namespace(dir, &Namespace::default())
    }

    /// What the state file of namespace `ns` in `dir` says (empty when there is none),
    /// read without the lock.
    ///
    /// # Errors
    /// I/O errors; a damaged state file ([`Error::Corrupt`]).
    pub fn read_namespace(dir: &Path, ns: &Namespace) -> Result<State> {
        State::read_from(store_at(dir, false)?.as_ref(), ns)
    }

    /// What the state file of `ns` in `store` says (empty when there is none).
    fn read_from(store: &dyn StateStore, ns: &Namespace) -> Result<State> {
        let name = ns.state_file();
        match store.read(&name)? {
            Some(data) => serde_json::from_slice(&data)
                .map_err(|e| Error::corrupt_from(store.describe(&name), "", e)),
            None => Ok(State {
                version: 1,
                archives: Vec::new(),
            }),
        }
    }
}

/// The store a `--state-dir` argument names: an object-store prefix (`s3://bucket/prefix/`,
/// [`objects::ObjectPrefix`]) or a local directory (created when `create`). This is the one
/// place that maps the argument to a [`StateStore`].
///
/// # Errors
/// The directory cannot be created.
pub(crate) fn store_at(dir: &Path, create: bool) -> Result<Arc<dyn StateStore>> {
    if let Some(prefix) = objects::ObjectPrefix::parse(dir) {
        return Ok(Arc::new(prefix?));
    }
    Ok(Arc::new(if create {
        LocalDir::create(dir)?
    } else {
        LocalDir::at(dir)
    }))
}

/// Where the archive the next incremental of `ns` in `dir` builds on is (its newest
/// recorded archive), read without the lock; `None`: the next run is a full one.
///
/// # Errors
/// [`Error::NotFound`] when the newest recorded archive is gone; I/O errors; a damaged
/// state file.
pub fn newest_archive(dir: &Path, ns: &Namespace) -> Result<Option<String>> {
    let store = store_at(dir, false)?;
    let state = State::read_from(store.as_ref(), ns)?;
    let Some(newest) = state.archives.last() else {
        return Ok(None);
    };
    newest_present(store.as_ref(), ns, &newest.file)?;
    Ok(Some(store.location(&newest.file)))
}

/// Whether `file`, the newest archive recorded in `ns`'s state file, is in `store`.
///
/// # Errors
/// [`Error::NotFound`] naming both when it is gone; I/O errors.
fn newest_present(store: &dyn StateStore, ns: &Namespace, file: &str) -> Result<()> {
    if exists(store, file)? {
        return Ok(());
    }
    Err(Error::NotFound(format!(
        "{} is recorded in {} as the newest archive, but the file is gone; restore it, or remove the state file to start a new chain",
        store.describe(file),
        store.describe(&ns.state_file())
    )))
}

/// Whether the object `name` exists in `store`.
fn exists(store: &dyn StateStore, name: &str) -> Result<bool> {
    Ok(store.list(name)?.iter().any(|n| n == name))
}

/// Write and remove a small object in `dir` (for `selfcheck`: the credentials and rights
/// a run needs there).
///
/// # Errors
/// The store's error writing or removing it.
pub fn probe_write(dir: &Path) -> Result<()> {
    let store = store_at(dir, false)?;
    let name = format!("selfcheck-{}", uuid::Uuid::new_v4().simple());
    store.write_atomic(&name, b"maildump selfcheck\n")?;
    store.delete(&name)?;
    Ok(())
}

/// A locked namespace of a state directory.
pub struct StateDir {
    store: Arc<dyn StateStore>,
    ns: Namespace,
    _lock: Box<dyn LockGuard>,
    /// What its state file says.
    pub state: State,
    /// Partial archives left by runs that died (`.maildump-*.partial` nobody holds a lock
    /// on), removed when the directory was opened.
    pub removed_partials: Vec<String>,
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

impl StateDir {
    /// Create `dir` if needed, take the default namespace's lock, read its state.
    ///
    /// # Errors
    /// [`Error::Conflict`] when another run holds the lock; I/O errors; a damaged
    /// `state.json` ([`Error::Corrupt`]).
    pub fn open(dir: &Path) -> Result<StateDir> {
        StateDir::open_namespace(dir, &Namespace::default(), false)
    }

    /// Create `dir` if needed, take the lock of `ns`, read its state. `break_lock` removes
    /// a lock left by a run that died, where the store cannot tell (an object store; a local
    /// directory's lock is an flock, free once its holder is gone).
    ///
    /// # Errors
    /// [`Error::Conflict`] when another run of `ns` holds the lock; I/O errors; a damaged
    /// state file ([`Error::Corrupt`]).
    pub fn open_namespace(dir: &Path, ns: &Namespace, break_lock: bool) -> Result<StateDir> {
        let store = store_at(dir, true)?;
        StateDir::open_in(store, ns, break_lock)
    }

    /// [`StateDir::open_namespace`] in any store.
    pub(crate) fn open_in(
        store: Arc<dyn StateStore>,
        ns: &Namespace,
        break_lock: bool,
    ) -> Result<StateDir> {
        let lock = store::lock(&store, &ns.lock_file(), &LockOwner::current(), break_lock)?;
        let state = State::read_from(store.as_ref(), ns)?;
        let removed_partials = store.remove_leftovers()?;
        Ok(StateDir {
            store,
            ns: ns.clone(),
            _lock: lock,
            state,
            removed_partials,
        })
    }

    /// Its namespace.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
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
        newest_present(self.store.as_ref(), &self.ns, &newest.file)?;
        Ok(Next::Incremental {
            base: PathBuf::from(self.store.location(&newest.file)),
            chain: newest.chain.clone(),
        })
    }

    /// A new, unused archive name in the directory (the namespace's name in it).
    ///
    /// # Errors
    /// The directory cannot be listed.
    pub fn new_archive(&self, created: &str, kind: &str) -> Result<String> {
        let stamp: String = created
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect();
        let prefix = self.ns.archive_prefix();
        let mut n = 0;
        loop {
            let name = if n == 0 {
                format!("{prefix}{stamp}-{kind}.mdump")
            } else {
                format!("{prefix}{stamp}-{kind}-{n}.mdump")
            };
            if !exists(self.store.as_ref(), &name)? {
                return Ok(name);
            }
            n += 1;
        }
    }

    /// Where the archive `name` is written and read (a path today).
    pub fn location(&self, name: &str) -> String {
        self.store.location(name)
    }

    /// Record a written archive in the state file.
    ///
    /// # Errors
    /// I/O errors.
    pub fn record(&mut self, entry: StateEntry) -> Result<()> {
        self.state.archives.push(entry);
        self.write_state()
    }

    fn write_state(&self) -> Result<()> {
        let name = self.ns.state_file();
        let mut json = serde_json::to_vec_pretty(&self.state)
            .map_err(|e| Error::Internal(format!("{}: {e}", self.store.describe(&name))))?;
        json.push(b'\n');
        self.store.write_atomic(&name, &json)
    }

    /// Retention: keep the newest `keep` chains, delete the archives of older ones (only files
    /// recorded in this namespace's state file), and record that. Returns the archives
    /// deleted, as [`StateDir::location`] names them.
    ///
    /// # Errors
    /// I/O errors.
    pub fn prune(&mut self, keep: usize) -> Result<Vec<String>> {
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
            if self.store.delete(&e.file)? {
                removed.push(self.store.location(&e.file));
            }
        }
        Ok(removed)
    }
}

/// One namespace of a state directory and its state, read without its lock.
#[derive(Clone, Debug)]
pub struct NamespaceState {
    /// The namespace.
    pub namespace: Namespace,
    /// Its state file.
    pub state: State,
    /// Where each of its archives is (as `state.archives`).
    pub locations: Vec<String>,
}

/// Every namespace of the state directory `dir` that has a state file (the default one
/// first, then by name), read without the locks (for `list` and `restore`, which write
/// nothing; a run writing meanwhile replaces a state file atomically).
///
/// # Errors
/// [`Error::NotFound`] when `dir` holds no state file; I/O errors; a damaged state file.
pub fn namespaces(dir: &Path) -> Result<Vec<NamespaceState>> {
    namespaces_in(store_at(dir, false)?.as_ref())
}

/// [`namespaces`] of any store.
pub(crate) fn namespaces_in(store: &dyn StateStore) -> Result<Vec<NamespaceState>> {
    let mut out = Vec::new();
    for name in store.list("state")? {
        let Some(ns) = Namespace::of_state_file(&name) else {
            continue;
        };
        let state = State::read_from(store, &ns)?;
        let locations = state
            .archives
            .iter()
            .map(|e| store.location(&e.file))
            .collect();
        out.push(NamespaceState {
            namespace: ns,
            state,
            locations,
        });
    }
    if out.is_empty() {
        return Err(Error::NotFound(format!(
            "{} holds no state file ({STATE_FILE} or state-NAME.json): not a --state-dir",
            store.describe("")
        )));
    }
    out.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    Ok(out)
}

/// The chain of one namespace that `restore --state-dir` restores from.
#[derive(Clone, Debug)]
pub struct ChainFound {
    /// The namespace.
    pub namespace: Namespace,
    /// The chain's archives, oldest first.
    pub archives: Vec<PathBuf>,
    /// The archive whose state is restored (the newest, or the one `--as-of` names).
    pub state_of: PathBuf,
    /// When that archive was made (RFC 3339).
    pub created: String,
}

impl NamespaceState {
    /// Its newest chain; `None` when it has no archive.
    pub fn newest_chain(&self) -> Option<ChainFound> {
        self.chain_of(self.state.archives.len().checked_sub(1)?)
    }

    /// The chain holding the state `as_of` names (an archive id, a unique prefix of 8 or
    /// more characters of one, or a time: the newest archive made at or before it, as
    /// `restore --as-of` takes them); without `as_of`, the newest chain. `None` when the
    /// namespace has no such archive.
    ///
    /// # Errors
    /// [`Error::NotFound`] for an `as_of` that is neither an id here nor a time.
    pub fn chain_at(&self, as_of: Option<&str>) -> Result<Option<ChainFound>> {
        let Some(spec) = as_of else {
            return Ok(self.newest_chain());
        };
        let a = &self.state.archives;
        let by_id = a.iter().position(|e| e.archive_id == spec).or_else(|| {
            let hits: Vec<usize> = (0..a.len())
                .filter(|&i| spec.len() >= 8 && a[i].archive_id.starts_with(spec))
                .collect();
            (hits.len() == 1).then(|| hits[0])
        });
        if let Some(i) = by_id {
            return Ok(self.chain_of(i));
        }
        let Ok(t) = crate::chain::parse_time(spec) else {
            // An id of another namespace's archive.
            return Ok(None);
        };
        let at = a
            .iter()
            .rposition(|e| chrono::DateTime::parse_from_rfc3339(&e.created).is_ok_and(|c| c <= t));
        Ok(at.and_then(|i| self.chain_of(i)))
    }

    /// The chain of archive `i` (all its archives), restoring the state of `i`.
    fn chain_of(&self, i: usize) -> Option<ChainFound> {
        let at = self.state.archives.get(i)?;
        let archives = self
            .state
            .archives
            .iter()
            .zip(&self.locations)
            .filter(|(e, _)| e.chain == at.chain)
            .map(|(_, l)| PathBuf::from(l))
            .collect();
        Some(ChainFound {
            namespace: self.namespace.clone(),
            archives,
            state_of: PathBuf::from(self.locations.get(i)?),
            created: at.created.clone(),
        })
    }
}

/// Where `restore --state-dir DIR --user U [--as-of X]` finds U: among the chains of every
/// namespace that hold the state restored ([`NamespaceState::chain_at`]: the newest, or
/// the one `as_of` names), those whose archive of that state holds U (a user who left,
/// recorded as gone, does not count), newest first (by that archive's creation time, then
/// by namespace). The first is the one to restore from; more than one: the user moved
/// between agents.
///
/// # Errors
/// [`Error::NotFound`] naming U when no chain holds U; errors of [`namespaces`] and of
/// opening an archive.
pub fn find_user(dir: &Path, user: &str, as_of: Option<&str>) -> Result<Vec<ChainFound>> {
    find_user_in(store_at(dir, false)?.as_ref(), user, as_of)
}

/// [`find_user`] in any store.
pub(crate) fn find_user_in(
    store: &dyn StateStore,
    user: &str,
    as_of: Option<&str>,
) -> Result<Vec<ChainFound>> {
    let mut found = Vec::new();
    for ns in namespaces_in(store)? {
        let Some(chain) = ns.chain_at(as_of)? else {
            continue;
        };
        let a = crate::format::reader::Archive::open(&chain.state_of, false)?;
        if a.dir
            .users
            .iter()
            .any(|u| u.name.as_bytes() == user.as_bytes())
        {
            found.push(chain);
        }
    }
    if found.is_empty() {
        return Err(Error::NotFound(format!(
            "user {user} is in no chain of {} (the {} of each namespace was searched)",
            store.describe(""),
            as_of.map_or_else(
                || "newest chain".to_string(),
                |t| format!("state as of {t}")
            )
        )));
    }
    let time = |c: &ChainFound| chrono::DateTime::parse_from_rfc3339(&c.created).ok();
    found.sort_by(|a, b| {
        time(b)
            .cmp(&time(a))
            .then_with(|| a.namespace.cmp(&b.namespace))
    });
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, File};

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
    fn namespace_names_and_files() {
        for bad in ["", "../x", "a/b", ".a", "-a", "a b", "ä", &"x".repeat(65)] {
            assert!(
                matches!(Namespace::named(bad), Err(Error::Usage(_))),
                "{bad:?}"
            );
        }
        let mx = Namespace::named("mx1.example-2_b").unwrap();
        assert_eq!(mx.state_file(), "state-mx1.example-2_b.json");
        assert_eq!(mx.lock_file(), "lock-mx1.example-2_b");
        assert_eq!(
            Namespace::of_state_file("state-mx1.example-2_b.json"),
            Some(mx)
        );
        assert_eq!(
            Namespace::of_state_file(STATE_FILE),
            Some(Namespace::default())
        );
        assert_eq!(Namespace::of_state_file("state-.json"), None);
        assert_eq!(Namespace::of_state_file("statex.json"), None);
    }

    #[test]
    fn namespaces_lock_and_prune_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            Namespace::named("a").unwrap(),
            Namespace::named("b").unwrap(),
        );
        let mut sa = StateDir::open_namespace(dir.path(), &a, false).unwrap();
        let mut sb = StateDir::open_namespace(dir.path(), &b, false).unwrap();
        let _default = StateDir::open(dir.path()).unwrap();
        assert!(matches!(
            StateDir::open_namespace(dir.path(), &a, true),
            Err(Error::Conflict(_))
        ));
        let name = sa.new_archive("2026-01-01T00:00:00Z", "full").unwrap();
        assert_eq!(name, "maildump-a-20260101T000000Z-full.mdump");
        let add = |sd: &mut StateDir, f: &str, c: &str| {
            fs::write(dir.path().join(f), b"x").unwrap();
            sd.record(entry(f, c)).unwrap();
        };
        add(&mut sa, "a-1-full", "a1");
        add(&mut sa, "a-2-full", "a2");
        add(&mut sb, "b-1-full", "b1");
        assert_eq!(sa.prune(1).unwrap().len(), 1);
        assert!(!dir.path().join("a-1-full").exists());
        assert!(dir.path().join("b-1-full").exists() && dir.path().join("a-2-full").exists());
        let all = namespaces(dir.path()).unwrap();
        let names: Vec<Option<&str>> = all.iter().map(|n| n.namespace.name()).collect();
        assert_eq!(
            names,
            [Some("a"), Some("b")],
            "no state.json yet for the default"
        );
        assert_eq!(all[0].state.archives.len(), 1);
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
        assert_eq!(sd.removed_partials, [stale.display().to_string()]);
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
