//! Restores that keep every Dovecot and IMAP invariant (issue 12), checked with real
//! `doveadm`: mdbox reference counts and the `guid` extension (expunge + purge +
//! force-resync after a restore brings nothing back), keywords beyond Maildir's 26 letters,
//! MODSEQs and UIDNEXT that never go backwards, UIDVALIDITY of new mailboxes from the mail
//! root's `dovecot-uidvalidity` counter, and mailbox names a target layout cannot hold.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use maildump::store::dbox::index::MailIndex;

use crate::dovecot::{Dovecot, message};
use crate::util::{Workspace, maildump, report, run, run_ok};

const ALICE: &str = "alice";

/// Archive id of the full backups whose state a test restores `--as-of`.
const FULL_ID: &str = "00000000-0000-4000-8000-0000000012f1";

/// `maildump backup` of `user` of `dc` into `archive` (archive id [`FULL_ID`]).
fn backup(dc: &Dovecot, user: &str, archive: &Path) {
    run_ok(
        maildump()
            .args([
                "backup",
                "--archive-id",
                FULL_ID,
                "--location",
                &dc.location,
                "--home",
                &dc.home_template(),
                "--user",
                user,
                "--quiet",
                "-o",
            ])
            .arg(archive),
    );
}

/// (mailbox, uid, guid, flags) of every message of `user`, sorted.
fn messages(dc: &Dovecot, user: &str) -> Vec<(String, u32, String, String)> {
    let out = dc.doveadm(
        user,
        &["-f", "tab", "fetch", "mailbox uid guid flags", "ALL"],
    );
    let mut v: Vec<_> = out
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            let mut flags: Vec<&str> = c[3].split(' ').filter(|f| *f != "\\Recent").collect();
            flags.sort_unstable();
            (
                c[0].to_string(),
                c[1].parse().unwrap(),
                c[2].to_string(),
                flags.join(" "),
            )
        })
        .collect();
    v.sort();
    v
}

/// The 128-bit GUID Dovecot keeps for a message GUID string (`mail_generate_guid_128_hash`):
/// the GUID itself when it is 32 hex digits, else the last 16 bytes of its SHA-1.
fn guid_128(guid: &str) -> Vec<u8> {
    use sha1::{Digest, Sha1};
    match hex::decode(guid) {
        Ok(b) if b.len() == 16 => b,
        _ => Sha1::digest(guid.as_bytes())[4..].to_vec(),
    }
}

/// mdbox: reference count of every map UID (`storage/dovecot.map.index` and its log) and
/// the map UIDs each mailbox index refers to, with the `guid` extension of each record.
struct MdboxRefs {
    refcount: BTreeMap<u32, u16>,
    /// (mailbox dir, uid) -> (map uid, guid extension data if any).
    records: BTreeMap<(PathBuf, u32), MapRef>,
}

/// A mailbox record's map UID and `guid` extension data.
type MapRef = (u32, Option<Vec<u8>>);

fn mdbox_refs(root: &Path) -> MdboxRefs {
    let map = MailIndex::read(&root.join("storage"), "dovecot.map.index")
        .unwrap()
        .expect("map index");
    let refcount = map
        .records
        .iter()
        .map(|r| {
            let d = map.ext_rec(r, "ref").expect("ref extension");
            (r.uid, u16::from_le_bytes([d[0], d[1]]))
        })
        .collect();
    let mut records = BTreeMap::new();
    let mut dirs = vec![root.join("mailboxes")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if !p.is_dir() {
                continue;
            }
            if p.file_name().unwrap() == "dbox-Mails" {
                let Some(ix) = MailIndex::read(&p, "dovecot.index").unwrap() else {
                    continue;
                };
                for r in &ix.records {
                    let m = ix.ext_rec(r, "mdbox").expect("mdbox extension");
                    let map_uid = u32::from_le_bytes([m[0], m[1], m[2], m[3]]);
                    let guid = ix.ext_rec(r, "guid").map(<[u8]>::to_vec);
                    records.insert((p.clone(), r.uid), (map_uid, guid));
                }
            } else {
                dirs.push(p);
            }
        }
    }
    MdboxRefs { refcount, records }
}

