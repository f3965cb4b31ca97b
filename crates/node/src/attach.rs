//! Apps' own SQLite tables kept in step with a collection (`ferry attach`; the app's side
//! is `ferry-attach`'s).
//!
//! Each run ([`Node::run_attached`], at every `sync`, `import` and `export`, and under
//! `ferry serve` whenever an app commits) first **captures**: the app's log lines after
//! the cursor become one ferry commit, with the cursor saved in that same transaction, then
//! the lines are dropped from the app's database. A row's columns are compared with what
//! the record shows: only those that differ are written, so an update sends what it
//! changed, and a field whose conflict the row displays the winner of stays a conflict.
//! Then it **applies**: the records of the collection changed since the table's feed cursor
//! are written into the table as they are displayed (deleted ones deleted), in one
//! transaction of the app's database that also saves the cursor. If the app wrote in
//! between, the apply is refused and the run captures again.
//!
//! The list of attachments is this home's (`attach:list` in the store); each attachment's
//! capture cursor is `attach:cursor:ID`. Attaching the same table again (after a detach)
//! makes a new ID, so its rows are captured again.

use crate::NodeError;
use crate::feed::{Cursor, FeedChange, FieldInput, RecordWrite};
use crate::node::{Node, check_collection, check_id};
use ferry_attach::{AppDb, AttachError, Incoming, RowChange};
use ferry_model::{Shown, Value};
use ferry_sync::Storage as _;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const REGISTRY: &str = "attach:list";
/// Log lines read per ferry commit.
const PAGE: usize = 20_000;
/// Captures before an apply gives up when the app keeps writing in between.
const TRIES: usize = 8;

fn cursor_key(id: &str) -> String {
    format!("attach:cursor:{id}")
}

/// One attached table, as this home knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attachment {
    /// The app's database.
    pub db: PathBuf,
    /// The table.
    pub table: String,
    /// The collection its rows are records of.
    pub collection: String,
    /// The key columns (their values make the record id).
    pub key: Vec<String>,
    /// The synced columns.
    pub columns: Vec<String>,
    /// A local counter column left out of the sync, if any.
    pub local: Option<String>,
    /// Why it cannot be reached now (the database moved or is gone), if so.
    pub problem: Option<String>,
}

/// What one run did for one attached table.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AttachRun {
    /// The app's database.
    pub db: PathBuf,
    /// The table.
    pub table: String,
    /// The collection.
    pub collection: String,
    /// Rows the app changed that became ferry changes.
    pub captured: usize,
    /// Rows written into the table from ferry (inserted or updated).
    pub written: usize,
    /// Rows deleted from the table.
    pub deleted: usize,
    /// What to tell the user: the table's shape changed, a record could not be written, the
    /// database cannot be reached.
    pub notes: Vec<String>,
}

/// One line of the registry: attachment id, database, table, collection.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    id: String,
    db: PathBuf,
    table: String,
    collection: String,
}

/// A displayed field as the value a table column holds (a set's elements as a JSON list).
fn column_value(shown: &Shown) -> Value {
    match shown {
        Shown::Value(v) => v.clone(),
        Shown::Set(elems) => Value::Str(serde_json::to_string(elems).unwrap_or_default()),
    }
}

