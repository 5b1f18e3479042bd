//! Command-line behaviour on the bundled fixture store: demo backup, list, cat, pipes,
//! exit codes, dry runs and refusals.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::{Workspace, copy_dir, maildump, run, run_expect_code, run_ok};

/// `maildump backup` of the Maildirs under `home_root/<user>/Maildir`.
pub fn backup_cmd(home_root: &Path) -> Command {
    let mut c = maildump();
    c.args(["backup", "--location", "maildir:~/Maildir", "--home"])
        .arg(format!("{}/%u", home_root.display()));
    c
}

/// `maildump restore ARCHIVE --uid-margin 0` (an exact copy) into the Maildirs under
/// `home_root/<user>/Maildir`.
pub fn restore_cmd(archive: &Path, home_root: &Path) -> Command {
    let mut c = maildump();
    c.arg("restore")
        .arg(archive)
        .args([
            "--uid-margin",
            "0",
            "--location",
            "maildir:~/Maildir",
            "--home",
        ])
        .arg(format!("{}/%u", home_root.display()));
    c
}

/// A copy of fixtures/store with its file times restored.
pub fn fixture_copy(ws: &Workspace) -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dst = ws.join("store");
    copy_dir(&repo.join("fixtures/store"), &dst).unwrap();
    run_ok(std::process::Command::new(repo.join("fixtures/set-mtimes.sh")).arg(&dst));
    dst
}

pub fn backup_fixture(ws: &Workspace) -> PathBuf {
    let store = fixture_copy(ws);
    let a = ws.join("a.mdump");
    run_ok(
        crate::cli::backup_cmd(&store)
            .args(["--all-users", "--quiet", "-o"])
            .arg(&a),
    );
    a
}

fn file_in(dir: &Path, contains: &str) -> PathBuf {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().contains(contains) {
            return p;
        }
    }
    panic!("no file containing {contains} in {}", dir.display());
}

#[test]
fn backup_list_and_cat_the_fixture() {
    let ws = Workspace::new();
    let a = backup_fixture(&ws);
    let out = run_ok(maildump().arg("list").arg(&a));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("; maildump archive "), "{text}");
    let rows: Vec<&str> = text.lines().filter(|l| !l.starts_with(';')).collect();
    assert_eq!(rows.len(), 12, "{text}");
    assert!(rows.contains(&"alice\tINBOX\t2\t2020-02-02T12:00:00Z\t271\t\\Answered \\Flagged $Label1 Important\tSender 2 <sender2@example.net>\tQuarterly report"), "{text}");
    // cat is byte-exact against the file in the store.
    let store = ws.join("store");
    let orig = fs::read(file_in(&store.join("alice/Maildir/cur"), "M825201")).unwrap();
    let out = run_ok(maildump().arg("cat").arg(&a).args([
        "--user",
        "alice",
        "--mailbox",
        "INBOX",
        "--uid",
        "2",
    ]));
    assert_eq!(out.stdout, orig);
    // --user/--mailbox filters.
    let out = run_ok(maildump().arg("list").arg(&a).args([
        "--json",
        "--user",
        "bob",
        "--mailbox",
        "Archive",
    ]));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["keywords"][0], "NonJunk");
    // By GUID, without a mailbox.
    let guid = lines[0]["guid"].as_str().unwrap().to_string();
    let out = run_ok(
        maildump()
            .arg("cat")
            .arg(&a)
            .args(["--user", "bob", "--guid", &guid]),
    );
    assert_eq!(
        crate::util::sha256_hex(&out.stdout),
        lines[0]["sha256"].as_str().unwrap()
    );
}

#[test]
fn duplicate_bodies_are_stored_once() {
    let ws = Workspace::new();
    let a = backup_fixture(&ws);
    let out = run_ok(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("zstd -dc '{}' | tar -tvf -", a.display())),
    );
    let listing = String::from_utf8(out.stdout).unwrap();
    let links = listing.lines().filter(|l| l.starts_with('h')).count();
    assert_eq!(links, 3, "copies should be hard links:\n{listing}");
    // tar extracts one file per message, the copy included.
    let x = ws.join("x");
    fs::create_dir(&x).unwrap();
    run_ok(
        std::process::Command::new("tar")
            .arg("--zstd")
            .arg("-xf")
            .arg(&a)
            .arg("-C")
            .arg(&x),
    );
    assert_eq!(
        fs::read(x.join("users/alice/Archive/2.eml")).unwrap(),
        fs::read(x.join("users/alice/INBOX/2.eml")).unwrap()
    );
    let j: serde_json::Value =
        serde_json::from_slice(&fs::read(x.join("users/alice/INBOX/mailbox.json")).unwrap())
            .unwrap();
    assert_eq!(j["mailbox"]["name"], "INBOX");
}

