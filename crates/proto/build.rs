//! Compiles proto/ratchet/v1 into Rust, with a descriptor set for gRPC reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["decision.proto", "admin.proto", "cluster.proto"].map(|p| format!("../../proto/ratchet/v1/{p}"));
    let descriptor = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("ratchet_v1_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(descriptor)
        .compile_protos(&protos, &["../../proto".to_owned()])?;
    println!("cargo:rerun-if-changed=../../proto");
    Ok(())
}
