//! Encryption at rest (issue 18): `--encrypt-to` writes an archive as an age file, every
//! command reads it with `--identity`, through its plaintext, by chunk. Compared against
//! the unencrypted path with real Dovecot listings, against the `age` tool, and against the
//! encrypted test vectors.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use maildump::Archive;
use maildump::chain::Chain;
use maildump::format::crypt::{self, Recipients};
use maildump::format::source::Source;
use maildump::ops::inspect::{self, MessageKey};

use crate::dovecot::{Dovecot, message};
use crate::pointread;
use crate::util::{Workspace, maildump, report, run, run_expect_code, run_ok};

/// Exit code: an encrypted archive no identity given opens.
const EXIT_CANNOT_DECRYPT: i32 = 10;
/// Exit code: damage.
const EXIT_CORRUPT: i32 = 4;

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("format-spec/vectors/v1")
}

/// The committed TEST-ONLY identity of the vectors, and its public key.
fn vector_identity() -> (PathBuf, String) {
    let id = vectors().join("TEST-ONLY-identity.txt");
    let text = fs::read_to_string(&id).unwrap();
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_string();
    (id, public)
}

/// A fresh age identity (`age-keygen`, the real tool) in `dir`: its file and public key.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = run_ok(Command::new("age-keygen").arg("-o").arg(&path));
    let public = String::from_utf8_lossy(&out.stderr)
        .trim()
        .strip_prefix("Public key: ")
        .unwrap()
        .to_string();
    (path, public)
}

/// `age -d -i IDENTITY FILE` (the real tool).
fn age_decrypt(identity: &Path, file: &Path) -> Vec<u8> {
    run_ok(
        Command::new("age")
            .arg("-d")
            .arg("-i")
            .arg(identity)
            .arg(file),
    )
    .stdout
}

/// `maildump backup` of every user of `src`, reproducible (`--created`, `--archive-id`,
/// one thread), with `extra` arguments.
fn backup(src: &Dovecot, n: u32, out: &Path, extra: &[&str]) {
    run_ok(
        src.backup_cmd()
            .args([
                "--all-users",
                "--quiet",
                "--threads",
                "1",
                "--created",
                &format!("2026-02-0{n}T00:00:00Z"),
                "--archive-id",
                &format!("00000000-0000-4000-8000-00000000010{n}"),
            ])
            .arg("-o")
            .arg(out)
            .args(extra),
    );
}

/// Every `.eml` member of `plaintext` (an archive's bytes): name and bytes, by
/// `zstd -dc | tar x` into `dir`.
fn extract(plaintext: &[u8], dir: &Path) -> Vec<(String, Vec<u8>)> {
    fs::create_dir_all(dir).unwrap();
    let mut z = Command::new("sh")
        .arg("-c")
        .arg("zstd -qdc | tar xf - -C \"$0\"")
        .arg(dir)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    z.stdin.take().unwrap().write_all(plaintext).unwrap();
    assert!(z.wait().unwrap().success(), "zstd -dc | tar x failed");
    let mut out = Vec::new();
    for f in crate::util::files_under(dir) {
        if f.extension().is_some_and(|e| e == "eml") {
            let rel = f.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            out.push((rel, fs::read(&f).unwrap()));
        }
    }
    out.sort();
    out
}

