//! A state directory in object storage: the prefix `s3://bucket/prefix/` as a
//! [`StateStore`].
//!
//! Small objects are read and written whole (an S3 PUT replaces an object atomically), and
//! archives are written under the prefix by `backup -o s3://...` (a multipart upload that
//! appears only when complete, so no partial archive is ever visible and there are no
//! leftovers to remove).
//!
//! **Create-exclusive without a conditional write.** S3's `If-None-Match: *` on PUT would
//! do, but not every store honours it (Garage 2.5 ignores it: both writers win). So
//! [`ObjectPrefix::create_exclusive`] uses claims, which need only what every S3 store
//! gives today, a listing that shows every write completed before it (AWS S3 since 2020,
//! Ceph RGW, Garage's quorum reads):
//!
//! 1. PUT a claim `NAME.claim-TOKEN` (a fresh random token);
//! 2. LIST the keys starting with `NAME`;
//! 3. `NAME` itself there: it is taken; remove the claim, `false`.
//!    Only our claim: PUT `NAME`, then remove the claim, `true`.
//!    Other claims: someone is trying at the same moment; remove ours, wait a random
//!    while and start again (at most [`CLAIM_TRIES`] times, then a conflict).
//!
//! Two callers cannot both win: each lists after its own claim is complete, so of two
//! claims the later-listing caller sees the other's (or `NAME`, which its winner writes
//! before removing its claim). A caller killed between 1 and its last step leaves a claim
//! that keeps others out until `--break-lock` removes it ([`ObjectPrefix::break_lock`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::remote::{self, S3Url};

use super::store::StateStore;

/// How many times a claim is tried while others claim the same name at once.
pub const CLAIM_TRIES: u32 = 6;

/// The objects under one prefix of a bucket.
pub struct ObjectPrefix {
    bucket: String,
    /// Empty, or ending with `/`.
    prefix: String,
    /// The client to use; `None`: the process's ([`remote::client`]).
    client: Option<Arc<remote::Client>>,
}

impl ObjectPrefix {
    /// The prefix `path` names, if it is an `s3://` address: `s3://bucket`,
    /// `s3://bucket/` or `s3://bucket/a/b[/]` (the prefix `a/b/`).
    ///
    /// # Errors
    /// `s3://` without a bucket.
    pub fn parse(path: &Path) -> Option<Result<ObjectPrefix>> {
        let rest = path.to_str()?.strip_prefix(remote::SCHEME)?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Some(Err(Error::Usage(format!(
                "{}: a state directory in object storage is named s3://BUCKET/PREFIX/",
                path.display()
            ))));
        }
        let mut prefix = prefix.trim_end_matches('/').to_string();
        if !prefix.is_empty() {
            prefix.push('/');
        }
        Some(Ok(ObjectPrefix {
            bucket: bucket.to_string(),
            prefix,
            client: None,
        }))
    }

    /// The same prefix, reached through `client` instead of the process's.
    #[must_use]
    pub fn with_client(self, client: Arc<remote::Client>) -> ObjectPrefix {
        ObjectPrefix {
            client: Some(client),
            ..self
        }
    }

    fn client(&self) -> Result<&remote::Client> {
        match &self.client {
            Some(c) => Ok(c),
            None => remote::client(),
        }
    }

    /// Create the object `name` under the prefix only if none exists, by the claims of the
    /// module doc: `false` when it exists. Of callers racing for one name, at most one gets
    /// `true`.
    ///
    /// # Errors
    /// The store's errors; [`Error::Conflict`] when others claimed the name at the same
    /// moment [`CLAIM_TRIES`] times (or a claim was left by a run that died).
    pub fn create_once(&self, name: &str, data: &[u8]) -> Result<bool> {
        self.create_exclusive(name, data)
    }

    fn url(&self, name: &str) -> Result<S3Url> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(Error::Internal(format!(
                "state directory object name {name:?} is not a plain name"
            )));
        }
        Ok(S3Url {
            bucket: self.bucket.clone(),
            key: format!("{}{name}", self.prefix),
        })
    }

    /// Remove the lock `name` and every claim on it (`--break-lock`: a run that died
    /// holding it or while taking it).
    ///
    /// # Errors
    /// The store's errors.
    pub fn remove_lock_and_claims(&self, name: &str) -> Result<()> {
        for n in self.list(name)? {
            if n == name || n.starts_with(&claim_prefix(name)) {
                self.delete(&n)?;
            }
        }
        Ok(())
    }

    /// One round of the claim protocol (module doc): `Some(won)`, or `None` when others
    /// claim at the same moment (our claim removed).
    fn claim_once(&self, name: &str, data: &[u8]) -> Result<Option<bool>> {
        let claim = format!("{}{}", claim_prefix(name), uuid::Uuid::new_v4().simple());
        let client = self.client()?;
        client
            .put(&self.url(&claim)?, data)
            .map_err(remote::error)?;
        let result = self.settle(name, &claim, data);
        // Our claim goes in every case (after `name` was written when we won).
        let removed = client.delete(&self.url(&claim)?).map_err(remote::error);
        let r = result?;
        removed?;
        Ok(r)
    }

    fn settle(&self, name: &str, claim: &str, data: &[u8]) -> Result<Option<bool>> {
        let seen: Vec<String> = self
            .list(name)?
            .into_iter()
            .filter(|n| n == name || n.starts_with(&claim_prefix(name)))
            .collect();
        if seen.iter().any(|n| n == name) {
            return Ok(Some(false));
        }
        if seen.iter().all(|n| n == claim) {
            self.write_atomic(name, data)?;
            return Ok(Some(true));
        }
        Ok(None)
    }
}

