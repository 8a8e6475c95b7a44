//! Each pass on a small EfficientDet-like fixture: an insta snapshot of the
//! IR before and after, and a numeric check on tract that the outputs stay
//! the same (the fused model's, per member, against the member alone).

use std::path::Path;

use fuse_ir::{text::to_text, Graph};
use fusec_exporters::onnx_builder::{attr_float, attr_int, attr_ints, attr_str, OnnxBuilder};
use fusec_passes::{
    align, canonicalize, dce, flatten_rows, fold_bn, fp16_compute, fuse, merge_linear, pad_channels, FuseOptions,
    Lowering, Member, MergeStats, Origin, PadStats, RowStats,
};
use fusec_verify::compare::diff;
use fusec_verify::runtime::{load, Device, Model, RuntimeKind, SessionConfig};
use fusec_verify::Tensors;

struct Rng(u64);

impl Rng {
    fn vals(&mut self, n: usize, base: f32, spread: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                base + spread * (((self.0 >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0)
            })
            .collect()
    }
}

/// A miniature EfficientDet member, as torch.onnx would export it: stem
/// conv + BatchNorm + SiLU, squeeze-excite, depthwise conv, a max-pool /
/// upsample branch, BiFPN's fast-attention combine (Relu, ReduceSum,
/// Gather, Mul, Div, Unsqueeze, Concat, ReduceSum), an Identity, a channel
/// Concat, a class head with `classes` outputs and a box head, plus dead
/// shape arithmetic. The stem and its BatchNorm draw from `stem_seed`, the
/// rest from `seed`: equal stem seeds make a frozen stem.
fn mini(seed: u64, stem_seed: u64, classes: i64) -> Graph {
    let mut r = Rng(seed);
    let mut rs = Rng(stem_seed);
    let bytes = OnnxBuilder::new(17)
        .input("image", &[1, 3, 8, 8])
        .output("class_out", &[1, classes, 8, 8])
        .output("box_out", &[1, 4, 8, 8])
        .init_f32("stem.w", &[4, 3, 3, 3], &rs.vals(108, 0.0, 0.3))
        .init_f32("bn.g", &[4], &rs.vals(4, 1.0, 0.2))
        .init_f32("bn.b", &[4], &rs.vals(4, 0.0, 0.1))
        .init_f32("bn.m", &[4], &rs.vals(4, 0.0, 0.1))
        .init_f32("bn.v", &[4], &rs.vals(4, 1.0, 0.5))
        .init_f32("se.r.w", &[2, 4, 1, 1], &r.vals(8, 0.0, 0.5))
        .init_f32("se.r.b", &[2], &r.vals(2, 0.0, 0.1))
        .init_f32("se.e.w", &[4, 2, 1, 1], &r.vals(8, 0.0, 0.5))
        .init_f32("se.e.b", &[4], &r.vals(4, 0.0, 0.1))
        .init_i64("axes23", &[2, 3])
        .init_f32("dw.w", &[4, 1, 3, 3], &r.vals(36, 0.0, 0.3))
        .init_f32("edge", &[2], &r.vals(2, 1.0, 0.5))
        .init_f32("eps", &[], &[1e-4])
        .init_i64("i0", &[0])
        .init_i64("i1", &[1])
        .init_i64("last", &[-1])
        .init_i64("two", &[2])
        .init_f32("cls.w", &[classes, 8, 1, 1], &r.vals(classes as usize * 8, 0.0, 0.4))
        .init_f32("cls.b", &[classes], &r.vals(classes as usize, 0.0, 0.1))
        .init_f32("box.w", &[4, 8, 1, 1], &r.vals(32, 0.0, 0.4))
        .init_f32("box.b", &[4], &r.vals(4, 0.0, 0.1))
        .node("Conv", &["image", "stem.w"], &["s"], vec![attr_ints("pads", &[1, 1, 1, 1])])
        .node("BatchNormalization", &["s", "bn.g", "bn.b", "bn.m", "bn.v"], &["bn"], vec![attr_float("epsilon", 1e-3)])
        .node("Sigmoid", &["bn"], &["sg"], vec![])
        .node("Mul", &["bn", "sg"], &["a"], vec![])
        .node("ReduceMean", &["a"], &["se"], vec![attr_ints("axes", &[2, 3]), attr_int("keepdims", 1)])
        .node("Conv", &["se", "se.r.w", "se.r.b"], &["sr"], vec![])
        .node("Relu", &["sr"], &["srr"], vec![])
        .node("Conv", &["srr", "se.e.w", "se.e.b"], &["se2"], vec![])
        .node("Sigmoid", &["se2"], &["gate"], vec![])
        .node("Mul", &["a", "gate"], &["a2"], vec![])
        .node("Conv", &["a2", "dw.w"], &["d"], vec![attr_int("group", 4), attr_ints("pads", &[1, 1, 1, 1])])
        .node("MaxPool", &["d"], &["p"], vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])])
        .init_f32("up.scales", &[4], &[1.0, 1.0, 2.0, 2.0])
        .node("Resize", &["p", "", "up.scales"], &["up"], vec![attr_str("mode", "nearest")])
        .node("Relu", &["edge"], &["rw"], vec![])
        .node("ReduceSum", &["rw"], &["sum"], vec![attr_int("keepdims", 0)])
        .node("Add", &["sum", "eps"], &["den"], vec![])
        .node("Gather", &["rw", "i0"], &["w0"], vec![])
        .node("Mul", &["d", "w0"], &["t0"], vec![])
        .node("Div", &["t0", "den"], &["q0"], vec![])
        .node("Gather", &["rw", "i1"], &["w1"], vec![])
        .node("Mul", &["up", "w1"], &["t1"], vec![])
        .node("Div", &["t1", "den"], &["q1"], vec![])
        .node("Unsqueeze", &["q0", "last"], &["u0"], vec![])
        .node("Unsqueeze", &["q1", "last"], &["u1"], vec![])
        .node("Concat", &["u0", "u1"], &["st"], vec![attr_int("axis", -1)])
        .node("ReduceSum", &["st", "last"], &["comb"], vec![attr_int("keepdims", 0)])
        .node("Identity", &["comb"], &["idn"], vec![])
        .node("Concat", &["idn", "a2"], &["cat"], vec![attr_int("axis", 1)])
        .node("Conv", &["cat", "cls.w", "cls.b"], &["class_out"], vec![])
        .node("Conv", &["cat", "box.w", "box.b"], &["box_out"], vec![])
        .node("Shape", &["image"], &["shp"], vec![])
        .node("Gather", &["shp", "two"], &["h"], vec![])
        .build();
    fusec_frontends::onnx::import(&bytes, Path::new("mini.onnx")).expect("fixture imports")
}

fn image() -> Tensors {
    let data = Rng(7).vals(3 * 64, 0.0, 1.0);
    vec![("image".into(), ndarray::ArrayD::from_shape_vec(vec![1, 3, 8, 8], data).unwrap())]
}

fn run(g: &Graph) -> Tensors {
    run_with(g, &image())
}

/// `g` exported and run on tract with `inputs`.
fn run_with(g: &Graph, inputs: &Tensors) -> Tensors {
    let bytes = fusec_exporters::onnx::export(g).expect("exports");
    let cfg = SessionConfig { runtime: RuntimeKind::Tract, device: Device::Cpu, threads: None, cuda_graph: false };
    load(Model::Bytes(&bytes), &cfg).expect("loads").run(inputs).expect("runs")
}

/// Every output of `want` equals `{prefix}{name}` of `got` to float rounding.
fn assert_same_outputs(got: &Tensors, prefix: &str, want: &Tensors) {
    assert!(!want.is_empty());
    for (name, w) in want {
        let key = format!("{prefix}{name}");
        let (_, g) = got.iter().find(|(n, _)| *n == key).unwrap_or_else(|| panic!("output `{key}` missing"));
        let d = diff(g, w).unwrap();
        assert!(d.within(1e-5, 1e-6), "{key}: {d:?}");
    }
}

/// `after`, `before` rewritten by a folding pass, computes on tract what
/// `before` does, and `pass` run on it again folds nothing.
fn assert_folded_same_and_done(
    before: &Graph,
    after: &Graph,
    inputs: &Tensors,
    pass: fn(&mut Graph) -> Result<usize, fuse_ir::IrError>,
) {
    assert_same_outputs(&run_with(after, inputs), "", &run_with(before, inputs));
    let mut again = after.clone();
    assert_eq!(pass(&mut again).unwrap(), 0);
    assert_eq!(to_text(&again).unwrap(), to_text(after).unwrap());
}

/// Whether a node of `g` makes a value named `name`.
fn makes(g: &Graph, name: &str) -> bool {
    g.node_ids().into_iter().any(|n| g.node(n).outputs.iter().any(|&o| g.value(o).name == name))
}

fn before_after(before: &Graph, after: &Graph) -> String {
    format!("{}--- after ---\n{}", to_text(before).unwrap(), to_text(after).unwrap())
}

#[test]
fn canonicalize_folds_constants_and_rewrites_the_stacked_sum() {
    let before = mini(1, 1, 3);
    let mut g = before.clone();
    let st = canonicalize(&mut g).unwrap();
    assert_eq!((st.identities, st.mul_div, st.stack_sums), (1, 2, 1), "{st:?}");
    let text = to_text(&g).unwrap();
    for gone in ["Gather", "Unsqueeze", "Div", "ReduceSum", "Identity", "Shape"] {
        assert!(!text.contains(&format!(" = {gone}(")), "{gone} left:\n{text}");
    }
    assert_eq!(text.matches(" = Concat(").count(), 1, "only the channel Concat stays:\n{text}");
    // Only the SE block's Relu (on data) stays; the edge weights' is folded.
    assert_eq!(text.matches(" = Relu(").count(), 1, "{text}");
    insta::assert_snapshot!(before_after(&before, &g));
    assert_same_outputs(&run(&g), "", &run(&before));
}

/// The constant arithmetic around torchvision's shifted-window attention
/// (Swin): a mask from Range, Mod, Equal, Not, ConstantOfShape, ScatterND,
/// Pow, Where and Expand, and Pad's pads in torch's order (a 2-D reshape,
/// rows reversed by a negative-step Slice, transposed, flattened).
fn window_mask() -> Graph {
    let big = i64::MIN + 1;
    let bytes = OnnxBuilder::new(17)
        .input("image", &[1, 3, 8, 8])
        .output("y", &[2, 3, 9, 8])
        .init_i64("start", &[-4])
        .init_i64("limit", &[4])
        .init_i64("delta", &[1])
        .init_i64("axis0", &[0])
        .init_i64("axis1", &[1])
        .init_i64("three", &[3])
        .init_i64("zero", &[0])
        .init_i64("side", &[8, 8])
        .init_i64("rows", &[1, 6])
        .init_f32("updates", &[2, 8], &(0..16).map(|i| i as f32 * 0.25 - 1.0).collect::<Vec<_>>())
        .init_f32("two", &[], &[2.0])
        .init_f32("neg", &[], &[-100.0])
        .init_i64("to4d", &[1, 1, 8, 8])
        .init_i64("pp", &[0, 0, 0, 1, 0, 0, 1, 0])
        .init_i64("pairs", &[-1, 2])
        .init_i64("flat", &[-1])
        .init_i64("s_start", &[-1])
        .init_i64("s_end", &[big])
        .init_i64("s_step", &[-1])
        .node("Squeeze", &["start", "axis0"], &["s0"], vec![])
        .node("Squeeze", &["limit", "axis0"], &["s1"], vec![])
        .node("Squeeze", &["delta", "axis0"], &["s2"], vec![])
        .node("Range", &["s0", "s1", "s2"], &["r"], vec![])
        .node("Mod", &["r", "three"], &["m"], vec![])
        .node("Equal", &["m", "zero"], &["e"], vec![])
        .node("Not", &["e"], &["keep"], vec![])
        .node("ConstantOfShape", &["side"], &["z"], vec![])
        .node("Unsqueeze", &["rows", "axis1"], &["idx"], vec![])
        .node("ScatterND", &["z", "idx", "updates"], &["sc"], vec![])
        .node("Pow", &["sc", "two"], &["sq"], vec![])
        .node("Where", &["keep", "sq", "neg"], &["w"], vec![])
        .node("Expand", &["w", "to4d"], &["mask"], vec![])
        .node("Add", &["image", "mask"], &["a"], vec![])
        .node("Reshape", &["pp", "pairs"], &["p2"], vec![])
        .node("Slice", &["p2", "s_start", "s_end", "axis0", "s_step"], &["rev"], vec![])
        .node("Transpose", &["rev"], &["tr"], vec![attr_ints("perm", &[1, 0])])
        .node("Reshape", &["tr", "flat"], &["pads"], vec![])
        .node("Pad", &["a", "pads"], &["y"], vec![])
        .build();
    fusec_frontends::onnx::import(&bytes, Path::new("window_mask.onnx")).expect("fixture imports")
}

