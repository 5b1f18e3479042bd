//! The orchestration of [`backup`] on small stores written by the tests in a tempdir
//! (Maildir files and `dovecot-uidlist` as Dovecot writes them) and on the checked-in
//! sdbox fixture: the wholly unchanged user, a damaged mailbox, the METADATA split, and
//! the branch each message takes (stored, a duplicate of a body already stored, a
//! reference to the parent, a copy of shared storage, stored in parts).

use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::NoProgress;
use crate::model::{AttributeScope, Uid};

/// A message: UID, `:2,` flags, bytes.
type Msg<'a> = (u32, &'a str, &'a [u8]);

/// Write a Maildir mailbox `dir` (below the user's `Maildir`, `""` for INBOX) with its
/// uidlist (UIDVALIDITY `uv`, GUID `guid`) and `msgs` in `cur/`.
fn mailbox(home: &Path, dir: &str, uv: u32, guid: &str, msgs: &[Msg<'_>]) {
    let md = home.join("Maildir").join(dir);
    for d in ["cur", "new", "tmp"] {
        fs::create_dir_all(md.join(d)).unwrap();
    }
    if !dir.is_empty() {
        fs::write(md.join("maildirfolder"), b"").unwrap();
    }
    let next = msgs.iter().map(|m| m.0).max().unwrap_or(0) + 1;
    let mut uidlist = format!("3 V{uv} N{next} G{guid}\n");
    for (uid, flags, body) in msgs {
        let base = format!("1700000000.M{uid}P1.test,S={}", body.len());
        fs::write(md.join("cur").join(format!("{base}:2,{flags}")), body).unwrap();
        uidlist.push_str(&format!("{uid} :{base}\n"));
    }
    fs::write(md.join("dovecot-uidlist"), uidlist).unwrap();
}

/// Add message `uid` to an existing mailbox (file and uidlist line, next UID raised).
fn add_message(home: &Path, dir: &str, uid: u32, body: &[u8]) {
    let md = home.join("Maildir").join(dir);
    let base = format!("1700000001.M{uid}P2.test,S={}", body.len());
    fs::write(md.join("cur").join(format!("{base}:2,")), body).unwrap();
    let ul = fs::read_to_string(md.join("dovecot-uidlist")).unwrap();
    let (head, rest) = ul.split_once('\n').unwrap();
    let head: Vec<String> = head
        .split(' ')
        .map(|f| match f.strip_prefix('N') {
            Some(_) => format!("N{}", uid + 1),
            None => f.to_string(),
        })
        .collect();
    let ul = format!("{}\n{rest}{uid} :{base}\n", head.join(" "));
    fs::write(md.join("dovecot-uidlist"), ul).unwrap();
}

const GUID_INBOX: &str = "a11ce000000000000000000000000001";
const GUID_WORK: &str = "a11ce000000000000000000000000002";

/// alice: INBOX with two messages, Work with one.
fn alice(root: &Path) -> PathBuf {
    let home = root.join("alice");
    let inbox: [Msg<'_>; 2] = [
        (1, "S", b"Subject: one\n\nfirst\n"),
        (2, "", b"Subject: two\n\nsecond\n"),
    ];
    mailbox(&home, "", 1_600_000_001, GUID_INBOX, &inbox);
    let work: [Msg<'_>; 1] = [(1, "F", b"Subject: work\n\nwork\n")];
    mailbox(&home, ".Work", 1_600_000_002, GUID_WORK, &work);
    home
}

/// Options for a Maildir store below `root` (`root/<user>/Maildir`), reproducible.
fn options(root: &Path, bases: &[&Path]) -> BackupOptions {
    let home = Some(format!("{}/%u", root.display()));
    let mut opts = BackupOptions::new(Location::parse("maildir:~/Maildir", home).unwrap());
    opts.created = Some("2026-01-01T00:00:00Z".into());
    opts.bases = bases.iter().map(|p| p.to_path_buf()).collect();
    opts
}

/// Back `users` up into `out`; the stats and the archive as read back.
fn run(opts: &BackupOptions, users: &[&str], out: &Path) -> (BackupStats, Archive) {
    let users: Vec<String> = users.iter().map(ToString::to_string).collect();
    let file = fs::File::create(out).unwrap();
    let stats = backup(opts, &users, file, &mut NoProgress).unwrap();
    (stats, Archive::open(out, true).unwrap())
}

/// The catalog of `user`'s mailbox `name`.
fn catalog(a: &Archive, user: &str, name: &str) -> MailboxRecord {
    let i = a
        .dir
        .mailboxes
        .iter()
        .position(|m| m.user == Name::from(user) && m.name == Name::from(name))
        .unwrap_or_else(|| panic!("no mailbox {user}/{name}"));
    a.catalog(i).unwrap()
}

fn record(cat: &MailboxRecord, uid: u32) -> &MessageRecord {
    cat.messages
        .iter()
        .find(|r| r.message.uid == Uid(uid))
        .unwrap()
}

#[test]
fn a_full_backup_stores_each_body_once() {
    let t = tempfile::tempdir().unwrap();
    let home = alice(t.path());
    // the same bytes as INBOX UID 1, in Work: stored once
    add_message(&home, ".Work", 2, b"Subject: one\n\nfirst\n");
    let (stats, a) = run(
        &options(t.path(), &[]),
        &["alice"],
        &t.path().join("f.mdump"),
    );
    assert_eq!((stats.users, stats.mailboxes, stats.messages), (1, 2, 4));
    assert_eq!(stats.bodies, 3, "one body is a duplicate");
    assert_eq!((stats.unread, stats.referenced), (0, 0));
    assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
    let inbox = catalog(&a, "alice", "INBOX");
    let first = record(&inbox, 1);
    assert!(first.loc.is_some() && first.link.is_none() && first.archive.is_none());
    assert_eq!(
        first.message.subject.as_deref(),
        Some("one"),
        "headers sniffed"
    );
    let work = catalog(&a, "alice", "Work");
    let dup = record(&work, 2);
    assert_eq!(
        dup.link.as_deref(),
        Some(first.member.as_str()),
        "a hard link"
    );
    assert_eq!(dup.message.content.sha256, first.message.content.sha256);
    assert_eq!(work.mailbox.guid.as_deref(), Some(GUID_WORK));
}

#[test]
fn an_unchanged_user_is_copied_and_a_changed_mailbox_refers_to_the_parent() {
    let t = tempfile::tempdir().unwrap();
    let home = alice(t.path());
    let full = t.path().join("full.mdump");
    let (_, parent) = run(&options(t.path(), &[]), &["alice"], &full);
    let parent_id = parent.manifest().archive_id.clone();

    // Nothing changed: the user's catalogs are copies of the parent's, nothing read.
    let inc = t.path().join("inc1.mdump");
    let (stats, a) = run(&options(t.path(), &[&full]), &["alice"], &inc);
    assert_eq!((stats.mailboxes, stats.messages, stats.unread), (2, 3, 3));
    assert_eq!((stats.read_bytes, stats.bodies), (0, 0));
    assert!(
        a.dir
            .mailboxes
            .iter()
            .all(|m| m.catalog_of.as_deref() == Some(parent_id.as_str())),
        "every catalog copied from the parent"
    );
    assert_eq!(
        a.dir.users[0].subscriptions,
        parent.dir.users[0].subscriptions
    );

    // A new message in INBOX: Work is still a copy; INBOX's old messages refer to the
    // parent, the new one is read and stored.
    add_message(&home, "", 3, b"Subject: three\n\nthird\n");
    let inc = t.path().join("inc2.mdump");
    let (stats, a) = run(&options(t.path(), &[&full]), &["alice"], &inc);
    assert_eq!((stats.messages, stats.unread, stats.bodies), (4, 3, 1));
    assert_eq!(
        stats.referenced, 3,
        "INBOX UIDs 1, 2 and Work's copied catalog"
    );
    let work = &a
        .dir
        .mailboxes
        .iter()
        .find(|m| m.name == Name::from("Work"));
    assert_eq!(
        work.unwrap().catalog_of.as_deref(),
        Some(parent_id.as_str())
    );
    let inbox = catalog(&a, "alice", "INBOX");
    for uid in [1, 2] {
        assert_eq!(
            record(&inbox, uid).archive.as_deref(),
            Some(parent_id.as_str())
        );
    }
    let new = record(&inbox, 3);
    assert!(new.archive.is_none() && new.loc.is_some());
}

#[test]
fn a_damaged_mailbox_is_left_out_of_a_full_and_kept_in_an_incremental() {
    let t = tempfile::tempdir().unwrap();
    let home = alice(t.path());
    let full = t.path().join("full.mdump");
    run(&options(t.path(), &[]), &["alice"], &full);
    let uidlist = home.join("Maildir/.Work/dovecot-uidlist");
    fs::write(&uidlist, b"garbage\n").unwrap();

    let (stats, a) = run(
        &options(t.path(), &[]),
        &["alice"],
        &t.path().join("f2.mdump"),
    );
    assert_eq!(stats.warnings.len(), 1, "{:?}", stats.warnings);
    let w = &stats.warnings[0];
    assert!(
        w.starts_with("user alice mailbox Work: left out: damaged mail store: "),
        "{w}"
    );
    assert!(w.contains(&uidlist.display().to_string()), "{w}");
    let names: Vec<String> = a.dir.mailboxes.iter().map(|m| m.name.to_string()).collect();
    assert_eq!(names, ["INBOX"]);
    assert_eq!(stats.messages, 2);

    // In an incremental the parent's state of the mailbox is kept: not lost, not deleted.
    let (stats, a) = run(
        &options(t.path(), &[&full]),
        &["alice"],
        &t.path().join("i.mdump"),
    );
    assert_eq!(stats.warnings.len(), 1, "{:?}", stats.warnings);
    let w = &stats.warnings[0];
    assert!(
        w.starts_with("user alice mailbox Work: kept as the archive this is an incremental of (2026-01-01T00:00:00Z) recorded it: "),
        "{w}"
    );
    let work = catalog(&a, "alice", "Work");
    assert_eq!(work.messages.len(), 1);
    assert!(work.deleted.is_empty());
    assert_eq!(stats.messages, 3);
}

#[test]
fn metadata_is_split_into_mailboxes_server_and_raw_entries() {
    let t = tempfile::tempdir().unwrap();
    let home = alice(t.path());
    let dict = format!(
        "priv/{GUID_INBOX}/comment\ninbox note\n\
         shared/{GUID_WORK}/vendor/x\nshared value\n\
         priv/{GUID_INBOX}/vendor/vendor.dovecot/pvt/server/motd\nhello\n\
         priv/ffff0000000000000000000000000000/comment\nof no mailbox\n"
    );
    fs::write(home.join("dovecot-attributes"), dict).unwrap();
    let mut opts = options(t.path(), &[]);
    opts.location.attribute_dict = Some("file:~/dovecot-attributes".into());
    let (stats, a) = run(&opts, &["alice"], &t.path().join("f.mdump"));
    assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
    let inbox = catalog(&a, "alice", "INBOX").mailbox.attributes;
    assert_eq!(inbox.len(), 1);
    assert_eq!(
        (
            inbox[0].scope,
            inbox[0].name.to_string(),
            inbox[0].value.to_string()
        ),
        (
            AttributeScope::Private,
            "comment".into(),
            "inbox note".into()
        )
    );
    let work = catalog(&a, "alice", "Work").mailbox.attributes;
    assert_eq!(
        (work[0].scope, work[0].name.to_string()),
        (AttributeScope::Shared, "vendor/x".into())
    );
    let user = &a.dir.users[0];
    assert_eq!(user.server_attributes.len(), 1);
    assert_eq!(user.server_attributes[0].name.to_string(), "motd");
    assert_eq!(
        user.raw_attributes.len(),
        1,
        "the entry of no mailbox is kept raw"
    );
    assert!(
        user.raw_attributes[0]
            .0
            .to_string()
            .starts_with("priv/ffff")
    );
}

/// Copy the tree `src` to `dst` (files and directories only, as the fixtures hold).
fn copy_tree(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            fs::copy(e.path(), &to).unwrap();
        }
    }
}

