//! EfficientDet as the `effdet` PyTorch package defines it.
//!
//! Structure, read from the `state_dict`:
//! - backbone: timm EfficientNet features (stem conv + BN + SiLU; stage 0
//!   depthwise-separable blocks, later stages inverted residuals; squeeze-
//!   excitation; skip where stride is 1 and channels match). Kernel sizes,
//!   widths, expansion and depth come from the weights; strides from the
//!   EfficientNet stage table. P3, P4, P5 are the outputs of stages 2, 4, 6.
//! - BiFPN: P6/P7 made by `fpn.resample.{3,4}` (1x1 conv + BN where
//!   channels differ, then max-pool); cells of 8 nodes, fast-attention
//!   fusion `relu(w) / (sum(relu(w)) + 1e-4)`, nearest upsampling, max-pool
//!   downsampling, resample convs where channels differ; after each
//!   fusion SiLU then a separable conv with BN.
//! - class and box nets: separable convs shared across levels, a BN per
//!   level and repeat, SiLU, then the predict separable conv with bias.
//!
//! Padding: `efficientdet_*` pads symmetrically (`((s-1) + d(k-1)) / 2`);
//! `tf_efficientdet_*` pads TensorFlow "same", which on a static input is
//! a fixed, possibly asymmetric pad. BatchNorm eps: 1e-5 in the timm
//! backbone, 1e-3 in tf_ backbones and in every BiFPN and head BN.
//! BatchNorm stays BatchNormalization here; folding is a pass.

use fuse_ir::*;

use super::builder::GraphBuilder;
use super::{ArchOptions, Built};
use crate::safetensors::Checkpoint;
use crate::LoadError;

/// EfficientDet variants: (name, BiFPN channels, BiFPN cells, head repeats,
/// image size, backbone). D6 and D7 share every tensor shape; a D7
/// checkpoint needs `--arch efficientdet_d7` (or its image size).
const VARIANTS: [(&str, usize, usize, usize, usize, &str); 8] = [
    ("efficientdet_d0", 64, 3, 3, 512, "efficientnet_b0"),
    ("efficientdet_d1", 88, 4, 3, 640, "efficientnet_b1"),
    ("efficientdet_d2", 112, 5, 3, 768, "efficientnet_b2"),
    ("efficientdet_d3", 160, 6, 4, 896, "efficientnet_b3"),
    ("efficientdet_d4", 224, 7, 4, 1024, "efficientnet_b4"),
    ("efficientdet_d5", 288, 7, 4, 1280, "efficientnet_b5"),
    ("efficientdet_d6", 384, 8, 5, 1280, "efficientnet_b6"),
    ("efficientdet_d7", 384, 8, 5, 1536, "efficientnet_b6"),
];

/// Strides of the seven EfficientNet stages.
const STAGE_STRIDES: [usize; 7] = [1, 2, 2, 2, 1, 2, 1];
/// Backbone stages whose outputs are P3, P4, P5.
const FEATURE_STAGES: [usize; 3] = [2, 4, 6];

/// BiFPN nodes (P3..P7 inputs are offsets 0..4, node i writes offset 5+i):
/// (output level, input offsets).
const BIFPN_NODES: [(usize, &[usize]); 8] = [
    (6, &[3, 4]),
    (5, &[2, 5]),
    (4, &[1, 6]),
    (3, &[0, 7]),
    (4, &[1, 7, 8]),
    (5, &[2, 6, 9]),
    (6, &[3, 5, 10]),
    (7, &[4, 11]),
];

const MARKERS: [&str; 4] = [
    "backbone.conv_stem.weight",
    "fpn.cell.0.fnode.0.combine.edge_weights",
    "class_net.predict.conv_pw.weight",
    "box_net.predict.conv_pw.weight",
];

pub struct MarkerScore {
    pub present: usize,
    pub total: usize,
    pub missing: Vec<&'static str>,
}

pub fn marker_score(ck: &Checkpoint) -> MarkerScore {
    let missing: Vec<&str> = MARKERS.iter().copied().filter(|m| ck.info(m).is_none()).collect();
    MarkerScore { present: MARKERS.len() - missing.len(), total: MARKERS.len(), missing }
}

