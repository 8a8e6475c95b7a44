//! Graph construction, shape rules, validation and the text form.

use fuse_ir::shape::{broadcast, slice_range};
use fuse_ir::*;

fn f32t(shape: &[usize]) -> TensorType {
    TensorType::new(DType::F32, shape)
}

fn conv(k: usize, s: usize, p: usize, group: usize) -> Op {
    Op::Conv(Conv { kernel_shape: vec![k, k], strides: vec![s, s], pads: vec![p; 4], dilations: vec![1, 1], group })
}

/// x -> depthwise conv -> sigmoid * x, the SiLU-after-conv shape of EfficientNet.
fn small_graph() -> (Graph, ValueId) {
    let mut g = Graph::new("small");
    let x = g.add_input("x", f32t(&[1, 4, 8, 8]));
    let w = g.add_weight("w", Tensor::from_f32(vec![4, 1, 3, 3], &[0.5; 36]).unwrap());
    let c = g.add_node("conv", conv(3, 2, 1, 4), vec![Some(x), Some(w), None], vec!["c".into()]).unwrap();
    let c = g.node(c).outputs[0];
    let s = g.add_node("sig", Op::Unary(UnaryOp::Sigmoid), vec![Some(c)], vec!["s".into()]).unwrap();
    let s = g.node(s).outputs[0];
    let m = g.add_node("mul", Op::Binary(BinaryOp::Mul), vec![Some(c), Some(s)], vec!["y".into()]).unwrap();
    let y = g.node(m).outputs[0];
    g.set_outputs(vec![y]);
    (g, y)
}

#[test]
fn shapes_are_inferred_when_nodes_are_added() {
    let (g, y) = small_graph();
    assert_eq!(g.value(y).ty, f32t(&[1, 4, 4, 4]));
    g.validate().unwrap();
}

#[test]
fn text_form_is_deterministic_and_readable() {
    let (g, _) = small_graph();
    let text = text::to_text(&g).unwrap();
    assert_eq!(text, text::to_text(&g.clone()).unwrap());
    let expected = r#"graph "small"
  input  %0 "x": f32[1,4,8,8]
  weight %1 "w": f32[4,1,3,3] #"#;
    assert!(text.starts_with(expected), "{text}");
    assert!(text.contains(
        "%2 = Conv(%0, %1, _) {kernel=[3,3], strides=[2,2], pads=[1,1,1,1], dilations=[1,1], group=4} : f32[1,4,4,4]  # conv"
    ));
    assert!(text.contains("%4 = Mul(%2, %3) : f32[1,4,4,4]  # mul"));
    assert!(text.ends_with("  output %4 \"y\": f32[1,4,4,4]\n"));
}

#[test]
fn bad_nodes_are_named_in_errors() {
    let mut g = Graph::new("bad");
    let x = g.add_input("x", f32t(&[1, 3, 8, 8]));
    let w = g.add_weight("w", Tensor::from_f32(vec![4, 2, 3, 3], &[0.0; 72]).unwrap());
    let e = g.add_node("stem", conv(3, 1, 1, 1), vec![Some(x), Some(w)], vec!["y".into()]).unwrap_err();
    assert_eq!(e.to_string(), "node `stem` (Conv): input f32[1,3,8,8] and weight f32[4,2,3,3] do not fit group=1");
}

#[test]
fn replace_uses_keeps_edges_in_sync() {
    let (mut g, y) = small_graph();
    let mul = g.node_ids()[2];
    let c = g.node(mul).inputs[0].unwrap();
    let r = g.add_node("relu", Op::Unary(UnaryOp::Relu), vec![Some(c)], vec!["r".into()]).unwrap();
    let r = g.node(r).outputs[0];
    g.replace_uses(y, r);
    assert_eq!(g.outputs(), &[r]);
    g.validate().unwrap();
    let sig = g.node_ids()[1];
    g.set_input(mul, 1, Some(r));
    g.remove_node(sig);
    g.validate().unwrap();
    assert_eq!(g.topo_order().unwrap().len(), 3);
}

#[test]
fn removing_a_used_node_fails_validation() {
    let (mut g, _) = small_graph();
    let sig = g.node_ids()[1];
    g.remove_node(sig);
    let e = g.validate().unwrap_err().to_string();
    assert_eq!(e, "node `mul` (Mul): input 1 reads a value that no longer exists");
}

#[test]
fn ceil_mode_pooling_adds_a_window_but_not_one_starting_in_end_padding() {
    let mut g = Graph::new("pool");
    let pooled = |g: &mut Graph, len: usize, k: usize, end_pad: usize, ceil: bool| -> usize {
        let x = g.add_input("x", f32t(&[1, 1, len, len]));
        let p = Op::MaxPool(Pool {
            kernel_shape: vec![k, k],
            strides: vec![2, 2],
            pads: vec![0, 0, end_pad, end_pad],
            dilations: vec![1, 1],
            ceil_mode: ceil,
        });
        let n = g.add_node("pool", p, vec![Some(x)], vec!["y".into()]).unwrap();
        g.value(g.node(n).outputs[0]).ty.shape[2]
    };
    // 6 wide, 3x3 stride 2: floor gives 2 windows, ceil a partial third.
    assert_eq!(pooled(&mut g, 6, 3, 0, false), 2);
    assert_eq!(pooled(&mut g, 6, 3, 0, true), 3);
    // 5 wide plus 1 end padding, 1x1 stride 2: ceil((6 - 1) / 2) + 1 = 4, but
    // the 4th window would start at 6, inside the end padding: dropped.
    assert_eq!(pooled(&mut g, 5, 1, 1, false), 3);
    assert_eq!(pooled(&mut g, 5, 1, 1, true), 3);
}

