//! Fast restore (issue 17): target users restored in parallel give the same trees as a
//! sequential restore and as each other; a restore killed with SIGKILL mid-run leaves no
//! message Dovecot can see that is not complete, and a retry completes; a restore of one
//! user or one mailbox reads only the frames it needs.

use std::fs;
use std::io::Read as _;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::dovecot::{Dovecot, pseudo_random_bytes};
use crate::util::{Workspace, assert_text_eq, maildump, run_ok};

/// Write `n` messages (`size` bytes of body each, incompressible when `random`) straight
/// into user `user`'s Maildir INBOX and folder `Sub`, as a delivery agent would (no
/// uidlist: Dovecot gives them UIDs when it first reads them).
fn generated_user(dc: &Dovecot, user: &str, n: usize, size: usize, random: bool) {
    let md = dc.home(user).join("Maildir");
    for dir in [md.clone(), md.join(".Sub")] {
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
    }
    fs::write(md.join(".Sub/maildirfolder"), b"").unwrap();
    for i in 0..n {
        let dir = if i % 2 == 0 {
            md.clone()
        } else {
            md.join(".Sub")
        };
        let mut body = format!("From: a@example.org\nSubject: {user} message {i}\n\n").into_bytes();
        let seed = i as u64 + 1 + u64::from(user.bytes().map(u32::from).sum::<u32>()) * 100_000;
        if random {
            body.extend(pseudo_random_bytes(seed, size));
        } else {
            for l in 0..size / 64 {
                body.extend(format!("line {l} of message {i} of {user}, seed {seed}\n").bytes());
            }
        }
        let name = format!(
            "{}.M{i}P7.gen:2,{}",
            1_700_000_000 + i,
            if i % 3 == 0 { "S" } else { "" }
        );
        fs::write(dir.join("cur").join(name), body).unwrap();
    }
    dc.fix_ownership();
}

/// `maildump backup --all-users` of `src` into `archive`, with extra arguments.
fn backup(src: &Dovecot, archive: &Path, extra: &[&str]) {
    run_ok(
        maildump()
            .args(["backup", "--location", &src.location, "--home"])
            .arg(src.home_template())
            .args(["--all-users", "--quiet", "-o"])
            .arg(archive)
            .args(extra),
    );
}

/// [`crate::util::tree_listing`] of `root`, without what comes from the clock at the time
/// of the restore: the mtimes of control files (uidlists, keywords, indexes; message files
/// keep theirs) and the bytes of Dovecot's index files (compared by
/// [`assert_same_indexes`]). Everything else, names, modes, owners, message mtimes and
/// bytes, must be the same.
fn tree_without_clock(root: &Path) -> String {
    crate::util::tree_listing(root)
        .lines()
        .map(|l| {
            let name = l.split('\t').next().unwrap_or_default();
            let base = Path::new(name)
                .file_name()
                .unwrap_or_default()
                .to_string_lossy();
            let mut cols: Vec<&str> = l.split('\t').collect();
            let message = name.contains("/cur/") || name.contains("/new/");
            if cols.get(1) == Some(&"file") && !message {
                cols[5] = "-";
            }
            if base.starts_with("dovecot.index") {
                cols.pop();
            }
            format!("{}\n", cols.join("\t"))
        })
        .collect()
}

/// Every Dovecot index file below `a` has the same bytes below `b` but for its index id
/// (a creation time from the clock, which two runs need not share): a byte may differ only
/// inside 4 bytes that hold, in each, the index id of its mailbox's log.
fn assert_same_indexes(a: &Path, b: &Path) {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(&p, out);
            } else if e.file_name().to_string_lossy().starts_with("dovecot.index") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(a, &mut files);
    assert!(!files.is_empty(), "no index file below {}", a.display());
    for fa in files {
        let fb = b.join(fa.strip_prefix(a).unwrap());
        let id = |f: &Path| fs::read(f.with_file_name("dovecot.index.log")).unwrap()[4..8].to_vec();
        let (ia, ib) = (id(&fa), id(&fb));
        let (da, db) = (fs::read(&fa).unwrap(), fs::read(&fb).unwrap());
        assert_eq!(da.len(), db.len(), "{}: lengths differ", fb.display());
        for i in (0..da.len()).filter(|&i| da[i] != db[i]) {
            let in_id = (i.saturating_sub(3)..=i).any(|j| {
                da.get(j..j + 4) == Some(ia.as_slice()) && db.get(j..j + 4) == Some(ib.as_slice())
            });
            assert!(
                in_id,
                "{} differs at byte {i}, not in its index id",
                fb.display()
            );
        }
    }
}

