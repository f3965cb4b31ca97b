//! Syncing by SMS: one compact bundle per member with a phone number, holding exactly what
//! that member lacks, through an SMS gateway (Kannel-style HTTP, Gammu's spool folders, or a
//! generic HTTP gateway).
//!
//! Settings come from `[sms]` in `ferry.toml`; each flag overrides the key of the same name.

use crate::NodeError;
use crate::exchange::{FileOutcome, FileResult, ImportReport};
use crate::forward::{Forwarded, Listing, Reader, Route};
use crate::node::Node;
use crate::progress::Progress;
use crate::time::now_ms;
use ferry_model::MemberId;
use ferry_store::QuarantineRow;
use ferry_sync::Storage;
use ferry_transport_sms::{
    Accepted, Event, Listening, Peer, Phone, ReportKind, SmsConfig, SmsTransport,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What `send sms` did (or, for a dry run, would do) for one member.
#[derive(Clone, Debug, Serialize)]
pub struct SmsPeerSend {
    /// The member's label.
    pub label: String,
    /// Its number.
    pub phone: String,
    /// Bundle bytes (0 when there was nothing new).
    pub bytes: u64,
    /// SMS the bundle takes.
    pub messages: usize,
    /// SMS sent now.
    pub sent_now: usize,
    /// SMS waiting for tomorrow's budget or for the gateway.
    pub queued: usize,
    /// Why nothing was sent, if so.
    pub note: Option<String>,
}

/// What `send sms` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SmsSendReport {
    /// SMS from earlier that went out now.
    pub flushed: usize,
    /// One entry per member.
    pub peers: Vec<SmsPeerSend>,
    /// Whether this was a dry run (nothing sent).
    pub dry_run: bool,
}

/// What `receive sms` (or one round of `sms listen`) did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SmsReceiveReport {
    /// Bundles applied (or refused).
    pub import: ImportReport,
    /// SMS parts stored, waiting for the rest of their bundle.
    pub parts: usize,
    /// Requests for missing parts sent.
    pub repairs: usize,
    /// Things to tell the user (SMS refused, bundles given up), one line each.
    pub notes: Vec<String>,
}

/// An SMS flag value for `[sms]` (overrides the key of the same name).
#[derive(Clone, Debug)]
pub enum SmsSetting {
    /// A text setting.
    Text(String),
    /// A whole number.
    Number(i64),
    /// A number with a fraction.
    Float(f64),
    /// A yes/no.
    Flag(bool),
}

/// SMS counters for one member (or number), shown by `status`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SmsCounters {
    /// The member's label, or the number when no member published it.
    pub peer: String,
    /// SMS sent to it today.
    pub sent_today: u32,
    /// The daily budget.
    pub daily_budget: u32,
    /// SMS waiting to be sent (over the budget, or the gateway failed).
    pub queued: usize,
    /// Bundles from it still waiting for missing SMS.
    pub incomplete: usize,
    /// Whether this line stands for every number that is no member's together (then
    /// `incomplete` is theirs, and `dropped` what was dropped to stay within bounds).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub strangers: bool,
    /// Strangers' incomplete bundles dropped so far to stay within bounds (strangers'
    /// line only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
}

/// Flags for `[sms]`: key → value.
pub type SmsFlags = BTreeMap<&'static str, SmsSetting>;

/// How long what was sent by SMS is taken as on its way to the member before it is sent
/// again, unless the member's receipt shows it arrived: one day.
const SMS_ASSUME_DELIVERED_MS: u64 = 24 * 3_600_000;

/// This transport's name in the ledger of sends ([`crate::ledger`]).
const LEDGER: &str = "sms";

impl Node {
    /// The SMS transport from `[sms]` in `ferry.toml` with `flags` applied, knowing every
    /// member's published phone number.
    pub fn sms_transport(&mut self, flags: &SmsFlags) -> Result<SmsTransport, NodeError> {
        let config = self.sms_config(flags)?;
        let mut t = SmsTransport::open(config, self.home().transport_state("sms"))?;
        t.set_peers(
            self.sms_peers()?
                .into_iter()
                .map(|(_, label, p)| Peer::new(p, label)),
        );
        Ok(t)
    }

