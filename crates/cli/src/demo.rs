//! `ferry demo`: three laptops and a USB stick, for real, in a temporary folder.
//!
//! Every step calls the same library functions as the commands a user types.

use crate::output::out;
use anyhow::{Result, ensure};
use ferry_model::Value;
use ferry_node::{FileResult, Home, InvitationFile, NoProgress, Node, SyncReport};
use std::path::{Path, PathBuf};

fn visit(patient: &str, village: &str, weight: f64, diagnosis: &str) -> Vec<(String, Value)> {
    let s = |v: &str| Value::Str(v.into());
    vec![
        ("patient_id".into(), s(patient)),
        ("visit_date".into(), s("2026-11-03")),
        ("village".into(), s(village)),
        ("chw".into(), s("chw-017")),
        ("age_years".into(), Value::Int(34)),
        ("sex".into(), s("F")),
        ("weight_kg".into(), Value::Float(weight)),
        ("muac_mm".into(), Value::Int(242)),
        ("temp_c".into(), Value::Float(37.8)),
        ("diagnosis".into(), s(diagnosis)),
        ("treatment".into(), s("ACT")),
        ("followup".into(), Value::Bool(true)),
    ]
}

fn step(text: &str) -> Result<()> {
    out(format_args!("\n== {text}"))
}

struct Laptop {
    name: &'static str,
    node: Node,
}

fn sync(l: &mut Laptop, stick: &Path) -> Result<SyncReport> {
    let r = l.node.sync(stick, &NoProgress)?;
    let mut read = Vec::new();
    for f in &r.import.files {
        let name = f.path.file_name().unwrap_or_default().to_string_lossy();
        let short = &name[..8.min(name.len())];
        match &f.result {
            FileResult::Applied {
                sender,
                new,
                duplicates,
                ..
            } if *new + *duplicates > 0 => read.push(format!(
                "{short}… from {sender} ({} B): {new} new, {duplicates} already here",
                f.bytes
            )),
            FileResult::Applied { sender, .. } => read.push(format!(
                "{short}… from {sender} ({} B): a receipt (what {sender} holds)",
                f.bytes
            )),
            FileResult::AlreadyApplied | FileResult::RefusedBefore { .. } => {}
            FileResult::Rejected { reason, .. } => {
                read.push(format!("{short}… REFUSED and quarantined: {reason}"))
            }
            FileResult::Waiting { reason, .. } => read.push(format!(
                "{short}… waiting (cannot be checked yet: {reason})"
            )),
            FileResult::Skipped { reason } => read.push(format!("{short}… skipped: {reason}")),
        }
    }
    let wrote = match &r.export.written {
        Some((_, bytes, 0)) => format!("wrote a {bytes} B receipt (what this laptop holds)"),
        Some((_, bytes, 1)) => format!("wrote a {bytes} B bundle with 1 change"),
        Some((_, bytes, commits)) => format!("wrote a {bytes} B bundle with {commits} changes"),
        None => "nothing new to write".into(),
    };
    out(format_args!("  {:<9} sync: {wrote}", l.name))?;
    for line in read {
        out(format_args!("            read {line}"))?;
    }
    if !r.export.removed.is_empty() {
        let n = r.export.removed.len();
        out(format_args!(
            "            removed {n} old bundle{} from the stick: every laptop has {}",
            if n == 1 { "" } else { "s" },
            if n == 1 {
                "its content"
            } else {
                "their content"
            }
        ))?;
    }
    Ok(r)
}