/// The encrypted test vectors decrypt, with `age` and with maildump, to `fixture.mdump`:
/// same bytes, same listing; verify passes; the other key is refused with exit 10.
#[test]
fn encrypted_vectors_decrypt_to_the_plain_vector() {
    let v = vectors();
    let plain = fs::read(v.join("fixture.mdump")).unwrap();
    let listed = fs::read(v.join("fixture.list.jsonl")).unwrap();
    let (age_id, _) = vector_identity();
    let ssh_id = v.join("TEST-ONLY-ssh-ed25519");
    for (file, id, other) in [
        ("fixture.age", &age_id, &ssh_id),
        ("fixture.ssh.age", &ssh_id, &age_id),
    ] {
        let enc = v.join(file);
        assert!(age_decrypt(id, &enc) == plain, "{file}: age -d differs");
        let out = run_ok(
            maildump()
                .arg("list")
                .arg("--json")
                .arg(&enc)
                .arg("--identity")
                .arg(id),
        );
        assert!(
            out.stdout == listed,
            "{file}: list differs from fixture.list.jsonl"
        );
        run_ok(maildump().arg("verify").arg(&enc).arg("--identity").arg(id));
        let out = run_expect_code(
            maildump()
                .arg("list")
                .arg(&enc)
                .arg("--identity")
                .arg(other),
            EXIT_CANNOT_DECRYPT,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&enc.display().to_string()) && err.contains("no identity given matches"),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
}

/// A full and an incremental, encrypted and not, from one Dovecot store: the encrypted
/// chain restores (whole, one user), lists, cats and verifies as the plain one does; its
/// bytes name nothing; `age -d | zstd -dc | tar x` gives every message; no identity, or
/// the wrong one, is refused with exit 10 and nothing written.
#[test]
fn encrypted_chain_round_trips_like_the_plain_one() {
    let ws = Workspace::new();
    let (key, public) = keygen(ws.path(), "key.txt");
    let (wrong, _) = keygen(ws.path(), "wrong.txt");
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_rich_store("alice");
    src.build_small_store("bob");
    let id = ["--identity", key.to_str().unwrap()];
    let enc_to = ["--encrypt-to", &public];

    let (full, full_enc) = (ws.join("full.mdump"), ws.join("full.mdump.age"));
    backup(&src, 1, &full, &[]);
    backup(&src, 1, &full_enc, &enc_to);
    let new_mail = message("alice", 201, "Quarterly secrets", "zebra-xylophone-body\n");
    assert!(src.save("alice", "INBOX", &new_mail).status.success());
    let (inc, inc_enc) = (ws.join("inc.mdump"), ws.join("inc.mdump.age"));
    backup(&src, 2, &inc, &["--base", full.to_str().unwrap()]);
    // The parent's index is read through --identity.
    let base = ["--base", full_enc.to_str().unwrap()];
    backup(&src, 2, &inc_enc, &[&base[..], &enc_to, &id].concat());

    // The plaintext is the archive an unencrypted backup writes, byte for byte.
    for (p, e) in [(&full, &full_enc), (&inc, &inc_enc)] {
        let enc = fs::read(e).unwrap();
        assert!(enc.starts_with(b"age-encryption.org/v1\n"));
        let plain = fs::read(p).unwrap();
        assert!(
            age_decrypt(&key, e) == plain,
            "{}: age -d differs",
            e.display()
        );
        // Nothing names a user, a mailbox, a subject or a message's text in clear.
        for word in [
            "alice",
            "bob",
            "INBOX",
            "Work",
            "Quarterly secrets",
            "zebra-xylophone",
            "Existing mail",
            "already here",
            "MAILDUMP",
        ] {
            assert!(
                memchr::memmem::find(&enc, word.as_bytes()).is_none(),
                "{}: {word:?} in clear",
                e.display()
            );
        }
        // Plain tools recover every message.
        let name = e.file_name().unwrap().to_string_lossy().into_owned();
        let from_enc = extract(&plain_of(&key, e), &ws.join(format!("x-{name}")));
        let from_plain = extract(&plain, &ws.join(format!("p-{name}")));
        assert!(!from_enc.is_empty());
        assert!(from_enc == from_plain, "{name}: tar x differs");
    }

    let plain_chain = [full.as_path(), inc.as_path()];
    let enc_chain = [full_enc.as_path(), inc_enc.as_path()];
    let want_alice = src.snapshot("alice");
    let want_bob = src.snapshot("bob");
    // Whole chain.
    let dst_plain = Dovecot::new(&ws.join("dst-plain"), "");
    run_ok(&mut dst_plain.restore_cmd(&plain_chain));
    let dst = Dovecot::new(&ws.join("dst"), "");
    run_ok(dst.restore_cmd(&enc_chain).args(id));
    for (u, want) in [("alice", &want_alice), ("bob", &want_bob)] {
        crate::util::assert_text_eq(&format!("plain restore {u}"), want, &dst_plain.snapshot(u));
        crate::util::assert_text_eq(&format!("encrypted restore {u}"), want, &dst.snapshot(u));
    }
    // One user, the identity from the environment.
    let dst = Dovecot::new(&ws.join("dst-bob"), "");
    run_ok(
        dst.restore_cmd(&enc_chain)
            .args(["--user", "bob"])
            .env("MAILDUMP_IDENTITY", &key),
    );
    assert_eq!(dst.users(), ["bob"]);
    crate::util::assert_text_eq(
        "encrypted restore --user bob",
        &want_bob,
        &dst.snapshot("bob"),
    );

    // list, cat, verify: as the plain chain.
    let list =
        |chain: &[&Path]| run_ok(maildump().arg("list").arg("--json").args(chain).args(id)).stdout;
    assert!(list(&enc_chain) == list(&plain_chain), "list differs");
    let cat = |chain: &[&Path]| {
        run_ok(maildump().arg("cat").args(chain).args(id).args([
            "--user",
            "alice",
            "--mailbox",
            "INBOX",
            "--uid",
            &new_uid(&src),
        ]))
        .stdout
    };
    assert!(cat(&enc_chain) == cat(&plain_chain), "cat differs");
    assert!(memchr::memmem::find(&cat(&enc_chain), b"zebra-xylophone-body").is_some());
    let out = run_ok(maildump().arg("verify").args(enc_chain).args(id));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK"));

    // A merge of the encrypted chain, encrypted again, restores the same.
    let merged = ws.join("merged.mdump.age");
    run_ok(
        maildump()
            .arg("merge")
            .args(enc_chain)
            .args(id)
            .args(enc_to)
            .arg("-o")
            .arg(&merged)
            .arg("--quiet"),
    );
    assert!(
        fs::read(&merged)
            .unwrap()
            .starts_with(b"age-encryption.org/v1\n")
    );
    let dst = Dovecot::new(&ws.join("dst-merged"), "");
    run_ok(dst.restore_cmd(&[&merged]).args(id));
    crate::util::assert_text_eq("restore of the merge", &want_alice, &dst.snapshot("alice"));

    // No identity, or the wrong one: exit 10 naming the archive; nothing restored or written.
    for given in [vec![], vec!["--identity", wrong.to_str().unwrap()]] {
        let dst = Dovecot::new(&ws.join(format!("dst-refused-{}", given.len())), "");
        let mut cmd = dst.restore_cmd(&enc_chain);
        cmd.args(&given);
        let out = run(&mut cmd);
        assert_eq!(
            out.status.code(),
            Some(EXIT_CANNOT_DECRYPT),
            "{}",
            report(&cmd, &out)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("full.mdump.age") && err.lines().count() == 1,
            "{err}"
        );
        assert!(dst.users().is_empty(), "a refused restore wrote users");
        let out = run(maildump().arg("cat").args(enc_chain).args(&given).args([
            "--user",
            "bob",
            "--mailbox",
            "INBOX",
            "--uid",
            "1",
        ]));
        assert_eq!(out.status.code(), Some(EXIT_CANNOT_DECRYPT));
        assert!(out.stdout.is_empty());
        let not_written = ws.join(format!("refused-{}.mdump", given.len()));
        let out = run(maildump()
            .arg("merge")
            .args(enc_chain)
            .args(&given)
            .arg("-o")
            .arg(&not_written));
        assert_eq!(out.status.code(), Some(EXIT_CANNOT_DECRYPT));
        let out = run(src
            .backup_cmd()
            .args(["--all-users", "--base", full_enc.to_str().unwrap(), "-o"])
            .arg(&not_written)
            .args(&given));
        assert_eq!(out.status.code(), Some(EXIT_CANNOT_DECRYPT));
        assert!(!not_written.exists());
    }
    let leftovers: Vec<_> = fs::read_dir(ws.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial") || n.starts_with("refused"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn plain_of(key: &Path, enc: &Path) -> Vec<u8> {
    age_decrypt(key, enc)
}

/// The UID of the newest message in alice's INBOX.
fn new_uid(src: &Dovecot) -> String {
    src.doveadm(
        "alice",
        &["-f", "flow", "fetch", "uid", "mailbox", "INBOX", "all"],
    )
    .lines()
    .filter_map(|l| l.trim().strip_prefix("uid=")?.parse::<u32>().ok())
    .max()
    .unwrap()
    .to_string()
}

/// Recipients: `@FILE` with comments, ssh keys (from `ssh-keygen`) read with the private
/// key; a bad recipient, an empty file, a passphrase-protected key: exit 2, named.
#[test]
fn recipients_from_files_and_ssh_keys() {
    let ws = Workspace::new();
    let (key, public) = keygen(ws.path(), "key.txt");
    let ssh = ws.join("id_ed25519");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&ssh),
    );
    let ssh_pub = fs::read_to_string(ws.join("id_ed25519.pub")).unwrap();
    let file = ws.join("recipients.txt");
    fs::write(&file, format!("# the backup keys\n\n{public}\n{ssh_pub}")).unwrap();
    let fixture = vectors().join("fixture.mdump");
    let listed = fs::read(vectors().join("fixture.list.jsonl")).unwrap();
    let out = ws.join("m.mdump");
    let at = format!("@{}", file.display());
    run_ok(
        maildump()
            .arg("merge")
            .arg(&fixture)
            .args(["--quiet", "--encrypt-to", &at, "-o"])
            .arg(&out),
    );
    for id in [&key, &ssh] {
        let got = run_ok(
            maildump()
                .args(["list", "--json"])
                .arg(&out)
                .arg("--identity")
                .arg(id),
        );
        assert!(got.stdout == listed, "listing with {}", id.display());
    }
    // Refused before anything is written.
    let protected = ws.join("id_protected");
    run_ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "secret", "-f"])
            .arg(&protected),
    );
    let empty = ws.join("empty.txt");
    fs::write(&empty, "# nothing\n").unwrap();
    for (args, named) in [
        (vec!["--encrypt-to", "age1notakey"], "age1notakey"),
        (vec!["--encrypt-to", "ssh-dss AAAA"], "ssh-dss"),
        (
            vec!["--encrypt-to", &format!("@{}", empty.display())],
            "no recipient",
        ),
        (
            vec!["--identity", protected.to_str().unwrap()],
            "passphrase",
        ),
        (vec!["--identity", empty.to_str().unwrap()], "empty.txt"),
    ] {
        let dest = ws.join("refused.mdump");
        let o = run_expect_code(
            maildump()
                .arg("merge")
                .arg(&fixture)
                .args(&args)
                .arg("-o")
                .arg(&dest),
            2,
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(named), "{args:?}: {err}");
        assert!(!dest.exists());
    }
}

