//! `ferry attach`: apps' own SQLite tables, written by real SQLite clients (the `sqlite3`
//! shell, Python's `sqlite3` module), kept in step across three laptops by sticks.

use crate::util::{Laptop, conflicts, exchange, s, three};
use std::path::Path;
use std::process::Command;

const SCHEMA: &str =
    "CREATE TABLE visits (mrn TEXT PRIMARY KEY, weight REAL, seen TEXT, photo BLOB, note TEXT);";

/// Runs SQL through the `sqlite3` shell, as an app or a person would; returns its output.
fn sqlite(db: &Path, sql: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the sqlite3 shell (Debian package sqlite3; tests/run installs it)");
    // On its input, as a person would type it (a long statement does not fit an argument).
    let mut input = child.stdin.take().unwrap();
    input.write_all(sql.as_bytes()).unwrap();
    input.write_all(b"\n").unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sqlite3 {sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a Python program with the database's path as its argument (standard library only).
fn python(db: &Path, program: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(program)
        .arg(db)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `visits` table's rows, as `sqlite3 .dump` writes them, sorted ([`dump_table`]).
fn dump(db: &Path) -> String {
    dump_table(db, "visits")
}

#[test]
fn three_apps_tables_converge_through_sticks_in_several_orders_and_a_conflict_stays_shown() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    exchange(&[&hq, &a, &b], &stick);
    let db = |l: &Laptop| l.home.with_extension("app.db");
    for l in [&hq, &a, &b] {
        sqlite(&db(l), SCHEMA);
    }
    // HQ's and clinic A's apps already hold rows: attaching brings them in and merges them.
    sqlite(
        &db(&hq),
        "INSERT INTO visits VALUES ('H-1', 61.5, '2026-11-30', x'00ff10', 'first visit');",
    );
    python(
        &db(&a),
        "import sqlite3, sys\n\
         c = sqlite3.connect(sys.argv[1])\n\
         c.execute(\"INSERT INTO visits VALUES ('A-1', 3.25, '2026-12-01', NULL, ?)\", ('ü ' * 3000,))\n\
         c.commit()\n",
    );
    for l in [&hq, &a, &b] {
        let out = l.ok(&["attach", s(&db(l)), "visits"]);
        assert!(out.contains("ATTACHED table visits"), "{out}");
    }
    // Every app writes through its own client, then sticks go round in one order…
    sqlite(
        &db(&b),
        "INSERT INTO visits VALUES ('B-1', 70, '2026-12-02', NULL, NULL);",
    );
    python(
        &db(&a),
        "import sqlite3, sys\n\
         c = sqlite3.connect(sys.argv[1])\n\
         c.execute(\"UPDATE visits SET note = 'seen again' WHERE mrn = 'A-1'\")\n\
         c.commit()\n",
    );
    exchange(&[&a, &b, &hq], &stick);
    // …then another: a delete, an update and a concurrent edit of one field.
    sqlite(&db(&hq), "DELETE FROM visits WHERE mrn = 'B-1';");
    sqlite(&db(&a), "UPDATE visits SET weight = 62 WHERE mrn = 'H-1';");
    sqlite(
        &db(&a),
        "UPDATE visits SET note = 'from A' WHERE mrn = 'A-1';",
    );
    sqlite(
        &db(&b),
        "UPDATE visits SET note = 'from B' WHERE mrn = 'A-1';",
    );
    exchange(&[&hq, &b, &a], &stick);

    let want = dump(&db(&hq));
    for l in [&a, &b] {
        assert_eq!(dump(&db(l)), want, "the tables differ");
    }
    assert!(
        !want.contains("'B-1'"),
        "the delete reached every table: {want}"
    );
    assert!(want.contains("'H-1',62.0"), "{want}");
    assert!(want.contains("X'00ff10'"), "the blob came through: {want}");
    assert_eq!(want.lines().count(), 2, "{want}");
    // The concurrent edit is listed on every laptop, and every row shows the same winner.
    for l in [&hq, &a, &b] {
        let c = conflicts(l);
        assert_eq!(c.as_array().map(Vec::len), Some(1), "{c}");
        assert_eq!(c[0]["id"], "A-1", "{c}");
    }
    let shown = sqlite(&db(&hq), "SELECT note FROM visits WHERE mrn = 'A-1'");
    assert!(shown == "from A\n" || shown == "from B\n", "{shown}");
    // Choosing a value on one laptop reaches the rows everywhere.
    hq.ok(&["resolve", "visits", "A-1", "note", "agreed"]);
    exchange(&[&hq, &a, &b], &stick);
    for l in [&hq, &a, &b] {
        assert_eq!(
            sqlite(&db(l), "SELECT note FROM visits WHERE mrn = 'A-1'"),
            "agreed\n"
        );
        assert!(conflicts(l).as_array().is_some_and(Vec::is_empty));
    }
    // ferry's view agrees with the tables.
    let listed = hq.ok(&["list", "visits"]);
    assert!(listed.contains("A-1") && listed.contains("H-1") && !listed.contains("B-1"));
}

#[test]
fn tables_without_a_key_fit_for_several_laptops_are_refused_and_detach_leaves_no_trace() {
    let base = tempfile::tempdir().unwrap();
    let l = Laptop::new(base.path(), "clinic");
    l.ok(&["init", "--name", "clinic", "--create", "Clinic"]);
    let db = base.path().join("register.db");
    sqlite(
        &db,
        "CREATE TABLE loose (name TEXT);
         CREATE TABLE counted (n INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT UNIQUE, name TEXT);
         INSERT INTO counted (uuid, name) VALUES ('u-1', 'Amina'), ('u-2', 'Baraka');",
    );
    let before = sqlite(&db, ".schema");
    let (_, e) = l.fails(&["attach", s(&db), "loose"]);
    assert!(e.contains("no primary key") && e.contains("--key"), "{e}");
    let (_, e) = l.fails(&["attach", s(&db), "counted"]);
    assert!(
        e.contains("INTEGER PRIMARY KEY") && e.contains("--key"),
        "{e}"
    );
    let (_, e) = l.fails(&["attach", s(&db), "counted", "--key", "name"]);
    assert!(e.contains("no UNIQUE index"), "{e}");
    let (_, e) = l.fails(&["attach", s(&db), "nosuch"]);
    assert!(
        e.contains("no table \"nosuch\"") && e.contains("counted, loose"),
        "{e}"
    );
    // With a key unique across laptops, the counter stays local and is not synced.
    let out = l.ok(&[
        "attach",
        s(&db),
        "counted",
        "--key",
        "uuid",
        "--collection",
        "people",
    ]);
    assert!(out.contains("2 rows taken in"), "{out}");
    let listed = l.ok(&["list", "people"]);
    assert!(listed.contains("u-1") && listed.contains("name=Amina") && !listed.contains("n="));
    let list = l.ok(&["attach", "--list"]);
    assert!(
        list.contains("people") && list.contains("key uuid"),
        "{list}"
    );
    l.ok(&["detach", s(&db), "counted"]);
    assert_eq!(sqlite(&db, ".schema"), before, "detach left a trace");
    assert_eq!(sqlite(&db, "SELECT count(*) FROM counted"), "2\n");
    assert!(l.ok(&["attach", "--list"]).contains("No table is attached"));
}

#[test]
fn an_app_that_keeps_writing_while_ferry_applies_loses_nothing_and_never_sees_a_lock_error() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    exchange(&[&hq, &a, &b], &stick);
    let db = a.home.with_extension("app.db");
    sqlite(&db, SCHEMA);
    a.ok(&["attach", s(&db), "visits"]);
    // HQ has many records for the app's table.
    let rows: String = (0..400)
        .map(|i| format!("{{\"id\":\"hq-{i}\",\"weight\":{i},\"note\":\"from hq\"}}\n"))
        .collect();
    let file = base.join("hq.jsonl");
    std::fs::write(&file, rows).unwrap();
    hq.ok(&["load", "visits", s(&file)]);
    std::fs::remove_dir_all(&stick).unwrap();
    std::fs::create_dir_all(&stick).unwrap();
    hq.ok(&["export", s(&stick)]);
    // The app writes 300 rows, one transaction each, while ferry takes in HQ's records and
    // writes them into the same table.
    let app = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], timeout=10)\n\
             for i in range(300):\n\
             \x20   c.execute('INSERT INTO visits (mrn, weight, note) VALUES (?, ?, ?)', ('app-%d' % i, i, 'from the app'))\n\
             \x20   c.commit()\n\
             \x20   time.sleep(0.002)\n",
        )
        .arg(&db)
        .spawn()
        .unwrap();
    let mut app = app;
    for _ in 0..3 {
        a.ok(&["sync", s(&stick)]);
    }
    let status = app.wait().unwrap();
    assert!(
        status.success(),
        "the app saw an error (a locked database?)"
    );
    a.ok(&["sync", s(&stick)]);
    assert_eq!(sqlite(&db, "SELECT count(*) FROM visits"), "700\n");
    assert_eq!(
        sqlite(
            &db,
            "SELECT count(*) FROM visits WHERE note = 'from the app'"
        ),
        "300\n"
    );
    // Everything the app wrote is in ferry, and reaches HQ.
    let listed = a.ok(&["list", "visits"]);
    assert_eq!(
        listed.lines().filter(|l| l.starts_with("app-")).count(),
        300
    );
    hq.ok(&["sync", s(&stick)]);
    let at_hq = hq.ok(&["list", "visits"]);
    assert_eq!(at_hq.lines().filter(|l| l.starts_with("app-")).count(), 300);
}

