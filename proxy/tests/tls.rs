//! HTTPS on the public listener and TLS to upstreams, against the real
//! binary with certificates made at test time: HTTP/1.1 and h2 (by ALPN)
//! over TLS, the certificate picked by SNI, rotation without a restart (and
//! a bad file refused), the handshake deadline, an upstream's `ca_file`, and
//! mutual TLS on the admin listener.
//!
//! TLS 1.0/1.1 are not tested: the only TLS stack here (rustls) implements
//! neither, on the client side as on the server side.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{config_for, Sluice, TempDir};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::{json, Value};
use sluice_load_tests::{MockOptions, MockUpstream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A test CA and the leaf certificates it signs.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf: PEM files' text and the DER the server must present.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "sluice test CA");
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `names` (host names or IP literals).
    fn leaf(&self, names: &[&str]) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].as_str());
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

impl Leaf {
    /// Writes `NAME.crt` and `NAME.key` into `dir`.
    fn write(&self, dir: &TempDir, name: &str) -> (PathBuf, PathBuf) {
        (
            dir.write(&format!("{name}.crt"), &self.cert_pem),
            dir.write(&format!("{name}.key"), &self.key_pem),
        )
    }
}

/// A client trusting `ca`, reporting the served certificate.
fn client(ca: &Ca) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .tls_info(true)
        .timeout(Duration::from_secs(10))
}

/// `config_for` the mock, with `server.tls` set to `tls` (indented YAML
/// under `tls:`).
fn https_config(base_url: &str, tls: &str, server_extra: &str) -> String {
    config_for(base_url, "").replace(
        "server:\n  max_body_bytes: 1048576",
        &format!("server:\n  max_body_bytes: 1048576\n{server_extra}  tls:\n{tls}"),
    )
}

fn tls_yaml(cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "    cert_file: {}\n    key_file: {}\n{extra}",
        cert.display(),
        key.display()
    )
}

fn chat() -> Value {
    json!({"model": "fast", "messages": [{"role": "user", "content": "hi"}]})
}

/// The DER of the certificate the server presented for `response`.
fn served(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("a TLS response carries the peer certificate")
        .to_vec()
}