/// A [`Source`] over a file that counts the bytes read from it.
struct Counting {
    file: fs::File,
    read: AtomicU64,
}

impl Source for Counting {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        let n = FileExt::read_at(&self.file, buf, off)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

/// `src` encrypted to the vector's TEST-ONLY key, at `dst`.
fn encrypt_file(src: &Path, dst: &Path) {
    let (_, public) = vector_identity();
    let r = Recipients::parse(&[public]).unwrap();
    let mut w = r.wrap(fs::File::create(dst).unwrap()).unwrap();
    w.write_all(&fs::read(src).unwrap()).unwrap();
    w.finish().unwrap().sync_all().unwrap();
}

/// Bytes of an encrypted chunk in the file.
const CHUNK_IN_FILE: u64 = 64 * 1024 + 16;

/// `cat` of one message (as the binary does it, through the index) from the encrypted
/// archive `path`: the message's bytes, and the bytes read from the file.
fn cat_encrypted(path: &Path, user: &str, mailbox: &str, uid: u32) -> (Vec<u8>, u64) {
    let (id, _) = vector_identity();
    crypt::set_identities(&[id]).unwrap();
    let counting = Arc::new(Counting {
        file: fs::File::open(path).unwrap(),
        read: AtomicU64::new(0),
    });
    let a = Archive::open_source(counting.clone(), path, false).unwrap();
    let chain = Chain::new(vec![a], false).unwrap();
    let (cat, rec) = inspect::find(&chain, 0, user, Some(mailbox), &MessageKey::Uid(uid)).unwrap();
    let mut out = Vec::new();
    inspect::cat(&chain, 0, &cat, &rec, &mut out).unwrap();
    (out, counting.read.load(Ordering::Relaxed))
}

/// `cat` from an encrypted archive decrypts only the chunks it needs: the header, the
/// footer's, the directory's, one catalog's and the frame's (each maybe two chunks), the
/// same for an archive ten times larger.
#[test]
fn cat_from_an_encrypted_archive_reads_a_few_chunks() {
    let ws = Workspace::new();
    let mut reads = Vec::new();
    for users in [2, 20] {
        let plain = ws.join(format!("a{users}.mdump"));
        pointread::archive(&plain, users, 5, 30);
        let enc = ws.join(format!("a{users}.age"));
        encrypt_file(&plain, &enc);
        let size = fs::metadata(&enc).unwrap().len();
        for (u, m, uid) in [(0, 0, 1), (users / 2, 3, 17), (users - 1, 4, 30)] {
            let (out, read) = cat_encrypted(&enc, &format!("user{u}"), &format!("box{m}"), uid);
            assert!(
                out == pointread::body(u, m, uid),
                "user{u} box{m} {uid}: wrong bytes"
            );
            assert!(
                read <= 12 * CHUNK_IN_FILE,
                "{users} users: read {read} of {size} bytes"
            );
            reads.push(read);
        }
        if users == 20 {
            assert!(
                size > 36 * CHUNK_IN_FILE,
                "the large archive is only {size} bytes"
            );
        }
    }
    let (small, large) = (
        reads[..3].iter().max().unwrap(),
        reads[3..].iter().max().unwrap(),
    );
    assert!(large - small <= 4 * CHUNK_IN_FILE, "{reads:?}");
    eprintln!("bytes read by cat: {reads:?}");
}

/// A flipped byte in an encrypted chunk: verify and a `cat` that needs the chunk fail
/// with exit 4, naming the chunk's offset; nothing wrong is written.
#[test]
fn a_flipped_byte_in_an_encrypted_chunk_is_damage() {
    let ws = Workspace::new();
    let plain = ws.join("a.mdump");
    pointread::archive(&plain, 4, 5, 30);
    let enc = ws.join("a.age");
    encrypt_file(&plain, &enc);
    let (id, _) = vector_identity();
    // The frame holding user2 box2 UID 15, and the chunk of the file it starts in.
    let a = Archive::open(&plain, false).unwrap();
    let chain = Chain::new(vec![a], false).unwrap();
    let (_, rec) = inspect::find(&chain, 0, "user2", Some("box2"), &MessageKey::Uid(15)).unwrap();
    let loc = rec.loc.unwrap();
    let frame = &chain.archives[0].dir.frames[loc.frame as usize];
    let chunk = (frame.offset + frame.csize / 2) / (64 * 1024);
    let plain_len = fs::metadata(&plain).unwrap().len();
    let enc_len = fs::metadata(&enc).unwrap().len();
    let start = enc_len - plain_len - 16 * plain_len.div_ceil(64 * 1024);
    let at = start + chunk * CHUNK_IN_FILE + 1000;
    let mut bytes = fs::read(&enc).unwrap();
    bytes[at as usize] ^= 0x20;
    let bad = ws.join("bad.age");
    fs::write(&bad, &bytes).unwrap();
    let named = format!(
        "encrypted chunk {chunk} at offset {}",
        start + chunk * CHUNK_IN_FILE
    );

    let out = run_expect_code(
        maildump()
            .arg("verify")
            .arg(&bad)
            .arg("--identity")
            .arg(&id),
        EXIT_CORRUPT,
    );
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains(&named), "{named}: {text}");
    let out = run_expect_code(
        maildump()
            .arg("cat")
            .arg(&bad)
            .arg("--identity")
            .arg(&id)
            .args(["--user", "user2", "--mailbox", "box2", "--uid", "15"]),
        EXIT_CORRUPT,
    );
    assert!(
        out.stdout.is_empty(),
        "cat wrote {} bytes",
        out.stdout.len()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&named) && err.contains("user user2 mailbox box2 UID 15"),
        "{err}"
    );
    // A message in an intact chunk still cats.
    let out = run_ok(
        maildump()
            .arg("cat")
            .arg(&bad)
            .arg("--identity")
            .arg(&id)
            .args(["--user", "user0", "--mailbox", "box0", "--uid", "1"]),
    );
    assert!(out.stdout == pointread::body(0, 0, 1));
    // The same damage in a stream on stdin: damage too, naming the chunk.
    let mut cmd = maildump();
    cmd.args(["verify", "-", "--identity"])
        .arg(&id)
        .stdin(fs::File::open(&bad).unwrap());
    let out = run_expect_code(&mut cmd, EXIT_CORRUPT);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("encrypted chunk {chunk} ")), "{err}");
    // Truncated at a chunk boundary: the last chunk no longer authenticates as the last.
    let cut = ws.join("cut.age");
    fs::write(&cut, &bytes[..(start + 2 * CHUNK_IN_FILE) as usize]).unwrap();
    let out = run_expect_code(
        maildump().arg("list").arg(&cut).arg("--identity").arg(&id),
        EXIT_CORRUPT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cut.age") && err.contains("truncated"),
        "{err}"
    );
}

