//! Restore: put mail from an archive (or a chain) back into a Maildir store.
//!
//! Three modes ([`Mode`]):
//! - **exact**: into mailboxes that do not exist yet, with their original UIDs, UIDVALIDITY,
//!   GUIDs, flags, keywords, dates, subscriptions and METADATA. A target mailbox that holds
//!   mail makes the whole restore fail with [`Error::Conflict`] before anything is written.
//! - **merge**: into existing, possibly live mailboxes: only messages not already there are
//!   added, with new UIDs from the mailbox's next UID on, under Dovecot's uidlist lock
//!   ([`crate::store::maildir::MaildirWriter::merge_mailbox`]); a mailbox that does not exist is created as in
//!   exact mode. Running the same restore twice adds nothing.
//! - **side-folder**: into a new folder tree (`Restored/<date>/<name>`, or `--into`), with a
//!   new mailbox GUID and UIDVALIDITY, so the user can look before moving anything.
//!
//! [`plan`] selects what to restore ([`Selection`]) and checks, before anything is written,
//! that the chain holds every selected message's bytes and (exact mode) that every target
//! is free. Messages whose bytes are damaged in the archive are skipped and counted in
//! [`RestoreStats::lost`]; everything else is restored.

use std::collections::BTreeMap;

use crate::chain::Chain;
use crate::continuity::{self, Continuity, Known};
use crate::error::{Error, Result};
use crate::format::index::{MailboxRecord, MessageRecord};
use crate::format::reader::Archive;
use crate::model::{MailboxMeta, Name, UserMeta, grammar};
use crate::progress::{Event, Progress};
use crate::select::Selection;
use crate::store::Writer;
use crate::store::location::StoreFormat;
use crate::store::location::{Location, check_user_name};
use crate::store::{StoreWriter, attribute_key, check_mailbox_name};

/// How restored mail meets the mail already in the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Only into mailboxes that do not exist yet; everything as it was.
    #[default]
    Exact,
    /// Add what is missing to existing mailboxes, with new UIDs.
    Merge,
    /// Into a new folder tree beside the user's mail.
    SideFolder,
}

/// What to restore, and where.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Target store.
    pub location: Option<Location>,
    /// Which users, mailboxes and messages.
    pub selection: Selection,
    /// Restore into this user instead of the original one.
    pub to_user: Option<String>,
    /// Owner for everything written, instead of the archived owner.
    pub owner: Option<(u32, u32)>,
    /// Restore mode.
    pub mode: Mode,
    /// Side-folder prefix (default `Restored/<date of the archive>`).
    pub into: Option<String>,
    /// Also restore the chain's records of deleted mail (mail deleted between archives).
    pub deleted: bool,
    /// dbox targets: keep attachments inside the messages, even where the location has an
    /// attachment directory (for Dovecot 2.4, which no longer writes single-instance
    /// attachments).
    pub inline_attachments: bool,
    /// How mailboxes restored with their UIDs keep clear of UIDs and modseqs IMAP clients
    /// may hold (see [`crate::continuity`]).
    pub continuity: Continuity,
}

impl RestoreOptions {
    fn location(&self) -> Result<&Location> {
        self.location
            .as_ref()
            .ok_or_else(|| Error::Usage("no target location".into()))
    }
}

/// One mailbox to restore.
#[derive(Clone, Debug)]
pub struct PlannedMailbox {
    /// Index in the state archive's mailbox list, when the mailbox is in the state.
    pub catalog: Option<usize>,
    /// Mailbox metadata (from the state, or as last seen for a deleted mailbox).
    pub meta: MailboxMeta,
    /// Records of deleted mail to restore too (`--deleted`).
    pub deleted: Vec<MessageRecord>,
    /// User in the archive.
    pub source_user: Name,
    /// User to write to.
    pub target_user: String,
    /// Name to write to.
    pub target_name: Name,
    /// Messages selected.
    pub messages: u64,
    /// Whether the target mailbox exists (merge and side-folder modes merge into it).
    pub exists: bool,
}