/// Whether a tensor name belongs to this family's naming.
pub fn is_family_name(name: &str) -> bool {
    ["backbone.", "fpn.", "class_net.", "box_net."].iter().any(|p| name.starts_with(p))
}

/// Everything the graph builder needs, inferred or given.
#[derive(Clone, Debug)]
pub struct Config {
    pub name: String,
    pub tf_padding: bool,
    pub image_size: usize,
    /// Blocks per backbone stage.
    pub stage_depths: Vec<usize>,
    pub fpn_channels: usize,
    pub fpn_cells: usize,
    pub head_repeats: usize,
    pub num_classes: usize,
    pub num_anchors: usize,
    pub backbone_eps: f32,
    pub head_eps: f32,
}

fn count(ck: &Checkpoint, f: impl Fn(usize) -> String) -> usize {
    (0..).take_while(|&i| ck.info(&f(i)).is_some()).count()
}

fn parse_arch(name: &str) -> Option<(bool, usize)> {
    let (tf, rest) = match name.strip_prefix("tf_") {
        Some(r) => (true, r),
        None => (false, name),
    };
    let idx = VARIANTS.iter().position(|v| v.0 == rest)?;
    Some((tf, idx))
}

/// Infers the configuration from tensor names and shapes.
/// Returns the configuration, warnings about this file, and the assumption
/// made where nothing said which variant it is (the same for every member,
/// so said once).
pub fn detect(ck: &Checkpoint, opts: &ArchOptions) -> Result<(Config, Vec<String>, Option<String>), LoadError> {
    let err = |m: String| LoadError::new(&ck.path, m);
    // The leading dimension of a conv weight, which must be [out, in, k, k].
    let out_channels = |name: &str| -> Result<usize, LoadError> {
        let err = |m: String| LoadError::tensor(&ck.path, name, m);
        let t = ck.info(name).ok_or_else(|| err(format!("tensor `{name}` is missing")))?;
        match t.shape.as_slice() {
            [o, _, _, _] => Ok(*o),
            s => Err(err(format!("tensor `{name}` has shape {s:?}, expected [out, in, k, k]"))),
        }
    };
    let stage_depths: Vec<usize> = (0..)
        .map(|s| count(ck, |b| format!("backbone.blocks.{s}.{b}.conv_dw.weight")))
        .take_while(|&d| d > 0)
        .collect();
    if stage_depths.len() != STAGE_STRIDES.len() {
        return Err(err(format!(
            "the backbone has {} stages (`backbone.blocks.N`); EfficientNet has {}",
            stage_depths.len(),
            STAGE_STRIDES.len()
        )));
    }
    let fpn_channels = out_channels("fpn.cell.0.fnode.0.after_combine.conv.conv_pw.weight")?;
    let fpn_cells = count(ck, |c| format!("fpn.cell.{c}.fnode.0.combine.edge_weights"));
    let head_repeats = count(ck, |r| format!("class_net.conv_rep.{r}.conv_pw.weight"));
    let box_out = out_channels("box_net.predict.conv_pw.weight")?;
    let class_out = out_channels("class_net.predict.conv_pw.weight")?;
    if box_out % 4 != 0 || box_out == 0 {
        return Err(err(format!("`box_net.predict.conv_pw.weight` has {box_out} outputs, not 4 per anchor")));
    }
    let num_anchors = box_out / 4;
    if class_out % num_anchors != 0 {
        return Err(err(format!(
            "`class_net.predict.conv_pw.weight` has {class_out} outputs, not a multiple of {num_anchors} anchors"
        )));
    }
    let mut warnings = vec![];
    let table = VARIANTS.iter().position(|v| v.1 == fpn_channels && v.2 == fpn_cells && v.3 == head_repeats);
    // --arch wins; a header hint counts only when it agrees with the tensors.
    let chosen = match &opts.arch {
        Some(a) => {
            let (tf, idx) = parse_arch(a).ok_or_else(|| {
                err(format!("unknown --arch `{a}`: expected efficientdet_d0..d7 or tf_efficientdet_d0..d7"))
            })?;
            let v = VARIANTS[idx];
            if (v.1, v.2, v.3) != (fpn_channels, fpn_cells, head_repeats) {
                return Err(err(format!(
                    "--arch {a} has BiFPN {}x{} and {} head repeats but the checkpoint has BiFPN {fpn_channels}x{fpn_cells} and {head_repeats}",
                    v.1, v.2, v.3
                )));
            }
            Some((tf, idx))
        }
        None => {
            let hint = ck.metadata.iter().find(|(k, _)| k == "arch").map(|(_, v)| v.clone());
            match hint.as_deref().map(|h| (h, parse_arch(h))) {
                Some((_, Some((tf, idx))))
                    if Some(idx) == table
                        || (table.is_some() && VARIANTS[idx].1 == fpn_channels && VARIANTS[idx].2 == fpn_cells) =>
                {
                    Some((tf, idx))
                }
                Some((h, _)) => {
                    warnings.push(format!("ignored header hint arch={h}: it does not match the tensors"));
                    table.map(|i| (false, i))
                }
                None => table.map(|i| (false, i)),
            }
        }
    };
    // Nothing said which variant (no --arch, no header hint that agrees):
    // a state_dict cannot tell a TensorFlow port from a PyTorch-trained
    // model, and they compute differently.
    let said = opts.arch.is_some() || (warnings.is_empty() && ck.metadata.iter().any(|(k, _)| k == "arch"));
    let assumed = match chosen {
        Some((_, idx)) if !said => Some(format!(
            "assumed the PyTorch-trained variant {v} (symmetric padding, backbone BatchNorm eps 1e-5): a state_dict cannot say whether it is a TensorFlow port (outputs differ by up to 0.12 on D0); pass --arch tf_{v} if it is one, or --arch {v} to say it is not",
            v = VARIANTS[idx].0
        )),
        _ => None,
    };
    let (name, tf, size) = match chosen {
        Some((tf, idx)) => {
            let n = if tf { format!("tf_{}", VARIANTS[idx].0) } else { VARIANTS[idx].0.to_string() };
            (n, tf, VARIANTS[idx].4)
        }
        None => ("efficientdet (custom)".to_string(), false, 512),
    };
    let image_size = opts.image_size.unwrap_or(size);
    if image_size == 0 || !image_size.is_multiple_of(128) {
        return Err(err(format!("image size {image_size} must be a positive multiple of 128 (P7 is 1/128)")));
    }
    // The stem's output (32 or more channels at half resolution) must stay
    // within fusec's tensor limit.
    TensorType::new(DType::F32, vec![1, 64, image_size / 2, image_size / 2])
        .check_size()
        .map_err(|m| err(format!("image size {image_size} is too large: the stem's output {m}")))?;
    let cfg = Config {
        name,
        tf_padding: tf,
        image_size,
        stage_depths,
        fpn_channels,
        fpn_cells,
        head_repeats,
        num_classes: class_out / num_anchors,
        num_anchors,
        backbone_eps: if tf { 1e-3 } else { 1e-5 },
        head_eps: 1e-3,
    };
    Ok((cfg, warnings, assumed))
}

