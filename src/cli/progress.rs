//! What the user sees while a command runs: stop signals (SIGINT, SIGTERM), and the choice
//! of display: a progress bar or JSON events ([`super::events`]), or plain warnings.

use std::io::{self, IsTerminal};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use maildump::progress::{Event, Progress};

use super::args::ProgressMode;
use super::events;

/// The signal (SIGINT or SIGTERM) that asked this run to stop, 0 while none did.
static STOP: OnceLock<Arc<AtomicUsize>> = OnceLock::new();

/// SIGINT and SIGTERM ask the run to stop (it removes what it created, see
/// [`Progress::interrupted`]); a second one ends the process at once.
pub fn install_signal_handlers() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let which = STOP.get_or_init(|| Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // The shutdown is registered before the flag is set, so it acts on a second signal.
        let installed =
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, seen.clone())
                .and_then(|_| signal_hook::flag::register(sig, seen.clone()))
                .and_then(|_| {
                    signal_hook::flag::register_usize(
                        sig,
                        which.clone(),
                        usize::try_from(sig).unwrap_or(0),
                    )
                });
        if let Err(e) = installed {
            eprintln!(
                "maildump: warning: signal {sig} not handled ({e}): stopping the run may leave its partial files"
            );
        }
    }
}

/// The signal that asked this run to stop, 0 while none did.
pub fn stop_signal() -> usize {
    STOP.get().map(|s| s.load(Ordering::SeqCst)).unwrap_or(0)
}

/// Prints warnings, and with `notes` messages expunged during a backup.
struct Warnings {
    notes: bool,
}

impl Progress for Warnings {
    fn event(&mut self, e: &Event) {
        match e {
            Event::Warning { message } => eprintln!("maildump: warning: {message}"),
            Event::Expunged { message, .. } if self.notes => {
                eprintln!("maildump: note: {message}")
            }
            Event::Debug { message } => eprintln!("maildump: debug: {message}"),
            _ => {}
        }
    }
}

/// A progress sink that also reports a stop signal; debug events reach it only when
/// `.1` (`--verbose`).
struct Stoppable(Box<dyn Progress>, bool);

impl Progress for Stoppable {
    fn event(&mut self, e: &Event) {
        if self.1 || !matches!(e, Event::Debug { .. }) {
            self.0.event(e)
        }
    }
    fn interrupted(&self) -> bool {
        stop_signal() != 0
    }
}

/// The progress display `--progress`, `--quiet` and `--verbose` ask for, of a run that
/// writes `output` (an archive path or `-`), if any; it reports stop signals.
pub fn progress_for(
    mode: ProgressMode,
    quiet: bool,
    verbose: bool,
    output: Option<String>,
) -> Box<dyn Progress> {
    Box::new(Stoppable(progress_sink(mode, quiet, output), verbose))
}

fn progress_sink(mode: ProgressMode, quiet: bool, output: Option<String>) -> Box<dyn Progress> {
    let tty = io::stderr().is_terminal();
    match mode {
        ProgressMode::Json => Box::new(events::JsonEvents::new(output)),
        ProgressMode::None => Box::new(Warnings { notes: !quiet }),
        _ if quiet => Box::new(Warnings { notes: false }),
        ProgressMode::Bar => Box::new(events::Bar::new(true)),
        ProgressMode::Auto if tty => Box::new(events::Bar::new(false)),
        ProgressMode::Auto => Box::new(Warnings { notes: true }),
    }
}
