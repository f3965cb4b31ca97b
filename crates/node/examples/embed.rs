//! ferry-node as a library: two laptops in a temporary folder, records written by program,
//! carried by a "stick" (a folder), and the changes feed followed on the other side.
//!
//! `cargo run -p ferry-node --example embed` (add a folder to keep the homes there).

#![allow(clippy::print_stdout)] // an example prints what it does

use ferry_model::Value;
use ferry_node::{
    Cursor, FieldInput, FileResult, Home, InvitationFile, NoProgress, Node, RecordWrite,
};
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let base = match std::env::args_os().nth(1) {
        Some(dir) => dir.into(),
        None => tmp.path().to_path_buf(),
    };
    let stick = base.join("stick");
    std::fs::create_dir_all(&stick)?;

    // HQ creates the dataset and invites a clinic; the clinic joins with file and code.
    let mut hq = Node::create(&Home::at(base.join("hq")), "hq", "clinic visits")?;
    let invite = base.join("clinic-a.invite");
    let code = hq.invite(&invite, Some("clinic-a"))?.code;
    let mut clinic = Node::join(
        &Home::at(base.join("clinic-a")),
        Some("clinic-a"),
        &InvitationFile::read(&invite)?,
        Some(&code),
    )?;
    sync("hq", &mut hq, &stick)?;
    sync("clinic-a", &mut clinic, &stick)?;

    // The clinic's app starts following the feed from now.
    let mut cursor: Cursor = clinic.feed_cursor()?;

    // HQ's program writes two records as one change (all or nothing), and edits one field.
    let visit = |id: &str, village: &str, age: i64| RecordWrite::Replace {
        collection: "visits".into(),
        id: id.into(),
        fields: vec![
            (
                "village".into(),
                FieldInput::Value(Value::Str(village.into())),
            ),
            ("age".into(), FieldInput::Value(Value::Int(age))),
        ],
    };
    hq.write_records(&[visit("v-1", "Kibera", 34), visit("v-2", "Obunga", 41)])?;
    hq.put("visits", "v-1", &[("weight_kg".into(), Value::Float(61.5))])?;
    println!("hq wrote v-1 and v-2");

    // The stick travels: HQ writes its bundle, the clinic imports it.
    sync("hq", &mut hq, &stick)?;
    sync("clinic-a", &mut clinic, &stick)?;

    // The clinic's feed now carries HQ's changes, each with the record as it shows.
    loop {
        let page = clinic.changes_since(&cursor, 100)?;
        for ch in &page.changes {
            let shown = clinic
                .get(&ch.collection, &ch.id)?
                .filter(|r| r.is_live())
                .map(|r| {
                    // As `ferry get --json` prints it.
                    let fields: serde_json::Map<_, _> = r
                        .shown()
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), ferry_node::json::to_json(&v)))
                        .collect();
                    serde_json::Value::Object(fields).to_string()
                })
                .unwrap_or_else(|| "deleted".into());
            println!(
                "clinic-a received {}/{} from member #{} (change {}): {shown}",
                ch.collection, ch.id, ch.author, ch.seq
            );
        }
        cursor = page.next;
        if !page.more {
            break;
        }
    }
    Ok(())
}

fn sync(name: &str, node: &mut Node, stick: &Path) -> Result<(), ferry_node::NodeError> {
    let report = node.sync(stick, &NoProgress)?;
    let applied = report
        .import
        .files
        .iter()
        .filter(|f| matches!(f.result, FileResult::Applied { .. }))
        .count();
    println!("{name} synced with the stick: {applied} bundles applied");
    Ok(())
}
