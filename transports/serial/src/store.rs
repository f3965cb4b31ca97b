//! The durable state folder: partly received messages, keyed by their BLAKE3 hash, and the
//! airtime log behind the duty-cycle limit.
//!
//! ```text
//! STATE/rx/parts/<hash>/  a message being received: a group of ferry_transport's part
//!                         store (`log` of parts received: offset, length, CRC-32; `data`
//!                         holding each part at its offset, sparse)
//! STATE/rx/<hash>.msg     a whole message whose hash was checked (the group's data, renamed)
//! STATE/rx/<hash>.done    a whole message the mailbox view filed as processed
//! STATE/airtime.log       one line per frame sent: unix milliseconds, airtime microseconds
//! ```
//!
//! The part store ([`ferry_transport::parts`]) does the durable work: a part is written to
//! `data` before its record is appended to `log`, and both are flushed to the device
//! ([`Partial::sync`]) before an acknowledgement leaves, so what the other end was told is
//! held survives a crash. On reopening, every record is checked against the bytes (CRC-32):
//! a record whose bytes did not reach the disk (power cut) is dropped and its range asked
//! for again. A link is point to point and its other end already admitted, so one version
//! of each byte is kept: only the bytes not held yet are stored, and the whole message is
//! checked against its hash before it is delivered (a mismatch forgets every part).
//!
//! **Upgrading.** Parts kept by an earlier version (`rx/<hash>.part` + `rx/<hash>.log`)
//! are removed when a session opens: a message that was partly received before the upgrade
//! is received again from the start when it is next offered. Whole messages (`.msg`) are
//! kept as they were.
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
use crate::ranges::RangeSet;
use ferry_transport::fsutil;
use ferry_transport::parts::{Group, NewCandidate, PartStore, Units};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const KEEP_PARTIAL: Duration = Duration::from_secs(30 * 24 * 3600);
const KEEP_COMPLETE: Duration = Duration::from_secs(14 * 24 * 3600);
/// Most messages (whole or partial) the state folder keeps.
pub const RX_MAX_MESSAGES: usize = 64;
/// Most bytes the state folder keeps, by apparent size (a partial message counts its whole
/// announced length).
pub const RX_MAX_BYTES: u64 = 64 << 20;
/// Versions kept of one range: one (the link is point to point; the hash decides).
const ONE_VERSION: usize = 1;

/// Received messages, whole and in part.
#[derive(Debug)]
pub(crate) struct RxStore {
    dir: PathBuf,
    parts: PartStore,
}

/// What the store holds of a message.
pub(crate) enum Lookup {
    /// All of it, checked.
    Complete,
    /// Some (maybe none) of it.
    Partial(Partial),
}

/// A message being received: its group in the part store, and the bytes held. Its files
/// are opened for each write and closed again; they are created with the first bytes.
#[derive(Debug)]
pub(crate) struct Partial {
    hash: MessageHash,
    len: u64,
    /// Boxed: a group's index is large beside the engine's other states.
    group: Box<Group>,
    held: RangeSet,
}

/// One message in the folder, for the quota.
struct Entry {
    hash: MessageHash,
    bytes: u64,
    modified: SystemTime,
    files: Vec<PathBuf>,
    group: bool,
}

/// The entry of `hash`, made if new, touched at `modified`.
fn entry(
    by_hash: &mut HashMap<MessageHash, Entry>,
    hash: MessageHash,
    modified: SystemTime,
) -> &mut Entry {
    let e = by_hash.entry(hash).or_insert(Entry {
        hash,
        bytes: 0,
        modified,
        files: Vec::new(),
        group: false,
    });
    e.modified = e.modified.max(modified);
    e
}

