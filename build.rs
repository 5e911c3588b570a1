//! Generates the IDS application layer's protobuf types (`proto/idscp2_app.proto`, carried in
//! IDSCP2 data) with prost; the transport's own messages are built by the `idscp2` crate. The
//! .proto files are parsed by protox (pure Rust), so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/idscp2_app.proto"];
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
