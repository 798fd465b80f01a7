//! Which failed requests may be sent again: RFC 9113, section 8.7 ("Request Reliability").
//! Only those the server cannot have processed: never sent, refused with REFUSED_STREAM, or
//! above the last stream id of a GOAWAY. Everything else is lost.

use std::error::Error as StdError;

/// What the protocol says of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// hyper never sent it: handed back, or canceled before it was written.
    Unsent,
    /// The server refused it unprocessed: above the last stream id of a GOAWAY
    /// (`goaway: true`), or reset with REFUSED_STREAM.
    Refused { goaway: bool },
    /// The server may have processed it: lost, with its outcome bucket (the names of
    /// `Outcomes::bucket` in the harness).
    Lost(&'static str),
}

/// Sorts a failed attempt. `handed_back`: hyper returned the request
/// (`TrySendError::take_message`), so it was never sent.
///
/// Only two things make a request safe to send again: hyper never sent it (handed back, or
/// its `Canceled` error, which hyper's HTTP/2 client gives only to requests it did not write),
/// or an `h2::Error` among the causes says the server refused it (see [`classify_h2`]). A
/// connection closed mid-response, a reset with another reason, a timeout: lost.
///
/// One assumption, kept by running the client on a current-thread runtime: hyper's HTTP/2
/// dispatch opens a stream and then checks the connection again, failing the request with
/// the connection's error if that check fails. With the connection task on another thread, a
/// GOAWAY read in between would fail a stream already sent with the same error as one the
/// GOAWAY refused. On one thread nothing runs in between.
pub(super) fn classify(err: &hyper::Error, handed_back: bool) -> Verdict {
    if handed_back || err.is_canceled() {
        return Verdict::Unsent;
    }
    if let Some(h2) = find::<h2::Error>(err) {
        return classify_h2(h2);
    }
    if err.is_timeout() {
        return Verdict::Lost("timeout");
    }
    Verdict::Lost(find::<std::io::Error>(err).map_or("other", io_bucket))
}

/// Sorts an HTTP/2 error on a request's stream:
///
/// - a GOAWAY the server sent (`is_go_away() && is_remote()`): h2 fails a stream with it only
///   when the stream is above the GOAWAY's last stream id, or was never opened because the
///   GOAWAY had arrived; either way unprocessed (RFC 9113, 6.8). A stream at or below the last
///   stream id that the connection's close then cuts off fails with an I/O error instead;
/// - REFUSED_STREAM, unless h2 itself chose it: "closed prior to any processing" (8.7);
/// - any other reason: lost, the server may have acted on it.
pub(super) fn classify_h2(e: &h2::Error) -> Verdict {
    if e.is_go_away() && e.is_remote() {
        Verdict::Refused { goaway: true }
    } else if e.reason() == Some(h2::Reason::REFUSED_STREAM) && !e.is_go_away() && !e.is_library() {
        Verdict::Refused { goaway: false }
    } else if let Some(io) = e.get_io() {
        Verdict::Lost(io_bucket(io))
    } else if e.reason().is_some() {
        Verdict::Lost("reset")
    } else {
        Verdict::Lost("other")
    }
}

/// The outcome bucket of an I/O error.
pub(super) fn io_bucket(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "refused",
        K::ConnectionReset | K::ConnectionAborted => "reset",
        K::BrokenPipe | K::UnexpectedEof | K::NotConnected => "closed",
        K::TimedOut => "timeout",
        _ => "other",
    }
}

/// The first `T` among `err` and its causes.
fn find<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cause = Some(err);
    // Bounded: error chains are a few deep.
    for _ in 0..32 {
        let e = cause?;
        if let Some(t) = e.downcast_ref::<T>() {
            return Some(t);
        }
        cause = e.source();
    }
    None
}

