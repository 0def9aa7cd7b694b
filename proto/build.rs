//! Compiles `orders/v1/orders.proto` and `orders/v1/webhooks.proto` with protox (pure Rust, so no `protoc` is needed anywhere),
//! generates the tonic client and server with tonic-prost-build, and the proto3 JSON mapping
//! (serde impls) with pbjson-build.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["orders/v1/orders.proto", "orders/v1/webhooks.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }

    let file_descriptors = protox::compile(protos, ["."])?;
    let encoded = prost::Message::encode_to_vec(&file_descriptors);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("orders_descriptor.bin"), &encoded)?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Our Timestamp carries the proto3 JSON mapping (RFC 3339 with Z).
        .extern_path(".google.protobuf.Timestamp", "crate::wkt::Timestamp")
        // pbjson-types' Duration carries the proto3 JSON mapping ("1.5s"); Empty stays `()`.
        .extern_path(".google.protobuf.Duration", "::pbjson_types::Duration")
        .compile_fds(file_descriptors)?;

    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .build(&[".orders.v1"])?;
    Ok(())
}