#[test]
fn stdout_and_stdin_pipes() {
    let ws = Workspace::new();
    let store = fixture_copy(&ws);
    let out = run_ok(crate::cli::backup_cmd(&store).args(["--user", "bob", "--quiet", "-o", "-"]));
    assert!(out.stdout.len() > 100);
    let mut child = maildump()
        .args(["list", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    let res = child.wait_with_output().unwrap();
    assert!(res.status.success());
    assert_eq!(String::from_utf8(res.stdout).unwrap().lines().count(), 3);
    // Bytes that are not an archive, alone or after one: refused (exit 4), named as stdin
    // and their offset in the stream, never as a temporary file.
    for (stream, what) in [
        (
            b"not an archive".to_vec(),
            "stdin offset 0: not a maildump archive".to_string(),
        ),
        (
            [out.stdout.clone(), b"trailing junk".to_vec()].concat(),
            format!("stdin offset {}: bytes after archive 1", out.stdout.len()),
        ),
    ] {
        let mut child = maildump()
            .args(["list", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&stream).unwrap();
        let res = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&res.stderr);
        assert_eq!(res.status.code(), Some(4), "{err}");
        assert!(
            err.contains(&what) && !err.contains("/tmp"),
            "{what}: {err}"
        );
    }
}

#[test]
fn exit_codes_for_bad_requests() {
    let ws = Workspace::new();
    let a = backup_fixture(&ws);
    let o = run_expect_code(
        maildump()
            .arg("cat")
            .arg(&a)
            .args(["--user", "alice", "--mailbox", "INBOX", "--uid", "3"]),
        8,
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("no message with UID 3"));
    run_expect_code(
        maildump().arg("cat").arg(&a).args([
            "--user",
            "nobody",
            "--mailbox",
            "INBOX",
            "--uid",
            "1",
        ]),
        8,
    );
    run_expect_code(maildump().arg("list").arg(ws.join("missing.mdump")), 3);
    fs::write(ws.join("junk"), b"not an archive at all, just text").unwrap();
    let o = run_expect_code(maildump().arg("list").arg(ws.join("junk")), 4);
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a maildump archive"));
    run_expect_code(
        maildump().args([
            "backup",
            "--location",
            "maildir:~/M",
            "--all-users",
            "-o",
            "-",
        ]),
        2,
    );
    run_expect_code(
        maildump().args([
            "backup",
            "--location",
            "mbox:~/mail",
            "--home",
            "/x/%u",
            "--user",
            "a",
            "-o",
            "-",
        ]),
        2,
    );
    // An unknown major version is refused with its own code (HEADER and FOOTER agreeing
    // on it; one copy alone is damage, see untrusted.rs).
    let mut bytes = fs::read(&a).unwrap();
    bytes[16] = 9;
    let foot = bytes.len() - 72 + 16;
    bytes[foot] = 9;
    fs::write(ws.join("v9.mdump"), &bytes).unwrap();
    let o = run_expect_code(maildump().arg("list").arg(ws.join("v9.mdump")), 5);
    assert!(String::from_utf8_lossy(&o.stderr).contains("unsupported archive format version 9."));
    // A failed backup leaves no file behind.
    let dest = ws.join("never.mdump");
    run_expect_code(
        maildump()
            .args(["backup", "--location", "maildir:~/Maildir", "--home"])
            .arg(format!("{}/%u", ws.join("store").display()))
            .args(["--user", "ghost", "-o"])
            .arg(&dest),
        8,
    );
    assert!(!dest.exists());
    let leftovers: Vec<_> = fs::read_dir(ws.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn help_documents_exit_codes() {
    for sub in ["backup", "restore", "list", "cat", "verify"] {
        let out = run_ok(maildump().arg(sub).arg("--help"));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("Exit codes:") && text.contains("6  restore refused"),
            "{sub}: {text}"
        );
    }
    // Every --help is snapshotted whole in `every_help_is_as_documented`.
}

/// Every command's `--help`, as users read it: each with examples and the exit codes.
#[test]
fn every_help_is_as_documented() {
    for sub in [
        "",
        "backup",
        "restore",
        "list",
        "cat",
        "verify",
        "merge",
        "export",
        "bacula",
        "bacula backup",
        "bacula finish",
        "bacula receive",
        "bacula restore",
        "completions",
        "man",
        "estimate",
        "selfcheck",
        "amanda",
    ] {
        let out = run_ok(maildump().args(sub.split_whitespace()).arg("--help"));
        let text = String::from_utf8(out.stdout).unwrap();
        if !sub.is_empty() && !sub.starts_with("bacula ") {
            assert!(text.contains("Examples:\n"), "{sub}: {text}");
        }
        let name =
            format!("help_{}", if sub.is_empty() { "maildump" } else { sub }).replace(' ', "_");
        insta::assert_snapshot!(name, text);
    }
}

/// Shell completions and man pages come from the same definitions.
#[test]
fn completions_and_man_pages() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run_ok(maildump().args(["completions", shell]));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("maildump")
                && text.contains("restore")
                && text.contains("--received-since"),
            "{shell}"
        );
    }
    let ws = Workspace::new();
    let dir = ws.join("man1");
    run_ok(maildump().arg("man").arg(&dir));
    for page in [
        "maildump.1",
        "maildump-backup.1",
        "maildump-restore.1",
        "maildump-bacula-backup.1",
    ] {
        let text = fs::read_to_string(dir.join(page)).unwrap();
        assert!(
            text.contains(".TH ") && text.contains(".SH NAME"),
            "{page}: {text}"
        );
    }
    let restore = fs::read_to_string(dir.join("maildump-restore.1")).unwrap();
    assert!(restore.contains("\\-\\-received\\-since"), "{restore}");
}

