//! Small ONNX members built in code, shared by the tests and the fuzz seeds.

use fusec_exporters::onnx_builder::{attr_float, attr_int, attr_ints, attr_str, OnnxBuilder};

/// Conv then an upsampling Resize in `mode`, with `seed`-dependent weights.
pub fn resize_member(mode: &str, seed: f32) -> Vec<u8> {
    let w: Vec<f32> = (0..2 * 2 * 3 * 3).map(|i| (i as f32 * 0.37 + seed).sin()).collect();
    OnnxBuilder::new(17)
        .input("x", &[1, 2, 4, 4])
        .output("y", &[1, 2, 8, 8])
        .init_f32("w", &[2, 2, 3, 3], &w)
        .init_f32("scales", &[4], &[1.0, 1.0, 2.0, 2.0])
        .node_named("conv", "Conv", &["x", "w"], &["c"], vec![attr_ints("pads", &[1, 1, 1, 1])])
        .node_named("up", "Resize", &["c", "", "scales"], &["y"], vec![attr_str("mode", mode)])
        .build()
}

/// A member using most of the ops fusec knows, with `seed`-dependent weights.
pub fn many_ops_member(seed: f32) -> Vec<u8> {
    let v = |n: usize, k: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32 + 1.0) * k + seed).sin() * 0.5).collect() };
    OnnxBuilder::new(17)
        .input("x", &[1, 4, 8, 8])
        .output("y1", &[1, 1, 4, 12])
        .output("y2", &[1, 3])
        .output("y3", &[1, 4])
        .init_i64("pads", &[0, 0, 1, 1, 0, 0, 1, 1])
        .init_f32("w", &[4, 4, 3, 3], &v(144, 0.31))
        .init_f32("b", &[4], &v(4, 0.7))
        .init_f32("lo", &[], &[0.0])
        .init_f32("hi", &[], &[6.0])
        .init_i64("starts", &[1])
        .init_i64("ends", &[4])
        .init_i64("axes3", &[3])
        .init_i64("shape", &[1, 4, 12])
        .init_f32("ln_s", &[12], &v(12, 0.2))
        .init_f32("ln_b", &[12], &v(12, 0.9))
        .init_i64("axes1", &[1])
        .init_f32("gw", &[6, 4], &v(24, 0.13))
        .init_f32("gb", &[6], &v(6, 0.5))
        .init_f32("mm", &[6, 6], &v(36, 0.17))
        .init_f32("sub", &[6], &v(6, 0.3))
        .init_f32("div", &[6], &[2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
        .init_i64("split", &[3, 4])
        .node_named("pad", "Pad", &["x", "pads"], &["p"], vec![])
        .node_named("conv", "Conv", &["p", "w", "b"], &["c"], vec![])
        .node_named("hswish", "HardSwish", &["c"], &["h"], vec![])
        .node_named("clip", "Clip", &["h", "lo", "hi"], &["k"], vec![])
        .node_named(
            "avgpool",
            "AveragePool",
            &["k"],
            &["ka"],
            vec![attr_ints("kernel_shape", &[3, 3]), attr_ints("pads", &[1, 1, 1, 1])],
        )
        .node_named(
            "pool",
            "MaxPool",
            &["ka"],
            &["m"],
            vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])],
        )
        .node_named("slice", "Slice", &["m", "starts", "ends", "axes3"], &["sl"], vec![])
        .node_named("transpose", "Transpose", &["sl"], &["t"], vec![attr_ints("perm", &[0, 1, 3, 2])])
        .node_named("reshape", "Reshape", &["t", "shape"], &["r"], vec![])
        .node_named("softmax", "Softmax", &["r"], &["sm"], vec![attr_int("axis", -1)])
        .node_named("layernorm", "LayerNormalization", &["sm", "ln_s", "ln_b"], &["ln"], vec![attr_int("axis", -1)])
        .node_named("hsig", "HardSigmoid", &["ln"], &["hs"], vec![attr_float("alpha", 0.3), attr_float("beta", 0.4)])
        .node_named("tanh", "Tanh", &["hs"], &["th"], vec![])
        .node_named("unsqueeze", "Unsqueeze", &["th", "axes1"], &["y1"], vec![])
        .node_named("gap", "GlobalAveragePool", &["c"], &["g"], vec![])
        .node_named("flatten", "Flatten", &["g"], &["f"], vec![])
        .node_named("gemm", "Gemm", &["f", "gw", "gb"], &["gm"], vec![attr_int("transB", 1)])
        .node_named("relu", "Relu", &["gm"], &["re"], vec![])
        .node_named("matmul", "MatMul", &["re", "mm"], &["mmo"], vec![])
        .node_named("sub", "Sub", &["mmo", "sub"], &["so"], vec![])
        .node_named("div", "Div", &["so", "div"], &["dv"], vec![])
        .node_named("rsum", "ReduceSum", &["dv", "axes1"], &["rs"], vec![attr_int("keepdims", 1)])
        .node_named("concat", "Concat", &["dv", "rs"], &["cc"], vec![attr_int("axis", 1)])
        .node_named("split", "Split", &["cc", "split"], &["y2", "y3"], vec![attr_int("axis", 1)])
        .build()
}

/// A conv with 0 output channels followed by BatchNormalization (once a
/// division by zero in BatchNorm folding, exit 101).
pub fn zero_channel_model() -> Vec<u8> {
    OnnxBuilder::new(17)
        .input("x", &[1, 3, 4, 4])
        .output("y", &[1, 0, 4, 4])
        .init_f32("w", &[0, 3, 1, 1], &[])
        .init_f32("g", &[0], &[])
        .init_f32("b", &[0], &[])
        .init_f32("m", &[0], &[])
        .init_f32("v", &[0], &[])
        .node_named("conv", "Conv", &["x", "w"], &["c"], vec![])
        .node_named("bn", "BatchNormalization", &["c", "g", "b", "m", "v"], &["y"], vec![])
        .build()
}

/// A DenseNet-like classifier as torch.onnx exports it: conv, Relu, a
/// transition AveragePool, global pooling and a `classes`-way Gemm; its
/// Conv and Gemm without a bias when `bias` is false (torch's dynamo
/// exporter drops one that is all zeros, as a new classifier's is).
pub fn pooled_classifier(seed: f32, classes: i64, bias: bool) -> Vec<u8> {
    let v = |n: usize, k: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32 + 1.0) * k + seed).sin() * 0.5).collect() };
    let mut m = OnnxBuilder::new(17)
        .input("image", &[1, 3, 16, 16])
        .output("logits", &[1, classes])
        .init_f32("conv.w", &[8, 3, 3, 3], &v(216, 0.37))
        .init_f32("fc.w", &[classes, 8], &v(classes as usize * 8, 0.23));
    if bias {
        m = m.init_f32("conv.b", &[8], &v(8, 0.7)).init_f32("fc.b", &[classes], &v(classes as usize, 0.9));
    }
    let b = |name: &'static str| if bias { name } else { "" };
    m.node("Conv", &["image", "conv.w", b("conv.b")], &["c"], vec![attr_ints("pads", &[1, 1, 1, 1])])
        .node("Relu", &["c"], &["r"], vec![])
        .node("AveragePool", &["r"], &["p"], vec![attr_ints("kernel_shape", &[2, 2]), attr_ints("strides", &[2, 2])])
        .node("GlobalAveragePool", &["p"], &["g"], vec![])
        .node("Flatten", &["g"], &["f"], vec![])
        .node("Gemm", &["f", "fc.w", b("fc.b")], &["logits"], vec![attr_int("transB", 1)])
        .build()
}
