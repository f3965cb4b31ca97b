//! Replays every committed fuzz input through its target, so that a regression shows in
//! `cargo test` without fuzzing: each file of `corpus/TARGET/` (the minimized corpus the
//! fuzzer built) and of `crashes/TARGET/` (inputs that once crashed, hung or allocated too
//! much, each fixed since). A target whose corpus folder is empty fails, so the test cannot
//! pass by finding nothing.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .map(|e| e.expect("a readable folder entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn every_committed_corpus_and_crasher_replays_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut failures = Vec::new();
    let mut replayed = 0;
    for &(name, target) in ferry_fuzz::TARGETS {
        let corpus = files(&root.join("corpus").join(name));
        assert!(
            !corpus.is_empty(),
            "tests/fuzz/corpus/{name}/ is empty: run the seeds example and fuzz it"
        );
        let crashes = files(&root.join("crashes").join(name));
        for path in corpus.iter().chain(&crashes) {
            let data = std::fs::read(path).expect("a readable input");
            if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
                failures.push(path.display().to_string());
            }
            replayed += 1;
        }
    }
    // Every folder of corpus/ and crashes/ belongs to a target (a renamed target must not
    // leave its inputs unreplayed).
    for folder in ["corpus", "crashes"] {
        for dir in std::fs::read_dir(root.join(folder)).into_iter().flatten() {
            let dir = dir.expect("entry");
            if !dir.path().is_dir() {
                continue;
            }
            let name = dir.file_name().to_string_lossy().to_string();
            assert!(
                ferry_fuzz::TARGETS.iter().any(|(t, _)| *t == name),
                "tests/fuzz/{folder}/{name}/ belongs to no target"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {replayed} inputs panic: {failures:#?}",
        failures.len()
    );
}
