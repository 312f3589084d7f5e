//! Where an upstream is and the fixed headers it gets, built once from its
//! settings; and the percent-encoding of names that go into a path.

use http::{HeaderName, HeaderValue};
use sluice_config::{UpstreamBaseUrl, UpstreamSettings};

/// What every header-keyed adapter shares: where the upstream is and the
/// fixed headers (credentials first, then configured extras).
#[derive(Debug, Clone)]
pub(crate) struct Base {
    pub path_prefix: String,
    pub host_header: String,
    pub tls: bool,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Base {
    /// Builds the base; `auth` names the header that carries the key and
    /// how to render it (`None`: the key is not sent as a header).
    pub fn new(settings: &UpstreamSettings, auth: Option<(&'static str, &str)>) -> Self {
        let mut headers = Vec::with_capacity(settings.headers.len() + 2);
        if let (Some((name, prefix)), Some(key)) = (auth, &settings.api_key) {
            if let Ok(mut value) = HeaderValue::from_str(&format!("{prefix}{}", key.expose())) {
                value.set_sensitive(true);
                headers.push((HeaderName::from_static(name), value));
            }
        }
        headers.extend(settings.headers.iter().filter_map(|(k, v)| {
            Some((
                HeaderName::from_bytes(k.as_bytes()).ok()?,
                HeaderValue::from_str(v).ok()?,
            ))
        }));
        Base {
            path_prefix: settings.base_url.path_prefix.clone(),
            host_header: host_header(&settings.base_url),
            tls: settings.base_url.tls,
            headers,
        }
    }

    /// Adds a fixed header (after credentials, before nothing in particular).
    pub fn push_static(&mut self, name: &'static str, value: &str) {
        if let Ok(value) = HeaderValue::from_str(value) {
            self.headers.push((HeaderName::from_static(name), value));
        }
    }
}

/// The `Host` header for a base URL: the port only when not the scheme's default.
fn host_header(url: &UpstreamBaseUrl) -> String {
    let default_port = if url.tls { 443 } else { 80 };
    if url.port == default_port {
        if url.host.contains(':') {
            format!("[{}]", url.host)
        } else {
            url.host.clone()
        }
    } else {
        url.authority()
    }
}

/// Percent-encodes one path segment (a model name, a deployment): everything
/// but RFC 3986 unreserved characters, so a client-chosen name (wildcard
/// routes) can never add path segments or a query.
pub(crate) fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("gemini-2.0_flash~1"), "gemini-2.0_flash~1");
        assert_eq!(
            encode_segment("anthropic.claude-v2:1/../x?y"),
            "anthropic.claude-v2%3A1%2F..%2Fx%3Fy"
        );
    }
}
