//! Parallel zstd compression of data frames, written in order.
//!
//! The producer hands whole decompressed frames to [`FramePipeline::submit`]; worker threads
//! compress each as an independent zstd frame (with content size and checksum); frames are
//! written to the sink in submission order. Memory is bounded: at most `2 * threads` frames
//! are submitted and not yet written (the producer waits beyond that), plus the one being
//! filled. The output does not depend on the number of threads.
//!
//! Nothing is allocated per frame once the pipeline runs: each worker keeps one zstd
//! context, frame buffers go back to the producer after compression ([`FramePipeline::buffer`])
//! and output buffers go back to the workers once written. (Fresh 8-16 MiB buffers per frame
//! cost page faults and kernel page clearing: about 5% of a backup's CPU.)

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::index::FrameEntry;

type Job = (u64, Vec<u8>);
type Done = (u64, io::Result<Compressed>);

/// A compressed frame and the CRC-32 of its bytes (computed by the worker, off the
/// producer's thread).
pub struct Compressed {
    bytes: Vec<u8>,
    crc32: u32,
}

/// Buffers handed back for reuse (at most a few: as many as frames circulate).
#[derive(Clone)]
struct Pool {
    bufs: Arc<Mutex<Vec<Vec<u8>>>>,
    /// A buffer that held more than this is dropped, not kept: a pooled buffer keeps the
    /// memory it ever used, so an odd 16 MiB frame must not make every buffer 16 MiB.
    keep: usize,
}

/// Buffers kept beyond this are dropped (more never circulate with `2 * threads` in flight).
const POOL_MAX: usize = 16;

impl Pool {
    fn new(keep: usize) -> Self {
        Pool {
            bufs: Arc::default(),
            keep,
        }
    }
    fn take(&self) -> Option<Vec<u8>> {
        self.bufs.lock().ok()?.pop()
    }
    fn give(&self, mut buf: Vec<u8>) {
        if buf.len() > self.keep {
            return;
        }
        buf.clear();
        if let Ok(mut p) = self.bufs.lock()
            && p.len() < POOL_MAX
        {
            p.push(buf);
        }
    }
}

/// Compress `data` with `comp` into a buffer from `outputs`, with its CRC-32.
fn compress_and_hash(
    comp: &mut FrameCompressor,
    data: &[u8],
    outputs: &Pool,
) -> io::Result<Compressed> {
    let mut bytes = outputs.take().unwrap_or_default();
    comp.compress_into(data, &mut bytes)?;
    let crc32 = crc32fast::hash(&bytes);
    Ok(Compressed { bytes, crc32 })
}

/// A sink that counts the bytes written through it.
pub struct CountingWriter<W: Write> {
    inner: W,
    written: u64,
}

impl<W: Write> CountingWriter<W> {
    /// Wrap `inner`.
    pub fn new(inner: W) -> Self {
        CountingWriter { inner, written: 0 }
    }
    /// Bytes written so far.
    pub fn position(&self) -> u64 {
        self.written
    }
    /// The wrapped writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A zstd context set up for archive frames (checksum, content size, 8 MiB window), reused
/// from frame to frame. The bytes it makes do not depend on what it compressed before.
pub struct FrameCompressor {
    c: zstd::bulk::Compressor<'static>,
    level: i32,
    /// Whether the context holds the parameters for full-size frames ([`TUNED_FROM`]).
    tuned: bool,
}

/// Frames from this size up are compressed, at the default level 3, with a 256 Ki-entry
/// hash table (zstd's level 3 has 128 Ki) and a minimum match of 6 bytes (5): on the
/// benchmark corpus (mail with text and base64 attachments, 8 MiB frames) that compresses
/// about 4% faster and 0.25% smaller. Smaller frames (the last one, test vectors) keep
/// zstd's own parameters for the level.
const TUNED_FROM: usize = 1 << 20;

impl FrameCompressor {
    /// A context for `level`.
    ///
    /// # Errors
    /// A level or parameter zstd refuses.
    pub fn new(level: i32) -> io::Result<Self> {
        use zstd::zstd_safe::CParameter;
        let mut c = zstd::bulk::Compressor::new(level)?;
        // Checksums let readers detect damage in any single frame.
        c.set_parameter(CParameter::ChecksumFlag(true))?;
        c.set_parameter(CParameter::ContentSizeFlag(true))?;
        c.set_parameter(CParameter::WindowLog(23))?;
        Ok(FrameCompressor {
            c,
            level,
            tuned: false,
        })
    }

