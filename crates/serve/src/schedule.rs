//! Email, SMS and serial radio by themselves: an exchange by email (receive, then send what
//! the others lack) or by SMS every so often, and a serial exchange whenever the configured
//! device appears (a USB radio plugged in).
//!
//! A run that fails (the mail server unreachable, the gateway down, no station answering) is
//! tried again soon, then less and less often ([`next_delay`]: 30 s, 1 min, 2 min, … up to an
//! hour, or the regular interval if that is longer), and at the regular interval again
//! after a run that works. Every run is recorded like a folder's ([`Run`]).
//!
//! These runs open the home a second time (SQLite serves both connections), so an email
//! or a radio session that takes minutes never holds up the API's requests; what they apply
//! reaches the feed through the store watcher, as a command in a terminal does.

use crate::Shared;
use crate::runs::Run;
use ferry_node::{EmailConfig, Home, NoProgress, Node, NodeError, SerialFlags, SmsFlags};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The first retry after a failed run.
pub const RETRY_FIRST: Duration = Duration::from_secs(30);

/// The longest wait between retries (unless the regular interval is longer).
pub const RETRY_MOST: Duration = Duration::from_secs(3600);

/// How often the serial device is looked for.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// A carrier that runs on a schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    /// Receive email, then send by email (`[email]` in ferry.toml).
    Email,
    /// Receive SMS from a spool gateway, then send by SMS (`[sms]`).
    Sms,
}

impl Carrier {
    /// Its name in runs and on the page.
    pub fn name(self) -> &'static str {
        match self {
            Carrier::Email => "email",
            Carrier::Sms => "sms",
        }
    }
}

/// One carrier and how often it runs when all is well.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Every {
    /// Which.
    pub carrier: Carrier,
    /// The regular interval.
    pub every: Duration,
}

/// How long to wait before the next run of a carrier whose regular interval is `every`,
/// after `failures` failed runs in a row (0: the last run worked).
pub fn next_delay(every: Duration, failures: u32) -> Duration {
    if failures == 0 {
        return every;
    }
    let first = RETRY_FIRST.min(every);
    let most = RETRY_MOST.max(every);
    let factor = 1u32.checked_shl(failures - 1).unwrap_or(u32::MAX);
    first.checked_mul(factor).unwrap_or(most).min(most)
}

/// Runs `carrier` every so often until the server stops.
pub(crate) async fn run_every(s: Shared, every: Every) {
    let mut stopping = s.stopping.clone();
    let mut failures = 0u32;
    // The first run soon after the start: what waited while the server was off goes now.
    let mut wait = Duration::from_secs(2).min(every.every);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopping.changed() => return,
        }
        let mut run = carrier_run(&s, every.carrier, "schedule").await;
        failures = match run.ok {
            true => 0,
            false => failures.saturating_add(1),
        };
        wait = next_delay(every.every, failures);
        run.next_in_s = Some(wait.as_secs());
        run.summary = match run.ok {
            true => format!("{} (next in {})", run.summary, human(wait)),
            false => format!(
                "{} — trying again in {} ({} failed in a row)",
                run.summary,
                human(wait),
                failures
            ),
        };
        s.record(run);
    }
}

/// A duration as people say it: "45 s", "2 min", "1 h".
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

/// One run of a carrier now, by `by` (`schedule`, `api`), on a second handle to the home.
/// The run is returned, not recorded.
pub(crate) async fn carrier_run(s: &Shared, carrier: Carrier, by: &'static str) -> Run {
    let started = (
        ferry_node::time::format_utc(ferry_node::time::now_ms()),
        Instant::now(),
    );
    let home = s.home.clone();
    let result = tokio::task::spawn_blocking(move || exchange(&home, carrier))
        .await
        .unwrap_or_else(|e| Err(format!("the run stopped: {e}")));
    Run::of_carrier(carrier.name(), by, started, result)
}

/// What one carrier run did, in the run's terms.
pub(crate) struct Moved {
    /// Where (the mailbox address, the gateway, the device).
    pub(crate) target: String,
    /// What became of each bundle that arrived.
    pub(crate) files: Vec<ferry_node::FileOutcome>,
    /// Pieces refused before they made a bundle (damaged or forged email parts).
    pub(crate) damaged: u64,
    /// What was sent, in a few words ("2 emails to a@…", "3 SMS").
    pub(crate) sent: String,
}

fn exchange(home: &Home, carrier: Carrier) -> Result<Moved, String> {
    let mut node = Node::open(home).map_err(|e| e.to_string())?;
    let out = match carrier {
        Carrier::Email => email(&mut node),
        Carrier::Sms => sms(&mut node),
    };
    out.map_err(|e| e.to_string())
}

