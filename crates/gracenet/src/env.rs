//! The environment of the handover protocol, read by the rules of sd_listen_fds(3).

use std::ffi::OsString;
use std::os::fd::RawFd;

use crate::Error;

/// The number of sockets handed over, starting at fd 3.
pub const LISTEN_FDS: &str = "LISTEN_FDS";
/// The pid the handed-over sockets are meant for; any other process must ignore them.
pub const LISTEN_PID: &str = "LISTEN_PID";
/// The names of the handed-over sockets, separated by `:`.
pub const LISTEN_FDNAMES: &str = "LISTEN_FDNAMES";
/// The write end of the readiness pipe, written to by the new process once it serves.
pub const READY_FD: &str = "GRACENET_READY_FD";
/// How many handovers came before this process (0 for the first).
pub const GENERATION: &str = "GRACENET_GENERATION";
/// The names of the handed-over unix sockets whose files a process of this library created,
/// and which the last process removes on a final stop (a file systemd created stays).
pub const SOCKET_FILES: &str = "GRACENET_SOCKET_FILES";
/// Which handed-over sockets a process of this library bound itself, so that no process outside
/// the line of generations (systemd, a supervisor) holds them: the last process may seal them
/// on a final stop. The value is `GENERATION;POSITIONS`: the generation it is meant for, then
/// the comma-separated positions among the `LISTEN_FDS` sockets (0 for fd 3), for example
/// `4;0,2`. Positions rather than names, which need not be unique (every socket of a systemd
/// unit has the unit's name by default); the generation, so that a value an older binary passed
/// on untouched is not taken for its own. Absent or stale, every inherited socket counts as
/// shared.
pub const BOUND: &str = "GRACENET_BOUND";

/// Every variable the protocol sets; none of them must reach an unrelated subprocess.
pub(crate) const ALL: [&str; 7] = [
    LISTEN_FDS,
    LISTEN_PID,
    LISTEN_FDNAMES,
    READY_FD,
    GENERATION,
    SOCKET_FILES,
    BOUND,
];

/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
pub(crate) const FIRST_FD: RawFd = 3;

/// What the environment hands to this process.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Handed {
    /// `(fd, name)` for each inherited socket, in order from fd 3.
    pub(crate) fds: Vec<(RawFd, String)>,
    /// The readiness pipe, when a parent waits for this process.
    pub(crate) ready_fd: Option<RawFd>,
    /// The generation of this process.
    pub(crate) generation: u64,
    /// Names of inherited unix sockets whose files this library created.
    pub(crate) socket_files: Vec<String>,
    /// Positions (0 for fd 3) of inherited sockets that a process of this library bound.
    pub(crate) bound: Vec<usize>,
    /// `LISTEN_PID` named another process: the variables were left over, not meant for us.
    pub(crate) foreign_pid: Option<u32>,
}

/// Reads the protocol's variables through `var`, for the process `pid` whose descriptors stop
/// below `fd_limit` (`RLIMIT_NOFILE`).
///
/// Follows sd_listen_fds(3): without `LISTEN_PID`, nothing is ours; a `LISTEN_PID` of another
/// process means the variables were inherited by accident and are ignored (as libsystemd does);
/// `LISTEN_FDNAMES`, when set, must name every descriptor, and every descriptor must be open
/// (`is_open`). Descriptors are not otherwise touched here.
pub(crate) fn parse(
    var: impl Fn(&str) -> Option<OsString>,
    pid: u32,
    fd_limit: u64,
    is_open: impl Fn(RawFd) -> bool,
) -> Result<Handed, Error> {
    let vars = Vars(var);
    let Some(listen_pid) = vars.get(LISTEN_PID)? else {
        return Ok(Handed::default());
    };
    let listen_pid = parse_number(&listen_pid)
        .filter(|&p| p > 0 && p <= u64::from(u32::MAX))
        .ok_or_else(|| invalid(LISTEN_PID, &listen_pid, "expected a positive process id"))?;
    if listen_pid != u64::from(pid) {
        return Ok(Handed {
            foreign_pid: u32::try_from(listen_pid).ok(),
            ..Handed::default()
        });
    }
    let count = vars.count(fd_limit)?;
    let names = vars.names(count)?;
    check_open(count, names.as_deref(), is_open)?;
    let names = names.unwrap_or_else(|| vec!["unknown".to_owned(); count]);
    let ready_fd = vars.ready_fd(count, fd_limit)?;
    let generation = match vars.get(GENERATION)? {
        None => 0,
        Some(value) => parse_number(&value)
            .ok_or_else(|| invalid(GENERATION, &value, "expected a non-negative decimal number"))?,
    };
    // A list of names; an empty one is written as an empty value.
    let socket_files = vars.get(SOCKET_FILES)?.map_or_else(Vec::new, |v| {
        v.split(':')
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect()
    });
    let bound = vars.bound(count, generation)?;
    Ok(Handed {
        fds: (FIRST_FD..).zip(names).collect(),
        ready_fd,
        generation,
        socket_files,
        bound,
        foreign_pid: None,
    })
}