#[test]
fn canonicalize_folds_a_shifted_window_mask() {
    let before = window_mask();
    let mut g = before.clone();
    canonicalize(&mut g).unwrap();
    fusec_passes::validate::validated("canonicalize", &g).unwrap();
    let text = to_text(&g).unwrap();
    let ops: Vec<&str> = text.lines().filter_map(|l| l.split(" = ").nth(1)?.split('(').next()).collect();
    assert_eq!(ops, ["Add", "Pad"], "the mask and the pads are constants:\n{text}");
    assert!(text.contains("pads=[1,0,0,0,0,0,1,0]"), "{text}");
    // The graph before folding runs too (its Range, Mod, ScatterND, ...
    // exported as they are), and gives the same outputs.
    assert_same_outputs(&run(&g), "", &run(&before));
}

#[test]
fn fold_bn_folds_into_the_stem_conv() {
    let before = mini(1, 1, 3);
    let mut g = before.clone();
    assert_eq!(fold_bn(&mut g).unwrap(), 1);
    assert!(!to_text(&g).unwrap().contains("BatchNormalization"));
    insta::assert_snapshot!(before_after(&before, &g));
    assert_same_outputs(&run(&g), "", &run(&before));
}

/// BiFPN-like scales on conv outputs: `c1` (stride 2) read by a constant
/// per-channel `Mul`, a nearest 2x upsample then a scalar `Mul`, a MaxPool
/// then a `Mul`, a depthwise Conv and a Conv of 2 groups; `c2` read by its
/// `Mul` and as a graph output; `c3` scaled by a vector with a zero; `c4`
/// scaled by a negative number after a MaxPool; `c5` by a negative number
/// directly (each of their `Mul`s read by a Relu); `c6` by 1e-30 after
/// an upsample and by 1e30 directly (the quotient would overflow); `c7`
/// by a vector after a nearest Resize whose channel scale, 1.2, keeps 4
/// channels but moves them.
fn scaled_convs() -> Graph {
    let mut r = Rng(5);
    let mut b = OnnxBuilder::new(17)
        .input("x", &[1, 4, 8, 8])
        .init_f32("w1", &[4, 4, 3, 3], &r.vals(144, 0.0, 0.4))
        .init_f32("b1", &[4], &r.vals(4, 0.0, 0.1))
        .init_f32("s0", &[1, 4, 1, 1], &[0.5, 1.5, 2.0, 0.25])
        .init_f32("s1", &[], &[0.75])
        .init_f32("s2", &[4, 1, 1], &[1.25, 0.5, 3.0, 0.1])
        .init_f32("wd", &[4, 1, 3, 3], &r.vals(36, 0.0, 0.4))
        .init_f32("wg", &[6, 2, 1, 1], &r.vals(12, 0.0, 0.4))
        .init_f32("up", &[4], &[1.0, 1.0, 2.0, 2.0])
        .init_f32("zero", &[1, 4, 1, 1], &[1.0, 0.0, 2.0, 1.0])
        .init_f32("neg", &[], &[-0.5])
        .init_f32("tiny", &[], &[1e-30])
        .init_f32("huge", &[], &[1e30])
        .node("Conv", &["x", "w1", "b1"], &["y"], vec![attr_ints("pads", &[1, 1, 1, 1]), attr_ints("strides", &[2, 2])])
        .node("Mul", &["y", "s0"], &["m0"], vec![])
        .node("Resize", &["y", "", "up"], &["u"], vec![attr_str("mode", "nearest")])
        .node("Mul", &["s1", "u"], &["m1"], vec![])
        .node("Relu", &["m1"], &["o1"], vec![])
        .node("MaxPool", &["y"], &["p"], vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])])
        .node("Mul", &["p", "s2"], &["o2"], vec![])
        .node("Conv", &["y", "wd"], &["d"], vec![attr_int("group", 4), attr_ints("pads", &[1, 1, 1, 1])])
        .node("Add", &["m0", "d"], &["o0"], vec![])
        .node("Conv", &["y", "wg"], &["o3"], vec![attr_int("group", 2)])
        .output("o0", &[1, 4, 4, 4])
        .output("o1", &[1, 4, 8, 8])
        .output("o2", &[1, 4, 2, 2])
        .output("o3", &[1, 6, 4, 4]);
    for (k, scale, pool) in [(2, "s0", false), (3, "zero", false), (4, "neg", true), (5, "neg", false)] {
        let (w, y, m) = (format!("w{k}"), format!("y{k}"), format!("o{}", k + 2));
        b = b.init_f32(&w, &[4, 4, 1, 1], &r.vals(16, 0.0, 0.4));
        b = b.node("Conv", &["x", &w], &[&y], vec![]);
        let scaled = if pool {
            let p = format!("p{k}");
            b = b.node(
                "MaxPool",
                &[&y],
                &[&p],
                vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])],
            );
            p
        } else {
            y.clone()
        };
        let q = format!("q{k}");
        b = b.node("Mul", &[&scaled, scale], &[&q], vec![]);
        b = b.node("Relu", &[&q], &[&m], vec![]);
        b = b.output(&m, if pool { &[1, 4, 4, 4] } else { &[1, 4, 8, 8] });
        if k == 2 {
            b = b.output(&y, &[1, 4, 8, 8]);
        }
    }
    b = b
        .init_f32("w6", &[4, 4, 1, 1], &r.vals(16, 0.0, 0.4))
        .node("Conv", &["x", "w6"], &["y6"], vec![])
        .node("Resize", &["y6", "", "up"], &["u6"], vec![attr_str("mode", "nearest")])
        .node("Mul", &["u6", "tiny"], &["t6"], vec![])
        .node("Relu", &["t6"], &["o8"], vec![])
        .node("Mul", &["y6", "huge"], &["h6"], vec![])
        .node("Relu", &["h6"], &["o9"], vec![])
        .output("o8", &[1, 4, 16, 16])
        .output("o9", &[1, 4, 8, 8])
        .init_f32("w7", &[4, 4, 1, 1], &r.vals(16, 0.0, 0.4))
        .init_f32("shift", &[4], &[1.0, 1.2, 1.0, 1.0])
        .node("Conv", &["x", "w7"], &["y7"], vec![])
        .node("Resize", &["y7", "", "shift"], &["u7"], vec![attr_str("mode", "nearest")])
        .node("Mul", &["u7", "s0"], &["t7"], vec![])
        .node("Relu", &["t7"], &["o10"], vec![])
        .output("o10", &[1, 4, 8, 8]);
    fusec_frontends::onnx::import(&b.build(), Path::new("scaled.onnx")).expect("fixture imports")
}

#[test]
fn fold_scale_folds_one_scale_per_conv_and_keeps_the_outputs() {
    let before = scaled_convs();
    let mut g = before.clone();
    // c1's upsampled Mul (the largest) and c5's; not c2 (a graph output),
    // c3 (a zero), c4 (negative through a MaxPool), c6 (1e30 / 1e-30
    // overflows) or c7 (its Resize moves channels).
    assert_eq!(fusec_passes::fold_scale(&mut g).unwrap(), 2);
    g.validate().unwrap();
    let text = to_text(&g).unwrap();
    assert_eq!(text.matches(" = Mul(").count(), 8, "{text}");
    assert!(!makes(&g, "m1"));
    insta::assert_snapshot!(before_after(&before, &g));
    let x = ndarray::ArrayD::from_shape_vec(vec![1, 4, 8, 8], Rng(9).vals(256, 0.0, 1.0)).unwrap();
    // c1's other readers now see the scaled value: none of them can take
    // another scale (its Resize feeds the Relu now), so nothing more folds.
    assert_folded_same_and_done(&before, &g, &vec![("x".into(), x)], fusec_passes::fold_scale);
}