fn email(node: &mut Node) -> Result<Moved, NodeError> {
    let mut moved = Moved {
        target: node
            .config_section("email")?
            .and_then(|t| t.get("from").and_then(|v| v.as_str()).map(str::to_string))
            .unwrap_or_else(|| "this laptop's mailbox".into()),
        files: Vec::new(),
        damaged: 0,
        sent: String::new(),
    };
    if node
        .email_receive_impossible(EmailConfig::default())?
        .is_none()
    {
        let r = node.receive_email(EmailConfig::default(), &NoProgress)?;
        moved.damaged = (r.damaged.len() + r.refused_parts.len()) as u64;
        moved.files = r.import.files;
    }
    let sent = node.send_email(EmailConfig::default(), &[], &NoProgress)?;
    let emails: u32 = sent
        .flushed
        .iter()
        .chain(&sent.sent)
        .map(|e| e.emails)
        .sum();
    moved.sent = match emails {
        0 => "nothing new to send".into(),
        n => format!(
            "{n} email{} sent to {}",
            if n == 1 { "" } else { "s" },
            sent.recipients.join(", ")
        ),
    };
    Ok(moved)
}

fn sms(node: &mut Node) -> Result<Moved, NodeError> {
    let flags = SmsFlags::new();
    let mut moved = Moved {
        target: "the SMS gateway".into(),
        files: Vec::new(),
        damaged: 0,
        sent: String::new(),
    };
    if node.sms_receive_impossible(&flags)?.is_none() {
        moved.files = node.receive_sms(&flags, &NoProgress)?.import.files;
    }
    let sent = node.send_sms(&flags, &[], false, &NoProgress)?;
    let now: usize = sent.peers.iter().map(|p| p.sent_now).sum::<usize>() + sent.flushed;
    let queued: usize = sent.peers.iter().map(|p| p.queued).sum();
    moved.sent = match (now, queued) {
        (0, 0) => "nothing new to send".into(),
        (n, 0) => format!("{n} SMS sent"),
        (n, q) => format!("{n} SMS sent, {q} waiting for the daily budget or the gateway"),
    };
    Ok(moved)
}

/// The serial device from `[serial]` in ferry.toml, when there is one.
pub fn serial_device(node: &Node) -> Option<PathBuf> {
    let table = node.config_section("serial").ok()??;
    table
        .get("device")
        .and_then(|v| v.as_str())
        .map(PathBuf::from)
}

/// Looks for the serial device every second; when it appears (a USB radio plugged in), runs
/// one exchange with the station at the other end.
pub(crate) async fn watch_serial(s: Shared, device: PathBuf) {
    let mut stopping = s.stopping.clone();
    let mut present = false;
    loop {
        let now = device.exists();
        if now && !present {
            (s.on_event)(&format!(
                "{} appeared: calling the other station",
                device.display()
            ));
            let run = serial_run(&s, "device").await;
            s.record(run);
        }
        present = now;
        tokio::select! {
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            _ = stopping.changed() => return,
        }
    }
}

struct Quiet;

impl ferry_node::SerialProgress for Quiet {
    fn update(&self, _: &ferry_node::ProgressReport) {}
}

/// One serial exchange now, on a second handle to the home. The run is returned, not
/// recorded.
pub(crate) async fn serial_run(s: &Shared, by: &'static str) -> Run {
    let started = (
        ferry_node::time::format_utc(ferry_node::time::now_ms()),
        Instant::now(),
    );
    let home = s.home.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<Moved, String> {
        let mut node = Node::open(&home).map_err(|e| e.to_string())?;
        let r = node
            .sync_serial(&SerialFlags::new(), false, Arc::new(Quiet))
            .map_err(|e| e.to_string())?;
        Ok(Moved {
            target: r.device.clone(),
            files: r.received,
            damaged: 0,
            sent: match r.sent_commits {
                0 => "nothing new to send".into(),
                n => format!("{n} changes sent ({} bytes)", r.sent_bytes),
            },
        })
    })
    .await
    .unwrap_or_else(|e| Err(format!("the run stopped: {e}")));
    Run::of_carrier("serial", by, started, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_carrier_is_tried_again_soon_then_less_and_less_often_and_normally_after_success() {
        let quarter = Duration::from_secs(15 * 60);
        let got: Vec<u64> = (0..10).map(|f| next_delay(quarter, f).as_secs()).collect();
        assert_eq!(
            got,
            [900, 30, 60, 120, 240, 480, 960, 1920, 3600, 3600],
            "0 failures: the interval; then 30 s doubling up to an hour"
        );
        // An interval shorter than the first retry: retries start at the interval.
        let short = Duration::from_secs(2);
        let got: Vec<u64> = (0..4).map(|f| next_delay(short, f).as_secs()).collect();
        assert_eq!(got, [2, 2, 4, 8]);
        // An interval longer than an hour: retries grow up to it, never beyond.
        let six_hours = Duration::from_secs(6 * 3600);
        assert_eq!(next_delay(six_hours, 12), six_hours);
        assert_eq!(next_delay(six_hours, u32::MAX), six_hours, "no overflow");
        assert_eq!(human(Duration::from_secs(45)), "45 s");
        assert_eq!(human(Duration::from_secs(960)), "16 min");
        assert_eq!(human(Duration::from_secs(3 * 3600)), "3 h");
    }
}
