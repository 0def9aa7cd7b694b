//! Replays every input a fuzz target ever failed on (kept by `fuzz/run.sh` in a crate's
//! `tests/fuzz-regressions/<target>/`) and the targets' seeds (`fuzz/seeds/<target>/`) through
//! the same entry points on the stable compiler, so a defect the fuzzer found stays fixed. Shared
//! by the regression tests of order-service and status-client.

use std::path::Path;

/// A fuzz target: the name of its folder of regressions and seeds, and its entry point (which
/// panics when a property of the code under test does not hold).
pub type Target = (&'static str, fn(&[u8]));

/// Runs every file of `regressions/<target>/` and `seeds/<target>/` through its target; panics
/// naming each file that panicked, on a folder of regressions named after no target, and on a
/// target without seeds (so the replay can never pass by finding nothing).
pub fn replay(targets: &[Target], regressions: &Path, seeds: &Path) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn panics_on_x(input: &[u8]) {
        assert!(!input.contains(&b'x'), "found an x");
    }

    fn folders() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let regressions = dir.path().join("regressions");
        let seeds = dir.path().join("seeds");
        std::fs::create_dir_all(seeds.join("target")).expect("the seeds folder");
        std::fs::write(seeds.join("target/seed"), b"fine").expect("a seed");
        (dir, regressions, seeds)
    }

    #[test]
    fn passing_seeds_and_regressions_replay() {
        let (_dir, regressions, seeds) = folders();
        std::fs::create_dir_all(regressions.join("target")).expect("the regressions folder");
        std::fs::write(regressions.join("target/old"), b"ok").expect("a regression");
        replay(&[("target", panics_on_x)], &regressions, &seeds);
    }

    #[test]
    #[should_panic(expected = "fuzz inputs that fail")]
    fn a_failing_regression_fails_the_replay() {
        let (_dir, regressions, seeds) = folders();
        std::fs::create_dir_all(regressions.join("target")).expect("the regressions folder");
        std::fs::write(regressions.join("target/crash"), b"xx").expect("a regression");
        replay(&[("target", panics_on_x)], &regressions, &seeds);
    }

    #[test]
    #[should_panic(expected = "has no seeds")]
    fn a_target_without_seeds_fails_the_replay() {
        let (_dir, regressions, seeds) = folders();
        replay(&[("other", panics_on_x)], &regressions, &seeds);
    }

    #[test]
    #[should_panic(expected = "no fuzz target is called stray")]
    fn regressions_of_an_unknown_target_fail_the_replay() {
        let (_dir, regressions, seeds) = folders();
        std::fs::create_dir_all(regressions.join("stray")).expect("a stray folder");
        replay(&[("target", panics_on_x)], &regressions, &seeds);
    }
}
