//! The admin handler: `/healthz` for load balancers, `/metrics` in the Prometheus text format.

mod util;

use gracehttp::Server;
use testkit::http::RawClient;
use testkit::{LOCAL, metrics};
use util::Gate;

#[tokio::test(start_paused = true)]
async fn healthz_turns_503_when_draining_and_metrics_count_what_happened() {
    let net = util::net();
    let gate = Gate::new();
    let grace = util::grace(&net).server(Server::tcp("web", LOCAL, util::routes("web", &gate)));
    let admin = gracehttp::admin(grace.handle());
    let grace = grace.server(Server::tcp("admin", LOCAL, admin));
    let mut srv = util::start(grace, &net).await;

    // Two connections to web, three requests; both stay open.
    let mut w1 = RawClient::connect(srv.tcp("web")).await.unwrap();
    let mut w2 = RawClient::connect(srv.tcp("web")).await.unwrap();
    assert_eq!(w1.get("/").await.unwrap().status, 200);
    assert_eq!(w1.get("/").await.unwrap().status, 200);
    assert_eq!(w2.get("/").await.unwrap().status, 200);

    let mut admin = RawClient::connect(srv.tcp("admin")).await.unwrap();
    let health = admin.get("/healthz").await.unwrap();
    assert_eq!(
        (health.status, health.text().as_str()),
        (200, "ok\n"),
        "{health:?}"
    );
    assert_eq!(admin.get("/nope").await.unwrap().status, 404);

    let res = admin.get("/metrics").await.unwrap();
    assert_eq!(res.status, 200);
    assert!(
        res.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")),
        "{res:?}"
    );
    let text = res.text();
    for (family, kind) in [
        ("gracehttp_connections_active", "gauge"),
        ("gracehttp_connections_accepted_total", "counter"),
        ("gracehttp_requests_total", "counter"),
        ("gracehttp_upgrades_total", "counter"),
        ("gracehttp_generation", "gauge"),
    ] {
        assert!(
            text.lines().any(|l| l == format!("# TYPE {family} {kind}")),
            "no TYPE line for {family}:\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "no HELP line for {family}:\n{text}"
        );
    }
    let value = |series: &str| {
        metrics::count(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    assert_eq!(value(r#"gracehttp_connections_active{server="web"}"#), 2);
    assert_eq!(
        value(r#"gracehttp_connections_accepted_total{server="web"}"#),
        2
    );
    assert_eq!(value(r#"gracehttp_requests_total{server="web"}"#), 3);
    // The admin port counts itself: this connection, and its three requests (this one too).
    assert_eq!(value(r#"gracehttp_connections_active{server="admin"}"#), 1);
    assert_eq!(
        value(r#"gracehttp_connections_accepted_total{server="admin"}"#),
        1
    );
    assert_eq!(value(r#"gracehttp_requests_total{server="admin"}"#), 3);
    assert_eq!(value(r#"gracehttp_upgrades_total{result="done"}"#), 0);
    assert_eq!(value(r#"gracehttp_upgrades_total{result="failed"}"#), 0);
    assert_eq!(value("gracehttp_generation"), 0);
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (_, number) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("line {line:?}"));
        assert!(
            number.parse::<f64>().is_ok(),
            "a sample line ends in a number: {line:?}"
        );
    }

    // Paused time: the drain cannot close this kept-alive connection before it is used again.
    srv.stop_and_wait_draining().await;
    let health = admin.get("/healthz").await.unwrap();
    assert_eq!(
        (health.status, health.text().as_str()),
        (503, "draining\n"),
        "{health:?}"
    );
    assert!(srv.handle.is_draining());
    assert_eq!(
        metrics::count(&srv.handle.metrics_text(), "gracehttp_draining"),
        Some(1)
    );

    let drained = srv.stopped().await;
    assert_eq!(drained.forced, 0, "{drained:?}");
}