    /// `[sms]` from `ferry.toml` with `flags` applied.
    fn sms_config(&mut self, flags: &SmsFlags) -> Result<SmsConfig, NodeError> {
        let mut table = self.config_section("sms")?.unwrap_or_default();
        for (k, v) in flags {
            let value = match v {
                SmsSetting::Text(t) => toml::Value::String(t.clone()),
                SmsSetting::Number(n) => toml::Value::Integer(*n),
                SmsSetting::Float(f) => toml::Value::Float(*f),
                SmsSetting::Flag(b) => toml::Value::Boolean(*b),
            };
            table.insert((*k).to_string(), value);
        }
        // Bundles are signed and checked, so an SMS from a number ferry has not learned yet
        // (a member whose number travels in that very bundle) is taken, unless the settings
        // say otherwise.
        if !table.contains_key("accept_unknown") {
            table.insert("accept_unknown".into(), toml::Value::Boolean(true));
        }
        if !table.contains_key("gateway") || !table.contains_key("from") {
            return Err(NodeError::Settings(format!(
                "SMS is not set up: add [sms] with gateway and from to {} (see README, \"By SMS\"), or give --gateway and --from",
                self.home().config().display()
            )));
        }
        let config: SmsConfig = table.try_into().map_err(|e: toml::de::Error| {
            NodeError::Settings(format!(
                "[sms] in {}: {}",
                self.home().config().display(),
                e.message()
            ))
        })?;
        Ok(config)
    }

    /// Every other member with a published phone number: (member, label, number).
    fn sms_peers(&mut self) -> Result<Vec<(MemberId, String, Phone)>, NodeError> {
        let me = self.identity().me;
        let labels = self.labels()?;
        let mut out = Vec::new();
        for (m, c) in self.contacts()? {
            if m == me {
                continue;
            }
            if let Some(p) = c.phone.as_deref().and_then(|p| Phone::parse(p).ok()) {
                out.push((
                    m,
                    labels.get(&m).cloned().unwrap_or_else(|| m.to_string()),
                    p,
                ));
            }
        }
        Ok(out)
    }

    /// Sends each member with a phone number (or the `to` numbers) exactly what it lacks, in
    /// one bundle as small as the format allows, within each member's daily budget. With
    /// `dry_run`, says how many SMS that would take and sends nothing.
    pub fn send_sms(
        &mut self,
        flags: &SmsFlags,
        to: &[String],
        dry_run: bool,
        progress: &dyn Progress,
    ) -> Result<SmsSendReport, NodeError> {
        let mut transport = self.sms_transport(flags)?;
        let mut report = SmsSendReport {
            dry_run,
            ..Default::default()
        };
        if !dry_run {
            report.flushed = transport.flush_queue()?.sent;
            self.train_dictionary()?;
        }
        let known = self.sms_peers()?;
        let targets: Vec<(Option<MemberId>, String, Phone)> = if to.is_empty() {
            known
                .iter()
                .map(|(m, l, p)| (Some(*m), l.clone(), p.clone()))
                .collect()
        } else {
            let mut out = Vec::new();
            for t in to {
                let p = Phone::parse(t)?;
                let member = known.iter().find(|(_, _, q)| *q == p);
                out.push((
                    member.map(|(m, _, _)| *m),
                    member.map_or_else(|| t.clone(), |(_, l, _)| l.clone()),
                    p,
                ));
            }
            out
        };
        if targets.is_empty() {
            return Err(NodeError::NoRecipient(
                "no member has published a phone number yet (`ferry contact set --phone` on their laptops); give --to +NUMBER".into(),
            ));
        }
        for (member, label, phone) in targets {
            let mut entry = SmsPeerSend {
                label,
                phone: phone.to_string(),
                bytes: 0,
                messages: 0,
                sent_now: 0,
                queued: 0,
                note: None,
            };
            // What was sent to this number in the last day is taken as on its way (the
            // receiver asks for lost parts by itself), so sending twice does not pay twice.
            // Once a day has passed without the member's receipt covering it, it is sent
            // again: a bundle whose every SMS was lost is not repaired by the receiver.
            let route = Route {
                ledger: LEDGER,
                key: phone.to_string(),
                readers: vec![Reader {
                    member,
                    key: phone.to_string(),
                }],
                window_ms: SMS_ASSUME_DELIVERED_MS,
                snapshots: false,
                dry_run,
            };
            transport.set_recipient(Some(phone.clone()));
            match self.forward(&mut transport, &route, progress)? {
                Forwarded::NeedsSnapshot => {
                    entry.note = Some(
                        "it joined after history was compacted and needs a snapshot: sync it by USB stick or email once".into(),
                    );
                }
                Forwarded::NothingNew => entry.note = Some("nothing new for it".into()),
                Forwarded::TooLarge { len, max } => {
                    entry.bytes = len;
                    entry.note = Some(format!(
                        "{len} bytes to send is more than SMS can carry ({max} bytes); sync it by USB stick or email"
                    ));
                }
                Forwarded::Planned { len } => {
                    entry.bytes = len;
                    entry.messages = transport.messages_for(len)?;
                    let d = transport.dry_run(&phone, len)?;
                    entry.sent_now = d.send_today;
                    entry.queued = d.queued;
                }
                Forwarded::Sent(sent) => {
                    entry.bytes = sent.iter().filter_map(|i| i.len).sum();
                    for r in transport.take_sent() {
                        entry.messages += r.parts;
                        entry.sent_now += r.sent_now;
                        entry.queued += r.queued;
                    }
                }
            }
            report.peers.push(entry);
        }
        transport.set_recipient(None);
        Ok(report)
    }