impl MdboxRefs {
    /// Every map record's count equals the number of mailbox records that refer to it.
    fn assert_consistent(&self, what: &str) {
        let mut used: BTreeMap<u32, u16> = BTreeMap::new();
        for (map_uid, _) in self.records.values() {
            *used.entry(*map_uid).or_default() += 1;
        }
        for (map_uid, n) in &self.refcount {
            assert_eq!(
                used.get(map_uid).copied().unwrap_or(0),
                *n,
                "{what}: map UID {map_uid} has refcount {n}, but {} mailbox records refer to it",
                used.get(map_uid).copied().unwrap_or(0)
            );
        }
    }
}

/// Issue 12 item 1: an mdbox restore writes the map's reference counts and each mailbox
/// index's `guid` extension as Dovecot would have; expunging a restored message lowers
/// its count, and `purge` + `force-resync` bring nothing back.
#[test]
fn mdbox_expunge_purge_resync_after_restore_brings_nothing_back() {
    let ws = Workspace::new();
    let src = Dovecot::new(&ws.join("src"), "mdbox:~/mdbox");
    src.build_small_store(ALICE);
    src.doveadm(ALICE, &["copy", "Work", "mailbox", "INBOX", "uid", "1"]);
    let archive = ws.join("a.mdump");
    backup(&src, ALICE, &archive);
    let src_msgs = messages(&src, ALICE);

    let dst = Dovecot::new(&ws.join("dst"), "mdbox:~/mdbox");
    run_ok(&mut dst.restore_cmd(&[&archive]));
    let root = dst.home(ALICE).join("mdbox");
    // Before Dovecot touches the store: the index as maildump wrote it.
    let refs = mdbox_refs(&root);
    refs.assert_consistent("restored store");
    assert_eq!(refs.records.len(), src_msgs.len());
    for ((dir, uid), (_, guid)) in &refs.records {
        let name = if dir.ends_with("INBOX/dbox-Mails") {
            "INBOX"
        } else {
            "Work"
        };
        let want = src_msgs
            .iter()
            .find(|m| m.0 == name && m.1 == *uid)
            .map(|m| guid_128(&m.2));
        assert_eq!(
            guid.as_deref(),
            want.as_deref(),
            "{name} UID {uid}: guid extension of the restored index"
        );
    }
    assert_eq!(messages(&dst, ALICE), src_msgs, "restored messages");

    // INBOX 2 exists only in INBOX; INBOX 1 also has a copy in Work (Work 2).
    dst.doveadm(ALICE, &["expunge", "mailbox", "INBOX", "uid", "1:2"]);
    let after = mdbox_refs(&root);
    after.assert_consistent("after the expunge");
    assert!(
        after.refcount.values().filter(|&&n| n == 0).count() == 1,
        "the expunge must leave exactly one unreferenced message in the map: {:?}",
        after.refcount
    );
    dst.doveadm(ALICE, &["purge"]);
    dst.doveadm(ALICE, &["force-resync", "*"]);
    let want: Vec<_> = src_msgs
        .iter()
        .filter(|m| !(m.0 == "INBOX" && m.1 <= 2))
        .cloned()
        .collect();
    assert_eq!(
        messages(&dst, ALICE),
        want,
        "after expunge + purge + force-resync of the restored store"
    );
    mdbox_refs(&root).assert_consistent("after purge and force-resync");
}

/// A message text for `user` with a number and subject.
#[allow(dead_code)]
fn msg(user: &str, n: u32) -> Vec<u8> {
    message(user, n, &format!("Message {n}"), &format!("body {n}\n"))
}

