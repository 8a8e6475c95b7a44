//! The ONNX frontend reads each op's opset-11/13/18 spellings into one IR
//! form: the IR text must be identical, and the exported model must compute
//! what the original computes (checked on tract against the source model).

use std::path::Path;

use fusec_exporters::onnx_builder::{attr_float, attr_int, attr_ints, attr_str, OnnxBuilder};
use fusec_frontends::onnx::import;
use fusec_verify::runtime::{load, Model, SessionConfig};

fn ir(bytes: &[u8]) -> String {
    let g = import(bytes, Path::new("fixture.onnx")).unwrap_or_else(|e| panic!("{e}"));
    fuse_ir::text::to_text(&g).unwrap()
}

fn input(shape: &[usize]) -> fusec_verify::Tensors {
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
    vec![("x".into(), ndarray::ArrayD::from_shape_vec(shape.to_vec(), data).unwrap())]
}

/// Runs `src` as given and after import + export, on tract; outputs must be
/// equal to float rounding.
fn assert_same_numerics(src: &[u8], shape: &[usize]) {
    let g = import(src, Path::new("fixture.onnx")).unwrap();
    let exported = fusec_exporters::onnx::export(&g).unwrap();
    let cfg = SessionConfig::default();
    let a = load(Model::Bytes(src), &cfg).unwrap().run(&input(shape)).unwrap();
    let b = load(Model::Bytes(&exported), &cfg).unwrap().run(&input(shape)).unwrap();
    assert_eq!(a.len(), b.len());
    for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
        assert_eq!(na, nb);
        let d = fusec_verify::compare::diff(tb, ta).unwrap();
        assert!(d.max_abs <= 1e-6, "{na}: max abs {}", d.max_abs);
    }
}

#[test]
fn reduce_sum_axes_attribute_and_input_agree() {
    let old = OnnxBuilder::new(11)
        .input("x", &[1, 4, 6, 6])
        .output("y", &[1, 4, 1, 1])
        .node("ReduceSum", &["x"], &["y"], vec![attr_ints("axes", &[2, 3])])
        .build();
    let new = OnnxBuilder::new(13)
        .input("x", &[1, 4, 6, 6])
        .output("y", &[1, 4, 1, 1])
        .init_i64("axes", &[2, 3])
        .node("ReduceSum", &["x", "axes"], &["y"], vec![])
        .build();
    assert_eq!(ir(&old), ir(&new));
    assert!(ir(&new).contains("ReduceSum(%0) {axes=[2,3], keepdims=true} : f32[1,4,1,1]"), "{}", ir(&new));
    assert_same_numerics(&old, &[1, 4, 6, 6]);
    assert_same_numerics(&new, &[1, 4, 6, 6]);
}

#[test]
fn reduce_mean_axes_attribute_and_input_agree() {
    let old = OnnxBuilder::new(17)
        .input("x", &[1, 4, 6, 6])
        .output("y", &[1, 4])
        .node("ReduceMean", &["x"], &["y"], vec![attr_ints("axes", &[2, 3]), attr_int("keepdims", 0)])
        .build();
    let new = OnnxBuilder::new(18)
        .input("x", &[1, 4, 6, 6])
        .output("y", &[1, 4])
        .init_i64("axes", &[2, 3])
        .node("ReduceMean", &["x", "axes"], &["y"], vec![attr_int("keepdims", 0)])
        .build();
    assert_eq!(ir(&old), ir(&new));
    assert_same_numerics(&old, &[1, 4, 6, 6]);
}

