//! Receiving: parts reassembled into messages, within bounds per sender and in all.
//!
//! What a stranger can make ferry keep is bounded here, and the work one SMS costs does not
//! grow with what is kept:
//!
//! - **One index** (`incoming/index.json`) holds a line per incomplete message, the recently
//!   finished ones (so late duplicates start nothing), and each sender's allowance of
//!   refused bundles. Each SMS reads and rewrites it and one message's group in the part
//!   store ([`ferry_transport::parts`], `incoming/parts/DIGITS-TAG-COUNT/`: part `i` is the
//!   range `[i, i+1)`, its first version in the group's `data`, others in their own files;
//!   the refused assemblies in the group's blob); nothing else is listed or read. Members'
//!   parts are flushed to disk before they count; strangers' are not (a flood of junk costs
//!   no flushes, and a part a power cut loses is asked for again or resent).
//! - **Bounds**: per member number 32 incomplete messages and 2 048 stored parts; numbers
//!   that are no member's 2 messages each and 64 messages / 1 024 parts together; 512
//!   messages / 16 384 parts in all. Beyond them the oldest message of that sender (or of
//!   strangers, then of the member holding the most) makes room: a member's is kept in
//!   `expired/` and reported, a stranger's is dropped and counted.
//! - **Expiry**: a member's incomplete message after `expiry_hours` without a new part; a
//!   stranger's after a day. Only members' messages are ever asked to be repaired.
//! - **Candidates** (a forged part cannot displace a real one): up to 4 different versions
//!   of each part are kept. When all parts are there, one combination is offered as a
//!   message; when the node refuses it ([`Disposition::Rejected`]), the next untried
//!   combination is offered, up to 16 per message, and a new version of a part makes new
//!   combinations. The transport never looks inside a message: the node checks whole
//!   bundles and says which assembly failed.
//! - **Allowance**: every refused assembly spends one of its sender's allowance (10, one
//!   more every 3 minutes; numbers that are no member's share one). While it is spent,
//!   complete messages from that sender wait (`Held`) instead of being offered, so junk
//!   cannot make the node check thousands of bundles.
//!
//! **Upgrading.** A message kept by the previous version as `incoming/DIGITS-TAG-COUNT.json`
//! (every version of every part in hexadecimal, and the assemblies refused) is moved into
//! the part store the first time it is touched, versions and refusals included.

use crate::error::SmsError;
use crate::frame::{Frame, Missing};
use crate::phone::Phone;
use crate::sms::{
    Accepted, GiveUpReason, Incomplete, MessageMeta, PRIO_CONTROL, RepairRequest, Report,
    ReportKind, SmsTransport, encode_body,
};
use crate::store::unique_stamp;
use ferry_transport::parts::{Added, Group, NewCandidate, PartStore, Units};
use ferry_transport::{Disposition, MessageId, MessageInfo};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Incomplete messages one member number may have.
pub const PER_MEMBER_MESSAGES: usize = 32;
/// Parts (all versions) one member number may have stored.
pub const PER_MEMBER_PARTS: u32 = 2048;
/// Incomplete messages one number that is no member's may have.
pub const PER_STRANGER_MESSAGES: usize = 2;
/// Incomplete messages from numbers that are no member's, together.
pub const STRANGER_MESSAGES: usize = 64;
/// Parts from numbers that are no member's, together.
pub const STRANGER_PARTS: u32 = 1024;
/// Incomplete messages in all.
pub const TOTAL_MESSAGES: usize = 512;
/// Parts in all.
pub const TOTAL_PARTS: u32 = 16_384;
/// Different versions kept of one part.
pub const CANDIDATES: usize = 4;
/// Assemblies of one message offered to the node at most.
pub const ATTEMPTS: usize = 16;
/// A stranger's incomplete message is dropped after this long without a new part.
pub const STRANGER_EXPIRY_SECS: u64 = 24 * 3600;
/// Refused assemblies a sender may cause in a burst.
const REFUSALS_BURST: f64 = 10.0;
/// Seconds to earn back one refused assembly.
const REFUSAL_REFILL_SECS: f64 = 180.0;
/// The allowance shared by every number that is no member's.
const STRANGERS: &str = "*";
/// Finished messages remembered per sender (besides the expiry).
const DONE_PER_SENDER: usize = 1024;

/// Whose messages make room ([`SmsTransport::make_room`]).
enum Pool {
    /// One sender's.
    Sender(Phone),
    /// Those of numbers that are no member's.
    Strangers,
    /// The number with these digits.
    Digits(String),
}

