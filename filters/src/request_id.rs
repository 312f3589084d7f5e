//! The id that ties a request's logs, metrics and upstream call together.

use std::fmt;

/// Longest caller-supplied id that is kept; longer ones are replaced.
const MAX_LEN: usize = 128;

/// A request id: the caller's `x-request-id` if it is 1..=128 visible ASCII
/// characters, else a fresh UUIDv4 (32 hex digits, no dashes).
#[derive(Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// Keeps `incoming` (the raw header value) when it is safe to log and
    /// echo; mints a new id otherwise.
    pub fn accept_or_mint(incoming: Option<&[u8]>) -> Self {
        match incoming {
            Some(v)
                if !v.is_empty() && v.len() <= MAX_LEN && v.iter().all(u8::is_ascii_graphic) =>
            {
                // All bytes are ASCII, so this cannot fail.
                RequestId(String::from_utf8_lossy(v).into_owned())
            }
            _ => Self::mint(),
        }
    }

    /// A fresh random id.
    pub fn mint() -> Self {
        RequestId(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The id as sent in headers and logs.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids() {
        let id = RequestId::accept_or_mint(Some(b"req-123_abc"));
        assert_eq!(id.as_str(), "req-123_abc");
    }

    #[test]
    fn replaces_missing_or_unsafe_ids() {
        for bad in [None, Some(&b""[..]), Some(b"has space"), Some(b"new\nline")] {
            let id = RequestId::accept_or_mint(bad);
            assert_eq!(id.as_str().len(), 32, "{bad:?}");
            assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        }
        let long = vec![b'a'; MAX_LEN + 1];
        assert_eq!(RequestId::accept_or_mint(Some(&long)).as_str().len(), 32);
    }

    #[test]
    fn minted_ids_differ() {
        assert_ne!(RequestId::mint(), RequestId::mint());
    }
}
