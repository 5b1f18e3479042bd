//! Fuzz targets: one function per parser of untrusted input, each taking arbitrary bytes.
//!
//! Every function here must return normally for every input: a panic (including an
//! arithmetic overflow in a debug build) or an abort is a bug. Besides "no panic", several
//! targets check an invariant (a parse of a rendering gives back what was rendered; a path
//! made from a name stays under its root; `cat` never writes more bytes than the message
//! has). They are run by `fuzz/` (cargo fuzz, libFuzzer, for long campaigns:
//! `fuzz/run.sh`) and, for a fixed number of inputs, by the integration test `fuzz`
//! (`cargo test`), over the seed corpus in `fuzz/corpus/<target>/` and mutations of it.
//!
//! The archive targets put the bytes in an anonymous memory file (`memfd`), so that the
//! reader is fuzzed through the same file API it uses on disk.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::chain::Chain;
use crate::format::index::{Directory, MailboxRecord, Manifest, UserRecord};
use crate::format::reader::Archive;
use crate::model::{Name, grammar};
use crate::store::maildir::uidlist;

/// A fuzz target: its name (the directory of its corpus) and its function.
pub type Target = (&'static str, fn(&[u8]));

/// Every fuzz target.
pub const TARGETS: &[Target] = &[
    ("archive_index", archive_index),
    ("archive_scan", archive_scan),
    ("archive_json", archive_json),
    ("tar_header", tar_header),
    ("dovecot_index", dovecot_index),
    ("dbox_file", dbox_file),
    ("uidlist", uidlist),
    ("keywords", keywords),
    ("subscriptions", subscriptions),
    ("attributes", attributes),
    ("mail_location", mail_location),
    ("headers", headers),
    ("mailbox_pattern", mailbox_pattern),
    ("mutf7", mutf7),
    ("mime_split", mime_split),
];

/// The target named `name`.
pub fn target(name: &str) -> Option<fn(&[u8])> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

thread_local! {
    static MEMFILE: std::cell::RefCell<Option<(std::fs::File, PathBuf)>> =
        const { std::cell::RefCell::new(None) };
}

/// Run `f` with `data` as the content of a file (a memfd reached through `/proc/self/fd`).
fn with_file(data: &[u8], f: impl FnOnce(&Path)) {
    MEMFILE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let fd = rustix::fs::memfd_create("maildump-fuzz", rustix::fs::MemfdFlags::CLOEXEC)
                .expect("memfd_create");
            let file = std::fs::File::from(fd);
            let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
            *slot = Some((file, path));
        }
        let Some((file, path)) = slot.as_ref() else {
            return;
        };
        file.set_len(0).expect("truncate memfd");
        file.write_all_at(data, 0).expect("write memfd");
        f(path);
    });
}

