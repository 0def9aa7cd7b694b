//! Every input a fuzz target ever failed on (`tests/fuzz-regressions/<target>/`) and the
//! targets' seeds (`fuzz/seeds/<target>/`), replayed through the same entry points on the stable
//! compiler: a defect the fuzzer found stays fixed.

use status_client::serve::fuzzing::TARGETS;
use std::path::Path;

#[test]
fn fuzz_findings_and_seeds_replay_without_a_failure() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    order_status_fuzz_replay::replay(
        &TARGETS,
        &crate_dir.join("tests/fuzz-regressions"),
        &crate_dir.join("../fuzz/seeds"),
    );
}
