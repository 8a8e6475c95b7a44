//! Core ML export, end to end through the CLI: `fusec fuse ... -o
//! super.mlpackage`, checked by coremltools (installed by
//! scripts/install-coremltools.sh; scripts/test.sh sets FUSEC_COREML_PYTHON).
//! Core ML itself runs only on macOS, so these tests check that the package
//! loads and type-checks, op by op, in coremltools, and snapshot the MIL
//! program's ops, shapes and dtypes as coremltools reads them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::models::{lstm_member, many_ops_member, resize_member};
use common::{fuse_args, fusec, leftovers, ok, one_error_line, reference_members, require_ort, s, write};

fn coreml_python() -> PathBuf {
    let py = std::env::var_os("FUSEC_COREML_PYTHON").map(PathBuf::from).unwrap_or_default();
    assert!(
        py.is_file(),
        "Core ML tests need FUSEC_COREML_PYTHON pointing at a python with coremltools: run `bash scripts/test.sh`"
    );
    py
}

/// Runs scripts/check-coreml.py on `package`; returns its stdout.
fn coremltools_check(package: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/check-coreml.py");
    let out = Command::new(coreml_python()).arg(script).arg(package).arg("--ops").output().expect("python starts");
    assert!(
        out.status.success(),
        "coremltools rejected {}: {}",
        package.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fuse_to(out: &Path, extra: &[&str]) -> String {
    let members = reference_members();
    let mut args = fuse_args(&members, out);
    args.extend(extra);
    String::from_utf8(ok(fusec(&args)).stderr).unwrap()
}

fn package_files(p: &Path) -> Vec<(String, Vec<u8>)> {
    ["Manifest.json", "Data/com.apple.CoreML/model.mlmodel", "Data/com.apple.CoreML/weights/weight.bin"]
        .iter()
        .map(|f| (f.to_string(), std::fs::read(p.join(f)).unwrap_or_else(|e| panic!("{}/{f}: {e}", p.display()))))
        .collect()
}

#[test]
fn reference_fusion_exports_a_package_that_coremltools_loads_and_type_checks() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("super.mlpackage");
    let log = fuse_to(&pkg, &[]);
    assert!(
        log.contains("30 inputs/outputs renamed") && log.contains("`coco/class_out_0` is `coco_class_out_0`"),
        "{log}"
    );
    let written = package_files(&pkg);
    let report = coremltools_check(&pkg);
    insta::assert_snapshot!("d0x3_fp32_mil", report);
    // Weights: fp32, every float weight of the fused graph (48.6 MB).
    let weights = std::fs::metadata(pkg.join("Data/com.apple.CoreML/weights/weight.bin")).unwrap().len();
    assert!(weights > 48_000_000, "{weights}");

    // Deterministic: the same members give byte-identical packages.
    let dir2 = tempfile::tempdir().unwrap();
    let again = dir2.path().join("super.mlpackage");
    fuse_to(&again, &[]);
    assert!(written == package_files(&again), "two fusions of the same members differ");
    // coremltools found nothing to rewrite (it reformats a manifest it dislikes).
    assert!(written == package_files(&pkg), "coremltools rewrote part of the package");
}

#[test]
fn fp16_package_keeps_an_fp32_interface_and_halves_the_weights() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("super16.mlpackage");
    fuse_to(&pkg, &["--precision", "fp16", "--lowering", "grouped", "--keep-bn"]);
    let report = coremltools_check(&pkg);
    insta::assert_snapshot!("d0x3_fp16_grouped_bn_mil", report);
    assert!(report.contains("input image fp32[1, 3, 512, 512]"), "{report}");
    assert!(report.contains("output coco_class_out_0 fp32[1, 810, 64, 64]"), "{report}");
    assert!(report.contains("conv fp16[1, "), "{report}");
    let weights = std::fs::metadata(pkg.join("Data/com.apple.CoreML/weights/weight.bin")).unwrap().len();
    assert!((24_000_000..25_500_000).contains(&weights), "{weights}");
}

/// Two small ONNX members: conv then an upsampling Resize in `mode`.
fn resize_members(dir: &tempfile::TempDir, mode: &str) -> (PathBuf, PathBuf) {
    (
        write(dir, &format!("a_{mode}.onnx"), &resize_member(mode, 0.0)),
        write(dir, &format!("b_{mode}.onnx"), &resize_member(mode, 1.0)),
    )
}