/// The Bacula agent with `--encrypt-to` among the backup options: what it passes to
/// Bacula is encrypted, the state it keeps is in clear (index only), so an Incremental
/// needs no identity on the host; the streams restore with `--identity`.
#[test]
fn bacula_agent_encrypts_what_it_passes_on_and_keeps_its_state_in_clear() {
    let ws = Workspace::new();
    let (key, public) = keygen(ws.path(), "key.txt");
    let (mail, state) = (ws.join("mail"), ws.join("state"));
    crate::bacula::big_maildir(&mail, 40, 1);
    let home = format!("{}/%u", mail.display());
    let job = |id: &str, level: &str, out: &str| {
        let stdout = crate::bacula::agent_job(&state, &home, id, level, &["--encrypt-to", &public]);
        fs::write(ws.join(out), &stdout).unwrap();
        assert!(
            stdout.starts_with(b"age-encryption.org/v1\n"),
            "job {id} not encrypted"
        );
        assert!(memchr::memmem::find(&stdout, b"alice").is_none());
    };
    job("1", "Full", "full.age");
    let kept = fs::read(state.join("committed/1.mdump")).unwrap();
    assert!(
        !kept.starts_with(b"age-encryption.org/v1\n"),
        "the kept state is encrypted"
    );
    crate::bacula::big_maildir(&mail, 45, 1);
    job("2", "Incremental", "inc.age");
    let r = ws.join("r");
    run_ok(
        maildump()
            .arg("restore")
            .args([ws.join("full.age"), ws.join("inc.age")])
            .args(["--location", "maildir:~/Maildir", "--home"])
            .arg(format!("{}/%u", r.display()))
            .arg("--identity")
            .arg(&key)
            .arg("--quiet"),
    );
    assert_eq!(
        fs::read_dir(r.join("alice/Maildir/cur")).unwrap().count(),
        45
    );
}