pub fn build(ck: &Checkpoint, opts: &ArchOptions) -> Result<Built, LoadError> {
    let (cfg, warnings, assumed) = detect(ck, opts)?;
    let graph = build_graph(ck, &cfg)?;
    let backbone = VARIANTS
        .iter()
        .find(|v| v.1 == cfg.fpn_channels && v.2 == cfg.fpn_cells)
        .map(|v| v.5)
        .unwrap_or("efficientnet");
    let description = format!(
        "{} ({backbone} backbone, stage depths {:?}; BiFPN {} channels x {} cells; {} head repeats; {} classes x {} anchors; input {}x{})",
        cfg.name,
        cfg.stage_depths,
        cfg.fpn_channels,
        cfg.fpn_cells,
        cfg.head_repeats,
        cfg.num_classes,
        cfg.num_anchors,
        cfg.image_size,
        cfg.image_size
    );
    Ok(Built { graph, description, warnings, assumed })
}

/// Builds the graph for a detected configuration.
pub fn build_graph(ck: &Checkpoint, cfg: &Config) -> Result<Graph, LoadError> {
    let mut b = B { gb: GraphBuilder::new(ck, &cfg.name), cfg };
    b.g.metadata.push(("fusec.arch".into(), cfg.name.clone()));
    let s = cfg.image_size;
    let image = b.g.add_input("image", TensorType::new(DType::F32, vec![1, 3, s, s]));
    let feats = b.backbone(image)?;
    let mut levels = b.fpn_extra_levels(feats)?;
    for c in 0..cfg.fpn_cells {
        levels = b.bifpn_cell(c, &levels)?;
    }
    let class_out = b.head("class_net", &levels)?;
    let box_out = b.head("box_net", &levels)?;
    let mut outs = vec![];
    for (i, v) in class_out.into_iter().enumerate() {
        b.g.value_mut(v).name = format!("class_out_{i}");
        outs.push(v);
    }
    for (i, v) in box_out.into_iter().enumerate() {
        b.g.value_mut(v).name = format!("box_out_{i}");
        outs.push(v);
    }
    // Every tensor must have been read: an extra one means the structure
    // is not what we think it is.
    b.gb.finish(outs, |t| t.ends_with("num_batches_tracked"))
}

