//! The official OpenAI Python SDK, unchanged, against sluice in front of
//! every provider format (through the mock): plain and streamed chat, tool
//! calls whole and streamed, usage, and errors as the SDK's own exceptions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Sluice;
use sluice_load_tests::{MockOptions, MockUpstream};

#[tokio::test]
async fn the_openai_python_sdk_works_unchanged_against_every_provider() {
    if !common::python_with("openai") {
        return;
    }
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let root = format!("http://{}", mock.addr());
    let config = common::every_provider(&root);
    let sluice = Sluice::start(&config).await;
    let stdout = common::run_sdk_script(&sluice, "openai_sdk_e2e.py", &[common::EVERY_MODEL]).await;
    assert!(stdout.contains("ok: 5 providers"));
}

#[tokio::test]
async fn the_openai_python_sdk_works_unchanged_against_the_built_in_engine() {
    if !common::python_with("openai") {
        return;
    }
    let dir = sluice_batcher::model::tiny::scratch_dir("sdk-local");
    let model = sluice_batcher::model::tiny::write_tiny_model(&dir, 7, true).unwrap();
    let config = format!(
        "upstreams:\n  engine: {{kind: local, model: \"{}\"}}\nmodels:\n  - {{name: tiny, upstream: engine}}\n",
        model.display()
    );
    let sluice = Sluice::start(&config).await;
    let stdout = common::run_sdk_script(&sluice, "openai_sdk_local.py", &["tiny"]).await;
    assert!(stdout.contains("ok: built-in engine"));
}
