//! Members' contact addresses (email, phone), replicated as dataset metadata, and the node's
//! configuration file.

use crate::NodeError;
use crate::node::Node;
use ferry_model::{Change, MemberId, Op, Value};
use serde::Serialize;
use std::collections::BTreeMap;

/// How to reach one member.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Contact {
    /// Email address.
    pub email: Option<String>,
    /// Phone number, international form (`+` and digits).
    pub phone: Option<String>,
}

fn check_email(e: &str) -> Result<(), NodeError> {
    let ok = e.len() <= 254
        && e.split_once('@').is_some_and(|(user, host)| {
            !user.is_empty() && host.contains('.') && !host.starts_with('.') && !host.ends_with('.')
        })
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(NodeError::BadArgument(format!(
            "{e:?} is not an email address (like clinic-a@example.org)"
        )))
    }
}

fn check_phone(p: &str) -> Result<(), NodeError> {
    let digits = p.strip_prefix('+').unwrap_or("");
    if (6..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(NodeError::BadArgument(format!(
            "{p:?} is not a phone number in international form (like +254712345678)"
        )))
    }
}

impl Node {
    /// Publishes this node's own email address and/or phone number to every member.
    pub fn set_contact(
        &mut self,
        email: Option<&str>,
        phone: Option<&str>,
    ) -> Result<(), NodeError> {
        let mut ops = Vec::new();
        if let Some(e) = email {
            check_email(e)?;
            ops.push(Op::Set("email".into(), Value::Str(e.into())));
        }
        if let Some(p) = phone {
            check_phone(p)?;
            ops.push(Op::Set("phone".into(), Value::Str(p.into())));
        }
        if ops.is_empty() {
            return Err(NodeError::BadArgument(
                "`ferry contact set` needs --email ADDRESS, --phone +NUMBER, or both (for example ferry contact set --email clinic-a@example.org)".into(),
            ));
        }
        let me = self.identity().me;
        self.commit_changes(vec![Change::Record {
            collection: "_members".into(),
            id: me.0.to_string(),
            ops,
        }])
    }

    /// Every member's published contact addresses.
    pub fn contacts(&mut self) -> Result<BTreeMap<MemberId, Contact>, NodeError> {
        let mut tx = self.read()?;
        let mut out = BTreeMap::new();
        tx.for_each_record("_members", false, |id, r| {
            if let Ok(n) = id.parse::<u32>() {
                let text = |f: &str| match r.winner(f) {
                    Some(Value::Str(s)) => Some(s.clone()),
                    _ => None,
                };
                let c = Contact {
                    email: text("email"),
                    phone: text("phone"),
                };
                if c != Contact::default() {
                    out.insert(MemberId(n), c);
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// A section of `ferry.toml` in the home folder (`[email]`, `[sms]`, `[serial]`), if the
    /// file and the section exist.
    pub fn config_section(&self, name: &str) -> Result<Option<toml::Table>, NodeError> {
        let path = self.home().config();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(NodeError::io("cannot read", &path, e)),
        };
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            NodeError::Settings(format!(
                "{} is not valid TOML: {}",
                path.display(),
                e.message()
            ))
        })?;
        match table.get(name) {
            None => Ok(None),
            Some(toml::Value::Table(t)) => Ok(Some(t.clone())),
            Some(_) => Err(NodeError::Settings(format!(
                "in {}, [{name}] must be a table of settings",
                path.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_in_plain_words() {
        assert!(check_email("clinic-a@example.org").is_ok());
        assert!(check_email("clinic a@example.org").is_err());
        assert!(check_email("clinic-a").is_err());
        assert!(check_phone("+254712345678").is_ok());
        assert!(check_phone("0712345678").is_err());
        assert!(check_phone("+25471234567x").is_err());
    }
}
