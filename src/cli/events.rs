//! What the command line shows while a run goes on: a progress bar for people, JSON Lines
//! for backup software (README, "Progress events"), or only warnings.

use std::io::{self, Write};
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use maildump::progress::{Event, Progress};
use serde_json::{Value, json};

/// The `done` event of a JSON run, kept until the exit code is known
/// ([`finish_json`]); `None` when the run is not in JSON mode or has not finished.
static PENDING_DONE: Mutex<Option<Value>> = Mutex::new(None);
/// The archive a `--state-dir` run chose after its events started ([`set_output`]).
static OUTPUT: Mutex<Option<String>> = Mutex::new(None);

/// Name the archive this run writes, once it is known.
pub fn set_output(path: &str) {
    *OUTPUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(path.to_string());
}

/// Whether this run writes JSON events (then errors become `error` events too).
static JSON_MODE: Mutex<bool> = Mutex::new(false);

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Write one JSON event line to stderr, with its time.
fn emit(mut v: Value) {
    if let Value::Object(m) = &mut v {
        m.insert("time".into(), Value::String(now()));
    }
    // Progress output is best effort: a closed stderr must not fail the run.
    let _ = writeln!(io::stderr().lock(), "{v}");
}

/// JSON Lines on stderr: every library event with its time, progress with totals, percent
/// and ETA when the totals are known, and a final `done` (with the archive and the exit
/// code) or `error`.
pub struct JsonEvents {
    started: Instant,
    totals: (Option<u64>, Option<u64>),
    output: Option<String>,
}

impl JsonEvents {
    /// Events of a run that writes to `output` (an archive path, `-`), if any.
    pub fn new(output: Option<String>) -> Self {
        json_mode();
        JsonEvents {
            started: Instant::now(),
            totals: (None, None),
            output,
        }
    }
}

impl Progress for JsonEvents {
    fn event(&mut self, e: &Event) {
        let Ok(mut v) = serde_json::to_value(e) else {
            return;
        };
        match e {
            Event::Start {
                messages, bytes, ..
            } => {
                self.started = Instant::now();
                self.totals = (*messages, *bytes);
            }
            Event::Bytes { bytes, .. } => {
                let m = v.as_object_mut();
                if let (Some(m), (tm, Some(tb))) = (m, self.totals) {
                    if let Some(tm) = tm {
                        m.insert("total_messages".into(), json!(tm));
                    }
                    m.insert("total_bytes".into(), json!(tb));
                    if tb > 0 {
                        let frac = (*bytes as f64 / tb as f64).min(1.0);
                        m.insert("percent".into(), json!((frac * 1000.0).round() / 10.0));
                        let secs = self.started.elapsed().as_secs_f64();
                        if frac > 0.0 {
                            let eta = (secs / frac - secs).max(0.0);
                            m.insert("eta_seconds".into(), json!(eta.round() as u64));
                        }
                    }
                }
            }
            Event::Done { .. } => {
                let late = OUTPUT
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
                if let Value::Object(m) = &mut v
                    && let Some(o) = self.output.as_ref().or(late.as_ref())
                {
                    m.insert("archive".into(), json!(if o == "-" { "stdout" } else { o }));
                }
                *PENDING_DONE
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(v);
                return;
            }
            _ => {}
        }
        emit(v);
    }
}

/// This run reports in JSON: its errors become `error` events.
pub fn json_mode() {
    *JSON_MODE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
}

/// End a JSON run: its `done` event with `exit_code`, if the run got that far.
pub fn finish_json(exit_code: u8) {
    let done = PENDING_DONE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(mut v) = done {
        if let Value::Object(m) = &mut v {
            m.insert("exit_code".into(), json!(exit_code));
        }
        emit(v);
    }
}

/// In a JSON run, the error that ends it as an `error` event (it is also printed as text).
pub fn json_error(message: &str, exit_code: u8) {
    if *JSON_MODE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    {
        emit(json!({"event": "error", "message": message, "exit_code": exit_code}));
    }
}

/// A progress bar on stderr: percent and ETA when the totals are known, a spinner
/// otherwise. `always` draws it even when stderr is not a terminal (`--progress bar`).
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// A bar on stderr.
    pub fn new(always: bool) -> Self {
        let target = if always {
            ProgressDrawTarget::term_like(Box::new(console::Term::stderr()))
        } else {
            ProgressDrawTarget::stderr()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        bar.set_style(style(
            "{spinner} {bytes} {binary_bytes_per_sec} {elapsed} {wide_msg}",
        ));
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Bar { bar }
    }

    fn say(&self, what: &str, message: &str) {
        self.bar
            .suspend(|| eprintln!("maildump: {what}: {message}"));
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

impl Progress for Bar {
    fn event(&mut self, e: &Event) {
        match e {
            Event::Start {
                bytes: Some(total), ..
            } => {
                self.bar.set_length(*total);
                self.bar.set_style(style(
                    "{percent:>3}% [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                ));
            }
            Event::Mailbox { user, mailbox, .. } => {
                self.bar.set_message(format!("{user} {mailbox}"));
            }
            Event::Bytes { bytes, .. } => {
                // An estimate (the parent's state) may be passed: the bar then grows.
                if self.bar.length().is_some_and(|l| *bytes > l) {
                    self.bar.set_length(*bytes);
                }
                self.bar.set_position(*bytes);
            }
            Event::Warning { message } => self.say("warning", message),
            Event::Expunged { message, .. } => self.say("note", message),
            Event::Debug { message } => self.say("debug", message),
            Event::Done { .. } => self.bar.finish_and_clear(),
            Event::User { .. } | Event::Start { .. } => {}
        }
    }
}
