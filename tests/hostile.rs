//! Hostile input and failure, end to end through the CLI: files that lie
//! about sizes, absurd dimensions, external data that points outside the
//! model's directory, exports that fail or are interrupted midway, output
//! determinism, and `--json` errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::checkpoints::{write_checkpoint_seeded, Spec};
use common::{fuse_args, fusec, leftovers, ok, one_error_line, reference_dir, reference_members, s, write};
use fusec_exporters::onnx_builder::{attr_ints, OnnxBuilder};

/// `convert` fails with exit 2 and one line naming `file` and `what`,
/// writing nothing.
fn assert_convert_rejects(file: &Path, what: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    let line = one_error_line(&fusec(&["convert", s(file), "-o", s(&out)]), 2);
    assert!(line.contains(s(file)), "the file is not named: {line}");
    for w in what {
        assert!(line.contains(w), "expected `{w}` in: {line}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "convert left files");
    line
}

#[test]
fn a_tensor_declaring_more_bytes_than_it_holds_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = OnnxBuilder::new(17)
        .input("x", &[1, 1000])
        .output("y", &[1, 1000])
        .init_raw("b", &[1000], &[0u8; 16])
        .node("Add", &["x", "b"], &["y"], vec![])
        .build();
    assert_convert_rejects(
        &write(&dir, "short.onnx", &bytes),
        &["initializer `b`", "needs 4000 bytes but 16 were given"],
    );
}

#[test]
fn absurd_dimensions_and_element_counts_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let huge_input = OnnxBuilder::new(17)
        .input("x", &[1, 1 << 40])
        .output("y", &[1, 1 << 40])
        .node("Relu", &["x"], &["y"], vec![])
        .build();
    assert_convert_rejects(
        &write(&dir, "huge_input.onnx", &huge_input),
        &["graph input `x`", "more than 2147483648 elements"],
    );
    let deep = vec![1i64; 17];
    let deep_input =
        OnnxBuilder::new(17).input("x", &deep).output("y", &deep).node("Relu", &["x"], &["y"], vec![]).build();
    assert_convert_rejects(&write(&dir, "deep.onnx", &deep_input), &["rank 17"]);
    // A small input padded into an absurd output: the node is named.
    let pad = OnnxBuilder::new(17)
        .input("x", &[1, 4])
        .output("y", &[1, 4])
        .init_i64("pads", &[0, 0, 0, 1 << 40])
        .node_named("blow_up", "Pad", &["x", "pads"], &["y"], vec![])
        .build();
    assert_convert_rejects(&write(&dir, "pad.onnx", &pad), &["node `blow_up` (Pad)", "more than 2147483648 elements"]);
    // An overflowing element count in an initializer.
    let overflow = OnnxBuilder::new(17)
        .input("x", &[1, 4])
        .output("y", &[1, 4])
        .init_raw("w", &[1 << 40, 1 << 40, 1 << 40], &[])
        .node("Add", &["x", "w"], &["y"], vec![])
        .build();
    assert_convert_rejects(&write(&dir, "overflow.onnx", &overflow), &["initializer `w`", "too many elements"]);
    // --image-size far beyond any machine.
    let st = dir.path().join("small.safetensors");
    write_checkpoint_seeded(&st, &Spec::small(8, 1, 1, 2).tensors(), None, 1);
    let out = dir.path().join("o.onnx");
    let line = one_error_line(&fusec(&["convert", s(&st), "--image-size", "12800000", "-o", s(&out)]), 2);
    assert!(line.contains("image size 12800000 is too large"), "{line}");
}