#[test]
fn unsqueeze_and_split_attribute_and_input_agree() {
    let old = OnnxBuilder::new(11)
        .input("x", &[2, 6])
        .output("a", &[1, 2, 2])
        .output("b", &[1, 2, 4])
        .node("Split", &["x"], &["s0", "s1"], vec![attr_int("axis", 1), attr_ints("split", &[2, 4])])
        .node("Unsqueeze", &["s0"], &["a"], vec![attr_ints("axes", &[0])])
        .node("Unsqueeze", &["s1"], &["b"], vec![attr_ints("axes", &[0])])
        .build();
    let new = OnnxBuilder::new(13)
        .input("x", &[2, 6])
        .output("a", &[1, 2, 2])
        .output("b", &[1, 2, 4])
        .init_i64("split", &[2, 4])
        .init_i64("axes", &[0])
        .node("Split", &["x", "split"], &["s0", "s1"], vec![attr_int("axis", 1)])
        .node("Unsqueeze", &["s0", "axes"], &["a"], vec![])
        .node("Unsqueeze", &["s1", "axes"], &["b"], vec![])
        .build();
    assert_eq!(ir(&old), ir(&new));
    assert_same_numerics(&old, &[2, 6]);
    assert_same_numerics(&new, &[2, 6]);
}

#[test]
fn split_num_outputs_of_opset_18_is_an_even_split() {
    let m = OnnxBuilder::new(18)
        .input("x", &[2, 6])
        .output("a", &[2, 3])
        .output("b", &[2, 3])
        .node("Split", &["x"], &["a", "b"], vec![attr_int("axis", 1), attr_int("num_outputs", 2)])
        .build();
    assert!(ir(&m).contains("Split(%0) {axis=1, split=[3,3]}"), "{}", ir(&m));
}

#[test]
fn auto_pad_same_upper_becomes_explicit_pads() {
    let w: Vec<f32> = (0..2 * 3 * 3 * 3).map(|i| (i as f32 - 20.0) / 30.0).collect();
    let auto = OnnxBuilder::new(13)
        .input("x", &[1, 3, 7, 7])
        .output("y", &[1, 2, 4, 4])
        .init_f32("w", &[2, 3, 3, 3], &w)
        .node("Conv", &["x", "w"], &["y"], vec![attr_str("auto_pad", "SAME_UPPER"), attr_ints("strides", &[2, 2])])
        .build();
    let explicit = OnnxBuilder::new(13)
        .input("x", &[1, 3, 7, 7])
        .output("y", &[1, 2, 4, 4])
        .init_f32("w", &[2, 3, 3, 3], &w)
        .node("Conv", &["x", "w"], &["y"], vec![attr_ints("pads", &[1, 1, 1, 1]), attr_ints("strides", &[2, 2])])
        .build();
    assert_eq!(ir(&auto), ir(&explicit));
    assert_same_numerics(&auto, &[1, 3, 7, 7]);
}

#[test]
fn shape_arithmetic_feeds_resize_sizes() {
    // torch.onnx's nearest upsampling: sizes = concat(shape(x)[0:2], [8, 8]).
    let m = OnnxBuilder::new(17)
        .input("x", &[1, 2, 4, 4])
        .output("y", &[1, 2, 8, 8])
        .init_i64("s0", &[0])
        .init_i64("s1", &[2])
        .init_i64("hw", &[8, 8])
        .node("Shape", &["x"], &["shp"], vec![])
        .node("Slice", &["shp", "s0", "s1"], &["nc"], vec![])
        .node("Concat", &["nc", "hw"], &["sizes"], vec![attr_int("axis", 0)])
        .node(
            "Resize",
            &["x", "", "", "sizes"],
            &["y"],
            vec![
                attr_str("mode", "nearest"),
                attr_str("coordinate_transformation_mode", "asymmetric"),
                attr_str("nearest_mode", "floor"),
            ],
        )
        .build();
    assert!(ir(&m).contains("sizes=[1,2,8,8]"), "{}", ir(&m));
    assert_same_numerics(&m, &[1, 2, 4, 4]);
}

#[test]
fn clip_pad_and_softmax_round_trip() {
    let m = OnnxBuilder::new(11)
        .input("x", &[1, 2, 3, 3])
        .output("y", &[1, 2, 5, 5])
        .init_f32("lo", &[], &[-0.5])
        .init_f32("hi", &[], &[0.75])
        .init_i64("pads", &[0, 0, 1, 1, 0, 0, 1, 1])
        .node("Clip", &["x", "lo", "hi"], &["c"], vec![])
        .node("Pad", &["c", "pads"], &["p"], vec![attr_str("mode", "edge")])
        .node("Softmax", &["p"], &["y"], vec![attr_int("axis", 3)])
        .build();
    assert!(ir(&m).contains("Clip(%0) {min=-0.5, max=0.75}"), "{}", ir(&m));
    assert_same_numerics(&m, &[1, 2, 3, 3]);
}

