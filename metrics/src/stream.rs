//! A `/metrics` page written as a stream of chunks, for a daemon whose page grows with what it
//! holds (the collector's per-node series): the page is never in memory whole, only the chunk
//! being filled and the few in flight to the scraper.
//!
//! The renderer runs on the blocking pool and writes into a [`ChunkWriter`]; each full chunk
//! (about [`CHUNK_BYTES`]) goes into a bounded channel that the HTTP response body reads from
//! (see `http::streamed_metrics_routes`). A slow scraper therefore slows the renderer down
//! instead of letting the page pile up in memory, and a scraper that hangs up stops it
//! ([`ScraperGone`]).
//!
//! The text format wants every family's samples together, so a page that cannot be held
//! whole is written family by family: [`write_by_family`] renders every item once per
//! family into an [`Exposition::only`] and drains it as it goes.

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::text::Exposition;

/// A chunk is sent once it holds about this much text.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// Chunks that may wait for the scraper; then the renderer waits. Memory per scrape is about
/// `(CHUNKS_IN_FLIGHT + 1) * CHUNK_BYTES`, whatever the page's size.
pub const CHUNKS_IN_FLIGHT: usize = 4;

/// What a body stream carries: text, or the error that cuts the response short (so a scrape
/// whose renderer failed is a failed scrape, never a page that merely ends early).
pub type Chunk = Result<Bytes, std::io::Error>;

/// The scraper hung up (or the response was dropped): stop rendering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the scraper went away before the page was written")]
pub struct ScraperGone;

/// Collects text into chunks and sends each full one to the response body, waiting while
/// [`CHUNKS_IN_FLIGHT`] are unread. Call only from a blocking thread (it uses
/// `blocking_send`).
pub struct ChunkWriter {
    tx: mpsc::Sender<Chunk>,
    buf: String,
    sent: usize,
}

impl ChunkWriter {
    /// A writer sending into `tx`.
    pub fn new(tx: mpsc::Sender<Chunk>) -> Self {
        ChunkWriter {
            tx,
            buf: String::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4),
            sent: 0,
        }
    }

    /// Appends `text`, sending a chunk if that fills one.
    pub fn write_str(&mut self, text: &str) -> Result<(), ScraperGone> {
        self.buf.push_str(text);
        self.flush_if_full()
    }

    /// Appends what `exposition` has gathered since its last drain (see
    /// [`Exposition::drain_into`]), sending a chunk if that fills one.
    pub fn drain(&mut self, exposition: &mut Exposition) -> Result<(), ScraperGone> {
        exposition.drain_into(&mut self.buf);
        self.flush_if_full()
    }

    /// Sends what is left. Dropping the writer instead loses the last partial chunk.
    pub fn finish(mut self) -> Result<(), ScraperGone> {
        self.send()
    }

    /// Bytes sent so far, the partial chunk not included.
    pub fn sent_bytes(&self) -> usize {
        self.sent
    }

    fn flush_if_full(&mut self) -> Result<(), ScraperGone> {
        if self.buf.len() >= CHUNK_BYTES {
            self.send()
        } else {
            Ok(())
        }
    }

    fn send(&mut self) -> Result<(), ScraperGone> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // A fresh buffer of the same capacity: the old one becomes the chunk without a copy.
        let capacity = self.buf.capacity();
        let full = std::mem::replace(&mut self.buf, String::with_capacity(capacity));
        self.sent += full.len();
        self.tx
            .blocking_send(Ok(Bytes::from(full)))
            .map_err(|_| ScraperGone)
    }
}

/// Writes `families` in order, each as one group: for every family, `render` is called once per
/// item with an [`Exposition::only`] for that family (so only its samples are formatted), and
/// what it gathers is drained into `out` item by item. `declare` is called first on each
/// family's exposition, so a family with no samples still has its `# HELP` and `# TYPE`.
///
/// The samples seen are forgotten after each item, so memory does not grow with the items;
/// that is only right when no two items can produce the same series (each carries its own
/// `node` label, say).
pub fn write_by_family<T>(
    out: &mut ChunkWriter,
    families: &[&'static str],
    items: &[T],
    declare: impl Fn(&mut Exposition),
    render: impl Fn(&mut Exposition, &T),
) -> Result<(), ScraperGone> {
    for &family in families {
        let mut exposition = Exposition::only(family);
        declare(&mut exposition);
        out.drain(&mut exposition)?;
        for item in items {
            render(&mut exposition, item);
            exposition.forget_seen();
            out.drain(&mut exposition)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(rx: &mut mpsc::Receiver<Chunk>) -> (String, Vec<usize>) {
        let mut text = String::new();
        let mut sizes = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            let chunk = chunk.unwrap_or_default();
            sizes.push(chunk.len());
            text.push_str(std::str::from_utf8(&chunk).unwrap_or("<not UTF-8>"));
        }
        (text, sizes)
    }

    #[test]
    fn families_come_out_grouped_with_one_header_each() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut out = ChunkWriter::new(tx);
        let declare = |e: &mut Exposition| {
            e.gauge("a", "A.");
            e.gauge("b", "B.");
            e.gauge("empty", "Nothing.");
        };
        let render = |e: &mut Exposition, node: &&str| {
            // Interleaved as a node renderer does: a, b, a again.
            e.gauge("a", "A.")
                .sample(&[("node", node), ("x", "1")], 1.0);
            e.gauge("b", "B.").sample(&[("node", node)], 2.0);
            e.gauge("a", "A.")
                .sample(&[("node", node), ("x", "2")], 3.0);
            // A duplicate within a node is dropped.
            e.gauge("a", "A.")
                .sample(&[("node", node), ("x", "2")], 4.0);
        };
        write_by_family(
            &mut out,
            &["a", "b", "empty"],
            &["n1", "n2"],
            declare,
            render,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        out.finish().unwrap_or_else(|e| panic!("{e}"));
        let (text, _) = collect(&mut rx);
        assert_eq!(
            text,
            "# HELP a A.\n# TYPE a gauge\n\
             a{node=\"n1\",x=\"1\"} 1\na{node=\"n1\",x=\"2\"} 3\n\
             a{node=\"n2\",x=\"1\"} 1\na{node=\"n2\",x=\"2\"} 3\n\
             # HELP b B.\n# TYPE b gauge\nb{node=\"n1\"} 2\nb{node=\"n2\"} 2\n\
             # HELP empty Nothing.\n# TYPE empty gauge\n"
        );
    }

    #[test]
    fn chunks_are_bounded_and_add_up_to_the_text() {
        let (tx, mut rx) = mpsc::channel(1024);
        let mut out = ChunkWriter::new(tx);
        let line = "x".repeat(1000) + "\n";
        for _ in 0..500 {
            out.write_str(&line).unwrap_or_else(|e| panic!("{e}"));
        }
        out.finish().unwrap_or_else(|e| panic!("{e}"));
        let (text, sizes) = collect(&mut rx);
        assert_eq!(text.len(), 500 * 1001);
        assert!(sizes.len() > 5, "{sizes:?}");
        assert!(sizes.iter().all(|&s| s < CHUNK_BYTES + 1001), "{sizes:?}");
    }

    #[test]
    fn a_scraper_that_hangs_up_stops_the_writer() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let mut out = ChunkWriter::new(tx);
        let big = "y".repeat(CHUNK_BYTES);
        assert_eq!(out.write_str(&big), Err(ScraperGone));
    }
}
