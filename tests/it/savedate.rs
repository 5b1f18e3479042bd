//! Save dates (IMAP SAVEDATE, `doveadm fetch date.saved`) kept where Dovecot stores them
//! (issue 12): Maildir and sdbox keep them only in `dovecot.index.cache`, mdbox in its index
//! records. Checked with real `doveadm`: an archive whose messages carry explicit, old
//! save dates restores them exactly, they survive what Dovecot does to the store
//! afterwards, and round trips between the formats keep what Dovecot showed. The dates are
//! years in the past, so a restore that gave the restore time fails whatever the clock.

use std::path::Path;

use crate::corrupt::{bare_meta, one_mailbox_archive};
use crate::dovecot::{Dovecot, message};
use crate::util::{Workspace, maildump, report, run, run_ok};

const USER: &str = "u";

/// Save dates of UIDs 1..=3 of the dated archive (2014, 2017, 2020).
const DATES: [i64; 3] = [1_400_000_001, 1_500_000_002, 1_600_000_003];

/// An archive of INBOX of [`USER`] with UIDs 1..=3 saved at [`DATES`] (and UID 4 without
/// a save date), as a `store` backup.
fn dated_archive(path: &Path, store: &str) {
    use maildump::model::{Name, Timestamp, Uid};
    one_mailbox_archive(path, store, 3, (USER, "INBOX", None), |w, u, mb| {
        (1..=4u32)
            .map(|uid| {
                let body = message(USER, uid, &format!("dated {uid}"), "body\n");
                let meta = maildump::model::MessageMeta {
                    uid: Uid(uid),
                    guid: Name::from(format!("g{uid}").as_str()),
                    received: Timestamp {
                        secs: 1_300_000_000,
                        nanos: 0,
                    },
                    saved: DATES
                        .get(uid as usize - 1)
                        .map(|&secs| Timestamp { secs, nanos: 0 }),
                    size_physical: body.len() as u64,
                    ..bare_meta("g")
                };
                let n = body.len() as u64;
                w.add_message(
                    u,
                    mb,
                    meta,
                    &mut std::io::Cursor::new(body),
                    n,
                    Path::new("t"),
                )
                .unwrap()
            })
            .collect()
    });
}