/// Layer scales after linear layers: `l1` (ConvNeXt) a MatMul and bias on
/// channels-last `x`, a Transpose to channels first, then a per-channel
/// `Mul`; `l2` (CaiT) a per-feature `Mul` with a zero right after the
/// bias, then a residual Add; `l3` a scalar `Mul` of a MatMul without bias.
/// Not foldable: `l4`'s biased value also feeds a Relu; `l5`'s `Mul` is a
/// graph output; `l6` scales rows, not features; `l7`'s weight times 1e10
/// would overflow (its column of ±1e30 sums to 0 on `u`, all ones); `l9`'s
/// scale `[2, 1, 4]` would broadcast its output to `[2, 5, 4]`. Folded
/// too: `l8`, whose one-number bias `[1]` and two Transposes lie between
/// the MatMul and a scale along axis 2.
fn layer_scaled_linears() -> Graph {
    let mut r = Rng(11);
    let mut b = OnnxBuilder::new(17)
        .input("x", &[1, 2, 3, 4])
        .input("t", &[1, 5, 4])
        .input("u", &[1, 2, 4])
        .init_f32("w1", &[4, 6], &r.vals(24, 0.0, 0.5))
        .init_f32("b1", &[6], &r.vals(6, 0.0, 0.1))
        .init_f32("g1", &[1, 6, 1, 1], &[0.5, 1.5, 2.0, 0.25, 1e-3, 3.0])
        .node("MatMul", &["x", "w1"], &["l1m"], vec![])
        .node("Add", &["l1m", "b1"], &["l1a"], vec![])
        .node("Transpose", &["l1a"], &["l1t"], vec![attr_ints("perm", &[0, 3, 1, 2])])
        .node("Mul", &["l1t", "g1"], &["l1s"], vec![])
        .node("Relu", &["l1s"], &["o1"], vec![])
        .output("o1", &[1, 6, 2, 3])
        .init_f32("w2", &[4, 4], &r.vals(16, 0.0, 0.5))
        .init_f32("b2", &[4], &r.vals(4, 0.0, 0.1))
        .init_f32("g2", &[4], &[0.1, 0.0, 2.0, 0.5])
        .node("MatMul", &["t", "w2"], &["l2m"], vec![])
        .node("Add", &["b2", "l2m"], &["l2a"], vec![])
        .node("Mul", &["g2", "l2a"], &["l2s"], vec![])
        .node("Add", &["t", "l2s"], &["o2"], vec![])
        .output("o2", &[1, 5, 4])
        .init_f32("w3", &[4, 3], &r.vals(12, 0.0, 0.5))
        .init_f32("half", &[], &[0.5])
        .node("MatMul", &["t", "w3"], &["l3m"], vec![])
        .node("Mul", &["l3m", "half"], &["l3s"], vec![])
        .node("Relu", &["l3s"], &["o3"], vec![])
        .output("o3", &[1, 5, 3]);
    for k in [4, 5, 6] {
        let (w, bias, m, a, sc) =
            (format!("w{k}"), format!("b{k}"), format!("l{k}m"), format!("l{k}a"), format!("l{k}s"));
        b = b
            .init_f32(&w, &[4, 4], &r.vals(16, 0.0, 0.5))
            .init_f32(&bias, &[4], &r.vals(4, 0.0, 0.1))
            .node("MatMul", &["t", &w], &[&m], vec![])
            .node("Add", &[&m, &bias], &[&a], vec![]);
        let scale = if k == 6 { "rows" } else { "g2" };
        b = b.node("Mul", &[&a, scale], &[&sc], vec![]);
        if k == 5 {
            b = b.output(&sc, &[1, 5, 4]);
        } else {
            let o = format!("o{k}");
            b = b.node("Relu", &[&sc], &[&o], vec![]).output(&o, &[1, 5, 4]);
        }
        if k == 4 {
            b = b.node("Relu", &[&a], &["o4b"], vec![]).output("o4b", &[1, 5, 4]);
        }
    }
    b = b
        .init_f32("rows", &[5, 1], &[1.0, 2.0, 3.0, 4.0, 5.0])
        .init_f32("w7", &[4, 2], &[1e30, 0.3, -1e30, -0.2, 0.0, 0.1, 0.0, 0.4])
        .init_f32("big", &[], &[1e10])
        .node("MatMul", &["u", "w7"], &["l7m"], vec![])
        .node("Mul", &["l7m", "big"], &["l7s"], vec![])
        .node("Relu", &["l7s"], &["o7"], vec![])
        .output("o7", &[1, 2, 2])
        .init_f32("w8", &[4, 6], &r.vals(24, 0.0, 0.5))
        .init_f32("b8", &[1], &[0.05])
        .init_f32("g8", &[6, 1], &[2.0, 0.5, 1.0, 4.0, 0.125, 3.0])
        .node("MatMul", &["x", "w8"], &["l8m"], vec![])
        .node("Add", &["l8m", "b8"], &["l8a"], vec![])
        .node("Transpose", &["l8a"], &["l8t"], vec![attr_ints("perm", &[0, 3, 1, 2])])
        .node("Transpose", &["l8t"], &["l8u"], vec![attr_ints("perm", &[0, 2, 1, 3])])
        .node("Mul", &["l8u", "g8"], &["l8s"], vec![])
        .node("Relu", &["l8s"], &["o8"], vec![])
        .output("o8", &[1, 2, 6, 3])
        .init_f32("w9", &[4, 4], &r.vals(16, 0.0, 0.5))
        .init_f32("g9", &[2, 1, 4], &[1.0, 2.0, 3.0, 4.0, 0.5, 0.25, 0.125, 2.0])
        .node("MatMul", &["t", "w9"], &["l9m"], vec![])
        .node("Mul", &["l9m", "g9"], &["l9s"], vec![])
        .node("Relu", &["l9s"], &["o9"], vec![])
        .output("o9", &[2, 5, 4]);
    fusec_frontends::onnx::import(&b.build(), Path::new("layer_scale.onnx")).expect("fixture imports")
}

#[test]
fn fold_layer_scale_folds_scales_into_the_linear_layer_and_keeps_the_outputs() {
    let before = layer_scaled_linears();
    let mut g = before.clone();
    // l1 (through the Transpose), l2 (a zero among its scales), l3 and l8.
    assert_eq!(fusec_passes::fold_layer_scale(&mut g).unwrap(), 4);
    g.validate().unwrap();
    let text = to_text(&g).unwrap();
    assert_eq!(text.matches(" = Mul(").count(), 5, "{text}");
    for gone in ["l1s", "l2s", "l3s", "l8s"] {
        assert!(!makes(&g, gone), "{gone}");
    }
    insta::assert_snapshot!(before_after(&before, &g));
    let mut r = Rng(13);
    let inputs: Tensors = vec![
        ("x".into(), ndarray::ArrayD::from_shape_vec(vec![1, 2, 3, 4], r.vals(24, 0.0, 1.0)).unwrap()),
        ("t".into(), ndarray::ArrayD::from_shape_vec(vec![1, 5, 4], r.vals(20, 0.0, 1.0)).unwrap()),
        ("u".into(), ndarray::ArrayD::from_shape_vec(vec![1, 2, 4], vec![1.0; 8]).unwrap()),
    ];
    assert!(run_with(&before, &inputs).iter().all(|(_, t)| t.iter().all(|x| x.is_finite())));
    assert_folded_same_and_done(&before, &g, &inputs, fusec_passes::fold_layer_scale);
}

#[test]
fn dce_removes_the_dead_shape_arithmetic() {
    let before = mini(1, 1, 3);
    let mut g = before.clone();
    assert_eq!(dce(&mut g), 2);
    insta::assert_snapshot!(before_after(&before, &g));
    assert_same_outputs(&run(&g), "", &run(&before));
}

#[test]
fn fp16_compute_keeps_an_f32_interface_and_the_outputs_to_fp16_rounding() {
    let before = prepared(1, 1, 3);
    let mut g = before.clone();
    assert!(fp16_compute(&mut g).unwrap() > 0);
    fusec_passes::validate::validated("fp16_compute", &g).unwrap();
    // The interface is the model's: f32 in and out, under the same names.
    for (a, b) in [(g.inputs(), before.inputs()), (g.outputs(), before.outputs())] {
        let names = |g: &Graph, vs: &[fuse_ir::ValueId]| -> Vec<String> {
            vs.iter().map(|&v| format!("{} {}", g.value(v).name, g.value(v).ty)).collect()
        };
        assert_eq!(names(&g, a), names(&before, b));
    }
    // Inside, every float weight and activation is f16.
    assert!(g
        .weights()
        .filter(|(id, _, _)| !g.users(*id).is_empty())
        .all(|(_, _, t)| !t.ty().dtype.is_float() || t.ty().dtype == fuse_ir::DType::F16));
    insta::assert_snapshot!(before_after(&before, &g));
    let (got, want) = (run(&g), run(&before));
    for ((n, a), (_, b)) in got.iter().zip(&want) {
        let d = diff(a, b).unwrap();
        // fusec verify's fp16 tolerance (1e-2), as relative L2.
        assert!(d.rel_l2 < 1e-2, "{n}: {d:?}");
    }
}

fn prepared(seed: u64, stem_seed: u64, classes: i64) -> Graph {
    let mut g = mini(seed, stem_seed, classes);
    canonicalize(&mut g).unwrap();
    fold_bn(&mut g).unwrap();
    g
}

#[test]
fn align_pairs_every_node_and_finds_the_class_head_divergence() {
    let (a, b) = (prepared(1, 1, 3), prepared(2, 2, 5));
    let names = vec!["a".to_string(), "b".to_string()];
    let al = align(&[&a, &b], &names).unwrap();
    let mut s = String::new();
    for p in &al.groups {
        let (na, nb) = (a.node(p.nodes[0]), b.node(p.nodes[1]));
        s.push_str(&format!("{} {} <-> {}\n", if p.same { "same   " } else { "diverge" }, na.name, nb.name));
    }
    for d in &al.divergences {
        s.push_str(&format!("divergence: {}\n", fusec_passes::fuse::align::describe(&[&a, &b], &names, &al.groups, d)));
    }
    assert_eq!(al.divergences.len(), 1);
    assert_eq!(al.groups.iter().filter(|p| !p.same).count(), 1, "only the class conv diverges");
    insta::assert_snapshot!(s);
}

/// The members fused as `lowering` says, without padding channels to a
/// block (these fixtures' few channels would be padded to 16: the tests
/// that use this are about lowering; padding has its own).
fn fused(lowering: Lowering, members: Vec<(&str, Graph)>) -> fusec_passes::Fused {
    let members = members.into_iter().map(|(n, graph)| Member { name: n.into(), graph }).collect();
    fuse(members, &FuseOptions { keep_bn: false, lowering, channel_block: None, ..Default::default() }).unwrap()
}

/// The fused model gives each member's outputs, under `m{k}/`.
fn assert_fused_matches_members(f: &fusec_passes::Fused, members: &[Graph]) {
    let got = run(&f.graph);
    for (k, m) in members.iter().enumerate() {
        assert_same_outputs(&got, &format!("m{k}/"), &run(m));
    }
}

#[test]
fn group_and_heads_stack_the_trunk_and_split_at_the_class_head() {
    let members = vec![mini(1, 1, 3), mini(2, 2, 5), mini(3, 3, 2)];
    let f = fused(
        Lowering::Grouped,
        members.iter().cloned().enumerate().map(|(k, g)| (["m0", "m1", "m2"][k], g)).collect(),
    );
    let r = &f.report;
    assert_eq!((r.shared, r.separate_same, r.divergent), (0, 0, 1), "{r:?}");
    assert_eq!(r.fused_convs, 5 + 3, "5 grouped convs, the class conv once per member");
    let text = to_text(&f.graph).unwrap();
    assert!(text.contains("group=12"), "depthwise conv grouped 3x4:\n{text}");
    insta::assert_snapshot!(text);
    assert_fused_matches_members(&f, &members);
}

#[test]
fn share_computes_a_frozen_stem_once() {
    // Same stem seed: stem conv + BN bit-identical, the rest differs.
    let members = vec![mini(1, 9, 3), mini(2, 9, 5)];
    let f = fused(Lowering::Grouped, vec![("m0", members[0].clone()), ("m1", members[1].clone())]);
    let r = &f.report;
    assert_eq!(r.shared_convs, 1, "{r:?}");
    // Stem conv, Sigmoid, Mul (SiLU) and the SE ReduceMean read only shared values.
    assert_eq!(r.shared, 4, "{r:?}");
    insta::assert_snapshot!(to_text(&f.graph).unwrap());
    assert_fused_matches_members(&f, &members);
}

#[test]
fn separate_lowering_keeps_every_member_apart_but_shares_identical_layers() {
    let members = vec![mini(1, 9, 3), mini(2, 9, 5)];
    let f = fused(Lowering::Separate, vec![("m0", members[0].clone()), ("m1", members[1].clone())]);
    assert_eq!(f.report.grouped, 0);
    assert_eq!(f.report.fused_convs, 1 + 2 * 5, "the shared stem once, 5 convs per member");
    insta::assert_snapshot!(to_text(&f.graph).unwrap());
    assert_fused_matches_members(&f, &members);
}

