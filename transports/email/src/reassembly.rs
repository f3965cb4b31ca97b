//! Received parts kept until their bundle is whole (`STATE/inbox/`), and the ledger of
//! bundles already settled (`STATE/ledger`).
//!
//! Anyone can send an email, and anyone can write `X-Ferry-*` headers, so what is kept here
//! is bounded and nothing a stranger sends can push out what a member sent:
//!
//! - **Candidates.** A bundle being received (a *group*, one per claimed digest and size)
//!   keeps, for each byte range, up to [`MAX_CANDIDATES`] different versions (*candidates*),
//!   each with the sender and whether its mark verified ([`Trust::Member`]). A piece never
//!   replaces another: when the ranges cover the bundle, combinations are tried — members'
//!   candidates first — until one matches the digest the bundle was announced with (a
//!   bounded number per arrival). A candidate that does not match a member's candidate for
//!   the same bytes is refused on arrival; once the bundle is whole, candidates that do not
//!   match it are refused too (their emails go to the refused folder).
//! - **Quotas** per sender and in total, per trust ([`MEMBER`], [`UNVERIFIED`]): groups,
//!   bytes on disk and candidates. Over a sender's share, the piece is dropped; over the
//!   total, the heaviest other sender's newest group of that trust goes first if that
//!   sender holds more than the newcomer would (so one sender cannot push out another by
//!   volume), else the piece is dropped. Members' pieces count only against members'
//!   quotas.
//! - **Expiry.** An incomplete group is dropped [`Quota::expiry_secs`] after its first piece
//!   (7 days without a member's mark, 30 days with one).
//! - **Work per piece** does not depend on what is stored: groups are found by name (their
//!   folder is `<digest>-<size>`), the ledger is a hash map, and everything kept is bounded
//!   by the quotas, so loading it is bounded too.
//!
//! The bytes are kept by the part store ([`ferry_transport::parts`], the folder `inbox/` is
//! one, each group a group of it keyed `<digest>-<size>`); what only email knows (the parts
//! claimed, the emails that carried each candidate, what was refused) is the group's blob.
//! The store's candidates are opened without reading their bytes (a bundle may be a
//! gigabyte) and checked when a combination is read; a candidate the blob lists whose bytes
//! did not reach the disk, or one the store holds that the blob does not list (a crash
//! between the two writes), is dropped when the group is next opened.
//!
//! ```text
//! inbox/<digest>-<size>/meta        the group: its candidates and the emails they came in
//! inbox/<digest>-<size>/log, data   the part store's candidates: first versions in `data`
//! inbox/<digest>-<size>/<id>.cand   a further version of a range (all removed once whole)
//! inbox/<digest>-<size>/bundle      the whole bundle, matching its digest
//! ledger                            bundles settled: `P|R <digest>-<size> <unix time>` lines
//! ```
//!
//! **Upgrading.** A group kept by the previous version (`group.json` and one `<n>.cand` per
//! candidate) is moved into the part store when the inbox is loaded, candidates and emails
//! included; one kept by an earlier version still (a folder per digest, `.piece` files) is
//! taken over too, its pieces unverified.

use crate::error::EmailError;
use crate::mime::{Claim, Piece, digest_hex};
use crate::store::{Source, read_json, sync_dir, write_atomic, write_quick};
use ferry_transport::parts::{self as pstore, NewCandidate, PartStore, Units};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Most different versions kept of the same byte range of one bundle.
pub(crate) const MAX_CANDIDATES: usize = 4;
/// Most combinations of candidates checked against the digest each time a piece arrives.
const MAX_ATTEMPTS: usize = 4;
/// Most steps of the search for combinations each time a piece arrives.
const MAX_STEPS: usize = 4096;
/// Disk a stored candidate is counted as taking besides its bytes (file system blocks, its
/// entry in `group.json`).
const OVERHEAD: u64 = 4096;
/// Most bundles remembered in the ledger, and for how long (a late copy of an older bundle
/// is offered to the node again, which knows it by content).
const LEDGER_MAX: usize = 20_000;
const LEDGER_MAX_AGE: u64 = 400 * 86_400;

/// Whether a piece's mark verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Trust {
    /// No mark (a bundle attached by hand), or the dataset id of an email written by an
    /// earlier ferry: anyone can write these.
    Unverified,
    /// A mark that verified with the dataset's tag: made by a member.
    Member,
}

/// Limits for the pieces of one trust.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Quota {
    /// Incomplete bundles one sender may have pieces in.
    pub(crate) sender_groups: usize,
    /// Bytes one sender's candidates may take on disk.
    pub(crate) sender_bytes: u64,
    /// Candidates one sender may have.
    pub(crate) sender_cands: usize,
    /// Incomplete bundles in all.
    pub(crate) total_groups: usize,
    /// Bytes in all.
    pub(crate) total_bytes: u64,
    /// Candidates in all.
    pub(crate) total_cands: usize,
    /// How long an incomplete bundle is kept after its first piece.
    pub(crate) expiry_secs: u64,
}

/// Pieces whose mark verified: only members make them. Room for the largest bundle
/// (100 emails of 10 MB) from each of a few members at once.
pub(crate) const MEMBER: Quota = Quota {
    sender_groups: 64,
    sender_bytes: 1 << 30,
    sender_cands: 64 * 100,
    total_groups: 256,
    total_bytes: 2 << 30,
    total_cands: 256 * 100,
    expiry_secs: 30 * 86_400,
};

/// Pieces without a verified mark: what anyone can send. Only earlier versions of ferry
/// split bundles without marks; a bundle they split into more than 16 MiB waits in vain.
pub(crate) const UNVERIFIED: Quota = Quota {
    sender_groups: 8,
    sender_bytes: 16 << 20,
    sender_cands: 128,
    total_groups: 64,
    total_bytes: 32 << 20,
    total_cands: 512,
    expiry_secs: 7 * 86_400,
};

pub(crate) fn quota(t: Trust) -> &'static Quota {
    match t {
        Trust::Member => &MEMBER,
        Trust::Unverified => &UNVERIFIED,
    }
}

/// A group's candidates in the part store.
type PartGroup = pstore::Group;

/// One version of one byte range of a bundle: what the email side knows of a candidate of
/// the part store (which part it claimed, the emails that carried it).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Cand {
    /// Its candidate in the part store (in the previous version's `group.json`: its
    /// `<file>.cand`).
    #[serde(alias = "file")]
    pub(crate) id: u32,
    pub(crate) offset: u64,
    pub(crate) len: u64,
    pub(crate) part: u32,
    pub(crate) part_digest: String,
    pub(crate) sender: String,
    pub(crate) trust: Trust,
    pub(crate) at: u64,
    /// The emails (or files) that carried these exact bytes.
    pub(crate) sources: Vec<Source>,
}

impl Cand {
    fn end(&self) -> u64 {
        self.offset + self.len
    }

    fn disk(&self) -> u64 {
        self.len + OVERHEAD
    }
}

/// An email that claimed a part of a bundle but does not match it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Refusal {
    pub(crate) source: Source,
    pub(crate) reason: String,
}

