//! The command line: help, check-config, embedded defaults, shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{free_port, TempDir};
use std::process::Command;

fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    // Keep the default ledger out of the source tree.
    c.current_dir(std::env::temp_dir());
    c.env_remove("OPENAI_API_KEY").env_remove("OPENAI_BASE_URL");
    // The default admin port would collide between tests.
    c.env("SLUICE_ADMIN_LISTEN", format!("127.0.0.1:{}", free_port()));
    c
}

#[test]
fn help_documents_every_subcommand_and_flag() {
    let out = sluice().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for word in [
        "serve",
        "check-config",
        "--config",
        "--listen",
        "--admin-listen",
        "--upgrade",
        "--log-format",
        "--threads",
    ] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
}

#[test]
fn check_config_accepts_the_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../sluice.example.yaml");
    let out = sluice().args(["check-config", example]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok ("));
}

#[test]
fn check_config_names_the_key_path_of_each_problem() {
    let dir = TempDir::new();
    let cases = [
        ("upstreams:\n  a: {base_url: 'http://x', timeout: 3}\n", "upstreams.a.timeout: unknown field"),
        ("server: {max_body_bytes: big}\n", "server.max_body_bytes: invalid type"),
        ("upstreams:\n  a: {base_url: 'http://x', api_key: '${SLUICE_TEST_UNSET}'}\n", "upstreams.a.api_key: environment variable SLUICE_TEST_UNSET is not set"),
        ("upstreams:\n  a: {base_url: 'http://x'}\nmodels:\n  - {name: m, upstream: a}\n  - {name: m, upstream: a}\n", "models[1].name: duplicate model name"),
    ];
    for (i, (yaml, expected)) in cases.iter().enumerate() {
        let path = dir.write(&format!("bad{i}.yaml"), yaml);
        let out = sluice()
            .arg("check-config")
            .arg(&path)
            .env_remove("SLUICE_TEST_UNSET")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{yaml}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr:?}"
        );
    }
}

#[test]
fn serve_refuses_a_bad_config_with_its_key_path() {
    let dir = TempDir::new();
    let path = dir.write("bad.yaml", "server: {listen: nowhere}\n");
    let out = sluice()
        .arg("serve")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen: "));
}

#[tokio::test]
async fn embedded_defaults_forward_every_model_to_openai_base_url() {
    let mock = sluice_load_tests::MockUpstream::start(Default::default())
        .await
        .unwrap();
    let port = free_port();
    let mut child = sluice()
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
        ])
        .env("OPENAI_API_KEY", "sk-from-env")
        .env("OPENAI_BASE_URL", mock.base_url())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let mut answer = None;
    for _ in 0..400 {
        if let Ok(r) = client
            .post(&url)
            .body(r#"{"model":"any-model-at-all","messages":[]}"#)
            .send()
            .await
        {
            answer = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let answer = answer.expect("sluice never answered");
    assert_eq!(answer.status(), 200);
    let upstream = mock.stats().last_request().unwrap();
    assert_eq!(upstream.json()["model"], "any-model-at-all");
    assert_eq!(upstream.header("authorization"), Some("Bearer sk-from-env"));

    // SIGTERM is a graceful stop: exit 0, JSON log lines, no secret in them.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    let first = log.lines().next().expect("some log output");
    assert!(
        serde_json::from_str::<serde_json::Value>(first).is_ok(),
        "not JSON: {first}"
    );
    assert!(!log.contains("sk-from-env"));
}

#[tokio::test]
async fn no_keys_and_no_config_still_serves_and_answers_404() {
    let port = free_port();
    let mut child = sluice()
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/chat/completions");
    let mut status = None;
    for _ in 0..400 {
        if let Ok(r) = client
            .post(&url)
            .body(r#"{"model":"gpt-4o","messages":[]}"#)
            .send()
            .await
        {
            status = Some(r.status().as_u16());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, Some(404));
}