#[test]
fn member_subgraphs_write_each_members_block_as_a_one_step_scan() {
    use protobuf::Message;
    let members = vec![mini(1, 9, 3), mini(2, 9, 5)];
    let named = vec![("m0", members[0].clone()), ("m1", members[1].clone())];
    let members_of = named.into_iter().map(|(n, graph)| Member { name: n.into(), graph }).collect();
    let opts = FuseOptions { lowering: Lowering::Separate, member_subgraphs: true, ..Default::default() };
    let f = fuse(members_of, &opts).unwrap();
    // Each member's nodes after the shared stem: one block, one id each.
    let g = &f.graph;
    let mut blocks: Vec<(u32, usize)> = vec![];
    for n in g.node_ids() {
        if let Some(id) = g.node(n).subgraph {
            match blocks.iter_mut().find(|(b, _)| *b == id) {
                Some((_, count)) => *count += 1,
                None => blocks.push((id, 1)),
            }
        }
    }
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    assert!(blocks.iter().all(|(_, n)| *n >= fusec_passes::fuse::SUBGRAPH_MIN_NODES), "{blocks:?}");
    // Written as two Scans, each holding its member's weights, each output
    // squeezed back to its name; the shared stem stays outside.
    let bytes = fusec_exporters::onnx::export(g).unwrap();
    let model = onnx_protobuf::ModelProto::parse_from_bytes(&bytes).unwrap();
    let gp = model.graph.as_ref().unwrap();
    let scans: Vec<&onnx_protobuf::NodeProto> = gp.node.iter().filter(|n| n.op_type == "Scan").collect();
    assert_eq!(scans.len(), 2);
    for scan in &scans {
        let body = scan.attribute.iter().find(|a| a.name == "body").and_then(|a| a.g.as_ref()).unwrap();
        assert!(body.node.len() >= fusec_passes::fuse::SUBGRAPH_MIN_NODES && !body.initializer.is_empty());
        assert!(body.initializer.iter().all(|t| !t.raw_data.is_empty()), "the weights' bytes are in the body");
        let member = &scan.name[..3];
        assert!(member.starts_with('m') && body.node.iter().all(|n| n.name.starts_with(member)), "{}", scan.name);
    }
    assert!(gp.node.iter().any(|n| n.op_type == "Conv"), "the shared stem conv stays outside");
    assert_eq!(
        gp.node.iter().filter(|n| n.op_type == "Squeeze").count(),
        scans.iter().map(|s| s.output.len()).sum::<usize>()
    );
    // tract runs it and gives each member's outputs.
    assert_fused_matches_members(&f, &members);
    // fp16 weights: each weight's Cast back to f32 moves into the Scan
    // that alone reads it, and the weight with it.
    let mut half = g.clone();
    assert!(fusec_passes::fp16_weights(&mut half).unwrap() > 0);
    let model16 = onnx_protobuf::ModelProto::parse_from_bytes(&fusec_exporters::onnx::export(&half).unwrap()).unwrap();
    let gp16 = model16.graph.as_ref().unwrap();
    for scan in gp16.node.iter().filter(|n| n.op_type == "Scan") {
        let body = scan.attribute.iter().find(|a| a.name == "body").and_then(|a| a.g.as_ref()).unwrap();
        assert!(body.node.iter().any(|n| n.op_type == "Cast"), "{}", scan.name);
        assert!(body.initializer.iter().any(|t| t.data_type == 10), "f16 weights inside {}", scan.name);
    }
    let outer_casts: Vec<&str> =
        gp16.node.iter().filter(|n| n.op_type == "Cast").flat_map(|n| n.input.iter().map(String::as_str)).collect();
    assert_eq!(outer_casts.len(), 1, "only the shared stem conv's weight is cast outside: {outer_casts:?}");
    // Read back, the Scans are inlined: the same outputs again.
    let back = fusec_frontends::onnx::import(&bytes, Path::new("subgraphs.onnx")).unwrap();
    assert!(back.node_ids().iter().all(|n| back.node(*n).op.name() != "Scan"));
    let (got, want) = (run(&back), run(g));
    for (name, w) in &want {
        let (_, b) = got.iter().find(|(n, _)| n == name).unwrap();
        assert_eq!(b, w, "{name}");
    }
}

/// A chain of `blocks` expand (3 → 32 channels) / project (32 → 3) 1×1
/// convs with Relus: wide inside each block, narrow between blocks.
fn expand_project_chain(seed: u64, blocks: usize) -> Graph {
    let mut r = Rng(seed);
    let mut b = OnnxBuilder::new(17).input("image", &[1, 3, 8, 8]).output("out", &[1, 3, 8, 8]);
    let mut x = "image".to_string();
    for i in 0..blocks {
        let (we, wp) = (format!("e{i}.w"), format!("p{i}.w"));
        b = b
            .init_f32(&we, &[32, 3, 1, 1], &r.vals(96, 0.0, 0.3))
            .init_f32(&wp, &[3, 32, 1, 1], &r.vals(96, 0.0, 0.2))
            .node("Conv", &[&x, &we], &[&format!("e{i}")], vec![])
            .node("Relu", &[&format!("e{i}")], &[&format!("er{i}")], vec![])
            .node("Conv", &[&format!("er{i}"), &wp], &[&format!("p{i}")], vec![])
            .node(
                "Relu",
                &[&format!("p{i}")],
                &[&if i + 1 == blocks { "out".to_string() } else { format!("pr{i}") }],
                vec![],
            );
        x = format!("pr{i}");
    }
    fusec_frontends::onnx::import(&b.build(), Path::new("chain.onnx")).expect("fixture imports")
}

#[test]
fn regions_cut_moves_to_where_the_least_data_crosses() {
    // 10 blocks, 40 node groups (block i is nodes 4i..4i+3): a cut at 0.45
    // falls before node 18, so block 4's expanded Relu output (32 channels)
    // would cross it; within 5% (2 nodes) the narrowest, nearest place is
    // before node 19, where block 4's projection (3 channels) crosses.
    let members = vec![expand_project_chain(1, 10), expand_project_chain(2, 10)];
    let f = fused(Lowering::Regions { from: 0.45 }, vec![("m0", members[0].clone()), ("m1", members[1].clone())]);
    let g = &f.graph;
    let stacks: Vec<Vec<usize>> = g
        .node_ids()
        .into_iter()
        .map(|n| g.node(n))
        .filter(|n| matches!(n.op, fuse_ir::Op::Concat { .. }))
        .map(|n| g.value(n.outputs[0]).ty.shape.clone())
        .collect();
    assert_eq!(stacks, vec![vec![1, 6, 8, 8]], "one stacking Concat, of the two members' 3-channel projections");
    assert_eq!(f.report.grouped, 21, "block 4's last Relu and blocks 5 to 9 grouped");
    assert_fused_matches_members(&f, &members);
}

#[test]
fn a_plan_groups_exactly_its_runs_and_keeps_the_outputs() {
    // 10 blocks, 40 node groups in 4 runs of 10: plan 0101 groups runs 1
    // and 3 (groups 10..20 and 30..40), keeps runs 0 and 2 per member.
    let members = vec![expand_project_chain(1, 10), expand_project_chain(2, 10)];
    let two = || vec![("m0", members[0].clone()), ("m1", members[1].clone())];
    let plan = Lowering::parse_plan("0101").unwrap();
    assert_eq!(plan, Lowering::Plan { stacked: 0b1010, chunks: 4 });
    assert_eq!(Lowering::plan_digits(0b1010, 4), "0101");
    assert!(Lowering::parse_plan("01x").is_err() && Lowering::parse_plan("").is_err());
    let f = fused(plan, two());
    assert_eq!(f.report.grouped, 20, "two runs of 10 node groups");
    let stacks = f.graph.node_ids().into_iter().filter(|&n| matches!(f.graph.node(n).op, fuse_ir::Op::Concat { .. }));
    assert_eq!(stacks.count(), 2, "each grouped run is entered once");
    assert_fused_matches_members(&f, &members);
    // All runs grouped is the grouped lowering; none, the separate one.
    let text = |l| to_text(&fused(l, two()).graph).unwrap();
    assert_eq!(text(Lowering::parse_plan("1111").unwrap()), text(Lowering::Grouped));
    assert_eq!(text(Lowering::parse_plan("0000").unwrap()), text(Lowering::Separate));
}

/// A miniature BERT cross-encoder layer, as torch.onnx writes one: token
/// embeddings plus per-member positions, LayerNorm, attention (Q, K, V
/// projections, Reshape/Transpose into heads, scaled scores, the mask
/// computed from a shared input, Softmax, context back to `[B, S, H]`),
/// an output projection with a residual, a second LayerNorm whose scale
/// and bias are bit-identical in every member, an erf-GELU feed-forward
/// block, the pooler (Gather of the first token, ReduceMean of its axis,
/// Gemm, Tanh) and a
/// classifier with `classes` logits.
fn mini_bert(seed: u64, classes: i64) -> Graph {
    let mut r = Rng(seed);
    let mut shared = Rng(99);
    let (s, h, heads, ff) = (4i64, 8i64, 2i64, 16i64);
    let n = |shape: &[i64]| shape.iter().product::<i64>() as usize;
    let bytes = OnnxBuilder::new(17)
        .input_typed("ids", fuse_ir::DType::I64, &[1, s])
        .input("mask", &[1, s])
        .output("logits", &[1, classes])
        .init_f32("emb", &[10, h], &r.vals(n(&[10, h]), 0.0, 0.5))
        .init_f32("pos", &[s, h], &r.vals(n(&[s, h]), 0.0, 0.2))
        .init_f32("ln1.g", &[h], &r.vals(8, 1.0, 0.2))
        .init_f32("ln1.b", &[h], &r.vals(8, 0.0, 0.1))
        .init_f32("q.w", &[h, h], &r.vals(64, 0.0, 0.4))
        .init_f32("q.b", &[h], &r.vals(8, 0.0, 0.1))
        .init_f32("k.w", &[h, h], &r.vals(64, 0.0, 0.4))
        .init_f32("k.b", &[h], &r.vals(8, 0.0, 0.1))
        .init_f32("v.w", &[h, h], &r.vals(64, 0.0, 0.4))
        .init_f32("v.b", &[h], &r.vals(8, 0.0, 0.1))
        .init_f32("o.w", &[h, h], &r.vals(64, 0.0, 0.4))
        .init_f32("o.b", &[h], &r.vals(8, 0.0, 0.1))
        .init_f32("ln2.g", &[h], &shared.vals(8, 1.0, 0.2))
        .init_f32("ln2.b", &[h], &shared.vals(8, 0.0, 0.1))
        .init_f32("f1.w", &[h, ff], &r.vals(n(&[h, ff]), 0.0, 0.4))
        .init_f32("f1.b", &[ff], &r.vals(16, 0.0, 0.1))
        .init_f32("f2.w", &[ff, h], &r.vals(n(&[ff, h]), 0.0, 0.3))
        .init_f32("f2.b", &[h], &r.vals(8, 0.0, 0.1))
        .init_f32("pool.w", &[h, h], &r.vals(64, 0.0, 0.4))
        .init_f32("pool.b", &[h], &r.vals(8, 0.0, 0.1))
        .init_f32("cls.w", &[classes, h], &r.vals(classes as usize * 8, 0.0, 0.4))
        .init_f32("cls.b", &[classes], &r.vals(classes as usize, 0.0, 0.1))
        .init_f32("one", &[], &[1.0])
        .init_f32("low", &[], &[-1e4])
        .init_f32("scale", &[], &[0.5])
        .init_f32("half", &[], &[0.5])
        .init_f32("sqrt2", &[], &[std::f32::consts::SQRT_2])
        .init_i64("heads_shape", &[1, s, heads, h / heads])
        .init_i64("mask_shape", &[1, 1, 1, s])
        .init_i64("merge_shape", &[1, s, h])
        .init_i64("first", &[0])
        .node("Gather", &["emb", "ids"], &["tok"], vec![])
        .node("Add", &["tok", "pos"], &["e"], vec![])
        .node("LayerNormalization", &["e", "ln1.g", "ln1.b"], &["x"], vec![attr_float("epsilon", 1e-5)])
        .node("Sub", &["one", "mask"], &["inv"], vec![])
        .node("Mul", &["inv", "low"], &["ext0"], vec![])
        .node("Reshape", &["ext0", "mask_shape"], &["ext"], vec![])
        .node("MatMul", &["x", "q.w"], &["q0"], vec![])
        .node("Add", &["q0", "q.b"], &["q1"], vec![])
        .node("Reshape", &["q1", "heads_shape"], &["q2"], vec![])
        .node("Transpose", &["q2"], &["q"], vec![attr_ints("perm", &[0, 2, 1, 3])])
        .node("MatMul", &["x", "k.w"], &["k0"], vec![])
        .node("Add", &["k0", "k.b"], &["k1"], vec![])
        .node("Reshape", &["k1", "heads_shape"], &["k2"], vec![])
        .node("Transpose", &["k2"], &["kt"], vec![attr_ints("perm", &[0, 2, 3, 1])])
        .node("MatMul", &["x", "v.w"], &["v0"], vec![])
        .node("Add", &["v0", "v.b"], &["v1"], vec![])
        .node("Reshape", &["v1", "heads_shape"], &["v2"], vec![])
        .node("Transpose", &["v2"], &["v"], vec![attr_ints("perm", &[0, 2, 1, 3])])
        .node("MatMul", &["q", "kt"], &["sc0"], vec![])
        .node("Mul", &["sc0", "scale"], &["sc1"], vec![])
        .node("Add", &["sc1", "ext"], &["sc"], vec![])
        .node("Softmax", &["sc"], &["p"], vec![attr_int("axis", -1)])
        .node("MatMul", &["p", "v"], &["c0"], vec![])
        .node("Transpose", &["c0"], &["c1"], vec![attr_ints("perm", &[0, 2, 1, 3])])
        .node("Reshape", &["c1", "merge_shape"], &["c"], vec![])
        .node("MatMul", &["c", "o.w"], &["o0"], vec![])
        .node("Add", &["o0", "o.b"], &["o1"], vec![])
        .node("Add", &["o1", "x"], &["r1"], vec![])
        .node("LayerNormalization", &["r1", "ln2.g", "ln2.b"], &["y"], vec![attr_float("epsilon", 1e-5)])
        .node("MatMul", &["y", "f1.w"], &["f0"], vec![])
        .node("Add", &["f0", "f1.b"], &["f1"], vec![])
        .node("Div", &["f1", "sqrt2"], &["g0"], vec![])
        .node("Erf", &["g0"], &["g1"], vec![])
        .node("Add", &["g1", "one"], &["g2"], vec![])
        .node("Mul", &["f1", "g2"], &["g3"], vec![])
        .node("Mul", &["g3", "half"], &["g"], vec![])
        .node("MatMul", &["g", "f2.w"], &["f2"], vec![])
        .node("Add", &["f2", "f2.b"], &["f3"], vec![])
        .node("Add", &["f3", "y"], &["z"], vec![])
        .node("Gather", &["z", "first"], &["t0"], vec![attr_int("axis", 1)])
        .node("ReduceMean", &["t0"], &["t"], vec![attr_ints("axes", &[1]), attr_int("keepdims", 0)])
        .node("Gemm", &["t", "pool.w", "pool.b"], &["pl0"], vec![attr_int("transB", 1)])
        .node("Tanh", &["pl0"], &["pl"], vec![])
        .node("Gemm", &["pl", "cls.w", "cls.b"], &["logits"], vec![attr_int("transB", 1)])
        .build();
    fusec_frontends::onnx::import(&bytes, Path::new("mini_bert.onnx")).expect("fixture imports")
}

