//! Small helpers shared by the integration tests: running the `maildump`
//! binary, temporary workspaces, directory copies, tree listings and
//! readable text diffs.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::UNIX_EPOCH;

use sha2::{Digest, Sha256};

/// Send signal `sig` to `child` (its stderr piped), read its stderr to the end and wait
/// for it: its status and what it printed on stderr.
pub fn signal_and_drain(
    child: &mut std::process::Child,
    sig: i32,
) -> (std::process::ExitStatus, String) {
    run_ok(
        Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string()),
    );
    let mut err = String::new();
    io::Read::read_to_string(&mut child.stderr.take().expect("stderr piped"), &mut err)
        .expect("read stderr");
    (child.wait().expect("wait"), err)
}

/// A `Command` for the `maildump` binary built by Cargo for this test run.
pub fn maildump() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_maildump"));
    // Keep the output independent of the developer's locale and time zone.
    cmd.env("TZ", "UTC").env("LC_ALL", "C");
    cmd
}

/// A one-line, shell-like rendering of `cmd` for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        let a = arg.to_string_lossy();
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"\\$*?&|;<>()".contains(c))
        {
            s.push('\'');
            s.push_str(&a.replace('\'', "'\\''"));
            s.push('\'');
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// Runs `cmd` and returns its output, whatever the exit status.
pub fn run(cmd: &mut Command) -> Output {
    match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("cannot start `{}`: {e}", describe(cmd)),
    }
}

/// Human-readable report of a finished command (status, stdout, stderr).
pub fn report(cmd: &Command, out: &Output) -> String {
    format!(
        "command: {}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        describe(cmd),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd`, panicking with its stdout and stderr unless it exits with 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    if !out.status.success() {
        panic!("command failed\n{}", report(cmd, &out));
    }
    out
}

/// Runs `cmd` and panics (with stdout/stderr) unless it exits with `code`.
pub fn run_expect_code(cmd: &mut Command, code: i32) -> Output {
    let out = run(cmd);
    if out.status.code() != Some(code) {
        panic!("expected exit code {code}\n{}", report(cmd, &out));
    }
    out
}

/// `true` when the tests run as root (uid 0).
pub fn is_root() -> bool {
    current_ids().0 == 0
}

/// Effective uid and gid of this process (read from `/proc/self/status`,
/// falling back to `id`).
pub fn current_ids() -> (u32, u32) {
    static IDS: OnceLock<(u32, u32)> = OnceLock::new();
    *IDS.get_or_init(|| {
        if let Ok(status) = fs::read_to_string("/proc/self/status") {
            let field = |name: &str| -> Option<u32> {
                let line = status.lines().find(|l| l.starts_with(name))?;
                // "Uid:\treal\teffective\tsaved\tfs"
                line.split_whitespace().nth(2)?.parse().ok()
            };
            if let (Some(u), Some(g)) = (field("Uid:"), field("Gid:")) {
                return (u, g);
            }
        }
        let id = |flag: &str| -> u32 {
            let out = run_ok(Command::new("id").arg(flag));
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("`id` printed a number")
        };
        (id("-u"), id("-g"))
    })
}