#[test]
fn an_op_without_a_mil_mapping_is_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = dir.path().join("super.mlpackage");
    // Nearest upsampling maps to upsample_nearest_neighbor: a good package.
    let (a, b) = resize_members(&dir, "nearest");
    ok(fusec(&["fuse", s(&a), s(&b), "-o", s(&pkg)]));
    let report = coremltools_check(&pkg);
    assert!(report.contains("op upsample_nearest_neighbor 1"), "{report}");
    let good = package_files(&pkg);

    // Linear resize has no mapping: exit 2, the node named, the good package kept.
    let (a, b) = resize_members(&dir, "linear");
    let line = one_error_line(&fusec(&["fuse", s(&a), s(&b), "-o", s(&pkg)]), 2);
    assert!(line.contains("Core ML export") && line.contains("(Resize)") && line.contains("Linear"), "{line}");
    assert!(package_files(&pkg) == good, "a failed export changed the existing package");
    assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));

    // A directory that is not a package is never replaced.
    let other = dir.path().join("photos.mlpackage");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("keep.txt"), b"mine").unwrap();
    let (a, b) = resize_members(&dir, "nearest");
    let line = one_error_line(&fusec(&["fuse", s(&a), s(&b), "-o", s(&other)]), 2);
    assert!(line.contains("not a Core ML package"), "{line}");
    assert_eq!(std::fs::read(other.join("keep.txt")).unwrap(), b"mine");
}

/// Sequencer2D's LSTM maps to MIL's `lstm` (which computes in fp32, also
/// inside an fp16 program): forward and bidirectional members export
/// packages that coremltools loads and type-checks, the output in ONNX's
/// layout, a constant initial state as a constant and a computed one
/// reordered by ops. (Its weights' gate order is checked against coremltools' own
/// torch converter by scripts/check-coreml-lstm.py, which needs torch.) A
/// reverse LSTM is refused by name and nothing is written.
#[test]
fn lstm_members_export_packages_that_coremltools_type_checks() {
    let dir = tempfile::tempdir().unwrap();
    for (direction, dirs) in [("bidirectional", 2), ("forward", 1)] {
        let a = write(&dir, &format!("{direction}-a.onnx"), &lstm_member(0.0, 3, direction));
        let b = write(&dir, &format!("{direction}-b.onnx"), &lstm_member(1.0, 5, direction));
        for precision in ["fp32", "fp16"] {
            let pkg = dir.path().join(format!("{direction}-{precision}.mlpackage"));
            ok(fusec(&["fuse", s(&a), s(&b), "-o", s(&pkg), "--precision", precision]));
            let report = coremltools_check(&pkg);
            let h = 6 * dirs;
            assert!(report.contains("\nop lstm 2\n"), "{direction} {precision}:\n{report}");
            let lstm = format!("\nlstm fp32[8, 2, {h}] fp32[2, {h}] fp32[2, {h}]\n");
            assert_eq!(report.matches(&lstm).count(), 2, "{direction} {precision}: {lstm}\n{report}");
            // The run-time initial cell state, [dirs, batch, hidden] -> [batch, dirs, hidden] (then flat).
            let state = format!("\ntranspose fp32[2, {dirs}, 6]\n");
            assert_eq!(report.matches(&state).count(), 2, "{direction} {precision}: {state}\n{report}");
            // The output in ONNX's layout, [seq, dirs, batch, hidden].
            let y = if dirs == 2 { "\ntranspose fp32[8, 2, 2, 6]\n" } else { "\nreshape fp32[8, 1, 2, 6]\n" };
            assert_eq!(report.matches(y).count(), 2, "{direction} {precision}: {y}\n{report}");
            if precision == "fp16" {
                // The lstm computes in fp32: its input cast up, its output down.
                for cast in ["\ncast fp32[8, 2, 8]\n".to_string(), format!("\ncast fp16[8, {dirs}, 2, 6]\n")] {
                    assert!(report.contains(&cast), "{direction}: {cast}\n{report}");
                }
            }
            let (out_a, out_b) =
                (format!("output {direction}_a_logits fp32[2, 3]"), format!("output {direction}_b_logits fp32[2, 5]"));
            assert!(report.contains(&out_a) && report.contains(&out_b), "{report}");
        }
    }
    let a = write(&dir, "reverse-a.onnx", &lstm_member(0.0, 3, "reverse"));
    let b = write(&dir, "reverse-b.onnx", &lstm_member(1.0, 5, "reverse"));
    let pkg = dir.path().join("reverse.mlpackage");
    let line = one_error_line(&fusec(&["fuse", s(&a), s(&b), "-o", s(&pkg)]), 2);
    assert!(line.contains("(LSTM)") && line.contains("direction reverse is not mapped"), "{line}");
    assert!(!pkg.exists(), "nothing half-written");
    assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
}

