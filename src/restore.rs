//! Restore (exact mode): put mailboxes from an archive back into a Maildir store with their
//! original UIDs, UIDVALIDITY, GUIDs, flags, keywords, dates, subscriptions and METADATA.
//!
//! [`plan`] selects what to restore and checks every target mailbox before anything is
//! written: one that exists and holds mail makes the whole restore fail with
//! [`Error::Conflict`]. `--dry-run` stops after the plan. Messages whose bytes are damaged
//! in the archive are skipped and counted in [`RestoreStats::lost`]; everything else is
//! restored.

use std::collections::BTreeMap;

use crate::chain::Chain;
use crate::error::{Error, Result};
use crate::format::reader::Archive;
use crate::model::Name;
use crate::progress::{Event, Progress};
use crate::store::location::{Location, check_user_name};
use crate::store::maildir::MaildirWriter;
use crate::store::{StoreWriter, attribute_key, check_mailbox_name};

/// What to restore, and where.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Target store.
    pub location: Location,
    /// Only this user of the archive.
    pub user: Option<String>,
    /// Only this mailbox (exact IMAP name, `/` separator).
    pub mailbox: Option<String>,
    /// Restore into this user instead of the original one.
    pub to_user: Option<String>,
    /// Owner for everything written, instead of the archived owner.
    pub owner: Option<(u32, u32)>,
}

/// One mailbox to restore.
#[derive(Clone, Debug)]
pub struct PlannedMailbox {
    /// Index in the archive's mailbox list.
    pub index: usize,
    /// User in the archive.
    pub source_user: Name,
    /// User to write to.
    pub target_user: String,
    /// Mailbox name.
    pub name: Name,
    /// Messages.
    pub messages: u64,
}

/// Everything a restore will do, checked against the target before writing.
#[derive(Clone, Debug, Default)]
pub struct RestorePlan {
    /// Mailboxes in archive order.
    pub mailboxes: Vec<PlannedMailbox>,
    /// Whether whole users are restored (then subscriptions and server METADATA are too).
    pub whole_users: bool,
}

/// Counts of a finished restore.
#[derive(Clone, Debug, Default)]
pub struct RestoreStats {
    /// Mailboxes written.
    pub mailboxes: u64,
    /// Messages written.
    pub messages: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Messages whose bytes were damaged in the archive (not written).
    pub lost: u64,
    /// Named problems (damage found in the archive, lost messages).
    pub warnings: Vec<String>,
}

