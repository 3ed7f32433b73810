//! The granted gRPC endpoint against a gRPC server on a unix socket and on loopback TCP:
//! an HTTP/2 server (h2) framing messages as gRPC does, answering unary and streaming CSI
//! methods, a status without messages, a stream cut mid-way and a message cut short.
//! Methods outside CSI's services are refused before anything is sent (the server counts
//! the requests it gets).

use bytes::Bytes;
use snapport_host::grpc::{parse_endpoint, CallError, Endpoint, GrpcClient};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn frame(msg: &[u8]) -> Bytes {
    let mut f = vec![0u8];
    f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    f.extend_from_slice(msg);
    f.into()
}

fn ok_trailers() -> http::HeaderMap {
    let mut t = http::HeaderMap::new();
    t.insert("grpc-status", "0".parse().unwrap());
    t
}

async fn answer(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) -> Result<(), h2::Error> {
    let path = req.uri().path().to_string();
    let mut body = req.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got[0], 0, "uncompressed");
    let msg = got[5..].to_vec();
    let head = |status: Option<(&str, &str)>| {
        let mut r = http::Response::builder()
            .status(200)
            .header("content-type", "application/grpc");
        if let Some((code, text)) = status {
            r = r.header("grpc-status", code).header("grpc-message", text);
        }
        r.body(()).unwrap()
    };
    match path.as_str() {
        "/csi.v1.Identity/GetPluginInfo" => {
            let mut send = respond.send_response(head(None), false)?;
            let mut reply = msg.clone();
            reply.reverse();
            send.send_data(frame(&reply), false)?;
            send.send_trailers(ok_trailers())?;
        }
        "/csi.v1.SnapshotMetadata/GetMetadataAllocated" => {
            let mut send = respond.send_response(head(None), false)?;
            for i in 0..msg[0] {
                send.send_data(frame(&[i; 3]), false)?;
            }
            send.send_trailers(ok_trailers())?;
        }
        "/csi.v1.Controller/CreateSnapshot" => {
            respond.send_response(head(Some(("12", "not here"))), true)?;
        }
        "/csi.v1.SnapshotMetadata/GetMetadataDelta" => {
            let mut send = respond.send_response(head(None), false)?;
            send.send_data(frame(b"one"), false)?;
            send.send_data(frame(b"two"), false)?;
            send.send_reset(h2::Reason::INTERNAL_ERROR);
        }
        "/csi.v1.Node/NodeGetInfo" => {
            let mut send = respond.send_response(head(None), false)?;
            let f = frame(b"cut short");
            send.send_data(f.slice(..7), true)?;
        }
        other => panic!("unexpected method {other}"),
    }
    Ok(())
}

async fn connection<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    io: T,
    requests: Arc<AtomicUsize>,
) {
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return;
    };
    while let Some(Ok((req, respond))) = conn.accept().await {
        requests.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            let _ = answer(req, respond).await;
        });
    }
}

/// Serves on a unix socket and on loopback TCP; returns both endpoints.
fn serve(dir: &std::path::Path, requests: Arc<AtomicUsize>) -> (Endpoint, Endpoint) {
    let sock = dir.join("csi.sock");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (unix, tcp) = rt.block_on(async {
        (
            tokio::net::UnixListener::bind(&sock).unwrap(),
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        )
    });
    let addr = tcp.local_addr().unwrap();
    std::thread::spawn(move || {
        rt.block_on(async move {
            let r2 = requests.clone();
            tokio::spawn(async move {
                while let Ok((io, _)) = tcp.accept().await {
                    tokio::spawn(connection(io, r2.clone()));
                }
            });
            while let Ok((io, _)) = unix.accept().await {
                tokio::spawn(connection(io, requests.clone()));
            }
        })
    });
    (
        parse_endpoint(&format!("unix://{}", sock.display())).unwrap(),
        parse_endpoint(&format!("tcp://{addr}")).unwrap(),
    )
}

fn failed(e: CallError) -> String {
    match e {
        CallError::Failed(s) => s,
        CallError::Denied(s) => panic!("denied, not failed: {s}"),
    }
}