/// Waits up to 20 s for `done`; says what it waited for if it never came.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < end, "waited 20 s for {what}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn under_ferry_serve_the_apps_commits_and_the_apis_writes_meet_in_its_table_by_themselves() {
    let base = tempfile::tempdir().unwrap();
    let l = Laptop::new(base.path(), "clinic");
    l.ok(&["init", "--name", "clinic", "--create", "Clinic"]);
    let db = base.path().join("clinic.db");
    sqlite(&db, SCHEMA);
    l.ok(&["attach", s(&db), "visits"]);
    let srv = crate::serve::start_with_env(&l, &[], &[]);
    // The app commits; nobody runs a command; the API has the record within seconds.
    sqlite(
        &db,
        "INSERT INTO visits VALUES ('S-1', 50, '2026-12-04', NULL, 'typed in the app');",
    );
    wait_for("the app's row on the API", || {
        let r = srv.call("GET", "/v1/collections/visits/records/S-1", None);
        r.status == 200 && r.json()["note"] == "typed in the app"
    });
    // Another app writes through the API; the row appears in the table by itself.
    let r = srv.call(
        "PUT",
        "/v1/collections/visits/records/S-2",
        Some(&serde_json::json!({"weight": 51, "note": "from the API"})),
    );
    assert_eq!(r.status, 200, "{}", r.json());
    wait_for("the API's record in the table", || {
        sqlite(&db, "SELECT note FROM visits WHERE mrn = 'S-2'") == "from the API\n"
    });
    // Both are recorded as runs of the apps' tables.
    let runs = srv.call("GET", "/v1/runs", None).json();
    let app_runs: Vec<&serde_json::Value> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["transport"] == "app")
        .collect();
    assert!(app_runs.len() >= 2, "{runs}");
    assert!(app_runs.iter().all(|r| r["ok"] == true), "{runs}");
}

