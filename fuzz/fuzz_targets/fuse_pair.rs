//! Two tiny ONNX models (a little-endian u32 length, the first model, the
//! second) fused and exported, in each fixed lowering and in a measured
//! plan's form (runs of node groups grouped or per member, with member
//! subgraphs and per-layer splits), then in fp16 as `--precision` writes it.
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
    // A plan the tuner could have measured, drawn from the input: which of
    // up to 64 runs are grouped.
    let stacked = {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let mut h = DefaultHasher::new();
        data.hash(&mut h);
        h.finish()
    };
    let chunks = (data.len() % 64) as u8 + 1;
    let configs = [
        FuseOptions { lowering: Lowering::Grouped, ..Default::default() },
        FuseOptions { keep_bn: true, lowering: Lowering::Separate, split_linear: true, ..Default::default() },
        FuseOptions { lowering: Lowering::Regions { from: 0.5 }, ..Default::default() },
        FuseOptions {
            lowering: Lowering::Plan { stacked, chunks },
            member_subgraphs: true,
            split_depthwise: stacked & 1 == 1,
            split_pointwise: stacked & 2 == 2,
            ..Default::default()
        },
        FuseOptions { lowering: Lowering::Separate, member_subgraphs: true, channel_block: None, ..Default::default() },
    ];
    for opts in configs {
        let members =
            vec![Member { name: "a".into(), graph: a.clone() }, Member { name: "b".into(), graph: b.clone() }];
        let Ok(fused) = fusec_passes::fuse(members, &opts) else { continue };
        fused.graph.validate().expect("fuse returns a valid graph");
        let _ = fusec_exporters::onnx::export(&fused.graph);
        let mut blobs = fusec_exporters::coreml::blob::BlobWriter::new(std::io::Cursor::new(Vec::new())).unwrap();
        let _ = fusec_exporters::coreml::mil::lower(&fused.graph, fusec_exporters::coreml::Precision::F32, &mut blobs);
        for half in [fusec_passes::fp16_weights, fusec_passes::fp16_compute] {
            let mut g = fused.graph.clone();
            if half(&mut g).is_ok() {
                g.validate().expect("the fp16 passes return a valid graph");
                let _ = fusec_exporters::onnx::export(&g);
            }
        }
    }
});
