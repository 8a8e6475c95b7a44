//! `scripts/bench-torch.py` on CPU, on a small fused model: the script's
//! own test. It needs PyTorch, onnx and onnx2torch; where they are missing
//! (CI has no PyTorch) the test says so and skips. `FUSEC_TORCH_PYTHON`
//! names the Python to use (default `python3`).

mod common;

use std::process::Command;

use common::checkpoints::{write_checkpoint_seeded, Spec};
use common::*;

fn torch_python() -> Result<String, String> {
    let py = std::env::var("FUSEC_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let probe = Command::new(&py).args(["-c", "import torch, onnx, onnx2torch"]).output();
    match probe {
        Ok(o) if o.status.success() => Ok(py),
        Ok(o) => {
            Err(format!("{py} cannot import torch, onnx and onnx2torch: {}", String::from_utf8_lossy(&o.stderr).trim()))
        }
        Err(e) => Err(format!("{py}: {e}")),
    }
}

/// The Python to run the script with, or None after saying why the test
/// is skipped.
fn torch_python_or_skip() -> Option<String> {
    match torch_python() {
        Ok(py) => Some(py),
        Err(why) => {
            eprintln!("skipped: {why} (set FUSEC_TORCH_PYTHON to a Python with them)");
            None
        }
    }
}

/// Two small EfficientDet-shaped members (2 and 3 classes) as ONNX files in `dir`.
fn two_members(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let member = |name: &str, classes: usize, seed: u64| {
        let st = dir.join(format!("{name}.safetensors"));
        write_checkpoint_seeded(&st, &Spec::small(8, 1, 1, classes).tensors(), None, seed);
        let onnx = dir.join(format!("{name}.onnx"));
        ok(fusec(&["convert", s(&st), "--image-size", "128", "-o", s(&onnx)]));
        onnx
    };
    (member("a", 2, 1), member("b", 3, 2))
}

#[test]
fn bench_torch_times_a_fused_model_on_cpu_and_checks_its_outputs() {
    let Some(py) = torch_python_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_members(dir.path());
    let fused = dir.path().join("super.onnx");
    ok(fusec(&["fuse", s(&a), s(&b), "-o", s(&fused)]));
    let json = dir.path().join("rows.json");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/bench-torch.py");
    let out = Command::new(&py)
        .args([script, "--fused", s(&fused), "--members", s(&a), s(&b), "--device", "cpu", "--runs", "3"])
        .args(["--warmup", "1", "--precision", "fp32", "--json-out", s(&json)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("| members one after another, fp32, eager |") && text.contains("| fused, fp32, eager |"),
        "{text}"
    );
    assert!(text.contains("outputs: every member's equal the fused model's"), "{text}");
    let j: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = j["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows[1]["max_abs"].as_f64().unwrap() <= 1e-4 && rows[1]["p50_ms"].as_f64().unwrap() > 0.0, "{j}");
}

#[test]
fn bench_torch_measures_several_lowerings_and_writes_a_calibration_fuse_reads() {
    let Some(py) = torch_python_or_skip() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = two_members(dir.path());
    // One fused file per lowering; each records its lowering.
    let grouped = dir.path().join("grouped.onnx");
    let separate = dir.path().join("separate.onnx");
    ok(fusec(&["fuse", s(&a), s(&b), "-o", s(&grouped), "--lowering", "grouped"]));
    ok(fusec(&["fuse", s(&a), s(&b), "-o", s(&separate), "--lowering", "separate"]));
    let cal = dir.path().join("lowering.json");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/bench-torch.py");
    let out = Command::new(&py)
        .args([script, "--fused", s(&grouped), s(&separate), "--members", s(&a), s(&b), "--device", "cpu"])
        .args(["--runs", "3", "--warmup", "1", "--precision", "fp32", "--calibrate", s(&cal)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("| fused (grouped), fp32, eager |") && text.contains("| fused (separate), fp32, eager |"),
        "{text}"
    );
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&cal).unwrap()).unwrap();
    let chosen = c["lowering"].as_str().unwrap();
    assert!(chosen == "grouped" || chosen == "separate", "{c}");
    assert!(text.contains(&format!("wrote {}: `fused ({chosen}), fp32, eager`", s(&cal))), "{text}");
    assert_eq!(c["members"], serde_json::json!(["a", "b"]), "{c}");
    // fusec fuse reads it and fuses with that lowering.
    let again = dir.path().join("again.onnx");
    let res = ok(fusec(&["fuse", s(&a), s(&b), "-o", s(&again), "--calibration", s(&cal)]));
    assert!(
        String::from_utf8_lossy(&res.stderr).contains("lowering `fused ("),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let want = if chosen == "grouped" { &grouped } else { &separate };
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(want).unwrap(), "the same lowering gives the same file");
}
