//! Log lines reach stderr in batches from the tokio workers, and one at a time from every other thread.
//!
//! A `write` system call per line was more than half of what logging a failure cost under load
//! (docs/performance.md, Finding 15). A worker thread keeps its lines in a buffer of its own and writes them with one
//! call when it is about to go idle (the runtime's park hook calls [`flush`]), when the buffer holds [`FLUSH_BYTES`],
//! when its oldest line is [`FLUSH_AGE`] old as another is added, and when the thread stops. So a line is written as
//! soon as its worker has nothing left to do, and under load several lines share a call, without a thread of their
//! own to wake (which cost more than it saved). Each line is still written whole; lines of different workers may
//! reach stderr out of their timestamps' order by up to the time a batch is kept. A process killed without a chance
//! to stop its threads (SIGKILL) loses the lines its workers still kept, at most [`FLUSH_BYTES`] each; SIGTERM
//! writes them all.
//!
//! A thread buffers only once its park hook has run, which makes it a worker of the service's runtime: the database
//! threads, the blocking pool, the main thread and every thread of a test write each line straight away.

use std::cell::RefCell;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// A batch is written once it holds this much (a few dozen lines).
const FLUSH_BYTES: usize = 16 * 1024;

/// A batch is written when a line is added to it this long after its first: a worker that is kept busy, and so never
/// parks, still writes its lines this often.
const FLUSH_AGE: Duration = Duration::from_millis(50);

#[derive(Default)]
struct Batch {
    /// Set once the runtime's park hook has run on this thread.
    worker: bool,
    lines: Vec<u8>,
    /// When the first of `lines` was added.
    since: Option<Instant>,
}

impl Batch {
    /// Writes `line` to `out`, or keeps it with the others until the batch is due.
    fn write(&mut self, line: &[u8], now: Instant, out: &mut impl Write) -> io::Result<()> {
        if !self.worker {
            return out.write_all(line);
        }
        let since = *self.since.get_or_insert(now);
        self.lines.extend_from_slice(line);
        if self.lines.len() >= FLUSH_BYTES || now.duration_since(since) >= FLUSH_AGE {
            self.write_out(out)
        } else {
            Ok(())
        }
    }

    fn write_out(&mut self, out: &mut impl Write) -> io::Result<()> {
        self.since = None;
        if self.lines.is_empty() {
            return Ok(());
        }
        let written = out.write_all(&self.lines);
        // A failed write drops the batch, as it would have dropped each line written on its own.
        self.lines.clear();
        written
    }
}

thread_local! {
    static BATCH: RefCell<Batch> = RefCell::new(Batch::default());
}

/// Writes this thread's pending lines, and from now on lets it keep them between calls: the runtime's
/// `on_thread_park` and `on_thread_stop` hooks call this.
pub fn flush() {
    // During the thread's teardown the batch may be gone already; then there is nothing left to write.
    let _ = BATCH.try_with(|batch| {
        if let Ok(mut batch) = batch.try_borrow_mut() {
            batch.worker = true;
            // Nowhere better to report a failing stderr.
            let _ = batch.write_out(&mut io::stderr());
        }
    });
}

/// Stderr for log lines, through the calling thread's batch when it has one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stderr;

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter
    }
}

/// The writer of one log line: `tracing-subscriber` formats a line whole and writes it with one `write_all`.
pub struct LineWriter;

impl Write for LineWriter {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.write_all(line)?;
        Ok(line.len())
    }

    fn write_all(&mut self, line: &[u8]) -> io::Result<()> {
        let mut stderr = io::stderr();
        // Writing to stderr never logs, so the batch is never borrowed twice; if it were, or if the thread's batch is
        // gone at its end, the line is written on its own.
        BATCH
            .try_with(|batch| {
                batch.try_borrow_mut().ok().map(|mut batch| batch.write(line, Instant::now(), &mut stderr))
            })
            .ok()
            .flatten()
            .unwrap_or_else(|| stderr.write_all(line))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(n: usize) -> Vec<u8> {
        format!("{{\"n\":{n}}}\n").into_bytes()
    }

    #[test]
    fn a_thread_that_is_not_a_worker_writes_each_line_at_once() {
        let (mut batch, mut out, now) = (Batch::default(), Vec::new(), Instant::now());
        batch.write(&line(1), now, &mut out).expect("write");
        batch.write(&line(2), now, &mut out).expect("write");
        assert_eq!(out, [line(1), line(2)].concat());
        assert!(batch.lines.is_empty());
    }

    #[test]
    fn a_worker_keeps_its_lines_until_it_parks() {
        let (mut batch, mut out, now) = (Batch { worker: true, ..Batch::default() }, Vec::new(), Instant::now());
        for n in 0..3 {
            batch.write(&line(n), now + Duration::from_millis(n as u64), &mut out).expect("write");
        }
        assert!(out.is_empty(), "nothing is written before the batch is due");
        batch.write_out(&mut out).expect("write out");
        assert_eq!(out, [line(0), line(1), line(2)].concat(), "every line, whole and in order");
        assert!(batch.lines.is_empty() && batch.since.is_none());
        batch.write_out(&mut out).expect("an empty batch writes nothing");
        assert_eq!(out.len(), [line(0), line(1), line(2)].concat().len());
    }

    #[test]
    fn a_busy_worker_writes_a_full_or_old_batch_without_parking() {
        let (mut batch, mut out, start) = (Batch { worker: true, ..Batch::default() }, Vec::new(), Instant::now());
        let long = vec![b'x'; FLUSH_BYTES / 2];
        batch.write(&long, start, &mut out).expect("write");
        assert!(out.is_empty());
        batch.write(&long, start, &mut out).expect("write");
        assert_eq!(out.len(), FLUSH_BYTES, "a full batch is written with the line that filled it");

        out.clear();
        batch.write(&line(1), start, &mut out).expect("write");
        batch.write(&line(2), start + FLUSH_AGE - Duration::from_millis(1), &mut out).expect("write");
        assert!(out.is_empty(), "younger than FLUSH_AGE: kept");
        batch.write(&line(3), start + FLUSH_AGE, &mut out).expect("write");
        assert_eq!(out, [line(1), line(2), line(3)].concat(), "the line that finds the batch old goes out with it");
        batch.write(&line(4), start + FLUSH_AGE * 3, &mut out).expect("write");
        assert_eq!(out, [line(1), line(2), line(3)].concat(), "a new batch's age counts from its own first line");
    }

    #[test]
    fn a_failed_write_drops_the_batch_and_reports_the_error() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("closed"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut batch = Batch { worker: true, ..Batch::default() };
        batch.write(&line(1), Instant::now(), &mut Broken).expect("kept, not written yet");
        assert!(batch.write_out(&mut Broken).is_err());
        assert!(batch.lines.is_empty() && batch.since.is_none());
    }
}