/// A writer that takes at most `limit` bytes and panics on more: `cat` must never write
/// more than the message's length.
struct Capped {
    limit: u64,
    written: u64,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written += buf.len() as u64;
        assert!(
            self.written <= self.limit,
            "cat wrote {} bytes of a message of {}",
            self.written,
            self.limit
        );
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Read every message the state of `archive` lists, as `cat` does.
fn cat_all(archive: Archive) {
    let Ok(chain) = Chain::new(vec![archive], false) else {
        return;
    };
    let a = &chain.archives[0];
    let mut cursors = Vec::new();
    for i in 0..a.dir.mailboxes.len().min(64) {
        let Ok(cat) = a.catalog(i) else { continue };
        for r in cat.messages.iter().take(256) {
            let mut out = Capped {
                limit: r.message.content.size,
                written: 0,
            };
            let _ = chain.copy_record(&mut cursors, 0, &cat, r, &mut out);
        }
        let _ = crate::ops::restore::check_control_fields(&cat, &cat.messages);
    }
}

/// An archive opened through its footer and index: the footer, the index directory, each
/// catalog, and every message read as `cat` reads it; then `verify`.
pub fn archive_index(data: &[u8]) {
    with_file(data, |p| {
        if let Ok(a) = Archive::open(p, false) {
            cat_all(a);
        }
        let _ = crate::ops::inspect::verify(p);
    });
}

/// An archive read without its index: the frames scanned, the tar stream, its members and
/// JSON documents rebuilt into a directory, and every message read.
pub fn archive_scan(data: &[u8]) {
    with_file(data, |p| {
        if let Ok(a) = Archive::recover(p) {
            cat_all(a);
        }
    });
}

/// The archive's JSON documents (the first byte picks which): directory, mailbox record,
/// user record, manifest. A mailbox record that passes the control-file checks renders a
/// `dovecot-uidlist` and a `dovecot-keywords` that parse back to the same records and
/// keywords: nothing in it can add a line or a field.
pub fn archive_json(data: &[u8]) {
    let Some((&which, json)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            let _ = serde_json::from_slice::<Directory>(json);
        }
        1 => {
            if let Ok(rec) = serde_json::from_slice::<MailboxRecord>(json) {
                control_files_round_trip(&rec);
            }
        }
        2 => {
            if let Ok(u) = serde_json::from_slice::<UserRecord>(json)
                && grammar::check_user(&u.user).is_ok()
            {
                let subs: Vec<Vec<u8>> = u
                    .user
                    .subscriptions
                    .iter()
                    .map(|s| s.as_bytes().to_vec())
                    .collect();
                let text = crate::store::dovecot::render_subscriptions(&subs);
                let back = crate::store::dovecot::parse_subscriptions(&text);
                assert_eq!(back.len(), subs.len(), "subscriptions gained or lost lines");
            }
        }
        _ => {
            let _ = serde_json::from_slice::<Manifest>(json);
        }
    }
}

/// See [`archive_json`].
fn control_files_round_trip(rec: &MailboxRecord) {
    let mut rec = rec.clone();
    for m in &mut rec.messages {
        m.message.fill_derived_guid();
    }
    if crate::ops::restore::check_control_fields(&rec, &rec.messages).is_err() {
        return;
    }
    let mb = &rec.mailbox;
    let mut ul = uidlist::Uidlist {
        uidvalidity: mb.uidvalidity,
        next_uid: mb.uidnext,
        guid: mb.guid.clone(),
        header_other: mb
            .uidlist_header_ext
            .iter()
            .map(|n| n.as_bytes().to_vec())
            .collect(),
        records: Vec::new(),
    };
    let mut uids: Vec<&crate::format::index::MessageRecord> = rec.messages.iter().collect();
    uids.sort_by_key(|r| r.message.uid);
    uids.dedup_by_key(|r| r.message.uid);
    for r in uids {
        let m = &r.message;
        let Some(md) = &m.maildir else { continue };
        ul.records.push(uidlist::UidRecord {
            uid: m.uid.0,
            base: md.base().to_vec(),
            guid: (m.guid.as_bytes() != md.base()).then(|| m.guid.as_bytes().to_vec()),
            size: md.size_ext,
            vsize: md.vsize_ext,
            pop3_uidl: m.pop3_uidl.as_ref().map(|u| u.as_bytes().to_vec()),
            pop3_order: m.pop3_order,
            other: md
                .uidlist_ext
                .iter()
                .map(|x| x.as_bytes().to_vec())
                .collect(),
        });
    }
    let text = uidlist::render(&ul);
    let back = uidlist::parse(&text).expect("a checked uidlist parses");
    assert_eq!(back.records.len(), ul.records.len(), "uidlist records");
    for (a, b) in back.records.iter().zip(&ul.records) {
        assert_eq!((a.uid, &a.base, &a.guid), (b.uid, &b.base, &b.guid));
        assert_eq!((&a.pop3_uidl, a.other.len()), (&b.pop3_uidl, b.other.len()));
    }
    let table: Vec<Name> = mb.keywords.iter().take(26).cloned().collect();
    let back = uidlist::parse_keywords(&uidlist::render_keywords(&table));
    let kept: Vec<&Name> = table.iter().filter(|k| !k.is_empty()).collect();
    let got: Vec<&Name> = back.iter().filter(|k| !k.is_empty()).collect();
    assert_eq!(kept, got, "dovecot-keywords");
}

