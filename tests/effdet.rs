//! EfficientDet from PyTorch `state_dict`s (safetensors): the reference
//! checkpoints against PyTorch's outputs, and checkpoints made here in the
//! effdet naming (other widths, depths, class counts, tf_ padding, broken
//! ones) for detection, graph building and errors.

mod common;

use common::checkpoints::*;
use common::*;
use fusec_verify::compare::diff;
use fusec_verify::io::read_tensors;
use safetensors::tensor::TensorView;
use safetensors::Dtype;

fn run_member(member: &str, runtime: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let ck = reference_dir().join(format!("{member}.safetensors"));
    let input = reference_dir().join("input.safetensors");
    let res = ok(fusec(&[
        "run",
        ck.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--runtime",
        runtime,
        "-o",
        out.to_str().unwrap(),
    ]));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("efficientdet_d0 (efficientnet_b0 backbone"), "{err}");
    assert_matches_reference(&out, member);
}

#[test]
fn coco_state_dict_on_tract() {
    run_member("coco", "tract");
}

#[test]
fn aquarium_state_dict_on_tract() {
    run_member("aquarium", "tract");
}

#[test]
fn vehicles_state_dict_on_tract() {
    run_member("vehicles", "tract");
}

#[test]
fn coco_state_dict_on_ort() {
    require_ort();
    run_member("coco", "ort");
}

#[test]
fn aquarium_state_dict_on_ort() {
    require_ort();
    run_member("aquarium", "ort");
}

#[test]
fn vehicles_state_dict_on_ort() {
    require_ort();
    run_member("vehicles", "ort");
}

#[test]
fn a_member_exports_to_onnx_that_ort_runs() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("vehicles.onnx");
    let out = dir.path().join("out.safetensors");
    let ck = reference_dir().join("vehicles.safetensors");
    ok(fusec(&["convert", ck.to_str().unwrap(), "-o", onnx.to_str().unwrap()]));
    // BatchNorm stays a node: folding is a pass, not the frontend's job.
    let inspect = String::from_utf8(ok(fusec(&["inspect", onnx.to_str().unwrap()])).stdout).unwrap();
    assert!(inspect.contains("BatchNormalization"), "{inspect}");
    assert!(inspect.contains("class_out_0 f32[1,180,64,64]"), "{inspect}"); // 9 x 20 classes
    let input = reference_dir().join("input.safetensors");
    ok(fusec(&[
        "run",
        onnx.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--runtime",
        "ort",
        "-o",
        out.to_str().unwrap(),
    ]));
    assert_matches_reference(&out, "vehicles");
}

// ---- checkpoints made here --------------------------------------------

#[test]
fn small_custom_config_is_detected_and_runs_alike_on_tract_and_ort() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(&dir, "small.safetensors", &Spec::small(16, 2, 2, 5));
    let text = String::from_utf8(ok(fusec(&["inspect", ck.to_str().unwrap()])).stdout).unwrap();
    assert!(
        text.contains("architecture: efficientdet (custom) (efficientnet backbone, stage depths [1, 2, 1, 1, 2, 1, 1]; BiFPN 16 channels x 2 cells; 2 head repeats; 5 classes x 9 anchors; input 512x512)"),
        "{text}"
    );
    let input = image(&dir, 128);
    let (a, b) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
    run_to(&ck, &["--image-size", "128"], &input, "tract", &a);
    run_to(&ck, &["--image-size", "128"], &input, "ort", &b);
    let (ta, tb) = (read_tensors(&a).unwrap(), read_tensors(&b).unwrap());
    assert_eq!(ta.len(), 10);
    for ((na, xa), (nb, xb)) in ta.iter().zip(&tb) {
        assert_eq!(na, nb);
        let d = diff(xa, xb).unwrap();
        assert!(d.within(MAX_ABS, MAX_REL_L2), "{na}: tract and ort differ: {d:?}");
        assert!(xa.iter().all(|v| v.is_finite()), "{na} has non-finite values");
    }
    let shape = |n: &str| ta.iter().find(|(k, _)| k == n).unwrap().1.shape().to_vec();
    assert_eq!(shape("class_out_0"), [1, 45, 16, 16]);
    assert_eq!(shape("class_out_4"), [1, 45, 1, 1]);
    assert_eq!(shape("box_out_2"), [1, 36, 4, 4]);
}

