//! The mail root's UIDVALIDITY counter, taken and raised exactly as Dovecot does
//! (`mailbox-uidvalidity.c`): `dovecot-uidvalidity` holds the last value handed out (8 hex
//! digits), and an empty marker `dovecot-uidvalidity.<same hex>` beside it is renamed to the
//! next value by whoever takes one. Every file is reached through the root's handle, never
//! through a symlink ([`crate::store::target`]).

use std::io;
use std::os::unix::fs::FileExt;

use super::nofollow::DirFd;
use super::target::{Perms, set_owner};
use crate::error::{Error, IoContext, Result};

const FILE: &[u8] = b"dovecot-uidvalidity";
/// Renames tried before the markers are listed again (Dovecot's `RETRY_COUNT`).
const RETRIES: u32 = 10;

/// The counter's value after `v` (0 is skipped, as in Dovecot).
fn after(v: u32) -> u32 {
    v.wrapping_add(1).max(1)
}

fn marker(v: u32) -> Vec<u8> {
    let mut m = FILE.to_vec();
    m.extend_from_slice(format!(".{v:08x}").as_bytes());
    m
}

/// The value in `dovecot-uidvalidity`, if it holds a valid one.
fn read_counter(dir: &DirFd) -> Result<Option<u32>> {
    let Some(data) = dir.read_target(FILE)? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(data.get(..8).unwrap_or(&data)).into_owned();
    Ok(u32::from_str_radix(text.trim(), 16)
        .ok()
        .filter(|&v| v != 0))
}

/// The lowest and highest values of the `dovecot-uidvalidity.<hex>` markers in `dir`.
fn markers(dir: &DirFd) -> Result<Option<(u32, u32)>> {
    let mut prefix = FILE.to_vec();
    prefix.push(b'.');
    let mut range: Option<(u32, u32)> = None;
    for (name, _) in dir.entries()? {
        let Some(hex) = name.strip_prefix(prefix.as_slice()) else {
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

/// A new UIDVALIDITY from the counter of the mail root `dir`, taken exactly as Dovecot
/// takes one: the marker of the value in `dovecot-uidvalidity` is renamed to the next
/// value (on a lost race, to the one after, up to ten times), then the new value is
/// written into `dovecot-uidvalidity`; a missing or broken counter is rebuilt from the
/// highest marker. A root without any counter starts at 1, or above the value a counter
/// without marker names (Dovecot starts at the current time; maildump never takes a
/// UIDVALIDITY from the clock). New files get `perms`.
///
/// # Errors
/// A symlink in the way ([`Error::UnsafeTarget`]); I/O errors on the root.
pub(crate) fn next(dir: &DirFd, perms: Perms) -> Result<u32> {
    let counter = read_counter(dir)?;
    let mut cur = match counter {
        Some(v) => Some(v),
        None => match markers(dir)? {
            Some((lo, hi)) => {
                if lo != hi {
                    // Dovecot keeps the highest and deletes the lowest.
                    dir.remove(&marker(lo))?;
                }
                Some(hi)
            }
            None => None,
        },
    };
    for _ in 0..2 {
        let Some(mut v) = cur else { break };
        for _ in 0..RETRIES {
            let next = after(v);
            match dir.rename_to(&marker(v), dir, &marker(next)) {
                Ok(()) => {
                    write_counter(dir, next, perms)?;
                    return Ok(next);
                }
                Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                    v = next;
                }
                Err(e) => return Err(e),
            }
        }
        // The counter named no marker: start again from the highest marker.
        cur = markers(dir)?.map(|(_, hi)| hi);
    }
    let v = after(counter.unwrap_or(0));
    set(dir, None, v, perms)?;
    Ok(v)
}

/// Raise the counter of the mail root `dir` to at least `v` (a UIDVALIDITY a restore
/// wrote), so that a mailbox created later never gets a UIDVALIDITY at or below it.
///
/// # Errors
/// As [`next`].
pub(crate) fn raise(dir: &DirFd, v: u32, perms: Perms) -> Result<()> {
    if v == 0 {
        return Ok(());
    }
    let m = markers(dir)?.map(|(_, hi)| hi);
    let cur = read_counter(dir)?.max(m);
    if cur.is_some_and(|c| c >= v) {
        return Ok(());
    }
    set(dir, m, v, perms)
}

/// Move the marker from `from` (or create it) to `v`, then write `v` into the counter.
fn set(dir: &DirFd, from: Option<u32>, v: u32, perms: Perms) -> Result<()> {
    let to = marker(v);
    let moved = match from {
        Some(f) => match dir.rename_to(&marker(f), dir, &to) {
            Ok(()) => true,
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        },
        None => false,
    };
    if !moved {
        match dir.create(&to, 0o444) {
            Ok(f) => set_owner(&f, &dir.join(&to), perms.ids)?,
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    write_counter(dir, v, perms)
}

/// Write `v` over the start of `dovecot-uidvalidity` (as Dovecot does: in place).
fn write_counter(dir: &DirFd, v: u32, perms: Perms) -> Result<()> {
    let p = dir.join(FILE);
    let f = dir.open_rw(FILE, perms.mode)?;
    f.write_all_at(format!("{v:08x}").as_bytes(), 0).at(&p)?;
    set_owner(&f, &p, perms.ids)
}