/// The environment, read through a function (the process's own, or a map in tests).
struct Vars<F>(F);

impl<F: Fn(&str) -> Option<OsString>> Vars<F> {
    fn get(&self, name: &'static str) -> Result<Option<String>, Error> {
        match (self.0)(name) {
            None => Ok(None),
            Some(v) => v.into_string().map(Some).map_err(|v| Error::InvalidEnv {
                var: name,
                value: v.to_string_lossy().into_owned(),
                reason: "not valid UTF-8".into(),
            }),
        }
    }

    /// `LISTEN_FDS`: how many descriptors, at most as many as the open file limit leaves room
    /// for above fd 3.
    fn count(&self, fd_limit: u64) -> Result<usize, Error> {
        let Some(value) = self.get(LISTEN_FDS)? else {
            return Ok(0);
        };
        let n = parse_number(&value)
            .ok_or_else(|| invalid(LISTEN_FDS, &value, "expected a non-negative decimal number"))?;
        if n > fd_limit.saturating_sub(FIRST_FD as u64) {
            return Err(invalid(
                LISTEN_FDS,
                &value,
                &format!("more descriptors than the open file limit allows ({fd_limit})"),
            ));
        }
        usize::try_from(n).map_err(|_| invalid(LISTEN_FDS, &value, "too large"))
    }

    /// `LISTEN_FDNAMES`, when set: one name per descriptor.
    fn names(&self, count: usize) -> Result<Option<Vec<String>>, Error> {
        match self.get(LISTEN_FDNAMES)? {
            None => Ok(None),
            Some(value) if count == 0 && value.is_empty() => Ok(Some(Vec::new())),
            Some(value) => {
                let names: Vec<String> = value.split(':').map(str::to_owned).collect();
                if names.len() != count {
                    let reason = format!("{} names for LISTEN_FDS={count}", names.len());
                    return Err(invalid(LISTEN_FDNAMES, &value, &reason));
                }
                Ok(Some(names))
            }
        }
    }

    /// `GRACENET_READY_FD`: a descriptor after the sockets, below the limit.
    fn ready_fd(&self, count: usize, fd_limit: u64) -> Result<Option<RawFd>, Error> {
        let Some(value) = self.get(READY_FD)? else {
            return Ok(None);
        };
        parse_number(&value)
            .filter(|&fd| fd >= FIRST_FD as u64 + count as u64 && fd < fd_limit)
            .and_then(|fd| RawFd::try_from(fd).ok())
            .map(Some)
            .ok_or_else(|| {
                let reason =
                    format!("expected a descriptor number after the {count} listening sockets");
                invalid(READY_FD, &value, &reason)
            })
    }

    /// `GRACENET_BOUND`: the positions among `count` sockets, when meant for `generation`.
    fn bound(&self, count: usize, generation: u64) -> Result<Vec<usize>, Error> {
        let Some(value) = self.get(BOUND)? else {
            return Ok(Vec::new());
        };
        let bad = |reason: &str| invalid(BOUND, &value, reason);
        let (meant_for, positions) = value
            .split_once(';')
            .ok_or_else(|| bad("expected GENERATION;POSITIONS, for example 4;0,2"))?;
        let meant_for = parse_number(meant_for)
            .ok_or_else(|| bad("the generation is not a non-negative decimal number"))?;
        let positions = positions
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                parse_number(p)
                    .and_then(|p| usize::try_from(p).ok())
                    .filter(|&p| p < count)
                    .ok_or_else(|| {
                        bad(&format!(
                            "position {p:?} is not one of the {count} sockets (0..{count})"
                        ))
                    })
            })
            .collect::<Result<Vec<usize>, Error>>()?;
        // Left over from an older generation by a binary that does not know the variable: it
        // says nothing about this process's sockets.
        Ok(if meant_for == generation {
            positions
        } else {
            Vec::new()
        })
    }
}

