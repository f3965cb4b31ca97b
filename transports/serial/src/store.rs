//! The durable state folder: partly received messages, keyed by their BLAKE3 hash, and the
//! airtime log behind the duty-cycle limit.
//!
//! ```text
//! STATE/rx/<hash>.part   the message's bytes so far, each at its offset (may be sparse)
//! STATE/rx/<hash>.log    "FRYP", 1, 0, 0, 0, length u64; then one 16-byte record per part
//!                        received: offset u64, length u32, CRC-32 of those bytes u32
//! STATE/rx/<hash>.msg    a whole message whose hash was checked (the .part, renamed)
//! STATE/rx/<hash>.done   a whole message the mailbox view filed as processed
//! STATE/airtime.log      one line per frame sent: unix milliseconds, airtime microseconds
//! ```
//!
//! A part is written to `.part` before its record is appended to `.log`, and both are
//! flushed to the device before an acknowledgement leaves, so what the other end was told
//! is held survives a crash. On reopening, every record is checked against the bytes
//! (CRC-32): a record whose bytes did not reach the disk (power cut) is dropped and its range
//! asked for again. The whole message is checked against its hash before it is delivered.
//!
//! **Bounded.** Nothing is created when a message is only announced: its files appear with
//! its first bytes. No file stays open between two writes (a session holds no file handle
//! per message). The folder as a whole holds at most [`RX_MAX_MESSAGES`] messages and
//! [`RX_MAX_BYTES`] bytes, counted by *apparent* size — a partial message counts its whole
//! announced length, whatever is allocated — and [`RxStore::make_room`] removes the oldest
//! messages of earlier sessions to admit a new one (they are only kept to resume, never
//! needed). Partial messages untouched for 30 days and whole ones older than 14 days are
//! removed when a session opens.

use crate::MessageHash;
use crate::crc::crc32;
use crate::ranges::RangeSet;
use ferry_transport::fsutil;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const LOG_MAGIC: &[u8; 8] = b"FRYP\x01\x00\x00\x00";
const LOG_HEADER: usize = 16;
const RECORD: usize = 16;
const KEEP_PARTIAL: Duration = Duration::from_secs(30 * 24 * 3600);
const KEEP_COMPLETE: Duration = Duration::from_secs(14 * 24 * 3600);
/// Most messages (whole or partial) the state folder keeps.
pub const RX_MAX_MESSAGES: usize = 64;
/// Most bytes the state folder keeps, by apparent size (a partial message counts its whole
/// announced length).
pub const RX_MAX_BYTES: u64 = 64 << 20;

/// Received messages, whole and in part.
#[derive(Debug)]
pub(crate) struct RxStore {
    dir: PathBuf,
}

/// What the store holds of a message.
pub(crate) enum Lookup {
    /// All of it, checked.
    Complete,
    /// Some (maybe none) of it.
    Partial(Partial),
}

/// A message being received. Its files are opened for each write and closed again; they
/// are created with the first bytes.
#[derive(Debug)]
pub(crate) struct Partial {
    hash: MessageHash,
    len: u64,
    data_path: PathBuf,
    log_path: PathBuf,
    /// Whether the files hold this message's parts (else they are made, or remade, at the
    /// first write).
    on_disk: bool,
    held: RangeSet,
    unsynced: bool,
}

/// One message in the folder, for the quota.
struct Entry {
    hash: MessageHash,
    bytes: u64,
    modified: SystemTime,
    paths: Vec<PathBuf>,
}

fn age(path: &Path) -> Option<Duration> {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
}

/// The length a `.log` announces, if it has a valid header.
fn log_len(path: &Path) -> Option<u64> {
    let mut head = [0u8; LOG_HEADER];
    File::open(path).ok()?.read_exact(&mut head).ok()?;
    (&head[..8] == LOG_MAGIC).then(|| u64::from_le_bytes(head[8..16].try_into().expect("8 bytes")))
}

impl RxStore {
    /// Opens (creating) `state/rx` and removes stale leftovers.
    pub(crate) fn open(state: &Path) -> io::Result<RxStore> {
        let dir = state.join("rx");
        fs::create_dir_all(&dir)?;
        for e in fs::read_dir(&dir)?.flatten() {
            let p = e.path();
            let keep = match p.extension().and_then(|x| x.to_str()) {
                Some("msg") | Some("done") | Some("refused") => KEEP_COMPLETE,
                Some("part") | Some("log") => KEEP_PARTIAL,
                _ => continue,
            };
            if age(&p).is_some_and(|a| a > keep) {
                let _ = fs::remove_file(&p);
            }
        }
        Ok(RxStore { dir })
    }

    /// The store of `state`, without touching the disk.
    pub(crate) fn at(state: &Path) -> RxStore {
        RxStore {
            dir: state.join("rx"),
        }
    }

