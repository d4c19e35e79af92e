//! Generates the peer service (`proto/peer.proto`) the replicas use between themselves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The vendored protoc ships inside a registry crate: nothing is downloaded at build time.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
    let file = root.join("peer.proto");
    tonic_prost_build::configure().compile_protos(&[&file], &[&root])?;
    println!("cargo:rerun-if-changed={}", file.display());
    Ok(())
}
