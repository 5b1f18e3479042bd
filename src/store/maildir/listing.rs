//! Listing `new/` and `cur/` of a Maildir that other processes change while it is read.
//!
//! A file renamed while its directory is being read (a flag change renames `cur/x:2,S` to
//! `cur/x:2,RS`) may be returned by `readdir` under neither name: POSIX only promises the
//! entries that neither appear nor disappear during the listing. Dovecot's own rule
//! (`maildir_file_do`, `maildir-sync.c`) is that a file gone under its old name is looked up
//! again by its base name, re-listing `new/` then `cur/`, up to ten times, before it counts
//! as expunged. [`snapshot`] does the same for a whole mailbox: it re-lists while a base name
//! that must be somewhere (a uidlist record, or a file the first listing saw) is missing and
//! the listing was not *settled* (the directories changed while they were read, or less
//! than 50 ms before: their times are only as fine as the kernel's clock tick). A base
//! missing from a settled listing is really gone; one missing from eleven listings in a
//! row while the directory kept changing is taken as gone too (Dovecot gives up there as
//! well). Files are `stat`ed (and, in [`lookup`], opened) right when the listing returns
//! their name, so a file renamed again and again is still caught.
//!
//! Nothing below the mailbox is followed through a symlink: a symlink, a non-regular file
//! and a second file with the same base name (a real duplicate: another inode) are named
//! in [`Snapshot::skipped`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::path::Path;

use super::uidlist::parse_filename;
use crate::error::{Error, Result};
use crate::store::nofollow::{DirFd, FileStat, Kind};

/// Re-listings before a base name that must be somewhere counts as gone (Dovecot's
/// `MAILDIR_RESYNC_RETRY_COUNT`).
pub(super) const RETRIES: usize = 10;

/// A mailbox directory and its `new/` and `cur/`, open (missing ones are `None`).
pub(super) struct MailboxDirs {
    pub(super) dir: DirFd,
    pub(super) new: Option<DirFd>,
    pub(super) cur: Option<DirFd>,
}

