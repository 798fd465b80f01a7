//! The services a server runs, type-erased so that servers with different services can be
//! managed together.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower::ServiceExt;

/// An error of a service or a body, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body every [`Handler`] produces.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

/// What a server answers requests with: any hyper or tower service (an axum `Router`
/// included), boxed.
///
/// One allocation per request is the price of serving several differently-typed services from
/// one runner.
#[derive(Clone)]
pub struct Handler(Arc<dyn Fn(Request<Incoming>) -> BoxFuture + Send + Sync>);

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Handler")
    }
}

impl Handler {
    /// A hyper service, such as one made with `hyper::service::service_fn`.
    pub fn hyper<S, B>(service: S) -> Handler
    where
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>>
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Handler(Arc::new(move |req| {
            let fut = service.call(req);
            Box::pin(async move {
                let res = fut.await.map_err(Into::into)?;
                Ok(res.map(|b| b.map_err(Into::into).boxed_unsync()))
            })
        }))
    }

    /// A tower service, such as an axum `Router`. It is cloned for each request and driven
    /// with `oneshot` (readiness first, then the call), as tower expects.
    pub fn tower<S, B>(service: S) -> Handler
    where
        S: tower::Service<Request<Incoming>, Response = Response<B>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Handler(Arc::new(move |req| {
            let svc = service.clone();
            Box::pin(async move {
                let res = svc.oneshot(req).await.map_err(Into::into)?;
                Ok(res.map(|b| b.map_err(Into::into).boxed_unsync()))
            })
        }))
    }

    /// An async function from request to response, for small services.
    pub fn from_fn<F, Fut>(f: F) -> Handler
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        Handler(Arc::new(move |req| {
            let fut = f(req);
            Box::pin(async move { Ok(fut.await) })
        }))
    }

    pub(crate) fn call(&self, req: Request<Incoming>) -> BoxFuture {
        (self.0)(req)
    }
}

/// A complete body from bytes or a string, for handlers.
pub fn full(data: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(data.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