fn run_bert(g: &Graph) -> Tensors {
    let ids = ndarray::ArrayD::from_shape_vec(vec![1, 4], vec![3.0, 7.0, 1.0, 9.0]).unwrap();
    let mask = ndarray::ArrayD::from_shape_vec(vec![1, 4], vec![1.0, 1.0, 1.0, 0.0]).unwrap();
    run_with(g, &vec![("ids".into(), ids), ("mask".into(), mask)])
}

#[test]
fn stack_members_puts_a_transformer_on_a_member_axis() {
    let members = [mini_bert(1, 1), mini_bert(2, 2), mini_bert(3, 3)];
    let named = || members.iter().cloned().enumerate().map(|(k, g)| (["m0", "m1", "m2"][k], g)).collect();
    let f = fused(Lowering::Grouped, named());
    fusec_passes::validate::validated("fuse", &f.graph).unwrap();
    let r = &f.report;
    // The mask arithmetic (Sub, Mul, Reshape) reads only the shared input:
    // computed once. Everything else up to the classifier is stacked.
    assert_eq!((r.shared, r.separate_same, r.divergent), (3, 0, 1), "{r:?}");
    assert_eq!((r.grouped, r.member_axis), (r.same - r.shared, r.same - r.shared), "{r:?}");
    let text = to_text(&f.graph).unwrap();
    // Each member's layers run on 2-D rows [4, 8] (flatten_rows): one
    // region from the LayerNorm after the embeddings' sum (whose `[4, 8]`
    // positions broadcast over more than the last axis: it stays 3-D) to
    // the pooler's Gather, with Q/K/V, O and the feed-forward's two
    // products.
    let rows = fusec_passes::RowStats { regions: 1, nodes: 19, linear: 4 };
    assert_eq!(r.rows, vec![rows; 3], "{r:?}");
    // The stacked products: weights [N, 1, K, M], each member's 4 rows in
    // two halves [N, 2, 2, K].
    assert!(text.contains("f32[3,1,8,8]") && text.contains("f32[3,2,2,8]"), "O stacked [N, 1, K, M]:\n{text}");
    // Q, K and V read one value: merged (merge_linear) into one product,
    // then split.
    assert!(text.contains("f32[3,1,8,24]") && text.contains("Split("), "Q/K/V merged, stacked:\n{text}");
    assert_eq!(r.merged, vec![fusec_passes::MergeStats { layers: 3, products: 1 }; 3], "{r:?}");
    assert!(text.contains("Gather(") && text.contains("f32[3,10,8]"), "embeddings stacked [N, V, H]:\n{text}");
    insta::assert_snapshot!(text);
    let got = run_bert(&f.graph);
    for (k, m) in members.iter().enumerate() {
        let want = run_bert(m);
        let key = format!("m{k}/logits");
        let (_, g) = got.iter().find(|(n, _)| *n == key).unwrap_or_else(|| panic!("output `{key}` missing"));
        let d = diff(g, &want[0].1).unwrap();
        assert!(d.within(1e-5, 1e-6), "{key}: {d:?}");
    }
    // The default lowering leaves the member axis to --tune and --lowering grouped.
    let regions = fused(Lowering::Regions { from: 0.0 }, named());
    assert_eq!((regions.report.grouped, regions.report.member_axis), (0, 0), "{:?}", regions.report);

    // split_linear: the 4 projections (MatMul by a 2-D weight: Q, K and V
    // merged, O, the feed-forward's two), their 4 bias Adds and the
    // pooler's Gemm run per member, 2-D products a runtime pre-packs; so
    // do the runs only between two of them, the GELU (Div, Erf, Add, Mul,
    // Mul) and the pooler's Tanh; the rest stays stacked.
    let members3 = named().into_iter().map(|(n, graph)| Member { name: n.into(), graph }).collect();
    let opts = FuseOptions { lowering: Lowering::Grouped, split_linear: true, ..Default::default() };
    let split = fuse(members3, &opts).unwrap();
    fusec_passes::validate::validated("fuse", &split.graph).unwrap();
    assert_eq!(split.report.separate_same, 15, "{:?}", split.report);
    assert_eq!(split.report.member_axis, r.member_axis - 15, "{:?}", split.report);
    let kept: usize = split.report.islands.values().sum();
    assert_eq!(kept, 6, "the GELU's 5 and the Tanh: {:?}", split.report.islands);
    let g = &split.graph;
    let products: Vec<Vec<usize>> = g
        .node_ids()
        .into_iter()
        .map(|n| g.node(n))
        .filter(|n| matches!(n.op, fuse_ir::Op::MatMul | fuse_ir::Op::Gemm(_)))
        .filter_map(|n| n.inputs[1].map(|w| g.value(w).ty.shape.clone()))
        .filter(|s| s.len() == 2)
        .collect();
    assert_eq!(products.len(), 3 * 5 + 3, "5 products per member on 2-D weights, and the classifiers");
    let got = run_bert(g);
    for (k, m) in members.iter().enumerate() {
        let key = format!("m{k}/logits");
        let (_, out) = got.iter().find(|(n, _)| *n == key).unwrap_or_else(|| panic!("output `{key}` missing"));
        assert!(diff(out, &run_bert(m)[0].1).unwrap().within(1e-5, 1e-6), "{key}");
    }
}

/// A miniature classifier: conv, Relu, global average pool, Flatten, a
/// hidden Gemm with Relu, and a class Gemm with `classes` outputs.
fn mini_classifier(seed: u64, classes: i64) -> Graph {
    classifier(seed, classes, true)
}

/// [`mini_classifier`], with or without the optional biases of its Conv and
/// Gemms (torch's dynamo exporter drops a bias that is all zeros).
fn classifier(seed: u64, classes: i64, biases: bool) -> Graph {
    let mut r = Rng(seed);
    let b = |name: &'static str| if biases { name } else { "" };
    let (conv_w, conv_b) = (r.vals(108, 0.0, 0.3), r.vals(4, 0.0, 0.1));
    let (fc_w, fc_b) = (r.vals(24, 0.0, 0.5), r.vals(6, 0.0, 0.1));
    let (cls_w, cls_b) = (r.vals(classes as usize * 6, 0.0, 0.5), r.vals(classes as usize, 0.0, 0.1));
    let mut m = OnnxBuilder::new(17)
        .input("image", &[1, 3, 8, 8])
        .output("logits", &[1, classes])
        .init_f32("conv.w", &[4, 3, 3, 3], &conv_w)
        .init_f32("fc.w", &[6, 4], &fc_w)
        .init_f32("cls.w", &[classes, 6], &cls_w);
    if biases {
        m = m.init_f32("conv.b", &[4], &conv_b).init_f32("fc.b", &[6], &fc_b).init_f32("cls.b", &[classes], &cls_b);
    }
    let bytes = m
        .node("Conv", &["image", "conv.w", b("conv.b")], &["c"], vec![attr_ints("pads", &[1, 1, 1, 1])])
        .node("Relu", &["c"], &["cr"], vec![])
        .node("GlobalAveragePool", &["cr"], &["p"], vec![])
        .node("Flatten", &["p"], &["f"], vec![attr_int("axis", 1)])
        .node("Gemm", &["f", "fc.w", b("fc.b")], &["h0"], vec![attr_int("transB", 1)])
        .node("Relu", &["h0"], &["h"], vec![])
        .node("Gemm", &["h", "cls.w", b("cls.b")], &["logits"], vec![attr_int("transB", 1)])
        .build();
    fusec_frontends::onnx::import(&bytes, Path::new("classifier.onnx")).expect("fixture imports")
}

