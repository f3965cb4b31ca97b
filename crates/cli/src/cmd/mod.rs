//! The commands, one module per group: each holds its groups' argument structs, the code
//! that turns them into `ferry_node` calls and prints the result, and its tests. The
//! `Command` enum in `main.rs` names them all, in the order `ferry --help` lists them.

pub(crate) mod care;
pub(crate) mod exchange;
pub(crate) mod members;
pub(crate) mod records;

use crate::output;
use anyhow::Result;
use ferry_node::{Home, Node};
use std::path::PathBuf;

/// Opens the node in the home folder (`--home`, else `$FERRY_HOME`, else the platform's data
/// folder); a wait for another ferry on the same home is said on stderr.
pub(crate) fn open(home: Option<PathBuf>) -> Result<Node> {
    let home = Home::resolve(home)?;
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