struct B<'a> {
    gb: GraphBuilder<'a>,
    cfg: &'a Config,
}

impl<'a> std::ops::Deref for B<'a> {
    type Target = GraphBuilder<'a>;
    fn deref(&self) -> &GraphBuilder<'a> {
        &self.gb
    }
}

impl std::ops::DerefMut for B<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.gb
    }
}

impl B<'_> {
    /// Pads for a k x k window with stride s on the value's spatial shape.
    fn pads(&self, x: ValueId, k: usize, s: usize) -> Vec<usize> {
        if self.cfg.tf_padding {
            let sh = self.shape_of(x);
            let mut begin = vec![];
            let mut end = vec![];
            for &len in &sh[2..] {
                let out = len.div_ceil(s);
                let total = ((out - 1) * s + k).saturating_sub(len);
                begin.push(total / 2);
                end.push(total - total / 2);
            }
            begin.extend(end);
            begin
        } else {
            vec![((s - 1) + (k - 1)) / 2; 4]
        }
    }

    /// Conv `{prefix}.weight` plus `{prefix}.bias`, required when `bias`,
    /// used when present otherwise (effdet's `redundant_bias` configs, the
    /// tf_ ones, put a bias before every BN); groups from the weight's input
    /// channels.
    fn conv(&mut self, x: ValueId, prefix: &str, stride: usize, bias: bool) -> Result<ValueId, LoadError> {
        let wname = format!("{prefix}.weight");
        let ws = self.ck.info(&wname).map(|t| t.shape.clone()).ok_or_else(|| {
            LoadError::tensor(&self.ck.path, &wname, format!("tensor `{wname}` is missing ({})", self.cfg.name))
        })?;
        let cin = self.shape_of(x)[1];
        if ws.len() != 4 || ws[1] == 0 || !cin.is_multiple_of(ws[1]) || ws[2] != ws[3] {
            return Err(LoadError::tensor(
                &self.ck.path,
                &wname,
                format!("tensor `{wname}` has shape {ws:?}, expected [out, {cin}/groups, k, k]"),
            ));
        }
        let w = self.weight(&wname, None)?;
        let bname = format!("{prefix}.bias");
        let b = if bias || self.has(&bname) { Some(self.weight(&bname, Some(&[ws[0]]))?) } else { None };
        let k = ws[2];
        let op = Op::Conv(Conv {
            kernel_shape: vec![k, k],
            strides: vec![stride, stride],
            pads: self.pads(x, k, stride),
            dilations: vec![1, 1],
            group: cin / ws[1],
        });
        self.node(prefix, op, vec![Some(x), Some(w), b])
    }

    fn bn(&mut self, x: ValueId, prefix: &str, eps: f32) -> Result<ValueId, LoadError> {
        let c = [self.shape_of(x)[1]];
        let mut ins = vec![Some(x)];
        for p in ["weight", "bias", "running_mean", "running_var"] {
            ins.push(Some(self.weight(&format!("{prefix}.{p}"), Some(&c))?));
        }
        self.node(prefix, Op::BatchNorm(BatchNorm { epsilon: eps }), ins)
    }

    /// SiLU as torch exports it, `x * sigmoid(x)`.
    fn silu(&mut self, x: ValueId, name: &str) -> Result<ValueId, LoadError> {
        let s = self.node(&format!("{name}/sigmoid"), Op::Unary(UnaryOp::Sigmoid), vec![Some(x)])?;
        self.node(&format!("{name}/mul"), Op::Binary(BinaryOp::Mul), vec![Some(x), Some(s)])
    }

    fn conv_bn_act(
        &mut self,
        x: ValueId,
        conv: &str,
        bn: &str,
        stride: usize,
        act: bool,
    ) -> Result<ValueId, LoadError> {
        let eps = self.cfg.backbone_eps;
        let y = self.conv(x, conv, stride, false)?;
        let y = self.bn(y, bn, eps)?;
        if act {
            self.silu(y, &format!("{bn}.act"))
        } else {
            Ok(y)
        }
    }

    fn squeeze_excite(&mut self, x: ValueId, prefix: &str) -> Result<ValueId, LoadError> {
        let m = Op::Reduce { op: ReduceOp::Mean, axes: Some(vec![2, 3]), keepdims: true };
        let s = self.node(&format!("{prefix}.mean"), m, vec![Some(x)])?;
        let s = self.conv(s, &format!("{prefix}.conv_reduce"), 1, true)?;
        let s = self.silu(s, &format!("{prefix}.act1"))?;
        let s = self.conv(s, &format!("{prefix}.conv_expand"), 1, true)?;
        let gate = self.node(&format!("{prefix}.gate"), Op::Unary(UnaryOp::Sigmoid), vec![Some(s)])?;
        self.node(&format!("{prefix}.mul"), Op::Binary(BinaryOp::Mul), vec![Some(x), Some(gate)])
    }

    /// The timm EfficientNet feature extractor; returns P3, P4, P5.
    fn backbone(&mut self, image: ValueId) -> Result<Vec<ValueId>, LoadError> {
        let mut x = self.conv_bn_act(image, "backbone.conv_stem", "backbone.bn1", 2, true)?;
        let mut feats = vec![];
        for (s, &depth) in self.cfg.stage_depths.clone().iter().enumerate() {
            for blk in 0..depth {
                let p = format!("backbone.blocks.{s}.{blk}");
                let stride = if blk == 0 { STAGE_STRIDES[s] } else { 1 };
                let cin = self.shape_of(x)[1];
                let input = x;
                if self.has(&format!("{p}.conv_pwl.weight")) {
                    // Inverted residual: expand, depthwise, SE, project.
                    let y = self.conv_bn_act(x, &format!("{p}.conv_pw"), &format!("{p}.bn1"), 1, true)?;
                    let y = self.conv_bn_act(y, &format!("{p}.conv_dw"), &format!("{p}.bn2"), stride, true)?;
                    let y = if self.has(&format!("{p}.se.conv_reduce.weight")) {
                        self.squeeze_excite(y, &format!("{p}.se"))?
                    } else {
                        y
                    };
                    x = self.conv_bn_act(y, &format!("{p}.conv_pwl"), &format!("{p}.bn3"), 1, false)?;
                } else {
                    // Depthwise separable: depthwise, SE, pointwise.
                    let y = self.conv_bn_act(x, &format!("{p}.conv_dw"), &format!("{p}.bn1"), stride, true)?;
                    let y = if self.has(&format!("{p}.se.conv_reduce.weight")) {
                        self.squeeze_excite(y, &format!("{p}.se"))?
                    } else {
                        y
                    };
                    x = self.conv_bn_act(y, &format!("{p}.conv_pw"), &format!("{p}.bn2"), 1, false)?;
                }
                if stride == 1 && cin == self.shape_of(x)[1] {
                    x = self.node(&format!("{p}.add"), Op::Binary(BinaryOp::Add), vec![Some(x), Some(input)])?;
                }
            }
            if FEATURE_STAGES.contains(&s) {
                feats.push(x);
            }
        }
        Ok(feats)
    }

    fn maxpool_down(&mut self, x: ValueId, name: &str) -> Result<ValueId, LoadError> {
        let p = Pool {
            kernel_shape: vec![3, 3],
            strides: vec![2, 2],
            pads: self.pads(x, 3, 2),
            dilations: vec![1, 1],
            ceil_mode: false,
        };
        self.node(name, Op::MaxPool(p), vec![Some(x)])
    }

    fn upsample(&mut self, x: ValueId, target: &[usize], name: &str) -> Result<ValueId, LoadError> {
        let mut sizes = self.shape_of(x);
        sizes[2] = target[2];
        sizes[3] = target[3];
        let r = Resize {
            mode: ResizeMode::Nearest,
            coordinate_transformation_mode: "asymmetric".into(),
            nearest_mode: "floor".into(),
            cubic_coeff_a: -0.75,
            exclude_outside: false,
            extrapolation_value: 0.0,
            scales: None,
            sizes,
        };
        self.node(name, Op::Resize(r), vec![Some(x)])
    }

    /// 1x1 conv + BN when `{prefix}.conv.conv.weight` exists.
    fn maybe_resample_conv(&mut self, x: ValueId, prefix: &str) -> Result<ValueId, LoadError> {
        let w = format!("{prefix}.conv.conv.weight");
        if !self.has(&w) {
            if self.shape_of(x)[1] != self.cfg.fpn_channels {
                return Err(self.err(format!(
                    "tensor `{w}` is missing: {} channels must be resampled to {}",
                    self.shape_of(x)[1],
                    self.cfg.fpn_channels
                )));
            }
            return Ok(x);
        }
        let eps = self.cfg.head_eps;
        let y = self.conv(x, &format!("{prefix}.conv.conv"), 1, false)?;
        self.bn(y, &format!("{prefix}.conv.bn"), eps)
    }

    /// P3..P5 from the backbone plus P6, P7 from `fpn.resample.{3,4}`.
    fn fpn_extra_levels(&mut self, mut feats: Vec<ValueId>) -> Result<Vec<ValueId>, LoadError> {
        for level in 3..5 {
            let prefix = format!("fpn.resample.{level}");
            let prev = *feats.last().ok_or_else(|| self.err("the backbone gave no features".into()))?;
            let y = self.maybe_resample_conv(prev, &prefix)?;
            let y = self.maxpool_down(y, &format!("{prefix}.downsample"))?;
            feats.push(y);
        }
        Ok(feats)
    }

    fn bifpn_cell(&mut self, c: usize, inputs: &[ValueId]) -> Result<Vec<ValueId>, LoadError> {
        let mut nodes: Vec<(usize, ValueId)> = inputs.iter().enumerate().map(|(i, &v)| (3 + i, v)).collect();
        for (i, (level, offsets)) in BIFPN_NODES.iter().enumerate() {
            let p = format!("fpn.cell.{c}.fnode.{i}");
            let target_level = *level;
            // The node's resolution: the same-level input (or P7's).
            let target_shape = {
                let same = offsets.iter().find(|&&o| nodes[o].0 == target_level).copied().unwrap_or(offsets[0]);
                let mut s = self.shape_of(nodes[same].1);
                s[1] = self.cfg.fpn_channels;
                s
            };
            let mut resampled = vec![];
            for &o in offsets.iter() {
                let (lvl, v) = nodes[o];
                let rp = format!("{p}.combine.resample.{o}");
                let mut y = self.maybe_resample_conv(v, &rp)?;
                if lvl < target_level {
                    y = self.maxpool_down(y, &format!("{rp}.downsample"))?;
                } else if lvl > target_level {
                    y = self.upsample(y, &target_shape, &format!("{rp}.upsample"))?;
                }
                resampled.push(y);
            }
            let fused = self.fast_attention(&resampled, &format!("{p}.combine"))?;
            let y = self.silu(fused, &format!("{p}.after_combine.act"))?;
            let y = self.separable(y, &format!("{p}.after_combine.conv"), false)?;
            let eps = self.cfg.head_eps;
            let y = self.bn(y, &format!("{p}.after_combine.conv.bn"), eps)?;
            nodes.push((target_level, y));
        }
        Ok(nodes[nodes.len() - 5..].iter().map(|(_, v)| *v).collect())
    }

    /// `sum_i x_i * relu(w_i) / (sum(relu(w)) + 1e-4)`, as effdet computes it.
    fn fast_attention(&mut self, xs: &[ValueId], prefix: &str) -> Result<ValueId, LoadError> {
        let w = self.weight(&format!("{prefix}.edge_weights"), Some(&[xs.len()]))?;
        let rw = self.node(&format!("{prefix}.relu"), Op::Unary(UnaryOp::Relu), vec![Some(w)])?;
        let red = Op::Reduce { op: ReduceOp::Sum, axes: None, keepdims: false };
        let sum = self.node(&format!("{prefix}.sum"), red, vec![Some(rw)])?;
        let eps = Tensor::from_f32(vec![], &[1e-4]).map_err(|m| self.err(m))?;
        let eps = self.g.add_weight(format!("{prefix}.eps"), eps);
        let denom = self.node(&format!("{prefix}.denom"), Op::Binary(BinaryOp::Add), vec![Some(sum), Some(eps)])?;
        let mut acc: Option<ValueId> = None;
        for (i, &x) in xs.iter().enumerate() {
            let idx = Tensor::from_i64(vec![], &[i as i64]).map_err(|m| self.err(m))?;
            let idx = self.g.add_weight(format!("{prefix}.idx{i}"), idx);
            let wi = self.node(&format!("{prefix}.w{i}"), Op::Gather { axis: 0 }, vec![Some(rw), Some(idx)])?;
            let m = self.node(&format!("{prefix}.mul{i}"), Op::Binary(BinaryOp::Mul), vec![Some(x), Some(wi)])?;
            let d = self.node(&format!("{prefix}.div{i}"), Op::Binary(BinaryOp::Div), vec![Some(m), Some(denom)])?;
            acc = Some(match acc {
                None => d,
                Some(a) => self.node(&format!("{prefix}.add{i}"), Op::Binary(BinaryOp::Add), vec![Some(a), Some(d)])?,
            });
        }
        acc.ok_or_else(|| self.err(format!("`{prefix}` fuses no inputs")))
    }

    /// Depthwise 3x3 then pointwise 1x1.
    fn separable(&mut self, x: ValueId, prefix: &str, pw_bias: bool) -> Result<ValueId, LoadError> {
        let c = self.shape_of(x)[1];
        let dw = format!("{prefix}.conv_dw.weight");
        match self.ck.info(&dw).map(|t| t.shape.clone()) {
            Some(s) if s.len() == 4 && s[0] == c && s[1] == 1 => {}
            Some(s) => {
                return Err(LoadError::tensor(
                    &self.ck.path,
                    &dw,
                    format!("tensor `{dw}` has shape {s:?}, expected [{c}, 1, k, k]"),
                ))
            }
            None => {
                return Err(LoadError::tensor(
                    &self.ck.path,
                    &dw,
                    format!("tensor `{dw}` is missing ({})", self.cfg.name),
                ))
            }
        }
        let y = self.conv(x, &format!("{prefix}.conv_dw"), 1, false)?;
        self.conv(y, &format!("{prefix}.conv_pw"), 1, pw_bias)
    }

    /// A class or box net over the five levels.
    fn head(&mut self, net: &str, levels: &[ValueId]) -> Result<Vec<ValueId>, LoadError> {
        let mut outs = vec![];
        for (l, &x) in levels.iter().enumerate() {
            let mut y = x;
            for r in 0..self.cfg.head_repeats {
                y = self.separable(y, &format!("{net}.conv_rep.{r}"), false)?;
                let eps = self.cfg.head_eps;
                y = self.bn(y, &format!("{net}.bn_rep.{r}.{l}.bn"), eps)?;
                y = self.silu(y, &format!("{net}.act.{r}.{l}"))?;
            }
            outs.push(self.separable(y, &format!("{net}.predict"), true)?);
        }
        Ok(outs)
    }
}
