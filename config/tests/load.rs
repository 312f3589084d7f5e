//! Loading whole documents: the checked-in example, defaults, and every
//! class of error `sluice check-config` must explain.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sluice_config::{
    load_file, load_str, Config, ConfigError, LocalDevice, UpstreamBaseUrl, UpstreamKind,
    DEFAULT_LOCAL_MODEL_NAME, DEFAULT_LOCAL_MODEL_PATH,
};
use std::collections::HashMap;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

fn error_of(yaml: &str) -> String {
    load_str(yaml, &env_of(&[("KEY", "sk-test")]))
        .unwrap_err()
        .to_string()
}

#[test]
fn example_config_in_repo_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sluice.example.yaml");
    // The example references ${OPENAI_API_KEY:-...} defaults, so it loads with no env set.
    let config = load_file(&path).unwrap();
    assert!(!config.upstreams.is_empty());
    assert!(config.listed_models().count() >= 2);
}

#[test]
fn example_local_upstream_parses_when_uncommented() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sluice.example.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let block: Vec<String> = text
        .lines()
        .skip_while(|l| *l != "  # smol:")
        .take_while(|l| l.starts_with("  #"))
        .map(|l| l.replacen("# ", "", 1))
        .collect();
    assert!(block.len() > 5, "the commented local example is gone");
    let yaml = format!(
        "upstreams:\n{}\nmodels:\n  - {{name: smollm2-135m-instruct, upstream: smol}}\n",
        block.join("\n")
    );
    let config = load_str(&yaml, &env_of(&[])).unwrap();
    assert!(matches!(config.upstreams[0].kind, UpstreamKind::Local(_)));
}

#[test]
fn empty_document_is_all_defaults() {
    let config = load_str("", &env_of(&[])).unwrap();
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.server.admin_listen.to_string(), "127.0.0.1:9090");
    assert_eq!(
        config.server.upgrade_sock,
        std::path::Path::new("sluice-data/upgrade.sock")
    );
    assert_eq!(config.server.max_body_bytes, 16 * 1024 * 1024);
    assert!(config.models.is_empty());
}

#[test]
fn full_document_is_validated() {
    let yaml = r#"
server:
  listen: 0.0.0.0:9000
  max_body_bytes: 1024
upstreams:
  local:
    base_url: http://127.0.0.1:8000/v1/
    api_key: ${KEY}
    headers: {X-Team: research}
models:
  - name: fast
    upstream: local
    upstream_model: llama-3-8b
  - name: "*"
    upstream: local
"#;
    let config = load_str(yaml, &env_of(&[("KEY", "sk-test")])).unwrap();
    let up = &config.upstreams[0];
    assert_eq!(up.api_key.as_ref().unwrap().expose(), "sk-test");
    assert_eq!(up.base_url.path_prefix, "/v1");
    assert_eq!(
        up.headers,
        vec![("x-team".to_string(), "research".to_string())]
    );
    assert_eq!(
        config.models[0].steps[0].targets[0].model.as_deref(),
        Some("llama-3-8b")
    );
    assert_eq!(config.listed_models().count(), 1);
    // Secrets never print, even through the whole config's Debug.
    assert!(!format!("{config:?}").contains("sk-test"));
}

#[test]
fn unknown_key_names_its_path() {
    let err = error_of("upstreams:\n  a:\n    base_url: http://x\n    api_kee: foo\n");
    assert!(
        err.starts_with("upstreams.a.api_kee: unknown field `api_kee`"),
        "{err}"
    );
}

#[test]
fn bad_type_names_its_path() {
    let err = error_of("server:\n  max_body_bytes: lots\n");
    assert!(
        err.starts_with("server.max_body_bytes: invalid type"),
        "{err}"
    );
}

