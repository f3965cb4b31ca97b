//! Files from spreadsheets: a byte-order mark, CSV in and out with values typed as on the
//! command line, and an id on two lines of one file refused before anything is loaded.

use crate::util::{Laptop, s};
use std::path::Path;

/// A laptop with a dataset of its own.
fn laptop(base: &Path, name: &str) -> Laptop {
    let l = Laptop::new(base, name);
    l.ok(&["init", "--name", name, "--create", "visits"]);
    l
}

/// `ferry get COLLECTION ID --json`, parsed.
fn get(l: &Laptop, id: &str) -> serde_json::Value {
    serde_json::from_str(&l.ok(&["get", "visits", id, "--json"])).expect("get --json")
}

#[test]
fn load_skips_the_byte_order_mark_excel_and_notepad_write() {
    let base = tempfile::tempdir().unwrap();
    let l = laptop(base.path(), "hq");
    let file = base.path().join("visits.jsonl");
    std::fs::write(
        &file,
        "\u{feff}{\"id\":\"v1\",\"village\":\"Kisumu\"}\r\n{\"id\":\"v2\",\"age_years\":34}\r\n",
    )
    .unwrap();
    let out = l.ok(&["load", "visits", s(&file)]);
    assert!(out.contains("Loaded 2 records"), "{out}");
    assert_eq!(get(&l, "v1"), serde_json::json!({"village": "Kisumu"}));
    assert_eq!(get(&l, "v2"), serde_json::json!({"age_years": 34}));

    // The same in a CSV file, and from standard input.
    let csv = base.path().join("visits.csv");
    std::fs::write(&csv, "\u{feff}id,village\r\nv3,Obunga\r\n").unwrap();
    l.ok(&["load", "--csv", "visits", s(&csv)]);
    assert_eq!(get(&l, "v3"), serde_json::json!({"village": "Obunga"}));
    let mut child = l
        .cmd(&["load", "visits", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        "\u{feff}{\"id\":\"v4\",\"x\":1}\n".as_bytes(),
    )
    .unwrap();
    drop(child.stdin.take());
    assert!(child.wait_with_output().unwrap().status.success());
    assert_eq!(get(&l, "v4"), serde_json::json!({"x": 1}));

    // UTF-16 ("Unicode text" in Excel) is refused with what to do.
    let utf16 = base.path().join("unicode.csv");
    let mut bytes = vec![0xFF, 0xFE];
    bytes.extend("id,x\r\n".encode_utf16().flat_map(u16::to_le_bytes));
    std::fs::write(&utf16, bytes).unwrap();
    let (_, err) = l.fails(&["load", "--csv", "visits", s(&utf16)]);
    assert!(
        err.contains("unicode.csv: the file is UTF-16 text; nothing was loaded")
            && err.contains("CSV UTF-8"),
        "{err}"
    );
}

#[test]
fn load_csv_reads_quoted_cells_and_types_values_as_put_does() {
    let base = tempfile::tempdir().unwrap();
    let l = laptop(base.path(), "hq");
    let file = base.path().join("visits.csv");
    std::fs::write(
        &file,
        concat!(
            "id,village,age_years,weight_kg,followup,code,quoted,note,remark\r\n",
            "v1,\"Kisumu, Ndogo\",34,61.5,true,007,\"\"\"42\"\"\",null,\"two\r\nlines\"\r\n",
            "v2,Obunga,,2.0,false,-7,\"say \"\"hi\"\"\",,\r\n",
            ",,,,,,,,\r\n",
            "v3,,,,,,,,\"\"\"\"\"\"\r\n",
        ),
    )
    .unwrap();
    let out = l.ok(&["load", "--csv", "visits", s(&file)]);
    assert!(out.contains("Loaded 3 records"), "{out}");
    assert_eq!(
        get(&l, "v1"),
        serde_json::json!({
            "village": "Kisumu, Ndogo",
            "age_years": 34,
            "weight_kg": 61.5,
            "followup": true,
            "code": "007",
            "quoted": "42",
            "note": null,
            "remark": "two\r\nlines",
        })
    );
    // An empty cell leaves the field unset; -7 is an integer, 2.0 a decimal.
    assert_eq!(
        get(&l, "v2"),
        serde_json::json!({
            "village": "Obunga",
            "weight_kg": 2.0,
            "followup": false,
            "code": -7,
            "quoted": "say \"hi\"",
        })
    );
    assert_eq!(
        serde_json::to_string(&get(&l, "v2")["weight_kg"]).unwrap(),
        "2.0"
    );
    // A cell holding "" (two double quotes) is the empty text, not an unset field.
    assert_eq!(get(&l, "v3"), serde_json::json!({"remark": ""}));

    // An empty cell does not clear a field that is already set.
    let update = base.path().join("update.csv");
    std::fs::write(&update, "id,village,age_years\nv1,,35\n").unwrap();
    l.ok(&["load", "--csv", "visits", s(&update)]);
    assert_eq!(get(&l, "v1")["village"], "Kisumu, Ndogo");
    assert_eq!(get(&l, "v1")["age_years"], 35);

    // A row with a cell too many or too few is refused, naming its line.
    let ragged = base.path().join("ragged.csv");
    std::fs::write(&ragged, "id,a,b\nv7,1,2\nv8,1\n").unwrap();
    let (_, err) = l.fails(&["load", "--csv", "visits", s(&ragged)]);
    assert!(
        err.contains("line 3 has 2 cells but the header row names 3 columns"),
        "{err}"
    );
    l.fails(&["get", "visits", "v7"]);

    // A CSV file given without --csv: the error says to add it.
    let (_, err) = l.fails(&["load", "visits", s(&file)]);
    assert!(
        err.contains("line 1: not a JSON object") && err.contains("ferry load --csv"),
        "{err}"
    );
}

#[test]
fn dump_csv_then_load_csv_gives_another_laptop_identical_records() {
    let base = tempfile::tempdir().unwrap();
    let hq = laptop(base.path(), "hq");
    let input = base.path().join("in.jsonl");
    // Text that looks like a number, a boolean, null or a quoted word must stay text.
    std::fs::write(
        &input,
        concat!(
            r#"{"id":"v1","age_years":34,"weight_kg":61.5,"whole":2.0,"huge":1e20,"tiny":1e-7,"neg":-3}"#,
            "\n",
            r#"{"id":"v2","looks_int":"34","looks_float":"2.5e3","looks_bool":"true","looks_null":"null"}"#,
            "\n",
            r#"{"id":"v3","empty":"","quoted":"\"quoted\"","comma":"a,b","newline":"x\ny","quote":"\"","code":"007"}"#,
            "\n",
            r#"{"id":"07","note":null,"flag":false,"village":"Kisumu Ndogo","accent":"Nyalenda é"}"#,
            "\n",
        ),
    )
    .unwrap();
    hq.ok(&["load", "visits", s(&input)]);
    hq.ok(&["put", "visits", "v4", "weight_kg=3.25", "code=\"12\""]);

    let csv = base.path().join("visits.csv");
    let out = hq.ok(&["dump", "--csv", "visits", "--out", s(&csv)]);
    assert!(out.contains("Wrote 5 records"), "{out}");
    let text = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(
        hq.ok(&["dump", "--csv", "visits"]),
        text,
        "--out writes what standard output gets"
    );
    let text = text
        .strip_prefix('\u{feff}')
        .expect("a byte-order mark for Excel");
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "id,accent,age_years,code,comma,empty,flag,huge,looks_bool,looks_float,looks_int,\
         looks_null,neg,newline,note,quote,quoted,tiny,village,weight_kg,whole",
        "id, then every field sorted"
    );
    // Text that would read as something else is written in double quotes (doubled in CSV).
    assert!(text.contains(r#""""34""""#), "{text}");
    assert!(text.contains(r#""""true""""#), "{text}");
    assert!(text.contains(r#""""12""""#), "{text}");

    let clinic = laptop(base.path(), "clinic");
    let out = clinic.ok(&["load", "--csv", "visits", s(&csv)]);
    assert!(out.contains("Loaded 5 records"), "{out}");
    for id in ["v1", "v2", "v3", "v4", "07"] {
        assert_eq!(
            clinic.ok(&["get", "visits", id, "--json"]),
            hq.ok(&["get", "visits", id, "--json"]),
            "record {id}"
        );
    }
    assert_eq!(clinic.ok(&["dump", "visits"]), hq.ok(&["dump", "visits"]));
    assert_eq!(get(&clinic, "v2")["looks_int"], "34");
    assert_eq!(get(&clinic, "v3")["empty"], "");
    assert_eq!(get(&clinic, "v1")["whole"], 2.0);
    assert_eq!(get(&clinic, "07")["note"], serde_json::Value::Null);
}

#[test]
fn an_id_on_two_lines_of_one_file_is_refused_naming_both_and_nothing_is_loaded() {
    let base = tempfile::tempdir().unwrap();
    let l = laptop(base.path(), "hq");
    let jsonl = base.path().join("visits.jsonl");
    std::fs::write(
        &jsonl,
        concat!(
            "{\"id\":\"v1\",\"x\":1}\n",
            "{\"id\":\"v17\",\"x\":2}\n",
            "\n",
            "{\"id\":\"v3\",\"x\":3}\n",
            "{\"id\":\"v17\",\"x\":4}\n",
        ),
    )
    .unwrap();
    let (_, err) = l.fails(&["load", "visits", s(&jsonl)]);
    assert!(
        err.contains(
            "visits.jsonl: id \"v17\" appears on line 2 and line 5; nothing was loaded — keep one line per record"
        ),
        "{err}"
    );
    assert_eq!(l.list("visits"), "[]\n", "nothing was loaded");

    // In CSV the lines are the file's lines, counting those inside a quoted cell.
    let csv = base.path().join("visits.csv");
    std::fs::write(&csv, "id,note\nv1,\"two\nlines\"\nv2,b\nv1,c\n").unwrap();
    let (_, err) = l.fails(&["load", "--csv", "visits", s(&csv)]);
    assert!(
        err.contains("visits.csv: id \"v1\" appears on line 2 and line 5; nothing was loaded"),
        "{err}"
    );
    assert_eq!(l.list("visits"), "[]\n", "nothing was loaded");

    // Loading a record that is already in the store is an update, not a duplicate.
    let once = base.path().join("once.jsonl");
    std::fs::write(&once, "{\"id\":\"v1\",\"x\":1}\n").unwrap();
    l.ok(&["load", "visits", s(&once)]);
    l.ok(&["load", "visits", s(&once)]);
    assert_eq!(get(&l, "v1"), serde_json::json!({"x": 1}));
}

#[test]
fn a_csv_without_an_id_column_is_refused_naming_the_columns_found() {
    let base = tempfile::tempdir().unwrap();
    let l = laptop(base.path(), "hq");
    let file = base.path().join("visits.csv");
    std::fs::write(&file, "patient,village\np-1,Kisumu\n").unwrap();
    let (_, err) = l.fails(&["load", "--csv", "visits", s(&file)]);
    assert!(
        err.contains(
            "visits.csv: no \"id\" column; the header row names \"patient\", \"village\"; nothing was loaded"
        ),
        "{err}"
    );
    assert_eq!(l.list("visits"), "[]\n");

    std::fs::write(&file, "ID,village\nv1,Kisumu\n").unwrap();
    let (_, err) = l.fails(&["load", "--csv", "visits", s(&file)]);
    assert!(err.contains("rename the column \"ID\" to id"), "{err}");

    std::fs::write(&file, "id;village\nv1;Kisumu\n").unwrap();
    let (_, err) = l.fails(&["load", "--csv", "visits", s(&file)]);
    assert!(err.contains("separated by ';'"), "{err}");
    assert_eq!(l.list("visits"), "[]\n");
}

#[test]
fn usage_mistakes_exit_2_and_a_collection_csv_cannot_hold_writes_nothing() {
    let base = tempfile::tempdir().unwrap();
    let l = laptop(base.path(), "hq");
    let file = base.path().join("visits.csv");
    std::fs::write(&file, "id,x\nv1,1\n").unwrap();
    let out = l.run(&["load", "--csv", "_members", s(&file)]);
    assert_eq!(out.status.code(), Some(2), "a reserved collection name");
    assert!(String::from_utf8_lossy(&out.stderr).contains("reserved"));
    let out = l.run(&["dump", "--csv", "--out"]);
    assert_eq!(out.status.code(), Some(2), "--out without a file");

    // A set field has no form in a CSV cell: refused before a byte is written.
    l.ok(&["rule", "set", "patients", "tags", "set"]);
    l.ok(&["add", "patients", "p-1", "tags", "tb", "hiv"]);
    let dump = base.path().join("patients.csv");
    std::fs::write(&dump, "an older dump\n").unwrap();
    let (_, err) = l.fails(&["dump", "--csv", "patients", "--out", s(&dump)]);
    assert!(
        err.contains("patients/p-1 field \"tags\" is a set") && err.contains("without --csv"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(&dump).unwrap(),
        "an older dump\n",
        "the file is left as it was"
    );
    let (stdout, _) = l.fails(&["dump", "--csv", "patients"]);
    assert_eq!(stdout, "", "nothing is written to standard output either");
}
