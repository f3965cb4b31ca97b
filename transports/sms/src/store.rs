//! The state folder: what the SMS transport must remember across days and restarts, as
//! small files written atomically (`ferry_transport::fsutil`: temporary name, `fsync`,
//! rename, `fsync` of the folder).
//!
//! ```text
//! STATE/
//!   lock, flush.lock           advisory locks (state changes; one sender at a time)
//!   peers/PHONE.json           per peer: budget day, sent today, sent in all, next tag
//!   sent/PHONE/TAG.msg, .json  messages sent, kept to answer repair requests
//!   queue/PHONE/P-SEQ-TAG-I.txt|.bin   SMS waiting for budget or for the gateway
//!   budget.json                SMS sent to all numbers today (total_daily_budget)
//!   incoming/index.json        incomplete messages, recently finished ones, allowances
//!   incoming/parts/DIGITS-TAG-N/  one incomplete message: a group of the part store
//!                              (ferry_transport::parts: `log`, `data`, `<id>.cand` for
//!                              further versions of a part, `meta` = assemblies refused)
//!   inbox/ID.msg, ID.json      assembled messages for the node; inbox/processed/ once
//!                              applied (at most 256, keep_sent_hours)
//!   expired/DIGITS-TAG-TIME.json  parts of members' messages given up, every version in
//!                              hexadecimal (64 files, 8 MiB, 30 days)
//!   quarantine/refused.jsonl   SMS that were not ferry's or from unknown numbers, one line
//!                              each (rotated at 512 KiB, 14 days)
//!   reports/ID.json            what the node should tell the user (at most 256)
//! ```

use crate::error::SmsError;
use crate::phone::Phone;
use ferry_transport::fsutil::AtomicWrite;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since 1970.
pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Back from seconds since 1970.
pub(crate) fn from_unix(s: u64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_secs(s)
}

/// Year, month, day of a day number since 1970 (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYYMMDD` and `HHMMSS` in UTC.
pub(crate) fn utc_stamp(t: SystemTime) -> (String, String) {
    let s = unix(t);
    let (y, m, d) = civil_from_days((s / 86_400) as i64);
    let r = s % 86_400;
    (
        format!("{y:04}{m:02}{d:02}"),
        format!("{:02}{:02}{:02}", r / 3600, r / 60 % 60, r % 60),
    )
}

/// An ISO 8601 UTC time, for reports.
pub(crate) fn iso(t: u64) -> String {
    let (d, h) = utc_stamp(from_unix(t));
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &d[..4],
        &d[4..6],
        &d[6..],
        &h[..2],
        &h[2..4],
        &h[4..]
    )
}

/// A held advisory lock; released when dropped.
pub(crate) struct Lock(#[allow(dead_code)] File);

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A name that sorts by creation time and is unique across processes.
pub(crate) fn unique_stamp() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{nanos:020}{:04}{:07}",
        SEQ.fetch_add(1, Ordering::Relaxed) % 10_000,
        std::process::id() % 10_000_000
    )
}

/// The state folder.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    root: PathBuf,
}

impl Store {
    pub(crate) fn open(root: &Path) -> Result<Store, SmsError> {
        fs::create_dir_all(root).map_err(|e| SmsError::state("create", root, e))?;
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn lock_file(&self, name: &str) -> Result<Lock, SmsError> {
        let path = self.root.join(name);
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| SmsError::state("open", &path, e))?;
        fs4::FileExt::lock(&f).map_err(|e| SmsError::state("lock", &path, e))?;
        Ok(Lock(f))
    }

    /// The lock every change of state holds.
    pub(crate) fn lock(&self) -> Result<Lock, SmsError> {
        self.lock_file("lock")
    }

    /// The lock a sender holds while it empties the queue.
    pub(crate) fn flush_lock(&self) -> Result<Lock, SmsError> {
        self.lock_file("flush.lock")
    }

