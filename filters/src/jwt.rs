//! JWT bearer tokens as another way in: an identity provider signs tokens,
//! sluice checks signature (keys from a JWKS file, chosen by `kid`), issuer,
//! audience and expiry, and takes the tenant from a configured claim. A
//! verified token becomes a [`KeyEntry`] like a virtual key (id `jwt:<sub>`),
//! so tenant limits and budgets apply alike. Verified tokens are cached by
//! their hash until they expire (signature checks cost tens of microseconds).

use crate::auth::{AuthError, KeyEntry, KeyHash};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};
use sluice_config::{JwtSettings, Priority};
use std::sync::Arc;
use std::time::Duration;

/// Verifies bearer JWTs.
pub struct JwtVerifier {
    keys: JwkSet,
    issuer: String,
    audience: String,
    tenant_claim: String,
    verified: moka::sync::Cache<KeyHash, Arc<KeyEntry>>,
}

impl JwtVerifier {
    /// A verifier for validated settings; `Err` when the JWKS does not parse.
    pub fn new(settings: &JwtSettings) -> Result<Self, String> {
        let keys: JwkSet =
            serde_json::from_str(&settings.jwks).map_err(|e| format!("JWKS: {e}"))?;
        Ok(JwtVerifier {
            keys,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            tenant_claim: settings.tenant_claim.clone(),
            verified: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
        })
    }

    /// Whether a bearer token is shaped like a JWT (three dot-separated parts).
    pub fn looks_like_jwt(token: &str) -> bool {
        !token.starts_with("sk-") && token.bytes().filter(|b| *b == b'.').count() == 2
    }

    /// Checks `token` at `now_unix`; returns the principal it stands for.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<Arc<KeyEntry>, AuthError> {
        let hash = KeyHash::of(token);
        if let Some(entry) = self.verified.get(&hash) {
            if entry.expires_at.is_some_and(|t| now_unix >= t) {
                return Err(AuthError::Expired);
            }
            return Ok(entry);
        }
        let header = decode_header(token).map_err(|_| AuthError::Invalid)?;
        let jwk = match &header.kid {
            Some(kid) => self.keys.find(kid),
            None if self.keys.keys.len() == 1 => self.keys.keys.first(),
            None => None,
        }
        .ok_or(AuthError::Invalid)?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| AuthError::Invalid)?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        let data =
            decode::<serde_json::Value>(token, &key, &validation).map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid,
            })?;
        let claims = data.claims;
        let tenant = claims[self.tenant_claim.as_str()]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Invalid)?;
        let subject = claims["sub"].as_str().unwrap_or("anonymous");
        let entry = Arc::new(KeyEntry {
            key_id: format!("jwt:{subject}"),
            tenant: tenant.to_string(),
            hash,
            models: None,
            priority: Priority::Standard,
            expires_at: claims["exp"].as_i64(),
            enabled: true,
            limits: Default::default(),
            budget: None,
        });
        self.verified.insert(hash, entry.clone());
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &[u8] = b"an-hmac-secret-for-tests-only-32b";

    fn verifier() -> JwtVerifier {
        let k = base64_url(SECRET);
        let jwks = format!(r#"{{"keys":[{{"kty":"oct","kid":"k1","alg":"HS256","k":"{k}"}}]}}"#);
        JwtVerifier::new(&JwtSettings {
            issuer: "https://idp.example".into(),
            audience: "sluice".into(),
            jwks,
            tenant_claim: "org".into(),
        })
        .unwrap()
    }

    fn base64_url(bytes: &[u8]) -> String {
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    fn token(claims: serde_json::Value) -> String {
        let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("k1".into());
        encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    #[test]
    fn verifies_signature_issuer_audience_and_tenant() {
        let v = verifier();
        let now = 1_800_000_000;
        let good = token(
            serde_json::json!({"iss": "https://idp.example", "aud": "sluice",
            "sub": "alice", "org": "acme", "exp": now + 600}),
        );
        assert!(JwtVerifier::looks_like_jwt(&good));
        let entry = v.verify(&good, now).unwrap();
        assert_eq!(
            (entry.tenant.as_str(), entry.key_id.as_str()),
            ("acme", "jwt:alice")
        );
        let wrong_aud = token(
            serde_json::json!({"iss": "https://idp.example", "aud": "other",
            "org": "acme", "exp": now + 600}),
        );
        assert_eq!(v.verify(&wrong_aud, now).unwrap_err(), AuthError::Invalid);
        let no_tenant = token(
            serde_json::json!({"iss": "https://idp.example", "aud": "sluice",
            "exp": now + 600}),
        );
        assert_eq!(v.verify(&no_tenant, now).unwrap_err(), AuthError::Invalid);
        let mut forged = good.clone();
        forged.pop();
        forged.push(if good.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(v.verify(&forged, now).unwrap_err(), AuthError::Invalid);
        assert!(!JwtVerifier::looks_like_jwt("sk-sluice-abc"));
    }

    #[test]
    fn refuses_alg_none_a_wrong_issuer_and_a_swapped_payload() {
        let v = verifier();
        let now = 1_800_000_000;
        let claims = |iss: &str, org: &str| serde_json::json!({"iss": iss, "aud": "sluice", "sub": "alice", "org": org, "exp": now + 600});
        let good = token(claims("https://idp.example", "acme"));
        let other = token(claims("https://idp.example", "globex"));
        let part = |t: &str, i: usize| t.split('.').nth(i).unwrap().to_string();
        // `{"alg":"none","typ":"JWT","kid":"k1"}` and no signature.
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoiazEifQ.{}.",
            part(&good, 1)
        );
        assert_eq!(v.verify(&none, now).unwrap_err(), AuthError::Invalid);
        let wrong_issuer = token(claims("https://evil.example", "acme"));
        assert_eq!(
            v.verify(&wrong_issuer, now).unwrap_err(),
            AuthError::Invalid
        );
        // Another token's (validly signed) payload under this one's signature.
        let swapped = format!("{}.{}.{}", part(&good, 0), part(&other, 1), part(&good, 2));
        assert_eq!(v.verify(&swapped, now).unwrap_err(), AuthError::Invalid);
        assert!(v.verify(&good, now).is_ok());
    }
}
