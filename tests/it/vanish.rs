//! A message file renamed (flags changed) or removed between the scan and the read of a
//! backup is found under its new name, or reported.

use std::fs;

use maildump::model::Flags;
use maildump::store::StoreReader;
use maildump::store::location::Location;
use maildump::store::maildir::MaildirReader;

use crate::util::Workspace;

#[test]
fn renamed_file_is_found_and_vanished_file_is_reported() {
    let ws = Workspace::new();
    let store = crate::cli::fixture_copy(&ws);
    let loc =
        Location::parse("maildir:~/Maildir", Some(format!("{}/%u", store.display()))).unwrap();
    let r = MaildirReader::open(&loc, "bob").unwrap();
    let inbox = r.mailboxes().unwrap().into_iter().next().unwrap();
    let (meta, msgs) = r.scan(&inbox).unwrap();
    assert_eq!(msgs.len(), 2);
    // A client marks the unread message (in new/) as seen: Dovecot moves it to cur/ with :2,S.
    let unread = msgs
        .iter()
        .find(|m| m.maildir.as_ref().unwrap().new)
        .unwrap();
    let name = unread
        .maildir
        .as_ref()
        .unwrap()
        .filename
        .as_str()
        .unwrap()
        .to_string();
    fs::rename(
        store.join("bob/Maildir/new").join(&name),
        store.join("bob/Maildir/cur").join(format!("{name}:2,S")),
    )
    .unwrap();
    let mut moved = unread.clone();
    let body = r.open_body(&inbox, &moved).unwrap();
    let (new_name, in_new) = body.renamed_to.clone().expect("rename not detected");
    assert!(!in_new);
    r.reflag(&meta.keywords, &mut moved, new_name, in_new);
    assert!(moved.flags.contains(Flags::SEEN));
    // Expunged meanwhile: a NotFound I/O error naming the file (backup counts it as
    // expunged during the run, not as damage).
    fs::remove_file(store.join("bob/Maildir/cur").join(format!("{name}:2,S"))).unwrap();
    let err = r
        .open_body(&inbox, &moved)
        .err()
        .expect("vanished file not reported");
    assert!(
        err.to_string().contains("expunged during the backup"),
        "{err}"
    );
    assert!(
        matches!(&err, maildump::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
}
