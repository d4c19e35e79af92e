//! ApiError: what a caller sees when a call fails, rendered as a gRPC status with an
//! `ErrorDetail` or as an RFC 9457 problem+json body, with the same stable code on both.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use plinth_core::{ErrorCode, StateError};
use plinth_node::NodeError;
use plinth_proto::v1 as pb;
use prost::Message as _;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    /// The request field that was wrong, empty if none.
    pub field: String,
    pub message: String,
    pub compacted_revision: u64,
    pub leader: String,
    /// The HTTP status when the code's usual one does not fit (a body over the size limit is
    /// 413, not the 429 of RESOURCE_EXHAUSTED, which invites a retry of the same body).
    pub status: Option<StatusCode>,
}

impl ApiError {
    pub fn new(code: ErrorCode, field: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            field: field.to_string(),
            message: message.into(),
            compacted_revision: 0,
            leader: String::new(),
            status: None,
        }
    }

    pub(crate) fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = Some(status);
        self
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidArgument, field, message)
    }

    fn grpc_code(&self) -> tonic::Code {
        match self.code {
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorCode::FailedPrecondition | ErrorCode::StaleToken => {
                tonic::Code::FailedPrecondition
            }
            ErrorCode::Compacted => tonic::Code::OutOfRange,
            ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
            ErrorCode::NotLeader | ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    fn http_status(&self) -> StatusCode {
        if let Some(status) = self.status {
            return status;
        }
        match self.code {
            ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::AlreadyExists | ErrorCode::StaleToken => StatusCode::CONFLICT,
            ErrorCode::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
            ErrorCode::Compacted => StatusCode::GONE,
            ErrorCode::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::NotLeader => StatusCode::MISDIRECTED_REQUEST,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn detail(&self) -> pb::ErrorDetail {
        let code = pb::ErrorCode::from_str_name(self.code.as_str()).expect("same code list");
        pb::ErrorDetail {
            code: code as i32,
            field: self.field.clone(),
            message: self.message.clone(),
            compacted_revision: self.compacted_revision,
            leader: self.leader.clone(),
        }
    }

    /// The problem+json body (RFC 9457) with our stable code and fields as extensions.
    pub fn problem(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "type": format!("urn:plinth:error:{}", self.code.as_str()),
            "title": self.code.as_str(),
            "status": self.http_status().as_u16(),
            "detail": self.message,
            "code": self.code.as_str(),
            "message": self.message,
        });
        if !self.field.is_empty() {
            body["field"] = self.field.clone().into();
        }
        if self.code == ErrorCode::Compacted {
            body["compacted_revision"] = self.compacted_revision.into();
        }
        if !self.leader.is_empty() {
            body["leader"] = self.leader.clone().into();
        }
        body
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> ApiError {
        let mut api = ApiError::new(e.code(), e.field(), e.to_string());
        match e {
            StateError::Kv(plinth_core::kv::KvError::Compacted {
                compacted_revision, ..
            }) => api.compacted_revision = compacted_revision.0,
            StateError::Registry(plinth_core::registry::RegistryError::Compacted {
                compacted,
                ..
            }) => api.compacted_revision = compacted.0,
            _ => {}
        }
        api
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> ApiError {
        match e {
            NodeError::Invalid(e) => e.into(),
            NodeError::NotLeader { leader_addr, .. } => {
                let mut api = ApiError::new(ErrorCode::NotLeader, "", e_msg(&leader_addr));
                api.leader = leader_addr.unwrap_or_default();
                api
            }
            NodeError::Refused(message) => {
                ApiError::new(ErrorCode::FailedPrecondition, "id", message)
            }
            other => ApiError::new(ErrorCode::Unavailable, "", other.to_string()),
        }
    }
}

fn e_msg(leader: &Option<String>) -> String {
    match leader {
        Some(addr) => format!("this node is not the leader; the leader is at {addr}"),
        None => "this node is not the leader and knows no leader yet; retry shortly".to_string(),
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> tonic::Status {
        let details = e.detail().encode_to_vec();
        tonic::Status::with_details(e.grpc_code(), e.message.clone(), details.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).expect("json");
        (
            self.http_status(),
            [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}
