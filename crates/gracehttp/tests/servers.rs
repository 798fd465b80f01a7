//! Several servers in one runner: two TCP ports and a unix socket, each with its own handler,
//! all drained by one stop.

mod util;

use std::io;

use gracehttp::Server;
use tokio::net::{TcpStream, UnixStream};
use util::{Client, Gate, LOCAL, within};

#[tokio::test]
async fn each_server_answers_with_its_own_handler_and_stop_drains_them_all() {
    let net = util::net();
    let gate = Gate::new();
    let socket = util::temp_path("servers.sock");
    let grace = util::grace(&net)
        .server(Server::tcp("alpha", LOCAL, util::routes("alpha", &gate)))
        .server(Server::tcp("beta", LOCAL, util::routes("beta", &gate)))
        .server(Server::unix("gamma", &socket, util::routes("gamma", &gate)));
    let mut srv = util::start(grace, &net).await;
    let (alpha, beta) = (srv.tcp("alpha"), srv.tcp("beta"));
    let unix = || async {
        Client::new(
            within(UnixStream::connect(&socket))
                .await
                .expect("connect to the unix socket"),
        )
    };

    assert_eq!(
        Client::connect(alpha).await.get("/").await.text(),
        "hello from alpha\n"
    );
    assert_eq!(
        Client::connect(beta).await.get("/").await.text(),
        "hello from beta\n"
    );
    assert_eq!(unix().await.get("/").await.text(), "hello from gamma\n");

    // One request in flight on each server when the stop comes.
    let mut a = Client::connect(alpha).await;
    let mut b = Client::connect(beta).await;
    let mut g = unix().await;
    a.send_get("/gate").await;
    b.send_get("/gate").await;
    g.send_get("/gate").await;
    gate.wait_entered(3).await;
    srv.stop_and_wait_draining().await;
    gate.release(3);

    let res = a.response().await;
    assert_eq!(
        (res.status, res.text().as_str(), res.header("connection")),
        (200, "alpha released\n", Some("close"))
    );
    a.assert_clean_eof().await;
    let res = b.response().await;
    assert_eq!(
        (res.status, res.text().as_str(), res.header("connection")),
        (200, "beta released\n", Some("close"))
    );
    b.assert_clean_eof().await;
    let res = g.response().await;
    assert_eq!(
        (res.status, res.text().as_str(), res.header("connection")),
        (200, "gamma released\n", Some("close"))
    );
    g.assert_clean_eof().await;

    let drained = srv.stopped().await;
    assert_eq!((drained.forced, drained.stuck), (0, 0), "{drained:?}");
    assert!(
        drained.finished >= 3,
        "the three connections in flight finished: {drained:?}"
    );

    // A final stop closes every port and removes the socket file.
    for addr in [alpha, beta] {
        let refused = within(TcpStream::connect(addr)).await;
        assert_eq!(
            refused.map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::ConnectionRefused),
            "{addr}"
        );
    }
    assert!(!socket.exists(), "{} is removed", socket.display());
}
