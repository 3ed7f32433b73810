//! gRPC message framing as the host reads a server's stream, on any bytes: no panic,
//! every message found lies inside the buffer and within the size limit, and splitting
//! always moves forward. The framing file is included as is (no host dependencies).
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../../crates/host/src/grpc_frame.rs"]
mod grpc_frame;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some(len)) = grpc_frame::message_len(rest) {
        assert!(len <= grpc_frame::MAX_MESSAGE);
        assert!(5 + len <= rest.len());
        rest = &rest[5 + len..];
    }
});
