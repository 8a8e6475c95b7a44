//! End-to-end tests of the `fusec` binary on the reference EfficientDet-D0
//! models and on hostile input. ONNX Runtime tests need `ORT_DYLIB_PATH`
//! (`bash scripts/test.sh` installs the library and sets it); without it
//! they fail rather than skip.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use fusec_exporters::onnx_builder::{attr_int, OnnxBuilder};
use fusec_verify::io::read_tensors;

fn round_trip(member: &str, runtime: &str) {
    let dir = tempfile::tempdir().unwrap();
    let src = reference_dir().join(format!("{member}.onnx"));
    let exported = dir.path().join(format!("{member}.fusec.onnx"));
    let outputs = dir.path().join("out.safetensors");
    ok(fusec(&["convert", src.to_str().unwrap(), "-o", exported.to_str().unwrap()]));
    let input = reference_dir().join("input.safetensors");
    ok(fusec(&[
        "run",
        exported.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--runtime",
        runtime,
        "-o",
        outputs.to_str().unwrap(),
    ]));
    assert_matches_reference(&outputs, member);
}

#[test]
fn round_trip_coco_tract() {
    round_trip("coco", "tract");
}

#[test]
fn round_trip_aquarium_tract() {
    round_trip("aquarium", "tract");
}

#[test]
fn round_trip_vehicles_tract() {
    round_trip("vehicles", "tract");
}

#[test]
fn round_trip_coco_ort() {
    require_ort();
    round_trip("coco", "ort");
}

#[test]
fn round_trip_aquarium_ort() {
    require_ort();
    round_trip("aquarium", "ort");
}

#[test]
fn round_trip_vehicles_ort() {
    require_ort();
    round_trip("vehicles", "ort");
}

#[test]
fn coco_ir_snapshot() {
    let out = ok(fusec(&["inspect", "--ir", reference_dir().join("coco.onnx").to_str().unwrap()]));
    insta::assert_snapshot!("coco_ir", String::from_utf8(out.stdout).unwrap());
}