    /// Writes a file atomically and durably ([`ferry_transport::fsutil`]'s rule).
    pub(crate) fn write(&self, path: &Path, bytes: &[u8]) -> Result<(), SmsError> {
        self.write_as(path, bytes, true)
    }

    /// Writes a file atomically; durably (`fsync` of the file and its folder) only when
    /// `durable`. What strangers send is kept without `fsync`: losing it in a power cut
    /// costs nothing, and it keeps a flood of junk from costing a disk flush per SMS.
    pub(crate) fn write_as(
        &self,
        path: &Path,
        bytes: &[u8],
        durable: bool,
    ) -> Result<(), SmsError> {
        let dir = path.parent().unwrap_or(&self.root);
        fs::create_dir_all(dir).map_err(|e| SmsError::state("create", dir, e))?;
        AtomicWrite::new()
            .durable(durable)
            .write(path, bytes)
            .map_err(|e| SmsError::state("write", path, e))
    }

    pub(crate) fn write_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<(), SmsError> {
        let bytes = serde_json::to_vec_pretty(value).expect("state types serialize");
        self.write(path, &bytes)
    }

    /// [`Store::write_json`], compact, durable only when `durable`.
    pub(crate) fn write_json_as<T: Serialize>(
        &self,
        path: &Path,
        value: &T,
        durable: bool,
    ) -> Result<(), SmsError> {
        let bytes = serde_json::to_vec(value).expect("state types serialize");
        self.write_as(path, &bytes, durable)
    }

    /// Appends one line to a file (created if missing), without `fsync`.
    pub(crate) fn append_line(&self, path: &Path, line: &str) -> Result<(), SmsError> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| SmsError::state("create", dir, e))?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| SmsError::state("open", path, e))?;
        f.write_all(format!("{line}\n").as_bytes())
            .map_err(|e| SmsError::state("write", path, e))
    }

    /// Size and modification time (seconds since 1970) of a file, if it exists.
    pub(crate) fn stat(&self, path: &Path) -> Option<(u64, u64)> {
        let m = fs::metadata(path).ok()?;
        let t = m.modified().map(unix).unwrap_or(0);
        Some((m.len(), t))
    }

    pub(crate) fn read(&self, path: &Path) -> Result<Option<Vec<u8>>, SmsError> {
        match fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SmsError::state("read", path, e)),
        }
    }

    pub(crate) fn read_json<T: DeserializeOwned>(
        &self,
        path: &Path,
    ) -> Result<Option<T>, SmsError> {
        match self.read(path)? {
            None => Ok(None),
            Some(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| SmsError::CorruptState {
                    path: path.to_path_buf(),
                    problem: e.to_string(),
                }),
        }
    }

    pub(crate) fn remove(&self, path: &Path) -> Result<(), SmsError> {
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SmsError::state("remove", path, e)),
        }
    }

    pub(crate) fn rename(&self, from: &Path, to: &Path) -> Result<(), SmsError> {
        if let Some(dir) = to.parent() {
            fs::create_dir_all(dir).map_err(|e| SmsError::state("create", dir, e))?;
        }
        fs::rename(from, to).map_err(|e| SmsError::state("move", from, e))?;
        if let Some(dir) = to.parent() {
            let _ = File::open(dir).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    /// Names in a folder (none when it does not exist), sorted, without hidden files.
    pub(crate) fn list(&self, dir: &Path) -> Result<Vec<String>, SmsError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(SmsError::state("read", dir, e)),
        };
        let mut names = Vec::new();
        for e in entries {
            let e = e.map_err(|e| SmsError::state("read", dir, e))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// The peers (folder names that parse as numbers) under `dir`.
    pub(crate) fn peers_in(&self, dir: &str) -> Result<Vec<Phone>, SmsError> {
        Ok(self
            .list(&self.path(dir))?
            .into_iter()
            .filter_map(|n| Phone::parse(n.trim_end_matches(".json")).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_are_right() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_760), (2026, 11, 3));
        assert_eq!(iso(1_795_567_742), "2026-11-25T00:49:02Z");
    }
}
