//! Running `ferry` against temporary homes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One laptop: a home folder.
pub struct Laptop {
    pub home: PathBuf,
}

pub fn ferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}

impl Laptop {
    pub fn new(base: &Path, name: &str) -> Laptop {
        Laptop {
            home: base.join(name),
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(ferry_bin());
        c.arg("--home").arg(&self.home).args(args);
        c.env_remove("FERRY_HOME");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run ferry")
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "ferry {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 output")
    }

    /// Runs and expects failure; returns stderr (one line).
    pub fn fails(&self, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "ferry {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(out.status.code(), Some(1), "exit code for {args:?}");
        let stderr = String::from_utf8(out.stderr).expect("utf-8");
        assert_eq!(stderr.lines().count(), 1, "errors are one line: {stderr:?}");
        (String::from_utf8(out.stdout).unwrap(), stderr)
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).expect("status json")
    }

    pub fn list(&self, collection: &str) -> String {
        self.ok(&["list", collection, "--json"])
    }
}

/// HQ with a new dataset and two clinics that joined with invitations.
pub fn three(base: &Path) -> (Laptop, Laptop, Laptop) {
    let hq = Laptop::new(base, "hq");
    hq.ok(&["init", "--name", "hq", "--create", "clinic visits"]);
    let inv_a = base.join("a.invite");
    let inv_b = base.join("b.invite");
    hq.ok(&[
        "invite",
        "--out",
        inv_a.to_str().unwrap(),
        "--label",
        "clinic-a",
    ]);
    hq.ok(&[
        "invite",
        "--out",
        inv_b.to_str().unwrap(),
        "--label",
        "clinic-b",
    ]);
    let a = Laptop::new(base, "a");
    a.ok(&[
        "init",
        "--name",
        "clinic-a",
        "--join",
        inv_a.to_str().unwrap(),
    ]);
    let b = Laptop::new(base, "b");
    b.ok(&[
        "init",
        "--name",
        "clinic-b",
        "--join",
        inv_b.to_str().unwrap(),
    ]);
    (hq, a, b)
}

/// The files below a folder, recursively, sorted.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
    }
    walk(dir, &mut out);
    out.sort();
    out
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
