use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The kind of a listening socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// A TCP listener (IPv4 or IPv6).
    Tcp,
    /// A UDP socket (IPv4 or IPv6).
    Udp,
    /// A unix stream listener (filesystem path or abstract name).
    UnixStream,
    /// Any other socket (unix datagram, SCTP, netlink, ...). It can be matched by name and
    /// handed on, but never by address.
    Other,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Tcp => "a TCP listener",
            Kind::Udp => "a UDP socket",
            Kind::UnixStream => "a unix stream listener",
            Kind::Other => "another kind of socket",
        })
    }
}

/// Where a socket listens.
///
/// Parses from and displays as `tcp://127.0.0.1:8080`, `udp://[::1]:53`, `unix:/run/app.sock`
/// and `unix:@name` (the Linux abstract namespace). A bare `127.0.0.1:8080` parses as TCP.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// A TCP listener on this address; port 0 picks a free port.
    Tcp(SocketAddr),
    /// A UDP socket on this address; port 0 picks a free port.
    Udp(SocketAddr),
    /// A unix stream listener at this filesystem path.
    Unix(PathBuf),
    /// A unix stream listener with this name in the Linux abstract namespace (without the
    /// leading NUL byte).
    UnixAbstract(Vec<u8>),
}

impl Endpoint {
    /// The kind of socket this endpoint needs.
    pub fn kind(&self) -> Kind {
        match self {
            Endpoint::Tcp(_) => Kind::Tcp,
            Endpoint::Udp(_) => Kind::Udp,
            Endpoint::Unix(_) | Endpoint::UnixAbstract(_) => Kind::UnixStream,
        }
    }

    /// Whether the address is fully specified, so that an inherited socket can be found by it.
    /// A port-0 request is not: it names "any free port", which only the request itself can
    /// find again (through its derived name).
    pub(crate) fn is_concrete(&self) -> bool {
        match self {
            Endpoint::Tcp(a) | Endpoint::Udp(a) => a.port() != 0,
            Endpoint::Unix(_) | Endpoint::UnixAbstract(_) => true,
        }
    }

    /// Whether an inherited socket bound at `actual` satisfies a request for `self`.
    ///
    /// IP addresses are compared after normalisation: an IPv4-mapped IPv6 address equals its
    /// IPv4 form, and the unspecified addresses `0.0.0.0` and `[::]` are the same "any
    /// address" (systemd's `ListenStream=80` is a dual-stack `[::]:80`). Relative unix paths
    /// are resolved against `cwd`, the working directory at start-up.
    pub(crate) fn matches(&self, actual: &Endpoint, cwd: &Path) -> bool {
        match (self, actual) {
            (Endpoint::Tcp(want), Endpoint::Tcp(got))
            | (Endpoint::Udp(want), Endpoint::Udp(got)) => {
                want.port() != 0 && want.port() == got.port() && same_ip(want.ip(), got.ip())
            }
            (Endpoint::Unix(want), Endpoint::Unix(got)) => same_path(want, got, cwd),
            (Endpoint::UnixAbstract(want), Endpoint::UnixAbstract(got)) => want == got,
            _ => false,
        }
    }

    /// A name for `LISTEN_FDNAMES` derived from the request itself, so that the next process,
    /// asking for the same thing, finds the same socket even when the port was 0. `ordinal`
    /// tells apart identical requests made more than once.
    ///
    /// Names may hold printable ASCII except `:` (sd_listen_fds(3)); everything else is
    /// percent-encoded, and names longer than systemd's limit of 255 are shortened with a hash.
    pub(crate) fn derived_name(&self, ordinal: usize) -> String {
        let mut name = match self {
            Endpoint::Tcp(a) => format!("tcp-{}", encode(a.to_string().as_bytes())),
            Endpoint::Udp(a) => format!("udp-{}", encode(a.to_string().as_bytes())),
            Endpoint::Unix(p) => format!("unix-{}", encode(p.as_os_str().as_bytes())),
            Endpoint::UnixAbstract(n) => format!("unix-@{}", encode(n)),
        };
        if ordinal > 0 {
            name.push_str(&format!("#{}", ordinal + 1));
        }
        if name.len() > MAX_NAME_LEN {
            let prefix: String = name.chars().take(4).collect();
            name = format!("{prefix}h{:016x}", fnv1a(name.as_bytes()));
        }
        name
    }
}

/// systemd's limit for a file descriptor name.
pub(crate) const MAX_NAME_LEN: usize = 255;

/// Checks a user-given name against the rules of sd_listen_fds(3).
pub(crate) fn validate_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("names must not be empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("names are at most 255 bytes long");
    }
    if !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
        return Err("names may hold printable ASCII except ':' and spaces");
    }
    Ok(())
}