/// Everything a restore will do, checked against the target before writing.
#[derive(Clone, Debug, Default)]
pub struct RestorePlan {
    /// Mailboxes in archive order.
    pub mailboxes: Vec<PlannedMailbox>,
    /// Whether whole users are restored in exact mode (then subscriptions and server
    /// METADATA are too).
    pub whole_users: bool,
}

/// Counts of a finished restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreStats {
    /// Mailboxes written.
    pub mailboxes: u64,
    /// Messages written.
    pub messages: u64,
    /// Messages skipped because the target already had them (merge).
    pub present: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Messages whose bytes were damaged in the archive (not written).
    pub lost: u64,
    /// Named problems (damage found in the archive, lost messages).
    pub warnings: Vec<String>,
    /// One line per message or mailbox: what was (or, in a dry run, would be) done.
    pub report: Vec<String>,
}

fn selected_messages<'a>(
    sel: &'a Selection,
    cat: &'a MailboxRecord,
) -> impl Iterator<Item = &'a MessageRecord> + 'a {
    cat.messages
        .iter()
        .filter(move |r| sel.message_matches(&cat.user, &cat.mailbox.name, &r.message))
}

/// Catalog `i` of `archive` as state: the archive's own records of deleted mail are history
/// and are dropped; only `--deleted` brings deleted mail back (from the whole chain).
fn state_catalog(archive: &Archive, i: usize) -> Result<MailboxRecord> {
    let mut c = archive.catalog(i)?;
    c.deleted.clear();
    Ok(c)
}

/// Check the archived metadata of mailbox `cat` and of `records` that a restore or an
/// export writes into Dovecot's control files against their grammar
/// ([`crate::model::grammar`]), before anything is written.
///
/// # Errors
/// [`Error::Corrupt`] naming the mailbox or message and the value.
pub fn check_control_fields<'a>(
    cat: &MailboxRecord,
    records: impl IntoIterator<Item = &'a MessageRecord>,
) -> Result<()> {
    let mailbox = || format!("user {} mailbox {}", cat.user, cat.mailbox.name);
    grammar::check_mailbox(&cat.mailbox).map_err(|e| Error::corrupt(mailbox(), e))?;
    for r in records {
        grammar::check_message(&r.message)
            .map_err(|e| Error::corrupt(crate::chain::record_item(cat, r), e))?;
    }
    Ok(())
}

/// [`check_control_fields`] for a user's own metadata (subscriptions, server METADATA).
///
/// # Errors
/// [`Error::Corrupt`] naming the user and the value.
pub fn check_user_fields(u: &UserMeta) -> Result<()> {
    grammar::check_user(u).map_err(|e| Error::corrupt(format!("user {}", u.name), e))
}

fn side_name(prefix: &str, name: &Name) -> Name {
    let mut n = prefix.trim_end_matches('/').as_bytes().to_vec();
    n.push(b'/');
    n.extend_from_slice(name.as_bytes());
    Name::from_bytes(n)
}

/// The target directory of each mailbox planned so far, per target user.
type TargetDirs = BTreeMap<(String, Vec<Vec<u8>>), Name>;