#[test]
fn killing_ferry_while_it_captures_or_applies_leaves_the_table_whole_and_a_rerun_converges() {
    use std::os::unix::process::ExitStatusExt;
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    exchange(&[&hq, &a, &b], &stick);
    let db = a.home.with_extension("app.db");
    sqlite(&db, SCHEMA);
    a.ok(&["attach", s(&db), "visits"]);
    let n = 20_000;
    // The app writes n rows in one transaction; HQ has n records of its own for it.
    sqlite(
        &db,
        &format!(
            "WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < {})
             INSERT INTO visits SELECT 'app-' || i, i, '2026-12-04', NULL, 'from the app' FROM c;",
            n - 1
        ),
    );
    let rows: String = (0..n)
        .map(|i| format!("{{\"id\":\"hq-{i}\",\"weight\":{i},\"note\":\"from hq\"}}\n"))
        .collect();
    let file = base.join("hq.jsonl");
    std::fs::write(&file, rows).unwrap();
    hq.ok(&["load", "visits", s(&file)]);
    std::fs::remove_dir_all(&stick).unwrap();
    std::fs::create_dir_all(&stick).unwrap();
    hq.ok(&["export", s(&stick)]);

    let count = |sql: &str| -> u64 { sqlite(&db, sql).trim().parse().unwrap() };
    let mut interrupted = 0;
    for delay_ms in [5, 20, 60, 120, 200, 300, 450, 650, 900, 1300, 1800] {
        let mut child = a
            .cmd(&["sync", s(&stick)])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let _ = child.kill();
        if child.wait().unwrap().signal() == Some(9) {
            interrupted += 1;
        }
        // The app's database is sound, and the apply is all or nothing.
        assert_eq!(sqlite(&db, "PRAGMA integrity_check"), "ok\n");
        let rows = count("SELECT count(*) FROM visits");
        assert!(
            rows == n || rows == 2 * n,
            "after a kill at {delay_ms} ms the table holds {rows} rows"
        );
        // What ferry took in of the app's rows is all or nothing too.
        let listed = a.run(&["list", "visits"]);
        let taken = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter(|l| l.starts_with("app-"))
            .count() as u64;
        assert!(
            taken == 0 || taken == n,
            "after a kill at {delay_ms} ms ferry holds {taken} of the app's rows"
        );
    }
    assert!(interrupted > 0, "no kill landed while ferry ran");
    a.ok(&["sync", s(&stick)]);
    assert_eq!(count("SELECT count(*) FROM visits"), 2 * n);
    assert_eq!(
        count("SELECT count(*) FROM visits WHERE note = 'from hq'"),
        n
    );
    // Every row of the app was taken in exactly once: one change each.
    let log: serde_json::Value =
        serde_json::from_str(&a.ok(&["log", "visits", "app-7", "--json"])).unwrap();
    assert_eq!(log["entries"].as_array().map(Vec::len), Some(1), "{log}");
    hq.ok(&["sync", s(&stick)]);
    let at_hq = hq
        .ok(&["list", "visits"])
        .lines()
        .filter(|l| l.starts_with("app-"))
        .count() as u64;
    assert_eq!(at_hq, n);
}

