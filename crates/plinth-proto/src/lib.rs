//! plinth's wire contract: the types and gRPC services generated from `proto/plinth/v1`, and the
//! JSON mapping that the HTTP API and the CLI's `--json` share.

pub mod io;
pub mod json;

/// Version 1 of the API, package `plinth.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("plinth.v1");
}

/// Every limit and default of the primitives: plinth-core's own `limits.rs`, compiled in here
/// too so that the SDK and the CLI read the numbers the state machine enforces without
/// depending on it (one source; see that file).
#[path = "../../plinth-core/src/limits.rs"]
pub mod limits;
