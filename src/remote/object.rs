//! Reading an object by ranges ([`Object`]) and writing one as a multipart upload
//! ([`Upload`]).

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::{Arc, Mutex, PoisonError};

use super::client::{Client, Range};
use super::{S3Error, S3Url, error};
use crate::error::Result;

/// Reads are fetched in blocks of this size, aligned, so that the many small reads of an
/// archive's index cost few requests.
const BLOCK: u64 = 256 << 10;
/// The object's last bytes fetched when it is opened: its length comes with them, and
/// they hold the footer and, for most archives, the directory and catalogs the index needs.
const TAIL: u64 = 1 << 20;
/// Reads that go on where the last fetch ended fetch up to this many blocks at once
/// (doubling from one), so reading a whole archive does not cost a request per block.
const MAX_RUN: u64 = 32;
/// Blocks kept (4 runs of [`MAX_RUN`]: 32 MiB).
const KEEP: usize = 4 * MAX_RUN as usize;

/// An object read by ranged requests, with a cache of the blocks read.
pub struct Object {
    client: &'static Client,
    url: S3Url,
    len: u64,
    /// The object's last bytes, fetched when it was opened, and where they start.
    tail: (u64, Vec<u8>),
    cache: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    blocks: HashMap<u64, Arc<Vec<u8>>>,
    order: VecDeque<u64>,
    /// The block after the last fetch, and how many blocks that fetch took.
    next: u64,
    run: u64,
}

impl Object {
    /// Open the object `url` names: one ranged read of its last bytes (which tells its
    /// length).
    ///
    /// # Errors
    /// [`Error::Usage`] without settings (the text says what is missing),
    /// [`Error::NotFound`] for a missing bucket or key, else [`Error::Io`].
    pub fn open(url: &S3Url) -> Result<Object> {
        let client = super::client()?;
        let (tail, len) = match client.get(url, Range::Tail(TAIL)) {
            Ok((bytes, len)) => (bytes, len),
            // An empty object has no range to read (416 InvalidRange).
            Err(e) if e.status == Some(416) => (Vec::new(), client.len(url).map_err(error)?),
            Err(e) => return Err(error(e)),
        };
        let start = len.saturating_sub(tail.len() as u64);
        Ok(Object {
            client,
            url: url.clone(),
            len,
            tail: (start, tail),
            cache: Mutex::new(Cache::default()),
        })
    }

    /// The object's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Read up to `buf.len()` bytes at `off` (0 at or past the end).
    ///
    /// # Errors
    /// The store's error.
    pub fn read_at(&self, buf: &mut [u8], off: u64) -> io::Result<usize> {
        if off >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let (start, tail) = (&self.tail.0, &self.tail.1);
        if off >= *start {
            return Ok(copy(buf, tail, off - start));
        }
        let b = off / BLOCK;
        let block = match self.cached(b) {
            Some(block) => block,
            None => self.fetch(b)?,
        };
        Ok(copy(buf, &block, off - b * BLOCK))
    }

    fn cached(&self, b: u64) -> Option<Arc<Vec<u8>>> {
        let c = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        c.blocks.get(&b).cloned()
    }

    /// Fetch block `b`, and after it as many as the run of reads in order says; keep them.
    fn fetch(&self, b: u64) -> io::Result<Arc<Vec<u8>>> {
        let run = {
            let mut c = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            c.run = if b == c.next {
                (c.run * 2).clamp(1, MAX_RUN)
            } else {
                1
            };
            c.next = b + c.run;
            c.run
        };
        let start = b * BLOCK;
        let end = ((b + run) * BLOCK).min(self.len);
        let (bytes, _) = self.client.get(&self.url, Range::Span(start, end))?;
        if bytes.len() as u64 != end - start {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: asked for bytes {start}..{end}, got {} (the object changed?)",
                    self.url,
                    bytes.len()
                ),
            ));
        }
        let mut c = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let mut first = None;
        for (i, chunk) in bytes.chunks(BLOCK as usize).enumerate() {
            let n = b + i as u64;
            let block = Arc::new(chunk.to_vec());
            if first.is_none() {
                first = Some(block.clone());
            }
            if c.blocks.insert(n, block).is_none() {
                c.order.push_back(n);
            }
        }
        while c.order.len() > KEEP {
            if let Some(old) = c.order.pop_front() {
                c.blocks.remove(&old);
            }
        }
        first.ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
    }
}

