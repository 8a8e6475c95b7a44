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

/// A classifier with the ops of families beyond the first ten, with
/// `seed`-dependent weights and a `classes`-way head: timm's "same"
/// padding (a Pad whose pads come from float constants through Ceil, Clip
/// and Cast), NFNet's weight standardization (BatchNormalization with
/// `training_mode=1` on a conv weight, its two optional outputs unread),
/// PoolFormer's InstanceNormalization, ConvNeXt-V2's global response
/// normalization (ReduceL2), a positional term from constants (Sin, Cos,
/// Tile, CumSum: folded), and on run-time data CumSum, Abs, Neg, Exp, Log,
/// Reciprocal, Sin, Cos and Tile.
pub fn newer_families_member(seed: f32, classes: i64) -> Vec<u8> {
    let v = |n: usize, k: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32 + 1.0) * k + seed).sin() * 0.5).collect() };
    OnnxBuilder::new(17)
        .input("image", &[1, 3, 16, 16])
        .output("logits", &[1, classes])
        .init_f32("padf", &[8], &[0.0, 0.0, 0.4, 0.4, 0.0, 0.0, 0.6, 0.6])
        .init_f32("zero", &[], &[0.0])
        .init_f32("w_raw", &[8, 3, 3, 3], &v(216, 0.37))
        .init_i64("to_rows", &[1, 8, 27])
        .init_i64("to_w", &[8, 3, 3, 3])
        .init_f32("gain", &[8], &v(8, 0.9).iter().map(|g| g + 1.0).collect::<Vec<_>>())
        .init_f32("zeros8", &[8], &[0.0; 8])
        .init_f32("ones8", &[8], &[1.0; 8])
        .init_f32("conv.b", &[8], &v(8, 0.7))
        .init_f32("in.s", &[8], &v(8, 0.3).iter().map(|g| g + 1.0).collect::<Vec<_>>())
        .init_f32("in.b", &[8], &v(8, 0.5))
        .init_i64("hw", &[2, 3])
        .init_i64("ch", &[1])
        .init_f32("eps", &[], &[1e-6])
        .init_f32("pos", &[1, 1, 4, 4], &(0..16).map(|i| i as f32 * 0.1).collect::<Vec<_>>())
        .init_i64("tile_pos", &[1, 1, 4, 4])
        .init_i64_scalar("axis3", 3)
        .init_i64_scalar("axis2", 2)
        .init_f32("one", &[], &[1.0])
        .init_i64("tile_x", &[1, 1, 1, 2])
        .init_f32("fc.w", &[classes, 8], &v(classes as usize * 8, 0.23))
        .init_f32("fc.b", &[classes], &v(classes as usize, 0.9))
        .node("Ceil", &["padf"], &["padc"], vec![])
        .node("Clip", &["padc", "zero"], &["padk"], vec![])
        .node("Cast", &["padk"], &["pads"], vec![attr_int("to", 7)])
        .node("Pad", &["image", "pads"], &["xp"], vec![])
        .node("Reshape", &["w_raw", "to_rows"], &["wr"], vec![])
        .node(
            "BatchNormalization",
            &["wr", "gain", "zeros8", "zeros8", "ones8"],
            &["ws", "bn_mean", "bn_var"],
            vec![attr_int("training_mode", 1), attr_float("epsilon", 1e-5)],
        )
        .node("Reshape", &["ws", "to_w"], &["w"], vec![])
        .node("Conv", &["xp", "w", "conv.b"], &["c"], vec![])
        .node("InstanceNormalization", &["c", "in.s", "in.b"], &["n"], vec![attr_float("epsilon", 1e-5)])
        .node("ReduceL2", &["n"], &["gx"], vec![attr_ints("axes", &[2, 3]), attr_int("keepdims", 1)])
        .node("ReduceMean", &["gx"], &["gm"], vec![attr_ints("axes", &[1]), attr_int("keepdims", 1)])
        .node("Add", &["gm", "eps"], &["ge"], vec![])
        .node("Div", &["gx", "ge"], &["nx"], vec![])
        .node("Mul", &["n", "nx"], &["nn"], vec![])
        .node("Add", &["nn", "n"], &["g1"], vec![])
        .node("Sin", &["pos"], &["ps"], vec![])
        .node("Cos", &["ps"], &["pc"], vec![])
        .node("Tile", &["pc", "tile_pos"], &["pt"], vec![])
        .node("CumSum", &["pt", "axis3"], &["pcs"], vec![])
        .node("Add", &["g1", "pcs"], &["g2"], vec![])
        .node("CumSum", &["g2", "axis2"], &["cs"], vec![attr_int("reverse", 1)])
        .node("Abs", &["cs"], &["ab"], vec![])
        .node("Neg", &["ab"], &["ng"], vec![])
        .node("Exp", &["ng"], &["ex"], vec![])
        .node("Add", &["ex", "one"], &["e1"], vec![])
        .node("Log", &["e1"], &["lg"], vec![])
        .node("Reciprocal", &["e1"], &["rc"], vec![])
        .node("Mul", &["lg", "rc"], &["z"], vec![])
        .node("Sin", &["z"], &["zs"], vec![])
        .node("Cos", &["z"], &["zc"], vec![])
        .node("Add", &["zs", "zc"], &["zz"], vec![])
        .node("Tile", &["zz", "tile_x"], &["zt"], vec![])
        .node("GlobalAveragePool", &["zt"], &["g"], vec![])
        .node("Flatten", &["g"], &["f"], vec![])
        .node("Gemm", &["f", "fc.w", "fc.b"], &["logits"], vec![attr_int("transB", 1)])
        .build()
}

