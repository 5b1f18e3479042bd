//! `export`: hand mail to a person or another system, outside Dovecot's own layout rules.
//!
//! - `eml`: one file per message, byte-exact, `DIR/<mailbox>/<uid>.eml` (mailbox path
//!   components encoded as in tar member names, so no name can leave DIR);
//! - `mbox`: mboxrd (`From ` lines of the body quoted with `>`), one file per mailbox, flags
//!   as `Status:`/`X-Status:` and keywords as `X-Keywords:` headers added in front of the
//!   message's own header; with `--mailbox`, `-o` names the file, else a directory that
//!   gets `<mailbox>.mbox` files;
//! - `maildir`: a plain Maildir++ tree written by the same code as `restore` (flags,
//!   keywords, UIDs and dates kept), at `-o DIR`.
//!
//! Files are written under temporary names and renamed when complete; existing files are
//! never overwritten (exit 6). Below `-o DIR` nothing is written through a symbolic link
//! (a link there is refused, exit 6, as in a restore target); `DIR` itself being a link is
//! refused as `-o` refuses one (exit 2).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::chain::Chain;
use crate::error::{Error, IoContext, Result};
use crate::format::index::{MailboxRecord, MessageRecord};
use crate::format::writer::encode_component;
use crate::model::Flags;
use crate::store::StoreWriter;
use crate::store::location::Location;
use crate::store::maildir::MaildirWriter;
use crate::store::nofollow::DirFd;
use crate::store::target::{Perms, split};

/// Output formats of [`export`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// mboxrd, one file per mailbox.
    Mbox,
    /// One `.eml` file per message.
    Eml,
    /// A Maildir++ tree.
    Maildir,
}

/// What to export.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// User of the archive.
    pub user: String,
    /// Only this mailbox (exact name), else all of the user's.
    pub mailbox: Option<String>,
    /// Output format.
    pub format: ExportFormat,
    /// Output file or directory.
    pub output: PathBuf,
}

/// Counts of a finished export.
#[derive(Clone, Debug, Default)]
pub struct ExportStats {
    /// Mailboxes exported.
    pub mailboxes: u64,
    /// Messages exported.
    pub messages: u64,
}

fn selected(chain: &Chain, at: usize, opts: &ExportOptions) -> Result<Vec<MailboxRecord>> {
    let a = &chain.archives[at];
    let mut out = Vec::new();
    for (i, e) in a.dir.mailboxes.iter().enumerate() {
        if e.user.as_bytes() != opts.user.as_bytes() {
            continue;
        }
        if opts
            .mailbox
            .as_ref()
            .is_some_and(|m| m.as_bytes() != e.name.as_bytes())
        {
            continue;
        }
        let cat = a.catalog(i)?;
        crate::ops::restore::check_control_fields(&cat, &cat.messages)?;
        out.push(cat);
    }
    if out.is_empty() {
        return Err(Error::NotFound(match &opts.mailbox {
            Some(m) => format!("user {} has no mailbox {m} in the archive", opts.user),
            None => format!("user {} is not in the archive", opts.user),
        }));
    }
    Ok(out)
}

/// Bytes of one message through the chain.
fn bytes_of(
    chain: &Chain,
    at: usize,
    cursors: &mut Vec<crate::format::reader::FrameCursor>,
    cat: &MailboxRecord,
    r: &MessageRecord,
) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(crate::model::capacity_hint(r.message.content.size));
    chain.copy_record(cursors, at, cat, r, &mut buf)?;
    Ok(buf)
}

/// A mailbox's path below the output directory: its components, encoded.
fn mailbox_comps(name: &crate::model::Name) -> Vec<Vec<u8>> {
    name.as_bytes()
        .split(|&b| b == b'/')
        .map(|c| encode_component(c).into_bytes())
        .collect()
}

/// Directories made below `-o DIR` (and DIR itself): as a plain `mkdir` with the usual
/// umask makes them.
const OUT_DIR: Perms = Perms {
    mode: 0o755,
    ids: None,
};

/// Refuse `-o DIR` when it is a symbolic link (as `-o` refuses one, [`crate::output`]).
fn refuse_output_link(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(Error::Usage(format!(
            "{}: is a symbolic link; refused (give the path it points to)",
            path.display()
        )));
    }
    Ok(())
}

/// The output directory `-o DIR`, made when missing (with its parents, the user's path);
/// a symbolic link there is refused.
fn output_dir(path: &Path) -> Result<DirFd> {
    refuse_output_link(path)?;
    let (parent, name) = split(path)?;
    std::fs::create_dir_all(parent).at(parent)?;
    let p = DirFd::open_target(parent).at(parent)?;
    p.mkdir(name, OUT_DIR)
}

/// Write the new file `name` in `dir` through a temporary file, synced and renamed when
/// complete (given the mtime `secs` first, if any); refuse to replace an existing file.
fn write_new(
    dir: &DirFd,
    name: &[u8],
    secs: Option<i64>,
    f: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let path = dir.join(name);
    if dir.refuse_symlink(name)? {
        return Err(Error::Conflict(format!(
            "{} exists; export never overwrites",
            path.display()
        )));
    }
    let mut tmp = b".".to_vec();
    tmp.extend_from_slice(name);
    tmp.extend_from_slice(b".maildump-partial");
    dir.remove(&tmp)?;
    let mut file = dir.create(&tmp, 0o600)?;
    let written = (|| {
        let mut out = BufWriter::new(&mut file);
        f(&mut out)?;
        out.flush().at(&path)?;
        drop(out);
        if let Some(secs) = secs {
            let t =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0).unsigned_abs());
            file.set_modified(t).at(&path)?;
        }
        // Durable before it becomes visible under its name.
        file.sync_all().at(&path)?;
        if dir.rename_new(&tmp, dir, name)? {
            Ok(())
        } else {
            Err(Error::Conflict(format!(
                "{} exists; export never overwrites",
                path.display()
            )))
        }
    })();
    if written.is_err() {
        // Nothing half-written stays; the write's error is the one reported.
        let _ = dir.remove(&tmp);
    }
    written
}

