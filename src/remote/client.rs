//! The requests maildump makes to an S3-compatible store, each retried as the module doc
//! of [`super`] says, and their errors.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusty_s3::actions::S3Action;
use rusty_s3::{Bucket, Credentials, UrlStyle};
use ureq::http::Response;

use super::{S3Url, Settings};

/// How many times a request is tried (the first and the retries).
pub const TRIES: u32 = 5;
/// The wait before the first retry; doubled before each next one.
const BACKOFF: Duration = Duration::from_millis(200);
/// How long a signed request stays valid (covers a slow upload of one part).
const VALID: Duration = Duration::from_secs(3600);

static REQUESTS: AtomicU64 = AtomicU64::new(0);
static FETCHED: AtomicU64 = AtomicU64::new(0);
static SENT: AtomicU64 = AtomicU64::new(0);

/// What this process asked of object storage so far: requests made (retries included),
/// bytes fetched (bodies of reads) and bytes sent (bodies of writes).
pub fn stats() -> (u64, u64, u64) {
    (
        REQUESTS.load(Ordering::Relaxed),
        FETCHED.load(Ordering::Relaxed),
        SENT.load(Ordering::Relaxed),
    )
}

/// A request the store refused or that could not be made: which request on which
/// object, and what the store said (its error code and message) or what failed on the
/// way.
#[derive(Debug, Clone)]
pub struct S3Error {
    /// The request (`GET`, `PUT`, `UploadPart`...).
    pub op: &'static str,
    /// The object.
    pub url: S3Url,
    /// The HTTP status, when the store answered.
    pub status: Option<u16>,
    /// The store's error code (`NoSuchKey`, `AccessDenied`...), or what failed.
    pub code: String,
    /// The store's message, if any.
    pub message: String,
}

