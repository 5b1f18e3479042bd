//! The `maildump` command line: argument definitions ([`args`]), one module per command
//! (each turns its arguments into library options, calls the library and prints), and what
//! they share: the store location, opening archives, writing an archive to its destination.

pub mod args;
pub mod backup;
pub mod export;
pub mod inspect;
pub mod merge;
pub mod progress;
pub mod restore;
pub mod sink;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use maildump::error::EXIT_PARTIAL;
use maildump::{Chain, Error, Location, StoreFormat};

use args::StoreArgs;
use sink::write_behind;

/// The store location from `--config` (Dovecot 2.3 or 2.4, [`maildump::store::config`]) or
/// `--location`, with `--home`, `--attribute-dict` and `--attachment-dir` taking precedence.
pub fn location(s: &StoreArgs) -> anyhow::Result<Location> {
    let mut loc = match (&s.config, &s.location) {
        (Some(conf), _) => maildump::store::config::read(conf)?.location,
        (None, Some(l)) => Location::parse(l, None)?,
        (None, None) => return Err(Error::Usage("give --config or --location".into()).into()),
    };
    if s.home.is_some() {
        loc.home = s.home.clone();
    }
    if s.attribute_dict.is_some() {
        loc.attribute_dict = s.attribute_dict.clone();
    }
    if loc.attribute_dict.is_none() && loc.home.is_some() {
        loc.attribute_dict = Some("file:%h/dovecot-attributes".into());
    }
    if s.attachment_dir.is_some() {
        loc.attachment_dir = s.attachment_dir.clone();
    }
    if loc.attachment_dir.is_some() && loc.kind == StoreFormat::Maildir {
        return Err(Error::Usage(
            "mail_attachment_dir (--attachment-dir) applies to sdbox and mdbox stores only".into(),
        )
        .into());
    }
    loc.check_templates()?;
    Ok(loc)
}

/// Open an archive path, spooling stdin to a temporary file for `-`.
pub fn archive_path(arg: &str) -> anyhow::Result<(PathBuf, Option<tempfile::TempPath>)> {
    if arg != "-" {
        return Ok((PathBuf::from(arg), None));
    }
    let mut tmp = tempfile::NamedTempFile::new().map_err(|e| Error::io("<temporary file>", e))?;
    io::copy(&mut io::stdin().lock(), tmp.as_file_mut()).map_err(|e| Error::io("<stdin>", e))?;
    let path = tmp.into_temp_path();
    Ok((path.to_path_buf(), Some(path)))
}

/// Refuse `-` (stdin) among several archives.
pub fn stdin_alone(args: &[String]) -> anyhow::Result<()> {
    if args.len() > 1 && args.iter().any(|a| a == "-") {
        return Err(
            Error::Usage("`-` (stdin) can only be used for a single archive".into()).into(),
        );
    }
    Ok(())
}

/// Open the archives of a chain (oldest first); `-` (stdin) only as the single archive.
pub fn open_chain(
    args: &[String],
    require_links: bool,
) -> anyhow::Result<(Chain, Option<tempfile::TempPath>)> {
    stdin_alone(args)?;
    let mut tmp = None;
    let mut paths = Vec::with_capacity(args.len());
    for a in args {
        let (p, t) = archive_path(a)?;
        paths.push(p);
        if t.is_some() {
            tmp = t;
        }
    }
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let chain = Chain::open(&refs, require_links)?;
    for a in &chain.archives {
        for d in &a.damage {
            eprintln!("maildump: warning: {}: {d}", a.path().display());
        }
    }
    Ok((chain, tmp))
}

/// The archive whose state a command works on: the last, or `--as-of`.
pub fn state_of(chain: &Chain, as_of: Option<&str>) -> anyhow::Result<usize> {
    Ok(match as_of {
        Some(s) => chain.as_of(s)?,
        None => chain.last(),
    })
}

/// Exit 0 when `clean`, else 1 (finished, but items skipped or damaged).
pub fn exit_if(clean: bool) -> ExitCode {
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_PARTIAL)
    }
}

/// Whether any archive of the chain was found damaged when opened.
pub fn chain_damaged(chain: &Chain) -> bool {
    chain.archives.iter().any(|a| !a.damage.is_empty())
}

/// Write an archive to stdout (`-`) or to a file that appears, synced, only when complete
/// (a device or FIFO is written in place, a symbolic link refused: `maildump::output`).
/// The bytes are written by a thread of their own ([`sink::write_behind`]), so a
/// `write` the kernel makes wait does not stall reading and compressing.
///
/// A reader that closes the pipe before the end is an error here (the archive it got is
/// incomplete), unlike for `list` or `cat`.
pub fn write_output<T>(
    output: &str,
    f: impl FnOnce(&mut dyn Write) -> maildump::Result<T>,
) -> anyhow::Result<T> {
    if output == "-" {
        let mut out = io::stdout();
        let (r, written) = write_behind(&mut out, f);
        written.map_err(|e| {
            let e = if e.kind() == io::ErrorKind::BrokenPipe {
                io::Error::other("the reader closed the pipe; the archive it got is incomplete")
            } else {
                e
            };
            Error::io("<stdout>", e)
        })?;
        return Ok(r.map_err(|e| e.name_archive(Path::new("<stdout>")))?);
    }
    let dest = PathBuf::from(output);
    let mut out = maildump::output::OutputFile::open(&dest, true)?;
    let (r, written) = write_behind(out.file(), f);
    written.map_err(|e| Error::io(&dest, e))?;
    let r = r.map_err(|e| e.name_archive(&dest))?;
    out.finish()?;
    Ok(r)
}