/// Restores with 4 workers, twice, and with one: the same trees (names, contents, modes,
/// mtimes, uidlists, indexes), and each what Dovecot saw in the source.
#[test]
fn parallel_restores_are_identical_and_exact() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_rich_store("alice");
    src.build_small_store("bob");
    generated_user(&src, "carol", 120, 3000, false);
    generated_user(&src, "dave", 80, 5000, true);
    let users = ["alice", "bob", "carol", "dave"];
    let before: Vec<String> = users.iter().map(|u| src.snapshot(u)).collect();
    let archive = ws.join("a.mdump");
    backup(&src, &archive, &[]);
    let mut trees = Vec::new();
    for (name, jobs) in [("p1", "4"), ("p2", "4"), ("seq", "1")] {
        let dst = Dovecot::new(&ws.join(name), "");
        run_ok(dst.restore_cmd(&[&archive]).args(["--jobs", jobs]));
        // Before Dovecot reads (and updates) the indexes; their bytes kept for later.
        let copy = ws.join(format!("{name}.copy"));
        crate::util::copy_dir(&dst.home_root, &copy).unwrap();
        trees.push((name, tree_without_clock(&dst.home_root), copy));
        for (u, b) in users.iter().zip(&before) {
            assert_text_eq(
                &format!("{name}: user {u} as Dovecot sees it"),
                b,
                &dst.snapshot(u),
            );
        }
    }
    assert!(trees[0].1.contains("carol/Maildir/.Sub/dovecot-uidlist"));
    for (name, t, copy) in &trees[1..] {
        assert_text_eq(&format!("tree of restore {name} vs p1"), &trees[0].1, t);
        assert_same_indexes(&trees[0].2, copy);
    }
}

/// Files below `dir`, at any depth.
fn files_below(dir: &Path) -> usize {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => files_below(&e.path()),
            _ => 1,
        })
        .sum()
}

