//! Online backups of stores that change while they are read (issue 11): a mutator delivers,
//! renames (flag changes), moves `new/` to `cur/`, deletes, and for sdbox/mdbox saves, flags,
//! expunges and purges through `doveadm`, while `maildump backup` runs. Every message present
//! from the start to the end of the run must be in the archive, byte-exact; the exit code is
//! 0 (a message expunged during the run is named, not damage); nothing that stayed is ever
//! reported as expunged.
//!
//! The verdict does not depend on timing: whatever the interleaving, a stable message must be
//! there. How often the races are hit does: `bench/live-backup.sh` runs many more rounds
//! (`MAILDUMP_LIVE_ROUNDS`) and reports the figures in README.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use maildump::chain::Chain;

use crate::dovecot::Dovecot;
use crate::util::{Workspace, maildump};

/// A small deterministic PRNG (splitmix64): the same seed gives the same operations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Rounds per format: `MAILDUMP_LIVE_ROUNDS` (the bench script sets it), else `default`.
fn rounds(default: u64) -> u64 {
    std::env::var("MAILDUMP_LIVE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every message of an archive by mailbox: (UID, GUID, bytes), read back through the
/// library (SHA-256 checked on the way).
pub fn archive_messages(path: &Path) -> BTreeMap<String, Vec<(u32, String, Vec<u8>)>> {
    let chain = Chain::open(&[path], false).unwrap();
    let at = chain.last();
    let a = &chain.archives[at];
    let mut cursors = Vec::new();
    let mut out: BTreeMap<String, Vec<(u32, String, Vec<u8>)>> = BTreeMap::new();
    for i in 0..a.dir.mailboxes.len() {
        let cat = a.catalog(i).unwrap();
        let list = out.entry(cat.mailbox.name.to_string()).or_default();
        for rec in &cat.messages {
            let mut bytes = Vec::new();
            chain
                .copy_record(&mut cursors, at, &cat, rec, &mut bytes)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            list.push((rec.message.uid.0, rec.message.guid.to_string(), bytes));
        }
    }
    out
}

/// What one backup run reported: exit code, warnings, messages named as expunged.
#[derive(Debug, Default)]
pub struct RunReport {
    pub code: Option<i32>,
    pub warnings: Vec<String>,
    pub expunged: Vec<String>,
    pub stderr: String,
}

/// Parse the JSON Lines events of `--progress json`.
pub fn parse_events(stderr: &str) -> RunReport {
    let mut r = RunReport {
        stderr: stderr.to_string(),
        ..Default::default()
    };
    for line in stderr.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        match v["event"].as_str() {
            Some("warning") => r.warnings.push(v["message"].as_str().unwrap_or("").into()),
            Some("expunged") => r.expunged.push(line.to_string()),
            _ => {}
        }
    }
    r
}

/// Run `maildump backup` with JSON events; the mutator's `stop` flag is set when it ends.
fn backup_while(cmd: &mut Command, stop: &AtomicBool) -> RunReport {
    cmd.args(["--progress", "json"]);
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("start maildump");
    stop.store(true, Ordering::SeqCst);
    let mut r = parse_events(&String::from_utf8_lossy(&out.stderr));
    r.code = out.status.code();
    r
}

// ---------------------------------------------------------------------------------------
// Maildir

/// One message of the Maildir mutator: its base, where it is now, whether it stays.
struct MdMsg {
    base: String,
    /// Path relative to the mailbox: `new/<base>` or `cur/<base>:2,<flags>`.
    rel: String,
    stable: bool,
}

const MD_MESSAGES: usize = 300;
const MD_FLAGS: [&str; 6] = ["", "S", "RS", "FS", "DFS", "Sab"];

fn md_body(seed: u64, i: usize) -> Vec<u8> {
    let mut b = format!(
        "From: sender{i}@example.org\nTo: u@example.org\nSubject: live {seed} {i}\nMessage-ID: <{seed}.{i}@live>\n\n"
    )
    .into_bytes();
    for l in 0..(i % 7 + 1) {
        b.extend_from_slice(format!("line {l} of message {i} in round {seed}\n").as_bytes());
    }
    b
}

/// Build INBOX with [`MD_MESSAGES`] messages and a uidlist that knows them all; every
/// third message is volatile (the mutator may delete it).
fn md_store(maildir: &Path, seed: u64) -> (Vec<MdMsg>, BTreeMap<String, Vec<u8>>) {
    for sub in ["cur", "new", "tmp"] {
        fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let mut msgs = Vec::new();
    let mut stable = BTreeMap::new();
    let mut uidlist = format!("3 V{} N{}\n", 1_600_000_000 + seed, MD_MESSAGES + 1);
    for i in 0..MD_MESSAGES {
        let body = md_body(seed, i);
        let base = format!("{}.M{i}P{seed}.live,S={}", 1_700_000_000 + i, body.len());
        let rel = if i % 10 == 0 {
            format!("new/{base}")
        } else {
            format!("cur/{base}:2,{}", MD_FLAGS[i % MD_FLAGS.len()])
        };
        fs::write(maildir.join(&rel), &body).unwrap();
        uidlist.push_str(&format!("{} :{base}\n", i + 1));
        let is_stable = i % 3 != 0;
        if is_stable {
            stable.insert(base.clone(), body);
        }
        msgs.push(MdMsg {
            base,
            rel,
            stable: is_stable,
        });
    }
    fs::write(maildir.join("dovecot-uidlist"), uidlist).unwrap();
    fs::write(maildir.join("dovecot-keywords"), "0 $Label1\n1 Work\n").unwrap();
    (msgs, stable)
}

/// The mutator: renames in `cur/` (flag changes, most operations), moves from `new/` to
/// `cur/`, deliveries through `tmp/`, deletions of volatile messages. Runs until `stop` or
/// `max_ops`; returns the bases it deleted.
fn md_mutate(
    maildir: &Path,
    mut msgs: Vec<MdMsg>,
    seed: u64,
    stop: &AtomicBool,
    max_ops: u64,
) -> BTreeSet<String> {
    let mut rng = Rng::new(seed ^ 0x5eed);
    let mut deleted = BTreeSet::new();
    let mut delivered = 0usize;
    let mut ops = 0u64;
    while !stop.load(Ordering::Relaxed) && ops < max_ops {
        ops += 1;
        let r = rng.below(100);
        if r < 6 {
            delivered += 1;
            let base = format!("1800000000.M{delivered}P{seed}.deliver,S=40");
            let tmp = maildir.join("tmp").join(&base);
            fs::write(&tmp, b"Subject: delivered during the backup\n\nhi\n").unwrap();
            fs::rename(&tmp, maildir.join("new").join(&base)).unwrap();
            msgs.push(MdMsg {
                rel: format!("new/{base}"),
                base,
                stable: false,
            });
            continue;
        }
        let i = rng.below(msgs.len());
        let m = &mut msgs[i];
        if r < 9 && !m.stable {
            fs::remove_file(maildir.join(&m.rel)).unwrap();
            deleted.insert(m.base.clone());
            msgs.swap_remove(i);
            continue;
        }
        // A flag change (from new/: Dovecot's move to cur/ with the Seen flag).
        let flags = MD_FLAGS[rng.below(MD_FLAGS.len())];
        let rel = format!("cur/{}:2,{flags}", m.base);
        if rel != m.rel {
            fs::rename(maildir.join(&m.rel), maildir.join(&rel)).unwrap();
            m.rel = rel;
        }
    }
    deleted
}

/// One Maildir round: returns the stable messages missing or wrong in the archive.
pub fn maildir_round(seed: u64) -> (Vec<String>, RunReport) {
    let ws = Workspace::new();
    let maildir = ws.join("home/u/Maildir");
    let (msgs, stable) = md_store(&maildir, seed);
    let archive = ws.join("a.mdump");
    let stop = Arc::new(AtomicBool::new(false));
    let (mdir, st) = (maildir.clone(), stop.clone());
    let mutator = std::thread::spawn(move || md_mutate(&mdir, msgs, seed, &st, 2_000_000));
    let mut cmd = maildump();
    cmd.args(["backup", "--location", "maildir:~/Maildir", "--home"])
        .arg(ws.join("home/%u"))
        .args(["--user", "u", "-o"])
        .arg(&archive);
    let t = std::time::Instant::now();
    let run = backup_while(&mut cmd, &stop);
    let took = t.elapsed();
    let deleted = mutator.join().unwrap();
    eprintln!(
        "maildir round {seed}: backup {} ms, exit {:?}, {} deleted by the mutator, {} named expunged",
        took.as_millis(),
        run.code,
        deleted.len(),
        run.expunged.len()
    );
    let mut lost = Vec::new();
    if run.code != Some(0) {
        lost.push(format!("exit {:?}", run.code));
    }
    if !archive.exists() {
        return (lost, run);
    }
    let got = archive_messages(&archive);
    let inbox: BTreeMap<&str, &Vec<u8>> = got["INBOX"]
        .iter()
        .map(|(_, g, b)| (g.as_str(), b))
        .collect();
    let uids: BTreeSet<u32> = got["INBOX"].iter().map(|(u, _, _)| *u).collect();
    assert_eq!(
        uids.len(),
        got["INBOX"].len(),
        "duplicate UIDs in the archive"
    );
    for (base, body) in &stable {
        match inbox.get(base.as_str()) {
            None => lost.push(format!("{base}: missing")),
            Some(b) if *b != body => lost.push(format!("{base}: wrong bytes")),
            Some(_) => {}
        }
        if run.expunged.iter().any(|e| e.contains(base.as_str())) {
            lost.push(format!("{base}: reported as expunged, but it stayed"));
        }
    }
    for e in &run.expunged {
        assert!(
            deleted.iter().any(|d| e.contains(d.as_str())),
            "named as expunged, but the mutator did not delete it: {e}"
        );
    }
    (lost, run)
}

#[test]
fn maildir_backup_under_changes_loses_nothing() {
    let n = rounds(20);
    let mut failures = Vec::new();
    for seed in 1..=n {
        let (lost, run) = maildir_round(seed);
        eprintln!("maildir round {seed}: {} problems {lost:?}", lost.len());
        if !lost.is_empty() || !run.warnings.is_empty() {
            failures.push(format!(
                "round {seed}: lost {lost:?}, warnings {:?}\n{}",
                run.warnings, run.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------
// sdbox and mdbox: the mutator goes through doveadm (save, flags, expunge, purge).

const DBOX_MESSAGES: usize = 40;

fn dbox_body(i: usize) -> Vec<u8> {
    let mut b =
        format!("From: s{i}@example.org\nSubject: dbox live {i}\nMessage-ID: <dbox.{i}@live>\n\n")
            .into_bytes();
    for l in 0..(i % 5 + 3) {
        b.extend_from_slice(
            format!("line {l} of dbox message {i}, some padding text\n").as_bytes(),
        );
    }
    b
}

/// A store with [`DBOX_MESSAGES`] messages in INBOX (UIDs 1..): built once per format
/// and copied for each round. Small `m.N` files, so that a purge moves stable messages.
fn dbox_template(location: &str) -> &'static Path {
    use std::sync::OnceLock;
    static SDBOX: OnceLock<PathBuf> = OnceLock::new();
    static MDBOX: OnceLock<PathBuf> = OnceLock::new();
    let cell = if location.starts_with("mdbox") {
        &MDBOX
    } else {
        &SDBOX
    };
    cell.get_or_init(|| {
        // Beside the dbox tests' templates: removed by a later run once this one is gone.
        let name = location.split(':').next().unwrap_or("x");
        let dir = crate::dbox::template_root().join(format!("live-{name}"));
        let _ = fs::remove_dir_all(&dir);
        let dc = dbox_config(&dir, location);
        let msgs: Vec<(&str, u64, &str, Vec<u8>)> = (0..DBOX_MESSAGES)
            .map(|i| ("INBOX", 1_600_000_000 + i as u64, "", dbox_body(i)))
            .collect();
        dc.import("u", &msgs);
        dir
    })
}

fn dbox_config(dir: &Path, location: &str) -> Dovecot {
    Dovecot::with_extra(dir, location, &["mdbox_rotate_size = 1k"])
}

/// The doveadm mutator: flag changes on any message, expunges of volatile ones (odd
/// UIDs), saves, and for mdbox purges: 20 operations, then `stop` is set. Returns the UIDs
/// it expunged.
fn dbox_mutate(dc: &Dovecot, seed: u64, mdbox: bool, stop: &AtomicBool) -> BTreeSet<u32> {
    let mut rng = Rng::new(seed ^ 0xdb0c);
    let mut expunged = BTreeSet::new();
    for _ in 0..20 {
        let uid = rng.below(DBOX_MESSAGES) as u32 + 1;
        let r = rng.below(100);
        if r < 35 {
            let verb = if rng.below(2) == 0 { "add" } else { "remove" };
            let flag = ["\\Seen", "\\Flagged", "$Work"][rng.below(3)];
            dc.try_doveadm(
                "u",
                &[
                    "flags",
                    verb,
                    flag,
                    "mailbox",
                    "INBOX",
                    "uid",
                    &uid.to_string(),
                ],
            );
        } else if r < 60 && uid % 2 == 1 && !expunged.contains(&uid) {
            dc.doveadm(
                "u",
                &["expunge", "mailbox", "INBOX", "uid", &uid.to_string()],
            );
            expunged.insert(uid);
        } else if r < 80 && mdbox {
            dc.doveadm("u", &["purge"]);
        } else {
            let out = dc.save("u", "INBOX", b"Subject: saved during the backup\n\nhello\n");
            assert!(out.status.success(), "doveadm save failed");
        }
    }
    stop.store(true, Ordering::SeqCst);
    expunged
}

/// One sdbox/mdbox round: backups one after the other while the mutator runs (at least
/// one, at most 12). Returns the problems found.
fn dbox_round(location: &str, seed: u64) -> Vec<String> {
    let ws = Workspace::new();
    let dc = dbox_config(&ws.join("dc"), location);
    crate::util::copy_dir_links(&dbox_template(location).join("home"), &dc.home_root).unwrap();
    dc.fix_ownership();
    let stop = AtomicBool::new(false);
    let mdbox = location.starts_with("mdbox");
    let mut problems = Vec::new();
    std::thread::scope(|s| {
        let mutator = s.spawn(|| dbox_mutate(&dc, seed, mdbox, &stop));
        let mut runs = Vec::new();
        for n in 0..12 {
            if n > 0 && stop.load(Ordering::SeqCst) {
                break;
            }
            let archive = ws.join(format!("a{n}.mdump"));
            let mut cmd = maildump();
            cmd.args(["backup", "--location", location, "--home"])
                .arg(dc.home_template())
                .args(["--user", "u", "--progress", "json", "-o"])
                .arg(&archive);
            let out = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .unwrap();
            let mut r = parse_events(&String::from_utf8_lossy(&out.stderr));
            r.code = out.status.code();
            runs.push((archive, r));
        }
        let expunged = mutator.join().unwrap();
        eprintln!("{location} round {seed}: {} backups", runs.len());
        for (archive, run) in runs {
            if run.code != Some(0) || !run.warnings.is_empty() {
                problems.push(format!("exit {:?}: {}", run.code, run.stderr));
                continue;
            }
            for e in &run.expunged {
                let named = expunged.iter().any(|u| e.contains(&format!("UID {u}:")));
                if !named {
                    problems.push(format!("named expunged, not expunged by the mutator: {e}"));
                }
            }
            let got = archive_messages(&archive);
            let inbox: BTreeMap<u32, &Vec<u8>> =
                got["INBOX"].iter().map(|(u, _, b)| (*u, b)).collect();
            for i in (0..DBOX_MESSAGES).filter(|i| (i + 1) % 2 == 0) {
                let uid = i as u32 + 1;
                match inbox.get(&uid) {
                    None => problems.push(format!("UID {uid} missing")),
                    Some(b) if **b != dbox_body(i) => problems.push(format!("UID {uid}: bytes")),
                    Some(_) => {}
                }
            }
        }
    });
    problems
}

fn dbox_rounds(location: &str) {
    let n = rounds(20);
    let mut failures = Vec::new();
    for seed in 1..=n {
        let p = dbox_round(location, seed);
        eprintln!("{location} round {seed}: {} problems {p:?}", p.len());
        if !p.is_empty() {
            failures.push(format!("round {seed}: {p:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn sdbox_backup_under_changes_loses_nothing() {
    dbox_rounds("sdbox:~/sdbox");
}

#[test]
fn mdbox_backup_under_changes_loses_nothing() {
    dbox_rounds("mdbox:~/mdbox");
}

/// Deterministic: the map of an mdbox is read when the first mailbox is scanned; a
/// message saved to another mailbox afterwards is found (the map is read again), and a
/// purge that moves messages between the scan and the read of their bytes does not lose
/// them; a message expunged and purged meanwhile is reported as expunged (NotFound).
#[test]
fn mdbox_purge_between_scan_and_read_moves_nothing_out() {
    use maildump::store::StoreReader;
    use maildump::store::dbox::DboxReader;
    use maildump::store::location::Location;
    let ws = Workspace::new();
    let location = "mdbox:~/mdbox";
    let dc = dbox_config(&ws.join("dc"), location);
    crate::util::copy_dir_links(&dbox_template(location).join("home"), &dc.home_root).unwrap();
    dc.fix_ownership();
    dc.doveadm("u", &["mailbox", "create", "Later"]);
    let loc = Location::parse(location, Some(dc.home_template())).unwrap();
    let r = DboxReader::open(&loc, "u").unwrap();
    let boxes = r.mailboxes().unwrap();
    let inbox = boxes
        .iter()
        .find(|h| h.name.to_string() == "INBOX")
        .unwrap();
    let later = boxes
        .iter()
        .find(|h| h.name.to_string() == "Later")
        .unwrap();
    let (_, msgs) = r.scan(inbox).unwrap();
    assert_eq!(msgs.len(), DBOX_MESSAGES);
    // Saved after the map was read.
    assert!(
        dc.save("u", "Later", b"Subject: later\n\nlater\n")
            .status
            .success()
    );
    let (_, later_msgs) = r.scan(later).unwrap();
    assert_eq!(later_msgs.len(), 1, "{:?}", r.take_warnings());
    // Expunge the odd UIDs and purge: the even ones move to new m.N files.
    dc.doveadm(
        "u",
        &["expunge", "mailbox", "INBOX", "uid", "1,3,5,7,9,11,13,15"],
    );
    let storage = dc.home("u").join("mdbox/storage");
    let files = |d: &Path| -> BTreeSet<String> {
        fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("m."))
            .collect()
    };
    let before = files(&storage);
    dc.doveadm("u", &["purge"]);
    assert_ne!(
        before,
        files(&storage),
        "the purge moved nothing: test is void"
    );
    for m in &msgs {
        let i = m.uid.0 as usize - 1;
        match r.open_body(inbox, m) {
            Ok(mut b) => {
                assert!(
                    m.uid.0 % 2 == 0 || m.uid.0 > 15,
                    "UID {} was expunged",
                    m.uid
                );
                let mut bytes = Vec::new();
                std::io::Read::read_to_end(&mut b.file, &mut bytes).unwrap();
                assert_eq!(bytes, dbox_body(i), "UID {}", m.uid);
            }
            Err(maildump::Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                assert!(m.uid.0 % 2 == 1 && m.uid.0 <= 15, "UID {} lost", m.uid);
            }
            Err(e) => panic!("UID {}: {e}", m.uid),
        }
    }
    assert!(r.take_warnings().is_empty());
}