impl MailboxDirs {
    /// Open the mailbox at `rel` below the mail root, never through a symlink.
    ///
    /// # Errors
    /// [`Error::StoreDamaged`] when the mailbox directory, `new/` or `cur/` is a symlink;
    /// I/O errors.
    pub(super) fn open(root: &DirFd, rel: &Path) -> Result<MailboxDirs> {
        let dir = root.open_rel(rel)?;
        let sub = |name: &[u8]| match dir.open_dir(name) {
            Ok(d) => Ok(Some(d)),
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        let new = sub(b"new")?;
        let cur = sub(b"cur")?;
        Ok(MailboxDirs { dir, new, cur })
    }

    /// `new/` or `cur/`.
    pub(super) fn sub(&self, new: bool) -> Option<&DirFd> {
        if new {
            self.new.as_ref()
        } else {
            self.cur.as_ref()
        }
    }

    /// The entries of `new/` then `cur/` (in that order: a file Dovecot moves from `new/`
    /// to `cur/` meanwhile is seen in `cur/`), hidden names left out; those whose base name
    /// `want` accepts are `stat`ed as they are read.
    fn list(&self, want: &dyn Fn(&[u8]) -> bool) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for new in [true, false] {
            let Some(d) = self.sub(new) else { continue };
            let want_name = |n: &[u8]| n.first() != Some(&b'.') && want(parse_filename(n).base);
            let listed = d.entries_stat(&want_name)?;
            #[cfg(test)]
            let listed = tests::race(d, listed);
            for (name, kind, st) in listed {
                if name.first() != Some(&b'.') {
                    out.push(Entry {
                        name,
                        new,
                        kind,
                        st,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The `stat`s of `new/` and `cur/`, to tell whether they changed during a listing.
    fn stamps(&self) -> Result<[Option<FileStat>; 2]> {
        let st = |d: Option<&DirFd>| d.map(DirFd::stat).transpose();
        Ok([st(self.new.as_ref())?, st(self.cur.as_ref())?])
    }
}

/// One entry of `new/` or `cur/`, with its `stat` when it was asked for and still there.
pub(super) struct Entry {
    name: Vec<u8>,
    new: bool,
    kind: Kind,
    st: Option<FileStat>,
}

/// A message file found for a base name.
#[derive(Clone, Debug)]
pub(super) struct Found {
    /// Its file name.
    pub(super) name: Vec<u8>,
    /// In `new/` (else `cur/`).
    pub(super) new: bool,
    /// Its `stat`.
    pub(super) st: FileStat,
}

/// What [`snapshot`] found.
#[derive(Default)]
pub(super) struct Snapshot {
    /// Message files by base name.
    pub(super) files: HashMap<Vec<u8>, Found>,
    /// Entries left out, each named with the reason.
    pub(super) skipped: Vec<String>,
    /// Base names of entries left out.
    pub(super) skipped_bases: HashSet<Vec<u8>>,
    /// Base names the first listing saw that no later one found: expunged during the scan.
    pub(super) vanished: Vec<Vec<u8>>,
}

impl Snapshot {
    fn skip(&mut self, base: &[u8], text: String) {
        if self.skipped_bases.insert(base.to_vec()) {
            self.skipped.push(text);
        }
    }
}

/// How long a directory must have been left alone before a listing for its times to prove
/// that nothing changed during the listing: file times come from a clock that may lag the
/// real one by a tick (at most 10 ms on Linux).
const SETTLE_NANOS: i128 = 50_000_000;

/// Whether the directories did not change between `before` and now, and had not changed
/// for [`SETTLE_NANOS`] before the listing started at `start` (ns since the epoch).
fn settled(dirs: &MailboxDirs, before: &[Option<FileStat>; 2], start: i128) -> Result<bool> {
    let after = dirs.stamps()?;
    let nanos = |s: i64, ns: u32| i128::from(s) * 1_000_000_000 + i128::from(ns);
    Ok(&after == before
        && before.iter().flatten().all(|st| {
            nanos(st.mtime, st.mtime_nsec).max(nanos(st.ctime, st.ctime_nsec))
                < start - SETTLE_NANOS
        }))
}

fn now_nanos() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX))
        .unwrap_or(0)
}

/// The message files of a mailbox. `records` are the base names the uidlist knows: each
/// is looked for again (see the module doc) before it counts as gone, as is every base the
/// first listing saw.
///
/// # Errors
/// Unreadable directories.
pub(super) fn snapshot(dirs: &MailboxDirs, records: &HashSet<&[u8]>) -> Result<Snapshot> {
    let mut snap = Snapshot::default();
    let mut first: HashSet<Vec<u8>> = HashSet::new();
    let mut want: Option<HashSet<Vec<u8>>> = None;
    for attempt in 0..=RETRIES {
        let start = now_nanos();
        let before = dirs.stamps()?;
        let wanted = |b: &[u8]| want.as_ref().is_none_or(|w| w.contains(b));
        let mut by_base: BTreeMap<Vec<u8>, Vec<Entry>> = BTreeMap::new();
        for e in dirs.list(&wanted)? {
            let base = parse_filename(&e.name).base.to_vec();
            if wanted(&base) {
                by_base.entry(base).or_default().push(e);
            }
        }
        for (base, cands) in by_base {
            if attempt == 0 {
                first.insert(base.clone());
            }
            if let Some(f) = resolve(dirs, &base, cands, &mut snap) {
                snap.files.insert(base, f);
            }
        }
        let missing: HashSet<Vec<u8>> = records
            .iter()
            .map(|b| b.to_vec())
            .chain(first.iter().cloned())
            .filter(|b| !snap.files.contains_key(b) && !snap.skipped_bases.contains(b))
            .collect();
        if missing.is_empty() || settled(dirs, &before, start)? {
            break;
        }
        want = Some(missing);
    }
    snap.vanished = first
        .into_iter()
        .filter(|b| !snap.files.contains_key(b) && !snap.skipped_bases.contains(b))
        .collect();
    snap.vanished.sort();
    Ok(snap)
}

/// What a look-up of one base name found.
pub(super) enum Lookup {
    /// Its file names (`cur/` first), to open.
    Names(Vec<(Vec<u8>, bool)>),
    /// A symlink or a non-regular file: named.
    Refused(String),
    /// Not there, in a listing during which nothing changed: expunged.
    Gone,
    /// Not there, but the directories changed during the listing: look again.
    Unsure,
}

/// Look for the file of `base` in one listing of `new/` and `cur/` (no `stat`: the caller
/// opens the names at once).
///
/// # Errors
/// Unreadable directories.
pub(super) fn lookup(dirs: &MailboxDirs, base: &[u8]) -> Result<Lookup> {
    let start = now_nanos();
    let before = dirs.stamps()?;
    let mut names = Vec::new();
    for e in dirs.list(&|_| false)? {
        if parse_filename(&e.name).base != base {
            continue;
        }
        match e.kind {
            Kind::File => names.push((e.name, e.new)),
            k => {
                let path = dirs.sub(e.new).map(|d| d.join(&e.name)).unwrap_or_default();
                return Ok(Lookup::Refused(refusal(&path, k)));
            }
        }
    }
    names.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    Ok(if !names.is_empty() {
        Lookup::Names(names)
    } else if settled(dirs, &before, start)? {
        Lookup::Gone
    } else {
        Lookup::Unsure
    })
}

fn refusal(path: &Path, kind: Kind) -> String {
    let why = if kind == Kind::Symlink {
        "is a symbolic link; not followed, the message is not in the backup"
    } else {
        "not a regular file; left out of the backup"
    };
    format!("{}: {why}", path.display())
}

/// The one file of a base name among the entries listed for it: a symlink or a
/// non-regular file is named and left out; names of one inode (renamed during the listing,
/// or hard links) are one file; a second inode with the same base is a duplicate, named
/// and left out (Dovecot would give it a new base name and UID). `None` when none exists
/// any more (renamed again, or expunged).
fn resolve(
    dirs: &MailboxDirs,
    base: &[u8],
    cands: Vec<Entry>,
    snap: &mut Snapshot,
) -> Option<Found> {
    let mut found: Vec<Found> = Vec::new();
    for e in cands {
        let kind = e.st.map(|s| s.kind).unwrap_or(e.kind);
        match (kind, e.st) {
            (Kind::File, Some(st)) => found.push(Found {
                name: e.name,
                new: e.new,
                st,
            }),
            (Kind::File, None) => {} // gone between the listing and its stat
            (k, _) => {
                let path = dirs.sub(e.new).map(|d| d.join(&e.name)).unwrap_or_default();
                snap.skip(base, refusal(&path, k));
            }
        }
    }
    // cur/ before new/, then by name: the pick does not depend on directory order.
    found.sort_by(|a, b| (a.new, &a.name).cmp(&(b.new, &b.name)));
    let first = found.first().cloned()?;
    if let Some(dup) = found.iter().find(|f| f.st.ino != first.st.ino) {
        let path = |f: &Found| {
            dirs.sub(f.new)
                .map(|d| d.join(&f.name).display().to_string())
                .unwrap_or_default()
        };
        snap.skipped.push(format!(
            "{}: duplicate of {} (same base name, another file); left out of the backup (Dovecot would give it a new name and UID)",
            path(dup),
            path(&first)
        ));
    }
    Some(first)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::store::nofollow::StatEntry;

    thread_local! {
        /// A rename to do during the next listing of a directory holding `.0`, returning
        /// the file under neither name: what `readdir` may do when a file is renamed while
        /// it reads the directory.
        static RACE: RefCell<Option<(Vec<u8>, Vec<u8>)>> = const { RefCell::new(None) };
    }

    pub(super) fn race(d: &DirFd, mut listed: Vec<StatEntry>) -> Vec<StatEntry> {
        RACE.with(|r| {
            let hit = r
                .borrow()
                .as_ref()
                .filter(|(old, _)| listed.iter().any(|(n, _, _)| n == old))
                .cloned();
            if let Some((old, new)) = hit {
                std::fs::rename(d.join(&old), d.join(&new)).unwrap();
                listed.retain(|(n, _, _)| n != &old && n != &new);
                *r.borrow_mut() = None;
            }
        });
        listed
    }

    /// Deterministic form of the race the live-backup test hits at random: the first
    /// listing misses a message renamed meanwhile (a flag change); the scan finds it under
    /// its new name instead of taking it for expunged.
    #[test]
    fn a_file_renamed_during_the_listing_is_found_again() {
        let t = tempfile::tempdir().unwrap();
        for sub in ["cur", "new", "tmp"] {
            std::fs::create_dir(t.path().join(sub)).unwrap();
        }
        for i in 0..5 {
            std::fs::write(t.path().join(format!("cur/m{i}:2,S")), b"x").unwrap();
        }
        let root = DirFd::open_root(t.path()).unwrap();
        let dirs = MailboxDirs::open(&root, Path::new("")).unwrap();
        RACE.with(|r| *r.borrow_mut() = Some((b"m2:2,S".to_vec(), b"m2:2,RS".to_vec())));
        let records: HashSet<&[u8]> = [&b"m2"[..], b"m4"].into_iter().collect();
        let snap = snapshot(&dirs, &records).unwrap();
        assert!(
            RACE.with(|r| r.borrow().is_none()),
            "the race was not played"
        );
        let mut names: Vec<&[u8]> = snap.files.values().map(|f| f.name.as_slice()).collect();
        names.sort();
        assert_eq!(
            names,
            [&b"m0:2,S"[..], b"m1:2,S", b"m2:2,RS", b"m3:2,S", b"m4:2,S"]
        );
        assert!(snap.vanished.is_empty() && snap.skipped.is_empty());
    }
}
