//! `maildump export`: mail from an archive as mbox, `.eml` files or a plain Maildir.

use std::process::ExitCode;

use maildump::{ExportFormat, ExportOptions, export};

use super::args::{ExportArgs, ExportFormatArg};
use super::{chain_damaged, exit_if, open_chain, state_of};

/// Run `maildump export`.
pub fn run(a: ExportArgs) -> anyhow::Result<ExitCode> {
    super::local_only("export -o", &a.output)?;
    let (chain, _tmp) = open_chain(&a.archives, false)?;
    let at = state_of(&chain, a.as_of.as_deref())?;
    let opts = ExportOptions {
        user: a.user,
        mailbox: a.mailbox,
        format: match a.format {
            ExportFormatArg::Mbox => ExportFormat::Mbox,
            ExportFormatArg::Eml => ExportFormat::Eml,
            ExportFormatArg::Maildir => ExportFormat::Maildir,
        },
        output: a.output.clone(),
    };
    let stats = export(&chain, at, &opts)?;
    if !a.quiet {
        eprintln!(
            "maildump: exported {} mailboxes, {} messages to {}",
            stats.mailboxes,
            stats.messages,
            a.output.display()
        );
    }
    Ok(exit_if(!chain_damaged(&chain)))
}
