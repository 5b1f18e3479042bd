//! Chains of archives: a full backup followed by incrementals (and since-archives), read
//! together.
//!
//! [`Chain::open`] opens the archives given (oldest first) and checks their order and links
//! before anything else happens. The state of any archive of the chain is that archive's own
//! catalogs; message bytes are found by [`Chain::resolve`]: in the record's own archive, in
//! the archive its `archive` field names, by SHA-256 in any archive of the chain up to the
//! state, or (for a since-archive's unread messages) by identity in an earlier archive.
//! Indexes for the last two ways are built only when a record needs them.

pub mod deleted;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::format::index::{Location, MailboxRecord, MessageRecord};
use crate::format::reader::{Archive, FrameCursor, FrameTable};
use crate::model::{Content, Name, Part};

pub use deleted::{Deletions, ListFilter, deleted_in_chain, deleted_since};

/// Where a message's bytes are: archive position in the chain, location, hash and size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// Index into [`Chain::archives`].
    pub archive: usize,
    /// Where the bytes start in that archive.
    pub loc: Location,
    /// SHA-256 (hex) the bytes must have.
    pub sha256: String,
    /// Length.
    pub size: u64,
    /// A message stored in parts (format 1.2): hash and length of its data member, the
    /// bytes at `loc`; `sha256` and `size` are the complete message's.
    pub stored: Option<(String, u64)>,
    /// Its parts.
    pub parts: Vec<Part>,
    /// Where the bytes of each blob part are (archive position, location), in order.
    pub blobs: Vec<(usize, Location)>,
}

/// Identity of a message in a mailbox across archives: user, mailbox GUID, UIDVALIDITY, UID
/// and the Maildir file base.
pub(crate) type Identity = (Name, String, u32, u32, Vec<u8>);

/// Identity of `rec` in mailbox `cat`, when the mailbox has a GUID.
pub fn identity(cat: &MailboxRecord, rec: &MessageRecord) -> Option<Identity> {
    let guid = cat.mailbox.guid.clone()?;
    let base = rec
        .message
        .maildir
        .as_ref()
        .map(|m| m.base().to_vec())
        .unwrap_or_else(|| rec.message.guid.as_bytes().to_vec());
    Some((
        cat.user.clone(),
        guid,
        cat.mailbox.uidvalidity,
        rec.message.uid.0,
        base,
    ))
}

/// Holders of one identity: (archive whose state has the message, archive holding the bytes,
/// location, the holder record's content), in chain order.
type Holders = Vec<(usize, usize, Location, Content)>;

/// How messages are named in errors: `user U mailbox M UID N`.
pub(crate) fn record_item(cat: &MailboxRecord, rec: &MessageRecord) -> String {
    format!(
        "user {} mailbox {} UID {}",
        cat.user, cat.mailbox.name, rec.message.uid
    )
}

/// Archives read together, oldest first.
pub struct Chain {
    /// The archives, in the order given (checked: each after its parent).
    pub archives: Vec<Archive>,
    ids: HashMap<String, usize>,
    by_sha: OnceLock<HashMap<String, (usize, Location)>>,
    by_identity: OnceLock<HashMap<Identity, Holders>>,
    blobs: OnceLock<HashMap<String, (usize, Location)>>,
}

/// Parse an RFC 3339 time or Unix seconds.
///
/// # Errors
/// [`Error::Usage`] for anything else.
pub fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    parse_time_at(s, chrono::Utc::now())
}

/// [`parse_time`] with `now` for durations ("7d ago").
///
/// # Errors
/// [`Error::Usage`] naming the text and the accepted forms.
pub(crate) fn parse_time_at(
    s: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>> {
    use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
    let t = s.trim();
    if let Ok(n) = t.parse::<i64>() {
        return chrono::DateTime::from_timestamp(n, 0)
            .ok_or_else(|| Error::Usage(format!("time {s:?} is out of range")));
    }
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, f) {
            return Ok(Utc.from_utc_datetime(&d));
        }
    }
    if let Some(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
    {
        return Ok(Utc.from_utc_datetime(&d));
    }
    let ago = t.strip_suffix("ago").map_or(t, str::trim_end);
    if ago.ends_with(|c: char| c.is_ascii_alphabetic())
        && let Ok(d) = parse_duration(ago)
    {
        return now
            .checked_sub_signed(d)
            .ok_or_else(|| Error::Usage(format!("time {s:?} is out of range")));
    }
    Err(Error::Usage(format!(
        "time {s:?}: expected a date (2026-11-28), a date and time in UTC (2026-11-28 03:00, \
         or RFC 3339 with a zone: 2026-11-28T03:00:00+01:00), Unix seconds, or a duration back \
         from now (7d, 12h ago)"
    )))
}

