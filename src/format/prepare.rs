//! What the writer computes from a message's bytes before it stores them (the SHA-256, the
//! attachments taken out, their SHA-256 and whether they compress), computed ahead of the
//! writer on worker threads, in order.
//!
//! The thread that reads the store and fills frames was a backup's bottleneck: it hashed
//! and split every message itself while the compressors waited. A [`Preparer`] takes the
//! bytes of the next messages (read by that thread, in store order) and hands each back
//! with its [`Prepared`] facts in the same order; the writer then only decides (duplicate,
//! known to the chain, in parts) and copies. The facts are pure functions of the bytes and
//! the writer's settings, so the archive is byte for byte the one the writer would make
//! computing them itself.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::mime::split::Split;

/// The facts the writer needs about a message's bytes.
pub(crate) struct Prepared {
    /// SHA-256 of the whole message.
    pub digest: [u8; 32],
    /// The message in parts, when it is to be stored so (see [`split_checked`]).
    pub split: Option<PreparedSplit>,
}

/// A message split into parts, with what the writer needs about each blob.
pub(crate) struct PreparedSplit {
    /// The parts, checked to give the message back exactly.
    pub split: Split,
    /// Per blob, in order: its SHA-256 and whether it goes into raw frames.
    pub blobs: Vec<BlobFacts>,
}

/// What the writer needs about one blob.
#[derive(Clone, Copy)]
pub(crate) struct BlobFacts {
    /// SHA-256 of the blob's bytes.
    pub digest: [u8; 32],
    /// Its bytes do not compress ([`super::frame::incompressible`]).
    pub raw: bool,
}

impl BlobFacts {
    /// The facts of `blob`.
    pub fn of(blob: &[u8]) -> Self {
        BlobFacts {
            digest: Sha256::digest(blob).into(),
            raw: super::frame::incompressible(blob),
        }
    }
}

/// The writer's settings the facts depend on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PrepareParams {
    /// Split messages with base64 attachments of at least this many encoded bytes; 0 never.
    pub split_min: usize,
}

/// The parts of a message read whole (`bytes`) when it has base64 attachments of at least
/// `split_min` encoded bytes, checked to give `bytes` back exactly (spec 7.5 "Checks before
/// writing").
pub(crate) fn split_checked(bytes: &[u8], split_min: usize) -> Option<Split> {
    if split_min == 0 {
        return None;
    }
    let split = crate::mime::split::split(bytes, split_min)?;
    crate::mime::parts::matches(&split.parts, &split.data, &split.blobs, bytes).then_some(split)
}

/// The facts of `bytes` under `params`.
pub(crate) fn prepare(bytes: &[u8], params: PrepareParams) -> Prepared {
    let digest = Sha256::digest(bytes).into();
    let split = split_checked(bytes, params.split_min).map(|split| {
        let blobs = split.blobs.iter().map(|b| BlobFacts::of(b)).collect();
        PreparedSplit { split, blobs }
    });
    Prepared { digest, split }
}

type Job = (u64, Vec<u8>);
type Done = (u64, Vec<u8>, Prepared);

/// Prepares messages on worker threads and hands them back in the order they were given.
pub(crate) struct Preparer {
    params: PrepareParams,
    jobs: Option<Sender<Job>>,
    done: Option<Receiver<Done>>,
    workers: Vec<JoinHandle<()>>,
    submitted: u64,
    taken: u64,
    /// Bytes given and not yet taken back.
    pending_bytes: usize,
    /// Finished out of order, by sequence number; or, without workers, everything given.
    ready: BTreeMap<u64, (Vec<u8>, Option<Prepared>)>,
}

impl Preparer {
    /// Start `threads` workers (0 or 1: prepare on the caller's thread, when taken).
    pub fn new(params: PrepareParams, threads: usize) -> Self {
        let mut p = Preparer {
            params,
            jobs: None,
            done: None,
            workers: Vec::new(),
            submitted: 0,
            taken: 0,
            pending_bytes: 0,
            ready: BTreeMap::new(),
        };
        if threads > 1 {
            let (jtx, jrx) = channel::<Job>();
            let (dtx, drx) = channel::<Done>();
            let jrx = Arc::new(Mutex::new(jrx));
            for _ in 0..threads {
                let (jrx, dtx) = (jrx.clone(), dtx.clone());
                p.workers.push(std::thread::spawn(move || {
                    loop {
                        let job = match jrx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok((seq, bytes)) = job else { return };
                        let facts = prepare(&bytes, params);
                        if dtx.send((seq, bytes, facts)).is_err() {
                            return;
                        }
                    }
                }));
            }
            p.jobs = Some(jtx);
            p.done = Some(drx);
        }
        p
    }

    /// Bytes of the messages given and not yet taken back.
    pub fn in_flight_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Give the next message's bytes.
    pub fn give(&mut self, bytes: Vec<u8>) {
        let seq = self.submitted;
        self.submitted += 1;
        self.pending_bytes += bytes.len();
        let unsent = match &self.jobs {
            Some(tx) => tx.send((seq, bytes)).err().map(|e| e.0.1),
            None => Some(bytes),
        };
        if let Some(bytes) = unsent {
            // No workers (or they stopped): prepared when taken.
            self.ready.insert(seq, (bytes, None));
        }
    }

    /// The oldest message given and not taken back, with its facts (waiting for them);
    /// `None` when every message given was taken.
    ///
    /// # Errors
    /// [`Error::Internal`] when a worker stopped holding a message (it panicked).
    pub fn take(&mut self) -> Result<Option<(Vec<u8>, Prepared)>> {
        if self.taken == self.submitted {
            return Ok(None);
        }
        let seq = self.taken;
        while !self.ready.contains_key(&seq) {
            match self.done.as_ref().map(Receiver::recv) {
                Some(Ok((s, bytes, facts))) => {
                    self.ready.insert(s, (bytes, Some(facts)));
                }
                _ => return Err(Error::Internal("a message preparing thread stopped".into())),
            }
        }
        let Some((bytes, facts)) = self.ready.remove(&seq) else {
            return Err(Error::Internal("a prepared message went missing".into()));
        };
        self.taken += 1;
        self.pending_bytes -= bytes.len();
        let facts = facts.unwrap_or_else(|| prepare(&bytes, self.params));
        Ok(Some((bytes, facts)))
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.jobs = None;
        self.done = None;
        for w in self.workers.drain(..) {
            let _ = w.join(); // A worker only computes; a panic there was already seen as a loss.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_back_in_order_with_their_facts() {
        for threads in [1, 3] {
            let mut p = Preparer::new(PrepareParams { split_min: 0 }, threads);
            let msgs: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; 1000 + usize::from(i)]).collect();
            for m in &msgs[..30] {
                p.give(m.clone());
            }
            assert_eq!(p.in_flight_bytes(), (1000..1030).sum::<usize>());
            let mut got = Vec::new();
            for m in &msgs[30..] {
                got.push(p.take().unwrap().unwrap());
                p.give(m.clone());
            }
            while let Some(x) = p.take().unwrap() {
                got.push(x);
            }
            assert_eq!(p.in_flight_bytes(), 0);
            for (m, (bytes, facts)) in msgs.iter().zip(&got) {
                assert_eq!(bytes, m);
                assert_eq!(facts.digest, <[u8; 32]>::from(Sha256::digest(m)));
                assert!(facts.split.is_none());
            }
        }
    }
}