#[test]
fn small_custom_config_ir_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(&dir, "small.safetensors", &Spec::small(16, 1, 1, 2));
    let out = ok(fusec(&["inspect", "--ir", "--image-size", "128", ck.to_str().unwrap()]));
    insta::assert_snapshot!("small_effdet_ir", String::from_utf8(out.stdout).unwrap());
}

#[test]
fn tf_variant_pads_tensorflow_same_and_changes_the_outputs() {
    let dir = tempfile::tempdir().unwrap();
    // D0's BiFPN and heads, a narrow backbone: `--arch` must agree with them.
    let ck = checkpoint(&dir, "tfd0.safetensors", &Spec::small(64, 3, 3, 3));
    let text = String::from_utf8(ok(fusec(&["inspect", ck.to_str().unwrap()])).stdout).unwrap();
    assert!(text.contains("architecture: efficientdet_d0 ("), "{text}");
    let ir = |arch: &str| {
        String::from_utf8(
            ok(fusec(&["inspect", "--ir", "--arch", arch, "--image-size", "128", ck.to_str().unwrap()])).stdout,
        )
        .unwrap()
    };
    let stem = |ir: &str| ir.lines().find(|l| l.ends_with("# backbone.conv_stem")).unwrap().to_string();
    // 128 wide, 3x3 stride 2: "same" pads 0 before and 1 after; effdet pads 1, 1.
    assert!(stem(&ir("tf_efficientdet_d0")).contains("pads=[0,0,1,1]"), "{}", stem(&ir("tf_efficientdet_d0")));
    assert!(stem(&ir("efficientdet_d0")).contains("pads=[1,1,1,1]"), "{}", stem(&ir("efficientdet_d0")));
    let tf_pool = ir("tf_efficientdet_d0");
    let pool = tf_pool.lines().find(|l| l.contains("# fpn.resample.3.downsample")).unwrap();
    assert!(pool.contains("pads=[0,0,1,1]"), "{pool}");

    let input = image(&dir, 128);
    let (a, b) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
    run_to(&ck, &["--arch", "tf_efficientdet_d0", "--image-size", "128"], &input, "tract", &a);
    run_to(&ck, &["--image-size", "128"], &input, "tract", &b);
    let (ta, tb) = (read_tensors(&a).unwrap(), read_tensors(&b).unwrap());
    // tract is deterministic, so any difference comes from the graphs. The
    // random network's outputs are dominated by its BN shifts: padding and
    // eps show as a 1e-5..1e-4 relative change (measured 1.0e-4 at most).
    let worst = ta.iter().zip(&tb).map(|((_, x), (_, y))| diff(x, y).unwrap().rel_l2).fold(0f64, f64::max);
    assert!(worst > 5e-5, "tf_ padding should change the outputs; worst rel L2 {worst:e}");
}

#[test]
fn redundant_biases_of_tf_configs_are_used() {
    require_ort();
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec { redundant_bias: true, ..Spec::small(64, 3, 3, 3) };
    let ck = checkpoint(&dir, "tf_bias.safetensors", &spec);
    let args = ["--arch", "tf_efficientdet_d0", "--image-size", "128"];
    let mut ir_args = vec!["inspect", "--ir"];
    ir_args.extend_from_slice(&args);
    ir_args.push(ck.to_str().unwrap());
    let ir = String::from_utf8(ok(fusec(&ir_args)).stdout).unwrap();
    let pw = ir.lines().find(|l| l.ends_with("# class_net.conv_rep.0.conv_pw")).unwrap();
    assert!(!pw.contains(", _)"), "conv_pw should read its bias: {pw}");
    let input = image(&dir, 128);
    let (a, b) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
    run_to(&ck, &args, &input, "tract", &a);
    run_to(&ck, &args, &input, "ort", &b);
    for ((n, x), (_, y)) in read_tensors(&a).unwrap().iter().zip(&read_tensors(&b).unwrap()) {
        let d = diff(x, y).unwrap();
        assert!(d.within(MAX_ABS, MAX_REL_L2), "{n}: tract and ort differ: {d:?}");
    }
}