/// Write `-o FILE` (one mailbox as mbox) through [`crate::output::OutputFile`].
fn write_output_file(path: &Path, f: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).at(dir)?;
    }
    let mut file = crate::output::OutputFile::open(path, false)?;
    let mut out = BufWriter::new(file.file());
    f(&mut out)?;
    out.flush().at(path)?;
    drop(out);
    file.finish()
}

/// The mboxrd "From " separator date: asctime in UTC.
fn asctime(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%a %b %e %H:%M:%S %Y").to_string())
        .unwrap_or_else(|| "Thu Jan  1 00:00:00 1970".into())
}

/// Append one message to an mboxrd stream.
fn mbox_message(out: &mut dyn Write, r: &MessageRecord, data: &[u8]) -> std::io::Result<()> {
    let m = &r.message;
    writeln!(out, "From MAILER-DAEMON {}", asctime(m.received.secs))?;
    let mut status = String::new();
    if m.flags.contains(Flags::SEEN) {
        status.push('R');
    }
    status.push('O');
    let mut xs = String::new();
    for (f, c) in [
        (Flags::ANSWERED, 'A'),
        (Flags::FLAGGED, 'F'),
        (Flags::DELETED, 'D'),
        (Flags::DRAFT, 'T'),
    ] {
        if m.flags.contains(f) {
            xs.push(c);
        }
    }
    writeln!(out, "Status: {status}")?;
    if !xs.is_empty() {
        writeln!(out, "X-Status: {xs}")?;
    }
    if !m.keywords.is_empty() {
        let k: Vec<String> = m.keywords.iter().map(|k| k.to_string()).collect();
        writeln!(out, "X-Keywords: {}", k.join(" "))?;
    }
    // mboxrd: quote every line of the form >*From with one more '>'.
    for line in data.split_inclusive(|&b| b == b'\n') {
        let rest = line.iter().position(|&b| b != b'>').unwrap_or(line.len());
        if line[rest..].starts_with(b"From ") {
            out.write_all(b">")?;
        }
        out.write_all(line)?;
    }
    if !data.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    out.write_all(b"\n")
}

/// Export mail of one user from the state of archive `at`.
///
/// # Errors
/// Not found, bytes missing from the chain, existing output files ([`Error::Conflict`]),
/// I/O errors.
pub fn export(chain: &Chain, at: usize, opts: &ExportOptions) -> Result<ExportStats> {
    let cats = selected(chain, at, opts)?;
    let mut stats = ExportStats::default();
    let mut cursors = Vec::new();
    match opts.format {
        ExportFormat::Eml => {
            let root = output_dir(&opts.output)?;
            for cat in &cats {
                let dir = root.mkdir_comps(&mailbox_comps(&cat.mailbox.name), OUT_DIR)?;
                for r in &cat.messages {
                    let data = bytes_of(chain, at, &mut cursors, cat, r)?;
                    let name = format!("{}.eml", r.message.uid).into_bytes();
                    let p = dir.join(&name);
                    write_new(&dir, &name, Some(r.message.received.secs), |out| {
                        out.write_all(&data).at(&p)
                    })?;
                    stats.messages += 1;
                }
                stats.mailboxes += 1;
            }
        }
        ExportFormat::Mbox => {
            let root = match opts.mailbox {
                Some(_) => None,
                None => Some(output_dir(&opts.output)?),
            };
            for cat in &cats {
                let mut write = |out: &mut dyn Write| {
                    for r in &cat.messages {
                        let data = bytes_of(chain, at, &mut cursors, cat, r)?;
                        mbox_message(out, r, &data).at(&opts.output)?;
                        stats.messages += 1;
                    }
                    Ok(())
                };
                match &root {
                    None => write_output_file(&opts.output, write)?,
                    Some(root) => {
                        let mut comps = mailbox_comps(&cat.mailbox.name);
                        let mut name = comps.pop().unwrap_or_default();
                        name.extend_from_slice(b".mbox");
                        let dir = root.mkdir_comps(&comps, OUT_DIR)?;
                        write_new(&dir, &name, None, &mut write)?;
                    }
                }
                stats.mailboxes += 1;
            }
        }
        ExportFormat::Maildir => {
            refuse_output_link(&opts.output)?;
            let loc = Location::parse(&format!("maildir:{}", opts.output.display()), None)?;
            let mut w = MaildirWriter::new(&loc, &opts.user, None)?;
            w.set_strict_root();
            for cat in &cats {
                w.check_free(&cat.mailbox.name)?;
            }
            for cat in cats {
                let metas: Vec<_> = cat.messages.iter().map(|r| r.message.clone()).collect();
                let mut err = None;
                let ws = w.write_mailbox(&cat.mailbox, &metas, &mut |i, out| {
                    let Some(r) = cat.messages.get(i) else {
                        return Ok(false);
                    };
                    match bytes_of(chain, at, &mut cursors, &cat, r) {
                        Ok(d) => {
                            out.write_all(&d).at("<export>")?;
                            Ok(true)
                        }
                        Err(e) => {
                            err = Some(e);
                            Ok(false)
                        }
                    }
                })?;
                if let Some(e) = err {
                    return Err(e);
                }
                stats.messages += ws.messages;
                stats.mailboxes += 1;
            }
            w.commit()?;
        }
    }
    Ok(stats)
}
