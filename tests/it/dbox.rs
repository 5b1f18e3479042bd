//! sdbox / mdbox stores and single-instance attachment storage (SIS) against a real
//! (daemon-less) Dovecot: build stores with doveadm (`Dovecot::build_dbox_store`), back
//! them up, restore into sdbox, mdbox and maildir, and compare what Dovecot reports
//! before and after (`Dovecot::snapshot`). Also: archive size with shared attachments,
//! `cat` of SIS messages, and damaged stores (missing attachment, truncated `u.N`,
//! corrupt `dovecot.index.log`).
//!
//! The two dbox source stores (sdbox+SIS, mdbox+SIS+ALT, users alice and bob) are built
//! once per test process (`sdbox_template`, `mdbox_template`) and only read afterwards:
//! tests that damage a store work on a copy.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::dovecot::{Dovecot, attachment_message, pseudo_random_bytes, shared_attachment};
use crate::util::{
    Workspace, assert_text_eq, copy_dir_links, files_under, maildump, report, run, run_ok,
};

const USERS: [&str; 2] = ["alice", "bob"];
/// `--attachment-dir` / `mail_attachment_dir` of every SIS store here.
const ATT_DIR: &str = "~/attachments";
const SIS: [&str; 2] = [
    "mail_attachment_dir = ~/attachments",
    "mail_attachment_min_size = 1k",
];
const SDBOX: &str = "sdbox:~/sdbox";
const MDBOX_ALT: &str = "mdbox:~/mdbox:ALT=~/altstore";
const MDBOX: &str = "mdbox:~/mdbox";

/// Messages whose `cat` output is compared with `doveadm fetch text` (SIS ones, copies,
/// CRLF, two attachments, alt storage for mdbox, plain ones).
const CAT_CASES: [(&str, u32); 10] = [
    ("INBOX", 1),
    ("INBOX", 4),
    ("INBOX", 5),
    ("INBOX", 6),
    ("INBOX", 7),
    ("Work", 2),
    ("Work/Sub", 2),
    ("Ünï Box", 2),
    ("Été", 1),
    ("Archive", 2),
];

/// A dbox store built once, with what the tests need to know about it.
struct Template {
    dc: Dovecot,
    /// `snapshot(user)` right after the build, per user of `USERS`.
    snaps: Vec<String>,
    /// `fetch text` of the `CAT_CASES` of alice.
    texts: BTreeMap<(String, u32), Vec<u8>>,
    /// Files `dovecot.index` / `dovecot.index.log` of alice's INBOX and Work.
    index_files: BTreeMap<String, (bool, bool)>,
}

impl Template {
    fn total_messages(&self) -> usize {
        self.snaps
            .iter()
            .map(|s| s.lines().filter(|l| l.starts_with("msg\t")).count())
            .sum()
    }
}

/// A directory for the templates of this test process (removing those of dead processes).
pub(crate) fn template_root() -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let tmp = std::env::temp_dir();
    let prefix = "maildump-it-dbox-";
    if let Ok(rd) = fs::read_dir(&tmp) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix(prefix)
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let root = tmp.join(format!("{prefix}{}", std::process::id()));
    fs::create_dir_all(&root).expect("mkdir template root");
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod template root");
    root
}

fn build_template(name: &str, location: &str, extra: &[&str]) -> Template {
    let dir = template_root().join(name);
    let _ = fs::remove_dir_all(&dir);
    let dc = Dovecot::with_extra(&dir, location, extra);
    let t0 = std::time::Instant::now();
    for u in USERS {
        dc.build_dbox_store(u);
    }
    let mut index_files = BTreeMap::new();
    for mb in ["INBOX", "Work"] {
        let d = dc.mailbox_path("alice", mb);
        index_files.insert(
            mb.to_string(),
            (
                d.join("dovecot.index").exists(),
                d.join("dovecot.index.log").exists(),
            ),
        );
    }
    let snaps = USERS.iter().map(|u| dc.snapshot(u)).collect();
    let texts = CAT_CASES
        .iter()
        .map(|(mb, uid)| ((mb.to_string(), *uid), dc.fetch_text("alice", mb, *uid)))
        .collect();
    eprintln!("[dbox] built {location} template in {:?}", t0.elapsed());
    Template {
        dc,
        snaps,
        texts,
        index_files,
    }
}

fn sdbox_template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| build_template("sdbox", SDBOX, &SIS))
}

fn mdbox_template() -> &'static Template {
    static T: OnceLock<Template> = OnceLock::new();
    T.get_or_init(|| {
        let mut extra = SIS.to_vec();
        extra.push("mdbox_rotate_size = 4k");
        build_template("mdbox", MDBOX_ALT, &extra)
    })
}

