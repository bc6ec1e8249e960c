//! Test machinery shared by the crate's tests, examples and benches, and
//! available to hosts with the `testing` feature: fault-injecting stores and
//! replicas, and crash simulation for pages, journals and the checksum
//! table's files.
//!
//! Faults are deterministic: what fires is what was armed, so a failing test
//! reproduces exactly.

mod crash;
mod faults;
mod files;

pub use crash::{
    check_stamp_workload, run_stamp_workload, stamp_pages, CrashDir, CrashStore, CrashSwitch,
    StampCheck, STAMP_PAGES, STAMP_PAGE_SIZE,
};
pub use faults::{
    Damage, FaultCounts, FaultyReplica, FaultySource, FaultyStore, ReadFault, ReplicaCall,
    WriteFault,
};
pub use files::CrashFiles;
mod decode;
pub mod decoders;
pub mod fixup;
pub mod fuzz;
mod sealed;
mod snapshot;

pub use decode::{decode_manifest, decode_snapshot, SnapshotSummary};

/// The durable checksum table's log format (documented in the `checksum`
/// module's docs), for fuzz targets and corpus tests: its decoder is the
/// one the table recovers with.
pub mod checksum_log {
    pub use crate::checksum::log::{
        decode_log, encode_record, Frame, LogEnd, LogRecord, LOG_HEADER_LEN,
    };
}

pub use sealed::seal_numbered_pages;
pub use snapshot::{
    both_placements, damaged_copies, every_placement, fill_store, semi_compressible_page,
    sidecar_placements, take_paused, SealedStore,
};
mod health;

pub use health::{health_model, GaussianNoise, HealthModel, ScriptedProbe};

/// The crash detector's state machines, driven without the watchdog thread:
/// heartbeats judged by timeout and phi accrual, and process liveness.
pub use crate::crash::{heartbeat::HeartbeatMonitor, process::ProcessMonitor};

/// The rollback journal's file formats (documented in the `rollback`
/// module's journal docs), for fuzz targets and corpus tests: the decoders
/// are the ones recovery reads with, and the encoders the ones the manager
/// writes with.
pub mod journal {
    pub use crate::rollback::journal::{
        decode_segment, segment_file_name, DirStorage, HeaderDamage, JournalState, Record,
        ScannedRecord, SegmentEnd, SegmentHeader, SegmentScan, LOCK_FILE, LSN_SEARCH_WINDOW,
        MAX_HEADER_COUNTER, MAX_PAYLOAD_LEN, MAX_SEARCH_HASH_BYTES, RECORD_HEADER_LEN,
        SEGMENT_HEADER_LEN, SEGMENT_MAGIC, SEGMENT_VERSION, STATE_FILE_NAME, STATE_MAGIC,
        STATE_VERSION, TXN_ID_RESERVATION,
    };
}
pub mod sqlite;

/// CRC-32 (IEEE), computed bit by bit: an oracle for tests that must not
/// trust the crate's own CRC code (crc32fast) to check the files it writes.
#[must_use]
pub fn reference_crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &x in bytes {
        crc ^= u32::from(x);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
