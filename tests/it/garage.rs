//! Garage, a real S3-compatible object store, for the object storage tests: one node on
//! loopback per [`Garage`], with its own scratch directory (config, metadata, data) and
//! free ports, laid out, with a bucket `mail` and a key allowed on it; killed and removed
//! when dropped (also when a test fails).
//!
//! The binary is the one `.ci/run` builds and caches (`cargo install garage --version
//! 2.5.0 --locked --root /var/cache/maildump-ci/garage`), or `MAILDUMP_GARAGE`. A missing
//! binary fails the test with that command: nothing is skipped.
#![allow(dead_code)]

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::util::{Workspace, maildump, report, run};

/// Where `.ci/run` caches the Garage binary.
const CACHED: &str = "/var/cache/maildump-ci/garage/bin/garage";

/// The bucket every node is made with.
pub const BUCKET: &str = "mail";

/// The Garage binary; panics with the command that builds it when it is missing.
pub fn binary() -> PathBuf {
    let p =
        std::env::var_os("MAILDUMP_GARAGE").map_or_else(|| PathBuf::from(CACHED), PathBuf::from);
    assert!(
        p.is_file(),
        "no Garage binary at {}: build it with `cargo install garage --version 2.5.0 --locked \
         --root /var/cache/maildump-ci/garage` (as .ci/run does; MAILDUMP_GARAGE picks another); \
         the object storage tests are never skipped",
        p.display()
    );
    p
}

/// Three distinct free ports (held together while chosen, so none is given twice).
fn free_ports() -> (u16, u16, u16) {
    let held: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    let port = |i: usize| held[i].local_addr().expect("local addr").port();
    (port(0), port(1), port(2))
}

/// One running Garage node with a bucket and a key.
pub struct Garage {
    ws: Workspace,
    conf: PathBuf,
    child: Child,
    /// The S3 endpoint (`http://127.0.0.1:PORT`).
    pub endpoint: String,
    /// The key allowed on [`BUCKET`].
    pub key_id: String,
    /// Its secret.
    pub secret: String,
}

impl Garage {
    /// Start a node, lay it out, make the bucket and the key.
    pub fn start() -> Garage {
        let bin = binary();
        let ws = Workspace::new();
        let (rpc, s3, admin) = free_ports();
        let conf = ws.join("garage.toml");
        let secret: String = crate::dovecot::pseudo_random_bytes(u64::from(rpc), 32)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        fs::write(
            &conf,
            format!(
                "metadata_dir = \"{m}\"\ndata_dir = \"{d}\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\nadmin_token = \"t{secret}\"\n",
                m = ws.join("meta").display(),
                d = ws.join("data").display(),
            ),
        )
        .unwrap();
        let log = fs::File::create(ws.join("server.log")).unwrap();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start garage server");
        let mut g = Garage {
            ws,
            conf,
            child,
            endpoint: format!("http://127.0.0.1:{s3}"),
            key_id: String::new(),
            secret: String::new(),
        };
        let node = g.until_ok(&["node", "id", "-q"]);
        let node = node.split('@').next().unwrap().trim().to_string();
        g.until_ok(&["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        g.until_ok(&["layout", "apply", "--version", "1"]);
        g.until_ok(&["bucket", "create", BUCKET]);
        let key = g.until_ok(&["key", "create", "maildump-tests"]);
        let field = |name: &str| {
            key.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name} in `garage key create`:\n{key}"))
        };
        g.key_id = field("Key ID:");
        g.secret = field("Secret key:");
        g.until_ok(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            BUCKET,
            "--key",
            "maildump-tests",
        ]);
        g
    }

    /// `garage -c CONF ARGS`.
    pub fn garage(&self, args: &[&str]) -> Output {
        run(Command::new(binary()).arg("-c").arg(&self.conf).args(args))
    }

    /// `garage ARGS` until it succeeds (the node starts, the layout spreads): its stdout.
    /// Bounded (60 tries, 0.5 s apart); then the test fails with the server's log.
    fn until_ok(&mut self, args: &[&str]) -> String {
        let mut last = None;
        for _ in 0..60 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "garage server exited ({status}):\n{}",
                    fs::read_to_string(self.ws.join("server.log")).unwrap_or_default()
                );
            }
            let mut cmd = Command::new(binary());
            cmd.arg("-c").arg(&self.conf).args(args);
            let out = run(&mut cmd);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            last = Some(report(&cmd, &out));
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "garage {args:?} kept failing: {}\nserver log:\n{}",
            last.unwrap_or_default(),
            fs::read_to_string(self.ws.join("server.log")).unwrap_or_default()
        );
    }

    /// Put the node's endpoint and credentials into `cmd`'s environment (as S3 tools take
    /// them; nothing of the caller's AWS settings is inherited).
    pub fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        for v in [
            "AWS_PROFILE",
            "AWS_SHARED_CREDENTIALS_FILE",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL_S3",
            "AWS_DEFAULT_REGION",
        ] {
            cmd.env_remove(v);
        }
        cmd.env("AWS_ACCESS_KEY_ID", &self.key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_REGION", "garage")
            .env("AWS_ENDPOINT_URL", &self.endpoint)
    }

    /// `maildump` with [`Garage::env`].
    pub fn maildump(&self) -> Command {
        let mut cmd = maildump();
        self.env(&mut cmd);
        cmd
    }

    /// A client of the library for this node.
    pub fn client(&self) -> maildump::remote::Client {
        maildump::remote::Client::new(maildump::remote::Settings {
            endpoint: self.endpoint.clone(),
            path_style: true,
            region: "garage".into(),
            key_id: self.key_id.clone(),
            secret: self.secret.clone(),
            token: None,
        })
        .unwrap()
    }

    /// `garage bucket info mail`.
    pub fn bucket_info(&self) -> String {
        let out = self.garage(&["bucket", "info", BUCKET]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The scratch directory (for files a test makes beside the node).
    pub fn dir(&self) -> &Path {
        self.ws.path()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_node_starts_and_serves_a_bucket() {
    let g = Garage::start();
    let c = g.client();
    let url = maildump::remote::S3Url {
        bucket: BUCKET.into(),
        key: "hello".into(),
    };
    c.put(&url, b"hello, world").unwrap();
    let (bytes, len) = c.get(&url, maildump::remote::Range::Span(7, 12)).unwrap();
    assert_eq!((bytes.as_slice(), len), (&b"world"[..], 12));
    assert!(g.bucket_info().contains("Objects:"));
}
