//! Syncing over a serial cable, a radio modem or a TNC: an interactive exchange on top of
//! the serial transport's resumable sessions.
//!
//! # The opening: nobody says anything to a stranger
//!
//! A listener (`ferry serial listen`) says nothing that names the dataset, and sends
//! nothing but its own hello, to a station that has not proved it is a member:
//!
//! 1. The caller sends a NONCE (16 random bytes). The listener answers with its own NONCE
//!    and nothing else. (Two `ferry sync serial` stations both send their NONCE at once.)
//! 2. The caller sends its HELLO: a bundle with no commits, only its receipt (what it
//!    holds), with its member key's signature over the dataset, its member number, both
//!    nonces and the bundle's hash. The signature can be checked with the member's key
//!    alone — without the caller's latest commits, which a bundle signature needs — and
//!    binds the hello to this session, so a recorded hello cannot be played back.
//! 3. The listener checks it: the dataset, `--plaintext` on both ends, and the signature
//!    under the key of a member whose joining it verified and which is not frozen. Only
//!    then does it *admit* the caller (the transport takes its messages into the state
//!    folder), run the hello through the gate like any bundle ([`Node::import_message_with`])
//!    and answer with its own HELLO, which the caller checks the same way.
//!
//!    A caller whose key the listener does not hold yet (its joining has not reached it)
//!    but whose hello is sealed under the dataset key — so it holds the dataset key — gets
//!    the listener's HELLO and may send its bundles (each checked by the gate, which learns
//!    its key from its joining), but is sent nothing else until its signature checks; if it
//!    does by the end of the caller's bundles, it gets what it lacks in the same session.
//!    In `--plaintext`, where anyone can write a bundle without a key, such a caller is
//!    refused. Any other caller is refused: it gets a REFUSE (a reason code that does not
//!    say which check failed) and the session ends.
//!
//! Then both ends send exactly what the other lacks — first a bundle from an interrupted
//! earlier session, if it still carries something new for it (the same bytes, so the other
//! end keeps the parts it already has), then a bundle with the rest — and an END; each
//! receives and applies the other's bundles until its END, and the session closes once both
//! hold everything. An END with `more` set says "I have not sent your data yet: I could not
//! check you"; after the other end's END, that end checks again and sends its data, then a
//! final END.
//!
//! # Messages
//!
//! ```text
//! END     0x00 ‖ more(1) ‖ random(8)
//! NONCE   0x01 ‖ version(1) = 2 ‖ nonce(16)
//! HELLO   0x02 ‖ version(1) = 2 ‖ signature(64) ‖ bundle
//! REFUSE  0x03 ‖ reason(1) ‖ random(8)          reason 1: not checked as a member,
//!                                               2: plaintext not accepted here
//! bundle  starts with `F` or `P` (bundles/SPEC.md)
//!
//! signature = Ed25519 by the sender's member key over
//!     "ferry v1 serial hello" 0x00 ‖ dataset(8) ‖ sender u32le ‖ the other end's nonce(16)
//!     ‖ own nonce(16) ‖ BLAKE3(bundle)(32)
//! ```
//!
//! The transport's own opening (HELLO frames with random epochs and the MTU) and its
//! acknowledgements are all a stranger hears from a listener, besides its NONCE.
//!
//! # Limits
//!
//! A listener gives a caller twice `--timeout` from the link coming up to get through the
//! opening, whatever it sends to look alive, and ends a session once nothing moved for
//! `--timeout`; the
//! transport bounds what a stranger can make a station store or answer. A listener keeps
//! serving after any one station's failure, and when stations that never proved membership
//! took more than [`STRANGER_AIRTIME`] of airtime in the last hour, it stops answering
//! until the hour has slid below it. A bundle is kept in `transports/serial-out/` until it
//! is delivered, only for members that proved who they are, so a rerun after a cut link or
//! a crash sends the same bytes again. When the other end restarts mid-exchange, the
//! exchange starts over (up to a few times).
//!
//! Settings come from `[serial]` in `ferry.toml`; each flag overrides the key of the same
//! name.

use crate::NodeError;
use crate::exchange::{FileOutcome, FileResult};
use crate::node::Node;
use crate::progress::NoProgress as NodeNoProgress;
use crate::sms::SmsSetting as Setting;
use ferry_bundle::BundleReader;
use ferry_model::crypto::Signature;
use ferry_model::{DatasetId, MemberId, VersionVector};
use ferry_sync::Storage;
use ferry_sync::plan::{Coverage, needs_snapshot, plan_export};
pub use ferry_transport_serial::{Flow, Progress as SerialProgress, ProgressReport};
use ferry_transport_serial::{MessageHash, SerialConfig, SerialError, Session, SessionStats};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Flags for `[serial]`: key → value.
pub type SerialFlags = BTreeMap<&'static str, Setting>;

/// How many times an exchange starts over when the other end restarts during it.
const RESTARTS: usize = 5;

/// The version of the exchange below the bundles (1: both ends sent their hello first).
const VERSION: u8 = 2;
/// Message kinds: their first byte (a bundle starts with `F` or `P`).
const END: u8 = 0;
const NONCE: u8 = 1;
const HELLO: u8 = 2;
const REFUSE: u8 = 3;
/// REFUSE reasons.
const REFUSED_UNCHECKED: u8 = 1;
const REFUSED_PLAINTEXT: u8 = 2;
/// The signature context of a HELLO (distinct from every other signed message, SPEC §7).
const HELLO_CONTEXT: &[u8] = b"ferry v1 serial hello\0";

