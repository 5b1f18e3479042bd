//! `maildump backup`: options from the command line, the archive written to `-o` or into a
//! `--state-dir` (full or incremental as its schedule says), and the summary on stderr.

use std::process::ExitCode;

use maildump::ops::statedir::{Next, StateEntry};
use maildump::{
    BackupOptions, BackupStats, Error, Progress, StateDir, backup, parse_duration, parse_time,
};

use super::args::{BackupArgs, ProgressMode};
use super::progress::progress_for;
use super::{exit_if, human, location_and_userdb, write_output};

/// Run `maildump backup`.
pub fn run(a: &BackupArgs) -> anyhow::Result<ExitCode> {
    // (clap's `requires` does not fire for these: checked here.)
    if a.state_dir.is_none() && (a.full_every.is_some() || a.keep_chains.is_some()) {
        return Err(Error::Usage(
            "--full-every and --keep-chains work with --state-dir only (they decide what a state directory keeps)".into(),
        )
        .into());
    }
    if a.state_dir.is_none() && (a.agent.agent.is_some() || a.break_lock) {
        return Err(Error::Usage(
            "--agent and --break-lock work with --state-dir only (they name and unlock an agent's chain there)".into(),
        )
        .into());
    }
    let (loc, userdb) = location_and_userdb(&a.store)?;
    let users = super::users(&loc, userdb, a.all_users, &a.users, a.write.quiet)?;
    let users = super::in_shard(&a.agent, users, talks(a))?;
    let mut opts = BackupOptions::new(loc);
    opts.writer.level = a.write.level;
    if let Some(t) = a.write.threads {
        opts.writer.threads = t.max(1);
    }
    if let Some(n) = a.page_entries {
        opts.writer.page_entries = n;
    }
    if let Some(f) = a.frame_target {
        opts.writer.frame_target = f;
    }
    opts.created = a.created.clone();
    opts.archive_id = a.archive_id.clone();
    if let Some(since) = &a.since {
        opts.since = Some(parse_time(since)?);
    }
    opts.bases = a.bases.clone();
    opts.all_users = a.all_users;
    opts.format_minor = a.format_minor;
    let mut progress = progress_for(
        a.write.progress,
        a.write.quiet,
        a.write.verbose,
        a.output.clone(),
    );
    let stats = match &a.state_dir {
        None => {
            let output = a.output.as_deref().unwrap_or("-");
            write_output(output, |out| backup(&opts, &users, out, progress.as_mut()))?
        }
        Some(dir) => into_state_dir(a, dir, &mut opts, &users, progress.as_mut())?,
    };
    if talks(a) {
        eprintln!("{}", summary(&stats));
    }
    Ok(exit_if(stats.warnings.is_empty()))
}

/// Whether to print notes and the summary (not with `--quiet` or `--progress json`).
fn talks(a: &BackupArgs) -> bool {
    !a.write.quiet && a.write.progress != ProgressMode::Json
}

/// A backup into `--state-dir`: full or incremental as the directory's schedule says,
/// recorded in its state, older chains pruned with `--keep-chains`.
fn into_state_dir(
    a: &BackupArgs,
    dir: &std::path::Path,
    opts: &mut BackupOptions,
    users: &[String],
    progress: &mut dyn Progress,
) -> anyhow::Result<BackupStats> {
    let mut sd = StateDir::open_namespace(dir, &super::namespace(&a.agent)?, a.break_lock)?;
    for p in &sd.removed_partials {
        if talks(a) {
            eprintln!("maildump: removed {p} (left by a run that did not finish)");
        }
    }
    let every = a.full_every.as_deref().map(parse_duration).transpose()?;
    let now = chrono::Utc::now();
    let created = opts
        .created
        .clone()
        .unwrap_or_else(|| now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    opts.created = Some(created.clone());
    let id = opts
        .archive_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    opts.archive_id = Some(id.clone());
    let (kind, chain) = match sd.next(every, now)? {
        Next::Full => ("full", id.clone()),
        Next::Incremental { base, chain } => {
            opts.bases = vec![base];
            ("incremental", chain)
        }
    };
    let name = sd.new_archive(&created, if kind == "full" { "full" } else { "inc" })?;
    let dest = sd.location(&name);
    super::events::set_output(&dest);
    let stats = write_output(&dest, |out| backup(opts, users, out, progress))?;
    sd.record(StateEntry {
        file: name,
        archive_id: id,
        created,
        kind: kind.into(),
        chain,
    })?;
    if talks(a) {
        eprintln!("maildump: wrote {kind} backup {dest}");
    }
    if let Some(k) = a.keep_chains {
        for p in sd.prune(k as usize)? {
            if talks(a) {
                eprintln!("maildump: removed {p} (older chain)");
            }
        }
    }
    Ok(stats)
}

/// The one-line summary of a backup.
pub fn summary(stats: &BackupStats) -> String {
    // `bytes` is the size of all the mail the archive's state holds (a full's or an
    // incremental's alike), not what this run stored.
    let mut s = format!(
        "maildump: backed up {} users, {} mailboxes, {} messages ({} of mail; {} distinct bodies stored in this archive",
        stats.users,
        stats.mailboxes,
        stats.messages,
        human(stats.bytes),
        stats.bodies
    );
    if stats.referenced > 0 || stats.unread > 0 {
        s.push_str(&format!(
            "; {} held by earlier archives, {} files not read",
            stats.referenced, stats.unread
        ));
    }
    if stats.deleted > 0 {
        s.push_str(&format!("; {} deleted messages recorded", stats.deleted));
    }
    if stats.split > 0 || stats.blobs > 0 {
        s.push_str(&format!(
            "; {} messages with their attachments stored apart, {} attachments stored",
            stats.split, stats.blobs
        ));
    }
    s.push(')');
    if !stats.gone_users.is_empty() {
        s.push_str(&format!(
            "; users no longer in the store, recorded as gone: {}",
            stats.gone_users.join(", ")
        ));
    }
    if !stats.expunged.is_empty() {
        s.push_str(&format!(
            "; {} messages expunged during the backup, not in the archive (normal for a live store)",
            stats.expunged.len()
        ));
    }
    if !stats.warnings.is_empty() {
        s.push_str(&format!(
            "; {} items left out or damaged (named above): exit 1",
            stats.warnings.len()
        ));
    }
    s
}
