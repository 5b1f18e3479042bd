//! IMAP clients after a restore (issue 12): a real Dovecot IMAP server on loopback (its own
//! config, base_dir and free port, started and stopped by the test) serves a store before
//! a disaster and after its restore, and a real client (Python's imaplib, with CONDSTORE
//! and QRESYNC) that cached the mailbox before must see every change made after the
//! restore, also when an older backup was restored, and no APPENDUID may repeat a
//! UIDVALIDITY/UID pair it has seen before.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::dovecot::{Dovecot, message};
use crate::util::{Workspace, is_root, maildump, report, run, run_ok};

const USER: &str = "alice";
const PASSWORD: &str = "secret";

/// The IMAP client: one command per run (log in, do it, print JSON, log out).
pub(crate) const CLIENT: &str = r#"
import imaplib, json, re, sys

def parse_fetch(items):
    out = []
    for it in items:
        if isinstance(it, tuple):
            it = it[0]
        s = it.decode()
        uid = re.search(r'UID (\d+)', s)
        mod = re.search(r'MODSEQ \((\d+)\)', s)
        flags = re.search(r'FLAGS \(([^)]*)\)', s)
        out.append({'uid': int(uid.group(1)) if uid else None,
                    'modseq': int(mod.group(1)) if mod else None,
                    'flags': sorted(f for f in (flags.group(1).split() if flags else [])
                                    if f != '\\Recent')})
    return out

def ranges(text):
    out = []
    for part in text.split(','):
        if ':' in part:
            a, b = part.split(':')
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out

def code(m, name):
    for line in m.untagged_responses.get('OK', []):
        r = re.match(r'\[%s (\d+)\]' % name, line.decode())
        if r:
            return int(r.group(1))
    return None

port, cmd, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
m = imaplib.IMAP4('127.0.0.1', port)
m.login('alice', 'secret')
m.enable('QRESYNC')
res = {}
if cmd == 'resync':
    m.untagged_responses.clear()
    typ, _ = m._simple_command('SELECT', 'INBOX', '(QRESYNC (%s %s))' % (args[0], args[1]))
    assert typ == 'OK', typ
    m.state = 'SELECTED'
    vanished = []
    for v in m.untagged_responses.get('VANISHED', []):
        vanished.extend(ranges(v.decode().replace('(EARLIER)', '').strip()))
    res = {'uidvalidity': code(m, 'UIDVALIDITY'), 'highestmodseq': code(m, 'HIGHESTMODSEQ'),
           'vanished': sorted(vanished),
           'fetch': parse_fetch(m.untagged_responses.get('FETCH', []))}
else:
    typ, _ = m._simple_command('SELECT', 'INBOX', '(CONDSTORE)')
    assert typ == 'OK', typ
    m.state = 'SELECTED'
    res = {'uidvalidity': code(m, 'UIDVALIDITY'), 'uidnext': code(m, 'UIDNEXT'),
           'highestmodseq': code(m, 'HIGHESTMODSEQ')}
    if cmd == 'state':
        typ, data = m.uid('FETCH', '1:*', '(FLAGS MODSEQ)')
        res['fetch'] = parse_fetch([d for d in data if d])
    elif cmd == 'append':
        body = ('From: c@example.net\r\nSubject: appended %s\r\n\r\nbody %s\r\n'
                % (args[0], args[0])).encode()
        typ, data = m.append('INBOX', None, None, body)
        assert typ == 'OK', data
        r = re.search(r'APPENDUID (\d+) (\d+)', data[0].decode())
        res['appenduid'] = [int(r.group(1)), int(r.group(2))]
    elif cmd == 'flag':
        typ, data = m.uid('STORE', args[0], '+FLAGS', '(%s)' % args[1])
        assert typ == 'OK', data
    elif cmd == 'expunge':
        typ, data = m.uid('STORE', args[0], '+FLAGS', '(\\Deleted)')
        assert typ == 'OK', data
        typ, data = m.uid('EXPUNGE', args[0])
        assert typ == 'OK', data
m.logout()
print(json.dumps(res))
"#;