/// Airtime a listener spends on stations that never proved membership, per sliding hour,
/// before it stops answering until the hour slides below it.
pub const STRANGER_AIRTIME: Duration = Duration::from_secs(120);
/// Longest wait for a REFUSE to reach the station it refuses.
const REFUSE_GRACE: Duration = Duration::from_secs(15);
/// How long a bundle waits in `serial-out/` for its member to come back.
const KEEP_OUTGOING: Duration = Duration::from_secs(30 * 24 * 3600);

/// How old a temporary file in serial-out/ must be before a sweep takes it for a crash's
/// leftover rather than a write in progress.
const TEMP_LEFTOVER: Duration = Duration::from_secs(3600);

/// What one serial exchange did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SerialReport {
    /// The device.
    pub device: String,
    /// The other end's label, once it proved it is that member.
    pub peer: Option<String>,
    /// The member number the other end claims, when its joining has not reached this
    /// station: it could not be checked, and was sent nothing but this station's hello.
    pub unchecked: Option<u32>,
    /// The other station's callsign (KISS/AX.25), as heard.
    pub callsign: Option<String>,
    /// Why the other station was refused at the opening (nothing of it was used, nothing
    /// but this station's nonce and a refusal was sent to it).
    pub refused: Option<String>,
    /// Bundles received and what became of them (the other end's hello first).
    pub received: Vec<FileOutcome>,
    /// Bundle bytes sent (hello and end included).
    pub sent_bytes: u64,
    /// Commits sent.
    pub sent_commits: u64,
    /// Bytes of a bundle from an interrupted session that is being sent again (the other end
    /// keeps the parts it already got).
    pub resent_bundle_bytes: u64,
    /// Whether a snapshot was sent (the other end joined after history was compacted here).
    pub snapshot_sent: bool,
    /// Times the exchange started over because the other end restarted.
    pub restarts: usize,
    /// Link counters.
    pub link: LinkStats,
    /// Bundles sent signed but not encrypted (`--plaintext`).
    pub plaintext: bool,
    /// Whether the other end sent plaintext bundles (its hello tells).
    pub peer_plaintext: bool,
    /// Every message sent, over all attempts, and its size: what had to cross at least once.
    #[serde(skip)]
    sent_messages: BTreeMap<MessageHash, u64>,
    /// Whether the other end got past the opening (proved membership, or holds the dataset
    /// key and waits to be checked).
    #[serde(skip)]
    admitted: bool,
}

impl SerialReport {
    /// Starts over after the other end restarted: what this attempt sends and receives is
    /// counted anew; link counters and the messages already sent stay.
    fn restart(&mut self) {
        self.restarts += 1;
        self.received.clear();
        self.sent_bytes = 0;
        self.sent_commits = 0;
        self.snapshot_sent = false;
    }

    /// Finishes the counters: data sent again is everything sent beyond one copy of each
    /// message (losses, a cut, a restart), or the transport's own count if that is larger.
    fn settle(&mut self) {
        let once: u64 = self.sent_messages.values().sum();
        self.link.data_bytes_resent = self
            .link
            .data_bytes_resent
            .max(self.link.data_bytes_sent.saturating_sub(once));
    }
}

/// What `ferry serial listen` tells, one event per session.
#[derive(Debug)]
#[non_exhaustive]
pub enum ListenEvent<'a> {
    /// An exchange with a station ended well (also one that could not be checked yet:
    /// [`SerialReport::unchecked`]).
    Synced(&'a SerialReport),
    /// A station was refused at the opening ([`SerialReport::refused`] says why).
    Refused(&'a SerialReport),
    /// A session failed (the link, or the other station); the listener goes on.
    Failed(&'a NodeError, &'a SerialReport),
    /// Stations that never proved membership took [`STRANGER_AIRTIME`] of airtime in the
    /// last hour: the listener does not answer for this long.
    Paused(Duration),
}

/// Link counters of a session (see the serial transport's `SessionStats`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LinkStats {
    /// Frames written.
    pub frames_sent: u64,
    /// Valid frames received.
    pub frames_received: u64,
    /// Damaged frames thrown away.
    pub frames_damaged: u64,
    /// Bytes written to the device.
    pub wire_bytes_sent: u64,
    /// Message bytes sent in data frames, repeats included.
    pub data_bytes_sent: u64,
    /// Message bytes sent again (after a loss, a cut or a restart).
    pub data_bytes_resent: u64,
    /// New message bytes received.
    pub data_bytes_received: u64,
    /// Message bytes the other end already held from an earlier session.
    pub resumed_bytes: u64,
    /// Frames sent again after a timeout.
    pub retransmissions: u64,
    /// Estimated airtime of everything sent, in seconds.
    pub airtime_seconds: f64,
    /// Smoothed round trip, in milliseconds.
    pub rtt_ms: Option<u64>,
}

impl LinkStats {
    fn add(&mut self, s: &SessionStats) {
        self.frames_sent += s.frames_sent;
        self.frames_received += s.frames_received;
        self.frames_damaged += s.frames_damaged;
        self.wire_bytes_sent += s.wire_bytes_sent;
        self.data_bytes_sent += s.data_bytes_sent;
        self.data_bytes_resent += s.data_bytes_resent;
        self.data_bytes_received += s.data_bytes_received;
        self.resumed_bytes += s.resumed_bytes;
        self.retransmissions += s.retransmissions;
        self.airtime_seconds += s.airtime.as_secs_f64();
        if let Some(r) = s.rtt {
            self.rtt_ms = Some(r.as_millis() as u64);
        }
    }
}

/// A bundle on its way to one member, kept until it is delivered.
#[derive(Serialize, Deserialize)]
struct Pending {
    /// What the member holds once it has applied the bundle (at least).
    covers: VersionVector,
    /// Commits in it.
    commits: u64,
    /// Whether it is a snapshot.
    snapshot: bool,
    /// Whether it is signed but not encrypted.
    plaintext: bool,
}

