//! Handlers for an internal admin port: health and metrics.

use http::{Response, StatusCode, header};

use crate::Handle;
use crate::service::{Handler, full};

/// `GET /healthz`: `200 ok` while serving, `503 draining` once this process stopped accepting
/// (so a load balancer moves away). `GET /metrics`: the Prometheus text format, with active and
/// accepted connections and requests per server, upgrades done and failed, and the generation.
/// Anything else: 404.
pub fn admin(handle: Handle) -> Handler {
    Handler::from_fn(move |req| {
        let handle = handle.clone();
        async move {
            let (status, content_type, body) = match req.uri().path() {
                "/healthz" if handle.is_draining() => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain; charset=utf-8",
                    "draining\n".to_owned(),
                ),
                "/healthz" => (
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    "ok\n".to_owned(),
                ),
                "/metrics" => (
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    handle.metrics_text(),
                ),
                _ => (
                    StatusCode::NOT_FOUND,
                    "text/plain; charset=utf-8",
                    "not found\n".to_owned(),
                ),
            };
            let mut res = Response::new(full(body));
            *res.status_mut() = status;
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(content_type),
            );
            res
        }
    })
}
