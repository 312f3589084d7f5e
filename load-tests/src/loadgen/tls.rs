//! TLS for `https://` targets. The load generator measures a server it was
//! pointed at, usually with a throw-away certificate, so it does not verify
//! the certificate (the handshake's cryptography is done in full all the
//! same, which is the cost being measured).

use super::Protocol;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::sync::{Arc, OnceLock};

/// Accepts any certificate, checking only the handshake signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One client config per protocol, shared by every connection.
fn config(protocol: Protocol) -> std::io::Result<Arc<rustls::ClientConfig>> {
    static CONFIGS: OnceLock<[Arc<rustls::ClientConfig>; 2]> = OnceLock::new();
    if CONFIGS.get().is_none() {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let build = |alpn: &[u8]| -> std::io::Result<Arc<rustls::ClientConfig>> {
            let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(std::io::Error::other)?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider.clone())))
                .with_no_client_auth();
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(config))
        };
        let _ = CONFIGS.set([build(b"http/1.1")?, build(b"h2")?]);
    }
    let configs = CONFIGS
        .get()
        .ok_or_else(|| std::io::Error::other("no TLS config"))?;
    Ok(configs[usize::from(protocol == Protocol::H2c)].clone())
}

/// Runs the TLS handshake on `tcp` for `host`.
pub(super) async fn connect(
    tcp: tokio::net::TcpStream,
    host: &str,
    protocol: Protocol,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let name = ServerName::try_from(host.to_string()).map_err(std::io::Error::other)?;
    tokio_rustls::TlsConnector::from(config(protocol)?)
        .connect(name, tcp)
        .await
}