/// A Dovecot IMAP server for `dc`'s store on 127.0.0.1, stopped (SIGTERM to the master,
/// which stops its children) when dropped.
struct ImapServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl ImapServer {
    /// Start `dovecot -F` with `dc`'s config plus an IMAP listener on a free port. A port
    /// taken between choosing and binding it makes Dovecot exit: another one is tried.
    fn start(dc: &Dovecot) -> ImapServer {
        let dovecot = ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("dovecot not found: install dovecot-core and dovecot-imapd");
        assert!(
            Path::new("/usr/lib/dovecot/imap").exists(),
            "Dovecot's imap binary is missing: install dovecot-imapd"
        );
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let conf = write_server_conf(dc, port);
            let log = dc.dir.join("dovecot.log");
            let _ = fs::remove_file(&log);
            let child = Command::new(dovecot)
                .arg("-F")
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start dovecot");
            let mut srv = ImapServer { child, port, log };
            if srv.wait_ready() {
                return srv;
            }
            let log = fs::read_to_string(&srv.log).unwrap_or_default();
            assert!(
                log.contains("Address already in use"),
                "dovecot did not start:\n{log}"
            );
        }
        panic!("no free port for dovecot after 5 tries");
    }

    /// Wait until the server accepts connections (true) or has exited (false).
    fn wait_ready(&mut self) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if self.child.try_wait().expect("dovecot status").is_some() {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "dovecot did not listen on port {} within 30 s:\n{}",
            self.port,
            fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Run one client command; its JSON output.
    fn client(&self, script: &Path, args: &[&str]) -> serde_json::Value {
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(self.port.to_string()).args(args);
        let out = run(&mut cmd);
        assert!(
            out.status.success(),
            "{}\n--- dovecot log ---\n{}",
            report(&cmd, &out),
            fs::read_to_string(&self.log).unwrap_or_default()
        );
        serde_json::from_slice(&out.stdout).expect("client JSON")
    }
}

impl Drop for ImapServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// `dc`'s config, plus what the IMAP server needs: the listener, plaintext logins against
/// a static password, a static userdb with the test's homes, a log file.
fn write_server_conf(dc: &Dovecot, port: u16) -> PathBuf {
    let base = fs::read_to_string(&dc.conf).expect("read dovecot.conf");
    let home = dc.home_root.display();
    let conf = format!(
        "{base}\
         log_path = {log}\n\
         protocols = imap\n\
         listen = 127.0.0.1\n\
         disable_plaintext_auth = no\n\
         auth_mechanisms = plain\n\
         passdb {{\n  driver = static\n  args = password={PASSWORD}\n}}\n\
         userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={home}/%u\n}}\n\
         service imap-login {{\n  inet_listener imap {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n  inet_listener imaps {{\n    port = 0\n  }}\n}}\n",
        log = dc.dir.join("dovecot.log").display(),
        uid = dc.uid,
        gid = dc.gid,
    );
    let path = dc.dir.join("imap.conf");
    fs::write(&path, conf).expect("write imap.conf");
    path
}

/// What a caching client knows of INBOX.
#[derive(Debug)]
struct Cache {
    uidvalidity: u64,
    highestmodseq: u64,
    /// uid -> flags.
    flags: BTreeMap<u64, Vec<String>>,
}

fn cache_of(state: &serde_json::Value) -> Cache {
    Cache {
        uidvalidity: state["uidvalidity"].as_u64().unwrap(),
        highestmodseq: state["highestmodseq"].as_u64().unwrap(),
        flags: fetched(state),
    }
}

fn fetched(v: &serde_json::Value) -> BTreeMap<u64, Vec<String>> {
    v["fetch"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let flags = f["flags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
            (f["uid"].as_u64().unwrap(), flags)
        })
        .collect()
}

/// Apply a QRESYNC answer to a client's cache, as a client does: drop what VANISHED, take
/// the flags of what was FETCHed.
fn apply_resync(cache: &Cache, resync: &serde_json::Value) -> BTreeMap<u64, Vec<String>> {
    let mut flags = cache.flags.clone();
    for v in resync["vanished"].as_array().unwrap() {
        flags.remove(&v.as_u64().unwrap());
    }
    flags.extend(fetched(resync));
    flags
}

/// A store of `location` with ten messages in INBOX (a few seen) for the IMAP tests.
fn imap_store(dir: &Path, location: &str) -> Dovecot {
    let dc = Dovecot::new(dir, location);
    let msgs: Vec<(&str, u64, &str, Vec<u8>)> = (1..=10)
        .map(|n| {
            let flags = if n % 3 == 0 { "S" } else { "" };
            (
                "INBOX",
                1_600_000_000 + u64::from(n) * 100,
                flags,
                message(USER, n, &format!("Message {n}"), "text\n"),
            )
        })
        .collect();
    dc.import(USER, &msgs);
    dc
}

