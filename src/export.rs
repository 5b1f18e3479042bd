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
//! never overwritten (exit 6).

use std::fs::{self, File};
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
        crate::restore::check_control_fields(&cat, &cat.messages)?;
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

/// Relative path of a mailbox: its components, encoded.
fn mailbox_path(name: &crate::model::Name) -> PathBuf {
    name.as_bytes()
        .split(|&b| b == b'/')
        .map(encode_component)
        .collect()
}

/// Write `data` to `path` through a temporary file (a device or FIFO in place:
/// [`crate::output`]); refuse to replace an existing file.
fn write_new(path: &Path, f: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).at(dir)?;
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
            for cat in &cats {
                let dir = opts.output.join(mailbox_path(&cat.mailbox.name));
                for r in &cat.messages {
                    let data = bytes_of(chain, at, &mut cursors, cat, r)?;
                    let p = dir.join(format!("{}.eml", r.message.uid));
                    write_new(&p, |out| out.write_all(&data).at(&p))?;
                    set_mtime(&p, r.message.received.secs);
                    stats.messages += 1;
                }
                stats.mailboxes += 1;
            }
        }
        ExportFormat::Mbox => {
            for cat in &cats {
                let p = if opts.mailbox.is_some() {
                    opts.output.clone()
                } else {
                    let mut p = opts.output.join(mailbox_path(&cat.mailbox.name));
                    p.as_mut_os_string().push(".mbox");
                    p
                };
                write_new(&p, |out| {
                    for r in &cat.messages {
                        let data = bytes_of(chain, at, &mut cursors, cat, r)?;
                        mbox_message(out, r, &data).at(&p)?;
                        stats.messages += 1;
                    }
                    Ok(())
                })?;
                stats.mailboxes += 1;
            }
        }
        ExportFormat::Maildir => {
            let loc = Location::parse(&format!("maildir:{}", opts.output.display()), None)?;
            let mut w = MaildirWriter::new(&loc, &opts.user, None)?;
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

fn set_mtime(p: &Path, secs: i64) {
    if let Ok(f) = File::options().write(true).open(p) {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
        let _ = f.set_modified(t);
    }
}
