//! `ferry attach`: an app's own SQLite table, synced without changing the app.
//!
//! **Capture.** Attaching a table adds three triggers to it and three small tables to the
//! app's database (`_ferry_attached`, `_ferry_log`, `_ferry_state`). Every INSERT, UPDATE
//! and DELETE the app commits, through any SQLite client, appends a small line (the table's
//! number and the row's key) to `_ferry_log`
//! in the app's own transaction: which row (its key). A rolled-back write leaves no line; a
//! committed one cannot be missed. The node reads the lines after its cursor
//! ([`AppDb::captured`]), reads the rows as they are now, writes the columns whose value
//! differs from what ferry shows (so an update sends only what it changed, and a conflict
//! the row displays the winner of stays a conflict), and commits them as ferry changes
//! *with the cursor in the same ferry transaction*; then
//! it drops the lines up to the cursor ([`AppDb::forget`]). A crash between the two leaves
//! lines the cursor already covers: they are skipped, so the hand-over is exactly once.
//!
//! **Apply.** What arrives from other laptops is written into the table in one transaction
//! ([`AppDb::apply`]), which also removes the log lines its own writes made (while it holds
//! the write lock no other line can appear), so they are not captured again; the triggers
//! carry no condition, which keeps the app's own writes cheap. The node's feed cursor is
//! saved in the same transaction. Before it,
//! the node captures what the app wrote; if the app wrote more meanwhile, `apply` refuses
//! ([`AttachError::AppWrote`]) and the node captures again — an incoming change never
//! overwrites an app write ferry has not seen.
//!
//! **Keys.** A row's key becomes the record id ([`key`]); a table without a primary key, or
//! whose key is a local counter (`INTEGER PRIMARY KEY`, which SQLite fills with the next
//! rowid: two laptops would both make row 5 for different patients), is refused unless
//! `--key` names columns that are unique across laptops. Such a counter column is then
//! left out of the sync: each laptop numbers its own rows.
//!
//! **Values.** INTEGER ↔ integer, REAL ↔ float, TEXT ↔ text, BLOB ↔ bytes, NULL ↔ null
//! (a date stored as text stays text). A column the app adds is picked up at the next run
//! ([`AppDb::unfilled`]: a row's value is taken in only where ferry has none, and the table
//! then shows ferry's values); a column dropped or renamed is reported and its values stay
//! in ferry.
//!
//! **Architecture Invariant:** this crate only touches the app's database, and there only
//! its own `_ferry_*` tables and triggers and, when applying, the rows of attached tables.
//! It never drops or alters the app's tables; [`AppDb::detach`] removes every trace.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod key;

use ferry_model::Value;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Most key columns a table may have.
pub const MAX_KEY_COLUMNS: usize = 4;
/// From how many records an apply takes the triggers off instead of removing their lines.
const UNTRIGGERED_FROM: usize = 1000;
/// What separates column names in `_ferry_attached`.
const SEP: char = '\u{1f}';

/// Why attaching, capturing or applying failed. Each message is one line a person can act on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// The database could not be opened or used.
    #[error("{path}: {source}")]
    Sqlite {
        /// The app's database.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// No such table.
    #[error("{path} has no table {table:?} (its tables: {known})")]
    NoTable {
        /// The database.
        path: PathBuf,
        /// The table asked for.
        table: String,
        /// The tables it has.
        known: String,
    },
    /// The table cannot be attached as it is.
    #[error("table {table:?} cannot be attached: {why}")]
    Refused {
        /// The table.
        table: String,
        /// Why, and what to do.
        why: String,
    },
    /// The table is not attached.
    #[error("table {table:?} is not attached in {path} (`ferry attach --list` shows what is)")]
    NotAttached {
        /// The database.
        path: PathBuf,
        /// The table.
        table: String,
    },
    /// The app wrote to the table after the last capture: capture again first.
    #[error("the app wrote to {table:?} meanwhile")]
    AppWrote {
        /// The table.
        table: String,
    },
}

/// One column of an attached table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// Its name (also the ferry field's name).
    pub name: String,
    /// Its declared type, as written in the table's definition.
    pub declared: String,
}