#[test]
fn a_missing_bias_matches_a_bias_as_zeros() {
    let members = vec![classifier(1, 3, true), classifier(2, 5, false)];
    for lowering in [Lowering::Grouped, Lowering::Separate] {
        let f = fused(lowering, vec![("m0", members[0].clone()), ("m1", members[1].clone())]);
        fusec_passes::validate::validated("fuse", &f.graph).unwrap();
        assert_eq!(
            f.report.zero_biases,
            vec![vec![] as Vec<String>, vec!["Conv_0".into(), "Gemm_4".into(), "Gemm_6".into()]]
        );
        assert_eq!(f.report.divergent, 1, "only the class Gemm differs: {:?}", f.report.divergences);
        assert!(fusec_passes::explain(&f.report).contains("m1: zero bias made explicit on `Conv_0` and 2 more"));
        assert_fused_matches_members(&f, &members);
    }
    // The other way round: member 0 without biases.
    let members = vec![classifier(2, 5, false), classifier(1, 3, true)];
    let f = fused(Lowering::Grouped, vec![("m0", members[0].clone()), ("m1", members[1].clone())]);
    assert_eq!(f.report.zero_biases[0].len(), 3);
    assert_fused_matches_members(&f, &members);
}

/// DenseNet's transition: Conv, then AveragePool (padded, padding left out
/// of the average), a ceil-mode AveragePool that counts its padding, and a
/// class Gemm.
fn avg_pooled(seed: u64, classes: i64) -> Graph {
    let mut r = Rng(seed);
    let bytes = OnnxBuilder::new(17)
        .input("image", &[1, 3, 8, 8])
        .output("logits", &[1, classes])
        .init_f32("conv.w", &[4, 3, 3, 3], &r.vals(108, 0.0, 0.3))
        .init_f32("cls.w", &[classes, 36], &r.vals(classes as usize * 36, 0.0, 0.5))
        .node("Conv", &["image", "conv.w"], &["c"], vec![attr_ints("pads", &[1, 1, 1, 1])])
        .node(
            "AveragePool",
            &["c"],
            &["p1"],
            vec![attr_ints("kernel_shape", &[3, 3]), attr_ints("strides", &[2, 2]), attr_ints("pads", &[1, 1, 1, 1])],
        )
        .node(
            "AveragePool",
            &["p1"],
            &["p2"],
            vec![
                attr_ints("kernel_shape", &[3, 3]),
                attr_ints("strides", &[2, 2]),
                attr_ints("pads", &[1, 1, 1, 1]),
                attr_int("ceil_mode", 1),
                attr_int("count_include_pad", 1),
            ],
        )
        .node("Flatten", &["p2"], &["f"], vec![attr_int("axis", 1)])
        .node("Gemm", &["f", "cls.w"], &["logits"], vec![attr_int("transB", 1)])
        .build();
    fusec_frontends::onnx::import(&bytes, Path::new("pooled.onnx")).expect("fixture imports")
}

#[test]
fn average_pools_stack_on_channels() {
    let members = vec![avg_pooled(1, 3), avg_pooled(2, 5)];
    let f = fused(Lowering::Grouped, vec![("m0", members[0].clone()), ("m1", members[1].clone())]);
    fusec_passes::validate::validated("fuse", &f.graph).unwrap();
    let text = to_text(&f.graph).unwrap();
    assert_eq!(text.matches("= AveragePool(").count(), 2, "each pool once, on 8 channels:\n{text}");
    assert!(text.contains("count_include_pad=true") && text.contains("count_include_pad=false"), "{text}");
    assert_fused_matches_members(&f, &members);
}

#[test]
fn a_channel_stacked_value_moves_onto_the_member_axis_for_a_classifier() {
    let members = vec![mini_classifier(1, 3), mini_classifier(2, 5)];
    let f = fused(Lowering::Grouped, vec![("m0", members[0].clone()), ("m1", members[1].clone())]);
    fusec_passes::validate::validated("fuse", &f.graph).unwrap();
    let r = &f.report;
    // Conv, Relu, GlobalAveragePool on channels; Flatten, Gemm, Relu on the
    // member axis; the class Gemm per member.
    assert_eq!((r.grouped, r.member_axis, r.divergent), (6, 3, 1), "{r:?}");
    let text = to_text(&f.graph).unwrap();
    let transposes = text.lines().filter(|l| l.contains("= Transpose(")).count();
    assert_eq!(transposes, 1, "one restack, [B, N, C, 1, 1] to [N, B, C, 1, 1]:\n{text}");
    insta::assert_snapshot!(text);
    assert_fused_matches_members(&f, &members);
}

/// A miniature ConvNeXt block: conv, permute to channels-last, LayerNorm
/// with the member's own scale and bias, permute back, depthwise conv.
fn mini_convnext(seed: u64) -> Graph {
    let mut r = Rng(seed);
    let bytes = OnnxBuilder::new(17)
        .input("image", &[1, 3, 8, 8])
        .output("out", &[1, 4, 8, 8])
        .init_f32("conv.w", &[4, 3, 3, 3], &r.vals(108, 0.0, 0.3))
        .init_f32("ln.g", &[4], &r.vals(4, 1.0, 0.2))
        .init_f32("ln.b", &[4], &r.vals(4, 0.0, 0.1))
        .init_f32("dw.w", &[4, 1, 3, 3], &r.vals(36, 0.0, 0.3))
        .node("Conv", &["image", "conv.w"], &["c"], vec![attr_ints("pads", &[1, 1, 1, 1])])
        .node("Transpose", &["c"], &["nhwc"], vec![attr_ints("perm", &[0, 2, 3, 1])])
        .node("LayerNormalization", &["nhwc", "ln.g", "ln.b"], &["n"], vec![attr_float("epsilon", 1e-6)])
        .node("Transpose", &["n"], &["nchw"], vec![attr_ints("perm", &[0, 3, 1, 2])])
        .node("Conv", &["nchw", "dw.w"], &["out"], vec![attr_int("group", 4), attr_ints("pads", &[1, 1, 1, 1])])
        .build();
    fusec_frontends::onnx::import(&bytes, Path::new("convnext.onnx")).expect("fixture imports")
}

#[test]
fn a_member_axis_value_moves_back_onto_channels_for_a_conv() {
    let members = vec![mini_convnext(1), mini_convnext(2)];
    let f = fused(Lowering::Grouped, vec![("m0", members[0].clone()), ("m1", members[1].clone())]);
    fusec_passes::validate::validated("fuse", &f.graph).unwrap();
    let r = &f.report;
    // Both convs on channels; the Transposes and the LayerNorm on the member axis.
    assert_eq!((r.grouped, r.member_axis), (5, 3), "{r:?}");
    let g = &f.graph;
    let ops: Vec<&str> = g.topo_order().unwrap().into_iter().map(|n| g.node(n).op.name()).collect();
    assert_eq!(
        ops,
        [
            "Conv",
            "Reshape",
            "Transpose",
            "Transpose",
            "Reshape",
            "LayerNormalization",
            "Reshape",
            "Mul",
            "Add",
            "Transpose",
            "Transpose",
            "Reshape",
            "Conv",
            "Split"
        ],
        "channels to member axis (Reshape, Transpose), back (Transpose, Reshape), no Concat; the outputs split per member"
    );
    assert_fused_matches_members(&f, &members);
}

/// An assignment (the tuner's choice from costs) decides per node group:
/// all grouped is the grouped lowering, none the separate one, and any mix
/// gives the members' outputs; the report names every fused node's origin
/// (layout changes as conversions) and the data flowing between groups.
#[test]
fn an_assignment_decides_per_node_group() {
    let members = vec![mini(1, 1, 3), mini(2, 2, 5)];
    let named = || vec![("m0", members[0].clone()), ("m1", members[1].clone())];
    let with = |a: Option<Vec<bool>>| {
        let ms = named().into_iter().map(|(n, graph)| Member { name: n.into(), graph }).collect();
        fuse(ms, &FuseOptions { assignment: a, channel_block: None, ..Default::default() })
    };
    let n = fused(Lowering::Grouped, named()).report.lowered.len();
    let text = |f: &fusec_passes::Fused| to_text(&f.graph).unwrap();
    assert_eq!(text(&with(Some(vec![true; n])).unwrap()), text(&fused(Lowering::Grouped, named())));
    assert_eq!(text(&with(Some(vec![false; n])).unwrap()), text(&fused(Lowering::Separate, named())));
    let err = with(Some(vec![true; n + 1])).err().expect("a wrong length is refused").to_string();
    assert!(err.contains(&format!("decides {} node groups", n + 1)), "{err}");
    let mixed: Vec<bool> = (0..n).map(|i| i % 3 != 1).collect();
    let f = with(Some(mixed.clone())).unwrap();
    fusec_passes::validate::validated("fuse", &f.graph).unwrap();
    assert_fused_matches_members(&f, &members);
    let r = &f.report;
    for id in f.graph.node_ids() {
        let name = &f.graph.node(id).name;
        let origin = r.origins.iter().find(|(o, _)| o == name).map(|(_, o)| *o);
        let is_conversion = name.ends_with("::split") || name.ends_with("::stacked");
        match origin {
            Some(Origin::Group(i)) => assert!(i < n && !is_conversion, "{name}: group {i}"),
            Some(Origin::Conversion) => assert!(is_conversion || name.ends_with("::one"), "{name}"),
            Some(Origin::Output) => assert!(name.ends_with("::copy"), "{name}"),
            None => panic!("no origin for {name}"),
        }
    }
    assert!(r.origins.iter().any(|(_, o)| *o == Origin::Conversion), "a mix moves data between forms");
    assert!(
        !r.flows.is_empty() && r.flows.iter().all(|f| f.to.is_none_or(|j| f.from < j) && f.bytes > 0),
        "{:?}",
        r.flows
    );
    assert!(r.flows.iter().any(|f| f.to.is_none()), "the outputs flow out");
}