fn copy(buf: &mut [u8], from: &[u8], at: u64) -> usize {
    let at = usize::try_from(at).unwrap_or(usize::MAX).min(from.len());
    let n = buf.len().min(from.len() - at);
    buf[..n].copy_from_slice(&from[at..at + n]);
    n
}

/// The most parts an upload may have (S3's limit).
const MAX_PARTS: u16 = 10_000;

/// The size of part `n` (from 1) of an upload: 8 MiB, one more 8 MiB every 1000 parts,
/// so the 10,000 parts S3 allows hold 440 GiB.
fn part_size(n: u16) -> usize {
    (8 << 20) * (1 + usize::from(n.saturating_sub(1)) / 1000)
}

/// An object written in order: kept in memory up to one part, sent as a multipart upload
/// (one PUT if it stays under one part). It appears under its key only at
/// [`Upload::finish`]; dropped unfinished, the upload is aborted and nothing appears.
pub struct Upload {
    client: &'static Client,
    url: S3Url,
    buf: Vec<u8>,
    id: Option<String>,
    etags: Vec<String>,
    done: bool,
}

impl Upload {
    /// Start writing the object `url` names (nothing is sent before one part is full).
    ///
    /// # Errors
    /// [`Error::Usage`] without settings (the text says what is missing).
    pub fn new(url: &S3Url) -> Result<Upload> {
        let client = super::client()?;
        Ok(Upload {
            client,
            url: url.clone(),
            buf: Vec::with_capacity(part_size(1)),
            id: None,
            etags: Vec::new(),
            done: false,
        })
    }

    fn send_part(&mut self) -> Result<(), S3Error> {
        let id = match &self.id {
            Some(id) => id.clone(),
            None => {
                let id = self.client.create_multipart(&self.url)?;
                self.id = Some(id.clone());
                id
            }
        };
        let n = u16::try_from(self.etags.len() + 1).unwrap_or(u16::MAX);
        let etag = self.client.upload_part(&self.url, &id, n, &self.buf)?;
        self.etags.push(etag);
        self.buf.clear();
        Ok(())
    }

    /// Send what is left and complete the upload: the object appears now, whole.
    ///
    /// # Errors
    /// The store's error ([`error`]; the upload is then aborted).
    pub fn finish(mut self) -> Result<()> {
        self.complete().map_err(error)
    }

    fn complete(&mut self) -> Result<(), S3Error> {
        if self.id.is_none() {
            self.client.put(&self.url, &self.buf)?;
        } else {
            if !self.buf.is_empty() {
                self.send_part()?;
            }
            let id = self.id.clone().unwrap_or_default();
            self.client.complete(&self.url, &id, &self.etags)?;
        }
        self.done = true;
        Ok(())
    }
}

impl io::Write for Upload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = u16::try_from(self.etags.len() + 1).unwrap_or(u16::MAX);
        if n > MAX_PARTS {
            return Err(io::Error::other(format!(
                "{}: over the {MAX_PARTS} parts of a multipart upload",
                self.url
            )));
        }
        let room = part_size(n).saturating_sub(self.buf.len());
        let take = data.len().min(room);
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() >= part_size(n) {
            self.send_part()?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done
            && let Some(id) = &self.id
        {
            // Best effort: a store that cannot be reached now keeps the parts until a
            // lifecycle rule (AbortIncompleteMultipartUpload) drops them; no object appears.
            let _ = self.client.abort(&self.url, id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_to_hold_a_large_archive() {
        assert_eq!(part_size(1), 8 << 20);
        assert_eq!(part_size(1000), 8 << 20);
        assert_eq!(part_size(1001), 16 << 20);
        let total: u64 = (1..=MAX_PARTS).map(|n| part_size(n) as u64).sum();
        assert!(total > 400 << 30);
    }

    #[test]
    fn copies_stop_at_the_end() {
        let mut b = [0u8; 4];
        assert_eq!(copy(&mut b, b"abcdef", 4), 2);
        assert_eq!(&b[..2], b"ef");
        assert_eq!(copy(&mut b, b"abc", 3), 0);
    }
}