#[test]
fn opset_outside_range_is_rejected() {
    let m = OnnxBuilder::new(9).input("x", &[1]).output("y", &[1]).node("Relu", &["x"], &["y"], vec![]).build();
    let e = import(&m, Path::new("old.onnx")).err().expect("opset 9 is rejected").to_string();
    assert_eq!(e, "old.onnx: opset 9 is not supported (fusec reads opsets 11 to 21)");
}

#[test]
fn dynamic_input_dimension_is_rejected() {
    use onnx_protobuf::{Message, ModelProto};
    let m = OnnxBuilder::new(17).input("x", &[1]).output("y", &[1]).node("Relu", &["x"], &["y"], vec![]).build();
    let mut model = ModelProto::parse_from_bytes(&m).unwrap();
    let onnx_protobuf::type_proto::Value::TensorType(t) =
        model.graph.as_mut().unwrap().input[0].type_.as_mut().unwrap().value.as_mut().unwrap()
    else {
        unreachable!()
    };
    t.shape.as_mut().unwrap().dim[0].value =
        Some(onnx_protobuf::tensor_shape_proto::dimension::Value::DimParam("batch".into()));
    let e = import(&model.write_to_bytes().unwrap(), Path::new("dyn.onnx")).err().unwrap().to_string();
    assert!(e.contains("graph input `x`: has dynamic dimension `batch`"), "{e}");
}

#[test]
fn reduce_l2_axes_attribute_and_input_agree() {
    let old = OnnxBuilder::new(17)
        .input("x", &[1, 4, 6, 6])
        .output("y", &[1, 4, 1, 1])
        .node("ReduceL2", &["x"], &["y"], vec![attr_ints("axes", &[2, 3])])
        .build();
    let new = OnnxBuilder::new(18)
        .input("x", &[1, 4, 6, 6])
        .output("y", &[1, 4, 1, 1])
        .init_i64("axes", &[2, 3])
        .node("ReduceL2", &["x", "axes"], &["y"], vec![])
        .build();
    assert_eq!(ir(&old), ir(&new));
    assert!(ir(&new).contains("ReduceL2(%0) {axes=[2,3], keepdims=true} : f32[1,4,1,1]"), "{}", ir(&new));
    assert_same_numerics(&old, &[1, 4, 6, 6]);
}

/// ReduceMax and ReduceMin (Hiera's pooling) read their opset-17
/// attribute and opset-18 input into one IR form, and export as tract
/// computes them.
#[test]
fn reduce_max_and_min_axes_attribute_and_input_agree() {
    for op in ["ReduceMax", "ReduceMin"] {
        let old = OnnxBuilder::new(17)
            .input("x", &[1, 4, 6, 6])
            .output("y", &[1, 4, 6])
            .node(op, &["x"], &["y"], vec![attr_ints("axes", &[-1]), attr_int("keepdims", 0)])
            .build();
        let new = OnnxBuilder::new(18)
            .input("x", &[1, 4, 6, 6])
            .output("y", &[1, 4, 6])
            .init_i64("axes", &[-1])
            .node(op, &["x", "axes"], &["y"], vec![attr_int("keepdims", 0)])
            .build();
        assert_eq!(ir(&old), ir(&new));
        assert!(ir(&new).contains(&format!("{op}(%0) {{axes=[-1], keepdims=false}} : f32[1,4,6]")), "{}", ir(&new));
        assert_same_numerics(&old, &[1, 4, 6, 6]);
        assert_same_numerics(&new, &[1, 4, 6, 6]);
    }
}