#[test]
fn dbox_messages_are_stored_in_parts_and_shared_storage_is_read_once() {
    let t = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sdbox-store");
    let store = t.path().join("store");
    copy_tree(&fixture, &store);
    // git keeps no hard links: make Work UID 1 the `doveadm copy` of INBOX UID 2 it was
    let mails = store.join("carol/sdbox/mailboxes");
    let copy_file = mails.join("Work/dbox-Mails/u.1");
    assert_eq!(
        fs::read(&copy_file).unwrap(),
        fs::read(mails.join("INBOX/dbox-Mails/u.2")).unwrap()
    );
    fs::remove_file(&copy_file).unwrap();
    fs::hard_link(mails.join("INBOX/dbox-Mails/u.2"), &copy_file).unwrap();
    let home = Some(format!("{}/%u", store.display()));
    let mut opts = BackupOptions::new(Location::parse("sdbox:~/sdbox", home).unwrap());
    opts.location.attachment_dir = Some("~/attachments".into());
    opts.created = Some("2026-01-01T00:00:00Z".into());
    let (stats, a) = run(&opts, &["carol"], &t.path().join("sis.mdump"));
    assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
    assert_eq!((stats.mailboxes, stats.messages), (2, 4));
    let inbox = catalog(&a, "carol", "INBOX");
    assert!(
        record(&inbox, 1).message.content.parts.is_empty(),
        "plain text: whole"
    );
    for uid in [2, 3] {
        assert!(
            !record(&inbox, uid).message.content.parts.is_empty(),
            "UID {uid} in parts"
        );
    }
    // Work UID 1 is a hard link to INBOX UID 2 (a `doveadm copy`): read once, recorded as
    // a copy of the record already written.
    let work = catalog(&a, "carol", "Work");
    let copy = record(&work, 1);
    let orig = record(&inbox, 2);
    assert_eq!(copy.message.content.sha256, orig.message.content.sha256);
    assert_eq!(copy.message.content.parts, orig.message.content.parts);
    let read: u64 = [1, 2, 3]
        .iter()
        .map(|&u| record(&inbox, u).message.content.size)
        .sum();
    assert_eq!(
        stats.read_bytes, read,
        "the copy's bytes are not read again"
    );
}