    /// The folder.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where a whole message is kept.
    pub(crate) fn msg_path(&self, hash: &MessageHash) -> PathBuf {
        self.dir.join(format!("{hash}.msg"))
    }

    /// Finds what is held of a message of `len` bytes. Creates nothing.
    pub(crate) fn lookup(&self, hash: &MessageHash, len: u64) -> io::Result<Lookup> {
        let msg = self.msg_path(hash);
        if fs::metadata(&msg).is_ok_and(|m| m.len() == len) {
            if MessageHash::of(&fs::read(&msg)?) == *hash {
                return Ok(Lookup::Complete);
            }
            fs::remove_file(&msg)?;
        }
        let data_path = self.dir.join(format!("{hash}.part"));
        let log_path = self.dir.join(format!("{hash}.log"));
        let mut p = Partial {
            hash: *hash,
            len,
            data_path,
            log_path,
            on_disk: false,
            held: RangeSet::new(),
            unsynced: false,
        };
        let raw = match fs::read(&p.log_path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Lookup::Partial(p)),
            Err(e) => return Err(e),
        };
        let header_ok = raw.len() >= LOG_HEADER
            && &raw[..8] == LOG_MAGIC
            && u64::from_le_bytes(raw[8..16].try_into().expect("8 bytes")) == len;
        let mut data = match File::open(&p.data_path) {
            Ok(f) if header_ok => f,
            // Parts of another length, or a log without its data: start over at the first
            // write.
            _ => return Ok(Lookup::Partial(p)),
        };
        let mut held = RangeSet::new();
        let mut buf = Vec::new();
        for rec in raw[LOG_HEADER..].chunks_exact(RECORD) {
            let off = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
            let n = u32::from_le_bytes(rec[8..12].try_into().expect("4 bytes")) as u64;
            let crc = u32::from_le_bytes(rec[12..16].try_into().expect("4 bytes"));
            if n == 0 || off + n > len || held.contains(off, off + n) {
                continue;
            }
            buf.resize(n as usize, 0);
            data.seek(SeekFrom::Start(off))?;
            if data.read_exact(&mut buf).is_ok() && crc32(&buf) == crc {
                held.insert(off, off + n);
            }
        }
        p.held = held;
        p.on_disk = true;
        Ok(Lookup::Partial(p))
    }

    /// Reads a whole message.
    pub(crate) fn read(&self, hash: &MessageHash) -> io::Result<Vec<u8>> {
        fs::read(self.msg_path(hash))
    }

    /// Forgets a whole message.
    pub(crate) fn remove(&self, hash: &MessageHash) -> io::Result<()> {
        match fs::remove_file(self.msg_path(hash)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Whole messages held, in name order.
    pub(crate) fn complete(&self) -> io::Result<Vec<(MessageHash, u64, PathBuf)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_suffix(".msg") else {
                continue;
            };
            let Ok(hash) = hex.parse::<MessageHash>() else {
                continue;
            };
            out.push((hash, e.metadata()?.len(), e.path()));
        }
        out.sort_by_key(|a| a.0);
        Ok(out)
    }

    /// Every message in the folder with its apparent size: a whole one its length, a
    /// partial one the larger of its announced length and its files' lengths.
    fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut by_hash: HashMap<MessageHash, Entry> = HashMap::new();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((hex, ext)) = name.split_once('.') else {
                continue;
            };
            let Ok(hash) = hex.parse::<MessageHash>() else {
                continue;
            };
            if !matches!(ext, "part" | "log" | "msg" | "done" | "refused") {
                continue;
            }
            let meta = match e.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let mut bytes = meta.len();
            if ext == "log" {
                bytes = bytes.max(log_len(&path).unwrap_or(0));
            }
            let modified = meta.modified().unwrap_or(UNIX_EPOCH);
            let entry = by_hash.entry(hash).or_insert(Entry {
                hash,
                bytes: 0,
                modified,
                paths: Vec::new(),
            });
            // A partial message's `.part` and `.log` describe the same bytes: count the
            // larger, once; a whole message and a partial one of the same hash both count.
            entry.bytes = match ext {
                "part" | "log" => entry.bytes.max(bytes),
                _ => entry.bytes + bytes,
            };
            entry.modified = entry.modified.max(modified);
            entry.paths.push(path);
        }
        Ok(by_hash.into_values().collect())
    }

    /// What the folder holds: messages and bytes (apparent sizes).
    #[cfg(test)]
    pub(crate) fn usage(&self) -> io::Result<(usize, u64)> {
        let all = self.entries()?;
        Ok((all.len(), all.iter().map(|e| e.bytes).sum()))
    }

    /// Makes room for one more message of `len` bytes within the folder's limits, removing
    /// the least recently touched messages that are not in `keep` (the ones the current
    /// session uses). Returns false if even that is not enough.
    pub(crate) fn make_room(&self, len: u64, keep: &HashSet<MessageHash>) -> io::Result<bool> {
        let mut all = self.entries()?;
        let mut count = all.len() + 1;
        let mut bytes: u64 = all.iter().map(|e| e.bytes).sum::<u64>() + len;
        if count <= RX_MAX_MESSAGES && bytes <= RX_MAX_BYTES {
            return Ok(true);
        }
        all.sort_by_key(|e| e.modified);
        for e in all.iter().filter(|e| !keep.contains(&e.hash)) {
            if count <= RX_MAX_MESSAGES && bytes <= RX_MAX_BYTES {
                break;
            }
            for p in &e.paths {
                match fs::remove_file(p) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            count -= 1;
            bytes -= e.bytes;
        }
        Ok(count <= RX_MAX_MESSAGES && bytes <= RX_MAX_BYTES)
    }
}