/// One tar header block (the first 512 bytes, zero-padded) and a pax extended header
/// (the rest).
pub fn tar_header(data: &[u8]) {
    use crate::format::spec::TAR_BLOCK;
    let mut block = [0u8; TAR_BLOCK];
    let n = data.len().min(TAR_BLOCK);
    block[..n].copy_from_slice(&data[..n]);
    let _ = crate::format::tar::decode_header(&block);
    let _ = crate::format::tar::parse_pax(data.get(TAR_BLOCK..).unwrap_or_default());
    let _ = crate::format::tar::parse_pax(data);
}

/// Split `data` in two at the length its first two bytes give.
fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    let Some(head) = data.get(..2) else {
        return (data, &[]);
    };
    let n = usize::from(u16::from_le_bytes([head[0], head[1]]));
    let rest = &data[2..];
    rest.split_at(n.min(rest.len()))
}

/// Dovecot's `dovecot.index` and `dovecot.index.log` (the first byte picks: log alone,
/// index alone, or both, split by `split2`).
pub fn dovecot_index(data: &[u8]) {
    use crate::store::dbox::index::MailIndex;
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let _ = match which % 3 {
        0 => MailIndex::from_bytes(None, Some(rest), None),
        1 => MailIndex::from_bytes(Some(rest), None, None),
        _ => {
            let (index, log) = split2(rest);
            MailIndex::from_bytes(Some(index), Some(log), None)
        }
    };
}

/// A dbox file (`u.N` or `m.N`): file header, message headers, metadata, and the
/// single-instance attachment references (`X` lines).
pub fn dbox_file(data: &[u8]) {
    use crate::store::dbox::file;
    let _ = file::parse_x(data);
    let Ok((_, msgs)) = file::parse_all(data) else {
        return;
    };
    for m in msgs.iter().take(64) {
        if let Ok(parts) = m.sis_parts() {
            let _ = file::validate_parts(&parts);
        }
        let _ = m.body(data);
    }
}

/// `dovecot-uidlist`: a parsed uidlist renders to a text that parses back to it.
pub fn uidlist(data: &[u8]) {
    let Ok(ul) = uidlist::parse(data) else {
        return;
    };
    let back = uidlist::parse(&uidlist::render(&ul)).expect("a rendered uidlist parses");
    assert_eq!(back, ul, "uidlist round trip");
}

/// `dovecot-keywords`: a parsed table renders to a text that parses back to it.
pub fn keywords(data: &[u8]) {
    let table = uidlist::parse_keywords(data);
    assert!(table.len() <= 26, "more than 26 keywords");
    let back = uidlist::parse_keywords(&uidlist::render_keywords(&table));
    // A keyword holding a line break renders to two lines; the readers never produce one.
    if table.iter().all(|k| grammar::is_line_text(k.as_bytes())) {
        let trim = |t: &[Name]| {
            let mut v = t.to_vec();
            while v.last().is_some_and(Name::is_empty) {
                v.pop();
            }
            v
        };
        assert_eq!(trim(&back), trim(&table), "keywords round trip");
    }
}

/// The `subscriptions` file (version 1 and 2).
pub fn subscriptions(data: &[u8]) {
    let names = crate::store::dovecot::parse_subscriptions(data);
    let text = crate::store::dovecot::render_subscriptions(&names);
    let back = crate::store::dovecot::parse_subscriptions(&text);
    let non_empty = names.iter().filter(|n| !n.is_empty()).count();
    assert!(
        back.len() >= non_empty,
        "subscriptions lost in a round trip"
    );
}

