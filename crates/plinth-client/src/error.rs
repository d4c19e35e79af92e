//! Error: a failed call, with the stable code of the contract and the server's sentence.

use plinth_proto::v1 as pb;
use prost::Message as _;
use std::fmt;

pub use pb::ErrorCode as Code;

/// A failed call: the stable code, the field that was wrong (if any) and the server's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: Code,
    pub field: String,
    pub message: String,
    /// With `COMPACTED`: history starts after this revision.
    pub compacted_revision: u64,
    /// With `NOT_LEADER`: the leader's address when known.
    pub leader: String,
}

impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Error {
        Error {
            code,
            field: String::new(),
            message: message.into(),
            compacted_revision: 0,
            leader: String::new(),
        }
    }

    /// True for failures that a retry may cure: the server is down, restarting or electing.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.code,
            Code::Unavailable | Code::NotLeader | Code::DeadlineExceeded
        )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str_name(), self.message)
    }
}

impl std::error::Error for Error {}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Error {
        if let Ok(detail) = pb::ErrorDetail::decode(status.details())
            && let Ok(code) = Code::try_from(detail.code)
            && code != Code::Unspecified
        {
            return Error {
                code,
                field: detail.field,
                message: detail.message,
                compacted_revision: detail.compacted_revision,
                leader: detail.leader,
            };
        }
        // No plinth detail: the failure happened before our server saw the call (transport,
        // proxy, a server going down mid-call) or in this client (a reply over its message
        // limit is OUT_OF_RANGE from tonic: sending it again would fail the same way).
        let code = match status.code() {
            tonic::Code::InvalidArgument => Code::InvalidArgument,
            tonic::Code::NotFound => Code::NotFound,
            tonic::Code::DeadlineExceeded => Code::DeadlineExceeded,
            tonic::Code::ResourceExhausted | tonic::Code::OutOfRange => Code::ResourceExhausted,
            tonic::Code::Unauthenticated => Code::Unauthenticated,
            tonic::Code::PermissionDenied => Code::PermissionDenied,
            tonic::Code::Internal | tonic::Code::Unimplemented | tonic::Code::DataLoss => {
                Code::Internal
            }
            _ => Code::Unavailable,
        };
        Error::new(code, status.message().to_string())
    }
}

impl From<tonic::transport::Error> for Error {
    fn from(e: tonic::transport::Error) -> Error {
        Error::new(Code::Unavailable, format!("cannot reach the server: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_over_a_size_limit_or_undecodable_is_not_transient() {
        // What tonic answers by itself, with no plinth detail.
        let too_large = Error::from(tonic::Status::out_of_range(
            "Error, decoded message length too large: found 5 bytes, the limit is: 4 bytes",
        ));
        assert_eq!(too_large.code, Code::ResourceExhausted);
        assert!(!too_large.is_transient());
        let undecodable = Error::from(tonic::Status::internal(
            "failed to decode Protobuf message: x",
        ));
        assert_eq!(undecodable.code, Code::Internal);
        assert!(!undecodable.is_transient());
        assert!(Error::from(tonic::Status::unavailable("down")).is_transient());
    }
}
