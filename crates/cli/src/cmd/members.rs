//! Commands about the members of the dataset: init, invite, contact and rule.

use super::open;
use crate::output::{self, out};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ferry_model::{MemberId, Rule};
use ferry_node::{Contact, Home, InvitationFile, Node, NodeError};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Args)]
pub(crate) struct InitArgs {
    /// A name for this laptop, e.g. hq or clinic-a [needed with --create; with --join the
    /// laptop takes the label the admin gave the invitation, and --name must match it]
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    mode: Mode,
    /// With --join: the invitation's one-time code, XXXX-XXXX-XXXX, that `ferry invite`
    /// showed the admin [asked for when not given and a terminal is attached]
    #[arg(
        long,
        value_name = "CODE",
        env = "FERRY_INVITE_CODE",
        hide_env_values = true
    )]
    code: Option<String>,
    /// Protect this laptop's store with a passphrase: it is encrypted on disk, and every
    /// command asks for the passphrase (or reads it from the file FERRY_PASSPHRASE_FILE
    /// names)
    #[arg(long)]
    passphrase: bool,
    /// With --join: restore this laptop from a file `ferry backup` wrote, joining again
    /// under the new invitation's member number (so it never forks its old history)
    #[arg(long, value_name = "BACKUP")]
    restore: Option<PathBuf>,
    /// With --restore: the backup's one-time code, XXXX-XXXX-XXXX [asked for when not given
    /// and a terminal is attached]
    #[arg(
        long,
        value_name = "CODE",
        env = "FERRY_BACKUP_CODE",
        hide_env_values = true
    )]
    backup_code: Option<String>,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct Mode {
    /// Create a new dataset with this name; this laptop becomes its admin
    #[arg(long, value_name = "DATASET")]
    create: Option<String>,
    /// Join a dataset with an invitation file from its admin
    #[arg(long, value_name = "INVITE_FILE")]
    join: Option<PathBuf>,
}

#[derive(Args)]
pub(crate) struct RejoinArgs {
    /// The new invitation file
    #[arg(long, value_name = "INVITE_FILE")]
    join: PathBuf,
    /// The new invitation's one-time code [asked for when not given and a terminal is
    /// attached]
    #[arg(
        long,
        value_name = "CODE",
        env = "FERRY_INVITE_CODE",
        hide_env_values = true
    )]
    code: Option<String>,
    /// The label the new invitation gives this laptop [default: that label; labels are
    /// given by the admin, so another one is refused]
    #[arg(long)]
    name: Option<String>,
    /// Rejoin although this laptop has not been told that the admin refused it (when the
    /// admin said so some other way)
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct InviteArgs {
    #[command(subcommand)]
    action: Option<InviteAction>,
    /// Where to write the invitation (a file that does not exist yet)
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// A name for the new member, e.g. clinic-b (labels name one laptop each)
    #[arg(long)]
    label: Option<String>,
    /// How long the invitation stays valid, e.g. 7d, 36h or 90m: the new laptop must
    /// join, and its first bundle reach this laptop, within that time
    #[arg(long, value_name = "DURATION")]
    expires: Option<String>,
}

#[derive(Subcommand)]
pub(crate) enum InviteAction {
    /// Every invitation written, and what became of it: open, expired, cancelled or joined
    #[command(after_help = "\
Examples:
  ferry invite list
  ferry invite list --json    (a JSON array: member, label, issued, expires, state, cancelled)

Exit status: 0; 1 failed (the line says why); 2 usage mistake.")]
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Cancel an invitation that has not been used (admin only)
    #[command(after_help = "\
Examples:
  ferry invite cancel clinic-c
  ferry invite cancel '#5' --reason \"the stick with the invitation was lost\"

From the next sync on, every laptop refuses that member: nothing it writes counts, nothing it
sends is accepted, and compaction and purge stop waiting for it. A laptop that already joined
with it is told to ask for a new invitation (`ferry rejoin`). An invitation whose laptop has
joined (its first bundle reached the admin) can no longer be cancelled.

Exit status: 0 cancelled; 1 failed (not the admin, or the line says why); 2 usage mistake (no
such member, or its invitation was used or is already cancelled).")]
    Cancel {
        /// The member: its label, or #N
        member: String,
        /// Why (shown to every laptop)
        #[arg(long)]
        reason: Option<String>,
    },
}

