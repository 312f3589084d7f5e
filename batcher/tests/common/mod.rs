//! What the SmolLM2 tests share: where the model is, and the rule for its
//! absence (skip with a note locally, fail under `CI`).

use std::path::PathBuf;

/// SmolLM2-135M-Instruct Q4_1 (`SLUICE_SMOLLM2_GGUF` or `models/`), or
/// `None` with a note when it is not fetched; a failure under `CI`.
pub fn smollm2_path() -> Option<PathBuf> {
    let path = std::env::var_os("SLUICE_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    if path.exists() {
        return Some(path);
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(
        !in_ci,
        "{} missing under CI: run batcher/scripts/fetch-smollm2.sh first",
        path.display()
    );
    eprintln!(
        "skipping: {} not found (run batcher/scripts/fetch-smollm2.sh)",
        path.display()
    );
    None
}