/// Refuse a target name the location's layout cannot hold, or one whose directory is that
/// of another mailbox planned for the same user (`a.b` and `a/b` into Maildir++): Dovecot
/// would show one mailbox with the mail of both.
///
/// # Errors
/// [`Error::Usage`] naming the mailbox(es) and why.
fn check_layout(loc: &Location, user: &str, name: &Name, dirs: &mut TargetDirs) -> Result<()> {
    let comps = loc.mailbox_dir_components(name);
    let shown = String::from_utf8_lossy(&comps.join(&b'/')).into_owned();
    if let Some(other) = dirs.get(&(user.to_string(), comps.clone())) {
        return Err(Error::Usage(format!(
            "user {user}: mailboxes {other} and {name} would both be stored in {} of the target ({}), so Dovecot would show one mailbox with the mail of both; nothing was written. Restore them into a location that holds both (Maildir LAYOUT=fs, sdbox, mdbox), or one of them at a time with --mailbox",
            if shown.is_empty() {
                "the mail root"
            } else {
                &shown
            },
            loc.spec
        )));
    }
    if let Some(why) = loc.unholdable_mailbox_name(name) {
        return Err(Error::Usage(format!(
            "user {user}: mailbox {name} cannot be restored into {}: {why}, and Dovecot refuses the name; nothing was written. Restore it into a location of another layout, or leave it out with --mailbox",
            loc.spec
        )));
    }
    dirs.insert((user.to_string(), comps), name.clone());
    Ok(())
}