/// A bundle to send and what it covers.
type Outgoing = (Vec<u8>, Pending);

/// How an exchange ended.
enum Attempt {
    Done,
    /// The other end restarted; start over.
    Restart,
    /// The exchange was refused at the opening or broken off by a station that did not
    /// follow it: by this station (`by_us`) or by the other.
    Refused {
        reason: String,
        by_us: bool,
    },
}

/// One message of the exchange, by its first byte.
#[derive(Debug, PartialEq, Eq)]
enum Msg<'a> {
    End {
        more: bool,
    },
    Nonce([u8; 16]),
    Hello {
        sig: Signature,
        bundle: &'a [u8],
    },
    Refuse(u8),
    Bundle(&'a [u8]),
    /// A NONCE or HELLO of another version of the exchange.
    Version(u8),
    /// Not a message of the exchange.
    Junk,
}

fn parse(data: &[u8]) -> Msg<'_> {
    match data {
        [END, more @ (0 | 1), _, _, _, _, _, _, _, _] => Msg::End { more: *more == 1 },
        [NONCE, VERSION, rest @ ..] => match <[u8; 16]>::try_from(rest) {
            Ok(n) => Msg::Nonce(n),
            Err(_) => Msg::Junk,
        },
        [HELLO, VERSION, rest @ ..] if rest.len() > 64 => {
            let (sig, bundle) = rest.split_at(64);
            Msg::Hello {
                sig: Signature(sig.try_into().expect("64 bytes")),
                bundle,
            }
        }
        [NONCE | HELLO, v, ..] if *v != VERSION => Msg::Version(*v),
        [REFUSE, reason, _, _, _, _, _, _, _, _] => Msg::Refuse(*reason),
        [b'F' | b'P', ..] => Msg::Bundle(data),
        _ => Msg::Junk,
    }
}

fn end_message(more: bool) -> Vec<u8> {
    let mut m = vec![END, u8::from(more)];
    m.extend_from_slice(&crate::node::random::<8>());
    m
}

fn refuse_message(reason: u8) -> Vec<u8> {
    let mut m = vec![REFUSE, reason];
    m.extend_from_slice(&crate::node::random::<8>());
    m
}

/// What a HELLO's signature covers.
fn hello_message(
    dataset: DatasetId,
    sender: MemberId,
    challenge: &[u8; 16],
    own: &[u8; 16],
    bundle: &[u8],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(HELLO_CONTEXT.len() + 76);
    m.extend_from_slice(HELLO_CONTEXT);
    m.extend_from_slice(&dataset.0);
    m.extend_from_slice(&sender.0.to_le_bytes());
    m.extend_from_slice(challenge);
    m.extend_from_slice(own);
    m.extend_from_slice(blake3::hash(bundle).as_bytes());
    m
}

/// Who the other station is, as far as its HELLO shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Peer {
    /// A member whose key this station holds signed the hello for this session.
    Member(MemberId),
    /// The hello is sealed under the dataset key and claims a member whose key this
    /// station does not hold yet: it holds the dataset key, nothing more is known.
    Unchecked(MemberId),
}

/// A station refused at the opening: why (for this station's log) and the code it is sent.
struct Refusal {
    reason: String,
    code: u8,
}

impl Refusal {
    fn unchecked(reason: impl Into<String>) -> Refusal {
        Refusal {
            reason: reason.into(),
            code: REFUSED_UNCHECKED,
        }
    }
}

/// The nonces of one opening.
struct Opening {
    ours: [u8; 16],
    theirs: [u8; 16],
}

/// Airtime spent on stations that never proved membership, over the last hour.
#[derive(Default)]
struct Strangers {
    spent: VecDeque<(Instant, Duration)>,
}

impl Strangers {
    const HOUR: Duration = Duration::from_secs(3600);

    fn add(&mut self, at: Instant, airtime: Duration) {
        self.spent.push_back((at, airtime));
    }

    /// How long to stay silent now, if the last hour's airtime exceeds the budget: until
    /// enough of it is more than an hour old.
    fn pause(&mut self, now: Instant) -> Option<Duration> {
        while self
            .spent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) >= Self::HOUR)
        {
            self.spent.pop_front();
        }
        let mut total: Duration = self.spent.iter().map(|(_, a)| *a).sum();
        if total <= STRANGER_AIRTIME {
            return None;
        }
        for (t, a) in &self.spent {
            total = total.saturating_sub(*a);
            if total <= STRANGER_AIRTIME {
                return Some((*t + Self::HOUR).saturating_duration_since(now));
            }
        }
        Some(Self::HOUR)
    }
}

impl Node {
    /// `[serial]` from `ferry.toml` with `flags` applied.
    pub fn serial_config(&self, flags: &SerialFlags) -> Result<SerialConfig, NodeError> {
        let mut table = self.config_section("serial")?.unwrap_or_default();
        for (k, v) in flags {
            table.insert((*k).to_string(), v.to_toml());
        }
        let config: SerialConfig = table.try_into().map_err(|e: toml::de::Error| {
            NodeError::Settings(format!(
                "[serial] in {}: {}",
                self.home().config().display(),
                e.message()
            ))
        })?;
        config.validate()?;
        if config.device.is_none() {
            return Err(SerialError::NoDevice.into());
        }
        Ok(config)
    }

