//! Restore and export targets with symbolic links planted in them (issue 13 item 3), and
//! modes and owners an archive asks for (item 7).
//!
//! Every case plants a link where the restore would write (a mailbox directory, `cur/`,
//! `tmp/`, a control file, the attachment directory, an export's output), runs the real
//! binary and asserts the exit code, the one-line message naming the link, and that
//! nothing in the whole workspace changed: neither the target nor the directory the link
//! points to (compared as a listing with modes, owners, sizes, mtimes and content hashes).

use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use maildump::model::*;

use crate::hostile::{hostile_archive, inbox, plain, user};
use crate::util::{Workspace, maildump, run, run_ok, set_mtime, tree_listing};

/// The places of one case: the workspace, the archive, the home of user `alice`, and the
/// directory links point to (`victim` is a file there, `box/` looks like a mailbox).
struct Place {
    ws: Workspace,
    archive: PathBuf,
    home: PathBuf,
    elsewhere: PathBuf,
}

impl Place {
    fn new() -> Place {
        let ws = Workspace::new();
        let elsewhere = ws.join("elsewhere");
        for d in ["box/cur", "box/new", "box/tmp"] {
            fs::create_dir_all(elsewhere.join(d)).unwrap();
        }
        fs::write(elsewhere.join("victim"), "precious\n").unwrap();
        // Old: a lock file pointing here would be stale at once (no waiting).
        set_mtime(&elsewhere.join("victim"), 1_000_000_000);
        let home = ws.join("t/alice");
        fs::create_dir_all(&home).unwrap();
        Place {
            archive: ws.join("a.mdump"),
            home,
            elsewhere,
            ws,
        }
    }

    /// `--home` for every restore here.
    fn home_template(&self) -> String {
        format!("{}/%u", self.ws.join("t").display())
    }

    /// Make the directories `rels` (relative to the home).
    fn dirs(&self, rels: &[&str]) {
        for r in rels {
            fs::create_dir_all(self.home.join(r)).unwrap();
        }
    }

    /// Plant a link at `rel` (relative to the home) to `to` (relative to `elsewhere`).
    fn plant(&self, rel: &str, to: &str) {
        let at = self.home.join(rel);
        fs::create_dir_all(at.parent().unwrap()).unwrap();
        symlink(self.elsewhere.join(to), at).unwrap();
    }

    /// Put a link to `to` (relative to `elsewhere`) in place of `rel` (relative to the
    /// home): a directory there is moved to `to` first, a file removed.
    fn replace_by_link(&self, rel: &str, to: &str) {
        let at = self.home.join(rel);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {
                let _ = fs::remove_dir_all(self.elsewhere.join(to));
                fs::rename(&at, self.elsewhere.join(to)).unwrap();
            }
            Ok(_) => fs::remove_file(&at).unwrap(),
            Err(_) => {}
        }
        self.plant(rel, to);
    }

    fn restore(&self, location: &str, extra: &[&str]) -> Command {
        let mut c = maildump();
        c.arg("restore")
            .arg(&self.archive)
            .args(["--location", location, "--home"])
            .arg(self.home_template())
            .arg("--quiet")
            .args(extra);
        c
    }
}