/// Parse a duration: `30d`, `12h`, `1w`, `90m`, `45s`, or plain seconds.
///
/// # Errors
/// [`Error::Usage`] for anything else.
pub fn parse_duration(s: &str) -> Result<chrono::Duration> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let n: i64 = num.parse().map_err(|_| {
        Error::Usage(format!(
            "duration {s:?}: expected a number with s, m, h, d or w (e.g. 30d)"
        ))
    })?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => {
            return Err(Error::Usage(format!(
                "duration {s:?}: unit must be s, m, h, d or w"
            )));
        }
    };
    n.checked_mul(secs)
        .map(chrono::Duration::seconds)
        .ok_or_else(|| Error::Usage(format!("duration {s:?} is too large")))
}

fn created_of(a: &Archive) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(&a.manifest().created)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

fn describe(a: &Archive) -> String {
    format!(
        "{} (archive {}, created {})",
        a.path().display(),
        a.manifest().archive_id,
        a.manifest().created
    )
}

impl Chain {
    /// Open archives given oldest first and check that each comes after its parent.
    ///
    /// # Errors
    /// Archives that cannot be opened; [`Error::NotFound`] for a missing link (an archive
    /// whose parent is not given) or a wrong order, naming the archives concerned.
    pub fn open(paths: &[&Path], require_links: bool) -> Result<Chain> {
        let mut archives = Vec::with_capacity(paths.len());
        for p in paths {
            archives.push(Archive::open_or_recover(p)?);
        }
        Chain::new(archives, require_links)
    }

    /// Open archives given oldest first for point reads (`cat`): each through its footer,
    /// the head of its INDEX frame and its directory only (spec 6.3 without step 5), so that
    /// what is read does not grow with the archive; catalogs are read, each checked on its
    /// own, when they are needed, and data frames only as far as the bytes wanted. Damage
    /// is an error here, not a recovery by scanning: callers that want one fall back to
    /// [`Chain::open`] ([`crate::ops::inspect::find_for_cat`]).
    ///
    /// # Errors
    /// As [`Chain::open`], and [`Error::Corrupt`] for a missing or damaged footer or
    /// directory.
    pub(crate) fn open_lazily(paths: &[&Path], require_links: bool) -> Result<Chain> {
        let archives = paths
            .iter()
            .map(|p| Archive::open_for_point_reads(p))
            .collect::<Result<Vec<_>>>()?;
        Chain::new(archives, require_links)
    }

