//! The part store: pieces of messages being received, kept on disk until a message is whole,
//! for every transport that reassembles (serial, SMS, email).
//!
//! A store is a folder of *groups*, one per message being received, each named by a key the
//! transport chooses (a hash, a sender and tag; only `[A-Za-z0-9._-]`, never starting with
//! `.`, so a key cannot leave the folder). A group holds *candidates*: a range of the message,
//! in the caller's units ([`Units::Bytes`] for email and serial, [`Units::Pieces`] for SMS,
//! where part `i` is the range `[i, i+1)` and carries any number of bytes), the bytes, their
//! CRC-32, the sender, a trust level (higher is more trusted; the caller says what the
//! numbers mean) and the time it arrived.
//!
//! ```text
//! STORE/<key>/log        "FRYG", 1, 0, 0, 0; total u64; units u8; created u64 (seconds);
//!                        then one record per candidate: body length u16, body, CRC-32 of
//!                        the body u32. Body: id u32, offset u64, len u64, place u8 (0: in
//!                        `data`, 1: in `<id>.cand`), position in `data` u64, byte size u64,
//!                        CRC-32 of the bytes u32, trust u8, time u64, sender (UTF-8, rest)
//! STORE/<key>/data       the first version of every range, each at its position (sparse;
//!                        in bytes units the position is the range's offset)
//! STORE/<key>/<id>.cand  a further version of a range already held in `data`
//! STORE/<key>/meta       the caller's own small blob, replaced whole
//! ```
//!
//! **One version never overwrites another.** The first version of a range goes into `data`
//! (so 300 000 small serial frames are one file, not 300 000); a version of a range `data`
//! already holds, even in part, gets its own `<id>.cand` file. Bytes are written before their
//! record is appended to the log, and [`Group::sync`] flushes both before the caller counts
//! on them (serial acknowledges only then; email and SMS sync only members' pieces).
//!
//! **Crash rule.** On opening, every record is checked against its bytes (size and CRC-32): a
//! record whose bytes did not reach the disk, a torn record at the end of the log, a record
//! out of the message's bounds, is dropped, and its range is simply missing again. The log is
//! then rewritten (atomically, through [`crate::fsutil`]) before the next append. Removing
//! candidates rewrites the log the same way. A group is only created on disk with its first
//! candidate (or its meta blob): announcing a message costs nothing.
//!
//! **What is the caller's.** Quota numbers, what trust means, when a message is right (a
//! hash, a digest, the node's verdict), which combinations were refused, ledgers: the store
//! gives counts ([`Group::usage`], [`Group::have`], [`PartStore::list`]) and the operations,
//! and each transport keeps its own policy on top. The two rules the store does keep, for
//! every transport: at most `max_versions` versions of one range, and a version of lower trust
//! than an existing, different version of the same range is refused ([`Added::Conflicts`]),
//! so nothing a stranger sends displaces what a member sent.
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! use ferry_transport::parts::{Added, NewCandidate, PartStore, Units};
//! let dir = std::env::temp_dir().join(format!("ferry-parts-doc-{}", std::process::id()));
//! let store = PartStore::new(&dir);
//! let mut g = store.group("msg-1", 10, Units::Bytes)?;
//! let add = |g: &mut ferry_transport::parts::Group, offset: u64, bytes: &[u8]| {
//!     g.add(&NewCandidate { offset, len: bytes.len() as u64, bytes, sender: "a", trust: 1, at: 0 }, 4)
//! };
//! assert!(matches!(add(&mut g, 5, b"world")?, Added::New { .. }));
//! assert!(matches!(add(&mut g, 0, b"hello")?, Added::New { .. }));
//! g.sync()?;
//! let combo = g.combinations(1, 4096, |_| false).remove(0);
//! let mut whole = Vec::new();
//! g.assemble(&combo, &mut whole)?;
//! assert_eq!(whole, b"helloworld");
//! store.remove("msg-1")?;
//! # std::fs::remove_dir_all(&dir)
//! # }
//! ```

use crate::fsutil::{self, AtomicWrite, Step};
use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

const MAGIC: &[u8; 8] = b"FRYG\x01\x00\x00\x00";
const HEADER: usize = 8 + 8 + 1 + 8;
const BODY_FIXED: usize = 4 + 8 + 8 + 1 + 8 + 8 + 4 + 1 + 8;
/// Longest sender kept in a record, in bytes (a longer one is cut at a character boundary).
pub const MAX_SENDER: usize = 512;
/// Longest group key.
pub const MAX_KEY: usize = 128;

fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// What a range counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Units {
    /// Bytes of the message: a candidate for `[offset, offset+len)` is exactly `len` bytes,
    /// and overlapping candidates must agree where they overlap to assemble.
    Bytes,
    /// Numbered pieces: a candidate for `[i, i+1)` is piece `i`, whatever its size; an
    /// assembly is the chosen pieces one after another.
    Pieces,
}

impl Units {
    fn code(self) -> u8 {
        match self {
            Units::Bytes => 0,
            Units::Pieces => 1,
        }
    }
}

/// Where a candidate's bytes are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// In the group's `data` file, from this position.
    Data(u64),
    /// In its own `<id>.cand` file.
    Own,
}

/// One version of one range, as the log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Its number in the group (never reused while the group lives).
    pub id: u32,
    /// Where its range starts, in the group's units.
    pub offset: u64,
    /// How long its range is, in the group's units.
    pub len: u64,
    /// Its bytes' length.
    pub size: u64,
    /// CRC-32 of its bytes.
    pub crc: u32,
    /// Who sent it (as the carrier says).
    pub sender: String,
    /// How far it is trusted (the caller's scale; higher is more).
    pub trust: u8,
    /// When it arrived (the caller's clock, seconds).
    pub at: u64,
    /// Where its bytes are.
    pub place: Place,
}

impl Candidate {
    /// Where its range ends.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// A piece to add to a group.
#[derive(Clone, Copy, Debug)]
pub struct NewCandidate<'a> {
    /// Where its range starts.
    pub offset: u64,
    /// How long its range is (in bytes units, `bytes.len()`).
    pub len: u64,
    /// Its bytes.
    pub bytes: &'a [u8],
    /// Who sent it.
    pub sender: &'a str,
    /// How far it is trusted.
    pub trust: u8,
    /// When it arrived.
    pub at: u64,
}

