//! The official OpenAI Python SDK, unchanged, against sluice in front of
//! every provider format (through the mock): plain and streamed chat, tool
//! calls whole and streamed, usage, and errors as the SDK's own exceptions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::Sluice;
use sluice_load_tests::{MockOptions, MockUpstream};
use std::process::Command;

fn python_with_openai() -> bool {
    Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn the_openai_python_sdk_works_unchanged_against_every_provider() {
    if !python_with_openai() {
        if std::env::var_os("CI").is_some() {
            panic!("python3 with the `openai` package is required under CI (pip install openai)");
        }
        eprintln!("skipping: python3 -m pip install openai to run this test");
        return;
    }
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let root = format!("http://{}", mock.addr());
    let config = format!(
        r#"
routing: {{max_attempts: 1}}
upstreams:
  oai: {{base_url: "{root}/v1", api_key: k}}
  az: {{kind: azure, base_url: "{root}", api_key: k}}
  claude: {{kind: anthropic, base_url: "{root}/v1", api_key: k}}
  gem: {{kind: gemini, base_url: "{root}/v1beta", api_key: k}}
  bed: {{kind: bedrock, base_url: "{root}", region: us-east-1, aws_access_key_id: AKIDEXAMPLE, aws_secret_access_key: secret}}
models:
  - {{name: via-openai, upstream: oai, upstream_model: gpt-4o-mini}}
  - {{name: via-azure, upstream: az, upstream_model: my-deployment}}
  - {{name: via-anthropic, upstream: claude, upstream_model: claude-3-5-haiku-latest}}
  - {{name: via-gemini, upstream: gem, upstream_model: gemini-2.0-flash}}
  - {{name: via-bedrock, upstream: bed, upstream_model: anthropic.claude-3-haiku-20240307-v1:0}}
"#
    );
    let sluice = Sluice::start(&config).await;
    let models = "via-openai,via-azure,via-anthropic,via-gemini,via-bedrock";
    let stdout = common::run_sdk_script(&sluice, "openai_sdk_e2e.py", &[models]).await;
    assert!(stdout.contains("ok: 5 providers"));
}

#[tokio::test]
async fn the_openai_python_sdk_works_unchanged_against_the_built_in_engine() {
    if !python_with_openai() {
        if std::env::var_os("CI").is_some() {
            panic!("python3 with the `openai` package is required under CI (pip install openai)");
        }
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
