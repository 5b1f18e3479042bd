//! Archives in S3-compatible object storage: `s3://bucket/key`.
//!
//! A layer of its own below `format` (which reads an object through [`Object`], a
//! `format::source::Source`) and `output` (which writes one through [`Upload`]); it knows
//! nothing of the archive format. Requests are signed with SigV4 (`rusty-s3`, presigned
//! URLs) and sent by a synchronous HTTP client (`ureq`, rustls).
//!
//! Settings are taken the way S3 tools take them ([`Settings::from_env`]): the
//! credentials from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, else
//! the `AWS_PROFILE` (or `default`) section of `AWS_SHARED_CREDENTIALS_FILE` (or
//! `~/.aws/credentials`); the region from `AWS_REGION`/`AWS_DEFAULT_REGION`; the endpoint
//! from `--s3-endpoint`, `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (else AWS's). A custom
//! endpoint is addressed path-style (`http://host/bucket/key`) unless
//! `--s3-virtual-hosted`. The command line sets them once ([`configure`]); the first
//! request reads them.
//!
//! Each request is tried up to [`TRIES`] times, with exponential backoff, when the
//! connection fails, times out, or the store answers 5xx or 429; other answers are final.
//! An error names the bucket, the key, the request and what the store said
//! ([`S3Error`]).

mod client;
mod object;

pub use client::{Client, Range, S3Error, TRIES, stats};
pub use object::{Object, Upload};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The scheme prefix of an object's address.
pub const SCHEME: &str = "s3://";

/// An object's address: `s3://bucket/key`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    /// The bucket.
    pub bucket: String,
    /// The object's key (may hold `/`).
    pub key: String,
}

impl S3Url {
    /// The address `path` names, if it starts with `s3://`.
    ///
    /// # Errors
    /// `s3://` without a bucket or without a key (the text says which).
    pub fn parse(path: &Path) -> Option<Result<S3Url, String>> {
        let s = path.to_str()?;
        let rest = s.strip_prefix(SCHEME)?;
        Some(match rest.split_once('/') {
            Some((b, k)) if !b.is_empty() && !k.is_empty() => Ok(S3Url {
                bucket: b.to_string(),
                key: k.to_string(),
            }),
            _ => Err(format!(
                "{s}: an object is named s3://BUCKET/KEY (bucket and key both given)"
            )),
        })
    }
}

impl std::fmt::Display for S3Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.bucket, self.key)
    }
}

/// The crate's error for a failed request on the object `url`: a missing bucket or key is
/// [`Error::NotFound`], anything else an I/O error on `s3://bucket/key`.
pub fn error(e: S3Error) -> Error {
    if e.is_not_found() {
        Error::NotFound(e.to_string())
    } else {
        Error::io(PathBuf::from(e.url.to_string()), e.into())
    }
}

/// The crate's error for an I/O error on the object `url` (one from [`Object::read_at`] or
/// [`Upload`]'s `write`: an [`S3Error`] inside, mapped as [`error`] does).
pub fn io_error(url: &Path, e: std::io::Error) -> Error {
    match e.get_ref().and_then(|i| i.downcast_ref::<S3Error>()) {
        Some(s3) => error(s3.clone()),
        None => Error::io(url, e),
    }
}

/// Whether `path` names an object (`s3://...`) rather than a file.
pub fn is_remote(path: &Path) -> bool {
    path.to_str().is_some_and(|s| s.starts_with(SCHEME))
}

/// What the command line says about object storage; the rest comes from the environment.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `--s3-endpoint URL`: overrides `AWS_ENDPOINT_URL(_S3)`.
    pub endpoint: Option<String>,
    /// `--s3-virtual-hosted`: address a custom endpoint as `bucket.host`.
    pub virtual_hosted: bool,
}

static OPTIONS: OnceLock<Options> = OnceLock::new();

/// Set the command line's options, once per process, before the first request (a second
/// call is ignored).
pub fn configure(o: Options) {
    let _ = OPTIONS.set(o);
}