#[allow(dead_code)]
fn out_text(cmd: &mut std::process::Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{}", report(cmd, &out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `doveadm mailbox status uidvalidity` of one mailbox.
fn uidvalidity(dc: &Dovecot, user: &str, mailbox: &str) -> u32 {
    let out = dc.doveadm(
        user,
        &["-f", "tab", "mailbox", "status", "uidvalidity", mailbox],
    );
    let line = out
        .lines()
        .nth(1)
        .unwrap_or_else(|| panic!("no status of {mailbox}"));
    line.rsplit('\t').next().unwrap().trim().parse().unwrap()
}

/// Set the mail root's `dovecot-uidvalidity` counter to `v` (file and marker), as Dovecot
/// would have left it.
fn set_counter(root: &Path, v: u32) {
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("dovecot-uidvalidity.")
        {
            std::fs::remove_file(&p).unwrap();
        }
    }
    std::fs::write(root.join("dovecot-uidvalidity"), format!("{v:08x}")).unwrap();
    std::fs::write(root.join(format!("dovecot-uidvalidity.{v:08x}")), b"").unwrap();
}

/// The counter as the files say: (value of `dovecot-uidvalidity`, marker values).
fn counter(root: &Path) -> (u32, Vec<u32>) {
    let v = u32::from_str_radix(
        &std::fs::read_to_string(root.join("dovecot-uidvalidity")).unwrap(),
        16,
    )
    .unwrap();
    let mut markers: Vec<u32> = std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_prefix("dovecot-uidvalidity.")
                .map(|h| u32::from_str_radix(h, 16).unwrap())
        })
        .collect();
    markers.sort_unstable();
    (v, markers)
}

/// Issue 12 item 4: a side folder (Maildir, sdbox) and a new mdbox store take their
/// UIDVALIDITY from the mail root's `dovecot-uidvalidity` counter, advanced exactly as
/// Dovecot advances it (Dovecot's next mailbox gets the value after), never from the
/// clock; an exact restore raises the counter to the UIDVALIDITYs it wrote.
#[test]
fn new_mailboxes_take_uidvalidity_from_the_counter() {
    for (loc, dir) in [("maildir:~/Maildir", "Maildir"), ("sdbox:~/sdbox", "sdbox")] {
        let ws = Workspace::new();
        let dc = Dovecot::new(&ws.join("live"), loc);
        dc.build_small_store(ALICE);
        let archive = ws.join("a.mdump");
        backup(&dc, ALICE, &archive);
        let root = dc.home(ALICE).join(dir);
        let v0 = 0x6b00_0000;
        set_counter(&root, v0);
        dc.fix_ownership();
        run_ok(dc.restore_cmd(&[&archive]).args([
            "--user",
            ALICE,
            "--mailbox",
            "INBOX",
            "--into",
            "Side",
        ]));
        assert_eq!(
            uidvalidity(&dc, ALICE, "Side/INBOX"),
            v0 + 1,
            "{loc}: side folder"
        );
        assert_eq!(
            counter(&root),
            (v0 + 1, vec![v0 + 1]),
            "{loc}: counter after"
        );
        dc.doveadm(ALICE, &["mailbox", "create", "Later"]);
        assert_eq!(
            uidvalidity(&dc, ALICE, "Later"),
            v0 + 2,
            "{loc}: Dovecot's next"
        );

        // An exact restore into a new root: the counter covers what it wrote.
        let fresh = Dovecot::new(&ws.join("fresh"), loc);
        run_ok(&mut fresh.restore_cmd(&[&archive]));
        let restored = [
            uidvalidity(&fresh, ALICE, "INBOX"),
            uidvalidity(&fresh, ALICE, "Work"),
        ];
        fresh.doveadm(ALICE, &["mailbox", "create", "Later"]);
        let later = uidvalidity(&fresh, ALICE, "Later");
        assert!(
            restored.iter().all(|&v| later > v),
            "{loc}: a mailbox Dovecot creates after the restore got UIDVALIDITY {later}, not above the restored {restored:?}"
        );
    }
}

/// Exit code of a usage error (a restore refused before anything is written).
const EXIT_USAGE: i32 = 2;

