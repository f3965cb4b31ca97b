//! `ferry attach` and `ferry detach`: an app's own SQLite table kept in step with a
//! collection; and the run every exchange makes of the attached tables.

use super::{count, open};
use crate::output::{self, out};
use anyhow::{Result, bail};
use clap::Args;
use ferry_node::{AttachRun, Node};
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct AttachArgs {
    /// The app's SQLite database file
    #[arg(required_unless_present = "list")]
    db: Option<PathBuf>,
    /// The table to sync
    #[arg(required_unless_present = "list")]
    table: Option<String>,
    /// The collection its rows become records of (default: the table's name)
    #[arg(long)]
    collection: Option<String>,
    /// A column unique across laptops that identifies a row (repeat for a key of several
    /// columns); default: the table's primary key
    #[arg(long = "key", value_name = "COLUMN")]
    key: Vec<String>,
    /// List the attached tables instead
    #[arg(long, conflicts_with_all = ["db", "table", "collection", "key"])]
    list: bool,
    /// With --list: print a JSON array
    #[arg(long, requires = "list")]
    json: bool,
}

#[derive(Args)]
pub(crate) struct DetachArgs {
    /// The app's SQLite database file
    db: PathBuf,
    /// The attached table
    table: String,
}

/// One line per attached table that something happened to, and its notes.
pub(crate) fn print_runs(runs: &[AttachRun]) -> Result<()> {
    for r in runs {
        if r.captured + r.written + r.deleted > 0 {
            out(format_args!(
                "APP      table {} of {}: {} from the app, {} written into it, {} deleted from it",
                output::shown(&r.table),
                output::shown(&r.db.display().to_string()),
                count(r.captured as u64, "row", "rows"),
                count(r.written as u64, "row", "rows"),
                count(r.deleted as u64, "row", "rows"),
            ))?;
        }
        for n in &r.notes {
            out(format_args!("NOTE     {}", output::shown(n)))?;
        }
    }
    Ok(())
}

/// Runs the attached tables, if any, and says what happened: called before an exchange
/// (so what the app wrote leaves with it) and after one (so what arrived reaches the app).
pub(crate) fn run(node: &mut Node) -> Result<()> {
    if !node.has_attachments()? {
        return Ok(());
    }
    let runs = node.run_attached()?;
    print_runs(&runs)
}

/// `ferry attach`.
pub(crate) fn attach(home: Option<PathBuf>, a: AttachArgs) -> Result<()> {
    let mut node = open(home)?;
    if a.list {
        let list = node.attachments()?;
        if a.json {
            return out(format_args!("{}", serde_json::to_string(&list)?));
        }
        if list.is_empty() {
            return out(format_args!(
                "No table is attached: `ferry attach APP.db TABLE` syncs one."
            ));
        }
        for t in &list {
            out(format_args!(
                "{}  table {} of {}  key {}  {}{}",
                output::shown(&t.collection),
                output::shown(&t.table),
                output::shown(&t.db.display().to_string()),
                output::shown(&t.key.join(", ")),
                count(t.columns.len() as u64, "column", "columns"),
                match &t.problem {
                    Some(p) => format!("  PROBLEM: {}", output::shown(p)),
                    None => String::new(),
                }
            ))?;
        }
        return Ok(());
    }
    let (Some(db), Some(table)) = (a.db, a.table) else {
        bail!("give the app's database and the table: ferry attach APP.db TABLE");
    };
    let r = node.attach(&db, &table, a.collection.as_deref(), &a.key)?;
    out(format_args!(
        "ATTACHED table {} of {} as collection {}: {} taken in, {} written into it",
        output::shown(&r.table),
        output::shown(&r.db.display().to_string()),
        output::shown(&r.collection),
        count(r.captured as u64, "row", "rows"),
        count(r.written as u64, "row", "rows"),
    ))?;
    for n in &r.notes {
        out(format_args!("NOTE     {}", output::shown(n)))?;
    }
    out(format_args!(
        "Every change the app makes to it now syncs with `ferry sync` (or by itself under `ferry serve`)."
    ))
}

/// `ferry detach`.
pub(crate) fn detach(home: Option<PathBuf>, a: DetachArgs) -> Result<()> {
    let mut node = open(home)?;
    node.detach(&a.db, &a.table)?;
    out(format_args!(
        "DETACHED table {} of {}: its triggers and ferry's tables are gone from the database; its rows and the collection's records stay",
        output::shown(&a.table),
        output::shown(&a.db.display().to_string())
    ))
}