/// Einsum: the implicit form and an ellipsis read into the explicit form,
/// spaces dropped, and export as tract computes them (so does a
/// LeakyRelu after one); an equation whose
/// operand count is not the node's is refused by name.
#[test]
fn einsum_reads_into_its_explicit_form() {
    let src = OnnxBuilder::new(17)
        .input("x", &[2, 3, 4])
        .output("y", &[2, 4, 4])
        .output("z", &[2, 3, 5])
        .init_f32("w", &[4, 5], &(0..20).map(|i| (i as f32 * 0.3).sin()).collect::<Vec<_>>())
        .node("Einsum", &["x", "x"], &["y"], vec![attr_str("equation", "...ij, ...ik -> ...jk")])
        .node("Einsum", &["x", "w"], &["e"], vec![attr_str("equation", "bij,jk")])
        .node("LeakyRelu", &["e"], &["z"], vec![attr_float("alpha", 0.2)])
        .build();
    let text = ir(&src);
    assert!(text.contains("Einsum(%0, %0) {equation=...ij,...ik->...jk} : f32[2,4,4]"), "{text}");
    assert!(text.contains("{equation=bij,jk->bik} : f32[2,3,5]"), "{text}");
    assert!(text.contains("LeakyRelu(%3) {alpha=0.2} : f32[2,3,5]"), "{text}");
    assert_same_numerics(&src, &[2, 3, 4]);
    // Implicit with an ellipsis: the ellipsis dimensions lead the output
    // (as ONNX says and ONNX Runtime and numpy compute; tract 0.23 drops
    // them, so this form is checked on the IR only: the export is explicit).
    let implicit = OnnxBuilder::new(17)
        .input("x", &[2, 3, 4])
        .output("y", &[2, 4, 4])
        .node("Einsum", &["x", "x"], &["y"], vec![attr_str("equation", "...ij,...ik")])
        .build();
    assert!(ir(&implicit).contains("{equation=...ij,...ik->...jk} : f32[2,4,4]"), "{}", ir(&implicit));
    let wrong = OnnxBuilder::new(17)
        .input("x", &[2, 3])
        .output("y", &[3, 2])
        .node_named("swap", "Einsum", &["x", "x"], &["y"], vec![attr_str("equation", "ij->ji")])
        .build();
    let err = match import(&wrong, Path::new("wrong.onnx")) {
        Ok(_) => panic!("an equation of 1 operand was taken for 2 inputs"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("swap") && err.contains("has 1 operands, the node 2 inputs"), "{err}");
}

/// EyeLike (BAT's attention) depends on its input's shape only: it reads
/// as a constant, ones on diagonal `k`, and computes as tract computes it.
#[test]
fn eye_like_reads_as_a_constant() {
    let src = OnnxBuilder::new(17)
        .input("x", &[3, 4])
        .output("y", &[3, 4])
        .output("z", &[3, 4])
        .node("EyeLike", &["x"], &["e"], vec![attr_int("k", 1)])
        .node("Add", &["x", "e"], &["y"], vec![])
        .node("EyeLike", &["x"], &["i"], vec![attr_int("k", -1), attr_int("dtype", 7)])
        .node("Cast", &["i"], &["f"], vec![attr_int("to", 1)])
        .node("Mul", &["x", "f"], &["z"], vec![])
        .build();
    let text = ir(&src);
    assert!(!text.contains("= EyeLike("), "{text}");
    assert!(text.contains("Constant() {value=f32[3,4]") && text.contains("Constant() {value=i64[3,4]"), "{text}");
    assert_same_numerics(&src, &[3, 4]);
}

/// The ops of newer families on run-time data (InstanceNormalization,
/// CumSum, Tile and the unary math ops) export as they were read.
#[test]
fn newer_family_ops_round_trip() {
    let src = OnnxBuilder::new(17)
        .input("x", &[1, 4, 6, 6])
        .output("y", &[1, 4, 6, 12])
        .output("r", &[1, 4, 6, 6])
        .init_f32("s", &[4], &[1.0, 0.5, 2.0, -1.0])
        .init_f32("b", &[4], &[0.0, 0.1, -0.2, 0.3])
        .init_i64_scalar("axis", 2)
        .init_i64("reps", &[1, 1, 1, 2])
        .init_f32("one", &[], &[1.0])
        .node("InstanceNormalization", &["x", "s", "b"], &["n"], vec![attr_float("epsilon", 1e-3)])
        .node("CumSum", &["n", "axis"], &["c"], vec![attr_int("exclusive", 1), attr_int("reverse", 1)])
        .node("Abs", &["c"], &["a"], vec![])
        .node("Neg", &["a"], &["ng"], vec![])
        .node("Exp", &["ng"], &["e"], vec![])
        .node("Add", &["e", "one"], &["e1"], vec![])
        .node("Log", &["e1"], &["l"], vec![])
        .node("Reciprocal", &["e1"], &["rc"], vec![])
        .node("Sin", &["l"], &["sn"], vec![])
        .node("Cos", &["rc"], &["cs"], vec![])
        .node("Add", &["sn", "cs"], &["z"], vec![])
        .node("Tile", &["z", "reps"], &["y"], vec![])
        .node("Floor", &["x"], &["f"], vec![])
        .node("Ceil", &["x"], &["cl"], vec![])
        .node("Add", &["f", "cl"], &["r"], vec![])
        .build();
    let text = ir(&src);
    for op in ["InstanceNormalization(", "CumSum(", "Tile(", "Neg(", "Reciprocal(", "Floor(", "Ceil("] {
        assert!(text.contains(op), "no {op}:\n{text}");
    }
    assert!(text.contains("{axis=2, exclusive=true, reverse=true}"), "{text}");
    assert_same_numerics(&src, &[1, 4, 6, 6]);
}

/// An LSTM (bidirectional, biases, initial states, `Y_h` named but
/// unread) reads into one IR op and exports as tract computes it; options
/// beyond torch's (other activations, clip) are refused by name.
#[test]
fn lstm_round_trips_and_refuses_other_activations() {
    let lstm = |attrs: Vec<onnx_protobuf::AttributeProto>| {
        let v = |n: usize, k: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32 + 1.0) * k).sin() * 0.5).collect() };
        OnnxBuilder::new(17)
            .input("x", &[5, 1, 4])
            .output("y", &[5, 2, 1, 3])
            .init_f32("w", &[2, 12, 4], &v(96, 0.37))
            .init_f32("r", &[2, 12, 3], &v(72, 0.29))
            .init_f32("b", &[2, 24], &v(48, 0.41))
            .init_f32("h0", &[2, 1, 3], &v(6, 0.7))
            .init_f32("c0", &[2, 1, 3], &v(6, 0.9))
            .node_named("lstm", "LSTM", &["x", "w", "r", "b", "", "h0", "c0"], &["y", "y_h"], attrs)
            .build()
    };
    let base = || vec![attr_str("direction", "bidirectional"), attr_int("hidden_size", 3)];
    let src = lstm(base());
    let text = ir(&src);
    assert!(text.contains("LSTM(") && text.contains("{hidden=3, direction=bidirectional}"), "{text}");
    assert_same_numerics(&src, &[5, 1, 4]);
    let mut relu = base();
    relu.push(onnx_protobuf::AttributeProto {
        name: "activations".into(),
        strings: ["Relu", "Tanh", "Tanh", "Relu", "Tanh", "Tanh"].iter().map(|s| s.as_bytes().to_vec()).collect(),
        type_: onnx_protobuf::attribute_proto::AttributeType::STRINGS.into(),
        ..Default::default()
    });
    let e = import(&lstm(relu), Path::new("lstm.onnx")).err().expect("refused").to_string();
    assert!(e.contains("lstm.onnx") && e.contains("`lstm` (LSTM)") && e.contains("activations"), "{e}");
    let mut clip = base();
    clip.push(attr_float("clip", 3.0));
    let e = import(&lstm(clip), Path::new("lstm.onnx")).err().expect("refused").to_string();
    assert!(e.contains("`lstm` (LSTM)") && e.contains("clip"), "{e}");
    // A hostile size is an error, not an overflow.
    let huge = vec![attr_str("direction", "bidirectional"), attr_int("hidden_size", 1 << 61)];
    let e = import(&lstm(huge), Path::new("lstm.onnx")).err().expect("refused").to_string();
    assert!(e.contains("`lstm` (LSTM)") && e.contains("hidden_size 2305843009213693952 is too large"), "{e}");
}

