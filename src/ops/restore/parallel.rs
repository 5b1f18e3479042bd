//! Restoring several target users at once: a few worker threads, each taking the next
//! unit of users (users that share no directory) and restoring it as a sequential restore
//! would, with its own frame cursors and its own store writer. Nothing a worker writes
//! depends on another's timing: a unit's users are restored in order by one thread, and
//! units share no file (mail root, home, alternate storage, attachment directory,
//! METADATA dictionary), so the files, names, UIDs, uidlists and indexes are those of a
//! sequential run. Counts, warnings and report lines are merged in unit order; progress
//! events reach the caller's [`Progress`] from the calling thread, which also passes its
//! stop request on to the workers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::time::Duration;

use super::exec::{Job, Reading, restore_user};
use super::{MAX_JOBS, PlannedMailbox, RestoreStats};
use crate::error::{Context, Error, Result, Within};
use crate::progress::{Event, Progress};
use crate::store::location::Location;

/// The planned mailboxes of each target user, in user order.
pub(super) type Users<'a> = [(String, Vec<&'a PlannedMailbox>)];

/// How many workers: `requested` (0: one per CPU, at most [`MAX_JOBS`]), never more than
/// there are units.
pub(super) fn jobs(requested: usize, units: usize) -> usize {
    let n = if requested == 0 {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .min(MAX_JOBS)
    } else {
        requested
    };
    n.min(units).max(1)
}

/// The directories and files a restore of `user` writes in or below: they must not be
/// shared with another unit's.
///
/// # Errors
/// A template that cannot be expanded for `user`.
fn user_paths(loc: &Location, user: &str) -> Result<Vec<PathBuf>> {
    let mut out = vec![loc.root_of(user)?];
    out.extend(loc.home_of(user)?);
    out.extend(loc.alt_of(user)?);
    out.extend(loc.attachment_dir_of(user)?);
    out.extend(loc.attribute_file_of(user)?);
    Ok(out)
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

fn union(parent: &mut [usize], a: usize, b: usize) {
    let (a, b) = (find(parent, a), find(parent, b));
    // The smaller index is the root: units are ordered by their first user.
    let (lo, hi) = (a.min(b), a.max(b));
    parent[hi] = lo;
}

/// Group the target users into units that share no path of [`user_paths`] (the same
/// path, or one below another: a mail root without `%u`, one attachment directory for
/// all): each unit is restored by one worker, its users in order. Units are in the order
/// of their first user, their users in user order. A path that cannot be computed puts
/// every user in one unit (the restore then fails where a sequential one would).
pub(super) fn units(loc: &Location, users: &Users<'_>) -> Vec<Vec<usize>> {
    let mut parent: Vec<usize> = (0..users.len()).collect();
    let mut exact: HashMap<PathBuf, usize> = HashMap::new();
    let mut below: HashMap<PathBuf, Vec<usize>> = HashMap::new();
    for (i, (user, _)) in users.iter().enumerate() {
        let Ok(paths) = user_paths(loc, user) else {
            return vec![(0..users.len()).collect()];
        };
        for p in paths {
            let mut shared: Vec<usize> = below.get(&p).cloned().unwrap_or_default();
            shared.extend(p.ancestors().filter_map(|a| exact.get(a).copied()));
            for j in shared {
                union(&mut parent, i, j);
            }
            for a in p.ancestors().skip(1) {
                below.entry(a.to_path_buf()).or_default().push(i);
            }
            exact.insert(p, i);
        }
    }
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut slot: HashMap<usize, usize> = HashMap::new();
    for i in 0..users.len() {
        let r = find(&mut parent, i);
        let k = *slot.entry(r).or_insert_with(|| {
            out.push(Vec::new());
            out.len() - 1
        });
        out[k].push(i);
    }
    out
}

/// What a worker tells the calling thread.
enum Msg {
    /// An event of a unit, passed on in unit order (as a sequential run would emit it).
    Event(usize, Event),
    /// A unit is done: the events of the next one may pass.
    UnitDone(usize),
    /// Message bytes and messages copied since the worker's last report.
    Copied(u64, u64),
}

/// A worker's [`Progress`]: events go to the calling thread (a bounded queue: a caller
/// that does not take them holds the workers), and the stop request comes from it.
struct Relay<'a> {
    tx: SyncSender<Msg>,
    /// The unit being restored.
    unit: usize,
    stop: &'a AtomicBool,
    /// The worker's own counts at its last `Bytes` event.
    last: (u64, u64),
}