#[test]
fn missing_required_key_names_its_path() {
    // Kinds with a well-known URL default it; Azure has none.
    let err = error_of("upstreams:\n  a: {kind: azure}\n");
    assert_eq!(err, "upstreams.a.base_url: is required for this kind");
    let err = error_of("upstreams:\n  a: {kind: bedrock}\n");
    assert_eq!(err, "upstreams.a.region: is required for kind bedrock");
    let err = error_of("upstreams:\n  a: {kind: palm}\n");
    assert!(
        err.starts_with("upstreams.a.kind: unknown kind \"palm\""),
        "{err}"
    );
    let config = load_str(
        "upstreams:\n  a: {kind: anthropic, api_key: k}\n",
        &env_of(&[]),
    )
    .unwrap();
    assert_eq!(config.upstreams[0].base_url.host, "api.anthropic.com");
}

#[test]
fn missing_env_var_names_path_and_variable() {
    let err = error_of("upstreams:\n  a:\n    base_url: http://x\n    api_key: ${NOT_SET}\n");
    assert_eq!(
        err,
        "upstreams.a.api_key: environment variable NOT_SET is not set (referenced as ${NOT_SET})"
    );
}

#[test]
fn duplicate_model_name_is_refused() {
    let err = error_of(
        "upstreams:\n  a: {base_url: 'http://x'}\nmodels:\n  - {name: m, upstream: a}\n  - {name: m, upstream: a}\n",
    );
    assert_eq!(
        err,
        "models[1].name: duplicate model name \"m\" (first defined at models[0])"
    );
}

#[test]
fn unknown_upstream_reference_is_refused() {
    let err =
        error_of("upstreams:\n  a: {base_url: 'http://x'}\nmodels:\n  - {name: m, upstream: b}\n");
    assert!(
        err.starts_with("models[0].upstream: unknown upstream \"b\""),
        "{err}"
    );
}

#[test]
fn bad_listen_address_and_url_are_refused() {
    assert!(error_of("server: {listen: 'localhost'}").starts_with("server.listen: "));
    assert!(error_of("server: {admin_listen: ':9090'}").starts_with("server.admin_listen: "));
    for clash in [
        "server: {listen: '127.0.0.1:7000', admin_listen: '127.0.0.1:7000'}",
        "server: {listen: '0.0.0.0:7000', admin_listen: '127.0.0.1:7000'}",
    ] {
        let err = error_of(clash);
        assert!(
            err.starts_with("server.admin_listen: ") && err.contains("collides"),
            "{err}"
        );
    }
    let long = format!("server: {{upgrade_sock: '/{}'}}", "s".repeat(200));
    assert!(error_of(&long).starts_with("server.upgrade_sock: "));
    let err = error_of("upstreams:\n  a: {base_url: 'ftp://x'}\n");
    assert!(
        err.starts_with("upstreams.a.base_url: scheme must be http or https"),
        "{err}"
    );
}

#[test]
fn price_overrides_take_cache_read_and_write_rates() {
    let yaml = "pricing:\n  - {model: my-claude, input: '3.00', cached_input: '0.30', cache_write: 3.75, output: '15'}\n";
    let config = load_str(yaml, &env_of(&[])).unwrap();
    let price = &config.ledger.pricing[0];
    assert_eq!(price.cached_input.as_ref().unwrap().0, "0.30");
    assert_eq!(price.cache_write.as_ref().unwrap().0, "3.75");
    let err = error_of("pricing:\n  - {model: m, input: '1', output: '1', cache_write: 'dear'}\n");
    assert!(err.starts_with("pricing[0].cache_write: "), "{err}");
}

#[test]
fn invalid_yaml_is_a_syntax_error() {
    let err = load_str("server: [", &env_of(&[])).unwrap_err();
    assert!(matches!(err, ConfigError::Syntax(_)));
}

