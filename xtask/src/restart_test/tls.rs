//! A throwaway certificate authority and server certificate for 127.0.0.1, made with the
//! `openssl` command (Debian's `openssl`, which `cargo xtask test` installs too) rather than a
//! crate, to keep xtask's dependencies short.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

#[derive(Debug, Clone)]
pub(crate) struct Certs {
    /// The CA certificate, for clients (`oha --cacert`).
    pub(crate) ca: PathBuf,
    /// The server's certificate chain and key, for `gracedemo --cert --key`.
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// Writes a new CA and a server certificate signed by it into `dir` (valid two days, for
/// `IP:127.0.0.1` and `DNS:localhost`, P-256 keys).
pub(crate) fn generate(dir: &Path) -> Result<Certs> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let p = |name: &str| dir.join(name);
    let ca_key = p("ca.key");
    let ca = p("ca.pem");
    let key = p("server.key");
    let csr = p("server.csr");
    let cert = p("server.pem");
    let ext = p("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .with_context(|| format!("writing {}", ext.display()))?;
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        dir,
        &[
            &["req", "-x509"],
            &ec[..],
            &["-keyout"],
            &[path(&ca_key)?],
            &["-out"],
            &[path(&ca)?],
        ],
        &[
            "-days",
            "2",
            "-subj",
            "/CN=grace-rs restart-test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )?;
    openssl(
        dir,
        &[
            &["req"],
            &ec[..],
            &["-keyout"],
            &[path(&key)?],
            &["-out"],
            &[path(&csr)?],
        ],
        &["-subj", "/CN=localhost"],
    )?;
    openssl(
        dir,
        &[
            &["x509", "-req", "-in"],
            &[path(&csr)?],
            &["-CA"],
            &[path(&ca)?],
            &["-CAkey"],
            &[path(&ca_key)?],
            &["-out"],
            &[path(&cert)?],
            &["-extfile"],
            &[path(&ext)?],
        ],
        &["-days", "2", "-set_serial", "1"],
    )?;
    Ok(Certs { ca, cert, key })
}

fn path(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

fn openssl(dir: &Path, parts: &[&[&str]], tail: &[&str]) -> Result<()> {
    let args: Vec<&str> = parts
        .iter()
        .flat_map(|p| p.iter().copied())
        .chain(tail.iter().copied())
        .collect();
    let out = Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .context("running openssl (Debian package `openssl`)")?;
    if !out.status.success() {
        bail!(
            "openssl {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
