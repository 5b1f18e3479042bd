//! Hostile archives and targets (issue 13): each archive is built here, through the
//! library's writer, so that each test says what it attacks. Every test asserts the exact
//! exit code, the message, and that nothing changed outside the intended place.

use std::fs;
use std::io::Cursor;
use std::path::Path;

use maildump::format::index::{Manifest, MessageRecord, Source};
use maildump::format::writer::{ArchiveWriter, WriterOptions};
use maildump::model::*;

use crate::util::{Workspace, maildump, run, tree_listing};

/// The bytes of every hostile archive's messages.
pub(crate) const BODY: &[u8] = b"Subject: hi\n\nhello\n";

/// Metadata of a plain Maildir message with UID `uid` (GUID = file base).
pub(crate) fn plain(uid: u32) -> MessageMeta {
    MessageMeta {
        uid: Uid(uid),
        guid: Name::default(),
        flags: Flags::empty(),
        keywords: vec![],
        received: Timestamp {
            secs: 1_700_000_000,
            nanos: 0,
        },
        saved: None,
        modseq: None,
        changed: None,
        storage_key: None,
        size_physical: BODY.len() as u64,
        size_virtual: None,
        pop3_uidl: None,
        pop3_order: None,
        owner: None,
        maildir: Some(MaildirMessage {
            filename: Name::from(format!("1700000000.M{uid}P1.host,S=19:2,S").as_str()),
            ..Default::default()
        }),
        sdbox: None,
        mdbox: None,
        from: None,
        subject: None,
        message_id: None,
        content: Content::default(),
    }
}

/// A mailbox `INBOX` with UIDVALIDITY 1000 and a GUID.
pub(crate) fn inbox() -> MailboxMeta {
    MailboxMeta {
        name: Name::from("INBOX"),
        guid: Some("0123456789abcdef0123456789abcdef".into()),
        uidvalidity: 1000,
        uidnext: 1,
        highest_modseq: None,
        keywords: vec![],
        attributes: vec![],
        owner: None,
        uidlist_header_ext: vec![],
    }
}

/// Write an archive of one user holding one mailbox with `messages` (each with [`BODY`]);
/// `user` is the user's metadata (its name is the user).
pub(crate) fn hostile_archive(
    path: &Path,
    user: UserMeta,
    mailbox: MailboxMeta,
    messages: Vec<MessageMeta>,
) {
    tampered_archive(path, user, mailbox, messages, |_| {});
}

/// [`hostile_archive`], with `tamper` changing the records the writer made before they
/// go into the mailbox's catalog (e.g. a size that lies).
pub(crate) fn tampered_archive(
    path: &Path,
    user: UserMeta,
    mut mailbox: MailboxMeta,
    messages: Vec<MessageMeta>,
    tamper: impl FnOnce(&mut Vec<MessageRecord>),
) {
    let manifest = Manifest {
        format: "maildump".into(),
        format_major: 1,
        format_minor: 1,
        writer: "hostile test".into(),
        created: "2026-01-01T00:00:00Z".into(),
        archive_id: "hostile".into(),
        parent: None,
        bases: vec![],
        since: None,
        replaces: vec![],
        source: Source {
            store: "maildir".into(),
            location: "maildir:~/Maildir".into(),
            home: None,
            host: None,
        },
    };
    let file = fs::File::create(path).unwrap();
    let mut w = ArchiveWriter::new(file, manifest, &WriterOptions::default()).unwrap();
    let u = user.name.clone();
    let mut recs: Vec<MessageRecord> = messages
        .into_iter()
        .map(|m| {
            w.add_message(
                &u,
                &mailbox.name,
                m,
                &mut Cursor::new(BODY),
                BODY.len() as u64,
                Path::new("x"),
            )
            .unwrap()
        })
        .collect();
    mailbox.uidnext = recs
        .iter()
        .map(|r| r.message.uid.0.saturating_add(1))
        .max()
        .unwrap_or(1)
        .max(mailbox.uidnext);
    tamper(&mut recs);
    let name = mailbox.name.clone();
    w.add_mailbox(&u, mailbox, recs, vec![], None).unwrap();
    w.add_user(user, vec![name]).unwrap();
    w.finish().unwrap();
}