#[test]
fn embedded_defaults_follow_openai_sdk_variables() {
    let upstream = |config: &Config, name: &str| {
        config
            .upstreams
            .iter()
            .find(|u| u.name == name)
            .cloned()
            .unwrap()
    };
    let none = Config::embedded_defaults(&env_of(&[])).unwrap();
    // Without a key: only the built-in engine's model.
    assert_eq!(none.upstreams.len(), 1);
    let names: Vec<&str> = none.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, [DEFAULT_LOCAL_MODEL_NAME]);

    let with_key = Config::embedded_defaults(&env_of(&[("OPENAI_API_KEY", "sk-x")])).unwrap();
    let openai = upstream(&with_key, "openai");
    assert_eq!(openai.base_url.host, "api.openai.com");
    assert!(openai.base_url.tls);
    let names: Vec<&str> = with_key.models.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, [DEFAULT_LOCAL_MODEL_NAME, "*"]);
    let listed: Vec<&str> = with_key.listed_models().map(|m| m.name.as_str()).collect();
    assert_eq!(listed, [DEFAULT_LOCAL_MODEL_NAME]);
    let wildcard_target = &with_key.models[1].steps[0].targets[0];
    assert_eq!(with_key.upstreams[wildcard_target.upstream].name, "openai");

    let with_base = Config::embedded_defaults(&env_of(&[
        ("OPENAI_API_KEY", "sk-x"),
        ("OPENAI_BASE_URL", "http://127.0.0.1:9999/v1"),
    ]))
    .unwrap();
    assert_eq!(
        upstream(&with_base, "openai").base_url,
        UpstreamBaseUrl {
            tls: false,
            host: "127.0.0.1".into(),
            port: 9999,
            path_prefix: "/v1".into()
        }
    );
    let err = Config::embedded_defaults(&env_of(&[
        ("OPENAI_API_KEY", "sk-x"),
        ("OPENAI_BASE_URL", "ftp://x"),
    ]))
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("OPENAI_BASE_URL: scheme must be"), "{err}");
}

#[test]
fn embedded_defaults_serve_the_local_model() {
    let config = Config::embedded_defaults(&env_of(&[])).unwrap();
    let local = &config.upstreams[0];
    assert_eq!(local.name, "local");
    assert_eq!(local.base_url, UpstreamBaseUrl::in_process());
    let UpstreamKind::Local(settings) = &local.kind else {
        panic!("not local: {:?}", local.kind);
    };
    assert_eq!(
        settings.model,
        std::path::PathBuf::from(DEFAULT_LOCAL_MODEL_PATH)
    );
    assert_eq!(settings.device, LocalDevice::Cpu);
    assert_eq!(config.models[0].steps[0].targets[0].upstream, 0);
    assert_eq!(config.models[0].steps[0].targets[0].model, None);
}

#[test]
fn failover_chains_are_validated() {
    let yaml = r#"
upstreams:
  a: {base_url: 'http://x'}
  b: {base_url: 'http://y'}
models:
  - name: fast
    chain:
      - targets: [{upstream: a, model: small, weight: 3}, {upstream: b}]
        balance: least_in_flight
      - targets: [{upstream: b, model: big}]
routing:
  max_attempts: 4
  breaker: {failure_ratio: 0.25, open_s: 5}
"#;
    let config = load_str(yaml, &env_of(&[])).unwrap();
    let steps = &config.models[0].steps;
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].targets[0].weight, 3);
    assert_eq!(steps[0].balance, sluice_config::Balance::LeastInFlight);
    assert_eq!(steps[1].targets[0].model.as_deref(), Some("big"));
    assert_eq!(config.routing.max_attempts, 4);
    assert_eq!(config.routing.breaker.failure_ratio, 0.25);

    let err = error_of("upstreams:\n  a: {base_url: 'http://x'}\nmodels:\n  - {name: m, upstream: a, chain: [{targets: [{upstream: a}]}]}\n");
    assert!(err.starts_with("models[0]: give either"), "{err}");
    let err = error_of("upstreams:\n  a: {base_url: 'http://x'}\nmodels:\n  - {name: m, chain: [{targets: [{upstream: z}]}]}\n");
    assert!(
        err.starts_with("models[0].chain[0].targets[0].upstream: unknown upstream"),
        "{err}"
    );
    let err = error_of("upstreams:\n  a: {base_url: 'http://x'}\nmodels:\n  - {name: m, chain: [{targets: [{upstream: a}], balance: fastest}]}\n");
    assert!(
        err.starts_with("models[0].chain[0].balance: expected"),
        "{err}"
    );
}