    /// Applies every complete bundle the transport offers: each goes through the same
    /// gate as a file from a stick ([`Node::import_message`]); a refused one is settled as
    /// such, so the transport never offers it again and offers the next assembly of its
    /// parts instead, if there is one (a forged part may have taken a real one's place).
    /// Learns members' new numbers from what was applied.
    fn apply_sms(
        &mut self,
        transport: &mut SmsTransport,
        report: &mut SmsReceiveReport,
        progress: &dyn Progress,
    ) -> Result<(), NodeError> {
        let mut origin = |t: &mut SmsTransport, info: &ferry_transport::MessageInfo| {
            let phone = t.sender_of(&info.id)?;
            let member = t.from_member(&info.id)?;
            Ok(match &phone {
                Some(p) if member => format!("SMS from {p}"),
                Some(p) => format!("SMS from {p} (not a member's number)"),
                None => "SMS".to_string(),
            })
        };
        let files = self.take_from(
            transport,
            Listing::Rounds,
            &mut origin,
            &mut |node: &mut Node, t: &mut SmsTransport| node.refresh_sms_peers(t),
            progress,
        )?;
        report.import.files.extend(files);
        let tx = self.read()?;
        report.import.pending = tx.stored()?.total().saturating_sub(tx.applied()?.total());
        Ok(())
    }

    /// Tells the transport every member's published number (they may have changed with
    /// what was just applied).
    fn refresh_sms_peers(&mut self, transport: &mut SmsTransport) -> Result<(), NodeError> {
        transport.set_peers(
            self.sms_peers()?
                .into_iter()
                .map(|(_, label, p)| Peer::new(p, label)),
        );
        Ok(())
    }

    /// What the transport has to tell (bundles given up, repair requests it could not
    /// answer), in words, one note each; given-up bundles are also recorded with the
    /// refused input, so `ferry status` shows them.
    fn sms_reports(
        &mut self,
        transport: &mut SmsTransport,
        report: &mut SmsReceiveReport,
    ) -> Result<(), NodeError> {
        for r in transport.reports()? {
            let line = r.to_string();
            if let ReportKind::GaveUp { kept_at, .. } = &r.kind {
                let tx = self.store.transaction(now_ms())?;
                tx.add_quarantine(&QuarantineRow {
                    at_ms: now_ms(),
                    source: "SMS".into(),
                    stored_as: kept_at.display().to_string(),
                    reason: line.clone(),
                    name: String::new(),
                    bytes: 0,
                })?;
                tx.commit()?;
            }
            transport.dismiss_report(&r.id)?;
            report.notes.push(line);
        }
        Ok(())
    }

    /// Applies what is complete, asks members for missing parts, expires what waited too
    /// long, and reports.
    fn take_sms(
        &mut self,
        transport: &mut SmsTransport,
        report: &mut SmsReceiveReport,
        progress: &dyn Progress,
    ) -> Result<(), NodeError> {
        self.apply_sms(transport, report, progress)?;
        report.repairs += transport.request_missing()?.len();
        transport.expire()?;
        // Held messages may have been offered.
        self.apply_sms(transport, report, progress)?;
        self.sms_reports(transport, report)
    }

    /// Reads incoming SMS from a spool gateway (Gammu's inbox folder) and applies what is
    /// complete.
    pub fn receive_sms(
        &mut self,
        flags: &SmsFlags,
        progress: &dyn Progress,
    ) -> Result<SmsReceiveReport, NodeError> {
        let mut transport = self.sms_transport(flags)?;
        if let Some(why) = listen_only(transport.config()) {
            return Err(NodeError::Settings(why));
        }
        let mut report = SmsReceiveReport::default();
        let mut quiet = Quiet::default();
        for a in transport.receive_spool()? {
            if matches!(a, Accepted::Part { .. }) {
                report.parts += 1;
            }
            if let Some(line) = stranger_line(&a) {
                if let Some(line) = quiet.admit(line) {
                    report.notes.push(line);
                }
            }
        }
        self.take_sms(&mut transport, &mut report, progress)?;
        report.notes.extend(quiet.summary());
        Ok(report)
    }

