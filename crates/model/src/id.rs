//! Small identifiers: members, datasets, dots and hashes.

use serde::{Deserialize, Serialize};
use std::fmt;

// wire-format: begin
/// A member of a dataset, numbered by the admin when it issues the invitation.
///
/// The admin is always member 1. Numbers are small so that vector clocks and bundle headers
/// stay a few bytes long.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct MemberId(pub u32);
// wire-format: end

impl MemberId {
    /// The dataset's creator and admin.
    pub const ADMIN: MemberId = MemberId(1);
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

// wire-format: begin
/// The random identifier of a dataset (8 bytes). It names the dataset; it is not a secret and
/// it does not authenticate anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DatasetId(pub [u8; 8]);
// wire-format: end

impl DatasetId {
    /// Lower-case hex, 16 characters.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Display for DatasetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

// wire-format: begin
/// A 32-byte BLAKE3 hash.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Hash(pub [u8; 32]);
// wire-format: end

impl Hash {
    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", &self.to_hex()[..16])
    }
}

// wire-format: begin
/// One event: the `seq`-th commit of `author`. Every write is identified by the dot of the
/// commit that made it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Dot {
    /// Who wrote it.
    pub author: MemberId,
    /// The author's commit number, starting at 1.
    pub seq: u64,
}
// wire-format: end

impl Dot {
    /// The `seq`-th commit of `author`.
    pub fn new(author: MemberId, seq: u64) -> Dot {
        Dot { author, seq }
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}