/// Checks that each of `count` descriptors from fd 3 is open. Checked before anything is
/// allocated per descriptor: the count is bounded only by the descriptor limit, which can be
/// huge, while a bogus count fails at the first descriptor that is not open.
fn check_open(
    count: usize,
    names: Option<&[String]>,
    is_open: impl Fn(RawFd) -> bool,
) -> Result<(), Error> {
    for (i, fd) in (FIRST_FD..).take(count).enumerate() {
        if !is_open(fd) {
            let name = names
                .and_then(|n| n.get(i))
                .map_or("unknown", String::as_str);
            return Err(invalid(
                LISTEN_FDS,
                &count.to_string(),
                &format!("fd {fd} (name {name:?}) is not open"),
            ));
        }
    }
    Ok(())
}

fn invalid(var: &'static str, value: &str, reason: &str) -> Error {
    Error::InvalidEnv {
        var,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

/// What a successor is told about one socket it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Passed<'a> {
    /// The name it is handed over under.
    pub(crate) name: &'a str,
    /// Its unix socket file was created by a process of this library.
    pub(crate) owns_file: bool,
    /// A process of this library bound it.
    pub(crate) bound: bool,
}

/// Where the readiness pipe goes: right after `count` sockets.
pub(crate) fn ready_fd(count: usize) -> RawFd {
    FIRST_FD + RawFd::try_from(count).unwrap_or(RawFd::MAX - FIRST_FD)
}

/// The protocol's variables that hand `sockets` (on fds 3.., in order, with the readiness pipe
/// after them) to a process of generation `generation`: every one but `LISTEN_PID`, which only
/// the new process can know, and writes in place (`spawn/`).
pub(crate) fn encode(sockets: &[Passed<'_>], generation: u64) -> Vec<(&'static str, String)> {
    let join = |keep: fn(&Passed<'_>) -> bool, sep: &str| {
        sockets
            .iter()
            .filter(|p| keep(p))
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(sep)
    };
    let bound = sockets
        .iter()
        .enumerate()
        .filter(|(_, p)| p.bound)
        .map(|(position, _)| position.to_string())
        .collect::<Vec<_>>()
        .join(",");
    vec![
        (LISTEN_FDS, sockets.len().to_string()),
        (LISTEN_FDNAMES, join(|_| true, ":")),
        (READY_FD, ready_fd(sockets.len()).to_string()),
        (GENERATION, generation.to_string()),
        (SOCKET_FILES, join(|p| p.owns_file, ":")),
        (BOUND, format!("{generation};{bound}")),
    ]
}

/// The complete environment of a successor but `LISTEN_PID`: this process's own, without any
/// of the protocol's variables it was started with, and [`encode`]'s.
pub(crate) fn for_successor(sockets: &[Passed<'_>], generation: u64) -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| !ALL.iter().any(|v| k == v))
        .chain(
            encode(sockets, generation)
                .into_iter()
                .map(|(k, v)| (k.into(), v.into())),
        )
        .collect()
}

/// A plain decimal number: digits only (no sign, no spaces), as systemd writes them.
fn parse_number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(vars: &[(&str, &str)]) -> Result<Handed, Error> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        parse(|k| map.get(k).cloned(), 100, 1024, |fd| fd < 8)
    }

    fn invalid_var(r: Result<Handed, Error>) -> &'static str {
        match r {
            Err(Error::InvalidEnv { var, .. }) => var,
            other => panic!("expected InvalidEnv, got {other:?}"),
        }
    }

    #[test]
    fn what_a_parent_encodes_its_successor_parses() {
        let sockets = [
            Passed {
                name: "web",
                owns_file: false,
                bound: true,
            },
            Passed {
                name: "sock",
                owns_file: true,
                bound: true,
            },
            Passed {
                name: "systemd",
                owns_file: false,
                bound: false,
            },
        ];
        let mut vars: Vec<(&str, String)> = encode(&sockets, 4);
        vars.push((LISTEN_PID, "100".to_owned()));
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let h = run(&vars).unwrap();
        assert_eq!(
            h.fds,
            [
                (3, "web".to_owned()),
                (4, "sock".to_owned()),
                (5, "systemd".to_owned())
            ]
        );
        assert_eq!(h.ready_fd, Some(6));
        assert_eq!(h.generation, 4);
        assert_eq!(h.socket_files, ["sock"]);
        assert_eq!(h.bound, [0, 1]);
        // Nothing but the protocol's own variables.
        assert!(vars.iter().all(|(k, _)| ALL.contains(k)));
    }

    #[test]
    fn nothing_without_listen_pid() {
        assert_eq!(run(&[("LISTEN_FDS", "2")]).unwrap(), Handed::default());
    }

    #[test]
    fn another_pid_means_not_ours() {
        let h = run(&[("LISTEN_PID", "101"), ("LISTEN_FDS", "2")]).unwrap();
        assert!(h.fds.is_empty());
        assert_eq!(h.foreign_pid, Some(101));
    }

    #[test]
    fn fds_and_names() {
        let h = run(&[
            ("LISTEN_PID", "100"),
            ("LISTEN_FDS", "2"),
            ("LISTEN_FDNAMES", "http:admin"),
            ("GRACENET_READY_FD", "5"),
            ("GRACENET_GENERATION", "7"),
            ("GRACENET_SOCKET_FILES", ""),
            ("GRACENET_BOUND", "7;1"),
        ])
        .unwrap();
        assert_eq!(h.fds, vec![(3, "http".to_owned()), (4, "admin".to_owned())]);
        assert_eq!(h.ready_fd, Some(5));
        assert_eq!(h.generation, 7);
        assert!(h.socket_files.is_empty());
        assert_eq!(h.bound, [1]);
    }

    #[test]
    fn bound_sockets_count_only_for_the_generation_they_were_meant_for() {
        let with = |bound: &str| {
            run(&[
                ("LISTEN_PID", "100"),
                ("LISTEN_FDS", "3"),
                ("GRACENET_GENERATION", "2"),
                ("GRACENET_BOUND", bound),
            ])
        };
        assert_eq!(with("2;0,2").unwrap().bound, [0, 2]);
        assert_eq!(with("2;").unwrap().bound, Vec::<usize>::new());
        // Passed on untouched by a binary that does not know the variable.
        assert_eq!(with("1;0,1,2").unwrap().bound, Vec::<usize>::new());
        for bad in ["0,2", "x;0", "2;3", "2;0,-1", "2;a"] {
            assert_eq!(invalid_var(with(bad)), "GRACENET_BOUND", "{bad}");
        }
    }

    #[test]
    fn a_count_beyond_the_open_descriptors_fails_at_the_first_closed_one() {
        let err = run(&[("LISTEN_PID", "100"), ("LISTEN_FDS", "1000")]).unwrap_err();
        assert!(
            err.to_string()
                .contains("fd 8 (name \"unknown\") is not open"),
            "{err}"
        );
    }

    #[test]
    fn names_default_to_unknown() {
        let h = run(&[("LISTEN_PID", "100"), ("LISTEN_FDS", "1")]).unwrap();
        assert_eq!(h.fds, vec![(3, "unknown".to_owned())]);
        let h = run(&[
            ("LISTEN_PID", "100"),
            ("LISTEN_FDS", "0"),
            ("LISTEN_FDNAMES", ""),
        ])
        .unwrap();
        assert!(h.fds.is_empty());
    }

    #[test]
    fn malformed_values_name_their_variable() {
        for fds in [
            "abc",
            "-1",
            "+1",
            " 1",
            "1.0",
            "",
            "99999999999999999999999",
            "1022",
        ] {
            assert_eq!(
                invalid_var(run(&[("LISTEN_PID", "100"), ("LISTEN_FDS", fds)])),
                LISTEN_FDS,
                "{fds}"
            );
        }
        for pid in ["abc", "0", "-100", "4294967296"] {
            assert_eq!(
                invalid_var(run(&[("LISTEN_PID", pid), ("LISTEN_FDS", "1")])),
                LISTEN_PID,
                "{pid}"
            );
        }
        assert_eq!(
            invalid_var(run(&[
                ("LISTEN_PID", "100"),
                ("LISTEN_FDS", "2"),
                ("LISTEN_FDNAMES", "a")
            ])),
            LISTEN_FDNAMES
        );
        assert_eq!(
            invalid_var(run(&[
                ("LISTEN_PID", "100"),
                ("LISTEN_FDS", "2"),
                ("GRACENET_READY_FD", "4")
            ])),
            READY_FD
        );
        assert_eq!(
            invalid_var(run(&[("LISTEN_PID", "100"), ("GRACENET_GENERATION", "x")])),
            GENERATION
        );
    }
}