/// y = x + w with `w` (1x4 f32) stored as external data.
fn external_model(dir: &Path, name: &str, external: &[(&str, &str)]) -> PathBuf {
    let bytes = OnnxBuilder::new(17)
        .input("x", &[1, 4])
        .output("y", &[1, 4])
        .init_external("w", &[1, 4], external)
        .node("Add", &["x", "w"], &["y"], vec![])
        .build();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn external_data_is_read_from_the_models_directory_only() {
    let root = tempfile::tempdir().unwrap();
    let models = root.path().join("models");
    std::fs::create_dir_all(models.join("weights")).unwrap();
    let w: Vec<u8> = [10f32, 20., 30., 40.].iter().flat_map(|x| x.to_le_bytes()).collect();
    // 8 bytes of something else first, then the tensor.
    let mut file = vec![0xAB; 8];
    file.extend_from_slice(&w);
    std::fs::write(models.join("weights/w.bin"), &file).unwrap();
    std::fs::write(root.path().join("outside.bin"), &file).unwrap();

    // Read and used: run it and check y = x + w.
    let good =
        external_model(&models, "good.onnx", &[("location", "weights/w.bin"), ("offset", "8"), ("length", "16")]);
    let input = write_input(root.path(), &[1.0, 2.0, 3.0, 4.0]);
    let out = root.path().join("y.safetensors");
    ok(fusec(&["run", s(&good), "--input", s(&input), "-o", s(&out)]));
    let y = fusec_verify::io::read_tensors(&out).unwrap();
    assert_eq!(y[0].1.iter().copied().collect::<Vec<f32>>(), [11.0, 22.0, 33.0, 44.0]);
    // And written inline by convert.
    let inline = root.path().join("inline.onnx");
    ok(fusec(&["convert", s(&good), "-o", s(&inline)]));
    ok(fusec(&["run", s(&inline), "--input", s(&input), "-o", s(&out)]));

    // (model file, external_data entries, expected reason)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "dotdot.onnx",
            vec![("location", "../outside.bin"), ("offset", "8")],
            "must be a relative path inside the model's directory",
        ),
        ("absolute.onnx", vec![("location", "/etc/passwd")], "must be a relative path inside the model's directory"),
        ("missing.onnx", vec![("location", "weights/none.bin")], "external data file `weights/none.bin`"),
        ("past_end.onnx", vec![("location", "weights/w.bin"), ("offset", "16")], "fewer than offset 16 + length 16"),
        (
            "wrong_length.onnx",
            vec![("location", "weights/w.bin"), ("length", "8")],
            "declares 8 bytes but the tensor needs 16",
        ),
        ("no_location.onnx", vec![("offset", "0")], "external data without a location"),
        ("directory.onnx", vec![("location", "weights")], "not a regular file"),
    ];
    for (name, ext, what) in &cases {
        let m = external_model(&models, name, ext);
        assert_convert_rejects(&m, &["initializer `w`", what]);
    }
    // A symlink inside the directory that points outside it.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(root.path().join("outside.bin"), models.join("link.bin")).unwrap();
        let m = external_model(&models, "symlink.onnx", &[("location", "link.bin"), ("offset", "8")]);
        assert_convert_rejects(&m, &["resolves outside the model's directory"]);
    }
}

fn write_input(dir: &Path, x: &[f32]) -> PathBuf {
    let t = vec![("x".to_string(), ndarray::ArrayD::from_shape_vec(vec![1, x.len()], x.to_vec()).unwrap())];
    let p = dir.join("x.safetensors");
    std::fs::write(&p, fusec_verify::io::to_safetensors_bytes(&t).unwrap()).unwrap();
    p
}

#[test]
fn the_same_members_give_byte_identical_output_run_after_run() {
    let members = reference_members();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (d1.path().join("super.onnx"), d2.path().join("super.onnx"));
    ok(fusec(&fuse_args(&members, &a)));
    ok(fusec(&fuse_args(&members, &b)));
    let (a, b) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert!(a.len() > 40_000_000 && a == b, "two fusions of the same members differ");
    // ONNX members too, in every lowering.
    let dir = tempfile::tempdir().unwrap();
    let onnx: Vec<String> =
        ["coco", "aquarium"].iter().map(|m| s(&reference_dir().join(format!("{m}.onnx"))).to_string()).collect();
    for lowering in ["grouped", "separate", "regions"] {
        let outs: Vec<Vec<u8>> = (0..2)
            .map(|i| {
                let out = dir.path().join(format!("{lowering}{i}.onnx"));
                let mut args = fuse_args(&onnx, &out);
                args.extend(["--lowering", lowering, "--keep-bn"]);
                ok(fusec(&args));
                std::fs::read(&out).unwrap()
            })
            .collect();
        assert!(outs[0] == outs[1], "{lowering}: two fusions differ");
    }
}