#[test]
fn verify_and_bench_with_device_coreml_say_it_is_not_available_here() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = resize_members(&dir, "nearest");
    let onnx = dir.path().join("super.onnx");
    ok(fusec(&["fuse", s(&a), s(&b), "-o", s(&onnx)]));
    let verify = fusec(&["verify", s(&onnx), "--members", s(&a), s(&b), "--device", "coreml", "--runs", "1"]);
    let bench = fusec(&["bench", s(&a), s(&b), "--device", "coreml", "--runs", "1"]);
    for out in [verify, bench] {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{err}");
        let line = err.lines().last().unwrap();
        assert!(line.starts_with("error: ") && line.contains("no CoreML execution provider"), "{err}");
        if cfg!(target_os = "linux") {
            assert!(line.contains("on Linux, --device coreml is not available"), "{line}");
        }
    }
    // A Core ML package is not something verify can run here: it says so.
    let pkg = dir.path().join("super.mlpackage");
    ok(fusec(&["fuse", s(&a), s(&b), "-o", s(&pkg)]));
    let line = one_error_line(&fusec(&["verify", s(&pkg), "--members", s(&a), s(&b)]), 2);
    assert!(line.contains("a Core ML model") && line.contains("macOS"), "{line}");
}

#[test]
fn every_mapped_op_loads_and_type_checks_in_coremltools() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(&dir, "a.onnx", &many_ops_member(0.0));
    let b = write(&dir, "b.onnx", &many_ops_member(1.0));
    for (lowering, precision) in [("separate", "fp32"), ("grouped", "fp32"), ("separate", "fp16")] {
        let pkg = dir.path().join(format!("{lowering}_{precision}.mlpackage"));
        ok(fusec(&["fuse", s(&a), s(&b), "-o", s(&pkg), "--lowering", lowering, "--precision", precision]));
        let report = coremltools_check(&pkg);
        if lowering == "separate" {
            for op in [
                "pad",
                "conv",
                "sigmoid_hard",
                "clip",
                "avg_pool",
                "max_pool",
                "slice_by_index",
                "transpose",
                "reshape",
                "softmax",
                "layer_norm",
                "tanh",
                "expand_dims",
                "reduce_mean",
                "matmul",
                "relu",
                "sub",
                "real_div",
                "reduce_sum",
                "concat",
                "split",
            ] {
                assert!(report.contains(&format!("\nop {op} ")), "{lowering} {precision}: no {op}:\n{report}");
            }
        }
        assert!(
            report.contains("output a_y1 fp32[1, 1, 4, 12]") && report.contains("output b_y3 fp32[1, 4]"),
            "{report}"
        );
    }
}

/// The ops of newer families (ReduceL2, InstanceNormalization, CumSum,
/// Tile and the unary math ops) map to MIL and type-check.
#[test]
fn ops_of_newer_families_load_and_type_check_in_coremltools() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(&dir, "a.onnx", &common::models::newer_families_member(0.0, 3));
    let b = write(&dir, "b.onnx", &common::models::newer_families_member(1.0, 5));
    for lowering in ["separate", "grouped"] {
        let pkg = dir.path().join(format!("{lowering}.mlpackage"));
        ok(fusec(&["fuse", s(&a), s(&b), "-o", s(&pkg), "--lowering", lowering]));
        let report = coremltools_check(&pkg);
        for op in
            ["reduce_l2_norm", "instance_norm", "cumsum", "tile", "abs", "mul", "exp", "log", "inverse", "sin", "cos"]
        {
            assert!(report.contains(&format!("\nop {op} ")), "{lowering}: no {op}:\n{report}");
        }
        assert!(
            report.contains("output a_logits fp32[1, 3]") && report.contains("output b_logits fp32[1, 5]"),
            "{report}"
        );
    }
}

