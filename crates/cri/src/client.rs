//! A gRPC channel to a CRI socket — berth's or any runtime's — for Rust clients
//! (berth's tests and benchmarks drive both berth and containerd with it).

pub use berth_grpc_unix::connect;
