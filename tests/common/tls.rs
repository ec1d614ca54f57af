//! A test certificate authority and a certificate for 127.0.0.1 it signed, for Redis and
//! Sentinel over TLS (`rediss://` with `engine.tls_ca_file`).

use std::path::Path;

/// Writes `ca.pem` (the authority), `server.pem` and `server.key` (a certificate for
/// 127.0.0.1 it signed) into `dir`.
pub fn certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Names of their own: with rcgen's default name on both, OpenSSL (Redis as the client
    // of a replication or Sentinel link) takes the server's certificate for self-signed.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "rustorium test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("write");
    std::fs::write(dir.join("server.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write");
}