#[test]
fn restore_dry_run_writes_nothing_and_conflicts_are_refused() {
    let ws = Workspace::new();
    let a = backup_fixture(&ws);
    let target = ws.join("target");
    let o = run_ok(crate::cli::restore_cmd(&a, &target).arg("--dry-run"));
    let plan = String::from_utf8(o.stdout).unwrap();
    assert!(
        plan.contains("restore alice / Work/Sub (1 messages)"),
        "{plan}"
    );
    assert!(!target.exists(), "dry run wrote something");
    // Restore into the source store itself: every mailbox holds mail, so nothing is written.
    let store = ws.join("store");
    let before = crate::util::tree_listing(&store);
    let o = run(crate::cli::restore_cmd(&a, &store).args(["--quiet"]));
    assert_eq!(
        o.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists and holds mail"));
    assert_eq!(before, crate::util::tree_listing(&store));
}

#[test]
fn restore_is_byte_and_name_exact_for_maildir() {
    let ws = Workspace::new();
    let a = backup_fixture(&ws);
    let target = ws.join("target");
    run_ok(crate::cli::restore_cmd(&a, &target).arg("--quiet"));
    for rel in [
        "alice/Maildir/dovecot-keywords",
        "alice/Maildir/subscriptions",
        "bob/dovecot-attributes",
    ] {
        assert_eq!(
            fs::read(ws.join("store").join(rel)).unwrap(),
            fs::read(target.join(rel)).unwrap(),
            "{rel}"
        );
    }
    // uidlists: same records; same UIDVALIDITY and GUID (N may be raised to the effective next UID).
    for rel in [
        "alice/Maildir/dovecot-uidlist",
        "alice/Maildir/.Work.Sub/dovecot-uidlist",
        "bob/Maildir/.Archive/dovecot-uidlist",
    ] {
        let a = fs::read_to_string(ws.join("store").join(rel)).unwrap();
        let b = fs::read_to_string(target.join(rel)).unwrap();
        // Records of expunged messages (no file) are dropped, as Dovecot drops them.
        let dir = ws.join("store").join(rel).parent().unwrap().to_path_buf();
        let present = |line: &&str| {
            let base = line.rsplit_once(':').unwrap().1;
            ["cur", "new"].iter().any(|s| {
                fs::read_dir(dir.join(s))
                    .map(|rd| {
                        rd.filter_map(|e| e.ok())
                            .any(|e| e.file_name().to_string_lossy().starts_with(base))
                    })
                    .unwrap_or(false)
            })
        };
        let want: Vec<&str> = a.lines().skip(1).filter(present).collect();
        assert!(
            want.len() < a.lines().count() - 1 || !rel.ends_with("alice/Maildir/dovecot-uidlist"),
            "fixture should hold an expunged record"
        );
        assert_eq!(want, b.lines().skip(1).collect::<Vec<_>>(), "{rel}");
        let hdr = |s: &str| {
            s.lines()
                .next()
                .unwrap()
                .split(' ')
                .filter(|f| f.starts_with('V') || f.starts_with('G'))
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(hdr(&a), hdr(&b), "{rel}");
    }
    let orig = file_in(&ws.join("store/alice/Maildir/cur"), "M825201");
    let restored = target
        .join("alice/Maildir/cur")
        .join(orig.file_name().unwrap());
    assert_eq!(fs::read(&orig).unwrap(), fs::read(&restored).unwrap());
    assert_eq!(
        fs::metadata(&orig).unwrap().modified().unwrap(),
        fs::metadata(&restored).unwrap().modified().unwrap()
    );
    // No staging directories are left behind.
    let names: Vec<String> = fs::read_dir(target.join("alice"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("maildump")), "{names:?}");
}

#[test]
fn progress_json_reports_events_for_backup_software() {
    let ws = Workspace::new();
    let store = fixture_copy(&ws);
    let out = run_ok(
        backup_cmd(&store)
            .args(["--all-users", "--progress", "json", "-o"])
            .arg(ws.join("p.mdump")),
    );
    let events: Vec<serde_json::Value> = String::from_utf8(out.stderr)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert_eq!(events.iter().filter(|e| e["event"] == "user").count(), 2);
    assert_eq!(events.iter().filter(|e| e["event"] == "mailbox").count(), 7);
    let done = events.last().unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(done["messages"], 12);
    assert_eq!(done["warnings"], 0);
    assert_eq!(done["exit_code"], 0);
    assert_eq!(done["archive"], ws.join("p.mdump").to_str().unwrap());
    assert_eq!(events[0]["event"], "start");
    assert_eq!(events[0]["archive_id"], done["archive_id"]);
    assert!(
        events
            .iter()
            .all(|e| e["time"].as_str().is_some_and(|t| t.ends_with('Z')))
    );
    // The schema, times and ids aside (README, "Progress events").
    let shapes: Vec<serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] != "bytes")
        .map(|e| {
            let mut e = e.clone();
            for (k, placeholder) in [
                ("time", "[time]"),
                ("archive_id", "[id]"),
                ("archive", "[path]"),
            ] {
                if let Some(v) = e.get_mut(k) {
                    *v = placeholder.into();
                }
            }
            e
        })
        .collect();
    insta::assert_json_snapshot!("backup_events", shapes);

    // An incremental knows its totals from the parent: progress has percent and ETA.
    let out = run_ok(
        backup_cmd(&store)
            .args(["--all-users", "--progress", "json", "--base"])
            .arg(ws.join("p.mdump"))
            .arg("-o")
            .arg(ws.join("i.mdump")),
    );
    let events = json_lines(&out.stderr);
    assert_eq!(events[0]["messages"], 12, "{:?}", events[0]);
    // A restore: totals first, counters that never go back across mailboxes, and the
    // last progress event at the totals.
    let out = run_ok(restore_cmd(&ws.join("p.mdump"), &ws.join("r")).args(["--progress", "json"]));
    let events = json_lines(&out.stderr);
    let start = &events[0];
    assert_eq!(
        (start["event"].as_str(), start["messages"].as_u64()),
        (Some("start"), Some(12))
    );
    let progress: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["event"] == "bytes").collect();
    assert_eq!(progress.len(), 12);
    for w in progress.windows(2) {
        assert!(w[1]["bytes"].as_u64() > w[0]["bytes"].as_u64(), "{w:?}");
        assert_eq!(
            w[1]["messages"].as_u64(),
            w[0]["messages"].as_u64().map(|m| m + 1)
        );
    }
    let last = progress.last().unwrap();
    assert_eq!(last["bytes"], start["bytes"]);
    assert_eq!(last["percent"], 100.0);
    assert_eq!(events.last().unwrap()["event"], "done");
    // A run that fails ends with an `error` event carrying the exit code.
    let out = run_expect_code(
        maildump()
            .args([
                "restore",
                "--progress",
                "json",
                "--location",
                "maildir:~/M",
                "--home",
                "/x/%u",
            ])
            .arg(ws.join("missing.mdump")),
        3,
    );
    let events = json_lines(&out.stderr);
    let err = events.last().unwrap();
    assert_eq!(
        (err["event"].as_str(), err["exit_code"].as_u64()),
        (Some("error"), Some(3))
    );
    assert!(err["message"].as_str().unwrap().contains("missing.mdump"));
}

