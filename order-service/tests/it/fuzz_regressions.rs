//! Every input a fuzz target ever failed on (kept by `fuzz/run.sh` in
//! `tests/fuzz-regressions/<target>/`) and the targets' seeds (`fuzz/seeds/<target>/`), replayed
//! through the same entry points on the stable compiler: a defect the fuzzer found stays fixed.

use order_service::fuzzing::{TARGETS, Target};
use std::path::Path;

#[test]
fn fuzz_findings_and_seeds_replay_without_a_failure() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    replay(
        &TARGETS,
        &crate_dir.join("tests/fuzz-regressions"),
        &crate_dir.join("../fuzz/seeds"),
    );
}

/// Runs every file of `regressions/<target>/` and `seeds/<target>/` through its target; fails
/// naming each file that panicked, on a folder of regressions named after no target, and on a
/// target without seeds (so the replay can never pass by finding nothing).
pub(crate) fn replay(targets: &[Target], regressions: &Path, seeds: &Path) {
    if let Ok(folders) = std::fs::read_dir(regressions) {
        for folder in folders {
            let name = folder.expect("a folder entry").file_name();
            let name = name.to_string_lossy();
            assert!(
                targets.iter().any(|(target, _)| *target == name),
                "{}: no fuzz target is called {name}",
                regressions.display()
            );
        }
    }
    let mut failed = Vec::new();
    for (target, run) in targets {
        let mut seeds_replayed = 0;
        for (folder, is_seed) in [
            (regressions.join(target), false),
            (seeds.join(target), true),
        ] {
            let Ok(files) = std::fs::read_dir(&folder) else {
                continue;
            };
            for file in files {
                let path = file.expect("a file entry").path();
                let input = std::fs::read(&path).expect("a readable input");
                if std::panic::catch_unwind(|| run(&input)).is_err() {
                    failed.push(path.display().to_string());
                }
                seeds_replayed += usize::from(is_seed);
            }
        }
        assert!(seeds_replayed > 0, "fuzz target {target} has no seeds");
    }
    assert!(failed.is_empty(), "fuzz inputs that fail: {failed:#?}");
}
