//! Records in and out of files: `load` reads JSON lines or CSV, `dump` writes them, and
//! `list --json` prints a collection. Each one streams: it holds one record at a time,
//! however large the file or the collection.
//!
//! A CSV cell is read exactly as a value typed after `FIELD=` on the command line
//! ([`Value::parse`]), and `dump --csv` writes each value as the text that reads back as it
//! ([`Value::to_typed_text`]), so a dump loads back with every value and its type.
//!
//! A file is loaded in one transaction: a bad line, or an id on two lines, refuses the whole
//! file and nothing of it is written. The ids already met are kept in the store's temporary
//! table, not in memory, so a file of millions of lines loads in the same few megabytes.

use crate::node::{check_collection, check_field, for_each_live};
use crate::progress::{Progress, Unit};
use crate::time::now_ms;
use crate::{Node, NodeError, json};
use ferry_model::{Change, Op, Shown, Value, limits};
use ferry_sync::Storage as _;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Read, Write};

/// Records per commit when loading in bulk…
const LOAD_BATCH: usize = 1000;
/// …and at most this many ops and (about) this many bytes, well within a commit's limits
/// (bundles/SPEC.md §8), however wide or large the rows are.
pub(crate) const LOAD_BATCH_OPS: usize = 65_536;
pub(crate) const LOAD_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Excel and Notepad begin a UTF-8 file with these bytes; `load` skips them and `dump --csv`
/// writes them, so that Excel reads the accents of a dump right.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The advice for a file that is not UTF-8.
const SAVE_UTF8: &str =
    "save it as UTF-8 text (in Excel: \"CSV UTF-8 (Comma delimited)\") and load it again";

/// The advice for one bad line.
const FIX_LINE: &str = "correct that line and load the file again";

/// How records are written in a file, for [`Node::load`] and [`Node::dump`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileFormat {
    /// One JSON object per line, with the record id under `"id"`; values are JSON values,
    /// bytes `{"$base64": "…"}`, a set an array of strings.
    JsonLines,
    /// CSV (RFC 4180) whose first row names the columns; the record id is in the column
    /// named `id`, every other cell is read as after `FIELD=` on the command line, and an
    /// empty cell leaves its field as it is.
    Csv,
}

/// What `load` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadReport {
    /// Records written (changed or new).
    pub records: u64,
    /// Records of the file that already showed its values: nothing written for them.
    pub unchanged: u64,
    /// Commits made.
    pub commits: u64,
}

