//! `maildump restore`: the selection and mode from the command line, a plan (printed with
//! `--dry-run`), the restore, and the summary on stderr.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use maildump::ops::statedir::{self, Namespace};

use maildump::{
    Continuity, Error, Mode, NoProgress, RestoreOptions, Selection, SeqSet, parse_restore_list,
    parse_time,
};

use super::args::{ModeArg, ProgressMode, RestoreArgs};
use super::progress::progress_for;
use super::{chain_damaged, exit_if, human, location, open_chain, state_of};

/// Run `maildump restore`.
pub fn run(a: RestoreArgs) -> anyhow::Result<ExitCode> {
    let loc = location(&a.store)?;
    let owner = a.owner.as_deref().map(parse_owner).transpose()?;
    let archives = match &a.state_dir {
        None => a.archives.clone(),
        Some(dir) => from_state_dir(dir, &a)?,
    };
    let (chain, _tmp) = open_chain(&archives, true)?;
    let at = state_of(&chain, a.as_of.as_deref())?;
    let selection = selection(&a)?;
    let mode = match (a.mode, &a.into, a.deleted) {
        (Some(ModeArg::Exact), Some(_), _) => {
            return Err(Error::Usage("--into needs --mode side-folder".into()).into());
        }
        (Some(ModeArg::Exact), _, _) => Mode::Exact,
        (Some(ModeArg::Merge), _, _) => Mode::Merge,
        (Some(ModeArg::SideFolder), _, _) | (None, Some(_), _) => Mode::SideFolder,
        (None, None, true) => Mode::Merge,
        (None, None, false) => Mode::Exact,
    };
    let opts = RestoreOptions {
        location: Some(loc),
        selection,
        to_user: a.to_user,
        owner,
        mode,
        into: a.into,
        deleted: a.deleted,
        inline_attachments: a.inline_attachments,
        continuity: if a.new_uidvalidity {
            Continuity::NewUidvalidity
        } else {
            Continuity::Margin(a.uid_margin)
        },
        jobs: a.jobs,
    };
    let plan = maildump::plan(&chain, at, &opts)?;
    if a.dry_run {
        let mut out = io::stdout().lock();
        if opts.mode == Mode::Exact {
            for l in maildump::ops::restore::describe(&plan, &opts) {
                writeln!(out, "{l}")?;
            }
        } else {
            let stats = maildump::restore(&chain, at, &plan, &opts, true, &mut NoProgress)?;
            for l in &stats.report {
                writeln!(out, "{l}")?;
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut progress = progress_for(a.progress, a.quiet, false, None);
    let stats = maildump::restore(&chain, at, &plan, &opts, false, progress.as_mut())?;
    if !a.quiet && a.progress != ProgressMode::Json {
        eprintln!(
            "maildump: restored {} mailboxes, {} messages ({}){}{}",
            stats.mailboxes,
            stats.messages,
            human(stats.bytes),
            if stats.present > 0 {
                format!("; {} already there, skipped", stats.present)
            } else {
                String::new()
            },
            if stats.lost > 0 {
                format!("; {} messages lost to archive damage", stats.lost)
            } else {
                String::new()
            }
        );
    }
    // Every warning names something not restored as it was (a lost message, a
    // keyword the target could not take, METADATA without a dictionary).
    Ok(exit_if(
        stats.lost == 0 && stats.warnings.is_empty() && !chain_damaged(&chain),
    ))
}

/// The archives `restore --state-dir DIR` restores: the chain (the newest, or the one
/// holding `--as-of`) of `--agent`'s namespace, of the namespace whose chain holds `--user`
/// (the newest of them when several do, said on stderr), or of the only namespace.
fn from_state_dir(dir: &Path, a: &RestoreArgs) -> anyhow::Result<Vec<String>> {
    let (agent, user, as_of) = (a.agent.as_deref(), a.user.as_deref(), a.as_of.as_deref());
    let paths = |c: statedir::ChainFound| -> Vec<String> {
        c.archives.iter().map(|p| p.display().to_string()).collect()
    };
    if let Some(name) = agent {
        let ns = Namespace::named(name)?;
        let chain = statedir::namespaces(dir)?
            .into_iter()
            .find(|n| n.namespace == ns)
            .map(|n| n.chain_at(as_of))
            .transpose()?
            .flatten()
            .ok_or_else(|| Error::NotFound(no_archive(dir, &ns.to_string(), as_of)))?;
        return Ok(paths(chain));
    }
    if let Some(user) = user {
        let mut found = statedir::find_user(dir, user, as_of)?.into_iter();
        let chosen = found
            .next()
            .ok_or_else(|| Error::Internal("find_user returned no chain".into()))?;
        let others: Vec<statedir::ChainFound> = found.collect();
        if !others.is_empty() {
            let tie = others.iter().any(|c| c.created == chosen.created);
            eprintln!(
                "maildump: note: user {user} is also in {}; restoring from {} (archive of {}), {}",
                others
                    .iter()
                    .map(|c| format!("{} (archive of {})", c.namespace, c.created))
                    .collect::<Vec<_>>()
                    .join(", "),
                chosen.namespace,
                chosen.created,
                if tie {
                    "as new as the other: the first by namespace name"
                } else {
                    "the newest"
                }
            );
        } else if !a.quiet {
            let n = chosen.archives.len();
            eprintln!(
                "maildump: user {user}: restoring from {} (its chain of {n} archive{})",
                chosen.namespace,
                if n == 1 { "" } else { "s" }
            );
        }
        return Ok(paths(chosen));
    }
    let mut chains = Vec::new();
    for ns in statedir::namespaces(dir)? {
        chains.extend(ns.chain_at(as_of)?);
    }
    match chains.len() {
        0 => Err(Error::NotFound(no_archive(dir, "any namespace", as_of)).into()),
        1 => Ok(chains.pop().map(paths).unwrap_or_default()),
        _ => Err(Error::Usage(format!(
            "{} holds the chains of several agents ({}): give --user (its agent is found) or --agent NAME",
            dir.display(),
            chains
                .iter()
                .map(|c| c.namespace.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into()),
    }
}

/// "DIR: no archive of WHOSE" (as of `as_of`).
fn no_archive(dir: &Path, whose: &str, as_of: Option<&str>) -> String {
    match as_of {
        None => format!("{}: no archive of {whose}", dir.display()),
        Some(t) => format!(
            "{}: no archive of {whose} as of {t} (none with that id, none made at or before that time)",
            dir.display()
        ),
    }
}

/// `--owner UID:GID` (numeric).
fn parse_owner(s: &str) -> anyhow::Result<(u32, u32)> {
    Ok(s.split_once(':')
        .and_then(|(u, g)| Some((u.parse::<u32>().ok()?, g.parse::<u32>().ok()?)))
        .ok_or_else(|| Error::Usage(format!("--owner {s:?}: expected numeric UID:GID")))?)
}

/// What to restore: user, mailboxes, UIDs, GUIDs, Message-IDs, dates, `--restore-list`.
fn selection(a: &RestoreArgs) -> anyhow::Result<Selection> {
    let time = |t: &Option<String>| {
        t.as_deref()
            .map(|t| parse_time(t).map(|t| t.timestamp()))
            .transpose()
    };
    let mut selection = Selection {
        user: a.user.clone(),
        mailboxes: a.mailboxes.clone(),
        recursive: a.recursive,
        uids: a.uid.as_deref().map(SeqSet::parse).transpose()?,
        guids: a.guids.clone(),
        message_ids: a.message_ids.clone(),
        received_since: time(&a.received_since)?,
        received_before: time(&a.received_before)?,
        list: None,
    };
    if let Some(f) = &a.restore_list {
        let text = std::fs::read_to_string(f).map_err(|e| Error::io(f, e))?;
        selection.list = Some(parse_restore_list(&text)?);
    }
    Ok(selection)
}