/// The rows of `table`, as `sqlite3 .dump` writes them, sorted (only the INSERTs: ferry's
/// tables and triggers differ between laptops by design, and so does the order rows were
/// inserted in).
fn dump_table(db: &Path, table: &str) -> String {
    let mut rows: Vec<String> = sqlite(db, &format!(".dump {table}"))
        .lines()
        .filter(|l| l.starts_with("INSERT INTO"))
        .map(str::to_string)
        .collect();
    rows.sort();
    rows.join("\n")
}

#[test]
fn every_type_and_key_shape_round_trips_and_a_column_added_later_keeps_the_others_values() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let (hq, a, b) = three(base);
    let stick = base.join("stick");
    exchange(&[&hq, &a, &b], &stick);
    // A table of 30 columns with a composite key (INTEGER, TEXT), one keyed by bytes, one by
    // a REAL.
    let mut cols = vec![
        "site INTEGER".to_string(),
        "code TEXT".into(),
        "ratio REAL".into(),
    ];
    for i in 4..=30 {
        let ty = ["TEXT", "INTEGER", "REAL", "BLOB"][i % 4];
        cols.push(format!("c{i:02} {ty}"));
    }
    let schema = format!(
        "CREATE TABLE wide ({}, PRIMARY KEY (site, code));
         CREATE TABLE tagged (k BLOB PRIMARY KEY, v TEXT);
         CREATE TABLE scaled (k REAL PRIMARY KEY, v INTEGER);",
        cols.join(", ")
    );
    let db = |l: &Laptop| l.home.with_extension("app.db");
    for l in [&hq, &a] {
        sqlite(&db(l), &schema);
    }
    let big = "ä/~x".repeat(50_000);
    sqlite(
        &db(&hq),
        &format!(
            "INSERT INTO wide (site, code, ratio, c04, c05, c06, c07, c30) VALUES
               (1, 'a/b~c', 0.1, x'00ff00', -9223372036854775808, 1e300, '{big}', NULL),
               (-7, '', NULL, NULL, 0, -0.5, '日本', x''),
               (2, '~i5', 2.5, x'', 42, 3.0, '2026-12-04', 7);
             INSERT INTO tagged VALUES (x'00', 'zero byte'), (x'ff01', NULL);
             INSERT INTO scaled VALUES (1.5, 1), (-0.25, 2);"
        ),
    );
    sqlite(&db(&a), "INSERT INTO tagged VALUES (x'0a0b', 'from a');");
    for l in [&hq, &a] {
        for t in ["wide", "tagged", "scaled"] {
            l.ok(&["attach", s(&db(l)), t]);
        }
    }
    exchange(&[&hq, &a], &stick);
    for t in ["wide", "tagged", "scaled"] {
        assert_eq!(
            dump_table(&db(&a), t),
            dump_table(&db(&hq), t),
            "{t} differs"
        );
    }
    assert_eq!(dump_table(&db(&a), "wide").lines().count(), 3);
    assert_eq!(dump_table(&db(&hq), "tagged").lines().count(), 3);
    assert!(
        dump_table(&db(&a), "wide").contains(&big),
        "the large text came through"
    );

    // HQ's app adds a column and fills it; clinic A's app adds it later, with a default.
    sqlite(
        &db(&hq),
        "ALTER TABLE wide ADD COLUMN extra TEXT DEFAULT 'd'; UPDATE wide SET extra = 'set at hq' WHERE site = 1;",
    );
    let out = hq.ok(&["sync", s(&stick)]);
    assert!(out.contains("new column \"extra\""), "{out}");
    a.ok(&["sync", s(&stick)]);
    sqlite(
        &db(&a),
        "ALTER TABLE wide ADD COLUMN extra TEXT DEFAULT 'd';",
    );
    exchange(&[&a, &hq], &stick);
    assert_eq!(
        sqlite(&db(&a), "SELECT extra FROM wide WHERE site = 1"),
        "set at hq\n",
        "clinic A's default overwrote HQ's value"
    );
    assert_eq!(dump_table(&db(&a), "wide"), dump_table(&db(&hq), "wide"));
    let log: serde_json::Value =
        serde_json::from_str(&hq.ok(&["log", "wide", "~i1/a~sb~~c", "--json"])).unwrap();
    assert!(
        log["entries"].as_array().unwrap().len() <= 3,
        "no change went back and forth: {log}"
    );
}

