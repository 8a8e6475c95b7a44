//! End-to-end tests of the `fusec` binary on the reference EfficientDet-D0
//! models and on hostile input. ONNX Runtime tests need `ORT_DYLIB_PATH`
//! (`bash scripts/test.sh` installs the library and sets it); without it
//! they fail rather than skip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fusec_frontends::onnx_builder::{attr_int, OnnxBuilder};
use fusec_verify::compare::diff;
use fusec_verify::io::read_tensors;

/// The tolerances of the foundation issue, against PyTorch's outputs.
const MAX_ABS: f64 = 1e-4;
const MAX_REL_L2: f64 = 1e-5;
const MEMBERS: [&str; 3] = ["coco", "aquarium", "vehicles"];

fn reference_dir() -> PathBuf {
    let dir = std::env::var_os("FUSEC_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/efficientdet_d0"));
    assert!(dir.is_dir(), "reference models not found at {} (set FUSEC_REFERENCE_DIR)", dir.display());
    dir
}

fn fusec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fusec")).args(args).output().expect("fusec starts")
}

fn require_ort() {
    let lib = std::env::var_os("ORT_DYLIB_PATH").unwrap_or_default();
    assert!(
        Path::new(&lib).is_file(),
        "ONNX Runtime tests need ORT_DYLIB_PATH pointing at libonnxruntime.so: run `bash scripts/test.sh`"
    );
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "fusec failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Compares every reference output (but `detections`, which is not a model
/// output) with what fusec wrote.
fn assert_matches_reference(outputs: &Path, member: &str) {
    let got = read_tensors(outputs).expect("outputs readable");
    let want = read_tensors(&reference_dir().join(format!("{member}.outputs.safetensors"))).expect("reference readable");
    let mut compared = 0;
    for (name, w) in want.iter().filter(|(n, _)| n != "detections") {
        let (_, g) = got.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{member}: output `{name}` missing"));
        let d = diff(g, w).unwrap_or_else(|e| panic!("{member}/{name}: {e}"));
        assert!(
            d.within(MAX_ABS, MAX_REL_L2),
            "{member}/{name}: max abs {:.3e} (limit {MAX_ABS:e}), rel L2 {:.3e} (limit {MAX_REL_L2:e})",
            d.max_abs,
            d.rel_l2
        );
        compared += 1;
    }
    assert_eq!(compared, 10, "{member}: expected 10 outputs (class_out_0..4, box_out_0..4)");
}

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
        "run", model.to_str().unwrap(), "--input", input.to_str().unwrap(), "--runtime", "ort", "--device", "cuda", "-o",
        out.to_str().unwrap(),
    ]);
    let err = one_error_line(&res, 2);
    assert!(err.contains("no CUDA execution provider"), "{err}");
    assert!(!out.exists());
}

#[test]
fn tract_rejects_gpu_devices() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(&dir);
    let input = tiny_input(&dir);
    let out = dir.path().join("out.safetensors");
    let res = fusec(&[
        "run", model.to_str().unwrap(), "--input", input.to_str().unwrap(), "--device", "coreml", "-o",
        out.to_str().unwrap(),
    ]);
    let err = one_error_line(&res, 2);
    assert!(err.contains("tract runs on the CPU only"), "{err}");
    assert!(!out.exists());
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
    let t = vec![("x".to_string(), ndarray::ArrayD::from_shape_vec(vec![1, 4], vec![-2.0f32, 3.0, 0.25, 1.0]).unwrap())];
    let p = dir.path().join("x.safetensors");
    std::fs::write(&p, fusec_verify::io::to_safetensors_bytes(&t).unwrap()).unwrap();
    p
}

/// Asserts exit `code`, no panic, and exactly one `error: ...` line on stderr.
fn one_error_line(out: &Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_string()
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

fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
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
    assert_rejected(&write(&dir, "dangling.onnx", &bytes), "reads `ghost`, which no node, input or initializer defines");
}

#[test]
fn unknown_op_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = OnnxBuilder::new(17)
        .input("x", &[1, 4])
        .output("y", &[1, 4])
        .node("FancyActivation", &["x"], &["y"], vec![attr_int("alpha", 1)])
        .build();
    assert_rejected(&write(&dir, "unknown_op.onnx", &bytes), "unsupported op `FancyActivation`");
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
    assert_rejected(&write(&dir, "mismatch.onnx", &bytes), "node `Add_0` (Add): shapes [1, 4] and [3] do not broadcast");
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
    assert!(text.contains("x                       0.000e0"), "{text}");
    let shifted = vec![("x".to_string(), ndarray::ArrayD::from_shape_vec(vec![1, 4], vec![-2.0f32, 3.0, 0.25, 1.001]).unwrap())];
    let b = write(&dir, "b.safetensors", &fusec_verify::io::to_safetensors_bytes(&shifted).unwrap());
    let res = fusec(&["compare", b.to_str().unwrap(), a.to_str().unwrap()]);
    let err = one_error_line(&res, 1);
    assert!(err.contains("1 of 1 tensors exceed max abs"), "{err}");
}