pub fn run(keep: Option<PathBuf>) -> Result<()> {
    let tmp;
    let base = match keep {
        Some(p) => {
            std::fs::create_dir_all(&p)?;
            p
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let stick = base.join("usb-stick");
    std::fs::create_dir_all(&stick)?;
    out(format_args!(
        "ferry demo: three laptops and a USB stick, in {}",
        base.display()
    ))?;

    step("1. HQ creates the dataset and invites two clinics")?;
    let mut hq = Laptop {
        name: "hq",
        node: Node::create(&Home::at(base.join("hq")), "hq", "Kisumu health visits")?,
    };
    let inv_a = base.join("clinic-a.invite");
    let inv_b = base.join("clinic-b.invite");
    let code_a = hq.node.invite(&inv_a, Some("clinic-a"))?.code;
    let code_b = hq.node.invite(&inv_b, Some("clinic-b"))?.code;
    out(format_args!(
        "  hq        wrote clinic-a.invite and clinic-b.invite, each locked with a one-time code"
    ))?;
    out(format_args!(
        "  hq        reads the codes out: clinic-a {code_a}, clinic-b {code_b} (never on the stick)"
    ))?;
    let mut a = Laptop {
        name: "clinic-a",
        node: Node::join(
            &Home::at(base.join("clinic-a")),
            Some("clinic-a"),
            &InvitationFile::read(&inv_a)?,
            Some(&code_a),
        )?,
    };
    let mut b = Laptop {
        name: "clinic-b",
        node: Node::join(
            &Home::at(base.join("clinic-b")),
            Some("clinic-b"),
            &InvitationFile::read(&inv_b)?,
            Some(&code_b),
        )?,
    };
    out(format_args!(
        "  clinic-a  joined with its invitation and code, offline"
    ))?;
    out(format_args!(
        "  clinic-b  joined with its invitation and code, offline"
    ))?;

    step("2. Each laptop records patient visits, offline")?;
    hq.node.put(
        "visits",
        "v-2026-000121",
        &visit("p-004510", "Kisumu Ndogo", 58.0, "malaria"),
    )?;
    a.node.put(
        "visits",
        "v-2026-000123",
        &visit("p-004512", "Kisumu Ndogo", 61.5, "malaria"),
    )?;
    b.node.put(
        "visits",
        "v-2026-000124",
        &visit("p-004513", "Obunga", 70.2, "pneumonia"),
    )?;
    out(format_args!("  one visit each, 12 fields per visit"))?;

    step("3. The driver's first round: the stick goes clinic-a → hq → clinic-b → hq → clinic-a")?;
    sync(&mut a, &stick)?;
    let first_a_bundle = std::fs::read_dir(hq.node.bundle_folder(&stick))?
        .flatten()
        .map(|e| e.path())
        .next();
    let saved_copy = base.join("old-copy-of-clinic-a-bundle.ferry");
    if let Some(p) = &first_a_bundle {
        std::fs::copy(p, &saved_copy)?;
    }
    sync(&mut hq, &stick)?;
    sync(&mut b, &stick)?;
    sync(&mut hq, &stick)?;
    sync(&mut a, &stick)?;

    step("4. Both clinics correct the same visit before the next round (a concurrent edit)")?;
    a.node.put(
        "visits",
        "v-2026-000123",
        &[("weight_kg".into(), Value::Float(62.0))],
    )?;
    b.node.put(
        "visits",
        "v-2026-000123",
        &[("weight_kg".into(), Value::Float(61.0))],
    )?;
    out(format_args!("  clinic-a  sets weight_kg=62.0"))?;
    out(format_args!(
        "  clinic-b  sets weight_kg=61.0 (it has not seen clinic-a's change)"
    ))?;

    step("5. Something damaged a bundle on the stick")?;
    let folder = hq.node.bundle_folder(&stick);
    let victim = std::fs::read_dir(&folder)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "ferry"));
    let damaged = folder.join("damaged-copy.ferry");
    if let Some(victim) = victim {
        let mut bytes = std::fs::read(&victim)?;
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x20;
        std::fs::write(&damaged, bytes)?;
        out(format_args!(
            "  a copy of a bundle with one flipped bit is now on the stick"
        ))?;
    }
    sync(&mut hq, &stick)?;
    std::fs::remove_file(&damaged)?;
    out(format_args!(
        "  the driver deletes the damaged file from the stick; hq keeps a copy in quarantine"
    ))?;

    step("6. Second round: clinic-b → hq → clinic-a → hq → clinic-b")?;
    sync(&mut b, &stick)?;
    sync(&mut hq, &stick)?;
    sync(&mut a, &stick)?;
    sync(&mut hq, &stick)?;
    sync(&mut b, &stick)?;

    step(
        "7. A late duplicate: an old copy of clinic-a's first bundle reaches clinic-b by another way",
    )?;
    let r = b
        .node
        .import(std::slice::from_ref(&saved_copy), &NoProgress)?;
    match r.files.first().map(|f| &f.result) {
        Some(FileResult::Applied {
            new, duplicates, ..
        }) => out(format_args!(
            "  clinic-b  {new} new, {duplicates} already here: nothing changes"
        ))?,
        Some(FileResult::AlreadyApplied) => out(format_args!(
            "  clinic-b  this exact bundle was applied before: nothing changes"
        ))?,
        _ => {}
    }

    step("8. All three laptops hold the same records")?;
    let lists = [
        crate::cmd::records::list_json(&mut hq.node, "visits")?,
        crate::cmd::records::list_json(&mut a.node, "visits")?,
        crate::cmd::records::list_json(&mut b.node, "visits")?,
    ];
    ensure!(
        lists[0] == lists[1] && lists[1] == lists[2],
        "the demo's laptops differ; this is a bug in ferry"
    );
    let records = hq.node.status()?.records;
    out(format_args!(
        "  `ferry list visits --json` is byte-identical on hq, clinic-a and clinic-b ({records} visits)"
    ))?;
    for l in [&mut hq, &mut a, &mut b] {
        let conflicts = l.node.conflicts()?;
        for c in &conflicts {
            let values: Vec<String> = c
                .values
                .iter()
                .map(|v| format!("{} by {}", v.value, v.author))
                .collect();
            out(format_args!(
                "  {:<9} conflict on {}/{} {}: shows {}, keeps {}",
                l.name,
                c.collection,
                c.id,
                c.field,
                c.winner,
                values.join(" and ")
            ))?;
        }
    }
    let quarantined = hq.node.status()?.quarantined;
    out(format_args!(
        "  hq        refused the damaged bundle and keeps {quarantined} copy in its quarantine folder"
    ))?;
    out(format_args!(
        "\nDone. Try it yourself: see README.md, \"A USB stick between three laptops\"."
    ))?;
    Ok(())
}
