//! `maildump merge`: a chain of archives written as one full archive.

use std::process::ExitCode;

use maildump::{MergeOptions, merge, parse_duration};

use super::args::{MergeArgs, ProgressMode};
use super::progress::progress_for;
use super::{chain_damaged, exit_if, open_chain, write_output};

/// Run `maildump merge`.
pub fn run(a: MergeArgs) -> anyhow::Result<ExitCode> {
    let (chain, _tmp) = open_chain(&a.archives, true)?;
    let mut opts = MergeOptions {
        keep_deleted: a.keep_deleted.as_deref().map(parse_duration).transpose()?,
        ..Default::default()
    };
    opts.writer.level = a.write.level;
    if let Some(t) = a.write.threads {
        opts.writer.threads = t.max(1);
    }
    let mut progress = progress_for(
        a.write.progress,
        a.write.quiet,
        a.write.verbose,
        Some(a.output.clone()),
    );
    let stats = write_output(&a.output, |out| {
        merge(&chain, &opts, out, progress.as_mut())
    })?;
    for w in &stats.warnings {
        eprintln!("maildump: warning: {w}");
    }
    if !a.write.quiet && a.write.progress != ProgressMode::Json {
        eprintln!(
            "maildump: merged {} archives: {} messages, {} distinct bodies, {} deleted messages kept",
            chain.archives.len(),
            stats.messages,
            stats.bodies,
            stats.deleted
        );
    }
    Ok(exit_if(stats.warnings.is_empty() && !chain_damaged(&chain)))
}
