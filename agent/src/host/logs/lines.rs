//! Splitting a byte stream into lines with bounded memory: a line longer than the rule's
//! `max_line_bytes` is passed on cut at that length, and the rest of it up to its newline is
//! counted and dropped as it streams past, never buffered. So a 10 MB line (or a binary file
//! with no newline) costs at most `max_line_bytes` of memory.

/// The line being assembled from chunks, and whether the tail of a cut line is being skipped.
#[derive(Debug)]
pub struct LineCutter {
    buf: Vec<u8>,
    max: usize,
    skipping: bool,
}

impl LineCutter {
    pub fn new(max: usize) -> LineCutter {
        LineCutter {
            buf: Vec::new(),
            max: max.max(1),
            skipping: false,
        }
    }

    /// Feeds a chunk; `line` gets each complete (or cut) line without its newline. Returns the
    /// bytes dropped from over-long lines.
    pub fn feed(&mut self, mut data: &[u8], line: &mut dyn FnMut(&[u8])) -> u64 {
        let mut skipped = 0u64;
        while !data.is_empty() {
            let (segment, rest, ended) = match data.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    let (seg, rest) = data.split_at(i);
                    (seg, rest.get(1..).unwrap_or_default(), true)
                }
                None => (data, &[][..], false),
            };
            if self.skipping {
                skipped += segment.len() as u64;
                self.skipping = !ended;
            } else {
                let room = self.max.saturating_sub(self.buf.len());
                if segment.len() > room {
                    let (kept, dropped) = segment.split_at(room);
                    self.buf.extend_from_slice(kept);
                    skipped += dropped.len() as u64;
                    line(&self.buf);
                    self.buf.clear();
                    self.skipping = !ended;
                } else {
                    self.buf.extend_from_slice(segment);
                    if ended {
                        line(&self.buf);
                        self.buf.clear();
                    }
                }
            }
            data = rest;
        }
        skipped
    }

    /// The source ended for good (a rotated file read to its end): its unterminated last line
    /// is a line too.
    pub fn finish(&mut self, line: &mut dyn FnMut(&[u8])) {
        if !self.buf.is_empty() && !self.skipping {
            line(&self.buf);
        }
        self.reset();
    }

    /// Forget the partial line (the file was truncated under it).
    pub fn reset(&mut self) {
        self.buf = Vec::new();
        self.skipping = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(cutter: &mut LineCutter, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, u64) {
        let mut out = Vec::new();
        let mut skipped = 0;
        for c in chunks {
            skipped += cutter.feed(c, &mut |l| out.push(l.to_vec()));
        }
        (out, skipped)
    }

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let mut c = LineCutter::new(100);
        let (out, skipped) = lines(&mut c, &[b"one\ntw", b"o\n\nthr", b"ee"]);
        assert_eq!(out, vec![b"one".to_vec(), b"two".to_vec(), b"".to_vec()]);
        assert_eq!(skipped, 0);
        let mut rest = Vec::new();
        c.finish(&mut |l| rest.push(l.to_vec()));
        assert_eq!(rest, vec![b"three".to_vec()]);
    }

    #[test]
    fn a_ten_megabyte_line_is_cut_and_its_tail_skipped_unbuffered() {
        let mut c = LineCutter::new(16);
        let chunk = vec![b'x'; 64 << 10];
        let mut out = Vec::new();
        let mut skipped = 0;
        for _ in 0..160 {
            skipped += c.feed(&chunk, &mut |l| out.push(l.to_vec()));
            assert!(c.buf.capacity() <= 64, "memory stays bounded");
        }
        skipped += c.feed(b"yy\nafter\n", &mut |l| out.push(l.to_vec()));
        assert_eq!(out, vec![vec![b'x'; 16], b"after".to_vec()]);
        assert_eq!(skipped, 160 * (64 << 10) - 16 + 2);
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_whole() {
        let mut c = LineCutter::new(4);
        let (out, skipped) = lines(&mut c, &[b"abcd\nabcde\nz\n"]);
        assert_eq!(out, vec![b"abcd".to_vec(), b"abcd".to_vec(), b"z".to_vec()]);
        assert_eq!(skipped, 1);
    }
}
