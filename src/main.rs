//! The `maildump` command: parses the command line, calls the library, prints, and maps
//! errors to the exit codes documented in README.md and `--help`. Each command lives in a
//! module of [`cli`]; this file only dispatches and turns errors into exit codes.

mod cli;

use std::io;
use std::process::ExitCode;

use clap::Parser;

use cli::args::{Cli, Command, ProgressMode};
use cli::events;
use cli::progress::{install_signal_handlers, stop_signal};
use maildump::Error;

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_signal_handlers();
    maildump::remote::configure(maildump::remote::Options {
        endpoint: cli.s3.s3_endpoint.clone(),
        virtual_hosted: cli.s3.s3_virtual_hosted,
    });
    let s3_stats = cli.s3.s3_stats;
    let code = run_and_report(cli);
    if s3_stats {
        let (requests, fetched, sent) = maildump::remote::stats();
        eprintln!("maildump: s3: {requests} requests, {fetched} bytes fetched, {sent} bytes sent");
    }
    code
}

/// Run the command and turn its outcome into the exit code (printing the error).
fn run_and_report(cli: Cli) -> ExitCode {
    let json = match &cli.command {
        Command::Backup(a) => a.write.progress == ProgressMode::Json,
        Command::Merge(a) => a.write.progress == ProgressMode::Json,
        Command::Restore(a) => a.progress == ProgressMode::Json,
        _ => false,
    };
    if json {
        // Errors before the run starts (a missing archive, a bad option) are events too.
        events::json_mode();
    }
    let ready = maildump::format::crypt::set_identities(&cli.identity)
        .map_err(anyhow::Error::from)
        .and_then(|()| cli::set_recipients(&cli.command));
    match ready.and_then(|()| run(cli)) {
        Ok(code) => {
            // ExitCode cannot be read back; it is one of the documented codes.
            let n = (0..=u8::MAX)
                .find(|n| ExitCode::from(*n) == code)
                .unwrap_or(0);
            events::finish_json(n);
            code
        }
        Err(e)
            if matches!(
                e.downcast_ref::<Error>().map(Error::root),
                Some(Error::Interrupted)
            ) =>
        {
            let sig = stop_signal();
            eprintln!("maildump: {e}");
            events::json_error(&e.to_string(), u8::try_from(128 + sig).unwrap_or(130));
            // Die by the same signal, as a shell or a service manager expects.
            let sig = i32::try_from(sig).unwrap_or(0);
            // Only returns when it could not (then the exit code says the same).
            let _ = signal_hook::low_level::emulate_default_handler(sig);
            ExitCode::from(u8::try_from(128 + sig).unwrap_or(130))
        }
        Err(e) => {
            if let Some(Error::Io { source, .. }) = e.downcast_ref::<Error>().map(Error::root)
                && source.kind() == io::ErrorKind::BrokenPipe
            {
                return ExitCode::SUCCESS;
            }
            if let Some(ioe) = e.downcast_ref::<io::Error>()
                && ioe.kind() == io::ErrorKind::BrokenPipe
            {
                return ExitCode::SUCCESS;
            }
            let text = cli::error_text(&e);
            eprintln!("maildump: error: {text}");
            let code = e
                .downcast_ref::<Error>()
                .map(|e| e.kind().exit_code())
                .unwrap_or(3);
            events::json_error(&text, code);
            ExitCode::from(code)
        }
    }
}

/// Run one command.
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Backup(a) => cli::backup::run(&a),
        Command::Restore(a) => cli::restore::run(a),
        Command::List(a) => cli::inspect::list(a),
        Command::Cat(a) => cli::inspect::cat(a),
        Command::Verify(a) => cli::inspect::verify(a),
        Command::Export(a) => cli::export::run(a),
        Command::Merge(a) => cli::merge::run(a),
        Command::Bacula(c) => cli::bacula::run(c),
        Command::Completions { shell } => cli::docs::completions(shell),
        Command::Man { dir } => cli::docs::man(&dir),
        Command::Estimate(a) => cli::agent::run_estimate(&a),
        Command::Selfcheck(a) => cli::agent::run_selfcheck(&a),
        Command::Amanda(a) => cli::amanda::run(&a),
    }
}