/// Whether `row` is what a column makes of `shown` when it is written: SQLite converts by
/// the column's type (70 into a REAL column reads back 70.0, "5" into an INTEGER column 5,
/// true 1), and such a conversion is not a change the app made.
fn same_in_sqlite(shown: &Value, row: &Value) -> bool {
    fn number(v: &Value) -> Option<f64> {
        match v {
            Value::Int(n) => Some(*n as f64),
            Value::Float(f) => Some(*f),
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            Value::Str(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
            _ => None,
        }
    }
    if shown == row {
        return true;
    }
    match (shown, row) {
        (Value::Str(_), Value::Str(_)) | (Value::Bytes(_), _) | (_, Value::Bytes(_)) => false,
        (Value::Null, _) | (_, Value::Null) => false,
        // A number stored in a TEXT column reads back as its text.
        (Value::Int(n), Value::Str(s)) => *s == n.to_string(),
        (Value::Float(f), Value::Str(s)) => s.parse::<f64>().ok() == Some(*f),
        (Value::Bool(b), Value::Str(s)) => *s == u8::from(*b).to_string(),
        _ => number(shown).is_some_and(|a| number(row) == Some(a)),
    }
}

impl Node {
    fn registry(&mut self) -> Result<Vec<Entry>, NodeError> {
        let raw = self.read()?.meta(REGISTRY)?.unwrap_or_default();
        Ok(String::from_utf8_lossy(&raw)
            .lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                Some(Entry {
                    id: f.next()?.to_string(),
                    db: PathBuf::from(f.next()?),
                    table: f.next()?.to_string(),
                    collection: f.next()?.to_string(),
                })
            })
            .collect())
    }

    fn save_registry(&mut self, entries: &[Entry]) -> Result<(), NodeError> {
        let text: String = entries
            .iter()
            .map(|e| {
                format!(
                    "{}\t{}\t{}\t{}\n",
                    e.id,
                    e.db.display(),
                    e.table,
                    e.collection
                )
            })
            .collect();
        let tx = self.store.transaction(crate::time::now_ms())?;
        tx.set_meta(REGISTRY, text.as_bytes())?;
        tx.commit()?;
        Ok(())
    }

    /// Attaches `table` of the app's database `db` as `collection` (the table's name when
    /// `None`), keyed by `key` (its primary key when empty), and runs it once: the rows
    /// already there become changes, and the collection's records are written into it.
    pub fn attach(
        &mut self,
        db: &Path,
        table: &str,
        collection: Option<&str>,
        key: &[String],
    ) -> Result<AttachRun, NodeError> {
        let db = std::fs::canonicalize(db).map_err(|e| NodeError::io("cannot open", db, e))?;
        let collection = collection.unwrap_or(table).to_string();
        check_collection(&collection)?;
        if table.contains('\t') || table.contains('\n') {
            return Err(NodeError::BadArgument(format!(
                "table name {table:?}: tabs and line breaks are not supported"
            )));
        }
        let mut entries = self.registry()?;
        if let Some(e) = entries.iter().find(|e| e.collection == collection) {
            return Err(NodeError::BadArgument(format!(
                "collection {collection:?} is already attached to table {:?} of {}; give another --collection",
                e.table,
                e.db.display()
            )));
        }
        let mut app = AppDb::open(&db).map_err(NodeError::Attach)?;
        // A table still attached in the app's database but not in this home (a home made
        // again, a copied database) is told, not silently taken over.
        let a = app
            .attach(table, &collection, key)
            .map_err(NodeError::Attach)?;
        entries.push(Entry {
            id: a.id,
            db,
            table: table.to_string(),
            collection,
        });
        self.save_registry(&entries)?;
        let entry = entries.pop().expect("just pushed");
        self.run_entry(&entry)
    }

    /// Detaches `table` of `db`: its triggers and ferry's tables leave the app's database,
    /// and this home forgets it. The collection's records stay in ferry, the rows in the
    /// table. A database that is gone is only forgotten.
    pub fn detach(&mut self, db: &Path, table: &str) -> Result<(), NodeError> {
        let mut entries = self.registry()?;
        let wanted = std::fs::canonicalize(db).unwrap_or_else(|_| db.to_path_buf());
        let Some(i) = entries
            .iter()
            .position(|e| e.table == table && (e.db == wanted || e.db == db))
        else {
            return Err(NodeError::BadArgument(format!(
                "table {table:?} of {} is not attached to this home (`ferry attach --list` shows what is)",
                db.display()
            )));
        };
        let entry = entries.remove(i);
        if entry.db.is_file() {
            let mut app = AppDb::open(&entry.db).map_err(NodeError::Attach)?;
            match app.detach(table) {
                Ok(()) | Err(AttachError::NotAttached { .. }) => {}
                Err(e) => return Err(NodeError::Attach(e)),
            }
        }
        self.save_registry(&entries)?;
        let tx = self.store.transaction(crate::time::now_ms())?;
        tx.delete_meta(&cursor_key(&entry.id))?;
        tx.commit()?;
        let lock = self
            .home()
            .transport_state("attach")
            .join(format!("{}.lock", entry.id));
        let _ = std::fs::remove_file(lock);
        Ok(())
    }

    /// The attached tables.
    pub fn attachments(&mut self) -> Result<Vec<Attachment>, NodeError> {
        let mut out = Vec::new();
        for e in self.registry()? {
            let mut a = Attachment {
                db: e.db.clone(),
                table: e.table.clone(),
                collection: e.collection.clone(),
                key: Vec::new(),
                columns: Vec::new(),
                local: None,
                problem: None,
            };
            match AppDb::open(&e.db).and_then(|app| app.attached_table(&e.table)) {
                Ok(Some(t)) if t.id == e.id => {
                    a.key = t.key;
                    a.columns = t.columns;
                    a.local = t.local;
                }
                Ok(_) => {
                    a.problem = Some(
                        "the table is no longer attached in that database (restored from a backup, or detached by another home): `ferry detach` and attach it again".into(),
                    )
                }
                Err(err) => a.problem = Some(err.to_string()),
            }
            out.push(a);
        }
        Ok(out)
    }

    /// Runs every attached table once (capture, then apply). A table that cannot be reached
    /// is reported in its run's notes and does not stop the others.
    pub fn run_attached(&mut self) -> Result<Vec<AttachRun>, NodeError> {
        let mut out = Vec::new();
        for e in self.registry()? {
            match self.run_entry(&e) {
                Ok(run) => out.push(run),
                Err(err) => out.push(AttachRun {
                    db: e.db.clone(),
                    table: e.table.clone(),
                    collection: e.collection.clone(),
                    notes: vec![format!("table {:?} of {}: {err}", e.table, e.db.display())],
                    ..Default::default()
                }),
            }
        }
        Ok(out)
    }

    /// The app databases attached tables are in (each once).
    pub fn attached_databases(&mut self) -> Result<Vec<PathBuf>, NodeError> {
        let mut dbs: Vec<PathBuf> = self.registry()?.into_iter().map(|e| e.db).collect();
        dbs.sort();
        dbs.dedup();
        Ok(dbs)
    }

    /// Whether any table is attached to this home.
    pub fn has_attachments(&mut self) -> Result<bool, NodeError> {
        Ok(!self.registry()?.is_empty())
    }

    fn run_entry(&mut self, e: &Entry) -> Result<AttachRun, NodeError> {
        // One run of a table at a time across processes (`ferry serve` and a `ferry sync`
        // in a terminal): two captures of the same lines would each write them.
        let lock_path = self
            .home()
            .transport_state("attach")
            .join(format!("{}.lock", e.id));
        std::fs::create_dir_all(lock_path.parent().expect("has a parent"))
            .map_err(|err| NodeError::io("cannot create", &lock_path, err))?;
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|err| NodeError::io("cannot open", &lock_path, err))?;
        fs4::FileExt::lock(&lock).map_err(|err| NodeError::io("cannot lock", &lock_path, err))?;
        let mut run = AttachRun {
            db: e.db.clone(),
            table: e.table.clone(),
            collection: e.collection.clone(),
            ..Default::default()
        };
        let mut app = AppDb::open(&e.db).map_err(NodeError::Attach)?;
        match app.attached_table(&e.table).map_err(NodeError::Attach)? {
            Some(t) if t.id == e.id => {}
            _ => {
                return Err(NodeError::BadArgument(
                    "the table is no longer attached in that database (restored from a backup, or detached by another home): `ferry detach` and attach it again".into(),
                ));
            }
        }
        for _ in 0..TRIES {
            let upto = self.capture(&mut app, e, &mut run)?;
            match self.apply_to(&mut app, e, upto, &mut run) {
                Ok(()) => return Ok(run),
                Err(NodeError::Attach(AttachError::AppWrote { .. })) => continue,
                Err(err) => return Err(err),
            }
        }
        run.notes.push(format!(
            "the app kept writing to table {:?}: what arrived is written into it at the next run",
            e.table
        ));
        Ok(run)
    }

    /// Captures every log line after the cursor; returns the last line captured.
    fn capture(
        &mut self,
        app: &mut AppDb,
        e: &Entry,
        run: &mut AttachRun,
    ) -> Result<i64, NodeError> {
        let key = cursor_key(&e.id);
        let mut after: i64 = self
            .read()?
            .meta(&key)?
            .and_then(|v| String::from_utf8_lossy(&v).parse().ok())
            .unwrap_or(0);
        loop {
            let (_, page) = app
                .captured(&e.table, after, PAGE)
                .map_err(NodeError::Attach)?;
            run.notes.extend(page.notes.iter().cloned());
            if page.upto == after {
                // Nothing new; drop what an earlier crash left behind the cursor.
                app.forget(&e.table, after).map_err(NodeError::Attach)?;
                self.fill(app, e, run)?;
                return Ok(after);
            }
            let writes = self.captured_writes(&e.collection, &page.rows, run)?;
            let cursor = page.upto.to_string();
            self.write_records_noting(&writes, Some((&key, cursor.as_bytes())))
                .map_err(|w| *w.source)?;
            run.captured += writes.len();
            app.forget(&e.table, page.upto).map_err(NodeError::Attach)?;
            after = page.upto;
        }
    }

    /// Columns the app added: a row's value is taken in where the record has none; then the
    /// table is to show every record again (the values other laptops gave those fields).
    fn fill(&mut self, app: &mut AppDb, e: &Entry, run: &mut AttachRun) -> Result<(), NodeError> {
        let columns = app.unfilled(&e.table).map_err(NodeError::Attach)?;
        if columns.is_empty() {
            return Ok(());
        }
        let rows = app
            .fill_rows(&e.table, &columns)
            .map_err(NodeError::Attach)?;
        let rules = self.rules()?;
        let mut writes = Vec::new();
        {
            let tx = self.read()?;
            for (id, values) in rows {
                if check_id(&id).is_err() {
                    continue;
                }
                let Some(state) = tx.record(&e.collection, &id)?.filter(|s| s.is_live()) else {
                    continue;
                };
                let shown = state.shown_with(|f| rules.of(&e.collection, f));
                let fields: Vec<(String, FieldInput)> = values
                    .into_iter()
                    .filter(|(c, _)| {
                        shown
                            .get(c.as_str())
                            .is_none_or(|v| column_value(v) == Value::Null)
                    })
                    .map(|(c, v)| (c, FieldInput::Value(v)))
                    .collect();
                if !fields.is_empty() {
                    writes.push(RecordWrite::Merge {
                        collection: e.collection.clone(),
                        id,
                        fields,
                    });
                }
            }
        }
        self.write_records(&writes).map_err(|w| *w.source)?;
        run.captured += writes.len();
        app.filled(&e.table).map_err(NodeError::Attach)
    }

    /// The writes that make the records show the rows: for a live record only the columns
    /// whose value differs from what it shows; a new record gets its non-empty columns; a
    /// deleted row deletes a live record.
    fn captured_writes(
        &mut self,
        collection: &str,
        rows: &[RowChange],
        run: &mut AttachRun,
    ) -> Result<Vec<RecordWrite>, NodeError> {
        let rules = self.rules()?;
        let tx = self.read()?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id = match row {
                RowChange::Upsert { id, .. } | RowChange::Delete { id } => id,
            };
            if let Err(err) = check_id(id) {
                run.notes.push(format!(
                    "a row of table {collection:?} has key {id:?}, which cannot be a record id ({err}); it is not synced"
                ));
                continue;
            }
            let state = tx.record(collection, id)?.filter(|s| s.is_live());
            match (row, state) {
                (RowChange::Delete { .. }, Some(_)) => out.push(RecordWrite::Delete {
                    collection: collection.into(),
                    id: id.clone(),
                }),
                (RowChange::Delete { .. }, None) => {}
                (RowChange::Upsert { fields, .. }, Some(s)) => {
                    let shown = s.shown_with(|f| rules.of(collection, f));
                    let changed: Vec<(String, FieldInput)> = fields
                        .iter()
                        .filter(|(f, v)| {
                            let now = shown
                                .get(f.as_str())
                                .map(column_value)
                                .unwrap_or(Value::Null);
                            !same_in_sqlite(&now, v)
                        })
                        .map(|(f, v)| (f.clone(), FieldInput::Value(v.clone())))
                        .collect();
                    if !changed.is_empty() {
                        out.push(RecordWrite::Merge {
                            collection: collection.into(),
                            id: id.clone(),
                            fields: changed,
                        });
                    }
                }
                (RowChange::Upsert { fields, .. }, None) => {
                    let mut given: Vec<(String, FieldInput)> = fields
                        .iter()
                        .filter(|(_, v)| *v != Value::Null)
                        .map(|(f, v)| (f.clone(), FieldInput::Value(v.clone())))
                        .collect();
                    // A row whose columns are all empty is still a record.
                    if given.is_empty()
                        && let Some((f, _)) = fields.first()
                    {
                        given.push((f.clone(), FieldInput::Value(Value::Null)));
                    }
                    out.push(RecordWrite::Merge {
                        collection: collection.into(),
                        id: id.clone(),
                        fields: given,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Writes the records changed since the table's feed cursor into it.
    fn apply_to(
        &mut self,
        app: &mut AppDb,
        e: &Entry,
        captured_upto: i64,
        run: &mut AttachRun,
    ) -> Result<(), NodeError> {
        let mut cursor: Cursor = app
            .apply_cursor(&e.table)
            .map_err(NodeError::Attach)?
            .and_then(|c| c.parse().ok())
            .unwrap_or_default();
        let mut ids: BTreeSet<String> = BTreeSet::new();
        loop {
            let page = match self.changes_since(&cursor, 10_000) {
                Ok(p) => p,
                Err(NodeError::FeedGone { .. }) => {
                    // History was compacted past the cursor: write every record again.
                    let mut all = Vec::new();
                    self.for_each_record(&e.collection, |id, _| {
                        all.push(id.to_string());
                        Ok(())
                    })?;
                    ids.extend(all);
                    cursor = self.feed_cursor()?;
                    break;
                }
                Err(err) => return Err(err),
            };
            ids.extend(
                page.changes
                    .iter()
                    .filter(|c: &&FeedChange| c.collection == e.collection)
                    .map(|c| c.id.clone()),
            );
            let more = page.more && page.next != cursor;
            cursor = page.next;
            if !more {
                break;
            }
        }
        let rules = self.rules()?;
        let mut records = Vec::with_capacity(ids.len());
        {
            let tx = self.read()?;
            for id in ids {
                let state = tx.record(&e.collection, &id)?;
                let fields = state.filter(|s| s.is_live()).map(|s| {
                    s.shown_with(|f| rules.of(&e.collection, f))
                        .into_iter()
                        .map(|(f, v)| (f.to_string(), column_value(&v)))
                        .collect::<BTreeMap<String, Value>>()
                });
                records.push(Incoming { id, fields });
            }
        }
        let done = app
            .apply(&e.table, &records, captured_upto, &cursor.to_string())
            .map_err(NodeError::Attach)?;
        run.written += done.written;
        run.deleted += done.deleted;
        run.notes.extend(done.skipped);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_column_makes_of_a_value_is_not_a_change_and_anything_else_is() {
        let same = [
            (Value::Int(70), Value::Float(70.0)),
            (Value::Str("5".into()), Value::Int(5)),
            (Value::Bool(true), Value::Int(1)),
            (Value::Int(42), Value::Str("42".into())),
            (Value::Float(1.5), Value::Str("1.5".into())),
            (Value::Null, Value::Null),
        ];
        for (shown, row) in same {
            assert!(same_in_sqlite(&shown, &row), "{shown:?} → {row:?}");
        }
        let changed = [
            (Value::Int(70), Value::Float(70.5)),
            (Value::Str("5".into()), Value::Str("05".into())),
            (Value::Null, Value::Int(0)),
            (Value::Str("".into()), Value::Null),
            (Value::Bytes(vec![49]), Value::Str("1".into())),
            (Value::Int(1), Value::Str("1.0".into())),
        ];
        for (shown, row) in changed {
            assert!(!same_in_sqlite(&shown, &row), "{shown:?} → {row:?}");
        }
    }
}