/// A sequence model with Sequencer2D's LSTM (timm, torch.onnx): a batch of
/// two images, their rows as a sequence, an LSTM (`direction`: `bidirectional` as
/// Sequencer2D's, `forward` or `reverse`) with biases, a constant initial
/// hidden state and an initial cell state computed from the input (each
/// image's mean), its last states (`Y_h`, `Y_c`) named but unread, then a
/// classifier; the weights depend on `seed`.
pub fn lstm_member(seed: f32, classes: i64, direction: &str) -> Vec<u8> {
    let v = |n: usize, k: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32 + 1.0) * k + seed).sin() * 0.5).collect() };
    let (h, inp, seq, batch) = (6usize, 8usize, 8usize, 2usize);
    let dirs = if direction == "bidirectional" { 2 } else { 1 };
    let d = dirs as i64;
    OnnxBuilder::new(17)
        .input("image", &[batch as i64, 1, 8, 8])
        .output("logits", &[batch as i64, classes])
        .init_i64("to_seq", &[seq as i64, batch as i64, inp as i64])
        .init_f32("w", &[d, 4 * h as i64, inp as i64], &v(dirs * 4 * h * inp, 0.37))
        .init_f32("r", &[d, 4 * h as i64, h as i64], &v(dirs * 4 * h * h, 0.29))
        .init_f32("b", &[d, 8 * h as i64], &v(dirs * 8 * h, 0.41))
        .init_f32("h0", &[d, batch as i64, h as i64], &v(dirs * batch * h, 0.13))
        .init_i64("c0_rank", &[1, batch as i64, 1])
        .init_i64("c0_shape", &[d, batch as i64, h as i64])
        .init_i64("flat", &[batch as i64, (seq * dirs * h) as i64])
        .init_f32("fc.w", &[classes, (seq * dirs * h) as i64], &v(classes as usize * seq * dirs * h, 0.23))
        .init_f32("fc.b", &[classes], &v(classes as usize, 0.9))
        .node("Reshape", &["image", "to_seq"], &["x"], vec![])
        // The initial cell state computed from the input (a run-time value).
        .node("ReduceMean", &["image"], &["mean"], vec![attr_ints("axes", &[2, 3]), attr_int("keepdims", 0)])
        .node("Reshape", &["mean", "c0_rank"], &["mean3"], vec![])
        .node("Expand", &["mean3", "c0_shape"], &["c0"], vec![])
        .node(
            "LSTM",
            &["x", "w", "r", "b", "", "h0", "c0"],
            &["y", "y_h", "y_c"],
            vec![attr_str("direction", direction), attr_int("hidden_size", h as i64)],
        )
        .node("Reshape", &["y", "flat"], &["f"], vec![])
        .node("Gemm", &["f", "fc.w", "fc.b"], &["logits"], vec![attr_int("transB", 1)])
        .build()
}