/// `--state-dir` chains of encrypted archives: the next run reads the newest archive's
/// index with `--identity` (without it: exit 10, nothing written); `-o -` and `restore -`
/// carry the encrypted stream.
#[test]
fn encrypted_state_dir_chain_and_streams() {
    let ws = Workspace::new();
    let (key, public) = keygen(ws.path(), "key.txt");
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_small_store("bob");
    let state = ws.join("state");
    let run_backup = |with_id: bool| {
        let mut cmd = src.backup_cmd();
        cmd.args([
            "--all-users",
            "--quiet",
            "--encrypt-to",
            &public,
            "--state-dir",
        ])
        .arg(&state);
        if with_id {
            cmd.arg("--identity").arg(&key);
        }
        run(&mut cmd)
    };
    assert!(run_backup(true).status.success());
    let files = |dir: &Path| {
        let mut f: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "mdump"))
            .collect();
        f.sort();
        f
    };
    assert_eq!(files(&state).len(), 1);
    assert!(
        src.save("bob", "INBOX", &message("bob", 9, "later", "more\n"))
            .status
            .success()
    );
    let out = run_backup(false);
    assert_eq!(
        out.status.code(),
        Some(EXIT_CANNOT_DECRYPT),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(files(&state).len(), 1, "a refused run wrote an archive");
    assert!(run_backup(true).status.success());
    let chain = files(&state);
    assert_eq!(chain.len(), 2);
    let refs: Vec<&Path> = chain.iter().map(PathBuf::as_path).collect();
    let dst = Dovecot::new(&ws.join("dst"), "");
    run_ok(dst.restore_cmd(&refs).arg("--identity").arg(&key));
    crate::util::assert_text_eq(
        "state-dir chain",
        &src.snapshot("bob"),
        &dst.snapshot("bob"),
    );

    // Through pipes: `backup -o -` encrypted, `restore -` decrypting as it reads.
    let streamed = run_ok(src.backup_cmd().args([
        "--all-users",
        "--quiet",
        "--encrypt-to",
        &public,
        "-o",
        "-",
    ]))
    .stdout;
    assert!(streamed.starts_with(b"age-encryption.org/v1\n"));
    let stream = ws.join("stream.age");
    fs::write(&stream, &streamed).unwrap();
    let dst = Dovecot::new(&ws.join("dst-stdin"), "");
    let mut cmd = dst.restore_cmd(&[Path::new("-")]);
    cmd.arg("--identity")
        .arg(&key)
        .stdin(fs::File::open(&stream).unwrap());
    run_ok(&mut cmd);
    crate::util::assert_text_eq("restore -", &src.snapshot("bob"), &dst.snapshot("bob"));
    let mut cmd = maildump();
    cmd.args(["verify", "-"])
        .stdin(fs::File::open(&stream).unwrap());
    run_expect_code(&mut cmd, EXIT_CANNOT_DECRYPT);
}