impl Node {
    /// Loads the records of a file (JSON lines or CSV) into `collection`, in one
    /// transaction: either every line is loaded or none. A UTF-8 byte-order mark at the start
    /// is skipped. An id that appears on two lines refuses the file, naming both lines.
    pub fn load(
        &mut self,
        collection: &str,
        format: FileFormat,
        input: &mut dyn BufRead,
        total_bytes: Option<u64>,
        progress: &dyn Progress,
    ) -> Result<LoadReport, NodeError> {
        check_collection(collection)?;
        let mut input = without_bom(input)?;
        let mut rows: Box<dyn Rows + '_> = match format {
            FileFormat::JsonLines => Box::new(JsonRows::new(collection, &mut input)),
            FileFormat::Csv => Box::new(CsvRows::new(collection, &mut input)?),
        };
        let now = now_ms();
        let mut report = LoadReport::default();
        let mut tx = self.store.transaction(now)?;
        // A laptop set up before this ferry says first that it reads columnar bundles.
        if !crate::node::reads_announced(&tx, self.id.me)? {
            let me = self.id.me;
            self.engine
                .commit_local(&mut tx, vec![crate::node::reads_change(me)], now)?;
        }
        // Into a collection with no record yet (the usual first load), no line can repeat
        // a value already shown: nothing to look up.
        let fresh = !tx.has_collection(collection)?;
        tx.begin_seen()?;
        let mut batch = Vec::with_capacity(LOAD_BATCH);
        let (mut batch_ops, mut batch_bytes) = (0usize, 0usize);
        let mut shown_bytes = 0;
        progress.begin(&format!("loading {collection}"), total_bytes, Unit::Bytes);
        while let Some(Row { line, change }) = rows.next_row()? {
            let read = rows.bytes_read();
            progress.advance(read.saturating_sub(shown_bytes));
            shown_bytes = read;
            let mut change = change;
            if let Change::Record { id, ops, .. } = &mut change {
                if let Some(first) = tx.seen_at(id, line)? {
                    return Err(refused(
                        format!("id {id:?} appears on line {first} and line {line}"),
                        "keep one line per record",
                    ));
                }
                // Values the record already shows are not written again.
                let state = if fresh {
                    None
                } else {
                    tx.record(collection, id)?
                };
                *ops = crate::node::changing_ops(state.as_ref(), std::mem::take(ops), false);
                if ops.is_empty() {
                    report.unchanged += 1;
                    continue;
                }
                *ops = crate::node::with_revival(state.as_ref(), std::mem::take(ops));
            }
            let (ops, bytes) = change_size(&change);
            if !batch.is_empty()
                && (batch_ops + ops > LOAD_BATCH_OPS || batch_bytes + bytes > LOAD_BATCH_BYTES)
            {
                report.records += batch.len() as u64;
                report.commits += 1;
                self.engine
                    .commit_local(&mut tx, std::mem::take(&mut batch), now)?;
                (batch_ops, batch_bytes) = (0, 0);
            }
            batch.push(change);
            batch_ops += ops;
            batch_bytes += bytes;
            if batch.len() == LOAD_BATCH {
                report.records += batch.len() as u64;
                report.commits += 1;
                self.engine
                    .commit_local(&mut tx, std::mem::take(&mut batch), now)?;
                (batch_ops, batch_bytes) = (0, 0);
            }
        }
        if !batch.is_empty() {
            report.records += batch.len() as u64;
            report.commits += 1;
            self.engine.commit_local(&mut tx, batch, now)?;
        }
        tx.end_seen()?;
        tx.commit()?;
        progress.end();
        Ok(report)
    }

    /// Writes every live record of `collection` to `out` in id order, as the store reads
    /// them, and returns how many. The inverse of [`Node::load`] in the same format.
    ///
    /// CSV: a header row `id` and then every field that any record has, sorted by name
    /// (found in a first pass over the same snapshot); a field a record does not have is an
    /// empty cell. A set or raw bytes have no form in a cell: a collection holding one is
    /// refused before anything is written.
    pub fn dump(
        &mut self,
        collection: &str,
        format: FileFormat,
        out: &mut dyn Write,
    ) -> Result<u64, NodeError> {
        let rules = self.rules()?;
        let rule_of = |f: &str| rules.of(collection, f);
        let mut tx = self.store.read()?;
        let mut n = 0;
        match format {
            FileFormat::JsonLines => {
                for_each_live(&mut tx, collection, |id, r| {
                    let mut obj = serde_json::Map::new();
                    obj.insert("id".into(), id.into());
                    obj.extend(json::record_to_json(r, rule_of));
                    serde_json::to_writer(&mut *out, &obj).map_err(json_write_error)?;
                    out.write_all(b"\n").map_err(write_error)?;
                    n += 1;
                    Ok(())
                })?;
            }
            FileFormat::Csv => {
                let mut fields = BTreeSet::new();
                for_each_live(&mut tx, collection, |id, r| {
                    for (f, shown) in r.shown_with(rule_of) {
                        cell_text(collection, id, f, &shown)?;
                        if !fields.contains(f) {
                            fields.insert(f.to_string());
                        }
                    }
                    Ok(())
                })?;
                let columns: BTreeMap<&str, usize> = fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| (f.as_str(), i + 1))
                    .collect();
                out.write_all(UTF8_BOM).map_err(write_error)?;
                let mut w = csv::Writer::from_writer(&mut *out);
                w.write_record(std::iter::once("id").chain(columns.keys().copied()))
                    .map_err(csv_write_error)?;
                let mut row = vec![String::new(); columns.len() + 1];
                for_each_live(&mut tx, collection, |id, r| {
                    row.iter_mut().for_each(String::clear);
                    row[0].push_str(id);
                    for (f, shown) in r.shown_with(rule_of) {
                        // Every field was seen by the first pass, in the same snapshot.
                        if let Some(&i) = columns.get(f) {
                            row[i] = cell_text(collection, id, f, &shown)?;
                        }
                    }
                    w.write_record(&row).map_err(csv_write_error)?;
                    n += 1;
                    Ok(())
                })?;
                w.flush().map_err(write_error)?;
            }
        }
        Ok(n)
    }

    /// Writes `collection` as one JSON array of `{"id", "fields"}`, sorted by id, and a
    /// newline, as the store reads the records; returns how many.
    pub fn list_json(&mut self, collection: &str, out: &mut dyn Write) -> Result<u64, NodeError> {
        let rules = self.rules()?;
        let mut n = 0;
        out.write_all(b"[").map_err(write_error)?;
        self.for_each_record(collection, |id, r| {
            if n > 0 {
                out.write_all(b",").map_err(write_error)?;
            }
            let fields = json::record_to_json(r, |f| rules.of(collection, f));
            serde_json::to_writer(
                &mut *out,
                &serde_json::json!({ "id": id, "fields": fields }),
            )
            .map_err(json_write_error)?;
            n += 1;
            Ok(())
        })?;
        out.write_all(b"]\n").map_err(write_error)?;
        Ok(n)
    }
}

