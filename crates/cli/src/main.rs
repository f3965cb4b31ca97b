//! `ferry`: the command-line tool. Glue only: parse arguments, call `ferry_node`, print.
//!
//! This file holds the command line ([`Cli`], [`Command`], every command's help), the
//! dispatch to the command groups in `cmd/`, and what a failure becomes: one line on stderr
//! and the exit status, chosen by the kind of the error ([`ferry_node::ErrorKind`]).
//!
//! Exit status: 0 on success; 1 when anything failed (including an import where some files
//! were refused, after the good ones applied); 2 for a usage error.
#![forbid(unsafe_code)]
// The CLI is the one crate that prints.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod cmd;
mod demo;
mod output;

use anyhow::Result;
use clap::{Parser, Subcommand};
use cmd::{care, exchange, members, records};
use ferry_node::{ErrorKind, NodeError};
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

/// Every command, in the order `ferry --help` lists them.
#[derive(Subcommand)]
enum Command {
    /// Create this laptop's node: a new dataset (--create) or join one (--join)
    Init(members::InitArgs),
    /// Write an invitation file for a new laptop (admin only)
    Invite(members::InviteArgs),
    /// Set fields of a record: VALUE is an integer, a float, true, false, null, else text
    Put(records::PutArgs),
    /// Show a record
    Get(records::GetArgs),
    /// List the records of a collection, sorted by id (printed as they are read, so a
    /// collection of any size takes little memory)
    List(records::ListArgs),
    /// The collections on this laptop, with how many records each
    Collections(records::CollectionsArgs),
    /// Settle a conflict: write VALUE over every concurrent value of FIELD, for everyone
    Resolve(records::ResolveArgs),
    /// Add N (may be negative) to a counter field; increments made on other laptops add up
    Incr(records::IncrArgs),
    /// Add strings to a set field (for tags)
    Add(records::AddArgs),
    /// Remove strings from a set field (an add made elsewhere at the same time wins)
    Remove(records::RemoveArgs),
    /// This laptop's email address and phone number, published to every member
    Contact {
        #[command(subcommand)]
        action: members::ContactAction,
    },
    /// Merge rules per field: how values written at the same time on two laptops combine
    Rule {
        #[command(subcommand)]
        action: members::RuleAction,
    },
    /// Delete a record
    Delete(records::DeleteArgs),
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
    Load(records::LoadArgs),
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
    Dump(records::DumpArgs),
    /// Write what the other laptops still need into DIR (e.g. a USB stick)
    #[command(after_help = "\
Examples:
  ferry export /media/usb            (give the stick's top folder, not its ferry/ folder)
  ferry export /media/usb --dry-run  (what it would write; changes nothing)

Exit status: 0 written (or nothing new to write); 1 failed (the line says why); 2 usage mistake.")]
    Export(exchange::ExportArgs),
    /// Apply bundle files, or every bundle under folders
    #[command(after_help = "\
Examples:
  ferry import /media/usb                 (every bundle of this dataset on the stick)
  ferry import ~/Downloads/3f2a….ferry    (one file, e.g. saved from an email)

A damaged, foreign or forged file is refused, copied to the home's quarantine/ with the
reason beside it, and the good files are still applied.

Exit status: 0 all applied (or nothing new); 1 some file refused, or no bundle of this
dataset found (the line says what the folder holds); 2 usage mistake.")]
    Import(exchange::ImportArgs),
    /// Import from DIR, then export to it: the one command to run when the stick arrives
    #[command(after_help = "\
Examples:
  ferry sync /media/usb              (plug the stick in, run this, unplug when it is done)
  ferry sync /media/usb --dry-run    (what it would import, write and remove; changes nothing)
  ferry sync email                   (the same by email; see the README for the settings)

Exit status: 0 synced; 1 something failed — what did work is kept and listed first (for
example the import, when the stick is write-protected); 2 usage mistake.")]
    Sync(exchange::SyncArgs),
    /// Send what the other members lack by email (or SMS)
    Send {
        #[command(subcommand)]
        via: exchange::SendVia,
    },
    /// Receive bundles by email (or from an SMS gateway's spool)
    Receive {
        #[command(subcommand)]
        via: exchange::ReceiveVia,
    },
    /// SMS gateways that call ferry (HTTP)
    Sms {
        #[command(subcommand)]
        action: exchange::SmsAction,
    },
    /// Serial cables and radios
    Serial {
        #[command(subcommand)]
        action: exchange::SerialAction,
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
    Status(care::StatusArgs),
    /// Check this laptop: the store, the home folder's permissions, which member holds back
    /// compaction and purge (and since when), and what a stick holds (exit 1 on a problem)
    Doctor(care::DoctorArgs),
    /// Fields edited on two laptops at once, with every value
    Conflicts(records::ConflictsArgs),
    /// Inspect a bundle without applying it
    Verify(care::VerifyArgs),
    /// Watch three laptops sync through a folder, in a temporary folder
    Demo {
        /// Keep the demo's folders here instead of a temporary folder
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    output::set_progress_mode(cli.progress);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if output::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry: error: {}", output::shown_sentence(&error_line(&e)));
            ExitCode::from(exit_status(kind(&e)))
        }
    }
}

/// Runs the command: each group's module does the work.
fn run(cli: Cli) -> Result<()> {
    let home = cli.home;
    match cli.command {
        Command::Init(a) => members::init(home, a),
        Command::Invite(a) => members::invite(home, a),
        Command::Contact { action } => members::contact(home, action),
        Command::Rule { action } => members::rule(home, action),
        Command::Put(a) => records::put(home, a),
        Command::Get(a) => records::get(home, a),
        Command::List(a) => records::list(home, a),
        Command::Collections(a) => records::collections(home, a),
        Command::Resolve(a) => records::resolve(home, a),
        Command::Incr(a) => records::incr(home, a),
        Command::Add(a) => records::add(home, a),
        Command::Remove(a) => records::remove(home, a),
        Command::Delete(a) => records::delete(home, a),
        Command::Load(a) => records::load(home, a),
        Command::Dump(a) => records::dump(home, a),
        Command::Conflicts(a) => records::conflicts(home, a),
        Command::Export(a) => exchange::export(home, a),
        Command::Import(a) => exchange::import(home, a),
        Command::Sync(a) => exchange::sync(home, a),
        Command::Send { via } => exchange::send(home, via),
        Command::Receive { via } => exchange::receive(home, via),
        Command::Sms { action } => exchange::sms(home, action),
        Command::Serial { action } => exchange::serial(home, action),
        Command::Compact => care::compact(home),
        Command::Purge => care::purge(home),
        Command::Status(a) => care::status(home, a),
        Command::Doctor(a) => care::doctor(home, a),
        Command::Verify(a) => care::verify(home, a),
        Command::Demo { keep } => demo::run(keep),
    }
}

/// The kind of a failure: that of the first `ferry_node` error in the chain, or `None` for a
/// failure the CLI itself found (a record that is not there, files refused by an import).
fn kind(e: &anyhow::Error) -> Option<ErrorKind> {
    e.chain()
        .find_map(|c| c.downcast_ref::<NodeError>())
        .map(NodeError::kind)
}

/// The exit status of a failure of this kind: 2 for a usage mistake (as for the ones clap
/// finds), else 1.
fn exit_status(kind: Option<ErrorKind>) -> u8 {
    match kind {
        Some(ErrorKind::Usage) => 2,
        _ => 1,
    }
}

/// The line printed for a failure: the error and its causes, and for a kind whose message
/// cannot know what to do, what to do.
fn error_line(e: &anyhow::Error) -> String {
    let line = one_line(e);
    match kind(e) {
        Some(ErrorKind::Internal) => format!(
            "{line}; this is a bug in ferry or a damaged store: run `ferry doctor`, and if it finds no problem, report this line"
        ),
        _ => line,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn the_exit_status_follows_the_kind_of_the_error() {
        let status = |e: anyhow::Error| exit_status(kind(&e));
        let usage = || NodeError::BadArgument("field names must be 1 to 256 bytes".into());
        assert_eq!(status(usage().into()), 2);
        // Also under context the CLI added.
        assert_eq!(
            status(anyhow::Error::from(usage()).context("visits.csv")),
            2
        );
        assert_eq!(status(NodeError::NoNode("/h".into()).into()), 1);
        assert_eq!(status(NodeError::NotAFolder("/media/usb".into()).into()), 1);
        let engine: NodeError = ferry_sync::IngestError::<ferry_store::StoreError>::Changed.into();
        assert_eq!(status(engine.into()), 1);
        // A failure the CLI found itself.
        assert_eq!(
            status(anyhow::anyhow!(
                "no record \"v-1\" in collection \"visits\""
            )),
            1
        );
        // A usage mistake clap finds exits 2 as well.
        let e = Cli::try_parse_from(["ferry", "frobnicate"]).err().unwrap();
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn an_engine_failure_says_what_to_do() {
        let engine: NodeError = ferry_sync::IngestError::<ferry_store::StoreError>::Changed.into();
        assert_eq!(
            error_line(&engine.into()),
            "the bundle changed after it was checked; import it again; this is a bug in ferry or a damaged store: run `ferry doctor`, and if it finds no problem, report this line"
        );
        // Other kinds are printed as they are.
        assert_eq!(
            error_line(&NodeError::NotAFolder("/media/usb".into()).into()),
            "/media/usb is not a folder; give the folder of the USB stick or shared drive"
        );
    }

    #[test]
    fn one_line_joins_causes_once_in_plain_words() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let e = Err::<(), _>(io)
            .context("cannot open visits.csv")
            .unwrap_err();
        assert_eq!(
            one_line(&e),
            "cannot open visits.csv: permission denied (this user may not use it: check its owner and mode)"
        );
        // A cause that the message already quotes is not said twice.
        let e = NodeError::Io {
            what: "cannot write",
            path: "/media/usb/x".into(),
            source: std::io::Error::from(std::io::ErrorKind::ReadOnlyFilesystem),
        };
        assert_eq!(
            one_line(&e.into()),
            "cannot write /media/usb/x: the disk is read-only (is the write-protect switch on?)"
        );
        assert_eq!(one_line(&anyhow::anyhow!("two\nlines")), "two lines");
    }
}