/// Issue 12 item 5: source mailboxes whose names the target layout cannot hold apart are
/// refused before anything is written (exit 2, both names given): `a.b` and `a/b` of a
/// `LAYOUT=fs` store into Maildir++ (both would be `.a.b`), and names that are reserved
/// directories of the target layout (`cur` in `LAYOUT=fs`, `dbox-Mails` in dbox), which
/// Dovecot itself refuses to create.
#[test]
fn layout_collisions_are_refused_before_anything_is_written() {
    let ws = Workspace::new();
    let fs_src = Dovecot::new(&ws.join("fs"), ":LAYOUT=fs");
    fs_src.build_small_store(ALICE);
    fs_src.doveadm(ALICE, &["mailbox", "create", "a.b", "a/b"]);
    fs_src.save(ALICE, "a.b", &msg(ALICE, 10));
    fs_src.save(ALICE, "a/b", &msg(ALICE, 11));
    let fs_archive = ws.join("fs.mdump");
    backup(&fs_src, ALICE, &fs_archive);

    let pp_src = Dovecot::new(&ws.join("pp"), "");
    pp_src.build_small_store(ALICE);
    pp_src.doveadm(ALICE, &["mailbox", "create", "cur", "x/new", "dbox-Mails"]);
    pp_src.save(ALICE, "cur", &msg(ALICE, 12));
    let pp_archive = ws.join("pp.mdump");
    backup(&pp_src, ALICE, &pp_archive);

    let cases: [(&Path, &str, &[&str]); 4] = [
        (&fs_archive, "", &["a.b", "a/b"]),
        (&pp_archive, ":LAYOUT=fs", &["cur"]),
        (&pp_archive, ":LAYOUT=fs", &["x/new"]),
        (&pp_archive, "sdbox:~/sdbox", &["dbox-Mails"]),
    ];
    for (i, (archive, target, names)) in cases.iter().enumerate() {
        let dst = Dovecot::new(&ws.join(format!("dst{i}")), target);
        let mut cmd = dst.restore_cmd(&[archive]);
        if *names == ["x/new"] {
            cmd.args(["--mailbox", "x/new"]);
        }
        let out = run(&mut cmd);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(EXIT_USAGE),
            "{target}: {}",
            report(&cmd, &out)
        );
        for n in *names {
            assert!(
                err.contains(&format!(" {n} ")),
                "{target}: stderr must name mailbox {n}: {err}"
            );
        }
        assert!(
            !dst.home(ALICE).exists(),
            "{target}: something was written: {}",
            crate::util::tree_listing(&dst.home_root)
        );
    }
    // One such mailbox alone (`a.b` into Maildir++) cannot be held either: Dovecot would
    // show it as `a/b`.
    let dst = Dovecot::new(&ws.join("single"), "");
    let mut cmd = dst.restore_cmd(&[&fs_archive]);
    cmd.args(["--mailbox", "a.b"]);
    let out = run(&mut cmd);
    assert_eq!(
        out.status.code(),
        Some(EXIT_USAGE),
        "{}",
        report(&cmd, &out)
    );
    // Names the target holds apart are restored as before.
    let dst = Dovecot::new(&ws.join("ok"), ":LAYOUT=fs");
    run_ok(
        dst.restore_cmd(&[&fs_archive])
            .args(["--mailbox", "a*", "--mailbox", "INBOX"]),
    );
    assert_eq!(
        messages(&dst, ALICE)
            .iter()
            .filter(|m| m.0.starts_with('a'))
            .count(),
        2
    );
}

