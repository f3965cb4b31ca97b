//! The capture and the apply against a second connection playing the app.
use super::*;

fn app(sql: &str) -> (tempfile::TempDir, PathBuf, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    let c = Connection::open(&path).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.execute_batch(sql).unwrap();
    (dir, path, c)
}

fn schema(c: &Connection) -> Vec<(String, String)> {
    let mut st = c
        .prepare("SELECT type, name FROM sqlite_schema ORDER BY type, name")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn refusal(path: &Path, table: &str, key: &[&str]) -> String {
    let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
    match AppDb::open(path).unwrap().attach(table, "c", &key) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{table} with key {key:?} was attached"),
    }
}

#[test]
fn tables_whose_key_is_missing_or_a_local_counter_are_refused_with_what_to_do() {
    let (_d, path, _c) = app("CREATE TABLE loose (name TEXT);
         CREATE TABLE counted (n INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT, name TEXT);
         CREATE TABLE counted_unique (n INTEGER PRIMARY KEY, uuid TEXT UNIQUE, name TEXT);");
    assert!(refusal(&path, "loose", &[]).contains("no primary key; give --key"));
    assert!(refusal(&path, "counted", &[]).contains("INTEGER PRIMARY KEY"));
    assert!(refusal(&path, "counted", &["uuid"]).contains("no UNIQUE index"));
    assert!(refusal(&path, "counted_unique", &["n"]).contains("counter"));
    assert!(refusal(&path, "nosuch", &[]).contains("its tables: counted, counted_unique, loose"));
    let a = AppDb::open(&path)
        .unwrap()
        .attach("counted_unique", "people", &["uuid".into()])
        .unwrap();
    assert_eq!(a.key, vec!["uuid"]);
    assert_eq!(a.columns, vec!["name"]);
    assert_eq!(a.local.as_deref(), Some("n"), "the counter is left out");
    assert!(refusal(&path, "counted_unique", &["uuid"]).contains("attached already"));
}

#[test]
fn what_the_app_commits_is_captured_and_what_it_rolls_back_is_not() {
    let (_d, path, app) = app(
        "CREATE TABLE visits (mrn TEXT PRIMARY KEY, weight REAL, note TEXT, photo BLOB);
         INSERT INTO visits VALUES ('A-1', 61.5, 'first', x'00ff');",
    );
    let mut db = AppDb::open(&path).unwrap();
    db.attach("visits", "visits", &[]).unwrap();
    // The row that was there comes as new, whole.
    let (_, c) = db.captured("visits", 0, 1000).unwrap();
    assert_eq!(
        c.rows,
        vec![RowChange::Upsert {
            id: "A-1".into(),
            fields: vec![
                ("weight".into(), Value::Float(61.5)),
                ("note".into(), Value::Str("first".into())),
                ("photo".into(), Value::Bytes(vec![0, 255])),
            ],
        }]
    );
    db.forget("visits", c.upto).unwrap();
    // The app writes through its own connection.
    app.execute_batch(
        "UPDATE visits SET note = 'second' WHERE mrn = 'A-1';
         INSERT INTO visits VALUES ('B-2', NULL, 'new', NULL);
         BEGIN; INSERT INTO visits VALUES ('C-3', 1, 'rolled back', NULL); ROLLBACK;",
    )
    .unwrap();
    let (_, c) = db.captured("visits", c.upto, 1000).unwrap();
    assert_eq!(
        c.rows,
        vec![
            RowChange::Upsert {
                id: "A-1".into(),
                fields: vec![
                    ("weight".into(), Value::Float(61.5)),
                    ("note".into(), Value::Str("second".into())),
                    ("photo".into(), Value::Bytes(vec![0, 255])),
                ],
            },
            RowChange::Upsert {
                id: "B-2".into(),
                fields: vec![
                    ("weight".into(), Value::Null),
                    ("note".into(), Value::Str("new".into())),
                    ("photo".into(), Value::Null),
                ],
            },
        ],
        "the rows as they are now; nothing of the rolled-back insert"
    );
    // A key changed is the old row deleted and a new one made; a delete is a delete.
    let upto = c.upto;
    app.execute_batch(
        "UPDATE visits SET mrn = 'A-9' WHERE mrn = 'A-1'; DELETE FROM visits WHERE mrn = 'B-2';",
    )
    .unwrap();
    let (_, c) = db.captured("visits", upto, 1000).unwrap();
    assert_eq!(c.rows.len(), 3, "{:?}", c.rows);
    assert!(c.rows.contains(&RowChange::Delete { id: "A-1".into() }));
    assert!(c.rows.contains(&RowChange::Delete { id: "B-2".into() }));
    assert!(c.rows.iter().any(
        |r| matches!(r, RowChange::Upsert { id, fields } if id == "A-9" && fields.len() == 3)
    ));
    // Lines up to the cursor are skipped even if they were not dropped (a crash after the
    // node saved the cursor): nothing is captured twice.
    let (_, again) = db.captured("visits", c.upto, 1000).unwrap();
    assert!(again.rows.is_empty());
}

#[test]
fn applied_records_are_not_captured_and_an_app_write_in_between_is_never_overwritten() {
    let (_d, path, app) =
        app("CREATE TABLE p (a INTEGER, b TEXT, name TEXT NOT NULL, PRIMARY KEY (a, b));");
    let mut db = AppDb::open(&path).unwrap();
    db.attach("p", "people", &[]).unwrap();
    let id = key::encode(&[Value::Int(7), Value::Str("x".into())]);
    let rec = |name: Option<&str>| Incoming {
        id: id.clone(),
        fields: name.map(|n| BTreeMap::from([("name".to_string(), Value::Str(n.into()))])),
    };
    let done = db.apply("p", &[rec(Some("Amina"))], 0, "1.1").unwrap();
    assert_eq!(done.written, 1);
    let name: String = app
        .query_row("SELECT name FROM p WHERE a = 7 AND b = 'x'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(name, "Amina");
    let (_, c) = db.captured("p", 0, 100).unwrap();
    assert!(
        c.rows.is_empty(),
        "an applied record came back as captured: {:?}",
        c.rows
    );
    assert_eq!(db.apply_cursor("p").unwrap().as_deref(), Some("1.1"));
    // The app writes; an apply planned before it is refused until that write is captured.
    app.execute("UPDATE p SET name = 'Amina K.'", []).unwrap();
    match db.apply("p", &[rec(Some("Old"))], c.upto, "1.2") {
        Err(AttachError::AppWrote { .. }) => {}
        other => panic!("expected AppWrote, got {other:?}"),
    }
    let name: String = app
        .query_row("SELECT name FROM p", [], |r| r.get(0))
        .unwrap();
    assert_eq!(name, "Amina K.");
    // A record the table's own constraint refuses is skipped and said; the rest applies.
    let (_, c) = db.captured("p", c.upto, 100).unwrap();
    let other = key::encode(&[Value::Int(8), Value::Str("y".into())]);
    let bad = Incoming {
        id: other,
        fields: Some(BTreeMap::new()),
    };
    let done = db
        .apply(
            "p",
            &[
                bad,
                Incoming {
                    id: "not-a-key".into(),
                    fields: None,
                },
                rec(None),
            ],
            c.upto,
            "1.3",
        )
        .unwrap();
    assert_eq!(
        (done.written, done.deleted, done.skipped.len()),
        (0, 1, 2),
        "{:?}",
        done.skipped
    );
    assert!(done.skipped[0].contains("NOT NULL"), "{}", done.skipped[0]);
    let rows: i64 = app
        .query_row("SELECT count(*) FROM p", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
}

#[test]
fn a_column_the_app_adds_is_synced_and_a_dropped_one_is_reported() {
    let (_d, path, app) = app(
        "CREATE TABLE t (k TEXT PRIMARY KEY, a TEXT, b TEXT); INSERT INTO t VALUES ('1', 'x', 'y');",
    );
    let mut db = AppDb::open(&path).unwrap();
    db.attach("t", "t", &[]).unwrap();
    let (_, c) = db.captured("t", 0, 100).unwrap();
    db.forget("t", c.upto).unwrap();
    app.execute_batch("ALTER TABLE t ADD COLUMN c INTEGER DEFAULT 5;")
        .unwrap();
    let (a, c2) = db.captured("t", c.upto, 100).unwrap();
    assert_eq!(a.columns, vec!["a", "b", "c"]);
    assert!(c2.notes[0].contains("new column \"c\""), "{:?}", c2.notes);
    assert!(
        c2.rows.is_empty(),
        "an added column is filled, not captured: {:?}",
        c2.rows
    );
    assert_eq!(db.unfilled("t").unwrap(), vec!["c"]);
    assert_eq!(
        db.fill_rows("t", &["c".into()]).unwrap(),
        vec![("1".to_string(), vec![("c".to_string(), Value::Int(5))])]
    );
    db.apply("t", &[], c2.upto, "1.1").unwrap();
    db.filled("t").unwrap();
    assert!(db.unfilled("t").unwrap().is_empty());
    assert_eq!(
        db.apply_cursor("t").unwrap(),
        None,
        "every record is to be written again"
    );
    // Updates of the new column are captured.
    app.execute("UPDATE t SET c = 6", []).unwrap();
    let (_, c3) = db.captured("t", c2.upto, 100).unwrap();
    let RowChange::Upsert { fields, .. } = &c3.rows[0] else {
        panic!("{:?}", c3.rows)
    };
    assert!(fields.contains(&("c".into(), Value::Int(6))));
    // The app can still drop and rename columns (the triggers name only the key); ferry
    // says so.
    app.execute_batch("ALTER TABLE t DROP COLUMN b; ALTER TABLE t RENAME COLUMN a TO a2;")
        .unwrap();
    let (a, c4) = db.captured("t", c3.upto, 100).unwrap();
    assert_eq!(a.columns, vec!["a2", "c"]);
    assert!(
        c4.notes
            .iter()
            .any(|n| n.contains("no longer has column \"b\"")),
        "{:?}",
        c4.notes
    );
    assert!(
        c4.notes
            .iter()
            .any(|n| n.contains("no longer has column \"a\"")),
        "{:?}",
        c4.notes
    );
    assert!(
        c4.notes.iter().any(|n| n.contains("new column \"a2\"")),
        "{:?}",
        c4.notes
    );
    app.execute_batch("ALTER TABLE t DROP COLUMN k;")
        .unwrap_err();
}

#[test]
fn line_numbers_never_go_back_under_a_cursor() {
    let (_d, path, app) =
        app("CREATE TABLE t (k TEXT PRIMARY KEY, v); CREATE TABLE u (k TEXT PRIMARY KEY, v);");
    let mut db = AppDb::open(&path).unwrap();
    db.attach("t", "t", &[]).unwrap();
    db.attach("u", "u", &[]).unwrap();
    app.execute_batch("INSERT INTO u VALUES ('1', 1); INSERT INTO t VALUES ('a', 1);")
        .unwrap();
    let (_, cu) = db.captured("u", 0, 100).unwrap();
    db.forget("u", cu.upto).unwrap();
    let (_, ct) = db.captured("t", 0, 100).unwrap();
    db.forget("t", ct.upto).unwrap();
    // t's line was the newest; it goes with t's detach, and u's next line still numbers
    // above u's cursor.
    db.detach("t").unwrap();
    app.execute("INSERT INTO u VALUES ('2', 2)", []).unwrap();
    let (_, next) = db.captured("u", cu.upto, 100).unwrap();
    assert_eq!(
        next.rows.len(),
        1,
        "a new row was numbered under the cursor"
    );
}

#[test]
fn detach_removes_every_trace_and_leaves_the_rows() {
    let (_d, path, app) =
        app("CREATE TABLE t (k TEXT PRIMARY KEY, v); INSERT INTO t VALUES ('a', 1);");
    let before = schema(&app);
    let mut db = AppDb::open(&path).unwrap();
    db.attach("t", "t", &[]).unwrap();
    assert_ne!(schema(&app), before);
    db.detach("t").unwrap();
    assert_eq!(schema(&app), before);
    let v: i64 = app.query_row("SELECT v FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 1);
    assert!(matches!(
        db.detach("t"),
        Err(AttachError::NotAttached { .. })
    ));
}