/// Where an incomplete message stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum State {
    /// Parts are missing.
    Collecting,
    /// An assembly is in the mailbox, waiting for the node's verdict.
    Offered,
    /// Complete with an untried assembly, waiting for the sender's allowance.
    Held,
    /// Every assembly so far was refused: waiting for another version of a part.
    Exhausted,
}

/// One incomplete message in the index.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub from: Phone,
    pub tag: u16,
    pub count: u16,
    /// Part indexes with at least one version.
    pub have: u16,
    /// Versions of parts stored, all indexes together.
    pub stored: u32,
    pub first_seen: u64,
    pub last_seen: u64,
    #[serde(default)]
    pub last_request: Option<u64>,
    #[serde(default)]
    pub requests: u32,
    pub state: State,
}

/// A message that finished (applied, or settled for good) recently.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Done {
    from: Phone,
    tag: u16,
    count: u16,
    at: u64,
}

/// A token bucket of refused assemblies.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct Bucket {
    tokens: f64,
    at: u64,
}

impl Bucket {
    fn full(now: u64) -> Bucket {
        Bucket {
            tokens: REFUSALS_BURST,
            at: now,
        }
    }
    fn refill(&mut self, now: u64) {
        let earned = now.saturating_sub(self.at) as f64 / REFUSAL_REFILL_SECS;
        self.tokens = (self.tokens + earned).min(REFUSALS_BURST);
        self.at = now.max(self.at);
    }
}

/// Counts of what strangers sent that was not kept, for status.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Dropped {
    /// Incomplete messages from numbers that are no member's dropped to make room or
    /// after a day.
    pub stranger_messages: u64,
    /// Versions of parts dropped because a part already had as many as are kept.
    pub extra_versions: u64,
}

/// The reassembly index (`incoming/index.json`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Index {
    #[serde(default)]
    pub messages: Vec<Entry>,
    #[serde(default)]
    done: Vec<Done>,
    #[serde(default)]
    allowance: BTreeMap<String, Bucket>,
    #[serde(default)]
    pub dropped: Dropped,
}

/// The versions of each part of one message as the previous version kept them
/// (`incoming/DIGITS-TAG-COUNT.json`), read once to move them into the part store.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct LegacyParts {
    /// Per part index, its versions in hexadecimal, in order of arrival.
    parts: Vec<Vec<String>>,
    /// Assemblies refused so far: per part index, which version was used.
    #[serde(default)]
    tried: Vec<Vec<u8>>,
}

/// The assemblies of one message refused so far (its group's blob): each the candidates it
/// used, one per part.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Tried {
    tried: Vec<Vec<u32>>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(h: &str) -> Vec<u8> {
    (0..h.len() / 2)
        .filter_map(|i| u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// One incomplete message's parts: its group and the assemblies refused.
struct Parts {
    group: Group,
    tried: Tried,
}

impl Parts {
    /// The first assembly (a candidate per part) not refused yet, if any and if fewer than
    /// [`ATTEMPTS`] were refused. Members' versions come first, then by arrival.
    fn next_choice(&self) -> Option<Vec<u32>> {
        if self.tried.tried.len() >= ATTEMPTS {
            return None;
        }
        let steps = 4096usize.max(8 * self.group.total() as usize);
        self.group
            .combinations(1, steps, |c| self.tried.tried.iter().any(|t| t == c))
            .pop()
    }

    fn assemble(&self, choice: &[u32]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.group.assemble(choice, &mut out)?;
        Ok(out)
    }

    /// The candidates of an assembly named the previous version's way (which version of
    /// each part, in order of arrival).
    fn ids_of_versions(&self, choice: &[u8]) -> Option<Vec<u32>> {
        choice
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let mut ids: Vec<u32> = self.group.versions(i as u64, 1).map(|c| c.id).collect();
                ids.sort_unstable();
                ids.get(usize::from(v)).copied()
            })
            .collect()
    }

    /// Part indexes with no version.
    fn missing(&self, count: u16) -> Vec<u16> {
        (0..count)
            .filter(|&i| self.group.versions(u64::from(i), 1).next().is_none())
            .collect()
    }
}

/// The message id of one assembly: first part's time, sender, tag, parts, attempt.
fn message_id(e: &Entry, attempt: usize) -> String {
    format!(
        "{:011}-{}-{:05}-{:03}-{attempt:02}",
        e.first_seen,
        e.from.digits(),
        e.tag,
        e.count
    )
}

