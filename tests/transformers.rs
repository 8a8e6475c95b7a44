//! Transformer members from both of torch's ONNX exporters (the dynamo one
//! at opset 20, TorchScript at opset 17): small BERT cross-encoders with
//! int64 token inputs and an attention mask, and ViTs, each trio with
//! heads of different sizes (`../shared/reference/transformers`). Every
//! member imports and reproduces PyTorch's outputs on both runtimes; every
//! trio fuses, in every lowering, into a model whose outputs are each
//! member's.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use fusec_verify::io::read_tensors;

const SETS: [(&str, [&str; 3]); 4] = [
    ("bert_tiny_default", ["t1", "t2", "t3"]),
    ("bert_tiny_ts", ["t1", "t2", "t3"]),
    ("vit_micro_default", ["v2", "v5", "v9"]),
    ("vit_micro_ts", ["v2", "v5", "v9"]),
];

fn set(name: &str) -> PathBuf {
    transformers_dir().join(name)
}

fn run(model: &Path, input: &Path, runtime: &str, out: &Path) {
    ok(fusec(&["run", s(model), "--input", s(input), "--runtime", runtime, "-o", s(out)]));
}

#[test]
fn every_member_imports_and_reproduces_pytorch_on_both_runtimes() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    for (name, members) in SETS {
        let d = set(name);
        for m in members {
            for rt in ["ort", "tract"] {
                let out = dir.path().join(format!("{name}-{m}-{rt}.safetensors"));
                run(&d.join(format!("{m}.onnx")), &d.join("input.safetensors"), rt, &out);
                let got = read_tensors(&out).unwrap();
                let want = read_tensors(&d.join(format!("{m}.outputs.safetensors"))).unwrap();
                assert_eq!(assert_close(&got, "", &want, &format!("{name}/{m} on {rt}")), 1);
            }
        }
    }
}

#[test]
fn every_trio_fuses_and_each_member_answers_as_in_pytorch() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    for (name, members) in SETS {
        let d = set(name);
        let files: Vec<PathBuf> = members.iter().map(|m| d.join(format!("{m}.onnx"))).collect();
        for lowering in ["regions", "grouped", "separate"] {
            let fused = dir.path().join(format!("{name}-{lowering}.onnx"));
            let mut args = vec!["fuse"];
            args.extend(files.iter().map(|f| s(f)));
            args.extend_from_slice(&["-o", s(&fused), "--lowering", lowering]);
            ok(fusec(&args));
            for rt in ["ort", "tract"] {
                let out = dir.path().join(format!("{name}-{lowering}-{rt}.safetensors"));
                run(&fused, &d.join("input.safetensors"), rt, &out);
                let got = read_tensors(&out).unwrap();
                for m in members {
                    let want = read_tensors(&d.join(format!("{m}.outputs.safetensors"))).unwrap();
                    assert_close(&got, &format!("{m}/"), &want, &format!("{name} {lowering} {m} on {rt}"));
                }
            }
        }
        // verify agrees, on the token inputs it makes itself too.
        let fused = dir.path().join(format!("{name}-regions.onnx"));
        let mut args = vec!["verify", s(&fused), "--members"];
        args.extend(files.iter().map(|f| s(f)));
        args.extend_from_slice(&["--runs", "0"]);
        let text = String::from_utf8(ok(fusec(&args)).stdout).unwrap();
        assert!(text.contains("equivalence: ok (6 outputs compared"), "{name}: {text}");
    }
}
