//! Commands on records: put, get, list, collections, resolve, incr, add, remove, delete,
//! load, dump and conflicts.

use super::{count, open};
use crate::output::{self, Bar, out};
use anyhow::{Context, Result, bail};
use clap::Args;
use ferry_model::{Rule, Shown, Value};
use ferry_node::{FileFormat, Node, NodeError, json};
use std::io::Write as _;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub(crate) struct PutArgs {
    /// Collection, e.g. visits
    collection: String,
    /// Record id, e.g. v-2026-000123
    id: String,
    /// One or more FIELD=VALUE (to keep 34 as text, write 'code="34"')
    #[arg(required = true, value_name = "FIELD=VALUE")]
    fields: Vec<String>,
}

#[derive(Args)]
pub(crate) struct GetArgs {
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
}

#[derive(Args)]
pub(crate) struct ListArgs {
    /// Collection
    collection: String,
    /// Print a JSON array of {"id", "fields"}
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct CollectionsArgs {
    /// Print a JSON array of {"name", "records"}
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct ResolveArgs {
    /// Collection
    #[arg(required_unless_present = "all")]
    collection: Option<String>,
    /// Record id
    #[arg(required_unless_present = "all")]
    id: Option<String>,
    /// The conflicted field
    #[arg(required_unless_present = "all")]
    field: Option<String>,
    /// The value to keep (same typing as `put`)
    #[arg(required_unless_present = "all")]
    value: Option<String>,
    /// Settle every conflict (of --collection, on --field) at once, keeping the value
    /// --prefer picks, in one change
    #[arg(long, conflicts_with_all = ["collection", "id", "field", "value"], requires = "prefer")]
    all: bool,
    /// With --all: only this collection's conflicts
    #[arg(long = "collection", value_name = "COLLECTION", requires = "all")]
    only_collection: Option<String>,
    /// With --all: only conflicts on this field
    #[arg(long = "field", value_name = "FIELD", requires = "all")]
    only_field: Option<String>,
    /// With --all: which value to keep — latest (the one shown), max, min, or author=LABEL
    /// (the value that member wrote; conflicts without one are left)
    #[arg(long, value_name = "PREFERENCE", requires = "all")]
    prefer: Option<ferry_node::Prefer>,
    /// With --all: only say what it would settle; change nothing
    #[arg(long, requires = "all")]
    dry_run: bool,
}

#[derive(Args)]
pub(crate) struct IncrArgs {
    /// Collection
    collection: String,
    /// Record id
    id: String,
    /// Field
    field: String,
    /// The amount
    #[arg(allow_hyphen_values = true)]
    by: i64,
}

#[derive(Args)]
pub(crate) struct AddArgs {
    /// Collection
    collection: String,
    /// Record id
    id: String,
    /// Field
    field: String,
    /// The strings to add
    #[arg(required = true)]
    values: Vec<String>,
}

#[derive(Args)]
pub(crate) struct RemoveArgs {
    /// Collection
    collection: String,
    /// Record id
    id: String,
    /// Field
    field: String,
    /// The strings to remove
    #[arg(required = true)]
    values: Vec<String>,
}

#[derive(Args)]
pub(crate) struct DeleteArgs {
    /// Collection
    collection: String,
    /// Record id
    id: String,
}

#[derive(Args)]
pub(crate) struct LogArgs {
    /// Collection
    collection: String,
    /// Record id
    id: String,
    /// Print JSON: {"collection", "id", "truncated", "entries": [{"author", "seq", "at",
    /// "deleted", "complete", "fields": [{"field", "before", "after", "concurrent"}]}]}
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct LoadArgs {
    /// Collection
    collection: String,
    /// The file ("-" for standard input)
    file: PathBuf,
    /// The file is CSV with a header row (the id in the column "id"), not JSON lines
    #[arg(long)]
    csv: bool,
}

#[derive(Args)]
pub(crate) struct DumpArgs {
    /// Collection
    collection: String,
    /// Write CSV (a header row, then one row per record) instead of JSON lines
    #[arg(long)]
    csv: bool,
    /// Write to FILE (replaced once complete, readable only by you) instead of standard
    /// output
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct ConflictsArgs {
    /// Print a JSON array of {"collection", "id", "field", "winner", "values"}
    #[arg(long)]
    json: bool,
}

/// `ferry put`.
pub(crate) fn put(home: Option<PathBuf>, a: PutArgs) -> Result<()> {
    let fields = a
        .fields
        .iter()
        .map(|f| parse_field(f))
        .collect::<Result<Vec<_>, _>>()?;
    let mut node = open(home)?;
    if node.put(&a.collection, &a.id, &fields)? == 0 {
        out(format_args!(
            "unchanged: {}/{} already shows {}; nothing was written",
            a.collection,
            a.id,
            if fields.len() == 1 {
                "this value"
            } else {
                "these values"
            }
        ))?;
    }
    Ok(())
}

/// `ferry get`.
pub(crate) fn get(home: Option<PathBuf>, a: GetArgs) -> Result<()> {
    let GetArgs {
        collection,
        id,
        json: as_json,
        conflicts,
    } = a;
    let mut node = open(home)?;
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
            if conflicts && conflicted.contains(&f) {
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
    Ok(())
}

/// `ferry list`.
pub(crate) fn list(home: Option<PathBuf>, a: ListArgs) -> Result<()> {
    let collection = a.collection;
    let mut node = open(home)?;
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    if a.json {
        // For scripts, a collection with no records here is `[]` (a fresh laptop before its
        // first sync); a person reading stderr is told.
        warn_no_collection(&mut node, &collection)?;
        node.list_json(&collection, &mut w)?;
    } else {
        node.require_collection(&collection)?;
        let rules = node.rules()?;
        node.for_each_record(&collection, |id, r| {
            let line = record_line(id, r.shown_with(|f| rules.of(&collection, f)));
            writeln!(w, "{line}").map_err(|source| NodeError::Io {
                what: "cannot write",
                path: "output".into(),
                source,
            })
        })?;
    }
    w.flush()?;
    Ok(())
}

/// `ferry collections`.
pub(crate) fn collections(home: Option<PathBuf>, a: CollectionsArgs) -> Result<()> {
    let mut node = open(home)?;
    let collections = node.collections()?;
    if a.json {
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
                "{}  {}",
                output::shown(c),
                count(*n, "record", "records")
            ))?;
        }
    }
    Ok(())
}

/// `ferry resolve`.
pub(crate) fn resolve(home: Option<PathBuf>, a: ResolveArgs) -> Result<()> {
    if a.all {
        return resolve_all(home, a);
    }
    let (Some(collection), Some(id), Some(field), Some(value)) =
        (a.collection, a.id, a.field, a.value)
    else {
        unreachable!("clap requires them without --all");
    };
    let mut node = open(home)?;
    node.resolve(&collection, &id, &field, Value::parse(&value))?;
    out(format_args!(
        "Resolved {collection}/{id} {field} = {value}; the other laptops drop the conflict once this change reaches them"
    ))
}

/// `ferry log`.
pub(crate) fn log(home: Option<PathBuf>, a: LogArgs) -> Result<()> {
    let mut node = open(home)?;
    let log = node.log(&a.collection, &a.id)?;
    if a.json {
        return out(format_args!("{}", serde_json::to_string_pretty(&log)?));
    }
    out(format_args!(
        "{}/{}: {}{}",
        output::shown(&log.collection),
        output::shown(&log.id),
        count(log.entries.len() as u64, "change held", "changes held"),
        if log.truncated {
            " (older history was compacted away on this laptop: it starts here; values from before it show as ?)"
        } else {
            ""
        }
    ))?;
    for e in &log.entries {
        let unknown = if e.complete { "—" } else { "?" };
        let what = if e.deleted {
            "deleted".to_string()
        } else {
            e.fields
                .iter()
                .map(|f| {
                    let show = |s: &Option<Shown>| {
                        s.as_ref()
                            .map_or_else(|| unknown.to_string(), output::field_value)
                    };
                    let after = match &f.after {
                        Some(s) => output::field_value(s),
                        None => "(none)".to_string(),
                    };
                    let concurrent = match f.concurrent {
                        0 => String::new(),
                        n => format!(" (+{n} concurrent)"),
                    };
                    format!(
                        "{}: {} → {after}{concurrent}",
                        output::shown(&f.field),
                        show(&f.before)
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        out(format_args!(
            "{}  {} #{}  {what}",
            e.at,
            output::shown(&e.author),
            e.seq
        ))?;
    }
    Ok(())
}

/// `ferry restore`.
pub(crate) fn restore(home: Option<PathBuf>, a: DeleteArgs) -> Result<()> {
    let mut node = open(home)?;
    let r = node.restore(&a.collection, &a.id)?;
    out(format_args!(
        "Restored {}/{} ({}) as it was before {} deleted it at {}; the other laptops get it with the next sync",
        output::shown(&a.collection),
        output::shown(&a.id),
        count(r.fields as u64, "field", "fields"),
        output::shown(&r.deleted_by),
        r.deleted_at
    ))
}

/// `ferry resolve --all`.
fn resolve_all(home: Option<PathBuf>, a: ResolveArgs) -> Result<()> {
    let prefer = a.prefer.expect("clap requires --prefer with --all");
    let mut node = open(home)?;
    let r = node.resolve_all(
        a.only_collection.as_deref(),
        a.only_field.as_deref(),
        &prefer,
        a.dry_run,
    )?;
    let verb = if r.dry_run { "would keep" } else { "kept" };
    for s in &r.settled {
        out(format_args!(
            "{verb} {}/{} {} = {} (by {}, of {} values)",
            output::shown(&s.collection),
            output::shown(&s.id),
            output::shown(&s.field),
            output::value(&s.value),
            output::shown(&s.author),
            s.of
        ))?;
    }
    for l in &r.left {
        out(format_args!("left     {}", output::shown(l)))?;
    }
    let n = r.settled.len();
    let conflicts = count(n as u64, "conflict", "conflicts");
    match (n, r.dry_run) {
        (0, _) => out(format_args!(
            "no conflict to settle{}",
            if r.left.is_empty() {
                " matches (see `ferry conflicts`)"
            } else {
                " this way"
            }
        )),
        (_, true) => out(format_args!(
            "would resolve {conflicts} in one change (nothing was written: run it again without --dry-run)"
        )),
        (_, false) => out(format_args!(
            "resolved {conflicts} in one change; the other laptops drop {} once it reaches them",
            if n == 1 { "it" } else { "them" }
        )),
    }
}

/// `ferry incr`.
pub(crate) fn incr(home: Option<PathBuf>, a: IncrArgs) -> Result<()> {
    let mut node = open(home)?;
    node.incr(&a.collection, &a.id, &a.field, a.by)?;
    Ok(())
}

/// `ferry add`.
pub(crate) fn add(home: Option<PathBuf>, a: AddArgs) -> Result<()> {
    let mut node = open(home)?;
    node.set_add(&a.collection, &a.id, &a.field, &a.values)?;
    Ok(())
}

/// `ferry remove`.
pub(crate) fn remove(home: Option<PathBuf>, a: RemoveArgs) -> Result<()> {
    let mut node = open(home)?;
    node.set_remove(&a.collection, &a.id, &a.field, &a.values)?;
    Ok(())
}

/// `ferry delete`.
pub(crate) fn delete(home: Option<PathBuf>, a: DeleteArgs) -> Result<()> {
    let DeleteArgs { collection, id } = a;
    let mut node = open(home)?;
    if !node.delete(&collection, &id)? {
        node.require_collection(&collection)?;
        bail!("no record {id:?} in collection {collection:?}");
    }
    Ok(())
}

/// `ferry load`.
pub(crate) fn load(home: Option<PathBuf>, a: LoadArgs) -> Result<()> {
    let LoadArgs {
        collection,
        file,
        csv,
    } = a;
    ferry_node::check_collection(&collection)?;
    let mut node = open(home)?;
    let format = format(csv);
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
    if r.unchanged == 0 {
        return out(format_args!(
            "Loaded {} into {collection:?}",
            count(r.records, "record", "records")
        ));
    }
    out(format_args!(
        "Loaded {} into {collection:?}: {} changed, {} unchanged (nothing is written or sent for those)",
        count(r.records + r.unchanged, "record", "records"),
        r.records,
        r.unchanged
    ))
}

/// `ferry dump`.
pub(crate) fn dump(home: Option<PathBuf>, a: DumpArgs) -> Result<()> {
    let DumpArgs {
        collection,
        csv,
        out: path,
    } = a;
    let mut node = open(home)?;
    warn_no_collection(&mut node, &collection)?;
    let format = format(csv);
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
    Ok(())
}

/// `ferry conflicts`.
pub(crate) fn conflicts(home: Option<PathBuf>, a: ConflictsArgs) -> Result<()> {
    let mut node = open(home)?;
    let c = node.conflicts()?;
    if a.json {
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
    Ok(())
}

/// Reads one `FIELD=VALUE` of `put`: the field is what comes before the first `=`, the value
/// is typed by [`Value::parse`]. No `=` is a usage mistake.
fn parse_field(arg: &str) -> Result<(String, Value), NodeError> {
    let Some((field, value)) = arg.split_once('=') else {
        return Err(NodeError::BadArgument(format!(
            "{arg:?} is not FIELD=VALUE (for example weight_kg=61.5, or village=\"Kisumu Ndogo\")"
        )));
    };
    Ok((field.to_string(), Value::parse(value)))
}

/// The line `ferry list` prints for one record: its id, then `FIELD=VALUE` for every field,
/// two spaces apart.
fn record_line<'a>(id: &str, fields: impl IntoIterator<Item = (&'a str, Shown)>) -> String {
    let fields: Vec<String> = fields
        .into_iter()
        .map(|(f, v)| format!("{}={}", output::shown(f), output::field_value(&v)))
        .collect();
    format!("{}  {}", output::shown(id), fields.join("  "))
}

fn format(csv: bool) -> FileFormat {
    if csv {
        FileFormat::Csv
    } else {
        FileFormat::JsonLines
    }
}

/// Writes FILE through `write`, replacing it only once everything was written and flushed
/// to disk: a failure leaves FILE as it was. The new file is readable only by its owner.
fn write_replacing<T>(
    path: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> Result<T>,
) -> Result<T> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
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
        Err(e @ NodeError::NoCollection { .. }) => {
            eprintln!("ferry: warning: {}", output::shown_sentence(&e.to_string()));
            Ok(())
        }
        other => Ok(other?),
    }
}

/// A member's label, or its number.
fn node_label(node: &mut Node, m: ferry_model::MemberId) -> String {
    node.labels()
        .ok()
        .and_then(|l| l.get(&m).cloned())
        .unwrap_or_else(|| m.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use ferry_node::ErrorKind;

    fn parse(args: &[&str]) -> Command {
        crate::cmd::parse(args).unwrap_or_else(|e| panic!("{args:?} does not parse: {e}"))
    }

    /// The clap error a command line gets (exit status 2, as every clap error).
    fn refused(args: &[&str]) -> clap::Error {
        match crate::cmd::parse(args) {
            Ok(_) => panic!("{args:?} parsed, but should be a usage mistake"),
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{args:?}: {e}");
                e
            }
        }
    }

    #[test]
    fn parse_field_splits_at_the_first_equals_sign_and_types_the_value() {
        let check = |arg: &str, field: &str, value: Value| {
            assert_eq!(
                parse_field(arg).unwrap(),
                (field.to_string(), value),
                "{arg}"
            );
        };
        check("weight_kg=61.5", "weight_kg", Value::Float(61.5));
        check("age_years=34", "age_years", Value::Int(34));
        // What bash passes for `'code="34"'`: quoted, so it stays text.
        check("code=\"34\"", "code", Value::Str("34".into()));
        // What bash passes for `village="Kisumu Ndogo"`: the quotes are the shell's.
        check(
            "village=Kisumu Ndogo",
            "village",
            Value::Str("Kisumu Ndogo".into()),
        );
        check("formula=a=b", "formula", Value::Str("a=b".into()));
        check("note=", "note", Value::Str(String::new()));
        check("followup=true", "followup", Value::Bool(true));
        check("code=0042", "code", Value::Str("0042".into()));
    }

    #[test]
    fn parse_field_without_equals_is_a_usage_mistake_with_an_example() {
        let e = parse_field("weight").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Usage);
        assert_eq!(
            e.to_string(),
            "\"weight\" is not FIELD=VALUE (for example weight_kg=61.5, or village=\"Kisumu Ndogo\")"
        );
    }

    #[test]
    fn put_needs_at_least_one_field_and_keeps_them_in_order() {
        match parse(&["put", "visits", "v-1", "a=1", "b=two"]) {
            Command::Put(a) => {
                assert_eq!((a.collection.as_str(), a.id.as_str()), ("visits", "v-1"));
                assert_eq!(a.fields, ["a=1", "b=two"]);
            }
            _ => panic!("not put"),
        }
        let e = refused(&["put", "visits", "v-1"]);
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn incr_takes_a_negative_amount_and_refuses_a_non_number() {
        match parse(&["incr", "stock", "kisumu", "nets", "-30"]) {
            Command::Incr(a) => assert_eq!(a.by, -30),
            _ => panic!("not incr"),
        }
        let e = refused(&["incr", "stock", "kisumu", "nets", "thirty"]);
        assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn load_and_dump_options() {
        match parse(&["load", "--csv", "visits", "-"]) {
            Command::Load(a) => {
                assert!(a.csv);
                assert_eq!(a.file, Path::new("-"));
            }
            _ => panic!("not load"),
        }
        match parse(&["dump", "visits", "--out", "v.csv", "--csv"]) {
            Command::Dump(a) => {
                assert!(a.csv);
                assert_eq!(a.out.as_deref(), Some(Path::new("v.csv")));
            }
            _ => panic!("not dump"),
        }
        refused(&["load", "visits"]);
        refused(&["add", "patients", "p-1", "tags"]);
    }

    #[test]
    fn record_line_shows_the_id_then_every_field() {
        let fields = vec![
            ("age", Shown::Value(Value::Int(34))),
            ("village", Shown::Value(Value::Str("Kisumu Ndogo".into()))),
        ];
        assert_eq!(
            record_line("v-1", fields),
            "v-1  age=34  village=Kisumu Ndogo"
        );
        // An id cannot rewrite the screen; a record without fields keeps the separator.
        assert_eq!(record_line("v\r2", Vec::new()), "v\\r2  ");
    }

    #[test]
    fn write_replacing_leaves_the_file_as_it_was_when_writing_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("visits.csv");
        std::fs::write(&path, "old").unwrap();
        let e = write_replacing(&path, |w| -> Result<()> {
            w.write_all(b"half")?;
            bail!("the store failed")
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "the store failed");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        let n = write_replacing(&path, |w| {
            w.write_all(b"new")?;
            Ok(3)
        })
        .unwrap();
        assert_eq!(n, 3);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        // Nothing is left behind in the folder.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
