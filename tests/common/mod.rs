//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

pub mod checkpoints;
pub mod hf;
pub mod models;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fusec_verify::compare::diff;
use fusec_verify::io::read_tensors;
use fusec_verify::Tensors;

/// The tolerances of the foundation issue, against PyTorch's outputs.
pub const MAX_ABS: f64 = 1e-4;
pub const MAX_REL_L2: f64 = 1e-5;
pub const MEMBERS: [&str; 3] = ["coco", "aquarium", "vehicles"];

pub fn reference_dir() -> PathBuf {
    let dir = std::env::var_os("FUSEC_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/efficientdet_d0"));
    assert!(dir.is_dir(), "reference models not found at {} (set FUSEC_REFERENCE_DIR)", dir.display());
    dir
}

/// `../shared/reference/transformers`: the BERT and ViT trios.
pub fn transformers_dir() -> PathBuf {
    let dir = reference_dir().join("../transformers");
    assert!(dir.is_dir(), "transformer references not found at {}", dir.display());
    dir
}

/// Runs the `fusec` binary with its own empty tune cache: a plan kept by
/// another test (or an earlier run) must not answer for a measurement a
/// test asserts.
pub fn fusec(args: &[&str]) -> Output {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let cache = std::env::temp_dir().join(format!("fusec-test-cache-{}-{n}", std::process::id()));
    let out = fusec_with_cache(args, &cache);
    let _ = std::fs::remove_dir_all(&cache);
    out
}

/// Runs the `fusec` binary with its tune cache in `cache`.
pub fn fusec_with_cache(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fusec")).args(args).env("FUSEC_CACHE_DIR", cache).output().expect("fusec starts")
}

pub fn require_ort() {
    let lib = std::env::var_os("ORT_DYLIB_PATH").unwrap_or_default();
    assert!(
        Path::new(&lib).is_file(),
        "ONNX Runtime tests need ORT_DYLIB_PATH pointing at libonnxruntime.so: run `bash scripts/test.sh`"
    );
}

pub fn ok(out: Output) -> Output {
    assert!(out.status.success(), "fusec failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

/// `fusec verify MODEL --members MEMBERS... EXTRA...`, which must succeed:
/// its report (stdout).
pub fn verify_ok<P: AsRef<Path>>(model: &Path, members: &[P], extra: &[&str]) -> String {
    let mut args = vec!["verify", s(model), "--members"];
    args.extend(members.iter().map(|p| s(p.as_ref())));
    args.extend_from_slice(extra);
    String::from_utf8(ok(fusec(&args)).stdout).unwrap()
}

/// Compares every reference output (but `detections`, which is not a model
/// output) with what fusec wrote.
pub fn assert_matches_reference(outputs: &Path, member: &str) {
    let got = read_tensors(outputs).expect("outputs readable");
    let want =
        read_tensors(&reference_dir().join(format!("{member}.outputs.safetensors"))).expect("reference readable");
    let compared = assert_close(&got, "", &want, member);
    assert_eq!(compared, 10, "{member}: expected 10 outputs (class_out_0..4, box_out_0..4)");
}

/// Every tensor of `want` (but `detections`) against `{prefix}{name}` in
/// `got`, within [`MAX_ABS`] and [`MAX_REL_L2`]; returns how many were compared.
pub fn assert_close(got: &Tensors, prefix: &str, want: &Tensors, what: &str) -> usize {
    let mut compared = 0;
    for (name, w) in want.iter().filter(|(n, _)| n != "detections") {
        let key = format!("{prefix}{name}");
        let (_, g) = got.iter().find(|(n, _)| *n == key).unwrap_or_else(|| panic!("{what}: output `{key}` missing"));
        let d = diff(g, w).unwrap_or_else(|e| panic!("{what} {key}: {e}"));
        assert!(
            d.within(MAX_ABS, MAX_REL_L2),
            "{what} {key}: max abs {:.3e} (limit {MAX_ABS:e}), rel L2 {:.3e} (limit {MAX_REL_L2:e})",
            d.max_abs,
            d.rel_l2
        );
        compared += 1;
    }
    assert!(compared > 0, "{what}: nothing compared");
    compared
}

/// Asserts exit `code`, no panic, and exactly one `error: ...` line on stderr.
pub fn one_error_line(out: &Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_string()
}

/// Asserts exit `code`, no panic, and one `error: ...` line, the last one
/// (progress lines such as "FILE: efficientdet_d0 (...)" may come before).
pub fn last_error_line(out: &Output, code: i32) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "expected one error line, got: {err}");
    assert_eq!(err.lines().last(), Some(errors[0]), "the error comes last: {err}");
    errors[0].to_string()
}

/// A path as the `&str` a command line takes.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The three reference state_dicts (coco, aquarium, vehicles), as arguments.
pub fn reference_members() -> Vec<String> {
    MEMBERS.iter().map(|m| s(&reference_dir().join(format!("{m}.safetensors"))).to_string()).collect()
}

/// `fuse MEMBERS -o OUT`, as arguments.
pub fn fuse_args<'a>(members: &'a [String], out: &'a Path) -> Vec<&'a str> {
    let mut args = vec!["fuse"];
    args.extend(members.iter().map(String::as_str));
    args.extend(["-o", s(out)]);
    args
}

/// Names of fusec's temporary files (`.fusec*`) left in `dir`.
pub fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".fusec"))
        .collect()
}

pub fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}
