//! Syncing over a serial cable, a radio modem or a TNC: an interactive exchange on top of
//! the serial transport's resumable sessions.
//!
//! Both ends do the same, at the same time:
//!
//! 1. send a *hello*: a bundle with no commits, only this node's receipt (what it holds);
//! 2. receive the other end's hello and apply it, which records what that member holds;
//! 3. send exactly what it lacks — first a bundle from an interrupted earlier session, if
//!    it still carries something new for it (the same bytes, so the other end keeps the
//!    parts it already has), then a bundle with the rest — and then an *end* message;
//! 4. receive and apply the other end's bundles until its end message;
//! 5. close the session, which waits until both ends hold everything.
//!
//! Every message is a whole bundle except the end message: a zero byte and 8 random bytes
//! (bundles start with `F` or `P`). A bundle is kept in `transports/serial-out/` until it is
//! delivered, so a rerun after a cut link or a crash sends the same bytes again. When the
//! other end restarts mid-exchange, the exchange starts over (up to a few times).
//!
//! Settings come from `[serial]` in `ferry.toml`; each flag overrides the key of the same
//! name.

use crate::NodeError;
use crate::exchange::{FileOutcome, FileResult};
use crate::node::Node;
use crate::progress::NoProgress as NodeNoProgress;
use crate::sms::SmsSetting as Setting;
use ferry_bundle::BundleReader;
use ferry_model::{MemberId, VersionVector};
use ferry_sync::Storage;
use ferry_sync::plan::{Coverage, needs_snapshot, plan_export};
pub use ferry_transport_serial::{Flow, Progress as SerialProgress, ProgressReport};
use ferry_transport_serial::{MessageHash, SerialConfig, SerialError, Session, SessionStats};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Flags for `[serial]`: key → value.
pub type SerialFlags = BTreeMap<&'static str, Setting>;

/// How many times an exchange starts over when the other end restarts during it.
const RESTARTS: usize = 5;

/// The end message's first byte (a bundle starts with `F` or `P`).
const END: u8 = 0;

/// What one serial exchange did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SerialReport {
    /// The device.
    pub device: String,
    /// The other end's label.
    pub peer: Option<String>,
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
}

