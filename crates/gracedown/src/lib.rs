//! Drain accounting for any tokio server (work in progress).
#![forbid(unsafe_code)]
