//! `maildump completions` and `maildump man`: shell completion scripts and man pages, both
//! made from the same argument definitions as `--help` ([`super::args`]).

use std::io;
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;
use maildump::Error;

use super::args::Cli;

/// Print the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "maildump", &mut io::stdout());
    Ok(ExitCode::SUCCESS)
}

/// Write the man pages into `dir` (created if missing).
pub fn man(dir: &Path) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let n = write_man(&Cli::command(), "maildump", dir)?;
    eprintln!("maildump: wrote {n} man pages to {}", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// Write the man page of `cmd` (named `name`) and of each of its subcommands into `dir`;
/// how many.
fn write_man(cmd: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<usize> {
    let path = dir.join(format!("{name}.1"));
    let page = cmd
        .clone()
        .display_name(name.to_string())
        .bin_name(name.replace('-', " "));
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .map_err(|e| Error::io(&path, e))?;
    std::fs::write(&path, out).map_err(|e| Error::io(&path, e))?;
    let mut n = 1;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        n += write_man(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(n)
}
