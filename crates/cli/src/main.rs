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
use cmd::{care, exchange, members, records, serve};
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

/// Every command, in the order `ferry --help` lists them. Each one's help ends with examples
/// that work as written and its exit statuses (a test checks that none lacks them).
#[derive(Subcommand)]
enum Command {
    /// Create this laptop's node: a new dataset (--create) or join one (--join)
    #[command(after_help = "\
Examples:
  ferry init --name hq --create \"Kisumu health visits\"            (the admin's laptop, once)
  ferry init --join /media/usb/clinic-a.invite    (asks for the code; the laptop takes the
                                                  label the admin gave the invitation)

Exit status: 0 created; 1 failed (the home already holds a node, or the invitation or its
code does not open: the line says which); 2 usage mistake (no --name with --create, or a
--name that is not the invitation's label).")]
    Init(members::InitArgs),
    /// Join again with a new invitation after the admin accepted another laptop with this
    /// laptop's invitation, carrying this laptop's records into the new membership
    #[command(after_help = "\
Examples:
  ferry rejoin --join clinic-b2.invite                 (asks for the invitation's code)

When one invitation was used on two laptops, the admin accepts the first it sees; `sync`,
`import` and `status` on the other say so (REFUSED … accepted another laptop as …). Ask the
admin for a new invitation and run this: the old database is moved to refused/ in the home
folder (never deleted), the laptop joins as the new member, and every value it wrote is
written again as that member. Records it deleted are listed to delete again after the first
sync. Then run `ferry sync DIR` as usual.

Exit status: 0 joined again; 1 failed (nothing changed); 2 usage mistake (e.g. the old
invitation, or one of another dataset).")]
    Rejoin(members::RejoinArgs),
    /// Write an invitation file for a new laptop (admin only); list or cancel invitations
    #[command(after_help = "\
Examples:
  ferry invite --out /media/usb/clinic-a.invite --label clinic-a
  ferry invite --out /media/usb/clinic-b.invite --label clinic-b --expires 7d
  ferry invite list
  ferry invite cancel clinic-b

It prints the file's one-time code: give it to the new laptop's user yourself (say it, or
write it on paper), never on the same stick. With --expires, the new laptop must join, and
its first bundle reach this laptop, within that time; after it, this laptop refuses that
member and cancels the invitation for every laptop.

Exit status: 0 written; 1 failed (not the admin, or FILE already exists); 2 usage mistake
(no --out, a label another member has, a duration that is not one).")]
    Invite(members::InviteArgs),
    /// Change the dataset key (admins only): bundles from now on use a new key every member
    /// receives, sealed to it alone
    #[command(after_help = "\
Examples:
  ferry rekey

For when an invitation file or a laptop's disk may have been copied. Every member receives
the new key with the next bundles; bundles written before stay readable by members.
Removing a member (ferry member remove) changes the key by itself, on whichever admin's
laptop removes it. Two admins changing the key at the same moment is harmless: every
laptop seals with the same one of the two.

Exit status: 0 changed; 1 failed (not an admin, or the line says why).")]
    Rekey,
    /// Write a sealed copy of this laptop's store to FILE (restore it with
    /// `ferry init --join NEW_INVITE --restore FILE`)
    #[command(after_help = "\
Examples:
  ferry backup /media/usb/clinic-a-2026-12-02.backup

It prints a one-time code: the file opens only with it. Keep the code apart from the file.
A restored laptop joins again under a new member number from a new invitation (so it never
writes a second version of what it wrote after the backup): ask the admin for one, then run
ferry init --join NEW_INVITE --restore FILE in an empty home.

Exit status: 0 written; 1 failed (FILE already exists, or the line says why); 2 usage
mistake.")]
    Backup {
        /// Where to write the backup (a file that does not exist yet)
        file: PathBuf,
    },
    /// Protect this laptop's store with a passphrase (encrypted on disk), or change it
    #[command(after_help = "\
Examples:
  ferry passphrase set

Exit status: 0; 1 failed (the line says why); 2 usage mistake.")]
    Passphrase {
        #[command(subcommand)]
        action: members::PassphraseAction,
    },
    /// Set fields of a record: VALUE is an integer, a float, true, false, null, else text
    #[command(after_help = "\
Examples:
  ferry put visits v-2026-000123 weight_kg=61.5 village=\"Kisumu Ndogo\" followup=true
  ferry put patients p-004512 'code=\"34\"'      (the text 34, not the number)

VALUE is read as an integer (34, -7), a decimal (61.5), true, false, null, or else as text.
In village=\"Kisumu Ndogo\" the quotes only hold the two words together: the shell removes
them. To keep text that reads as a number as text, ferry must see double quotes around it:
put the whole FIELD=VALUE in single quotes, as in 'code=\"34\"'.

A field that already shows VALUE (and is not in conflict) is left as it is; if nothing
changes, nothing is written (it says `unchanged: …`) and nothing travels. On a counter field,
put sets the count; on a set field, it replaces the set with that one word.

Exit status: 0 written (or unchanged); 1 failed (the line says why); 2 usage mistake (no
FIELD=VALUE, or a reserved name such as the field id).")]
    Put(records::PutArgs),
    /// Show a record
    #[command(after_help = "\
Examples:
  ferry get visits v-2026-000123
  ferry get visits v-2026-000123 --conflicts    (every value of a conflicted field: who, when)
  ferry get visits v-2026-000123 --json

Exit status: 0; 1 no such record (for no such collection, the line names those there are);
2 usage mistake.")]
    Get(records::GetArgs),
    /// List the records of a collection, sorted by id (printed as they are read, so a
    /// collection of any size takes little memory)
    #[command(after_help = "\
Examples:
  ferry list visits
  ferry list visits --json > visits.json

Exit status: 0 (with --json also for a collection this laptop has no record of: [] and a
warning); 1 no such collection here (the line names those there are); 2 usage mistake.")]
    List(records::ListArgs),
    /// The collections on this laptop, with how many records each
    #[command(after_help = "\
Examples:
  ferry collections
  ferry collections --json

Exit status: 0; 1 failed (the line says why); 2 usage mistake.")]
    Collections(records::CollectionsArgs),
    /// Settle a conflict: write VALUE over every concurrent value of FIELD, for everyone
    #[command(after_help = "\
Examples:
  ferry conflicts                                      (what is in conflict)
  ferry resolve visits v-2026-000123 weight_kg 61.8    (keep 61.8, for everyone)
  ferry resolve --all --prefer latest --dry-run        (what keeping the shown values would do)
  ferry resolve --all --collection visits --field age --prefer max
  ferry resolve --all --prefer author=clinic-a         (clinic-a's values, where it wrote one)

--all settles every matching conflict in one change (one per thousand records, all or
none) and prints each value it kept (with --dry-run: would keep). A record deleted on one
laptop while edited on another is left (`ferry delete` or `ferry put` settles it), and so
is a conflict none of whose values the author=LABEL member wrote.

Exit status: 0 resolved (or nothing to resolve); 1 no such conflict here (the line says what
to use instead); 2 usage mistake (such as an unknown preference or member).")]
    Resolve(records::ResolveArgs),
    /// Add N (may be negative) to a counter field; increments made on other laptops add up
    #[command(after_help = "\
Examples:
  ferry rule set stock nets counter     (once, by the admin: the field adds up increments)
  ferry incr stock kisumu nets -30
  ferry incr stock kisumu nets 5

Exit status: 0; 1 failed (the line says why); 2 usage mistake (N is not a whole number, or
the field's rule is not counter: the line names the command that makes it one).")]
    Incr(records::IncrArgs),
    /// Add strings to a set field (for tags)
    #[command(after_help = "\
Examples:
  ferry rule set patients tags set      (once, by the admin: the field is a set of words)
  ferry add patients p-1 tags tb hiv

Exit status: 0; 1 failed (the line says why); 2 usage mistake (such as a field whose rule is
not set: the line names the command that makes it one).")]
    Add(records::AddArgs),
    /// Remove strings from a set field (an add made elsewhere at the same time wins)
    #[command(after_help = "\
Examples:
  ferry remove patients p-1 tags hiv

Exit status: 0; 1 failed (the line says why); 2 usage mistake (such as a field whose rule is
not set).")]
    Remove(records::RemoveArgs),
    /// This laptop's email address and phone number, published to every member
    #[command(after_help = "\
Examples:
  ferry contact set --email clinic-a@example.org --phone +254712345678
  ferry contact list

Exit status: 0; 1 failed (the line says why); 2 usage mistake.")]
    Contact {
        #[command(subcommand)]
        action: members::ContactAction,
    },
    /// The members: who they are, when each last sent something, what each lacks
    #[command(after_help = "\
Examples:
  ferry member list
  ferry member rename clinic-b clinic-kisumu     (admin only)

Exit status: 0; 1 failed (the line says why); 2 usage mistake.")]
    Member {
        #[command(subcommand)]
        action: members::MemberAction,
    },
    /// Merge rules per field: how values written at the same time on two laptops combine
    #[command(after_help = "\
Examples:
  ferry rule set stock nets counter     (admin only)
  ferry rule list

Exit status: 0; 1 failed (the line says why); 2 usage mistake.")]
    Rule {
        #[command(subcommand)]
        action: members::RuleAction,
    },
    /// Delete a record
    #[command(after_help = "\
Examples:
  ferry delete visits v-2026-000123

The record is deleted on every laptop with the next syncs; `ferry purge` removes it for good.
If another laptop edits it before it has seen the delete, the whole record comes back
everywhere (every field as it was, plus that edit) and `ferry conflicts` lists it as
`(record)`: delete it again to remove it, or edit it to keep it.

Exit status: 0 deleted; 1 no such record (the line says why); 2 usage mistake.")]
    Delete(records::DeleteArgs),
    /// The history of a record: every change still held, who made it and when, with the
    /// values before and after
    #[command(after_help = "\
Examples:
  ferry log visits v-2026-000123
  ferry log visits v-2026-000123 --json

Each line is one change, oldest first: ferry's clock (the author laptop's clock, never
earlier than a change it had already received), the author and its change number, then each
field as before → after, as the author saw it; `(+N concurrent)` counts changes to that
field made at the same time elsewhere. A sync compacts history older than 30 days that every
laptop holds: the log then says so and starts at the oldest change still held (a value from
before it shows as ?). Changes that wait for others are not shown until applied.

Exit status: 0; 1 no such record (the line names the collections there are); 2 usage
mistake.")]
    Log(records::LogArgs),
    /// Bring a deleted record back with the values it had before its last delete
    #[command(after_help = "\
Examples:
  ferry restore visits v-2026-000123

It writes the values back as a new change, which travels to the other laptops like any
other (a field that was in conflict comes back with the value it showed). A deleted record
keeps what its delete removed until `ferry purge`, so this works after `ferry compact` too;
a record deleted by an older ferry needs its history up to the delete, and otherwise it
refuses rather than bring back part of it.

Exit status: 0 restored; 1 not deleted, or its history is no longer held (the line says
which); 2 usage mistake.")]
    Restore(records::DeleteArgs),
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
Records that already show the file's values are counted as unchanged and nothing is written
for them, so loading the same file again sends nothing.

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
    #[command(after_help = "\
Examples:
  ferry send email                  (to every member that published an address)
  ferry send sms --dry-run          (how many SMS it would take; sends nothing)

Exit status: 0 sent (or nothing to send); 1 failed (the line says why); 2 usage mistake.")]
    Send {
        #[command(subcommand)]
        via: exchange::SendVia,
    },
    /// Receive bundles by email (or from an SMS gateway's spool)
    #[command(after_help = "\
Examples:
  ferry receive email
  ferry receive sms                 (Gammu's inbox folder)

Exit status: 0 all applied (or nothing new); 1 something refused (quarantined, the rest
applied) or nothing could be read (the line says why); 2 usage mistake.")]
    Receive {
        #[command(subcommand)]
        via: exchange::ReceiveVia,
    },
    /// SMS gateways that call ferry (HTTP)
    #[command(after_help = "\
Examples:
  ferry sms listen                  (Kannel or an http gateway: receive until Ctrl-C)

Exit status: it runs until stopped; 1 it could not start (the line says why); 2 usage
mistake.")]
    Sms {
        #[command(subcommand)]
        action: exchange::SmsAction,
    },
    /// Serial cables and radios
    #[command(after_help = "\
Examples:
  ferry serial listen /dev/ttyUSB0 --baud 115200    (serve stations until Ctrl-C)

Exit status: it runs until stopped; 1 it could not start (the line says why); 2 usage
mistake.")]
    Serial {
        #[command(subcommand)]
        action: exchange::SerialAction,
    },
    /// Drop history every member already holds, and give the space back to the disk
    #[command(after_help = "\
Examples:
  ferry compact

Exit status: 0 compacted (also when there was nothing to drop); 1 failed (the line says why);
2 usage mistake.")]
    Compact,
    /// Remove deleted records for good (for privacy), once every member has their delete
    #[command(after_help = "\
Examples:
  ferry purge        (a record whose delete has not reached every member yet stays; it says so)

Exit status: 0 purged (also when some must wait); 1 failed (the line says why); 2 usage
mistake.")]
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
    #[command(after_help = "\
Examples:
  ferry doctor
  ferry doctor /media/usb      (also what the stick holds)

Exit status: 0 no problem found (note lines may still say what to look at); 1 a PROBLEM
line, or the check could not run; 2 usage mistake.")]
    Doctor(care::DoctorArgs),
    /// Fields edited on two laptops at once, with every value
    #[command(after_help = "\
Examples:
  ferry conflicts
  ferry conflicts --json

Settle one with `ferry resolve COLLECTION ID FIELD VALUE`.

Exit status: 0 (also with conflicts listed); 1 failed (the line says why); 2 usage mistake.")]
    Conflicts(records::ConflictsArgs),
    /// Inspect a bundle without applying it
    #[command(after_help = "\
Examples:
  ferry verify ~/Downloads/3f2a….ferry
  ferry verify ~/Downloads/3f2a….ferry --json

Exit status: 0 no problem found (a bundle that waits for earlier changes cannot be checked
yet: it says so); 1 damaged, forged, of another dataset, or cannot be checked here (the line
says why); 2 usage mistake.")]
    Verify(care::VerifyArgs),
    /// Sync an app's own SQLite table: every change the app commits becomes a change of a
    /// collection, and what arrives is written into the table
    #[command(after_help = "\
Examples:
  ferry attach clinic.db visits                     (key: the table's primary key)
  ferry attach register.db patients --key uuid --collection patients
  ferry attach --list

The app keeps writing to its table as before, with any SQLite client. `ferry sync`, `import`
and `export` take in what it wrote and write into the table what arrived; `ferry serve` does
both by itself whenever the app commits. A table without a primary key, or whose key is an
INTEGER PRIMARY KEY (a counter each laptop fills on its own), needs --key naming a column
unique across laptops (a UUID, a patient number). `ferry detach` removes every trace.

Exit status: 0 attached; 1 failed (the line says why: no such table, no usable key, …);
2 usage mistake.")]
    Attach(cmd::attach::AttachArgs),
    /// Stop syncing an attached table: its triggers and ferry's tables leave the app's
    /// database (the rows and the records stay)
    #[command(after_help = "\
Examples:
  ferry detach clinic.db visits
  ferry attach --list                  (what is attached, to detach)

The table keeps its rows and the collection its records; changes the app makes from now on
are no longer synced. Attaching the table again takes its rows in again as new changes.

Exit status: 0 detached; 1 failed (the database cannot be written: the line says why);
2 usage mistake (that table is not attached to this home).")]
    Detach(cmd::attach::DetachArgs),
    /// Serve the local API apps use (records, batches, a feed of changes) on this computer
    #[command(after_help = "\
Examples:
  ferry serve                          (http://127.0.0.1:7040; runs until Ctrl-C)
  ferry serve --bind 127.0.0.1:8080
  ferry serve --watch /media/clinic    (syncs each stick mounted there as it appears)
  ferry serve --email-every 5m         (email every 5 minutes; 15 by default with [email])
  ferry serve --install --watch /media/$USER   (start it at boot: a systemd user unit)
  ferry serve --bind 0.0.0.0:7443 --allow-remote --tls-cert cert.pem --tls-key key.pem
  curl -H \"Authorization: Bearer $(ferry token)\" http://127.0.0.1:7040/v1/collections

Every request needs the token `ferry token` prints. Other ferry commands keep working on the
same home while it runs. Email and SMS set up in ferry.toml run by themselves, and a
[serial] device each time it appears; a run that fails is tried again soon, then less often.

Exit status: 0 stopped by Ctrl-C or SIGTERM; 1 could not start (the line says why: no node,
the port is taken, an address other computers reach without --allow-remote and HTTPS);
2 usage mistake.")]
    Serve(serve::ServeArgs),
    /// Print the token apps give `ferry serve` (alone on one line), or replace it
    #[command(after_help = "\
Examples:
  ferry token
  ferry token --rotate      (apps holding the old token are refused from now on)

Exit status: 0 printed; 1 no node in the home folder, or the token file cannot be written;
2 usage mistake.")]
    Token(serve::TokenArgs),
    /// Print a link that opens the status page of `ferry serve` in a browser (once, for 10
    /// minutes)
    #[command(after_help = "\
Examples:
  ferry page      (open the link it prints in a browser on this computer)

Exit status: 0 printed; 1 no node in the home folder, or ferry serve is not running on it;
2 usage mistake.")]
    Page,
    /// Watch three laptops sync through a folder, in a temporary folder
    #[command(after_help = "\
Examples:
  ferry demo
  ferry demo --keep /tmp/ferry-demo     (keep the three laptops' homes and the stick to look at)

Exit status: 0 the three laptops ended with the same records; 1 they did not, or the demo
could not run (the line says why); 2 usage mistake.")]
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
        Command::Rejoin(a) => members::rejoin(home, a),
        Command::Invite(a) => members::invite(home, a),
        Command::Rekey => members::rekey(home),
        Command::Backup { file } => members::backup(home, file),
        Command::Passphrase { action } => members::passphrase(home, action),
        Command::Contact { action } => members::contact(home, action),
        Command::Rule { action } => members::rule(home, action),
        Command::Member { action } => members::member(home, action),
        Command::Put(a) => records::put(home, a),
        Command::Get(a) => records::get(home, a),
        Command::List(a) => records::list(home, a),
        Command::Collections(a) => records::collections(home, a),
        Command::Resolve(a) => records::resolve(home, a),
        Command::Incr(a) => records::incr(home, a),
        Command::Add(a) => records::add(home, a),
        Command::Remove(a) => records::remove(home, a),
        Command::Delete(a) => records::delete(home, a),
        Command::Log(a) => records::log(home, a),
        Command::Restore(a) => records::restore(home, a),
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
        Command::Attach(a) => cmd::attach::attach(home, a),
        Command::Detach(a) => cmd::attach::detach(home, a),
        Command::Serve(a) => serve::serve(home, a),
        Command::Token(a) => serve::token(home, a),
        Command::Page => serve::page(home),
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
        // SQLite's own code ("Error code 26: file is not a database") under its message
        // says the message again.
        let text = match text
            .strip_prefix("Error code ")
            .and_then(|r| r.split_once(": "))
        {
            Some((code, words)) if code.bytes().all(|b| b.is_ascii_digit()) => words.to_string(),
            _ => text,
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
    use clap::CommandFactory;

    /// Every command and subcommand, by its full name ("ferry contact set").
    fn every_command() -> Vec<(String, clap::Command)> {
        fn walk(prefix: &str, c: &clap::Command, out: &mut Vec<(String, clap::Command)>) {
            for sub in c.get_subcommands().filter(|s| s.get_name() != "help") {
                let name = format!("{prefix} {}", sub.get_name());
                out.push((name.clone(), sub.clone()));
                walk(&name, sub, out);
            }
        }
        let mut out = Vec::new();
        walk("ferry", &Cli::command(), &mut out);
        out
    }

    #[test]
    fn every_command_has_examples_and_exit_statuses_in_its_help() {
        let commands = every_command();
        // The walk reaches the nested commands too.
        for name in [
            "ferry put",
            "ferry contact set",
            "ferry sync serial",
            "ferry sms listen",
        ] {
            assert!(commands.iter().any(|(n, _)| n == name), "{name} not found");
        }
        for (name, c) in &commands {
            let after = c
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(after.contains("Examples:\n  ferry "), "{name}: no examples");
            assert!(after.contains("Exit status: "), "{name}: no exit statuses");
            // At least one example runs this command (others may say what to run first).
            assert!(
                examples(&after)
                    .iter()
                    .any(|e| e.starts_with(name.as_str())),
                "{name}: no example runs it"
            );
            // Help is printed as written: lines fit the 100 columns of `max_term_width`.
            for l in after.lines() {
                assert!(l.chars().count() <= 100, "{name}: line too long: {l}");
            }
        }
    }

    /// The example command lines of a help text: the lines of its "Examples:" block that
    /// start with `ferry`, joined with the next line after a trailing backslash (as in a
    /// shell), without the comment in parentheses or a redirection.
    fn examples(help: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut lines = help.lines().skip_while(|l| *l != "Examples:").skip(1);
        while let Some(l) = lines.next().filter(|l| !l.is_empty()) {
            let Some(example) = l.strip_prefix("  ferry ") else {
                continue;
            };
            let mut example = format!("ferry {example}");
            while example.ends_with('\\') {
                example.pop();
                example.push_str(lines.next().unwrap_or_default().trim_start());
            }
            let command = example.split("  (").next().unwrap_or_default();
            let command = command.split(" > ").next().unwrap_or_default();
            out.push(command.trim_end().to_string());
        }
        out
    }

    #[test]
    fn the_help_examples_parse() {
        let mut checked = 0;
        for (name, c) in every_command() {
            let after = c
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            for example in examples(&after) {
                if let Err(e) = Cli::try_parse_from(shell_words(&example)) {
                    panic!("{name}: the example {example:?} does not parse: {e}");
                }
                checked += 1;
            }
        }
        assert!(checked > 60, "only {checked} examples found");
    }

    /// Splits a command line as a shell does, for the quoting the examples use: words apart
    /// at spaces, '…' and "…" quoted (the quotes removed).
    fn shell_words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word: Option<String> = None;
        let mut quote: Option<char> = None;
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => word.get_or_insert_default().push(c),
                (None, '\'' | '"') => {
                    quote = Some(c);
                    word.get_or_insert_default();
                }
                (None, ' ') => words.extend(word.take()),
                (None, c) => word.get_or_insert_default().push(c),
            }
        }
        words.extend(word);
        words
    }

    #[test]
    fn shell_words_takes_the_quotes_off_as_bash_does() {
        assert_eq!(
            shell_words(r#"ferry put p 1 village="Kisumu Ndogo" 'code="34"'"#),
            [
                "ferry",
                "put",
                "p",
                "1",
                "village=Kisumu Ndogo",
                "code=\"34\""
            ]
        );
    }

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
    fn an_sqlite_code_under_its_own_message_is_not_said_twice() {
        #[derive(Debug)]
        struct Coded;
        impl std::fmt::Display for Coded {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("Error code 26: file is not a database")
            }
        }
        impl std::error::Error for Coded {}
        let e = anyhow::Error::new(Coded).context("notes.csv: file is not a database");
        assert_eq!(one_line(&e), "notes.csv: file is not a database");
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