/// The text of a CSV cell for a field: what reads back as the same value when loaded.
fn cell_text(collection: &str, id: &str, field: &str, shown: &Shown) -> Result<String, NodeError> {
    let cannot = |what: &'static str| NodeError::NotCsv {
        collection: collection.into(),
        id: id.into(),
        field: field.into(),
        what,
    };
    match shown {
        Shown::Value(v) => v.to_typed_text().ok_or_else(|| cannot("holds raw bytes")),
        Shown::Set(_) => Err(cannot("is a set")),
    }
}

fn write_error(e: std::io::Error) -> NodeError {
    NodeError::io("cannot write", "output", e)
}

fn json_write_error(e: serde_json::Error) -> NodeError {
    // An I/O error comes back as the io::Error it was (a closed pipe stays one).
    write_error(e.into())
}

fn csv_write_error(e: csv::Error) -> NodeError {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => write_error(e),
        other => NodeError::Internal(format!("cannot write CSV: {other:?}")),
    }
}

/// A refused file: what is wrong, and what to do.
fn refused(problem: impl Into<String>, advice: impl Into<String>) -> NodeError {
    NodeError::LoadRefused {
        problem: problem.into(),
        advice: advice.into(),
    }
}

/// The input without a UTF-8 byte-order mark at its start; UTF-16 text is refused.
fn without_bom(input: &mut dyn BufRead) -> Result<impl BufRead + '_, NodeError> {
    let mut head = Vec::with_capacity(UTF8_BOM.len());
    while head.len() < UTF8_BOM.len() {
        let buf = input
            .fill_buf()
            .map_err(|source| NodeError::ReadInput { line: None, source })?;
        if buf.is_empty() {
            break;
        }
        let take = (UTF8_BOM.len() - head.len()).min(buf.len());
        head.extend_from_slice(&buf[..take]);
        input.consume(take);
    }
    if head.starts_with(b"\xFF\xFE") || head.starts_with(b"\xFE\xFF") {
        return Err(refused("the file is UTF-16 text", SAVE_UTF8));
    }
    if head == UTF8_BOM {
        head.clear();
    }
    Ok(std::io::Cursor::new(head).chain(input))
}

/// One record read from a file, and the line it starts on.
struct Row {
    line: u64,
    change: Change,
}

/// A file's records, one at a time.
trait Rows {
    /// The next record, or `None` at the end of the file.
    fn next_row(&mut self) -> Result<Option<Row>, NodeError>;
    /// Bytes read so far.
    fn bytes_read(&self) -> u64;
}

/// JSON lines: one object per line; blank lines are skipped.
struct JsonRows<'a, R> {
    collection: &'a str,
    input: R,
    line: String,
    line_no: u64,
    bytes: u64,
}

impl<'a, R: BufRead> JsonRows<'a, R> {
    fn new(collection: &'a str, input: R) -> Self {
        JsonRows {
            collection,
            input,
            line: String::new(),
            line_no: 0,
            bytes: 0,
        }
    }
}