/// The ops three more families needed: a `LeakyRelu` (CSPNet), MViTv2's
/// relative positions and an attention product as torch exports
/// `torch.einsum` (an `Einsum` by each member's own `[h, k, c]` table, and
/// one of two activations) and a `ScatterND` of run-time values, then
/// `ReduceMax` and `ReduceMin` (Hiera's pooling), and a projection by
/// `...q,qe->...e`: a classifier of `classes`, batch 1. The relative
/// position table is made from `table_seed` (members with the same one
/// share it bit for bit).
pub fn more_families_member(seed: f32, table_seed: f32, classes: i64) -> Vec<u8> {
    let v = |n: usize, k: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32 + 1.0) * k + seed).sin() * 0.5).collect() };
    let table: Vec<f32> = (0..240).map(|i| ((i as f32 + 1.0) * 0.29 + table_seed).sin() * 0.5).collect();
    OnnxBuilder::new(17)
        .input("image", &[1, 4, 6, 6])
        .output("logits", &[1, classes])
        .init_f32("conv.w", &[8, 4, 1, 1], &v(32, 0.37))
        .init_f32("rel_pos", &[6, 5, 8], &table)
        .init_f32("proj", &[36, 3], &v(108, 0.17))
        .init_i64("flat_proj", &[1, 24])
        .init_i64("to_bywhc", &[1, 1, 6, 6, 8])
        .init_i64("to_heads", &[1, 2, 4, 36])
        .init_i64("flat_scores", &[1, 72])
        .init_i64("flat_rel", &[1, 36])
        .init_f32("fc.w", &[classes, 132], &v(classes as usize * 132, 0.23))
        .init_f32("fc.b", &[classes], &v(classes as usize, 0.9))
        .node("Conv", &["image", "conv.w"], &["c"], vec![])
        .node("LeakyRelu", &["c"], &["a"], vec![attr_float("alpha", 0.1)])
        .node("Transpose", &["a"], &["t"], vec![attr_ints("perm", &[0, 2, 3, 1])])
        .node("Reshape", &["t", "to_bywhc"], &["t5"], vec![])
        .node("Einsum", &["t5", "rel_pos"], &["rel"], vec![attr_str("equation", "byhwc,hkc->byhwk")])
        .node("Reshape", &["a", "to_heads"], &["q"], vec![])
        .node("Einsum", &["q", "q"], &["scores"], vec![attr_str("equation", "bhdq, bhdk -> bhqk")])
        .node("ReduceMax", &["scores"], &["best"], vec![attr_ints("axes", &[3]), attr_int("keepdims", 0)])
        .node("ReduceMin", &["rel"], &["least"], vec![attr_ints("axes", &[4]), attr_int("keepdims", 0)])
        // A row written at run time (MViTv2 writes its relative positions
        // into the attention with ScatterND).
        .init_i64_shaped("row", &[1, 3], &[0, 0, -4])
        .node("ReduceMax", &["least"], &["row_max"], vec![attr_ints("axes", &[1, 2]), attr_int("keepdims", 0)])
        .node("ScatterND", &["least", "row", "row_max"], &["written"], vec![])
        .node("Reshape", &["best", "flat_scores"], &["f1"], vec![])
        .node("Reshape", &["written", "flat_rel"], &["f2"], vec![])
        .node("Einsum", &["q", "proj"], &["projected"], vec![attr_str("equation", "...q,qe->...e")])
        .node("Reshape", &["projected", "flat_proj"], &["f3"], vec![])
        .node("Concat", &["f1", "f2", "f3"], &["f"], vec![attr_int("axis", 1)])
        .node("Gemm", &["f", "fc.w", "fc.b"], &["logits"], vec![attr_int("transB", 1)])
        .build()
}