/// A Pad whose pads are zeros doubled `n` times, each doubling reading the
/// one before twice (2^n paths back to the constant).
fn pads_after_doublings(n: usize) -> Vec<u8> {
    let mut b =
        OnnxBuilder::new(17).input("x", &[1, 1, 4, 4]).output("y", &[1, 1, 4, 4]).init_f32("p0", &[8], &[0.0; 8]);
    for i in 0..n {
        let (a, o) = (format!("p{i}"), format!("p{}", i + 1));
        b = b.node("Add", &[&a, &a], &[&o], vec![]);
    }
    b.node("Cast", &[&format!("p{n}")], &["pads"], vec![attr_int("to", 7)])
        .node("Pad", &["x", "pads"], &["y"], vec![])
        .build()
}

/// A static parameter computed from constants is found however it is
/// reached, each value once: 40 doublings end in a clear error (past the
/// depth followed), not a hang; 20 are computed.
#[test]
fn a_deep_constant_chain_into_pads_is_computed_once_per_value() {
    let err = match import(&pads_after_doublings(40), Path::new("deep.onnx")) {
        Ok(_) => panic!("pads 41 nodes deep were taken as static"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("pads (`pads`) must be a constant"), "{err}");
    let text = ir(&pads_after_doublings(20));
    assert!(text.contains("pads=[0,0,0,0,0,0,0,0]"), "{text}");
}

/// `Neg` on shape arithmetic (`x[..., -x.size(1):]`) is followed like the
/// rest: the Slice's starts are static.
#[test]
fn neg_in_shape_arithmetic_feeds_slice_starts() {
    let src = OnnxBuilder::new(17)
        .input("x", &[1, 4, 6, 6])
        .output("y", &[1, 4, 6, 4])
        .init_i64("one", &[1])
        .init_i64("ends", &[i64::MAX])
        .init_i64("axes", &[3])
        .node("Shape", &["x"], &["s"], vec![])
        .node("Gather", &["s", "one"], &["c"], vec![attr_int("axis", 0)])
        .node("Neg", &["c"], &["starts"], vec![])
        .node("Slice", &["x", "starts", "ends", "axes"], &["y"], vec![])
        .build();
    assert!(ir(&src).contains("starts=[-4]"), "{}", ir(&src));
    assert_same_numerics(&src, &[1, 4, 6, 6]);
}

/// A negative size in a Tile's repeats, an Expand's or ConstantOfShape's
/// shape or a Split's lengths is one error naming the node and the values.
#[test]
fn negative_static_sizes_are_refused_by_name() {
    let cases = [
        ("Tile", vec!["x", "v"], "repeats [1, 1, -2, 1] has a negative value -2"),
        ("Expand", vec!["x", "v"], "shape [1, 1, -2, 1] has a negative value -2"),
        ("ConstantOfShape", vec!["v"], "shape [1, 1, -2, 1] has a negative value -2"),
        ("Split", vec!["x", "v"], "split [1, 1, -2, 1] has a negative value -2"),
    ];
    for (op, ins, want) in cases {
        let m = OnnxBuilder::new(17)
            .input("x", &[1, 1, 4, 4])
            .output("y", &[1, 1, 4, 4])
            .init_i64("v", &[1, 1, -2, 1])
            .node(op, &ins, &["y"], vec![])
            .build();
        let e = import(&m, Path::new("neg.onnx")).err().unwrap_or_else(|| panic!("{op} imported")).to_string();
        assert!(e.starts_with("neg.onnx: node") && e.contains(op) && e.contains(want), "{op}: {e}");
    }
}