fn same_ip(want: IpAddr, got: IpAddr) -> bool {
    let want = want.to_canonical();
    let got = got.to_canonical();
    want == got || (want.is_unspecified() && got.is_unspecified())
}

fn same_path(want: &Path, got: &Path, cwd: &Path) -> bool {
    let want = cwd.join(want);
    let got = cwd.join(got);
    if want == got {
        return true;
    }
    // The same socket file reached through different spellings (symlinked directories, `..`).
    match (want.canonicalize(), got.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() && b != b':' && b != b'%' {
            out.push(char::from(b));
        } else if b == b':' {
            // IPv6 addresses and `host:port` are full of colons; `_` keeps them readable.
            out.push('_');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::Udp(a) => write!(f, "udp://{a}"),
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::UnixAbstract(n) => write!(f, "unix:@{}", String::from_utf8_lossy(n)),
        }
    }
}

/// The error returned when a string is not an [`Endpoint`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid endpoint {input:?}: expected tcp://HOST:PORT, udp://HOST:PORT, unix:PATH or unix:@NAME"
)]
pub struct ParseEndpointError {
    input: String,
}

impl FromStr for Endpoint {
    type Err = ParseEndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseEndpointError {
            input: s.to_owned(),
        };
        if let Some(rest) = s.strip_prefix("tcp://") {
            rest.parse().map(Endpoint::Tcp).map_err(|_| err())
        } else if let Some(rest) = s.strip_prefix("udp://") {
            rest.parse().map(Endpoint::Udp).map_err(|_| err())
        } else if let Some(rest) = s.strip_prefix("unix:") {
            match rest.strip_prefix('@') {
                Some("") => Err(err()),
                Some(name) => Ok(Endpoint::UnixAbstract(name.as_bytes().to_vec())),
                None if rest.is_empty() => Err(err()),
                None => Ok(Endpoint::Unix(PathBuf::from(rest))),
            }
        } else {
            s.parse().map(Endpoint::Tcp).map_err(|_| err())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_displays_round_trip() {
        for s in [
            "tcp://127.0.0.1:80",
            "udp://[::1]:53",
            "unix:/run/a.sock",
            "unix:@grace",
        ] {
            assert_eq!(ep(s).to_string(), s);
        }
        assert_eq!(
            ep("127.0.0.1:1"),
            Endpoint::Tcp("127.0.0.1:1".parse().unwrap())
        );
        for bad in [
            "",
            "tcp://",
            "tcp://host",
            "unix:",
            "unix:@",
            "udp://1.2.3.4",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn unspecified_and_mapped_addresses_are_normalised() {
        let cwd = Path::new("/");
        assert!(ep("0.0.0.0:80").matches(&ep("[::]:80"), cwd));
        assert!(ep("[::]:80").matches(&ep("0.0.0.0:80"), cwd));
        assert!(ep("127.0.0.1:80").matches(&ep("[::ffff:127.0.0.1]:80"), cwd));
        assert!(!ep("127.0.0.1:80").matches(&ep("127.0.0.1:81"), cwd));
        assert!(!ep("127.0.0.1:80").matches(&ep("0.0.0.0:80"), cwd));
        assert!(
            !ep("127.0.0.1:0").matches(&ep("127.0.0.1:0"), cwd),
            "port 0 never matches by address"
        );
        assert!(!ep("tcp://127.0.0.1:80").matches(&ep("udp://127.0.0.1:80"), cwd));
    }

    #[test]
    fn relative_unix_paths_resolve_against_the_start_directory() {
        let cwd = Path::new("/srv/app");
        assert!(ep("unix:run/a.sock").matches(&ep("unix:/srv/app/run/a.sock"), cwd));
        assert!(!ep("unix:run/a.sock").matches(&ep("unix:/srv/other/run/a.sock"), cwd));
        assert!(ep("unix:@x").matches(&ep("unix:@x"), cwd));
        assert!(!ep("unix:@x").matches(&ep("unix:/x"), cwd));
    }

    #[test]
    fn derived_names_are_valid_fd_names_and_distinct() {
        let names = [
            ep("[::1]:0").derived_name(0),
            ep("[::1]:0").derived_name(1),
            ep("udp://[::1]:0").derived_name(0),
            ep("unix:/tmp/a b:c%.sock").derived_name(0),
            Endpoint::UnixAbstract(vec![0, 1, 255]).derived_name(0),
            Endpoint::Unix(PathBuf::from("/".repeat(300))).derived_name(0),
        ];
        for n in &names {
            assert_eq!(validate_name(n), Ok(()), "{n:?}");
        }
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        assert_eq!(names[0], "tcp-[__1]_0");
    }

    #[test]
    fn user_names_follow_sd_listen_fds_rules() {
        assert!(validate_name("http").is_ok());
        for bad in ["", "a:b", "a b", "é", &"x".repeat(256)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
