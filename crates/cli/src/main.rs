//! `ferry`: the command-line tool. Glue only: parse arguments, call `ferry_node`, print.
//!
//! Exit status: 0 on success; 1 when anything failed (including an import where some files
//! were refused, after the good ones applied); 2 for a usage error.
#![forbid(unsafe_code)]
// The CLI is the one crate that prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod demo;
mod output;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use ferry_model::{Rule, Value};
use ferry_node::{FileFormat, Home, InvitationFile, Node, json};
use output::{Bar, out};
use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

/// Store-and-forward sync for records edited where the network does not reach.
///
/// Records are packed into signed, encrypted bundles that travel on a USB stick (or any
/// folder) and are applied on the other side in any order, any number of times.
#[derive(Parser)]
#[command(name = "ferry", version, about, long_about = None, max_term_width = 100)]
struct Cli {
    /// The node's home folder [default: $FERRY_HOME, else ~/.local/share/ferry]
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,

    /// How long steps show progress on stderr: a bar in a terminal and plain lines
    /// otherwise (auto), JSON lines a program can read (json), or nothing (none)
    #[arg(long, global = true, value_enum, default_value = "auto")]
    progress: output::ProgressMode,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create this laptop's node: a new dataset (--create) or join one (--join)
    Init(InitArgs),
    /// Write an invitation file for a new laptop (admin only)
    Invite {
        /// Where to write the invitation (a file that does not exist yet)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// A name for the new member, e.g. clinic-b
        #[arg(long)]
        label: Option<String>,
    },
    /// Set fields of a record: VALUE is an integer, a float, true, false, null, else text
    Put {
        /// Collection, e.g. visits
        collection: String,
        /// Record id, e.g. v-2026-000123
        id: String,
        /// One or more FIELD=VALUE (quote "34" to keep it text)
        #[arg(required = true, value_name = "FIELD=VALUE")]
        fields: Vec<String>,
    },
    /// Show a record
    Get {
        /// Collection
        collection: String,
        /// Record id
        id: String,
        /// Print one JSON object of field → value
        #[arg(long)]
        json: bool,
        /// Also show every concurrent value of conflicted fields, with who wrote it and when
        #[arg(long)]
        conflicts: bool,
    },
    /// List the records of a collection, sorted by id (printed as they are read, so a
    /// collection of any size takes little memory)
    List {
        /// Collection
        collection: String,
        /// Print a JSON array of {"id", "fields"}
        #[arg(long)]
        json: bool,
    },
    /// The collections on this laptop, with how many records each
    Collections {
        /// Print a JSON array of {"name", "records"}
        #[arg(long)]
        json: bool,
    },
    /// Settle a conflict: write VALUE over every concurrent value of FIELD, for everyone
    Resolve {
        /// Collection
        collection: String,
        /// Record id
        id: String,
        /// The conflicted field
        field: String,
        /// The value to keep (same typing as `put`)
        value: String,
    },
    /// Add N (may be negative) to a counter field; increments made on other laptops add up
    Incr {
        /// Collection
        collection: String,
        /// Record id
        id: String,
        /// Field
        field: String,
        /// The amount
        #[arg(allow_hyphen_values = true)]
        by: i64,
    },
    /// Add strings to a set field (for tags)
    Add {
        /// Collection
        collection: String,
        /// Record id
        id: String,
        /// Field
        field: String,
        /// The strings to add
        #[arg(required = true)]
        values: Vec<String>,
    },
    /// Remove strings from a set field (an add made elsewhere at the same time wins)
    Remove {
        /// Collection
        collection: String,
        /// Record id
        id: String,
        /// Field
        field: String,
        /// The strings to remove
        #[arg(required = true)]
        values: Vec<String>,
    },
    /// This laptop's email address and phone number, published to every member
    Contact {
        #[command(subcommand)]
        action: ContactAction,
    },
    /// Merge rules per field: how values written at the same time on two laptops combine
    Rule {
        #[command(subcommand)]
        action: RuleAction,
    },
    /// Delete a record
    Delete {
        /// Collection
        collection: String,
        /// Record id
        id: String,
    },
    /// Load records from a file: JSON lines (one object per line with an "id" key) or, with
    /// --csv, a CSV file whose first row names the columns, one of them "id"
    ///
    /// The whole file is loaded or none of it: a bad line, or an id on two lines, refuses the
    /// file (exit status 1) and names the line. A UTF-8 byte-order mark (Excel's "CSV UTF-8")
    /// is skipped.
    #[command(after_help = "\
Examples:
  ferry load visits visits.jsonl
  ferry load --csv visits visits.csv

In a CSV file the record id is in the column named id; every other cell is read as a value
after FIELD= on the command line (34 is an integer, 61.5 a decimal, true/false/null, anything
else text; \"34\" in double quotes stays text), and an empty cell leaves that field as it is.

Exit status: 0 loaded; 1 nothing loaded (a bad file, named with its line); 2 usage mistake.")]
    Load {
        /// Collection
        collection: String,
        /// The file ("-" for standard input)
        file: PathBuf,
        /// The file is CSV with a header row (the id in the column "id"), not JSON lines
        #[arg(long)]
        csv: bool,
    },
    /// Write every record of a collection, sorted by id: JSON lines (the inverse of load) or,
    /// with --csv, CSV with a header row
    #[command(after_help = "\
Examples:
  ferry dump visits > visits.jsonl
  ferry dump --csv visits --out visits.csv

CSV: the columns are id and then every field, sorted by name; an empty cell is a field the
record does not have. Each value is written so that `ferry load --csv` reads it back the same:
text that would read as a number, true/false/null, or empty text is put in double quotes
(\"34\"). The file starts with a UTF-8 byte-order mark so that Excel shows accents right.
A collection with a set field or raw bytes cannot be written as CSV (use JSON lines).

Exit status: 0 written; 1 failed (with --out, FILE is then left as it was); 2 usage mistake.")]
    Dump {
        /// Collection
        collection: String,
        /// Write CSV (a header row, then one row per record) instead of JSON lines
        #[arg(long)]
        csv: bool,
        /// Write to FILE (replaced once complete, readable only by you) instead of standard
        /// output
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Write what the other laptops still need into DIR (e.g. a USB stick)
    #[command(after_help = "\
Examples:
  ferry export /media/usb            (give the stick's top folder, not its ferry/ folder)
  ferry export /media/usb --dry-run  (what it would write; changes nothing)

Exit status: 0 written (or nothing new to write); 1 failed (the line says why); 2 usage mistake.")]
    Export {
        /// The stick or shared folder
        dir: PathBuf,
        /// Only say what it would write and remove; change nothing
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: print the plan as JSON
        #[arg(long, requires = "dry_run")]
        json: bool,
    },
    /// Apply bundle files, or every bundle under folders
    #[command(after_help = "\
Examples:
  ferry import /media/usb                 (every bundle of this dataset on the stick)
  ferry import ~/Downloads/3f2a….ferry    (one file, e.g. saved from an email)

A damaged, foreign or forged file is refused, copied to the home's quarantine/ with the
reason beside it, and the good files are still applied.

Exit status: 0 all applied (or nothing new); 1 some file refused, or no bundle of this
dataset found (the line says what the folder holds); 2 usage mistake.")]
    Import {
        /// Bundle files or folders
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Also accept plaintext bundles (signed, not encrypted: from a `--plaintext` radio
        /// link). Anyone can write one without the dataset key, so they are refused unless
        /// you say so; they are still checked like any bundle.
        #[arg(long)]
        plaintext: bool,
    },
    /// Import from DIR, then export to it: the one command to run when the stick arrives
    #[command(after_help = "\
Examples:
  ferry sync /media/usb              (plug the stick in, run this, unplug when it is done)
  ferry sync /media/usb --dry-run    (what it would import, write and remove; changes nothing)
  ferry sync email                   (the same by email; see the README for the settings)

Exit status: 0 synced; 1 something failed — what did work is kept and listed first (for
example the import, when the stick is write-protected); 2 usage mistake.")]
    Sync(SyncArgs),
    /// Send what the other members lack by email (or SMS)
    Send {
        #[command(subcommand)]
        via: SendVia,
    },
    /// Receive bundles by email (or from an SMS gateway's spool)
    Receive {
        #[command(subcommand)]
        via: ReceiveVia,
    },
    /// SMS gateways that call ferry (HTTP)
    Sms {
        #[command(subcommand)]
        action: SmsAction,
    },
    /// Serial cables and radios
    Serial {
        #[command(subcommand)]
        action: SerialAction,
    },
    /// Drop history every member already holds, and give the space back to the disk
    Compact,
    /// Remove deleted records for good (for privacy), once every member has their delete
    Purge,
    /// This node, the dataset, the members and what each still lacks
    #[command(after_help = "\
Examples:
  ferry status           (also says what waits here and for whose changes)
  ferry status --json

Exit status: 0; 1 when there is no ferry node in the home folder (the line says how to make one).")]
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Check this laptop: the store, the home folder's permissions, which member holds back
    /// compaction and purge (and since when), and what a stick holds (exit 1 on a problem)
    Doctor {
        /// A stick or shared folder to look at too
        dir: Option<PathBuf>,
        /// Print JSON: {"findings": [{"severity", "area", "text"}]}
        #[arg(long)]
        json: bool,
    },
    /// Fields edited on two laptops at once, with every value
    Conflicts {
        /// Print a JSON array of {"collection", "id", "field", "winner", "values"}
        #[arg(long)]
        json: bool,
    },
    /// Inspect a bundle without applying it
    Verify {
        /// The bundle file
        file: PathBuf,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Watch three laptops sync through a folder, in a temporary folder
    Demo {
        /// Keep the demo's folders here instead of a temporary folder
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
}

/// `ferry sync DIR`, or `ferry sync email|…` (a folder named like a transport: `./email`).
#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct SyncArgs {
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
enum SyncVia {
    /// Receive by email, then send what the others lack
    Email(EmailArgs),
    /// Receive SMS from a spool gateway (Gammu), then send each member what it lacks
    Sms(SmsArgs),
    /// Exchange with the station at the other end of a serial cable, radio modem or TNC,
    /// which runs `ferry sync serial` (or `ferry serial listen`) at the same time
    Serial(SerialArgs),
}

/// Serial settings; each overrides the same key of `[serial]` in ferry.toml.
#[derive(Args)]
struct SerialArgs {
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
enum SerialAction {
    /// Serve stations that call over a serial cable, radio modem or TNC, one after another,
    /// until stopped; a station that does not prove it is a member is refused and told
    /// nothing
    Listen(SerialArgs),
}

#[derive(Subcommand)]
enum SendVia {
    /// Send by email to every member with an address (or --to)
    Email(EmailArgs),
    /// Send each member with a phone number (or --to) exactly what it lacks, by SMS
    ///
    /// What went to a number in the last 24 hours counts as on its way and is not sent
    /// again; after a day without a receipt showing it arrived, it is sent again.
    Sms(SmsSendArgs),
}

#[derive(Subcommand)]
enum ReceiveVia {
    /// Fetch ferry's emails (IMAP or a Maildir) and apply the bundles in them
    Email(EmailArgs),
    /// Read incoming SMS from a spool gateway (Gammu's inbox folder) and apply them
    Sms(SmsArgs),
}

#[derive(Subcommand)]
enum SmsAction {
    /// Receive SMS from an HTTP gateway (Kannel, an Android gateway app) until stopped
    Listen(SmsListenArgs),
}

/// SMS settings; each overrides the same key of `[sms]` in ferry.toml.
#[derive(Args)]
struct SmsArgs {
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
struct SmsSendArgs {
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
struct SmsListenArgs {
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
struct EmailArgs {
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

#[derive(Subcommand)]
enum ContactAction {
    /// Publish this laptop's email address and/or phone number (used by `ferry send email/sms`)
    Set {
        /// Email address, e.g. clinic-a@example.org
        #[arg(long)]
        email: Option<String>,
        /// Phone number in international form, e.g. +254712345678
        #[arg(long)]
        phone: Option<String>,
    },
    /// Every member's published addresses
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RuleAction {
    /// Set the rule of a field (admin only): conflict, lww, max, min, counter, set or first
    Set {
        /// Collection
        collection: String,
        /// Field
        field: String,
        /// conflict | lww | max | min | counter | set | first
        rule: String,
    },
    /// List the rules that are set
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct Mode {
    /// Create a new dataset with this name; this laptop becomes its admin
    #[arg(long, value_name = "DATASET")]
    create: Option<String>,
    /// Join a dataset with an invitation file from its admin
    #[arg(long, value_name = "INVITE_FILE")]
    join: Option<PathBuf>,
}

#[derive(Args)]
struct InitArgs {
    /// A name for this laptop, e.g. hq or clinic-a
    #[arg(long)]
    name: String,
    #[command(flatten)]
    mode: Mode,
    /// With --join: the invitation's one-time code, XXXX-XXXX-XXXX, that `ferry invite`
    /// showed the admin [asked for when not given and a terminal is attached]
    #[arg(
        long,
        value_name = "CODE",
        env = "FERRY_INVITE_CODE",
        hide_env_values = true
    )]
    code: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    output::set_progress_mode(cli.progress);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if output::is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            eprintln!("ferry: error: {}", output::shown_sentence(&one_line(&e)));
            if is_usage(&e) {
                ExitCode::from(USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// The exit status of a usage mistake (the command line itself is wrong), as for the ones
/// clap finds.
const USAGE: u8 = 2;

/// A usage mistake found after parsing (a malformed `FIELD=VALUE`, an unknown rule name):
/// the command line itself is wrong, whatever the data. Exit status 2.
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Writes FILE through `write`, replacing it only once everything was written and flushed
/// to disk: a failure leaves FILE as it was. The new file is readable only by its owner.
fn write_replacing<T>(
    path: &std::path::Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> Result<T>,
) -> Result<T> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".ferry-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let mut w = std::io::BufWriter::new(tmp);
    let value = write(&mut w)?;
    let tmp = w
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("cannot write {}", path.display()))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(value)
}

/// Whether an error is a usage mistake: the CLI's own [`Usage`], or a node error of that
/// kind ([`ferry_node::ErrorKind::Usage`]), wherever it is in the chain.
fn is_usage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<Usage>()
            || c.downcast_ref::<ferry_node::NodeError>()
                .is_some_and(|e| e.kind() == ferry_node::ErrorKind::Usage)
    })
}

/// The error and its causes on one line, without repeating a cause that a message already
/// quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = match cause.downcast_ref::<std::io::Error>() {
            Some(io) => ferry_node::plain_io(io),
            None => cause.to_string(),
        };
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}

/// Asks for an invitation's one-time code on the terminal (one prompt line on stderr).
fn ask_code() -> Result<String> {
    use std::io::Write as _;
    eprint!("Invitation code (XXXX-XXXX-XXXX, from the admin): ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the invitation code from the terminal")?;
    Ok(line)
}

fn open(home: &Option<PathBuf>) -> Result<Node> {
    let home = Home::resolve(home.clone())?;
    let mut node = Node::open(&home)?;
    node.on_wait(|line| eprintln!("ferry: {}", output::shown_sentence(line)));
    Ok(node)
}

fn parse_field(arg: &str) -> Result<(String, Value)> {
    let Some((field, value)) = arg.split_once('=') else {
        return Err(Usage(format!(
            "{arg:?} is not FIELD=VALUE (for example weight_kg=61.5, or village=\"Kisumu Ndogo\")"
        ))
        .into());
    };
    Ok((field.to_string(), Value::parse(value)))
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Init(args) => {
            let home = Home::resolve(cli.home)?;
            let node = match (&args.mode.create, &args.mode.join) {
                (Some(dataset), None) => Node::create(&home, &args.name, dataset)?,
                (None, Some(path)) => {
                    let invite = InvitationFile::read(path)?;
                    let mut code = args.code;
                    if invite.needs_code() && code.is_none() && std::io::stdin().is_terminal() {
                        code = Some(ask_code()?);
                    }
                    let node = Node::join(&home, &args.name, &invite, code.as_deref())?;
                    // Said once it is used (a file that cannot join gets its error alone).
                    if !invite.needs_code() {
                        eprintln!(
                            "NOTE: {} was written by an earlier ferry and is not protected by a code: whoever holds a copy of it can join; delete it",
                            path.display()
                        );
                    }
                    node
                }
                _ => unreachable!("clap requires exactly one of --create and --join"),
            };
            let id = node.identity();
            out(format_args!(
                "Created node {:?} (member #{}) in {}",
                id.label,
                id.me.0,
                home.root().display()
            ))?;
            if id.is_admin() {
                out(format_args!(
                    "New dataset {:?} ({}). You are its admin: add laptops with `ferry invite --out FILE --label NAME`.",
                    id.dataset_name, id.dataset
                ))?;
            } else {
                out(format_args!(
                    "Joined dataset {:?} ({}). Your key fingerprint is {}. Run `ferry sync DIR` to exchange data; you may now delete the invitation file.",
                    id.dataset_name,
                    id.dataset,
                    node.public_key().fingerprint()
                ))?;
            }
        }
        Command::Invite { out: path, label } => {
            let mut node = open(&cli.home)?;
            let r = node.invite(&path, label.as_deref())?;
            out(format_args!(
                "Wrote invitation for {:?} (member #{}) to {}",
                r.label,
                r.member,
                r.path.display()
            ))?;
            out(format_args!("code: {}", r.code))?;
            out(format_args!(
                "The file opens only with this code: give the code to the new laptop's user yourself (say it, or write it on paper), never on the same stick. On the new laptop run: ferry init --name {} --join {} (it asks for the code)",
                r.label,
                r.path.display()
            ))?;
        }
        Command::Put {
            collection,
            id,
            fields,
        } => {
            let fields = fields
                .iter()
                .map(|f| parse_field(f))
                .collect::<Result<Vec<_>>>()?;
            let mut node = open(&cli.home)?;
            node.put(&collection, &id, &fields)?;
        }
        Command::Get {
            collection,
            id,
            json: as_json,
            conflicts,
        } => {
            let mut node = open(&cli.home)?;
            let rules = node.rules()?;
            let Some(rec) = node.get(&collection, &id)?.filter(|r| r.is_live()) else {
                node.require_collection(&collection)?;
                bail!("no record {id:?} in collection {collection:?}");
            };
            let rule_of = |f: &str| rules.of(&collection, f);
            if as_json && conflicts {
                let mut obj = serde_json::Map::new();
                for (f, shown) in rec.shown_with(rule_of) {
                    let values: Vec<_> = rec
                        .values(f)
                        .into_iter()
                        .map(|(stamp, v)| {
                            serde_json::json!({
                                "value": json::to_json(v),
                                "author": node_label(&mut node, stamp.dot.author),
                                "at": ferry_node::time::format_utc(stamp.hlc.ms()),
                            })
                        })
                        .collect();
                    obj.insert(
                        f.to_string(),
                        serde_json::json!({ "shown": json::shown_to_json(&shown), "values": values }),
                    );
                }
                out(format_args!("{}", serde_json::Value::Object(obj)))?;
            } else if as_json {
                let obj = json::record_to_json(&rec, rule_of);
                out(format_args!("{}", serde_json::Value::Object(obj)))?;
            } else {
                let conflicted = rec.conflicted_fields();
                for (f, shown) in rec.shown_with(rule_of) {
                    let rule = rules.of(&collection, f);
                    let listed = conflicted.contains(&f) && rule == Rule::Conflict;
                    let mark = if listed && !conflicts {
                        "   (conflict: see `ferry conflicts` or `ferry get --conflicts`)"
                    } else {
                        ""
                    };
                    out(format_args!(
                        "{}: {}{mark}",
                        output::shown(f),
                        output::field_value(&shown)
                    ))?;
                    if conflicts && rec.values(f).len() > 1 {
                        for (stamp, v) in rec.values(f) {
                            out(format_args!(
                                "    {}  by {} at {}",
                                output::value(v),
                                output::shown(&node_label(&mut node, stamp.dot.author)),
                                ferry_node::time::format_utc(stamp.hlc.ms())
                            ))?;
                        }
                    }
                }
                if rec.delete_conflict() {
                    out(format_args!(
                        "(this record was deleted on another laptop while it was edited here or elsewhere; it is kept: `ferry delete` removes it for everyone)"
                    ))?;
                }
            }
        }
        Command::List {
            collection,
            json: as_json,
        } => {
            let mut node = open(&cli.home)?;
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            if as_json {
                // For scripts, a collection with no records here is `[]` (a fresh laptop
                // before its first sync); a person reading stderr is told.
                warn_no_collection(&mut node, &collection)?;
                node.list_json(&collection, &mut w)?;
            } else {
                node.require_collection(&collection)?;
                let rules = node.rules()?;
                node.for_each_record(&collection, |id, r| {
                    let fields: Vec<String> = r
                        .shown_with(|f| rules.of(&collection, f))
                        .into_iter()
                        .map(|(f, v)| format!("{}={}", output::shown(f), output::field_value(&v)))
                        .collect();
                    writeln!(w, "{}  {}", output::shown(id), fields.join("  ")).map_err(|source| {
                        ferry_node::NodeError::Io {
                            what: "cannot write",
                            path: "output".into(),
                            source,
                        }
                    })
                })?;
            }
            w.flush()?;
        }
        Command::Collections { json: as_json } => {
            let mut node = open(&cli.home)?;
            let collections = node.collections()?;
            if as_json {
                let items: Vec<_> = collections
                    .iter()
                    .map(|(c, n)| serde_json::json!({"name": c, "records": n}))
                    .collect();
                out(format_args!("{}", serde_json::Value::Array(items)))?;
            } else if collections.is_empty() {
                out(format_args!(
                    "No collections yet: add records with `ferry put` or `ferry load`, or sync to receive them."
                ))?;
            } else {
                for (c, n) in &collections {
                    out(format_args!(
                        "{}  {n} record{}",
                        output::shown(c),
                        if *n == 1 { "" } else { "s" }
                    ))?;
                }
            }
        }
        Command::Resolve {
            collection,
            id,
            field,
            value,
        } => {
            let mut node = open(&cli.home)?;
            node.resolve(&collection, &id, &field, Value::parse(&value))?;
            out(format_args!(
                "Resolved {collection}/{id} {field} = {value}; the other laptops drop the conflict once this change reaches them"
            ))?;
        }
        Command::Incr {
            collection,
            id,
            field,
            by,
        } => {
            let mut node = open(&cli.home)?;
            node.incr(&collection, &id, &field, by)?;
        }
        Command::Add {
            collection,
            id,
            field,
            values,
        } => {
            let mut node = open(&cli.home)?;
            node.set_add(&collection, &id, &field, &values)?;
        }
        Command::Remove {
            collection,
            id,
            field,
            values,
        } => {
            let mut node = open(&cli.home)?;
            node.set_remove(&collection, &id, &field, &values)?;
        }
        Command::Contact { action } => {
            let mut node = open(&cli.home)?;
            match action {
                ContactAction::Set { email, phone } => {
                    node.set_contact(email.as_deref(), phone.as_deref())?;
                    out(format_args!(
                        "Published; the other members learn it with the next sync"
                    ))?;
                }
                ContactAction::List { json: as_json } => {
                    let labels = node.labels()?;
                    let contacts = node.contacts()?;
                    if as_json {
                        let items: Vec<_> = contacts
                            .iter()
                            .map(|(m, c)| {
                                serde_json::json!({
                                    "member": m.0,
                                    "label": labels.get(m),
                                    "email": c.email,
                                    "phone": c.phone,
                                })
                            })
                            .collect();
                        out(format_args!("{}", serde_json::Value::Array(items)))?;
                    } else if contacts.is_empty() {
                        out(format_args!("No member has published an address yet."))?;
                    } else {
                        for (m, c) in &contacts {
                            out(format_args!(
                                "#{:<3} {:<16} {:<30} {}",
                                m.0,
                                output::shown(labels.get(m).map_or("", String::as_str)),
                                output::shown(c.email.as_deref().unwrap_or("-")),
                                output::shown(c.phone.as_deref().unwrap_or("-"))
                            ))?;
                        }
                    }
                }
            }
        }
        Command::Rule { action } => {
            let mut node = open(&cli.home)?;
            match action {
                RuleAction::Set {
                    collection,
                    field,
                    rule,
                } => {
                    let rule: Rule = rule.parse().map_err(Usage)?;
                    node.set_rule(&collection, &field, rule)?;
                    out(format_args!("{collection}.{field} now merges by {rule}"))?;
                }
                RuleAction::List { json: as_json } => {
                    let rules = node.rules()?.list();
                    if as_json {
                        let items: Vec<_> = rules
                            .iter()
                            .map(|(c, f, r)| {
                                serde_json::json!({"collection": c, "field": f, "rule": r.name()})
                            })
                            .collect();
                        out(format_args!("{}", serde_json::Value::Array(items)))?;
                    } else if rules.is_empty() {
                        out(format_args!(
                            "No rules set: every field keeps concurrent values and lists them as conflicts."
                        ))?;
                    } else {
                        for (c, f, r) in rules {
                            out(format_args!(
                                "{}.{}  {r}",
                                output::shown(&c),
                                output::shown(&f)
                            ))?;
                        }
                    }
                }
            }
        }
        Command::Delete { collection, id } => {
            let mut node = open(&cli.home)?;
            if !node.delete(&collection, &id)? {
                node.require_collection(&collection)?;
                bail!("no record {id:?} in collection {collection:?}");
            }
        }
        Command::Load {
            collection,
            file,
            csv,
        } => {
            ferry_node::check_collection(&collection).map_err(|e| Usage(e.to_string()))?;
            let mut node = open(&cli.home)?;
            let format = if csv {
                FileFormat::Csv
            } else {
                FileFormat::JsonLines
            };
            let r = if file.as_os_str() == "-" {
                let stdin = std::io::stdin();
                node.load(&collection, format, &mut stdin.lock(), None, &Bar::new())
                    .context("standard input")?
            } else {
                let f = std::fs::File::open(&file)
                    .with_context(|| format!("cannot open {}", file.display()))?;
                let len = f.metadata().ok().map(|m| m.len());
                let mut r = std::io::BufReader::new(f);
                node.load(&collection, format, &mut r, len, &Bar::new())
                    .with_context(|| file.display().to_string())?
            };
            out(format_args!(
                "Loaded {} record{} into {collection:?}",
                r.records,
                if r.records == 1 { "" } else { "s" }
            ))?;
        }
        Command::Dump {
            collection,
            csv,
            out: path,
        } => {
            let mut node = open(&cli.home)?;
            warn_no_collection(&mut node, &collection)?;
            let format = if csv {
                FileFormat::Csv
            } else {
                FileFormat::JsonLines
            };
            match path {
                None => {
                    let stdout = std::io::stdout();
                    let mut w = std::io::BufWriter::new(stdout.lock());
                    node.dump(&collection, format, &mut w)?;
                    w.flush()?;
                }
                Some(path) => {
                    let n = write_replacing(&path, |w| Ok(node.dump(&collection, format, w)?))?;
                    out(format_args!(
                        "Wrote {n} records of {collection:?} to {}",
                        path.display()
                    ))?;
                }
            }
        }
        Command::Export {
            dir,
            dry_run: true,
            json,
        } => {
            let mut node = open(&cli.home)?;
            let r = node.dry_run(&dir, false, &Bar::new())?;
            output::print_dry_run(&r, json)?;
        }
        Command::Export { dir, .. } => {
            let mut node = open(&cli.home)?;
            if !dir.is_dir() {
                bail!(
                    "{} is not a folder; give the folder of the USB stick or shared drive",
                    dir.display()
                );
            }
            let r = node.export(&dir, &Bar::new())?;
            output::print_export(&r)?;
        }
        Command::Import { paths, plaintext } => {
            let mut node = open(&cli.home)?;
            let accept = ferry_node::Accept { plaintext };
            let r = node.import_with(&paths, &Bar::new(), accept)?;
            output::print_import(&r)?;
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
        }
        Command::Sync(SyncArgs {
            dir,
            via,
            dry_run,
            json,
        }) => {
            let mut node = open(&cli.home)?;
            match (dir, via) {
                (Some(dir), None) if dry_run => {
                    let r = node.dry_run(&dir, true, &Bar::new())?;
                    output::print_dry_run(&r, json)?;
                }
                (_, Some(SyncVia::Email(args))) => {
                    warn_email(&node, &args)?;
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
                    if let Some(r) = &r {
                        refused_email(&node, r)?;
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
                    refused(&node, rejected, "by SMS")?;
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
                        .filter(|f| matches!(f.result, ferry_node::FileResult::Rejected { .. }))
                        .count();
                    refused(&node, bad, "over the serial link")?;
                }
                (Some(dir), None) => {
                    let r = match node.sync(&dir, &Bar::new()) {
                        Ok(r) => r,
                        Err(ferry_node::NodeError::WriteAfterImport { import, source }) => {
                            // The import happened: show it, then why nothing was written.
                            output::print_import(&import)?;
                            let e = ferry_node::NodeError::WriteAfterImport { import, source };
                            bail!(
                                "{e}; once it can be written, run `ferry sync {}` again so the other laptops get this laptop's changes",
                                dir.display()
                            );
                        }
                        Err(e) => return Err(e.into()),
                    };
                    output::print_import(&r.import)?;
                    output::print_export(&r.export)?;
                    refused(&node, r.import.rejected(), &format!("on {}", dir.display()))?;
                }
                (None, None) => unreachable!("clap requires a folder or a transport"),
            }
        }
        Command::Send { via } => {
            let mut node = open(&cli.home)?;
            match via {
                SendVia::Email(args) => {
                    warn_email(&node, &args)?;
                    let s = node.send_email(args.config(), &args.to, &Bar::new())?;
                    output::print_email_send(&s)?;
                }
                SendVia::Sms(args) => {
                    let s =
                        node.send_sms(&args.sms.flags(), &args.to, args.dry_run, &Bar::new())?;
                    output::print_sms_send(&s)?;
                }
            }
        }
        Command::Receive { via } => {
            let mut node = open(&cli.home)?;
            match via {
                ReceiveVia::Email(args) => {
                    if let Some(why) = node.email_receive_impossible(args.config())? {
                        bail!("nothing was received: {why}");
                    }
                    warn_email(&node, &args)?;
                    let r = node.receive_email(args.config(), &Bar::new())?;
                    output::print_email_receive(&r)?;
                    refused_email(&node, &r)?;
                }
                ReceiveVia::Sms(args) => {
                    let r = node.receive_sms(&args.flags(), &Bar::new())?;
                    output::print_sms_receive(&r)?;
                    refused(&node, r.import.rejected(), "by SMS")?;
                }
            }
        }
        Command::Sms {
            action: SmsAction::Listen(args),
        } => {
            let mut node = open(&cli.home)?;
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
        }
        Command::Serial {
            action: SerialAction::Listen(args),
        } => {
            let mut node = open(&cli.home)?;
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
        }
        Command::Compact => {
            let mut node = open(&cli.home)?;
            let r = node.compact(true)?;
            out(format_args!(
                "Compacted {} changes every member already holds ({} in all, counting earlier automatic compaction); store {} → {}",
                r.dropped,
                r.total,
                output::size(r.bytes_before),
                output::size(r.bytes_after)
            ))?;
        }
        Command::Purge => {
            let mut node = open(&cli.home)?;
            let r = node.purge()?;
            out(format_args!(
                "Purged {} deleted records; store {} → {}",
                r.purged,
                output::size(r.compact.bytes_before),
                output::size(r.compact.bytes_after)
            ))?;
            if r.waiting > 0 {
                out(format_args!(
                    "{} deleted records stay until every member has received their delete; run `ferry purge` again after the next syncs",
                    r.waiting
                ))?;
            }
        }
        Command::Status { json: as_json } => {
            let mut node = open(&cli.home)?;
            let s = node.status()?;
            if as_json {
                out(format_args!("{}", serde_json::to_string_pretty(&s)?))?;
            } else {
                output::print_status(&s)?;
            }
        }
        Command::Doctor { dir, json: as_json } => {
            let mut node = open(&cli.home)?;
            let r = node.doctor(dir.as_deref())?;
            if as_json {
                out(format_args!("{}", serde_json::to_string_pretty(&r)?))?;
            } else {
                output::print_doctor(&r)?;
            }
            match r.problems() {
                0 => {}
                1 => bail!("doctor found a problem: see the PROBLEM line above"),
                n => bail!("doctor found {n} problems: see the PROBLEM lines above"),
            }
        }
        Command::Conflicts { json: as_json } => {
            let mut node = open(&cli.home)?;
            let c = node.conflicts()?;
            if as_json {
                out(format_args!("{}", serde_json::to_string_pretty(&c)?))?;
            } else if c.is_empty() {
                out(format_args!("No conflicts."))?;
            } else {
                for v in &c {
                    out(format_args!(
                        "{}/{} {}: shown {} — edited at the same time:",
                        output::shown(&v.collection),
                        output::shown(&v.id),
                        output::shown(&v.field),
                        output::value(&v.winner)
                    ))?;
                    for val in &v.values {
                        out(format_args!(
                            "    {}  by {} at {}",
                            output::value(&val.value),
                            output::shown(&val.author),
                            output::shown(&val.at)
                        ))?;
                    }
                }
            }
        }
        Command::Verify {
            file,
            json: as_json,
        } => {
            let mut node = open(&cli.home)?;
            let r = node.verify(&file)?;
            if as_json {
                out(format_args!("{}", serde_json::to_string_pretty(&r)?))?;
            } else {
                output::print_verify(&r)?;
            }
            if let Some(p) = &r.problem {
                bail!("{}: {p}", file.display());
            }
        }
        Command::Demo { keep } => {
            demo::run(keep)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ferry list --json` as a string (the demo compares the laptops' lists).
pub(crate) fn list_json(node: &mut Node, collection: &str) -> Result<String> {
    let mut buf = Vec::new();
    node.list_json(collection, &mut buf)?;
    Ok(String::from_utf8(buf)?.trim_end().to_string())
}

/// Warns on stderr, one `ferry: warning:` line, when this laptop has no record of
/// `collection` (a typo?); machine output (`--json`, `dump`) is still the empty answer.
fn warn_no_collection(node: &mut Node, collection: &str) -> Result<()> {
    match node.require_collection(collection) {
        Err(e @ ferry_node::NodeError::NoCollection { .. }) => {
            eprintln!("ferry: warning: {}", output::shown_sentence(&e.to_string()));
            Ok(())
        }
        other => Ok(other?),
    }
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
    if n > 0 {
        bail!(
            "{} {place} refused and quarantined in {} (everything else synced)",
            match n {
                1 => "1 bundle was".to_string(),
                n => format!("{n} bundles were"),
            },
            node.home().quarantine().display()
        );
    }
    Ok(())
}

/// Fails with one line when anything arriving by email was refused: what, and where the
/// copies and the emails went.
fn refused_email(node: &Node, r: &ferry_node::EmailReceiveReport) -> Result<()> {
    let plural = |n: usize, one: &str, many: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {many}")
        }
    };
    let quarantine = node.home().quarantine();
    let mut what = Vec::new();
    let bundles = r.import.rejected();
    if bundles > 0 {
        what.push(format!(
            "{} (copies in {}, emails moved to {})",
            plural(bundles, "bundle", "bundles"),
            quarantine.display(),
            output::shown(&r.refused_folder)
        ));
    }
    if !r.damaged.is_empty() {
        what.push(format!(
            "{} (copies in {}, emails left in place)",
            plural(r.damaged.len(), "broken email", "broken emails"),
            quarantine.display()
        ));
    }
    if !r.refused_parts.is_empty() {
        what.push(format!(
            "{} (emails moved to {})",
            plural(
                r.refused_parts.len(),
                "part that does not match its bundle",
                "parts that do not match their bundles"
            ),
            output::shown(&r.refused_folder)
        ));
    }
    if !what.is_empty() {
        bail!(
            "refused in the mailbox: {}; everything else synced",
            what.join("; ")
        );
    }
    Ok(())
}

/// A member's label, or its number.
fn node_label(node: &mut Node, m: ferry_model::MemberId) -> String {
    node.labels()
        .ok()
        .and_then(|l| l.get(&m).cloned())
        .unwrap_or_else(|| m.to_string())
}

/// Whether stderr is a terminal (progress bars are drawn only then).
pub(crate) fn interactive() -> bool {
    std::io::stderr().is_terminal()
}
