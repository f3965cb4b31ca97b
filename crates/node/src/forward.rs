//! One store-and-forward exchange over any mailbox [`Transport`] (email, SMS, and whatever
//! comes next): what to send a destination, sending it, recording it in the one ledger
//! ([`crate::ledger`]), and taking in what arrived.
//!
//! A transport only carries opaque messages ([`Transport::send`], [`Transport::list`],
//! [`Transport::open`], [`Transport::settle`]); where a message goes is set on the
//! transport before sending (the email transport's recipients, the SMS transport's number).
//! What differs between transports is described by a [`Route`]: its ledger name, who reads
//! what is sent there, how long a send counts as on its way, and whether it may carry a
//! snapshot. Everything else — planning from what the readers confirmed, the ledger's
//! on-its-way rule, writing the bundle, the size check against
//! [`Capabilities::max_message_bytes`], and the receive rule ([`disposition_of`]) — is
//! here, once, for every transport.
//!
//! Shared media (a USB stick, a shared folder) plan from the bundles found on the medium
//! instead of a ledger ([`Node::export`]); the radio runs an interactive session
//! (`serial.rs`) that asks the peer what it lacks. Both still take messages in through
//! the same gate ([`Node::import_message`]).
//!
//! [`Capabilities::max_message_bytes`]: ferry_transport::Capabilities::max_message_bytes

use crate::NodeError;
use crate::exchange::{FileOutcome, disposition_of};
use crate::ledger;
use crate::node::Node;
use crate::progress::{Progress, Unit};
use crate::time::now_ms;
use ferry_model::{MemberId, VersionVector};
use ferry_sync::Storage;
use ferry_sync::plan::{SnapshotPlan, after_snapshot, needs_snapshot, plan_export, plan_snapshot};
use ferry_transport::{Disposition, MessageId, MessageInfo, Transport};
use std::collections::BTreeSet;
use std::fs::File;

/// One member (or an unknown reader) reading what is sent to a destination.
#[derive(Clone, Debug)]
pub(crate) struct Reader {
    /// The member, when known (an SMS to a number no member published has none): what it
    /// confirmed is what the plan starts from.
    pub(crate) member: Option<MemberId>,
    /// Its entry in the ledger (a member id, a phone number).
    pub(crate) key: String,
}

/// A destination of a mailbox transport, and the rules a send there follows.
#[derive(Clone, Debug)]
pub(crate) struct Route {
    /// The transport's name in the ledger ("email", "sms").
    pub(crate) ledger: &'static str,
    /// The destination's own ledger entry (what this node held when it last sent there):
    /// nothing is sent again while nothing changed. `*` for everyone an email reaches, the
    /// number for an SMS.
    pub(crate) key: String,
    /// Who reads it: one bundle is planned for all of them.
    pub(crate) readers: Vec<Reader>,
    /// How long a send counts as on its way without the reader's confirmation.
    pub(crate) window_ms: u64,
    /// Whether a reader that needs a snapshot gets one by this route (email: yes, from the
    /// admin; SMS: no, it is far too large — [`Forwarded::NeedsSnapshot`]).
    pub(crate) snapshots: bool,
    /// Plan and write the bundle to measure it, but send nothing and record nothing.
    pub(crate) dry_run: bool,
}

/// What [`Node::forward`] did for one route.
#[derive(Debug)]
pub(crate) enum Forwarded {
    /// Nothing changed since the last send there, not even what this node holds.
    NothingNew,
    /// A reader joined after history was compacted and this route carries no snapshot.
    NeedsSnapshot,
    /// The bundle is larger than the transport carries; nothing was sent.
    TooLarge {
        /// The bundle's size.
        len: u64,
        /// The transport's limit.
        max: u64,
    },
    /// A dry run: the bundle that would be sent.
    Planned {
        /// Its size.
        len: u64,
    },
    /// Handed to the transport, in order (a snapshot first, when one was due).
    Sent(Vec<MessageInfo>),
}

/// How [`Node::take_from`] finds messages.
pub(crate) enum Listing {
    /// These, once (what a fetch just listed: listing again would fetch again).
    Once(Vec<MessageInfo>),
    /// [`Transport::list`] again after each round, until nothing new is offered (a refused
    /// assembly may be followed by another one of the same parts).
    Rounds,
}

/// Ledger entry of the last snapshot sent by a route.
const SNAPSHOT_KEY: &str = "*snapshot";

