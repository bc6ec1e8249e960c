//! The sidecar checksum table's decoders — the base file, the log, and
//! opening a durable table from both — never panic on untrusted bytes, and
//! what they accept is self-consistent: a decoded base re-encodes to a file
//! that decodes to the same table, a decoded log's records re-encode to the
//! bytes they came from, and an opened table can be compacted and reopened
//! with the same checksums and unallocated marks.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use selfheal::testing::checksum_log::{decode_log, encode_record, Frame};
use selfheal::checksum::TableConfig;
use selfheal::testing::CrashFiles;
use selfheal::{ChecksumTable, PageId};

const PS: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, data)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => {
            if let Ok(t) = ChecksumTable::decode(Path::new("fuzz"), data, PS) {
                let again = ChecksumTable::decode(Path::new("fuzz"), &t.encode(), PS)
                    .expect("a re-encoded table decodes");
                assert_eq!(again.encode(), t.encode());
            }
        }
        1 => {
            if let Ok(log) = decode_log(Path::new("fuzz"), data, PS) {
                let mut out = log.header.encode().to_vec();
                for (i, (seq, _)) in log.records.iter().enumerate() {
                    assert_eq!(*seq, log.header.first_seq + i as u64);
                }
                if log.header.version <= 2 {
                    for (seq, record) in &log.records {
                        encode_record(&mut out, *seq, *record);
                    }
                } else {
                    // Re-encode each frame (the records sharing an offset);
                    // a frame with no record is skipped over in the input.
                    let mut i = 0;
                    while i < log.records.len() {
                        let at = log.offsets[i] as usize;
                        let mut f = Frame::new(log.records[i].0);
                        while i < log.records.len() && log.offsets[i] as usize == at {
                            f.push(log.records[i].1);
                            i += 1;
                        }
                        let bytes = f.finish();
                        assert_eq!(&data[at..at + bytes.len()], &bytes[..]);
                    }
                    out.clear();
                }
                assert_eq!(&data[..out.len()], &out[..]);
            }
        }
        _ => {
            // A base file and one log, split where the input says.
            if data.len() < 2 {
                return;
            }
            let cut = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 2);
            let (base, log) = data[2..].split_at(cut);
            let generation = log
                .get(16..24)
                .map_or(0, |g| u64::from_le_bytes(g.try_into().expect("8 bytes")));
            let files = Arc::new(CrashFiles::new());
            files.set_file("t", base.to_vec());
            files.set_file(&format!("t.log-{generation:016x}"), log.to_vec());
            let open = || TableConfig::new(PS).pages_max(1 << 16).open_on(files.clone(), "t");
            let state = |t: &ChecksumTable| -> Vec<(Option<u32>, bool)> {
                (0..64)
                    .map(|p| (t.get(PageId(p)), t.is_free(PageId(p))))
                    .collect()
            };
            if let Ok(t) = open() {
                let before = state(&t);
                t.compact().expect("an opened table compacts");
                drop(t);
                let again = open().expect("a compacted table reopens");
                assert_eq!(state(&again), before, "a compaction changed the table");
            }
        }
    }
});