/// `maildump backup` of every user of `src` (with `--attachment-dir` when `sis`).
fn backup_cmd(src: &Dovecot, sis: bool, archive: &Path) -> Command {
    let mut cmd = maildump();
    cmd.args([
        "backup",
        "--location",
        &src.location,
        "--home",
        &src.home_template(),
    ]);
    if sis {
        cmd.args(["--attachment-dir", ATT_DIR]);
    }
    cmd.args(["--all-users", "-o"]).arg(archive);
    cmd
}

fn assert_no_panic(cmd: &Command, out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked") && out.status.code() != Some(101),
        "maildump panicked\n{}",
        report(cmd, out)
    );
}

/// Backs up `t` (SIS) into `ws/a.mdump` and returns its path (`verify` has its own test).
fn backup_template(t: &Template, ws: &Workspace) -> PathBuf {
    let archive = ws.join("a.mdump");
    let mut cmd = backup_cmd(&t.dc, true, &archive);
    let t0 = std::time::Instant::now();
    let out = run(&mut cmd);
    assert_no_panic(&cmd, &out);
    assert!(
        out.status.success(),
        "backup of the {} template failed\n{}",
        t.dc.location,
        report(&cmd, &out)
    );
    eprintln!(
        "[dbox] backup of {} took {:?}, archive {} bytes",
        t.dc.location,
        t0.elapsed(),
        fs::metadata(&archive).map(|m| m.len()).unwrap_or(0)
    );
    archive
}

/// Restores `archive` into `dst` (with `extra` args) and compares every user's snapshot
/// with the template's.
fn restore_and_compare(t: &Template, archive: &Path, dst: &Dovecot, extra: &[&str]) {
    let mut cmd = dst.restore_cmd(&[archive]);
    cmd.args(extra);
    let out = run(&mut cmd);
    assert_no_panic(&cmd, &out);
    assert!(
        out.status.success(),
        "restore {} -> {} failed\n{}",
        t.dc.location,
        dst.location,
        report(&cmd, &out)
    );
    assert_eq!(dst.users(), USERS, "restored homes in {}", dst.location);
    for (u, before) in USERS.iter().zip(&t.snaps) {
        assert_text_eq(
            &format!(
                "[{} -> {} {extra:?}] user {u}: Dovecot snapshot after restore",
                t.dc.location, dst.location
            ),
            before,
            &dst.snapshot(u),
        );
    }
}

/// Attachment files of `home/attachments` (hashes/ links left out) grouped by hash
/// (the file name up to the first `-`): (sha256 of the content, set of inodes, count).
fn attachment_groups(home: &Path) -> BTreeMap<String, (BTreeSet<String>, BTreeSet<u64>, usize)> {
    let mut groups: BTreeMap<String, (BTreeSet<String>, BTreeSet<u64>, usize)> = BTreeMap::new();
    for f in files_under(&home.join("attachments")) {
        if f.parent()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == "hashes")
        {
            continue;
        }
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let hash = name.split('-').next().unwrap_or_default().to_string();
        let meta = fs::metadata(&f).unwrap();
        let g = groups.entry(hash).or_default();
        g.0.insert(crate::util::sha256_hex(&fs::read(&f).unwrap()));
        g.1.insert(meta.ino());
        g.2 += 1;
    }
    groups
}

