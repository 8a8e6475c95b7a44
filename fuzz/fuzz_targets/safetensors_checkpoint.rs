//! Any bytes as a safetensors checkpoint: open (header, offsets, dtypes),
//! read every tensor, and build the architecture it is recognized as.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(data).unwrap();
    let Ok(ck) = fusec_frontends::safetensors::open(f.path()) else { return };
    for t in &ck.tensors {
        let _ = ck.tensor(&t.name);
    }
    let opts = fusec_frontends::arch::ArchOptions { image_size: Some(128), ..Default::default() };
    let _ = fusec_frontends::arch::build(&ck, &opts);
});