#[test]
fn an_export_that_fails_midway_keeps_the_existing_file() {
    let members = reference_members();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("super.onnx");
    std::fs::write(&out, b"the good model from yesterday").unwrap();
    // A 10 MB file size limit: the 48.8 MB export fails partway through its write.
    let fuse_limited = |out: &Path| {
        Command::new("bash")
            .arg("-c")
            .arg("ulimit -f 10240; exec \"$@\"")
            .arg("fusec")
            .arg(env!("CARGO_BIN_EXE_fusec"))
            .args(fuse_args(&members, out))
            .output()
            .unwrap()
    };
    let res = fuse_limited(&out);
    let err = String::from_utf8_lossy(&res.stderr).to_string();
    assert!(!res.status.success(), "{err}");
    let line = err.lines().last().unwrap();
    assert!(line.starts_with("error: ") && line.contains(s(&out)) && line.contains("too large"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"the good model from yesterday");
    assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
    // Same for a Core ML package: the existing one stays whole.
    let pkg = dir.path().join("super.mlpackage");
    ok(fusec(&["fuse", &members[0], &members[1], "-o", s(&pkg)]));
    let before = std::fs::read(pkg.join("Data/com.apple.CoreML/weights/weight.bin")).unwrap();
    let res = fuse_limited(&pkg);
    assert!(!res.status.success());
    assert_eq!(std::fs::read(pkg.join("Data/com.apple.CoreML/weights/weight.bin")).unwrap(), before);
    assert!(leftovers(dir.path()).is_empty(), "{:?}", leftovers(dir.path()));
}

#[test]
fn an_interrupted_fuse_leaves_the_old_file_or_the_complete_new_one() {
    let members = reference_members();
    let dir = tempfile::tempdir().unwrap();
    // The complete new output, for comparison.
    let complete = dir.path().join("complete.onnx");
    ok(fusec(&fuse_args(&members, &complete)));
    let complete = std::fs::read(&complete).unwrap();
    let out = dir.path().join("super.onnx");
    let old = b"the good model from yesterday".to_vec();
    let mut outcomes = (0, 0);
    for delay_ms in [0u64, 30, 60, 100, 150, 200, 300, 450, 700, 1000] {
        std::fs::write(&out, &old).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_fusec"))
            .args(fuse_args(&members, &out))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
        let status = child.wait().unwrap();
        let now = std::fs::read(&out).unwrap();
        if now == old {
            outcomes.0 += 1;
            assert!(!status.success(), "{delay_ms} ms: exit {status} but the output was not written");
        } else {
            assert!(now == complete, "{delay_ms} ms: the output is neither the old file nor the complete new one");
            outcomes.1 += 1;
        }
        assert!(leftovers(dir.path()).is_empty(), "{delay_ms} ms: {:?}", leftovers(dir.path()));
    }
    assert!(outcomes.0 > 0, "no run was interrupted before it finished: {outcomes:?}");
}

#[test]
fn json_errors_name_the_file_node_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = OnnxBuilder::new(17)
        .input("x", &[1, 4])
        .output("y", &[1, 4])
        .init_f32("b", &[3], &[1.0, 2.0, 3.0])
        .node_named("add", "Add", &["x", "b"], &["y"], vec![])
        .build();
    let bad = write(&dir, "mismatch.onnx", &bytes);
    let out = dir.path().join("out.onnx");
    let res = fusec(&["convert", s(&bad), "-o", s(&out), "--json"]);
    assert_eq!(res.status.code(), Some(2));
    let err = String::from_utf8(res.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    let j: serde_json::Value = serde_json::from_str(&err).unwrap();
    assert_eq!(j["error"]["exit_code"], 2);
    assert_eq!(j["error"]["kind"], "input");
    assert_eq!(j["error"]["file"], s(&bad));
    assert_eq!(j["error"]["node"], "add");
    assert!(j["error"]["message"].as_str().unwrap().contains("do not broadcast"), "{j}");

    let short = OnnxBuilder::new(17)
        .input("x", &[1, 4])
        .output("y", &[1, 4])
        .init_raw("bias", &[4], &[0u8; 3])
        .node("Add", &["x", "bias"], &["y"], vec![attr_ints("unused", &[])])
        .build();
    let bad = write(&dir, "short.onnx", &short);
    let res = fusec(&["--json", "convert", s(&bad), "-o", s(&out)]);
    let j: serde_json::Value = serde_json::from_slice(&res.stderr).unwrap();
    assert_eq!(j["error"]["tensor"], "bias", "{j}");
    // Usage errors too.
    let res = fusec(&["fuse", "--json", s(&bad), s(&bad)]);
    assert_eq!(res.status.code(), Some(2));
    let j: serde_json::Value = serde_json::from_slice(&res.stderr).unwrap();
    assert!(j["error"]["message"].as_str().unwrap().contains("--output"), "{j}");
    assert!(!out.exists());
}

#[test]
fn a_zero_channel_conv_is_refused_at_import_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(&dir, "zero.onnx", &common::models::zero_channel_model());
    let line = assert_convert_rejects(&bad, &["tensor `c`", "node `conv` (Conv)", "zero-sized dimension"]);
    assert!(line.contains("f32[1,0,4,4]"), "{line}");
    // Fusing two of them: the same error, exit 2, nothing written.
    let out = dir.path().join("super.onnx");
    let res = fusec(&["fuse", s(&bad), s(&bad), "-o", s(&out), "--json"]);
    assert_eq!(res.status.code(), Some(2));
    let j: serde_json::Value = serde_json::from_slice(&res.stderr).unwrap();
    assert_eq!(j["error"]["tensor"], "c", "{j}");
    assert_eq!(j["error"]["file"], s(&bad), "{j}");
    assert!(!out.exists());
}