impl Partial {
    /// Bytes held.
    pub(crate) fn held(&self) -> &RangeSet {
        &self.held
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.held.len() == self.len
    }

    /// Whether its files exist (it holds bytes, or held some once).
    pub(crate) fn on_disk(&self) -> bool {
        self.on_disk
    }

    /// Where the parts are kept (for error messages).
    pub(crate) fn path(&self) -> &Path {
        &self.data_path
    }

    /// Makes (or remakes) the files: an empty `.part` and a `.log` with only its header.
    fn create(&mut self) -> io::Result<()> {
        File::create(&self.data_path)?;
        let mut log = File::create(&self.log_path)?;
        log.write_all(LOG_MAGIC)?;
        log.write_all(&self.len.to_le_bytes())?;
        self.on_disk = true;
        self.held = RangeSet::new();
        self.unsynced = true;
        Ok(())
    }

    /// Stores bytes received at `offset`.
    pub(crate) fn write(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let end = offset + bytes.len() as u64;
        if bytes.is_empty() || end > self.len || self.held.contains(offset, end) {
            return Ok(());
        }
        if !self.on_disk {
            self.create()?;
        }
        let mut data = OpenOptions::new().write(true).open(&self.data_path)?;
        data.seek(SeekFrom::Start(offset))?;
        data.write_all(bytes)?;
        let mut rec = [0u8; RECORD];
        rec[..8].copy_from_slice(&offset.to_le_bytes());
        rec[8..12].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
        rec[12..16].copy_from_slice(&crc32(bytes).to_le_bytes());
        OpenOptions::new()
            .append(true)
            .open(&self.log_path)?
            .write_all(&rec)?;
        self.held.insert(offset, end);
        self.unsynced = true;
        Ok(())
    }