/// The `dovecot-attributes` file (a `file:` dict): parsed entries render to a text that
/// parses back to them.
pub fn attributes(data: &[u8]) {
    let entries = crate::store::dovecot::parse_dict(data);
    let back = crate::store::dovecot::parse_dict(&crate::store::dovecot::render_dict(&entries));
    let keep: Vec<_> = entries.iter().filter(|(k, _)| !k.is_empty()).collect();
    let got: Vec<_> = back.iter().collect();
    assert_eq!(got, keep, "dovecot-attributes round trip");
}

/// `mail_location`, a home template and a user name (three lines): a path made for a user
/// name accepted by [`crate::store::location::check_user_name`] has no `..` component that
/// the templates do not have.
pub fn mail_location(data: &[u8]) {
    use crate::store::location::{Location, check_user_name};
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(3, '\n');
    let spec = lines.next().unwrap_or_default();
    let home = lines.next().filter(|h| !h.is_empty()).map(str::to_string);
    let user = lines.next().unwrap_or_default();
    let Ok(loc) = Location::parse(spec, home.clone()) else {
        return;
    };
    let dots = |s: &str| s.split('/').filter(|c| *c == "..").count();
    let allowed = dots(&loc.root) + home.as_deref().map_or(0, dots);
    let Ok(root) = loc.root_of(user) else { return };
    assert!(check_user_name(user.as_bytes()).is_ok());
    let made = dots(&root.to_string_lossy());
    assert!(
        made <= allowed,
        "user {user:?} made {} from {spec:?} / {home:?}",
        root.display()
    );
    let _ = (loc.alt_of(user), loc.attachment_dir_of(user));
    let _ = loc.decode_name(user.as_bytes());
}

/// RFC 2047 encoded words in `From:`, `Subject:` and `Message-ID:` headers: the display
/// values stay within their limit.
pub fn headers(data: &[u8]) {
    let h = crate::mime::headers::parse(data);
    for v in [&h.from, &h.subject, &h.message_id].into_iter().flatten() {
        assert!(v.len() <= crate::format::spec::HEADER_FIELD_LIMIT);
    }
    let _ = crate::mime::headers::decode_words(data);
}

/// The base64 attachment finder (any message bytes): what it takes out must give the
/// message back byte for byte (the writer checks too, but a split that does not is a bug
/// here). A minimum of 4 encoded bytes lets small inputs be split.
pub fn mime_split(data: &[u8]) {
    if let Some(s) = crate::mime::split::split(data, 4) {
        assert!(crate::mime::parts::matches(
            &s.parts, &s.data, &s.blobs, data
        ));
    }
}

/// Mailbox patterns (`*`, `%`), restore lists and UID sets: a pattern NUL name.
pub fn mailbox_pattern(data: &[u8]) {
    let (pattern, name) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let hit = crate::ops::restore::select::glob_match(pattern, name);
    if !pattern.iter().any(|b| matches!(b, b'*' | b'%')) {
        assert_eq!(
            hit,
            pattern == name,
            "a pattern without wildcards is the name"
        );
    }
    assert!(crate::ops::restore::select::glob_match(b"*", name));
    let text = String::from_utf8_lossy(data);
    let _ = crate::ops::restore::select::parse_restore_list(&text);
    let _ = crate::ops::restore::select::SeqSet::parse(&text);
}

/// Modified UTF-7 mailbox names: what decodes, encodes back to the same bytes.
pub fn mutf7(data: &[u8]) {
    if let Some(s) = crate::store::mutf7::decode(data) {
        let again = crate::store::mutf7::encode(&s);
        assert_eq!(
            crate::store::mutf7::decode(again.as_bytes()).as_deref(),
            Some(s.as_str()),
            "mUTF-7 round trip"
        );
    }
}
