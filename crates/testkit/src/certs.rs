//! Certificates minted at test time with rcgen: a throwaway certificate authority, and leaf
//! certificates for `localhost` and 127.0.0.1 signed by it, in DER and PEM; writing them where a
//! server reads them; and the PEM and key encodings the tests need beyond rcgen's.
//!
//! Keys are ECDSA P-256 unless a test brings its own. Nothing here panics: every step returns
//! the error it met.

use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;

/// Why a certificate could not be made or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// rcgen could not make a key or sign a certificate.
    #[error("minting a test certificate: {0}")]
    Mint(#[from] rcgen::Error),
    /// A PEM file could not be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: io::Error,
    },
}

/// A test certificate authority: the only root the tests' clients trust.
#[derive(Debug)]
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, for a client's root store.
    pub der: CertificateDer<'static>,
    /// The CA certificate in PEM, for a file (`oha --cacert`) or a chain.
    pub pem: String,
}

/// A leaf certificate for `localhost` and 127.0.0.1, with its key.
#[derive(Debug)]
pub struct Leaf {
    /// The certificate in PEM.
    pub cert_pem: String,
    /// The key in PEM (PKCS#8, as rcgen writes it).
    pub key_pem: String,
    /// The key itself, for a test that encodes it otherwise.
    pub key: KeyPair,
    /// The certificate, as a handshake shows it.
    pub der: CertificateDer<'static>,
}

impl Ca {
    /// A new self-signed CA with a new key.
    ///
    /// # Errors
    ///
    /// When rcgen cannot make the key or sign.
    pub fn new() -> Result<Ca, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "grace-rs test CA");
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Ca {
            der: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A new leaf (new ECDSA P-256 key, new serial) signed by this CA.
    ///
    /// # Errors
    ///
    /// When rcgen cannot make the key or sign.
    pub fn leaf(&self) -> Result<Leaf, CertError> {
        self.leaf_with_key(KeyPair::generate()?)
    }

    /// A new leaf for `key` (an RSA key made elsewhere, say) signed by this CA.
    ///
    /// # Errors
    ///
    /// When rcgen cannot sign.
    pub fn leaf_with_key(&self, key: KeyPair) -> Result<Leaf, CertError> {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key,
            der: cert.der().clone(),
        })
    }
}

impl Leaf {
    /// Writes the certificate and the key to their files, each replaced by a rename (the way a
    /// deploy or certbot does), so that a server reloading meanwhile reads an old file or a new
    /// one, never half of one.
    ///
    /// # Errors
    ///
    /// When a file cannot be written, naming it.
    pub fn write(&self, cert: &Path, key: &Path) -> Result<(), CertError> {
        for (path, pem) in [(cert, &self.cert_pem), (key, &self.key_pem)] {
            crate::fs::replace_file(path, pem.as_bytes()).map_err(|source| CertError::Write {
                path: path.to_owned(),
                source,
            })?;
        }
        Ok(())
    }
}

/// `der` as a PEM section with `label` (`CERTIFICATE`, `EC PRIVATE KEY`, ...).
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = base64(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        // Base64 is ASCII: every chunk is a whole string.
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The private key inside a PKCS#8 `PrivateKeyInfo` (DER): for an EC key, the SEC1
/// `ECPrivateKey` that an `EC PRIVATE KEY` PEM section holds. `None` if `pkcs8` is not a
/// `PrivateKeyInfo`.
pub fn sec1_from_pkcs8(pkcs8: &[u8]) -> Option<Vec<u8>> {
    let (0x30, info, _) = der_tlv(pkcs8)? else {
        return None; // PrivateKeyInfo is a SEQUENCE
    };
    let (0x02, _version, rest) = der_tlv(info)? else {
        return None; // version is an INTEGER
    };
    let (0x30, _algorithm, rest) = der_tlv(rest)? else {
        return None; // privateKeyAlgorithm is a SEQUENCE
    };
    let (0x04, key, _) = der_tlv(rest)? else {
        return None; // privateKey is an OCTET STRING
    };
    Some(key.to_vec())
}

/// One DER element: its tag, its content, and what follows it; `None` if `input` is cut short.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        let len = input.get(2..2 + n)?.iter().try_fold(0usize, |len, &b| {
            len.checked_mul(256).map(|l| l | usize::from(b))
        })?;
        (len, 2 + n)
    };
    let rest = input.get(header..)?;
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((tag, content, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_new_each_time_and_signed_by_the_ca() {
        let ca = Ca::new().unwrap();
        let (a, b) = (ca.leaf().unwrap(), ca.leaf().unwrap());
        assert_ne!(a.der, b.der);
        assert!(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        assert!(a.key_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(ca.pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
        // The CA's own PEM is the PEM of its DER.
        assert_eq!(
            pem_encode("CERTIFICATE", &ca.der).replace('\r', ""),
            ca.pem.replace('\r', "")
        );

        let dir = crate::fs::TempDir::new("kit-certs").unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        a.write(&cert, &key).unwrap();
        b.write(&cert, &key).unwrap();
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), b.cert_pem);
        assert_eq!(std::fs::read_to_string(&key).unwrap(), b.key_pem);
        let missing = dir.join("no/such/dir/cert.pem");
        assert!(matches!(
            a.write(&missing, &key),
            Err(CertError::Write { path, .. }) if path == missing
        ));
    }

    #[test]
    fn base64_and_pem_match_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
        let pem = pem_encode("X", &[0u8; 60]);
        let lines: Vec<&str> = pem.lines().collect();
        assert_eq!(lines.first(), Some(&"-----BEGIN X-----"));
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last(), Some(&"-----END X-----"));
    }

    #[test]
    fn the_sec1_key_comes_out_of_pkcs8() {
        let key = KeyPair::generate().unwrap();
        let sec1 = sec1_from_pkcs8(key.serialized_der()).unwrap();
        // An ECPrivateKey: a SEQUENCE starting with version 1.
        assert_eq!(&sec1[..1], &[0x30]);
        let (_, inner, _) = der_tlv(&sec1).unwrap();
        assert_eq!(&inner[..3], &[0x02, 0x01, 0x01]);
        assert_eq!(sec1_from_pkcs8(b"\x30\x05\x02\x01"), None);
        assert_eq!(sec1_from_pkcs8(b""), None);
    }
}