/// A temporary directory that is removed when dropped. Its mode is 0755 so
/// that Dovecot, which drops privileges to `mail_uid` when the tests run as
/// root, can reach the stores inside it.
pub struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    /// Creates a fresh workspace under the system temporary directory.
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("maildump-it-")
            .tempdir()
            .expect("create temporary workspace");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .expect("chmod workspace");
        Workspace { dir }
    }

    /// The workspace root.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `path()` joined with `rel`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Keeps the directory on disk (for debugging) and returns its path.
    pub fn keep(self) -> PathBuf {
        self.dir.keep()
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

/// Recursively copies `src` to `dst` (created if missing). Regular files keep
/// their permission bits and modification times, symlinks are recreated as
/// symlinks, ownership is not changed.
pub fn copy_dir(src: &Path, dst: &Path) -> io::Result<()> {
    copy_tree(src, dst, None)
}

/// Like [`copy_dir`], but files hard-linked to each other under `src` are hard-linked
/// to each other under `dst` too (as Dovecot's SIS `hashes/` links and sdbox copies are).
pub fn copy_dir_links(src: &Path, dst: &Path) -> io::Result<()> {
    copy_tree(src, dst, Some(&mut std::collections::HashMap::new()))
}

/// The walk of [`copy_dir`]; with `links`, the first copy of each multiply-linked file
/// by (device, inode), so that later names of it become hard links to that copy.
fn copy_tree(
    src: &Path,
    dst: &Path,
    mut links: Option<&mut std::collections::HashMap<(u64, u64), PathBuf>>,
) -> io::Result<()> {
    fs::create_dir_all(dst)?;
    let meta = fs::metadata(src)?;
    fs::set_permissions(dst, meta.permissions())?;
    let mut entries = fs::read_dir(src)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let ft = entry.file_type()?;
        if ft.is_dir() {
            copy_tree(&from, &to, links.as_deref_mut())?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&from)?, &to)?;
        } else {
            let m = fs::metadata(&from)?;
            let key = (m.dev(), m.ino());
            if let Some(first) = links.as_deref().and_then(|l| l.get(&key)) {
                fs::hard_link(first, &to)?;
                continue;
            }
            fs::copy(&from, &to)?;
            fs::File::options()
                .write(true)
                .open(&to)?
                .set_modified(m.modified()?)?;
            if let Some(l) = links.as_deref_mut()
                && m.nlink() > 1
            {
                l.insert(key, to);
            }
        }
    }
    // Directory mtimes last, after their contents were written.
    let mtime = meta.modified()?;
    if let Ok(d) = fs::File::open(dst) {
        // Best effort: not every filesystem allows it on a read-only handle.
        let _ = d.set_modified(mtime);
    }
    Ok(())
}

/// Recursively changes the owner of `path` (symlinks themselves, not their
/// targets) to `uid:gid`.
pub fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for entry in fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Sets the modification (and access) time of a file to `secs` since the
/// Unix epoch.
pub fn set_mtime(path: &Path, secs: u64) {
    let t = UNIX_EPOCH + std::time::Duration::from_secs(secs);
    let f = fs::File::options()
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} for set_mtime: {e}", path.display()));
    f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

/// A sorted, line-per-entry description of everything under `root`: the
/// relative path, type, mode, owner, size, mtime (ns) and, for files, the
/// SHA-256 of the content. Two calls give the same text iff nothing under
/// `root` was created, removed or modified. A missing `root` gives "".
pub fn tree_listing(root: &Path) -> String {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for entry in rd.flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let mtime = meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128;
            let owner = format!("{}:{}", meta.uid(), meta.gid());
            let mode = meta.mode() & 0o7777;
            if meta.is_dir() {
                // Directory mtimes change when entries are added/removed, which
                // the entries themselves already show; keep only mode/owner.
                out.push(format!("{rel}/\tdir\t{mode:o}\t{owner}"));
                walk(root, &path, out);
            } else if meta.file_type().is_symlink() {
                let target = fs::read_link(&path).map(|t| t.to_string_lossy().into_owned());
                out.push(format!("{rel}\tsymlink\t{}", target.unwrap_or_default()));
            } else {
                let hash = fs::read(&path)
                    .map(|b| sha256_hex(&b))
                    .unwrap_or_else(|e| format!("unreadable: {e}"));
                out.push(format!(
                    "{rel}\tfile\t{mode:o}\t{owner}\t{}\t{mtime}\t{hash}",
                    meta.len()
                ));
            }
        }
    }
    let mut lines = Vec::new();
    walk(root, root, &mut lines);
    lines.sort();
    let mut s = String::new();
    for l in lines {
        s.push_str(&l);
        s.push('\n');
    }
    s
}

/// A unified-style line diff of `expected` vs `actual` (`-` lines only in
/// expected, `+` lines only in actual, a few lines of context).
pub fn line_diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    // LCS table; inputs are small (snapshots are a few hundred lines).
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            ops.push(('+', b[j]));
            j += 1;
        } else {
            ops.push(('-', a[i]));
            i += 1;
        }
    }
    const CONTEXT: usize = 2;
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| o.0 != ' ')
        .map(|(k, _)| k)
        .collect();
    let mut out = String::new();
    let mut last_printed: Option<usize> = None;
    for (k, (tag, line)) in ops.iter().enumerate() {
        let near = changed.iter().any(|&c| c.abs_diff(k) <= CONTEXT);
        if !near {
            continue;
        }
        if last_printed.is_some_and(|lp| k > lp + 1) {
            out.push_str("   ...\n");
        }
        let _ = writeln!(out, "{tag} {line}");
        last_printed = Some(k);
    }
    out
}

