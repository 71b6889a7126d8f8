//! Compiles proto/ into Rust: the public and internal gRPC APIs (ratchet.v1) and the
//! stored and replicated schema (ratchet.state.v1), with a descriptor set for gRPC
//! reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "ratchet/v1/decision.proto",
        "ratchet/v1/admin.proto",
        "ratchet/v1/cluster.proto",
        "ratchet/v1/raft.proto",
        "ratchet/state/v1/state.proto",
    ]
    .map(|p| format!("../../proto/{p}"));
    let descriptor = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("ratchet_v1_descriptor.bin");
    tonic_prost_build::configure()
        // Maps as BTreeMaps: the same state must always encode to the same bytes (snapshot
        // digests, golden files), and a HashMap encodes in a random order.
        .btree_map(".")
        .file_descriptor_set_path(descriptor)
        .compile_protos(&protos, &["../../proto".to_owned()])?;
    println!("cargo:rerun-if-changed=../../proto");
    Ok(())
}