/// Einsum (MViTv2's relative positions, an attention product; stacked on
/// a member axis with a member letter when grouped) lowers to transposes,
/// reshapes and a batched matmul, and ReduceMax and ReduceMin (Hiera) map
/// to `reduce_max` and `reduce_min`, ScatterND on run-time values to
/// `scatter_nd` (mode update), LeakyRelu (CSPNet) to `leaky_relu`:
/// packages that coremltools loads and
/// type-checks, fp32 and fp16. (What the lowering computes is checked
/// against einsum's definition in fuse-ir's `einsum` tests.)
#[test]
fn ops_of_more_families_load_and_type_check_in_coremltools() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(&dir, "a.onnx", &common::models::more_families_member(0.0, 0.0, 3));
    let b = write(&dir, "b.onnx", &common::models::more_families_member(1.0, 1.0, 5));
    for (lowering, extra) in [("separate", None), ("grouped", None), ("grouped", Some("fp16"))] {
        let pkg = dir.path().join(format!("{lowering}{}.mlpackage", extra.unwrap_or("")));
        let mut args = vec!["fuse", s(&a), s(&b), "-o", s(&pkg), "--lowering", lowering];
        if let Some(p) = extra {
            args.extend(["--precision", p]);
        }
        ok(fusec(&args));
        let report = coremltools_check(&pkg);
        for op in ["matmul", "transpose", "reshape", "reduce_max", "reduce_min", "scatter_nd", "leaky_relu"] {
            assert!(report.contains(&format!("\nop {op} ")), "{lowering}: no {op}:\n{report}");
        }
        // Each member's three einsums, or (grouped) the attention and the
        // projection stacked on
        // a member axis; MViTv2's relative positions stay per member, as
        // their stacked form would have 6 dimensions, Core ML's limit 5
        // (check-coreml.py checks every tensor's rank); and each member's Gemm.
        let matmuls = if lowering == "separate" { 6 + 2 } else { 4 + 2 };
        assert!(report.contains(&format!("\nop matmul {matmuls}\n")), "{lowering}:\n{report}");
        assert_eq!(
            report.matches("\nmatmul fp32[6, 6, 5]").count() + report.matches("\nmatmul fp16[6, 6, 5]").count(),
            2,
            "{report}"
        );
        let attention = if lowering == "separate" { "[2, 36, 36]" } else { "[4, 36, 36]" };
        let want = if lowering == "separate" { 2 } else { 1 };
        assert_eq!(
            report.matches(&format!("matmul fp32{attention}")).count()
                + report.matches(&format!("matmul fp16{attention}")).count(),
            want,
            "{report}"
        );
        assert!(
            report.contains("output a_logits fp32[1, 3]") && report.contains("output b_logits fp32[1, 5]"),
            "{report}"
        );
    }
}

/// The ops of text encoders as `transformers` 5 exports them
/// (`common::models::text_encoder_member`): `IsNaN` as `not_equal` of a
/// value and itself, run-time `GatherElements` as `gather_along_axis`,
/// `Not`, `Pow`, `Min` and `Max`.
#[test]
fn ops_of_text_encoders_load_and_type_check_in_coremltools() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(&dir, "a.onnx", &common::models::text_encoder_member(0.0, 3));
    let b = write(&dir, "b.onnx", &common::models::text_encoder_member(1.0, 5));
    for (lowering, precision) in [("separate", "fp32"), ("grouped", "fp32"), ("grouped", "fp16")] {
        let pkg = dir.path().join(format!("{lowering}-{precision}.mlpackage"));
        ok(fusec(&["fuse", s(&a), s(&b), "-o", s(&pkg), "--lowering", lowering, "--precision", precision]));
        let report = coremltools_check(&pkg);
        for op in ["not_equal", "gather_along_axis", "logical_not", "pow", "minimum", "maximum", "select", "cumsum"] {
            assert!(report.contains(&format!("\nop {op} ")), "{lowering} {precision}: no {op}:\n{report}");
        }
        assert!(
            report.contains("output a_logits fp32[1, 3]") && report.contains("output b_logits fp32[1, 5]"),
            "{report}"
        );
    }
}