#[tokio::test]
async fn http1_and_h2_over_tls_with_a_real_completion() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let ca = Ca::new();
    let dir = TempDir::new();
    let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"]).write(&dir, "server");
    let config = https_config(&mock.base_url(), &tls_yaml(&cert, &key, ""), "");
    let sluice = Sluice::start_https(&config, client(&ca).build().unwrap()).await;

    // HTTP/1.1 over TLS: several requests on one kept-alive connection.
    let h1 = client(&ca).http1_only().build().unwrap();
    for _ in 0..3 {
        let r = h1
            .post(sluice.url("/v1/chat/completions"))
            .json(&chat())
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_11);
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["object"], "chat.completion");
    }

    // h2, chosen by ALPN: a completion and a stream.
    let h2 = client(&ca).build().unwrap();
    let r = h2
        .post(sluice.url("/v1/chat/completions"))
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["choices"][0]["message"]["content"].is_string(),
        "{body}"
    );
    let mut streamed = chat();
    streamed["stream"] = json!(true);
    let r = h2
        .post(sluice.url("/v1/chat/completions"))
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let text = r.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(mock.stats().requests(), 5);

    // Plain HTTP to the HTTPS port is not served.
    let plain = reqwest::Client::new()
        .get(format!("http://{}/health/live", sluice.addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
}

#[tokio::test]
async fn sni_picks_the_certificate_and_unknown_names_get_the_default() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let ca = Ca::new();
    let dir = TempDir::new();
    let default = ca.leaf(&["localhost", "127.0.0.1"]);
    let api = ca.leaf(&["api.test"]);
    let wild = ca.leaf(&["*.apps.test"]);
    let (cert, key) = default.write(&dir, "default");
    let (api_cert, api_key) = api.write(&dir, "api");
    let (wild_cert, wild_key) = wild.write(&dir, "wild");
    let sni = format!(
        "    sni:\n      - {{hostname: API.test, cert_file: {}, key_file: {}}}\n      - {{hostname: '*.apps.test', cert_file: {}, key_file: {}}}\n",
        api_cert.display(),
        api_key.display(),
        wild_cert.display(),
        wild_key.display()
    );
    let config = https_config(&mock.base_url(), &tls_yaml(&cert, &key, &sni), "");
    let sluice = Sluice::start_https(&config, client(&ca).build().unwrap()).await;
    let port = sluice.addr.port();

    let fetch = |host: &'static str| {
        let client = client(&ca)
            .resolve(host, sluice.addr)
            .danger_accept_invalid_certs(true)
            .build()
            .unwrap();
        async move {
            let r = client
                .get(format!("https://{host}:{port}/health/live"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{host}");
            served(&r)
        }
    };
    assert_eq!(fetch("api.test").await, api.der);
    assert_eq!(fetch("x.apps.test").await, wild.der);
    assert_eq!(fetch("other.test").await, default.der);
    // An IP literal sends no SNI at all.
    let r = client(&ca)
        .build()
        .unwrap()
        .get(sluice.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(served(&r), default.der);
    // And a verifying client accepts the SNI certificate for its name.
    let strict = client(&ca)
        .resolve("api.test", sluice.addr)
        .build()
        .unwrap();
    let r = strict
        .get(format!("https://api.test:{port}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The served certificate's DER on a new connection.
async fn served_now(ca: &Ca, sluice: &Sluice) -> Vec<u8> {
    let client = client(ca)
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let r = client.get(sluice.url("/health/live")).send().await.unwrap();
    served(&r)
}

#[tokio::test]
async fn certificates_rotate_without_restart_and_a_bad_file_keeps_the_old() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let ca = Ca::new();
    let dir = TempDir::new();
    let first = ca.leaf(&["localhost", "127.0.0.1"]);
    let (cert, key) = first.write(&dir, "server");
    let config = https_config(
        &mock.base_url(),
        &tls_yaml(&cert, &key, "    reload_interval_s: 1\n"),
        "",
    );
    let sluice = Sluice::start_https(&config, client(&ca).build().unwrap()).await;
    assert_eq!(served_now(&ca, &sluice).await, first.der);

    // A new pair, written as a deploy would (each file renamed into place).
    let second = ca.leaf(&["localhost", "127.0.0.1"]);
    let (new_cert, new_key) = second.write(&dir, "next");
    std::fs::rename(&new_key, &key).unwrap();
    std::fs::rename(&new_cert, &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_now(&ca, &sluice).await != second.der {
        assert!(Instant::now() < deadline, "not reloaded:\n{}", sluice.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A broken certificate file is refused; the second pair keeps serving.
    dir.write("server.crt", "-----BEGIN CERTIFICATE-----\nnot base64\n");
    let metrics = client(&ca).build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics
            .get(sluice.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains("sluice_tls_reloads_total{outcome=\"refused\"} 1") {
            assert!(
                text.contains("sluice_tls_reloads_total{outcome=\"reloaded\"} 1"),
                "{text}"
            );
            assert!(
                text.contains("sluice_tls_certificate_expiry_seconds{name=\"default\"}"),
                "{text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "bad file not refused: {text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(served_now(&ca, &sluice).await, second.der);
    assert!(sluice.log().contains("TLS certificate not reloaded"));
}

#[tokio::test]
async fn a_client_that_never_finishes_the_handshake_is_closed() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let ca = Ca::new();
    let dir = TempDir::new();
    let (cert, key) = ca.leaf(&["127.0.0.1"]).write(&dir, "server");
    let config = https_config(
        &mock.base_url(),
        &tls_yaml(&cert, &key, ""),
        "  header_timeout_ms: 300\n",
    );
    let sluice = Sluice::start_https(&config, client(&ca).build().unwrap()).await;
    let mut silent = TcpStream::connect(sluice.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut buf))
        .await
        .expect("the server closes a silent TLS client")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() < Duration::from_secs(3));
    let text = client(&ca)
        .build()
        .unwrap()
        .get(sluice.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("sluice_tls_handshake_failures_total{reason=\"timeout\"} 1"),
        "{text}"
    );
}

/// A TLS terminator in front of the mock: `https://127.0.0.1:PORT/v1` with
/// a certificate signed by `ca`.
async fn https_mock(ca: &Ca, mock: &MockUpstream) -> String {
    let leaf = ca.leaf(&["127.0.0.1"]);
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der.clone().into()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let backend = mock.addr();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut plain = TcpStream::connect(backend).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    format!("https://{addr}/v1")
}

use rustls::pki_types::pem::PemObject;

#[tokio::test]
async fn an_upstream_ca_file_is_trusted_and_nothing_else_is() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let ca = Ca::new();
    let base_url = https_mock(&ca, &mock).await;
    let dir = TempDir::new();
    let ca_file = dir.write("upstream-ca.pem", &ca.pem());

    let trusted = config_for(&base_url, "").replace(
        "    base_url:",
        &format!("    ca_file: {}\n    base_url:", ca_file.display()),
    );
    let sluice = Sluice::start(&trusted).await;
    let r = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", sluice.log());
    assert_eq!(mock.stats().requests(), 1);

    // Without it the system roots do not know the test CA: 502, never a
    // silent success.
    let untrusted = Sluice::start(&config_for(&base_url, "")).await;
    let r = reqwest::Client::new()
        .post(untrusted.url("/v1/chat/completions"))
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(mock.stats().requests(), 1);
}

#[tokio::test]
async fn the_admin_listener_takes_only_clients_with_a_certificate_from_its_ca() {
    let mock = MockUpstream::start(MockOptions::default()).await.unwrap();
    let dir = TempDir::new();
    let (ca, rogue) = (Ca::new(), Ca::new());
    let (cert, key) = ca.leaf(&["127.0.0.1", "localhost"]).write(&dir, "admin");
    let ca_file = dir.write("clients-ca.pem", &ca.pem());
    let config = config_for(&mock.base_url(), "").replace(
        "server:\n  max_body_bytes: 1048576\n",
        &format!(
            "server:\n  max_body_bytes: 1048576\n  admin_tls:\n{}",
            tls_yaml(
                &cert,
                &key,
                &format!("    client_ca_file: {}\n", ca_file.display())
            )
        ),
    );
    let identity = |issuer: &Ca| {
        let leaf = issuer.leaf(&["sre-laptop"]);
        reqwest::Identity::from_pem(format!("{}{}", leaf.cert_pem, leaf.key_pem).as_bytes())
            .unwrap()
    };
    let operator = client(&ca).identity(identity(&ca)).build().unwrap();
    let sluice = Sluice::start_with_admin_tls(&config, operator.clone()).await;
    let metrics = operator
        .get(sluice.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        metrics.status(),
        200,
        "a client with the CA's certificate gets in"
    );
    assert!(metrics
        .text()
        .await
        .unwrap()
        .contains("sluice_tls_certificate_expiry_seconds{name=\"admin\"}"));
    // No certificate, or one from another CA: the handshake is refused.
    let anonymous = client(&ca).build().unwrap();
    assert!(anonymous
        .get(sluice.admin_url("/metrics"))
        .send()
        .await
        .is_err());
    let intruder = client(&ca).identity(identity(&rogue)).build().unwrap();
    assert!(intruder
        .get(sluice.admin_url("/metrics"))
        .send()
        .await
        .is_err());
    // The public listener stays plain HTTP and serves as before.
    let answer = reqwest::Client::new()
        .post(sluice.url("/v1/chat/completions"))
        .json(&chat())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
}
