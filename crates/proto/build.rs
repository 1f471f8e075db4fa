//! Generates the gRPC code from `proto/` with protox, a pure-Rust protobuf
//! compiler, so that building needs no `protoc` on the machine.

use std::{env, fs, path::PathBuf};

use prost::Message;

/// The workspace's `proto/` directory, the include root of every file.
const PROTO_ROOT: &str = "../../proto";
/// The files to compile, relative to [`PROTO_ROOT`].
const PROTOS: &[&str] = &["kvstore/v1/kv.proto", "kvstore/peer/v1/peer.proto"];
/// The files the client port's reflection service describes (not the peer
/// API, which it does not serve).
const CLIENT_PROTO: &str = "kvstore/v1/kv.proto";
/// etcd's v3 API (vendored under `proto/etcd/`, see its README), compiled
/// only with the `etcd` feature: `kvctl bench --backend etcd` needs its
/// clients, the server nothing of it.
const ETCD_PROTOS: &[&str] = &[
    "etcd/etcdserverpb/rpc.proto",
    "etcd/mvccpb/kv.proto",
    "etcd/authpb/auth.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={PROTO_ROOT}/{proto}");
    }
    let descriptors = protox::compile(PROTOS, [PROTO_ROOT])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // Served by the reflection service so grpcurl needs no proto files.
    let client_only = prost_types::FileDescriptorSet {
        file: descriptors
            .file
            .iter()
            .filter(|f| f.name() == CLIENT_PROTO)
            .cloned()
            .collect(),
    };
    fs::write(
        out_dir.join("kvstore_descriptor.bin"),
        client_only.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .bytes(".")
        .compile_fds(descriptors)?;
    if env::var_os("CARGO_FEATURE_ETCD").is_some() {
        compile_etcd()?;
    }
    Ok(())
}

/// Generates etcd's clients (no servers: nothing here serves etcd's API),
/// in files of their own packages (`etcdserverpb`, `mvccpb`, `authpb`), so
/// the kvstore descriptor above stays exactly what it was.
fn compile_etcd() -> Result<(), Box<dyn std::error::Error>> {
    for proto in ETCD_PROTOS {
        println!("cargo:rerun-if-changed={PROTO_ROOT}/{proto}");
    }
    let descriptors = protox::compile(ETCD_PROTOS, [PROTO_ROOT])?;
    tonic_prost_build::configure()
        .build_server(false)
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