impl<R: BufRead> Rows for JsonRows<'_, R> {
    fn next_row(&mut self) -> Result<Option<Row>, NodeError> {
        loop {
            self.line.clear();
            let n = self.input.read_line(&mut self.line).map_err(|e| {
                let line = self.line_no + 1;
                if e.kind() == std::io::ErrorKind::InvalidData {
                    refused(format!("line {line} is not UTF-8 text"), SAVE_UTF8)
                } else {
                    NodeError::ReadInput {
                        line: Some(line),
                        source: e,
                    }
                }
            })?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            self.bytes += n as u64;
            if self.line.trim().is_empty() {
                continue;
            }
            return match parse_line(self.collection, &self.line) {
                Ok(change) => Ok(Some(Row {
                    line: self.line_no,
                    change,
                })),
                Err(e) => {
                    let start = self.line.trim_start();
                    let advice = if self.line_no > 1 || start.starts_with('{') {
                        FIX_LINE
                    } else if start.starts_with('[') {
                        "give one JSON object per line, not an array (as `ferry dump` writes)"
                    } else {
                        "if it is a CSV file, load it with `ferry load --csv`"
                    };
                    Err(refused(format!("line {}: {e}", self.line_no), advice))
                }
            };
        }
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }
}

fn parse_line(collection: &str, line: &str) -> Result<Change, String> {
    let obj: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    let id = match obj.get("id") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => return Err("needs an \"id\" key holding a non-empty string".into()),
    };
    if id.len() > limits::MAX_RECORD_ID {
        return Err(format!("id longer than {} bytes", limits::MAX_RECORD_ID));
    }
    let mut ops = Vec::with_capacity(obj.len());
    for (k, v) in &obj {
        if k == "id" {
            continue;
        }
        if k.is_empty() || k.len() > limits::MAX_NAME {
            return Err(format!(
                "field names must be 1 to {} bytes",
                limits::MAX_NAME
            ));
        }
        if let serde_json::Value::Array(items) = v {
            // A set: each string is added.
            for item in items {
                let serde_json::Value::String(e) = item else {
                    return Err(format!("field {k:?}: arrays may only hold strings (a set)"));
                };
                ops.push(Op::Add(k.clone(), e.clone()));
            }
            continue;
        }
        let value = json::from_json(v).map_err(|e| format!("field {k:?}: {e}"))?;
        ops.push(Op::Set(k.clone(), value));
    }
    if ops.is_empty() {
        return Err(format!("record {id:?} has no fields"));
    }
    Ok(Change::Record {
        collection: collection.to_string(),
        id,
        ops,
    })
}

/// What a CSV column holds.
enum Column {
    /// The record ids.
    Id,
    /// A field.
    Field(String),
    /// Nothing: a column without a name in the header row, whose cells must be empty.
    Unnamed,
}

/// CSV: a header row, then one record per row; rows whose cells are all empty are skipped.
struct CsvRows<'a, R> {
    collection: &'a str,
    reader: csv::Reader<R>,
    columns: Vec<Column>,
    id_column: usize,
    record: csv::ByteRecord,
}

fn csv_read_error(e: csv::Error) -> NodeError {
    let line = e.position().map(|p| p.line());
    match (e.into_kind(), line) {
        (csv::ErrorKind::Io(source), line) => NodeError::ReadInput { line, source },
        (other, _) => NodeError::BadCsv(format!("{other:?}")),
    }
}

impl<'a, R: Read> CsvRows<'a, R> {
    fn new(collection: &'a str, input: R) -> Result<Self, NodeError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(input);
        let mut header = csv::ByteRecord::new();
        if !reader
            .read_byte_record(&mut header)
            .map_err(csv_read_error)?
        {
            return Err(refused(
                "the file is empty",
                "a CSV file starts with a header row naming its columns, one of them id",
            ));
        }
        let names = header
            .iter()
            .map(std::str::from_utf8)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| refused("line 1 (the header row) is not UTF-8 text", SAVE_UTF8))?;
        let mut columns = Vec::with_capacity(names.len());
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut id_column = None;
        for (i, &name) in names.iter().enumerate() {
            if name.is_empty() {
                columns.push(Column::Unnamed);
                continue;
            }
            if let Some(first) = seen.insert(name, i + 1) {
                return Err(refused(
                    format!(
                        "the header row names column {name:?} twice (columns {first} and {})",
                        i + 1
                    ),
                    "give every column its own name",
                ));
            }
            if name == "id" {
                id_column = Some(i);
                columns.push(Column::Id);
                continue;
            }
            check_field(name).map_err(|e| {
                refused(
                    format!("the header row: column {}: {e}", i + 1),
                    "rename that column",
                )
            })?;
            columns.push(Column::Field(name.to_string()));
        }
        let Some(id_column) = id_column else {
            return Err(no_id_column(&names));
        };
        Ok(CsvRows {
            collection,
            reader,
            columns,
            id_column,
            record: csv::ByteRecord::new(),
        })
    }
}