impl Node {
    /// `[serial]` from `ferry.toml` with `flags` applied.
    pub fn serial_config(&self, flags: &SerialFlags) -> Result<SerialConfig, NodeError> {
        let mut table = self.config_section("serial")?.unwrap_or_default();
        for (k, v) in flags {
            table.insert((*k).to_string(), v.to_toml());
        }
        let config: SerialConfig = table.try_into().map_err(|e: toml::de::Error| {
            NodeError::Input(format!(
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
    /// timeout; what arrived is kept and the next run resumes it.
    pub fn sync_serial(
        &mut self,
        flags: &SerialFlags,
        plaintext: bool,
        progress: Arc<dyn SerialProgress>,
    ) -> Result<SerialReport, NodeError> {
        let config = self.serial_config(flags)?;
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
            match self.exchange(session, plaintext, &mut report)? {
                Attempt::Done => {
                    report.settle();
                    return Ok(report);
                }
                Attempt::Restart => report.restart(),
            }
        }
        Err(SerialError::PeerRestarted.into())
    }

    /// Serves stations that call on the serial link, one exchange after another, until
    /// `stop` says so (checked between exchanges and while idle). `tell` gets one line per
    /// exchange.
    pub fn serial_listen(
        &mut self,
        flags: &SerialFlags,
        plaintext: bool,
        progress: Arc<dyn SerialProgress>,
        stop: &dyn Fn() -> bool,
        mut tell: impl FnMut(Result<&SerialReport, &NodeError>),
    ) -> Result<(), NodeError> {
        let config = self.serial_config(flags)?;
        while !stop() {
            let session = Session::open_listening(
                &config,
                self.home().transport_state("serial"),
                progress.clone(),
            )?;
            // Idle until someone calls: a silent link is not an error here.
            let mut waiting = true;
            while waiting {
                match session.wait_connected() {
                    Ok(()) => waiting = false,
                    Err(SerialError::LinkLost { .. }) if !stop() => {}
                    Err(SerialError::LinkLost { .. }) => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
            }
            let mut report = SerialReport {
                device: device_name(&config),
                plaintext,
                ..Default::default()
            };
            match self.exchange(session, plaintext, &mut report) {
                Ok(Attempt::Done) => {
                    report.settle();
                    tell(Ok(&report));
                }
                Ok(Attempt::Restart) => {}
                // A caller that went away is its problem; keep serving.
                Err(e @ NodeError::Serial(_)) => tell(Err(&e)),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One exchange over an open session (steps 1–5 of the module docs).
    fn exchange(
        &mut self,
        session: Session,
        plaintext: bool,
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
        let origin = format!("serial {}", session.device());
        // 1. Hello.
        let hello = self.bundle_bytes(Some(&[]), plaintext)?.0;
        report.sent_bytes += hello.len() as u64;
        let len = hello.len() as u64;
        let hash = link!(session.send(hello));
        report.sent_messages.insert(hash, len);
        // 2. The other end's hello.
        let Some(first) = link!(session.recv()) else {
            return Err(NodeError::Input(
                "the other station ended the session without saying who it is".into(),
            ));
        };
        let (peer, peer_plaintext) = header_of(&first.data).ok_or_else(|| {
            NodeError::Input(
                "the other station sent something that is not a ferry bundle; is it running ferry of the same version?".into(),
            )
        })?;
        report.peer_plaintext = peer_plaintext;
        // What it holds, from its hello: the engine keeps a receipt only once it can check
        // the signature, which it cannot while the other end has changes of its own this
        // node lacks. For planning this one exchange the hello's receipt is enough (it came
        // sealed under the dataset key, or signed): a false one could only make this node
        // send too much or too little, never change data.
        let told = self.hello_receipt(&first.data);
        // Plaintext bundles are accepted only when this station's user said --plaintext.
        let accept = ferry_sync::Accept { plaintext };
        if peer_plaintext && !plaintext {
            return Err(NodeError::Input(
                "the other station sends plaintext (unencrypted) bundles, which this station accepts only with --plaintext; add --plaintext on both ends where encryption is not allowed, or remove it from the other end".into(),
            ));
        }
        let outcome =
            self.import_message_with(&mut &first.data[..], &origin, &NodeNoProgress, accept)?;
        if let FileResult::Rejected { reason, .. } = &outcome.result {
            return Err(NodeError::Input(format!(
                "the other station's hello was refused: {reason}"
            )));
        }
        report.peer = Some(
            self.labels()?
                .get(&peer)
                .cloned()
                .unwrap_or_else(|| format!("member #{}", peer.0)),
        );
        report.received.push(outcome);
        // 3. What it lacks.
        let (bundles, resent) = self.bundles_for(peer, told, plaintext)?;
        report.resent_bundle_bytes += resent;
        for (bytes, pending) in bundles {
            report.sent_bytes += bytes.len() as u64;
            report.sent_commits += pending.commits;
            report.snapshot_sent |= pending.snapshot;
            let len = bytes.len() as u64;
            let hash = link!(session.send(bytes));
            report.sent_messages.insert(hash, len);
        }
        let mut end = vec![END];
        end.extend_from_slice(&crate::node::random::<8>());
        report.sent_bytes += end.len() as u64;
        let len = end.len() as u64;
        let hash = link!(session.send(end));
        report.sent_messages.insert(hash, len);
        // 4. Its bundles, until its end message.
        while let Some(m) = link!(session.recv()) {
            if m.data.first() == Some(&END) {
                break;
            }
            let outcome =
                self.import_message_with(&mut &m.data[..], &origin, &NodeNoProgress, accept)?;
            report.received.push(outcome);
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
        self.forget_delivered(peer)?;
        Ok(Attempt::Done)
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
        let (stored, mut holds) = {
            let tx = self.read()?;
            (tx.stored()?, tx.peer(peer)?)
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
        let (runs, snapshot) = if needs_snapshot(std::slice::from_ref(&holds), &compacted) {
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

    /// The receipt in a hello (its first item), if it reads.
    fn hello_receipt(&self, data: &[u8]) -> Option<VersionVector> {
        let mut r = BundleReader::open(data)
            .ok()?
            .decrypt(&self.identity().dataset_key)
            .ok()?;
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
        let (_, _, staged, snapshot) = self.write_bundle_as(runs, plaintext)?;
        let bytes = std::fs::read(&staged).map_err(|e| NodeError::io("cannot read", &staged, e));
        let _ = std::fs::remove_file(&staged);
        Ok((bytes?, snapshot))
    }
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

/// The sender named in a bundle's header.
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

/// Keeps a bundle for `peer` until it is delivered (written to a temporary name, then
/// renamed, bundle before its description).
fn keep(dir: &Path, peer: MemberId, bytes: &[u8], pending: &Pending) -> Result<(), NodeError> {
    std::fs::create_dir_all(dir).map_err(|e| NodeError::io("cannot create", dir, e))?;
    let meta = postcard::to_allocvec(pending).expect("encodes");
    for (ext, data) in [("ferry", bytes), ("meta", &meta[..])] {
        let path = kept_path(dir, peer, ext);
        let tmp = path.with_extension(format!("{ext}.tmp"));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| NodeError::io("cannot write", &path, e))?;
    }
    Ok(())
}