/// Panics with a line diff when `expected != actual`.
#[track_caller]
pub fn assert_text_eq(what: &str, expected: &str, actual: &str) {
    if expected != actual {
        panic!(
            "{what}: differs ('-' = expected, '+' = actual)\n{}\n=== full expected ===\n{expected}\n=== full actual ===\n{actual}",
            line_diff(expected, actual)
        );
    }
}

/// The path as an `&OsStr`, for `Command::arg` chains.
pub fn os(p: &Path) -> &OsStr {
    p.as_os_str()
}

/// Every regular file under `root` (recursively), sorted. A missing `root` gives none.
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(&p, out),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    let mut v = Vec::new();
    walk(root, &mut v);
    v.sort();
    v
}

/// This build's `maildump` binary, or a copy in `ws` when `user` cannot run it (a directory
/// above it closed to that user, e.g. a target/ under a 0700 /root), said on stderr.
///
/// A fresh copy can fail to run with "Text file busy" for a moment: a child another test
/// thread forks while the copy is being written inherits the open file until it execs.
/// The copy is run (`--version`) until it no longer does, at most 200 times.
pub fn binary_for_user(user: &str, ws: &Workspace) -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_maildump"));
    let reachable = Command::new("runuser")
        .args(["-u", user, "--", "test", "-x"])
        .arg(&exe)
        .status()
        .expect("runuser runs (util-linux)")
        .success();
    if reachable {
        return exe;
    }
    let dir = ws.join("bin");
    fs::create_dir_all(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join("maildump");
    fs::copy(&exe, &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    eprintln!(
        "user {user} cannot run {}: using a copy, {}",
        exe.display(),
        copy.display()
    );
    for _ in 0..200 {
        match Command::new(&copy).arg("--version").output() {
            Err(e) if e.raw_os_error() == Some(26) => std::thread::yield_now(),
            Err(e) => panic!("{}: {e}", copy.display()),
            Ok(_) => return copy,
        }
    }
    panic!("{} stays busy (ETXTBSY)", copy.display());
}

/// Run `tests/support/selftest-NAME.sh` with `env`; panics unless it passed and printed
/// `ok   CHECK` for each of `checks`.
pub fn run_selftest(name: &str, env: &[(&str, &OsStr)], checks: &[&str]) {
    let script = format!(
        "{}/tests/support/selftest-{name}.sh",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut cmd = Command::new("bash");
    cmd.arg(&script).env_remove("KEEP");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(&format!("selftest-{name}: all checks passed")),
        "selftest-{name}.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for check in checks {
        assert!(
            stdout.contains(&format!("ok   {check}")),
            "{check}: {stdout}"
        );
    }
}

/// The manifest of an archive written through the library's writer by a test: format 1.`minor`,
/// made by `test` on 2026-01-01, with id `id`, of a `store` store (location `<store>:~/M`).
pub fn test_manifest(store: &str, minor: u16, id: &str) -> maildump::format::index::Manifest {
    use maildump::format::index::{Manifest, Source};
    Manifest {
        format: "maildump".into(),
        format_major: 1,
        format_minor: minor,
        writer: "test".into(),
        created: "2026-01-01T00:00:00Z".into(),
        archive_id: id.into(),
        parent: None,
        bases: vec![],
        since: None,
        replaces: vec![],
        source: Source {
            store: store.into(),
            location: format!("{store}:~/M"),
            home: None,
            host: None,
        },
    }
}

/// Hold an exclusive flock on `path` in a process of its own (`flock -x`), until
/// [`release_flock`]. A lock taken in this multi-threaded test process would also be held
/// by any child another test thread forks meanwhile, until that child execs, so releasing
/// it here would not always release it.
pub fn hold_flock(path: &Path) -> Child {
    let mut holder = Command::new("flock")
        .arg("-x")
        .arg(path)
        .args(["sh", "-c", "echo held; cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("flock (util-linux) runs");
    let mut held = String::new();
    io::BufRead::read_line(
        &mut io::BufReader::new(holder.stdout.take().expect("piped")),
        &mut held,
    )
    .expect("read from flock");
    assert_eq!(held, "held\n", "flock took {}", path.display());
    holder
}

/// Release a lock taken by [`hold_flock`].
pub fn release_flock(mut holder: Child) {
    drop(holder.stdin.take());
    assert!(holder.wait().expect("flock exits").success());
}
