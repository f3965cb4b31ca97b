//! The commands, one module per group: each holds its groups' argument structs, the code
//! that turns them into `ferry_node` calls and prints the result, and its tests. The
//! `Command` enum in `main.rs` names them all, in the order `ferry --help` lists them.

pub(crate) mod attach;
pub(crate) mod care;
pub(crate) mod exchange;
pub(crate) mod members;
pub(crate) mod records;
pub(crate) mod serve;

use crate::output;
use anyhow::{Context, Result};
use ferry_node::{Home, Node, NodeError, Passphrase};
use std::io::IsTerminal;
use std::path::PathBuf;

/// Opens the node in the home folder (`--home`, else `$FERRY_HOME`, else the platform's data
/// folder); a wait for another ferry on the same home is said on stderr.
pub(crate) fn open(home: Option<PathBuf>) -> Result<Node> {
    let mut home = Home::resolve(home)?;
    if home.is_locked() {
        let p = passphrase(&home)?;
        home = home.with_passphrase(p);
    }
    let mut node = Node::open(&home)?;
    node.on_wait(|line| eprintln!("ferry: {}", output::shown_sentence(line)));
    Ok(node)
}

/// The command a command line parses to, for the modules' tests.
#[cfg(test)]
pub(crate) fn parse(args: &[&str]) -> Result<crate::Command, clap::Error> {
    use clap::Parser as _;
    crate::Cli::try_parse_from(std::iter::once("ferry").chain(args.iter().copied()))
        .map(|cli| cli.command)
}

/// "1 record", "3 records".
pub(crate) fn count(n: u64, one: &str, many: &str) -> String {
    match n {
        1 => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}

/// The passphrase that unlocks `home`: the file `FERRY_PASSPHRASE_FILE` names (its first
/// line), else typed on the terminal (not shown).
pub(crate) fn passphrase(home: &Home) -> Result<Passphrase> {
    if let Some(text) = passphrase_file("FERRY_PASSPHRASE_FILE")? {
        return Ok(Passphrase::typed(text));
    }
    if !std::io::stdin().is_terminal() {
        return Err(NodeError::PassphraseNeeded(home.root().to_path_buf()).into());
    }
    let text = rpassword::prompt_password(format!("Passphrase of {}: ", home.root().display()))
        .context("cannot read the passphrase from the terminal")?;
    Ok(Passphrase::typed(text))
}

/// A new passphrase: the file `FERRY_NEW_PASSPHRASE_FILE` names (else, for `init`,
/// `FERRY_PASSPHRASE_FILE`), else typed twice on the terminal.
pub(crate) fn new_passphrase() -> Result<Passphrase> {
    for var in ["FERRY_NEW_PASSPHRASE_FILE", "FERRY_PASSPHRASE_FILE"] {
        if let Some(text) = passphrase_file(var)? {
            return Ok(Passphrase::new(text)?);
        }
    }
    if !std::io::stdin().is_terminal() {
        return Err(NodeError::BadArgument(
            "a new passphrase is typed in a terminal, or read from the file FERRY_NEW_PASSPHRASE_FILE names".into(),
        )
        .into());
    }
    let first =
        rpassword::prompt_password("New passphrase (8 characters or more; a few words are best): ")
            .context("cannot read the passphrase from the terminal")?;
    let first = Passphrase::new(first)?;
    let again = rpassword::prompt_password("The same passphrase again: ")
        .context("cannot read the passphrase from the terminal")?;
    if Passphrase::typed(again) != first {
        return Err(NodeError::BadArgument(
            "the two passphrases differ; nothing was changed: run the command again".into(),
        )
        .into());
    }
    Ok(first)
}

/// The first line of the file the environment variable `var` names, if it is set.
fn passphrase_file(var: &str) -> Result<Option<String>> {
    let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read the passphrase file {} ({var})",
            PathBuf::from(&path).display()
        )
    })?;
    Ok(Some(text.lines().next().unwrap_or_default().to_string()))
}