    /// Runs one exchange with the station at the other end of the serial link, which runs
    /// `ferry sync serial` at the same time (or `ferry serial listen`): each side gets
    /// exactly what it lacks. Fails once the other end has been silent for the configured
    /// timeout; what arrived is kept and the next run resumes it. Fails too when either end
    /// refuses the other at the opening (see the module docs).
    pub fn sync_serial(
        &mut self,
        flags: &SerialFlags,
        plaintext: bool,
        progress: Arc<dyn SerialProgress>,
    ) -> Result<SerialReport, NodeError> {
        let config = self.serial_config(flags)?;
        self.sweep_serial_out()?;
        let mut report = SerialReport {
            device: device_name(&config),
            plaintext,
            ..Default::default()
        };
        for _ in 0..=RESTARTS {
            let session = Session::open_with_progress(
                &config,
                self.home().transport_state("serial"),
                progress.clone(),
            )?;
            match self.exchange(session, &config, plaintext, false, &mut report)? {
                Attempt::Done => {
                    report.settle();
                    return Ok(report);
                }
                Attempt::Restart => report.restart(),
                Attempt::Refused { reason, by_us } => {
                    return Err(NodeError::Peer(if by_us {
                        format!(
                            "refused the other station: {reason}; it was sent nothing but this station's opening"
                        )
                    } else {
                        format!("the other station refused this one: {reason}")
                    }));
                }
            }
        }
        Err(SerialError::PeerRestarted.into())
    }