/// Select mailboxes of the state of archive `at` of `chain`, check that the chain holds
/// every message's bytes, and check the target.
///
/// # Errors
/// [`Error::NotFound`] for an unknown user or mailbox or for bytes no archive given holds
/// (naming the archives to add), [`Error::Corrupt`] for hostile names, [`Error::Conflict`]
/// when a target mailbox holds mail.
pub fn plan(chain: &Chain, at: usize, opts: &RestoreOptions) -> Result<RestorePlan> {
    let archive: &Archive = &chain.archives[at];
    let mut p = RestorePlan {
        whole_users: opts.mailbox.is_none(),
        ..Default::default()
    };
    if let Some(u) = &opts.user
        && !archive
            .dir
            .mailboxes
            .iter()
            .any(|m| m.user.as_bytes() == u.as_bytes())
        && !archive
            .dir
            .users
            .iter()
            .any(|m| m.name.as_bytes() == u.as_bytes())
    {
        return Err(Error::NotFound(format!("user {u} is not in the archive")));
    }
    let mut users: BTreeMap<Name, ()> = BTreeMap::new();
    for (i, m) in archive.dir.mailboxes.iter().enumerate() {
        if opts
            .user
            .as_ref()
            .is_some_and(|u| u.as_bytes() != m.user.as_bytes())
        {
            continue;
        }
        if opts
            .mailbox
            .as_ref()
            .is_some_and(|b| b.as_bytes() != m.name.as_bytes())
        {
            continue;
        }
        users.insert(m.user.clone(), ());
        let target = match &opts.to_user {
            Some(t) => t.clone(),
            None => check_user_name(m.user.as_bytes())?.to_string(),
        };
        check_user_name(target.as_bytes()).map_err(|e| Error::Usage(e.to_string()))?;
        check_mailbox_name(&m.name, &format!("user {} mailbox {}", m.user, m.name))?;
        p.mailboxes.push(PlannedMailbox {
            index: i,
            source_user: m.user.clone(),
            target_user: target,
            name: m.name.clone(),
            messages: m.messages,
        });
    }
    if users.len() > 1 && opts.to_user.is_some() {
        return Err(Error::Usage(
            "--to-user needs --user when the archive holds several users".into(),
        ));
    }
    if p.mailboxes.is_empty() {
        return Err(Error::NotFound(match (&opts.user, &opts.mailbox) {
            (Some(u), Some(b)) => format!("mailbox {b} of user {u} is not in the archive"),
            (None, Some(b)) => format!("mailbox {b} is not in the archive"),
            _ => "nothing to restore: the archive holds no mailboxes".into(),
        }));
    }
    // Every message's bytes must be in the chain before anything is written.
    let mut missing = Vec::new();
    let mut missing_ids: BTreeMap<String, u64> = BTreeMap::new();
    for m in &p.mailboxes {
        let cat = archive.catalog(m.index)?;
        for r in &cat.messages {
            if chain.resolve(at, &cat, r).is_none() {
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
    // Check every target before writing anything.
    let mut writers: BTreeMap<String, MaildirWriter> = BTreeMap::new();
    for m in &p.mailboxes {
        if !writers.contains_key(&m.target_user) {
            writers.insert(
                m.target_user.clone(),
                MaildirWriter::new(&opts.location, &m.target_user, opts.owner)?,
            );
        }
        if let Some(w) = writers.get(&m.target_user) {
            w.check_free(&m.name)?;
        }
    }
    Ok(p)
}

/// Describe a plan, one line per mailbox (for `--dry-run`).
pub fn describe(p: &RestorePlan, opts: &RestoreOptions) -> Vec<String> {
    p.mailboxes
        .iter()
        .map(|m| {
            let root = opts
                .location
                .root_of(&m.target_user)
                .map(|r| r.display().to_string())
                .unwrap_or_default();
            format!(
                "restore {} / {} ({} messages) -> user {} in {}",
                m.source_user, m.name, m.messages, m.target_user, root
            )
        })
        .collect()
}

/// Carry out a plan.
///
/// # Errors
/// I/O errors on the target, a damaged catalog; damaged message bytes are not errors
/// (see [`RestoreStats::lost`]).
pub fn restore(
    chain: &Chain,
    at: usize,
    p: &RestorePlan,
    opts: &RestoreOptions,
    progress: &mut dyn Progress,
) -> Result<RestoreStats> {
    let archive = &chain.archives[at];
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
    for (target, mbs) in by_user {
        progress.event(&Event::User {
            user: target.clone(),
        });
        let mut w = MaildirWriter::new(&opts.location, &target, opts.owner)?;
        let mut attrs = Vec::new();
        let mut restored_names = Vec::new();
        let source_user = mbs
            .first()
            .map(|m| m.source_user.clone())
            .unwrap_or_default();
        let mut inbox_guid = None;
        for m in mbs {
            let cat = archive.catalog(m.index)?;
            progress.event(&Event::Mailbox {
                user: target.clone(),
                mailbox: m.name.to_string(),
                messages: cat.messages.len() as u64,
            });
            // Split the records: metadata goes to the store writer, locations stay here.
            let (user, name) = (cat.user.clone(), cat.mailbox.name.clone());
            let stored: Vec<_> = cat
                .messages
                .iter()
                .map(|r| (chain.resolve(at, &cat, r), r.message.uid))
                .collect();
            let metas: Vec<_> = cat.messages.into_iter().map(|r| r.message).collect();
            let mut lost = Vec::new();
            let mut bytes_done = 0u64;
            let ws = w.write_mailbox(&cat.mailbox, &metas, &mut |i, out| {
                let Some((res, uid)) = stored.get(i) else {
                    return Ok(false);
                };
                let item = format!("user {user} mailbox {name} UID {uid}");
                let Some(res) = res else {
                    lost.push(format!("{item}: message bytes are not in the archive"));
                    return Ok(false);
                };
                match chain.copy(&mut cursors, res, &item, out) {
                    Ok(()) => {
                        bytes_done += res.size;
                        progress.event(&Event::Bytes {
                            bytes: bytes_done,
                            messages: i as u64 + 1,
                        });
                        Ok(true)
                    }
                    Err(e @ Error::Corrupt { .. }) => {
                        lost.push(e.to_string());
                        Ok(false)
                    }
                    Err(e) => Err(e),
                }
            })?;
            for l in lost {
                progress.event(&Event::Warning { message: l.clone() });
                stats.warnings.push(l);
            }
            stats.mailboxes += 1;
            stats.messages += ws.messages;
            stats.bytes += ws.bytes;
            stats.lost += ws.lost;
            if let Some(g) = &cat.mailbox.guid {
                for a in &cat.mailbox.attributes {
                    attrs.push((attribute_key(g, a, false), a.value.clone()));
                }
                if cat.mailbox.name.as_bytes() == b"INBOX" {
                    inbox_guid = Some(g.clone());
                }
            }
            restored_names.push(cat.mailbox.name.clone());
        }
        // Subscriptions and user-level METADATA.
        let user_meta = archive.dir.users.iter().find(|u| u.name == source_user);
        if let Some(u) = user_meta {
            let subs: Vec<Name> = if p.whole_users {
                u.subscriptions.clone()
            } else {
                u.subscriptions
                    .iter()
                    .filter(|s| restored_names.contains(s))
                    .cloned()
                    .collect()
            };
            w.add_subscriptions(&subs)?;
            if p.whole_users {
                if let Some(g) = &inbox_guid {
                    for a in &u.server_attributes {
                        attrs.push((attribute_key(g, a, true), a.value.clone()));
                    }
                }
                attrs.extend(u.raw_attributes.iter().cloned());
            }
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
        messages: stats.messages,
        bytes: stats.bytes,
        warnings: stats.warnings.len() as u64,
    });
    Ok(stats)
}