/// The refusal of a header row without an `id` column: the columns it has, and a hint when
/// the id column is misspelt or the file is not comma-separated.
fn no_id_column(names: &[&str]) -> NodeError {
    const SHOWN: usize = 20;
    let mut list = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        list.push_str(&format!(", … ({} columns in all)", names.len()));
    }
    let near = names.iter().find(|n| n.trim().eq_ignore_ascii_case("id"));
    let advice = if let Some(near) = near {
        format!("rename the column {near:?} to id (exactly, in small letters)")
    } else if names.len() == 1 && (names[0].contains(';') || names[0].contains('\t')) {
        "the columns seem to be separated by ';' or tabs: save the file as \"CSV UTF-8 (Comma delimited)\"".to_string()
    } else {
        "add a column named id that holds each record's id (the first row names the columns)"
            .to_string()
    };
    refused(
        format!("no \"id\" column; the header row names {list}"),
        advice,
    )
}

impl<R: Read> Rows for CsvRows<'_, R> {
    fn next_row(&mut self) -> Result<Option<Row>, NodeError> {
        loop {
            if !self
                .reader
                .read_byte_record(&mut self.record)
                .map_err(csv_read_error)?
            {
                return Ok(None);
            }
            let record = &self.record;
            let line = record.position().map_or(0, |p| p.line());
            if record.iter().all(<[u8]>::is_empty) {
                continue;
            }
            let extra_filled = record
                .iter()
                .skip(self.columns.len())
                .any(|c| !c.is_empty());
            if record.len() < self.columns.len() || extra_filled {
                return Err(refused(
                    format!(
                        "line {line} has {} cells but the header row names {} columns",
                        record.len(),
                        self.columns.len()
                    ),
                    FIX_LINE,
                ));
            }
            let cell = |i: usize| {
                std::str::from_utf8(&record[i])
                    .map_err(|_| refused(format!("line {line} is not UTF-8 text"), SAVE_UTF8))
            };
            let id = cell(self.id_column)?;
            if id.is_empty() {
                return Err(refused(
                    format!("line {line}: the id cell is empty"),
                    "give every row an id, or delete the row",
                ));
            }
            if id.len() > limits::MAX_RECORD_ID {
                return Err(refused(
                    format!(
                        "line {line}: id longer than {} bytes",
                        limits::MAX_RECORD_ID
                    ),
                    FIX_LINE,
                ));
            }
            let mut ops = Vec::new();
            for (i, column) in self.columns.iter().enumerate() {
                if record[i].is_empty() {
                    continue;
                }
                match column {
                    Column::Id => {}
                    Column::Field(name) => ops.push(Op::Set(name.clone(), Value::parse(cell(i)?))),
                    Column::Unnamed => {
                        return Err(refused(
                            format!(
                                "line {line}: a value in column {}, which the header row does not name",
                                i + 1
                            ),
                            "name the column in the header row, or empty it",
                        ));
                    }
                }
            }
            if ops.is_empty() {
                return Err(refused(
                    format!(
                        "line {line}: record {id:?} has no values (every cell but its id is empty)"
                    ),
                    "fill in at least one value, or delete the row",
                ));
            }
            return Ok(Some(Row {
                line,
                change: Change::Record {
                    collection: self.collection.to_string(),
                    id: id.to_string(),
                    ops,
                },
            }));
        }
    }

    fn bytes_read(&self) -> u64 {
        self.reader.position().byte()
    }
}

/// About how many bytes a change takes in a commit (for batching).
pub(crate) fn change_size(c: &Change) -> (usize, usize) {
    match c {
        Change::Record { id, ops, .. } => {
            let bytes = ops
                .iter()
                .map(|op| match op {
                    Op::Set(f, Value::Str(v)) => f.len() + v.len() + 4,
                    Op::Set(f, Value::Bytes(v)) => f.len() + v.len() + 4,
                    Op::Add(f, e) | Op::Remove(f, e) => f.len() + e.len() + 4,
                    _ => 16,
                })
                .sum::<usize>();
            (ops.len(), id.len() + bytes + 8)
        }
        _ => (1, 256),
    }
}