/// Select what to restore from the state of archive `at` of `chain`, check that the chain
/// holds every selected message's bytes, and check the target.
///
/// # Errors
/// [`Error::NotFound`] for an unknown user or mailbox or for bytes no archive given holds
/// (naming the archives to add), [`Error::Corrupt`] for hostile names, [`Error::Conflict`]
/// when an exact-mode target mailbox holds mail.
pub fn plan(chain: &Chain, at: usize, opts: &RestoreOptions) -> Result<RestorePlan> {
    let archive: &Archive = &chain.archives[at];
    let sel = &opts.selection;
    let loc = opts.location()?;
    let mut p = RestorePlan {
        whole_users: sel.mailboxes.is_empty() && sel.whole_mailboxes() && opts.mode == Mode::Exact,
        ..Default::default()
    };
    if let Some(u) = &sel.user {
        let known = archive
            .dir
            .users
            .iter()
            .any(|m| m.name.as_bytes() == u.as_bytes())
            || archive
                .dir
                .mailboxes
                .iter()
                .any(|m| m.user.as_bytes() == u.as_bytes())
            // A user no longer in the state (gone from the store) still has deleted mail.
            || opts.deleted
                && chain.archives[..=at].iter().any(|a| {
                    a.dir.gone.iter().any(|m| m.user.as_bytes() == u.as_bytes())
                });
        if !known {
            return Err(Error::NotFound(format!("user {u} is not in the archive")));
        }
    }
    let prefix = opts.into.clone().unwrap_or_else(|| {
        let day = archive
            .manifest()
            .created
            .get(..10)
            .unwrap_or("unknown")
            .to_string();
        format!("Restored/{day}")
    });
    // Mailboxes of the state, then (with --deleted) the chain's deleted mail.
    let mut cands: Vec<(Option<usize>, MailboxRecord)> = Vec::new();
    for (i, m) in archive.dir.mailboxes.iter().enumerate() {
        if !sel.user_matches(&m.user) || !sel.mailbox_matches(&m.user, &m.name) {
            continue;
        }
        // The messages are read again, one mailbox at a time, below: memory stays bounded
        // by one catalog.
        let mut cat = state_catalog(archive, i)?;
        cat.messages = Vec::new();
        cands.push((Some(i), cat));
    }
    if opts.deleted {
        let filter = crate::inspect::ListFilter::default();
        for (cat, rec) in crate::inspect::deleted_in_chain(chain, &filter)? {
            if !sel.user_matches(&cat.user) || !sel.mailbox_matches(&cat.user, &cat.mailbox.name) {
                continue;
            }
            if !sel.message_matches(&cat.user, &cat.mailbox.name, &rec.message) {
                continue;
            }
            let slot = cands.iter_mut().find(|(_, c)| {
                c.user == cat.user
                    && (c.mailbox.name == cat.mailbox.name
                        || (c.mailbox.guid.is_some() && c.mailbox.guid == cat.mailbox.guid))
            });
            match slot {
                Some((_, c)) => c.deleted.push(rec),
                None => {
                    let mut c = cat.clone();
                    c.messages.clear();
                    c.deleted = vec![rec];
                    cands.push((None, c));
                }
            }
        }
    }
    let mut users: BTreeMap<Name, ()> = BTreeMap::new();
    let mut users_checked = std::collections::HashSet::new();
    let mut missing = Vec::new();
    let mut missing_ids: BTreeMap<String, u64> = BTreeMap::new();
    let mut writers: BTreeMap<String, Writer> = BTreeMap::new();
    let mut live_guids: BTreeMap<String, std::collections::HashMap<String, Name>> = BTreeMap::new();
    let mut dirs = TargetDirs::new();
    for (catalog, mut cat) in cands {
        if let Some(i) = catalog {
            cat.messages = archive.catalog(i)?.messages;
        }
        let chosen: Vec<&MessageRecord> = selected_messages(sel, &cat)
            .chain(cat.deleted.iter())
            .collect();
        if chosen.is_empty() && !sel.whole_mailboxes() {
            continue;
        }
        // Bytes must be in the chain before anything is written. Bytes this archive
        // should hold but lost to damage (a frame lost, no index) are not missing from
        // the chain: those messages are restored as lost, and named.
        let damaged = !archive.damage.is_empty();
        for r in &chosen {
            let lost_here = damaged && !r.is_external();
            if !lost_here && chain.resolve(at, &cat, r).is_none() {
                if missing.len() < 5 {
                    missing.push(format!(
                        "user {} mailbox {} UID {}: {}",
                        cat.user,
                        cat.mailbox.name,
                        r.message.uid,
                        chain.missing_reason(r)
                    ));
                }
                *missing_ids
                    .entry(r.archive.clone().unwrap_or_else(|| "?".into()))
                    .or_default() += 1;
            }
        }
        users.insert(cat.user.clone(), ());
        let target = match &opts.to_user {
            Some(t) => t.clone(),
            None => check_user_name(cat.user.as_bytes())?.to_string(),
        };
        check_user_name(target.as_bytes()).map_err(|e| Error::Usage(e.to_string()))?;
        let item = format!("user {} mailbox {}", cat.user, cat.mailbox.name);
        check_mailbox_name(&cat.mailbox.name, &item)?;
        let target_name = if opts.mode == Mode::SideFolder {
            side_name(&prefix, &cat.mailbox.name)
        } else {
            cat.mailbox.name.clone()
        };
        check_mailbox_name(&target_name, &item)?;
        check_layout(loc, &target, &target_name, &mut dirs)?;
        check_control_fields(&cat, chosen.iter().copied())?;
        if !users_checked.contains(&cat.user)
            && let Some(u) = archive.dir.users.iter().find(|u| u.name == cat.user)
        {
            check_user_fields(u)?;
            users_checked.insert(cat.user.clone());
        }
        if !writers.contains_key(&target) {
            let w = Writer::open(loc, &target, opts.owner, opts.inline_attachments)?;
            w.check_root()?;
            writers.insert(target.clone(), w);
        }
        let mut target_name = target_name;
        let mut exists = match writers.get(&target) {
            Some(w) => w.mailbox_exists(&target_name)?,
            None => false,
        };
        // Merge: a mailbox renamed since the backup keeps its GUID; merge into it under its
        // new name rather than recreate the old name with copies of its mail.
        if opts.mode == Mode::Merge && !exists && loc.kind == StoreFormat::Maildir {
            if !live_guids.contains_key(&target) {
                let r = crate::store::maildir::MaildirReader::open(loc, &target)?;
                live_guids.insert(target.clone(), r.mailboxes_by_guid()?);
            }
            if let Some(now) = cat
                .mailbox
                .guid
                .as_ref()
                .and_then(|g| live_guids.get(&target).and_then(|m| m.get(g)))
            {
                target_name = now.clone();
                exists = true;
            }
        }
        if opts.mode == Mode::Exact
            && let Some(w) = writers.get(&target)
        {
            w.check_free(&target_name)?;
        }
        if exists && opts.mode != Mode::Exact && loc.kind != StoreFormat::Maildir {
            return Err(Error::Usage(format!(
                "user {target} mailbox {target_name}: merging into an existing {} mailbox is not supported yet; restore into a new location, or into a mailbox that does not exist (--mode side-folder --into PREFIX)",
                loc.format
            )));
        }
        p.mailboxes.push(PlannedMailbox {
            catalog,
            meta: cat.mailbox.clone(),
            deleted: cat.deleted.clone(),
            source_user: cat.user.clone(),
            target_user: target,
            target_name,
            messages: chosen.len() as u64,
            exists,
        });
    }
    if !missing.is_empty() {
        let total: u64 = missing_ids.values().sum();
        let ids: Vec<String> = missing_ids
            .iter()
            .filter(|(k, _)| k.as_str() != "?")
            .map(|(k, n)| format!("{k} ({n} messages)"))
            .collect();
        return Err(Error::NotFound(format!(
            "{total} messages' bytes are in no archive given{}; nothing was written. First: {}",
            if ids.is_empty() {
                String::new()
            } else {
                format!(" (add archive {})", ids.join(", "))
            },
            missing.join("; ")
        )));
    }
    if users.len() > 1 && opts.to_user.is_some() {
        return Err(Error::Usage(
            "--to-user needs --user when the archive holds several users".into(),
        ));
    }
    if p.mailboxes.is_empty() {
        return Err(Error::NotFound(match (&sel.user, sel.mailboxes.first()) {
            (Some(u), Some(b)) => {
                format!(
                    "nothing to restore: no mailbox {b} of user {u} (or no message selected) in the archive"
                )
            }
            (None, Some(b)) => {
                format!(
                    "nothing to restore: no mailbox {b} (or no message selected) in the archive"
                )
            }
            _ => "nothing to restore: no mailbox or message selected in the archive".into(),
        }));
    }
    Ok(p)
}