    /// Flushes what was written to the device (a new handle flushes the file's data, as
    /// `fsync` works on the file, not on the handle).
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if self.unsynced && self.on_disk {
            File::open(&self.data_path)?.sync_data()?;
            File::open(&self.log_path)?.sync_data()?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Forgets every part (after a hash mismatch).
    pub(crate) fn reset(&mut self) -> io::Result<()> {
        for p in [&self.data_path, &self.log_path] {
            match fs::remove_file(p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.on_disk = false;
        self.held = RangeSet::new();
        self.unsynced = false;
        Ok(())
    }

    /// Checks a complete message against its hash and keeps it as `.msg`. Returns false, with
    /// every part forgotten, if the bytes do not match the hash.
    pub(crate) fn finish(&mut self, store: &RxStore) -> io::Result<bool> {
        if !self.on_disk {
            // Nothing was ever written: only an empty message is complete without bytes.
            self.create()?;
        }
        let mut bytes = Vec::with_capacity(self.len as usize);
        File::open(&self.data_path)?
            .take(self.len)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 != self.len || MessageHash::of(&bytes) != self.hash {
            self.reset()?;
            return Ok(false);
        }
        File::open(&self.data_path)?.sync_data()?;
        // The checked file itself is moved into place (no copy of a message's bytes), so
        // this is not fsutil's temporary-file write; the folder is synced below all the same.
        fs::rename(&self.data_path, store.msg_path(&self.hash))?;
        let _ = fs::remove_file(&self.log_path);
        self.on_disk = false;
        if let Ok(d) = File::open(&store.dir) {
            let _ = d.sync_all();
        }
        Ok(true)
    }
}

/// Airtime spent in the last hour, kept across sessions so a restart does not reset the
/// duty-cycle budget.
#[derive(Debug)]
pub(crate) struct AirtimeLog {
    path: Option<PathBuf>,
    pub(crate) entries: VecDeque<(SystemTime, Duration)>,
}

const HOUR: Duration = Duration::from_secs(3600);

impl AirtimeLog {
    /// An in-memory log (no duty-cycle limit configured).
    pub(crate) fn memory() -> AirtimeLog {
        AirtimeLog {
            path: None,
            entries: VecDeque::new(),
        }
    }

    /// Loads `state/airtime.log`, keeping the last hour.
    pub(crate) fn load(state: &Path, now: SystemTime) -> io::Result<AirtimeLog> {
        let path = state.join("airtime.log");
        let mut entries = VecDeque::new();
        match fs::read_to_string(&path) {
            Ok(s) => {
                for line in s.lines() {
                    let mut it = line.split_whitespace();
                    let (Some(Ok(ms)), Some(Ok(us))) = (
                        it.next().map(str::parse::<u64>),
                        it.next().map(str::parse::<u64>),
                    ) else {
                        continue;
                    };
                    let t = UNIX_EPOCH + Duration::from_millis(ms);
                    if now.duration_since(t).is_ok_and(|a| a < HOUR) || t > now {
                        entries.push_back((t, Duration::from_micros(us)));
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut text = String::new();
        for (t, a) in &entries {
            text.push_str(&format!("{} {}\n", ms_since_epoch(*t), a.as_micros()));
        }
        fsutil::write_atomic(&path, text.as_bytes())?;
        Ok(AirtimeLog {
            path: Some(path),
            entries,
        })
    }

    /// Records a frame's airtime.
    pub(crate) fn record(&mut self, now: SystemTime, airtime: Duration) -> io::Result<()> {
        self.entries.push_back((now, airtime));
        if let Some(path) = &self.path {
            let mut f = OpenOptions::new().append(true).create(true).open(path)?;
            writeln!(f, "{} {}", ms_since_epoch(now), airtime.as_micros())?;
        }
        Ok(())
    }

    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
}

fn ms_since_epoch(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(store: &RxStore, hash: &MessageHash, len: u64) -> Partial {
        match store.lookup(hash, len).unwrap() {
            Lookup::Partial(p) => p,
            Lookup::Complete => panic!("unexpectedly complete"),
        }
    }

    #[test]
    fn parts_survive_reopening_and_complete_messages_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let msg: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        let hash = MessageHash::of(&msg);
        let store = RxStore::open(dir.path()).unwrap();
        let mut p = partial(&store, &hash, 1000);
        p.write(0, &msg[..300]).unwrap();
        p.write(600, &msg[600..]).unwrap();
        drop(p); // no sync: a killed process keeps what reached the OS
        let mut p = partial(&store, &hash, 1000);
        assert_eq!(
            p.held().iter().collect::<Vec<_>>(),
            vec![(0, 300), (600, 1000)]
        );
        p.write(300, &msg[300..600]).unwrap();
        assert!(p.is_complete());
        assert!(p.finish(&store).unwrap());
        assert!(matches!(
            store.lookup(&hash, 1000).unwrap(),
            Lookup::Complete
        ));
        assert_eq!(store.read(&hash).unwrap(), msg);
        assert_eq!(store.complete().unwrap().len(), 1);
    }

    #[test]
    fn a_part_whose_bytes_were_lost_is_asked_for_again() {
        let dir = tempfile::tempdir().unwrap();
        let msg = vec![5u8; 100];
        let hash = MessageHash::of(&msg);
        let store = RxStore::open(dir.path()).unwrap();
        let mut p = partial(&store, &hash, 100);
        p.write(0, &msg[..50]).unwrap();
        p.write(50, &msg[50..]).unwrap();
        drop(p);
        // Simulate a power cut that kept the log but not the second part's bytes.
        let part = dir.path().join("rx").join(format!("{hash}.part"));
        let mut bytes = fs::read(&part).unwrap();
        bytes[70] = 0;
        fs::write(&part, bytes).unwrap();
        let p = partial(&store, &hash, 100);
        assert_eq!(p.held().iter().collect::<Vec<_>>(), vec![(0, 50)]);
    }

    #[test]
    fn a_wrong_message_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let hash = MessageHash::of(b"the real one");
        let store = RxStore::open(dir.path()).unwrap();
        let mut p = partial(&store, &hash, 12);
        p.write(0, b"a forged one").unwrap();
        assert!(!p.finish(&store).unwrap());
        assert!(p.held().is_empty());
    }

    #[test]
    fn airtime_log_keeps_the_last_hour() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let mut log = AirtimeLog::load(dir.path(), now).unwrap();
        log.record(now - Duration::from_secs(7200), Duration::from_millis(5))
            .unwrap();
        log.record(now - Duration::from_secs(60), Duration::from_millis(7))
            .unwrap();
        let log = AirtimeLog::load(dir.path(), now).unwrap();
        assert_eq!(log.entries.len(), 1);
        assert_eq!(log.entries[0].1, Duration::from_millis(7));
    }
}