/// Issue 12, IMAP level: a QRESYNC client that cached INBOX before a disaster sees, after
/// the restore (the newest backup; an older state of the chain; an older backup alone),
/// the true state: every change made after the restore (a flag change, an expunge, an
/// append), every message that is gone, every message that came back, and no APPENDUID
/// repeats a UIDVALIDITY/UID pair it has seen.
#[test]
fn qresync_client_sees_every_change_after_a_restore() {
    assert!(
        is_root(),
        "the IMAP test runs Dovecot's master process, which needs root (CI runs as root)"
    );
    for (location, root) in [("maildir:~/Maildir", "Maildir"), ("sdbox:~/sdbox", "sdbox")] {
        qresync_after_restores(location, root);
    }
}

/// [`qresync_client_sees_every_change_after_a_restore`] for one store format (`root`: the
/// mail root's directory in the home).
fn qresync_after_restores(location: &str, root: &str) {
    let ws = Workspace::new();
    let script = ws.join("client.py");
    fs::write(&script, CLIENT).unwrap();
    let dc = imap_store(&ws.join("live"), location);
    let full = ws.join("full.mdump");
    let inc = ws.join("inc.mdump");
    let full_id = "00000000-0000-4000-8000-00000000a001";
    let backup = |out: &Path, base: Option<&Path>, id: &str| {
        let mut cmd = maildump();
        cmd.args([
            "backup",
            "--location",
            &dc.location,
            "--home",
            &dc.home_template(),
        ])
        .args(["--user", USER, "--quiet", "--archive-id", id, "-o"])
        .arg(out);
        if let Some(b) = base {
            cmd.arg("--base").arg(b);
        }
        run_ok(&mut cmd);
    };

    // Before the disaster: the client caches INBOX; changes after the full backup.
    let mut seen: BTreeSet<(u64, u64)> = BTreeSet::new();
    let cached = {
        let srv = ImapServer::start(&dc);
        let s = srv.client(&script, &["state"]);
        backup(&full, None, full_id);
        for n in 1..=2 {
            let a = srv.client(&script, &["append", &n.to_string()]);
            let p = a["appenduid"].as_array().unwrap();
            seen.insert((p[0].as_u64().unwrap(), p[1].as_u64().unwrap()));
        }
        srv.client(&script, &["flag", "3", "\\Flagged"]);
        srv.client(&script, &["expunge", "9:10"]);
        let state = srv.client(&script, &["state"]);
        backup(&inc, Some(&full), "00000000-0000-4000-8000-00000000a002");
        let v = s["uidvalidity"].as_u64().unwrap();
        seen.extend(fetched(&s).keys().map(|&u| (v, u)));
        cache_of(&state)
    };
    let chain: [&Path; 2] = [&full, &inc];
    let cases: [(&str, &[&Path], &[&str]); 3] = [
        ("the newest backup", &chain, &[]),
        ("an older state of the chain", &chain, &["--as-of", full_id]),
        ("the older backup alone", &chain[..1], &[]),
    ];
    // Each case is another history: the same disaster, another way to restore.
    for (what, archives, extra) in cases {
        let mut seen = seen.clone();
        fs::remove_dir_all(dc.home(USER).join(root)).unwrap();
        run_ok(dc.restore_cmd_with_margin(archives).args(extra));
        let srv = ImapServer::start(&dc);
        // Changes after the restore, by another client.
        srv.client(&script, &["flag", "1", "\\Flagged"]);
        srv.client(&script, &["expunge", "2"]);
        let a = srv.client(&script, &["append", "after"]);
        let p = a["appenduid"].as_array().unwrap();
        let pair = (p[0].as_u64().unwrap(), p[1].as_u64().unwrap());
        assert!(
            seen.insert(pair),
            "{location}, {what}: APPENDUID {pair:?} was already handed out before the disaster"
        );
        // The caching client resynchronises.
        let r = srv.client(
            &script,
            &[
                "resync",
                &cached.uidvalidity.to_string(),
                &cached.highestmodseq.to_string(),
            ],
        );
        let truth = fetched(&srv.client(&script, &["state"]));
        drop(srv);
        assert_eq!(
            r["uidvalidity"].as_u64(),
            Some(cached.uidvalidity),
            "{location}, {what}: UIDVALIDITY kept"
        );
        assert!(
            r["highestmodseq"].as_u64().unwrap() > cached.highestmodseq,
            "{location}, {what}: HIGHESTMODSEQ {} not above the client's {}",
            r["highestmodseq"],
            cached.highestmodseq
        );
        assert_eq!(
            apply_resync(&cached, &r),
            truth,
            "{location}, {what}: the client's view after QRESYNC (VANISHED {}, FETCH {}) differs from the mailbox",
            r["vanished"],
            r["fetch"]
        );
    }
}