#[test]
fn inspect_onnx_reports_io_ops_and_parameters() {
    let out = ok(fusec(&["inspect", reference_dir().join("aquarium.onnx").to_str().unwrap()]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("image f32[1,3,512,512]"), "{text}");
    assert!(text.contains("class_out_0 f32[1,63,64,64]"), "{text}"); // 9 anchors x 7 classes
    assert!(text.contains("box_out_4 f32[1,36,4,4]"), "{text}");
    assert!(text.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Conv", "214"]), "{text}");
    assert!(text.contains("parameters: "), "{text}");
}

#[test]
fn inspect_safetensors_lists_tensors() {
    let out = ok(fusec(&["inspect", reference_dir().join("coco.safetensors").to_str().unwrap()]));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("backbone.conv_stem.weight F32 [32, 3, 3, 3]"), "{text}");
    assert!(text.contains("num_batches_tracked I64 []"), "{text}");
    // The manifest's PyTorch parameter count (running stats are buffers, not
    // parameters, so the float total is larger).
    let params: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("parameters: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a parameter line");
    assert!(params > 3_877_763, "{params}");
}

#[test]
fn ort_with_missing_cuda_provider_is_a_clear_error() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(&dir);
    let input = tiny_input(&dir);
    let out = dir.path().join("out.safetensors");
    let res = fusec(&[
        "run",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--runtime",
        "ort",
        "--device",
        "cuda",
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = one_error_line(&res, 2);
    assert!(err.contains("no CUDA execution provider"), "{err}");
    assert!(!out.exists());
}

#[test]
fn onnx_runtime_is_found_in_the_environment_fusec_is_installed_in() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(&dir);
    let input = tiny_input(&dir);
    let out = dir.path().join("out.safetensors");
    let args = ["run", s(&model), "--input", s(&input), "--runtime", "ort", "-o", s(&out)];
    // fusec in a virtual environment whose onnxruntime package holds the
    // library (as `pip install` lays it out), and no ORT_DYLIB_PATH.
    let venv = dir.path().join("venv");
    let capi = venv.join("lib/python3.11/site-packages/onnxruntime/capi");
    std::fs::create_dir_all(&capi).unwrap();
    std::fs::create_dir_all(venv.join("bin")).unwrap();
    let lib = std::path::PathBuf::from(std::env::var_os("ORT_DYLIB_PATH").unwrap());
    std::os::unix::fs::symlink(&lib, capi.join(lib.file_name().unwrap())).unwrap();
    let exe = venv.join("bin/fusec");
    std::fs::copy(env!("CARGO_BIN_EXE_fusec"), &exe).unwrap();
    let empty = dir.path().join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let run = |exe: &Path| {
        std::process::Command::new(exe).args(args).env_remove("ORT_DYLIB_PATH").env("PATH", &empty).output().unwrap()
    };
    ok(run(&exe));
    assert!(out.exists());
    // Nowhere to find it: the error says both ways.
    std::fs::remove_file(capi.join(lib.file_name().unwrap())).unwrap();
    let err = one_error_line(&run(&exe), 2);
    assert!(err.contains("ORT_DYLIB_PATH") && err.contains("pip install onnxruntime"), "{err}");
}

#[test]
fn tract_rejects_gpu_devices() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(&dir);
    let input = tiny_input(&dir);
    let out = dir.path().join("out.safetensors");
    let res = fusec(&[
        "run",
        model.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--device",
        "coreml",
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = one_error_line(&res, 2);
    assert!(err.contains("tract runs on the CPU only"), "{err}");
    assert!(!out.exists());
}

/// tract's optimizer folds a Reshape of the input and one back into the
/// input, and gave the input's outlet the later value's name: `run` then
/// asked for an input named after it (as a fused model whose linear
/// layer reads the input on rows did, `MatMul::parts`). The input keeps
/// its name.
#[test]
fn tract_runs_a_model_whose_input_is_reshaped_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = OnnxBuilder::new(17)
        .input("x", &[1, 4])
        .output("y", &[1, 4])
        .init_i64("rows", &[4, 1])
        .init_i64("back", &[1, 4])
        .init_f32("b", &[4], &[1.0, -1.0, 0.5, 0.0])
        .node("Reshape", &["x", "rows"], &["x_rows"], vec![])
        .node("Reshape", &["x_rows", "back"], &["x_parts"], vec![])
        .node("Add", &["x_parts", "b"], &["y"], vec![])
        .build();
    let model = dir.path().join("reshaped.onnx");
    std::fs::write(&model, bytes).unwrap();
    let input = tiny_input(&dir);
    let out = dir.path().join("out.safetensors");
    ok(fusec(&["run", model.to_str().unwrap(), "--input", input.to_str().unwrap(), "-o", out.to_str().unwrap()]));
    let got = read_tensors(&out).unwrap();
    assert_eq!(got[0].1.iter().copied().collect::<Vec<f32>>(), [-1.0, 2.0, 0.75, 1.0]);
}

// ---- hostile input ----------------------------------------------------

/// A valid two-node model: y = relu(x) + b.
fn tiny_model(dir: &tempfile::TempDir) -> PathBuf {
    let bytes = OnnxBuilder::new(17)
        .input("x", &[1, 4])
        .output("y", &[1, 4])
        .init_f32("b", &[4], &[1.0, -1.0, 0.5, 0.0])
        .node("Relu", &["x"], &["r"], vec![])
        .node("Add", &["r", "b"], &["y"], vec![])
        .build();
    let p = dir.path().join("tiny.onnx");
    std::fs::write(&p, bytes).unwrap();
    p
}

fn tiny_input(dir: &tempfile::TempDir) -> PathBuf {
    let t =
        vec![("x".to_string(), ndarray::ArrayD::from_shape_vec(vec![1, 4], vec![-2.0f32, 3.0, 0.25, 1.0]).unwrap())];
    let p = dir.path().join("x.safetensors");
    std::fs::write(&p, fusec_verify::io::to_safetensors_bytes(&t).unwrap()).unwrap();
    p
}

/// Converting and running `bad` both fail with one line naming the file and
/// `what`, exit code 2, and leave no output file.
fn assert_rejected(bad: &Path, what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let res = fusec(&["convert", bad.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let err = one_error_line(&res, 2);
    assert!(err.contains(bad.to_str().unwrap()), "error does not name the file: {err}");
    assert!(err.contains(what), "expected `{what}` in: {err}");
    assert!(!out.exists(), "convert left {}", out.display());
    let outs = dir.path().join("out.safetensors");
    let input = reference_dir().join("input.safetensors");
    let res = fusec(&["run", bad.to_str().unwrap(), "--input", input.to_str().unwrap(), "-o", outs.to_str().unwrap()]);
    let err = one_error_line(&res, 2);
    assert!(err.contains(what), "expected `{what}` in: {err}");
    assert!(!outs.exists(), "run left {}", outs.display());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "temporary files left behind");
}

#[test]
fn empty_file_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    assert_rejected(&write(&dir, "empty.onnx", b""), "empty file");
}

#[test]
fn random_bytes_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    assert_rejected(&write(&dir, "random.onnx", &bytes), "not");
}