/// Run `cmd`, expecting exit `code`, one line on stderr containing `message`, and no change
/// at all in the workspace of `p`; what went otherwise, if anything.
fn refused(p: &Place, what: &str, mut cmd: Command, code: i32, message: &str) -> Option<String> {
    let before = tree_listing(p.ws.path());
    let out = run(&mut cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut wrong = Vec::new();
    if out.status.code() != Some(code) {
        wrong.push(format!("exit {:?}, not {code}", out.status.code()));
    }
    if !stderr.contains(message) || stderr.lines().count() != 1 {
        wrong.push(format!("stderr is not one line with {message:?}"));
    }
    let after = tree_listing(p.ws.path());
    if before != after {
        wrong.push(format!(
            "the workspace changed:\n{}",
            crate::util::line_diff(&before, &after)
        ));
    }
    if fs::read_to_string(p.elsewhere.join("victim")).unwrap() != "precious\n" {
        wrong.push("the victim file changed".into());
    }
    (!wrong.is_empty()).then(|| format!("{what}: {}\n{stderr}", wrong.join("; ")))
}

/// Panic naming every case that went wrong.
fn all_refused(failures: Vec<String>, cases: usize) {
    assert!(
        failures.is_empty(),
        "{} of {cases} cases went wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The one-line refusal of a link at `rel` below the home.
fn link_message(p: &Place, rel: &str) -> String {
    format!("{}: is a symbolic link", p.home.join(rel).display())
}

/// Mailbox `Work` (UIDVALIDITY 1001, a GUID, one METADATA entry).
fn work() -> MailboxMeta {
    MailboxMeta {
        name: Name::from("Work"),
        guid: Some("fedcba9876543210fedcba9876543210".into()),
        uidvalidity: 1001,
        attributes: vec![Attribute {
            scope: AttributeScope::Private,
            name: Name::from("comment"),
            value: Name::from("work"),
        }],
        ..inbox()
    }
}

/// User `alice`, subscribed to INBOX and Work.
fn alice() -> UserMeta {
    UserMeta {
        subscriptions: vec![Name::from("INBOX"), Name::from("Work")],
        ..user("alice")
    }
}

/// A second message (another file name, another date: not already in a mailbox holding
/// `plain(1)`).
fn plain2() -> MessageMeta {
    let mut m = plain(2);
    m.received.secs += 100;
    m
}

/// An archive of alice's `mailbox` with `messages` at `p.archive`.
fn archive(p: &Place, mailbox: MailboxMeta, messages: Vec<MessageMeta>) {
    hostile_archive(&p.archive, alice(), mailbox, messages);
}

const MAILDIR: &str = "maildir:~/Maildir";
const SDBOX: &str = "sdbox:~/sdbox";
const MDBOX: &str = "mdbox:~/mdbox";

/// What the archive of a [`Case`] holds: alice's INBOX, her `Work` ([`work`]), or an
/// INBOX with a single-instance attachment ([`sis_archive`]).
#[derive(Clone, Copy)]
enum Holds {
    Inbox,
    Work,
    Sis,
}

/// A link planted at `link` (below the home) to `to` (below `elsewhere`) after making
/// `dirs`, then a restore of what `holds` says into `location` with `extra` options.
struct Case {
    what: &'static str,
    location: &'static str,
    holds: Holds,
    dirs: &'static [&'static str],
    link: &'static str,
    to: &'static str,
    extra: &'static [&'static str],
}

/// A [`Case`] of a Maildir restore without options.
const fn case(
    what: &'static str,
    holds: Holds,
    dirs: &'static [&'static str],
    link: &'static str,
    to: &'static str,
) -> Case {
    Case {
        what,
        location: MAILDIR,
        holds,
        dirs,
        link,
        to,
        extra: &[],
    }
}

/// Run every case: each restore refused (exit 6) naming the link, nothing written anywhere.
fn run_cases(cases: &[Case]) {
    let mut failures = Vec::new();
    for c in cases {
        let p = Place::new();
        match c.holds {
            Holds::Inbox => archive(&p, inbox(), vec![plain(1)]),
            Holds::Work => archive(&p, work(), vec![plain(1)]),
            Holds::Sis => sis_archive(&p),
        }
        p.dirs(c.dirs);
        p.plant(c.link, c.to);
        let msg = link_message(&p, c.link);
        let cmd = p.restore(c.location, c.extra);
        failures.extend(refused(&p, c.what, cmd, 6, &msg));
    }
    all_refused(failures, cases.len());
}

/// The directories of an existing, empty `Work` mailbox.
const WORK_DIRS: &[&str] = &[
    "Maildir/.Work/new",
    "Maildir/.Work/cur",
    "Maildir/.Work/tmp",
];

