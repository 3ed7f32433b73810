/work/main/plugins/target/debug/deps/snapport_plugin_qcow2-1479c6471c6a43c3.d: qcow2/src/lib.rs qcow2/src/chain.rs qcow2/src/format.rs

/work/main/plugins/target/debug/deps/snapport_plugin_qcow2-1479c6471c6a43c3: qcow2/src/lib.rs qcow2/src/chain.rs qcow2/src/format.rs

qcow2/src/lib.rs:
qcow2/src/chain.rs:
qcow2/src/format.rs:
