//! Dovecot 2.4.1 for the integration tests: the Debian 13 root that `.ci/dovecot24-root.sh`
//! builds (verified facts in `tests/support/dovecot24.md`), scratch directories inside it,
//! and doveadm, an imap server and `maildump` itself run there through `chroot`.
//!
//! A [`Scratch`] is a 0755 directory under `ROOT/srv/maildump-tests`, removed when dropped
//! (also when a test fails). [`Scratch::dovecot`] makes a [`Dovecot`] whose doveadm is
//! 2.4's (`Server::Root24`): every helper of `dovecot.rs` (import, build_*_store, snapshot)
//! works on it unchanged. The maildump binary on the host reads and writes the same stores
//! by their host paths; [`Scratch::maildump`] runs it inside the root, where `doveconf` is
//! 2.4's and the configuration's paths are valid as written.
//!
//! A missing root fails the test with the command that builds it: nothing is skipped.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::dovecot::{Dovecot, ROOT_MAIL_ID, Server};
use crate::util::{is_root, report, run};

/// `tests/support/d24.sh` of this checkout.
fn d24_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/d24.sh")
}

/// The Dovecot 2.4 root, checked once per test process (`d24.sh check`: complete, and
/// running Dovecot 2.4). Panics with the command that builds it when it is missing.
pub fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        assert!(
            is_root(),
            "the Dovecot 2.4 tests run doveadm through chroot and need root (run them as .ci/run does)"
        );
        let mut check = Command::new(d24_sh());
        check.arg("check");
        let out = run(&mut check);
        assert!(
            out.status.success(),
            "no usable Dovecot 2.4 root: build it with `.ci/dovecot24-root.sh` (as root; \
             MAILDUMP_D24_ROOT picks another place); these tests are never skipped\n{}",
            report(&check, &out)
        );
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(version.starts_with("2.4."), "d24.sh check printed {version:?}");
        let mut where_ = Command::new(d24_sh());
        where_.arg("root");
        let out = run(&mut where_);
        assert!(out.status.success(), "{}", report(&where_, &out));
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// `path` (below `root`) as seen inside the root.
pub fn inner(root: &Path, path: &Path) -> PathBuf {
    let rel = path.strip_prefix(root).unwrap_or_else(|_| {
        panic!(
            "{} is not inside the Dovecot 2.4 root {}",
            path.display(),
            root.display()
        )
    });
    Path::new("/").join(rel)
}

/// The environment every command inside the root gets (nothing of the host's leaks in).
fn in_root(root: &Path, path_var: &str) -> Command {
    let mut cmd = Command::new("chroot");
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .arg(root)
        .args(["/usr/bin/env", "-i"])
        .arg(format!("PATH={path_var}"))
        .args(["TZ=UTC", "LC_ALL=C"]);
    cmd
}

/// Words that take a subcommand in doveadm (`mailbox status`, `flags add`...).
const GROUPS: [&str; 5] = ["mailbox", "flags", "fs", "mail", "dict"];

/// `doveadm -c CONF ARGS` of Dovecot 2.4 for `user`: `--no-userdb-lookup` goes right after
/// the command name (2.4's doveadm refuses it as a global option, and needs it without an
/// auth daemon); global options (`-f tab`) stay in front.
pub fn doveadm(root: &Path, conf: &Path, user: &str, args: &[&str]) -> Command {
    let mut i = 0;
    while i < args.len() && args[i].starts_with('-') {
        i += if args[i] == "-f" || args[i] == "-o" {
            2
        } else {
            1
        };
    }
    if args.get(i).is_some_and(|a| GROUPS.contains(a)) {
        i += 1;
        if args.get(i - 1) == Some(&"mailbox")
            && args
                .get(i)
                .is_some_and(|a| ["metadata", "cache"].contains(a))
        {
            i += 1;
        }
    }
    let i = (i + 1).min(args.len());
    let mut cmd = in_root(root, "/usr/sbin:/usr/bin:/sbin:/bin");
    cmd.arg(format!("USER={user}"))
        .arg("doveadm")
        .arg("-c")
        .arg(conf)
        .args(&args[..i])
        .arg("--no-userdb-lookup")
        .args(&args[i..]);
    cmd
}