impl Node {
    /// Sends `route`'s readers what they lack, through `transport` (already addressed to
    /// them), and records it in the ledger. What was sent within the route's window and is
    /// not confirmed yet is taken as on its way and not sent again.
    pub(crate) fn forward<T: Transport + ?Sized>(
        &mut self,
        transport: &mut T,
        route: &Route,
        progress: &dyn Progress,
    ) -> Result<Forwarded, NodeError> {
        let me = self.id.me;
        let now = now_ms();
        let (stored, confirmed, last, last_route, last_snapshot) = {
            let tx = self.read()?;
            let confirmed = route
                .readers
                .iter()
                .map(|r| match r.member {
                    Some(m) => tx.peer(m),
                    None => Ok(VersionVector::new()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let last = route
                .readers
                .iter()
                .map(|r| tx.sent(route.ledger, &r.key))
                .collect::<Result<Vec<_>, _>>()?;
            (
                ferry_sync::sendable(&tx, me)?,
                confirmed,
                last,
                tx.sent(route.ledger, &route.key)?,
                tx.sent(route.ledger, SNAPSHOT_KEY)?,
            )
        };
        let compacted = self.compacted()?;
        // What each reader is taken to hold: what it confirmed, and what is on its way.
        let mut planned_for = confirmed.clone();
        for (vv, last) in planned_for.iter_mut().zip(&last) {
            if let Some((sent, _)) = ledger::on_its_way(last.as_ref(), vv, now, route.window_ms) {
                vv.merge(sent);
            }
        }
        let mut to_send: Vec<Option<Vec<ferry_sync::Coverage>>> = Vec::new();
        let mut snapshot_sent = None;
        let planned_for = if route.snapshots {
            // A snapshot only from the admin (readers ignore anyone else's), and only when
            // none sent within the window still holds everything compacted here.
            let last_snapshot =
                last_snapshot.filter(|(_, since)| now.saturating_sub(*since) < route.window_ms);
            let applied = self.read()?.applied()?;
            let SnapshotPlan { write, on_its_way } = plan_snapshot(
                me == MemberId::ADMIN,
                &planned_for,
                &compacted,
                &last_snapshot
                    .iter()
                    .map(|(state, _)| state)
                    .collect::<Vec<_>>(),
                &applied,
            );
            if write {
                to_send.push(None);
                snapshot_sent = on_its_way.clone();
            }
            after_snapshot(&planned_for, &compacted, on_its_way.as_ref())
        } else {
            if needs_snapshot(&planned_for, &compacted) {
                return Ok(Forwarded::NeedsSnapshot);
            }
            planned_for
        };
        let runs = plan_export(&stored, &planned_for, &[], &compacted);
        if !runs.is_empty() || last_route.as_ref().map(|(held, _)| held) != Some(&stored) {
            to_send.push(Some(runs));
        }
        if to_send.is_empty() {
            return Ok(Forwarded::NothingNew);
        }
        let caps = transport.capabilities();
        // A bundle for one member carries the key grant only if that member lacks it.
        let only = match route.readers.as_slice() {
            [one] => one.member,
            _ => None,
        };
        let mut sent = Vec::new();
        for kind in to_send {
            progress.begin(
                &format!("writing the bundle for {}", caps.name),
                None,
                Unit::Bytes,
            );
            let written = self.write_bundle_to(kind.as_deref(), only, progress);
            progress.end();
            let (name, len, staged, _) = written?;
            if let Some(max) = caps.max_message_bytes.filter(|max| len > *max) {
                return Ok(Forwarded::TooLarge { len, max });
            }
            if route.dry_run {
                return Ok(Forwarded::Planned { len });
            }
            let path = staged.path().to_path_buf();
            let mut f = File::open(&path).map_err(|e| NodeError::io("cannot open", &path, e))?;
            sent.push(transport.send(&name, &mut f, len)?);
        }
        let tx = self.store.transaction(now_ms())?;
        tx.set_sent(route.ledger, &route.key, &stored, 0)?;
        for ((reader, confirmed), last) in route.readers.iter().zip(&confirmed).zip(&last) {
            // Since when sends to it have gone unconfirmed (kept across sends, so a member
            // that never confirms gets everything again once per window).
            let since = ledger::since_after_send(last.as_ref(), confirmed, now, route.window_ms);
            tx.set_sent(route.ledger, &reader.key, &stored, since)?;
        }
        if let Some(state) = &snapshot_sent {
            tx.set_sent(route.ledger, SNAPSHOT_KEY, state, now)?;
        }
        tx.commit()?;
        Ok(Forwarded::Sent(sent))
    }

    /// Takes in what `transport` offers, each message by [`Node::take_message`] (the one
    /// gate, and the one rule for what the transport is told). `origin` words where a
    /// message came from; `between` runs after a round that applied something (the SMS
    /// transport learns members' new numbers from it). A message left for later
    /// ([`Disposition::Retry`]) is not taken again in this run.
    pub(crate) fn take_from<T: Transport>(
        &mut self,
        transport: &mut T,
        listing: Listing,
        origin: &mut dyn FnMut(&mut T, &MessageInfo) -> Result<String, NodeError>,
        between: &mut dyn FnMut(&mut Node, &mut T) -> Result<(), NodeError>,
        progress: &dyn Progress,
    ) -> Result<Vec<FileOutcome>, NodeError> {
        let mut out = Vec::new();
        let mut later: BTreeSet<MessageId> = BTreeSet::new();
        let (mut next, rounds) = match listing {
            Listing::Once(listed) => (Some(listed), 1),
            // A refusal may offer another assembly, at most 16 per message, so this ends.
            Listing::Rounds => (None, 64),
        };
        for _ in 0..rounds {
            let listed: Vec<MessageInfo> = match next.take() {
                Some(l) => l,
                None => transport.list()?,
            }
            .into_iter()
            .filter(|i| !later.contains(&i.id))
            .collect();
            if listed.is_empty() {
                break;
            }
            let mut applied = false;
            for info in listed {
                let from = origin(transport, &info)?;
                let Some(outcome) = self.take_message(transport, &info, &from, progress)? else {
                    // Settled meanwhile by another process.
                    continue;
                };
                if matches!(disposition_of(&outcome.result), Disposition::Retry { .. }) {
                    later.insert(info.id.clone());
                }
                applied |= matches!(outcome.result, crate::exchange::FileResult::Applied { .. });
                out.push(outcome);
            }
            if applied {
                between(self, transport)?;
            }
        }
        Ok(out)
    }
}