/// `err` and its causes, `: `-separated (hyper's own message is only "http2 error").
pub(super) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut cause = err.source();
    while let Some(e) = cause.filter(|_| parts.len() < 8) {
        parts.push(e.to_string());
        cause = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use std::io::ErrorKind;
    use std::time::Duration;

    use h2::Reason;
    use http_body_util::Empty;
    use hyper::Request;
    use hyper::body::Bytes;
    use hyper::client::conn::http2;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::{AsyncWriteExt, DuplexStream};

    use super::super::script::{self, frame, goaway, reset};
    use super::*;

    type Sender = http2::SendRequest<Empty<Bytes>>;
    type Conn = tokio::task::JoinHandle<hyper::Result<()>>;

    /// An HTTP/2 client on `io`, its connection task running.
    async fn client(io: DuplexStream) -> (Sender, Conn) {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
        (sender, tokio::spawn(conn))
    }

    /// One request that fails: its verdict, and whether hyper handed it back.
    async fn failed(sender: &mut Sender) -> (Verdict, bool) {
        let get = Request::get("http://127.0.0.1/")
            .body(Empty::new())
            .unwrap();
        let sent = tokio::time::timeout(Duration::from_secs(5), sender.try_send_request(get));
        let mut e = sent.await.expect("an outcome in time").unwrap_err();
        let handed_back = e.take_message().is_some();
        (classify(&e.into_error(), handed_back), handed_back)
    }

    /// One request on a connection to a server that answers its HEADERS with `reply`, then
    /// closes the connection (`close`) or keeps it open; the verdict on the request.
    async fn verdict_after(reply: Vec<u8>, close: bool) -> Verdict {
        let (io, mut server) = tokio::io::duplex(1 << 16);
        let script = tokio::spawn(async move {
            script::greet(&mut server).await;
            assert_eq!(script::next_request(&mut server).await, Some(1));
            server.write_all(&reply).await.unwrap();
            (!close).then_some(server)
        });
        let (mut sender, conn) = client(io).await;
        let (verdict, _) = failed(&mut sender).await;
        let kept = script.await.unwrap();
        drop((sender, kept));
        let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        verdict
    }

    #[tokio::test]
    async fn a_stream_above_the_goaway_last_stream_id_is_refused() {
        let v = verdict_after(goaway(0, Reason::NO_ERROR), false).await;
        assert_eq!(v, Verdict::Refused { goaway: true });
        // The GOAWAY's reason does not matter: stream 1 was not processed.
        let v = verdict_after(goaway(0, Reason::INTERNAL_ERROR), false).await;
        assert_eq!(v, Verdict::Refused { goaway: true });
    }

    #[tokio::test]
    async fn a_stream_at_the_goaway_last_stream_id_cut_off_by_the_close_is_lost() {
        let v = verdict_after(goaway(1, Reason::NO_ERROR), true).await;
        assert_eq!(v, Verdict::Lost("closed"));
    }

    #[tokio::test]
    async fn refused_stream_is_refused_and_other_resets_are_lost() {
        let v = verdict_after(reset(1, Reason::REFUSED_STREAM), false).await;
        assert_eq!(v, Verdict::Refused { goaway: false });
        for reason in [Reason::NO_ERROR, Reason::INTERNAL_ERROR, Reason::CANCEL] {
            let v = verdict_after(reset(1, reason), false).await;
            assert_eq!(v, Verdict::Lost("reset"), "{reason:?}");
        }
    }

    #[tokio::test]
    async fn a_connection_closed_after_the_request_was_sent_loses_it() {
        assert_eq!(
            verdict_after(Vec::new(), true).await,
            Verdict::Lost("closed")
        );
    }

    #[tokio::test]
    async fn a_request_on_a_closed_connection_is_handed_back_unsent() {
        let (io, mut server) = tokio::io::duplex(1 << 16);
        let (mut sender, conn) = client(io).await;
        server
            .write_all(&frame(script::SETTINGS, 0, 0, &[]))
            .await
            .unwrap();
        drop(server);
        let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
        assert!(ended.is_ok(), "the connection task did not end");
        assert!(sender.is_closed());
        assert_eq!(failed(&mut sender).await, (Verdict::Unsent, true));
    }

    #[tokio::test]
    async fn a_request_after_a_goaway_is_never_sent() {
        // The first GOAWAY of a graceful shutdown (last stream id 2^31-1) arrives before the
        // request: hyper either hands it back (the connection closed) or h2 fails it without
        // opening a stream. Which one depends on scheduling; neither was sent.
        let (io, mut server) = tokio::io::duplex(1 << 16);
        server
            .write_all(&frame(script::SETTINGS, 0, 0, &[]))
            .await
            .unwrap();
        server
            .write_all(&goaway(0x7fff_ffff, Reason::NO_ERROR))
            .await
            .unwrap();
        let (mut sender, conn) = client(io).await;
        tokio::task::yield_now().await;
        let (v, _) = failed(&mut sender).await;
        assert!(
            matches!(v, Verdict::Unsent | Verdict::Refused { goaway: true }),
            "{v:?}"
        );
        drop((sender, server));
        let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
    }

    #[test]
    fn sorts_constructed_errors() {
        assert_eq!(
            classify_h2(&h2::Error::from(Reason::REFUSED_STREAM)),
            Verdict::Refused { goaway: false }
        );
        for reason in [
            Reason::NO_ERROR,
            Reason::PROTOCOL_ERROR,
            Reason::INTERNAL_ERROR,
            Reason::STREAM_CLOSED,
            Reason::CANCEL,
            Reason::ENHANCE_YOUR_CALM,
        ] {
            assert_eq!(
                classify_h2(&h2::Error::from(reason)),
                Verdict::Lost("reset"),
                "{reason:?}"
            );
        }
        assert_eq!(io_bucket(&ErrorKind::ConnectionReset.into()), "reset");
        assert_eq!(io_bucket(&ErrorKind::BrokenPipe.into()), "closed");
        assert_eq!(io_bucket(&ErrorKind::ConnectionRefused.into()), "refused");
        assert_eq!(io_bucket(&ErrorKind::Other.into()), "other");
    }
}