/// An attached table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attached {
    /// The table.
    pub table: String,
    /// The ferry collection its rows are records of.
    pub collection: String,
    /// The key columns, in order: their values make the record id.
    pub key: Vec<String>,
    /// The synced columns besides the key.
    pub columns: Vec<String>,
    /// A column left out (a local counter such as `INTEGER PRIMARY KEY` when `--key`
    /// names another key).
    pub local: Option<String>,
    /// This attachment's id (a new one each time the table is attached).
    pub id: String,
    /// The table's number in `_ferry_log` (small, so the app's writes log little).
    pub number: i64,
}

/// A row as captured: its record id and what to write.
#[derive(Clone, Debug, PartialEq)]
pub enum RowChange {
    /// The row exists, with these values (every synced column).
    Upsert {
        /// Record id.
        id: String,
        /// Column → value now.
        fields: Vec<(String, Value)>,
    },
    /// The row was deleted.
    Delete {
        /// Record id.
        id: String,
    },
}

/// What [`AppDb::captured`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Captured {
    /// The last log line read (the cursor to save with the changes).
    pub upto: i64,
    /// One change per row touched, in the order first touched.
    pub rows: Vec<RowChange>,
    /// What changed in the table's shape (a column added, dropped or renamed), in words.
    pub notes: Vec<String>,
}

/// A row's record id and its non-null values of the columns asked for.
pub type FilledRow = (String, Vec<(String, Value)>);

/// A record as it should now be in the table.
#[derive(Clone, Debug, PartialEq)]
pub struct Incoming {
    /// The record id.
    pub id: String,
    /// Its displayed fields, or `None` when it was deleted.
    pub fields: Option<BTreeMap<String, Value>>,
}

/// What [`AppDb::apply`] did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    /// Rows written (inserted or updated).
    pub written: usize,
    /// Rows deleted.
    pub deleted: usize,
    /// Records that could not be written, each with why (the table's own constraints, an
    /// id that is no key of this table); they stay in ferry.
    pub skipped: Vec<String>,
}

/// The app's database, opened by ferry beside the app.
pub struct AppDb {
    conn: Connection,
    path: PathBuf,
}

/// An SQLite failure on the app's database at `path`, as an [`AttachError`].
fn sqlite_err(path: PathBuf) -> impl Fn(rusqlite::Error) -> AttachError {
    move |source| AttachError::Sqlite {
        path: path.clone(),
        source,
    }
}

/// A name quoted for SQL (`"a""b"`).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn to_value(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(n) => Value::Int(n),
        // SQLite keeps NaN as NULL; an infinity has no ferry value.
        ValueRef::Real(f) if f.is_finite() => Value::Float(f),
        ValueRef::Real(_) => Value::Null,
        ValueRef::Text(t) => Value::Str(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
    }
}

fn to_sql(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        Value::Null => V::Null,
        Value::Bool(b) => V::Integer(i64::from(*b)),
        Value::Int(n) => V::Integer(*n),
        Value::Float(f) => V::Real(*f),
        Value::Str(s) => V::Text(s.clone()),
        Value::Bytes(b) => V::Blob(b.clone()),
    }
}

