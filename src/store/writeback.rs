//! Drop-behind for the files a restore writes.
//!
//! A restore writes far more than it will read back: left alone, every byte stays dirty in
//! the page cache until the final `syncfs`, which then writes everything at once while
//! nothing else runs, and the restored mail evicts the server's own working set (Dovecot's
//! indexes, other users' mail). So each file, once written, is handed to [`Writeback`]:
//! its writeback starts at once (`POSIX_FADV_DONTNEED` starts writeback of dirty pages
//! without waiting for it), and a few files later, when that I/O has had time to
//! complete, its now clean pages are dropped (the same advice again). The disk then works
//! while the restore decompresses, and the page cache recycles a small set of pages
//! instead of taking fresh ones (which, on a VM whose free memory goes back to the host,
//! costs a host fault per page).
//!
//! Durability does not depend on any of this: the `syncfs` before anything is shown still
//! makes every file durable. Advice the kernel refuses changes nothing and is not
//! reported.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Files one writer keeps open, written but not yet dropped from the cache.
const MAX_FILES: usize = 64;
/// Bytes one writer keeps written but not yet dropped from the cache.
const MAX_BYTES: u64 = 32 << 20;
/// Files all writers together keep open (several restore workers, `--jobs`), well under
/// the usual 1,024 descriptors.
const MAX_FILES_ALL: usize = 256;

/// Files held by every [`Writeback`] of the process.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Written files whose pages are dropped once written back (see the module text).
#[derive(Default)]
pub(crate) struct Writeback {
    files: VecDeque<(File, u64)>,
    bytes: u64,
}

impl Writeback {
    /// `f` is completely written (`len` bytes): start its writeback, and drop the pages
    /// of the files written long enough before.
    pub(crate) fn written(&mut self, f: File, len: u64) {
        advise_dontneed(&f);
        self.files.push_back((f, len));
        self.bytes += len;
        HELD.fetch_add(1, Ordering::Relaxed);
        while self.files.len() > MAX_FILES
            || self.bytes > MAX_BYTES
            || (HELD.load(Ordering::Relaxed) > MAX_FILES_ALL && self.files.len() > 1)
        {
            self.retire();
        }
    }

    /// Drop the oldest file's pages (those written back by now) and close it.
    fn retire(&mut self) {
        if let Some((f, len)) = self.files.pop_front() {
            advise_dontneed(&f);
            self.bytes -= len;
            HELD.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Writeback {
    fn drop(&mut self) {
        while !self.files.is_empty() {
            self.retire();
        }
    }
}

/// `POSIX_FADV_DONTNEED` on the whole file: starts writeback of its dirty pages and drops
/// its clean ones.
fn advise_dontneed(f: &File) {
    // Advice only: a kernel or file system that refuses it leaves the pages cached,
    // which is how things would be without it; nothing is lost or misreported.
    let _ = rustix::fs::fadvise(f, 0, None, rustix::fs::Advice::DontNeed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn holds_a_bounded_number_of_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut wb = Writeback::default();
        for i in 0..(MAX_FILES + 10) {
            let mut f = File::create(dir.path().join(format!("f{i}"))).unwrap();
            f.write_all(b"x").unwrap();
            wb.written(f, 1);
        }
        assert_eq!(wb.files.len(), MAX_FILES);
        let mut big = File::create(dir.path().join("big")).unwrap();
        big.write_all(b"y").unwrap();
        wb.written(big, MAX_BYTES);
        assert_eq!(
            wb.files.len(),
            1,
            "a file of MAX_BYTES retires all before it"
        );
        drop(wb);
        assert_eq!(std::fs::read(dir.path().join("f3")).unwrap(), b"x");
    }
}