impl SmsTransport {
    pub(crate) fn index_path(&self) -> PathBuf {
        self.store.path("incoming/index.json")
    }

    pub(crate) fn load_index(&self) -> Result<Index, SmsError> {
        match self.store.read_json::<Index>(&self.index_path()) {
            Ok(i) => Ok(i.unwrap_or_default()),
            // A damaged index loses incomplete messages, nothing else: start again.
            Err(SmsError::CorruptState { .. }) => Ok(Index::default()),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn save_index(&self, index: &Index, durable: bool) -> Result<(), SmsError> {
        self.store.write_json_as(&self.index_path(), index, durable)
    }

    /// The part store of incomplete messages.
    fn part_store(&self) -> PartStore {
        PartStore::new(self.store.path("incoming/parts"))
    }

    /// The group key of a message: the sender's digits, its tag and its number of parts.
    fn group_key(e: &Entry) -> String {
        format!("{}-{:05}-{:03}", e.from.digits(), e.tag, e.count)
    }

    fn parts_err(&self, what: &'static str, e: &Entry, err: std::io::Error) -> SmsError {
        SmsError::state(what, self.part_store().dir().join(Self::group_key(e)), err)
    }

    fn load_parts(&self, e: &Entry) -> Result<Parts, SmsError> {
        let parts = self.part_store();
        let key = Self::group_key(e);
        let legacy = self.store.path(&format!("incoming/{key}.json"));
        if legacy.exists() {
            self.convert_parts(e, &legacy)?;
        }
        let group = parts
            .group(&key, u64::from(e.count), Units::Pieces)
            .map_err(|err| self.parts_err("read", e, err))?;
        let tried = match parts.meta(&key) {
            Ok(Some(b)) => serde_json::from_slice(&b).unwrap_or_default(),
            Ok(None) => Tried::default(),
            Err(err) => return Err(self.parts_err("read", e, err)),
        };
        Ok(Parts { group, tried })
    }

    /// Moves a message kept the previous version's way into the part store.
    fn convert_parts(&self, e: &Entry, legacy: &std::path::Path) -> Result<(), SmsError> {
        let old = match self.store.read_json::<LegacyParts>(legacy) {
            Ok(Some(p)) if p.parts.len() == usize::from(e.count) => p,
            Ok(_) | Err(SmsError::CorruptState { .. }) => LegacyParts::default(),
            Err(err) => return Err(err),
        };
        let versions: Vec<Vec<Vec<u8>>> = old
            .parts
            .iter()
            .map(|v| v.iter().map(|h| unhex(h)).collect())
            .collect();
        let group = self.import_parts(e, &versions)?;
        let parts = Parts {
            group,
            tried: Tried::default(),
        };
        let tried = Tried {
            tried: old
                .tried
                .iter()
                .filter_map(|c| parts.ids_of_versions(c))
                .collect(),
        };
        self.save_tried(e, &tried, true)?;
        self.store.remove(legacy)
    }

    /// Makes the group of `e` from parts kept by an earlier version: per part index, its
    /// versions in order of arrival (durably: only members' messages are converted).
    pub(crate) fn import_parts(
        &self,
        e: &Entry,
        versions: &[Vec<Vec<u8>>],
    ) -> Result<Group, SmsError> {
        let key = Self::group_key(e);
        let store = self.part_store();
        store
            .remove(&key)
            .map_err(|err| self.parts_err("remove", e, err))?;
        let mut group = store
            .group(&key, u64::from(e.count), Units::Pieces)
            .map_err(|err| self.parts_err("read", e, err))?;
        let sender = e.from.digits();
        for (i, part) in versions.iter().enumerate().take(usize::from(e.count)) {
            for bytes in part {
                group
                    .add(
                        &NewCandidate {
                            offset: i as u64,
                            len: 1,
                            bytes,
                            sender,
                            trust: u8::from(self.is_member(&e.from)),
                            at: e.last_seen,
                        },
                        CANDIDATES,
                    )
                    .map_err(|err| self.parts_err("write", e, err))?;
            }
        }
        group
            .sync()
            .map_err(|err| self.parts_err("write", e, err))?;
        Ok(group)
    }

    fn save_tried(&self, e: &Entry, tried: &Tried, durable: bool) -> Result<(), SmsError> {
        let bytes = serde_json::to_vec(tried).expect("a list of numbers encodes");
        self.part_store()
            .set_meta(&Self::group_key(e), &bytes, durable)
            .map_err(|err| self.parts_err("write", e, err))
    }

    /// Whether `from` is a member's published number (a known peer).
    pub(crate) fn is_member(&self, from: &Phone) -> bool {
        self.peer_for(from).is_some()
    }

    fn allowance_key(&self, from: &Phone) -> String {
        if self.is_member(from) {
            from.digits().to_string()
        } else {
            STRANGERS.to_string()
        }
    }

    fn allowance_left(&self, index: &mut Index, from: &Phone, now: u64) -> bool {
        let b = index
            .allowance
            .entry(self.allowance_key(from))
            .or_insert_with(|| Bucket::full(now));
        b.refill(now);
        b.tokens >= 1.0
    }

    fn spend_allowance(&self, index: &mut Index, from: &Phone, now: u64) {
        let b = index
            .allowance
            .entry(self.allowance_key(from))
            .or_insert_with(|| Bucket::full(now));
        b.refill(now);
        b.tokens = (b.tokens - 1.0).max(-REFUSALS_BURST);
    }

    /// Applies one decoded frame from `from` (already classified). Runs under the state
    /// lock.
    pub(crate) fn apply(&self, from: &Phone, frame: Frame, now: u64) -> Result<Accepted, SmsError> {
        match frame {
            Frame::Data {
                tag,
                index,
                count,
                payload,
            } => self.store_part(from, tag, index, count, &payload, now),
            Frame::Missing(requests) => {
                if !self.is_member(from) {
                    return Ok(Accepted::Ignored {
                        from: from.to_string(),
                        reason: "a request for missing SMS parts from a number that is no member's; nothing was sent".into(),
                    });
                }
                self.answer_missing(from, &requests, now)
            }
            Frame::Gone(gone) => {
                if !self.is_member(from) {
                    return Ok(Accepted::Ignored {
                        from: from.to_string(),
                        reason: "a notice about messages from a number that is no member's; nothing changed".into(),
                    });
                }
                let mut index = self.load_index()?;
                let mut reports = Vec::new();
                for g in gone {
                    let found = index.messages.iter().position(|e| {
                        e.from.same_as(from)
                            && e.tag == g.tag
                            && e.count == g.count
                            && e.state != State::Offered
                    });
                    if let Some(i) = found {
                        let e = index.messages.remove(i);
                        reports.push(self.give_up(&e, GiveUpReason::SenderGone, now)?);
                    }
                }
                self.save_index(&index, true)?;
                Ok(Accepted::SenderGone {
                    from: from.clone(),
                    reports,
                })
            }
        }
    }

    fn store_part(
        &self,
        from: &Phone,
        tag: u16,
        part: u16,
        count: u16,
        payload: &[u8],
        now: u64,
    ) -> Result<Accepted, SmsError> {
        let member = self.is_member(from);
        let durable = member;
        let mut index = self.load_index()?;
        let expiry = self.config.expiry_hours * 3600;
        index.done.retain(|d| now < d.at.saturating_add(expiry));
        let duplicate = Accepted::Duplicate {
            from: from.clone(),
            tag,
            index: part,
        };
        if index
            .done
            .iter()
            .any(|d| d.from.same_as(from) && d.tag == tag && d.count == count)
        {
            return Ok(duplicate);
        }
        let at = match index
            .messages
            .iter()
            .position(|e| e.from.same_as(from) && e.tag == tag && e.count == count)
        {
            Some(i) => i,
            None => {
                index.messages.push(Entry {
                    from: from.clone(),
                    tag,
                    count,
                    have: 0,
                    stored: 0,
                    first_seen: now,
                    last_seen: now,
                    last_request: None,
                    requests: 0,
                    state: State::Collecting,
                });
                index.messages.len() - 1
            }
        };
        let mut entry = index.messages[at].clone();
        let mut parts = self.load_parts(&entry)?;
        let added = parts
            .group
            .add(
                &NewCandidate {
                    offset: u64::from(part),
                    len: 1,
                    bytes: payload,
                    sender: from.digits(),
                    trust: u8::from(member),
                    at: now,
                },
                CANDIDATES,
            )
            .map_err(|err| self.parts_err("write", &entry, err))?;
        match added {
            Added::New { .. } => {}
            Added::Duplicate(_) => return Ok(duplicate),
            // One sender's versions all have the same trust: only "crowded" can happen.
            Added::Crowded | Added::Conflicts(_) => {
                index.dropped.extra_versions += 1;
                self.save_index(&index, durable)?;
                return Ok(Accepted::Ignored {
                    from: from.to_string(),
                    reason: format!(
                        "another version of part {} of message {tag} ({CANDIDATES} are kept already); dropped",
                        part + 1
                    ),
                });
            }
        }
        if durable {
            parts
                .group
                .sync()
                .map_err(|err| self.parts_err("write", &entry, err))?;
        }
        entry.stored = parts.group.count() as u32;
        entry.have = parts.group.have() as u16;
        entry.last_seen = now;
        let complete = entry.have == entry.count;
        let mut outcome = Accepted::Part {
            from: from.clone(),
            tag,
            index: part,
            count,
            have: entry.have,
        };
        if complete && entry.state != State::Offered {
            match parts.next_choice() {
                Some(choice) if self.allowance_left(&mut index, from, now) => {
                    let message = self.offer(&mut entry, &parts, &choice, now, durable)?;
                    outcome = Accepted::Completed {
                        from: from.clone(),
                        tag,
                        message,
                    };
                }
                Some(_) => {
                    entry.state = State::Held;
                    outcome = Accepted::Held {
                        from: from.clone(),
                        tag,
                    };
                }
                None => entry.state = State::Exhausted,
            }
        }
        index.messages[at] = entry.clone();
        let evicted = self.make_room(&mut index, &entry, now)?;
        self.save_index(&index, durable || evicted)?;
        Ok(outcome)
    }

    /// Writes one assembly into the mailbox and marks the entry offered.
    fn offer(
        &self,
        entry: &mut Entry,
        parts: &Parts,
        choice: &[u32],
        now: u64,
        durable: bool,
    ) -> Result<MessageInfo, SmsError> {
        let message = parts
            .assemble(choice)
            .map_err(|err| self.parts_err("read", entry, err))?;
        let id = message_id(entry, parts.tried.tried.len());
        let msg_path = self.store.path(&format!("inbox/{id}.msg"));
        self.store.write_as(&msg_path, &message, durable)?;
        self.store.write_json_as(
            &self.store.path(&format!("inbox/{id}.json")),
            &MessageMeta {
                from: entry.from.clone(),
                tag: entry.tag,
                parts: entry.count,
                len: message.len() as u64,
                completed_at: now,
                choice: None,
                candidates: Some(choice.to_vec()),
            },
            durable,
        )?;
        entry.state = State::Offered;
        Ok(MessageInfo {
            id: MessageId(id),
            len: Some(message.len() as u64),
            location: msg_path.display().to_string(),
        })
    }

    /// Keeps the index within its bounds after `current` grew: drops the oldest messages
    /// of the same sender, then of strangers, then of the member holding the most. Returns
    /// whether a member's message was given up (reported).
    fn make_room(&self, index: &mut Index, current: &Entry, now: u64) -> Result<bool, SmsError> {
        let is_current =
            |e: &Entry| e.from == current.from && e.tag == current.tag && e.count == current.count;
        let mut gave_up_member = false;
        loop {
            let member_of = |e: &Entry| self.is_member(&e.from);
            let same: Vec<&Entry> = index
                .messages
                .iter()
                .filter(|e| e.from.same_as(&current.from))
                .collect();
            let (same_msgs, same_parts) = (same.len(), same.iter().map(|e| e.stored).sum::<u32>());
            let strangers: Vec<&Entry> = index.messages.iter().filter(|e| !member_of(e)).collect();
            let (str_msgs, str_parts) = (
                strangers.len(),
                strangers.iter().map(|e| e.stored).sum::<u32>(),
            );
            let (all_msgs, all_parts) = (
                index.messages.len(),
                index.messages.iter().map(|e| e.stored).sum::<u32>(),
            );
            let current_member = self.is_member(&current.from);
            // Who must make room, if anyone.
            let sender_over = if current_member {
                same_msgs > PER_MEMBER_MESSAGES || same_parts > PER_MEMBER_PARTS
            } else {
                same_msgs > PER_STRANGER_MESSAGES
            };
            let pool = if sender_over {
                Some(Pool::Sender(current.from.clone()))
            } else if str_msgs > STRANGER_MESSAGES
                || str_parts > STRANGER_PARTS
                || ((all_msgs > TOTAL_MESSAGES || all_parts > TOTAL_PARTS) && str_msgs > 0)
            {
                Some(Pool::Strangers)
            } else if all_msgs > TOTAL_MESSAGES || all_parts > TOTAL_PARTS {
                // The member holding the most parts.
                let mut per: BTreeMap<&str, u32> = BTreeMap::new();
                for e in &index.messages {
                    *per.entry(e.from.digits()).or_default() += e.stored;
                }
                per.into_iter()
                    .max_by_key(|(_, n)| *n)
                    .map(|(d, _)| Pool::Digits(d.to_string()))
            } else {
                None
            };
            let Some(pool) = pool else {
                return Ok(gave_up_member);
            };
            let in_pool = |e: &Entry| match &pool {
                Pool::Sender(p) => e.from.same_as(p),
                Pool::Strangers => !self.is_member(&e.from),
                Pool::Digits(d) => e.from.digits() == d,
            };
            let victim = index
                .messages
                .iter()
                .enumerate()
                .filter(|(_, e)| in_pool(e) && !is_current(e) && e.state != State::Offered)
                .min_by_key(|(_, e)| (e.last_seen, e.first_seen))
                .map(|(i, _)| i);
            let Some(i) = victim else {
                // Nothing else to drop (the current message alone is over the bounds, or
                // only offered messages are left): drop the current one if it is a
                // stranger's, else keep it.
                if !current_member {
                    if let Some(i) = index.messages.iter().position(&is_current) {
                        let e = index.messages.remove(i);
                        self.drop_entry(&e)?;
                        index.dropped.stranger_messages += 1;
                    }
                }
                return Ok(gave_up_member);
            };
            let e = index.messages.remove(i);
            if self.is_member(&e.from) {
                self.give_up(&e, GiveUpReason::Crowded, now)?;
                gave_up_member = true;
            } else {
                self.drop_entry(&e)?;
                index.dropped.stranger_messages += 1;
            }
        }
    }

    fn drop_entry(&self, e: &Entry) -> Result<(), SmsError> {
        let key = Self::group_key(e);
        self.store
            .remove(&self.store.path(&format!("incoming/{key}.json")))?;
        self.part_store()
            .remove(&key)
            .map_err(|err| self.parts_err("remove", e, err))
    }

    /// Gives a member's incomplete message up: its parts go to `expired/`, with a report.
    pub(crate) fn give_up(
        &self,
        e: &Entry,
        reason: GiveUpReason,
        now: u64,
    ) -> Result<Report, SmsError> {
        let kept = self.store.path(&format!(
            "expired/{}-{:05}-{}.json",
            e.from.digits(),
            e.tag,
            unique_stamp()
        ));
        // Kept as one file, every version of every part in hexadecimal (as before the part
        // store), so what was given up can be looked at.
        let parts = self.load_parts(e)?;
        if parts.group.count() > 0 {
            let mut versions: Vec<Vec<String>> = vec![Vec::new(); usize::from(e.count)];
            for c in parts.group.candidates() {
                let bytes = parts
                    .group
                    .read(c.id)
                    .map_err(|err| self.parts_err("read", e, err))?;
                if let Some(v) = versions.get_mut(c.offset as usize) {
                    v.push(hex(&bytes));
                }
            }
            self.store.write_json_as(
                &kept,
                &LegacyParts {
                    parts: versions,
                    tried: Vec::new(),
                },
                true,
            )?;
            self.cap_expired();
        }
        self.drop_entry(e)?;
        self.report(
            ReportKind::GaveUp {
                from: e.from.clone(),
                tag: e.tag,
                have: e.have,
                count: e.count,
                first_seen: e.first_seen,
                reason,
                kept_at: kept,
            },
            now,
        )
    }

    /// What the node decided about an assembly in the mailbox. Applied (or obsolete): the
    /// message is finished and its parts are dropped. Refused: the sender's allowance is
    /// spent, and the next untried assembly, if any, is offered at once.
    pub(crate) fn settle_assembly(
        &self,
        meta: Option<MessageMeta>,
        disposition: &Disposition,
        now: u64,
    ) -> Result<(), SmsError> {
        let Some(meta) = meta else {
            return Ok(());
        };
        let mut index = self.load_index()?;
        let at = index
            .messages
            .iter()
            .position(|e| e.from.same_as(&meta.from) && e.tag == meta.tag && e.count == meta.parts);
        let durable = self.is_member(&meta.from);
        match disposition {
            Disposition::Processed | Disposition::Obsolete => {
                if let Some(i) = at {
                    let e = index.messages.remove(i);
                    self.drop_entry(&e)?;
                }
                index.done.push(Done {
                    from: meta.from.clone(),
                    tag: meta.tag,
                    count: meta.parts,
                    at: now,
                });
                // Remembered within the expiry time, and at most so many per sender.
                let mine = index
                    .done
                    .iter()
                    .filter(|d| d.from.same_as(&meta.from))
                    .count();
                if mine > DONE_PER_SENDER {
                    if let Some(i) = index.done.iter().position(|d| d.from.same_as(&meta.from)) {
                        index.done.remove(i);
                    }
                }
            }
            // Left as it is by the mailbox; nothing to change here.
            Disposition::Retry { .. } => return Ok(()),
            Disposition::Rejected { .. } => {
                self.spend_allowance(&mut index, &meta.from, now);
                if let Some(i) = at {
                    let mut e = index.messages[i].clone();
                    let mut parts = self.load_parts(&e)?;
                    let used = match (&meta.candidates, &meta.choice) {
                        (Some(c), _) => Some(c.clone()),
                        // Offered by the previous version: which version of each part.
                        (None, Some(v)) => parts.ids_of_versions(v),
                        (None, None) => None,
                    };
                    if let Some(c) = used {
                        if !parts.tried.tried.contains(&c) {
                            parts.tried.tried.push(c);
                        }
                    }
                    e.state = match parts.next_choice() {
                        Some(choice) if self.allowance_left(&mut index, &meta.from, now) => {
                            self.offer(&mut e, &parts, &choice, now, durable)?;
                            State::Offered
                        }
                        Some(_) => State::Held,
                        None => State::Exhausted,
                    };
                    self.save_tried(&e, &parts.tried, durable)?;
                    index.messages[i] = e;
                }
            }
        }
        self.save_index(&index, durable)
    }

    /// Offers held messages whose sender's allowance came back. Returns how many.
    pub(crate) fn offer_held(&self, now: u64) -> Result<usize, SmsError> {
        let mut index = self.load_index()?;
        let mut offered = 0;
        for i in 0..index.messages.len() {
            if index.messages[i].state != State::Held {
                continue;
            }
            let from = index.messages[i].from.clone();
            if !self.allowance_left(&mut index, &from, now) {
                continue;
            }
            let mut e = index.messages[i].clone();
            let parts = self.load_parts(&e)?;
            match parts.next_choice() {
                Some(choice) => {
                    let durable = self.is_member(&from);
                    self.offer(&mut e, &parts, &choice, now, durable)?;
                    offered += 1;
                }
                None => e.state = State::Exhausted,
            }
            index.messages[i] = e;
        }
        if offered > 0 {
            self.save_index(&index, true)?;
        }
        Ok(offered)
    }

    /// The repair requests due now, per member: parts still missing of messages that made
    /// no progress for `repair_after_minutes` (then twice as long after each request), and
    /// every part of a message whose every assembly was refused (a forged version may
    /// stand where the real part was lost). Strangers' messages are never asked about.
    pub(crate) fn due_repairs(&self, now: u64) -> Result<Vec<(Phone, Vec<Missing>)>, SmsError> {
        let mut index = self.load_index()?;
        let base = self.config.repair_after_minutes * 60;
        let mut per: BTreeMap<Phone, Vec<Missing>> = BTreeMap::new();
        let mut changed = false;
        for e in index.messages.iter_mut() {
            let Some(peer) = self.peer_for(&e.from).map(|p| p.phone.clone()) else {
                continue;
            };
            if matches!(e.state, State::Offered | State::Held) {
                continue;
            }
            let wait = base.saturating_mul(1u64 << e.requests.min(16));
            let since = e.last_seen.max(e.last_request.unwrap_or(0));
            if now < since.saturating_add(wait) {
                continue;
            }
            let missing: Vec<u16> = if e.state == State::Exhausted {
                (0..e.count).collect()
            } else {
                self.load_parts(e)?.missing(e.count)
            };
            if missing.is_empty() {
                continue;
            }
            e.last_request = Some(now);
            e.requests += 1;
            changed = true;
            per.entry(peer).or_default().push(Missing {
                tag: e.tag,
                count: e.count,
                parts: missing,
            });
        }
        if changed {
            self.save_index(&index, true)?;
        }
        Ok(per.into_iter().collect())
    }

    /// Gives up what waited too long: members' incomplete messages after `expiry_hours`
    /// (reported, parts kept in `expired/`), strangers' after a day (dropped, counted).
    pub(crate) fn expire_incoming(&self, now: u64) -> Result<Vec<Report>, SmsError> {
        let mut index = self.load_index()?;
        let expiry = self.config.expiry_hours * 3600;
        let mut reports = Vec::new();
        let mut keep = Vec::new();
        for e in std::mem::take(&mut index.messages) {
            let member = self.is_member(&e.from);
            let limit = if member {
                expiry
            } else {
                expiry.min(STRANGER_EXPIRY_SECS)
            };
            if e.state == State::Offered || now < e.last_seen.saturating_add(limit) {
                keep.push(e);
            } else if member {
                reports.push(self.give_up(&e, GiveUpReason::Expired, now)?);
            } else {
                self.drop_entry(&e)?;
                index.dropped.stranger_messages += 1;
            }
        }
        index.messages = keep;
        index.done.retain(|d| now < d.at.saturating_add(expiry));
        self.save_index(&index, true)?;
        Ok(reports)
    }

    /// Incomplete messages.
    pub(crate) fn incomplete_messages(&self) -> Result<Vec<Incomplete>, SmsError> {
        Ok(self
            .load_index()?
            .messages
            .into_iter()
            .filter(|e| e.state != State::Offered)
            .map(|e| Incomplete {
                from: e.from,
                tag: e.tag,
                have: e.have,
                count: e.count,
                first_seen: e.first_seen,
                last_seen: e.last_seen,
                requests: e.requests,
            })
            .collect())
    }

    /// Queues the repair requests due now (one compact control SMS per member where
    /// possible, within the member's repair share) and returns them.
    pub(crate) fn queue_repairs(&self, now: u64) -> Result<Vec<RepairRequest>, SmsError> {
        let mut out = Vec::new();
        for (peer, requests) in self.due_repairs(now)? {
            let frames = crate::frame::missing_frames(&requests, self.frame_bytes());
            let allowed = self.take_repair_share(&peer, frames.len(), now)?;
            for f in frames.into_iter().take(allowed) {
                self.enqueue(
                    &peer,
                    PRIO_CONTROL,
                    None,
                    None,
                    &encode_body(f, self.config.binary),
                )?;
            }
            if allowed == 0 {
                continue;
            }
            out.extend(requests.into_iter().map(|r| RepairRequest {
                to: peer.clone(),
                tag: r.tag,
                count: r.count,
                missing: r.parts,
            }));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message of `versions.len()` parts with so many versions of each, in a part store
    /// in `dir`.
    fn parts(dir: &std::path::Path, versions: &[usize]) -> Parts {
        let store = PartStore::new(dir);
        let mut group = store
            .group("m", versions.len() as u64, Units::Pieces)
            .unwrap();
        for (i, &n) in versions.iter().enumerate() {
            for v in 0..n {
                let bytes = [i as u8, v as u8];
                let new = NewCandidate {
                    offset: i as u64,
                    len: 1,
                    bytes: &bytes,
                    sender: "15550001",
                    trust: 1,
                    at: 0,
                };
                assert!(matches!(
                    group.add(&new, CANDIDATES).unwrap(),
                    Added::New { .. }
                ));
            }
        }
        Parts {
            group,
            tried: Tried::default(),
        }
    }

    #[test]
    fn every_combination_is_tried_once_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = parts(&dir.path().join("a"), &[1, 2, 1, 3]);
        let mut seen = Vec::new();
        while let Some(c) = p.next_choice() {
            assert!(!seen.contains(&c));
            seen.push(c.clone());
            p.tried.tried.push(c);
        }
        assert_eq!(seen.len(), 6);
        assert_eq!(p.assemble(&seen[0]).unwrap(), vec![0, 0, 1, 0, 2, 0, 3, 0]);
        let mut many = parts(&dir.path().join("b"), &[4; 8]);
        let mut n = 0;
        while let Some(c) = many.next_choice() {
            many.tried.tried.push(c);
            n += 1;
        }
        assert_eq!(n, ATTEMPTS);
        assert_eq!(parts(&dir.path().join("c"), &[1, 0]).next_choice(), None);
    }

    #[test]
    fn an_assembly_uses_the_chosen_versions() {
        let dir = tempfile::tempdir().unwrap();
        let p = parts(dir.path(), &[2, 2]);
        // The previous version named an assembly by version per part: [1, 0] is the second
        // version of part 0 and the first of part 1.
        let ids = p.ids_of_versions(&[1, 0]).unwrap();
        assert_eq!(p.assemble(&ids).unwrap(), vec![0, 1, 1, 0]);
        assert_eq!(p.ids_of_versions(&[2, 0]), None);
        assert_eq!(p.missing(2), Vec::<u16>::new());
    }

    #[test]
    fn the_allowance_comes_back_over_time() {
        let mut b = Bucket::full(0);
        b.tokens = 0.0;
        b.refill(180 * 3);
        assert!((b.tokens - 3.0).abs() < 1e-9);
        b.refill(1_000_000);
        assert_eq!(b.tokens, REFUSALS_BURST);
    }
}