#[test]
fn calls_on_the_granted_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let (unix, tcp) = serve(dir.path(), requests.clone());
    for endpoint in [unix, tcp] {
        let mut c = GrpcClient::new(endpoint.clone()).unwrap();
        // Unary.
        assert_eq!(
            c.unary("/csi.v1.Identity/GetPluginInfo", b"abc").unwrap(),
            b"cba"
        );
        // Server streaming, to its end.
        let id = c
            .start_stream("/csi.v1.SnapshotMetadata/GetMetadataAllocated", &[4])
            .unwrap();
        let mut got = Vec::new();
        while let Some(m) = c.next_message(id).unwrap() {
            got.push(m);
        }
        assert_eq!(got, (0..4u8).map(|i| vec![i; 3]).collect::<Vec<_>>());
        assert!(c.next_message(id).is_err(), "an ended stream is gone");
        // A status without messages.
        let e = failed(
            c.unary("/csi.v1.Controller/CreateSnapshot", b"x")
                .unwrap_err(),
        );
        assert!(e.contains("UNIMPLEMENTED (12) not here"), "{e}");
        // A stream cut mid-way: an error (at once, or after what arrived before the
        // cut), never a silent end.
        let mut seen = Vec::new();
        let err = match c.start_stream("/csi.v1.SnapshotMetadata/GetMetadataDelta", b"") {
            Err(e) => failed(e),
            Ok(id) => loop {
                match c.next_message(id) {
                    Ok(Some(m)) => seen.push(m),
                    Ok(None) => panic!("a cut stream ended as if complete"),
                    Err(e) => break failed(e),
                }
            },
        };
        assert!(seen.len() <= 2, "{seen:?}");
        assert!(
            err.contains("broke") || err.contains("stream error"),
            "{err}"
        );
        // A message cut short.
        let e = failed(c.unary("/csi.v1.Node/NodeGetInfo", b"").unwrap_err());
        assert!(e.contains("inside a message"), "{e}");
        // Closing an open stream early.
        let id = c
            .start_stream("/csi.v1.SnapshotMetadata/GetMetadataAllocated", &[9])
            .unwrap();
        c.close_stream(id);
        assert!(c.next_message(id).is_err());

        // Anything but CSI's services is refused before a byte is sent.
        let before = requests.load(Ordering::SeqCst);
        for method in [
            "/grpc.health.v1.Health/Check",
            "/csi.v1.Identity/../Controller/DeleteVolume",
            "/csi.v1.Identity/",
            "csi.v1.Identity/Probe",
            "/csi.v1.Identity/Probe?x=1",
        ] {
            assert!(
                matches!(c.unary(method, b""), Err(CallError::Denied(_))),
                "{method}"
            );
            assert!(matches!(
                c.start_stream(method, b""),
                Err(CallError::Denied(_))
            ));
        }
        assert_eq!(requests.load(Ordering::SeqCst), before);
    }
    // Endpoints are addresses the pool names, in two forms only.
    for bad in [
        "unix://relative.sock",
        "tcp://localhost:50051",
        "http://127.0.0.1:1",
        "/tmp/x.sock",
    ] {
        assert!(parse_endpoint(bad).is_err(), "{bad}");
    }
    // Nobody listening: an error naming the endpoint.
    let mut c = GrpcClient::new(
        parse_endpoint(&format!("unix://{}/none.sock", dir.path().display())).unwrap(),
    )
    .unwrap();
    let e = failed(c.unary("/csi.v1.Identity/Probe", b"").unwrap_err());
    assert!(e.contains("none.sock"), "{e}");
}

/// Through a plugin: its calls reach the pool's endpoint and no other service, and a
/// pool without an endpoint refuses them.
#[test]
fn a_plugin_reaches_the_granted_endpoint_only() {
    use snapport_host::{BackendErrorKind, ErrorKind, Grants, Host, Limits};
    let wasm = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/plugins/test-hostile.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: build the plugins first (cargo xtask plugins)",
        wasm.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let (unix, _) = serve(dir.path(), requests.clone());
    let Endpoint::Unix(sock) = unix else {
        unreachable!()
    };
    let host = Host::new(None).unwrap();
    let plugin = host.load(&wasm).unwrap();
    let grants = |behaviour: &str, endpoint: Option<String>| Grants {
        settings: [("behaviour".to_string(), behaviour.to_string())].into(),
        grpc_endpoint: endpoint,
        ..Grants::default()
    };
    let granted = Some(format!("unix://{}", sock.display()));
    // The volumes the plugin lists with `behaviour` on a pool granting `endpoint`.
    let listing = |behaviour: &str, endpoint: Option<String>| {
        host.instantiate(
            plugin.clone(),
            "csi",
            grants(behaviour, endpoint),
            Limits::default(),
            None,
        )
        .list_volumes()
    };
    let denied = |e: snapport_host::Error, why: &str| {
        assert_eq!(
            e.kind,
            ErrorKind::Backend(BackendErrorKind::PermissionDenied),
            "{e}"
        );
        assert!(e.to_string().contains(why), "{e}");
    };
    let names: Vec<String> = listing("grpc-csi", granted.clone())
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(
        names,
        ["vol"],
        "the reply of GetPluginInfo, reversed by the server"
    );

    let before = requests.load(Ordering::SeqCst);
    denied(
        listing("grpc-other", granted).unwrap_err(),
        "only CSI methods",
    );
    assert_eq!(requests.load(Ordering::SeqCst), before, "nothing was sent");
    denied(
        listing("grpc-csi", None).unwrap_err(),
        "grants no gRPC endpoint",
    );
}
