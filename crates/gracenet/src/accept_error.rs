//! Telling the errors of accept(2) apart: those of one connection, to skip, from those of the
//! listener or the process, to pause on.

use std::io;

/// Whether an accept error belongs to the connection being accepted rather than to the
/// listener or the process: it went away before it was taken (`ECONNABORTED`), or, as
/// accept(2) says of Linux, a network error of the new connection was passed through. The
/// next accept may succeed at once; anything else (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`)
/// repeats until something changes, and an accept loop must pause rather than spin on it.
pub fn is_connection_error(e: &io::Error) -> bool {
    match e.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::Interrupted => return true,
        _ => {}
    }
    matches!(
        e.raw_os_error(),
        Some(
            libc::EPROTO
                | libc::EPERM
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
                | libc::ENETDOWN
                | libc::ETIMEDOUT
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_errors_accept_2_passes_on_for_the_new_connection_are_its_own() {
        let of_the_connection = [
            libc::ECONNABORTED,
            libc::ECONNRESET,
            libc::EINTR,
            libc::EPROTO,
            libc::EPERM,
            libc::ENOPROTOOPT,
            libc::EHOSTDOWN,
            libc::ENONET,
            libc::EHOSTUNREACH,
            libc::EOPNOTSUPP,
            libc::ENETUNREACH,
            libc::ENETDOWN,
            libc::ETIMEDOUT,
        ];
        let of_the_listener_or_process = [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::EAGAIN,
            libc::EBADF,
            libc::EINVAL,
        ];
        for errno in of_the_connection {
            assert!(
                is_connection_error(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        for errno in of_the_listener_or_process {
            assert!(
                !is_connection_error(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
    }
}
