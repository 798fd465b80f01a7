//! A throwaway certificate authority and a server certificate for 127.0.0.1 and `localhost`,
//! minted with rcgen (P-256 keys) and written as PEM files for gracedemo and the clients.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

#[derive(Debug, Clone)]
pub(crate) struct Certs {
    /// The CA certificate, for clients (`oha --cacert`, the in-tree HTTP/2 client).
    pub(crate) ca: PathBuf,
    /// The server's certificate and key, for `gracedemo --cert --key`.
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// Writes a new CA and a server certificate signed by it into `dir`.
pub(crate) fn generate(dir: &Path) -> Result<Certs> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "grace-rs restart-test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("self-signing the CA")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().context("generating the server key")?;
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .context("server certificate parameters")?;
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params
        .signed_by(&key, &issuer)
        .context("signing the server certificate")?;

    let certs = Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    for (path, pem) in [
        (&certs.ca, ca_cert.pem()),
        (&certs.cert, cert.pem()),
        (&certs.key, key.serialize_pem()),
    ] {
        std::fs::write(path, pem).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(certs)
}
