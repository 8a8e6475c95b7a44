//! The seed inputs of the fuzz targets (`fuzz/`, run by `scripts/fuzz.sh`)
//! are valid inputs: every ONNX seed imports, every pair fuses, the
//! checkpoint builds; and a few inputs that must be refused cleanly (a
//! conv with zero output channels), so the fuzzers start next to them. With `FUSEC_FUZZ_SEEDS=DIR` the seeds are also written
//! to `DIR/TARGET/` (scripts/fuzz.sh does that before fuzzing).

mod common;

use std::path::{Path, PathBuf};

use common::checkpoints::{write_checkpoint_seeded, Spec};
use common::models::{many_ops_member, resize_member, text_encoder_member, zero_channel_model};
use common::{fusec, ok};
use fusec_exporters::onnx_builder::OnnxBuilder;

fn conv_relu(opset: i64) -> Vec<u8> {
    let w: Vec<f32> = (0..9).map(|i| i as f32 * 0.1 - 0.4).collect();
    OnnxBuilder::new(opset)
        .input("x", &[1, 3, 4, 4])
        .output("y", &[1, 3, 4, 4])
        .init_f32("w", &[3, 3, 1, 1], &w)
        .node("Conv", &["x", "w"], &["c"], vec![])
        .node("Relu", &["c"], &["y"], vec![])
        .build()
}

/// A pair as the fuse_pair target reads it: u32 length of `a`, `a`, `b`.
fn pair(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut v = (a.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(a);
    v.extend_from_slice(b);
    v
}

fn import(bytes: &[u8], what: &str) -> fuse_ir::Graph {
    fusec_frontends::onnx::import(bytes, Path::new(what)).unwrap_or_else(|e| panic!("seed {what}: {e}"))
}

#[test]
fn fuzz_seeds_are_valid_inputs() {
    let dir = tempfile::tempdir().unwrap();
    // Two tiny effdet-shaped members (different weights and class counts),
    // as state_dicts and as ONNX files.
    let ck = |name: &str, classes: usize, seed: u64| -> (PathBuf, Vec<u8>) {
        let st = dir.path().join(format!("{name}.safetensors"));
        write_checkpoint_seeded(&st, &Spec::small(8, 1, 1, classes).tensors(), None, seed);
        let onnx = dir.path().join(format!("{name}.onnx"));
        ok(fusec(&["convert", st.to_str().unwrap(), "--image-size", "128", "-o", onnx.to_str().unwrap()]));
        (st, std::fs::read(&onnx).unwrap())
    };
    let (st_a, effdet_a) = ck("effdet_a", 2, 1);
    let (_, effdet_b) = ck("effdet_b", 3, 2);

    let onnx_seeds: Vec<(&str, Vec<u8>)> = vec![
        ("conv_relu_opset13.onnx", conv_relu(13)),
        ("many_ops.onnx", many_ops_member(0.0)),
        ("resize.onnx", resize_member("nearest", 0.0)),
        ("effdet_small.onnx", effdet_a.clone()),
        ("text_encoder.onnx", text_encoder_member(0.0, 3)),
    ];
    let pairs: Vec<(&str, Vec<u8>, Vec<u8>)> = vec![
        ("many_ops.pair", many_ops_member(0.0), many_ops_member(1.0)),
        ("resize.pair", resize_member("nearest", 0.0), resize_member("nearest", 1.0)),
        ("effdet_small.pair", effdet_a, effdet_b),
        ("text_encoder.pair", text_encoder_member(0.0, 3), text_encoder_member(1.0, 5)),
    ];
    for (name, bytes) in &onnx_seeds {
        import(bytes, name);
    }
    for (name, a, b) in &pairs {
        let members = vec![
            fusec_passes::Member { name: "a".into(), graph: import(a, name) },
            fusec_passes::Member { name: "b".into(), graph: import(b, name) },
        ];
        fusec_passes::fuse(members, &fusec_passes::FuseOptions::default())
            .unwrap_or_else(|e| panic!("seed {name}: {e}"));
    }
    // Refused, never a panic: zero-sized activations (once a division by
    // zero in BatchNorm folding).
    let refused: Vec<(&str, Vec<u8>)> = vec![("zero_channels.onnx", zero_channel_model())];
    for (name, bytes) in &refused {
        let Err(e) = fusec_frontends::onnx::import(bytes, Path::new(name)) else { panic!("seed {name} imported") };
        assert_eq!(e.tensor.as_deref(), Some("c"), "{e}");
    }
    let checkpoint = fusec_frontends::safetensors::open(&st_a).unwrap();
    let opts = fusec_frontends::arch::ArchOptions { image_size: Some(128), ..Default::default() };
    fusec_frontends::arch::build(&checkpoint, &opts).unwrap_or_else(|e| panic!("seed checkpoint: {e}"));

    if let Some(out) = std::env::var_os("FUSEC_FUZZ_SEEDS") {
        let out = PathBuf::from(out);
        let put = |target: &str, name: &str, bytes: &[u8]| {
            std::fs::create_dir_all(out.join(target)).unwrap();
            std::fs::write(out.join(target).join(name), bytes).unwrap();
        };
        for (name, bytes) in &onnx_seeds {
            put("onnx_import", name, bytes);
        }
        for (name, a, b) in &pairs {
            put("fuse_pair", name, &pair(a, b));
        }
        for (name, bytes) in &refused {
            put("onnx_import", name, bytes);
            put("fuse_pair", name, &pair(bytes, bytes));
        }
        put("safetensors_checkpoint", "effdet_small.safetensors", &std::fs::read(&st_a).unwrap());
    }
}
