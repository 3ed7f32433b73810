//! The part of the Container Storage Interface (CSI spec v1.12, package `csi.v1`) that
//! snapport speaks, as protobuf messages, and the checks every block-metadata answer
//! passes before a byte of it is followed.
//!
//! Why hand-declared: only ~30 of csi.proto's messages are needed, prost's derive makes
//! them wire-compatible with the field numbers below (each as in csi.proto), and it spares
//! both the host and the wasm guest a protoc or build-script step. Unknown fields a driver
//! sends are skipped by prost, as protobuf requires; fields left out here are never sent.
//! The test suite's CSI server uses the same declarations, so it cannot catch a field
//! number wrong here: each one was set from csi.proto's text, one by one.
#![no_std]

extern crate alloc;

pub mod metadata;
pub mod msg;

/// Full gRPC method paths, as the host's granted endpoint expects them.
pub mod method {
    pub const GET_PLUGIN_INFO: &str = "/csi.v1.Identity/GetPluginInfo";
    pub const GET_PLUGIN_CAPABILITIES: &str = "/csi.v1.Identity/GetPluginCapabilities";
    pub const CREATE_VOLUME: &str = "/csi.v1.Controller/CreateVolume";
    pub const DELETE_VOLUME: &str = "/csi.v1.Controller/DeleteVolume";
    pub const LIST_VOLUMES: &str = "/csi.v1.Controller/ListVolumes";
    pub const CREATE_SNAPSHOT: &str = "/csi.v1.Controller/CreateSnapshot";
    pub const DELETE_SNAPSHOT: &str = "/csi.v1.Controller/DeleteSnapshot";
    pub const LIST_SNAPSHOTS: &str = "/csi.v1.Controller/ListSnapshots";
    pub const CONTROLLER_GET_CAPABILITIES: &str = "/csi.v1.Controller/ControllerGetCapabilities";
    pub const CONTROLLER_PUBLISH_VOLUME: &str = "/csi.v1.Controller/ControllerPublishVolume";
    pub const CONTROLLER_UNPUBLISH_VOLUME: &str = "/csi.v1.Controller/ControllerUnpublishVolume";
    pub const NODE_GET_CAPABILITIES: &str = "/csi.v1.Node/NodeGetCapabilities";
    pub const NODE_GET_INFO: &str = "/csi.v1.Node/NodeGetInfo";
    pub const NODE_STAGE_VOLUME: &str = "/csi.v1.Node/NodeStageVolume";
    pub const NODE_UNSTAGE_VOLUME: &str = "/csi.v1.Node/NodeUnstageVolume";
    pub const NODE_PUBLISH_VOLUME: &str = "/csi.v1.Node/NodePublishVolume";
    pub const NODE_UNPUBLISH_VOLUME: &str = "/csi.v1.Node/NodeUnpublishVolume";
    pub const GET_METADATA_ALLOCATED: &str = "/csi.v1.SnapshotMetadata/GetMetadataAllocated";
    pub const GET_METADATA_DELTA: &str = "/csi.v1.SnapshotMetadata/GetMetadataDelta";
}
