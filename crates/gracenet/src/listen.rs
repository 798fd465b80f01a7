//! Listening: each `listen` call answered with the matching inherited socket, or a fresh one,
//! and the pool of sockets this process holds for the next one.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::path::Path;

use socket2::Socket;

use crate::endpoint::validate_name;
use crate::inherit::Inherited;
use crate::spawn::Sources;
use crate::{Endpoint, Error, Kind, Net, bind, env, sys};

/// A socket as reported by [`Net::listen`], [`Net::inherited`] and [`Net::listeners`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketInfo {
    /// Its name: from `LISTEN_FDNAMES` (`unknown` when none was given) for an inherited socket
    /// not yet claimed, else the name it is handed over under.
    pub name: String,
    /// What kind of socket it is.
    pub kind: Kind,
    /// Its local address, when it has one.
    pub endpoint: Option<Endpoint>,
    /// Whether this process inherited it (rather than binding it fresh).
    pub inherited: bool,
    /// Whether this process or a predecessor of this library bound it, so that no other
    /// program (systemd, a supervisor) holds it: [`Net::close`] seals it.
    pub bound: bool,
}

/// A socket returned by [`Net::listen`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Listener {
    /// A TCP listener.
    Tcp(TcpListener),
    /// A UDP socket.
    Udp(UdpSocket),
    /// A unix stream listener.
    Unix(UnixListener),
}

impl Listener {
    /// The TCP listener, if this is one.
    pub fn into_tcp(self) -> Option<TcpListener> {
        match self {
            Listener::Tcp(l) => Some(l),
            _ => None,
        }
    }

    /// The UDP socket, if this is one.
    pub fn into_udp(self) -> Option<UdpSocket> {
        match self {
            Listener::Udp(s) => Some(s),
            _ => None,
        }
    }

    /// The unix listener, if this is one.
    pub fn into_unix(self) -> Option<UnixListener> {
        match self {
            Listener::Unix(l) => Some(l),
            _ => None,
        }
    }
}

/// A socket handed out, as the next process gets it.
#[derive(Debug)]
pub(crate) struct Active {
    /// A copy of the socket handed out. It keeps the socket open for the next process even
    /// after the application dropped its listener to stop accepting.
    pub(crate) socket: Socket,
    pub(crate) info: SocketInfo,
    /// A unix socket whose file a process of this library created (rather than systemd): the
    /// last process removes it on a final stop.
    pub(crate) owns_file: bool,
}

/// The sockets of a process: inherited and not yet claimed, and handed out.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    inherited: Vec<Inherited>,
    /// Every socket handed out, in order: what the next process gets.
    active: Vec<Active>,
    /// How often each unnamed request was made, to derive distinct names.
    requests: HashMap<Endpoint, usize>,
    /// Names of inherited unix sockets whose files a predecessor created.
    socket_files: Vec<String>,
}

impl Pool {
    pub(crate) fn new(inherited: Vec<Inherited>, socket_files: Vec<String>) -> Pool {
        Pool {
            inherited,
            socket_files,
            ..Pool::default()
        }
    }

    /// The name a request is handed over under: the given one, or one derived from the request
    /// and how often it was made before.
    fn key(&mut self, endpoint: &Endpoint, name: Option<&str>) -> String {
        match name {
            Some(name) => name.to_owned(),
            None => {
                let ordinal = self.requests.entry(endpoint.clone()).or_insert(0);
                let key = endpoint.derived_name(*ordinal);
                *ordinal += 1;
                key
            }
        }
    }

    /// Takes the inherited socket for a request: the one named `key`, else one of the same kind
    /// bound at the same address.
    fn take_inherited(
        &mut self,
        key: &str,
        endpoint: &Endpoint,
        cwd: &Path,
    ) -> Result<Option<Inherited>, Error> {
        let by_name = self.inherited.iter().position(|i| i.info.name == key);
        if let Some(i) = by_name {
            let found = self.inherited[i].info.kind;
            if found != endpoint.kind() {
                return Err(Error::KindMismatch {
                    name: key.to_owned(),
                    expected: endpoint.kind(),
                    found,
                });
            }
        }
        let by_address = || {
            endpoint.is_concrete().then(|| {
                self.inherited.iter().position(|i| {
                    i.info.kind == endpoint.kind()
                        && i.info
                            .endpoint
                            .as_ref()
                            .is_some_and(|e| endpoint.matches(e, cwd))
                })
            })?
        };
        Ok(by_name
            .or_else(by_address)
            .map(|i| self.inherited.remove(i)))
    }

    /// Forgets the inherited sockets nothing claimed, closing them.
    pub(crate) fn clear_inherited(&mut self) {
        self.inherited.clear();
    }

    /// Takes every socket out of the pool, for a final stop.
    pub(crate) fn take_all(&mut self) -> Vec<Active> {
        self.inherited.clear();
        std::mem::take(&mut self.active)
    }

    /// Copies of every socket handed out, for the next process (it gets them on fds 3.., in
    /// this order), and what the next process is told of each.
    pub(crate) fn handover(&self) -> io::Result<(Sources, Vec<env::Passed<'_>>)> {
        let fds = Sources::copy(self.active.iter().map(|a| a.socket.as_fd()))?;
        let passed = self
            .active
            .iter()
            .map(|a| env::Passed {
                name: &a.info.name,
                owns_file: a.owns_file,
                bound: a.info.bound,
            })
            .collect();
        Ok((fds, passed))
    }
}

