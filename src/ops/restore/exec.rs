//! Carrying out a restore plan: per target user, per mailbox, the bytes found through the
//! chain and written by the store's writer (new mailboxes), merged into live ones, or
//! described (`--dry-run`).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};

use super::parallel;
use super::{Mode, PlannedMailbox, RestoreOptions, RestorePlan, RestoreStats};
use super::{keep_clear, selected_messages, state_catalog};
use crate::chain::{Chain, Resolved};
use crate::error::{Context, Error, Result, Within};
use crate::format::index::MailboxRecord;
use crate::format::reader::FrameCursor;
use crate::model::{MailboxMeta, MessageMeta, Name};
use crate::progress::{Event, Progress};
use crate::store::location::Location;
use crate::store::nofollow::DirFd;
use crate::store::{StoreWriter, Writer, attribute_key};

/// Carry out a plan (or, with `dry_run`, report what merge and side-folder modes would add
/// and skip, writing nothing).
///
/// # Errors
/// I/O errors on the target, a damaged catalog, a uidlist lock held too long; damaged message
/// bytes are not errors (see [`RestoreStats::lost`]).
pub fn restore(
    chain: &Chain,
    at: usize,
    p: &RestorePlan,
    opts: &RestoreOptions,
    dry_run: bool,
    progress: &mut dyn Progress,
) -> Result<RestoreStats> {
    let job = Job {
        chain,
        at,
        plan: p,
        opts,
        loc: opts.location()?,
        dry_run,
    };
    let mut stats = RestoreStats {
        warnings: chain
            .archives
            .iter()
            .flat_map(|a| a.damage.iter().cloned())
            .collect(),
        ..Default::default()
    };
    let mut by_user: BTreeMap<String, Vec<&PlannedMailbox>> = BTreeMap::new();
    for m in &p.mailboxes {
        by_user.entry(m.target_user.clone()).or_default().push(m);
    }
    let (total_messages, total_bytes) = planned_totals(p);
    progress.event(&Event::Start {
        operation: "restore".into(),
        archive_id: None,
        messages: Some(total_messages),
        bytes: Some(total_bytes),
    });
    let users: Vec<(String, Vec<&PlannedMailbox>)> = by_user.into_iter().collect();
    let units = parallel::units(job.loc, &users);
    let jobs = parallel::jobs(opts.jobs, units.len());
    if jobs <= 1 || dry_run {
        let mut reading = Reading::default();
        let done = users.iter().try_for_each(|(target, mbs)| {
            restore_user(&job, target, mbs, &mut reading, &mut stats, progress)
                .within(Context::user(target.as_str()))
        });
        // The users restored before an error are put in place all the same.
        let placed = reading.commits.flush();
        done.and(placed)?;
    } else {
        parallel::run(&job, &users, &units, jobs, &mut stats, progress)?;
    }
    progress.event(&Event::Done {
        archive_id: None,
        read_bytes: None,
        messages: stats.messages,
        bytes: stats.bytes,
        warnings: stats.warnings.len() as u64,
        expunged: 0,
    });
    Ok(stats)
}

/// Messages and message bytes the plan `p` restores (its mailboxes' selected messages and
/// deleted records, counted when the plan was made: no catalog is read again).
fn planned_totals(p: &RestorePlan) -> (u64, u64) {
    p.mailboxes.iter().fold((0u64, 0u64), |(m, b), mb| {
        (m + mb.messages, b.saturating_add(mb.bytes))
    })
}

/// What a restore (or each worker of a parallel one) carries from user to user: the frame
/// cursors, the messages and bytes copied so far (progress counts the whole run, not one
/// mailbox; a parallel run's workers each count their own, summed by `parallel::run`), and
/// the users waiting to be put in place ([`Commits`], flushed by the caller at the end).
#[derive(Default)]
pub(super) struct Reading {
    cursors: Vec<FrameCursor>,
    bytes: u64,
    messages: u64,
    pub(super) commits: Commits,
}

/// What every step of one restore reads.
pub(super) struct Job<'a> {
    chain: &'a Chain,
    at: usize,
    plan: &'a RestorePlan,
    opts: &'a RestoreOptions,
    loc: &'a Location,
    dry_run: bool,
}

/// What the mailboxes of one target user leave for its subscriptions and METADATA.
#[derive(Default)]
struct UserDone {
    attrs: Vec<(Name, Name)>,
    restored_names: Vec<Name>,
    new_names: Vec<Name>,
    inbox_guid: Option<String>,
}