/// What [`Group::add`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Added {
    /// Kept as this candidate. `evicted` is a version of the same range, of lower trust,
    /// that was removed to make room for it (the range already had `max_versions`).
    New {
        /// The new candidate's id.
        id: u32,
        /// The candidate put aside for it, if any.
        evicted: Option<Candidate>,
    },
    /// These exact bytes for this range are held already, as this candidate.
    Duplicate(u32),
    /// Refused: a different version of the same range with higher trust is held (this one).
    Conflicts(u32),
    /// Not kept: the range has `max_versions` versions, none of lower trust.
    Crowded,
}

/// What one sender's candidates of one trust take in a group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Candidates.
    pub candidates: usize,
    /// Bytes.
    pub bytes: u64,
}

/// A group as [`PartStore::list`] sees it, from its log's header alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    /// Its key.
    pub key: String,
    /// The message's length in the group's units.
    pub total: u64,
    /// When its log last changed.
    pub modified: SystemTime,
}

/// The folder of groups.
#[derive(Clone, Debug)]
pub struct PartStore {
    dir: PathBuf,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Checks a group key: 1 to [`MAX_KEY`] characters of `[A-Za-z0-9._-]`, not starting with
/// `.` (so never `..`, nor a temporary file's name).
pub fn check_key(key: &str) -> io::Result<()> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY
        && !key.starts_with('.')
        && !key.contains("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("{key:?} is not a valid part-store key")))
    }
}