fn age(path: &Path) -> Option<Duration> {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl RxStore {
    /// Opens (creating) `state/rx` and removes stale leftovers (and parts in the layout of
    /// an earlier version).
    pub(crate) fn open(state: &Path) -> io::Result<RxStore> {
        let store = RxStore::at(state);
        fs::create_dir_all(&store.dir)?;
        for e in fs::read_dir(&store.dir)?.flatten() {
            let p = e.path();
            match p.extension().and_then(|x| x.to_str()) {
                Some("msg") | Some("done") | Some("refused")
                    if age(&p).is_some_and(|a| a > KEEP_COMPLETE) =>
                {
                    let _ = fs::remove_file(&p);
                }
                // An earlier version's parts: received again from the start.
                Some("part") | Some("log") => {
                    let _ = fs::remove_file(&p);
                }
                _ => {}
            }
        }
        store.parts.expire(SystemTime::now(), KEEP_PARTIAL)?;
        Ok(store)
    }

    /// The store of `state`, without touching the disk.
    pub(crate) fn at(state: &Path) -> RxStore {
        let dir = state.join("rx");
        RxStore {
            parts: PartStore::new(dir.join("parts")),
            dir,
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
        // Parts of another length are not this message's: the group starts over at the
        // first write.
        let group = self.parts.group(&hash.to_string(), len, Units::Bytes)?;
        let mut held = RangeSet::new();
        for (s, e) in group.coverage() {
            held.insert(s, e);
        }
        Ok(Lookup::Partial(Partial {
            hash: *hash,
            len,
            group: Box::new(group),
            held,
        }))
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
    /// partial one its announced length.
    fn entries(&self) -> io::Result<Vec<Entry>> {
        let mut by_hash: HashMap<MessageHash, Entry> = HashMap::new();
        for g in self.parts.list()? {
            let Ok(hash) = g.key.parse::<MessageHash>() else {
                continue;
            };
            let e = entry(&mut by_hash, hash, g.modified);
            e.bytes += g.total;
            e.group = true;
        }
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
            if !matches!(ext, "msg" | "done" | "refused") {
                continue;
            }
            let meta = match e.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            // A whole message and a partial one of the same hash both count.
            let en = entry(&mut by_hash, hash, meta.modified().unwrap_or(UNIX_EPOCH));
            en.bytes += meta.len();
            en.files.push(path);
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
            for p in &e.files {
                match fs::remove_file(p) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            if e.group {
                self.parts.remove(&e.hash.to_string())?;
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
        self.group.on_disk()
    }

    /// Where the parts are kept (for error messages).
    pub(crate) fn path(&self) -> &Path {
        self.group.dir()
    }

    /// Stores bytes received at `offset`: those not held yet (one version of each byte).
    pub(crate) fn write(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let end = offset + bytes.len() as u64;
        if bytes.is_empty() || end > self.len || self.held.contains(offset, end) {
            return Ok(());
        }
        let mut gaps = Vec::new();
        let mut at = offset;
        for (s, e) in self.held.iter() {
            if e <= at {
                continue;
            }
            if s >= end {
                break;
            }
            if s > at {
                gaps.push((at, s));
            }
            at = at.max(e);
        }
        if at < end {
            gaps.push((at, end));
        }
        let now = unix_now();
        for (s, e) in gaps {
            let part = &bytes[(s - offset) as usize..(e - offset) as usize];
            self.group.add(
                &NewCandidate {
                    offset: s,
                    len: e - s,
                    bytes: part,
                    sender: "",
                    trust: 0,
                    at: now,
                },
                ONE_VERSION,
            )?;
            self.held.insert(s, e);
        }
        Ok(())
    }

    /// Flushes what was written to the device.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        self.group.sync()
    }

    /// Forgets every part (after a hash mismatch).
    pub(crate) fn reset(&mut self) -> io::Result<()> {
        self.group.drop_candidates()?;
        self.held = RangeSet::new();
        Ok(())
    }

    /// Checks a complete message against its hash and keeps it as `.msg`. Returns false, with
    /// every part forgotten, if the bytes do not match the hash.
    pub(crate) fn finish(&mut self, store: &RxStore) -> io::Result<bool> {
        // One version of each byte: one combination covers the message, if any does.
        let Some(combo) = self
            .group
            .combinations(1, usize::MAX, |_| false)
            .into_iter()
            .next()
        else {
            self.reset()?;
            return Ok(false);
        };
        let mut bytes = Vec::with_capacity(self.len as usize);
        let whole = match self.group.assemble(&combo, &mut bytes) {
            Ok(n) => n == self.len && MessageHash::of(&bytes) == self.hash,
            // A part changed on disk since it was checked: not this message.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => false,
            Err(e) => return Err(e),
        };
        if !whole {
            self.reset()?;
            return Ok(false);
        }
        self.group
            .finish(&combo, &store.msg_path(&self.hash), true)?;
        store.parts.remove(self.group.key())?;
        self.held = RangeSet::full(self.len);
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
        let part = dir
            .path()
            .join("rx/parts")
            .join(hash.to_string())
            .join("data");
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
    fn overlapping_frames_keep_one_version_of_each_byte_in_one_data_file() {
        let dir = tempfile::tempdir().unwrap();
        let msg: Vec<u8> = (0..100u8).collect();
        let hash = MessageHash::of(&msg);
        let store = RxStore::open(dir.path()).unwrap();
        let mut p = partial(&store, &hash, 100);
        p.write(10, &msg[10..40]).unwrap();
        // A frame over a held range and beyond (frame sizes changed between sessions): only
        // the bytes not held are stored, and nothing already held is written over.
        let mut forged = msg[0..60].to_vec();
        forged[20] ^= 0xff;
        p.write(0, &forged).unwrap();
        p.write(60, &msg[60..]).unwrap();
        let group = dir.path().join("rx/parts").join(hash.to_string());
        let mut names: Vec<String> = fs::read_dir(&group)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["data", "log"]);
        assert!(p.is_complete());
        assert!(p.finish(&store).unwrap());
        assert_eq!(store.read(&hash).unwrap(), msg);
        assert!(!group.exists(), "a finished message leaves no parts behind");
    }

    #[test]
    fn parts_in_an_earlier_versions_layout_are_dropped_and_received_again() {
        let dir = tempfile::tempdir().unwrap();
        let msg = vec![9u8; 64];
        let hash = MessageHash::of(&msg);
        let rx = dir.path().join("rx");
        fs::create_dir_all(&rx).unwrap();
        fs::write(rx.join(format!("{hash}.part")), &msg[..32]).unwrap();
        fs::write(rx.join(format!("{hash}.log")), b"FRYP\x01\0\0\0").unwrap();
        let store = RxStore::open(dir.path()).unwrap();
        assert!(!rx.join(format!("{hash}.part")).exists());
        assert!(!rx.join(format!("{hash}.log")).exists());
        let p = partial(&store, &hash, 64);
        assert!(p.held().is_empty() && !p.on_disk());
        assert_eq!(store.usage().unwrap(), (0, 0));
    }

    #[test]
    fn make_room_counts_a_partial_message_by_its_announced_length() {
        let dir = tempfile::tempdir().unwrap();
        let store = RxStore::open(dir.path()).unwrap();
        let big = MessageHash::of(b"big");
        let mut p = partial(&store, &big, RX_MAX_BYTES - 10);
        p.write(0, b"x").unwrap();
        assert_eq!(store.usage().unwrap(), (1, RX_MAX_BYTES - 10));
        // Another message of 20 bytes needs the big one gone, unless it is in use.
        let keep = HashSet::from([big]);
        assert!(!store.make_room(20, &keep).unwrap());
        assert!(store.make_room(20, &HashSet::new()).unwrap());
        assert_eq!(store.usage().unwrap(), (0, 0));
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
