//! HTTP/1.1 for the simulated API server, on any byte stream: turmoil sockets in the simulation,
//! tokio TCP on loopback for local runs and `kubectl`.

use std::convert::Infallible;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, Limited, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::errors::{self, ApiError};
use super::{ApiServer, Request, Response, parse_query};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

const AGGREGATED_DISCOVERY: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// A 200 JSON answer with a content type that names its kind.
fn typed(body: &serde_json::Value, content_type: &'static str) -> hyper::Response<Body> {
    let mut response = json_response(200, body, &[]);
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

fn json_response(code: u16, body: &serde_json::Value, warnings: &[String]) -> hyper::Response<Body> {
    let mut response = hyper::Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CACHE_CONTROL, "no-cache, private");
    for warning in warnings {
        response = response.header(http::header::WARNING, format!("299 - {warning:?}"));
    }
    response.body(full(body.to_string())).unwrap_or_else(|_| hyper::Response::new(full("")))
}

fn error_response(error: &ApiError) -> hyper::Response<Body> {
    match error {
        ApiError::Status { code, body } => json_response(*code, body, &[]),
        ApiError::PlainNotFound => hyper::Response::builder()
            .status(404)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .header("X-Content-Type-Options", "nosniff")
            .body(full("404 page not found\n"))
            .unwrap_or_else(|_| hyper::Response::new(full(""))),
    }
}

/// Answers one HTTP request.
pub async fn handle(
    server: ApiServer,
    request: hyper::Request<Incoming>,
    peer: Option<std::net::IpAddr>,
) -> hyper::Response<Body> {
    let (parts, body) = request.into_parts();
    let limit = server.options().max_body_bytes;
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return error_response(&errors::too_large(limit));
        }
        Err(e) => return error_response(&errors::bad_request(format!("reading the request body: {e}"))),
    };
    let header = |name: http::header::HeaderName| {
        parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string()
    };
    let api_request = Request {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: parse_query(parts.uri.query().unwrap_or_default()),
        content_type: header(http::header::CONTENT_TYPE),
        user_agent: header(http::header::USER_AGENT),
        accept: header(http::header::ACCEPT),
        body,
        peer,
        bearer: header(http::header::AUTHORIZATION).strip_prefix("Bearer ").map(|t| t.trim().to_string()),
        user: None,
        planned: None,
        planned_fields: None,
    };
    tracing::trace!(method = %parts.method, uri = %parts.uri, "api request");
    match server.handle(api_request).await {
        Response::Json { code, body, warnings } => json_response(code, &body, &warnings),
        Response::Error(error) => error_response(&error),
        Response::Discovery(body) => typed(&body, AGGREGATED_DISCOVERY),
        Response::Table(body) => typed(&body, TABLE),
        Response::Watch(stream) => {
            let frames = stream.map(|line| Ok::<_, Infallible>(Frame::data(line)));
            hyper::Response::builder()
                .status(200)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(BodyExt::boxed_unsync(StreamBody::new(frames)))
                .unwrap_or_else(|_| hyper::Response::new(full("")))
        }
    }
}

/// Serves HTTP/1.1 on one connection until it closes or `stop` is cancelled.
pub async fn serve_connection<IO>(server: ApiServer, io: IO, stop: CancellationToken, peer: Option<std::net::IpAddr>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let server = server.clone();
        async move { Ok::<_, Infallible>(handle(server, request, peer).await) }
    });
    let connection = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service);
    tokio::select! {
        result = connection => if let Err(e) = result {
            tracing::debug!(error = %e, ?peer, "api connection ended");
        },
        _ = stop.cancelled() => {}
    }
}

/// Serves on a tokio listener (loopback) until `stop` is cancelled; cancelling also closes every
/// open connection and watch.
pub async fn serve_tcp(server: ApiServer, listener: tokio::net::TcpListener, stop: CancellationToken) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_connection(server.clone(), stream, stop.child_token(), Some(peer.ip())));
                }
                Err(e) => tracing::warn!(error = %e, "accepting an API connection"),
            },
            _ = stop.cancelled() => return,
        }
    }
}

/// Serves on a turmoil listener; the simulation stops it by crashing the host.
pub async fn serve_turmoil(server: ApiServer, listener: turmoil::net::TcpListener) {
    let stop = CancellationToken::new();
    let _stop_connections = stop.clone().drop_guard();
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let stream = crate::net::SimStream::opened(stream);
                tokio::spawn(serve_connection(server.clone(), stream, stop.child_token(), Some(peer.ip())));
            }
            Err(e) => tracing::warn!(error = %e, "accepting an API connection"),
        }
    }
}