#[test]
fn ferry_serve_and_a_terminal_sync_running_the_same_table_at_once_take_each_row_in_once() {
    let base = tempfile::tempdir().unwrap();
    let base = base.path();
    let l = Laptop::new(base, "clinic");
    l.ok(&["init", "--name", "clinic", "--create", "Clinic"]);
    let db = base.join("clinic.db");
    sqlite(&db, SCHEMA);
    l.ok(&["attach", s(&db), "visits"]);
    let _srv = crate::serve::start_with_env(&l, &[], &[]);
    let stick = base.join("stick");
    std::fs::create_dir_all(&stick).unwrap();
    // The app writes while the server's watcher and a terminal's syncs both take rows in.
    let mut app = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], timeout=10)\n\
             for i in range(200):\n\
             \x20   c.execute('INSERT INTO visits (mrn, weight) VALUES (?, ?)', ('r-%d' % i, i))\n\
             \x20   c.commit()\n\
             \x20   time.sleep(0.003)\n",
        )
        .arg(&db)
        .spawn()
        .unwrap();
    for _ in 0..4 {
        l.ok(&["sync", s(&stick)]);
    }
    assert!(app.wait().unwrap().success());
    l.ok(&["sync", s(&stick)]);
    let listed = l.ok(&["list", "visits"]);
    assert_eq!(listed.lines().filter(|r| r.starts_with("r-")).count(), 200);
    for i in [0, 57, 123, 199] {
        let log: serde_json::Value =
            serde_json::from_str(&l.ok(&["log", "visits", &format!("r-{i}"), "--json"])).unwrap();
        assert_eq!(
            log["entries"].as_array().map(Vec::len),
            Some(1),
            "row r-{i} was taken in more than once: {log}"
        );
    }
}
