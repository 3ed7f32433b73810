//! snapport's CSI backend: the volumes and snapshots of whatever CSI driver a Kubernetes
//! node runs, reached only through the one gRPC endpoint the pool grants.
//!
//! Names: a volume is `vd/VOLUME_ID`, a snapshot `vds/VOLUME_ID@SNAPSHOT_ID`, the IDs as
//! the driver's ListVolumes and ListSnapshots report them (CSI gives volumes no other name).
//! Data never crosses the gRPC endpoint: the plugin stages and publishes a block-mode
//! volume at a path inside the folder the pool grants (`settings.publish_folder`), the
//! host opens the device published there (refusing anything that resolves outside the
//! granted folders), and the plugin maps it:
//! - a volume: one data extent (SnapshotMetadata describes snapshots only);
//! - a snapshot: a temporary volume created from it (CreateVolume with the snapshot as
//!   content source, named `snapport-read-SNAPSHOT_ID` so a restarted export finds and
//!   removes the one a killed export left), its allocated ranges from
//!   GetMetadataAllocated, holes as zeros;
//! - changes between two snapshots: GetMetadataDelta.
//!
//! Block metadata streams are checked range by range (`snapport_csi::metadata`), paged
//! with `max_results` and resumed from the last range's end when a stream breaks.
//! Whatever the plugin staged, published or created is unpublished, unstaged and deleted
//! when the volume is dropped, on failure paths too; before publishing, it clears what an
//! earlier, killed process may have left at the same paths (CSI's node calls are
//! idempotent).
#![no_std]

extern crate alloc;

#[cfg(target_arch = "wasm32")]
mod guest;