/// `Pow` with an integer exponent: MIL's `pow` takes one dtype, so the
/// exponent is cast to the base's (fp32, and fp16 in an fp16 program).
#[test]
fn pow_with_an_integer_exponent_type_checks_in_coremltools() {
    let dir = tempfile::tempdir().unwrap();
    let member = |seed: f32| {
        fusec_exporters::onnx_builder::OnnxBuilder::new(17)
            .input("x", &[1, 4])
            .output("y", &[1, 4])
            .init_f32("w", &[1, 4], &[seed, 1.0, 2.0, 3.0])
            .init_i64_shaped("three", &[1], &[3])
            .node("Mul", &["x", "w"], &["m"], vec![])
            .node("Pow", &["m", "three"], &["y"], vec![])
            .build()
    };
    let a = write(&dir, "a.onnx", &member(0.5));
    let b = write(&dir, "b.onnx", &member(1.5));
    for precision in ["fp32", "fp16"] {
        let pkg = dir.path().join(format!("{precision}.mlpackage"));
        ok(fusec(&["fuse", s(&a), s(&b), "-o", s(&pkg), "--precision", precision]));
        let report = coremltools_check(&pkg);
        // The exponent, [1], cast to the program's float type.
        assert!(report.contains("\nop pow 2\n"), "{precision}:\n{report}");
        assert!(report.contains(&format!("\ncast {precision}[1]\n")), "{precision}:\n{report}");
    }
}

/// The transformer trios (BERT from both torch exporters and from
/// HuggingFace folders, ViT from both exporters) fused into Core ML
/// packages that coremltools loads and type-checks, fp32 and fp16: token
/// inputs are int32 at the interface, Expand is a tile, GatherND a
/// gather_nd, bool gathers go through int32, and a `select` whose condition
/// is larger than both branches gets its branch broadcast; stacked on a
/// member axis too.
#[test]
fn transformer_trios_export_packages_that_coremltools_loads_and_type_checks() {
    let t = common::transformers_dir();
    let dir = tempfile::tempdir().unwrap();
    let sets: [(&str, &[&str]); 5] = [
        ("bert_tiny_default", &["t1.hf", "t2.hf", "t3.hf"]),
        ("bert_tiny_default", &["t1.onnx", "t2.onnx", "t3.onnx"]),
        ("bert_tiny_ts", &["t1.onnx", "t2.onnx", "t3.onnx"]),
        ("vit_micro_default", &["v2.onnx", "v5.onnx", "v9.onnx"]),
        ("vit_micro_ts", &["v2.onnx", "v5.onnx", "v9.onnx"]),
    ];
    for (k, (set, files)) in sets.iter().enumerate() {
        // The default lowering keeps the layers per member; grouped stacks
        // them on a member axis (rank-5 attention tensors).
        for (precision, lowering) in [("fp32", "regions"), ("fp16", "regions"), ("fp32", "grouped")] {
            let pkg = dir.path().join(format!("{k}-{precision}-{lowering}.mlpackage"));
            let members: Vec<PathBuf> = files.iter().map(|f| t.join(set).join(f)).collect();
            let mut args: Vec<&str> = vec!["fuse"];
            args.extend(members.iter().map(|p| s(p)));
            args.extend_from_slice(&[
                "-o",
                s(&pkg),
                "--seq-len",
                "32",
                "--precision",
                precision,
                "--lowering",
                lowering,
            ]);
            ok(fusec(&args));
            let report = coremltools_check(&pkg);
            let first = files[0].split('.').next().unwrap();
            if set.starts_with("bert") {
                assert!(report.contains("input input_ids int32[1, 32]"), "{set}: {report}");
                assert!(report.contains(&format!("output {first}_logits fp32[1, 1]")), "{set}: {report}");
            } else {
                assert!(report.contains("input image fp32[1, 3, 32, 32]"), "{set}: {report}");
            }
            assert!(report.contains("op matmul") || report.contains("op linear"), "{set}: {report}");
            assert!(report.contains("op layer_norm") || report.contains("op reduce_mean"), "{set}: {report}");
            assert!(report.contains("op softmax"), "{set}: {report}");
        }
    }
}
