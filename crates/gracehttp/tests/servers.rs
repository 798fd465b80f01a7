//! Several servers in one runner: two TCP ports and a unix socket, each with its own handler,
//! all drained by one stop.

mod util;

use std::io;

use gracehttp::Server;
use testkit::http::RawClient;
use testkit::{LOCAL, TIMEOUT, TempDir, within};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use util::Gate;

/// Reads the answer to a `GET /gate` the drain let through: `NAME released`, with
/// `connection: close`, then a clean end of the connection.
async fn assert_released<S: AsyncRead + AsyncWrite + Unpin>(client: &mut RawClient<S>, name: &str) {
    let res = client.response().await.unwrap();
    let released = format!("{name} released\n");
    assert_eq!(
        (res.status, res.text().as_str(), res.header("connection")),
        (200, released.as_str(), Some("close"))
    );
    client.assert_clean_eof().await;
}

#[tokio::test]
async fn each_server_answers_with_its_own_handler_and_stop_drains_them_all() {
    let net = util::net();
    let gate = Gate::new();
    let dir = TempDir::new("servers").unwrap();
    let socket = dir.join("servers.sock");
    let grace = util::grace(&net)
        .server(Server::tcp("alpha", LOCAL, util::routes("alpha", &gate)))
        .server(Server::tcp("beta", LOCAL, util::routes("beta", &gate)))
        .server(Server::unix("gamma", &socket, util::routes("gamma", &gate)));
    let mut srv = util::start(grace, &net).await;
    let (alpha, beta) = (srv.tcp("alpha"), srv.tcp("beta"));
    let unix = || async {
        RawClient::new(
            within(TIMEOUT, "a unix connection", UnixStream::connect(&socket))
                .await
                .expect("connect to the unix socket"),
        )
    };

    assert_eq!(
        srv.get_once("alpha", "/").await.text(),
        "hello from alpha\n"
    );
    assert_eq!(srv.get_once("beta", "/").await.text(), "hello from beta\n");
    assert_eq!(
        unix().await.get("/").await.unwrap().text(),
        "hello from gamma\n"
    );

    // One request in flight on each server when the stop comes.
    let mut a = RawClient::connect(alpha).await.unwrap();
    let mut b = RawClient::connect(beta).await.unwrap();
    let mut g = unix().await;
    a.send_get("/gate").await.unwrap();
    b.send_get("/gate").await.unwrap();
    g.send_get("/gate").await.unwrap();
    gate.wait_entered(3).await;
    srv.stop_and_wait_draining().await;
    gate.release(3);

    assert_released(&mut a, "alpha").await;
    assert_released(&mut b, "beta").await;
    assert_released(&mut g, "gamma").await;

    let drained = srv.stopped().await;
    assert_eq!((drained.forced, drained.stuck), (0, 0), "{drained:?}");
    assert!(
        drained.finished >= 3,
        "the three connections in flight finished: {drained:?}"
    );

    // A final stop closes every port and removes the socket file.
    for addr in [alpha, beta] {
        let refused = within(TIMEOUT, "a refusal", TcpStream::connect(addr)).await;
        assert_eq!(
            refused.map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::ConnectionRefused),
            "{addr}"
        );
    }
    assert!(!socket.exists(), "{} is removed", socket.display());
}