/// A member whose channel counts (24, 6, 40) are not multiples of 16, as
/// EfficientNet's and MobileNetV3's are not: stem conv + BatchNorm + SiLU,
/// squeeze-excite, a depthwise conv, a projection with a per-channel
/// constant added and one divided by, HardSigmoid, a MaxPool and an
/// upsampling Resize added back, and an output conv of 16 channels.
fn odd_channels(seed: u64) -> Graph {
    let mut r = Rng(seed);
    let bytes = OnnxBuilder::new(17)
        .input("image", &[1, 3, 8, 8])
        .output("out", &[1, 16, 8, 8])
        .init_f32("stem.w", &[24, 3, 3, 3], &r.vals(648, 0.0, 0.3))
        .init_f32("bn.g", &[24], &r.vals(24, 1.0, 0.2))
        .init_f32("bn.b", &[24], &r.vals(24, 0.0, 0.1))
        .init_f32("bn.m", &[24], &r.vals(24, 0.0, 0.1))
        .init_f32("bn.v", &[24], &r.vals(24, 1.0, 0.5))
        .init_f32("se.r.w", &[6, 24, 1, 1], &r.vals(144, 0.0, 0.5))
        .init_f32("se.r.b", &[6], &r.vals(6, 0.0, 0.1))
        .init_f32("se.e.w", &[24, 6, 1, 1], &r.vals(144, 0.0, 0.5))
        .init_f32("se.e.b", &[24], &r.vals(24, 0.0, 0.1))
        .init_f32("dw.w", &[24, 1, 3, 3], &r.vals(216, 0.0, 0.3))
        .init_f32("pj.w", &[40, 24, 1, 1], &r.vals(960, 0.0, 0.3))
        .init_f32("pj.b", &[40], &r.vals(40, 0.0, 0.1))
        .init_f32("shift", &[1, 40, 1, 1], &r.vals(40, 0.0, 0.5))
        .init_f32("scale", &[40, 1, 1], &r.vals(40, 2.0, 0.5))
        .init_f32("up.scales", &[4], &[1.0, 1.0, 2.0, 2.0])
        .init_f32("out.w", &[16, 40, 1, 1], &r.vals(640, 0.0, 0.3))
        .node("Conv", &["image", "stem.w"], &["s"], vec![attr_ints("pads", &[1, 1, 1, 1])])
        .node("BatchNormalization", &["s", "bn.g", "bn.b", "bn.m", "bn.v"], &["bn"], vec![attr_float("epsilon", 1e-3)])
        .node("Sigmoid", &["bn"], &["sg"], vec![])
        .node("Mul", &["bn", "sg"], &["a"], vec![])
        .node("ReduceMean", &["a"], &["se"], vec![attr_ints("axes", &[2, 3]), attr_int("keepdims", 1)])
        .node("Conv", &["se", "se.r.w", "se.r.b"], &["sr"], vec![])
        .node("Relu", &["sr"], &["srr"], vec![])
        .node("Conv", &["srr", "se.e.w", "se.e.b"], &["se2"], vec![])
        .node("Sigmoid", &["se2"], &["gate"], vec![])
        .node("Mul", &["a", "gate"], &["a2"], vec![])
        .node("Conv", &["a2", "dw.w"], &["d"], vec![attr_int("group", 24), attr_ints("pads", &[1, 1, 1, 1])])
        .node("Conv", &["d", "pj.w", "pj.b"], &["p"], vec![])
        .node("Add", &["p", "shift"], &["p1"], vec![])
        .node("Div", &["p1", "scale"], &["p2"], vec![])
        .node("HardSigmoid", &["p2"], &["h"], vec![])
        .node("MaxPool", &["h"], &["m"], vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])])
        .node("Resize", &["m", "", "up.scales"], &["u"], vec![attr_str("mode", "nearest")])
        .node("Add", &["u", "h"], &["v"], vec![])
        .node("Conv", &["v", "out.w"], &["out"], vec![])
        .build();
    fusec_frontends::onnx::import(&bytes, Path::new("odd.onnx")).expect("fixture imports")
}

/// Every Conv's weight shape and group in `g`.
fn convs(g: &Graph) -> Vec<(Vec<usize>, usize)> {
    let mut v = vec![];
    for n in g.topo_order().unwrap() {
        if let fuse_ir::Op::Conv(c) = &g.node(n).op {
            v.push((g.value(g.node(n).inputs[1].unwrap()).ty.shape.clone(), c.group));
        }
    }
    v
}

#[test]
fn pad_channels_pads_convs_to_the_block_and_keeps_the_outputs() {
    let before = odd_channels(1);
    let mut after = before.clone();
    let st = pad_channels(&mut after, 16).unwrap();
    after.validate().unwrap();
    // The stem (24), the squeeze-excite's two convs (6, 24) and the
    // projection (40); the depthwise conv follows its input; nothing needs
    // a Slice; the output conv's 16 stay.
    assert_eq!(st, PadStats { convs: 4 });
    let shapes: Vec<(Vec<usize>, usize)> = convs(&after);
    assert_eq!(
        shapes,
        vec![
            (vec![32, 3, 3, 3], 1),
            (vec![16, 32, 1, 1], 1),
            (vec![32, 16, 1, 1], 1),
            (vec![32, 1, 3, 3], 32),
            (vec![48, 32, 1, 1], 1),
            (vec![16, 48, 1, 1], 1),
        ]
    );
    insta::assert_snapshot!(before_after(&before, &after));
    assert_same_outputs(&run(&after), "", &run(&before));
    // Nothing to pad: the graph is left as it is.
    let mut again = after.clone();
    assert_eq!(pad_channels(&mut again, 16).unwrap(), PadStats::default());
    assert_eq!(to_text(&again).unwrap(), to_text(&after).unwrap());
    // Where the padded channels would reach a graph output, nothing pads.
    let mut to_output = before.clone();
    to_output.set_outputs(vec![to_output.outputs()[0], value_named(&to_output, "h")]);
    let kept = to_output.clone();
    let st = pad_channels(&mut to_output, 16).unwrap();
    assert!(st.convs < 4, "{st:?}");
    assert_same_outputs(&run(&to_output), "", &run(&kept));
}

/// `y = Conv(x)` added to `x` itself, a graph input of 20 channels (no
/// padding partner), and a 1-channel map broadcast over a 24-channel conv's
/// output (a spatial attention gate).
fn no_partner() -> Graph {
    let mut r = Rng(5);
    let bytes = OnnxBuilder::new(17)
        .input("x", &[1, 20, 8, 8])
        .output("out", &[1, 16, 8, 8])
        .init_f32("y.w", &[20, 20, 1, 1], &r.vals(400, 0.0, 0.3))
        .init_f32("f.w", &[24, 20, 1, 1], &r.vals(480, 0.0, 0.3))
        .init_f32("a.w", &[1, 24, 1, 1], &r.vals(24, 0.0, 0.3))
        .init_f32("out.w", &[16, 24, 1, 1], &r.vals(384, 0.0, 0.3))
        .node("Conv", &["x", "y.w"], &["y"], vec![])
        .node("Add", &["x", "y"], &["z"], vec![])
        .node("Conv", &["z", "f.w"], &["f"], vec![])
        .node("Conv", &["f", "a.w"], &["a"], vec![])
        .node("Sigmoid", &["a"], &["gate"], vec![])
        .node("Mul", &["f", "gate"], &["g"], vec![])
        .node("Conv", &["g", "out.w"], &["out"], vec![])
        .build();
    fusec_frontends::onnx::import(&bytes, Path::new("no_partner.onnx")).expect("fixture imports")
}

#[test]
fn pad_channels_pads_only_where_every_reader_takes_the_padding() {
    let before = no_partner();
    let mut after = before.clone();
    let st = pad_channels(&mut after, 16).unwrap();
    after.validate().unwrap();
    // `y` would meet `x` unpadded: not padded. `f` (24) is, through the
    // gate's Mul; the 1-channel gate is not (it broadcasts). No Slice.
    assert_eq!(st, PadStats { convs: 1 });
    assert_eq!(
        convs(&after),
        vec![(vec![20, 20, 1, 1], 1), (vec![32, 20, 1, 1], 1), (vec![1, 32, 1, 1], 1), (vec![16, 32, 1, 1], 1)]
    );
    let text = to_text(&after).unwrap();
    assert!(!text.contains("Slice"), "{text}");
    assert_eq!(after.node_count(), before.node_count());
    assert_same_outputs(&run_on(&after, "x", &[1, 20, 8, 8]), "", &run_on(&before, "x", &[1, 20, 8, 8]));
}

/// `g` run on tract with input `name` of `shape` filled deterministically.
fn run_on(g: &Graph, name: &str, shape: &[usize]) -> Tensors {
    let n: usize = shape.iter().product();
    run_with(
        g,
        &vec![(name.into(), ndarray::ArrayD::from_shape_vec(shape.to_vec(), Rng(9).vals(n, 0.0, 1.0)).unwrap())],
    )
}

fn value_named(g: &Graph, name: &str) -> fuse_ir::ValueId {
    g.topo_order()
        .unwrap()
        .into_iter()
        .flat_map(|n| g.node(n).outputs.clone())
        .find(|&v| g.value(v).name == name)
        .unwrap_or_else(|| panic!("no value `{name}`"))
}

#[test]
fn padded_members_group_into_convs_of_whole_blocks() {
    let members = vec![odd_channels(1), odd_channels(2), odd_channels(3)];
    for (keep_bn, block) in [(false, Some(16)), (true, Some(16)), (false, None)] {
        let ms = members.iter().enumerate().map(|(k, g)| Member { name: format!("m{k}"), graph: g.clone() }).collect();
        let opts = FuseOptions { keep_bn, lowering: Lowering::Grouped, channel_block: block, ..Default::default() };
        let f = fuse(ms, &opts).unwrap();
        let want = if block.is_some() { PadStats { convs: 4 } } else { PadStats::default() };
        assert_eq!(f.report.padded, vec![want; 3]);
        // Each group of a grouped conv: whole blocks of 16 channels out and
        // in (but for the stem, which reads the 3-channel image once);
        // the depthwise conv (one channel a group): whole blocks in all.
        let whole = convs(&f.graph).iter().all(|(w, group)| {
            let (out, inp) = (w[0] / group, w[1]);
            if inp == 1 && out == 1 {
                w[0] % 16 == 0
            } else {
                out % 16 == 0 && (inp % 16 == 0 || inp == 3)
            }
        });
        assert_eq!(whole, block.is_some(), "keep_bn {keep_bn}, block {block:?}: {:?}", convs(&f.graph));
        assert_fused_matches_members(&f, &members);
    }
    // A lowering that groups nothing keeps the members as they run alone.
    for lowering in [Lowering::Separate, Lowering::Plan { stacked: 0, chunks: 8 }] {
        let ms = members.iter().enumerate().map(|(k, g)| Member { name: format!("m{k}"), graph: g.clone() }).collect();
        let f = fuse(ms, &FuseOptions { lowering, ..Default::default() }).unwrap();
        assert_eq!(f.report.padded, vec![PadStats::default(); 3], "{lowering:?}");
        assert_eq!(f.report.channel_block, None, "{lowering:?}");
    }
}

/// Linear layers reading one value `x` [1, rows, 8]: q, k (its bias added
/// first) and v with biases; a and c without; e with a bias whose sum is a
/// graph output.
fn siblings(rows: i64) -> Graph {
    let mut r = Rng(11);
    let bytes = OnnxBuilder::new(17)
        .input("x", &[1, rows, 8])
        .output("s", &[1, rows, 8])
        .output("vr", &[1, rows, 4])
        .output("ar", &[1, rows, 3])
        .output("cr", &[1, rows, 5])
        .output("e", &[1, rows, 2])
        .init_f32("q.w", &[8, 8], &r.vals(64, 0.0, 0.4))
        .init_f32("q.b", &[8], &r.vals(8, 0.0, 0.1))
        .init_f32("k.w", &[8, 8], &r.vals(64, 0.0, 0.4))
        .init_f32("k.b", &[8], &r.vals(8, 0.0, 0.1))
        .init_f32("v.w", &[8, 4], &r.vals(32, 0.0, 0.4))
        .init_f32("v.b", &[4], &r.vals(4, 0.0, 0.1))
        .init_f32("a.w", &[8, 3], &r.vals(24, 0.0, 0.4))
        .init_f32("c.w", &[8, 5], &r.vals(40, 0.0, 0.4))
        .init_f32("e.w", &[8, 2], &r.vals(16, 0.0, 0.4))
        .init_f32("e.b", &[2], &r.vals(2, 0.0, 0.1))
        .node("MatMul", &["x", "q.w"], &["q0"], vec![])
        .node("Add", &["q0", "q.b"], &["q"], vec![])
        .node("MatMul", &["x", "k.w"], &["k0"], vec![])
        .node("Add", &["k.b", "k0"], &["k"], vec![])
        .node("MatMul", &["x", "v.w"], &["v0"], vec![])
        .node("Add", &["v0", "v.b"], &["v"], vec![])
        .node("MatMul", &["x", "a.w"], &["a"], vec![])
        .node("MatMul", &["x", "c.w"], &["c"], vec![])
        .node("MatMul", &["x", "e.w"], &["e0"], vec![])
        .node("Add", &["e0", "e.b"], &["e"], vec![])
        .node("Add", &["q", "k"], &["s"], vec![])
        .node("Relu", &["v"], &["vr"], vec![])
        .node("Relu", &["a"], &["ar"], vec![])
        .node("Relu", &["c"], &["cr"], vec![])
        .build();
    fusec_frontends::onnx::import(&bytes, Path::new("siblings.onnx")).expect("fixture imports")
}