/// Restore the planned mailboxes of one target user, then (unless a dry run) its
/// subscriptions and user-level METADATA, and commit.
pub(super) fn restore_user(
    job: &Job<'_>,
    target: &str,
    mbs: &[&PlannedMailbox],
    reading: &mut Reading,
    stats: &mut RestoreStats,
    progress: &mut dyn Progress,
) -> Result<()> {
    let opts = job.opts;
    progress.event(&Event::User {
        user: target.to_string(),
    });
    let mut w = Writer::open(job.loc, target, opts.owner, opts.inline_attachments)?;
    let mut done = UserDone::default();
    let source_user = mbs
        .first()
        .map(|m| m.source_user.clone())
        .unwrap_or_default();
    for m in mbs {
        restore_mailbox(job, &mut w, target, m, reading, &mut done, stats, progress)
            .within(Context::mailbox(target, &m.target_name))?;
    }
    if job.dry_run {
        return Ok(());
    }
    // Subscriptions and user-level METADATA.
    let archive = &job.chain.archives[job.at];
    let user_meta = archive.dir.users.iter().find(|u| u.name == source_user);
    let whole = job.plan.whole_users;
    let subs: Vec<Name> = match (opts.mode, user_meta) {
        (Mode::SideFolder, _) => done.new_names.clone(),
        (_, Some(u)) if whole => u.subscriptions.clone(),
        (_, Some(u)) => u
            .subscriptions
            .iter()
            .filter(|s| done.restored_names.contains(s))
            .cloned()
            .collect(),
        (_, None) => Vec::new(),
    };
    w.add_subscriptions(&subs)?;
    if whole && let Some(u) = user_meta {
        if let Some(g) = &done.inbox_guid {
            for a in &u.server_attributes {
                done.attrs
                    .push((attribute_key(g, a, true), a.value.clone()));
            }
        }
        done.attrs.extend(u.raw_attributes.iter().cloned());
    }
    if let Some(why) = w.add_attributes(&done.attrs)? {
        warn(stats, progress, why);
    }
    reading.commits.push(w)
}

/// Users restored whose mail roots, built aside, are not in place yet: a batch at a time,
/// all are made durable by one `syncfs` per file system, renamed into place, and the
/// renames made durable by another (instead of one `syncfs` and one `fsync` per user).
/// Until then Dovecot sees none of them; a user appears only once all its files are on disk.
#[derive(Default)]
pub(super) struct Commits {
    pending: Vec<Writer>,
}

/// Users per batch of [`Commits`]: bounds the directory handles held open.
const COMMIT_BATCH: usize = 32;

