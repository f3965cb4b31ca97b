//! Commands that carry bundles: export, import and sync (a stick or folder), send, receive
//! and sync over email, SMS and serial links, and the SMS and serial listeners.

use super::{count, open};
use crate::output::{self, Bar, out};
use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use ferry_node::{FileResult, Node, NodeError};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub(crate) struct ExportArgs {
    /// The stick or shared folder
    dir: PathBuf,
    /// Only say what it would write and remove; change nothing
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run: print the plan as JSON
    #[arg(long, requires = "dry_run")]
    json: bool,
}

#[derive(Args)]
pub(crate) struct ImportArgs {
    /// Bundle files or folders
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Also accept plaintext bundles (signed, not encrypted: from a `--plaintext` radio
    /// link). Anyone can write one without the dataset key, so they are refused unless
    /// you say so; they are still checked like any bundle.
    #[arg(long)]
    plaintext: bool,
}

/// `ferry sync DIR`, or `ferry sync email|…` (a folder named like a transport: `./email`).
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub(crate) struct SyncArgs {
    /// The stick or shared folder
    #[arg(required = true)]
    dir: Option<PathBuf>,
    /// Only say what it would import, write and remove, and what each member lacks; change
    /// nothing (no bundle written, nothing applied, nothing removed from the stick)
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run: print the plan as JSON
    #[arg(long, requires = "dry_run")]
    json: bool,
    #[command(subcommand)]
    via: Option<SyncVia>,
}

#[derive(Subcommand)]
pub(crate) enum SyncVia {
    /// Receive by email, then send what the others lack
    #[command(after_help = "\
Examples:
  ferry sync email                          (the settings are in [email] in ferry.toml)
  ferry sync email --to hq@example.org      (also to an address not published yet)

Without a mailbox in the settings it only sends, and says so in a NOTE line.

Exit status: 0 synced; 1 something failed — what did work is kept and listed first (a bundle
that could not be sent waits in the outbox); 2 usage mistake.")]
    Email(EmailArgs),
    /// Receive SMS from a spool gateway (Gammu), then send each member what it lacks
    #[command(after_help = "\
Examples:
  ferry sync sms                            (the settings are in [sms] in ferry.toml)
  ferry sync sms --gateway gammu --from +254712345678 \\
      --inbox /var/spool/gammu/inbox/ --outbox /var/spool/gammu/outbox/

Exit status: 0 synced; 1 something failed — what did work is kept and listed first (a bundle
refused is quarantined, the others are applied); 2 usage mistake.")]
    Sms(SmsArgs),
    /// Exchange with the station at the other end of a serial cable, radio modem or TNC,
    /// which runs `ferry sync serial` (or `ferry serial listen`) at the same time
    #[command(after_help = "\
Examples:
  ferry sync serial /dev/ttyUSB0 --baud 115200    (a USB serial cable: the same on both ends)
  ferry sync serial /dev/ttyUSB0 --baud 9600 --mtu 230 --rate 200 --duty-cycle 1 --timeout 3600
                                                  (a LoRa modem where 1 % of airtime is allowed)

Run it again after a cut link: it goes on where it stopped.

Exit status: 0 both ends hold everything; 1 failed (the other end was silent for --timeout
seconds, or refused; what arrived is kept); 2 usage mistake.")]
    Serial(SerialArgs),
}

/// Serial settings; each overrides the same key of `[serial]` in ferry.toml.
#[derive(Args)]
pub(crate) struct SerialArgs {
    /// Serial device, e.g. /dev/ttyUSB0 (default: `device` under [serial])
    device: Option<String>,
    /// Line speed in bits per second [default: 9600]
    #[arg(long)]
    baud: Option<u32>,
    /// Talk KISS to a TNC (Direwolf, a hardware TNC) with AX.25 frames; needs --callsign
    #[arg(long)]
    kiss: bool,
    /// This station's callsign, e.g. N0CALL-1 (AX.25 source address in KISS mode)
    #[arg(long, value_name = "CALL")]
    callsign: Option<String>,
    /// Message bytes per frame, 32-2048 [default: 200; a LoRa modem with 255-byte packets: 230]
    #[arg(long, value_name = "N")]
    mtu: Option<u16>,
    /// Cap on the send rate in bytes per second [default: the line speed; with --kiss 145, AFSK 1200 on the air]
    #[arg(long, value_name = "BYTES_PER_S")]
    rate: Option<u32>,
    /// Largest share of airtime in percent over any hour, e.g. 1 for EU868 LoRa
    #[arg(long, value_name = "PERCENT")]
    duty_cycle: Option<f64>,
    /// Give up after the other end has been silent this many seconds; a listener also ends
    /// a session once nothing moved that long, and gives a caller twice that to say who it
    /// is [default: 60]
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Frames sent before waiting for an acknowledgement, 1-32 [default: 8]
    #[arg(long, value_name = "N")]
    window: Option<u16>,
    /// Send bundles signed but NOT encrypted: anyone listening can read them. Only where
    /// the law forbids encryption, as on amateur radio bands
    #[arg(long)]
    plaintext: bool,
}

impl SerialArgs {
    fn flags(&self) -> ferry_node::SerialFlags {
        use ferry_node::Setting::{Flag, Float, Number, Text};
        let mut f = ferry_node::SerialFlags::new();
        if let Some(d) = &self.device {
            f.insert("device", Text(d.clone()));
        }
        if let Some(c) = &self.callsign {
            f.insert("callsign", Text(c.clone()));
        }
        let numbers = [
            ("baud", self.baud.map(i64::from)),
            ("mtu", self.mtu.map(i64::from)),
            ("rate", self.rate.map(i64::from)),
            (
                "timeout",
                self.timeout.map(|t| t.min(i64::MAX as u64) as i64),
            ),
            ("window", self.window.map(i64::from)),
        ];
        for (k, v) in numbers {
            if let Some(v) = v {
                f.insert(k, Number(v));
            }
        }
        if let Some(d) = self.duty_cycle {
            f.insert("duty_cycle", Float(d));
        }
        if self.kiss {
            f.insert("kiss", Flag(true));
        }
        f
    }

