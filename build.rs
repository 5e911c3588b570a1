//! Generates the IDSCP2 protobuf types from `proto/` with prost. The .proto files are parsed by
//! protox (pure Rust), so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/idscp2.proto", "proto/idscp2_app.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    prost_build::Config::new()
        // Payloads and tokens are handed around without copying.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