/// Start the restore of `archive` into `dst`, let it write at least 100 files below the
/// home of `user`, and kill it (SIGKILL). The restore is held on a full stderr pipe (its
/// JSON progress, read by nobody, is larger than a pipe holds) so it cannot finish before
/// the kill, whatever the machine's speed.
fn kill_mid_restore(dst: &Dovecot, archive: &Path, user: &str) {
    let mut child = dst
        .restore_cmd(&[archive])
        .args(["--progress", "json"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let home = dst.home(user);
    let before = files_below(&home);
    let mut waited = 0;
    while files_below(&home) < before + 100 {
        assert!(waited < 6000, "no message file was written");
        std::thread::sleep(std::time::Duration::from_millis(10));
        waited += 1;
    }
    child.kill().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");
    assert!(
        !err.contains("\"event\":\"done\""),
        "the restore finished before the kill"
    );
}

/// The messages of a Dovecot snapshot: (mailbox, SHA-256 of the text), sorted.
fn message_texts(snapshot: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = snapshot
        .lines()
        .filter(|l| l.starts_with("msg\t"))
        .map(|l| {
            let mailbox = l.split('\t').nth(1).unwrap().to_string();
            let sha = l.rsplit_once("sha256=").unwrap().1.to_string();
            (mailbox, sha)
        })
        .collect();
    out.sort();
    out
}

/// A restore killed by SIGKILL while it builds a new mail root: Dovecot sees no message
/// of the user (the root was being built aside), and running the restore again completes
/// it exactly.
#[test]
fn sigkill_mid_restore_leaves_no_partial_message_and_a_retry_completes() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    // ~1,200 progress events of ~100 bytes: more than a pipe holds.
    generated_user(&src, "erin", 1200, 1500, false);
    let want = src.snapshot("erin");
    let archive = ws.join("a.mdump");
    backup(&src, &archive, &[]);
    let dst = Dovecot::new(&ws.join("dst"), "");
    kill_mid_restore(&dst, &archive, "erin");
    let home = dst.home("erin");
    assert!(
        !home.join("Maildir").exists(),
        "the mail root appeared before the restore ended"
    );
    let seen = message_texts(&dst.snapshot("erin"));
    assert_eq!(seen, Vec::new(), "Dovecot sees mail of a killed restore");
    // Dovecot made an INBOX of its own for the look above: start from no mail root again.
    fs::remove_dir_all(home.join("Maildir")).unwrap();
    run_ok(&mut dst.restore_cmd(&[&archive]));
    assert_text_eq("after the retry", &want, &dst.snapshot("erin"));
}

/// The same into an existing mail root (INBOX written in place in batches, the other
/// mailbox built under the root's `tmp/`): every message Dovecot sees after the kill is
/// complete (its text is one of the archive's, in its mailbox), and a retry in merge mode
/// completes the restore (each message once).
#[test]
fn sigkill_mid_restore_into_an_existing_root_shows_only_complete_messages() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    generated_user(&src, "erin", 1200, 1500, false);
    let want = message_texts(&src.snapshot("erin"));
    let archive = ws.join("a.mdump");
    backup(&src, &archive, &[]);
    let dst = Dovecot::new(&ws.join("dst"), "");
    dst.ensure_home("erin");
    dst.doveadm("erin", &["mailbox", "create", "Other"]);
    kill_mid_restore(&dst, &archive, "erin");
    let seen = message_texts(&dst.snapshot("erin"));
    for m in &seen {
        assert!(
            want.contains(m),
            "Dovecot sees a message not in the archive: {m:?}"
        );
    }
    run_ok(dst.restore_cmd(&[&archive]).args(["--mode", "merge"]));
    assert_eq!(message_texts(&dst.snapshot("erin")), want);
}

/// Bytes the restore read from files (`pread64` and `read`, counted by strace).
fn bytes_read(cmd: &mut Command, trace: &Path) -> u64 {
    let strace = ["/usr/bin/strace", "/bin/strace"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("this test needs strace (apt-get install strace)");
    let prog = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(ToOwned::to_owned).collect();
    let mut st = Command::new(strace);
    st.args(["-f", "-qq", "-e", "trace=pread64,read", "-o"])
        .arg(trace)
        .arg(prog)
        .args(args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => st.env(k, v),
            None => st.env_remove(k),
        };
    }
    run_ok(&mut st);
    fs::read_to_string(trace)
        .unwrap()
        .lines()
        .filter(|l| l.contains("read"))
        .filter_map(|l| l.rsplit_once("= ")?.1.trim().parse::<u64>().ok())
        .sum()
}

/// A restore of one user of eight reads about an eighth of the frames a full restore
/// reads, one mailbox of it less still: frames are read where a selected message's bytes
/// are, not from the start of the archive.
#[test]
fn restore_of_one_user_or_mailbox_reads_only_its_frames() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    let users: Vec<String> = (0..8).map(|i| format!("u{i}")).collect();
    for u in &users {
        generated_user(&src, u, 24, 16000, true);
    }
    let archive = ws.join("a.mdump");
    backup(&src, &archive, &["--frame-target", "16384"]);
    let size = fs::metadata(&archive).unwrap().len();
    let read = |name: &str, sel: &[&str]| {
        let dst = Dovecot::new(&ws.join(name), "");
        let mut cmd = dst.restore_cmd(&[&archive]);
        cmd.args(["--quiet"]).args(sel);
        bytes_read(&mut cmd, &ws.join(format!("{name}.trace")))
    };
    let full = read("full", &[]);
    let user = read("user", &["--user", "u3"]);
    let mailbox = read("mailbox", &["--user", "u3", "--mailbox", "Sub"]);
    assert!(
        full >= size * 9 / 10,
        "full restore read {full} of {size} bytes"
    );
    assert!(
        user * 5 < full,
        "one user of 8: read {user} bytes, the full restore {full}"
    );
    assert!(
        mailbox < user * 3 / 4,
        "one mailbox of 2: read {mailbox} bytes, its user {user}"
    );
}