#[test]
fn shape_arithmetic_values_are_tracked() {
    let mut g = Graph::new("shape");
    let x = g.add_input("x", f32t(&[1, 64, 8, 8]));
    let s = g.add_node("shape", Op::Shape { start: 0, end: None }, vec![Some(x)], vec!["s".into()]).unwrap();
    let s = g.node(s).outputs[0];
    let sl = Op::Slice(Slice { starts: vec![0], ends: vec![2], axes: vec![0], steps: vec![1] });
    let nc = g.add_node("slice", sl, vec![Some(s)], vec!["nc".into()]).unwrap();
    let nc = g.node(nc).outputs[0];
    let hw = g.add_weight("hw", Tensor::from_i64(vec![2], &[16, 16]).unwrap());
    let cat = g.add_node("cat", Op::Concat { axis: 0 }, vec![Some(nc), Some(hw)], vec!["sizes".into()]).unwrap();
    assert_eq!(g.value(g.node(cat).outputs[0]).known, Some(vec![1, 64, 16, 16]));
}

#[test]
fn broadcasting_and_slicing_follow_onnx() {
    assert_eq!(broadcast(&[1, 64, 8, 8], &[64, 1, 1]).unwrap(), vec![1, 64, 8, 8]);
    assert!(broadcast(&[2, 3], &[4]).is_err());
    assert_eq!(slice_range(10, 0, i64::MAX, 1).unwrap(), (0, 10, 10));
    assert_eq!(slice_range(10, -1, i64::MIN, -1).unwrap(), (9, -1, 10));
    assert_eq!(slice_range(10, 2, 9, 3).unwrap(), (2, 9, 3));
    assert!(slice_range(10, 0, 5, 0).is_err());
}

#[test]
fn tensor_sizes_are_checked() {
    let e = Tensor::new(f32t(&[2, 3]), vec![0u8; 20].into()).unwrap_err();
    assert_eq!(e, "f32[2,3] needs 24 bytes but 20 were given");
    let huge = TensorType::new(DType::F32, vec![usize::MAX, 4]);
    assert!(Tensor::new(huge, vec![].into()).is_err());
}

#[test]
fn gather_elements_reads_along_its_axis_and_checks_indices() {
    use fuse_ir::shape::gather_elements;
    // ONNX's example: data [[1, 2], [3, 4]], indices [[0, 0], [1, 0]], axis 1.
    assert_eq!(gather_elements(&[1, 2, 3, 4], &[2, 2], &[0, 0, 1, 0], &[2, 2], 1), Some(vec![1, 1, 4, 3]));
    // Axis 0, negative indices from the end, fewer rows than the data.
    let data = [1, 2, 3, 4, 5, 6, 7, 8, 9];
    assert_eq!(gather_elements(&data, &[3, 3], &[1, -1, 0, -3, 0, 2], &[2, 3], 0), Some(vec![4, 8, 3, 1, 2, 9]));
    assert_eq!(gather_elements(&data, &[3, 3], &[3], &[1, 1], 0), None);

    // Known integer values flow through (RoBERTa's token types from a
    // buffer); indices that do not fit the data are refused by name.
    let mut g = Graph::new("ge");
    let data = g.add_weight("buffer", Tensor::from_i64(vec![1, 4], &[5, 6, 7, 8]).unwrap());
    let idx = g.add_weight("idx", Tensor::from_i64(vec![1, 3], &[3, 0, -1]).unwrap());
    let op = Op::GatherElements { axis: 1 };
    let n = g.add_node("ge", op.clone(), vec![Some(data), Some(idx)], vec!["out".into()]).unwrap();
    let out = g.value(g.node(n).outputs[0]);
    assert_eq!((out.ty.clone(), out.known.clone()), (TensorType::new(DType::I64, [1, 3]), Some(vec![8, 5, 8])));
    let wide = g.add_weight("wide", Tensor::from_i64(vec![2, 1], &[0, 0]).unwrap());
    let e = g.add_node("bad", op.clone(), vec![Some(data), Some(wide)], vec!["bad".into()]).unwrap_err();
    assert!(e.to_string().contains("do not fit data"), "{e}");
    let far = g.add_weight("far", Tensor::from_i64(vec![1, 1], &[4]).unwrap());
    let e = g.add_node("far", op, vec![Some(data), Some(far)], vec!["far".into()]).unwrap_err();
    assert!(e.to_string().contains("index 4 is out of range"), "{e}");
}

#[test]
fn isnan_min_and_max_fold_on_constants() {
    let x = Tensor::from_f32(vec![3], &[f32::NAN, 1.0, -2.0]).unwrap();
    let y = Tensor::from_f32(vec![3], &[0.0, 0.5, 3.0]).unwrap();
    let nan = eval::fold(&Op::IsNaN, &[Some(&x)], &[]).unwrap();
    assert_eq!((nan[0].ty().dtype, nan[0].to_i64_vec()), (DType::Bool, Some(vec![1, 0, 0])));
    // A NaN on either side is the result, as ONNX Runtime computes it.
    for (a, b) in [(&y, &x), (&x, &y)] {
        let lo = eval::fold(&Op::Binary(BinaryOp::Min), &[Some(a), Some(b)], &[]).unwrap()[0].to_f32_vec().unwrap();
        assert!(lo[0].is_nan() && lo[1..] == [0.5, -2.0], "{lo:?}");
        let hi = eval::fold(&Op::Binary(BinaryOp::Max), &[Some(a), Some(b)], &[]).unwrap()[0].to_f32_vec().unwrap();
        assert!(hi[0].is_nan() && hi[1..] == [1.0, 3.0], "{hi:?}");
    }
}