/// One bundle being received.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Group {
    /// `<digest>-<size>`: its folder.
    pub(crate) gid: String,
    /// The id it is listed under.
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) digest: String,
    pub(crate) parts: u32,
    pub(crate) first_seen: u64,
    /// When a piece last arrived.
    pub(crate) last_seen: u64,
    pub(crate) complete: bool,
    /// The best trust of its pieces.
    pub(crate) trust: Trust,
    /// Who sent its first piece (as the email says).
    pub(crate) sender: String,
    pub(crate) cands: Vec<Cand>,
    /// Once whole: the emails whose pieces match it.
    pub(crate) sources: Vec<Source>,
    /// Emails whose pieces claimed it but do not match it.
    pub(crate) refused: Vec<Refusal>,
}

impl Group {
    /// Bytes received so far (overlaps counted once).
    pub(crate) fn have(&self) -> u64 {
        if self.complete {
            return self.size;
        }
        let mut ranges: Vec<(u64, u64)> = self.cands.iter().map(|c| (c.offset, c.end())).collect();
        ranges.sort_unstable();
        let (mut have, mut end) = (0, 0);
        for (off, e) in ranges {
            if e > end {
                have += e - off.max(end);
                end = e;
            }
        }
        have
    }

    /// Different parts (by part number) received so far.
    pub(crate) fn parts_have(&self) -> u32 {
        if self.complete {
            return self.parts;
        }
        self.cands
            .iter()
            .map(|c| c.part)
            .collect::<BTreeSet<_>>()
            .len() as u32
    }

    /// Whether the candidates together cover every byte.
    fn covered(&self) -> bool {
        let mut ranges: Vec<(u64, u64)> = self.cands.iter().map(|c| (c.offset, c.end())).collect();
        ranges.sort_unstable();
        let mut end = 0;
        for (off, e) in ranges {
            if off > end {
                return false;
            }
            end = end.max(e);
        }
        end >= self.size
    }

    /// Every email that carried a piece of it (matching or not).
    pub(crate) fn all_sources(&self) -> Vec<Source> {
        let mut out = self.sources.clone();
        for c in &self.cands {
            for s in &c.sources {
                if !out.contains(s) {
                    out.push(s.clone());
                }
            }
        }
        for r in &self.refused {
            if !out.contains(&r.source) {
                out.push(r.source.clone());
            }
        }
        out
    }

    pub(crate) fn location(&self) -> String {
        let sources = if self.complete {
            self.sources.clone()
        } else {
            self.all_sources()
        };
        match sources.as_slice() {
            [] => "email".into(),
            [one] => one.describe(),
            [first, rest @ ..] => format!("{} (+{} more emails)", first.describe(), rest.len()),
        }
    }
}

/// What became of a bundle, once settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Applied (or known) by the node: its emails are in the processed folder.
    Processed,
    /// Refused by the node: its emails are in the refused folder.
    Refused,
}

/// What adding a piece did.
#[derive(Debug)]
pub(crate) enum Added {
    /// Kept; the bundle is not whole yet.
    Waiting,
    /// The bundle is whole (now or before).
    Complete,
    /// A copy of a bundle settled before: its email goes where that bundle's emails went.
    Late(Fate),
    /// Refused: it contradicts a member's piece of the same bytes.
    Refused(String),
    /// Not kept: over a limit (the reason says which).
    Dropped(String),
}

/// What some pieces take: (incomplete bundles, bytes on disk, candidates).
type Usage = (usize, u64, usize);

/// Bundles settled before, by `<digest>-<size>` (or `<digest>` alone, from the state of an
/// earlier version).
#[derive(Default)]
struct Ledger {
    fates: HashMap<String, (Fate, u64)>,
}

/// The received parts and the ledger, loaded once per run.
pub(crate) struct Inbox {
    dir: PathBuf,
    /// The part store in `dir`: one group per bundle, its key the folder name.
    parts: PartStore,
    ledger_path: PathBuf,
    groups: BTreeMap<String, Group>,
    ids: HashMap<String, String>,
    ledger: Ledger,
    /// Incomplete bundles dropped at load because they waited too long: (name, trust).
    pub(crate) expired: Vec<(String, Trust)>,
    /// Senders whose pieces were dropped to make room for others (one entry per piece).
    pub(crate) evicted: Vec<String>,
}

pub(crate) fn gid_of(digest: &str, size: u64) -> String {
    format!("{digest}-{size}")
}