/// `count` keywords `kw01`, `kw02`, ... as one doveadm flags argument.
fn keywords(count: u32) -> String {
    (1..=count)
        .map(|i| format!("kw{i:02}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A store of `location` for alice with 34 keywords on INBOX 1 (more than Maildir's 26
/// letters), two of the last ones on INBOX 2, one on Work 1.
fn keyword_store(dir: &Path, location: &str) -> Dovecot {
    let dc = Dovecot::new(dir, location);
    dc.build_small_store(ALICE);
    dc.set_flags(
        ALICE,
        &[
            ("add", &keywords(34), "INBOX", "1"),
            ("add", "kw02 kw33", "INBOX", "2"),
            ("add", "kw30", "Work", "1"),
        ],
    );
    dc
}

/// Issue 12 item 2: keywords beyond Maildir's 26 letters, which Dovecot keeps only in its
/// index, survive maildir -> maildir, sdbox -> maildir and maildir -> mdbox (backup reads
/// the Maildir index; a Maildir restore writes one), and `list` shows them all.
#[test]
fn thirty_four_keywords_survive_every_format() {
    let ws = Workspace::new();
    let cases = [
        ("maildir:~/Maildir", "maildir:~/Maildir"),
        ("sdbox:~/sdbox", "maildir:~/Maildir"),
        ("maildir:~/Maildir", "mdbox:~/mdbox"),
    ];
    for (i, (from, to)) in cases.iter().enumerate() {
        let src = keyword_store(&ws.join(format!("src{i}")), from);
        let want = messages(&src, ALICE);
        assert!(want[0].3.contains("kw34"), "{from}: source store: {want:?}");
        let archive = ws.join(format!("a{i}.mdump"));
        backup(&src, ALICE, &archive);
        let list = String::from_utf8(
            run_ok(
                maildump()
                    .args(["list", "--json", "--mailbox", "INBOX"])
                    .arg(&archive),
            )
            .stdout,
        )
        .unwrap();
        let first: serde_json::Value = serde_json::from_str(list.lines().next().unwrap()).unwrap();
        assert_eq!(
            first["keywords"].as_array().map(Vec::len),
            Some(34),
            "{from}: list of the archive: {first}"
        );
        let dst = Dovecot::new(&ws.join(format!("dst{i}")), to);
        run_ok(&mut dst.restore_cmd(&[&archive]));
        assert_eq!(messages(&dst, ALICE), want, "{from} -> {to}");
        // Dovecot goes on with them: a flag change and a sync keep the others.
        dst.set_flags(ALICE, &[("remove", "kw31", "INBOX", "1")]);
        dst.doveadm(ALICE, &["force-resync", "INBOX"]);
        let after = messages(&dst, ALICE);
        assert!(
            after[0].3.contains("kw34") && !after[0].3.contains("kw31"),
            "{from} -> {to}: after a flag change and force-resync: {after:?}"
        );
    }
}

/// (uidvalidity, uidnext, highestmodseq) of a mailbox.
fn status3(dc: &Dovecot, user: &str, mailbox: &str) -> (u32, u32, u64) {
    let out = dc.doveadm(
        user,
        &[
            "-f",
            "tab",
            "mailbox",
            "status",
            "uidvalidity uidnext highestmodseq",
            mailbox,
        ],
    );
    let head: Vec<&str> = out.lines().next().unwrap().split('\t').collect();
    let vals: Vec<&str> = out.lines().nth(1).unwrap().split('\t').collect();
    let get = |n: &str| {
        vals[head.iter().position(|h| *h == n).unwrap()]
            .trim()
            .to_string()
    };
    (
        get("uidvalidity").parse().unwrap(),
        get("uidnext").parse().unwrap(),
        get("highestmodseq").parse().unwrap(),
    )
}

/// uid -> modseq of every message of a mailbox.
fn modseqs(dc: &Dovecot, user: &str, mailbox: &str) -> BTreeMap<u32, u64> {
    let out = dc.doveadm(
        user,
        &[
            "-f",
            "tab",
            "fetch",
            "uid modseq",
            "mailbox",
            mailbox,
            "ALL",
        ],
    );
    out.lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (u, m) = l.split_once('\t').unwrap();
            (u.parse().unwrap(), m.trim().parse().unwrap())
        })
        .collect()
}

/// The UID `doveadm save` gave a new message: the highest UID afterwards.
fn save_uid(dc: &Dovecot, user: &str, mailbox: &str, n: u32) -> u32 {
    let out = dc.save(user, mailbox, &msg(user, n));
    assert!(
        out.status.success(),
        "save: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    *modseqs(dc, user, mailbox).keys().max().unwrap()
}

/// Part of [`uidnext_and_modseqs_never_go_backwards`]: an exact restore of `full` into
/// `src`'s own `Work` after everything in it was expunged goes above its live UIDNEXT and
/// HIGHESTMODSEQ.
fn live_mailbox_is_a_floor(src: &Dovecot, full: &Path, loc: &str) {
    for n in 40..43 {
        src.save(ALICE, "Work", &msg(ALICE, n));
    }
    src.doveadm(ALICE, &["expunge", "mailbox", "Work", "all"]);
    let (vw, uw, hw) = status3(src, ALICE, "Work");
    run_ok(src.restore_cmd(&[full]).args(["--mailbox", "Work"]));
    let (vw2, uw2, hw2) = status3(src, ALICE, "Work");
    assert_eq!(vw2, vw, "{loc}: Work UIDVALIDITY");
    assert!(uw2 >= uw, "{loc}: Work UIDNEXT {uw2} below the live {uw}");
    assert!(
        hw2 > hw,
        "{loc}: Work HIGHESTMODSEQ {hw2} not above the live {hw}"
    );
    assert!(
        modseqs(src, ALICE, "Work").values().all(|&m| m > hw),
        "{loc}: restored Work messages must be news to a client that saw {hw}"
    );
}

/// Default UIDNEXT margin of a restore without a live mailbox to go by (README).
const UID_MARGIN: u32 = 100_000;

/// Issue 12 item 3: UIDNEXT, HIGHESTMODSEQ and MODSEQ never go backwards under an
/// unchanged UIDVALIDITY. An exact restore of an older state of a chain goes above the
/// chain's newest (plus the margin for what came after it); one without anything newer to
/// go by raises them by the margin; `--uid-margin 0` gives the archive's values exactly;
/// an empty live mailbox's UIDNEXT and HIGHESTMODSEQ are a floor; `--new-uidvalidity`
/// takes a new UIDVALIDITY from the counter instead.
#[test]
fn uidnext_and_modseqs_never_go_backwards() {
    for loc in ["maildir:~/Maildir", "sdbox:~/sdbox"] {
        let ws = Workspace::new();
        let src = Dovecot::new(&ws.join("src"), loc);
        src.build_small_store(ALICE);
        for _ in 0..20 {
            src.set_flags(
                ALICE,
                &[
                    ("add", "\\Flagged", "INBOX", "1"),
                    ("remove", "\\Flagged", "INBOX", "1"),
                ],
            );
        }
        let m0 = modseqs(&src, ALICE, "INBOX");
        let (v, u0, h0) = status3(&src, ALICE, "INBOX");
        assert!(h0 > 40, "{loc}: HIGHESTMODSEQ {h0}");
        let full = ws.join("full.mdump");
        backup(&src, ALICE, &full);
        save_uid(&src, ALICE, "INBOX", 20);
        save_uid(&src, ALICE, "INBOX", 21);
        src.doveadm(ALICE, &["expunge", "mailbox", "INBOX", "uid", "2"]);
        src.set_flags(ALICE, &[("add", "\\Answered", "INBOX", "1")]);
        let (_, u1, h1) = status3(&src, ALICE, "INBOX");
        let inc = ws.join("inc.mdump");
        run_ok(
            maildump()
                .args(["backup", "--location", loc, "--home", &src.home_template()])
                .args(["--user", ALICE, "--quiet", "--base"])
                .arg(&full)
                .arg("-o")
                .arg(&inc),
        );

        // The older state of the chain: above its newest, plus the margin.
        let d1 = Dovecot::new(&ws.join("asof"), loc);
        run_ok(
            d1.restore_cmd_with_margin(&[&full, &inc])
                .args(["--as-of", FULL_ID]),
        );
        let (v1, un, hn) = status3(&d1, ALICE, "INBOX");
        assert_eq!(v1, v, "{loc}: UIDVALIDITY kept");
        assert_eq!(un, u1 + UID_MARGIN, "{loc}: UIDNEXT of an older restore");
        assert!(
            hn > h1,
            "{loc}: HIGHESTMODSEQ {hn} of an older restore, newest {h1}"
        );
        let ms = modseqs(&d1, ALICE, "INBOX");
        assert_eq!(ms.keys().collect::<Vec<_>>(), m0.keys().collect::<Vec<_>>());
        assert!(
            ms.values().all(|&m| m > h1),
            "{loc}: every restored message must be news to a client that saw {h1}: {ms:?}"
        );
        assert_eq!(save_uid(&d1, ALICE, "INBOX", 30), u1 + UID_MARGIN);

        // Nothing newer to go by: the margin alone.
        let d2 = Dovecot::new(&ws.join("margin"), loc);
        run_ok(
            d2.restore_cmd_with_margin(&[&full])
                .args(["--uid-margin", "1000"]),
        );
        let (_, un, hn) = status3(&d2, ALICE, "INBOX");
        assert_eq!(un, u0 + 1000, "{loc}: UIDNEXT with a margin of 1000");
        assert!(
            hn >= h0 + 1000,
            "{loc}: HIGHESTMODSEQ {hn} with a margin, was {h0}"
        );

        // --uid-margin 0: the archive's values exactly.
        let d3 = Dovecot::new(&ws.join("exact"), loc);
        run_ok(&mut d3.restore_cmd(&[&full]));
        assert_eq!(
            status3(&d3, ALICE, "INBOX"),
            (v, u0, h0),
            "{loc}: --uid-margin 0"
        );
        assert_eq!(
            modseqs(&d3, ALICE, "INBOX"),
            m0,
            "{loc}: MODSEQs with no margin"
        );

        // An empty live mailbox is a floor: restore the full into the live store's Work
        // after everything in it was expunged (Maildir: dbox refuses existing mailboxes).
        if loc.starts_with("maildir") {
            live_mailbox_is_a_floor(&src, &full, loc);
        }

        // --new-uidvalidity: a new UIDVALIDITY from the counter; UIDs as archived.
        let d4 = Dovecot::new(&ws.join("newuv"), loc);
        d4.ensure_home(ALICE);
        run_ok(
            d4.restore_cmd_with_margin(&[&full])
                .arg("--new-uidvalidity"),
        );
        let (v4, u4, _) = status3(&d4, ALICE, "INBOX");
        assert_ne!(v4, v, "{loc}: --new-uidvalidity");
        assert_eq!(u4, u0, "{loc}: UIDNEXT with a new UIDVALIDITY");
        assert_eq!(modseqs(&d4, ALICE, "INBOX").len(), m0.len());
    }
}

/// Issue 12 item 2, the one target that truly cannot hold them: a merge into a live
/// Maildir mailbox (whose index maildump must not write behind a running Dovecot) whose
/// keyword letters are all taken names each keyword it could not give the message and
/// exits 1; the message itself and the keywords that fit are restored.
#[test]
fn merge_names_keywords_a_live_mailbox_cannot_take() {
    let ws = Workspace::new();
    let src = keyword_store(&ws.join("src"), "");
    let archive = ws.join("a.mdump");
    backup(&src, ALICE, &archive);
    // bob's INBOX already gives all 26 letters to other keywords.
    let live = Dovecot::new(&ws.join("live"), "");
    live.build_small_store("bob");
    let others: Vec<String> = (1..=26).map(|i| format!("other{i:02}")).collect();
    live.set_flags("bob", &[("add", &others.join(" "), "INBOX", "1")]);
    let mut cmd = live.restore_cmd(&[&archive]);
    cmd.args(["--user", ALICE, "--to-user", "bob", "--mode", "merge"])
        .args(["--mailbox", "INBOX"]);
    let out = run(&mut cmd);
    assert_eq!(out.status.code(), Some(1), "{}", report(&cmd, &out));
    let err = String::from_utf8_lossy(&out.stderr);
    for k in ["kw01", "kw26", "kw34"] {
        assert!(
            err.contains(&format!("keyword {k} ")),
            "{k} not named: {err}"
        );
    }
    let bob = messages(&live, "bob");
    assert!(
        bob.iter().any(|m| m.2 == src_guid(&src, 1)),
        "alice's INBOX 1 was not merged into bob's INBOX: {bob:?}"
    );
}

/// GUID of alice's INBOX message `uid` in `dc`.
fn src_guid(dc: &Dovecot, uid: u32) -> String {
    messages(dc, ALICE)
        .into_iter()
        .find(|m| m.0 == "INBOX" && m.1 == uid)
        .map(|m| m.2)
        .unwrap()
}
