//! Synthetic effdet-shaped checkpoints, written by the tests themselves.

use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};

use super::{fusec, ok, write};

/// An effdet-shaped state_dict: EfficientNet stages (depth, out channels,
/// expansion, kernel), BiFPN width and cells, head repeats, classes.
pub struct Spec {
    /// effdet's `redundant_bias` (tf_ configs): a bias on every conv before a BN
    /// outside the backbone.
    pub redundant_bias: bool,
    pub stem: usize,
    pub stages: Vec<(usize, usize, usize, usize)>,
    pub fpn: usize,
    pub cells: usize,
    pub reps: usize,
    pub classes: usize,
    pub anchors: usize,
}

impl Spec {
    /// A D0-shaped network with narrow layers: fast to run.
    pub fn small(fpn: usize, cells: usize, reps: usize, classes: usize) -> Spec {
        Spec {
            redundant_bias: false,
            stem: 8,
            stages: vec![
                (1, 8, 1, 3),
                (2, 8, 2, 3),
                (1, 16, 2, 5),
                (1, 16, 2, 3),
                (2, 24, 2, 5),
                (1, 24, 2, 5),
                (1, 32, 2, 3),
            ],
            fpn,
            cells,
            reps,
            classes,
            anchors: 9,
        }
    }

    /// (name, shape) in the order PyTorch's `state_dict()` lists them.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let mut t: Vec<(String, Vec<usize>)> = vec![];
        let bn = |t: &mut Vec<(String, Vec<usize>)>, p: &str, c: usize| {
            for s in ["weight", "bias", "running_mean", "running_var"] {
                t.push((format!("{p}.{s}"), vec![c]));
            }
            t.push((format!("{p}.num_batches_tracked"), vec![]));
        };
        let conv = |t: &mut Vec<(String, Vec<usize>)>, p: &str, o: usize, i: usize, k: usize| {
            t.push((format!("{p}.weight"), vec![o, i, k, k]));
            let before_bn = p.ends_with("conv.conv")
                || (p.ends_with("conv_pw") && !p.starts_with("backbone") && !p.contains("predict"));
            if self.redundant_bias && before_bn {
                t.push((format!("{p}.bias"), vec![o]));
            }
        };
        conv(&mut t, "backbone.conv_stem", self.stem, 3, 3);
        bn(&mut t, "backbone.bn1", self.stem);
        let mut cin = self.stem;
        let mut feature_ch = vec![];
        for (s, &(depth, out, expand, k)) in self.stages.iter().enumerate() {
            for b in 0..depth {
                let p = format!("backbone.blocks.{s}.{b}");
                let se = |t: &mut Vec<(String, Vec<usize>)>, mid: usize, r: usize| {
                    t.push((format!("{p}.se.conv_reduce.weight"), vec![r, mid, 1, 1]));
                    t.push((format!("{p}.se.conv_reduce.bias"), vec![r]));
                    t.push((format!("{p}.se.conv_expand.weight"), vec![mid, r, 1, 1]));
                    t.push((format!("{p}.se.conv_expand.bias"), vec![mid]));
                };
                let r = (cin / 4).max(1);
                if s == 0 {
                    conv(&mut t, &format!("{p}.conv_dw"), cin, 1, k);
                    bn(&mut t, &format!("{p}.bn1"), cin);
                    se(&mut t, cin, r);
                    conv(&mut t, &format!("{p}.conv_pw"), out, cin, 1);
                    bn(&mut t, &format!("{p}.bn2"), out);
                } else {
                    let mid = cin * expand;
                    conv(&mut t, &format!("{p}.conv_pw"), mid, cin, 1);
                    bn(&mut t, &format!("{p}.bn1"), mid);
                    conv(&mut t, &format!("{p}.conv_dw"), mid, 1, k);
                    bn(&mut t, &format!("{p}.bn2"), mid);
                    se(&mut t, mid, r);
                    conv(&mut t, &format!("{p}.conv_pwl"), out, mid, 1);
                    bn(&mut t, &format!("{p}.bn3"), out);
                }
                cin = out;
            }
            if [2, 4, 6].contains(&s) {
                feature_ch.push(cin);
            }
        }
        if feature_ch[2] != self.fpn {
            conv(&mut t, "fpn.resample.3.conv.conv", self.fpn, feature_ch[2], 1);
            bn(&mut t, "fpn.resample.3.conv.bn", self.fpn);
        }
        let nodes: [&[usize]; 8] = [&[3, 4], &[2, 5], &[1, 6], &[0, 7], &[1, 7, 8], &[2, 6, 9], &[3, 5, 10], &[4, 11]];
        for c in 0..self.cells {
            let mut ch = if c == 0 {
                vec![feature_ch[0], feature_ch[1], feature_ch[2], self.fpn, self.fpn]
            } else {
                vec![self.fpn; 5]
            };
            for (i, inputs) in nodes.iter().enumerate() {
                let p = format!("fpn.cell.{c}.fnode.{i}");
                for &o in inputs.iter() {
                    if ch[o] != self.fpn {
                        conv(&mut t, &format!("{p}.combine.resample.{o}.conv.conv"), self.fpn, ch[o], 1);
                        bn(&mut t, &format!("{p}.combine.resample.{o}.conv.bn"), self.fpn);
                    }
                }
                t.push((format!("{p}.combine.edge_weights"), vec![inputs.len()]));
                conv(&mut t, &format!("{p}.after_combine.conv.conv_dw"), self.fpn, 1, 3);
                conv(&mut t, &format!("{p}.after_combine.conv.conv_pw"), self.fpn, self.fpn, 1);
                bn(&mut t, &format!("{p}.after_combine.conv.bn"), self.fpn);
                ch.push(self.fpn);
            }
        }
        for (net, outs) in [("class_net", self.classes * self.anchors), ("box_net", 4 * self.anchors)] {
            for r in 0..self.reps {
                conv(&mut t, &format!("{net}.conv_rep.{r}.conv_dw"), self.fpn, 1, 3);
                conv(&mut t, &format!("{net}.conv_rep.{r}.conv_pw"), self.fpn, self.fpn, 1);
            }
            for r in 0..self.reps {
                for l in 0..5 {
                    bn(&mut t, &format!("{net}.bn_rep.{r}.{l}.bn"), self.fpn);
                }
            }
            conv(&mut t, &format!("{net}.predict.conv_dw"), self.fpn, 1, 3);
            conv(&mut t, &format!("{net}.predict.conv_pw"), outs, self.fpn, 1);
            t.push((format!("{net}.predict.conv_pw.bias"), vec![outs]));
        }
        t
    }
}

