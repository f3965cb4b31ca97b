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

    /// Runs and expects a usage mistake: exit status 2 and one error line; returns stderr.
    pub fn misuse(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "exit code for {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8(out.stderr).expect("utf-8");
        assert_eq!(stderr.lines().count(), 1, "errors are one line: {stderr:?}");
        stderr
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
    let (hq, a, b, _) = three_with_codes(base);
    (hq, a, b)
}

/// [`three`], and the one-time codes of the invitations `a.invite` and `b.invite`.
pub fn three_with_codes(base: &Path) -> (Laptop, Laptop, Laptop, [Option<String>; 2]) {
    let hq = Laptop::new(base, "hq");
    hq.ok(&["init", "--name", "hq", "--create", "clinic visits"]);
    let inv_a = base.join("a.invite");
    let inv_b = base.join("b.invite");
    let code_a = hq.invite(&inv_a, "clinic-a");
    let code_b = hq.invite(&inv_b, "clinic-b");
    let a = Laptop::new(base, "a");
    a.join("clinic-a", &inv_a, code_a.as_deref());
    let b = Laptop::new(base, "b");
    b.join("clinic-b", &inv_b, code_b.as_deref());
    (hq, a, b, [code_a, code_b])
}

/// The one-time code in `ferry invite`'s output (a line `code: CODE`), if it prints one.
pub fn invite_code(stdout: &str) -> Option<String> {
    stdout.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix("code:")?;
        rest.split_whitespace().next().map(str::to_string)
    })
}

impl Laptop {
    /// `ferry invite --out FILE --label LABEL` (admin); returns the invitation's one-time
    /// code when `invite` prints one (`code: CODE`).
    pub fn invite(&self, out: &Path, label: &str) -> Option<String> {
        let stdout = self.ok(&["invite", "--out", s(out), "--label", label]);
        invite_code(&stdout)
    }

    /// `ferry init --name NAME --join FILE`, with `--code CODE` when there is a code.
    pub fn join(&self, name: &str, invite: &Path, code: Option<&str>) -> String {
        let mut args = vec!["init", "--name", name, "--join", s(invite)];
        if let Some(code) = code {
            args.extend(["--code", code]);
        }
        self.ok(&args)
    }
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

/// Every laptop syncs with the stick folder `dir` in turn, twice round (so what the last
/// one wrote reaches the first).
pub fn exchange(laptops: &[&Laptop], dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for _ in 0..2 {
        for l in laptops {
            l.ok(&["sync", s(dir)]);
        }
    }
}

/// `ferry conflicts --json`, parsed.
pub fn conflicts(l: &Laptop) -> serde_json::Value {
    serde_json::from_str(&l.ok(&["conflicts", "--json"])).unwrap()
}