#[test]
fn header_hint_selects_the_tf_variant_only_when_it_fits() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec::small(64, 3, 3, 3);
    let fits = dir.path().join("fits.safetensors");
    write_checkpoint(&fits, &spec.tensors(), Some(("arch", "tf_efficientdet_d0")));
    let out = ok(fusec(&["inspect", fits.to_str().unwrap()]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("architecture: tf_efficientdet_d0 ("));
    let wrong = dir.path().join("wrong.safetensors");
    write_checkpoint(&wrong, &spec.tensors(), Some(("arch", "efficientdet_d4")));
    let out = ok(fusec(&["convert", wrong.to_str().unwrap(), "-o", dir.path().join("w.onnx").to_str().unwrap()]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("warning: ") && err.contains("ignored header hint arch=efficientdet_d4"), "{err}");
    assert!(err.contains("efficientdet_d0 ("), "{err}");
}

#[test]
fn larger_variants_are_recognized_from_bifpn_and_heads() {
    let dir = tempfile::tempdir().unwrap();
    for (fpn, cells, reps, want) in [(88, 4, 3, "efficientdet_d1"), (160, 6, 4, "efficientdet_d3")] {
        let ck = checkpoint(&dir, &format!("{want}.safetensors"), &Spec::small(fpn, cells, reps, 7));
        let text = String::from_utf8(ok(fusec(&["inspect", ck.to_str().unwrap()])).stdout).unwrap();
        assert!(text.contains(&format!("architecture: {want} (")), "{text}");
        assert!(
            text.contains(&format!("BiFPN {fpn} channels x {cells} cells; {reps} head repeats; 7 classes")),
            "{text}"
        );
    }
}

#[test]
fn fewer_classes_give_the_matching_slice_of_the_reference_outputs() {
    // coco's class head cut to its first 45 outputs reads as 5 classes x 9
    // anchors; everything else is coco, so the outputs are coco's, sliced.
    let dir = tempfile::tempdir().unwrap();
    let src = std::fs::read(reference_dir().join("coco.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&src).unwrap();
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![];
    for (name, v) in st.iter() {
        let (mut shape, mut data) = (v.shape().to_vec(), v.data().to_vec());
        if name.starts_with("class_net.predict.conv_pw.") {
            let per_out = data.len() / shape[0];
            shape[0] = 45;
            data.truncate(45 * per_out);
        }
        owned.push((name.to_string(), v.dtype(), shape, data));
    }
    let views: Vec<(String, TensorView)> =
        owned.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    let ck = write(&dir, "coco5.safetensors", &safetensors::serialize(views, None).unwrap());
    let out = dir.path().join("out.safetensors");
    let input = reference_dir().join("input.safetensors");
    let err = run_to(&ck, &[], &input, "tract", &out);
    assert!(err.contains("5 classes x 9 anchors"), "{err}");
    let got = read_tensors(&out).unwrap();
    let want = read_tensors(&reference_dir().join("coco.outputs.safetensors")).unwrap();
    for (name, g) in &got {
        let w = &want.iter().find(|(n, _)| n == name).unwrap().1;
        let w = if name.starts_with("class_out") {
            w.slice_axis(ndarray::Axis(1), (0..45).into()).to_owned()
        } else {
            w.clone()
        };
        let d = diff(g, &w).unwrap();
        assert!(d.within(MAX_ABS, MAX_REL_L2), "{name}: {d:?}");
    }
}

// ---- broken checkpoints -----------------------------------------------

fn assert_checkpoint_rejected(tensors: &[(String, Vec<usize>)], extra_args: &[&str], what: &str) {
    let dir = tempfile::tempdir().unwrap();
    let ck = dir.path().join("bad.safetensors");
    write_checkpoint(&ck, tensors, None);
    let out = dir.path().join("out.onnx");
    let mut args = vec!["convert", ck.to_str().unwrap()];
    args.extend_from_slice(extra_args);
    args.extend_from_slice(&["-o", out.to_str().unwrap()]);
    let res = fusec(&args);
    let err = one_error_line(&res, 2);
    assert!(err.contains(ck.to_str().unwrap()), "error does not name the file: {err}");
    assert!(err.contains(what), "expected `{what}` in: {err}");
    assert!(!out.exists());
}

#[test]
fn unrecognized_checkpoint_names_the_closest_family_and_the_tensors() {
    let t = vec![
        ("encoder.layer1.weight".to_string(), vec![4, 4]),
        ("backbone.conv_stem.weight".to_string(), vec![8, 3, 3, 3]),
    ];
    assert_checkpoint_rejected(
        &t,
        &[],
        "unrecognized checkpoint: closest family is efficientdet (1 of 4 marker tensors present); missing 3: `fpn.cell.0.fnode.0.combine.edge_weights`, `class_net.predict.conv_pw.weight`, `box_net.predict.conv_pw.weight`; unexpected `encoder.layer1.weight` [4, 4]",
    );
}

#[test]
fn wrong_shape_is_named_with_expected_and_found() {
    let mut t = Spec::small(16, 2, 2, 5).tensors();
    let i = t.iter().position(|(n, _)| n == "class_net.bn_rep.1.2.bn.running_var").unwrap();
    t[i].1 = vec![15];
    assert_checkpoint_rejected(&t, &[], "tensor `class_net.bn_rep.1.2.bn.running_var` has shape [15], expected [16]");
}

#[test]
fn missing_tensor_is_named() {
    let mut t = Spec::small(16, 2, 2, 5).tensors();
    t.retain(|(n, _)| n != "box_net.bn_rep.0.4.bn.bias");
    assert_checkpoint_rejected(&t, &[], "tensor `box_net.bn_rep.0.4.bn.bias` is missing");
}

#[test]
fn unexpected_tensor_is_named() {
    let mut t = Spec::small(16, 2, 2, 5).tensors();
    t.push(("fpn.cell.0.fnode.2.combine.extra.weight".into(), vec![16, 16, 1, 1]));
    assert_checkpoint_rejected(
        &t,
        &[],
        "unexpected tensor `fpn.cell.0.fnode.2.combine.extra.weight` F32 [16, 16, 1, 1]",
    );
}

#[test]
fn arch_override_must_agree_with_the_tensors() {
    let t = Spec::small(16, 2, 2, 5).tensors();
    assert_checkpoint_rejected(
        &t,
        &["--arch", "efficientdet_d0"],
        "--arch efficientdet_d0 has BiFPN 64x3 and 3 head repeats but the checkpoint has BiFPN 16x2 and 2",
    );
    assert_checkpoint_rejected(&t, &["--arch", "yolo_v8"], "unknown --arch `yolo_v8`");
}

#[test]
fn scalar_where_a_conv_weight_belongs_is_an_error_not_a_panic() {
    let mut t = Spec::small(16, 2, 2, 5).tensors();
    let i = t.iter().position(|(n, _)| n == "box_net.predict.conv_pw.weight").unwrap();
    t[i].1 = vec![];
    assert_checkpoint_rejected(
        &t,
        &[],
        "tensor `box_net.predict.conv_pw.weight` has shape [], expected [out, in, k, k]",
    );
}

/// The detection decoder against effdet's own `detections` (DetBenchPredict)
/// on PyTorch's head outputs: same boxes, scores and classes.
#[test]
fn decoder_reproduces_effdets_detections() {
    for m in MEMBERS {
        let outs = read_tensors(&reference_dir().join(format!("{m}.outputs.safetensors"))).unwrap();
        let heads: fusec_verify::Tensors = outs.iter().filter(|(n, _)| n != "detections").cloned().collect();
        let got = fusec_verify::detect::detect(&heads, 512, 512).unwrap();
        let want_t = &outs.iter().find(|(n, _)| n == "detections").unwrap().1;
        let want: Vec<[f32; 6]> = (0..want_t.shape()[1])
            .map(|i| std::array::from_fn(|j| want_t[[0, i, j]]))
            .filter(|d: &[f32; 6]| d[4] > 0.0)
            .collect();
        assert_eq!(got.len(), want.len(), "{m}");
        let d = fusec_verify::detect::compare(&got, &want);
        assert!(d.boxes_mse < 1e-6 && d.scores_mse < 1e-10, "{m}: {d:?}");
        assert_eq!((d.label_accuracy, d.mean_iou > 0.9999), (1.0, true), "{m}: {d:?}");
    }
}