/// What `transformers` 5 writes into a text encoder's `torch.onnx` export
/// (RoBERTa, ELECTRA, DistilBERT, DeBERTa, ALBERT, MPNet), at seq 8,
/// hidden 4: RoBERTa's position ids from the ids (`Equal`, `Not`, an
/// i32 `CumSum`), clamped with a run-time `Min` (MPNet clamps its buckets);
/// token types read from a buffer of zeros by `GatherElements`, once at
/// those run-time positions (RoBERTa) and once at constant ones (ELECTRA,
/// folded); attention whose softmax is cleared of NaNs (`IsNaN`, `Where`);
/// ALBERT's `Pow(x, 3)`; a `Max`; mean pooling and a classifier of
/// `classes`.
pub fn text_encoder_member(seed: f32, classes: i64) -> Vec<u8> {
    let v = |n: usize, k: f32| -> Vec<f32> { (0..n).map(|i| ((i as f32 + 1.0) * k + seed).sin() * 0.5).collect() };
    OnnxBuilder::new(17)
        .input_typed("input_ids", fuse_ir::DType::I64, &[1, 8])
        .input_typed("attention_mask", fuse_ir::DType::I64, &[1, 8])
        .output("logits", &[1, classes])
        .init_f32("word", &[16, 4], &v(64, 0.31))
        .init_f32("types", &[2, 4], &v(8, 0.71))
        .init_f32("pos", &[10, 4], &v(40, 0.53))
        .init_i64_shaped("type_buffer", &[1, 10], &[0; 10])
        .init_i64("buffer_shape", &[1, 10])
        .init_i64_shaped("arange", &[1, 8], &[0, 1, 2, 3, 4, 5, 6, 7])
        .init_i64_shaped("pad_id", &[1], &[1])
        .init_i64_scalar("seq_axis", 1)
        .init_i64_shaped("last_pos", &[1], &[9])
        .init_i64("mask_axes", &[1])
        .init_f32("one", &[1], &[1.0])
        .init_f32("neg", &[1], &[-1e9])
        .init_f32("zero", &[1], &[0.0])
        .init_f32("three", &[1], &[3.0])
        .init_f32("floor", &[1], &[-0.05])
        .init_f32("fc.w", &[classes, 4], &v(classes as usize * 4, 0.23))
        .init_f32("fc.b", &[classes], &v(classes as usize, 0.9))
        .node("Equal", &["input_ids", "pad_id"], &["is_pad"], vec![])
        .node("Not", &["is_pad"], &["not_pad"], vec![])
        .node("Cast", &["not_pad"], &["not_pad_i"], vec![attr_int("to", 6)])
        .node("CumSum", &["not_pad_i", "seq_axis"], &["counted"], vec![])
        .node("Mul", &["counted", "not_pad_i"], &["kept"], vec![])
        .node("Cast", &["kept"], &["kept_long"], vec![attr_int("to", 7)])
        .node("Add", &["kept_long", "pad_id"], &["pos_ids"], vec![])
        .node("Min", &["pos_ids", "last_pos"], &["pos_clamped"], vec![])
        .node("Expand", &["type_buffer", "buffer_shape"], &["buffered"], vec![])
        .node("GatherElements", &["buffered", "pos_ids"], &["type_ids"], vec![attr_int("axis", 1)])
        .node("GatherElements", &["buffered", "arange"], &["const_type_ids"], vec![attr_int("axis", 1)])
        .node("Gather", &["word", "input_ids"], &["we"], vec![])
        .node("Gather", &["types", "type_ids"], &["te"], vec![])
        .node("Gather", &["types", "const_type_ids"], &["te2"], vec![])
        .node("Gather", &["pos", "pos_clamped"], &["pe"], vec![])
        .node("Add", &["we", "te"], &["h1"], vec![])
        .node("Add", &["h1", "te2"], &["h2"], vec![])
        .node("Add", &["h2", "pe"], &["h"], vec![])
        .node("Transpose", &["h"], &["ht"], vec![attr_ints("perm", &[0, 2, 1])])
        .node("MatMul", &["h", "ht"], &["scores"], vec![])
        .node("Cast", &["attention_mask"], &["mask_f"], vec![attr_int("to", 1)])
        .node("Sub", &["one", "mask_f"], &["masked"], vec![])
        .node("Mul", &["masked", "neg"], &["bias"], vec![])
        .node("Unsqueeze", &["bias", "mask_axes"], &["bias3"], vec![])
        .node("Add", &["scores", "bias3"], &["biased"], vec![])
        .node("Softmax", &["biased"], &["probs"], vec![attr_int("axis", -1)])
        .node("IsNaN", &["probs"], &["nan"], vec![])
        .node("Where", &["nan", "zero", "probs"], &["cleared"], vec![])
        .node("MatMul", &["cleared", "h"], &["ctx"], vec![])
        .node("Pow", &["ctx", "three"], &["cubed"], vec![])
        .node("Max", &["cubed", "floor"], &["act"], vec![])
        .node("ReduceMean", &["act"], &["pooled"], vec![attr_ints("axes", &[1]), attr_int("keepdims", 0)])
        .node("Gemm", &["pooled", "fc.w", "fc.b"], &["logits"], vec![attr_int("transB", 1)])
        .build()
}