    fn warn_plaintext(&self) {
        if self.plaintext {
            eprintln!(
                "ferry: warning: --plaintext: bundles go out signed but NOT encrypted; anyone who listens can read every record sent. Use it only where encryption is not allowed (amateur radio)."
            );
        }
    }
}

#[derive(Subcommand)]
pub(crate) enum SerialAction {
    /// Serve stations that call over a serial cable, radio modem or TNC, one after another,
    /// until stopped; a station that does not prove it is a member is refused and told
    /// nothing
    #[command(after_help = "\
Examples:
  ferry serial listen /dev/ttyUSB0 --baud 115200    (the stations run `ferry sync serial`)
  ferry serial listen                               (the device is `device` in [serial])

One station's failure ends only its own session, with one line. Stop it with Ctrl-C.

Exit status: it runs until stopped; 1 it could not start (the line says why); 2 usage
mistake.")]
    Listen(SerialArgs),
}

#[derive(Subcommand)]
pub(crate) enum SendVia {
    /// Send by email to every member with an address (or --to)
    #[command(after_help = "\
Examples:
  ferry send email                          (the settings are in [email] in ferry.toml)
  ferry send email --to hq@example.org      (an address not published yet)

Exit status: 0 sent (or nothing to send); 1 failed — a bundle that could not be sent waits in
the outbox and goes first next time; 2 usage mistake.")]
    Email(EmailArgs),
    /// Send each member with a phone number (or --to) exactly what it lacks, by SMS
    ///
    /// What went to a number in the last 24 hours counts as on its way and is not sent
    /// again; after a day without a receipt showing it arrived, it is sent again.
    #[command(after_help = "\
Examples:
  ferry send sms --dry-run              (how many SMS it would take, per member; sends nothing)
  ferry send sms                        (the settings are in [sms] in ferry.toml)
  ferry send sms --to +254733000111     (a member that has not published its number yet)

Exit status: 0 sent (what is over the day's budget waits for the next day); 1 failed (the
line says why); 2 usage mistake.")]
    Sms(SmsSendArgs),
}

#[derive(Subcommand)]
pub(crate) enum ReceiveVia {
    /// Fetch ferry's emails (IMAP or a Maildir) and apply the bundles in them
    #[command(after_help = "\
Examples:
  ferry receive email                           (the settings are in [email] in ferry.toml)
  ferry receive email --maildir /home/ana/Maildir

Exit status: 0 all applied (or nothing new); 1 something refused (quarantined, the rest
applied), no mailbox in the settings, or the mailbox could not be read; 2 usage mistake.")]
    Email(EmailArgs),
    /// Read incoming SMS from a spool gateway (Gammu's inbox folder) and apply them
    #[command(after_help = "\
Examples:
  ferry receive sms                             (the settings are in [sms] in ferry.toml)
  ferry receive sms --gateway gammu --from +254712345678 --inbox /var/spool/gammu/inbox/

Exit status: 0 all applied (or nothing new); 1 a bundle refused (quarantined, the rest
applied), or a gateway that `ferry sms listen` serves instead; 2 usage mistake.")]
    Sms(SmsArgs),
}

#[derive(Subcommand)]
pub(crate) enum SmsAction {
    /// Receive SMS from an HTTP gateway (Kannel, an Android gateway app) until stopped
    #[command(after_help = "\
Examples:
  ferry sms listen                              (the settings are in [sms] in ferry.toml)
  ferry sms listen --bind 127.0.0.1:18080       (Kannel calls http://127.0.0.1:18080/sms)

Anything but loopback needs a token (--listen-token-env) and TLS (--tls-cert, --tls-key).
Stop it with Ctrl-C.

Exit status: it runs until stopped; 1 it could not start (the line says why); 2 usage
mistake.")]
    Listen(SmsListenArgs),
}

/// SMS settings; each overrides the same key of `[sms]` in ferry.toml.
#[derive(Args)]
pub(crate) struct SmsArgs {
    /// kannel, gammu or http
    #[arg(long)]
    gateway: Option<String>,
    /// This laptop's own number, e.g. +254712345678
    #[arg(long)]
    from: Option<String>,
    /// The gateway's send URL (Kannel: http://HOST:13013/cgi-bin/sendsms)
    #[arg(long)]
    sendsms_url: Option<String>,
    /// The gateway's user name
    #[arg(long)]
    username: Option<String>,
    /// Name of the environment variable that holds the gateway password
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// Gammu's outbox folder
    #[arg(long, value_name = "DIR")]
    outbox: Option<String>,
    /// Gammu's inbox folder
    #[arg(long, value_name = "DIR")]
    inbox: Option<String>,
    /// SMS per member per day at most
    #[arg(long)]
    daily_budget: Option<u32>,
    /// Send 8-bit binary SMS (when the gateway supports it); incoming SMS of either kind are always read
    #[arg(long)]
    binary: bool,
}

impl SmsArgs {
    fn flags(&self) -> ferry_node::SmsFlags {
        use ferry_node::SmsSetting::{Flag, Number, Text};
        let mut f = ferry_node::SmsFlags::new();
        let texts = [
            ("gateway", &self.gateway),
            ("from", &self.from),
            ("sendsms_url", &self.sendsms_url),
            ("username", &self.username),
            ("password_env", &self.password_env),
            ("outbox", &self.outbox),
            ("inbox", &self.inbox),
        ];
        for (k, v) in texts {
            if let Some(v) = v {
                f.insert(k, Text(v.clone()));
            }
        }
        if let Some(n) = self.daily_budget {
            f.insert("daily_budget", Number(n as i64));
        }
        if self.binary {
            f.insert("binary", Flag(true));
        }
        f
    }
}

#[derive(Args)]
pub(crate) struct SmsSendArgs {
    /// Send to this number (repeatable) instead of every member's published number
    #[arg(long, value_name = "+NUMBER")]
    to: Vec<String>,
    /// Say how many SMS it would take, and send nothing
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    sms: SmsArgs,
}

#[derive(Args)]
pub(crate) struct SmsListenArgs {
    /// Address to listen on, e.g. 127.0.0.1:18080 (the gateway calls http://ADDRESS/sms);
    /// anything but loopback needs a token and TLS
    #[arg(long, alias = "listen")]
    bind: Option<String>,
    /// Name of the environment variable that holds the token every request must present
    /// (?token=... in the gateway's URL, or Authorization: Bearer ...)
    #[arg(long, value_name = "VAR")]
    listen_token_env: Option<String>,
    /// TLS certificate chain (PEM) for HTTPS
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<String>,
    /// TLS private key (PEM) for HTTPS
    #[arg(long, value_name = "FILE")]
    tls_key: Option<String>,
    #[command(flatten)]
    sms: SmsArgs,
}

impl SmsListenArgs {
    fn flags(&self) -> ferry_node::SmsFlags {
        let mut f = self.sms.flags();
        for (k, v) in [
            ("listen_token_env", &self.listen_token_env),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
        ] {
            if let Some(v) = v {
                f.insert(k, ferry_node::SmsSetting::Text(v.clone()));
            }
        }
        f
    }
}

/// Email settings; each overrides the same key of `[email]` in ferry.toml.
#[derive(Args)]
pub(crate) struct EmailArgs {
    /// Send to this address (repeatable) instead of every member's published address
    #[arg(long, value_name = "ADDRESS")]
    to: Vec<String>,
    /// This laptop's sender address
    #[arg(long)]
    from: Option<String>,
    /// smtp://HOST:PORT (STARTTLS if offered), smtps://HOST:PORT or smtp+plain://HOST:PORT
    #[arg(long)]
    smtp_url: Option<String>,
    /// SMTP login
    #[arg(long)]
    smtp_user: Option<String>,
    /// Name of the environment variable that holds the SMTP password
    #[arg(long, value_name = "VAR")]
    smtp_password_env: Option<String>,
    /// imap://HOST:PORT (STARTTLS if offered), imaps://HOST:PORT or imap+plain://HOST:PORT
    #[arg(long)]
    imap_url: Option<String>,
    /// IMAP login
    #[arg(long)]
    imap_user: Option<String>,
    /// Name of the environment variable that holds the IMAP password
    #[arg(long, value_name = "VAR")]
    imap_password_env: Option<String>,
    /// The mailbox folder to read (default INBOX)
    #[arg(long)]
    imap_folder: Option<String>,
    /// Where applied emails are filed (default Ferry/Processed)
    #[arg(long)]
    processed_folder: Option<String>,
    /// Where refused emails are filed, never to be read again (default Ferry/Refused)
    #[arg(long)]
    refused_folder: Option<String>,
    /// Read a local Maildir folder instead of IMAP
    #[arg(long, value_name = "DIR")]
    maildir: Option<PathBuf>,
}

impl EmailArgs {
    fn config(&self) -> ferry_node::EmailConfig {
        ferry_node::EmailConfig {
            from: self.from.clone(),
            smtp_url: self.smtp_url.clone(),
            smtp_user: self.smtp_user.clone(),
            smtp_password_env: self.smtp_password_env.clone(),
            imap_url: self.imap_url.clone(),
            imap_user: self.imap_user.clone(),
            imap_password_env: self.imap_password_env.clone(),
            imap_folder: self.imap_folder.clone(),
            processed_folder: self.processed_folder.clone(),
            refused_folder: self.refused_folder.clone(),
            maildir: self.maildir.clone(),
            ..Default::default()
        }
    }
}

/// `ferry export`.
pub(crate) fn export(home: Option<PathBuf>, a: ExportArgs) -> Result<()> {
    let mut node = open(home)?;
    if a.dry_run {
        let r = node.dry_run(&a.dir, false, &Bar::new())?;
        return output::print_dry_run(&r, a.json);
    }
    if !a.dir.is_dir() {
        return Err(NodeError::NotAFolder(a.dir).into());
    }
    super::attach::run(&mut node)?;
    let r = node.export(&a.dir, &Bar::new())?;
    output::print_export(&r)
}

/// `ferry import`.
pub(crate) fn import(home: Option<PathBuf>, a: ImportArgs) -> Result<()> {
    let mut node = open(home)?;
    let accept = ferry_node::Accept {
        plaintext: a.plaintext,
    };
    let r = node.import_with(&a.paths, &Bar::new(), accept)?;
    output::print_import(&r)?;
    output::refused_membership(&r)?;
    super::attach::run(&mut node)?;
    if r.files.is_empty() && r.waiting_parts.is_empty() {
        // The right folder (this dataset's), with nothing in it yet.
        out(format_args!(
            "nothing to import: the folder of this dataset (ferry/{}/) holds no bundles yet",
            node.dataset().to_hex()
        ))?;
    }
    if r.rejected() > 0 {
        bail!(
            "{} of {} files were refused and quarantined in {} ({})",
            r.rejected(),
            r.files.len(),
            node.home().quarantine().display(),
            if r.rejected() == r.files.len() {
                "nothing from them was applied"
            } else {
                "the others were applied"
            }
        );
    }
    Ok(())
}

/// `ferry sync DIR` and `ferry sync email|sms|serial`.
pub(crate) fn sync(home: Option<PathBuf>, a: SyncArgs) -> Result<()> {
    let SyncArgs {
        dir,
        via,
        dry_run,
        json,
    } = a;
    let mut node = open(home)?;
    if !dry_run {
        super::attach::run(&mut node)?;
    }
    let result = sync_via(&mut node, dir, via, dry_run, json);
    if !dry_run {
        // What arrived reaches the app's tables, also when some input was refused.
        super::attach::run(&mut node)?;
    }
    result
}

fn sync_via(
    node: &mut Node,
    dir: Option<PathBuf>,
    via: Option<SyncVia>,
    dry_run: bool,
    json: bool,
) -> Result<()> {
    match (dir, via) {
        (Some(dir), None) if dry_run => {
            let r = node.dry_run(&dir, true, &Bar::new())?;
            output::print_dry_run(&r, json)
        }
        (_, Some(SyncVia::Email(args))) => {
            warn_email(node, &args)?;
            let r = match node.email_receive_impossible(args.config())? {
                Some(why) => {
                    out(format_args!("NOTE     sending only: {why}"))?;
                    None
                }
                None => {
                    let r = node.receive_email(args.config(), &Bar::new())?;
                    output::print_email_receive(&r)?;
                    Some(r)
                }
            };
            let s = node.send_email(args.config(), &args.to, &Bar::new())?;
            output::print_email_send(&s)?;
            match &r {
                Some(r) => refused_email(node, r),
                None => Ok(()),
            }
        }
        (_, Some(SyncVia::Sms(args))) => {
            let rejected = match node.sms_receive_impossible(&args.flags())? {
                Some(why) => {
                    out(format_args!("NOTE     sending only: {why}"))?;
                    0
                }
                None => {
                    let r = node.receive_sms(&args.flags(), &Bar::new())?;
                    output::print_sms_receive(&r)?;
                    r.import.rejected()
                }
            };
            let s = node.send_sms(&args.flags(), &[], false, &Bar::new())?;
            output::print_sms_send(&s)?;
            refused(node, rejected, "by SMS")
        }
        (_, Some(SyncVia::Serial(args))) => {
            args.warn_plaintext();
            let bar = output::SerialBar::new();
            let r = node.sync_serial(&args.flags(), args.plaintext, bar.clone());
            bar.finish();
            let r = r?;
            output::print_serial(&r)?;
            let bad = r
                .received
                .iter()
                .filter(|f| matches!(f.result, FileResult::Rejected { .. }))
                .count();
            refused(node, bad, "over the serial link")
        }
        (Some(dir), None) => {
            let r = match node.sync(&dir, &Bar::new()) {
                Ok(r) => r,
                Err(NodeError::WriteAfterImport { import, source }) => {
                    // The import happened: show it, then why nothing was written.
                    output::print_import(&import)?;
                    let e = NodeError::WriteAfterImport { import, source };
                    bail!(
                        "{e}; once it can be written, run `ferry sync {}` again so the other laptops get this laptop's changes",
                        dir.display()
                    );
                }
                Err(e) => return Err(e.into()),
            };
            output::print_import(&r.import)?;
            output::print_export(&r.export)?;
            output::refused_membership(&r.import)?;
            refused(node, r.import.rejected(), &format!("on {}", dir.display()))
        }
        (None, None) => unreachable!("clap requires a folder or a transport"),
    }
}

/// `ferry send email|sms`.
pub(crate) fn send(home: Option<PathBuf>, via: SendVia) -> Result<()> {
    let mut node = open(home)?;
    super::attach::run(&mut node)?;
    match via {
        SendVia::Email(args) => {
            warn_email(&node, &args)?;
            let s = node.send_email(args.config(), &args.to, &Bar::new())?;
            output::print_email_send(&s)
        }
        SendVia::Sms(args) => {
            let s = node.send_sms(&args.sms.flags(), &args.to, args.dry_run, &Bar::new())?;
            output::print_sms_send(&s)
        }
    }
}

/// `ferry receive email|sms`.
pub(crate) fn receive(home: Option<PathBuf>, via: ReceiveVia) -> Result<()> {
    let mut node = open(home)?;
    let result = receive_via(&mut node, via);
    super::attach::run(&mut node)?;
    result
}

fn receive_via(node: &mut Node, via: ReceiveVia) -> Result<()> {
    match via {
        ReceiveVia::Email(args) => {
            if let Some(why) = node.email_receive_impossible(args.config())? {
                bail!("nothing was received: {why}");
            }
            warn_email(node, &args)?;
            let r = node.receive_email(args.config(), &Bar::new())?;
            output::print_email_receive(&r)?;
            refused_email(node, &r)
        }
        ReceiveVia::Sms(args) => {
            let r = node.receive_sms(&args.flags(), &Bar::new())?;
            output::print_sms_receive(&r)?;
            refused(node, r.import.rejected(), "by SMS")
        }
    }
}

/// `ferry sms listen`.
pub(crate) fn sms(home: Option<PathBuf>, action: SmsAction) -> Result<()> {
    let SmsAction::Listen(args) = action;
    let mut node = open(home)?;
    node.sms_listen(
        &args.flags(),
        args.bind.as_deref(),
        |l| {
            let _ = out(format_args!(
                "listening on {}://{}/sms (GET or POST with from, to, text{}); stop with Ctrl-C",
                if l.tls { "https" } else { "http" },
                l.addr,
                if l.token { ", token" } else { "" }
            ));
        },
        |line| {
            let _ = out(format_args!("{}", output::shown_sentence(&line)));
        },
        &Bar::new(),
    )?;
    Ok(())
}

/// `ferry serial listen`.
pub(crate) fn serial(home: Option<PathBuf>, action: SerialAction) -> Result<()> {
    let SerialAction::Listen(args) = action;
    let mut node = open(home)?;
    args.warn_plaintext();
    let bar = output::SerialBar::new();
    let config = node.serial_config(&args.flags())?;
    out(format_args!(
        "listening on {} for stations that run `ferry sync serial`; stop with Ctrl-C",
        config
            .device
            .as_deref()
            .map(|d| d.display().to_string())
            .unwrap_or_default()
    ))?;
    node.serial_listen(&args.flags(), args.plaintext, bar.clone(), &|| false, |e| {
        bar.finish();
        let _ = output::print_serial_listen(&e);
    })?;
    Ok(())
}

/// Prints what is risky in the email settings, one `ferry: warning:` line each.
fn warn_email(node: &Node, args: &EmailArgs) -> Result<()> {
    for w in node.email_warnings(args.config())? {
        eprintln!("ferry: warning: {}", output::shown_sentence(&w));
    }
    Ok(())
}

/// Fails (after everything else was done) when some input was refused.
fn refused(node: &Node, n: usize, place: &str) -> Result<()> {
    match refused_line(n, place, &node.home().quarantine()) {
        Some(line) => bail!(line),
        None => Ok(()),
    }
}

/// The line for `n` bundles refused `place` ("by SMS", "on /media/usb"), if any was.
fn refused_line(n: usize, place: &str, quarantine: &Path) -> Option<String> {
    (n > 0).then(|| {
        format!(
            "{} {place} refused and quarantined in {} (everything else synced)",
            count(n as u64, "bundle was", "bundles were"),
            quarantine.display()
        )
    })
}

/// Fails with one line when anything arriving by email was refused: what, and where the
/// copies and the emails went.
fn refused_email(node: &Node, r: &ferry_node::EmailReceiveReport) -> Result<()> {
    match refused_email_line(r, &node.home().quarantine()) {
        Some(line) => bail!(line),
        None => Ok(()),
    }
}

/// The line for what arrived by email and was refused, if anything was.
fn refused_email_line(r: &ferry_node::EmailReceiveReport, quarantine: &Path) -> Option<String> {
    let mut what = Vec::new();
    let bundles = r.import.rejected();
    if bundles > 0 {
        what.push(format!(
            "{} (copies in {}, emails moved to {})",
            count(bundles as u64, "bundle", "bundles"),
            quarantine.display(),
            output::shown(&r.refused_folder)
        ));
    }
    if !r.damaged.is_empty() {
        what.push(format!(
            "{} (copies in {}, emails left in place)",
            count(r.damaged.len() as u64, "broken email", "broken emails"),
            quarantine.display()
        ));
    }
    if !r.refused_parts.is_empty() {
        what.push(format!(
            "{} (emails moved to {})",
            count(
                r.refused_parts.len() as u64,
                "part that does not match its bundle",
                "parts that do not match their bundles"
            ),
            output::shown(&r.refused_folder)
        ));
    }
    (!what.is_empty()).then(|| {
        format!(
            "refused in the mailbox: {}; everything else synced",
            what.join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use clap::error::ErrorKind as Clap;
    use ferry_node::Setting;

    use crate::cmd::parse;

    fn usage_mistake(args: &[&str], kind: Clap) {
        match parse(args) {
            Err(e) => {
                assert_eq!(e.kind(), kind, "{args:?}: {e}");
                assert_eq!(e.exit_code(), 2, "{args:?}");
            }
            Ok(_) => panic!("{args:?} parsed, but is a usage mistake"),
        }
    }

    #[test]
    fn sync_takes_a_folder_or_a_transport_never_both_nor_neither() {
        match parse(&["sync", "/media/usb", "--dry-run", "--json"]) {
            Ok(Command::Sync(a)) => {
                assert_eq!(a.dir, Some(PathBuf::from("/media/usb")));
                assert!(a.dry_run && a.json && a.via.is_none());
            }
            _ => panic!("sync DIR does not parse"),
        }
        match parse(&[
            "sync",
            "email",
            "--to",
            "a@example.org",
            "--to",
            "b@example.org",
        ]) {
            Ok(Command::Sync(SyncArgs {
                dir: None,
                via: Some(SyncVia::Email(e)),
                ..
            })) => assert_eq!(e.to, ["a@example.org", "b@example.org"]),
            _ => panic!("sync email does not parse"),
        }
        usage_mistake(&["sync"], Clap::MissingRequiredArgument);
        // --json only with --dry-run.
        usage_mistake(
            &["sync", "/media/usb", "--json"],
            Clap::MissingRequiredArgument,
        );
        usage_mistake(
            &["export", "/media/usb", "--json"],
            Clap::MissingRequiredArgument,
        );
        usage_mistake(&["import"], Clap::MissingRequiredArgument);
    }

    #[test]
    fn serial_options_become_the_settings_they_override() {
        let Ok(Command::Sync(SyncArgs {
            via: Some(SyncVia::Serial(s)),
            ..
        })) = parse(&[
            "sync",
            "serial",
            "/dev/ttyUSB0",
            "--baud",
            "9600",
            "--mtu",
            "230",
            "--duty-cycle",
            "1",
            "--kiss",
            "--callsign",
            "N0CALL-1",
        ])
        else {
            panic!("sync serial does not parse");
        };
        let f = s.flags();
        assert!(matches!(f.get("device"), Some(Setting::Text(d)) if d == "/dev/ttyUSB0"));
        assert!(matches!(f.get("baud"), Some(Setting::Number(9600))));
        assert!(matches!(f.get("mtu"), Some(Setting::Number(230))));
        assert!(matches!(f.get("duty_cycle"), Some(Setting::Float(d)) if *d == 1.0));
        assert!(matches!(f.get("kiss"), Some(Setting::Flag(true))));
        assert!(matches!(f.get("callsign"), Some(Setting::Text(c)) if c == "N0CALL-1"));
        // What was not given is left to ferry.toml.
        assert!(!f.contains_key("rate") && !f.contains_key("window"));
        assert!(!s.plaintext);
        usage_mistake(
            &["serial", "listen", "--baud", "fast"],
            Clap::ValueValidation,
        );
        usage_mistake(
            &["serial", "listen", "--mtu", "70000"],
            Clap::ValueValidation,
        );
    }

    #[test]
    fn sms_options_become_the_settings_they_override() {
        let Ok(Command::Send {
            via: SendVia::Sms(s),
        }) = parse(&[
            "send",
            "sms",
            "--dry-run",
            "--to",
            "+254733000111",
            "--gateway",
            "gammu",
            "--daily-budget",
            "50",
            "--binary",
        ])
        else {
            panic!("send sms does not parse");
        };
        assert!(s.dry_run);
        assert_eq!(s.to, ["+254733000111"]);
        let f = s.sms.flags();
        assert!(matches!(f.get("gateway"), Some(Setting::Text(g)) if g == "gammu"));
        assert!(matches!(f.get("daily_budget"), Some(Setting::Number(50))));
        assert!(matches!(f.get("binary"), Some(Setting::Flag(true))));
        assert!(!f.contains_key("from"));
        // `--listen` is the old name of `--bind`.
        let Ok(Command::Sms {
            action: SmsAction::Listen(l),
        }) = parse(&["sms", "listen", "--listen", "127.0.0.1:18080"])
        else {
            panic!("sms listen does not parse");
        };
        assert_eq!(l.bind.as_deref(), Some("127.0.0.1:18080"));
    }

    #[test]
    fn email_options_become_the_config_they_override() {
        let Ok(Command::Receive {
            via: ReceiveVia::Email(e),
        }) = parse(&["receive", "email", "--maildir", "/home/ana/Maildir"])
        else {
            panic!("receive email does not parse");
        };
        let c = e.config();
        assert_eq!(c.maildir, Some(PathBuf::from("/home/ana/Maildir")));
        assert_eq!(c.imap_url, None);
        assert_eq!(c.from, None);
    }

    #[test]
    fn refused_lines_say_how_many_and_where_the_copies_are() {
        let q = Path::new("/home/ana/.local/share/ferry/quarantine");
        assert_eq!(refused_line(0, "by SMS", q), None);
        assert_eq!(
            refused_line(1, "by SMS", q).unwrap(),
            "1 bundle was by SMS refused and quarantined in /home/ana/.local/share/ferry/quarantine (everything else synced)"
        );
        assert_eq!(
            refused_line(3, "on /media/usb", q).unwrap(),
            "3 bundles were on /media/usb refused and quarantined in /home/ana/.local/share/ferry/quarantine (everything else synced)"
        );
    }

    #[test]
    fn refused_email_line_names_each_kind_of_refusal() {
        let q = Path::new("/q");
        let rejected = |name: &str| ferry_node::FileOutcome {
            path: PathBuf::from(name),
            bytes: 1,
            result: FileResult::Rejected {
                reason: "forged".into(),
                quarantined: None,
            },
        };
        let mut r = ferry_node::EmailReceiveReport {
            refused_folder: "Ferry/Refused".into(),
            ..Default::default()
        };
        assert_eq!(refused_email_line(&r, q), None);
        r.refused_parts = vec![rejected("p1"), rejected("p2")];
        assert_eq!(
            refused_email_line(&r, q).unwrap(),
            "refused in the mailbox: 2 parts that do not match their bundles (emails moved to Ferry/Refused); everything else synced"
        );
        r.import.files = vec![rejected("b1")];
        r.damaged = vec![rejected("m1")];
        assert_eq!(
            refused_email_line(&r, q).unwrap(),
            "refused in the mailbox: 1 bundle (copies in /q, emails moved to Ferry/Refused); 1 broken email (copies in /q, emails left in place); 2 parts that do not match their bundles (emails moved to Ferry/Refused); everything else synced"
        );
    }
}
