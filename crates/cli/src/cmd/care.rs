//! Commands that look after this laptop: status, doctor, verify, compact and purge.

use super::{count, open};
use crate::output::{self, Bar, out};
use anyhow::{Result, bail};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct StatusArgs {
    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct DoctorArgs {
    /// A stick or shared folder to look at too
    dir: Option<PathBuf>,
    /// Print JSON: {"findings": [{"severity", "area", "text"}]}
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct VerifyArgs {
    /// The bundle file
    file: PathBuf,
    /// Print JSON
    #[arg(long)]
    json: bool,
}

/// `ferry compact`.
pub(crate) fn compact(home: Option<PathBuf>) -> Result<()> {
    let mut node = open(home)?;
    let r = node.compact(true, &Bar::new())?;
    out(format_args!(
        "Compacted {} changes every member already holds ({} in all, counting earlier automatic compaction); store {} → {}",
        r.dropped,
        r.total,
        output::size(r.bytes_before),
        output::size(r.bytes_after)
    ))
}

/// `ferry purge`.
pub(crate) fn purge(home: Option<PathBuf>) -> Result<()> {
    let mut node = open(home)?;
    let r = node.purge(&Bar::new())?;
    out(format_args!(
        "Purged {} deleted records; store {} → {}",
        r.purged,
        output::size(r.compact.bytes_before),
        output::size(r.compact.bytes_after)
    ))?;
    if r.ghosts > 0 {
        out(format_args!(
            "Forgot {} old values that deletes had removed from records created again since",
            r.ghosts
        ))?;
    }
    if r.waiting > 0 {
        let who: Vec<String> = r
            .held_back_by
            .iter()
            .map(|h| output::shown(&h.to_string()).into_owned())
            .collect();
        out(format_args!(
            "{} deleted records stay until every member has received their delete; waiting for {}; run `ferry purge` again after they have synced",
            r.waiting,
            if who.is_empty() {
                "the next syncs".to_string()
            } else {
                who.join("; ")
            }
        ))?;
    }
    Ok(())
}

/// `ferry status`.
pub(crate) fn status(home: Option<PathBuf>, a: StatusArgs) -> Result<()> {
    let mut node = open(home)?;
    let s = node.status()?;
    if a.json {
        out(format_args!("{}", serde_json::to_string_pretty(&s)?))
    } else {
        output::print_status(&s)
    }
}

/// `ferry doctor`: fails (exit status 1) when it found a problem.
pub(crate) fn doctor(home: Option<PathBuf>, a: DoctorArgs) -> Result<()> {
    let mut node = open(home)?;
    let r = node.doctor(a.dir.as_deref())?;
    if a.json {
        out(format_args!("{}", serde_json::to_string_pretty(&r)?))?;
    } else {
        output::print_doctor(&r)?;
    }
    match problems_line(r.problems()) {
        Some(line) => bail!(line),
        None => Ok(()),
    }
}

/// `ferry verify`: fails (exit status 1) when the bundle has a problem.
pub(crate) fn verify(home: Option<PathBuf>, a: VerifyArgs) -> Result<()> {
    let mut node = open(home)?;
    let r = node.verify(&a.file)?;
    if a.json {
        out(format_args!("{}", serde_json::to_string_pretty(&r)?))?;
    } else {
        output::print_verify(&r)?;
    }
    if let Some(p) = &r.problem {
        bail!("{}: {p}", a.file.display());
    }
    Ok(())
}

/// The error line of a doctor that found `n` problems, if it found any.
fn problems_line(n: usize) -> Option<String> {
    (n > 0).then(|| {
        format!(
            "doctor found {}: see the PROBLEM line{} above",
            match n {
                1 => "a problem".to_string(),
                n => count(n as u64, "problem", "problems"),
            },
            if n == 1 { "" } else { "s" }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;

    use crate::cmd::parse;

    #[test]
    fn doctor_line_points_at_the_problem_lines() {
        assert_eq!(problems_line(0), None);
        assert_eq!(
            problems_line(1).unwrap(),
            "doctor found a problem: see the PROBLEM line above"
        );
        assert_eq!(
            problems_line(3).unwrap(),
            "doctor found 3 problems: see the PROBLEM lines above"
        );
    }

    #[test]
    fn doctor_takes_an_optional_stick_and_verify_needs_a_file() {
        match parse(&["doctor", "/media/usb", "--json"]) {
            Ok(Command::Doctor(a)) => {
                assert_eq!(a.dir, Some(PathBuf::from("/media/usb")));
                assert!(a.json);
            }
            _ => panic!("doctor DIR does not parse"),
        }
        match parse(&["doctor"]) {
            Ok(Command::Doctor(a)) => assert_eq!(a.dir, None),
            _ => panic!("doctor does not parse"),
        }
        let e = parse(&["verify"]).err().expect("verify without a file");
        assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert_eq!(e.exit_code(), 2);
        // compact and purge take no argument.
        let e = parse(&["compact", "now"])
            .err()
            .expect("compact with an argument");
        assert_eq!(e.exit_code(), 2);
    }
}