    /// Serves stations that call on the serial link, one exchange after another, until
    /// `stop` says so (checked between exchanges and while idle). `tell` gets one event per
    /// session. A station's failure — a refusal, junk, a cut link, a caller that never says
    /// who it is — ends only its session; only this station's own problems (the device, the
    /// store) end the listener.
    pub fn serial_listen(
        &mut self,
        flags: &SerialFlags,
        plaintext: bool,
        progress: Arc<dyn SerialProgress>,
        stop: &dyn Fn() -> bool,
        mut tell: impl FnMut(ListenEvent<'_>),
    ) -> Result<(), NodeError> {
        let config = self.serial_config(flags)?;
        self.sweep_serial_out()?;
        let mut strangers = Strangers::default();
        while !stop() {
            if let Some(wait) = strangers.pause(Instant::now()) {
                tell(ListenEvent::Paused(wait));
                let until = Instant::now() + wait;
                while Instant::now() < until {
                    if stop() {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                continue;
            }
            let session = Session::open_listening(
                &config,
                self.home().transport_state("serial"),
                progress.clone(),
            )?;
            let mut report = SerialReport {
                device: device_name(&config),
                plaintext,
                ..Default::default()
            };
            // Idle until someone calls: a silent link is not an error here.
            let connected = loop {
                match session.wait_connected() {
                    Ok(()) => break Ok(()),
                    Err(SerialError::LinkLost { .. }) if !stop() => {}
                    Err(SerialError::LinkLost { .. }) => return Ok(()),
                    Err(e) => break Err(e),
                }
            };
            let result = match connected {
                Ok(()) => self.exchange(session, &config, plaintext, true, &mut report),
                Err(e) => {
                    report.link.add(&session.stats());
                    Err(e.into())
                }
            };
            match result {
                Ok(Attempt::Done) => {
                    report.settle();
                    tell(ListenEvent::Synced(&report));
                }
                Ok(Attempt::Restart) => {}
                Ok(Attempt::Refused { reason, by_us }) => {
                    report.refused = Some(if by_us {
                        reason
                    } else {
                        format!("it refused this station: {reason}")
                    });
                    tell(ListenEvent::Refused(&report));
                }
                Err(NodeError::Serial(e)) if station_failure(&e) => {
                    tell(ListenEvent::Failed(&NodeError::Serial(e), &report));
                }
                Err(e) => return Err(e),
            }
            if !report.admitted {
                let airtime = Duration::from_secs_f64(report.link.airtime_seconds);
                strangers.add(Instant::now(), airtime);
            }
        }
        Ok(())
    }

    /// One exchange over an open session (see the module docs). `listening`: this end was
    /// called and speaks only when spoken to.
    fn exchange(
        &mut self,
        session: Session,
        config: &SerialConfig,
        plaintext: bool,
        listening: bool,
        report: &mut SerialReport,
    ) -> Result<Attempt, NodeError> {
        macro_rules! link {
            ($e:expr) => {
                match $e {
                    Ok(v) => v,
                    Err(SerialError::PeerRestarted) => {
                        report.link.add(&session.stats());
                        return Ok(Attempt::Restart);
                    }
                    Err(e) => {
                        report.link.add(&session.stats());
                        return Err(e.into());
                    }
                }
            };
        }
        macro_rules! refuse {
            ($r:expr) => {{
                let r: Refusal = $r;
                report.callsign = session.peer_callsign();
                let _ = session.send(refuse_message(r.code));
                let _ =
                    session.flush_by(Instant::now() + REFUSE_GRACE.min(config.silence_timeout()));
                report.link.add(&session.stats());
                return Ok(Attempt::Refused {
                    reason: r.reason,
                    by_us: true,
                });
            }};
        }
        macro_rules! refused {
            ($code:expr) => {{
                report.callsign = session.peer_callsign();
                report.link.add(&session.stats());
                return Ok(Attempt::Refused {
                    reason: refused_words($code, plaintext),
                    by_us: false,
                });
            }};
        }
        macro_rules! quietly {
            ($reason:expr) => {{
                report.callsign = session.peer_callsign();
                report.link.add(&session.stats());
                return Ok(Attempt::Refused {
                    reason: $reason,
                    by_us: true,
                });
            }};
        }
        let origin = format!("serial {}", session.device());
        let ours = crate::node::random::<16>();
        let mut nonce = vec![NONCE, VERSION];
        nonce.extend_from_slice(&ours);

        // 1. The nonces. A caller speaks first; a listener answers only a NONCE.
        if !listening {
            link!(session.send(nonce.clone()));
            link!(session.wait_connected());
        }
        // A listener gives a caller twice the timeout to say who it is, whatever it sends
        // meanwhile; a caller waits as long as the other end answers (its user called).
        let deadline = listening.then(|| Instant::now() + 2 * config.silence_timeout());
        let opening_recv = |s: &Session| match deadline {
            Some(d) => s.recv_by(d),
            None => s.recv(),
        };
        let Some(first) = link!(opening_recv(&session)) else {
            quietly!("it ended the session without saying who it is".into());
        };
        let theirs = match parse(&first.data) {
            Msg::Nonce(n) => n,
            Msg::Refuse(code) => refused!(code),
            // Ferry before this version opened with its hello bundle: tell it no.
            Msg::Bundle(_) if listening => refuse!(Refusal::unchecked(
                "it sent a bundle before it was asked who it is (as ferry before this version did; update ferry there)"
            )),
            Msg::Bundle(_) => {
                return Err(NodeError::Peer(
                    "the other station runs an older version of ferry (it sent its hello before it was asked who it is); install the same version on both ends".into(),
                ));
            }
            Msg::Version(v) => quietly!(format!(
                "it speaks version {v} of the serial exchange, this station {VERSION}; install the same ferry version on both ends"
            )),
            _ => quietly!("what it sent first is not how a ferry station opens an exchange".into()),
        };
        if listening {
            link!(session.send(nonce));
        }
        let opening = Opening { ours, theirs };

        // 2. The hellos. A caller sends its own at once; a listener only to a caller it
        //    could check (or that holds the dataset key and waits to be checked).
        let hello = self.bundle_bytes(Some(&[]), plaintext)?.0;
        let hello_msg = self.hello_msg(&hello, &opening);
        let sent = |report: &mut SerialReport, hash: MessageHash, len: u64| {
            report.sent_bytes += len;
            report.sent_messages.insert(hash, len);
        };
        if !listening {
            let len = hello_msg.len() as u64;
            let hash = link!(session.send(hello_msg.clone()));
            sent(report, hash, len);
        }
        let Some(second) = link!(opening_recv(&session)) else {
            quietly!("it ended the session without saying who it is".into());
        };
        let (sig, bundle) = match parse(&second.data) {
            Msg::Hello { sig, bundle } => (sig, bundle),
            Msg::Refuse(code) => refused!(code),
            _ => refuse!(Refusal::unchecked(
                "what it sent is not a hello of this version of ferry"
            )),
        };
        let peer = match self.check_hello(bundle, &sig, &opening, plaintext) {
            Ok(p) => p,
            Err(r) => refuse!(r),
        };
        report.admitted = true;
        link!(session.admit_peer());
        report.callsign = session.peer_callsign();
        report.peer_plaintext = header_of(bundle).is_some_and(|(_, plain)| plain);
        let accept = ferry_sync::Accept { plaintext };
        let outcome =
            self.import_message_with(&mut &bundle[..], &origin, &NodeNoProgress, accept)?;
        if let FileResult::Rejected { reason, .. } = &outcome.result {
            refuse!(Refusal::unchecked(format!(
                "its hello was refused: {reason}"
            )));
        }
        report.received.push(outcome);
        // What it holds, from its hello: signed for this session by the member (or, for a
        // caller waiting to be checked, used only once it is). The engine keeps a receipt
        // only once it can check the bundle signature, which it cannot while the other end
        // has changes of its own this node lacks; for planning this one exchange, the hello
        // is enough (a false one could only make this node send too much or too little).
        let told = self.hello_receipt(bundle);
        if listening {
            let len = hello_msg.len() as u64;
            let hash = link!(session.send(hello_msg));
            sent(report, hash, len);
        }
        let mut member = match peer {
            Peer::Member(m) => Some(m),
            Peer::Unchecked(m) => {
                report.unchecked = Some(m.0);
                None
            }
        };

        // 3. What it lacks (only to a member), and an END.
        if let Some(m) = member {
            report.peer = Some(self.label_of(m)?);
            let resent = self.send_lacking(&session, m, told.clone(), plaintext, report)?;
            link!(resent);
        }
        let mut own_more = member.is_none();
        let end = end_message(own_more);
        let len = end.len() as u64;
        let hash = link!(session.send(end));
        sent(report, hash, len);

        // 4. Its bundles, until its (final) END.
        loop {
            let Some(m) = link!(session.recv()) else {
                quietly!("it ended the session before its end message".into());
            };
            match parse(&m.data) {
                Msg::Bundle(b) => {
                    let outcome =
                        self.import_message_with(&mut &b[..], &origin, &NodeNoProgress, accept)?;
                    report.received.push(outcome);
                }
                Msg::End { more } => {
                    if own_more {
                        // Its bundles may have carried its joining: check it again.
                        if let Ok(Peer::Member(m)) =
                            self.check_hello(bundle, &sig, &opening, plaintext)
                        {
                            member = Some(m);
                            report.unchecked = None;
                            report.peer = Some(self.label_of(m)?);
                            let resent =
                                self.send_lacking(&session, m, told.clone(), plaintext, report)?;
                            link!(resent);
                        }
                        own_more = false;
                        let end = end_message(false);
                        let len = end.len() as u64;
                        let hash = link!(session.send(end));
                        sent(report, hash, len);
                    }
                    if !more {
                        break;
                    }
                }
                Msg::Refuse(code) => refused!(code),
                _ => quietly!("it sent something that is not part of the exchange".into()),
            }
        }

        // 5. Both ends hold everything: done. (Its end message arrived, so it sends nothing
        // more; the transport confirms what this end sent before the session ends.)
        let so_far = session.stats();
        let stats = match session.close_after_end() {
            Ok(stats) => stats,
            Err(e) => {
                report.link.add(&so_far);
                return match e {
                    SerialError::PeerRestarted => Ok(Attempt::Restart),
                    e => Err(e.into()),
                };
            }
        };
        report.link.add(&stats);
        if let Some(m) = member {
            self.forget_delivered(m)?;
        }
        Ok(Attempt::Done)
    }

    /// Queues what member `peer` lacks on the session. The outer result is this node's
    /// (a bundle it cannot make); the inner one the link's.
    fn send_lacking(
        &mut self,
        session: &Session,
        peer: MemberId,
        told: Option<VersionVector>,
        plaintext: bool,
        report: &mut SerialReport,
    ) -> Result<Result<(), SerialError>, NodeError> {
        let (bundles, resent) = self.bundles_for(peer, told, plaintext)?;
        report.resent_bundle_bytes += resent;
        for (bytes, pending) in bundles {
            report.sent_bytes += bytes.len() as u64;
            report.sent_commits += pending.commits;
            report.snapshot_sent |= pending.snapshot;
            let len = bytes.len() as u64;
            match session.send(bytes) {
                Ok(hash) => {
                    report.sent_messages.insert(hash, len);
                }
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(()))
    }

    /// This station's HELLO for an opening: its hello bundle, signed for this session.
    fn hello_msg(&self, bundle: &[u8], o: &Opening) -> Vec<u8> {
        let id = self.identity();
        let sig = id.secret.sign(&hello_message(
            id.dataset, id.me, &o.theirs, &o.ours, bundle,
        ));
        let mut m = Vec::with_capacity(66 + bundle.len());
        m.extend_from_slice(&[HELLO, VERSION]);
        m.extend_from_slice(&sig.0);
        m.extend_from_slice(bundle);
        m
    }

    /// Checks the other station's HELLO (see the module docs): who it is, or why it is
    /// refused. Reads the store, changes nothing.
    fn check_hello(
        &mut self,
        bundle: &[u8],
        sig: &Signature,
        o: &Opening,
        plaintext: bool,
    ) -> Result<Peer, Refusal> {
        let (dataset, me) = (self.identity().dataset, self.identity().me);
        let opener = BundleReader::open(bundle)
            .map_err(|_| Refusal::unchecked("its hello is not a ferry bundle"))?;
        let header = opener.header().clone();
        if header.dataset != dataset {
            return Err(Refusal::unchecked(
                "its hello belongs to another dataset (a station of another ferry network)",
            ));
        }
        if opener.is_plaintext() && !plaintext {
            return Err(Refusal {
                reason: "it sends plaintext (unencrypted) bundles, which this station accepts only with --plaintext; add --plaintext on both ends where encryption is not allowed, or remove it from the other end".into(),
                code: REFUSED_PLAINTEXT,
            });
        }
        let m = header.sender;
        if m.0 == 0 || m == me {
            return Err(Refusal::unchecked(format!(
                "its hello claims member #{}, which it cannot be",
                m.0
            )));
        }
        let refusal =
            |e: NodeError| Refusal::unchecked(format!("this station cannot check it now: {e}"));
        let (info, frozen) = {
            let tx = self.read().map_err(refusal)?;
            let info = tx.member(m).map_err(|e| refusal(e.into()))?;
            let frozen = tx.frozen(m).map_err(|e| refusal(e.into()))?;
            (info, frozen)
        };
        if frozen.is_some() {
            return Err(Refusal::unchecked(format!(
                "it claims to be member #{}, whose history forked (a restored backup or a cloned disk): nothing more is accepted from it",
                m.0
            )));
        }
        let signed = hello_message(dataset, m, &o.ours, &o.theirs, bundle);
        match info {
            Some(info) if info.key.verify(&signed, sig) => Ok(Peer::Member(m)),
            Some(_) => Err(Refusal::unchecked(format!(
                "it claims to be member #{} but its hello is not signed by that member's key",
                m.0
            ))),
            None if opener.is_plaintext() => Err(Refusal::unchecked(format!(
                "it claims to be member #{}, whose joining has not reached this station, and in plaintext anyone can claim a member number: bring that station's joining here once by stick or email (or over a link without --plaintext)",
                m.0
            ))),
            None => {
                // Sealed: whoever wrote it holds the dataset key. Read it to the end.
                let key = self
                    .keys
                    .key(opener.header().epoch_id())
                    .cloned()
                    .unwrap_or_else(|| self.keys.current().1.clone());
                let whole = opener
                    .decrypt_with(&key, |k| self.dictionary(k))
                    .and_then(|mut r| {
                        while r.next_item()?.is_some() {}
                        r.finish()
                    });
                match whole {
                    Ok(_) => Ok(Peer::Unchecked(m)),
                    Err(_) => Err(Refusal::unchecked(
                        "its hello is not sealed with this dataset's key",
                    )),
                }
            }
        }
    }

    fn label_of(&mut self, m: MemberId) -> Result<String, NodeError> {
        Ok(self
            .labels()?
            .get(&m)
            .cloned()
            .unwrap_or_else(|| format!("member #{}", m.0)))
    }

    /// The bundles `peer` needs, each with what it covers: a kept one from an interrupted
    /// session that still carries something new for it, then one with the rest. Also the
    /// size of the kept one, if it is sent again.
    fn bundles_for(
        &mut self,
        peer: MemberId,
        told: Option<VersionVector>,
        plaintext: bool,
    ) -> Result<(Vec<Outgoing>, u64), NodeError> {
        self.train_dictionary()?;
        let (stored, mut holds) = {
            let me = self.id.me;
            let tx = self.read()?;
            (ferry_sync::sendable(&tx, me)?, tx.peer(peer)?)
        };
        if let Some(told) = told {
            holds.merge(&told);
        }
        let mut out = Vec::new();
        let mut resent = 0;
        let dir = self.home().transport_state("serial-out");
        if let Some((bytes, kept)) = read_kept(&dir, peer) {
            // A kept bundle is sent again only as it was made (plain or sealed).
            if !holds.dominates(&kept.covers) && kept.plaintext == plaintext {
                holds.merge(&kept.covers);
                resent = bytes.len() as u64;
                out.push((bytes, kept));
            }
        }
        let compacted = self.compacted()?;
        // Only the admin's snapshots are installed (SPEC §4.1): another member sends what
        // it can after its compacted history, which waits at the peer for the admin's.
        let admin = self.identity().me == MemberId::ADMIN;
        let (runs, snapshot) = if admin && needs_snapshot(std::slice::from_ref(&holds), &compacted)
        {
            (None, true)
        } else {
            let runs = plan_export(&stored, std::slice::from_ref(&holds), &[], &compacted);
            if runs.is_empty() {
                return Ok((out, resent));
            }
            (Some(runs), false)
        };
        let (bytes, snapshot_vv) = self.bundle_bytes(runs.as_deref(), plaintext)?;
        let mut covers = holds.clone();
        let mut commits = 0;
        for r in runs.iter().flatten() {
            covers.set(r.author, covers.get(r.author).max(r.last));
            commits += r.last + 1 - r.first;
        }
        if let Some(vv) = snapshot_vv {
            commits = vv.total().saturating_sub(holds.total());
            covers.merge(&vv);
        }
        let pending = Pending {
            covers,
            commits,
            snapshot,
            plaintext,
        };
        keep(&dir, peer, &bytes, &pending)?;
        out.push((bytes, pending));
        Ok((out, resent))
    }

    /// Drops the bundles kept for `peer`: it holds them now.
    fn forget_delivered(&mut self, peer: MemberId) -> Result<(), NodeError> {
        let dir = self.home().transport_state("serial-out");
        for ext in ["ferry", "meta"] {
            let path = kept_path(&dir, peer, ext);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(NodeError::io("cannot remove", &path, e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes from `serial-out/` what no member will come for: bundles for numbers that
    /// are not members here (left by earlier versions, which made one for any caller),
    /// bundles older than 30 days, and temporary files of a crashed write.
    fn sweep_serial_out(&mut self) -> Result<(), NodeError> {
        let dir = self.home().transport_state("serial-out");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let members: Vec<u32> = self.read()?.members()?.iter().map(|m| m.member.0).collect();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let member = name
                .strip_prefix("member-")
                .and_then(|r| r.split('.').next())
                .and_then(|n| n.parse::<u32>().ok());
            let age = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            // A temporary file (fsutil's hidden `.NAME….tmp`) may be another process's write
            // in progress: only one left for an hour is a crash's leftover.
            let stale = match name.ends_with(".tmp") {
                true => age.is_some_and(|a| a > TEMP_LEFTOVER),
                false => {
                    age.is_some_and(|a| a > KEEP_OUTGOING)
                        || member.is_none_or(|m| !members.contains(&m))
                }
            };
            if stale {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(())
    }

    /// The dataset's dictionary `k` (bundles/SPEC.md §18), if this station holds it.
    fn dictionary(&mut self, k: u32) -> Option<Vec<u8>> {
        let tx = self.read().ok()?;
        ferry_sync::dicts::dictionary(&tx, k)
            .ok()
            .flatten()
            .map(|(b, _)| b)
    }

    /// The receipt in a hello (its first item), if it reads.
    fn hello_receipt(&mut self, data: &[u8]) -> Option<VersionVector> {
        let opener = BundleReader::open(data).ok()?;
        let key = self.keys.key(opener.header().epoch_id())?.clone();
        let mut r = opener.decrypt_with(&key, |k| self.dictionary(k)).ok()?;
        match r.next_item() {
            Ok(Some(ferry_bundle::Item::Receipt(vv))) => Some(vv),
            _ => None,
        }
    }

    /// A bundle's bytes: one carrying `runs`, or (for `None`) a snapshot and the state it
    /// reflects.
    fn bundle_bytes(
        &mut self,
        runs: Option<&[Coverage]>,
        plaintext: bool,
    ) -> Result<(Vec<u8>, Option<VersionVector>), NodeError> {
        let (_, _, staged, snapshot) = self.write_bundle_as(runs, plaintext, &NodeNoProgress)?;
        let bytes = std::fs::read(&staged).map_err(|e| NodeError::io("cannot read", &staged, e));
        let _ = std::fs::remove_file(&staged);
        Ok((bytes?, snapshot))
    }
}

/// What the other station's REFUSE means, in words.
fn refused_words(code: u8, plaintext: bool) -> String {
    match code {
        REFUSED_PLAINTEXT => "it accepts plaintext (unencrypted) bundles only with --plaintext; remove --plaintext here, or add it there where encryption is not allowed".into(),
        REFUSED_UNCHECKED if plaintext => "it could not check that this station is a member of its dataset (another dataset; or this station's joining has not reached it yet, which over --plaintext must first go by stick or email)".into(),
        REFUSED_UNCHECKED => "it could not check that this station is a member of its dataset (another dataset, or a member it does not know)".into(),
        _ => "for a reason this version of ferry does not know; install the same version on both ends".into(),
    }
}

/// Whether a session error is the other station's doing (or the link's): the listener
/// logs it and goes on. Only a device that cannot be opened, or settings, stop it.
fn station_failure(e: &SerialError) -> bool {
    !matches!(
        e,
        SerialError::Open { .. } | SerialError::Config { .. } | SerialError::NoDevice
    )
}

impl Setting {
    fn to_toml(&self) -> toml::Value {
        match self {
            Setting::Text(t) => toml::Value::String(t.clone()),
            Setting::Number(n) => toml::Value::Integer(*n),
            Setting::Float(f) => toml::Value::Float(*f),
            Setting::Flag(b) => toml::Value::Boolean(*b),
        }
    }
}

fn device_name(config: &SerialConfig) -> String {
    config
        .device
        .as_deref()
        .map(|d| d.display().to_string())
        .unwrap_or_default()
}

/// The sender of a bundle, and whether it is a plaintext one.
fn header_of(data: &[u8]) -> Option<(MemberId, bool)> {
    BundleReader::open(data)
        .ok()
        .map(|o| (o.header().sender, o.is_plaintext()))
}

fn kept_path(dir: &Path, peer: MemberId, ext: &str) -> PathBuf {
    dir.join(format!("member-{}.{ext}", peer.0))
}

fn read_kept(dir: &Path, peer: MemberId) -> Option<(Vec<u8>, Pending)> {
    let meta = std::fs::read(kept_path(dir, peer, "meta")).ok()?;
    let pending: Pending = postcard::from_bytes(&meta).ok()?;
    let bytes = std::fs::read(kept_path(dir, peer, "ferry")).ok()?;
    Some((bytes, pending))
}

/// Keeps a bundle for `peer` until it is delivered (each file written atomically, bundle
/// before its description).
fn keep(dir: &Path, peer: MemberId, bytes: &[u8], pending: &Pending) -> Result<(), NodeError> {
    std::fs::create_dir_all(dir).map_err(|e| NodeError::io("cannot create", dir, e))?;
    let meta = postcard::to_allocvec(pending).expect("encodes");
    for (ext, data) in [("ferry", bytes), ("meta", &meta[..])] {
        let path = kept_path(dir, peer, ext);
        ferry_transport::fsutil::write_atomic(&path, data)
            .map_err(|e| NodeError::io("cannot write", &path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_by_their_first_byte_and_length() {
        let mut nonce = vec![NONCE, VERSION];
        nonce.extend_from_slice(&[7; 16]);
        assert_eq!(parse(&nonce), Msg::Nonce([7; 16]));
        assert_eq!(parse(&nonce[..17]), Msg::Junk);
        assert_eq!(parse(&[NONCE, 1, 0]), Msg::Version(1));
        assert_eq!(parse(&end_message(true)), Msg::End { more: true });
        assert_eq!(parse(&end_message(false)), Msg::End { more: false });
        // The END of version 1 (a zero and 8 random bytes) is not one of version 2.
        assert_eq!(parse(&[END, 9, 9, 9, 9, 9, 9, 9, 9]), Msg::Junk);
        assert_eq!(parse(&refuse_message(2)), Msg::Refuse(2));
        assert!(matches!(parse(b"F\x01rest"), Msg::Bundle(_)));
        assert_eq!(parse(b"21 bytes of junk!...."), Msg::Junk);
        assert_eq!(parse(&[]), Msg::Junk);
        let mut hello = vec![HELLO, VERSION];
        hello.extend_from_slice(&[1; 64]);
        assert_eq!(parse(&hello), Msg::Junk, "a hello needs a bundle");
        hello.push(b'F');
        assert!(matches!(parse(&hello), Msg::Hello { bundle: b"F", .. }));
    }

    #[test]
    fn a_hello_signature_binds_both_nonces_in_order() {
        let d = DatasetId([1; 8]);
        let a = hello_message(d, MemberId(2), &[1; 16], &[2; 16], b"bundle");
        let b = hello_message(d, MemberId(2), &[2; 16], &[1; 16], b"bundle");
        assert_ne!(a, b, "a reflected hello does not verify");
        assert!(a.starts_with(b"ferry v1 serial hello\0"));
    }

    /// Regression: a sweep at the start of one exchange removed every `.tmp` in
    /// serial-out/, also the one another process (ferry serve's radio run, a terminal's
    /// `ferry sync serial`) was writing at that moment.
    #[test]
    fn a_sweep_leaves_a_write_in_progress_and_takes_an_hour_old_leftover() {
        let dir = tempfile::tempdir().unwrap();
        let mut node =
            Node::create(&crate::Home::at(dir.path().join("hq")), "hq", "visits").unwrap();
        let out = node.home().transport_state("serial-out");
        std::fs::create_dir_all(&out).unwrap();
        let fresh = out.join(".member-2.msg.4242-1-0.tmp");
        let leftover = out.join(".member-2.msg.4241-1-0.tmp");
        let stranger = out.join("member-99.msg");
        for f in [&fresh, &leftover, &stranger] {
            std::fs::write(f, b"x").unwrap();
        }
        let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&leftover)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        node.sweep_serial_out().unwrap();
        assert!(fresh.exists(), "a write in progress is left alone");
        assert!(!leftover.exists(), "an hour-old leftover goes");
        assert!(!stranger.exists(), "a bundle for no member goes");
    }

    #[test]
    fn strangers_airtime_pauses_the_listener_until_the_hour_slides() {
        let t0 = Instant::now();
        let mut s = Strangers::default();
        s.add(t0, Duration::from_secs(70));
        assert_eq!(s.pause(t0), None);
        s.add(t0 + Duration::from_secs(600), Duration::from_secs(70));
        let now = t0 + Duration::from_secs(900);
        assert_eq!(s.pause(now), Some(Duration::from_secs(2700)));
        assert_eq!(s.pause(t0 + Duration::from_secs(3600)), None);
    }
}
