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
use axum::routing::{get, post};
use futures::StreamExt as _;
use plinth_core::ErrorCode;
use plinth_proto::json;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::time::Duration;

/// Request bodies above this are refused before parsing; values are limited by core to 1 MiB.
pub const BODY_BYTES_MAX: usize = 8 * 1024 * 1024;

macro_rules! json_routes {
    ($router:expr, $($path:literal => $method:ident),* $(,)?) => {
        $router $(.route(
            $path,
            post(|State(api): State<Api>, body: Result<Bytes, BytesRejection>| async move {
                call(body, |request| async move { api.$method(request).await }).await
            }),
        ))*
    };
}

pub fn router(api: Api) -> Router {
    let router = json_routes!(Router::new(),
        "/v1/kv/put" => kv_put,
        "/v1/kv/get" => kv_get,
        "/v1/kv/range" => kv_range,
        "/v1/kv/delete" => kv_delete,
        "/v1/kv/txn" => kv_txn,
        "/v1/kv/compact" => kv_compact,
        "/v1/lease/grant" => lease_grant,
        "/v1/lease/keep_alive" => lease_keep_alive,
        "/v1/lease/revoke" => lease_revoke,
        "/v1/lease/time_to_live" => lease_time_to_live,
        "/v1/lease/list" => lease_list,
        "/v1/lock/acquire" => lock_acquire,
        "/v1/lock/renew" => lock_renew,
        "/v1/lock/release" => lock_release,
        "/v1/lock/get" => lock_get,
        "/v1/lock/check_fence" => lock_check_fence,
        "/v1/election/campaign" => election_campaign,
        "/v1/election/leader" => election_leader,
        "/v1/election/proclaim" => election_proclaim,
        "/v1/election/resign" => election_resign,
        "/v1/queue/create" => queue_create,
        "/v1/queue/delete" => queue_delete,
        "/v1/queue/list" => queue_list,
        "/v1/queue/stats" => queue_stats,
        "/v1/queue/send" => queue_send,
        "/v1/queue/send_batch" => queue_send_batch,
        "/v1/queue/receive" => queue_receive,
        "/v1/queue/ack" => queue_ack,
        "/v1/queue/nack" => queue_nack,
        "/v1/queue/change_visibility" => queue_change_visibility,
        "/v1/queue/redrive" => queue_redrive,
        "/v1/queue/purge" => queue_purge,
        "/v1/schedule/create" => schedule_create,
        "/v1/schedule/get" => schedule_get,
        "/v1/schedule/list" => schedule_list,
        "/v1/schedule/cancel" => schedule_cancel,
        "/v1/schedule/pause" => schedule_pause,
        "/v1/schedule/resume" => schedule_resume,
        "/v1/schedule/trigger" => schedule_trigger,
        "/v1/schedule/runs" => schedule_runs,
        "/v1/schedule/claim" => schedule_claim,
        "/v1/schedule/heartbeat" => schedule_heartbeat,
        "/v1/schedule/complete" => schedule_complete,
        "/v1/schedule/fail" => schedule_fail,
        "/v1/config/put" => config_put,
        "/v1/config/get" => config_get,
        "/v1/config/history" => config_history,
        "/v1/config/rollback" => config_rollback,
        "/v1/config/set_schema" => config_set_schema,
        "/v1/config/get_schema" => config_get_schema,
        "/v1/config/set_retention" => config_set_retention,
        "/v1/config/list" => config_list,
        "/v1/registry/register" => registry_register,
        "/v1/registry/heartbeat" => registry_heartbeat,
        "/v1/registry/set_status" => registry_set_status,
        "/v1/registry/deregister" => registry_deregister,
        "/v1/registry/resolve" => registry_resolve,
        "/v1/registry/services" => registry_services,
        "/v1/maintenance/status" => maintenance_status,
        "/v1/cluster/status" => cluster_status,
        "/v1/cluster/add_learner" => cluster_add_learner,
        "/v1/cluster/promote" => cluster_promote,
        "/v1/cluster/remove" => cluster_remove,
        "/v1/cluster/transfer_leader" => cluster_transfer_leader,
    );
    router
        .route("/v1/kv/watch", post(watch))
        .route("/v1/election/observe", post(observe))
        .route("/v1/config/watch", post(config_watch))
        .route("/v1/registry/watch", post(registry_watch))
        .route("/v1/maintenance/snapshot", get(snapshot))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .fallback(unknown_path)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(api)
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

async fn watch(State(api): State<Api>, body: Result<Bytes, BytesRejection>) -> Response {
    match parse(body) {
        Ok(request) => sse("watch", api.kv_watch(request).await),
        Err(e) => e.into_response(),
    }
}

async fn observe(State(api): State<Api>, body: Result<Bytes, BytesRejection>) -> Response {
    match parse(body) {
        Ok(request) => sse("leader", api.election_observe(request).await),
        Err(e) => e.into_response(),
    }
}

async fn config_watch(State(api): State<Api>, body: Result<Bytes, BytesRejection>) -> Response {
    match parse(body) {
        Ok(request) => sse("version", api.config_watch(request).await),
        Err(e) => e.into_response(),
    }
}

async fn registry_watch(State(api): State<Api>, body: Result<Bytes, BytesRejection>) -> Response {
    match parse(body) {
        Ok(request) => sse("registry", api.registry_watch(request).await),
        Err(e) => e.into_response(),
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
