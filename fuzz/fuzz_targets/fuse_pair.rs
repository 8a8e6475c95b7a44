//! Two tiny ONNX models (a little-endian u32 length, the first model, the
//! second) fused and exported, in each lowering.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 5 {
        return;
    }
    let n = u32::from_le_bytes(data[..4].try_into().unwrap()) as usize;
    let rest = &data[4..];
    if n > rest.len() {
        return;
    }
    let path = std::path::Path::new("fuzz.onnx");
    let (Ok(a), Ok(b)) =
        (fusec_frontends::onnx::import(&rest[..n], path), fusec_frontends::onnx::import(&rest[n..], path))
    else {
        return;
    };
    use fusec_passes::{FuseOptions, Lowering, Member};
    for (lowering, keep_bn) in
        [(Lowering::Grouped, false), (Lowering::Separate, true), (Lowering::Regions { from: 0.5 }, false)]
    {
        let members =
            vec![Member { name: "a".into(), graph: a.clone() }, Member { name: "b".into(), graph: b.clone() }];
        let opts = FuseOptions { keep_bn, lowering, split_linear: keep_bn, ..Default::default() };
        let Ok(fused) = fusec_passes::fuse(members, &opts) else { return };
        fused.graph.validate().expect("fuse returns a valid graph");
        let _ = fusec_exporters::onnx::export(&fused.graph);
        let mut blobs = fusec_exporters::coreml::blob::BlobWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
        let _ = fusec_exporters::coreml::mil::lower(&fused.graph, fusec_exporters::coreml::Precision::F32, &mut blobs);
    }
});