impl Progress for Relay<'_> {
    fn event(&mut self, e: &Event) {
        let msg = match e {
            Event::Bytes { bytes, messages } => {
                let d = (
                    bytes.saturating_sub(self.last.0),
                    messages.saturating_sub(self.last.1),
                );
                self.last = (*bytes, *messages);
                Msg::Copied(d.0, d.1)
            }
            other => Msg::Event(self.unit, other.clone()),
        };
        // The calling thread is gone only once every worker has returned.
        let _ = self.tx.send(msg);
    }

    fn interrupted(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// The shared state of a parallel run.
struct Shared<'a, 'j> {
    job: &'a Job<'j>,
    users: &'a Users<'a>,
    units: &'a [Vec<usize>],
    next: AtomicUsize,
    stop: AtomicBool,
}

/// One worker: units taken in order until none is left or the run stops; each unit's
/// counts, or its error.
fn worker(sh: &Shared<'_, '_>, tx: SyncSender<Msg>) -> Vec<(usize, Result<RestoreStats>)> {
    let mut relay = Relay {
        tx,
        unit: 0,
        stop: &sh.stop,
        last: (0, 0),
    };
    let mut reading = Reading::default();
    let mut out = Vec::new();
    loop {
        let u = sh.next.fetch_add(1, Ordering::Relaxed);
        let Some(unit) = sh.units.get(u) else { break };
        if sh.stop.load(Ordering::Relaxed) {
            break;
        }
        relay.unit = u;
        let mut stats = RestoreStats::default();
        let r = unit.iter().try_for_each(|&i| {
            let (target, mbs) = &sh.users[i];
            restore_user(sh.job, target, mbs, &mut reading, &mut stats, &mut relay)
                .within(Context::user(target.as_str()))
        });
        if r.is_err() {
            sh.stop.store(true, Ordering::Relaxed);
        }
        out.push((u, r.map(|()| stats)));
        let _ = relay.tx.send(Msg::UnitDone(u));
    }
    // The users restored (also before an error) are put in place; an error doing so is
    // the last unit's.
    if let Err(e) = reading.commits.flush() {
        sh.stop.store(true, Ordering::Relaxed);
        match out.last_mut() {
            Some((_, r @ Ok(_))) => *r = Err(e),
            Some(_) => {}
            None => out.push((usize::MAX, Err(e))),
        }
    }
    out
}

/// Events of units, passed on in unit order whatever order the workers send them in: the
/// current unit's at once, a later unit's held until the units before it are done.
#[derive(Default)]
struct InOrder {
    current: usize,
    held: BTreeMap<usize, Vec<Event>>,
    done: BTreeSet<usize>,
}

impl InOrder {
    fn event(&mut self, unit: usize, e: Event, progress: &mut dyn Progress) {
        if unit == self.current {
            progress.event(&e);
        } else {
            self.held.entry(unit).or_default().push(e);
        }
    }

    fn unit_done(&mut self, unit: usize, progress: &mut dyn Progress) {
        self.done.insert(unit);
        while self.done.remove(&self.current) {
            self.current += 1;
            for e in self.held.remove(&self.current).unwrap_or_default() {
                progress.event(&e);
            }
        }
    }

    /// Every worker is gone: what is still held, in unit order.
    fn finish(self, progress: &mut dyn Progress) {
        for e in self.held.into_values().flatten() {
            progress.event(&e);
        }
    }
}

/// Pass the workers' events on to `progress` until every worker is done, and their stop
/// request on to them. Bytes events carry the run's totals; other events come in unit
/// order ([`InOrder`]), so warnings read as a sequential run's.
fn relay_events(rx: &Receiver<Msg>, stop: &AtomicBool, progress: &mut dyn Progress) {
    let (mut bytes, mut messages) = (0u64, 0u64);
    let mut order = InOrder::default();
    loop {
        if progress.interrupted() {
            stop.store(true, Ordering::Relaxed);
        }
        // The timeout only bounds how long a stop request waits for the next event.
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Msg::Event(u, e)) => order.event(u, e, progress),
            Ok(Msg::UnitDone(u)) => order.unit_done(u, progress),
            Ok(Msg::Copied(b, m)) => {
                bytes = bytes.saturating_add(b);
                messages += m;
                progress.event(&Event::Bytes { bytes, messages });
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    order.finish(progress);
}

/// Restore `units` of `users` with `jobs` workers, adding their counts, warnings and
/// report lines to `stats` in unit order.
///
/// # Errors
/// The error of the first unit (in unit order) that failed; [`Error::Interrupted`] when
/// the caller asked to stop. Units done before are in place, as in a sequential run.
pub(super) fn run(
    job: &Job<'_>,
    users: &Users<'_>,
    units: &[Vec<usize>],
    jobs: usize,
    stats: &mut RestoreStats,
    progress: &mut dyn Progress,
) -> Result<()> {
    let sh = Shared {
        job,
        users,
        units,
        next: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    };
    let (tx, rx) = sync_channel::<Msg>(256);
    let mut results: Vec<(usize, Result<RestoreStats>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..jobs)
            .map(|_| {
                let (sh, tx) = (&sh, tx.clone());
                s.spawn(move || worker(sh, tx))
            })
            .collect();
        drop(tx);
        relay_events(&rx, &sh.stop, progress);
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    results.sort_by_key(|(u, _)| *u);
    let mut interrupted = false;
    let mut done = Vec::with_capacity(results.len());
    for (_, r) in results {
        match r {
            Ok(s) => done.push(s),
            Err(Error::Interrupted) => interrupted = true,
            Err(e) => return Err(e),
        }
    }
    if interrupted || done.len() < units.len() {
        return Err(Error::Interrupted);
    }
    for s in done {
        stats.absorb(s);
    }
    Ok(())
}

impl RestoreStats {
    /// Add the counts, warnings and report lines of `other` (restored after these).
    fn absorb(&mut self, other: RestoreStats) {
        self.mailboxes += other.mailboxes;
        self.messages += other.messages;
        self.present += other.present;
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.lost += other.lost;
        self.warnings.extend(other.warnings);
        self.report.extend(other.report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Seen(Vec<String>);

    impl Progress for Seen {
        fn event(&mut self, e: &Event) {
            if let Event::Warning { message } = e {
                self.0.push(message.clone());
            }
        }
    }

    fn warning(text: &str) -> Event {
        Event::Warning {
            message: text.to_string(),
        }
    }

    #[test]
    fn events_pass_in_unit_order_whatever_order_they_arrive_in() {
        let mut seen = Seen(Vec::new());
        let mut order = InOrder::default();
        order.event(2, warning("c"), &mut seen);
        order.event(1, warning("b1"), &mut seen);
        order.event(0, warning("a"), &mut seen);
        assert_eq!(seen.0, ["a"]);
        order.unit_done(1, &mut seen);
        order.event(1, warning("b2"), &mut seen);
        assert_eq!(seen.0, ["a"], "unit 1 waits for unit 0");
        order.unit_done(0, &mut seen);
        assert_eq!(seen.0, ["a", "b1", "b2", "c"]);
        order.event(2, warning("c2"), &mut seen);
        order.event(3, warning("d"), &mut seen);
        order.finish(&mut seen);
        assert_eq!(seen.0, ["a", "b1", "b2", "c", "c2", "d"]);
    }

    fn units_of(loc: &Location, names: &[&str]) -> Vec<Vec<usize>> {
        let users: Vec<(String, Vec<&PlannedMailbox>)> =
            names.iter().map(|n| (n.to_string(), Vec::new())).collect();
        units(loc, &users)
    }

    fn loc(spec: &str) -> Location {
        Location::parse(spec, Some("/srv/mail/%u".into())).unwrap()
    }

    #[test]
    fn users_apart_are_units_of_their_own() {
        let got = units_of(&loc("maildir:~/Maildir"), &["a", "b", "c"]);
        assert_eq!(got, vec![vec![0], vec![1], vec![2]]);
    }

    #[test]
    fn users_sharing_a_directory_are_one_unit() {
        // One mail root for all.
        let got = units_of(&loc("maildir:/srv/shared"), &["a", "b", "c"]);
        assert_eq!(got, vec![vec![0, 1, 2]]);
        // One attachment directory for all, mail roots apart.
        let mut l = loc("mdbox:~/mdbox");
        l.attachment_dir = Some("/srv/attachments".into());
        assert_eq!(units_of(&l, &["a", "b"]), vec![vec![0, 1]]);
        // Roots apart, no home.
        let l = Location::parse("maildir:/srv/m/%u", None).unwrap();
        assert_eq!(units_of(&l, &["a", "b"]), vec![vec![0], vec![1]]);
    }

    #[test]
    fn a_path_below_another_users_path_is_the_same_unit() {
        // b's home is the mail root of a and c: all three share it.
        let mut l = Location::parse("maildir:/srv/m/b", None).unwrap();
        l.home = Some("/srv/m/%u".into());
        assert_eq!(units_of(&l, &["a", "b", "c"]), vec![vec![0, 1, 2]]);
        // Homes apart, one root inside another user's home.
        let l = Location::parse("maildir:/srv/h/a/%u", Some("/srv/h/%u".into())).unwrap();
        assert_eq!(units_of(&l, &["b", "a", "c"]), vec![vec![0, 1, 2]]);
    }

    #[test]
    fn jobs_never_exceed_units() {
        assert_eq!(jobs(8, 3), 3);
        assert_eq!(jobs(2, 12), 2);
        assert_eq!(jobs(5, 0), 1);
        assert!((1..=MAX_JOBS).contains(&jobs(0, 100)));
    }
}