/// A scratch directory inside the 2.4 root (mode 0755), removed when dropped.
pub struct Scratch {
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl Scratch {
    /// A fresh `ROOT/srv/maildump-tests/<name>.XXXXXX`, with the maildump binary of this
    /// test run linked in (`bin/maildump`).
    pub fn new(name: &str) -> Scratch {
        use std::os::unix::fs::PermissionsExt;
        let root = root().to_path_buf();
        let parent = root.join("srv/maildump-tests");
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}."))
            .tempdir_in(&parent)
            .unwrap_or_else(|e| panic!("scratch dir in {}: {e}", parent.display()));
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod scratch");
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).expect("mkdir scratch/bin");
        let exe = Path::new(env!("CARGO_BIN_EXE_maildump"));
        let dest = bin.join("maildump");
        if fs::hard_link(exe, &dest).is_err() {
            fs::copy(exe, &dest).unwrap_or_else(|e| panic!("copy maildump into the root: {e}"));
        }
        Scratch { dir, root }
    }

    /// Its host path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A path below it (host side).
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `path` as seen inside the root.
    pub fn inner(&self, path: &Path) -> PathBuf {
        inner(&self.root, path)
    }

    /// The maildump binary of this test run, run inside the root (its `doveconf` is 2.4's;
    /// paths in the arguments are paths inside the root).
    pub fn maildump(&self) -> Command {
        self.maildump_with_path("/usr/sbin:/usr/bin:/sbin:/bin")
    }

    /// [`Scratch::maildump`] with no `doveconf` to be found (`PATH` empty of it).
    pub fn maildump_without_doveconf(&self) -> Command {
        self.maildump_with_path("/nonexistent")
    }

    fn maildump_with_path(&self, path_var: &str) -> Command {
        let mut cmd = in_root(&self.root, path_var);
        cmd.arg(self.inner(&self.join("bin/maildump")));
        cmd
    }

    /// A Dovecot 2.4 store in `<scratch>/<sub>` (see [`config`]) whose doveadm is 2.4's.
    pub fn dovecot(&self, sub: &str, location: &str, extra: &[&str]) -> Dovecot {
        let dir = self.join(sub);
        for d in [dir.join("run"), dir.join("state"), dir.join("home")] {
            fs::create_dir_all(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        }
        let conf = dir.join("dovecot.conf");
        fs::write(&conf, config(&self.inner(&dir), location, extra)).expect("write dovecot.conf");
        let dc = Dovecot {
            dir: dir.clone(),
            conf,
            location: location.to_string(),
            home_root: dir.join("home"),
            uid: ROOT_MAIL_ID,
            gid: ROOT_MAIL_ID,
            server: Server::Root24(self.root.clone()),
        };
        dc.fix_ownership();
        dc
    }
}

/// External attachments in a 2.4 store (`mail_ext_attachment`, 2.4's form of SIS):
/// `~/attachments`, 1k and up, the `sis` fs over `posix`.
pub const EXT_ATTACHMENTS: [&str; 8] = [
    "mail_ext_attachment {",
    "  path = ~/attachments",
    "  min_size = 1k",
    "  fs sis {",
    "  }",
    "  fs posix {",
    "  }",
    "}",
];