    /// Check and wrap archives already opened (oldest first). With `require_links` false, an
    /// incremental whose parent is not given is accepted (for reading what it holds: its
    /// state is complete, only bytes held by the missing archives are unavailable).
    ///
    /// # Errors
    /// As [`Chain::open`].
    pub fn new(archives: Vec<Archive>, require_links: bool) -> Result<Chain> {
        if archives.is_empty() {
            return Err(Error::Usage("no archive given".into()));
        }
        let mut ids: HashMap<String, usize> = HashMap::new();
        for (i, a) in archives.iter().enumerate() {
            let m = a.manifest();
            if let Some(j) = ids.get(&m.archive_id) {
                return Err(Error::Usage(format!(
                    "{} is given twice (also as {})",
                    describe(a),
                    archives[*j].path().display()
                )));
            }
            ids.insert(m.archive_id.clone(), i);
        }
        // A merged archive stands for the archives it replaces.
        let mut stands_for: HashMap<String, usize> = HashMap::new();
        for (i, a) in archives.iter().enumerate() {
            for r in &a.manifest().replaces {
                stands_for.entry(r.archive_id.clone()).or_insert(i);
            }
        }
        for (i, a) in archives.iter().enumerate() {
            let m = a.manifest();
            if let Some(p) = &m.parent {
                let at = ids
                    .get(&p.archive_id)
                    .or_else(|| stands_for.get(&p.archive_id))
                    .copied();
                match at {
                    Some(j) if j < i => {}
                    Some(j) => {
                        return Err(Error::NotFound(format!(
                            "archives out of order: {} is given before its parent {}; give them oldest first",
                            describe(a),
                            describe(&archives[j])
                        )));
                    }
                    None if !require_links => {}
                    None => {
                        return Err(Error::NotFound(format!(
                            "missing link: {} is an incremental of archive {} (created {}), which is not given",
                            describe(a),
                            p.archive_id,
                            p.created
                        )));
                    }
                }
            }
            if i > 0 {
                let prev = &archives[i - 1];
                if let (Some(c), Some(pc)) = (created_of(a), created_of(prev))
                    && c < pc
                {
                    return Err(Error::NotFound(format!(
                        "archives out of order: {} is older than {}, given before it; give them oldest first",
                        describe(a),
                        describe(prev)
                    )));
                }
                if let Some(since) = &m.since {
                    let s = parse_time(since).ok();
                    if let (Some(s), Some(pc)) = (s, created_of(prev))
                        && s > pc
                    {
                        return Err(Error::NotFound(format!(
                            "missing link: {} holds changes since {since}, but the archive before it, {}, is older: changes in between are in no archive given",
                            describe(a),
                            describe(prev)
                        )));
                    }
                }
            }
        }
        Ok(Chain {
            archives,
            ids,
            by_sha: OnceLock::new(),
            by_identity: OnceLock::new(),
            blobs: OnceLock::new(),
        })
    }

    /// The last archive.
    pub fn last(&self) -> usize {
        self.archives.len() - 1
    }

