//! The container reader on any bytes, and the typed loads over it: they must answer with
//! values or errors, never panic, hang, or read outside the file. Half of the inputs have their checksums repaired first,
//! so that mutations reach the checks behind them (lengths, offsets, decompression).
#![no_main]

use joblet::persist::{self, Container, __fuzz::repair_checksums};
use joblet::Buffer;
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("joblet-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir.join("input.joblet")
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        repair_checksums(&mut bytes);
    }
    let path = scratch();
    std::fs::write(&path, &bytes).expect("write the input");
    // The typed loads, whose Buffers read or map sections (a review found an abort there
    // that this target did not reach).
    let _ = persist::load::<(Buffer<u8>, Vec<Buffer<f64>>, String)>(&path);
    let _ = persist::load_mapped::<(Buffer<u8>, Vec<Buffer<f64>>, String)>(&path);
    let _ = persist::load::<Buffer<u32>>(&path);
    let Ok(container) = Container::open(&path) else {
        return;
    };
    let _ = container.objects();
    for k in 0..container.buffer_count().min(64) {
        let _ = container.buffer_location(k);
        let _ = container.verify_buffer(k);
        // Only buffers of a sane size: a table of contents may claim any length.
        if let Ok(len) = container.buffer_len(k) {
            if len <= 16 << 20 {
                let mut out = vec![0u8; len as usize];
                let _ = container.read_buffer_into(k, &mut out);
                let _ = container.buffer(k);
            }
        }
    }
});