/// What the newest archive of `chain` after `at` records of `user`'s mailbox `mb` (the same
/// name or GUID, its catalog read): what the restored state may be older than.
///
/// # Errors
/// A damaged catalog.
fn newest_state(chain: &Chain, at: usize, user: &Name, mb: &MailboxMeta) -> Result<Option<Known>> {
    for a in chain
        .archives
        .get(at + 1..)
        .unwrap_or_default()
        .iter()
        .rev()
    {
        let Some(i) = a
            .dir
            .mailboxes
            .iter()
            .position(|e| &e.user == user && e.name == mb.name)
        else {
            continue;
        };
        let m = a.catalog(i)?.mailbox;
        if mb.guid.is_some() && m.guid != mb.guid {
            continue;
        }
        return Ok(Some(Known {
            uidvalidity: m.uidvalidity,
            uidnext: m.uidnext,
            highest_modseq: m.highest_modseq,
        }));
    }
    Ok(None)
}

/// Set UIDNEXT, HIGHESTMODSEQ and MODSEQs of mailbox `m`, about to be written with its
/// UIDs, clear of what IMAP clients may hold ([`continuity::apply`], given the live
/// mailbox of the target and the chain's newest state); what was raised, for the report.
///
/// # Errors
/// A damaged live uidlist or index, a damaged catalog.
fn keep_clear(
    chain: &Chain,
    at: usize,
    policy: Continuity,
    w: &Writer,
    m: &PlannedMailbox,
    meta: &mut MailboxMeta,
    messages: &mut [crate::model::MessageMeta],
) -> Result<Option<String>> {
    let live = w.live_state(&meta.name)?;
    let newest = newest_state(chain, at, &m.source_user, &m.meta)?;
    Ok(
        match continuity::apply(policy, meta, messages, live, newest) {
            continuity::Outcome::Raised {
                uidnext,
                highest_modseq,
            } => Some(format!(
                "UIDNEXT {uidnext}, HIGHESTMODSEQ {highest_modseq} (above what IMAP clients may hold)"
            )),
            _ => None,
        },
    )
}