impl S3Error {
    /// Whether the bucket or the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.status == Some(404) || matches!(self.code.as_str(), "NoSuchKey" | "NoSuchBucket")
    }

    /// Whether the store refused the credentials or their rights.
    pub fn is_refused(&self) -> bool {
        matches!(self.status, Some(401 | 403))
    }
}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bucket {:?}, key {:?}: {} ",
            self.url.bucket, self.url.key, self.op
        )?;
        match self.status {
            Some(s) => write!(f, "refused by the object store: {} (HTTP {s})", self.code)?,
            None => write!(f, "failed: {}", self.code)?,
        }
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        if self.is_refused() {
            write!(
                f,
                " (check the credentials: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, the region AWS_REGION, and --s3-endpoint)"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for S3Error {}

impl From<S3Error> for std::io::Error {
    fn from(e: S3Error) -> Self {
        let kind = if e.is_not_found() {
            std::io::ErrorKind::NotFound
        } else if e.is_refused() {
            std::io::ErrorKind::PermissionDenied
        } else {
            std::io::ErrorKind::Other
        };
        std::io::Error::new(kind, e)
    }
}

/// What a ranged read asks for.
#[derive(Clone, Copy, Debug)]
pub enum Range {
    /// The last `n` bytes.
    Tail(u64),
    /// Bytes `start..end` (end exclusive, not empty).
    Span(u64, u64),
}

/// One object store, as the settings name it: the requests maildump makes (each retried
/// as the module doc of [`super`] says).
pub struct Client {
    agent: ureq::Agent,
    settings: Settings,
    creds: Credentials,
}

type Answer = Result<Response<ureq::Body>, ureq::Error>;

impl Client {
    /// A client for the store `settings` name (no request is made yet).
    ///
    /// # Errors
    /// An endpoint that is not a URL.
    pub fn new(settings: Settings) -> Result<Client, String> {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(Duration::from_secs(30)))
            .timeout_recv_body(Some(Duration::from_secs(300)))
            .timeout_send_body(Some(Duration::from_secs(300)))
            .build();
        let creds = match &settings.token {
            Some(t) => Credentials::new_with_token(&settings.key_id, &settings.secret, t),
            None => Credentials::new(&settings.key_id, &settings.secret),
        };
        settings
            .endpoint
            .parse::<url::Url>()
            .map_err(|e| format!("S3 endpoint {:?}: {e}", settings.endpoint))?;
        Ok(Client {
            agent: config.into(),
            settings,
            creds,
        })
    }

    fn bucket(&self, url: &S3Url) -> Result<Bucket, S3Error> {
        let style = if self.settings.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let endpoint = self
            .settings
            .endpoint
            .parse()
            .map_err(|e| failed("connect", url, format!("endpoint: {e}")))?;
        Bucket::new(
            endpoint,
            style,
            url.bucket.clone(),
            self.settings.region.clone(),
        )
        .map_err(|e| failed("connect", url, format!("bucket address: {e}")))
    }

    /// Send the request `make` builds (signed anew each try), retrying as the module doc
    /// says; a 2xx answer is returned, any other is an error.
    fn send(
        &self,
        op: &'static str,
        url: &S3Url,
        make: impl Fn(&Bucket) -> Answer,
    ) -> Result<Response<ureq::Body>, S3Error> {
        let bucket = self.bucket(url)?;
        let mut wait = BACKOFF;
        let mut tries = 0;
        loop {
            tries += 1;
            REQUESTS.fetch_add(1, Ordering::Relaxed);
            let e = match make(&bucket) {
                Ok(r) if r.status().is_success() => return Ok(r),
                Ok(r) => answer_error(op, url, r),
                Err(e) => failed(op, url, e.to_string()),
            };
            let transient = match e.status {
                None => true,
                Some(s) => s >= 500 || s == 429,
            };
            if !transient || tries >= TRIES {
                if transient && tries > 1 {
                    return Err(S3Error {
                        message: format!("{} (after {tries} tries)", e.message)
                            .trim_start()
                            .to_string(),
                        ..e
                    });
                }
                return Err(e);
            }
            std::thread::sleep(wait);
            wait *= 2;
        }
    }

    /// Read a range of the object; its bytes and the object's whole length.
    ///
    /// # Errors
    /// The store's error.
    pub fn get(&self, url: &S3Url, range: Range) -> Result<(Vec<u8>, u64), S3Error> {
        let header = match range {
            Range::Tail(n) => format!("bytes=-{n}"),
            Range::Span(a, b) => format!("bytes={a}-{}", b - 1),
        };
        let mut r = self.send("GET", url, |b| {
            let signed = b.get_object(Some(&self.creds), &url.key).sign(VALID);
            self.agent
                .get(signed.as_str())
                .header("Range", &header)
                .call()
        })?;
        let total = r
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit_once('/'))
            .and_then(|(_, t)| t.parse::<u64>().ok());
        let body = read_body("GET", url, &mut r, u64::MAX)?;
        // A 200 without Content-Range: the store sent the whole object.
        let total = total.unwrap_or(body.len() as u64);
        Ok((body, total))
    }

    /// The object's length (HEAD), for an object a ranged read cannot address (empty).
    pub(crate) fn len(&self, url: &S3Url) -> Result<u64, S3Error> {
        let r = self.send("HEAD", url, |b| {
            let signed = b.head_object(Some(&self.creds), &url.key).sign(VALID);
            self.agent.head(signed.as_str()).call()
        })?;
        r.headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| failed("HEAD", url, "no Content-Length in the answer".into()))
    }

    /// Store `body` as the object (replacing one with that key).
    ///
    /// # Errors
    /// The store's error.
    pub fn put(&self, url: &S3Url, body: &[u8]) -> Result<(), S3Error> {
        self.put_maybe(url, body, false)
    }

    /// Store `body` as the object only if no object has that key (`If-None-Match: *`, a
    /// conditional write two writers cannot both win); `false` when one has (HTTP 412).
    /// Only on a store that honours the header (AWS S3 does since 2024): Garage 2.5 ignores
    /// it on PUT, so there both writers get `true` and the last one stays
    /// (tests/it/s3.rs `garage_2_5_ignores_a_conditional_put`).
    ///
    /// # Errors
    /// The store's error.
    pub fn put_if_absent(&self, url: &S3Url, body: &[u8]) -> Result<bool, S3Error> {
        match self.put_maybe(url, body, true) {
            Ok(()) => Ok(true),
            Err(e) if e.status == Some(412) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn put_maybe(&self, url: &S3Url, body: &[u8], if_absent: bool) -> Result<(), S3Error> {
        self.send("PUT", url, |b| {
            let signed = b.put_object(Some(&self.creds), &url.key).sign(VALID);
            let mut req = self.agent.put(signed.as_str());
            if if_absent {
                req = req.header("If-None-Match", "*");
            }
            req.send(body)
        })?;
        SENT.fetch_add(body.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Remove the object.
    ///
    /// # Errors
    /// The store's error.
    pub fn delete(&self, url: &S3Url) -> Result<(), S3Error> {
        self.send("DELETE", url, |b| {
            let signed = b.delete_object(Some(&self.creds), &url.key).sign(VALID);
            self.agent.delete(signed.as_str()).call()
        })?;
        Ok(())
    }

    /// The whole object (a small one: a state file, a lock); `None` when there is no such
    /// key (a missing bucket is an error).
    ///
    /// # Errors
    /// The store's error.
    pub fn get_whole(&self, url: &S3Url) -> Result<Option<Vec<u8>>, S3Error> {
        let r = self.send("GET", url, |b| {
            let signed = b.get_object(Some(&self.creds), &url.key).sign(VALID);
            self.agent.get(signed.as_str()).call()
        });
        let mut r = match r {
            Ok(r) => r,
            Err(e)
                if e.code == "NoSuchKey" || (e.status == Some(404) && e.code != "NoSuchBucket") =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let body = read_body("GET", url, &mut r, u64::MAX)?;
        Ok(Some(body))
    }

    /// The keys of `bucket` that start with `prefix`, sorted (ListObjectsV2, every page).
    ///
    /// # Errors
    /// The store's error; an answer that is not a listing.
    pub fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<String>, S3Error> {
        let url = S3Url {
            bucket: bucket.to_string(),
            key: prefix.to_string(),
        };
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut r = self.send("ListObjectsV2", &url, |b| {
                let mut action = b.list_objects_v2(Some(&self.creds));
                action.with_prefix(prefix);
                if let Some(t) = &token {
                    action.with_continuation_token(t.as_str());
                }
                self.agent.get(action.sign(VALID).as_str()).call()
            })?;
            let body = read_body("ListObjectsV2", &url, &mut r, 64 << 20)?;
            let text = String::from_utf8_lossy(&body);
            let page = rusty_s3::actions::ListObjectsV2::parse_response(&text)
                .map_err(|e| failed("ListObjectsV2", &url, format!("its answer: {e}")))?;
            keys.extend(page.contents.into_iter().map(|c| c.key));
            match page.next_continuation_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        keys.sort();
        Ok(keys)
    }

    /// Start a multipart upload; its id.
    pub(crate) fn create_multipart(&self, url: &S3Url) -> Result<String, S3Error> {
        let mut r = self.send("CreateMultipartUpload", url, |b| {
            let signed = b
                .create_multipart_upload(Some(&self.creds), &url.key)
                .sign(VALID);
            self.agent.post(signed.as_str()).send_empty()
        })?;
        let text = read_text(&mut r);
        rusty_s3::actions::CreateMultipartUpload::parse_response(&text)
            .map(|p| p.upload_id().to_string())
            .map_err(|e| failed("CreateMultipartUpload", url, format!("its answer: {e}")))
    }

    /// Upload part `n` (from 1) of the upload `id`; its ETag.
    pub(crate) fn upload_part(
        &self,
        url: &S3Url,
        id: &str,
        n: u16,
        body: &[u8],
    ) -> Result<String, S3Error> {
        let r = self.send("UploadPart", url, |b| {
            let signed = b
                .upload_part(Some(&self.creds), &url.key, n, id)
                .sign(VALID);
            self.agent.put(signed.as_str()).send(body)
        })?;
        SENT.fetch_add(body.len() as u64, Ordering::Relaxed);
        r.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| failed("UploadPart", url, "no ETag in the answer".into()))
    }

    /// Complete the upload `id` from its parts' ETags (in order): the object appears.
    pub(crate) fn complete(&self, url: &S3Url, id: &str, etags: &[String]) -> Result<(), S3Error> {
        let mut r = self.send("CompleteMultipartUpload", url, |b| {
            let action = b.complete_multipart_upload(
                Some(&self.creds),
                &url.key,
                id,
                etags.iter().map(String::as_str),
            );
            let signed = action.sign(VALID);
            self.agent.post(signed.as_str()).send(action.body())
        })?;
        // The store may answer 200 and put the error in the body.
        let text = read_text(&mut r);
        if text.contains("<Error>") {
            return Err(S3Error {
                op: "CompleteMultipartUpload",
                url: url.clone(),
                status: Some(200),
                code: xml_field(&text, "Code").unwrap_or_default(),
                message: xml_field(&text, "Message").unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// Abort the upload `id`: its parts are dropped, no object appears.
    pub(crate) fn abort(&self, url: &S3Url, id: &str) -> Result<(), S3Error> {
        self.send("AbortMultipartUpload", url, |b| {
            let signed = b
                .abort_multipart_upload(Some(&self.creds), &url.key, id)
                .sign(VALID);
            self.agent.delete(signed.as_str()).call()
        })?;
        Ok(())
    }
}

/// The body of a successful answer, up to `limit` bytes, counted as fetched.
fn read_body(
    op: &'static str,
    url: &S3Url,
    r: &mut Response<ureq::Body>,
    limit: u64,
) -> Result<Vec<u8>, S3Error> {
    let mut body = Vec::new();
    r.body_mut()
        .as_reader()
        .take(limit)
        .read_to_end(&mut body)
        .map_err(|e| failed(op, url, format!("reading the answer: {e}")))?;
    FETCHED.fetch_add(body.len() as u64, Ordering::Relaxed);
    Ok(body)
}

fn failed(op: &'static str, url: &S3Url, what: String) -> S3Error {
    S3Error {
        op,
        url: url.clone(),
        status: None,
        code: what,
        message: String::new(),
    }
}

/// The error an answer that is not 2xx carries (its XML `Code` and `Message`).
fn answer_error(op: &'static str, url: &S3Url, mut r: Response<ureq::Body>) -> S3Error {
    let status = r.status().as_u16();
    let text = read_text(&mut r);
    let code = xml_field(&text, "Code").unwrap_or_else(|| {
        r.status()
            .canonical_reason()
            .unwrap_or("error")
            .replace(' ', "")
    });
    S3Error {
        op,
        url: url.clone(),
        status: Some(status),
        code,
        message: xml_field(&text, "Message").unwrap_or_default(),
    }
}

/// The first 64 KiB of an answer's body as text (errors and small XML answers).
fn read_text(r: &mut Response<ureq::Body>) -> String {
    let mut buf = Vec::new();
    let _ = r
        .body_mut()
        .as_reader()
        .take(64 << 10)
        .read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The text of the first `<name>` element of `xml`, if any (not empty).
fn xml_field(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    let v = xml[start..end].trim();
    (!v.is_empty()).then(|| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_read_and_named() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code><Message>Key not found</Message></Error>";
        assert_eq!(xml_field(xml, "Code").as_deref(), Some("NoSuchKey"));
        assert_eq!(xml_field(xml, "Resource"), None);
        let e = S3Error {
            op: "GET",
            url: S3Url {
                bucket: "mail".into(),
                key: "a.mdump".into(),
            },
            status: Some(404),
            code: "NoSuchKey".into(),
            message: "Key not found".into(),
        };
        assert_eq!(
            e.to_string(),
            "bucket \"mail\", key \"a.mdump\": GET refused by the object store: NoSuchKey (HTTP 404): Key not found"
        );
        assert_eq!(std::io::Error::from(e).kind(), std::io::ErrorKind::NotFound);
    }
}
