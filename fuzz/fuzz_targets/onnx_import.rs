//! Any bytes as an ONNX file: import, canonicalize, export ONNX and Core ML.
//! Errors are fine; a panic, an abort or a runaway allocation is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut g) = fusec_frontends::onnx::import(data, std::path::Path::new("fuzz.onnx")) else { return };
    let _ = fuse_ir::text::to_text(&g);
    if fusec_passes::canonicalize(&mut g).is_err() {
        return;
    }
    let _ = fusec_exporters::onnx::export(&g);
    let mut blobs = fusec_exporters::coreml::blob::BlobWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
    let _ = fusec_exporters::coreml::mil::lower(&g, fusec_exporters::coreml::Precision::F16, &mut blobs);
});
