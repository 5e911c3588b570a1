//! Generates the IDSCP2 protobuf types from `proto/idscp2.proto` with prost. The .proto file is
//! parsed by protox (pure Rust), so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/idscp2.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    prost_build::Config::new()
        // Payloads and tokens are handed around without copying.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
