//! The HTTP/JSON API: `POST /v1/<primitive>/<method>` with the proto request as JSON, watch as
//! server-sent events, errors as problem+json, and the health endpoints.

use crate::api::Api;
use crate::error::ApiError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use futures::StreamExt as _;
use plinth_core::ErrorCode;
use plinth_proto::json;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::time::Duration;

/// Request bodies above this are refused before parsing; values are limited by core to 1 MiB.
pub const BODY_BYTES_MAX: usize = 8 * 1024 * 1024;

/// The HTTP side of the port: the calls' routes (`routes`, from every service's declaration),
/// the backup, metrics and health endpoints, and problem+json for paths and methods it lacks.
pub(crate) fn router(api: Api, routes: impl FnOnce(Router<Api>) -> Router<Api>) -> Router {
    routes(Router::new())
        .route("/v1/maintenance/snapshot", get(snapshot))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .fallback(unknown_path)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(api)
}

/// The route of a unary call: the body as its request message, the reply as JSON.
pub(crate) fn unary<Req, Resp, F, Fut>(f: F) -> MethodRouter<Api>
where
    Req: DeserializeOwned + Serialize + Send + 'static,
    Resp: Serialize,
    F: FnOnce(Api, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, ApiError>> + Send,
{
    post(
        move |State(api): State<Api>, body: Result<Bytes, BytesRejection>| async move {
            call(body, |request| f(api, request)).await
        },
    )
}

/// The route of a streaming call: the body as its request message, the replies as
/// server-sent events named `name`.
pub(crate) fn stream<Req, T, S, F, Fut>(name: &'static str, f: F) -> MethodRouter<Api>
where
    Req: DeserializeOwned + Serialize + Send + 'static,
    T: Serialize + 'static,
    S: futures::Stream<Item = Result<T, ApiError>> + Send + 'static,
    F: FnOnce(Api, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<S, ApiError>> + Send,
{
    post(
        move |State(api): State<Api>, body: Result<Bytes, BytesRejection>| async move {
            match parse(body) {
                Ok(request) => sse(name, f(api, request).await),
                Err(e) => e.into_response(),
            }
        },
    )
}

/// A path the API does not have: a problem that says what the API's paths look like.
async fn unknown_path(uri: axum::http::Uri) -> Response {
    ApiError::new(
        ErrorCode::NotFound,
        "path",
        format!(
            "there is no {}; the HTTP API is POST /v1/<primitive>/<method>, GET /healthz, /readyz and /metrics",
            uri.path()
        ),
    )
    .into_response()
}

/// A path the API has, called with a method it does not take: a problem, like every error.
async fn method_not_allowed(method: http::Method, uri: axum::http::Uri) -> Response {
    let takes = if uri.path().starts_with("/v1/") && uri.path() != "/v1/maintenance/snapshot" {
        "POST"
    } else {
        "GET"
    };
    ApiError::invalid(
        "method",
        format!(
            "{method} is not allowed on {}; it takes {takes}",
            uri.path()
        ),
    )
    .with_status(http::StatusCode::METHOD_NOT_ALLOWED)
    .into_response()
}

/// Parses the body as the request message, runs the call, renders the reply or the problem.
async fn call<Req, Resp, F, Fut>(body: Result<Bytes, BytesRejection>, f: F) -> Response
where
    Req: DeserializeOwned + Serialize,
    Resp: Serialize,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<Resp, ApiError>>,
{
    let request = match parse::<Req>(body) {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    match f(request).await {
        Ok(reply) => axum::Json(json::encode(&reply)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn parse<Req: DeserializeOwned + Serialize>(
    body: Result<Bytes, BytesRejection>,
) -> Result<Req, ApiError> {
    let body = body.map_err(body_error)?;
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &body
    };
    json::decode_text(body).map_err(|e| ApiError::invalid(&e.field, e.message))
}

/// Why a body could not be read: past the size limit (413, not a 429 that invites a retry of
/// the same body), or a transfer that broke off or was malformed (400).
fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ErrorCode::ResourceExhausted,
            "body",
            format!("request body is over the limit of {BODY_BYTES_MAX} bytes"),
        )
        .with_status(http::StatusCode::PAYLOAD_TOO_LARGE)
    } else {
        ApiError::invalid(
            "body",
            format!("request body could not be read: {}", rejection.body_text()),
        )
    }
}

/// A stream of replies as server-sent events named `name`, and an `error` event if it fails.
fn sse<S, T>(name: &'static str, stream: Result<S, ApiError>) -> Response
where
    S: futures::Stream<Item = Result<T, ApiError>> + Send + 'static,
    T: Serialize,
{
    let stream = match stream {
        Ok(stream) => stream,
        Err(e) => return e.into_response(),
    };
    let events = stream.map(move |item| {
        let event = match item {
            Ok(reply) => Event::default().event(name).json_data(json::encode(&reply)),
            Err(e) => Event::default().event("error").json_data(e.problem()),
        };
        Ok::<_, std::convert::Infallible>(event.expect("json values always serialize"))
    });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The backup file as the body (`curl -o plinth.backup`), its revision in a header.
async fn snapshot(State(api): State<Api>) -> Response {
    match api.backup().await {
        Ok((bytes, header)) => (
            [
                (
                    http::header::CONTENT_TYPE,
                    "application/octet-stream".to_owned(),
                ),
                (
                    http::header::HeaderName::from_static("plinth-revision"),
                    header.revision.to_string(),
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

async fn metrics(State(api): State<Api>) -> Response {
    match api.metrics_text().await {
        Ok(text) => (
            [(
                http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Ready when a leader is known: this node can then serve every call, itself or by forwarding
/// it. Read locally, so every member of a cluster answers for itself.
async fn ready(State(api): State<Api>) -> Response {
    if let Some(e) = api.node.fatal_error() {
        return ApiError::new(
            ErrorCode::Unavailable,
            "",
            format!("this node failed and cannot serve: {e}"),
        )
        .into_response();
    }
    match api.read(true, |s| s.revision()).await {
        Ok(_) if api.node.status().leader_id.is_some() => "ready\n".into_response(),
        Ok(_) => {
            ApiError::new(ErrorCode::Unavailable, "", "no leader is known yet").into_response()
        }
        Err(e) => e.into_response(),
    }
}