#[test]
fn truncated_onnx_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(reference_dir().join("coco.onnx")).unwrap();
    assert_rejected(&write(&dir, "truncated.onnx", &full[..full.len() / 2]), "not a valid ONNX model");
}

#[test]
fn node_reading_an_undefined_value_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = OnnxBuilder::new(17)
        .input("x", &[1, 4])
        .output("y", &[1, 4])
        .node("Relu", &["x"], &["r"], vec![])
        .node("Add", &["r", "ghost"], &["y"], vec![])
        .build();
    assert_rejected(
        &write(&dir, "dangling.onnx", &bytes),
        "reads `ghost`, which no node, input or initializer defines",
    );
}

#[test]
fn unknown_op_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = OnnxBuilder::new(17)
        .input("x", &[1, 4])
        .output("y", &[1, 4])
        .node("FancyActivation", &["x"], &["y"], vec![attr_int("alpha", 1)])
        .build();
    assert_rejected(&write(&dir, "unknown_op.onnx", &bytes), "unsupported op: FancyActivation (1 node); first: node");
}

#[test]
fn cycle_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = OnnxBuilder::new(17)
        .input("x", &[1, 4])
        .output("y", &[1, 4])
        .node("Add", &["x", "b"], &["a"], vec![])
        .node("Relu", &["a"], &["b"], vec![])
        .node("Relu", &["a"], &["y"], vec![])
        .build();
    assert_rejected(&write(&dir, "cycle.onnx", &bytes), "cycle");
}

#[test]
fn shape_mismatch_names_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = OnnxBuilder::new(17)
        .input("x", &[1, 4])
        .output("y", &[1, 4])
        .init_f32("b", &[3], &[1.0, 2.0, 3.0])
        .node("Add", &["x", "b"], &["y"], vec![])
        .build();
    assert_rejected(
        &write(&dir, "mismatch.onnx", &bytes),
        "node `Add_0` (Add): shapes [1, 4] and [3] do not broadcast",
    );
}

/// A safetensors header claiming 1000 floats over a 16-byte payload.
fn lying_safetensors(dir: &tempfile::TempDir) -> PathBuf {
    let header = br#"{"image":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 16]);
    write(dir, "lying.safetensors", &bytes)
}

#[test]
fn safetensors_header_lying_about_sizes_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let bad = lying_safetensors(&dir);
    let res = fusec(&["inspect", bad.to_str().unwrap()]);
    let err = one_error_line(&res, 2);
    assert!(err.contains(bad.to_str().unwrap()) && err.contains("not a valid safetensors file"), "{err}");

    let model = tiny_model(&dir);
    let out = dir.path().join("out.safetensors");
    let res = fusec(&["run", model.to_str().unwrap(), "--input", bad.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let err = one_error_line(&res, 2);
    assert!(err.contains(bad.to_str().unwrap()) && err.contains("not a valid safetensors file"), "{err}");
    assert!(!out.exists());
}

#[test]
fn wrong_input_name_or_shape_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(&dir);
    let out = dir.path().join("out.safetensors");
    // The reference image is named `image` and is 1x3x512x512, not `x`.
    let input = reference_dir().join("input.safetensors");
    let res = fusec(&["run", model.to_str().unwrap(), "--input", input.to_str().unwrap(), "-o", out.to_str().unwrap()]);
    let err = one_error_line(&res, 2);
    assert!(err.contains("needs input `x`"), "{err}");
    assert!(!out.exists());
}

#[test]
fn tiny_model_runs_on_tract() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(&dir);
    let input = tiny_input(&dir);
    let out = dir.path().join("out.safetensors");
    ok(fusec(&["run", model.to_str().unwrap(), "--input", input.to_str().unwrap(), "-o", out.to_str().unwrap()]));
    let got = read_tensors(&out).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, "y");
    assert_eq!(got[0].1.iter().copied().collect::<Vec<f32>>(), vec![1.0, 2.0, 0.75, 1.0]);
}