/// The names of the claims on `name`.
fn claim_prefix(name: &str) -> String {
    format!("{name}.claim-")
}

/// A random wait before claiming again (so that contenders do not meet again in step):
/// 50 to 50 + 200 * round ms. Not a timing assumption: any wait is correct.
fn backoff(round: u32) -> Duration {
    let r = u64::from(uuid::Uuid::new_v4().as_bytes()[0]);
    Duration::from_millis(50 + r * 200 * u64::from(round) / 255)
}

impl StateStore for ObjectPrefix {
    fn describe(&self, name: &str) -> String {
        format!("{}{}/{}{name}", remote::SCHEME, self.bucket, self.prefix)
    }

    fn read(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.client()?
            .get_whole(&self.url(name)?)
            .map_err(remote::error)
    }

    fn write_atomic(&self, name: &str, data: &[u8]) -> Result<()> {
        self.client()?
            .put(&self.url(name)?, data)
            .map_err(remote::error)
    }

    fn create_exclusive(&self, name: &str, data: &[u8]) -> Result<bool> {
        for round in 1..=CLAIM_TRIES {
            if let Some(won) = self.claim_once(name, data)? {
                return Ok(won);
            }
            std::thread::sleep(backoff(round));
        }
        Err(Error::Conflict(format!(
            "{}: other runs were taking this lock at the same moment {CLAIM_TRIES} times, or one died while taking it (a {}* object); not starting (if no other run is active, run again with --break-lock)",
            self.describe(name),
            claim_prefix(name)
        )))
    }

    fn delete(&self, name: &str) -> Result<bool> {
        let url = self.url(name)?;
        let client = self.client()?;
        // S3's DELETE answers the same whether the object was there: ask first.
        match client.len(&url) {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(remote::error(e)),
        }
        client.delete(&url).map_err(remote::error)?;
        Ok(true)
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let full = format!("{}{prefix}", self.prefix);
        let keys = self
            .client()?
            .list(&self.bucket, &full)
            .map_err(remote::error)?;
        Ok(keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_string))
            .filter(|n| !n.contains('/') && !n.starts_with('.'))
            .collect())
    }

    fn location(&self, name: &str) -> String {
        self.describe(name)
    }

    fn break_lock(&self, name: &str) -> Result<()> {
        self.remove_lock_and_claims(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse() {
        let p = |s: &str| ObjectPrefix::parse(Path::new(s)).unwrap().unwrap();
        assert_eq!(p("s3://mail").prefix, "");
        assert_eq!(p("s3://mail/").prefix, "");
        assert_eq!(p("s3://mail/a/b").prefix, "a/b/");
        assert_eq!(
            p("s3://mail/a/b/").location("x.mdump"),
            "s3://mail/a/b/x.mdump"
        );
        assert_eq!(p("s3://mail").location("x"), "s3://mail/x");
        assert!(ObjectPrefix::parse(Path::new("/tmp/x")).is_none());
        assert!(ObjectPrefix::parse(Path::new("s3:///x")).unwrap().is_err());
        assert!(p("s3://m/p").url("../x").is_err() && p("s3://m/p").url("a/b").is_err());
    }

    #[test]
    fn backoff_grows_and_stays_bounded() {
        for round in 1..=CLAIM_TRIES {
            let d = backoff(round);
            assert!(d >= Duration::from_millis(50));
            assert!(d <= Duration::from_millis(50 + 200 * u64::from(round)));
        }
    }
}