/// Exact restores into an existing Maildir root with a link planted in the way: each is
/// refused (exit 6) naming the link, and nothing is written anywhere.
#[test]
fn exact_maildir_restore_never_writes_through_a_planted_symlink() {
    use Holds::*;
    let root: &[&str] = &["Maildir/cur"];
    run_cases(&[
        case(
            "INBOX cur/",
            Inbox,
            &["Maildir/new", "Maildir/tmp"],
            "Maildir/cur",
            "box/cur",
        ),
        case("mailbox directory", Work, root, "Maildir/.Work", "box"),
        case(
            "mailbox cur/",
            Work,
            &WORK_DIRS[..1],
            "Maildir/.Work/cur",
            "box/cur",
        ),
        case(
            "mailbox tmp/",
            Work,
            &WORK_DIRS[..2],
            "Maildir/.Work/tmp",
            "box/tmp",
        ),
        case(
            "uidlist",
            Work,
            WORK_DIRS,
            "Maildir/.Work/dovecot-uidlist",
            "victim",
        ),
        case(
            "index file",
            Work,
            WORK_DIRS,
            "Maildir/.Work/dovecot.index",
            "victim",
        ),
        case(
            "subscriptions",
            Work,
            root,
            "Maildir/subscriptions",
            "victim",
        ),
        case(
            "UIDVALIDITY counter",
            Work,
            root,
            "Maildir/dovecot-uidvalidity",
            "victim",
        ),
        Case {
            extra: &["--attribute-dict", "file:~/Maildir/dovecot-attributes"],
            ..case(
                "METADATA in the root",
                Work,
                root,
                "Maildir/dovecot-attributes",
                "victim",
            )
        },
        Case {
            extra: &["--attribute-dict", "file:~/dovecot-attributes"],
            ..case(
                "METADATA in the home",
                Work,
                root,
                "dovecot-attributes",
                "victim",
            )
        },
    ]);
}

/// Merge and side-folder restores into live Maildir mailboxes (restored here first) with
/// a link put in place of a directory or file of theirs (or of a side folder): refused
/// (exit 6) naming the link, nothing written anywhere.
#[test]
fn merge_and_side_folder_never_write_through_a_planted_symlink() {
    let merge: &[&str] = &["--mode", "merge"];
    let cases: [(&str, &str, &str, &[&str]); 7] = [
        ("live cur/", "Maildir/.Work/cur", "box/cur", merge),
        ("live tmp/", "Maildir/.Work/tmp", "box/tmp", merge),
        ("live mailbox", "Maildir/.Work", "box", merge),
        (
            "uidlist lock",
            "Maildir/.Work/dovecot-uidlist.lock",
            "victim",
            merge,
        ),
        (
            "live uidlist",
            "Maildir/.Work/dovecot-uidlist",
            "victim",
            merge,
        ),
        (
            "keywords",
            "Maildir/.Work/dovecot-keywords",
            "victim",
            merge,
        ),
        (
            "side folder",
            "Maildir/.Restored.Work",
            "box",
            &["--into", "Restored"],
        ),
    ];
    let mut failures = Vec::new();
    for (what, link, to, extra) in cases {
        let p = Place::new();
        archive(&p, work(), vec![plain(1)]);
        run_ok(&mut p.restore(MAILDIR, &[]));
        let mut m = plain2();
        m.keywords = vec![Name::from("seen-by-test")];
        archive(&p, work(), vec![plain(1), m]);
        p.replace_by_link(link, to);
        let msg = link_message(&p, link);
        failures.extend(refused(&p, what, p.restore(MAILDIR, extra), 6, &msg));
    }
    all_refused(failures, cases.len());
}

/// sdbox and mdbox targets, and the attachment directory: a planted link is refused (exit
/// 6) naming it, nothing written anywhere.
#[test]
fn dbox_restore_never_writes_through_a_planted_symlink() {
    use Holds::*;
    let sdbox = |c: Case| Case {
        location: SDBOX,
        ..c
    };
    let att = |c: Case| Case {
        location: SDBOX,
        extra: &["--attachment-dir", "~/att"],
        ..c
    };
    run_cases(&[
        sdbox(case(
            "mailboxes/",
            Work,
            &["sdbox"],
            "sdbox/mailboxes",
            "box",
        )),
        sdbox(case(
            "mailbox",
            Work,
            &["sdbox/mailboxes"],
            "sdbox/mailboxes/Work",
            "box",
        )),
        sdbox(case(
            "dbox-Mails",
            Work,
            &[],
            "sdbox/mailboxes/Work/dbox-Mails",
            "box",
        )),
        Case {
            location: MDBOX,
            ..case(
                "mdbox storage/",
                Work,
                &["mdbox/mailboxes"],
                "mdbox/storage",
                "box",
            )
        },
        att(case("attachment dir", Sis, &["att"], "att/ab", "box")),
        att(case(
            "attachment hashes/",
            Sis,
            &[],
            "att/ab/cd/hashes",
            "box",
        )),
    ]);
}

