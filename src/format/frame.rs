//! Parallel zstd compression of data frames, written in order.
//!
//! The producer hands whole decompressed frames to [`FramePipeline::submit`]; worker threads
//! compress each as an independent zstd frame (with content size and checksum); frames are
//! written to the sink in submission order. Memory is bounded: at most [`IN_FLIGHT`] frames
//! per worker are submitted and not yet written (the producer waits beyond that), plus the
//! one being filled. The output does not depend on the number of threads.
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

/// A frame to make: sequence number, content, and whether it is made of raw blocks.
type Job = (u64, Vec<u8>, bool);
type Done = (u64, io::Result<Compressed>);

/// A compressed frame and the CRC-32 of its bytes (computed by the worker, off the
/// producer's thread).
pub(crate) struct Compressed {
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

/// Frames submitted and not yet written, per worker. Frames are written in order, so the
/// producer waits for the oldest while later ones may be done: with 2 per worker both
/// workers often ran dry behind one slow frame (text after raw-block frames); with 3 the
/// bench corpus's full backup took 2-7% less time, for one more 8 MiB frame per worker.
const IN_FLIGHT: u64 = 3;

/// Buffers kept beyond this are dropped (more never circulate with `IN_FLIGHT * threads` in
/// flight).
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

/// Compress `data` with `comp` (or, `raw`, frame it in raw blocks) into a buffer from
/// `outputs`, with its CRC-32.
fn compress_and_hash(
    comp: &mut FrameCompressor,
    data: &[u8],
    raw: bool,
    outputs: &Pool,
) -> io::Result<Compressed> {
    let mut bytes = outputs.take().unwrap_or_default();
    if raw {
        raw_frame(data, &mut bytes);
    } else {
        comp.compress_into(data, &mut bytes)?;
    }
    let crc32 = crc32fast::hash(&bytes);
    Ok(Compressed { bytes, crc32 })
}

/// A sink that counts the bytes written through it.
pub(crate) struct CountingWriter<W: Write> {
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

/// Frames from this size up are compressed, at level 3, with a 256 Ki-entry
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
    pub(crate) fn compress_into(&mut self, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
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
pub(crate) fn compress_frame(level: i32, data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    FrameCompressor::new(level)?.compress_into(data, &mut out)?;
    Ok(out)
}

/// Largest raw block (RFC 8878 3.1.1.2.4: Block_Maximum_Size, 128 KiB).
const RAW_BLOCK: usize = 128 << 10;

/// `data` as one zstd frame of raw (stored) blocks, into `out` (replacing what it held):
/// what compression at any level costs is skipped for bytes that do not compress. The
/// frame follows spec 3.2 rules 1 and 3 like the compressed ones: content size (4 bytes),
/// content checksum (XXH64), no dictionary, an 8 MiB window.
pub(crate) fn raw_frame(data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(data.len() + data.len() / RAW_BLOCK * 3 + 20);
    out.extend_from_slice(&0xFD2F_B528u32.to_le_bytes());
    // Frame_Header_Descriptor: content size in 4 bytes (flag 2), no single segment,
    // checksum, no dictionary. Then the Window_Descriptor for 2^23 (exponent 13).
    out.push(0b1000_0100);
    out.push(13 << 3);
    // FRAME_MAX (16 MiB) fits in 4 bytes; larger is never asked for.
    out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
    let mut chunks = data.chunks(RAW_BLOCK).peekable();
    if data.is_empty() {
        out.extend_from_slice(&[1, 0, 0]); // one empty last raw block
    }
    while let Some(c) = chunks.next() {
        let last = u32::from(chunks.peek().is_none());
        // Block_Header: Last_Block (bit 0), Block_Type 0 = raw (bits 1-2), Block_Size.
        let header = last | ((c.len() as u32) << 3);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(c);
    }
    let sum = xxh64(data, 0) as u32; // the checksum is the low 4 bytes
    out.extend_from_slice(&sum.to_le_bytes());
}

/// XXH64 (the hash zstd frames checksum their content with, RFC 8878 3.1.1).
pub(crate) fn xxh64(data: &[u8], seed: u64) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const P3: u64 = 0x1656_67B1_9E37_79F9;
    const P4: u64 = 0x85EB_CA77_C2B2_AE63;
    const P5: u64 = 0x27D4_EB2F_1656_67C5;
    fn round(acc: u64, lane: u64) -> u64 {
        acc.wrapping_add(lane.wrapping_mul(P2))
            .rotate_left(31)
            .wrapping_mul(P1)
    }
    fn merge(acc: u64, v: u64) -> u64 {
        (acc ^ round(0, v)).wrapping_mul(P1).wrapping_add(P4)
    }
    let lane = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
    let mut stripes = data.chunks_exact(32);
    let mut h = if data.len() >= 32 {
        let mut v = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
        for s in &mut stripes {
            for (i, acc) in v.iter_mut().enumerate() {
                *acc = round(*acc, lane(&s[i * 8..i * 8 + 8]));
            }
        }
        let mut h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        for x in v {
            h = merge(h, x);
        }
        h
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(data.len() as u64);
    let mut rest = stripes.remainder();
    while rest.len() >= 8 {
        h ^= round(0, lane(&rest[..8]));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        rest = &rest[8..];
    }
    if rest.len() >= 4 {
        let w = u32::from_le_bytes(rest[..4].try_into().unwrap_or([0; 4]));
        h ^= u64::from(w).wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = &rest[4..];
    }
    for &b in rest {
        h ^= u64::from(b).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

/// Blobs smaller than this are compressed with their neighbours: a frame of their own
/// would cost more (the frame closed before them compresses worse) than skipping the
/// compression of a few KiB saves.
pub(crate) const RAW_MIN: usize = 64 << 10;

/// Bytes of each sample the probe of [`incompressible`] compresses.
const PROBE: usize = 8 << 10;

/// Whether `data` (a blob of at least [`RAW_MIN`] bytes) is already compressed (JPEG, PNG,
/// ZIP and Office files, gzip, most PDF, ...), judged by its content, never by a name: four
/// samples of 8 KiB (start, a third, two thirds, end) compressed at level 1 must save less
/// than 3%. Format magic alone would misjudge (a PDF or TIFF may be text or compressed, a
/// ZIP may store its members); the probe costs about 0.1 ms per blob.
pub fn incompressible(data: &[u8]) -> bool {
    if data.len() < RAW_MIN {
        return false;
    }
    let Ok(mut c) = zstd::bulk::Compressor::new(1) else {
        return false;
    };
    let step = (data.len() - PROBE) / 3;
    let (mut inp, mut outp) = (0usize, 0usize);
    for i in 0..4 {
        let s = &data[i * step..i * step + PROBE];
        match c.compress(s) {
            Ok(z) => outp += z.len(),
            Err(_) => return false,
        }
        inp += s.len();
    }
    outp * 100 >= inp * 97
}

/// Frame and output buffers that held up to this many bytes are reused.
const KEEP: usize = super::spec::FRAME_TARGET + (1 << 20);

/// Orders and writes frames compressed by a pool of worker threads.
pub(crate) struct FramePipeline {
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
            max_in_flight: IN_FLIGHT * threads.max(1) as u64,
            info: BTreeMap::new(),
            frames: Vec::new(),
        };
        if threads > 1 {
            let (jtx, jrx) = sync_channel::<Job>(threads * IN_FLIGHT as usize);
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
                        let Ok((seq, data, raw)) = job else { return };
                        let out = match &mut comp {
                            Some(c) => compress_and_hash(c, &data, raw, &outputs),
                            None => FrameCompressor::new(level).and_then(|c| {
                                compress_and_hash(comp.insert(c), &data, raw, &outputs)
                            }),
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

    /// Queue one decompressed frame (`raw`: to be framed in raw blocks, not compressed);
    /// writes whatever frames are ready, in order.
    ///
    /// # Errors
    /// Compression or write errors.
    pub(crate) fn submit<W: Write>(
        &mut self,
        data: Vec<u8>,
        first: Option<u64>,
        raw: bool,
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
                let c = compress_and_hash(comp, &data, raw, &self.outputs)?;
                self.inputs.give(data);
                self.pending.insert(seq, c);
            }
            Some(_) => {
                // Collect finished frames first so workers never block on a full result queue.
                self.collect(out, self.max_in_flight)?;
                let sent = self
                    .jobs
                    .as_ref()
                    .map(|tx| tx.send((seq, data, raw)).is_ok());
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
    pub(crate) fn flush_all<W: Write>(&mut self, out: &mut CountingWriter<W>) -> io::Result<()> {
        self.collect(out, 0)?;
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join(); // A panicked worker already surfaced as a missing frame above.
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh64_reference_values() {
        // From the xxHash reference implementation.
        assert_eq!(xxh64(b"", 0), 0xEF46_DB37_51D8_E999);
        assert_eq!(xxh64(b"a", 0), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(xxh64(b"abc", 0), 0x44BC_2CF5_AD77_0999);
    }

    /// Raw frames decode with zstd (which checks the content checksum) to their content,
    /// and are made of raw blocks only: content plus 3 bytes per 128 KiB block and 14 of
    /// header and checksum.
    #[test]
    fn raw_frames_decode() {
        let mut x = 7u64;
        for n in [
            1usize,
            31,
            32,
            33,
            512,
            RAW_BLOCK,
            RAW_BLOCK + 1,
            3 * RAW_BLOCK + 512,
        ] {
            let data: Vec<u8> = (0..n)
                .map(|_| {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    (x >> 33) as u8
                })
                .collect();
            let mut f = Vec::new();
            raw_frame(&data, &mut f);
            assert_eq!(f.len(), n + n.div_ceil(RAW_BLOCK) * 3 + 14, "n {n}");
            let back = zstd::bulk::decompress(&f, n).unwrap();
            assert_eq!(back, data, "n {n}");
            // A flipped content byte fails the checksum.
            let mut bad = f.clone();
            bad[13] ^= 1;
            assert!(zstd::bulk::decompress(&bad, n).is_err(), "n {n}");
        }
    }

    #[test]
    fn probe_tells_random_from_text() {
        let mut x = 3u64;
        let random: Vec<u8> = (0..200_000)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (x >> 33) as u8
            })
            .collect();
        assert!(incompressible(&random));
        let text = b"Dear all, the quarterly figures are attached.\n".repeat(5000);
        assert!(!incompressible(&text));
        assert!(!incompressible(&random[..RAW_MIN - 1]), "small blobs stay");
    }
}