fn is_gid(name: &str) -> bool {
    match name.split_once('-') {
        Some((d, s)) => {
            d.len() == 64
                && d.bytes().all(|b| b.is_ascii_hexdigit())
                && !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>, EmailError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(EmailError::io("cannot read folder", dir, e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.map_err(|e| EmailError::io("cannot read folder", dir, e))?;
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

fn remove_dir(d: &Path) -> Result<(), EmailError> {
    match fs::remove_dir_all(d) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EmailError::io("cannot remove", d, e)),
    }
}

impl Inbox {
    /// Loads the groups of `state_dir`, dropping incomplete ones that waited too long (at
    /// `now`, seconds since the epoch), and the ledger.
    pub(crate) fn load(state_dir: &Path, now: u64) -> Result<Inbox, EmailError> {
        let dir = state_dir.join("inbox");
        fs::create_dir_all(&dir).map_err(|e| EmailError::io("cannot create folder", &dir, e))?;
        let mut inbox = Inbox {
            parts: PartStore::new(&dir),
            dir,
            ledger_path: state_dir.join("ledger"),
            groups: BTreeMap::new(),
            ids: HashMap::new(),
            ledger: Ledger::default(),
            expired: Vec::new(),
            evicted: Vec::new(),
        };
        inbox.load_ledger(state_dir, now)?;
        for name in read_dir_names(&inbox.dir)? {
            let d = inbox.dir.join(&name);
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                inbox.migrate(&d, now)?;
                continue;
            }
            if !is_gid(&name) {
                continue;
            }
            if !d.join("meta").exists() && d.join("group.json").exists() {
                inbox.take_over(&d, &name)?;
            }
            let g = match read_json::<Group>(&d.join("meta")) {
                Ok(Some(g)) if !g.complete || file_len(&d.join("bundle")) == Some(g.size) => g,
                // Created but never described, or written without waiting for the disk and
                // cut by a crash: nothing in it counts (its sender's next bundle carries
                // the same changes).
                Ok(_) | Err(EmailError::State { .. }) => {
                    remove_dir(&d)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if !g.complete && now.saturating_sub(g.first_seen) > quota(g.trust).expiry_secs {
                inbox.expired.push((g.name.clone(), g.trust));
                remove_dir(&d)?;
                continue;
            }
            inbox.ids.insert(g.id.clone(), g.gid.clone());
            inbox.groups.insert(g.gid.clone(), g);
        }
        if !inbox.expired.is_empty() {
            sync_dir(&inbox.dir);
        }
        Ok(inbox)
    }

    fn load_ledger(&mut self, state_dir: &Path, now: u64) -> Result<(), EmailError> {
        // The digests of bundles an earlier version processed, one per line.
        let old = state_dir.join("processed");
        if let Ok(s) = fs::read_to_string(&old) {
            for line in s.lines().filter(|l| !l.is_empty()) {
                self.ledger
                    .fates
                    .insert(line.trim().to_string(), (Fate::Processed, now));
            }
        }
        let mut lines = 0usize;
        match fs::read_to_string(&self.ledger_path) {
            Ok(s) => {
                for line in s.lines() {
                    lines += 1;
                    let mut w = line.split(' ');
                    let (Some(f), Some(key), Some(at)) = (w.next(), w.next(), w.next()) else {
                        continue;
                    };
                    let fate = match f {
                        "P" => Fate::Processed,
                        "R" => Fate::Refused,
                        _ => continue,
                    };
                    let at: u64 = at.parse().unwrap_or(now);
                    self.ledger.fates.insert(key.to_string(), (fate, at));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(EmailError::io("cannot read", &self.ledger_path, e)),
        }
        let before = self.ledger.fates.len();
        self.ledger
            .fates
            .retain(|_, (_, at)| now.saturating_sub(*at) <= LEDGER_MAX_AGE);
        if self.ledger.fates.len() > LEDGER_MAX {
            let mut by_age: Vec<(u64, String)> = self
                .ledger
                .fates
                .iter()
                .map(|(k, (_, at))| (*at, k.clone()))
                .collect();
            by_age.sort_unstable();
            let excess = self.ledger.fates.len() - LEDGER_MAX;
            for (_, k) in by_age.into_iter().take(excess) {
                self.ledger.fates.remove(&k);
            }
        }
        if old.exists() || self.ledger.fates.len() < before || lines > 2 * LEDGER_MAX {
            self.rewrite_ledger()?;
            let _ = fs::remove_file(&old);
        }
        Ok(())
    }

    fn rewrite_ledger(&self) -> Result<(), EmailError> {
        let mut rows: Vec<(&String, &(Fate, u64))> = self.ledger.fates.iter().collect();
        rows.sort_by_key(|(k, (_, at))| (*at, (*k).clone()));
        let mut text = String::new();
        for (k, (f, at)) in rows {
            let f = if *f == Fate::Processed { "P" } else { "R" };
            text.push_str(&format!("{f} {k} {at}\n"));
        }
        write_atomic(&self.ledger_path, text.as_bytes())
    }

    fn record(&mut self, gid: &str, fate: Fate, now: u64) -> Result<(), EmailError> {
        self.ledger.fates.insert(gid.to_string(), (fate, now));
        let p = &self.ledger_path;
        let f = if fate == Fate::Processed { "P" } else { "R" };
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| EmailError::io("cannot open", p, e))?;
        // Not synced: a line lost in a power cut only means a late copy is offered to the
        // node again, which knows the bundle by its content.
        file.write_all(format!("{f} {gid} {now}\n").as_bytes())
            .map_err(|e| EmailError::io("cannot write", p, e))
    }

    fn fate(&self, gid: &str, digest: &str) -> Option<Fate> {
        self.ledger
            .fates
            .get(gid)
            .or_else(|| self.ledger.fates.get(digest))
            .map(|(f, _)| *f)
    }

    /// Takes over a group kept by an earlier version (one folder per digest, pieces named
    /// by their byte range): its pieces become unverified candidates.
    fn migrate(&mut self, d: &Path, now: u64) -> Result<(), EmailError> {
        #[derive(Deserialize)]
        struct Old {
            name: String,
            size: u64,
            digest: String,
            parts: u32,
            pieces: BTreeSet<(u64, u64)>,
            complete: bool,
            sources: Vec<Source>,
            first_seen: u64,
        }
        let Ok(Some(old)) = read_json::<Old>(&d.join("group.json")) else {
            return remove_dir(d);
        };
        let gid = gid_of(&old.digest, old.size);
        let nd = self.dir.join(&gid);
        if self.groups.contains_key(&gid) || nd.exists() {
            return remove_dir(d);
        }
        fs::rename(d, &nd).map_err(|e| EmailError::io("cannot rename", d, e))?;
        let mut g = Group {
            gid: gid.clone(),
            id: String::new(),
            name: old.name,
            size: old.size,
            digest: old.digest,
            parts: old.parts,
            first_seen: old.first_seen,
            last_seen: old.first_seen,
            complete: old.complete,
            trust: Trust::Unverified,
            sender: "an earlier ferry".into(),
            cands: Vec::new(),
            sources: Vec::new(),
            refused: Vec::new(),
        };
        if g.complete {
            g.sources = old.sources;
        } else {
            let mut held = self
                .parts
                .group(&gid, g.size, Units::Bytes)
                .map_err(|e| EmailError::io("cannot read", &nd, e))?;
            for (off, len) in old.pieces {
                let from = nd.join(format!("{off}-{len}.piece"));
                let Ok(data) = fs::read(&from) else { continue };
                let added = held.add(
                    &NewCandidate {
                        offset: off,
                        len,
                        bytes: &data,
                        sender: &g.sender,
                        trust: Trust::Unverified as u8,
                        at: now,
                    },
                    MAX_CANDIDATES,
                );
                let _ = fs::remove_file(&from);
                // A piece whose length is not the one its name says is not kept.
                let Ok(pstore::Added::New { id, .. }) = added else {
                    continue;
                };
                g.cands.push(Cand {
                    id,
                    offset: off,
                    len,
                    part: 0,
                    part_digest: digest_hex(&data),
                    sender: g.sender.clone(),
                    trust: Trust::Unverified,
                    at: now,
                    sources: old.sources.clone(),
                });
            }
            held.sync()
                .map_err(|e| EmailError::io("cannot write", &nd, e))?;
        }
        g.id = self.free_id(&g.name, &g.digest, g.size);
        self.save(&g)?;
        let _ = fs::remove_file(nd.join("group.json"));
        self.ids.insert(g.id.clone(), gid.clone());
        self.groups.insert(gid, g);
        Ok(())
    }

    /// Takes over a group kept by the previous version (`group.json` and one `<n>.cand` per
    /// candidate): its candidates move into the part store, their emails and parts kept.
    fn take_over(&mut self, d: &Path, gid: &str) -> Result<(), EmailError> {
        let mut g = match read_json::<Group>(&d.join("group.json")) {
            Ok(Some(g)) if g.gid == gid => g,
            Ok(_) | Err(EmailError::State { .. }) => return remove_dir(d),
            Err(e) => return Err(e),
        };
        // Out of the way of the store's own `<id>.cand` names first.
        for c in &g.cands {
            let _ = fs::rename(
                d.join(format!("{}.cand", c.id)),
                d.join(format!("{}.old", c.id)),
            );
        }
        let mut held = self
            .parts
            .group(gid, g.size, Units::Bytes)
            .map_err(|e| EmailError::io("cannot read", d, e))?;
        let mut kept: Vec<Cand> = Vec::new();
        for mut c in std::mem::take(&mut g.cands) {
            let old = d.join(format!("{}.old", c.id));
            let data = fs::read(&old).ok();
            let _ = fs::remove_file(&old);
            let Some(data) = data.filter(|b| b.len() as u64 == c.len) else {
                continue;
            };
            let added = held.add(
                &NewCandidate {
                    offset: c.offset,
                    len: c.len,
                    bytes: &data,
                    sender: &c.sender,
                    trust: c.trust as u8,
                    at: c.at,
                },
                MAX_CANDIDATES,
            );
            match added {
                Ok(pstore::Added::New { id, .. }) => {
                    c.id = id;
                    kept.push(c);
                }
                Ok(pstore::Added::Duplicate(id)) => {
                    if let Some(k) = kept.iter_mut().find(|k| k.id == id) {
                        k.sources.extend(c.sources);
                    }
                }
                _ => {}
            }
        }
        held.sync()
            .map_err(|e| EmailError::io("cannot write", d, e))?;
        g.cands = kept;
        self.save(&g)?;
        let _ = fs::remove_file(d.join("group.json"));
        Ok(())
    }

    fn gdir(&self, gid: &str) -> PathBuf {
        self.dir.join(gid)
    }

    pub(crate) fn bundle_path(&self, g: &Group) -> PathBuf {
        self.gdir(&g.gid).join("bundle")
    }

    /// Writes the group's description: durably, unless it is a whole bundle nobody marked
    /// (see [`durable`]).
    fn save(&self, g: &Group) -> Result<(), EmailError> {
        let bytes = serde_json::to_vec(g).expect("state serializes");
        self.parts
            .set_meta(&g.gid, &bytes, durable(g))
            .map_err(|e| EmailError::io("cannot write", self.gdir(&g.gid).join("meta"), e))
    }

    fn free_id(&self, name: &str, digest: &str, size: u64) -> String {
        let base = format!("{name}{}", crate::mime::BUNDLE_SUFFIX);
        if !self.ids.contains_key(&base) {
            return base;
        }
        let longer = format!("{name}.{}{}", &digest[..12], crate::mime::BUNDLE_SUFFIX);
        if !self.ids.contains_key(&longer) {
            return longer;
        }
        format!(
            "{name}.{}-{size}{}",
            &digest[..12],
            crate::mime::BUNDLE_SUFFIX
        )
    }

    /// Every group, by folder name.
    pub(crate) fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// The id group `gid` is listed under.
    pub(crate) fn id_of(&self, gid: &str) -> Option<&str> {
        self.groups.get(gid).map(|g| g.id.as_str())
    }

    pub(crate) fn by_id(&self, id: &str) -> Option<&Group> {
        self.ids.get(id).and_then(|gid| self.groups.get(gid))
    }

    /// Forgets a settled group (its files too) and records its fate. Not waiting for the
    /// disk: after a power cut the group may be offered again, and the node knows it.
    pub(crate) fn settle(&mut self, id: &str, fate: Fate, now: u64) -> Result<(), EmailError> {
        let Some(gid) = self.ids.remove(id) else {
            return Ok(());
        };
        self.record(&gid, fate, now)?;
        self.groups.remove(&gid);
        self.parts
            .remove(&gid)
            .map_err(|e| EmailError::io("cannot remove", self.gdir(&gid), e))
    }

    /// What pieces of `trust` take now: per sender and in all.
    fn usage(&self, trust: Trust) -> (HashMap<&str, Usage>, Usage) {
        let mut per: HashMap<&str, (usize, u64, usize)> = HashMap::new();
        let mut total = (0, 0, 0);
        for g in self.groups.values().filter(|g| !g.complete) {
            let mut senders: BTreeSet<&str> = BTreeSet::new();
            let mut any = false;
            for c in g.cands.iter().filter(|c| c.trust == trust) {
                let e = per.entry(c.sender.as_str()).or_default();
                e.1 += c.disk();
                e.2 += 1;
                total.1 += c.disk();
                total.2 += 1;
                senders.insert(c.sender.as_str());
                any = true;
            }
            for s in senders {
                per.entry(s).or_default().0 += 1;
            }
            total.0 += usize::from(any);
        }
        (per, total)
    }

    /// Removes `sender`'s candidates of `trust` from its most recent incomplete group (the
    /// group goes when nothing is left in it). Returns false when it has none.
    fn evict_from(&mut self, sender: &str, trust: Trust) -> Result<bool, EmailError> {
        let victim = self
            .groups
            .values()
            .filter(|g| !g.complete)
            .filter(|g| {
                g.cands
                    .iter()
                    .any(|c| c.sender == sender && c.trust == trust)
            })
            .max_by_key(|g| (g.last_seen, g.gid.clone()))
            .map(|g| g.gid.clone());
        let Some(gid) = victim else {
            return Ok(false);
        };
        let gdir = self.gdir(&gid);
        let mut held = self.open_group(&gid)?;
        let g = self.groups.get_mut(&gid).expect("found above");
        let (gone, kept): (Vec<Cand>, Vec<Cand>) = std::mem::take(&mut g.cands)
            .into_iter()
            .partition(|c| c.sender == sender && c.trust == trust);
        g.cands = kept;
        for c in &gone {
            self.evicted.push(c.sender.clone());
        }
        if g.cands.is_empty() {
            let id = g.id.clone();
            self.groups.remove(&gid);
            self.ids.remove(&id);
            remove_dir(&gdir)?;
        } else {
            let ids: Vec<u32> = gone.iter().map(|c| c.id).collect();
            held.remove(&ids, false)
                .map_err(|e| EmailError::io("cannot remove", &gdir, e))?;
            g.trust = g
                .cands
                .iter()
                .map(|c| c.trust)
                .max()
                .unwrap_or(Trust::Unverified);
            let g = g.clone();
            self.save(&g)?;
        }
        Ok(true)
    }

    /// Makes room for a new candidate of `bytes` from `sender` (in a group it has no piece
    /// in yet when `new_group`). `Err` says which limit the piece is over.
    fn make_room(
        &mut self,
        sender: &str,
        trust: Trust,
        bytes: u64,
        new_group: bool,
    ) -> Result<Result<(), String>, EmailError> {
        let q = quota(trust);
        let who = if trust == Trust::Member {
            "members' parts"
        } else {
            "parts without a member's mark"
        };
        {
            let (per, _) = self.usage(trust);
            let mine = per.get(sender).copied().unwrap_or_default();
            if mine.0 + usize::from(new_group) > q.sender_groups
                || mine.1 + bytes > q.sender_bytes
                || mine.2 + 1 > q.sender_cands
            {
                return Ok(Err(format!(
                    "its sender already has {} incomplete bundles ({} kept) waiting; the limit for {who} from one sender is {} bundles, {} MiB",
                    mine.0,
                    crate::human(mine.1),
                    q.sender_groups,
                    q.sender_bytes >> 20
                )));
            }
        }
        loop {
            let (per, total) = self.usage(trust);
            if total.0 + usize::from(new_group) <= q.total_groups
                && total.1 + bytes <= q.total_bytes
                && total.2 < q.total_cands
            {
                return Ok(Ok(()));
            }
            // Full: the sender that holds the most gives way, if it holds more than this
            // sender would with the piece (else the piece is dropped: evicting an equal share
            // would only trade one stranger's part for another's, at the cost of writes).
            let mine = per.get(sender).copied().unwrap_or_default();
            let mine = (mine.0 + usize::from(new_group), mine.1 + bytes);
            let heaviest = per
                .iter()
                .filter(|(s, u)| **s != sender && (u.0, u.1) > mine)
                .max_by_key(|(s, (g, b, _))| (*b, *g, std::cmp::Reverse(**s)))
                .map(|(s, _)| s.to_string());
            match heaviest {
                Some(h) => {
                    if !self.evict_from(&h, trust)? {
                        return Ok(Err(format!("the room for {who} is full")));
                    }
                }
                None => {
                    return Ok(Err(format!(
                        "the room for {who} is full ({} MiB, {} bundles), and no sender holds more of it than this one would",
                        q.total_bytes >> 20,
                        q.total_groups
                    )));
                }
            }
        }
    }

    /// Keeps a piece that came from `source` with `trust`, at `now`. `claim` is
    /// `piece.claim()` (computed once by the caller, which checked its mark).
    pub(crate) fn add(
        &mut self,
        piece: &Piece,
        claim: &Claim,
        trust: Trust,
        source: &Source,
        now: u64,
    ) -> Result<Added, EmailError> {
        let gid = gid_of(&claim.digest, claim.size);
        if let Some(fate) = self.fate(&gid, &claim.digest) {
            return Ok(Added::Late(fate));
        }
        let sender = piece
            .sender
            .clone()
            .unwrap_or_else(|| "an unknown sender".into());
        if self.groups.get(&gid).is_some_and(|g| g.complete) {
            // Another copy of a part of a bundle already whole: it joins the bundle's emails
            // if its bytes are the bundle's, else it is refused with the others that do not
            // match (so a forged copy is never filed as processed).
            let path = self.gdir(&gid).join("bundle");
            let matches = range_digest(&path, claim.offset, claim.length)?
                .is_some_and(|d| d == claim.part_digest);
            let g = self.groups.get_mut(&gid).expect("checked above");
            if matches {
                if !g.sources.contains(source) {
                    g.sources.push(source.clone());
                }
            } else {
                g.refused.push(Refusal {
                    source: source.clone(),
                    reason: format!(
                        "part {}/{} of bundle {} does not match the bundle its other parts make up (forged or altered)",
                        claim.part, claim.parts, g.name
                    ),
                });
            }
            let g = g.clone();
            self.save(&g)?;
            return Ok(Added::Complete);
        }
        if piece.is_whole() {
            return self.add_whole(piece, claim, trust, &sender, source, now);
        }
        if claim.length == 0
            || claim
                .offset
                .checked_add(claim.length)
                .is_none_or(|e| e > claim.size)
        {
            return Ok(Added::Dropped(format!(
                "part {}/{} covers no bytes of a {}-byte bundle",
                claim.part, claim.parts, claim.size
            )));
        }
        let new_group = !self.groups.contains_key(&gid);
        if !new_group {
            let mut held = self.open_group(&gid)?;
            let g = self.groups.get_mut(&gid).expect("checked above");
            // The same bytes again (another copy of the email, a saved file).
            if let Some(c) = g.cands.iter_mut().find(|c| {
                c.offset == claim.offset
                    && c.len == claim.length
                    && c.part_digest == claim.part_digest
            }) {
                if !c.sources.contains(source) {
                    c.sources.push(source.clone());
                }
                if trust > c.trust {
                    c.trust = trust;
                    c.sender = sender.clone();
                    g.trust = g.trust.max(trust);
                    held.raise_trust(c.id, trust as u8, &sender, true)
                        .map_err(|e| EmailError::io("cannot write", held.dir(), e))?;
                }
                g.last_seen = now;
                let g = g.clone();
                self.save(&g)?;
                return Ok(Added::Waiting);
            }
            let same = || {
                g.cands
                    .iter()
                    .filter(|c| c.offset == claim.offset && c.len == claim.length)
            };
            if trust == Trust::Unverified && same().any(|c| c.trust == Trust::Member) {
                return Ok(Added::Refused(format!(
                    "part {}/{} of bundle {} differs from a member's copy of the same bytes (forged or altered)",
                    claim.part, claim.parts, g.name
                )));
            }
            if same().count() >= MAX_CANDIDATES && !same().any(|c| c.trust < trust) {
                return Ok(Added::Dropped(format!(
                    "{MAX_CANDIDATES} different versions of part {}/{} of bundle {} are already kept",
                    claim.part, claim.parts, g.name
                )));
            }
        }
        if let Err(why) = self.make_room(&sender, trust, claim.length + OVERHEAD, new_group)? {
            return Ok(Added::Dropped(why));
        }
        self.group_for(&gid, piece, claim, trust, &sender, now)?;
        let mut held = self.open_group(&gid)?;
        let hdir = held.dir().to_path_buf();
        let failed = |e| EmailError::io("cannot keep", &hdir, e);
        let added = held
            .add(
                &NewCandidate {
                    offset: claim.offset,
                    len: claim.length,
                    bytes: &piece.data,
                    sender: &sender,
                    trust: trust as u8,
                    at: now,
                },
                MAX_CANDIDATES,
            )
            .map_err(failed)?;
        // Only members' pieces wait for the disk (see `durable`).
        if trust == Trust::Member {
            held.sync().map_err(failed)?;
        }
        let g = self.groups.get_mut(&gid).expect("made above");
        match added {
            pstore::Added::New { id, evicted } => {
                if let Some(gone) = evicted {
                    if let Some(i) = g.cands.iter().position(|c| c.id == gone.id) {
                        let c = g.cands.remove(i);
                        for s in c.sources {
                            g.refused.push(Refusal {
                                source: s,
                                reason: format!(
                                    "part {}/{} of bundle {} was put aside for a member's copy of the same bytes",
                                    c.part, g.parts, g.name
                                ),
                            });
                        }
                    }
                }
                g.cands.push(Cand {
                    id,
                    offset: claim.offset,
                    len: claim.length,
                    part: claim.part,
                    part_digest: claim.part_digest.clone(),
                    sender,
                    trust,
                    at: now,
                    sources: vec![source.clone()],
                });
            }
            // These bytes are held already (claimed with another part digest).
            pstore::Added::Duplicate(id) => {
                if let Some(c) = g.cands.iter_mut().find(|c| c.id == id) {
                    if !c.sources.contains(source) {
                        c.sources.push(source.clone());
                    }
                }
            }
            pstore::Added::Conflicts(_) => {
                return Ok(Added::Refused(format!(
                    "part {}/{} of bundle {} differs from a member's copy of the same bytes (forged or altered)",
                    claim.part, claim.parts, g.name
                )));
            }
            pstore::Added::Crowded => {
                return Ok(Added::Dropped(format!(
                    "{MAX_CANDIDATES} different versions of part {}/{} of bundle {} are already kept",
                    claim.part, claim.parts, g.name
                )));
            }
        }
        g.trust = g.trust.max(trust);
        g.parts = g.parts.max(claim.parts);
        g.last_seen = now;
        let g = g.clone();
        self.save(&g)?;
        if self.assemble(&gid)? {
            Ok(Added::Complete)
        } else {
            Ok(Added::Waiting)
        }
    }

    /// The part-store group of `gid`, opened without reading its bytes (they are checked
    /// when read), and the group's description made to agree with it: a candidate the
    /// description lists but whose bytes did not reach the disk is forgotten, one the store
    /// holds but the description does not list (a crash between the two writes) is removed.
    fn open_group(&mut self, gid: &str) -> Result<PartGroup, EmailError> {
        let size = self.groups.get(gid).map_or(0, |g| g.size);
        let gdir = self.gdir(gid);
        let mut held = self
            .parts
            .group_lazy(gid, size, Units::Bytes)
            .map_err(|e| EmailError::io("cannot read", &gdir, e))?;
        let Some(g) = self.groups.get_mut(gid) else {
            return Ok(held);
        };
        let before = g.cands.len();
        g.cands.retain(|c| held.candidate(c.id).is_some());
        let orphans: Vec<u32> = held
            .candidates()
            .filter(|h| !g.cands.iter().any(|c| c.id == h.id))
            .map(|h| h.id)
            .collect();
        if !orphans.is_empty() {
            held.remove(&orphans, durable(g))
                .map_err(|e| EmailError::io("cannot write", &gdir, e))?;
        }
        if g.cands.len() != before {
            let g = g.clone();
            self.save(&g)?;
        }
        Ok(held)
    }

    /// The folder of group `gid`, made (with its record) when this is its first piece.
    fn group_for(
        &mut self,
        gid: &str,
        piece: &Piece,
        claim: &Claim,
        trust: Trust,
        sender: &str,
        now: u64,
    ) -> Result<PathBuf, EmailError> {
        let gdir = self.gdir(gid);
        if !self.groups.contains_key(gid) {
            fs::create_dir_all(&gdir)
                .map_err(|e| EmailError::io("cannot create folder", &gdir, e))?;
            let g = Group {
                gid: gid.to_string(),
                id: self.free_id(&piece.name, &claim.digest, claim.size),
                name: piece.name.clone(),
                size: claim.size,
                digest: claim.digest.clone(),
                parts: claim.parts,
                first_seen: now,
                last_seen: now,
                complete: false,
                trust,
                sender: sender.to_string(),
                cands: Vec::new(),
                sources: Vec::new(),
                refused: Vec::new(),
            };
            self.ids.insert(g.id.clone(), gid.to_string());
            self.groups.insert(gid.to_string(), g);
        }
        Ok(gdir)
    }

    /// A piece that is the whole bundle: the bundle, at once.
    fn add_whole(
        &mut self,
        piece: &Piece,
        claim: &Claim,
        trust: Trust,
        sender: &str,
        source: &Source,
        now: u64,
    ) -> Result<Added, EmailError> {
        let gid = gid_of(&claim.digest, claim.size);
        let gdir = self.group_for(&gid, piece, claim, trust, sender, now)?;
        let g = self.groups.get_mut(&gid).expect("made above");
        g.trust = g.trust.max(trust);
        if durable(g) {
            write_atomic(&gdir.join("bundle"), &piece.data)?;
        } else {
            write_quick(&gdir.join("bundle"), &piece.data)?;
        }
        g.last_seen = now;
        g.sources.push(source.clone());
        self.finish(&gid)?;
        Ok(Added::Complete)
    }

    /// Tries combinations of the candidates of `gid` that cover it, members' first, until one
    /// matches the digest (a bounded number). Returns whether the bundle is now whole.
    fn assemble(&mut self, gid: &str) -> Result<bool, EmailError> {
        let g = &self.groups[gid];
        if g.complete || !g.covered() {
            return Ok(g.complete);
        }
        let mut held = self.open_group(gid)?;
        let g = &self.groups[gid];
        let mut found = None;
        for combo in held.combinations(MAX_ATTEMPTS, MAX_STEPS, |_| false) {
            let mut h = blake3::Hasher::new();
            match held.assemble(&combo, &mut h) {
                Ok(n) if n == g.size && h.finalize().to_hex().as_str() == g.digest => {
                    found = Some(combo);
                    break;
                }
                Ok(_) => {}
                // A candidate whose bytes changed or went (a crash): not this combination.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::InvalidData
                            | io::ErrorKind::NotFound
                            | io::ErrorKind::UnexpectedEof
                    ) => {}
                Err(e) => return Err(EmailError::io("cannot read", held.dir(), e)),
            }
        }
        let Some(combo) = found else {
            return Ok(false);
        };
        // The bundle from the combination that matched.
        let bundle = self.bundle_path(g);
        held.finish(&combo, &bundle, durable(g))
            .map_err(|e| EmailError::io("cannot put together", &bundle, e))?;
        self.finish(gid)?;
        Ok(true)
    }

    /// Marks `gid` whole (its `bundle` file written): candidates that match the bundle's
    /// bytes join its sources, those that do not are refused; the candidates' files go.
    fn finish(&mut self, gid: &str) -> Result<(), EmailError> {
        let gdir = self.gdir(gid);
        if durable(&self.groups[gid]) {
            sync_dir(&gdir);
        }
        let bundle = gdir.join("bundle");
        let g = self.groups.get_mut(gid).expect("a group being finished");
        for c in std::mem::take(&mut g.cands) {
            let matches =
                range_digest(&bundle, c.offset, c.len)?.is_some_and(|d| d == c.part_digest);
            for s in c.sources {
                if matches {
                    if !g.sources.contains(&s) {
                        g.sources.push(s);
                    }
                } else {
                    g.refused.push(Refusal {
                        source: s,
                        reason: format!(
                            "part {}/{} of bundle {} does not match the bundle its other parts make up (forged or altered)",
                            c.part, g.parts, g.name
                        ),
                    });
                }
            }
        }
        g.complete = true;
        let size = g.size;
        let g = g.clone();
        self.save(&g)?;
        self.parts
            .group_lazy(gid, size, Units::Bytes)
            .and_then(|mut held| held.drop_candidates())
            .map_err(|e| EmailError::io("cannot remove", &gdir, e))
    }
}

/// Whether a group is written durably (each file flushed to disk before it counts): only
/// when a member made some of it. Pieces nobody marked (from strangers, or from an earlier
/// ferry) are written without waiting for the disk: if a power cut loses one, nothing is
/// lost for good, because its sender's next bundle carries the same changes (bundles are
/// planned from what the receiver's receipts say it holds). This keeps a flood of junk from
/// costing a flush to disk per email.
fn durable(g: &Group) -> bool {
    g.trust == Trust::Member
}

fn file_len(path: &Path) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.len())
}

/// BLAKE3 (hex) of `len` bytes of the file at `path` from `offset`; `None` when the file is
/// shorter.
fn range_digest(path: &Path, offset: u64, len: u64) -> Result<Option<String>, EmailError> {
    let mut f = File::open(path).map_err(|e| EmailError::io("cannot open", path, e))?;
    let size = f
        .metadata()
        .map_err(|e| EmailError::io("cannot read", path, e))?
        .len();
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Ok(None);
    }
    std::io::Seek::seek(&mut f, io::SeekFrom::Start(offset))
        .map_err(|e| EmailError::io("cannot read", path, e))?;
    let mut h = blake3::Hasher::new();
    io::copy(&mut f.take(len), &mut h).map_err(|e| EmailError::io("cannot read", path, e))?;
    Ok(Some(h.finalize().to_hex().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: u64 = 300;

    fn whole() -> Vec<u8> {
        (0..SIZE as u32).map(|i| (i * 7) as u8).collect()
    }

    fn piece(data: &[u8], offset: u64, digest: &str, part: u32, sender: &str) -> Piece {
        Piece {
            name: "b".into(),
            tag: None,
            dataset: None,
            sender: Some(sender.into()),
            part,
            parts: 3,
            offset,
            size: SIZE,
            digest: Some(digest.into()),
            part_digest: None,
            data: data.to_vec(),
        }
    }

    impl Inbox {
        fn put(&mut self, p: &Piece, t: Trust, s: &Source, now: u64) -> Result<Added, EmailError> {
            self.add(p, &p.claim(), t, s, now)
        }
    }

    fn src(n: u32) -> Source {
        Source::File {
            path: PathBuf::from(format!("/x/{n}")),
        }
    }

    fn parts() -> (Vec<u8>, String, [Piece; 3]) {
        let w = whole();
        let d = digest_hex(&w);
        let p = [
            piece(&w[..100], 0, &d, 1, "hq@x"),
            piece(&w[100..200], 100, &d, 2, "hq@x"),
            piece(&w[200..], 200, &d, 3, "hq@x"),
        ];
        (w, d, p)
    }

    #[test]
    fn parts_in_any_order_and_twice_make_one_bundle_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (w, _, [p1, p2, p3]) = parts();
        let mut inbox = Inbox::load(dir.path(), 1000).unwrap();
        for (p, n) in [(&p3, 3), (&p1, 1), (&p1, 4)] {
            assert!(matches!(
                inbox.put(p, Trust::Member, &src(n), 1000).unwrap(),
                Added::Waiting
            ));
        }
        let mut inbox = Inbox::load(dir.path(), 1001).unwrap();
        assert_eq!(inbox.groups().next().unwrap().have(), 200);
        assert!(matches!(
            inbox.put(&p2, Trust::Member, &src(2), 1001).unwrap(),
            Added::Complete
        ));
        let g = inbox.groups().next().unwrap().clone();
        assert!(g.complete && g.refused.is_empty());
        assert_eq!(g.sources.len(), 4);
        assert_eq!(fs::read(inbox.bundle_path(&g)).unwrap(), w);
        inbox.settle(&g.id, Fate::Processed, 1002).unwrap();
        let mut inbox = Inbox::load(dir.path(), 1003).unwrap();
        assert!(matches!(
            inbox.put(&p2, Trust::Member, &src(5), 1003).unwrap(),
            Added::Late(Fate::Processed)
        ));
    }

    /// Issue 18, finding 10: a forged part with the same digest and size as a real one no
    /// longer destroys the bundle in flight: it is kept as another candidate, the real parts
    /// still make the bundle, and the forged part is refused once the bundle is whole.
    #[test]
    fn a_forged_part_with_the_real_digest_and_size_does_not_displace_the_real_one() {
        let dir = tempfile::tempdir().unwrap();
        let (w, d, [p1, p2, p3]) = parts();
        let mut forged = piece(&[0xEE; 100], 100, &d, 2, "mallory@x");
        forged.name = "b".into();
        let mut inbox = Inbox::load(dir.path(), 1000).unwrap();
        assert!(matches!(
            inbox.put(&p1, Trust::Member, &src(1), 1000).unwrap(),
            Added::Waiting
        ));
        assert!(matches!(
            inbox.put(&p3, Trust::Member, &src(3), 1000).unwrap(),
            Added::Waiting
        ));
        // Covered, but the combination does not match: everything stays.
        assert!(matches!(
            inbox
                .put(&forged, Trust::Unverified, &src(9), 1000)
                .unwrap(),
            Added::Waiting
        ));
        assert_eq!(inbox.groups().next().unwrap().cands.len(), 3);
        assert!(matches!(
            inbox.put(&p2, Trust::Member, &src(2), 1001).unwrap(),
            Added::Complete
        ));
        let g = inbox.groups().next().unwrap().clone();
        assert_eq!(fs::read(inbox.bundle_path(&g)).unwrap(), w);
        assert_eq!(g.sources, vec![src(1), src(3), src(2)]);
        assert_eq!(g.refused.len(), 1);
        assert_eq!(g.refused[0].source, src(9));
        assert!(
            g.refused[0].reason.contains("does not match"),
            "{:?}",
            g.refused
        );

        // The same order with unverified real parts (an earlier ferry): still found.
        let dir = tempfile::tempdir().unwrap();
        let mut inbox = Inbox::load(dir.path(), 1000).unwrap();
        inbox.put(&p1, Trust::Unverified, &src(1), 1000).unwrap();
        inbox
            .put(&forged, Trust::Unverified, &src(9), 1000)
            .unwrap();
        inbox.put(&p3, Trust::Unverified, &src(3), 1000).unwrap();
        assert!(matches!(
            inbox.put(&p2, Trust::Unverified, &src(2), 1000).unwrap(),
            Added::Complete
        ));
        let g = inbox.groups().next().unwrap();
        assert_eq!(fs::read(inbox.bundle_path(g)).unwrap(), w);

        // Once a member's copy of the bytes is there, an unverified different one is refused.
        let dir = tempfile::tempdir().unwrap();
        let mut inbox = Inbox::load(dir.path(), 1000).unwrap();
        inbox.put(&p2, Trust::Member, &src(2), 1000).unwrap();
        match inbox
            .put(&forged, Trust::Unverified, &src(9), 1000)
            .unwrap()
        {
            Added::Refused(why) => assert!(why.contains("member's copy"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    /// Before the bundle is settled, another copy of a part joins it only if its bytes are
    /// the bundle's.
    #[test]
    fn copies_arriving_after_the_bundle_is_whole_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (_, d, [p1, p2, p3]) = parts();
        let mut inbox = Inbox::load(dir.path(), 1000).unwrap();
        for (p, n) in [(&p1, 1), (&p2, 2), (&p3, 3)] {
            inbox.put(p, Trust::Member, &src(n), 1000).unwrap();
        }
        let forged = piece(&[0xEE; 100], 100, &d, 2, "mallory@x");
        assert!(matches!(
            inbox.put(&p2, Trust::Unverified, &src(4), 1000).unwrap(),
            Added::Complete
        ));
        assert!(matches!(
            inbox
                .put(&forged, Trust::Unverified, &src(5), 1000)
                .unwrap(),
            Added::Complete
        ));
        let g = inbox.groups().next().unwrap();
        assert!(g.sources.contains(&src(4)));
        assert_eq!(g.refused.len(), 1);
        assert_eq!(g.refused[0].source, src(5));
    }

    /// A whole bundle nobody marked is written without waiting for the disk; one cut short by
    /// a power cut is dropped at the next load instead of being offered broken (or stopping
    /// the receive with a damaged state file).
    #[test]
    fn a_whole_unmarked_bundle_cut_by_a_crash_is_dropped_not_offered() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = piece(&whole(), 0, &digest_hex(&whole()), 1, "x@y");
        p.parts = 1;
        let mut inbox = Inbox::load(dir.path(), 1000).unwrap();
        assert!(matches!(
            inbox.put(&p, Trust::Unverified, &src(1), 1000).unwrap(),
            Added::Complete
        ));
        let g = inbox.groups().next().unwrap().clone();
        assert!(!durable(&g));
        fs::write(inbox.bundle_path(&g), &whole()[..10]).unwrap();
        let inbox = Inbox::load(dir.path(), 1001).unwrap();
        assert_eq!(inbox.groups().count(), 0);
        // The same with a half-written description.
        let mut inbox = Inbox::load(dir.path(), 1000).unwrap();
        inbox.put(&p, Trust::Unverified, &src(1), 1000).unwrap();
        let gdir = inbox.dir.join(&g.gid);
        fs::write(gdir.join("meta"), b"{\"gid\": \"ab").unwrap();
        let inbox = Inbox::load(dir.path(), 1001).unwrap();
        assert_eq!(inbox.groups().count(), 0);
        assert!(!gdir.exists());
    }

    /// A part claiming another size is another group: it cannot make the real parts look
    /// damaged (before, the first size seen won and the real parts were reported).
    #[test]
    fn a_part_claiming_another_size_is_kept_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (w, d, [p1, p2, p3]) = parts();
        let mut liar = piece(&[1; 10], 0, &d, 1, "mallory@x");
        liar.size = 999;
        let mut inbox = Inbox::load(dir.path(), 1000).unwrap();
        assert!(matches!(
            inbox.put(&liar, Trust::Unverified, &src(9), 1000).unwrap(),
            Added::Waiting
        ));
        for (p, n) in [(&p1, 1), (&p2, 2)] {
            assert!(matches!(
                inbox.put(p, Trust::Member, &src(n), 1000).unwrap(),
                Added::Waiting
            ));
        }
        assert!(matches!(
            inbox.put(&p3, Trust::Member, &src(3), 1000).unwrap(),
            Added::Complete
        ));
        let g = inbox.groups().find(|g| g.complete).unwrap();
        assert_eq!(fs::read(inbox.bundle_path(g)).unwrap(), w);
    }

    /// Issue 18, finding 6: strangers' pieces are bounded per sender and in all, a member's
    /// pieces are not pushed out by them, and incomplete bundles expire.
    #[test]
    fn unverified_pieces_stay_within_their_quotas_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let mut inbox = Inbox::load(dir.path(), 1000).unwrap();
        let fake = |n: u32, sender: &str| {
            let data = n.to_le_bytes().repeat(64);
            let mut p = piece(&data, 0, &digest_hex(&n.to_le_bytes()), 1, sender);
            p.size = 10_000;
            p.parts = 2;
            p
        };
        // One sender: its share, then dropped.
        let mut kept = 0;
        for n in 0..50 {
            match inbox
                .put(&fake(n, "spam@x"), Trust::Unverified, &src(n), 1000)
                .unwrap()
            {
                Added::Waiting => kept += 1,
                Added::Dropped(why) => assert!(why.contains("from one sender"), "{why}"),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(kept, UNVERIFIED.sender_groups);
        // Many senders: the total stays within its limit.
        for n in 100..400 {
            inbox
                .put(
                    &fake(n, &format!("s{n}@x")),
                    Trust::Unverified,
                    &src(n),
                    1000,
                )
                .unwrap();
        }
        let (_, total) = inbox.usage(Trust::Unverified);
        assert!(total.0 <= UNVERIFIED.total_groups, "{total:?}");
        // A member's part is kept whatever strangers hold.
        let (_, _, [p1, _, _]) = parts();
        assert!(matches!(
            inbox.put(&p1, Trust::Member, &src(1), 1000).unwrap(),
            Added::Waiting
        ));
        let on_disk = read_dir_names(&dir.path().join("inbox")).unwrap().len();
        assert!(on_disk <= UNVERIFIED.total_groups + 1, "{on_disk}");

        // A week later the strangers' bundles are gone; the member's waits 30 days.
        let inbox = Inbox::load(dir.path(), 1000 + UNVERIFIED.expiry_secs + 1).unwrap();
        assert_eq!(inbox.groups().count(), 1);
        assert!(inbox.expired.len() >= UNVERIFIED.total_groups - 1);
        let inbox = Inbox::load(dir.path(), 1000 + MEMBER.expiry_secs + 1).unwrap();
        assert_eq!(inbox.groups().count(), 0);
        assert_eq!(inbox.expired, vec![("b".to_string(), Trust::Member)]);
    }

    /// A group kept by the previous version (`group.json`, `<n>.cand`) moves into the part
    /// store with its candidates and their emails, and completes.
    #[test]
    fn a_group_kept_by_the_previous_version_moves_into_the_part_store() {
        let dir = tempfile::tempdir().unwrap();
        let (w, d, [p1, p2, p3]) = parts();
        let gid = gid_of(&d, SIZE);
        let gdir = dir.path().join("inbox").join(&gid);
        fs::create_dir_all(&gdir).unwrap();
        let cand = |file: u32, p: &Piece, n: u32| {
            serde_json::json!({
                "file": file, "offset": p.offset, "len": p.data.len(), "part": p.part,
                "part_digest": digest_hex(&p.data), "sender": "hq@x", "trust": "member",
                "at": 1000, "sources": [src(n)],
            })
        };
        fs::write(gdir.join("0.cand"), &p1.data).unwrap();
        fs::write(gdir.join("1.cand"), &p3.data).unwrap();
        let old = serde_json::json!({
            "gid": gid, "id": "b.ferry", "name": "b", "size": SIZE, "digest": d, "parts": 3,
            "first_seen": 1000, "last_seen": 1000, "complete": false, "trust": "member",
            "sender": "hq@x", "cands": [cand(0, &p1, 1), cand(1, &p3, 3)], "sources": [],
            "refused": [], "next_file": 2,
        });
        fs::write(gdir.join("group.json"), serde_json::to_vec(&old).unwrap()).unwrap();
        let mut inbox = Inbox::load(dir.path(), 1000).unwrap();
        assert!(!gdir.join("group.json").exists() && !gdir.join("0.cand").exists());
        assert_eq!(inbox.groups().next().unwrap().have(), 200);
        assert!(matches!(
            inbox.put(&p2, Trust::Member, &src(2), 1000).unwrap(),
            Added::Complete
        ));
        let g = inbox.groups().next().unwrap();
        assert_eq!(fs::read(inbox.bundle_path(g)).unwrap(), w);
        assert_eq!(g.sources, vec![src(1), src(3), src(2)]);
    }

    /// The crash rule: a candidate whose bytes did not reach the disk is forgotten when its
    /// group is next opened, and the same part is taken again.
    #[test]
    fn a_candidate_whose_bytes_were_lost_is_forgotten_and_taken_again() {
        let dir = tempfile::tempdir().unwrap();
        let (w, d, [p1, p2, p3]) = parts();
        let mut inbox = Inbox::load(dir.path(), 1000).unwrap();
        inbox.put(&p1, Trust::Unverified, &src(1), 1000).unwrap();
        inbox.put(&p3, Trust::Unverified, &src(3), 1000).unwrap();
        // A power cut: the pieces were not flushed, `data` lost its end.
        let data = dir.path().join("inbox").join(gid_of(&d, SIZE)).join("data");
        let f = OpenOptions::new().write(true).open(&data).unwrap();
        f.set_len(150).unwrap();
        drop(f);
        let mut inbox = Inbox::load(dir.path(), 1001).unwrap();
        assert!(matches!(
            inbox.put(&p2, Trust::Unverified, &src(2), 1001).unwrap(),
            Added::Waiting
        ));
        assert_eq!(inbox.groups().next().unwrap().have(), 200);
        assert!(matches!(
            inbox.put(&p3, Trust::Unverified, &src(4), 1001).unwrap(),
            Added::Complete
        ));
        let g = inbox.groups().next().unwrap();
        assert_eq!(fs::read(inbox.bundle_path(g)).unwrap(), w);
    }

    #[test]
    fn a_group_kept_by_an_earlier_version_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let (w, d, [_, p2, p3]) = parts();
        let old = dir.path().join("inbox").join(&d);
        fs::create_dir_all(&old).unwrap();
        fs::write(old.join("0-100.piece"), &w[..100]).unwrap();
        fs::write(
            old.join("group.json"),
            format!(
                r#"{{"id":"b.ferry","name":"b","dataset":null,"size":300,"digest":"{d}","parts":3,"pieces":[[0,100]],"complete":false,"sources":[],"first_seen":1000}}"#
            ),
        )
        .unwrap();
        fs::write(
            dir.path().join("processed"),
            format!("{}\n", "ab".repeat(32)),
        )
        .unwrap();
        let mut inbox = Inbox::load(dir.path(), 1000).unwrap();
        assert_eq!(inbox.fate("x", &"ab".repeat(32)), Some(Fate::Processed));
        inbox.put(&p2, Trust::Member, &src(2), 1000).unwrap();
        assert!(matches!(
            inbox.put(&p3, Trust::Member, &src(3), 1000).unwrap(),
            Added::Complete
        ));
        assert!(!dir.path().join("processed").exists());
        let inbox = Inbox::load(dir.path(), 1000).unwrap();
        assert_eq!(inbox.fate("x", &"ab".repeat(32)), Some(Fate::Processed));
    }
}