/// Describe a plan, one line per mailbox (for `--dry-run` of exact mode).
pub fn describe(p: &RestorePlan, opts: &RestoreOptions) -> Vec<String> {
    p.mailboxes
        .iter()
        .map(|m| {
            let root = opts
                .location
                .as_ref()
                .and_then(|l| l.root_of(&m.target_user).ok())
                .map(|r| r.display().to_string())
                .unwrap_or_default();
            format!(
                "restore {} / {} ({} messages) -> user {} mailbox {} in {}",
                m.source_user, m.meta.name, m.messages, m.target_user, m.target_name, root
            )
        })
        .collect()
}

/// Messages and message bytes the plan `p` restores (its mailboxes' selected messages and
/// deleted records).
fn planned_totals(archive: &Archive, p: &RestorePlan, sel: &Selection) -> Result<(u64, u64)> {
    let (mut messages, mut bytes) = (0u64, 0u64);
    for m in &p.mailboxes {
        if let Some(i) = m.catalog {
            let cat = state_catalog(archive, i)?;
            for r in selected_messages(sel, &cat) {
                messages += 1;
                bytes = bytes.saturating_add(r.message.content.size);
            }
        }
        for r in &m.deleted {
            messages += 1;
            bytes = bytes.saturating_add(r.message.content.size);
        }
    }
    Ok((messages, bytes))
}

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
    let archive = &chain.archives[at];
    let loc = opts.location()?;
    let sel = &opts.selection;
    let mut stats = RestoreStats {
        warnings: chain
            .archives
            .iter()
            .flat_map(|a| a.damage.iter().cloned())
            .collect(),
        ..Default::default()
    };
    let mut cursors = Vec::new();
    let mut by_user: BTreeMap<String, Vec<&PlannedMailbox>> = BTreeMap::new();
    for m in &p.mailboxes {
        by_user.entry(m.target_user.clone()).or_default().push(m);
    }
    let (total_messages, total_bytes) = planned_totals(archive, p, sel)?;
    progress.event(&Event::Start {
        operation: "restore".into(),
        archive_id: None,
        messages: Some(total_messages),
        bytes: Some(total_bytes),
    });
    // Counted over the whole run, not per mailbox.
    let (mut run_bytes, mut run_messages) = (0u64, 0u64);
    for (target, mbs) in by_user {
        progress.event(&Event::User {
            user: target.clone(),
        });
        let mut w = Writer::open(loc, &target, opts.owner, opts.inline_attachments)?;
        let mut attrs = Vec::new();
        let mut restored_names = Vec::new();
        let mut new_names = Vec::new();
        let source_user = mbs
            .first()
            .map(|m| m.source_user.clone())
            .unwrap_or_default();
        let mut inbox_guid = None;
        for m in mbs {
            let mut cat = match m.catalog {
                Some(i) => state_catalog(archive, i)?,
                None => MailboxRecord {
                    user: m.source_user.clone(),
                    mailbox: m.meta.clone(),
                    messages: Vec::new(),
                    deleted: Vec::new(),
                },
            };
            let records: Vec<MessageRecord> = selected_messages(sel, &cat)
                .cloned()
                .chain(m.deleted.iter().cloned())
                .collect();
            cat.messages.clear();
            progress.event(&Event::Mailbox {
                user: target.clone(),
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
                let Some(res) = res else {
                    lost.push(format!(
                        "{item}: message bytes lost to damage in the archive; not restored"
                    ));
                    return Ok(false);
                };
                match chain.copy(&mut cursors, res, &item, out) {
                    Ok(()) => {
                        run_bytes = run_bytes.saturating_add(res.size);
                        run_messages += 1;
                        progress.event(&Event::Bytes {
                            bytes: run_bytes,
                            messages: run_messages,
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
            let into_existing = opts.mode != Mode::Exact && m.exists;
            if opts.mode == Mode::SideFolder && !m.exists {
                meta.guid = Some(uuid::Uuid::new_v4().simple().to_string());
                // 0: the writer takes the next value of the root's UIDVALIDITY counter.
                meta.uidvalidity = 0;
                meta.attributes.clear();
            }
            let where_ = format!("user {target} mailbox {}", m.target_name);
            if into_existing {
                let Writer::Maildir(mw) = &mut w else {
                    return Err(Error::Usage(format!(
                        "{where_}: merging into an existing {} mailbox is not supported yet",
                        loc.format
                    )));
                };
                let rep = mw.merge_mailbox(&meta, &metas, &mut bodies, dry_run)?;
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
                for k in &rep.dropped_keywords {
                    let text = format!(
                        "{where_}: keyword {k} dropped: the mailbox already uses all 26 keyword letters (keywords beyond them live in Dovecot's index, which a merge into a live mailbox does not write)"
                    );
                    progress.event(&Event::Warning {
                        message: text.clone(),
                    });
                    stats.warnings.push(text);
                }
                stats.present += rep.present.len() as u64;
                if !dry_run {
                    stats.messages += rep.added.len() as u64;
                    stats.bytes = stats.bytes.saturating_add(rep.bytes);
                    stats.lost += rep.lost;
                }
            } else if dry_run {
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
                // Two records with one UID (a damaged archive): the first is restored, the
                // others are named and left out (a store cannot hold them under one UID).
                let mut seen_uids = std::collections::HashSet::new();
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
                let mut kept: Vec<crate::model::MessageMeta> =
                    keep.iter().map(|&i| metas[i].clone()).collect();
                if opts.mode != Mode::SideFolder {
                    let raised =
                        keep_clear(chain, at, opts.continuity, &w, m, &mut meta, &mut kept)?;
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
                new_names.push(meta.name.clone());
                if let Some(g) = &meta.guid {
                    for a in &meta.attributes {
                        attrs.push((attribute_key(g, a, false), a.value.clone()));
                    }
                    if meta.name.as_bytes() == b"INBOX" {
                        inbox_guid = Some(g.clone());
                    }
                }
            }
            // Records left out for sharing a UID are lost to archive damage too.
            stats.lost += dups.len() as u64;
            for l in lost.into_iter().chain(dups) {
                progress.event(&Event::Warning { message: l.clone() });
                stats.warnings.push(l);
            }
            stats.mailboxes += 1;
            restored_names.push(m.meta.name.clone());
        }
        if dry_run {
            continue;
        }
        // Subscriptions and user-level METADATA.
        let user_meta = archive.dir.users.iter().find(|u| u.name == source_user);
        let subs: Vec<Name> = match (opts.mode, user_meta) {
            (Mode::SideFolder, _) => new_names.clone(),
            (_, Some(u)) if p.whole_users => u.subscriptions.clone(),
            (_, Some(u)) => u
                .subscriptions
                .iter()
                .filter(|s| restored_names.contains(s))
                .cloned()
                .collect(),
            (_, None) => Vec::new(),
        };
        w.add_subscriptions(&subs)?;
        if p.whole_users
            && let Some(u) = user_meta
        {
            if let Some(g) = &inbox_guid {
                for a in &u.server_attributes {
                    attrs.push((attribute_key(g, a, true), a.value.clone()));
                }
            }
            attrs.extend(u.raw_attributes.iter().cloned());
        }
        if let Err(e) = w.add_attributes(&attrs) {
            match e {
                Error::Usage(msg) => {
                    progress.event(&Event::Warning {
                        message: msg.clone(),
                    });
                    stats.warnings.push(msg);
                }
                other => return Err(other),
            }
        }
        w.commit()?;
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