/// A doveadm-only 2.4 configuration for the store in `dir` (a path inside the root):
/// `location` in 2.3's `mail_location` syntax (`maildir:~/Maildir:LAYOUT=fs:UTF-8`,
/// `sdbox:~/sdbox`, `mdbox:~/mdbox:ALT=~/altstore`) is written as 2.4 settings, with
/// `mail_home = DIR/home/%{user}`, METADATA in `%{home}/dovecot-attributes`, then `extra`.
pub fn config(dir: &Path, location: &str, extra: &[&str]) -> String {
    let d = dir.display();
    let (driver, rest) = location.split_once(':').expect("DRIVER:PATH");
    let mut opts = rest.split(':');
    let path = opts.next().expect("a path");
    let mut lines = vec![
        "dovecot_config_version = 2.4.1".to_string(),
        "dovecot_storage_version = 2.4.1".to_string(),
        format!("base_dir = {d}/run"),
        format!("state_dir = {d}/state"),
        "log_path = /dev/stderr".to_string(),
        "ssl = no".to_string(),
        format!("mail_driver = {driver}"),
        format!("mail_path = {path}"),
        format!("mail_home = {d}/home/%{{user}}"),
    ];
    for o in opts {
        lines.push(match o.split_once('=') {
            Some(("ALT", alt)) => format!("mail_alt_path = {alt}"),
            None if o == "LAYOUT=fs" => "mailbox_list_layout = fs".into(),
            Some(("LAYOUT", "fs")) => "mailbox_list_layout = fs".into(),
            None if o == "UTF-8" => "mailbox_list_utf8 = yes".into(),
            _ => panic!("location option {o} has no 2.4 form here"),
        });
    }
    lines.extend(
        [
            "mail_uid = 5000",
            "mail_gid = 5000",
            "first_valid_uid = 500",
            "first_valid_gid = 500",
            "namespace inbox {",
            "  inbox = yes",
            "  separator = /",
            "}",
            "mail_attribute {",
            "  dict file {",
            "    path = %{home}/dovecot-attributes",
            "  }",
            "}",
        ]
        .map(String::from),
    );
    lines.extend(extra.iter().map(|l| l.to_string()));
    lines.join("\n") + "\n"
}

/// A Dovecot 2.4 imap server (`d24.sh serve`) for a [`Dovecot`] of a [`Scratch`], on
/// 127.0.0.1 and a port of its own; stopped (`d24.sh stop`: the master and all its
/// children gone, the port free) when dropped.
pub struct Imap24 {
    /// Its configuration, as a path inside the root.
    conf: PathBuf,
    /// The port it listens on.
    pub port: u16,
    running: bool,
}

impl Imap24 {
    /// Serve `dc`'s store: its configuration plus a listener, plaintext logins with the
    /// password `secret` and a static userdb giving each user `home/<user>` (uid 5000).
    pub fn start(s: &Scratch, dc: &Dovecot) -> Imap24 {
        let dir = s.inner(&dc.dir);
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
        let port = free.local_addr().expect("local addr").port();
        drop(free);
        let conf_host = dc.dir.join("imap.conf");
        let base = fs::read_to_string(&dc.conf).expect("read dovecot.conf");
        let d = dir.display();
        fs::write(
            &conf_host,
            format!(
                "{}\nprotocols = imap\nlisten = 127.0.0.1\nauth_allow_cleartext = yes\n\
                 auth_mechanisms = plain\npassdb static {{\n  password = secret\n}}\n\
                 userdb static {{\n  fields {{\n    uid = 5000\n    gid = 5000\n    home = {d}/home/%{{user}}\n  }}\n}}\n\
                 service imap-login {{\n  inet_listener imap {{\n    port = {port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n",
                base.replace("log_path = /dev/stderr", &format!("log_path = {d}/imap.log"))
                    .replace(&format!("base_dir = {d}/run"), &format!("base_dir = {d}/imap-run")),
            ),
        )
        .expect("write imap.conf");
        let conf = s.inner(&conf_host);
        let mut cmd = Command::new(d24_sh());
        cmd.arg("serve").arg(&conf);
        let out = run(&mut cmd);
        assert!(out.status.success(), "{}", report(&cmd, &out));
        Imap24 {
            conf,
            port,
            running: true,
        }
    }

    /// Stop the server; returns once it and its children are gone.
    pub fn stop(&mut self) {
        if !std::mem::take(&mut self.running) {
            return;
        }
        let mut cmd = Command::new(d24_sh());
        cmd.arg("stop").arg(&self.conf);
        let out = run(&mut cmd);
        assert!(out.status.success(), "{}", report(&cmd, &out));
    }
}

impl Drop for Imap24 {
    fn drop(&mut self) {
        if self.running {
            self.running = false;
            let _ = Command::new(d24_sh()).arg("stop").arg(&self.conf).status();
        }
    }
}