    /// Compress `data` as one frame into `out` (replacing what it held).
    ///
    /// # Errors
    /// zstd errors.
    pub fn compress_into(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
        use zstd::zstd_safe::CParameter;
        let tune = self.level == 3 && data.len() >= TUNED_FROM;
        if tune != self.tuned {
            // 0 = zstd's value for the level.
            let (hash, min) = if tune { (18, 6) } else { (0, 0) };
            self.c.set_parameter(CParameter::HashLog(hash))?;
            self.c.set_parameter(CParameter::MinMatch(min))?;
            self.tuned = tune;
        }
        out.clear();
        out.reserve(zstd::zstd_safe::compress_bound(data.len()));
        self.c.compress_to_buffer(data, out)?;
        Ok(())
    }
}

/// Compress one frame.
///
/// # Errors
/// zstd errors.
pub fn compress_frame(level: i32, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    FrameCompressor::new(level)?.compress_into(data, &mut out)?;
    Ok(out)
}

/// Frame and output buffers that held up to this many bytes are reused.
const KEEP: usize = super::spec::FRAME_TARGET + (1 << 20);

/// Orders and writes frames compressed by a pool of worker threads.
pub struct FramePipeline {
    /// The context for compression on the caller's thread (no workers), made when first used.
    local: Option<FrameCompressor>,
    level: i32,
    /// Frame buffers compressed and free again.
    inputs: Pool,
    /// Output buffers written and free again.
    outputs: Pool,
    jobs: Option<SyncSender<Job>>,
    done: Option<Receiver<Done>>,
    workers: Vec<JoinHandle<()>>,
    submitted: u64,
    next_write: u64,
    pending: BTreeMap<u64, Compressed>,
    max_in_flight: u64,
    /// (usize, first) of submitted frames not yet written, by sequence number.
    info: BTreeMap<u64, (u64, Option<u64>)>,
    /// Table of written frames.
    pub frames: Vec<FrameEntry>,
}

impl FramePipeline {
    /// Start `threads` workers (0 or 1: compress on the caller's thread).
    pub fn new(level: i32, threads: usize) -> Self {
        let mut p = FramePipeline {
            local: None,
            level,
            inputs: Pool::new(KEEP),
            outputs: Pool::new(KEEP),
            jobs: None,
            done: None,
            workers: Vec::new(),
            submitted: 0,
            next_write: 0,
            pending: BTreeMap::new(),
            max_in_flight: 2 * threads.max(1) as u64,
            info: BTreeMap::new(),
            frames: Vec::new(),
        };
        if threads > 1 {
            let (jtx, jrx) = sync_channel::<Job>(threads * 2);
            let (dtx, drx) = sync_channel::<Done>(threads * 3 + 2);
            let jrx = std::sync::Arc::new(std::sync::Mutex::new(jrx));
            for _ in 0..threads {
                let jrx = jrx.clone();
                let dtx = dtx.clone();
                let (inputs, outputs) = (p.inputs.clone(), p.outputs.clone());
                p.workers.push(std::thread::spawn(move || {
                    let mut comp = None;
                    loop {
                        let job = match jrx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok((seq, data)) = job else { return };
                        let out = match &mut comp {
                            Some(c) => compress_and_hash(c, &data, &outputs),
                            None => FrameCompressor::new(level)
                                .and_then(|c| compress_and_hash(comp.insert(c), &data, &outputs)),
                        };
                        inputs.give(data);
                        if dtx.send((seq, out)).is_err() {
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

    /// An empty buffer for the next frame: one a worker has finished with, or a new one with
    /// room for `capacity` bytes.
    pub fn buffer(&self, capacity: usize) -> Vec<u8> {
        self.inputs
            .take()
            .unwrap_or_else(|| Vec::with_capacity(capacity))
    }

    /// Queue one decompressed frame; writes whatever frames are ready, in order.
    ///
    /// # Errors
    /// Compression or write errors.
    pub fn submit<W: Write>(
        &mut self,
        data: Vec<u8>,
        first: Option<u64>,
        out: &mut CountingWriter<W>,
    ) -> io::Result<()> {
        let seq = self.submitted;
        self.submitted += 1;
        self.info.insert(seq, (data.len() as u64, first));
        match &self.jobs {
            None => {
                let comp = match &mut self.local {
                    Some(c) => c,
                    None => self.local.insert(FrameCompressor::new(self.level)?),
                };
                let c = compress_and_hash(comp, &data, &self.outputs)?;
                self.inputs.give(data);
                self.pending.insert(seq, c);
            }
            Some(_) => {
                // Collect finished frames first so workers never block on a full result queue.
                self.collect(out, self.max_in_flight)?;
                let sent = self.jobs.as_ref().map(|tx| tx.send((seq, data)).is_ok());
                if sent != Some(true) {
                    return Err(io::Error::other("compression worker stopped"));
                }
            }
        }
        self.collect(out, self.max_in_flight)
    }

    /// Receive finished frames and write those that are next in order, waiting until at
    /// most `max_in_flight` submitted frames are unwritten.
    fn collect<W: Write>(
        &mut self,
        out: &mut CountingWriter<W>,
        max_in_flight: u64,
    ) -> io::Result<()> {
        loop {
            if let Some(rx) = &self.done {
                loop {
                    match rx.try_recv() {
                        Ok((seq, res)) => {
                            self.pending.insert(seq, res?);
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            return Err(io::Error::other("compression worker stopped"));
                        }
                    }
                }
            }
            while let Some(c) = self.pending.remove(&self.next_write) {
                let (usize, first) = self.info.remove(&self.next_write).unwrap_or((0, None));
                let offset = out.position();
                out.write_all(&c.bytes)?;
                self.frames.push(FrameEntry {
                    offset,
                    csize: c.bytes.len() as u64,
                    usize,
                    first,
                    crc32: Some(c.crc32),
                });
                self.outputs.give(c.bytes);
                self.next_write += 1;
            }
            if self.submitted - self.next_write <= max_in_flight {
                return Ok(());
            }
            let rx = self
                .done
                .as_ref()
                .ok_or_else(|| io::Error::other("frame lost"))?;
            let (seq, res) = rx
                .recv()
                .map_err(|_| io::Error::other("compression worker stopped"))?;
            self.pending.insert(seq, res?);
        }
    }

    /// Wait for every queued frame and write it; stop the workers.
    ///
    /// # Errors
    /// Compression or write errors.
    pub fn flush_all<W: Write>(&mut self, out: &mut CountingWriter<W>) -> io::Result<()> {
        self.collect(out, 0)?;
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join(); // A panicked worker already surfaced as a missing frame above.
        }
        Ok(())
    }
}