#[test]
fn merge_linear_merges_sibling_projections_and_keeps_the_outputs() {
    let before = siblings(4);
    let mut after = before.clone();
    let st = merge_linear(&mut after).unwrap();
    after.validate().unwrap();
    // q, k and v with their biases; a, c and e's product without (e's sum
    // is a graph output and stays where it is).
    assert_eq!(st, MergeStats { layers: 6, products: 2 });
    let text = to_text(&after).unwrap();
    assert_eq!(text.matches(" = MatMul(").count(), 2, "{text}");
    assert_eq!(text.matches(" = Split(").count(), 2, "{text}");
    assert!(text.contains("f32[8,20]") && text.contains("f32[20]") && text.contains("f32[8,10]"), "{text}");
    insta::assert_snapshot!(before_after(&before, &after));
    let x = ndarray::ArrayD::from_shape_vec(vec![1, 4, 8], Rng(3).vals(32, 0.0, 1.0)).unwrap();
    let inputs: Tensors = vec![("x".into(), x)];
    assert_same_outputs(&run_with(&after, &inputs), "", &run_with(&before, &inputs));
    // Nothing left to merge: the graph stays as it is.
    let mut again = after.clone();
    assert_eq!(merge_linear(&mut again).unwrap(), MergeStats::default());
    assert_eq!(to_text(&again).unwrap(), text);
    // Products of more rows stay apart (the Split's copy would cost more).
    let tall = siblings(fusec_passes::MAX_MERGED_ROWS as i64 + 1);
    let mut kept = tall.clone();
    assert_eq!(merge_linear(&mut kept).unwrap(), MergeStats::default());
    assert_eq!(to_text(&kept).unwrap(), to_text(&tall).unwrap());
}

/// A transformer block's row-wise layers on `x` [1, 4, 8]: LayerNorm
/// (axis 2), a linear layer with its bias, GELU (as `Erf`), a second
/// linear layer, the residual sum (a graph output), then attention-style
/// readers: a Reshape to heads, a Gather of the first token. Beside it, a
/// Softmax run with no linear layer, and an Add of positions `[4, 8]`
/// (broadcast over more than the last axis).
fn row_block() -> Graph {
    let mut r = Rng(21);
    let bytes = OnnxBuilder::new(17)
        .input("x", &[1, 4, 8])
        .output("res", &[1, 4, 8])
        .output("heads", &[1, 2, 4, 4])
        .output("first", &[1, 8])
        .output("sm", &[1, 4, 8])
        .init_f32("pos", &[4, 8], &r.vals(32, 0.0, 0.2))
        .init_f32("ln.g", &[8], &r.vals(8, 1.0, 0.2))
        .init_f32("ln.b", &[8], &r.vals(8, 0.0, 0.1))
        .init_f32("f1.w", &[8, 16], &r.vals(128, 0.0, 0.4))
        .init_f32("f1.b", &[16], &r.vals(16, 0.0, 0.1))
        .init_f32("f2.w", &[16, 8], &r.vals(128, 0.0, 0.4))
        .init_f32("f2.b", &[8], &r.vals(8, 0.0, 0.1))
        .init_i64("heads_shape", &[1, 4, 2, 4])
        .init_i64("zero", &[0])
        .node("Add", &["x", "pos"], &["e"], vec![])
        .node("LayerNormalization", &["e", "ln.g", "ln.b"], &["n"], vec![attr_int("axis", 2)])
        .node("MatMul", &["n", "f1.w"], &["h0"], vec![])
        .node("Add", &["h0", "f1.b"], &["h1"], vec![])
        .node("Erf", &["h1"], &["h2"], vec![])
        .node("MatMul", &["h2", "f2.w"], &["o0"], vec![])
        .node("Add", &["f2.b", "o0"], &["o1"], vec![])
        .node("Add", &["o1", "e"], &["res"], vec![])
        .node("Reshape", &["res", "heads_shape"], &["r4"], vec![])
        .node("Transpose", &["r4"], &["heads"], vec![attr_ints("perm", &[0, 2, 1, 3])])
        .node("Gather", &["res", "zero"], &["g"], vec![attr_int("axis", 1)])
        .node("Reshape", &["g", "first_shape"], &["first"], vec![])
        .init_i64("first_shape", &[1, 8])
        .node("Softmax", &["x"], &["sm"], vec![attr_int("axis", -1)])
        .build();
    fusec_frontends::onnx::import(&bytes, Path::new("rows.onnx")).expect("fixture imports")
}

#[test]
fn flatten_rows_runs_row_wise_layers_on_2d_rows_and_keeps_the_outputs() {
    let before = row_block();
    let mut after = before.clone();
    let st = flatten_rows(&mut after).unwrap();
    after.validate().unwrap();
    // LayerNorm, the two products with their biases, Erf and the residual
    // sum: one region of 7 nodes. The Add of `[4, 8]` positions and the
    // Softmax (no linear layer) stay 3-D.
    assert_eq!(st, RowStats { regions: 1, nodes: 7, linear: 2 });
    let text = to_text(&after).unwrap();
    assert!(text.contains("MatMul(") && text.contains(": f32[4,16]"), "{text}");
    assert!(text.contains("Softmax(%0) {axis=-1} : f32[1,4,8]"), "{text}");
    insta::assert_snapshot!(before_after(&before, &after));
    // The outputs keep their names and shapes.
    let out =
        |g: &Graph| g.outputs().iter().map(|&o| (g.value(o).name.clone(), g.value(o).ty.clone())).collect::<Vec<_>>();
    assert_eq!(out(&after), out(&before));
    let x = ndarray::ArrayD::from_shape_vec(vec![1, 4, 8], Rng(5).vals(32, 0.0, 1.0)).unwrap();
    let inputs: Tensors = vec![("x".into(), x)];
    assert_same_outputs(&run_with(&after, &inputs), "", &run_with(&before, &inputs));
    // Nothing left at rank 3 with a linear layer: a second run changes nothing.
    let mut again = after.clone();
    assert_eq!(flatten_rows(&mut again).unwrap(), RowStats::default());
    assert_eq!(to_text(&again).unwrap(), text);
}

/// A ViT-like block over a batch of 2: a 1x1 conv's patches (`[2, 8, 2,
/// 2]` to tokens `[2, 4, 8]`), then self-attention (2 heads of 4): Q, K
/// and V products, the scale's Mul on Q, Softmax, the heads merged and an
/// output product.
fn batched_attention(seed: u64) -> Graph {
    let mut r = Rng(seed);
    let w = |r: &mut Rng| r.vals(64, 0.0, 0.4);
    let bytes = OnnxBuilder::new(17)
        .input("image", &[2, 8, 2, 2])
        .output("y", &[2, 4, 8])
        .init_f32("patch.w", &[8, 8, 1, 1], &w(&mut r))
        .init_i64("tokens_shape", &[2, 8, 4])
        .node("Conv", &["image", "patch.w"], &["p0"], vec![attr_ints("kernel_shape", &[1, 1])])
        .node("Reshape", &["p0", "tokens_shape"], &["p1"], vec![])
        .node("Transpose", &["p1"], &["x"], vec![attr_ints("perm", &[0, 2, 1])])
        .init_f32("q.w", &[8, 8], &w(&mut r))
        .init_f32("k.w", &[8, 8], &w(&mut r))
        .init_f32("v.w", &[8, 8], &w(&mut r))
        .init_f32("o.w", &[8, 8], &w(&mut r))
        .init_f32("o.b", &[8], &r.vals(8, 0.0, 0.1))
        .init_f32("scale", &[], &[0.5])
        .init_i64("heads_shape", &[2, 4, 2, 4])
        .init_i64("merge_shape", &[2, 4, 8])
        .node("MatMul", &["x", "q.w"], &["q0"], vec![])
        .node("Reshape", &["q0", "heads_shape"], &["q1"], vec![])
        .node("Transpose", &["q1"], &["q2"], vec![attr_ints("perm", &[0, 2, 1, 3])])
        .node("Mul", &["q2", "scale"], &["q"], vec![])
        .node("MatMul", &["x", "k.w"], &["k0"], vec![])
        .node("Reshape", &["k0", "heads_shape"], &["k1"], vec![])
        .node("Transpose", &["k1"], &["kt"], vec![attr_ints("perm", &[0, 2, 3, 1])])
        .node("MatMul", &["x", "v.w"], &["v0"], vec![])
        .node("Reshape", &["v0", "heads_shape"], &["v1"], vec![])
        .node("Transpose", &["v1"], &["v"], vec![attr_ints("perm", &[0, 2, 1, 3])])
        .node("MatMul", &["q", "kt"], &["sc"], vec![])
        .node("Softmax", &["sc"], &["p"], vec![attr_int("axis", -1)])
        .node("MatMul", &["p", "v"], &["c0"], vec![])
        .node("Transpose", &["c0"], &["c1"], vec![attr_ints("perm", &[0, 2, 1, 3])])
        .node("Reshape", &["c1", "merge_shape"], &["c"], vec![])
        .node("MatMul", &["c", "o.w"], &["o0"], vec![])
        .node("Add", &["o0", "o.b"], &["y"], vec![])
        .build();
    fusec_frontends::onnx::import(&bytes, Path::new("attention.onnx")).expect("fixture imports")
}

#[test]
fn batched_elementwise_layers_stay_on_the_member_axis_between_member_axis_layers() {
    let members = [batched_attention(1), batched_attention(2), batched_attention(3)];
    let named = || members.iter().cloned().enumerate().map(|(k, g)| (["m0", "m1", "m2"][k], g)).collect();
    let f = fused(Lowering::Grouped, named());
    fusec_passes::validate::validated("fuse", &f.graph).unwrap();
    let r = &f.report;
    // The conv stacks on channels; after it every node group stacks on
    // the member axis, the scale's Mul and the Softmax too: on channels
    // (`[2, N·2, 4, 4]`) each would sit between two Transposes moving a
    // batch of 2 off the member axis and back (`::by_batch`,
    // `::member_axis`).
    let ops =
        |l: fusec_passes::Lowered| r.lowered.iter().filter(|(_, x)| *x == l).map(|(op, _)| *op).collect::<Vec<_>>();
    assert_eq!(ops(fusec_passes::Lowered::Channels), ["Conv"], "{r:?}");
    assert_eq!(r.member_axis, r.same - 1, "{r:?}");
    let text = to_text(&f.graph).unwrap();
    // One layout change: the conv's output onto the member axis for the
    // Reshape after it.
    assert_eq!(text.matches("Transpose(").count(), 5 + 1, "the members' own 5 and one:\n{text}");
    assert!(text.contains("p0::member_axis") && !text.contains("::by_batch"), "{text}");
    assert!(text.contains("Softmax(") && text.contains("f32[3,2,2,4,4]"), "scores [N, B, heads, S, S]:\n{text}");
    insta::assert_snapshot!(text);
    let x = ndarray::ArrayD::from_shape_vec(vec![2, 8, 2, 2], Rng(5).vals(64, 0.0, 1.0)).unwrap();
    let inputs: Tensors = vec![("image".into(), x)];
    let got = run_with(&f.graph, &inputs);
    for (k, m) in members.iter().enumerate() {
        assert_same_outputs(&got, &format!("m{k}/"), &run_with(m, &inputs));
    }
}