/// The X path of the attachment of [`sis_archive`].
const SIS_PATH: &str = "ab/cd/abcdef0123456789abcdef0123456789abcdef01-0011223344556677";

/// An sdbox archive of alice's INBOX holding one message stored with one single-instance
/// attachment at [`SIS_PATH`].
fn sis_archive(p: &Place) {
    crate::corrupt::sis_archive(&p.archive, "alice", SIS_PATH);
}

/// The attachment case above is real: without a planted link, the attachment is written
/// to the attachment directory and linked from `hashes/`.
#[test]
fn sis_archive_writes_its_attachment() {
    let p = Place::new();
    sis_archive(&p);
    run_ok(&mut p.restore(SDBOX, &["--attachment-dir", "~/att"]));
    let hash = SIS_PATH
        .split('-')
        .next()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let link = p.home.join("att/ab/cd/hashes").join(hash);
    assert_eq!(fs::read(&link).unwrap(), b"abcdef");
    let dir = fs::read_dir(p.home.join("att/ab/cd")).unwrap();
    let files: Vec<_> = dir
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "hashes")
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        fs::metadata(p.home.join("att/ab/cd").join(&files[0]))
            .unwrap()
            .ino(),
        fs::metadata(&link).unwrap().ino()
    );
}

/// `export -o DIR` (eml, maildir, and mbox of all mailboxes): a symlink given as DIR is
/// refused as `-o` refuses one (exit 2); a link planted below DIR is refused like a
/// restore's (exit 6). Nothing is written anywhere.
#[test]
fn export_never_writes_through_a_symlink() {
    let export = |p: &Place, format: &str, out: &Path| {
        let mut c = maildump();
        c.arg("export")
            .arg(&p.archive)
            .args(["--user", "alice", "--format", format, "-o"])
            .arg(out);
        c
    };
    let mut failures = Vec::new();
    for format in ["eml", "maildir", "mbox"] {
        let p = Place::new();
        archive(&p, work(), vec![plain(1)]);
        let out = p.home.join("out");
        p.plant("out", "box");
        let msg = format!(
            "{}: is a symbolic link; refused (give the path it points to)",
            out.display()
        );
        failures.extend(refused(&p, format, export(&p, format, &out), 2, &msg));
    }
    for (format, link, to) in [
        ("eml", "out/Work", "box"),
        ("maildir", "out/.Work", "box"),
        ("mbox", "out/Work.mbox", "victim"),
    ] {
        let p = Place::new();
        archive(&p, work(), vec![plain(1)]);
        p.plant(link, to);
        let msg = link_message(&p, link);
        let cmd = export(&p, format, &p.home.join("out"));
        failures.extend(refused(&p, &format!("{format} below DIR"), cmd, 6, &msg));
    }
    all_refused(failures, 6);
}

/// Symlinks in the mail root's own path are the administrator's (e.g. `/srv/mail ->
/// /data/mail`, a home template through a link, a mail root that is a link): followed.
#[test]
fn symlinks_above_the_mail_root_are_followed() {
    let p = Place::new();
    archive(&p, work(), vec![plain(1)]);
    let real = p.ws.join("real");
    fs::create_dir_all(&real).unwrap();
    symlink(&real, p.ws.join("link")).unwrap();
    let mut c = maildump();
    c.arg("restore")
        .arg(&p.archive)
        .args(["--location", MAILDIR, "--home"])
        .arg(format!("{}/%u", p.ws.join("link").display()))
        .arg("--quiet");
    run_ok(&mut c);
    assert_eq!(
        fs::read_dir(real.join("alice/Maildir/.Work/cur"))
            .unwrap()
            .count(),
        1
    );
    // The mail root itself a link to an existing directory.
    let p = Place::new();
    archive(&p, work(), vec![plain(1)]);
    fs::create_dir_all(p.ws.join("real-root")).unwrap();
    symlink(p.ws.join("real-root"), p.home.join("Maildir")).unwrap();
    run_ok(&mut p.restore(MAILDIR, &[]));
    assert_eq!(
        fs::read_dir(p.ws.join("real-root/.Work/cur"))
            .unwrap()
            .count(),
        1
    );
    // The attachment directory itself a link (e.g. to another disk).
    let p = Place::new();
    sis_archive(&p);
    fs::create_dir_all(p.ws.join("real-att")).unwrap();
    symlink(p.ws.join("real-att"), p.home.join("att")).unwrap();
    run_ok(&mut p.restore(SDBOX, &["--attachment-dir", "~/att"]));
    assert_eq!(
        fs::read_dir(p.ws.join("real-att/ab/cd")).unwrap().count(),
        2
    );
}