/// `date.saved` as doveadm prints it (TZ=UTC).
fn shown(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// (uid, date.saved) of every message of INBOX, as Dovecot reports them.
fn saved_dates(dc: &Dovecot) -> Vec<(u32, String)> {
    doveadm_clean(
        dc,
        &["-f", "tab", "fetch", "uid date.saved", "mailbox", "INBOX"],
    )
    .lines()
    .skip(1)
    .filter(|l| !l.is_empty())
    .map(|l| {
        let (uid, date) = l.split_once('\t').unwrap();
        (uid.parse().unwrap(), date.to_string())
    })
    .collect()
}

/// Run doveadm and return its stdout; it must succeed without a word about corruption.
fn doveadm_clean(dc: &Dovecot, args: &[&str]) -> String {
    let mut cmd = dc.command(USER, args);
    let out = run(&mut cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.to_lowercase().contains("corrupt"),
        "{}",
        report(&cmd, &out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Restore `archive` into `dc` (an empty store).
fn restore(dc: &Dovecot, archive: &Path) {
    dc.ensure_home(USER);
    run_ok(dc.restore_cmd(&[archive]).arg("--quiet"));
    dc.fix_ownership();
}

fn expected(uids: &[u32]) -> Vec<(u32, String)> {
    uids.iter()
        .map(|&u| (u, shown(DATES[u as usize - 1])))
        .collect()
}

/// The dated messages of `dates` (UIDs 1..=3 that are still there).
fn dated(dates: &[(u32, String)]) -> Vec<(u32, String)> {
    dates.iter().filter(|(u, _)| *u <= 3).cloned().collect()
}

/// Restore the dated archive (`store`) into the empty `dc`: Dovecot shows the dates; what
/// it does to the store afterwards keeps them, with no complaint about the cache: a resync,
/// a flag change (a Maildir rename), an expunge, a new message (Dovecot extends the cache),
/// fetches that make it cache more fields.
fn dates_come_back_and_stay(dc: &Dovecot, archive: &Path, store: &str) {
    dated_archive(archive, store);
    restore(dc, archive);
    let got = saved_dates(dc);
    assert_eq!(dated(&got), expected(&[1, 2, 3]), "{store}: {got:?}");
    assert_eq!(got.len(), 4, "{store}: {got:?}");
    doveadm_clean(dc, &["force-resync", "INBOX"]);
    doveadm_clean(
        dc,
        &["flags", "add", "\\Seen", "mailbox", "INBOX", "uid", "1"],
    );
    doveadm_clean(dc, &["expunge", "mailbox", "INBOX", "uid", "2"]);
    let out = dc.save(USER, "INBOX", &message(USER, 9, "new", "x\n"));
    assert!(out.status.success(), "{out:?}");
    let fields = "imap.bodystructure imap.envelope size.virtual";
    doveadm_clean(dc, &["fetch", fields, "mailbox", "INBOX"]);
    doveadm_clean(dc, &["force-resync", "INBOX"]);
    let got = saved_dates(dc);
    assert_eq!(
        dated(&got),
        expected(&[1, 3]),
        "{store} after changes: {got:?}"
    );
    assert_eq!(got.len(), 4, "{store}: {got:?}");
}

#[test]
fn explicit_save_dates_come_back_and_stay() {
    let ws = Workspace::new();
    for (i, loc) in ["maildir:~/Maildir", "sdbox:~/sdbox"].iter().enumerate() {
        let dc = Dovecot::new(&ws.join(format!("dc{i}")), loc);
        let store = loc.split(':').next().unwrap();
        dates_come_back_and_stay(&dc, &ws.join(format!("dated{i}.mdump")), store);
    }
}

/// The same with Dovecot 2.4.1; and a cache 2.4 wrote (the dates of the dated messages,
/// kept through a message 2.4 saves and caches) read back by a backup into a 2.3 store.
#[test]
fn save_dates_with_dovecot24() {
    let s = crate::d24::Scratch::new("savedate");
    let ws = Workspace::new();
    for (i, loc) in ["maildir:~/Maildir", "sdbox:~/sdbox"].iter().enumerate() {
        let dc = s.dovecot(&format!("dc{i}"), loc, &[]);
        let store = loc.split(':').next().unwrap();
        dates_come_back_and_stay(&dc, &s.join(format!("dated{i}.mdump")), store);
        let before = saved_dates(&dc);
        let archive = ws.join(format!("back{i}.mdump"));
        let out = backup_with(&dc, &archive, &[]);
        assert!(out.status.success(), "{out:?}");
        let back = Dovecot::new(&ws.join(format!("back{i}")), loc);
        restore(&back, &archive);
        assert_eq!(saved_dates(&back), before, "2.4 {loc} -> 2.3");
    }
}

/// A source store of `loc` holding the dated archive, then changed by Dovecot (a resync,
/// flags, a message it saves itself, fields it caches): its cache is partly Dovecot's.
fn source_store(ws: &Workspace, name: &str, loc: &str) -> Dovecot {
    let archive = ws.join(format!("{name}.mdump"));
    dated_archive(&archive, loc.split(':').next().unwrap());
    let dc = Dovecot::new(&ws.join(name), loc);
    restore(&dc, &archive);
    doveadm_clean(&dc, &["force-resync", "INBOX"]);
    doveadm_clean(
        &dc,
        &["flags", "add", "\\Flagged", "mailbox", "INBOX", "uid", "3"],
    );
    let out = dc.save(USER, "INBOX", &message(USER, 8, "saved by dovecot", "y\n"));
    assert!(out.status.success(), "{out:?}");
    doveadm_clean(&dc, &["fetch", "imap.bodystructure", "mailbox", "INBOX"]);
    dc
}

#[test]
fn save_dates_survive_round_trips() {
    let ws = Workspace::new();
    let sources = [
        ("maildir", "maildir:~/Maildir"),
        ("sdbox", "sdbox:~/sdbox"),
        ("mdbox", "mdbox:~/mdbox"),
    ];
    let pairs = [
        ("maildir", "maildir:~/Maildir"),
        ("sdbox", "sdbox:~/sdbox"),
        ("maildir", "sdbox:~/sdbox"),
        ("sdbox", "maildir:~/Maildir"),
        ("mdbox", "maildir:~/Maildir"),
    ];
    for (name, loc) in sources {
        let src = source_store(&ws, &format!("src-{name}"), loc);
        let before = saved_dates(&src);
        assert_eq!(dated(&before), expected(&[1, 2, 3]), "{name}: {before:?}");
        assert_eq!(before.len(), 5, "{name}: {before:?}");
        let archive = ws.join(format!("backup-{name}.mdump"));
        let out = backup_with(&src, &archive, &[]);
        assert!(out.status.success(), "{out:?}");
        for (i, (_, dst)) in pairs.iter().enumerate().filter(|(_, p)| p.0 == name) {
            let dc = Dovecot::new(&ws.join(format!("dst-{name}-{i}")), dst);
            restore(&dc, &archive);
            assert_eq!(saved_dates(&dc), before, "{name} -> {dst}");
        }
    }
}

/// `maildump backup` of [`USER`] of `dc` into `archive` with `extra` options.
fn backup_with(dc: &Dovecot, archive: &Path, extra: &[&str]) -> std::process::Output {
    run(maildump()
        .args([
            "backup",
            "--location",
            &dc.location,
            "--home",
            &dc.home_template(),
            "--user",
            USER,
            "--progress",
            "none",
            "-o",
        ])
        .arg(archive)
        .args(extra))
}

/// (location, what the report says, how the cache is spoilt).
type Spoil = (&'static str, &'static str, fn(&Path));

/// A cache Dovecot would not use either (of another index, cut short) gives no save
/// dates and no warning (exit 0), a debug line with `--verbose` naming it; a symlink in its
/// place is not followed and is a warning (exit 1). The rest of the mailbox is backed up.
#[test]
fn a_cache_dovecot_would_not_use_gives_no_dates() {
    let ws = Workspace::new();
    let cases: [Spoil; 5] = [
        ("maildir:~/Maildir", "indexid", |p| {
            let mut b = std::fs::read(p).unwrap();
            b[4] ^= 0x55;
            std::fs::write(p, b).unwrap();
        }),
        ("sdbox:~/sdbox", "indexid", |p| {
            let mut b = std::fs::read(p).unwrap();
            b[4] ^= 0x55;
            std::fs::write(p, b).unwrap();
        }),
        ("maildir:~/Maildir", "outside the file", |p| {
            let b = std::fs::read(p).unwrap();
            std::fs::write(p, &b[..b.len() - 6]).unwrap();
        }),
        ("sdbox:~/sdbox", "symbolic link", |p| {
            std::fs::rename(p, p.with_extension("real")).unwrap();
            std::os::unix::fs::symlink(p.with_extension("real"), p).unwrap();
        }),
        // A FIFO would block whoever opens it: it is refused unopened.
        ("maildir:~/Maildir", "not a regular file", |p| {
            std::fs::remove_file(p).unwrap();
            crate::util::run_ok(std::process::Command::new("mkfifo").arg(p));
        }),
    ];
    for (i, (loc, why, spoil)) in cases.iter().enumerate() {
        let archive = ws.join(format!("dated{i}.mdump"));
        dated_archive(&archive, loc.split(':').next().unwrap());
        let dc = Dovecot::new(&ws.join(format!("dc{i}")), loc);
        restore(&dc, &archive);
        // sdbox: the path doveadm gives is the dbox-Mails directory.
        let dir = dc.mailbox_path(USER, "INBOX");
        spoil(&dir.join("dovecot.index.cache"));
        let refused = matches!(*why, "symbolic link" | "not a regular file");
        for verbose in [false, true] {
            let out_archive = ws.join(format!("b{i}{verbose}.mdump"));
            let out = backup_with(&dc, &out_archive, if verbose { &["-v"] } else { &[] });
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(i32::from(refused)),
                "{loc} {why}: {err}"
            );
            let line = err
                .lines()
                .find(|l| l.contains("dovecot.index.cache"))
                .unwrap_or_default();
            let kind = if refused { "warning:" } else { "debug:" };
            assert_eq!(
                line.contains(kind) && line.contains(why) && line.contains("save dates"),
                refused || verbose,
                "{loc} {why} verbose {verbose}: {err}"
            );
            assert!(!err.contains("warning") || refused, "{loc} {why}: {err}");
            let back = Dovecot::new(&ws.join(format!("back{i}{verbose}")), loc);
            restore(&back, &out_archive);
            let got = saved_dates(&back);
            assert_eq!(got.len(), 4, "{loc} {why}: {got:?}");
            assert!(
                dated(&got)
                    .iter()
                    .all(|(u, d)| *d != shown(DATES[*u as usize - 1])),
                "{loc} {why}: {got:?}"
            );
        }
    }
}