#[test]
fn an_unsupported_model_lists_every_op_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = OnnxBuilder::new(17)
        .input("x", &[1, 4])
        .output("y", &[1, 4])
        .node_named("e1", "Selu", &["x"], &["a"], vec![])
        .node_named("e2", "Selu", &["a"], &["b"], vec![])
        .node_named("s", "Softplus", &["b"], &["c"], vec![])
        .node_named("r", "Relu", &["c"], &["y"], vec![])
        .build();
    let bad = write(&dir, "selu.onnx", &bytes);
    let line =
        assert_convert_rejects(&bad, &["unsupported ops: Selu (2 nodes), Softplus (1 node); first: node `e1` (Selu)"]);
    assert!(!line.contains("Relu"), "{line}");
    let out = dir.path().join("out.onnx");
    let res = fusec(&["convert", s(&bad), "-o", s(&out), "--json"]);
    let j: serde_json::Value = serde_json::from_slice(&res.stderr).unwrap();
    assert_eq!(j["error"]["node"], "e1", "{j}");
}

/// What `umask` is for this process (read and put back).
fn umask() -> u32 {
    let out = Command::new("sh").args(["-c", "umask"]).output().unwrap();
    u32::from_str_radix(String::from_utf8(out.stdout).unwrap().trim(), 8).unwrap()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn written_files_get_the_usual_mode() {
    let dir = tempfile::tempdir().unwrap();
    let members = reference_members();
    let (onnx, pkg) = (dir.path().join("super.onnx"), dir.path().join("super.mlpackage"));
    ok(fusec(&["fuse", &members[0], &members[1], "-o", s(&onnx)]));
    ok(fusec(&["fuse", &members[0], &members[1], "-o", s(&pkg)]));
    let input = reference_dir().join("input.safetensors");
    let out = dir.path().join("out.safetensors");
    ok(fusec(&["run", &members[1], "--input", s(&input), "-o", s(&out)]));
    let (file, dirmode) = (0o666 & !umask(), 0o777 & !umask());
    for f in [
        &onnx,
        &out,
        &pkg.join("Manifest.json"),
        &pkg.join("Data/com.apple.CoreML/model.mlmodel"),
        &pkg.join("Data/com.apple.CoreML/weights/weight.bin"),
    ] {
        assert_eq!(mode(f), file, "{}: mode {:o}", f.display(), mode(f));
    }
    for d in [&pkg, &pkg.join("Data"), &pkg.join("Data/com.apple.CoreML/weights")] {
        assert_eq!(mode(d), dirmode, "{}: mode {:o}", d.display(), mode(d));
    }
    // A replaced file gets the usual mode too (not the old file's, not 0600).
    std::fs::set_permissions(&onnx, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    ok(fusec(&["fuse", &members[0], &members[1], "-o", s(&onnx)]));
    assert_eq!(mode(&onnx), file);
}

#[test]
fn json_makes_stderr_one_object_on_success_and_failure() {
    let dir = tempfile::tempdir().unwrap();
    let members = reference_members();
    let out = dir.path().join("super.onnx");
    // Success: the per-member lines and the assumption come as notes and
    // warnings of the one object.
    let res = ok(fusec(&["fuse", &members[0], &members[1], "-o", s(&out), "--json"]));
    let err = String::from_utf8(res.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    let j: serde_json::Value = serde_json::from_str(&err).unwrap();
    let notes = j["notes"].as_array().unwrap();
    assert!(notes[0].as_str().unwrap().contains("coco.safetensors: efficientdet_d0"), "{j}");
    assert!(notes.last().unwrap().as_str().unwrap().starts_with(&format!("wrote {}", s(&out))), "{j}");
    assert_eq!(j["warnings"].as_array().unwrap().len(), 1, "the variant assumption, once: {j}");
    assert!(j.get("error").is_none(), "{j}");
    // Failure after members were described: still one object.
    let res = fusec(&["fuse", &members[0], &members[1], "-o", s(&dir.path().join("super.txt")), "--json"]);
    assert_eq!(res.status.code(), Some(2));
    let err = String::from_utf8(res.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    let j: serde_json::Value = serde_json::from_str(&err).unwrap();
    assert_eq!(j["error"]["kind"], "input", "{j}");
}

#[test]
fn an_ambiguous_checkpoint_is_said_once_with_the_flag_that_changes_it() {
    let dir = tempfile::tempdir().unwrap();
    let members = reference_members();
    let out = dir.path().join("super.onnx");
    let res = ok(fusec(&["fuse", &members[0], &members[1], &members[2], "-o", s(&out)]));
    let err = String::from_utf8(res.stderr).unwrap();
    let said: Vec<&str> = err.lines().filter(|l| l.contains("a TensorFlow port")).collect();
    assert_eq!(said.len(), 1, "{err}");
    assert!(
        said[0].starts_with("warning: assumed the PyTorch-trained variant efficientdet_d0")
            && said[0].contains("--arch tf_efficientdet_d0"),
        "{err}"
    );
    // Saying which variant silences it.
    let res = ok(fusec(&["fuse", &members[0], &members[1], "-o", s(&out), "--arch", "efficientdet_d0"]));
    assert!(!String::from_utf8(res.stderr).unwrap().contains("warning"));
}

/// `name` (f32 values; integer inputs take them exactly) as an input file.
fn write_named_input(dir: &Path, name: &str, shape: &[usize], x: &[f32]) -> PathBuf {
    let t = vec![(name.to_string(), ndarray::ArrayD::from_shape_vec(shape.to_vec(), x.to_vec()).unwrap())];
    let p = dir.join(format!("{name}.safetensors"));
    std::fs::write(&p, fusec_verify::io::to_safetensors_bytes(&t).unwrap()).unwrap();
    p
}

/// Members whose weights together pass protobuf's 2 GiB, which no ONNX
/// reader parses in one file: each a 1.1 GB embedding table (a sparse file
/// of zeros but for its first rows, its own). The fused model keeps its
/// weights beside it (`super.onnx.data`, ONNX external data), `fuse` says
/// so, and `verify` loads the file as it is, with the weights beside it,
/// and finds every output equal to the members'.
#[test]
fn a_fused_model_past_2_gib_keeps_its_weights_beside_it_and_verifies() {
    common::require_ort();
    let dir = tempfile::tempdir().unwrap();
    const ROWS: u64 = 68_750_000; // x 4 floats x 4 bytes: 1.1 GB a member
    let member = |name: &str, seed: f32| -> PathBuf {
        use std::io::Write;
        let bin = format!("{name}.bin");
        let mut f = std::fs::File::create(dir.path().join(&bin)).unwrap();
        f.set_len(ROWS * 16).unwrap();
        let head: Vec<u8> = (0..64).flat_map(|i| (i as f32 * 0.1 + seed).sin().to_le_bytes()).collect();
        f.write_all(&head).unwrap();
        let bytes = OnnxBuilder::new(17)
            .input_typed("ids", fuse_ir::DType::I64, &[1, 8])
            .output("y", &[1, 8, 4])
            .init_external("table", &[ROWS as i64, 4], &[("location", &bin)])
            .node("Gather", &["table", "ids"], &["y"], vec![])
            .build();
        write(&dir, &format!("{name}.onnx"), &bytes)
    };
    let (a, b) = (member("a", 0.0), member("b", 1.0));
    let fused = dir.path().join("super.onnx");
    let out = ok(fusec(&["fuse", s(&a), s(&b), "-o", s(&fused)]));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let data = dir.path().join("super.onnx.data");
    assert!(
        stderr.contains(&format!("its weights in {} (2200.0 MB: past protobuf's 2 GiB", data.display())),
        "{stderr}"
    );
    assert!(std::fs::metadata(&fused).unwrap().len() < 1 << 20);
    assert!(std::fs::metadata(&data).unwrap().len() >= 2 * ROWS * 16);
    // Rows 0 to 7: each member's own.
    let ids = write_named_input(dir.path(), "ids", &[1, 8], &[0., 1., 2., 3., 4., 5., 6., 7.]);
    let out = ok(fusec(&[
        "verify",
        s(&fused),
        "--members",
        s(&a),
        s(&b),
        "--input",
        s(&ids),
        "--runtime",
        "ort",
        "--runs",
        "0",
    ]));
    let report = String::from_utf8(out.stdout).unwrap();
    assert!(report.contains("equivalence: ok (2 outputs compared"), "{report}");
    assert!(!String::from_utf8(out.stderr).unwrap().contains("does not load"));
}

/// A model with its weights beside it (as fusec writes one past 2 GiB,
/// here forced on a small one): `run`, `verify` (on both runtimes) and
/// `inspect` read it as it is; without its weights' file, each names that
/// file.
#[test]
fn a_model_with_its_weights_beside_it_runs_verifies_and_is_inspected() {
    common::require_ort();
    let dir = tempfile::tempdir().unwrap();
    // Weights of 1 KiB or more (beside: the classifiers, the stacked convs)
    // and of less (inline: the biases).
    let a = write(&dir, "a.onnx", &common::models::pooled_classifier(0.0, 40, true));
    let b = write(&dir, "b.onnx", &common::models::pooled_classifier(1.0, 33, true));
    let inline = dir.path().join("inline.onnx");
    ok(fusec(&["fuse", s(&a), s(&b), "-o", s(&inline), "--lowering", "grouped"]));
    let g = fusec_frontends::onnx::load(&inline).unwrap();
    let beside = dir.path().join("beside.onnx");
    let w = fusec_exporters::onnx::write_file_at(&g, &beside, fusec_exporters::onnx::WeightsAt::Beside).unwrap();
    let (data, n) = w.data.clone().unwrap();
    assert_eq!(data, dir.path().join("beside.onnx.data"));
    assert!(n > 0 && n == std::fs::metadata(&data).unwrap().len());
    assert!(w.bytes < std::fs::metadata(&inline).unwrap().len());
    for rt in ["ort", "tract"] {
        let out = ok(fusec(&["verify", s(&beside), "--members", s(&a), s(&b), "--runtime", rt, "--runs", "0"]));
        let report = String::from_utf8(out.stdout).unwrap();
        assert!(report.contains("equivalence: ok (4 outputs compared"), "{rt}: {report}");
        assert!(!String::from_utf8(out.stderr).unwrap().contains("does not load"), "{rt}");
    }
    // Member subgraphs carry their weights inside their Scans: beside too.
    let scans = dir.path().join("scans.onnx");
    ok(fusec(&["fuse", s(&a), s(&b), "-o", s(&scans), "--lowering", "separate", "--member-subgraphs"]));
    let g = fusec_frontends::onnx::load(&scans).unwrap();
    let w = fusec_exporters::onnx::write_file_at(&g, &scans, fusec_exporters::onnx::WeightsAt::Beside).unwrap();
    assert!(w.data.unwrap().1 >= 2 * 1024, "the classifiers inside the Scans go beside");
    let out = ok(fusec(&["verify", s(&scans), "--members", s(&a), s(&b), "--runtime", "ort", "--runs", "0"]));
    assert!(String::from_utf8(out.stdout).unwrap().contains("equivalence: ok (4 outputs compared"));
    assert!(!String::from_utf8(out.stderr).unwrap().contains("does not load"));
    let out = ok(fusec(&["inspect", s(&beside)]));
    assert!(String::from_utf8(out.stdout).unwrap().contains("Gemm"));
    // Written inline over it, the model takes its weights' file with it;
    // a file of that name beside a model that does not read it stays.
    ok(fusec(&["convert", s(&beside), "-o", s(&beside)]));
    assert!(!data.exists());
    std::fs::write(&data, b"mine").unwrap();
    ok(fusec(&["convert", s(&inline), "-o", s(&beside)]));
    assert_eq!(std::fs::read(&data).unwrap(), b"mine");
    fusec_exporters::onnx::write_file_at(&g, &beside, fusec_exporters::onnx::WeightsAt::Beside).unwrap();
    std::fs::remove_file(&data).unwrap();
    let line = one_error_line(&fusec(&["inspect", s(&beside)]), 2);
    assert!(line.contains("beside.onnx.data"), "{line}");
}
