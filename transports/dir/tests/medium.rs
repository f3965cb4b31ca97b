//! The directory transport on real folders: the shared conformance suite, and real small
//! and read-only file systems (tmpfs mounts; these tests run as root, as CI does, and fail
//! rather than skip when they cannot mount).

use ferry_transport::{Transport, TransportError};
use ferry_transport_dir::DirTransport;
use std::path::{Path, PathBuf};
use std::process::Command;

#[test]
fn passes_the_transport_conformance_suite() {
    let mut dirs = Vec::new();
    ferry_transport::conformance::run(|| {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("ferry").join("dataset");
        dirs.push(dir);
        (DirTransport::new(&folder), DirTransport::new(&folder))
    });
}

/// A tmpfs of `size` mounted on a fresh folder; unmounted on drop.
struct Mount {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mount {
    fn new(size: &str) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stick");
        std::fs::create_dir(&path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "mounting a tmpfs failed: these tests need root (CI runs as root)"
        );
        Mount { path, _dir: dir }
    }

    fn remount_read_only(&self) {
        let ok = Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.path)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount read-only failed");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn files(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
#[ignore = "needs root to mount a tmpfs — run tests/run"]
fn a_full_stick_gives_a_clear_error_and_leaves_no_partial_file() {
    let m = Mount::new("256k");
    let folder = m.path.join("ferry");
    let mut t = DirTransport::new(&folder);
    let small = vec![1u8; 10_000];
    t.send("a", &mut &small[..], small.len() as u64).unwrap();
    let big = vec![2u8; 400_000];
    let err = t.send("b", &mut &big[..], big.len() as u64).unwrap_err();
    match &err {
        TransportError::Full {
            needed, available, ..
        } => assert!(needed > available),
        other => panic!("expected Full, got {other:?}"),
    }
    assert!(err.to_string().contains("is full"), "{err}");
    assert_eq!(files(&folder), vec!["a.ferry"]);
}

#[test]
#[ignore = "needs root to mount a tmpfs — run tests/run"]
fn a_stick_that_fills_up_during_the_write_leaves_no_partial_file() {
    // The free-space check passes (the size is announced too small), then the write hits
    // the real end of the device.
    let m = Mount::new("256k");
    let folder = m.path.join("ferry");
    let mut t = DirTransport::new(&folder);
    let big = vec![3u8; 600_000];
    let err = t.send("c", &mut &big[..], 1_000).unwrap_err();
    assert!(
        matches!(err, TransportError::Full { .. } | TransportError::Io { .. }),
        "{err:?}"
    );
    assert!(files(&folder).is_empty(), "left {:?}", files(&folder));
}

#[test]
#[ignore = "needs root to mount a tmpfs — run tests/run"]
fn a_read_only_stick_gives_a_clear_error() {
    let m = Mount::new("1m");
    std::fs::create_dir(m.path.join("ferry")).unwrap();
    m.remount_read_only();
    let mut t = DirTransport::new(m.path.join("ferry"));
    let err = t.send("a", &mut &b"x"[..], 1).unwrap_err();
    assert!(matches!(err, TransportError::ReadOnly { .. }), "{err:?}");
    assert!(err.to_string().contains("read-only"), "{err}");
}
