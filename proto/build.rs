//! Compiles `health/v1/*.proto` with protox (pure Rust, so no system `protoc` is needed) and
//! feeds the descriptor set to tonic-prost-build. The encoded descriptor set is also written to
//! OUT_DIR for gRPC server reflection.
use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "health/v1/types.proto",
        "health/v1/agent.proto",
        "health/v1/collector.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out.join("health_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
