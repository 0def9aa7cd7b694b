//! Compiles `orders/v1/orders.proto` and `orders/v1/webhooks.proto` with protox (pure Rust, so no `protoc` is needed anywhere),
//! generates the tonic client and server with tonic-prost-build, and the proto3 JSON mapping
//! (serde impls) with pbjson-build. The `OrderService` server is generated a second time into
//! `$OUT_DIR/encoded/` with every message taken from `crate::v1` but `OrderEvent`, which is
//! `crate::encoded::EncodedOrderEvent` there (bytes encoded once, shared by every watch stream).

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

    // prost-build resolves the exact path first, then the longest package prefix, so
    // `.orders.v1.OrderEvent` takes the first mapping and every other message the second (and,
    // being external, none of them is generated again: the file holds only the server).
    let encoded_dir = out_dir.join("encoded");
    std::fs::create_dir_all(&encoded_dir)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .out_dir(&encoded_dir)
        .codec_path("crate::encoded::ServerCodec")
        .extern_path(".orders.v1.OrderEvent", "crate::encoded::EncodedOrderEvent")
        .extern_path(".orders.v1", "crate::v1")
        .extern_path(".google.protobuf.Timestamp", "crate::wkt::Timestamp")
        .compile_fds(protox::compile(["orders/v1/orders.proto"], ["."])?)?;

    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .build(&[".orders.v1"])?;
    Ok(())
}