/// Every directory and file under `root` as (path, is_dir, mode, uid, gid).
fn modes_under(root: &Path) -> Vec<(PathBuf, bool, u32, u32, u32)> {
    let mut out = Vec::new();
    for e in walkdir(root) {
        let m = fs::symlink_metadata(&e).unwrap();
        out.push((e, m.is_dir(), m.mode() & 0o7777, m.uid(), m.gid()));
    }
    out
}

fn walkdir(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if fs::symlink_metadata(&out[i]).unwrap().is_dir() {
            let mut sub: Vec<PathBuf> = fs::read_dir(&out[i])
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            sub.sort();
            out.extend(sub);
        }
        i += 1;
    }
    out
}

/// Issue 13 item 7: modes from an archive are masked to what Dovecot itself creates
/// (directories `(mode & 0o2775) | 0o700`, files `(mode & 0o664) | 0o600`): no setuid,
/// no sticky bit, no execute bit on a file, nothing world-writable, whatever the archive
/// says (here 0o7777 everywhere). Owners: a new mail root gets the archived owner; a
/// mailbox restored into an existing mail root gets the root's owner, not the archive's.
#[test]
fn modes_and_owners_from_an_archive_are_masked() {
    assert!(
        crate::util::is_root(),
        "this test chowns and must run as root"
    );
    let hostile = Owner {
        uid: 4242,
        gid: 4343,
        mode: 0o7777,
    };
    let mut u = alice();
    u.owner = Some(hostile);
    let mut mb = work();
    mb.owner = Some(hostile);
    let mut m = plain(1);
    m.owner = Some(hostile);
    for location in [MAILDIR, SDBOX, MDBOX] {
        let p = Place::new();
        hostile_archive(&p.archive, u.clone(), mb.clone(), vec![m.clone()]);
        run_ok(&mut p.restore(location, &[]));
        let root = p.home.join(location.rsplit('/').next().unwrap());
        let all = modes_under(&root);
        assert!(all.len() > 5, "{all:?}");
        let (dirs, files) = (
            all.iter().filter(|e| e.1).count(),
            all.iter().filter(|e| !e.1).count(),
        );
        assert!(dirs > 2 && files > 2, "{location}: {all:?}");
        // The mailbox directory and the message file carry exactly the masked modes.
        let mailbox = all
            .iter()
            .find(|e| e.0.ends_with(".Work") || e.0.ends_with("mailboxes/Work"));
        assert_eq!(mailbox.map(|e| e.2), Some(0o2775), "{location}: {all:?}");
        for (path, dir, mode, uid, gid) in all {
            let want = if dir { 0o2775 } else { 0o664 };
            // Files Dovecot keeps private (uidlist, index, counter) may be stricter, and
            // the counter's marker is read-only.
            assert_eq!(
                mode & !want,
                0,
                "{location}: {} mode {mode:o}",
                path.display()
            );
            if dir {
                assert_eq!(mode & 0o700, 0o700, "{}", path.display());
            }
            assert_eq!((uid, gid), (4242, 4343), "{location}: {}", path.display());
        }
    }
    // Into an existing root owned by someone else: the root's owner, not the archive's.
    for location in [MAILDIR, SDBOX] {
        let p = Place::new();
        hostile_archive(&p.archive, u.clone(), mb.clone(), vec![m.clone()]);
        let root = p.home.join(location.rsplit('/').next().unwrap());
        fs::create_dir_all(&root).unwrap();
        std::os::unix::fs::chown(&root, Some(1234), Some(1235)).unwrap();
        run_ok(&mut p.restore(location, &[]));
        let all = modes_under(&root);
        assert!(all.len() > 4, "{all:?}");
        for (path, dir, mode, uid, gid) in all {
            assert_eq!((uid, gid), (1234, 1235), "{location}: {}", path.display());
            let want = if dir { 0o2775 } else { 0o664 };
            assert_eq!(
                mode & !want,
                0,
                "{location}: {} mode {mode:o}",
                path.display()
            );
        }
    }
}
