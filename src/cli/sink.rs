//! Writing an archive to its destination on a thread of its own ([`write_behind`]).
//!
//! The kernel may make a `write` to a file wait: for writeback it throttles, for block
//! bitmaps, for the discards of a file system mounted with `discard`. Measured on the
//! benchmark machine, the thread that reads the store and feeds the compressors spent about
//! 12% of a full backup in such waits while both compressors ran dry. Writing behind it, on
//! another thread with a bounded queue, lets the backup go on reading and compressing.

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

/// Bytes sent to the writing thread at a time.
const CHUNK: usize = 1 << 20;

/// Chunks queued for the writing thread at most (the memory bound: `QUEUE + 2` chunks).
const QUEUE: usize = 8;

/// The writer [`write_behind`] hands to its closure: it collects bytes into chunks and
/// queues full ones for the writing thread.
struct Behind {
    buf: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    /// Chunks written and free again.
    free: Receiver<Vec<u8>>,
}

fn stopped() -> io::Error {
    io::Error::other("the archive's writing thread stopped")
}

impl Behind {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self
            .free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.buf, next);
        let tx = self.tx.as_ref().ok_or_else(stopped)?;
        tx.send(full).map_err(|_| stopped())
    }
}

impl Write for Behind {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = (CHUNK - self.buf.len()).min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    /// Queues what is buffered; it reaches `dest` when the writing thread gets to it.
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Run `f` with a writer whose bytes a second thread writes to `dest`, in order.
///
/// Returns what `f` returned and how writing to `dest` ended (including its final
/// `flush`). When writing to `dest` fails, the writer given to `f` fails from then on, so
/// `f` returns early; the second result then holds the cause.
pub fn write_behind<T>(
    dest: &mut (dyn Write + Send),
    f: impl FnOnce(&mut dyn Write) -> T,
) -> (T, io::Result<()>) {
    let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE);
    let (free_tx, free) = sync_channel::<Vec<u8>>(2);
    std::thread::scope(|s| {
        let writer = s.spawn(move || -> io::Result<()> {
            for mut chunk in rx {
                dest.write_all(&chunk)?;
                chunk.clear();
                let _ = free_tx.try_send(chunk); // Kept for reuse if the queue has room.
            }
            dest.flush()
        });
        let mut w = Behind {
            buf: Vec::with_capacity(CHUNK),
            tx: Some(tx),
            free,
        };
        let r = f(&mut w);
        let queued = w.send();
        w.tx = None; // The writing thread ends once it has written everything queued.
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the archive's writing thread panicked")));
        (r, written.and(queued))
    })
}

#[cfg(test)]
mod tests {
    use super::write_behind;
    use std::io::{self, Write};

    #[test]
    fn bytes_arrive_in_order_and_whole() {
        let mut dest = Vec::new();
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        let (r, w) = write_behind(&mut dest, |out| {
            out.write_all(&data[..10])?;
            out.write_all(&data[10..3_000_000])?;
            out.flush()?;
            out.write_all(&data[3_000_000..])
        });
        r.unwrap();
        w.unwrap();
        assert!(dest == data);
    }

    /// A destination that takes `room` bytes, then fails.
    struct Full {
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failing_destination_stops_the_producer_and_names_the_cause() {
        let mut dest = Full { room: 3 << 20 };
        let mut sent = 0usize;
        let (r, w) = write_behind(&mut dest, |out| -> io::Result<()> {
            let block = vec![7u8; 1 << 16];
            loop {
                out.write_all(&block)?;
                sent += block.len();
                assert!(sent < 1 << 30, "the producer was never stopped");
            }
        });
        assert!(r.is_err());
        assert_eq!(w.unwrap_err().kind(), io::ErrorKind::StorageFull);
    }
}