/// A duration as typed after `--expires`: a whole number and a unit, `s`, `m`, `h` or `d`.
fn parse_duration(s: &str) -> Result<u64, NodeError> {
    let t = s.trim();
    let (n, unit) = t.split_at(t.len() - t.chars().last().map_or(0, char::len_utf8));
    let per = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => 0,
    };
    match n.parse::<u64>() {
        Ok(n) if n > 0 && per > 0 && n <= 3650 * 86_400_000 / per => Ok(n * per),
        _ => Err(NodeError::BadArgument(format!(
            "--expires {s:?} is not a duration: write a whole number and s, m, h or d, e.g. 7d, 36h or 90m (at most 10 years)"
        ))),
    }
}

#[derive(Subcommand)]
pub(crate) enum ContactAction {
    /// Publish this laptop's email address and/or phone number (used by `ferry send email/sms`)
    #[command(after_help = "\
Examples:
  ferry contact set --email clinic-a@example.org --phone +254712345678
  ferry contact set --phone +254712345678     (the email address stays as it was)

The other members learn it with the next sync, whichever way it goes.

Exit status: 0 published; 1 failed (the line says why); 2 usage mistake (no option, or an
address or number that is not one).")]
    Set {
        /// Email address, e.g. clinic-a@example.org
        #[arg(long)]
        email: Option<String>,
        /// Phone number in international form, e.g. +254712345678
        #[arg(long)]
        phone: Option<String>,
    },
    /// Every member's published addresses
    #[command(after_help = "\
Examples:
  ferry contact list
  ferry contact list --json    (a JSON array of {\"member\", \"label\", \"email\", \"phone\"})

Exit status: 0; 1 failed (the line says why); 2 usage mistake.")]
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum MemberAction {
    /// Every member: number, label, role, when it joined, its last bundle, what it lacks
    #[command(after_help = "\
Examples:
  ferry member list
  ferry member list --json    (a JSON array: member, label, you, admin, joined, joined_at,
                               fingerprint, holds, lacks_from_us, last_heard, frozen_from)

\"lacks\" counts the changes this laptop holds that the member is not known to hold (as its
last bundle told): they go with the next sync it is part of.

Exit status: 0; 1 failed (the line says why); 2 usage mistake.")]
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Give a member another label (admin only; labels name one laptop each)
    #[command(after_help = "\
Examples:
  ferry member rename clinic-b clinic-kisumu
  ferry member rename '#3' clinic-kisumu      (#N: member number N)

Labels belong to the admin: a laptop cannot choose or change its own, so none can pass for
another. The others learn the new label with the next sync.

Exit status: 0 renamed; 1 failed (not the admin, or the line says why); 2 usage mistake (no
such member, or a label another member has).")]
    Rename {
        /// The member: its label, or #N
        member: String,
        /// Its new label
        label: String,
    },
    /// Remove a member (admin only): a lost or stolen laptop, or staff who left
    #[command(after_help = "\
Examples:
  ferry member remove clinic-b --reason \"laptop stolen at the checkpoint\"
  ferry member remove '#3'

What it wrote up to now (as far as this laptop has it) stays; nothing it writes from now on
counts, and every laptop refuses its new bundles, saying it was removed, when and by whom.
The dataset moves to a new key that every other member receives, sealed to it alone, with
the next bundles: the removed laptop cannot read anything written after this.
Removing an admin also withdraws its role: for a lost or stolen admin laptop, remove it —
a demotion counts only once that laptop learns of it. Sync as usual; the others learn of
it with the next sync.

Exit status: 0 removed; 1 failed (not the admin, or the line says why); 2 usage mistake (no
such member, already removed, or not joined yet: cancel its invitation instead).")]
    Remove {
        /// The member: its label, or #N
        member: String,
        /// Why (shown to every member)
        #[arg(long)]
        reason: Option<String>,
    },
    /// Make a member an admin too (admin only), so losing one admin's laptop loses nothing
    #[command(after_help = "\
Examples:
  ferry member promote clinic-b
  ferry member promote '#3'

An admin can invite (each admin gives member numbers from its own range, so two admins
inviting offline never give the same number), remove members, cancel invitations, rename
members, set merge rules, and promote or demote others. Its admin actions count from the
changes that have seen the promotion, on every laptop alike. It can change the dataset key
too (ferry rekey, and with each removal).

Exit status: 0 promoted (the others learn it with the next sync); 1 failed (not an admin,
or the line says why); 2 usage mistake (no such member, already an admin, not joined yet).")]
    Promote {
        /// The member: its label, or #N
        member: String,
    },
    /// Withdraw a member's admin role (admin only; an admin may step down itself)
    #[command(after_help = "\
Examples:
  ferry member demote clinic-b
  ferry member demote '#3'

Its admin actions made after it learned of this count no more. Its invitations numbered up
to the highest number this laptop knows it used still join; later ones are refused. Two
admins demoting each other at the same time both lose the role: keep a third.

Exit status: 0 demoted; 1 failed (not an admin, or the line says why); 2 usage mistake (no
such member, not an admin, or the only admin).")]
    Demote {
        /// The member: its label, or #N
        member: String,
    },
}

#[derive(Subcommand)]
pub(crate) enum RuleAction {
    /// Set the rule of a field (admin only): conflict, lww, max, min, counter, set or first
    #[command(after_help = "\
Examples:
  ferry rule set stock nets counter     (increments made on other laptops add up)
  ferry rule set patients tags set      (a field of words: ferry add, ferry remove)

Exit status: 0 set (the others get it with the next sync); 1 failed (not the admin, or the
line says why); 2 usage mistake (such as an unknown rule).")]
    Set {
        /// Collection
        collection: String,
        /// Field
        field: String,
        /// conflict | lww | max | min | counter | set | first
        rule: String,
    },
    /// List the rules that are set
    #[command(after_help = "\
Examples:
  ferry rule list
  ferry rule list --json    (a JSON array of {\"collection\", \"field\", \"rule\"})

Exit status: 0; 1 failed (the line says why); 2 usage mistake.")]
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

/// `ferry rejoin`.
pub(crate) fn rejoin(home: Option<PathBuf>, a: RejoinArgs) -> Result<()> {
    let mut home = Home::resolve(home)?;
    if home.is_locked() {
        let p = super::passphrase(&home)?;
        home = home.with_passphrase(p);
    }
    let invite = InvitationFile::read(&a.join)?;
    let code = code_for(&invite, a.code)?;
    let (node, r) = Node::rejoin(&home, a.name.as_deref(), &invite, code.as_deref(), a.force)?;
    let id = node.identity();
    out(format_args!(
        "Joined dataset {:?} again as {:?} (member #{}; was member #{}). Your key fingerprint is {}.",
        id.dataset_name,
        id.label,
        r.new_member,
        r.old_member,
        node.public_key().fingerprint()
    ))?;
    out(format_args!(
        "wrote again {} record{} ({} value{}) that this laptop had written; the old database is kept in {}",
        r.records,
        if r.records == 1 { "" } else { "s" },
        r.values,
        if r.values == 1 { "" } else { "s" },
        r.kept.display()
    ))?;
    for d in &r.deletes_not_carried {
        out(format_args!(
            "delete   {d} again after the first sync (this laptop had deleted it; a delete cannot be carried before the record arrives)"
        ))?;
    }
    out(format_args!(
        "Run `ferry sync DIR` to send them; you may now delete the invitation file."
    ))
}

/// `ferry backup`.
pub(crate) fn backup(home: Option<PathBuf>, out_file: PathBuf) -> Result<()> {
    let mut node = open(home)?;
    let r = node.backup(&out_file)?;
    out(format_args!(
        "Wrote a backup of this laptop to {} ({} bytes)",
        r.path.display(),
        r.bytes
    ))?;
    out(format_args!("code: {}", r.code))?;
    out(format_args!(
        "The file opens only with this code: keep the code apart from the file (on paper). To restore, ask the admin for a new invitation and run: ferry init --join NEW_INVITE --restore {}",
        r.path.display()
    ))
}

/// `ferry init`.
pub(crate) fn init(home: Option<PathBuf>, a: InitArgs) -> Result<()> {
    let mut home = Home::resolve(home)?;
    if a.restore.is_some() && a.mode.join.is_none() {
        return Err(NodeError::BadArgument(
            "--restore needs --join NEW_INVITE: a restored laptop joins again under a new member number, so it never writes a second version of its old history; ask the admin for a new invitation".into(),
        )
        .into());
    }
    if a.passphrase {
        if home.exists() {
            return Err(NodeError::AlreadyInitialized(home.root().to_path_buf()).into());
        }
        home = home.with_passphrase(super::new_passphrase()?);
    }
    let node = match (&a.mode.create, &a.mode.join) {
        (Some(dataset), None) => {
            let Some(name) = a.name.as_deref() else {
                return Err(NodeError::BadArgument(
                    "a new dataset needs a name for this laptop: add --name LABEL, e.g. --name hq"
                        .into(),
                )
                .into());
            };
            Node::create(&home, name, dataset)?
        }
        (None, Some(path)) if a.restore.is_some() => {
            let backup = a.restore.as_deref().expect("checked");
            let invite = InvitationFile::read(path)?;
            let backup_code = match a.backup_code {
                Some(c) => c,
                None if std::io::stdin().is_terminal() => {
                    use std::io::Write as _;
                    eprint!("Backup code (XXXX-XXXX-XXXX, printed by `ferry backup`): ");
                    std::io::stderr().flush()?;
                    let mut line = String::new();
                    std::io::stdin()
                        .read_line(&mut line)
                        .context("cannot read the backup code from the terminal")?;
                    line
                }
                None => {
                    return Err(NodeError::BadArgument(
                        "--restore needs the backup's code: --backup-code XXXX-XXXX-XXXX (or FERRY_BACKUP_CODE)".into(),
                    )
                    .into());
                }
            };
            let code = code_for(&invite, a.code)?;
            let (node, r) =
                Node::restore_backup(&home, backup, &backup_code, &invite, code.as_deref())?;
            out(format_args!(
                "Restored {} and joined again as member #{} (the backup was of member #{}): {} records it had written are written again as the new member; the others' records and what it wrote after the backup come with the next sync",
                backup.display(),
                r.new_member,
                r.old_member,
                r.records
            ))?;
            node
        }
        (None, Some(path)) => {
            let invite = InvitationFile::read(path)?;
            let code = code_for(&invite, a.code)?;
            let node = Node::join(&home, a.name.as_deref(), &invite, code.as_deref())?;
            // Said once it is used (a file that cannot join gets its error alone).
            if !invite.needs_code() {
                eprintln!(
                    "NOTE: {} was written by an earlier ferry and is not protected by a code: whoever holds a copy of it can join; delete it",
                    path.display()
                );
            }
            node
        }
        _ => unreachable!("clap requires exactly one of --create and --join"),
    };
    let id = node.identity();
    out(format_args!(
        "Created node {:?} (member #{}) in {}",
        id.label,
        id.me.0,
        home.root().display()
    ))?;
    if id.is_founder() {
        out(format_args!(
            "New dataset {:?} ({}). You are its admin: add laptops with `ferry invite --out FILE --label NAME`.",
            id.dataset_name, id.dataset
        ))
    } else {
        out(format_args!(
            "Joined dataset {:?} ({}). Your key fingerprint is {}. Run `ferry sync DIR` to exchange data; you may now delete the invitation file.",
            id.dataset_name,
            id.dataset,
            node.public_key().fingerprint()
        ))
    }
}

/// `ferry invite`.
pub(crate) fn invite(home: Option<PathBuf>, a: InviteArgs) -> Result<()> {
    match a.action {
        Some(InviteAction::List { json }) => return invite_list(home, json),
        Some(InviteAction::Cancel { member, reason }) => {
            let mut node = open(home)?;
            let (n, label) = node.cancel_invitation(&member, reason.as_deref())?;
            return out(format_args!(
                "Cancelled the invitation of {} (member #{n}); every laptop refuses that member from its next sync on",
                output::shown(&label)
            ));
        }
        None => {}
    }
    let Some(path) = a.out else {
        return Err(NodeError::BadArgument(
            "say where to write the invitation: ferry invite --out FILE [--label LABEL] (or: ferry invite list, ferry invite cancel MEMBER)".into(),
        )
        .into());
    };
    let valid = a.expires.as_deref().map(parse_duration).transpose()?;
    let mut node = open(home)?;
    let r = node.invite_until(&path, a.label.as_deref(), valid)?;
    out(format_args!(
        "Wrote invitation for {:?} (member #{}) to {}",
        r.label,
        r.member,
        r.path.display()
    ))?;
    if let Some(at) = &r.expires {
        out(format_args!(
            "expires: {at} (the new laptop must join, and its first bundle reach this laptop, before then)"
        ))?;
    }
    out(format_args!("code: {}", r.code))?;
    out(format_args!(
        "The file opens only with this code: give the code to the new laptop's user yourself (say it, or write it on paper), never on the same stick. On the new laptop run: ferry init --join {} (it asks for the code; the laptop is labelled {})",
        r.path.display(),
        r.label
    ))
}

/// `ferry invite list`.
fn invite_list(home: Option<PathBuf>, as_json: bool) -> Result<()> {
    let mut node = open(home)?;
    let list = node.invitations()?;
    if as_json {
        return out(format_args!("{}", serde_json::to_string(&list)?));
    }
    if list.is_empty() {
        return out(format_args!(
            "No invitations yet: write one with `ferry invite --out FILE --label LABEL`"
        ));
    }
    out(format_args!(
        "{:<8} {:<16} {:<10} {:<20} expires",
        "#", "label", "state", "issued"
    ))?;
    for v in &list {
        let state = match &v.cancelled {
            Some(why) => format!("cancelled: {}", output::shown(why)),
            None => v.state.to_string(),
        };
        out(format_args!(
            "{:<8} {:<16} {:<10} {:<20} {}",
            format!("#{}", v.member),
            output::shown(&v.label),
            v.state,
            v.issued.as_deref().unwrap_or("?"),
            match (&v.expires, &v.cancelled) {
                (_, Some(_)) => state,
                (Some(t), None) => t.clone(),
                (None, None) => "never".into(),
            }
        ))?;
    }
    Ok(())
}

/// `ferry member list|rename|remove`.
pub(crate) fn member(home: Option<PathBuf>, action: MemberAction) -> Result<()> {
    let mut node = open(home)?;
    match action {
        MemberAction::List { json: as_json } => {
            let members = node.status()?.members;
            if as_json {
                return out(format_args!("{}", serde_json::to_string(&members)?));
            }
            out(format_args!(
                "{:<8} {:<16} {:<7} {:<20} {:<20} lacks",
                "#", "label", "role", "joined", "last bundle"
            ))?;
            for m in &members {
                let role = if m.admin { "admin" } else { "member" };
                let joined = match (&m.joined_at, m.joined) {
                    (Some(t), _) => output::shown(t).into_owned(),
                    (None, true) => "yes".to_string(),
                    (None, false) => "invited only".to_string(),
                };
                let (heard, lacks) = if m.you {
                    ("(this laptop)".to_string(), "—".to_string())
                } else if let Some(why) = &m.cancelled {
                    (
                        m.last_heard
                            .as_deref()
                            .map_or("never".into(), |t| output::shown(t).into_owned()),
                        format!("CANCELLED ({}): nothing of it counts", output::shown(why)),
                    )
                } else if let Some(r) = &m.removed {
                    (
                        m.last_heard
                            .as_deref()
                            .map_or("never".into(), |t| output::shown(t).into_owned()),
                        format!(
                            "REMOVED {} ({}): nothing after its change {} counts",
                            output::shown(&r.at),
                            output::shown(&r.reason),
                            r.cutoff
                        ),
                    )
                } else if let Some(k) = m.frozen_from {
                    (
                        m.last_heard
                            .as_deref()
                            .map_or("never".into(), |t| output::shown(t).into_owned()),
                        format!("FROZEN from change {k} (its history forked)"),
                    )
                } else {
                    (
                        m.last_heard
                            .as_deref()
                            .map_or("never".into(), |t| output::shown(t).into_owned()),
                        format!("{} changes", m.lacks_from_us),
                    )
                };
                out(format_args!(
                    "{:<8} {:<16} {role:<7} {joined:<20} {heard:<20} {lacks}",
                    format!("#{}", m.member),
                    output::shown(&m.label),
                ))?;
            }
            Ok(())
        }
        MemberAction::Promote { member } => {
            let (n, label) = node.promote(&member)?;
            out(format_args!(
                "{} (member #{n}) is now an admin; the others learn it with the next sync",
                output::shown(&label)
            ))
        }
        MemberAction::Demote { member } => {
            let (n, label) = node.demote(&member)?;
            out(format_args!(
                "{} (member #{n}) is no longer an admin; the others learn it with the next sync",
                output::shown(&label)
            ))
        }
        MemberAction::Remove { member, reason } => {
            let r = node.remove_member(&member, reason.as_deref())?;
            let (n, label) = r.removed.unwrap_or_default();
            let others = match r.members.saturating_sub(1) {
                1 => "the other member".to_string(),
                n => format!("each of the {n} other members"),
            };
            let who = match n {
                1 => "member #1, the founding laptop".to_string(),
                n => format!("member #{n}"),
            };
            out(format_args!(
                "Removed {} ({who}): what it wrote up to its change {} counts, nothing after; the dataset now uses key number {}, sealed to {others} with the next bundles",
                output::shown(&label),
                r.cutoff.unwrap_or(0),
                r.epoch,
            ))
        }
        MemberAction::Rename { member, label } => {
            let (n, old) = node.rename_member(&member, &label)?;
            if old == label {
                return out(format_args!(
                    "Member #{n} is already labelled {}: nothing written",
                    output::shown(&label)
                ));
            }
            out(format_args!(
                "Member #{n} ({}) is now labelled {}; the others learn it with the next sync",
                output::shown(&old),
                output::shown(&label)
            ))
        }
    }
}

/// `ferry contact set|list`.
pub(crate) fn contact(home: Option<PathBuf>, action: ContactAction) -> Result<()> {
    let mut node = open(home)?;
    match action {
        ContactAction::Set { email, phone } => {
            node.set_contact(email.as_deref(), phone.as_deref())?;
            out(format_args!(
                "Published; the other members learn it with the next sync"
            ))
        }
        ContactAction::List { json: as_json } => {
            let labels = node.labels()?;
            let contacts = node.contacts()?;
            if as_json {
                let items: Vec<_> = contacts
                    .iter()
                    .map(|(m, c)| {
                        serde_json::json!({
                            "member": m.0,
                            "label": labels.get(m),
                            "email": c.email,
                            "phone": c.phone,
                        })
                    })
                    .collect();
                out(format_args!("{}", serde_json::Value::Array(items)))
            } else if contacts.is_empty() {
                out(format_args!("No member has published an address yet."))
            } else {
                for (m, c) in &contacts {
                    let label = labels.get(m).map_or("", String::as_str);
                    out(format_args!("{}", contact_line(*m, label, c)))?;
                }
                Ok(())
            }
        }
    }
}

/// `ferry rule set|list`.
pub(crate) fn rule(home: Option<PathBuf>, action: RuleAction) -> Result<()> {
    let mut node = open(home)?;
    match action {
        RuleAction::Set {
            collection,
            field,
            rule,
        } => {
            let rule = parse_rule(&rule)?;
            node.set_rule(&collection, &field, rule)?;
            out(format_args!("{collection}.{field} now merges by {rule}"))
        }
        RuleAction::List { json: as_json } => {
            let rules = node.rules()?.list();
            if as_json {
                let items: Vec<_> = rules
                    .iter()
                    .map(|(c, f, r)| {
                        serde_json::json!({"collection": c, "field": f, "rule": r.name()})
                    })
                    .collect();
                out(format_args!("{}", serde_json::Value::Array(items)))
            } else if rules.is_empty() {
                out(format_args!(
                    "No rules set: every field keeps concurrent values and lists them as conflicts."
                ))
            } else {
                for (c, f, r) in rules {
                    out(format_args!(
                        "{}.{}  {r}",
                        output::shown(&c),
                        output::shown(&f)
                    ))?;
                }
                Ok(())
            }
        }
    }
}

/// A rule's name as typed after `ferry rule set COLLECTION FIELD`; an unknown name is a usage
/// mistake that lists the rules.
fn parse_rule(name: &str) -> Result<Rule, NodeError> {
    name.parse().map_err(NodeError::BadArgument)
}

/// The line `ferry contact list` prints for one member: number, label, email, phone, in
/// columns; `-` for what it has not published.
fn contact_line(m: MemberId, label: &str, c: &Contact) -> String {
    format!(
        "#{:<3} {:<16} {:<30} {}",
        m.0,
        output::shown(label),
        output::shown(c.email.as_deref().unwrap_or("-")),
        output::shown(c.phone.as_deref().unwrap_or("-"))
    )
}

/// Asks for an invitation's one-time code on the terminal (one prompt line on stderr).
/// The invitation's code: the one given (option or environment), else asked for on the
/// terminal when the file needs one and a terminal is attached.
fn code_for(invite: &InvitationFile, given: Option<String>) -> Result<Option<String>> {
    if invite.needs_code() && given.is_none() && std::io::stdin().is_terminal() {
        return Ok(Some(ask_code()?));
    }
    Ok(given)
}

fn ask_code() -> Result<String> {
    use std::io::Write as _;
    eprint!("Invitation code (XXXX-XXXX-XXXX, from the admin): ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the invitation code from the terminal")?;
    Ok(line)
}

#[derive(Subcommand)]
pub(crate) enum PassphraseAction {
    /// Protect this laptop's store with a passphrase, or change the one it has
    #[command(after_help = "\
Examples:
  ferry passphrase set                    (asks for the current one, then the new one twice)
  FERRY_NEW_PASSPHRASE_FILE=new.txt ferry passphrase set   (reads the new one from a file)

The first time, the store (records, history, the dataset's keys) is encrypted on disk
(SQLCipher); from then on every command asks for the passphrase, or reads it from the file
FERRY_PASSPHRASE_FILE names. Changing it later also gives the store a new key (the store is
encrypted again), so an old copy of the key file opens nothing written after. There is no
way back in without it: write it down somewhere safe. Stop a listener using this home first.

Exit status: 0 set; 1 failed (the current passphrase is wrong, or the line says why);
2 usage mistake (a passphrase shorter than 8 characters, or the two differ).")]
    Set,
}

/// `ferry passphrase set`.
pub(crate) fn passphrase(home: Option<PathBuf>, action: PassphraseAction) -> Result<()> {
    let PassphraseAction::Set = action;
    let mut node = open(home)?;
    let new = super::new_passphrase()?;
    let encrypted = node.set_passphrase(&new)?;
    if encrypted {
        out(format_args!(
            "This laptop's store is now encrypted; every command asks for the passphrase (or reads it from the file FERRY_PASSPHRASE_FILE names). Write it down somewhere safe: there is no way in without it"
        ))
    } else {
        out(format_args!(
            "The passphrase is changed; the old one no longer opens this laptop's store"
        ))
    }
}

/// `ferry rekey`.
pub(crate) fn rekey(home: Option<PathBuf>) -> Result<()> {
    let mut node = open(home)?;
    let r = node.rekey()?;
    out(format_args!(
        "The dataset now uses key number {}, sealed to each of the {} members (this laptop included) with the next bundles; older bundles stay readable by members",
        r.epoch, r.members
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use clap::error::ErrorKind as Clap;
    use ferry_node::ErrorKind;

    use crate::cmd::parse;

    #[test]
    fn init_takes_exactly_one_of_create_and_join() {
        match parse(&["init", "--name", "hq", "--create", "Kisumu health visits"]) {
            Ok(Command::Init(a)) => {
                assert_eq!(a.name.as_deref(), Some("hq"));
                assert_eq!(a.mode.create.as_deref(), Some("Kisumu health visits"));
                assert_eq!(a.mode.join, None);
            }
            _ => panic!("init --create does not parse"),
        }
        match parse(&["init", "--name", "a", "--join", "a.invite", "--code", "X"]) {
            Ok(Command::Init(a)) => {
                assert_eq!(a.mode.join, Some(PathBuf::from("a.invite")));
                assert_eq!(a.code.as_deref(), Some("X"));
            }
            _ => panic!("init --join does not parse"),
        }
        match parse(&["init", "--join", "a.invite"]) {
            Ok(Command::Init(a)) => assert_eq!(a.name, None, "the invitation's label"),
            _ => panic!("init --join without --name does not parse"),
        }
        let check = |args: &[&str], kind: Clap| match parse(args) {
            Err(e) => {
                assert_eq!(e.kind(), kind, "{args:?}: {e}");
                assert_eq!(e.exit_code(), 2, "{args:?}");
            }
            Ok(_) => panic!("{args:?} parsed"),
        };
        check(&["init", "--name", "hq"], Clap::MissingRequiredArgument);
        check(
            &["init", "--name", "hq", "--create", "d", "--join", "f"],
            Clap::ArgumentConflict,
        );
        // (--create without --name parses; `init` refuses it in one line.)
    }

    #[test]
    fn contact_and_rule_have_their_actions() {
        match parse(&["contact", "set", "--phone", "+254712345678"]) {
            Ok(Command::Contact {
                action: ContactAction::Set { email, phone },
            }) => {
                assert_eq!(email, None);
                assert_eq!(phone.as_deref(), Some("+254712345678"));
            }
            _ => panic!("contact set does not parse"),
        }
        match parse(&["rule", "set", "stock", "nets", "counter"]) {
            Ok(Command::Rule {
                action: RuleAction::Set { rule, .. },
            }) => assert_eq!(rule, "counter"),
            _ => panic!("rule set does not parse"),
        }
        let e = parse(&["rule"]).err().expect("rule without an action");
        assert_eq!(e.exit_code(), 2);
    }

    #[test]
    fn an_unknown_rule_is_a_usage_mistake_that_lists_the_rules() {
        assert_eq!(parse_rule("counter").unwrap(), Rule::Counter);
        let e = parse_rule("sum").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Usage);
        assert_eq!(
            e.to_string(),
            "unknown rule \"sum\"; the rules are conflict, lww, max, min, counter, set, first"
        );
    }

    #[test]
    fn contact_line_puts_each_address_in_its_column() {
        let c = Contact {
            email: Some("clinic-a@example.org".into()),
            phone: None,
        };
        assert_eq!(
            contact_line(MemberId(2), "clinic-a", &c),
            "#2   clinic-a         clinic-a@example.org           -"
        );
        let c = Contact {
            email: None,
            phone: Some("+254712345678".into()),
        };
        assert_eq!(
            contact_line(MemberId(12), "x\x1b", &c),
            "#12  x\\e              -                              +254712345678"
        );
    }
}