/// A message with a base64 attachment of `n` bytes derived from `seed` (taken out as a blob).
fn with_attachment(seed: u8, n: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
    let b64 = base64_simd::STANDARD.encode_to_string(&data);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "Subject: att {seed}\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\nhello {seed}\n--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n{}\n--b--\n",
        lines.join("\n")
    )
    .into_bytes()
}

/// Messages read ahead and prepared on worker threads (more than the read-ahead window,
/// duplicates, attachments shared between messages, plain ones) give the archive the
/// writer makes reading and hashing every message itself (one thread), byte for byte.
#[test]
fn read_ahead_on_worker_threads_writes_the_same_archive() {
    let t = tempfile::tempdir().unwrap();
    let home = alice(t.path());
    for uid in 3..200u32 {
        let body = match uid % 4 {
            0 => with_attachment((uid % 7) as u8, 6000 + (uid % 7) as usize),
            1 => b"Subject: same\n\nsame bytes\n".to_vec(),
            _ => format!("Subject: m{uid}\n\nbody {uid}\n").into_bytes(),
        };
        add_message(&home, "", uid, &body);
    }
    let mut archives = Vec::new();
    for threads in [1, 3] {
        let mut opts = options(t.path(), &[]);
        opts.archive_id = Some("0b5e55ed-0000-4000-8000-000000000001".into());
        opts.writer.threads = threads;
        let out = t.path().join(format!("t{threads}.mdump"));
        let (stats, _) = run(&opts, &["alice"], &out);
        assert_eq!(stats.messages, 200);
        assert!(stats.split > 0 && stats.blobs == 7, "{stats:?}");
        archives.push(fs::read(out).unwrap());
    }
    assert!(archives[0] == archives[1], "the archives differ");
}
