//! The uplink's spill: unacknowledged reports on disk, so that neither an outage longer than
//! the memory buffer nor an agent restart loses them.
//!
//! Layout: `spill_path` is a directory holding segment files `<id>.seg` (append-only, ids
//! increasing) and a `head` file naming the first unacknowledged record. A record is
//! `[u32 length LE][u32 CRC-32 of the payload LE][payload: a protobuf HealthReport]`, so a torn
//! tail after a crash is recognised (short header, short payload, wrong CRC, or a payload that
//! does not decode) and cut off with a warning, never misparsed.
//!
//! Every report is appended when the uplink takes it (write-through), so the spill always holds
//! every unacknowledged report; the uplink keeps the oldest `buffer_reports` of them in memory
//! as well, and reads further ones back as the collector acknowledges. Acknowledged records are
//! released by key; a segment whose records are all released is deleted, and a new segment is
//! started every `segment_bytes`, so the disk holds at most `spill_max_bytes` plus one segment.
//!
//! Durability: the active segment is fsynced at most once per `SYNC_EVERY` (and on rotation and
//! on shutdown); the `head` file is rewritten (write + rename) at most once per `SYNC_EVERY`.
//! A killed agent loses nothing (written data is in the page cache); a power loss loses at most
//! the last `SYNC_EVERY` of reports, and after any crash up to `SYNC_EVERY` of already
//! acknowledged reports are sent again (the collector drops them as duplicates).
//!
//! All file I/O happens on one dedicated thread that owns the files; the async uplink talks to
//! it over a channel and never waits on the disk, except for the one read it asks for at a time.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use health_proto::v1 as pb;
use prost::Message;
use tokio::sync::oneshot;

/// How often written records are fsynced and the head file rewritten: the power-loss window.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);
/// Bytes of framing per record (length and CRC).
pub const RECORD_HEADER: u64 = 8;
/// A record longer than this is not a report (a HealthReport is kilobytes): corruption.
const MAX_RECORD: u32 = 64 << 20;

/// A report's identity in the spill: (boot id, seq).
pub type Key = (String, u64);

pub fn key_of(r: &pb::HealthReport) -> Key {
    (r.boot_id.clone(), r.seq)
}

/// One unacknowledged record found on disk at start.
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveredRecord {
    pub key: Key,
    /// Bytes on disk, framing included.
    pub bytes: u64,
}

/// The answer to a read: the next records after the last one handed out, in order. `None` for
/// a record that could not be read back (it is lost). `exhausted` when the spill has nothing
/// more to hand out.
#[derive(Debug, Default)]
pub struct ReadReply {
    pub records: Vec<(Key, Option<pb::HealthReport>)>,
    pub exhausted: bool,
}

enum Command {
    Append {
        key: Key,
        payload: Vec<u8>,
        /// The uplink already holds this report in memory: do not hand it out again.
        loaded: bool,
    },
    /// Releases every record up to and including `key` (acknowledged or dropped).
    ReleaseThrough(Key),
    Read {
        max: usize,
        reply: oneshot::Sender<ReadReply>,
    },
}

/// The uplink's handle on the spill thread. Dropping it flushes and stops the thread.
pub struct Spill {
    commands: Option<std_mpsc::Sender<Command>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Spill {
    /// Opens (creating if needed) the spill directory, recovers what an earlier run left, and
    /// starts the spill thread. Blocking: call it from a blocking context.
    pub fn open(dir: &Path, segment_bytes: u64) -> io::Result<(Spill, Vec<RecoveredRecord>)> {
        let (store, recovered) = Store::open(dir, segment_bytes)?;
        let (tx, rx) = std_mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("uplink-spill".to_string())
            .spawn(move || store.run(rx))?;
        Ok((
            Spill {
                commands: Some(tx),
                thread: Some(thread),
            },
            recovered,
        ))
    }

    fn send(&self, c: Command) {
        if let Some(tx) = &self.commands {
            // The thread only stops when this handle drops, so a send cannot fail before.
            let _ = tx.send(c);
        }
    }

    pub fn append(&self, report: &pb::HealthReport, loaded: bool) -> u64 {
        let payload = report.encode_to_vec();
        let bytes = payload.len() as u64 + RECORD_HEADER;
        self.send(Command::Append {
            key: key_of(report),
            payload,
            loaded,
        });
        bytes
    }

    pub fn release_through(&self, key: Key) {
        self.send(Command::ReleaseThrough(key));
    }

    pub fn read(&self, max: usize) -> oneshot::Receiver<ReadReply> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Read { max, reply });
        rx
    }

    /// Stops the thread after it has written, fsynced and recorded the head. Blocking.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.commands.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Spill {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Segment {
    id: u64,
    len: u64,
}

