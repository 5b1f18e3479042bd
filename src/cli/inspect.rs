//! `maildump list`, `cat` and `verify`: reading archives without touching a store.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use maildump::ops::inspect::{self, MessageKey};
use maildump::ops::statedir;
use maildump::{Chain, Error, ErrorKind, ListFilter};

use super::args::{CatArgs, ListArgs, VerifyArgs};
use super::{
    archive_paths, chain_damaged, chain_paths, exit_if, open_chain, shown, state_of, stdin_once,
    warn_damage,
};

/// Run `maildump list`.
pub fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    if let [one] = a.archives.as_slice()
        && (Path::new(one).is_dir() || is_object_prefix(one))
    {
        return list_state_dir(Path::new(one), &a);
    }
    let (chain, _tmp) = open_chain(&a.archives, false)?;
    let at = state_of(&chain, a.as_of.as_deref())?;
    let filter = ListFilter {
        user: a.user,
        mailbox: a.mailbox,
    };
    let mut out = io::BufWriter::new(io::stdout().lock());
    if a.deleted {
        inspect::list_deleted(&chain, &filter, a.json, &mut out)?;
    } else {
        inspect::list(&chain, at, &filter, a.json, &mut out)?;
    }
    out.flush()?;
    Ok(exit_if(!chain_damaged(&chain)))
}

/// Whether `arg` names a prefix in object storage (`s3://bucket/prefix/`, `s3://bucket`):
/// a state directory there, as an archive's key never ends with `/`.
fn is_object_prefix(arg: &str) -> bool {
    arg.strip_prefix(maildump::remote::SCHEME)
        .is_some_and(|rest| rest.ends_with('/') || !rest.contains('/'))
}

/// `maildump list DIR` of a `--state-dir`: every archive of every namespace, oldest first
/// within each, one line (or JSON object) each.
fn list_state_dir(dir: &Path, a: &ListArgs) -> anyhow::Result<ExitCode> {
    if a.as_of.is_some() || a.deleted || a.restore_list || a.user.is_some() || a.mailbox.is_some() {
        return Err(Error::Usage(format!(
            "{} is a state directory: list DIR shows its archives and takes only --json (list the messages of a chain with list ARCHIVE...)",
            dir.display()
        ))
        .into());
    }
    let all = statedir::namespaces(dir)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    if !a.json {
        writeln!(
            out,
            "; {:<20} {:<11} {:<20} {:<36} ARCHIVE",
            "NAMESPACE", "KIND", "CREATED", "CHAIN"
        )?;
    }
    for ns in all {
        let newest = ns.state.archives.last().map(|e| e.chain.clone());
        for (e, path) in ns.state.archives.iter().zip(&ns.locations) {
            if a.json {
                let v = serde_json::json!({
                    "namespace": ns.namespace.name(),
                    "kind": e.kind,
                    "created": e.created,
                    "archive_id": e.archive_id,
                    "chain": e.chain,
                    "newest_chain": newest.as_deref() == Some(e.chain.as_str()),
                    "file": e.file,
                    "path": path,
                });
                writeln!(out, "{v}")?;
            } else {
                writeln!(
                    out,
                    "  {:<20} {:<11} {:<20} {:<36} {path}",
                    ns.namespace.name().unwrap_or("-"),
                    e.kind,
                    e.created,
                    e.chain
                )?;
            }
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Run `maildump cat`.
pub fn cat(a: CatArgs) -> anyhow::Result<ExitCode> {
    let key = match (a.uid, a.guid) {
        (Some(u), _) => MessageKey::Uid(u),
        (None, Some(g)) => MessageKey::Guid(g),
        (None, None) => return Err(Error::Usage("give --uid or --guid".into()).into()),
    };
    let (paths, _tmp) = chain_paths(&a.archives)?;
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let found = inspect::find_for_cat(
        &refs,
        a.as_of.as_deref(),
        &a.user,
        a.mailbox.as_deref(),
        &key,
        &mut |chain, why| {
            if let Some(why) = why {
                eprintln!(
                    "maildump: warning: {why}; the archives were opened again, their indexes checked whole or rebuilt by scanning"
                );
            }
            warn_damage(chain);
        },
    )?;
    let mut out = io::stdout().lock();
    inspect::cat(&found.chain, found.at, &found.cat, &found.rec, &mut out)?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Run `maildump verify`: each archive, then the references between them (a chain).
pub fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    stdin_once(&a.archives)?;
    let mut problems = 0usize;
    let mut paths = Vec::new();
    let mut _tmps = Vec::new();
    for arg in &a.archives {
        let (p, tmp) = archive_paths(arg)?;
        paths.extend(p);
        _tmps.push(tmp);
    }
    let several = paths.len() > 1;
    for path in &paths {
        problems += verify_one(path, several, a.quiet)?;
    }
    if paths.len() > 1 {
        problems += verify_chain(&paths, a.quiet)?;
    }
    if problems == 0 {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("maildump: verify: {problems} problems found");
        Ok(ExitCode::from(ErrorKind::CorruptArchive.exit_code()))
    }
}

/// Verify one archive, print its `OK:` or `DAMAGED:` lines; the number of problems.
fn verify_one(path: &Path, prefixed: bool, quiet: bool) -> anyhow::Result<usize> {
    let rep = inspect::verify(path)?;
    let prefix = if prefixed {
        format!("{}: ", shown(path))
    } else {
        String::new()
    };
    for d in &rep.damage {
        println!("DAMAGED: {prefix}{d}");
    }
    if rep.damage.is_empty() && !quiet {
        println!(
            "OK: {prefix}{} data frames, {} messages, {} distinct bodies{} verified{}",
            rep.frames,
            rep.messages,
            rep.bodies,
            if rep.blobs > 0 {
                format!(", {} attachments (blobs)", rep.blobs)
            } else {
                String::new()
            },
            if rep.referenced > 0 {
                format!(
                    "; {} messages have their bytes in other archives of the chain",
                    rep.referenced
                )
            } else {
                String::new()
            }
        );
    }
    Ok(rep.damage.len())
}

/// Verify that every reference to bytes in another archive of the chain resolves.
fn verify_chain(paths: &[PathBuf], quiet: bool) -> anyhow::Result<usize> {
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    match Chain::open(&refs, true) {
        Ok(chain) => {
            let (checked, damage) = inspect::verify_references(&chain)?;
            for d in &damage {
                println!("DAMAGED: {d}");
            }
            if damage.is_empty() && !quiet {
                println!(
                    "OK: chain of {} archives: all {checked} references to bytes in other archives found",
                    paths.len()
                );
            }
            Ok(damage.len())
        }
        Err(e) => {
            println!("DAMAGED: chain: {e}");
            Ok(1)
        }
    }
}