impl Commits {
    fn push(&mut self, w: Writer) -> Result<()> {
        self.pending.push(w);
        if self.pending.len() >= COMMIT_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Put every pending user in place (see [`Commits`]).
    ///
    /// # Errors
    /// The first error; the other users are put in place all the same.
    pub(super) fn flush(&mut self) -> Result<()> {
        let mut batch = std::mem::take(&mut self.pending);
        let mut first = None;
        let mut ok: Vec<&mut Writer> = Vec::with_capacity(batch.len());
        for w in &mut batch {
            match w.finish_writes() {
                Ok(()) => ok.push(w),
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        // One directory per file system holding a staged root.
        let mut fs_dirs: HashMap<u64, DirFd> = HashMap::new();
        for w in &mut ok {
            if let Some(d) = w.staged_in()
                && let Entry::Vacant(e) = fs_dirs.entry(d.device()?)
            {
                e.insert(d.reopen()?);
            }
        }
        for d in fs_dirs.values() {
            d.syncfs()?;
        }
        for w in ok {
            if let Err(e) = w.commit_synced() {
                first.get_or_insert(e);
            }
        }
        for d in fs_dirs.values() {
            d.syncfs()?;
        }
        first.map_or(Ok(()), Err)
    }
}

/// Record a warning and tell the progress sink.
fn warn(stats: &mut RestoreStats, progress: &mut dyn Progress, text: String) {
    progress.event(&Event::Warning {
        message: text.clone(),
    });
    stats.warnings.push(text);
}

/// The bytes of a mailbox's messages, found through the chain and written to the store's
/// writer as it asks for them; messages lost to damage are collected in `lost`.
type Bodies<'a> = dyn FnMut(usize, &mut dyn std::io::Write) -> Result<bool> + 'a;

/// Restore one planned mailbox: its selected messages (and deleted ones), merged into the
/// live mailbox, or written as a new one.
#[allow(clippy::too_many_arguments)] // the user's context, passed down from restore_user
fn restore_mailbox(
    job: &Job<'_>,
    w: &mut Writer,
    target: &str,
    m: &PlannedMailbox,
    reading: &mut Reading,
    done: &mut UserDone,
    stats: &mut RestoreStats,
    progress: &mut dyn Progress,
) -> Result<()> {
    let (chain, at, opts) = (job.chain, job.at, job.opts);
    let mut cat = match m.catalog {
        Some(i) => state_catalog(&chain.archives[at], i)?,
        None => MailboxRecord {
            user: m.source_user.clone(),
            mailbox: m.meta.clone(),
            messages: Vec::new(),
            deleted: Vec::new(),
        },
    };
    let records: Vec<_> = selected_messages(&opts.selection, &cat)
        .cloned()
        .chain(m.deleted.iter().cloned())
        .collect();
    cat.messages.clear();
    progress.event(&Event::Mailbox {
        user: target.to_string(),
        mailbox: m.target_name.to_string(),
        messages: records.len() as u64,
    });
    let (user, name) = (cat.user.clone(), cat.mailbox.name.clone());
    let resolved: Vec<_> = records
        .iter()
        .map(|r| (chain.resolve(at, &cat, r), r.message.uid))
        .collect();
    let mut metas: Vec<_> = records.into_iter().map(|r| r.message).collect();
    for (meta, (res, _)) in metas.iter_mut().zip(&resolved) {
        if let Some(r) = res {
            meta.content.sha256 = r.sha256.clone();
        }
    }
    let mut lost = Vec::new();
    let mut dups: Vec<String> = Vec::new();
    let mut bodies = |i: usize, out: &mut dyn std::io::Write| -> Result<bool> {
        crate::progress::check(progress)?;
        let Some((res, uid)) = resolved.get(i) else {
            return Ok(false);
        };
        let item = format!("user {user} mailbox {name} UID {uid}");
        let Some(res): &Option<Resolved> = res else {
            lost.push(format!(
                "{item}: message bytes lost to damage in the archive; not restored"
            ));
            return Ok(false);
        };
        match chain.copy(&mut reading.cursors, res, &item, out) {
            Ok(()) => {
                reading.bytes = reading.bytes.saturating_add(res.size);
                reading.messages += 1;
                progress.event(&Event::Bytes {
                    bytes: reading.bytes,
                    messages: reading.messages,
                });
                Ok(true)
            }
            Err(e @ Error::Corrupt { .. }) => {
                lost.push(e.to_string());
                Ok(false)
            }
            Err(e) => Err(e),
        }
    };
    let mut meta = cat.mailbox.clone();
    meta.name = m.target_name.clone();
    if opts.mode == Mode::SideFolder && !m.exists {
        meta.guid = Some(uuid::Uuid::new_v4().simple().to_string());
        // 0: the writer takes the next value of the root's UIDVALIDITY counter.
        meta.uidvalidity = 0;
        meta.attributes.clear();
    }
    let where_ = format!("user {target} mailbox {}", m.target_name);
    let mut warnings = Vec::new();
    if opts.mode != Mode::Exact && m.exists {
        warnings = merge_into_live(job, w, &where_, m, &meta, &metas, &mut bodies, stats)?;
    } else if job.dry_run {
        stats.report.push(format!(
            "would create {where_} with {} messages (UIDVALIDITY {})",
            metas.len(),
            if meta.uidvalidity == 0 {
                "new, from the mail root's counter".to_string()
            } else {
                format!("{}, original UIDs", meta.uidvalidity)
            }
        ));
    } else {
        let new = NewMailbox {
            m,
            where_: &where_,
            meta,
            metas,
        };
        create_mailbox(job, w, new, &mut bodies, &mut dups, done, stats)?;
    }
    for text in warnings {
        warn(stats, progress, text);
    }
    // Records left out for sharing a UID are lost to archive damage too.
    stats.lost += dups.len() as u64;
    for l in lost.into_iter().chain(dups) {
        warn(stats, progress, l);
    }
    stats.mailboxes += 1;
    done.restored_names.push(m.meta.name.clone());
    Ok(())
}

/// Merge the messages into a live Maildir mailbox (merge and side-folder modes): those
/// already there are skipped, the others added under new UIDs. Returns the warnings
/// (keywords the mailbox cannot take).
#[allow(clippy::too_many_arguments)] // one mailbox's context, from restore_mailbox
fn merge_into_live(
    job: &Job<'_>,
    w: &mut Writer,
    where_: &str,
    m: &PlannedMailbox,
    meta: &MailboxMeta,
    metas: &[MessageMeta],
    bodies: &mut Bodies<'_>,
    stats: &mut RestoreStats,
) -> Result<Vec<String>> {
    let dry_run = job.dry_run;
    let Writer::Maildir(mw) = w else {
        return Err(Error::Usage(format!(
            "{where_}: merging into an existing {} mailbox is not supported yet",
            job.loc.format
        )));
    };
    let rep = mw.merge_mailbox(meta, metas, bodies, dry_run)?;
    for (old, new) in &rep.added {
        stats.report.push(format!(
            "{} {where_}: UID {old} of {} / {} as UID {}",
            if dry_run { "would add" } else { "added" },
            m.source_user,
            m.meta.name,
            if *new == 0 {
                "(assigned by Dovecot)".to_string()
            } else {
                new.to_string()
            }
        ));
    }
    for (old, why) in &rep.present {
        stats
            .report
            .push(format!("skip {where_}: UID {old} already there ({why})"));
    }
    stats.present += rep.present.len() as u64;
    if !dry_run {
        stats.messages += rep.added.len() as u64;
        stats.bytes = stats.bytes.saturating_add(rep.bytes);
        stats.lost += rep.lost;
    }
    Ok(rep
        .dropped_keywords
        .iter()
        .map(|k| format!(
            "{where_}: keyword {k} dropped: the mailbox already uses all 26 keyword letters (keywords beyond them live in Dovecot's index, which a merge into a live mailbox does not write)"
        ))
        .collect())
}

/// A mailbox to create: the plan's entry, its name for messages, metadata and messages.
struct NewMailbox<'a> {
    m: &'a PlannedMailbox,
    where_: &'a str,
    meta: MailboxMeta,
    metas: Vec<MessageMeta>,
}

/// Write a new mailbox. Two records with one UID (a damaged archive): the first is
/// restored, the others are named in `dups` and left out (a store cannot hold them under
/// one UID). Exact and merge modes keep UIDs clear of what clients may hold
/// ([`keep_clear`]).
fn create_mailbox(
    job: &Job<'_>,
    w: &mut Writer,
    new: NewMailbox<'_>,
    bodies: &mut Bodies<'_>,
    dups: &mut Vec<String>,
    done: &mut UserDone,
    stats: &mut RestoreStats,
) -> Result<()> {
    let NewMailbox {
        m,
        where_,
        mut meta,
        metas,
    } = new;
    let mut seen_uids = HashSet::new();
    let mut keep: Vec<usize> = Vec::with_capacity(metas.len());
    for (i, m) in metas.iter().enumerate() {
        if seen_uids.insert(m.uid) {
            keep.push(i);
        } else {
            dups.push(format!(
                "{where_} UID {}: another message of the mailbox has the same UID (damaged archive); left out",
                m.uid
            ));
        }
    }
    let mut kept: Vec<MessageMeta> = keep.iter().map(|&i| metas[i].clone()).collect();
    if job.opts.mode != Mode::SideFolder {
        let policy = job.opts.continuity;
        let raised = keep_clear(job.chain, job.at, policy, w, m, &mut meta, &mut kept)?;
        stats
            .report
            .extend(raised.map(|r| format!("{where_}: {r}")));
    }
    let mut kept_bodies = |j: usize, out: &mut dyn std::io::Write| bodies(keep[j], out);
    let ws = w.write_mailbox(&meta, &kept, &mut kept_bodies)?;
    stats
        .report
        .push(format!("created {where_} with {} messages", ws.messages));
    stats.messages += ws.messages;
    stats.bytes = stats.bytes.saturating_add(ws.bytes);
    stats.lost += ws.lost;
    done.new_names.push(meta.name.clone());
    if let Some(g) = &meta.guid {
        for a in &meta.attributes {
            done.attrs
                .push((attribute_key(g, a, false), a.value.clone()));
        }
        if meta.name.as_bytes() == b"INBOX" {
            done.inbox_guid = Some(g.clone());
        }
    }
    Ok(())
}