/// After an SIS restore: every attachment of the source exists in the target (same
/// content), has its `hashes/` link, and is stored in no more inodes than in the source.
fn check_sis_files(src: &Dovecot, dst: &Dovecot) {
    let mut problems = Vec::new();
    for u in USERS {
        let s = attachment_groups(&src.home(u));
        let d = attachment_groups(&dst.home(u));
        if d.is_empty() {
            problems.push(format!(
                "{u}: no attachment files under {}",
                dst.home(u).join("attachments").display()
            ));
            continue;
        }
        for (hash, (s_sha, s_ino, s_n)) in &s {
            let Some((d_sha, d_ino, d_n)) = d.get(hash) else {
                problems.push(format!(
                    "{u}: attachment {hash} missing in the restored store"
                ));
                continue;
            };
            if s_sha != d_sha {
                problems.push(format!("{u}: attachment {hash}: content differs"));
            }
            if d_ino.len() > s_ino.len() {
                problems.push(format!(
                    "{u}: attachment {hash}: {} distinct inodes ({d_n} files) after restore, \
                     {} ({s_n} files) in the source: not deduplicated",
                    d_ino.len(),
                    s_ino.len()
                ));
            }
            let link = dst
                .home(u)
                .join("attachments")
                .join(&hash[0..2])
                .join(&hash[2..4])
                .join("hashes")
                .join(hash);
            if !link.is_file() {
                problems.push(format!("{u}: no hashes/ link {}", link.display()));
            }
            eprintln!(
                "[dbox] {u} attachment {hash}: source {s_n} files/{} inodes, restored {d_n} files/{} inodes",
                s_ino.len(),
                d_ino.len()
            );
        }
        for hash in d.keys().filter(|h| !s.contains_key(*h)) {
            problems.push(format!(
                "{u}: restored store has an unknown attachment {hash}"
            ));
        } // Dovecot must be able to add attachments later: every file and directory under
        // the attachment directory belongs to the mail user, directories 0700.
        for p in walk_all(&dst.home(u).join("attachments")) {
            let md = fs::symlink_metadata(&p).unwrap();
            if md.uid() != dst.uid || md.gid() != dst.gid {
                problems.push(format!(
                    "{u}: {} owned by {}:{}, not {}:{}",
                    p.display(),
                    md.uid(),
                    md.gid(),
                    dst.uid,
                    dst.gid
                ));
            }
            if md.is_dir() && md.mode() & 0o777 != 0o700 {
                problems.push(format!(
                    "{u}: {} mode {:o}, not 700",
                    p.display(),
                    md.mode() & 0o777
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "SIS files after restore:\n{}",
        problems.join("\n")
    );
}

/// Every path under `root`, `root` included.
fn walk_all(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if out[i].is_dir()
            && let Ok(rd) = fs::read_dir(&out[i])
        {
            let mut kids: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
            kids.sort();
            out.extend(kids);
        }
        i += 1;
    }
    out
}

/// A fresh SIS Dovecot of the same kind as `t` (`location` may differ).
fn sis_dovecot(dir: &Path, location: &str) -> Dovecot {
    let mut extra = SIS.to_vec();
    if location.starts_with("mdbox:") {
        extra.push("mdbox_rotate_size = 4k");
    }
    Dovecot::with_extra(dir, location, &extra)
}

/// The fixture itself: both stores have a mailbox with a `dovecot.index` (Work) and one
/// with only `dovecot.index.log` (INBOX); SIS files exist and are shared; mdbox has
/// several `m.N` files and alt storage.
#[test]
fn dbox_fixture_sanity() {
    let mut problems = Vec::new();
    for t in [sdbox_template(), mdbox_template()] {
        let loc = &t.dc.location;
        let want = BTreeMap::from([
            ("INBOX".to_string(), (false, true)),
            ("Work".to_string(), (true, true)),
        ]);
        if t.index_files != want {
            problems.push(format!(
                "[{loc}] (dovecot.index, dovecot.index.log) exist: {:?}, want {want:?}",
                t.index_files
            ));
        }
        let groups = attachment_groups(&t.dc.home("alice"));
        let shared = groups
            .values()
            .filter(|g| g.1.len() == 1 && g.2 > 1)
            .count();
        if groups.len() < 2 || shared == 0 {
            problems.push(format!(
                "[{loc}] expected >= 2 SIS attachments, one shared by several messages: {groups:?}"
            ));
        }
        if !t.snaps[0].contains("msg\tArchive\tuid=2\t")
            || !t.snaps[0].contains("status\tINBOX\tmessages=6\t")
        {
            problems.push(format!("[{loc}] unexpected snapshot:\n{}", t.snaps[0]));
        }
    }
    let m = mdbox_template();
    let storage = files_under(&m.dc.home("alice").join("mdbox/storage"));
    let mfiles = storage
        .iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("m."))
        .count();
    if mfiles < 3 {
        problems.push(format!("mdbox: only {mfiles} m.N files: {storage:?}"));
    }
    let alt = files_under(&m.dc.home("alice").join("altstore"));
    if !alt
        .iter()
        .any(|p| p.file_name().unwrap().to_string_lossy().starts_with("m."))
    {
        problems.push(format!("mdbox: nothing in alt storage: {alt:?}"));
    }
    assert!(
        problems.is_empty(),
        "fixture problems:\n{}",
        problems.join("\n")
    );
}

/// `verify` accepts the archives of both SIS stores (exit 0, no DAMAGED lines).
#[test]
fn verify_accepts_sis_archives() {
    let mut problems = Vec::new();
    for t in [sdbox_template(), mdbox_template()] {
        let ws = Workspace::new();
        let archive = backup_template(t, &ws);
        let mut cmd = maildump();
        cmd.arg("verify").arg(&archive);
        let out = run(&mut cmd);
        if !out.status.success() {
            problems.push(format!("[{}]\n{}", t.dc.location, report(&cmd, &out)));
        }
    }
    assert!(
        problems.is_empty(),
        "verify failed:\n{}",
        problems.join("\n")
    );
}

/// sdbox+SIS -> sdbox+SIS in a new location: identical snapshots, attachment files
/// exist and are deduplicated.
#[test]
fn sdbox_sis_roundtrip_to_sdbox_sis() {
    let t = sdbox_template();
    let ws = Workspace::new();
    let archive = backup_template(t, &ws);
    let dst = sis_dovecot(&ws.join("dst"), SDBOX);
    restore_and_compare(t, &archive, &dst, &["--attachment-dir", ATT_DIR]);
    check_sis_files(&t.dc, &dst);
}

/// mdbox+SIS+ALT -> mdbox+SIS (no ALT).
#[test]
fn mdbox_sis_alt_roundtrip_to_mdbox_sis() {
    let t = mdbox_template();
    let ws = Workspace::new();
    let archive = backup_template(t, &ws);
    let dst = sis_dovecot(&ws.join("dst"), MDBOX);
    restore_and_compare(t, &archive, &dst, &["--attachment-dir", ATT_DIR]);
    check_sis_files(&t.dc, &dst);
}

/// sdbox+SIS -> maildir.
#[test]
fn sdbox_sis_to_maildir() {
    let t = sdbox_template();
    let ws = Workspace::new();
    let archive = backup_template(t, &ws);
    let dst = Dovecot::new(&ws.join("dst"), "");
    restore_and_compare(t, &archive, &dst, &[]);
}

/// mdbox+SIS+ALT -> maildir.
#[test]
fn mdbox_sis_alt_to_maildir() {
    let t = mdbox_template();
    let ws = Workspace::new();
    let archive = backup_template(t, &ws);
    let dst = Dovecot::new(&ws.join("dst"), ":LAYOUT=fs");
    restore_and_compare(t, &archive, &dst, &[]);
}

/// `backup --config dovecot.conf` takes mail_location and mail_attachment_dir from the
/// file: same messages as with `--location`/`--attachment-dir`, SIS messages complete.
#[test]
fn sdbox_backup_with_config_file() {
    let t = sdbox_template();
    let ws = Workspace::new();
    let by_args = backup_template(t, &ws);
    let by_conf = ws.join("conf.mdump");
    let mut cmd = maildump();
    cmd.arg("backup")
        .arg("--config")
        .arg(&t.dc.conf)
        .args(["--home", &t.dc.home_template(), "--all-users", "-o"])
        .arg(&by_conf);
    let out = run(&mut cmd);
    assert_no_panic(&cmd, &out);
    assert!(
        out.status.success(),
        "backup --config failed\n{}",
        report(&cmd, &out)
    );
    let norm = |a: &Path| {
        let mut v: Vec<String> = list_json(a).iter().map(|v| v.to_string()).collect();
        v.sort();
        v.join("\n") + "\n"
    };
    assert_text_eq(
        "list --json: --config vs --location archive",
        &norm(&by_args),
        &norm(&by_conf),
    );
    let out = run_ok(maildump().arg("cat").arg(&by_conf).args([
        "--user",
        "alice",
        "--mailbox",
        "INBOX",
        "--uid",
        "5",
    ]));
    assert!(
        out.stdout == t.texts[&("INBOX".to_string(), 5)],
        "cat INBOX uid 5 from the --config archive differs from doveadm fetch text"
    );
}

/// `--inline-attachments` into an sdbox without attachment dir: identical snapshots and
/// no attachments directory anywhere.
#[test]
fn sdbox_sis_to_sdbox_inline_attachments() {
    let t = sdbox_template();
    let ws = Workspace::new();
    let archive = backup_template(t, &ws);
    let dst = Dovecot::new(&ws.join("dst"), SDBOX);
    restore_and_compare(t, &archive, &dst, &["--inline-attachments"]);
    let stray: Vec<PathBuf> = files_under(&dst.dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("attachments"))
        .collect();
    let dirs: Vec<PathBuf> = USERS
        .iter()
        .map(|u| dst.home(u).join("attachments"))
        .filter(|p| p.exists())
        .collect();
    assert!(
        stray.is_empty() && dirs.is_empty(),
        "--inline-attachments created attachment files/dirs: {stray:?} {dirs:?}"
    );
}

/// maildir (`build_rich_store`) -> sdbox without SIS.
#[test]
fn maildir_to_sdbox() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_rich_store("alice");
    let before = src.snapshot("alice");
    let archive = ws.join("a.mdump");
    run_ok(&mut backup_cmd(&src, false, &archive));
    let dst = Dovecot::new(&ws.join("dst"), SDBOX);
    let mut cmd = dst.restore_cmd(&[&archive]);
    let out = run(&mut cmd);
    assert_no_panic(&cmd, &out);
    assert!(
        out.status.success(),
        "restore maildir -> sdbox failed\n{}",
        report(&cmd, &out)
    );
    assert_text_eq(
        "[maildir -> sdbox] alice: Dovecot snapshot after restore",
        &before,
        &dst.snapshot("alice"),
    );
}

/// 40 messages carrying the same 200 KiB incompressible attachment: the archive stores
/// it about once.
#[test]
fn archive_stores_shared_attachment_once() {
    const ATT: usize = 200 * 1024;
    let ws = Workspace::new();
    let src = sis_dovecot(&ws.join("src"), SDBOX);
    src.ensure_home("carol");
    let big = pseudo_random_bytes(0xB16_F11E, ATT);
    for n in 1..=40 {
        let msg = attachment_message("carol", n, &format!("Big file {n}"), &[("big.bin", &big)]);
        let out = src.save("carol", "INBOX", &msg);
        assert!(
            out.status.success(),
            "doveadm save: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let groups = attachment_groups(&src.home("carol"));
    assert!(
        groups.len() == 1 && groups.values().all(|g| g.1.len() == 1),
        "fixture: Dovecot should hold the attachment once: {groups:?}"
    );
    let archive = ws.join("a.mdump");
    let mut cmd = backup_cmd(&src, true, &archive);
    let out = run(&mut cmd);
    assert_no_panic(&cmd, &out);
    assert!(
        out.status.success(),
        "backup failed\n{}",
        report(&cmd, &out)
    );
    let size = fs::metadata(&archive).unwrap().len();
    eprintln!(
        "[dbox] archive of 40 messages sharing a {ATT}-byte attachment: {size} bytes ({:.2}x the attachment)",
        size as f64 / ATT as f64
    );
    assert!(
        size < 3 * ATT as u64,
        "archive is {size} bytes, not < 3 x {ATT}: the shared attachment is stored {:.1} times",
        size as f64 / ATT as f64
    );
}

/// `cat` of SIS messages (sdbox and mdbox, copies, CRLF, alt storage) gives the full
/// message, equal to `doveadm fetch text`.
#[test]
fn cat_sis_messages_equal_fetch_text() {
    let mut problems = Vec::new();
    for t in [sdbox_template(), mdbox_template()] {
        let ws = Workspace::new();
        let archive = backup_template(t, &ws);
        for (mb, uid) in CAT_CASES {
            let want = &t.texts[&(mb.to_string(), uid)];
            let mut cmd = maildump();
            cmd.arg("cat").arg(&archive).args([
                "--user",
                "alice",
                "--mailbox",
                mb,
                "--uid",
                &uid.to_string(),
            ]);
            let out = run(&mut cmd);
            if !out.status.success() {
                problems.push(format!("[{}] {}", t.dc.location, report(&cmd, &out)));
                continue;
            }
            if &out.stdout != want {
                let first = out.stdout.iter().zip(want.iter()).position(|(a, b)| a != b);
                problems.push(format!(
                    "[{}] cat {mb} uid {uid}: {} bytes, fetch text {} bytes, first difference at {:?}\n--- cat (first 400) ---\n{}\n",
                    t.dc.location,
                    out.stdout.len(),
                    want.len(),
                    first,
                    String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(400)])
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "cat problems:\n{}",
        problems.join("\n")
    );
}

/// A copy of the sdbox template to damage.
fn damaged_copy(ws: &Workspace) -> (Dovecot, &'static Template) {
    let t = sdbox_template();
    let dc = sis_dovecot(&ws.join("src"), SDBOX);
    copy_dir_links(&t.dc.home_root, &dc.home_root).expect("copy template store");
    dc.fix_ownership();
    (dc, t)
}

/// True when `text` mentions UID `uid` (`uid 4`, `UID=4`, `uid: 4`, `uid #4`...).
fn mentions_uid(text: &str, uid: u32) -> bool {
    let lower = text.to_ascii_lowercase();
    let want = uid.to_string();
    lower.match_indices("uid").any(|(i, _)| {
        let rest = lower[i + 3..].trim_start_matches([' ', '=', ':', '#']);
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits == want
    })
}

/// Lines of `list --json` (all users).
fn list_json(archive: &Path) -> Vec<serde_json::Value> {
    let out = run_ok(maildump().arg("list").arg(archive).arg("--json"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
        .collect()
}

/// (a) One attachment file (and its `hashes/` link) deleted: the backup finishes with
/// warnings (exit 1), names user, mailbox, UID and the attachment, and holds every other
/// message.
#[test]
fn damaged_missing_attachment_is_skipped_with_warning() {
    let ws = Workspace::new();
    let (dc, t) = damaged_copy(&ws);
    let guid = dc.mailbox_guid("alice", "INBOX");
    let suffix = format!("-{guid}-4");
    let att_root = dc.home("alice").join("attachments");
    let files: Vec<PathBuf> = files_under(&att_root)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(&suffix))
        .collect();
    assert_eq!(
        files.len(),
        1,
        "attachment file of INBOX uid 4 (suffix {suffix}): {files:?}"
    );
    let file = &files[0];
    let rel = file
        .strip_prefix(&att_root)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let x_path = rel.strip_suffix(&suffix).unwrap().to_string();
    let hash = x_path
        .rsplit('/')
        .next()
        .unwrap()
        .split('-')
        .next()
        .unwrap()
        .to_string();
    fs::remove_file(file).unwrap();
    let link = file.parent().unwrap().join("hashes").join(&hash);
    fs::remove_file(&link).unwrap_or_else(|e| panic!("remove {}: {e}", link.display()));

    let archive = ws.join("a.mdump");
    let mut cmd = backup_cmd(&dc, true, &archive);
    let out = run(&mut cmd);
    assert_no_panic(&cmd, &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("[dbox] exit {:?}, stderr:\n{stderr}", out.status.code());
    let mut problems = Vec::new();
    if out.status.code() != Some(1) {
        problems.push(format!("exit code {:?}, want 1", out.status.code()));
    }
    if !stderr.contains("alice") {
        problems.push("stderr does not name user alice".to_string());
    }
    if !stderr.contains("INBOX") {
        problems.push("stderr does not name mailbox INBOX".to_string());
    }
    if !mentions_uid(&stderr, 4) {
        problems.push("stderr does not name UID 4".to_string());
    }
    if !stderr.contains(&x_path) {
        problems.push(format!(
            "stderr does not name the attachment {x_path} ({})",
            file.display()
        ));
    }
    if archive.exists() {
        let list = list_json(&archive);
        let want = t.total_messages() - 1;
        if list.len() != want {
            problems.push(format!("list --json: {} messages, want {want}", list.len()));
        }
        let has_it = list.iter().any(|v| {
            v["user"] == "alice" && v["mailbox"] == "INBOX" && (v["uid"] == 4 || v["uid"] == "4")
        });
        if has_it {
            problems.push("alice INBOX uid 4 is in the archive anyway".to_string());
        }
    } else {
        problems.push("no archive written".to_string());
    }
    assert!(
        problems.is_empty(),
        "{}\n{}",
        problems.join("\n"),
        report(&cmd, &out)
    );
}

/// (b) A truncated sdbox `u.N`: non-zero exit (1 or 7) naming the file, no panic.
#[test]
fn damaged_truncated_sdbox_file() {
    let ws = Workspace::new();
    let (dc, t) = damaged_copy(&ws);
    let file = dc.mailbox_path("alice", "INBOX").join("u.6");
    let len = fs::metadata(&file).unwrap().len();
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let archive = ws.join("a.mdump");
    let mut cmd = backup_cmd(&dc, true, &archive);
    let out = run(&mut cmd);
    assert_no_panic(&cmd, &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("[dbox] exit {:?}, stderr:\n{stderr}", out.status.code());
    let code = out.status.code();
    assert!(
        matches!(code, Some(1) | Some(7)) && stderr.contains("u.6"),
        "want exit 1 or 7 and stderr naming {}\n{}",
        file.display(),
        report(&cmd, &out)
    );
    if code == Some(1) {
        let n = list_json(&archive).len();
        assert_eq!(
            n,
            t.total_messages() - 1,
            "exit 1: every other message should be archived"
        );
    }
}

/// (c) Garbage in the middle of a `dovecot.index.log`, of INBOX (no `dovecot.index`: the
/// log is the only record of flags and expunges) and of Work (with a `dovecot.index`):
/// exit 7 or 1 with an error naming the file, no panic.
#[test]
fn damaged_index_log() {
    let mut problems = Vec::new();
    for mb in ["INBOX", "Work"] {
        let ws = Workspace::new();
        let (dc, _t) = damaged_copy(&ws);
        let file = dc.mailbox_path("alice", mb).join("dovecot.index.log");
        let mut bytes = fs::read(&file).unwrap();
        let mid = bytes.len() / 2;
        let garbage = pseudo_random_bytes(0xBAD, 64);
        let end = (mid + 64).min(bytes.len());
        bytes[mid..end].copy_from_slice(&garbage[..end - mid]);
        fs::write(&file, &bytes).unwrap();
        let archive = ws.join("a.mdump");
        let mut cmd = backup_cmd(&dc, true, &archive);
        let out = run(&mut cmd);
        assert_no_panic(&cmd, &out);
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!(
            "[dbox] {mb}: exit {:?}, stderr:\n{stderr}",
            out.status.code()
        );
        if !(matches!(out.status.code(), Some(1) | Some(7))
            && stderr.contains("dovecot.index.log")
            && stderr.contains(mb))
        {
            problems.push(format!(
                "{mb}: garbage at bytes {mid}..{end} of {} ({} bytes): want exit 7 or 1 and \
                 stderr naming the file\n{}",
                file.display(),
                bytes.len(),
                report(&cmd, &out)
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// Members of an archive's tar stream (`tar -tv` lines).
fn tar_listing(archive: &Path) -> String {
    let out = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!("zstd -dc '{}' | tar -tvf -", archive.display())),
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Incrementals of a dbox+SIS store: a new message carrying an attachment the full already
/// holds, a flag change and an expunge. The incremental stores the new message's data but
/// no blob, reads no unchanged message, and the chain restores to what Dovecot reports.
#[test]
fn dbox_sis_incremental_stores_no_attachment_twice() {
    for t in [sdbox_template(), mdbox_template()] {
        let ws = Workspace::new();
        let dc = sis_dovecot(&ws.join("src"), &t.dc.location);
        copy_dir_links(&t.dc.home_root, &dc.home_root).expect("copy template store");
        dc.fix_ownership();
        let full = ws.join("full.mdump");
        run_ok(&mut backup_cmd(&dc, true, &full));
        let listing = tar_listing(&full);
        assert!(listing.contains(" blobs/"), "{listing}");
        let again = attachment_message(
            "alice",
            90,
            "The shared attachment again",
            &[("again.bin", &shared_attachment())],
        );
        dc.save("alice", "INBOX", &again);
        dc.doveadm(
            "alice",
            &["flags", "add", "\\Answered", "mailbox", "Work", "uid", "1"],
        );
        dc.doveadm("alice", &["expunge", "mailbox", "INBOX", "uid", "1"]);
        let inc = ws.join("inc.mdump");
        let mut cmd = backup_cmd(&dc, true, &inc);
        cmd.arg("--base").arg(&full);
        let out = run_ok(&mut cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("1 distinct bodies stored"), "{err}");
        let listing = tar_listing(&inc);
        assert!(
            !listing.contains(" blobs/") && listing.contains(" parts/"),
            "the incremental must store the new message's data and no attachment:\n{listing}"
        );
        let out = run_ok(maildump().arg("verify").arg(&full).arg(&inc));
        assert!(String::from_utf8_lossy(&out.stdout).contains("OK: chain of 2 archives"));
        // Without the full, the new message's attachment is in no archive given: named.
        let out = run_ok(maildump().arg("list").arg("--json").arg(&full).arg(&inc));
        let line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains("The shared attachment again"))
            .map(str::to_string)
            .expect("new message listed");
        let j: serde_json::Value = serde_json::from_str(&line).unwrap();
        let mut cmd = maildump();
        cmd.arg("cat")
            .arg(&inc)
            .args(["--user", "alice", "--mailbox", "INBOX", "--uid"])
            .arg(j["uid"].to_string());
        let out = run(&mut cmd);
        assert_eq!(out.status.code(), Some(8), "{}", report(&cmd, &out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("attachment (blob"),
            "{}",
            report(&cmd, &out)
        );
        let dst = sis_dovecot(&ws.join("dst"), &t.dc.location);
        let mut cmd = dst.restore_cmd(&[&full]);
        cmd.arg(&inc).args(["--attachment-dir", ATT_DIR]);
        run_ok(&mut cmd);
        for u in USERS {
            assert_text_eq(
                &format!("[{}] user {u}: chain restore", t.dc.location),
                &dc.snapshot(u),
                &dst.snapshot(u),
            );
        }
    }
}

/// `verify` names every message whose attachment (blob) is damaged, and `cat` of an
/// incremental without the archive holding a blob names the missing attachment.
#[test]
fn verify_names_messages_of_a_damaged_attachment() {
    let ws = Workspace::new();
    let store = ws.join("sdbox-store");
    copy_dir_links(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/sdbox-store"),
        &store,
    )
    .unwrap();
    let archive = ws.join("a.mdump");
    run_ok(
        maildump()
            .args(["backup", "--location", "sdbox:~/sdbox", "--home"])
            .arg(format!("{}/%u", store.display()))
            .args(["--attachment-dir", ATT_DIR, "--all-users", "--quiet"])
            .args(["--frame-target", "512", "-o"])
            .arg(&archive),
    );
    let bytes = fs::read(&archive).unwrap();
    let starts: Vec<usize> = bytes
        .windows(4)
        .enumerate()
        .filter(|(_, w)| *w == [0x28, 0xb5, 0x2f, 0xfd])
        .map(|(i, _)| i)
        .collect();
    assert!(starts.len() > 3, "small frames expected");
    let mut named = 0;
    for (k, &at) in starts.iter().enumerate() {
        let mut bad = bytes.clone();
        bad[at + 12] ^= 0x55;
        let damaged = ws.join(format!("bad{k}.mdump"));
        fs::write(&damaged, &bad).unwrap();
        let mut cmd = maildump();
        cmd.arg("verify").arg(&damaged);
        let out = run(&mut cmd);
        assert_no_panic(&cmd, &out);
        assert_eq!(out.status.code(), Some(4), "{}", report(&cmd, &out));
        let text = String::from_utf8_lossy(&out.stdout);
        let named_here: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("its attachment (blob") && l.contains("is damaged"))
            .collect();
        // The attachment shared by INBOX UIDs 2 and 3 and the copy of UID 2 in Work: each
        // message that needs it is named.
        if [
            "mailbox INBOX UID 2:",
            "mailbox INBOX UID 3:",
            "mailbox Work UID 1:",
        ]
        .iter()
        .all(|m| named_here.iter().any(|l| l.contains(m)))
        {
            named += 1;
        }
    }
    assert_eq!(
        named, 1,
        "the frame of the shared attachment names its three messages"
    );
}

/// An sdbox mailbox whose index files are gone: Dovecot shows it empty until a
/// `force-resync`; the backup says so (exit 1) instead of silently leaving its mail out.
#[test]
fn sdbox_mailbox_without_index_is_reported() {
    let ws = Workspace::new();
    let store = ws.join("sdbox-store");
    copy_dir_links(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/sdbox-store"),
        &store,
    )
    .unwrap();
    fs::remove_file(store.join("carol/sdbox/mailboxes/Work/dbox-Mails/dovecot.index.log")).unwrap();
    let mut cmd = maildump();
    cmd.args(["backup", "--location", "sdbox:~/sdbox", "--home"])
        .arg(format!("{}/%u", store.display()))
        .args(["--attachment-dir", ATT_DIR, "--all-users", "-o"])
        .arg(ws.join("a.mdump"));
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1), "{}", report(&cmd, &out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mailbox Work: 1 message files but no dovecot.index"),
        "{err}"
    );
    // INBOX is complete.
    let listed = list_json(&ws.join("a.mdump"));
    assert_eq!(listed.iter().filter(|j| j["mailbox"] == "INBOX").count(), 3);
}

/// In an incremental, a mailbox whose index is damaged keeps the state the parent recorded
/// (exit 1, named): a restore of the chain still has its mail, and none of it is recorded
/// as deleted. (It used to be left out, and its mail recorded as deleted.)
#[test]
fn damaged_mailbox_in_an_incremental_keeps_its_parent_state() {
    let ws = Workspace::new();
    let store = ws.join("sdbox-store");
    copy_dir_links(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/sdbox-store"),
        &store,
    )
    .unwrap();
    let backup = |out: &Path, base: Option<&Path>| {
        let mut cmd = maildump();
        cmd.args(["backup", "--location", "sdbox:~/sdbox", "--home"])
            .arg(format!("{}/%u", store.display()))
            .args(["--attachment-dir", ATT_DIR, "--all-users", "--quiet", "-o"])
            .arg(out);
        if let Some(b) = base {
            cmd.arg("--base").arg(b);
        }
        let o = run(&mut cmd);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (full, inc) = (ws.join("full.mdump"), ws.join("inc.mdump"));
    assert_eq!(backup(&full, None).0, Some(0));
    // Garbage in INBOX's index log.
    let log = store.join("carol/sdbox/mailboxes/INBOX/dbox-Mails/dovecot.index.log");
    let mut bytes = fs::read(&log).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid..mid + 16].fill(0xff);
    fs::write(&log, &bytes).unwrap();
    let (code, err) = backup(&inc, Some(&full));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("mailbox INBOX: kept as the archive this is an incremental of"),
        "{err}"
    );
    let inbox = |a: &Path| {
        list_json(a)
            .into_iter()
            .filter(|j| j["mailbox"] == "INBOX")
            .map(|j| (j["uid"].as_u64().unwrap(), j["sha256"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(inbox(&inc), inbox(&full));
    assert_eq!(inbox(&full).len(), 3);
    let deleted = run_ok(maildump().arg("list").arg(&full).arg(&inc).arg("--deleted"));
    let rows: Vec<_> = String::from_utf8_lossy(&deleted.stdout)
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .map(String::from)
        .collect();
    assert!(rows.is_empty(), "recorded as deleted: {rows:?}");
    for uid in ["1", "3"] {
        let args = ["--user", "carol", "--mailbox", "INBOX", "--uid", uid];
        let from_full = run_ok(maildump().arg("cat").arg(&full).args(args)).stdout;
        let from_chain = run_ok(maildump().arg("cat").arg(&full).arg(&inc).args(args)).stdout;
        assert!(
            !from_full.is_empty() && from_full == from_chain,
            "uid {uid}"
        );
    }
}