/// Deterministic values: small weights, positive variances, int64 counters.
pub fn tensor_bytes(name: &str, shape: &[usize], seed: &mut u64) -> (Dtype, Vec<u8>) {
    let n: usize = shape.iter().product();
    if name.ends_with("num_batches_tracked") {
        return (Dtype::I64, 1000i64.to_le_bytes().to_vec());
    }
    let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
    let scale = if shape.len() == 4 { 1.5 / (fan_in as f32).sqrt() } else { 0.1 };
    let mut next = || {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
    };
    let vals: Vec<f32> = (0..n)
        .map(|_| {
            let r = next();
            if name.ends_with("running_var") {
                1.0 + 0.5 * r
            } else if name.ends_with(".weight") && shape.len() == 1 {
                1.0 + 0.2 * r // BN scale
            } else if name.ends_with("edge_weights") {
                1.0 + 0.5 * r
            } else {
                scale * r
            }
        })
        .collect();
    (Dtype::F32, vals.iter().flat_map(|x| x.to_le_bytes()).collect())
}

pub fn write_checkpoint(path: &std::path::Path, tensors: &[(String, Vec<usize>)], metadata: Option<(&str, &str)>) {
    write_checkpoint_seeded(path, tensors, metadata, 42)
}

/// Like [`write_checkpoint`], with values drawn from `seed` (other members).
pub fn write_checkpoint_seeded(
    path: &std::path::Path,
    tensors: &[(String, Vec<usize>)],
    metadata: Option<(&str, &str)>,
    mut seed: u64,
) {
    let data: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s)| {
            let (d, b) = tensor_bytes(n, s, &mut seed);
            (n.clone(), s.clone(), d, b)
        })
        .collect();
    let views: Vec<(String, TensorView)> =
        data.iter().map(|(n, s, d, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    let meta = metadata.map(|(k, v)| std::iter::once((k.to_string(), v.to_string())).collect());
    std::fs::write(path, safetensors::serialize(views, meta).unwrap()).unwrap();
}

pub fn checkpoint(dir: &tempfile::TempDir, name: &str, spec: &Spec) -> PathBuf {
    let p = dir.path().join(name);
    write_checkpoint(&p, &spec.tensors(), None);
    p
}

pub fn image(dir: &tempfile::TempDir, size: usize) -> PathBuf {
    let n = 3 * size * size;
    let data: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
    let t = vec![("image".to_string(), ndarray::ArrayD::from_shape_vec(vec![1, 3, size, size], data).unwrap())];
    write(dir, "image.safetensors", &fusec_verify::io::to_safetensors_bytes(&t).unwrap())
}

pub fn run_to(model: &Path, extra: &[&str], input: &Path, runtime: &str, out: &Path) -> String {
    let mut args = vec!["run", model.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--input", input.to_str().unwrap(), "--runtime", runtime, "-o", out.to_str().unwrap()]);
    String::from_utf8(ok(fusec(&args)).stderr).unwrap()
}
