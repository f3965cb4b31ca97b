//! Many conflicts at once: `ferry resolve --all`.

use crate::error::NodeError;
use crate::node::{ConflictView, Node};
use ferry_model::record::numeric_cmp;
use ferry_model::{Change, Op, Value};
use ferry_sync::Storage as _;
use serde::Serialize;
use std::collections::BTreeMap;

/// Which of a conflict's values `resolve --all` keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prefer {
    /// The one shown now (the latest by ferry's clock).
    Latest,
    /// The largest (numbers by value; numbers above text).
    Max,
    /// The smallest.
    Min,
    /// The one this member wrote (by label); a conflict without one is left.
    Author(String),
}

impl std::str::FromStr for Prefer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "latest" => Ok(Prefer::Latest),
            "max" => Ok(Prefer::Max),
            "min" => Ok(Prefer::Min),
            _ => match s.strip_prefix("author=") {
                Some(label) if !label.is_empty() => Ok(Prefer::Author(label.to_string())),
                _ => Err(format!(
                    "{s:?} is not a preference: use latest, max, min or author=LABEL (a member's label, as `ferry status` lists them, or #N for member number N)"
                )),
            },
        }
    }
}

/// One conflict `resolve --all` settled (or would settle).
#[derive(Clone, Debug, Serialize)]
pub struct Settled {
    /// Collection.
    pub collection: String,
    /// Record id.
    pub id: String,
    /// Field.
    pub field: String,
    /// The value kept.
    #[serde(serialize_with = "crate::node::ser_value")]
    pub value: Value,
    /// Who wrote it.
    pub author: String,
    /// How many concurrent values it settles.
    pub of: usize,
}

/// What `resolve --all` did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ResolveAllReport {
    /// The conflicts settled, in the order `conflicts` lists them.
    pub settled: Vec<Settled>,
    /// Conflicts that matched but were left, with why (`collection/id field: why`).
    pub left: Vec<String>,
    /// Whether nothing was written (`--dry-run`).
    pub dry_run: bool,
}

/// Conflicts settled per commit: one change for any usual number, bounded like a load.
const RESOLVE_BATCH: usize = 1000;

impl Node {
    /// Settles every conflict of `collection` (all when `None`) on `field` (all when
    /// `None`) by keeping the value `prefer` picks, in one change (one per thousand
    /// records); with `dry_run`, only says what it would do. Records deleted on one laptop
    /// while edited on another are left (`delete` or `put` settles them), as are conflicts
    /// where `prefer` names an author that wrote none of the values.
    pub fn resolve_all(
        &mut self,
        collection: Option<&str>,
        field: Option<&str>,
        prefer: &Prefer,
        dry_run: bool,
    ) -> Result<ResolveAllReport, NodeError> {
        // The member the label (or `#N`) names, by number. Labels are unique since the admin
        // gives them all, but a dataset from earlier ferry may have two members with one
        // label: such a label is refused rather than guessed.
        let author = match prefer {
            Prefer::Author(label) => {
                let labels = self.labels()?;
                let named: Vec<u32> = match label.strip_prefix('#') {
                    Some(_) => crate::node::find_member(&labels, label)
                        .map(|m| m.0)
                        .into_iter()
                        .collect(),
                    None => labels
                        .iter()
                        .filter(|(_, l)| l.trim().to_lowercase() == label.trim().to_lowercase())
                        .map(|(m, _)| m.0)
                        .collect(),
                };
                match named.as_slice() {
                    [m] => Some(*m),
                    [] => {
                        let known: Vec<String> = labels.into_values().collect();
                        return Err(NodeError::BadArgument(format!(
                            "no member is labelled {label:?}; members: {}",
                            known.join(", ")
                        )));
                    }
                    several => {
                        let numbers: Vec<String> =
                            several.iter().map(|m| format!("#{m}")).collect();
                        return Err(NodeError::BadArgument(format!(
                            "{} members are labelled {label:?} (members {}): resolve their conflicts one by one with `ferry resolve COLLECTION ID FIELD VALUE`",
                            several.len(),
                            numbers.join(", ")
                        )));
                    }
                }
            }
            _ => None,
        };
        let mut report = ResolveAllReport {
            dry_run,
            ..Default::default()
        };
        let matching = self.conflicts()?.into_iter().filter(|c| {
            collection.is_none_or(|x| c.collection == x) && field.is_none_or(|f| c.field == f)
        });
        for c in matching {
            if c.field == "(record)" {
                report.left.push(format!(
                    "{}/{} (record): deleted on one laptop and edited on another; `ferry delete` or `ferry put` settles it",
                    c.collection, c.id
                ));
                continue;
            }
            match pick(&c, prefer, author) {
                Some((value, author)) => report.settled.push(Settled {
                    collection: c.collection.clone(),
                    id: c.id.clone(),
                    field: c.field.clone(),
                    value,
                    author,
                    of: c.values.len(),
                }),
                None => report.left.push(format!(
                    "{}/{} {}: none of its values was written by {}",
                    c.collection,
                    c.id,
                    c.field,
                    match prefer {
                        Prefer::Author(l) => l.as_str(),
                        _ => "that member",
                    }
                )),
            }
        }
        if dry_run || report.settled.is_empty() {
            return Ok(report);
        }
        // One Record change per record, with one Set per settled field.
        let mut by_record: BTreeMap<(&str, &str), Vec<Op>> = BTreeMap::new();
        for s in &report.settled {
            by_record
                .entry((s.collection.as_str(), s.id.as_str()))
                .or_default()
                .push(Op::Set(s.field.clone(), s.value.clone()));
        }
        // All of it or none: the chunks are committed in one transaction.
        let now = crate::time::now_ms();
        let engine = self.engine.clone();
        let mut tx = self.store.transaction(now)?;
        let mut changes: Vec<Change> = Vec::with_capacity(by_record.len());
        for ((collection, id), ops) in by_record {
            let state = tx.record(collection, id)?;
            changes.push(Change::Record {
                collection: collection.into(),
                id: id.into(),
                ops: crate::node::with_revival(state.as_ref(), ops),
            });
        }
        for chunk in changes.chunks(RESOLVE_BATCH) {
            engine.commit_local(&mut tx, chunk.to_vec(), now)?;
        }
        tx.commit()?;
        Ok(report)
    }
}

/// The value `prefer` keeps among a conflict's values, with its author (`author`: the
/// member number `Prefer::Author` names).
fn pick(c: &ConflictView, prefer: &Prefer, author: Option<u32>) -> Option<(Value, String)> {
    let chosen = match prefer {
        Prefer::Latest => c.values.first(),
        Prefer::Max => c
            .values
            .iter()
            .max_by(|a, b| numeric_cmp(&a.value, &b.value)),
        Prefer::Min => c
            .values
            .iter()
            .min_by(|a, b| numeric_cmp(&a.value, &b.value)),
        Prefer::Author(_) => c.values.iter().find(|v| Some(v.member) == author),
    }?;
    Some((chosen.value.clone(), chosen.author.clone()))
}
