//! No leftovers (issue 11): a backup stopped by SIGTERM or SIGINT removes its partial
//! archive and dies by the signal; a `--state-dir` run removes partial archives of runs that
//! died (never one another run is writing); a restore or a backup that fills the disk
//! removes its temporary files and hidden build directories.

use std::fs;
use std::os::unix::fs::symlink;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::dovecot::pseudo_random_bytes;
use crate::util::{
    Workspace, maildump, run, run_expect_code, run_ok, signal_and_drain, tree_listing,
};

/// A Maildir of user `u` with `n` messages of `size` bytes in INBOX and `links` symlinked
/// message files (each one named on stderr: a lot of output).
fn store(ws: &Workspace, n: usize, size: usize, links: usize) -> PathBuf {
    let md = ws.join("home/u/Maildir");
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(md.join(sub)).unwrap();
    }
    for i in 0..n {
        let mut body = format!("Subject: m{i}\n\n").into_bytes();
        body.extend(pseudo_random_bytes(i as u64 + 1, size));
        fs::write(
            md.join(format!("cur/{}.M{i}P1.big:2,S", 1_700_000_000 + i)),
            body,
        )
        .unwrap();
    }
    for i in 0..links {
        let name = format!(
            "{}.M{i}P2.link-with-a-long-name-to-fill-the-pipe:2,S",
            1_600_000_000 + i
        );
        symlink("/etc/hostname", md.join("cur").join(name)).unwrap();
    }
    md
}

fn partials(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".maildump-"))
        .collect()
}

fn backup_cmd(ws: &Workspace, out: &Path) -> Command {
    let mut cmd = maildump();
    cmd.args(["backup", "--location", "maildir:~/Maildir", "--home"])
        .arg(ws.join("home/%u"))
        .args(["--user", "u", "-o"])
        .arg(out);
    cmd
}

/// The backup is held on a full stderr pipe (its JSON warnings, read by nobody) while its
/// partial archive exists; the signal is sent then, stderr drained, and the run must stop
/// at its next message, remove the partial file and die by that signal. No timing luck:
/// the run cannot finish before stderr is read.
fn stopped_by(sig: i32) {
    let ws = Workspace::new();
    store(&ws, 20, 2000, 700);
    let out_dir = ws.join("out");
    fs::create_dir_all(&out_dir).unwrap();
    let archive = out_dir.join("a.mdump");
    let mut child = backup_cmd(&ws, &archive)
        .args(["--progress", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut waited = 0;
    while partials(&out_dir).is_empty() {
        assert!(waited < 6000, "no partial archive appeared");
        std::thread::sleep(std::time::Duration::from_millis(10));
        waited += 1;
    }
    let (status, err) = signal_and_drain(&mut child, sig);
    assert_eq!(status.signal(), Some(sig), "{status:?}\n{err}");
    assert!(err.contains("interrupted by a signal"), "{err}");
    assert_eq!(partials(&out_dir), Vec::<String>::new());
    assert!(!archive.exists());
}

#[test]
fn sigterm_during_backup_leaves_no_partial() {
    stopped_by(libc_sig::TERM);
}

#[test]
fn sigint_during_backup_leaves_no_partial() {
    stopped_by(libc_sig::INT);
}

mod libc_sig {
    pub const INT: i32 = 2;
    pub const TERM: i32 = 15;
}

#[test]
fn state_dir_run_removes_stale_partials_only() {
    let ws = Workspace::new();
    store(&ws, 3, 100, 0);
    let sd = ws.join("state");
    fs::create_dir_all(&sd).unwrap();
    let stale = sd.join(".maildump-Xy12ab.partial");
    let held = sd.join(".maildump-Zz99zz.partial");
    fs::write(&stale, b"half an archive").unwrap();
    fs::write(&held, b"being written").unwrap();
    // Another run writing (it holds the lock on its partial file, as maildump does).
    let lock = fs::File::open(&held).unwrap();
    lock.lock().unwrap();
    let out = run_ok(
        maildump()
            .args(["backup", "--location", "maildir:~/Maildir", "--home"])
            .arg(ws.join("home/%u"))
            .args(["--user", "u", "--state-dir"])
            .arg(&sd),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(".maildump-Xy12ab.partial (left by a run that did not finish)"),
        "{err}"
    );
    assert!(!stale.exists());
    assert!(
        held.exists(),
        "a partial file another run holds was removed"
    );
}

/// A small tmpfs, unmounted however the test ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
                .arg(at),
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let out = run(Command::new("umount").arg(&self.0));
        assert!(
            out.status.success() || std::thread::panicking(),
            "umount failed"
        );
    }
}

#[test]
fn full_disk_restore_and_backup_leave_nothing() {
    let ws = Workspace::new();
    store(&ws, 40, 60_000, 0);
    let archive = ws.join("a.mdump");
    run_ok(&mut backup_cmd(&ws, &archive));
    let disk = Tmpfs::mount(&ws.join("small"));
    // A restore of 2.4 MB onto 1 MB: ENOSPC, exit 3, and nothing left (no tmp/ file, no
    // hidden root, no home it created).
    let out = run_expect_code(
        maildump()
            .arg("restore")
            .arg(&archive)
            .args(["--location", "maildir:~/Maildir", "--home"])
            .arg(disk.0.join("home/%u")),
        3,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    let left = tree_listing(&disk.0);
    assert!(
        left.lines().all(|l| l.starts_with("home/\t")),
        "left behind:\n{left}"
    );
    // Into an existing root: a new folder is built aside (under tmp/) and removed.
    let root = disk.0.join("home/v/Maildir");
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(root.join(sub)).unwrap();
    }
    let before = tree_listing(&disk.0);
    run_expect_code(
        maildump()
            .arg("restore")
            .arg(&archive)
            .args(["--location", "maildir:~/Maildir", "--home"])
            .arg(disk.0.join("home/%u"))
            .args(["--user", "u", "--to-user", "v"]),
        3,
    );
    let cleaned: Vec<String> = tree_listing(&disk.0)
        .lines()
        .filter(|l| !before.contains(*l))
        .map(String::from)
        .collect();
    // INBOX of an existing root is written in place: its complete messages may stay, but no
    // temporary file does.
    assert!(
        cleaned.iter().all(|l| l.starts_with("home/v/Maildir/cur/")),
        "left behind: {cleaned:?}"
    );
    // A backup onto the full disk: exit 3 and no partial archive.
    let out = run_expect_code(&mut backup_cmd(&ws, &disk.0.join("b.mdump")), 3);
    assert!(String::from_utf8_lossy(&out.stderr).contains("No space left"));
    assert_eq!(partials(&disk.0), Vec::<String>::new());
    assert!(!disk.0.join("b.mdump").exists());
}