impl AppDb {
    /// Opens the app's database (which must exist). Waits up to 5 s for the app's writes.
    pub fn open(path: &Path) -> Result<AppDb, AttachError> {
        let err = |source| AttachError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        if !path.is_file() {
            return Err(err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some("no such database file".into()),
            )));
        }
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(&err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(&err)?;
        Ok(AppDb {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> AttachError {
        sqlite_err(self.path.clone())
    }

    fn tables(&self) -> Result<Vec<String>, AttachError> {
        let mut st = self
            .conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite!_%' ESCAPE '!' AND name NOT LIKE '!_ferry!_%' ESCAPE '!' ORDER BY name")
            .map_err(self.err())?;
        let names = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        Ok(names)
    }

    /// The table's columns: (name, declared type, position in the primary key or 0).
    fn table_info(&self, table: &str) -> Result<Vec<(String, String, i64)>, AttachError> {
        let mut st = self
            .conn
            .prepare("SELECT name, type, pk FROM pragma_table_info(?1)")
            .map_err(self.err())?;
        let cols = st
            .query_map([table], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(self.err())?
            .collect::<Result<Vec<(String, String, i64)>, _>>()
            .map_err(self.err())?;
        Ok(cols)
    }

    /// Whether some unique index (or the primary key) covers exactly `cols`.
    fn unique_over(&self, table: &str, cols: &[String]) -> Result<bool, AttachError> {
        let mut st = self
            .conn
            .prepare("SELECT name FROM pragma_index_list(?1) WHERE \"unique\" = 1 AND partial = 0")
            .map_err(self.err())?;
        let indexes = st
            .query_map([table], |r| r.get::<_, String>(0))
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        for index in indexes {
            let mut st = self
                .conn
                .prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")
                .map_err(self.err())?;
            let mut over = st
                .query_map([&index], |r| r.get::<_, Option<String>>(0))
                .map_err(self.err())?
                .collect::<Result<Vec<_>, _>>()
                .map_err(self.err())?;
            over.sort();
            let mut want: Vec<Option<String>> = cols.iter().cloned().map(Some).collect();
            want.sort();
            if over == want {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Works out the key and the synced columns of `table`, or why it cannot be attached.
    fn shape(
        &self,
        table: &str,
        collection: &str,
        key: &[String],
    ) -> Result<Attached, AttachError> {
        let refuse = |why: String| AttachError::Refused {
            table: table.to_string(),
            why,
        };
        if table.starts_with("_ferry_") || table.starts_with("sqlite_") {
            return Err(refuse("it is ferry's or SQLite's own table".into()));
        }
        let info = self.table_info(table)?;
        if info.is_empty() {
            let known = self.tables()?;
            return Err(AttachError::NoTable {
                path: self.path.clone(),
                table: table.to_string(),
                known: if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                },
            });
        }
        let without_rowid: bool = self
            .conn
            .query_row(
                "SELECT sql LIKE '%WITHOUT ROWID%' FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .map_err(self.err())?;
        let mut pk: Vec<(i64, String, String)> = info
            .iter()
            .filter(|(_, _, p)| *p > 0)
            .map(|(n, t, p)| (*p, n.clone(), t.clone()))
            .collect();
        pk.sort();
        // A single INTEGER PRIMARY KEY is the rowid: a local counter.
        let counter = match pk.as_slice() {
            [(_, name, declared)] if declared.eq_ignore_ascii_case("INTEGER") && !without_rowid => {
                Some(name.clone())
            }
            _ => None,
        };
        let key: Vec<String> = if key.is_empty() {
            if pk.is_empty() {
                return Err(refuse(
                    "it has no primary key; give --key COLUMN naming a column (or columns) unique across laptops, such as a UUID or a patient number".into(),
                ));
            }
            if let Some(c) = &counter {
                return Err(refuse(format!(
                    "its key {c:?} is an INTEGER PRIMARY KEY, a counter each laptop fills on its own (two laptops would both make row 5 for different people); give --key COLUMN naming a column unique across laptops, such as a UUID"
                )));
            }
            pk.into_iter().map(|(_, n, _)| n).collect()
        } else {
            for k in key {
                if !info.iter().any(|(n, _, _)| n == k) {
                    return Err(refuse(format!(
                        "it has no column {k:?} (its columns: {})",
                        info.iter()
                            .map(|(n, _, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
            if counter
                .as_deref()
                .is_some_and(|c| key.iter().any(|k| k == c))
            {
                return Err(refuse(format!(
                    "{:?} is an INTEGER PRIMARY KEY, a counter each laptop fills on its own; name a column unique across laptops",
                    counter.unwrap_or_default()
                )));
            }
            if !self.unique_over(table, key)? {
                return Err(refuse(format!(
                    "no UNIQUE index or primary key covers {}: without one, two rows could share a record id (add one: CREATE UNIQUE INDEX ... ON {table}({}))",
                    key.join(", "),
                    key.join(", ")
                )));
            }
            key.to_vec()
        };
        if key.len() > MAX_KEY_COLUMNS {
            return Err(refuse(format!(
                "its key has {} columns; at most {MAX_KEY_COLUMNS} are supported",
                key.len()
            )));
        }
        let local = counter.filter(|c| !key.contains(c));
        let columns: Vec<String> = info
            .iter()
            .map(|(n, _, _)| n.clone())
            .filter(|n| !key.contains(n) && Some(n) != local.as_ref())
            .collect();
        for c in &columns {
            if c == "id" {
                return Err(refuse(
                    "it has a column \"id\" that is not its key, and \"id\" is the record id in ferry; make \"id\" the key (--key id) if it is unique across laptops".into(),
                ));
            }
            if c.contains(SEP) || c.is_empty() || c.len() > 255 {
                return Err(refuse(format!(
                    "its column name {c:?} cannot be a ferry field"
                )));
            }
        }
        Ok(Attached {
            table: table.to_string(),
            collection: collection.to_string(),
            key,
            columns,
            local,
            id: String::new(),
            number: 0,
        })
    }

    fn ensure_tables(&self) -> Result<(), AttachError> {
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS _ferry_attached (
                    tbl TEXT PRIMARY KEY, n INTEGER NOT NULL UNIQUE, collection TEXT NOT NULL, key_cols TEXT NOT NULL,
                    cols TEXT NOT NULL, local_col TEXT, attach_id TEXT NOT NULL);
                 CREATE TABLE IF NOT EXISTS _ferry_log (
                    seq INTEGER PRIMARY KEY, t INTEGER NOT NULL, k0, k1, k2, k3);
                 CREATE TABLE IF NOT EXISTS _ferry_state (name TEXT PRIMARY KEY, value);",
            )
            .map_err(self.err())
    }

    /// The triggers' SQL for `a`. They name only the key columns, so the app can still add,
    /// rename and drop its other columns (SQLite refuses to drop a column a trigger names).
    fn triggers(a: &Attached) -> String {
        let t = ident(&a.table);
        let name = |what: &str| ident(&format!("_ferry_{}_{what}", a.table));
        let n = a.number;
        let slots: String = (0..a.key.len()).map(|i| format!(", k{i}")).collect();
        let keys = |row: &str| -> String {
            a.key
                .iter()
                .map(|k| format!(", {row}.{}", ident(k)))
                .collect()
        };
        let moved = a
            .key
            .iter()
            .map(|k| format!("OLD.{0} IS NOT NEW.{0}", ident(k)))
            .collect::<Vec<_>>()
            .join(" OR ");
        format!(
            "CREATE TRIGGER {ins} AFTER INSERT ON {t} BEGIN
               INSERT INTO _ferry_log (t{slots}) VALUES ({n}{new});
             END;
             CREATE TRIGGER {upd} AFTER UPDATE ON {t} BEGIN
               INSERT INTO _ferry_log (t{slots}) SELECT {n}{old} WHERE {moved};
               INSERT INTO _ferry_log (t{slots}) VALUES ({n}{new});
             END;
             CREATE TRIGGER {del} AFTER DELETE ON {t} BEGIN
               INSERT INTO _ferry_log (t{slots}) VALUES ({n}{old});
             END;",
            ins = name("ins"),
            upd = name("upd"),
            del = name("del"),
            new = keys("NEW"),
            old = keys("OLD"),
        )
    }

    /// The SQL that removes `table`'s triggers.
    fn untriggers(table: &str) -> String {
        ["ins", "upd", "del"]
            .iter()
            .map(|what| {
                format!(
                    "DROP TRIGGER IF EXISTS {};",
                    ident(&format!("_ferry_{table}_{what}"))
                )
            })
            .collect()
    }

    /// Attaches `table` as `collection`, keyed by `key` (its primary key when empty): adds
    /// the triggers and logs every row already there as new, all in one transaction.
    /// Switches the database to WAL, so the app and ferry wait for each other less.
    pub fn attach(
        &mut self,
        table: &str,
        collection: &str,
        key: &[String],
    ) -> Result<Attached, AttachError> {
        if self.attached_table(table)?.is_some() {
            return Err(AttachError::Refused {
                table: table.to_string(),
                why: "it is attached already (`ferry detach` first to attach it again)".into(),
            });
        }
        let mut a = self.shape(table, collection, key)?;
        let mut id = [0u8; 8];
        getrandom::fill(&mut id).map_err(|e| AttachError::Sqlite {
            path: self.path.clone(),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(std::io::Error::other(
                e.to_string(),
            ))),
        })?;
        a.id = id.iter().map(|b| format!("{b:02x}")).collect();
        let _: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(self.err())?;
        let err = sqlite_err(self.path.clone());
        self.ensure_tables()?;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        a.number = tx
            .query_row(
                "SELECT COALESCE(max(n), 0) + 1 FROM _ferry_attached",
                [],
                |r| r.get(0),
            )
            .map_err(&err)?;
        tx.execute(
            "INSERT INTO _ferry_attached (tbl, n, collection, key_cols, cols, local_col, attach_id) VALUES (?1, ?7, ?2, ?3, ?4, ?5, ?6)",
            params![
                a.table,
                a.collection,
                a.key.join(&SEP.to_string()),
                a.columns.join(&SEP.to_string()),
                a.local,
                a.id,
                a.number
            ],
        )
        .map_err(&err)?;
        tx.execute_batch(&Self::triggers(&a)).map_err(&err)?;
        let slots: String = (0..a.key.len()).map(|i| format!(", k{i}")).collect();
        let keys: String = a.key.iter().map(|k| format!(", {}", ident(k))).collect();
        tx.execute(
            &format!(
                "INSERT INTO _ferry_log (t{slots}) SELECT ?1{keys} FROM {}",
                ident(table)
            ),
            [a.number],
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(a)
    }

    /// Removes every trace of `table`'s attachment: its triggers, its log lines and its
    /// state; ferry's own tables go with the last attachment. The table and its rows stay.
    pub fn detach(&mut self, table: &str) -> Result<(), AttachError> {
        if self.attached_table(table)?.is_none() {
            return Err(AttachError::NotAttached {
                path: self.path.clone(),
                table: table.to_string(),
            });
        }
        let err = sqlite_err(self.path.clone());
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        tx.execute_batch(&Self::untriggers(table)).map_err(&err)?;
        let number: i64 = tx
            .query_row(
                "SELECT n FROM _ferry_attached WHERE tbl = ?1",
                [table],
                |r| r.get(0),
            )
            .map_err(&err)?;
        tx.execute("DELETE FROM _ferry_attached WHERE tbl = ?1", [table])
            .map_err(&err)?;
        let newest: Option<i64> = tx
            .query_row("SELECT max(seq) FROM _ferry_log", [], |r| r.get(0))
            .map_err(&err)?;
        tx.execute("DELETE FROM _ferry_log WHERE t = ?1", [number])
            .map_err(&err)?;
        // Line numbers are rowids: a line (of no table) holds the numbering where it was, so
        // the other tables' next lines are not numbered under their cursors.
        if let Some(n) = newest {
            tx.execute(
                "INSERT OR IGNORE INTO _ferry_log (seq, t) VALUES (?1, 0)",
                [n],
            )
            .map_err(&err)?;
        }
        tx.execute(
            "DELETE FROM _ferry_state WHERE name IN (?1, ?2)",
            params![format!("cursor:{table}"), format!("fill:{table}")],
        )
        .map_err(&err)?;
        let left: i64 = tx
            .query_row("SELECT count(*) FROM _ferry_attached", [], |r| r.get(0))
            .map_err(&err)?;
        if left == 0 {
            tx.execute_batch(
                "DROP TABLE _ferry_attached; DROP TABLE _ferry_log; DROP TABLE _ferry_state;",
            )
            .map_err(&err)?;
        }
        tx.commit().map_err(&err)
    }

    fn has_ferry_tables(&self) -> Result<bool, AttachError> {
        self.conn
            .query_row(
                "SELECT count(*) = 3 FROM sqlite_schema WHERE type = 'table' AND name IN ('_ferry_attached', '_ferry_log', '_ferry_state')",
                [],
                |r| r.get(0),
            )
            .map_err(self.err())
    }

    /// The attached tables.
    pub fn attached(&self) -> Result<Vec<Attached>, AttachError> {
        if !self.has_ferry_tables()? {
            return Ok(Vec::new());
        }
        let mut st = self
            .conn
            .prepare("SELECT tbl, collection, key_cols, cols, local_col, attach_id, n FROM _ferry_attached ORDER BY tbl")
            .map_err(self.err())?;
        let split = |s: String| -> Vec<String> {
            if s.is_empty() {
                Vec::new()
            } else {
                s.split(SEP).map(str::to_string).collect()
            }
        };
        let rows = st
            .query_map([], |r| {
                Ok(Attached {
                    table: r.get(0)?,
                    collection: r.get(1)?,
                    key: split(r.get(2)?),
                    columns: split(r.get(3)?),
                    local: r.get(4)?,
                    id: r.get(5)?,
                    number: r.get(6)?,
                })
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        Ok(rows)
    }

    /// `table`'s attachment, if it is attached.
    pub fn attached_table(&self, table: &str) -> Result<Option<Attached>, AttachError> {
        Ok(self.attached()?.into_iter().find(|a| a.table == table))
    }

    fn attachment(&self, table: &str) -> Result<Attached, AttachError> {
        self.attached_table(table)?
            .ok_or_else(|| AttachError::NotAttached {
                path: self.path.clone(),
                table: table.to_string(),
            })
    }

    /// Picks up a change in `table`'s shape: a column the app added is synced from now on
    /// (every row's value of it is logged), a dropped one is reported. Returns what changed.
    fn follow_shape(&mut self, a: &mut Attached) -> Result<Vec<String>, AttachError> {
        let info = self.table_info(&a.table)?;
        let now: Vec<String> = info
            .iter()
            .map(|(n, _, _)| n.clone())
            .filter(|n| !a.key.contains(n) && Some(n) != a.local.as_ref())
            .collect();
        if now == a.columns {
            return Ok(Vec::new());
        }
        let mut notes = Vec::new();
        let added: Vec<String> = now
            .iter()
            .filter(|c| !a.columns.contains(c))
            .cloned()
            .collect();
        let gone: Vec<String> = a
            .columns
            .iter()
            .filter(|c| !now.contains(c))
            .cloned()
            .collect();
        if let Some(k) = a.key.iter().find(|k| !info.iter().any(|(n, _, _)| n == *k)) {
            return Err(AttachError::Refused {
                table: a.table.clone(),
                why: format!(
                    "its key column {k:?} is gone; `ferry detach` it and attach it again with its new key"
                ),
            });
        }
        for c in &added {
            if c == "id" || c.contains(SEP) {
                return Err(AttachError::Refused {
                    table: a.table.clone(),
                    why: format!("the app added a column {c:?}, which cannot be a ferry field"),
                });
            }
            notes.push(format!(
                "table {:?} has a new column {c:?}: it is synced from now on",
                a.table
            ));
        }
        for c in &gone {
            notes.push(format!(
                "table {:?} no longer has column {c:?} (dropped or renamed): its values stay in ferry as field {c:?}, and changes from other laptops to it are not written into the table",
                a.table
            ));
        }
        let err = sqlite_err(self.path.clone());
        a.columns = now;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        tx.execute(
            "UPDATE _ferry_attached SET cols = ?2 WHERE tbl = ?1",
            params![a.table, a.columns.join(&SEP.to_string())],
        )
        .map_err(&err)?;
        if !added.is_empty() {
            // The new columns are to be filled ([`AppDb::fill_rows`], [`AppDb::filled`]):
            // noted in the same transaction, so a crash before the node is done leaves it
            // still to do.
            let mut pending = Self::pending_fill(&tx, &a.table).map_err(&err)?;
            pending.extend(added.iter().cloned());
            tx.execute(
                "INSERT INTO _ferry_state (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![format!("fill:{}", a.table), pending.join(&SEP.to_string())],
            )
            .map_err(&err)?;
        }
        tx.commit().map_err(&err)?;
        Ok(notes)
    }

    fn pending_fill(c: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
        let v: Option<String> = c
            .query_row(
                "SELECT value FROM _ferry_state WHERE name = ?1",
                [format!("fill:{table}")],
                |r| r.get(0),
            )
            .optional()?;
        Ok(v.map(|v| {
            v.split(SEP)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default())
    }

    /// Columns the app added to `table` that are still to be filled: where ferry holds no
    /// value for such a field, the row's value (a default, or what the app wrote) is taken
    /// in; everywhere else the table is to show ferry's value ([`AppDb::filled`]), so a
    /// laptop that adds a column after another one does not overwrite the other's values
    /// with its defaults.
    pub fn unfilled(&self, table: &str) -> Result<Vec<String>, AttachError> {
        Self::pending_fill(&self.conn, table).map_err(self.err())
    }

    /// Every row's non-null values of `columns`, by record id.
    pub fn fill_rows(
        &self,
        table: &str,
        columns: &[String],
    ) -> Result<Vec<FilledRow>, AttachError> {
        let a = self.attachment(table)?;
        let columns: Vec<&String> = columns.iter().filter(|c| a.columns.contains(c)).collect();
        if columns.is_empty() {
            return Ok(Vec::new());
        }
        let select: Vec<String> = a
            .key
            .iter()
            .chain(columns.iter().copied())
            .map(|c| ident(c))
            .collect();
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {} FROM {}",
                select.join(", "),
                ident(&a.table)
            ))
            .map_err(self.err())?;
        let n = a.key.len();
        let rows = st
            .query_map([], |r| {
                let key: Vec<Value> = (0..n)
                    .map(|i| r.get_ref(i).map(to_value))
                    .collect::<Result<_, _>>()?;
                let values: Vec<(String, Value)> = columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| r.get_ref(n + i).map(|v| ((*c).clone(), to_value(v))))
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .filter(|(_, v)| *v != Value::Null)
                    .collect();
                Ok((key::encode(&key), values))
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        Ok(rows)
    }

    /// The added columns are filled on ferry's side: the next [`AppDb::apply`] writes every
    /// record again (its cursor is forgotten), so the table shows ferry's values in them.
    pub fn filled(&mut self, table: &str) -> Result<(), AttachError> {
        let err = sqlite_err(self.path.clone());
        let tx = self.conn.transaction().map_err(&err)?;
        tx.execute(
            "DELETE FROM _ferry_state WHERE name IN (?1, ?2)",
            params![format!("fill:{table}"), format!("cursor:{table}")],
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)
    }

    /// What the app changed in `table` after log line `after`, as it is now, at most
    /// `limit` log lines; also follows a change of the table's shape.
    pub fn captured(
        &mut self,
        table: &str,
        after: i64,
        limit: usize,
    ) -> Result<(Attached, Captured), AttachError> {
        let mut a = self.attachment(table)?;
        let notes = self.follow_shape(&mut a)?;
        let err = sqlite_err(self.path.clone());
        // One read transaction: the log and the rows as of one moment.
        let tx = self.conn.transaction().map_err(&err)?;
        let n = a.key.len();
        let slots: String = (0..n).map(|i| format!(", k{i}")).collect();
        let mut order: Vec<(String, Vec<Value>)> = Vec::new();
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut upto = after;
        {
            let mut st = tx
                .prepare(&format!(
                    "SELECT seq{slots} FROM _ferry_log WHERE t = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                ))
                .map_err(&err)?;
            let mut rows = st
                .query(params![a.number, after, limit as i64])
                .map_err(&err)?;
            while let Some(r) = rows.next().map_err(&err)? {
                upto = r.get(0).map_err(&err)?;
                let key: Vec<Value> = (0..n)
                    .map(|i| r.get_ref(1 + i).map(to_value))
                    .collect::<Result<_, _>>()
                    .map_err(&err)?;
                let id = key::encode(&key);
                if seen.insert(id.clone()) {
                    order.push((id, key));
                }
            }
        }
        let mut out = Vec::with_capacity(order.len());
        let where_key = a
            .key
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{} IS ?{}", ident(k), i + 1))
            .collect::<Vec<_>>()
            .join(" AND ");
        let select = if a.columns.is_empty() {
            "1".to_string()
        } else {
            a.columns
                .iter()
                .map(|c| ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut st = tx
            .prepare(&format!(
                "SELECT {select} FROM {} WHERE {where_key}",
                ident(&a.table)
            ))
            .map_err(&err)?;
        for (id, key) in order {
            let row: Option<Vec<Value>> = st
                .query_row(params_from_iter(key.iter().map(to_sql)), |r| {
                    (0..a.columns.len())
                        .map(|i| r.get_ref(i).map(to_value))
                        .collect()
                })
                .optional()
                .map_err(&err)?;
            out.push(match row {
                None => RowChange::Delete { id },
                Some(values) => RowChange::Upsert {
                    id,
                    fields: a.columns.iter().cloned().zip(values).collect(),
                },
            });
        }
        drop(st);
        tx.commit().map_err(&err)?;
        Ok((
            a,
            Captured {
                upto,
                rows: out,
                notes,
            },
        ))
    }

    /// Drops `table`'s log lines up to `upto` (they are in ferry now).
    pub fn forget(&mut self, table: &str, upto: i64) -> Result<(), AttachError> {
        let number = self.attachment(table)?.number;
        self.conn
            .execute(
                // The newest line stays, whatever it is: line numbers are rowids, and an
                // empty table would number the next line 1 again, under the cursor.
                "DELETE FROM _ferry_log WHERE t = ?1 AND seq <= ?2 AND seq < (SELECT max(seq) FROM _ferry_log)",
                params![number, upto],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// The feed cursor saved with the last [`AppDb::apply`] to `table`.
    pub fn apply_cursor(&self, table: &str) -> Result<Option<String>, AttachError> {
        self.conn
            .query_row(
                "SELECT value FROM _ferry_state WHERE name = ?1",
                [format!("cursor:{table}")],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())
    }

    /// Writes `records` into `table` in one transaction, without capturing them, and saves
    /// `cursor` with them. Refuses ([`AttachError::AppWrote`]) if the app wrote to the
    /// table after log line `captured_upto`: capture that first.
    pub fn apply(
        &mut self,
        table: &str,
        records: &[Incoming],
        captured_upto: i64,
        cursor: &str,
    ) -> Result<Applied, AttachError> {
        let a = self.attachment(table)?;
        let err = sqlite_err(self.path.clone());
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&err)?;
        let newest: Option<i64> = tx
            .query_row(
                "SELECT max(seq) FROM _ferry_log WHERE t = ?1",
                [a.number],
                |r| r.get(0),
            )
            .map_err(&err)?;
        if newest.is_some_and(|s| s > captured_upto) {
            return Err(AttachError::AppWrote {
                table: table.to_string(),
            });
        }
        let before: Option<i64> = tx
            .query_row("SELECT max(seq) FROM _ferry_log", [], |r| r.get(0))
            .map_err(&err)?;
        // Many rows: the triggers are taken off for this transaction and put back before it
        // commits (no other connection ever sees the table without them); that changes the
        // schema, which makes the app's connections prepare their statements again, so it
        // is kept for large applies. Otherwise the triggers' lines are removed below.
        let untriggered = records.len() >= UNTRIGGERED_FROM;
        if untriggered {
            tx.execute_batch(&Self::untriggers(&a.table))
                .map_err(&err)?;
        }
        let mut done = Applied::default();
        let cols: Vec<&String> = a.key.iter().chain(&a.columns).collect();
        let names = cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
        let marks = (1..=cols.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let conflict = a
            .key
            .iter()
            .map(|k| ident(k))
            .collect::<Vec<_>>()
            .join(", ");
        let update = if a.columns.is_empty() {
            "NOTHING".to_string()
        } else {
            // A row that already shows the record is left as it is (not rewritten).
            format!(
                "UPDATE SET {} WHERE {}",
                a.columns
                    .iter()
                    .map(|c| format!("{0} = excluded.{0}", ident(c)))
                    .collect::<Vec<_>>()
                    .join(", "),
                a.columns
                    .iter()
                    .map(|c| format!("{0} IS NOT excluded.{0}", ident(c)))
                    .collect::<Vec<_>>()
                    .join(" OR ")
            )
        };
        let upsert = format!(
            "INSERT INTO {} ({names}) VALUES ({marks}) ON CONFLICT ({conflict}) DO {update}",
            ident(&a.table)
        );
        let delete = format!(
            "DELETE FROM {} WHERE {}",
            ident(&a.table),
            a.key
                .iter()
                .enumerate()
                .map(|(i, k)| format!("{} IS ?{}", ident(k), i + 1))
                .collect::<Vec<_>>()
                .join(" AND ")
        );
        // Prepared once: preparing compiles the statement and the table's triggers again.
        let mut upsert = tx.prepare(&upsert).map_err(&err)?;
        let mut delete = tx.prepare(&delete).map_err(&err)?;
        for rec in records {
            let Some(key) = key::decode(&rec.id, a.key.len()) else {
                done.skipped.push(format!(
                    "record {:?} is not a key of table {:?} (it has {} key column(s)); it stays in ferry",
                    rec.id,
                    a.table,
                    a.key.len()
                ));
                continue;
            };
            let result = match &rec.fields {
                None => delete
                    .execute(params_from_iter(key.iter().map(to_sql)))
                    .map(|n| done.deleted += n),
                Some(fields) => {
                    let values = key.iter().map(to_sql).chain(
                        a.columns
                            .iter()
                            .map(|c| to_sql(fields.get(c).unwrap_or(&Value::Null))),
                    );
                    upsert
                        .execute(params_from_iter(values))
                        .map(|n| done.written += n)
                }
            };
            if let Err(e) = result {
                // Only this statement is undone (the table's own constraint refused it).
                done.skipped.push(format!(
                    "record {:?} could not be written into table {:?}: {e}; it stays in ferry",
                    rec.id, a.table
                ));
            }
        }
        drop((upsert, delete));
        if untriggered {
            tx.execute_batch(&Self::triggers(&a)).map_err(&err)?;
        }
        // The triggers logged this transaction's own writes: every line after `before` is
        // one (the app cannot write while this transaction holds the lock).
        tx.execute(
            "DELETE FROM _ferry_log WHERE seq > ?1",
            [before.unwrap_or(0)],
        )
        .map_err(&err)?;
        tx.execute(
            "INSERT INTO _ferry_state (name, value) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            params![format!("cursor:{table}"), cursor],
        )
        .map_err(&err)?;
        tx.commit().map_err(&err)?;
        Ok(done)
    }
}

#[cfg(test)]
mod tests;
