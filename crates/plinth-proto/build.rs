//! Generates the gRPC types and services from `proto/plinth/v1`, with serde derives so that the
//! HTTP/JSON API mirrors the proto messages field for field (see `src/json.rs`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The vendored protoc ships inside a registry crate: nothing is downloaded at build time and
    // nothing needs installing on the machine.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "cluster",
        "common",
        "config",
        "kv",
        "lease",
        "lock",
        "maintenance",
        "queue",
        "registry",
        "schedule",
    ]
    .map(|name| root.join(format!("plinth/v1/{name}.proto")));
    let mut builder = tonic_prost_build::configure()
        .message_attribute(
            ".",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .enum_attribute(
            ".",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(rename_all = \"snake_case\")]",
        );
    for field in ["key", "value", "range_end", "body", "job", "result"] {
        builder = builder.field_attribute(field, "#[serde(with = \"crate::json::bytes\")]");
    }
    // A oneof's variant sits beside the message's other fields, as in etcd's JSON gateway:
    // `{"key": "k", "op": "EQUAL", "version": 3}` and `{"put": {"key": "k", "value": "v"}}`.
    for oneof in ["Compare.target", "RequestOp.request", "ResponseOp.response"] {
        builder = builder.field_attribute(oneof, "#[serde(flatten)]");
    }
    builder = builder
        .field_attribute(
            "SnapshotChunk.data",
            "#[serde(with = \"crate::json::bytes\")]",
        )
        .field_attribute(
            "LeaseTimeToLiveResponse.keys",
            "#[serde(with = \"crate::json::bytes_list\")]",
        )
        .field_attribute("Compare.op", "#[serde(with = \"crate::json::compare_op\")]")
        .field_attribute("Event.type", "#[serde(with = \"crate::json::event_type\")]")
        .field_attribute(
            "ErrorDetail.code",
            "#[serde(with = \"crate::json::error_code\")]",
        );
    // Config values are JSON documents: over HTTP they are JSON values, not strings of JSON.
    for field in [
        "ConfigPutRequest.set",
        "ConfigVersion.set",
        "ConfigGetResponse.values",
    ] {
        builder = builder.field_attribute(field, "#[serde(with = \"crate::json::json_text_map\")]");
    }
    for field in [
        "ConfigSetSchemaRequest.schema",
        "ConfigGetSchemaResponse.schema",
    ] {
        builder = builder.field_attribute(field, "#[serde(with = \"crate::json::json_text\")]");
    }
    // Maps in key order, so that answers render the same every time.
    for map in [
        ".plinth.v1.ConfigPutRequest.set",
        ".plinth.v1.ConfigVersion.set",
        ".plinth.v1.ConfigGetResponse.values",
        ".plinth.v1.RegistryInstance.metadata",
        ".plinth.v1.RegistryRegisterRequest.metadata",
    ] {
        builder = builder.btree_map(map);
    }
    builder.compile_protos(&files, &[root])?;
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    Ok(())
}