/// The Amanda application with the `encrypt-to` property: the images are encrypted, the
/// level states are kept in clear (a level 1 needs no identity), the index lines still
/// name users and mailboxes (they go to Amanda's index on fd 4, not into the image), and
/// the images restore with `--identity`.
#[test]
fn amanda_application_encrypts_its_images_and_keeps_its_state_in_clear() {
    let ws = Workspace::new();
    let (key, public) = keygen(ws.path(), "key.txt");
    let src = Dovecot::new(&ws.join("src"), "");
    src.build_small_store("alice");
    let state = ws.join("state");
    let dump = |level: &str, image: &Path| {
        let (m, i) = (ws.join("fd3"), ws.join("fd4"));
        let out = run(Command::new("bash")
            .arg("-c")
            .arg(r#"exe=$1; img=$2; m=$3; i=$4; shift 4; exec "$exe" amanda backup "$@" > "$img" 3> "$m" 4> "$i""#)
            .arg("bash")
            .arg(env!("CARGO_BIN_EXE_maildump"))
            .args([image, &m, &i])
            .args(["--config", "mdt", "--host", "localhost", "--disk", "/srv/mail"])
            .args(["--location", &src.location, "--home", &src.home_template()])
            .arg("--state-dir")
            .arg(&state)
            .args(["--encrypt-to", &public, "--level", level, "--index", "line", "--record"]));
        let mesg = fs::read_to_string(&m).unwrap();
        assert!(out.status.success() && out.stderr.is_empty(), "{mesg}");
        assert!(!mesg.contains("error"), "{mesg}");
        let image_bytes = fs::read(image).unwrap();
        assert!(
            image_bytes.starts_with(b"age-encryption.org/v1\n"),
            "level {level}: {mesg}"
        );
        assert!(memchr::memmem::find(&image_bytes, b"alice").is_none());
        let index = fs::read_to_string(&i).unwrap();
        assert!(index.lines().any(|l| l == "/alice/INBOX/"), "{index}");
    };
    let (l0, l1) = (ws.join("l0.mdump"), ws.join("l1.mdump"));
    dump("0", &l0);
    for f in fs::read_dir(&state).unwrap() {
        let f = f.unwrap().path();
        let b = fs::read(&f).unwrap();
        assert!(
            !b.starts_with(b"age-encryption.org/v1\n"),
            "{} encrypted",
            f.display()
        );
    }
    assert!(
        src.save("alice", "INBOX", &message("alice", 7, "later", "more\n"))
            .status
            .success()
    );
    dump("1", &l1);
    let dst = Dovecot::new(&ws.join("dst"), "");
    run_ok(dst.restore_cmd(&[&l0, &l1]).arg("--identity").arg(&key));
    crate::util::assert_text_eq(
        "amanda images",
        &src.snapshot("alice"),
        &dst.snapshot("alice"),
    );
}
