//! The errors of the hyper-based clients, and telling a connection reset apart from a clean
//! close: the difference many drain tests are about.

/// Any error of a client operation; [`is_reset`] tells a connection reset apart.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whether a connection reset (`ECONNRESET`) is among the causes of `e`.
pub fn is_reset(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionReset {
                return true;
            }
        }
        cause = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[derive(Debug)]
    struct Wrapper(io::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("request failed")
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn finds_a_reset_among_the_causes() {
        let reset = Wrapper(io::Error::from(io::ErrorKind::ConnectionReset));
        let closed = Wrapper(io::Error::from(io::ErrorKind::UnexpectedEof));
        assert!(is_reset(&reset));
        assert!(!is_reset(&closed));
    }
}
