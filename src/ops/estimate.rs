//! `maildump estimate`: what a backup would read and roughly write, without reading a
//! message file.
//!
//! It takes the same decisions as [`crate::ops::backup::backup`], from the same inputs: each
//! mailbox's signature (the store's digest of file names, uidlist, keywords... and the
//! METADATA dictionary) against the parent archive's, then for a mailbox that changed its
//! scan (directory listing and uidlist or dbox index, no body) against the parent's
//! catalog: a message the parent knew (same mailbox GUID, UIDVALIDITY, UID, file base and
//! size, or the same file base and size anywhere in the user's mail) is not read; a
//! message the store shares with one read before (mdbox copy, sdbox hard link) is read
//! once. Never file times, so a `chown -R` of the store changes nothing.
//!
//! What is written is rough: the bytes read, compressed at the parent's ratio (without a
//! parent: not compressed, an upper bound), plus the catalogs copied from the parent and
//! about [`INDEX_BYTES_PER_MESSAGE`] per message scanned.

use std::collections::HashSet;
use std::io;
use std::path::PathBuf;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::reader::Archive;
use crate::model::Name;
use crate::ops::backup::incremental::UserBase;
use crate::ops::backup::{Bases, mailbox_signatures, unchanged_in, user_base};
use crate::progress::NoProgress;
use crate::store::location::Location;
use crate::store::open_reader;

/// Index bytes written per message whose record is made anew (compressed JSON catalog
/// record; measured on the bench corpus: 60 to 90).
pub(crate) const INDEX_BYTES_PER_MESSAGE: u64 = 100;

/// Fixed bytes of any archive (header, manifest, directory, footer), rounded up.
const ARCHIVE_OVERHEAD: u64 = 4096;

/// The prediction for one backup.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Estimate {
    /// `full` or `incremental`.
    pub kind: String,
    /// The parent archive of an incremental.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base: Option<PathBuf>,
    /// Users.
    pub users: u64,
    /// Mailboxes.
    pub mailboxes: u64,
    /// Mailboxes whose signature equals the parent's: copied, not scanned.
    pub mailboxes_unchanged: u64,
    /// Messages whose files the backup will read.
    pub messages: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Messages the backup will record (read or known from the parent).
    pub total_messages: u64,
    /// Roughly the archive's size.
    pub write_bytes: u64,
    /// Mailboxes the estimate could not scan (the backup names them too, and leaves them
    /// out or keeps the parent's state of them).
    pub unreadable: Vec<String>,
}

/// Estimate a backup of `users` from `location`, a full one or (with `bases`, newest first)
/// an incremental against `bases[0]`.
///
/// # Errors
/// Unreadable stores or base archives, as the backup would meet them.
pub fn estimate(location: &Location, users: &[String], bases: &[PathBuf]) -> Result<Estimate> {
    let bases = if bases.is_empty() {
        None
    } else {
        Some(Bases::open(bases, &mut NoProgress)?)
    };
    let mut est = Estimate {
        kind: if bases.is_some() {
            "incremental"
        } else {
            "full"
        }
        .into(),
        base: bases.as_ref().map(|b| b.parent().path().to_path_buf()),
        ..Estimate::default()
    };
    let mut index = ARCHIVE_OVERHEAD;
    for user in users {
        crate::store::location::check_user_name(user.as_bytes())
            .map_err(|e| Error::Usage(e.to_string()))?;
        index += estimate_user(location, bases.as_ref(), user, &mut est)?;
        est.users += 1;
    }
    let ratio = bases
        .as_ref()
        .map_or(1.0, |b| compression_ratio(b.parent()));
    // Rounded up: an estimate for tape planning should not fall short.
    #[allow(clippy::cast_precision_loss, clippy::cast_possible_truncation)]
    #[allow(clippy::cast_sign_loss)]
    let data = (est.bytes as f64 * ratio).ceil() as u64;
    est.write_bytes = data.saturating_add(index);
    Ok(est)
}

/// Compressed over uncompressed bytes of the archive's data frames (1.0 without frames).
fn compression_ratio(a: &Archive) -> f64 {
    let (c, u) = a
        .dir
        .frames
        .iter()
        .fold((0u64, 0u64), |(c, u), f| (c + f.csize, u + f.usize));
    if u == 0 {
        1.0
    } else {
        #[allow(clippy::cast_precision_loss)]
        let r = c as f64 / u as f64;
        r.min(1.0)
    }
}

/// Add `user`'s figures to `est`; the index bytes their records take.
fn estimate_user(
    location: &Location,
    bases: Option<&Bases>,
    user: &str,
    est: &mut Estimate,
) -> Result<u64> {
    let reader = open_reader(location, user)?;
    let handles = reader.mailboxes()?;
    let name = Name::from(user);
    let (_, sigs) = mailbox_signatures(location, reader.as_ref(), user, &handles)?;
    let mut index = 0u64;
    // The parent's catalogs are parsed only when a mailbox changed, as in the backup.
    let mut ub: Option<UserBase> = None;
    let mut shared = HashSet::new();
    for (h, sig) in handles.iter().zip(&sigs) {
        est.mailboxes += 1;
        if let Some(parent) = bases.map(Bases::parent)
            && let Some(i) = unchanged_in(parent, &name, &h.name, sig)
        {
            let e = &parent.dir.mailboxes[i];
            est.mailboxes_unchanged += 1;
            est.total_messages += e.messages;
            index += e.catalog_len;
            continue;
        }
        let (meta, msgs) = match reader.scan(h) {
            Ok(x) => x,
            Err(e @ Error::StoreDamaged { .. }) => {
                est.unreadable
                    .push(format!("user {user} mailbox {}: {e}", h.name));
                continue;
            }
            Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let ub = match (&mut ub, bases) {
            (Some(u), _) => Some(&*u),
            (None, Some(b)) => Some(&*ub.insert(user_base(b, &name)?)),
            (None, None) => None,
        };
        let known = ub.and_then(|u| u.mailbox(&meta));
        for msg in &msgs {
            est.total_messages += 1;
            index += INDEX_BYTES_PER_MESSAGE;
            if ub.is_some_and(|u| u.lookup(known, msg).is_some()) {
                continue;
            }
            if msg.storage_key.is_some_and(|k| !shared.insert(k)) {
                continue;
            }
            est.messages += 1;
            est.bytes = est.bytes.saturating_add(msg.content.size);
        }
    }
    Ok(index)
}