/// A user's metadata with nothing but the name.
pub(crate) fn user(name: &str) -> UserMeta {
    UserMeta {
        name: Name::from(name),
        ..Default::default()
    }
}

/// Run `maildump restore ARCHIVE --location LOC --home HOME EXTRA...`, expecting exit
/// `code` and `message` on stderr, and nothing created, removed or changed under `watch`
/// (the target and everything around it) except the archive.
pub(crate) fn restore_refused(
    archive: &Path,
    location: &str,
    home: &str,
    extra: &[&str],
    watch: &Path,
    code: i32,
    message: &str,
) {
    let before = tree_listing(watch);
    let out = run(maildump()
        .arg("restore")
        .arg(archive)
        .args(["--location", location, "--home", home, "--quiet"])
        .args(extra));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{stderr}");
    assert!(
        stderr.contains(message),
        "expected {message:?} in:\n{stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line naming the item:\n{stderr}"
    );
    crate::util::assert_text_eq("files around the target", &before, &tree_listing(watch));
}

pub(crate) fn home_of(dir: &Path, template: &str) -> String {
    format!("{}/{template}", dir.display())
}

/// Issue 13 item 2: user `x@..` with a home template `.../%d/%n` would put the mail one
/// directory above the target. Refused as hostile (exit 4), nothing written anywhere.
#[test]
fn a_user_name_from_an_archive_cannot_climb_out_of_the_home_template() {
    let ws = Workspace::new();
    let a = ws.join("a.mdump");
    let box_ = ws.join("jail/target");
    fs::create_dir_all(&box_).unwrap();
    for (name, template, shown) in [
        ("x@..", "%d/%n", r#"user "x@..""#),
        ("x@.", "%d/%n", r#"user "x@.""#),
        ("x@..", "%Ld/%n", r#"user "x@..""#),
        ("..@x", "%d/%n", r#"user "..@x""#),
    ] {
        hostile_archive(&a, user(name), inbox(), vec![plain(1)]);
        restore_refused(
            &a,
            "maildir:~/Maildir",
            &home_of(&box_, template),
            &[],
            &ws.join("jail"),
            4,
            &format!("corrupt archive: {shown}: hostile user name refused"),
        );
    }
    // The same names given with --to-user are a usage error, with the same guard.
    hostile_archive(&a, user("alice"), inbox(), vec![plain(1)]);
    restore_refused(
        &a,
        "maildir:~/Maildir",
        &home_of(&box_, "%d/%n"),
        &["--to-user", "x@.."],
        &ws.join("jail"),
        2,
        r#"user "x@..": hostile user name refused"#,
    );
}

/// The message metadata of issue 13 item 5, each with what it would have injected.
fn hostile_messages() -> Vec<(&'static str, MessageMeta, &'static str)> {
    let mut v = Vec::new();
    let mut m = plain(1);
    m.keywords = vec![Name::from("bad\n1 injected")];
    v.push((
        "keyword",
        m,
        r#"UID 1: keyword "bad\n1 injected" is not an IMAP atom"#,
    ));
    let mut m = plain(1);
    m.guid = Name::from("g\n99 :injected");
    v.push((
        "guid",
        m,
        r#"UID 1: GUID "g\n99 :injected" is not one token"#,
    ));
    let mut m = plain(1);
    m.pop3_uidl = Some(Name::from("u\n99 :injected"));
    v.push((
        "uidl",
        m,
        r#"UID 1: POP3 UIDL "u\n99 :injected" is not one token"#,
    ));
    let mut m = plain(1);
    if let Some(md) = &mut m.maildir {
        md.uidlist_ext = vec![Name::from("X1\n99 :injected")];
    }
    v.push((
        "uidlist ext",
        m,
        r#"UID 1: uidlist field "X1\n99 :injected" is not one token starting with A-Z"#,
    ));
    let mut m = plain(1);
    if let Some(md) = &mut m.maildir {
        md.filename = Name::from("1.M1P1.host:2,S\n99 :injected");
    }
    v.push((
        "file name",
        m,
        r#"UID 1: Maildir file name "1.M1P1.host:2,S\n99 :injected" is not one file name"#,
    ));
    v.push((
        "uid 0",
        plain(0),
        "UID 0: not a valid UID (IMAP UIDs start at 1)",
    ));
    v
}

/// Issue 13 item 5: line breaks in keywords, GUIDs, POP3 UIDLs, uidlist extension fields
/// and file names would add lines to `dovecot-uidlist` or `dovecot-keywords`; UID 0 was
/// written as is. Each is refused as corrupt (exit 4) naming the message and the value,
/// before anything is written, by every restore mode and target format.
#[test]
fn control_file_injection_from_message_metadata_is_refused() {
    let ws = Workspace::new();
    let a = ws.join("a.mdump");
    let jail = ws.join("jail");
    fs::create_dir_all(jail.join("t")).unwrap();
    // A live Maildir INBOX for merge mode.
    let live = jail.join("t/alice/Maildir");
    for d in ["cur", "new", "tmp"] {
        fs::create_dir_all(live.join(d)).unwrap();
    }
    fs::write(
        live.join("dovecot-uidlist"),
        "3 V1000 N2 G0123456789abcdef0123456789abcdef\n1 :1.M1P1.live:2,S\n",
    )
    .unwrap();
    fs::write(live.join("cur/1.M1P1.live:2,S"), BODY).unwrap();
    let mut checked = 0;
    for (what, msg, detail) in hostile_messages() {
        hostile_archive(&a, user("alice"), inbox(), vec![msg]);
        let item = format!("corrupt archive: user alice mailbox INBOX {detail}");
        for (loc, extra) in [
            ("maildir:~/Maildir", &["--to-user", "bob"][..]),
            ("maildir:~/Maildir", &["--mode", "merge"][..]),
            ("maildir:~/Maildir", &["--mode", "side-folder"][..]),
            ("sdbox:~/sdbox", &[][..]),
        ] {
            let home = home_of(&jail, "t/%u");
            restore_refused(&a, loc, &home, extra, &jail, 4, &item);
            checked += 1;
        }
        // Export writes the same fields (mbox X-Keywords, a Maildir's control files).
        for format in ["mbox", "maildir"] {
            let before = tree_listing(&jail);
            let out = run(maildump()
                .arg("export")
                .arg(&a)
                .args(["--user", "alice", "--format", format, "-o"])
                .arg(jail.join("export")));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(4), "{what} {format}: {stderr}");
            assert!(stderr.contains(&item), "{what} {format}: {stderr}");
            crate::util::assert_text_eq(what, &before, &tree_listing(&jail));
        }
    }
    assert_eq!(checked, 24);
}

/// Issue 13 item 5, mailbox and user metadata: keyword table, mailbox GUID, uidlist header
/// fields, UIDVALIDITY 0, subscriptions and METADATA with line breaks or NUL.
#[test]
fn control_file_injection_from_mailbox_and_user_metadata_is_refused() {
    let ws = Workspace::new();
    let a = ws.join("a.mdump");
    let jail = ws.join("jail");
    fs::create_dir_all(jail.join("t")).unwrap();
    let mut cases: Vec<(MailboxMeta, UserMeta, String)> = Vec::new();
    let mb_item = "corrupt archive: user alice mailbox INBOX: ";
    let mut m = inbox();
    m.keywords = vec![Name::from("ok"), Name::from("bad\n1 injected")];
    cases.push((
        m,
        user("alice"),
        format!(r#"{mb_item}keyword "bad\n1 injected" is not an IMAP atom"#),
    ));
    let mut m = inbox();
    m.guid = Some("0123\n99 :injected".into());
    cases.push((
        m,
        user("alice"),
        format!(r#"{mb_item}mailbox GUID "0123\n99 :injected" is not 32 hex digits"#),
    ));
    let mut m = inbox();
    m.uidlist_header_ext = vec![Name::from("X\n99 :injected")];
    cases.push((
        m,
        user("alice"),
        format!(r#"{mb_item}uidlist header field "X\n99 :injected" is not one token"#),
    ));
    let mut m = inbox();
    m.uidvalidity = 0;
    cases.push((
        m,
        user("alice"),
        format!(r#"{mb_item}UIDVALIDITY 0 with a mailbox GUID (0 means "never assigned")"#),
    ));
    let mut u = user("alice");
    u.subscriptions = vec![Name::from_bytes(b"INBOX\0x".to_vec())];
    cases.push((
        inbox(),
        u,
        r#"corrupt archive: user alice: subscription "INBOX\0x" is empty or holds NUL"#.into(),
    ));
    // Found by the archive_json fuzz target: an empty name was dropped silently.
    let mut u = user("alice");
    u.subscriptions = vec![Name::from(""), Name::from("INBOX")];
    cases.push((
        inbox(),
        u,
        r#"corrupt archive: user alice: subscription "" is empty or holds NUL"#.into(),
    ));
    let mut u = user("alice");
    u.raw_attributes = vec![(Name::from("priv/k\nx"), Name::from("v"))];
    cases.push((
        inbox(),
        u,
        r#"corrupt archive: user alice: METADATA entry "priv/k\nx" is empty or holds CR, LF or NUL"#
            .into(),
    ));
    let mut checked = 0;
    for (mb, u, message) in cases {
        hostile_archive(&a, u, mb, vec![plain(1)]);
        for loc in ["maildir:~/Maildir", "sdbox:~/sdbox"] {
            restore_refused(&a, loc, &home_of(&jail, "t/%u"), &[], &jail, 4, &message);
            checked += 1;
        }
    }
    assert_eq!(checked, 14);
}

/// What is at `p`, without following a symbolic link.
fn kind_of(p: &Path) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    match fs::symlink_metadata(p) {
        Err(_) => "missing",
        Ok(m) if m.file_type().is_symlink() => "symlink",
        Ok(m) if m.file_type().is_fifo() => "fifo",
        Ok(m) if m.file_type().is_char_device() => "char device",
        Ok(m) if m.is_file() => "file",
        Ok(m) if m.is_dir() => "dir",
        Ok(_) => "other",
    }
}

/// Names of the entries of `dir`, sorted (to see that no temporary file is left).
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// `backup` or `merge` command lines writing to `-o OUT` (`a` is an archive to merge).
fn writer_cmds(store: &Path, a: &Path, out: &Path) -> Vec<(&'static str, std::process::Command)> {
    let mut backup = crate::cli::backup_cmd(store);
    backup.args(["--all-users", "--quiet", "-o"]).arg(out);
    let mut merge = maildump();
    merge.arg("merge").arg(a).args(["--quiet", "-o"]).arg(out);
    vec![("backup", backup), ("merge", merge)]
}

/// A reader of the FIFO `fifo` copying what it gets to `got` (`cat` itself, so that
/// killing it ends the reader).
fn fifo_reader(fifo: &Path, got: &Path) -> std::process::Child {
    std::process::Command::new("sh")
        .arg("-c")
        .arg("exec cat \"$0\" > \"$1\"")
        .arg(fifo)
        .arg(got)
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// `maildump export A --user bob --mailbox INBOX --format mbox -o OUT`.
fn export_mbox(a: &Path, out: &Path) -> std::process::Command {
    let mut c = maildump();
    c.arg("export")
        .arg(a)
        .args([
            "--user",
            "bob",
            "--mailbox",
            "INBOX",
            "--format",
            "mbox",
            "-o",
        ])
        .arg(out);
    c
}

/// Issue 13 item 4, FIFO and character device: `-o` writes into them in place (no
/// temporary file, no rename); the reader of the FIFO gets the whole archive, and both
/// are still what they were.
#[test]
fn output_to_a_fifo_or_device_is_written_in_place() {
    use std::process::Command;
    assert!(
        crate::util::is_root(),
        "this test makes a device node and must run as root"
    );
    let ws = Workspace::new();
    let store = crate::cli::fixture_copy(&ws);
    let a = crate::cli::backup_fixture(&ws);
    let dir = ws.join("out");
    fs::create_dir(&dir).unwrap();
    let fifo = dir.join("fifo");
    crate::util::run_ok(Command::new("mkfifo").arg(&fifo));
    // Our own null device (as /dev/null: major 1, minor 3), not the machine's.
    let null = dir.join("null");
    crate::util::run_ok(Command::new("mknod").arg(&null).args(["c", "1", "3"]));
    for (what, mut cmd) in writer_cmds(&store, &a, &fifo) {
        let got = ws.join(format!("{what}-from-fifo.mdump"));
        let mut reader = fifo_reader(&fifo, &got);
        let out = run(&mut cmd);
        let replaced = kind_of(&fifo) != "fifo";
        if replaced || !out.status.success() {
            reader.kill().unwrap(); // It would wait for a writer forever.
        }
        let waited = reader.wait().unwrap();
        assert!(
            !replaced,
            "{what}: the FIFO was replaced by a {}",
            kind_of(&fifo)
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(waited.success());
        crate::util::run_ok(maildump().arg("verify").arg(&got));
        assert_eq!(names_in(&dir), ["fifo", "null"], "{what}");
    }
    for (what, mut cmd) in writer_cmds(&store, &a, &null) {
        let out = run(&mut cmd);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(kind_of(&null), "char device", "{what}");
        assert_eq!(names_in(&dir), ["fifo", "null"], "{what}");
    }
    // Export to a FIFO works the same way (an mbox to a pipe).
    let got = ws.join("export.mbox");
    let mut reader = fifo_reader(&fifo, &got);
    let out = run(&mut export_mbox(&a, &fifo));
    let replaced = kind_of(&fifo) != "fifo";
    if replaced || !out.status.success() {
        reader.kill().unwrap();
    }
    reader.wait().unwrap();
    assert!(!replaced);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(&got).unwrap().matches("\nFrom ").count() + 1,
        2
    );
}

/// Issue 13 item 4, symbolic links: `-o LINK` is refused (exit 2, naming it), whether the
/// link points to an archive, to a file elsewhere or nowhere; nothing at either end changes.
/// Writing through it would let whoever can plant a link in the output directory choose
/// what a backup running as root overwrites.
#[test]
fn output_to_a_symlink_is_refused() {
    let ws = Workspace::new();
    let store = crate::cli::fixture_copy(&ws);
    let a = crate::cli::backup_fixture(&ws);
    let dir = ws.join("out");
    let elsewhere = ws.join("elsewhere");
    fs::create_dir_all(&dir).unwrap();
    fs::create_dir_all(&elsewhere).unwrap();
    fs::write(elsewhere.join("victim"), "precious\n").unwrap();
    let link = dir.join("link.mdump");
    for target in [elsewhere.join("victim"), elsewhere.join("nothing-here")] {
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let before = (tree_listing(&dir), tree_listing(&elsewhere));
        let mut cmds = writer_cmds(&store, &a, &link);
        cmds.push(("export", export_mbox(&a, &link)));
        for (what, mut cmd) in cmds {
            let out = run(&mut cmd);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{what}: {stderr}");
            assert!(
                stderr.contains(&format!("{}: is a symbolic link; refused", link.display())),
                "{what}: {stderr}"
            );
            assert_eq!(kind_of(&link), "symlink");
            assert_eq!(
                before,
                (tree_listing(&dir), tree_listing(&elsewhere)),
                "{what}"
            );
        }
    }
    assert_eq!(
        fs::read_to_string(elsewhere.join("victim")).unwrap(),
        "precious\n"
    );
}