/// Where the object store is and how to sign for it: resolved from the options and the
/// environment ([`Settings::from_env`]), or given ([`Client::new`]).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The endpoint URL (`http://127.0.0.1:3900`, `https://s3.eu-west-1.amazonaws.com`).
    pub endpoint: String,
    /// Path-style addressing (`HOST/BUCKET/KEY`) rather than virtual-hosted.
    pub path_style: bool,
    /// The region signed for.
    pub region: String,
    /// The access key id.
    pub key_id: String,
    /// The secret access key.
    pub secret: String,
    /// The session token of temporary credentials.
    pub token: Option<String>,
}

impl Settings {
    /// Resolve the settings from `o` and the environment as the module doc says.
    ///
    /// # Errors
    /// No credentials found (the text says where they were looked for).
    pub fn from_env(o: &Options) -> Result<Settings, String> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let region = env("AWS_REGION")
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".into());
        let custom = o
            .endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"));
        let path_style = custom.is_some() && !o.virtual_hosted;
        let endpoint = custom.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let (key_id, secret, token) = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
        {
            (Some(k), Some(s)) => (k, s, env("AWS_SESSION_TOKEN")),
            _ => from_credentials_file(env("AWS_PROFILE"), env("AWS_SHARED_CREDENTIALS_FILE"))?,
        };
        Ok(Settings {
            endpoint,
            path_style,
            region,
            key_id,
            secret,
            token,
        })
    }
}

/// The keys of `profile` (default `default`) in the shared credentials file.
fn from_credentials_file(
    profile: Option<String>,
    file: Option<String>,
) -> Result<(String, String, Option<String>), String> {
    let file = file.map(PathBuf::from).or_else(|| {
        std::env::var_os("HOME").map(|h| Path::new(&h).join(".aws").join("credentials"))
    });
    let profile = profile.unwrap_or_else(|| "default".into());
    let none = "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE)";
    let Some(file) = file else {
        return Err(none.into());
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{none}; {} does not exist", file.display()));
        }
        Err(e) => return Err(format!("{}: {e}", file.display())),
    };
    let section = parse_ini_section(&text, &profile);
    let get = |k: &str| section.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        (Some(k), Some(s)) => Ok((k, s, get("aws_session_token"))),
        _ => Err(format!(
            "{}: no profile [{profile}] with aws_access_key_id and aws_secret_access_key",
            file.display()
        )),
    }
}

/// The `name = value` lines of `[section]` in an INI text.
fn parse_ini_section(text: &str, section: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(name) = l.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            inside = name.trim() == section;
            continue;
        }
        if inside && let Some((k, v)) = l.split_once('=') {
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    out
}

/// The process's client, made at the first request from [`configure`]'s options and the
/// environment.
///
/// # Errors
/// [`Error::Usage`]: no credentials, or an endpoint that is not a URL.
pub(crate) fn client() -> Result<&'static Client> {
    static CLIENT: OnceLock<Result<Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let o = OPTIONS.get().cloned().unwrap_or_default();
            Client::new(Settings::from_env(&o)?)
        })
        .as_ref()
        .map_err(|e| Error::Usage(e.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        let u = S3Url::parse(Path::new("s3://mail/a/b.mdump"))
            .unwrap()
            .unwrap();
        assert_eq!((u.bucket.as_str(), u.key.as_str()), ("mail", "a/b.mdump"));
        assert_eq!(u.to_string(), "s3://mail/a/b.mdump");
        assert!(S3Url::parse(Path::new("/tmp/a.mdump")).is_none());
        assert!(S3Url::parse(Path::new("s3://mail")).unwrap().is_err());
        assert!(S3Url::parse(Path::new("s3://mail/")).unwrap().is_err());
        assert!(S3Url::parse(Path::new("s3:///k")).unwrap().is_err());
    }

    #[test]
    fn credentials_file_sections() {
        let text = "[default]\naws_access_key_id = A\naws_secret_access_key=B\n\n[other]\n# c\nAWS_ACCESS_KEY_ID = C\naws_secret_access_key = D\naws_session_token = T\n";
        let d = parse_ini_section(text, "default");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0], ("aws_access_key_id".into(), "A".into()));
        let o = parse_ini_section(text, "other");
        assert_eq!(o[0], ("aws_access_key_id".into(), "C".into()));
        assert_eq!(o[2].1, "T");
        assert!(parse_ini_section(text, "none").is_empty());
    }
}