fn remove_if_there(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl PartStore {
    /// The store in `dir` (created with the first group; nothing is touched now).
    pub fn new(dir: impl Into<PathBuf>) -> PartStore {
        PartStore { dir: dir.into() }
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn gdir(&self, key: &str) -> io::Result<PathBuf> {
        check_key(key)?;
        Ok(self.dir.join(key))
    }

    /// The group `key` for a message of `total` units: what the disk holds of it, checked
    /// (see the crash rule), or an empty group if nothing is held or what is held was for
    /// another length or other units. Creates nothing.
    pub fn group(&self, key: &str, total: u64, units: Units) -> io::Result<Group> {
        self.open(key, total, units, true)
    }

    /// Like [`PartStore::group`], but a record's bytes are only checked to be there (file
    /// lengths), not read: for groups of large candidates opened often (email: a bundle of
    /// a gigabyte, opened for each piece). Their CRC-32 is still checked whenever they are
    /// read ([`Group::read`], [`Group::assemble`] fail with `InvalidData`).
    pub fn group_lazy(&self, key: &str, total: u64, units: Units) -> io::Result<Group> {
        self.open(key, total, units, false)
    }

    fn open(&self, key: &str, total: u64, units: Units, read: bool) -> io::Result<Group> {
        let dir = self.gdir(key)?;
        let mut g = Group {
            dir,
            key: key.to_string(),
            total,
            units,
            created: 0,
            cands: Cands::default(),
            next_id: 1,
            on_disk: false,
            log_stale: false,
            unsynced: false,
            new_files: Vec::new(),
        };
        let raw = match fs::read(g.dir.join("log")) {
            Ok(raw) => raw,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(g);
            }
            Err(e) => return Err(e),
        };
        let Some((t, u, created)) = parse_header(&raw) else {
            return Ok(g);
        };
        if t != total || u != units.code() {
            return Ok(g);
        }
        g.created = created;
        g.on_disk = true;
        let mut data = File::open(g.dir.join("data")).ok();
        let data_len = data
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map_or(0, |m| m.len());
        let mut at = HEADER;
        let mut buf = Vec::new();
        while let Some((c, next)) = parse_record(&raw, at) {
            at = next;
            let Some(c) = c else {
                g.log_stale = true;
                continue;
            };
            let fits = c.len > 0 && c.end() <= total;
            let fresh = g.cands.get(c.id).is_none();
            let sound = fits
                && fresh
                && (units == Units::Pieces || c.size == c.len)
                && match (c.place, read) {
                    (Place::Data(pos), true) => data.as_mut().is_some_and(|f| {
                        read_at(f, pos, c.size, &mut buf).is_ok() && crc32(&buf) == c.crc
                    }),
                    (Place::Data(pos), false) => pos + c.size <= data_len,
                    (Place::Own, true) => fs::read(g.dir.join(format!("{}.cand", c.id)))
                        .is_ok_and(|b| b.len() as u64 == c.size && crc32(&b) == c.crc),
                    (Place::Own, false) => fs::metadata(g.dir.join(format!("{}.cand", c.id)))
                        .is_ok_and(|m| m.len() == c.size),
                };
            g.next_id = g.next_id.max(c.id.saturating_add(1));
            if sound {
                g.cands.insert(c);
            } else {
                g.log_stale = true;
            }
        }
        if at != raw.len() {
            // A torn record at the end (or garbage): the next append must not follow it.
            g.log_stale = true;
        }
        Ok(g)
    }

    /// Whether group `key` has a folder.
    pub fn exists(&self, key: &str) -> bool {
        self.gdir(key).is_ok_and(|d| d.is_dir())
    }

    /// The caller's blob of group `key`, if it has one.
    pub fn meta(&self, key: &str) -> io::Result<Option<Vec<u8>>> {
        match fs::read(self.gdir(key)?.join("meta")) {
            Ok(b) => Ok(Some(b)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Replaces the caller's blob of group `key` (creating the group's folder), flushed to
    /// the device when `durable`.
    pub fn set_meta(&self, key: &str, bytes: &[u8], durable: bool) -> io::Result<()> {
        let dir = self.gdir(key)?;
        fs::create_dir_all(&dir)?;
        AtomicWrite::new()
            .durable(durable)
            .write(&dir.join("meta"), bytes)
    }

    /// The keys of the groups in the store, sorted.
    pub fn keys(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if check_key(&name).is_ok() && e.file_type()?.is_dir() {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every group with a log: its key, length, and when its log last changed (a group
    /// whose log's header is unreadable is listed with length 0).
    pub fn list(&self) -> io::Result<Vec<GroupInfo>> {
        let mut out = Vec::new();
        for key in self.keys()? {
            let log = self.dir.join(&key).join("log");
            let (total, modified) = match File::open(&log) {
                Ok(mut f) => {
                    let mut head = [0u8; HEADER];
                    let total = f
                        .read_exact(&mut head)
                        .ok()
                        .and_then(|()| parse_header(&head))
                        .map_or(0, |h| h.0);
                    let modified = f.metadata()?.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    (total, modified)
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let m = fs::metadata(self.dir.join(&key))?;
                    (0, m.modified().unwrap_or(SystemTime::UNIX_EPOCH))
                }
                Err(e) => return Err(e),
            };
            out.push(GroupInfo {
                key,
                total,
                modified,
            });
        }
        Ok(out)
    }

    /// Drops group `key` and everything in its folder.
    pub fn remove(&self, key: &str) -> io::Result<()> {
        match fs::remove_dir_all(self.gdir(key)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Drops every group whose log (or folder) has not changed for longer than `max_age`
    /// at `now`. Returns the keys dropped.
    pub fn expire(&self, now: SystemTime, max_age: std::time::Duration) -> io::Result<Vec<String>> {
        let mut gone = Vec::new();
        for g in self.list()? {
            if now.duration_since(g.modified).is_ok_and(|a| a > max_age) {
                self.remove(&g.key)?;
                gone.push(g.key);
            }
        }
        Ok(gone)
    }
}

fn parse_header(raw: &[u8]) -> Option<(u64, u8, u64)> {
    if raw.len() < HEADER || &raw[..8] != MAGIC {
        return None;
    }
    let total = u64::from_le_bytes(raw[8..16].try_into().ok()?);
    let units = raw[16];
    let created = u64::from_le_bytes(raw[17..25].try_into().ok()?);
    (units <= 1).then_some((total, units, created))
}

fn header(total: u64, units: Units, created: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&total.to_le_bytes());
    h.push(units.code());
    h.extend_from_slice(&created.to_le_bytes());
    h
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// The record at `at` (`None` if damaged) and where the next one starts; `None` at the
/// end or at a torn record.
fn parse_record(raw: &[u8], at: usize) -> Option<(Option<Candidate>, usize)> {
    let n = usize::from(u16::from_le_bytes(raw.get(at..at + 2)?.try_into().ok()?));
    let body = raw.get(at + 2..at + 2 + n)?;
    let check = raw.get(at + 2 + n..at + 6 + n)?;
    let next = at + 6 + n;
    if n < BODY_FIXED || crc32(body) != u32::from_le_bytes(check.try_into().ok()?) {
        return Some((None, next));
    }
    Some((decode_body(body), next))
}

fn decode_body(body: &[u8]) -> Option<Candidate> {
    let place = match body[20] {
        0 => Place::Data(u64_at(body, 21)),
        1 => Place::Own,
        _ => return None,
    };
    let c = Candidate {
        id: u32_at(body, 0),
        offset: u64_at(body, 4),
        len: u64_at(body, 12),
        place,
        size: u64_at(body, 29),
        crc: u32_at(body, 37),
        trust: body[41],
        at: u64_at(body, 42),
        sender: String::from_utf8_lossy(&body[50..]).into_owned(),
    };
    c.offset.checked_add(c.len)?;
    if let Place::Data(pos) = c.place {
        pos.checked_add(c.size)?;
    }
    Some(c)
}

fn record(c: &Candidate) -> Vec<u8> {
    let mut body = Vec::with_capacity(BODY_FIXED + c.sender.len());
    body.extend_from_slice(&c.id.to_le_bytes());
    body.extend_from_slice(&c.offset.to_le_bytes());
    body.extend_from_slice(&c.len.to_le_bytes());
    let (place, pos) = match c.place {
        Place::Data(pos) => (0u8, pos),
        Place::Own => (1, 0),
    };
    body.push(place);
    body.extend_from_slice(&pos.to_le_bytes());
    body.extend_from_slice(&c.size.to_le_bytes());
    body.extend_from_slice(&c.crc.to_le_bytes());
    body.push(c.trust);
    body.extend_from_slice(&c.at.to_le_bytes());
    body.extend_from_slice(c.sender.as_bytes());
    let mut out = Vec::with_capacity(body.len() + 6);
    out.extend_from_slice(&(body.len() as u16).to_le_bytes());
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_le_bytes());
    out
}

fn read_at(f: &mut File, pos: u64, size: u64, buf: &mut Vec<u8>) -> io::Result<()> {
    let size = usize::try_from(size).map_err(|_| invalid("a candidate too large".into()))?;
    buf.clear();
    buf.resize(size, 0);
    f.seek(SeekFrom::Start(pos))?;
    f.read_exact(buf)
}

fn cut(sender: &str) -> &str {
    if sender.len() <= MAX_SENDER {
        return sender;
    }
    let mut end = MAX_SENDER;
    while !sender.is_char_boundary(end) {
        end -= 1;
    }
    &sender[..end]
}

/// A group's candidates, by range start (so finding a range's versions, or what overlaps a
/// range, costs a lookup, not a scan: a serial message has hundreds of thousands).
#[derive(Debug, Default)]
struct Cands {
    by_start: BTreeMap<(u64, u32), Candidate>,
    offset_of: HashMap<u32, u64>,
    /// No candidate's range is longer (an upper bound: removals do not lower it).
    max_len: u64,
    /// Where `data` ends: the next piece's position in pieces units.
    data_end: u64,
}

impl Cands {
    fn insert(&mut self, c: Candidate) {
        self.max_len = self.max_len.max(c.len);
        if let Place::Data(pos) = c.place {
            self.data_end = self.data_end.max(pos + c.size);
        }
        self.offset_of.insert(c.id, c.offset);
        self.by_start.insert((c.offset, c.id), c);
    }

    fn get(&self, id: u32) -> Option<&Candidate> {
        self.by_start.get(&(*self.offset_of.get(&id)?, id))
    }

    fn get_mut(&mut self, id: u32) -> Option<&mut Candidate> {
        self.by_start.get_mut(&(*self.offset_of.get(&id)?, id))
    }

    fn remove(&mut self, id: u32) -> Option<Candidate> {
        let off = self.offset_of.remove(&id)?;
        self.by_start.remove(&(off, id))
    }

    fn iter(&self) -> impl Iterator<Item = &Candidate> {
        self.by_start.values()
    }

    fn len(&self) -> usize {
        self.by_start.len()
    }

    fn clear(&mut self) {
        *self = Cands::default();
    }

    /// Candidates whose range starts at `offset`.
    fn starting_at(&self, offset: u64) -> impl Iterator<Item = &Candidate> {
        self.by_start
            .range((offset, 0)..=(offset, u32::MAX))
            .map(|(_, c)| c)
    }

    /// Candidates whose range overlaps `[start, end)`.
    fn overlapping(&self, start: u64, end: u64) -> impl Iterator<Item = &Candidate> {
        self.by_start
            .range((start.saturating_sub(self.max_len), 0)..(end, 0))
            .map(|(_, c)| c)
            .filter(move |c| c.end() > start)
    }
}

/// One message being received: its candidates, as checked on opening. Holds no file open.
#[derive(Debug)]
pub struct Group {
    dir: PathBuf,
    key: String,
    total: u64,
    units: Units,
    created: u64,
    cands: Cands,
    next_id: u32,
    /// Whether the log exists with this group's header.
    on_disk: bool,
    /// Whether the log holds records that were dropped (or a torn tail): rewrite before the
    /// next append.
    log_stale: bool,
    /// Whether something was written since the last [`Group::sync`].
    unsynced: bool,
    /// Files created since the last sync (their folder entry must be flushed too).
    new_files: Vec<PathBuf>,
}

impl Group {
    /// Its key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The message's length, in the group's units.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Its units.
    pub fn units(&self) -> Units {
        self.units
    }

    /// Its folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// When its log was made (the time of its first candidate), 0 if it has none.
    pub fn created(&self) -> u64 {
        self.created
    }

    /// When its latest candidate arrived, if it has any.
    pub fn last_at(&self) -> Option<u64> {
        self.cands.iter().map(|c| c.at).max()
    }

    /// Whether its log exists (it holds candidates, or held some).
    pub fn on_disk(&self) -> bool {
        self.on_disk
    }

    /// Its candidates, by range (start, then id).
    pub fn candidates(&self) -> impl Iterator<Item = &Candidate> {
        self.cands.iter()
    }

    /// How many candidates it holds.
    pub fn count(&self) -> usize {
        self.cands.len()
    }

    /// The candidate `id`.
    pub fn candidate(&self, id: u32) -> Option<&Candidate> {
        self.cands.get(id)
    }

    /// The versions held of the range `[offset, offset+len)`.
    pub fn versions(&self, offset: u64, len: u64) -> impl Iterator<Item = &Candidate> {
        self.cands.starting_at(offset).filter(move |c| c.len == len)
    }

    /// The ranges its candidates cover, merged and sorted.
    pub fn coverage(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (s, e) in self.cands.iter().map(|c| (c.offset, c.end())) {
            match out.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => out.push((s, e)),
            }
        }
        out
    }

    /// Units covered by at least one candidate.
    pub fn have(&self) -> u64 {
        self.coverage().iter().map(|(s, e)| e - s).sum()
    }

    /// Whether every unit is covered (an empty message always is).
    pub fn is_covered(&self) -> bool {
        self.have() == self.total
    }

    /// What each (sender, trust) holds here.
    pub fn usage(&self) -> BTreeMap<(String, u8), Usage> {
        let mut out: BTreeMap<(String, u8), Usage> = BTreeMap::new();
        for c in self.cands.iter() {
            let u = out.entry((c.sender.clone(), c.trust)).or_default();
            u.candidates += 1;
            u.bytes += c.size;
        }
        out
    }

    /// The highest trust of its candidates (0 with none).
    pub fn best_trust(&self) -> u8 {
        self.cands.iter().map(|c| c.trust).max().unwrap_or(0)
    }

    fn path_of(&self, c: &Candidate) -> PathBuf {
        match c.place {
            Place::Data(_) => self.dir.join("data"),
            Place::Own => self.dir.join(format!("{}.cand", c.id)),
        }
    }

    /// The bytes of candidate `id` (checked against its CRC-32).
    pub fn read(&self, id: u32) -> io::Result<Vec<u8>> {
        let c = self
            .candidate(id)
            .ok_or_else(|| invalid(format!("no candidate {id} in {}", self.key)))?;
        let mut buf = Vec::new();
        let path = self.path_of(c);
        match c.place {
            Place::Data(pos) => read_at(&mut File::open(&path)?, pos, c.size, &mut buf)?,
            Place::Own => buf = fs::read(&path)?,
        }
        if buf.len() as u64 != c.size || crc32(&buf) != c.crc {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} changed on disk", path.display()),
            ));
        }
        Ok(buf)
    }

    /// Makes (or remakes) the folder and a log with only the header.
    fn create(&mut self, now: u64) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        for e in fs::read_dir(&self.dir)?.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name == "data" || name.ends_with(".cand") {
                remove_if_there(&e.path())?;
            }
        }
        self.created = now;
        self.cands.clear();
        fs::write(self.dir.join("log"), header(self.total, self.units, now))?;
        self.on_disk = true;
        self.log_stale = false;
        self.unsynced = true;
        self.new_files.push(self.dir.join("log"));
        Ok(())
    }

    /// Rewrites the log from the candidates held (atomically).
    fn rewrite_log(&mut self, durable: bool) -> io::Result<()> {
        let mut raw = header(self.total, self.units, self.created);
        for c in self.cands.iter() {
            raw.extend(record(c));
        }
        AtomicWrite::new()
            .durable(durable)
            .write(&self.dir.join("log"), &raw)?;
        self.log_stale = false;
        Ok(())
    }

    /// Adds a candidate, keeping at most `max_versions` versions of one range (a range is
    /// the same when offset and length are). Bytes go to `data` when no candidate there
    /// overlaps them, else to their own file; the record follows the bytes. Nothing is
    /// flushed: call [`Group::sync`] before relying on it.
    pub fn add(&mut self, new: &NewCandidate<'_>, max_versions: usize) -> io::Result<Added> {
        let end = new
            .offset
            .checked_add(new.len)
            .filter(|&e| e <= self.total && new.len > 0)
            .ok_or_else(|| {
                invalid(format!(
                    "range {}+{} is outside {} (length {})",
                    new.offset, new.len, self.key, self.total
                ))
            })?;
        if self.units == Units::Bytes && new.bytes.len() as u64 != new.len {
            return Err(invalid(format!(
                "{} bytes for a range of {} bytes",
                new.bytes.len(),
                new.len
            )));
        }
        let crc = crc32(new.bytes);
        let same: Vec<Candidate> = self.versions(new.offset, new.len).cloned().collect();
        for c in &same {
            if c.size == new.bytes.len() as u64 && c.crc == crc && self.read(c.id)? == new.bytes {
                return Ok(Added::Duplicate(c.id));
            }
        }
        if let Some(c) = same
            .iter()
            .filter(|c| c.trust > new.trust)
            .max_by_key(|c| c.trust)
        {
            return Ok(Added::Conflicts(c.id));
        }
        let mut evicted = None;
        if same.len() >= max_versions {
            let weakest = same
                .iter()
                .filter(|c| c.trust < new.trust)
                .min_by_key(|c| (c.trust, c.at, c.id));
            match weakest {
                Some(w) => evicted = Some(w.clone()),
                None => return Ok(Added::Crowded),
            }
        }
        if let Some(w) = &evicted {
            self.remove(&[w.id], false)?;
        }
        if !self.on_disk {
            self.create(new.at)?;
        }
        if self.log_stale {
            self.rewrite_log(false)?;
        }
        let id = self.next_id;
        self.next_id += 1;
        let size = new.bytes.len() as u64;
        let pos = match self.units {
            Units::Bytes => new.offset,
            Units::Pieces => self.cands.data_end,
        };
        // In bytes units a range's position in `data` is its offset, so a range overlapping
        // one held there would overwrite it; in pieces units each has its own position, and
        // only a second version of the same pieces goes elsewhere (so the first stays the
        // one `data` holds).
        let data_taken = self
            .cands
            .overlapping(new.offset, end)
            .any(|c| matches!(c.place, Place::Data(_)));
        let place = if data_taken {
            let path = self.dir.join(format!("{id}.cand"));
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            f.write_all(new.bytes)?;
            self.new_files.push(path);
            Place::Own
        } else {
            let path = self.dir.join("data");
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)?;
            f.seek(SeekFrom::Start(pos))?;
            f.write_all(new.bytes)?;
            Place::Data(pos)
        };
        let c = Candidate {
            id,
            offset: new.offset,
            len: new.len,
            size,
            crc,
            sender: cut(new.sender).to_string(),
            trust: new.trust,
            at: new.at,
            place,
        };
        OpenOptions::new()
            .append(true)
            .open(self.dir.join("log"))?
            .write_all(&record(&c))?;
        self.cands.insert(c);
        self.unsynced = true;
        Ok(Added::New { id, evicted })
    }

    /// Raises candidate `id`'s trust to `trust` with `sender` (a more trusted sender sent the
    /// same bytes). Rewrites the log when it changes anything.
    pub fn raise_trust(
        &mut self,
        id: u32,
        trust: u8,
        sender: &str,
        durable: bool,
    ) -> io::Result<()> {
        let Some(c) = self.cands.get_mut(id) else {
            return Ok(());
        };
        if trust <= c.trust {
            return Ok(());
        }
        c.trust = trust;
        c.sender = cut(sender).to_string();
        self.rewrite_log(durable)
    }

    /// Flushes to the device what was written since the last sync: `data`, the log, new
    /// candidate files and the folder's entries for them.
    pub fn sync(&mut self) -> io::Result<()> {
        if !self.unsynced || !self.on_disk {
            return Ok(());
        }
        let data = self.dir.join("data");
        if data.exists() {
            File::open(&data)?.sync_data()?;
        }
        File::open(self.dir.join("log"))?.sync_data()?;
        for p in std::mem::take(&mut self.new_files) {
            if let Ok(f) = File::open(&p) {
                f.sync_data()?;
            }
        }
        fsutil::sync_folder(&self.dir);
        if let Some(parent) = self.dir.parent() {
            fsutil::sync_folder(parent);
        }
        self.unsynced = false;
        Ok(())
    }

    /// Removes candidates: the log is rewritten without them (atomically, flushed when
    /// `durable`) and their own files go; bytes in `data` stay until the group finishes.
    pub fn remove(&mut self, ids: &[u32], durable: bool) -> io::Result<()> {
        let gone: Vec<Candidate> = ids.iter().filter_map(|&id| self.cands.remove(id)).collect();
        if gone.is_empty() {
            return Ok(());
        }
        self.rewrite_log(durable)?;
        for c in gone {
            if c.place == Place::Own {
                remove_if_there(&self.path_of(&c))?;
            }
        }
        Ok(())
    }

    /// Combinations of candidates that cover the whole message, in order, members' first:
    /// at each position the candidates that cover it are tried by trust (highest first),
    /// then time and id. At most `max` combinations for which `skip` is false, found within
    /// `max_steps` steps of the search.
    pub fn combinations(
        &self,
        max: usize,
        max_steps: usize,
        mut skip: impl FnMut(&[u32]) -> bool,
    ) -> Vec<Vec<u32>> {
        let mut out = Vec::new();
        if self.total == 0 {
            if max > 0 && !skip(&[]) {
                out.push(Vec::new());
            }
            return out;
        }
        if !self.is_covered() {
            return out;
        }
        let mut steps = 0usize;
        // The candidates that can come next at `pos`, best first.
        let options = |pos: u64, steps: &mut usize| -> Vec<&Candidate> {
            let mut v: Vec<&Candidate> = match self.units {
                Units::Bytes => self.cands.overlapping(pos, pos + 1).collect(),
                Units::Pieces => self.cands.starting_at(pos).collect(),
            };
            *steps += v.len().max(1);
            v.sort_by_key(|c| (std::cmp::Reverse(c.trust), c.at, c.id));
            v
        };
        // An explicit depth-first search (a serial message is one long chain): per depth,
        // the options at its position and the next one to try.
        let mut stack: Vec<(Vec<&Candidate>, usize)> = vec![(options(0, &mut steps), 0)];
        let mut chosen: Vec<u32> = Vec::new();
        while let Some((opts, next)) = stack.last_mut() {
            if out.len() >= max || steps >= max_steps {
                break;
            }
            let Some(c) = opts.get(*next).copied() else {
                stack.pop();
                chosen.pop();
                continue;
            };
            *next += 1;
            chosen.push(c.id);
            if c.end() >= self.total {
                if !skip(&chosen) {
                    out.push(chosen.clone());
                }
                chosen.pop();
            } else {
                let o = options(c.end(), &mut steps);
                stack.push((o, 0));
            }
        }
        out
    }

    /// Writes the assembly of `combo` (from [`Group::combinations`]) into `out`: in bytes
    /// units, where two candidates overlap the later one's overlapping bytes are skipped.
    /// Returns the bytes written. Fails with `InvalidData` if a candidate's bytes changed.
    pub fn assemble(&self, combo: &[u32], out: &mut impl Write) -> io::Result<u64> {
        let mut written = 0u64;
        let mut end = 0u64;
        let mut data: Option<File> = None;
        let mut bytes = Vec::new();
        for &id in combo {
            let c = self
                .candidate(id)
                .ok_or_else(|| invalid(format!("no candidate {id} in {}", self.key)))?;
            let path = self.path_of(c);
            match c.place {
                Place::Data(pos) => {
                    if data.is_none() {
                        data = Some(File::open(&path)?);
                    }
                    read_at(
                        data.as_mut().expect("opened above"),
                        pos,
                        c.size,
                        &mut bytes,
                    )?;
                }
                Place::Own => bytes = fs::read(&path)?,
            }
            if bytes.len() as u64 != c.size || crc32(&bytes) != c.crc {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} changed on disk", path.display()),
                ));
            }
            let skip = match self.units {
                Units::Bytes => end.saturating_sub(c.offset).min(c.size) as usize,
                Units::Pieces => 0,
            };
            out.write_all(&bytes[skip..])?;
            written += (bytes.len() - skip) as u64;
            end = c.end();
        }
        Ok(written)
    }

    /// Whether `combo` is exactly what `data` holds from its start: bytes units, every
    /// candidate in `data` at its own offset, and the file no longer than the message.
    fn data_is(&self, combo: &[u32]) -> bool {
        let mut end = 0;
        for &id in combo {
            match self.candidate(id) {
                Some(c) if c.place == Place::Data(c.offset) && c.offset == end => end = c.end(),
                _ => return false,
            }
        }
        self.units == Units::Bytes
            && end == self.total
            && fs::metadata(self.dir.join("data")).is_ok_and(|m| m.len() == self.total)
    }

    /// Finishes the group with the whole message: the assembly of `combo` is written to
    /// `dest` (atomically; flushed when `durable`), then the candidates go (log, `data`,
    /// candidate files; the caller's blob, and so the folder, stay until [`PartStore::remove`]).
    /// When `data` is the message already (bytes units, first versions only), it is renamed
    /// into place instead of copied.
    pub fn finish(&mut self, combo: &[u32], dest: &Path, durable: bool) -> io::Result<()> {
        if self.total == 0 {
            AtomicWrite::new().durable(durable).write(dest, b"")?;
        } else if self.data_is(combo) {
            let data = self.dir.join("data");
            if durable {
                File::open(&data)?.sync_all()?;
            }
            // The checked file itself is moved into place (no copy of a message's bytes),
            // so this is not fsutil's temporary-file write; the folders are synced below.
            fs::rename(&data, dest)?;
            if durable {
                if let Some(d) = dest.parent() {
                    fsutil::sync_folder(d);
                }
                fsutil::sync_folder(&self.dir);
            }
        } else {
            AtomicWrite::new().durable(durable).write_with(
                dest,
                |f| {
                    let mut w = io::BufWriter::new(f);
                    self.assemble(combo, &mut w)?;
                    w.flush()
                },
                |_: Step, e| e,
            )?;
        }
        self.drop_candidates()
    }

    /// Removes every candidate and its files, and the log (the caller's blob stays); the
    /// folder too if that leaves it empty.
    pub fn drop_candidates(&mut self) -> io::Result<()> {
        if self.dir.is_dir() {
            for e in fs::read_dir(&self.dir)?.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name == "data" || name == "log" || name.ends_with(".cand") {
                    remove_if_there(&e.path())?;
                }
            }
        }
        // The folder goes too when nothing else is in it (the caller's blob, a whole message).
        let _ = fs::remove_dir(&self.dir);
        self.cands.clear();
        self.on_disk = false;
        self.log_stale = false;
        self.unsynced = false;
        self.new_files.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new<'a>(offset: u64, bytes: &'a [u8], sender: &'a str, trust: u8) -> NewCandidate<'a> {
        NewCandidate {
            offset,
            len: bytes.len() as u64,
            bytes,
            sender,
            trust,
            at: 100,
        }
    }

    fn piece<'a>(i: u64, bytes: &'a [u8], sender: &'a str) -> NewCandidate<'a> {
        NewCandidate {
            offset: i,
            len: 1,
            bytes,
            sender,
            trust: 0,
            at: 100,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn whole(g: &Group, combo: &[u32]) -> Vec<u8> {
        let mut out = Vec::new();
        g.assemble(combo, &mut out).unwrap();
        out
    }

    #[test]
    fn candidates_survive_reopening_and_first_versions_share_one_data_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartStore::new(dir.path());
        let mut g = store.group("m", 10, Units::Bytes).unwrap();
        assert!(!dir.path().join("m").exists(), "announcing creates nothing");
        for i in 0..5 {
            let bytes = [i as u8; 2];
            assert!(matches!(
                g.add(&new(i * 2, &bytes, "a", 1), 4).unwrap(),
                Added::New { .. }
            ));
        }
        drop(g); // no sync: a killed process keeps what reached the OS
        let g = store.group("m", 10, Units::Bytes).unwrap();
        assert_eq!(g.count(), 5);
        assert_eq!(names(&dir.path().join("m")), ["data", "log"]);
        assert_eq!(g.coverage(), vec![(0, 10)]);
        let combos = g.combinations(4, 4096, |_| false);
        assert_eq!(combos.len(), 1);
        assert_eq!(whole(&g, &combos[0]), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]);
        // Another length, or other units: what is there is not this message.
        assert!(store.group("m", 11, Units::Bytes).unwrap().count() == 0);
        assert!(store.group("m", 10, Units::Pieces).unwrap().count() == 0);
    }

    #[test]
    fn a_record_whose_bytes_did_not_reach_the_disk_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartStore::new(dir.path());
        let mut g = store.group("m", 100, Units::Bytes).unwrap();
        g.add(&new(0, &[5; 50], "a", 1), 4).unwrap();
        g.add(&new(50, &[6; 50], "a", 1), 4).unwrap();
        g.sync().unwrap();
        // A power cut kept the log but only part of the data.
        let data = dir.path().join("m/data");
        let f = OpenOptions::new().write(true).open(&data).unwrap();
        f.set_len(70).unwrap();
        let mut g = store.group("m", 100, Units::Bytes).unwrap();
        assert_eq!(g.coverage(), vec![(0, 50)]);
        // The range is asked for again and taken; the log was rewritten without the stale
        // record, so a reopening sees exactly the two good ones.
        assert!(matches!(
            g.add(&new(50, &[6; 50], "a", 1), 4).unwrap(),
            Added::New { .. }
        ));
        let g = store.group("m", 100, Units::Bytes).unwrap();
        assert_eq!(g.count(), 2);
        assert_eq!(
            whole(&g, &g.combinations(1, 100, |_| false)[0])[50..],
            [6; 50]
        );
    }

    #[test]
    fn a_lazy_group_checks_lengths_on_opening_and_bytes_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartStore::new(dir.path());
        let mut g = store.group("m", 20, Units::Bytes).unwrap();
        g.add(&new(0, &[1; 10], "a", 1), 4).unwrap();
        g.add(&new(10, &[2; 10], "a", 1), 4).unwrap();
        let Added::New { id: own, .. } = g.add(&new(10, &[3; 10], "b", 1), 4).unwrap() else {
            panic!("kept");
        };
        // A flipped byte in `data` and a cut candidate file.
        let data = dir.path().join("m/data");
        let mut raw = fs::read(&data).unwrap();
        raw[3] ^= 1;
        fs::write(&data, raw).unwrap();
        fs::write(dir.path().join(format!("m/{own}.cand")), [3; 9]).unwrap();
        let g = store.group_lazy("m", 20, Units::Bytes).unwrap();
        assert_eq!(g.count(), 2, "the cut file is seen by its length");
        let first = g.candidates().next().unwrap().id;
        assert_eq!(
            g.read(first).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let combo = g.combinations(1, 100, |_| false).remove(0);
        let err = g.assemble(&combo, &mut Vec::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // The full check drops the flipped one as well.
        assert_eq!(store.group("m", 20, Units::Bytes).unwrap().count(), 1);
    }

    #[test]
    fn a_torn_record_at_the_end_of_the_log_is_dropped_and_later_records_still_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartStore::new(dir.path());
        let mut g = store.group("m", 30, Units::Bytes).unwrap();
        g.add(&new(0, &[1; 10], "a", 1), 4).unwrap();
        g.add(&new(10, &[2; 10], "a", 1), 4).unwrap();
        let log = dir.path().join("m/log");
        let len = fs::metadata(&log).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&log)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let mut g = store.group("m", 30, Units::Bytes).unwrap();
        assert_eq!(g.coverage(), vec![(0, 10)]);
        g.add(&new(20, &[3; 10], "a", 1), 4).unwrap();
        let g = store.group("m", 30, Units::Bytes).unwrap();
        assert_eq!(g.coverage(), vec![(0, 10), (20, 30)]);
        // A damaged record in the middle is dropped too (its CRC), not the rest.
        let mut raw = fs::read(&log).unwrap();
        raw[HEADER + 2 + 5] ^= 0xff;
        fs::write(&log, raw).unwrap();
        let g = store.group("m", 30, Units::Bytes).unwrap();
        assert_eq!(g.coverage(), vec![(20, 30)]);
    }

    #[test]
    fn a_second_version_never_overwrites_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartStore::new(dir.path());
        let mut g = store.group("m", 8, Units::Bytes).unwrap();
        let Added::New { id: real, .. } = g.add(&new(0, b"real", "member", 1), 4).unwrap() else {
            panic!("the first version is kept");
        };
        // The same bytes again: a duplicate, nothing written.
        assert_eq!(
            g.add(&new(0, b"real", "other", 1), 4).unwrap(),
            Added::Duplicate(real)
        );
        // A different version of the same range, and one overlapping it in part.
        let Added::New { id: fake, .. } = g.add(&new(0, b"fake", "x", 1), 4).unwrap() else {
            panic!("a second version is kept beside the first");
        };
        let Added::New { id: half, .. } = g.add(&new(2, b"ALxx", "x", 1), 4).unwrap() else {
            panic!("an overlapping version is kept beside the first");
        };
        g.add(&new(4, b"tail", "member", 1), 4).unwrap();
        let g = store.group("m", 8, Units::Bytes).unwrap();
        assert_eq!(g.read(real).unwrap(), b"real");
        assert_eq!(g.read(fake).unwrap(), b"fake");
        assert_eq!(g.read(half).unwrap(), b"ALxx");
        assert_eq!(g.candidate(fake).unwrap().place, Place::Own);
        assert_eq!(g.candidate(half).unwrap().place, Place::Own);
        let all: Vec<Vec<u8>> = g
            .combinations(10, 4096, |_| false)
            .iter()
            .map(|c| whole(&g, c))
            .collect();
        let mut all = all;
        all.sort();
        let want: Vec<Vec<u8>> = [&b"faketail"[..], b"fakexxil", b"realtail", b"realxxil"]
            .iter()
            .map(|b| b.to_vec())
            .collect();
        assert_eq!(
            all, want,
            "every version in every covering choice, none written over"
        );
    }

    #[test]
    fn a_lower_trust_version_of_a_members_range_is_refused_and_cannot_crowd_it_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartStore::new(dir.path());
        let mut g = store.group("m", 4, Units::Bytes).unwrap();
        // Strangers fill the range's versions first.
        for b in [b"aaaa", b"bbbb"] {
            assert!(matches!(
                g.add(&new(0, b, "stranger", 0), 2).unwrap(),
                Added::New { .. }
            ));
        }
        assert_eq!(
            g.add(&new(0, b"cccc", "stranger", 0), 2).unwrap(),
            Added::Crowded
        );
        // A member's version puts the oldest of them aside.
        let Added::New {
            id,
            evicted: Some(gone),
        } = g.add(&new(0, b"good", "member", 1), 2).unwrap()
        else {
            panic!("a member's version makes room");
        };
        assert_eq!((gone.id, gone.sender.as_str()), (1, "stranger"));
        assert!(g.candidate(1).is_none());
        assert_eq!(g.read(2).unwrap(), b"bbbb");
        // Now a stranger's different version conflicts with the member's.
        assert_eq!(
            g.add(&new(0, b"dddd", "stranger", 0), 2).unwrap(),
            Added::Conflicts(id)
        );
        let combos = g.combinations(4, 100, |_| false);
        assert_eq!(whole(&g, &combos[0]), b"good");
        assert_eq!(combos.len(), 2);
    }

    #[test]
    fn combinations_are_every_covering_choice_once_members_first_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartStore::new(dir.path());
        let mut g = store.group("sms", 4, Units::Pieces).unwrap();
        let versions = [1usize, 2, 1, 3];
        for (i, &n) in versions.iter().enumerate() {
            for v in 0..n {
                g.add(&piece(i as u64, &[i as u8, v as u8, 7], "+1"), 4)
                    .unwrap();
            }
        }
        let all = g.combinations(100, 100_000, |_| false);
        assert_eq!(all.len(), 6);
        let mut dedup = all.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), 6);
        assert_eq!(whole(&g, &all[0]), [0, 0, 7, 1, 0, 7, 2, 0, 7, 3, 0, 7]);
        // Skipped (tried) combinations are not offered; the next untried one is.
        let tried = all[..5].to_vec();
        let next = g.combinations(1, 100_000, |c| tried.iter().any(|t| t == c));
        assert_eq!(next, vec![all[5].clone()]);
        // Bounded by steps: a search cut short finds fewer.
        assert!(g.combinations(100, 3, |_| false).len() < 6);
        // A missing piece: nothing covers.
        let mut h = store.group("gap", 2, Units::Pieces).unwrap();
        h.add(&piece(0, b"x", "+1"), 4).unwrap();
        assert!(h.combinations(10, 1000, |_| false).is_empty());
        // Members' versions first.
        let mut m = store.group("trust", 2, Units::Bytes).unwrap();
        m.add(&new(0, b"xx", "s", 0), 4).unwrap();
        m.add(&new(0, b"ok", "m", 1), 4).unwrap();
        let first = &m.combinations(1, 100, |_| false)[0];
        assert_eq!(whole(&m, first), b"ok");
    }

    #[test]
    fn usage_counts_candidates_and_bytes_per_sender_and_trust() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartStore::new(dir.path());
        let mut g = store.group("m", 100, Units::Bytes).unwrap();
        g.add(&new(0, &[1; 10], "a", 1), 4).unwrap();
        g.add(&new(10, &[1; 20], "a", 1), 4).unwrap();
        g.add(&new(30, &[2; 10], "b", 0), 4).unwrap();
        assert!(matches!(
            g.add(&new(0, &[1; 10], "b", 0), 4).unwrap(),
            Added::Duplicate(_)
        ));
        assert!(matches!(
            g.add(&new(0, &[3; 10], "b", 0), 4).unwrap(),
            Added::Conflicts(_)
        ));
        let u = g.usage();
        assert_eq!(
            u[&("a".to_string(), 1)],
            Usage {
                candidates: 2,
                bytes: 30
            }
        );
        assert_eq!(
            u[&("b".to_string(), 0)],
            Usage {
                candidates: 1,
                bytes: 10
            }
        );
        assert_eq!(g.have(), 40);
        let b = g.candidates().find(|c| c.sender == "b").unwrap().id;
        g.remove(&[b], true).unwrap();
        let g = store.group("m", 100, Units::Bytes).unwrap();
        assert_eq!(g.usage().len(), 1);
        assert_eq!(names(&dir.path().join("m")), ["data", "log"]);
        let listed = store.list().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].key.as_str(), listed[0].total), ("m", 100));
    }

    #[test]
    fn keys_that_could_leave_the_folder_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartStore::new(dir.path().join("parts"));
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a\\b",
            ".hidden",
            "a..b",
            "é",
            &"k".repeat(129),
        ] {
            let e = store.group(bad, 1, Units::Bytes).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
            assert!(store.set_meta(bad, b"x", false).is_err());
            assert!(store.remove(bad).is_err());
        }
        assert!(!dir.path().join("x").exists());
        for good in ["ab12", "1700000000-4477-00012-003", "a.b_c-d"] {
            store.set_meta(good, b"meta", false).unwrap();
            assert_eq!(store.meta(good).unwrap().unwrap(), b"meta");
        }
        assert_eq!(store.keys().unwrap().len(), 3);
    }

    #[test]
    fn finishing_writes_the_message_and_drops_the_candidates() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartStore::new(dir.path().join("parts"));
        // First versions only: `data` is renamed into place.
        let mut g = store.group("a", 6, Units::Bytes).unwrap();
        g.add(&new(3, b"def", "s", 1), 4).unwrap();
        g.add(&new(0, b"abc", "s", 1), 4).unwrap();
        let combo = g.combinations(1, 100, |_| false).remove(0);
        let dest = dir.path().join("a.msg");
        g.finish(&combo, &dest, true).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"abcdef");
        assert!(
            !dir.path().join("parts/a").exists(),
            "an empty group folder goes"
        );
        assert!(store.keys().unwrap().is_empty());
        // A second version chosen: the assembly is written out.
        let mut g = store.group("b", 4, Units::Bytes).unwrap();
        g.add(&new(0, b"xxxx", "s", 0), 4).unwrap();
        let Added::New { id, .. } = g.add(&new(0, b"good", "s", 0), 4).unwrap() else {
            panic!("kept");
        };
        store.set_meta("b", b"{}", true).unwrap();
        let dest = dir.path().join("parts/b/whole");
        g.finish(&[id], &dest, true).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"good");
        assert_eq!(names(&dir.path().join("parts/b")), ["meta", "whole"]);
    }

    #[test]
    fn a_long_chain_of_small_parts_is_one_data_file_and_one_combination() {
        // Serial's case: many small frames (here 20 000) of one message, no second version.
        let dir = tempfile::tempdir().unwrap();
        let store = PartStore::new(dir.path());
        let n = 20_000u64;
        let msg: Vec<u8> = (0..n * 3).map(|i| (i * 31 % 251) as u8).collect();
        let mut g = store.group("long", n * 3, Units::Bytes).unwrap();
        for i in (0..n).rev() {
            let at = (i * 3) as usize;
            let added = g.add(&new(i * 3, &msg[at..at + 3], "", 0), 1).unwrap();
            assert!(matches!(added, Added::New { evicted: None, .. }));
        }
        g.sync().unwrap();
        let g = store.group("long", n * 3, Units::Bytes).unwrap();
        assert_eq!(g.count(), n as usize);
        assert_eq!(names(&dir.path().join("long")), ["data", "log"]);
        let combos = g.combinations(2, usize::MAX, |_| false);
        assert_eq!(combos.len(), 1);
        assert_eq!(whole(&g, &combos[0]), msg);
    }

    #[test]
    fn old_groups_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = PartStore::new(dir.path());
        let mut g = store.group("old", 1, Units::Bytes).unwrap();
        g.add(&new(0, b"x", "s", 0), 4).unwrap();
        let now = SystemTime::now();
        let day = std::time::Duration::from_secs(86_400);
        assert!(store.expire(now, day).unwrap().is_empty());
        assert_eq!(store.expire(now + 2 * day, day).unwrap(), ["old"]);
        assert!(!store.exists("old"));
    }
}