    /// Why `ferry receive sms` cannot work with these settings (a gateway that delivers
    /// incoming SMS only to `ferry sms listen`), or `None` when it reads a spool folder.
    pub fn sms_receive_impossible(
        &mut self,
        flags: &SmsFlags,
    ) -> Result<Option<String>, NodeError> {
        Ok(listen_only(self.sms_transport(flags)?.config()))
    }

    /// Serves an HTTP gateway (Kannel and the like) until stopped: each incoming SMS is
    /// taken before it is acknowledged (members' numbers first), complete bundles go
    /// through the gate at once, members are asked for missing parts and queued SMS are
    /// sent. The listener follows the listener policy (loopback by default; beyond it
    /// only with `listen_token_env` and `tls_cert`/`tls_key`). `ready` gets where it
    /// listens and a stopper; `tell` gets one line per thing that happened (strings from
    /// SMS cut short; the caller escapes them). Lines about what strangers sent are at
    /// most ten a minute, then counted.
    pub fn sms_listen(
        &mut self,
        flags: &SmsFlags,
        bind: Option<&str>,
        ready: impl FnOnce(&Listening),
        mut tell: impl FnMut(String),
        progress: &dyn Progress,
    ) -> Result<(), NodeError> {
        let mut transport = self.sms_transport(flags)?;
        let mut failure: Option<NodeError> = None;
        let mut quiet = Quiet::default();
        ferry_transport_sms::listen(&mut transport, bind, ready, |t, event| {
            let mut report = SmsReceiveReport::default();
            let mut step = |node: &mut Node, report: &mut SmsReceiveReport, housekeeping: bool| {
                // Each round also learns numbers published meanwhile by any route (a stick
                // synced by another `ferry` process, say).
                let r = node.apply_sms(t, report, progress).and_then(|()| {
                    if housekeeping {
                        node.refresh_sms_peers(t)?;
                        node.sms_reports(t, report)
                    } else {
                        Ok(())
                    }
                });
                if let Err(e) = r {
                    tell(format!("error: {e}"));
                    failure = Some(e);
                }
            };
            match &event {
                Event::Received(Accepted::Completed { .. }) => step(self, &mut report, false),
                Event::Received(a @ (Accepted::Refused(_) | Accepted::Ignored { .. })) => {
                    if let Some(line) = stranger_line(a).and_then(|l| quiet.admit(l)) {
                        report.notes.push(line);
                    }
                }
                Event::Received(Accepted::RepairRequested {
                    from,
                    resend,
                    gone,
                    declined,
                }) if resend + gone + declined > 0 => {
                    report.notes.push(format!(
                        "repair   {from} asked for SMS parts again: {resend} sent again{}{}",
                        if *gone > 0 {
                            format!(", told it {gone} message(s) are no longer kept")
                        } else {
                            String::new()
                        },
                        if *declined > 0 {
                            format!(
                                ", {declined} not sent (asked too often, or its share of today's budget for repairs is spent)"
                            )
                        } else {
                            String::new()
                        }
                    ));
                }
                Event::Repairs(requests) => {
                    let parts: usize = requests.iter().map(|r| r.missing.len()).sum();
                    let mut to: Vec<String> = requests.iter().map(|r| r.to.to_string()).collect();
                    to.dedup();
                    report.notes.push(format!(
                        "asked    {} for {parts} missing SMS part(s) of {} bundle(s)",
                        to.join(", "),
                        requests.len()
                    ));
                }
                Event::Dropped(n) => report.notes.push(format!(
                    "dropped  {n} SMS from numbers that are no member's, unread: they came faster than listen_rate allows, or too many were waiting"
                )),
                Event::Housekept => {
                    step(self, &mut report, true);
                    report.notes.extend(quiet.summary());
                }
                Event::Failed(e) => tell(format!("error: {e}")),
                _ => {}
            }
            for f in &report.import.files {
                tell(sms_bundle_line(f));
            }
            for n in report.notes {
                tell(n);
            }
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// SMS sent and queued per member, for `status`: (label, sent today, budget, queued,
    /// incomplete).
    pub fn sms_counters(&mut self) -> Result<Vec<SmsCounters>, NodeError> {
        if !self.home().transport_state("sms").exists() || self.config_section("sms")?.is_none() {
            return Ok(Vec::new());
        }
        // Counting needs no gateway, so no password either.
        let config = self.sms_config(&SmsFlags::new())?;
        let mut transport =
            SmsTransport::open_with_password(config, self.home().transport_state("sms"), None)?;
        transport.set_peers(
            self.sms_peers()?
                .into_iter()
                .map(|(_, label, p)| Peer::new(p, label)),
        );
        let mut out: Vec<SmsCounters> = transport
            .counters()?
            .into_iter()
            .map(|c| SmsCounters {
                peer: c.label.unwrap_or_else(|| c.phone.to_string()),
                sent_today: c.sent_today,
                daily_budget: c.daily_budget,
                queued: c.queued,
                incomplete: c.incomplete,
                strangers: false,
                dropped: None,
            })
            .collect();
        let s = transport.strangers()?;
        if s.incomplete > 0 || s.dropped_messages > 0 {
            out.push(SmsCounters {
                peer: "numbers that are no member's".into(),
                sent_today: 0,
                daily_budget: 0,
                queued: 0,
                incomplete: s.incomplete,
                strangers: true,
                dropped: Some(s.dropped_messages),
            });
        }
        Ok(out)
    }
}

/// Why these settings cannot receive from a spool folder: Kannel and HTTP gateways deliver
/// incoming SMS to `ferry sms listen` only.
fn listen_only(config: &ferry_transport_sms::SmsConfig) -> Option<String> {
    use ferry_transport_sms::GatewayKind;
    let name = match config.gateway {
        GatewayKind::Gammu => return None,
        GatewayKind::Kannel => "kannel",
        GatewayKind::Http => "http",
    };
    config.inbox.is_none().then(|| {
        format!(
            "with gateway = \"{name}\", incoming SMS reach ferry while `ferry sms listen` runs (the gateway calls it); `ferry receive sms` reads Gammu's inbox folder"
        )
    })
}

/// The line `sms listen` prints for one bundle that came by SMS: what the gate decided, in
/// words. A bundle is attributed to a member only when applied (its signature says who
/// wrote it); otherwise only the number it came from is named, which anyone can forge.
fn sms_bundle_line(f: &FileOutcome) -> String {
    let from = f.path.display().to_string();
    match &f.result {
        FileResult::Applied {
            sender,
            new,
            records,
            waiting,
            warnings,
            ..
        } => {
            let mut line = format!(
                "applied  a bundle from {sender} by {from}: {} B, {records} record{} changed, {new} new change{}",
                f.bytes,
                if *records == 1 { "" } else { "s" },
                if *new == 1 { "" } else { "s" }
            );
            if *waiting > 0 {
                line += &format!(", {waiting} waiting for earlier changes");
            }
            for w in warnings {
                line += &format!("; NOTE {w}");
            }
            line
        }
        FileResult::AlreadyApplied => {
            format!("skipped  a bundle by {from}: this laptop already has it")
        }
        FileResult::Rejected { reason, .. } | FileResult::RefusedBefore { reason, .. } => {
            format!("REFUSED  a bundle by {from}: {reason}")
        }
        FileResult::Waiting { reason, .. } => format!(
            "waiting  a bundle by {from} cannot be checked yet ({reason}); nothing from it is used until it can"
        ),
        FileResult::Skipped { reason } => format!("skipped  a bundle by {from}: {reason}"),
    }
}

/// The line for an SMS a stranger (or a damaged SMS) caused, if any.
fn stranger_line(a: &Accepted) -> Option<String> {
    match a {
        Accepted::Refused(r) if r.unknown_sender => Some(format!(
            "set aside an SMS from {}, which is no member's number",
            r.from
        )),
        Accepted::Refused(r) => Some(format!(
            "set aside an SMS from {}: not a ferry SMS ({})",
            r.from, r.reason
        )),
        Accepted::Ignored { from, reason } => Some(format!("ignored  {reason} (from {from})")),
        _ => None,
    }
}

/// At most ten lines a minute about what strangers sent; the rest are counted.
#[derive(Default)]
struct Quiet {
    since: Option<Instant>,
    shown: usize,
    held_back: usize,
}

impl Quiet {
    const PER_MINUTE: usize = 10;

    fn admit(&mut self, line: String) -> Option<String> {
        let now = Instant::now();
        if self
            .since
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.since = Some(now);
            self.shown = 0;
        }
        if self.shown < Self::PER_MINUTE {
            self.shown += 1;
            Some(line)
        } else {
            self.held_back += 1;
            None
        }
    }

    fn summary(&mut self) -> Option<String> {
        (self.held_back > 0).then(|| {
            let n = std::mem::take(&mut self.held_back);
            format!(
                "set aside {n} more SMS that were not ferry's or came from numbers that are no member's (not shown one by one; each is noted in the SMS state folder's quarantine/refused.jsonl)"
            )
        })
    }
}