#[test]
fn compare_passes_identical_files_and_fails_beyond_tolerance() {
    let dir = tempfile::tempdir().unwrap();
    let a = tiny_input(&dir);
    let res = ok(fusec(&["compare", a.to_str().unwrap(), a.to_str().unwrap()]));
    let text = String::from_utf8(res.stdout).unwrap();
    let row: Vec<&str> = text.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    assert_eq!(row, ["x", "0.000e0", "0.000e0", "1.000000000"], "{text}");
    let shifted =
        vec![("x".to_string(), ndarray::ArrayD::from_shape_vec(vec![1, 4], vec![-2.0f32, 3.0, 0.25, 1.001]).unwrap())];
    let b = write(&dir, "b.safetensors", &fusec_verify::io::to_safetensors_bytes(&shifted).unwrap());
    let res = fusec(&["compare", b.to_str().unwrap(), a.to_str().unwrap()]);
    let err = one_error_line(&res, 1);
    assert!(err.contains("1 of 1 tensors exceed max abs"), "{err}");
    assert!(String::from_utf8(res.stdout).unwrap().lines().last().unwrap().starts_with("FAILED: 1 of 1 tensors"));
}

#[test]
fn compare_prints_a_verdict_and_checks_a_members_outputs_in_a_fused_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = tiny_input(&dir);
    let res = ok(fusec(&["compare", s(&a), s(&a)]));
    let text = String::from_utf8(res.stdout).unwrap();
    assert_eq!(text.lines().last(), Some("ok: 1 tensors within max abs 1e-4 and rel L2 1e-5"), "{text}");
    // A fused model's outputs are MEMBER/OUTPUT: --prefix finds them.
    let x = fusec_verify::io::read_tensors(&a).unwrap();
    let fused: fusec_verify::Tensors = x.iter().map(|(n, t)| (format!("coco/{n}"), t.clone())).collect();
    let f = write(&dir, "fused.safetensors", &fusec_verify::io::to_safetensors_bytes(&fused).unwrap());
    let line = one_error_line(&fusec(&["compare", s(&f), s(&a)]), 2);
    assert!(line.contains("share no tensor names") && line.contains("--prefix MEMBER/"), "{line}");
    let res = ok(fusec(&["compare", s(&f), s(&a), "--prefix", "coco/"]));
    let text = String::from_utf8(res.stdout).unwrap();
    assert!(text.contains("coco/x") && text.contains("ok: 1 tensors"), "{text}");
}

#[test]
fn node_names_that_clash_with_tracts_expansions_still_run() {
    // tract expands BatchNormalization `bn` into nodes named `bn.*`; a
    // model's own `bn.mul` must not collide with them.
    let dir = tempfile::tempdir().unwrap();
    let bytes = OnnxBuilder::new(17)
        .input("x", &[1, 2, 2, 2])
        .output("y", &[1, 2, 2, 2])
        .init_f32("s", &[2], &[1.0, 2.0])
        .init_f32("b", &[2], &[0.5, -0.5])
        .init_f32("m", &[2], &[0.0, 1.0])
        .init_f32("v", &[2], &[1.0, 4.0])
        .node_named("bn", "BatchNormalization", &["x", "s", "b", "m", "v"], &["t"], vec![])
        .node_named("bn.mul", "Mul", &["t", "t"], &["y"], vec![])
        .build();
    let model = write(&dir, "clash.onnx", &bytes);
    let input = write(
        &dir,
        "x.safetensors",
        &fusec_verify::io::to_safetensors_bytes(&vec![(
            "x".to_string(),
            ndarray::ArrayD::from_shape_vec(vec![1, 2, 2, 2], vec![0.0f32, 1.0, 2.0, 3.0, 1.0, 3.0, 5.0, 7.0]).unwrap(),
        )])
        .unwrap(),
    );
    let out = dir.path().join("out.safetensors");
    ok(fusec(&["run", model.to_str().unwrap(), "--input", input.to_str().unwrap(), "-o", out.to_str().unwrap()]));
    let y: Vec<f32> = read_tensors(&out).unwrap()[0].1.iter().copied().collect();
    // bn: (x - m) / sqrt(v + 1e-5) * s + b, then squared.
    let want: Vec<f32> = [0.0f32, 1.0, 2.0, 3.0, 1.0, 3.0, 5.0, 7.0]
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let c = i / 4;
            let (s, b, m, v) = ([1.0f32, 2.0][c], [0.5f32, -0.5][c], [0.0f32, 1.0][c], [1.0f32, 4.0][c]);
            let t = (x - m) / (v + 1e-5).sqrt() * s + b;
            t * t
        })
        .collect();
    for (g, w) in y.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5, "{y:?} vs {want:?}");
    }
}