/// Where an unreleased record is.
struct Location {
    key: Key,
    segment: u64,
    offset: u64,
    len: u32,
}

/// The spill thread's state: it alone touches the files.
struct Store {
    dir: PathBuf,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    active: File,
    /// Unreleased records, oldest first.
    records: VecDeque<Location>,
    /// Index into `records` of the next record to hand out on a read.
    read_next: usize,
    reader: Option<(u64, File)>,
    unsynced: bool,
    last_sync: Instant,
    head_written: Option<(u64, u64)>,
    append_failures: u64,
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:016}.seg"))
}

fn create_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create_new(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl Store {
    fn open(dir: &Path, segment_bytes: u64) -> io::Result<(Store, Vec<RecoveredRecord>)> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        let mut ids = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u64>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let head = read_head(dir);
        let mut segments = VecDeque::new();
        let mut records = VecDeque::new();
        let mut recovered = Vec::new();
        for id in ids {
            let path = segment_path(dir, id);
            let (locations, len) = recover_segment(&path, id)?;
            for loc in locations {
                // Records before the head were acknowledged before the last stop.
                if head.is_some_and(|(hs, ho)| (loc.segment, loc.offset) < (hs, ho)) {
                    continue;
                }
                recovered.push(RecoveredRecord {
                    key: loc.key.clone(),
                    bytes: u64::from(loc.len) + RECORD_HEADER,
                });
                records.push_back(loc);
            }
            segments.push_back(Segment { id, len });
        }
        // Always append to a fresh segment: an old one may have ended torn.
        let next_id = segments.back().map_or(1, |s| s.id + 1);
        let active = create_file(&segment_path(dir, next_id))?;
        segments.push_back(Segment {
            id: next_id,
            len: 0,
        });
        let mut store = Store {
            dir: dir.to_path_buf(),
            segment_bytes,
            segments,
            active,
            records,
            read_next: 0,
            reader: None,
            unsynced: false,
            last_sync: Instant::now(),
            head_written: head,
            append_failures: 0,
        };
        store.delete_released_segments();
        if let Err(e) = sync_dir(dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "spill: fsync of the directory failed");
        }
        Ok((store, recovered))
    }

    fn run(mut self, commands: std_mpsc::Receiver<Command>) {
        loop {
            let wait = SYNC_EVERY.saturating_sub(self.last_sync.elapsed());
            match commands.recv_timeout(wait) {
                Ok(c) => self.handle(c),
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if self.last_sync.elapsed() >= SYNC_EVERY {
                self.sync();
            }
        }
        self.sync();
    }

    fn handle(&mut self, c: Command) {
        match c {
            Command::Append {
                key,
                payload,
                loaded,
            } => {
                match self.append(key, &payload) {
                    Ok(()) => {
                        if loaded {
                            self.read_next = self.records.len();
                        }
                    }
                    Err(e) => {
                        // The uplink finds the record missing when it reads, and counts it lost.
                        self.append_failures += 1;
                        if self.append_failures.is_power_of_two() {
                            tracing::error!(dir = %self.dir.display(), error = %e, failures = self.append_failures,
                                "spill: cannot write a report to disk");
                        }
                    }
                }
            }
            Command::ReleaseThrough(key) => {
                if let Some(i) = self.records.iter().position(|r| r.key == key) {
                    self.records.drain(..=i);
                    self.read_next = self.read_next.saturating_sub(i + 1);
                    self.delete_released_segments();
                }
            }
            Command::Read { max, reply } => {
                let mut out = ReadReply::default();
                while out.records.len() < max && self.read_next < self.records.len() {
                    let loc = &self.records[self.read_next];
                    let key = loc.key.clone();
                    let (segment, offset, len) = (loc.segment, loc.offset, loc.len);
                    let report = match self.read_record(segment, offset, len) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            tracing::error!(dir = %self.dir.display(), segment, offset, error = %e,
                                "spill: a record cannot be read back; it is lost");
                            None
                        }
                    };
                    out.records.push((key, report));
                    self.read_next += 1;
                }
                out.exhausted = self.read_next >= self.records.len();
                let _ = reply.send(out);
            }
        }
    }

    fn append(&mut self, key: Key, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|l| *l <= MAX_RECORD)
            .ok_or_else(|| io::Error::other("report too large for the spill"))?;
        let record_bytes = u64::from(len) + RECORD_HEADER;
        let active_len = self.segments.back().map_or(0, |s| s.len);
        if active_len > 0 && active_len + record_bytes > self.segment_bytes {
            self.rotate()?;
        }
        let mut buf = Vec::with_capacity(payload.len() + RECORD_HEADER as usize);
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        buf.extend_from_slice(payload);
        let Some(segment) = self.segments.back_mut() else {
            return Err(io::Error::other("no active segment"));
        };
        if let Err(e) = self.active.write_all(&buf) {
            // Cut a partial write off, so the next record starts on a boundary.
            let _ = self.active.set_len(segment.len);
            return Err(e);
        }
        self.records.push_back(Location {
            key,
            segment: segment.id,
            offset: segment.len,
            len,
        });
        segment.len += record_bytes;
        self.unsynced = true;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.active.sync_data()?;
        let id = self.segments.back().map_or(1, |s| s.id + 1);
        self.active = create_file(&segment_path(&self.dir, id))?;
        self.segments.push_back(Segment { id, len: 0 });
        sync_dir(&self.dir)?;
        self.last_sync = Instant::now();
        self.unsynced = false;
        Ok(())
    }

    fn read_record(&mut self, segment: u64, offset: u64, len: u32) -> io::Result<pb::HealthReport> {
        if self.reader.as_ref().is_none_or(|(id, _)| *id != segment) {
            self.reader = Some((segment, File::open(segment_path(&self.dir, segment))?));
        }
        let Some((_, file)) = &self.reader else {
            return Err(io::Error::other("no reader"));
        };
        let mut buf = vec![0u8; len as usize + RECORD_HEADER as usize];
        file.read_exact_at(&mut buf, offset)?;
        let (header, payload) = buf.split_at(RECORD_HEADER as usize);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if crc != crc32fast::hash(payload) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "CRC mismatch on read-back",
            ));
        }
        pb::HealthReport::decode(payload)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))
    }

    /// Deletes every segment before the one holding the oldest unreleased record (never the
    /// active one).
    fn delete_released_segments(&mut self) {
        let active = self.segments.back().map_or(0, |s| s.id);
        let keep_from = self.records.front().map_or(active, |r| r.segment);
        let mut deleted = false;
        while let Some(s) = self.segments.front() {
            if s.id >= keep_from || s.id == active {
                break;
            }
            let path = segment_path(&self.dir, s.id);
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(file = %path.display(), error = %e, "spill: cannot delete a released segment");
                }
            }
            if self.reader.as_ref().is_some_and(|(id, _)| *id == s.id) {
                self.reader = None;
            }
            self.segments.pop_front();
            deleted = true;
        }
        if deleted {
            // The head must not point into a deleted segment after a crash.
            self.write_head();
        }
    }

    fn head(&self) -> (u64, u64) {
        match self.records.front() {
            Some(r) => (r.segment, r.offset),
            None => self.segments.back().map_or((0, 0), |s| (s.id, s.len)),
        }
    }

    fn write_head(&mut self) {
        let head = self.head();
        if self.head_written == Some(head) {
            return;
        }
        let tmp = self.dir.join("head.tmp");
        // Private like the segments: the directory is 0700, but a copied or moved file keeps
        // its own mode.
        let result = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| f.write_all(format!("{} {}\n", head.0, head.1).as_bytes()))
            .and_then(|()| fs::rename(&tmp, self.dir.join("head")));
        match result {
            Ok(()) => self.head_written = Some(head),
            Err(e) => tracing::warn!(dir = %self.dir.display(), error = %e,
                "spill: cannot record the acknowledged position (reports may be sent twice after a restart)"),
        }
    }

    fn sync(&mut self) {
        if self.unsynced {
            if let Err(e) = self.active.sync_data() {
                tracing::warn!(dir = %self.dir.display(), error = %e, "spill: fsync failed");
            }
            self.unsynced = false;
        }
        self.write_head();
        self.last_sync = Instant::now();
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The head recorded by the last run: (segment id, offset of the first unacknowledged record).
fn read_head(dir: &Path) -> Option<(u64, u64)> {
    let text = fs::read_to_string(dir.join("head")).ok()?;
    let mut parts = text.split_whitespace();
    let segment = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    Some((segment, offset))
}

/// Reads a segment's records; a torn or corrupt tail is cut off (the file is truncated there)
/// with a warning naming the file and offset.
fn recover_segment(path: &Path, id: u64) -> io::Result<(Vec<Location>, u64)> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let file_len = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    let mut reader = io::BufReader::new(&file);
    let mut locations = Vec::new();
    let mut offset = 0u64;
    let torn = loop {
        if offset == file_len {
            break None;
        }
        let mut header = [0u8; RECORD_HEADER as usize];
        if let Err(e) = reader.read_exact(&mut header) {
            break Some(format!("short record header ({e})"));
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD || u64::from(len) + RECORD_HEADER > file_len - offset {
            break Some(format!("record length {len} runs past the end of the file"));
        }
        let mut payload = vec![0u8; len as usize];
        if let Err(e) = reader.read_exact(&mut payload) {
            break Some(format!("short record ({e})"));
        }
        if crc32fast::hash(&payload) != crc {
            break Some("CRC mismatch".to_string());
        }
        let report = match pb::HealthReport::decode(payload.as_slice()) {
            Ok(r) => r,
            Err(e) => break Some(format!("not a HealthReport ({e})")),
        };
        locations.push(Location {
            key: key_of(&report),
            segment: id,
            offset,
            len,
        });
        offset += u64::from(len) + RECORD_HEADER;
    };
    if let Some(why) = torn {
        tracing::warn!(file = %path.display(), offset, dropped_bytes = file_len - offset, reason = %why,
            "spill: torn or corrupt record; the segment is cut off there (earlier records are kept)");
        drop(reader);
        file.set_len(offset)?;
        file.sync_all()?;
    }
    Ok((locations, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(boot: &str, seq: u64) -> pb::HealthReport {
        pb::HealthReport {
            node: "n".into(),
            boot_id: boot.into(),
            seq,
            snapshot: Some(pb::NodeSnapshot {
                node: "n".into(),
                seq,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn read_all(spill: &Spill) -> Vec<u64> {
        let reply = spill.read(1000).blocking_recv().expect("reply");
        assert!(reply.exhausted);
        reply
            .records
            .into_iter()
            .map(|(k, r)| {
                assert_eq!(r.expect("readable").seq, k.1);
                k.1
            })
            .collect()
    }

    fn seqs(recovered: &[RecoveredRecord]) -> Vec<u64> {
        recovered.iter().map(|r| r.key.1).collect()
    }

    #[test]
    fn records_survive_a_restart_and_released_ones_do_not_come_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spill, recovered) = Spill::open(dir.path(), 256).expect("open");
        assert!(recovered.is_empty());
        for s in 1..=50 {
            spill.append(&report("b1", s), false);
        }
        assert_eq!(read_all(&spill), (1..=50).collect::<Vec<_>>());
        spill.release_through(("b1".into(), 20));
        spill.close();
        let segments = fs::read_dir(dir.path())
            .expect("dir")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            })
            .count();
        assert!(segments >= 2, "rotated into several segments");
        assert!(
            dir.path().join("head").exists(),
            "the acknowledged position is recorded"
        );
        for entry in fs::read_dir(dir.path()).expect("dir").flatten() {
            use std::os::unix::fs::PermissionsExt;
            let mode = entry.metadata().expect("metadata").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{:?} is private", entry.file_name());
        }

        let (spill, recovered) = Spill::open(dir.path(), 256).expect("reopen");
        assert_eq!(seqs(&recovered), (21..=50).collect::<Vec<_>>());
        assert_eq!(read_all(&spill), (21..=50).collect::<Vec<_>>());
        spill.release_through(("b1".into(), 50));
        spill.close();
        let (_spill, recovered) = Spill::open(dir.path(), 256).expect("reopen");
        assert!(recovered.is_empty());
    }

    #[test]
    fn released_segments_are_deleted_so_the_disk_stays_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spill, _) = Spill::open(dir.path(), 2048).expect("open");
        for s in 1..=2000 {
            spill.append(&report("b1", s), true);
            spill.release_through(("b1".into(), s));
        }
        spill.close();
        let bytes: u64 = fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .sum();
        assert!(bytes < 3 * 2048, "{bytes} bytes left on disk");
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_the_records_before_it_are_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spill, _) = Spill::open(dir.path(), 1 << 20).expect("open");
        for s in 1..=10 {
            spill.append(&report("b1", s), false);
        }
        spill.close();
        let seg = segment_path(dir.path(), 1);
        let len = fs::metadata(&seg).expect("segment").len();
        // Cut the last record in half.
        let f = OpenOptions::new().write(true).open(&seg).expect("open");
        f.set_len(len - 5).expect("truncate");
        drop(f);
        let (spill, recovered) = Spill::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(seqs(&recovered), (1..=9).collect::<Vec<_>>());
        assert_eq!(read_all(&spill), (1..=9).collect::<Vec<_>>());
        drop(spill);

        // A flipped payload byte fails the CRC: cut there too.
        let seg = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&seg).expect("read");
        let last = bytes.len() - 3;
        bytes[last] ^= 0xff;
        fs::write(&seg, &bytes).expect("write");
        let (_spill, recovered) = Spill::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(seqs(&recovered), (1..=8).collect::<Vec<_>>());
    }

    #[test]
    fn loaded_records_are_not_handed_out_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (spill, _) = Spill::open(dir.path(), 1 << 20).expect("open");
        for s in 1..=3 {
            spill.append(&report("b1", s), true);
        }
        for s in 4..=6 {
            spill.append(&report("b1", s), false);
        }
        assert_eq!(read_all(&spill), vec![4, 5, 6]);
        spill.release_through(("b1".into(), 2));
        let reply = spill.read(10).blocking_recv().expect("reply");
        assert!(reply.records.is_empty() && reply.exhausted);
    }
}