    /// The archive whose state `--as-of` names: an archive id (or a unique prefix of one of
    /// at least 8 characters), or a time (the newest archive created at or before it).
    ///
    /// # Errors
    /// [`Error::NotFound`] when nothing matches.
    pub fn as_of(&self, spec: &str) -> Result<usize> {
        if let Some(i) = self.ids.get(spec) {
            return Ok(*i);
        }
        if spec.len() >= 8 {
            let hits: Vec<usize> = self
                .ids
                .iter()
                .filter(|(id, _)| id.starts_with(spec))
                .map(|(_, i)| *i)
                .collect();
            if hits.len() == 1 {
                return Ok(hits[0]);
            }
        }
        let t = parse_time(spec).map_err(|_| {
            Error::NotFound(format!(
                "--as-of {spec}: no archive with that id among those given, and not a time"
            ))
        })?;
        self.archives
            .iter()
            .enumerate()
            .rev()
            .find(|(_, a)| created_of(a).is_some_and(|c| c <= t))
            .map(|(i, _)| i)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "--as-of {spec}: the oldest archive given was created after that time ({})",
                    self.archives[0].manifest().created
                ))
            })
    }

    fn sha_index(&self) -> &HashMap<String, (usize, Location)> {
        self.by_sha.get_or_init(|| {
            let mut map = HashMap::new();
            for (ai, a) in self.archives.iter().enumerate() {
                for i in 0..a.dir.mailboxes.len() + a.dir.gone.len() {
                    let cat = if i < a.dir.mailboxes.len() {
                        a.catalog(i)
                    } else {
                        a.gone_catalog(i - a.dir.mailboxes.len())
                    };
                    let Ok(cat) = cat else { continue };
                    for r in cat.messages.iter().chain(cat.deleted.iter()) {
                        if let (Some(loc), false) = (r.loc, r.is_external()) {
                            map.insert(r.stored_content().0.to_string(), (ai, loc));
                        }
                    }
                }
            }
            map
        })
    }

    /// Identity -> every holder: (archive whose state has the message, archive holding the
    /// bytes, location, SHA-256), in chain order.
    fn identity_index(&self) -> &HashMap<Identity, Holders> {
        self.by_identity.get_or_init(|| {
            let mut map = HashMap::new();
            for (ai, a) in self.archives.iter().enumerate() {
                for i in 0..a.dir.mailboxes.len() {
                    let Ok(cat) = a.catalog(i) else { continue };
                    for r in &cat.messages {
                        if r.message.content.sha256.is_empty() {
                            continue;
                        }
                        let Some(id) = identity(&cat, r) else {
                            continue;
                        };
                        let found = r
                            .content_ref(&a.manifest().archive_id)
                            .and_then(|c| self.ids.get(&c.archive).map(|j| (*j, c.loc)));
                        if let Some((j, loc)) = found {
                            map.entry(id).or_insert_with(Vec::new).push((
                                ai,
                                j,
                                loc,
                                r.message.content.clone(),
                            ));
                        }
                    }
                }
            }
            map
        })
    }

    /// Blobs stored by any archive of the chain: SHA-256 -> (archive, location).
    ///
    /// # Errors
    /// A damaged blob table in an archive opened for point reads (the others' were
    /// checked when they were opened).
    fn load_blob_index(&self) -> Result<&HashMap<String, (usize, Location)>> {
        if let Some(map) = self.blobs.get() {
            return Ok(map);
        }
        let mut map = HashMap::new();
        for (ai, a) in self.archives.iter().enumerate() {
            for b in a.blob_entries()?.iter() {
                map.insert(b.sha256.clone(), (ai, b.loc));
            }
        }
        Ok(self.blobs.get_or_init(|| map))
    }

    /// Whether every archive has its blobs in the pages of a POINT frame (opened for point
    /// reads, 1.4): each blob is then looked up in one page, not in a whole blob table.
    fn paged_blobs(&self) -> bool {
        self.archives.iter().all(Archive::has_point)
    }

    /// The archive storing blob `sha` (the newest, when several do) and where: one page
    /// of each archive's POINT frame, or the chain's blob index.
    ///
    /// # Errors
    /// A damaged blob table or page.
    fn find_blob(&self, sha: &str) -> Result<Option<(usize, Location)>> {
        if !self.paged_blobs() {
            return Ok(self.load_blob_index()?.get(sha).copied());
        }
        for (ai, a) in self.archives.iter().enumerate().rev() {
            if let Some(b) = a.point_blob(sha).transpose()?.flatten() {
                return Ok(Some((ai, b.loc)));
            }
        }
        Ok(None)
    }

    /// [`Chain::find_blob`] where it cannot fail: a damaged table or page finds nothing
    /// (the message is reported missing, never read wrong; [`Chain::require`] reports the
    /// damage).
    fn blob_at(&self, sha: &str) -> Option<(usize, Location)> {
        self.find_blob(sha).ok().flatten()
    }

    /// Mailbox `i` of archive `at` with only its records of UID `uid` (see
    /// [`Archive::catalog_for_uid`]). A catalog copied from another archive of the chain
    /// (`catalog_of`) is read from that archive's POINT pages when it has them.
    ///
    /// # Errors
    /// A damaged catalog or page.
    pub(crate) fn catalog_for_uid(&self, at: usize, i: usize, uid: u32) -> Result<MailboxRecord> {
        let a = &self.archives[at];
        if let Some(e) = a.dir.mailboxes.get(i)
            && let Some(of) = &e.catalog_of
            && let Some(&j) = self.ids.get(of)
            && let Some(k) = self.archives[j]
                .dir
                .mailboxes
                .iter()
                .position(|m| m.user == e.user && m.name == e.name && m.catalog_of.is_none())
            && let Some(rec) = self.archives[j].paged_for_uid(k, uid, Some(of))?
        {
            return Ok(rec);
        }
        a.catalog_for_uid(i, uid)
    }

    /// Where the bytes of `rec` (of mailbox `cat`, in archive `at`) are, or `None` when no
    /// archive of the chain holds them (or one of the blobs of a message stored in parts).
    pub(crate) fn resolve(
        &self,
        at: usize,
        cat: &MailboxRecord,
        rec: &MessageRecord,
    ) -> Option<Resolved> {
        let size = rec.message.content.size;
        let make = |archive: usize, loc: Location, c: &Content| {
            let blobs = c
                .blob_shas()
                .map(|sha| self.blob_at(sha))
                .collect::<Option<Vec<_>>>()?;
            Some(Resolved {
                archive,
                loc,
                sha256: c.sha256.clone(),
                size,
                stored: c.data.as_ref().map(|d| (d.sha256.clone(), d.size)),
                parts: c.parts.clone(),
                blobs,
            })
        };
        let own = &rec.message.content;
        if !rec.is_external() {
            return rec.loc.and_then(|l| make(at, l, own));
        }
        if let (Some(aid), Some(loc)) = (&rec.archive, rec.archive_loc)
            && let Some(&j) = self.ids.get(aid)
        {
            return make(j, loc, own);
        }
        if !own.sha256.is_empty() {
            let key = rec.stored_content().0;
            return self
                .sha_index()
                .get(key)
                .and_then(|&(j, loc)| make(j, loc, own));
        }
        // A since-archive's unread message: the same message in an earlier archive.
        let id = identity(cat, rec)?;
        let (_, j, loc, c) = self
            .identity_index()
            .get(&id)?
            .iter()
            .rev()
            .find(|(state, ..)| *state <= at)?;
        make(*j, *loc, c)
    }

    /// Like [`Chain::resolve`], but an error naming the message and the missing archive
    /// when no archive of the chain holds the bytes.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub(crate) fn require(
        &self,
        at: usize,
        cat: &MailboxRecord,
        rec: &MessageRecord,
    ) -> Result<Resolved> {
        // Damage in a blob table or page is reported here, not taken for a missing blob.
        for sha in rec.message.content.blob_shas() {
            self.find_blob(sha)?;
        }
        self.resolve(at, cat, rec).ok_or_else(|| {
            Error::NotFound(format!(
                "{}: {}",
                record_item(cat, rec),
                self.missing_reason(rec)
            ))
        })
    }

    /// Read now what [`Chain::copy_record`] will need of the archives' indexes for `rec`:
    /// the blob entries and the frame entries where its bytes and its blobs' bytes start
    /// (and the frames before, for their tar headers). With archives opened for point
    /// reads, these are read lazily, so damage in them would otherwise show only during
    /// the copy. A record whose bytes no archive holds is left to the copy to report.
    ///
    /// # Errors
    /// A damaged blob or frame table (or POINT page).
    pub(crate) fn index_for(
        &self,
        at: usize,
        cat: &MailboxRecord,
        rec: &MessageRecord,
    ) -> Result<()> {
        let r = match self.require(at, cat, rec) {
            Ok(r) => r,
            Err(Error::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        for (ai, loc) in std::iter::once((r.archive, r.loc)).chain(r.blobs.iter().copied()) {
            let a = &self.archives[ai];
            a.frame_entry(loc.frame)?;
            if let Some(before) = loc.frame.checked_sub(1) {
                a.frame_entry(before)?;
            }
        }
        Ok(())
    }

    /// Copy the bytes of `rec` (of mailbox `cat`, in the state of archive `at`) to `out`,
    /// checking their SHA-256.
    ///
    /// # Errors
    /// As [`Chain::require`] and [`Chain::copy`].
    pub fn copy_record(
        &self,
        cursors: &mut Vec<FrameCursor>,
        at: usize,
        cat: &MailboxRecord,
        rec: &MessageRecord,
        out: &mut dyn Write,
    ) -> Result<Resolved> {
        let res = self.require(at, cat, rec)?;
        self.copy(cursors, &res, &record_item(cat, rec), out)?;
        Ok(res)
    }

    /// Copy resolved bytes to `out`, checking their SHA-256. `cursors` holds one frame
    /// cache per archive.
    ///
    /// # Errors
    /// Damaged bytes ([`Error::Corrupt`] naming `item`), write errors.
    pub fn copy(
        &self,
        cursors: &mut Vec<FrameCursor>,
        r: &Resolved,
        item: &str,
        out: &mut dyn Write,
    ) -> Result<()> {
        while cursors.len() < self.archives.len() {
            cursors.push(FrameCursor::new());
        }
        if r.stored.is_none() {
            return self.archives[r.archive].copy_content(
                &mut cursors[r.archive],
                r.loc,
                r.size,
                &r.sha256,
                item,
                out,
            );
        }
        // Stored in parts: put the message together (spec 6.8) and check the whole.
        let (data, blobs) = self.copy_parts(cursors, r, item)?;
        let full = crate::mime::parts::assemble(&r.parts, &data, &blobs)
            .map_err(|e| Error::corrupt(item, format!("cannot put the message together: {e}")))?;
        use sha2::{Digest, Sha256};
        if full.len() as u64 != r.size || hex::encode(Sha256::digest(&full)) != r.sha256 {
            return Err(Error::corrupt(
                item,
                "the message rebuilt from its attachments does not match its SHA-256",
            ));
        }
        out.write_all(&full).map_err(|e| Error::io("<output>", e))
    }

    /// The data member of a message stored in parts and the bytes of each of its blobs,
    /// each checked against its SHA-256 (`(bytes, [])` for a message stored whole).
    ///
    /// # Errors
    /// Damaged bytes ([`Error::Corrupt`] naming `item`).
    pub(crate) fn copy_parts(
        &self,
        cursors: &mut Vec<FrameCursor>,
        r: &Resolved,
        item: &str,
    ) -> Result<(Vec<u8>, Vec<Vec<u8>>)> {
        while cursors.len() < self.archives.len() {
            cursors.push(FrameCursor::new());
        }
        let (sha, size) = match &r.stored {
            Some((s, n)) => (s.as_str(), *n),
            None => (r.sha256.as_str(), r.size),
        };
        let mut stub = Vec::with_capacity(crate::model::capacity_hint(size));
        self.archives[r.archive].copy_content(
            &mut cursors[r.archive],
            r.loc,
            size,
            sha,
            item,
            &mut stub,
        )?;
        let mut blobs = Vec::with_capacity(r.blobs.len());
        for (p, &(ai, loc)) in r.parts.iter().filter(|p| p.blob.is_some()).zip(&r.blobs) {
            let sha = p.blob.as_deref().unwrap_or_default();
            let mut b = Vec::with_capacity(crate::model::capacity_hint(p.size));
            self.archives[ai].copy_content(
                &mut cursors[ai],
                loc,
                p.size,
                sha,
                &format!("{item}: blob {sha}"),
                &mut b,
            )?;
            blobs.push(b);
        }
        Ok((stub, blobs))
    }

    /// A human description of why `rec` cannot be resolved.
    pub(crate) fn missing_reason(&self, rec: &MessageRecord) -> String {
        for sha in rec.message.content.blob_shas() {
            if self.blob_at(sha).is_none() {
                return format!("its attachment (blob {sha}) is in no archive given");
            }
        }
        match &rec.archive {
            Some(aid) => format!("its bytes are in archive {aid}, which is not given"),
            None if rec.message.content.sha256.is_empty() => {
                "it was unchanged in a since-archive and no earlier archive given holds it"
                    .to_string()
            }
            None => format!(
                "no archive given holds its bytes (SHA-256 {})",
                rec.message.content.sha256
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap().num_seconds(), 30 * 86_400);
        assert_eq!(parse_duration("90").unwrap().num_seconds(), 90);
        assert_eq!(parse_duration("2w").unwrap().num_seconds(), 2 * 604_800);
        assert!(parse_duration("3y").is_err());
        assert!(parse_duration("d").is_err());
    }

    #[test]
    fn times_as_people_write_them() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        for (text, want) in [
            ("2026-11-01", "2026-11-01T00:00:00Z"),
            ("2026-11-01 03:04", "2026-11-01T03:04:00Z"),
            ("2026-11-01T03:04:05", "2026-11-01T03:04:05Z"),
            ("2026-11-01T03:04:05+01:00", "2026-11-01T02:04:05Z"),
            ("1700000000", "2023-11-14T22:13:20Z"),
            ("7d", "2026-11-26T10:00:00Z"),
            ("12h ago", "2026-12-02T22:00:00Z"),
        ] {
            let got = parse_time_at(text, now).unwrap();
            let got = got.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            assert_eq!(got, want, "{text}");
        }
        for bad in ["yesterday", "2026-13-01", "7x", ""] {
            let e = parse_time_at(bad, now).unwrap_err().to_string();
            assert!(e.contains("expected a date"), "{bad}: {e}");
        }
    }
}