/// The JSON lines of a run's stderr (lines that are not JSON, e.g. `maildump: error:`,
/// skipped).
fn json_lines(stderr: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn non_utf8_and_odd_folder_names_round_trip_byte_exact() {
    use std::os::unix::ffi::OsStrExt;
    let ws = Workspace::new();
    let home = ws.join("src/alice");
    // A raw (not mUTF-7) Maildir++ folder name with invalid UTF-8, made by hand as a
    // careless tool would, plus names with '&', '%' and a ".eml"-looking component.
    let names: [&[u8]; 3] = [b".caf\xe9", b".100% & more", b".x.7.eml"];
    for n in names {
        let d = home.join("Maildir").join(std::ffi::OsStr::from_bytes(n));
        for sub in ["cur", "new", "tmp"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        fs::write(
            d.join("cur/1600000000.M1P1.host,S=12:2,S"),
            b"Subject: x\n\nhi\n",
        )
        .unwrap();
        fs::write(
            d.join("dovecot-uidlist"),
            b"3 V42 N5 G0123456789abcdef0123456789abcdef\n4 :1600000000.M1P1.host,S=12\n",
        )
        .unwrap();
    }
    let a = ws.join("odd.mdump");
    let loc = "maildir:~/Maildir:UTF-8";
    run_ok(
        maildump()
            .args(["backup", "--location", loc, "--home"])
            .arg(format!("{}/%u", ws.join("src").display()))
            .args(["--user", "alice", "--quiet", "-o"])
            .arg(&a),
    );
    let list =
        String::from_utf8(run_ok(maildump().args(["list", "--json"]).arg(&a)).stdout).unwrap();
    assert!(
        list.contains(r#""mailbox":{"base64":"Y2Fm6Q=="}"#),
        "{list}"
    );
    assert!(list.contains(r#""mailbox":"100% & more""#), "{list}");
    // Maildir++ separates levels with dots, so this is the mailbox x/7/eml.
    assert!(list.contains(r#""mailbox":"x/7/eml""#), "{list}");
    run_ok(
        maildump()
            .arg("restore")
            .arg(&a)
            .args(["--location", loc, "--home"])
            .arg(format!("{}/%u", ws.join("dst").display()))
            .args(["--quiet", "--uid-margin", "0"]),
    );
    for n in names {
        let rel = std::path::Path::new("alice/Maildir").join(std::ffi::OsStr::from_bytes(n));
        assert_eq!(
            fs::read(ws.join("src").join(&rel).join("dovecot-uidlist")).unwrap(),
            fs::read(ws.join("dst").join(&rel).join("dovecot-uidlist")).unwrap(),
            "{}",
            rel.display()
        );
        assert!(
            ws.join("dst")
                .join(&rel)
                .join("cur/1600000000.M1P1.host,S=12:2,S")
                .is_file()
        );
    }
}

#[test]
fn large_messages_round_trip_and_dedup() {
    // Over the 16 MiB in-memory limit: hashed, then copied by a second read, and spanning
    // more than one data frame.
    let ws = Workspace::new();
    let md = ws.join("src/alice/Maildir");
    let mut body = b"Subject: big\n\n".to_vec();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    while body.len() < 20 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body.extend_from_slice(format!("{x:016x}\n").as_bytes());
    }
    for (dir, uid) in [("", 1), (".Copy", 3)] {
        let d = md.join(dir);
        fs::create_dir_all(d.join("cur")).unwrap();
        fs::write(d.join("cur/1600000000.M1P1.big:2,S"), &body).unwrap();
        fs::write(
            d.join("dovecot-uidlist"),
            format!("3 V7 N9\n{uid} :1600000000.M1P1.big\n"),
        )
        .unwrap();
    }
    let a = ws.join("big.mdump");
    run_ok(
        backup_cmd(&ws.join("src"))
            .args(["--user", "alice", "--quiet", "-o"])
            .arg(&a),
    );
    let out = run_ok(maildump().arg("cat").arg(&a).args([
        "--user",
        "alice",
        "--mailbox",
        "Copy",
        "--uid",
        "3",
    ]));
    assert!(out.stdout == body, "cat of the 20 MiB copy differs");
    let v = String::from_utf8(run_ok(maildump().arg("verify").arg(&a)).stdout).unwrap();
    assert!(v.contains("2 messages, 1 distinct bodies"), "{v}");
    assert!(
        fs::metadata(&a).unwrap().len() < (body.len() as u64) * 3 / 4,
        "body stored twice?"
    );
}

#[test]
fn backup_to_a_pipe_closed_early_fails() {
    // `list A | head` may stop reading; a consumer of an archive that stops reading has an
    // incomplete archive, and the backup must not report success.
    use std::io::Read;
    let ws = Workspace::new();
    let md = ws.join("src/alice/Maildir");
    fs::create_dir_all(md.join("cur")).unwrap();
    fs::write(
        md.join("cur/1600000000.M1P1.big:2,S"),
        noise_message(11, 4 << 20),
    )
    .unwrap();
    fs::write(
        md.join("dovecot-uidlist"),
        "3 V7 N2\n1 :1600000000.M1P1.big\n",
    )
    .unwrap();
    let mut child = backup_cmd(&ws.join("src"))
        .args(["--user", "alice", "--quiet", "-o", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut head).unwrap();
    // The read end is closed here (dropped above).
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("<stdout>") && err.contains("incomplete"),
        "{err}"
    );
}

/// `n` bytes of distinct lines (xorshift from `seed`), starting with a header.
fn noise_message(seed: u64, n: usize) -> Vec<u8> {
    let mut body = format!("Subject: {seed}\n\n").into_bytes();
    let mut x = seed | 1;
    while body.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body.extend_from_slice(format!("{x:016x}\n").as_bytes());
    }
    body.truncate(n);
    body
}

#[test]
fn bodies_whose_size_differs_from_the_hint_are_stored_whole() {
    // The writer reads a body straight into the frame being filled when the size it was
    // told fits, else into memory, else (over 16 MiB) twice. A file that grew between the
    // stat and the read must still be stored whole, whatever path it falls back to.
    use crate::corrupt::{bare_meta, one_mailbox_archive};
    use maildump::model::Uid;
    const M: usize = 1 << 20;
    // (uid, body, size hint): direct reads; a frame closed after a direct read; a file
    // that grew past the frame's room (memory); one that grew past 16 MiB (two reads);
    // one that only fits in memory; a copy of an earlier body; an empty one.
    let bodies = [
        (1, noise_message(1, 6 * M), 6 * M),
        (2, noise_message(2, 5 * M + 7), 5 * M + 7),
        (3, noise_message(3, 100_000), 0),
        (4, noise_message(4, 7 * M), 7 * M),
        (5, noise_message(5, 12 * M + 3), 1024),
        (6, noise_message(6, 18 * M + 1), 1024),
        (7, noise_message(7, 10 * M), 10 * M),
        (8, noise_message(3, 100_000), 100_000),
        (9, Vec::new(), 0),
    ];
    let ws = Workspace::new();
    let a = ws.join("sizes.mdump");
    one_mailbox_archive(&a, "maildir", 1, ("u", "INBOX", None), |w, u, mb| {
        bodies
            .iter()
            .map(|(uid, body, hint)| {
                let meta = maildump::model::MessageMeta {
                    uid: Uid(*uid),
                    ..bare_meta(&format!("g{uid}"))
                };
                let mut r = std::io::Cursor::new(body.clone());
                w.add_message(u, mb, meta, &mut r, *hint as u64, Path::new("test"))
                    .unwrap()
            })
            .collect()
    });
    let v = String::from_utf8(run_ok(maildump().arg("verify").arg(&a)).stdout).unwrap();
    assert!(v.contains("9 messages, 8 distinct bodies"), "{v}");
    for (uid, body, _) in &bodies {
        let out = run_ok(maildump().arg("cat").arg(&a).args([
            "--user",
            "u",
            "--mailbox",
            "INBOX",
            "--uid",
            &uid.to_string(),
        ]));
        assert!(out.stdout == *body, "uid {uid}: cat differs from the body");
    }
    // Plain tools see the same bytes.
    let x = ws.join("x");
    fs::create_dir_all(&x).unwrap();
    let st = Command::new("tar")
        .arg("--zstd")
        .arg("-xf")
        .arg(&a)
        .arg("-C")
        .arg(&x)
        .status()
        .unwrap();
    assert!(st.success());
    for (uid, body, _) in &bodies {
        let f = x.join(format!("users/u/INBOX/{uid}.eml"));
        assert!(fs::read(&f).unwrap() == *body, "{}", f.display());
    }
}

#[test]
fn user_who_left_the_store_is_recorded_gone_by_all_users_incrementals() {
    let ws = Workspace::new();
    let store = fixture_copy(&ws);
    let full = ws.join("full.mdump");
    run_ok(
        backup_cmd(&store)
            .args(["--all-users", "--quiet", "-o"])
            .arg(&full),
    );
    let listed = |args: &[&Path], deleted: bool| -> Vec<serde_json::Value> {
        let mut cmd = maildump();
        cmd.args(["list", "--json"]).args(args);
        if deleted {
            cmd.arg("--deleted");
        }
        String::from_utf8(run_ok(&mut cmd).stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let bobs = listed(&[&full], false)
        .into_iter()
        .filter(|j| j["user"] == "bob")
        .collect::<Vec<_>>();
    assert_eq!(bobs.len(), 3);
    fs::rename(store.join("bob"), ws.join("bob.away")).unwrap();

    // A run given the remaining user by name records nothing for bob.
    let named = ws.join("named.mdump");
    run_ok(
        backup_cmd(&store)
            .args(["--user", "alice", "--quiet", "--base"])
            .arg(&full)
            .arg("-o")
            .arg(&named),
    );
    assert!(listed(&[&full, &named], true).is_empty());

    // --all-users knows bob has left: all his mail is recorded deleted, in gone mailboxes.
    let inc = ws.join("inc.mdump");
    let out = run_ok(
        backup_cmd(&store)
            .arg("--all-users")
            .arg("--base")
            .arg(&full)
            .arg("-o")
            .arg(&inc),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("users no longer in the store, recorded as gone: bob"),
        "{err}"
    );
    assert!(listed(&[&inc], false).iter().all(|j| j["user"] != "bob"));
    let deleted = listed(&[&full, &inc], true);
    let key = |j: &serde_json::Value| format!("{} {} {}", j["mailbox"], j["uid"], j["guid"]);
    let mut want: Vec<String> = bobs.iter().map(key).collect();
    let mut got: Vec<String> = deleted.iter().map(key).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert!(deleted.iter().all(|j| j["user"] == "bob"));
    run_ok(maildump().arg("verify").arg(&full).arg(&inc));

    // Restoring the deleted mail into a new location gives the mailboxes back with their
    // UIDVALIDITY, and every message byte for byte.
    let dst = ws.join("dst");
    run_ok(restore_cmd(&full, &dst).arg(&inc).args([
        "--deleted",
        "--mode",
        "exact",
        "--user",
        "bob",
        "--quiet",
    ]));
    let uidlist = |root: &Path| {
        let l = fs::read_to_string(root.join("Maildir/dovecot-uidlist")).unwrap();
        l.split_whitespace().nth(1).unwrap().to_string()
    };
    assert_eq!(uidlist(&dst.join("bob")), uidlist(&ws.join("bob.away")));
    for j in &bobs {
        let args = [
            "--user",
            "bob",
            "--mailbox",
            j["mailbox"].as_str().unwrap(),
            "--uid",
            &j["uid"].to_string(),
        ];
        let want = run_ok(maildump().arg("cat").arg(&full).args(args)).stdout;
        let dir = match j["mailbox"].as_str().unwrap() {
            "INBOX" => dst.join("bob/Maildir"),
            other => dst.join(format!("bob/Maildir/.{other}")),
        };
        let found = ["cur", "new"]
            .iter()
            .filter_map(|d| fs::read_dir(dir.join(d)).ok())
            .flatten()
            .any(|e| fs::read(e.unwrap().path()).unwrap() == want);
        assert!(found, "{} uid {} not restored", j["mailbox"], j["uid"]);
    }
}

#[test]
fn deleted_mail_between_two_fulls_is_listed_and_readable() {
    let ws = Workspace::new();
    let store = fixture_copy(&ws);
    let full1 = ws.join("full1.mdump");
    run_ok(
        backup_cmd(&store)
            .args([
                "--all-users",
                "--quiet",
                "--created",
                "2026-01-01T00:00:00Z",
                "-o",
            ])
            .arg(&full1),
    );
    // Expunge bob's unread INBOX message (uid 2), as Dovecot does: unlink the file.
    let gone = file_in(&store.join("bob/Maildir/new"), "M54752");
    let bytes = fs::read(&gone).unwrap();
    fs::remove_file(&gone).unwrap();
    let full2 = ws.join("full2.mdump");
    run_ok(
        backup_cmd(&store)
            .args([
                "--all-users",
                "--quiet",
                "--created",
                "2026-01-02T00:00:00Z",
                "-o",
            ])
            .arg(&full2),
    );
    // Two fulls record no deleted mail themselves: list --deleted compares their states.
    let out = run_ok(
        maildump()
            .args(["list", "--deleted", "--json"])
            .arg(&full1)
            .arg(&full2),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["user"], "bob");
    assert_eq!(lines[0]["uid"], 2);
    assert_eq!(lines[0]["last_seen"], "2026-01-01T00:00:00Z");
    assert_eq!(lines[0]["deleted_by"], "2026-01-02T00:00:00Z");
    // Its bytes come from the first full.
    let guid = lines[0]["guid"].as_str().unwrap();
    let out = run_ok(
        maildump()
            .arg("cat")
            .arg(&full1)
            .arg(&full2)
            .args(["--user", "bob", "--guid", guid]),
    );
    assert_eq!(out.stdout, bytes);
}

/// Stderr of a run that must exit with `code`.
fn fails_with(cmd: &mut Command, code: i32) -> String {
    String::from_utf8_lossy(&run_expect_code(cmd, code).stderr).into_owned()
}

/// The small defects issue 15 lists, each with its exact message and exit code.
#[test]
fn messages_name_what_is_wrong_once() {
    let ws = Workspace::new();
    let a = backup_fixture(&ws);
    // An OS error is printed once, not "(os error 2): ... (os error 2)".
    let missing = ws.join("missing.mdump");
    let err = fails_with(maildump().arg("list").arg(&missing), 3);
    assert_eq!(
        err,
        format!(
            "maildump: error: {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
    // With several archives, the damaged one is named.
    fs::write(ws.join("junk"), b"not an archive at all, just text").unwrap();
    let err = fails_with(maildump().arg("list").arg(&a).arg(ws.join("junk")), 4);
    assert!(
        err.contains(&format!("{}: ", ws.join("junk").display())),
        "{err}"
    );
    // list of a user or mailbox the archive does not hold: exit 8, as cat and restore.
    let err = fails_with(maildump().arg("list").arg(&a).args(["--user", "nosuch"]), 8);
    assert_eq!(
        err,
        "maildump: error: not found: user nosuch is not in the archive\n"
    );
    let err = fails_with(
        maildump()
            .arg("list")
            .arg(&a)
            .args(["--user", "alice", "--mailbox", "NoSuchBox"]),
        8,
    );
    assert!(
        err.contains("user alice mailbox NoSuchBox is not in the archive"),
        "{err}"
    );
    let err = fails_with(
        maildump()
            .arg("list")
            .arg(&a)
            .args(["--deleted", "--user", "x"]),
        8,
    );
    assert!(err.contains("user x is not in the archive"), "{err}");
    // backup without arguments names each choice, not one arbitrary option of each.
    let err = fails_with(maildump().arg("backup"), 2);
    for want in [
        "<--config <DOVECOT_CONF>|--location <LOCATION>>",
        "<--user <NAME>|--all-users>",
        "<--output <PATH>|--state-dir <DIR>>",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    // --full-every and --keep-chains mean nothing without --state-dir.
    for opt in [["--full-every", "7d"], ["--keep-chains", "2"]] {
        let err = fails_with(
            maildump()
                .args([
                    "backup",
                    "--location",
                    "maildir:~/M",
                    "--all-users",
                    "-o",
                    "-",
                ])
                .args(opt),
            2,
        );
        assert!(err.contains("--state-dir"), "{opt:?}: {err}");
    }
}

/// Dates as people write them (README's own `--received-since 2026-11-01`), and a
/// duration back from now.
#[test]
fn dates_as_people_write_them() {
    let ws = Workspace::new();
    let a = backup_fixture(&ws);
    let home = format!("{}/%u", ws.join("r").display());
    let restore = |since: &str| {
        let mut cmd = maildump();
        cmd.arg("restore")
            .arg(&a)
            .args([
                "--location",
                "maildir:~/Maildir",
                "--home",
                &home,
                "--dry-run",
            ])
            .args(["--received-since", since]);
        cmd
    };
    // The fixture's mail was received in 2020: nothing after 2026-11-01 or a day back
    // from now (exit 8, nothing selected: the date was understood), all of it after 2000.
    for since in ["2026-11-01", "1d", "2026-11-01T00:00"] {
        let err = fails_with(&mut restore(since), 8);
        assert!(err.contains("nothing to restore"), "{since}: {err}");
    }
    run_ok(&mut restore("2000-01-01 00:00"));
    let err = fails_with(
        maildump()
            .arg("restore")
            .arg(&a)
            .args(["--location", "maildir:~/Maildir", "--home", &home])
            .args(["--received-since", "last tuesday"]),
        2,
    );
    assert!(
        err.contains("\"last tuesday\": expected a date (2026-11-28)"),
        "{err}"
    );
}

/// A Maildir config that also sets `mail_attachment_dir` (Dovecot accepts it and ignores
/// it for Maildir): maildump does the same, and the backup holds every message.
#[test]
fn attachment_dir_in_a_maildir_config_is_ignored_as_dovecot_does() {
    let ws = Workspace::new();
    let att = ws.join("attachments");
    let dc = crate::dovecot::Dovecot::with_extra(
        &ws.join("dc"),
        "maildir:~/Maildir",
        &[&format!("mail_attachment_dir = {}", att.display())],
    );
    dc.build_small_store("bob");
    let a = ws.join("m.mdump");
    run_ok(
        maildump()
            .args(["backup", "--config"])
            .arg(&dc.conf)
            .args([
                "--home",
                &dc.home_template(),
                "--user",
                "bob",
                "--quiet",
                "-o",
            ])
            .arg(&a),
    );
    let out = run_ok(maildump().arg("list").arg(&a));
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.lines().any(|l| l.starts_with("bob\t")), "{listed}");
    // Asked for explicitly with a Maildir location, it is still a mistake (exit 2).
    let err = fails_with(
        maildump()
            .args([
                "backup",
                "--location",
                "maildir:~/Maildir",
                "--attachment-dir",
            ])
            .arg(&att)
            .args(["--home", &dc.home_template(), "--user", "bob", "-o", "-"]),
        2,
    );
    assert!(
        err.contains("applies to sdbox and mdbox stores only"),
        "{err}"
    );
}
