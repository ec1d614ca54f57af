//! TLS for the listener (`[server.tls]`): the certificate chain and private key read from
//! PEM files, checked at start (an error names the file and the problem), served through
//! a resolver whose certificate a reload swaps for the next handshake, and the rustls
//! server configuration actix-web's `rustls-0_23` feature takes. The crypto is `ring`'s;
//! no OpenSSL.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::aws_lc_rs::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde::Deserialize;

/// An accepted TLS connection, as `HttpServer::on_connect` sees it.
pub type Stream = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;

/// The certificate store of a validated `config`, when it has `[server.tls]`.
pub fn cert_store(config: &crate::Config) -> Result<Option<Arc<CertStore>>, crate::ConfigError> {
    match &config.server.tls {
        None => Ok(None),
        Some(tls) => Ok(Some(Arc::new(CertStore::new(
            load(tls).map_err(crate::ConfigError::Tls)?,
        )))),
    }
}

/// `[server.tls]`: the PEM files of the listener's certificate.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM: the broker's certificate first, then intermediates. A
    /// relative name is relative to the configuration file's directory.
    pub cert_file: PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1), unencrypted. Relative like
    /// `cert_file`.
    pub key_file: PathBuf,
}

impl TlsConfig {
    /// Makes relative file names relative to `dir` (the configuration file's directory).
    pub fn relative_to(&mut self, dir: &Path) {
        for file in [&mut self.cert_file, &mut self.key_file] {
            if file.is_relative() {
                *file = dir.join(&*file);
            }
        }
    }
}

/// Why a certificate or key cannot be used; the message names the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    /// The file at fault.
    pub file: PathBuf,
    /// What is wrong with it.
    pub problem: String,
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.problem)
    }
}

impl std::error::Error for TlsError {}

fn problem(file: &Path, problem: impl Into<String>) -> TlsError {
    TlsError {
        file: file.to_path_buf(),
        problem: problem.into(),
    }
}

fn read(file: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|e| problem(file, format!("cannot read: {e}")))
}

/// Reads and checks the certificate chain and key of `config`: both parse, the chain is
/// not empty, and the key is the certificate's.
pub fn load(config: &TlsConfig) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_pem = read(&config.cert_file)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(&config.cert_file, format!("not a PEM certificate: {e}")))?;
    if chain.is_empty() {
        return Err(problem(
            &config.cert_file,
            "no certificate in it (expected -----BEGIN CERTIFICATE-----)",
        ));
    }
    let key_pem = read(&config.key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        problem(
            &config.key_file,
            format!("not a PEM private key (PKCS#8, PKCS#1 or SEC1, unencrypted): {e}"),
        )
    })?;
    let provider = default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| problem(&config.key_file, format!("unusable private key: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(problem(
                &config.key_file,
                format!(
                    "this key does not belong to the certificate in {}",
                    config.cert_file.display()
                ),
            ))
        }
        Err(e) => {
            return Err(problem(
                &config.cert_file,
                format!("unusable certificate: {e}"),
            ))
        }
    }
    Ok(Arc::new(certified))
}

/// The certificate the listener presents; [`CertStore::replace`] swaps it, and every
/// handshake after that gets the new one. Connections already open keep theirs.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CertStore {
    /// A store presenting `cert`.
    pub fn new(cert: Arc<CertifiedKey>) -> CertStore {
        CertStore {
            current: RwLock::new(cert),
        }
    }

    /// Presents `cert` from the next handshake on.
    pub fn replace(&self, cert: Arc<CertifiedKey>) {
        match self.current.write() {
            Ok(mut current) => *current = cert,
            Err(poisoned) => *poisoned.into_inner() = cert,
        }
    }

    fn get(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }
}

/// The rustls server configuration for `store`: TLS 1.2 and 1.3, HTTP/1.1 by ALPN, no
/// client certificates.
pub fn server_config(store: Arc<CertStore>) -> Result<rustls::ServerConfig, TlsError> {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| problem(Path::new("[server.tls]"), e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    Ok(config)
}