impl Net {
    /// Returns a TCP listener on `addr`: the inherited one when there is one, else a fresh one.
    ///
    /// # Errors
    ///
    /// As [`listen`](Net::listen).
    pub fn listen_tcp(&self, addr: SocketAddr) -> Result<TcpListener, Error> {
        self.claim(&Endpoint::Tcp(addr), None)
            .map(|(s, _)| s.into())
    }

    /// Returns a UDP socket on `addr`: the inherited one when there is one, else a fresh one.
    ///
    /// # Errors
    ///
    /// As [`listen`](Net::listen).
    pub fn listen_udp(&self, addr: SocketAddr) -> Result<UdpSocket, Error> {
        self.claim(&Endpoint::Udp(addr), None)
            .map(|(s, _)| s.into())
    }

    /// Returns a unix stream listener at `path`: the inherited one when there is one, else a
    /// fresh one (a stale socket file nobody listens on is replaced).
    ///
    /// # Errors
    ///
    /// As [`listen`](Net::listen).
    pub fn listen_unix(&self, path: impl AsRef<Path>) -> Result<UnixListener, Error> {
        let endpoint = Endpoint::Unix(path.as_ref().to_owned());
        self.claim(&endpoint, None).map(|(s, _)| s.into())
    }

    /// Returns a unix stream listener with `name` in the Linux abstract namespace (without the
    /// leading NUL byte).
    ///
    /// # Errors
    ///
    /// As [`listen`](Net::listen).
    pub fn listen_unix_abstract(&self, name: &[u8]) -> Result<UnixListener, Error> {
        let endpoint = Endpoint::UnixAbstract(name.to_vec());
        self.claim(&endpoint, None).map(|(s, _)| s.into())
    }

    /// Returns a socket for `endpoint`, optionally named, and what it is.
    ///
    /// An inherited socket is used when one matches: first by name (the given `name`, or for an
    /// unnamed request a name derived from the request, so that a port-0 request finds the
    /// socket the previous process got for that same request), then by kind and address
    /// (`0.0.0.0` and `[::]` count as the same "any address"). Otherwise a fresh socket is
    /// bound: `SO_REUSEADDR` for TCP, never `SO_REUSEPORT`. Every socket is returned
    /// nonblocking and close-on-exec, ready for `tokio::net::*::from_std`, and is handed to the
    /// next process under its name.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a name sd_listen_fds(3) does not allow,
    /// [`Error::KindMismatch`] when the inherited socket of that name is of another kind, and
    /// [`Error::Bind`] when a fresh socket cannot be bound (address in use, permission).
    pub fn listen(
        &self,
        endpoint: &Endpoint,
        name: Option<&str>,
    ) -> Result<(Listener, SocketInfo), Error> {
        let (socket, info) = self.claim(endpoint, name)?;
        let listener = match endpoint.kind() {
            Kind::Tcp => Listener::Tcp(socket.into()),
            Kind::Udp => Listener::Udp(socket.into()),
            _ => Listener::Unix(socket.into()),
        };
        Ok((listener, info))
    }

    /// The socket for a request, inherited or bound, recorded for the next process.
    fn claim(
        &self,
        endpoint: &Endpoint,
        name: Option<&str>,
    ) -> Result<(Socket, SocketInfo), Error> {
        if let Some(name) = name {
            validate_name(name).map_err(|reason| Error::InvalidName {
                name: name.to_owned(),
                reason,
            })?;
        }
        let bind_err = |source: io::Error| Error::Bind {
            addr: endpoint.to_string(),
            source,
        };
        let mut st = self.state();
        let key = st.pool.key(endpoint, name);
        let cwd = &self.config.cwd;
        let (socket, actual, inherited, bound, owns_file) =
            match st.pool.take_inherited(&key, endpoint, cwd)? {
                Some(Inherited { socket, info }) => {
                    if matches!(endpoint.kind(), Kind::Tcp | Kind::UnixStream) {
                        bind::ensure_listening(&socket, self.config.backlog).map_err(bind_err)?;
                    }
                    let owns_file = st.pool.socket_files.contains(&info.name);
                    (socket, info.endpoint, true, info.bound, owns_file)
                }
                None => {
                    let socket =
                        bind::fresh(endpoint, cwd, self.config.backlog).map_err(bind_err)?;
                    let actual = sys::inspect(&socket).map_err(bind_err)?.1;
                    let owns_file = matches!(actual, Some(Endpoint::Unix(_)));
                    (socket, actual, false, true, owns_file)
                }
            };
        let info = SocketInfo {
            name: key,
            kind: endpoint.kind(),
            endpoint: actual,
            inherited,
            bound,
        };
        if !st.closed {
            st.pool.active.push(Active {
                socket: socket.try_clone().map_err(bind_err)?,
                info: info.clone(),
                owns_file,
            });
        }
        Ok((socket, info))
    }

    /// The sockets handed to this process that nothing has claimed yet.
    pub fn inherited(&self) -> Vec<SocketInfo> {
        let st = self.state();
        st.pool.inherited.iter().map(|i| i.info.clone()).collect()
    }

    /// Every socket handed out so far, in order: what the next process gets.
    pub fn listeners(&self) -> Vec<SocketInfo> {
        let st = self.state();
        st.pool.active.iter().map(|a| a.info.clone()).collect()
    }
}
