//! BERT from a HuggingFace checkpoint: `config.json` beside
//! `model.safetensors`, as `save_pretrained` writes it (sentence-
//! transformers' `CrossEncoder` saves exactly this). `BertModel` and
//! `BertForSequenceClassification`; the graph is the one HuggingFace's
//! eager attention computes, at a static batch and sequence length.
//!
//! Inputs `input_ids`, `attention_mask`, `token_type_ids`, int64
//! `[batch, seq]`. Outputs `logits` (with a classifier), else
//! `last_hidden_state` and, with a pooler, `pooler_output`.

use std::path::Path;

use fuse_ir::*;

use super::builder::GraphBuilder;
use super::{ArchOptions, Built};
use crate::safetensors::Checkpoint;
use crate::LoadError;

/// The static sequence length when `--seq-len` does not say.
pub const DEFAULT_SEQ_LEN: usize = 128;

/// What `config.json` says, the fields the graph needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub type_vocab: usize,
    pub layer_norm_eps: f32,
    pub hidden_act: String,
    pub num_labels: Option<usize>,
}

impl Config {
    /// Reads the fields of a parsed `config.json`; errors name the field.
    pub fn from_json(j: &serde_json::Value, file: &Path) -> Result<Config, LoadError> {
        let err = |m: String| LoadError::new(file, m);
        let num = |k: &str| -> Result<usize, LoadError> {
            j.get(k)
                .and_then(|v| v.as_u64())
                .filter(|&v| v > 0 && v <= u32::MAX as u64)
                .map(|v| v as usize)
                .ok_or_else(|| err(format!("`{k}` must be a positive integer")))
        };
        let cfg = Config {
            hidden: num("hidden_size")?,
            layers: num("num_hidden_layers")?,
            heads: num("num_attention_heads")?,
            intermediate: num("intermediate_size")?,
            vocab: num("vocab_size")?,
            max_positions: num("max_position_embeddings")?,
            type_vocab: num("type_vocab_size")?,
            layer_norm_eps: j.get("layer_norm_eps").and_then(|v| v.as_f64()).unwrap_or(1e-12) as f32,
            hidden_act: j.get("hidden_act").and_then(|v| v.as_str()).unwrap_or("gelu").to_string(),
            num_labels: j
                .get("id2label")
                .and_then(|v| v.as_object())
                .map(|m| m.len())
                .or_else(|| j.get("num_labels").and_then(|v| v.as_u64()).map(|v| v as usize)),
        };
        if !cfg.hidden.is_multiple_of(cfg.heads) {
            return Err(err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                cfg.hidden, cfg.heads
            )));
        }
        Ok(cfg)
    }
}

pub fn build(ck: &Checkpoint, cfg: &Config, opts: &ArchOptions) -> Result<Built, LoadError> {
    let batch = opts.batch.unwrap_or(1);
    let seq = opts.seq_len.unwrap_or(DEFAULT_SEQ_LEN);
    if batch == 0 || seq == 0 || seq > cfg.max_positions {
        return Err(LoadError::new(
            &ck.path,
            format!(
                "--batch {batch} --seq-len {seq}: both must be positive and seq-len at most max_position_embeddings {}",
                cfg.max_positions
            ),
        ));
    }
    let act = match cfg.hidden_act.as_str() {
        "gelu" => UnaryOp::Gelu,
        "relu" => UnaryOp::Relu,
        other => {
            return Err(LoadError::new(&ck.path, format!("hidden_act `{other}` is not supported (gelu, relu)")));
        }
    };
    let prefix = if ck.info("bert.embeddings.word_embeddings.weight").is_some() { "bert." } else { "" };
    let mut b = Bert { gb: GraphBuilder::new(ck, "bert"), cfg, prefix, batch, seq };
    b.gb.g.metadata.push(("fusec.arch".into(), "bert".into()));
    let tokens = TensorType::new(DType::I64, vec![batch, seq]);
    let ids = b.gb.g.add_input("input_ids", tokens.clone());
    let mask = b.gb.g.add_input("attention_mask", tokens.clone());
    let types = b.gb.g.add_input("token_type_ids", tokens);
    let mut x = b.embeddings(ids, types)?;
    let ext = b.extended_mask(mask)?;
    for l in 0..cfg.layers {
        x = b.layer(l, x, ext, act)?;
    }
    let mut outputs = vec![];
    let pooled = if b.gb.has(&format!("{prefix}pooler.dense.weight")) { Some(b.pooler(x)?) } else { None };
    let classifier = b.gb.has("classifier.weight");
    let kind = match (classifier, pooled) {
        (true, Some(p)) => {
            let labels = b.gb.ck.info("classifier.weight").map(|t| t.shape[0]).unwrap_or(0);
            if let Some(n) = cfg.num_labels.filter(|&n| n != labels) {
                return Err(LoadError::tensor(
                    &ck.path,
                    "classifier.weight",
                    format!("tensor `classifier.weight` has {labels} labels but config.json's id2label has {n}"),
                ));
            }
            let logits = b.linear(p, "classifier", cfg.hidden, labels)?;
            b.gb.g.value_mut(logits).name = "logits".into();
            outputs.push(logits);
            format!("BertForSequenceClassification, {labels} label{}", if labels == 1 { "" } else { "s" })
        }
        (true, None) => {
            return Err(b.gb.err("a classifier without a pooler is not a BertForSequenceClassification".into()))
        }
        (false, pooled) => {
            b.gb.g.value_mut(x).name = "last_hidden_state".into();
            outputs.push(x);
            if let Some(p) = pooled {
                b.gb.g.value_mut(p).name = "pooler_output".into();
                outputs.push(p);
            }
            "BertModel".to_string()
        }
    };
    let description = format!(
        "bert ({kind}; {} layers, hidden {}, {} heads, intermediate {}, vocab {}; inputs int64 [{batch}, {seq}])",
        cfg.layers, cfg.hidden, cfg.heads, cfg.intermediate, cfg.vocab
    );
    let graph = b.gb.finish(outputs, |t| t.ends_with("position_ids"))?;
    Ok(Built { graph, description, warnings: vec![], assumed: None })
}

struct Bert<'a> {
    gb: GraphBuilder<'a>,
    cfg: &'a Config,
    prefix: &'static str,
    batch: usize,
    seq: usize,
}

impl Bert<'_> {
    fn constant(&mut self, name: &str, t: Result<Tensor, String>) -> Result<ValueId, LoadError> {
        let t = t.map_err(|m| self.gb.err(format!("{name}: {m}")))?;
        Ok(self.gb.g.add_weight(name, t))
    }

    fn layer_norm(&mut self, x: ValueId, name: &str) -> Result<ValueId, LoadError> {
        let h = self.cfg.hidden;
        let w = self.gb.weight(&format!("{name}.weight"), Some(&[h]))?;
        let bias = self.gb.weight(&format!("{name}.bias"), Some(&[h]))?;
        let op = Op::LayerNorm { axis: -1, epsilon: self.cfg.layer_norm_eps };
        self.gb.node(name, op, vec![Some(x), Some(w), Some(bias)])
    }

    /// `x @ W^T + b` for a torch `Linear` named `name` (weight
    /// `[out, in]`, stored transposed as `NAME.weight.T` for the MatMul).
    fn linear(&mut self, x: ValueId, name: &str, inp: usize, out: usize) -> Result<ValueId, LoadError> {
        let t = self.gb.tensor(&format!("{name}.weight"), Some(&[out, inp]))?;
        let data = t.to_f32_vec().ok_or_else(|| self.gb.err(format!("{name}.weight: not f32")))?;
        let mut tr = vec![0f32; data.len()];
        for o in 0..out {
            for i in 0..inp {
                tr[i * out + o] = data[o * inp + i];
            }
        }
        let wt = self.constant(&format!("{name}.weight.T"), Tensor::from_f32(vec![inp, out], &tr))?;
        let bias = self.gb.weight(&format!("{name}.bias"), Some(&[out]))?;
        let y = self.gb.node(&format!("{name}/MatMul"), Op::MatMul, vec![Some(x), Some(wt)])?;
        self.gb.node(&format!("{name}/Add"), Op::Binary(BinaryOp::Add), vec![Some(y), Some(bias)])
    }

    fn embeddings(&mut self, ids: ValueId, types: ValueId) -> Result<ValueId, LoadError> {
        let (p, h, s) = (self.prefix, self.cfg.hidden, self.seq);
        let e = format!("{p}embeddings");
        let word = self.gb.weight(&format!("{e}.word_embeddings.weight"), Some(&[self.cfg.vocab, h]))?;
        let pos = self.gb.weight(&format!("{e}.position_embeddings.weight"), Some(&[self.cfg.max_positions, h]))?;
        let tt = self.gb.weight(&format!("{e}.token_type_embeddings.weight"), Some(&[self.cfg.type_vocab, h]))?;
        let positions: Vec<i64> = (0..s as i64).collect();
        let pos_ids = self.constant(&format!("{e}.position_ids"), Tensor::from_i64(vec![1, s], &positions))?;
        let gather = Op::Gather { axis: 0 };
        let we = self.gb.node(&format!("{e}/word"), gather.clone(), vec![Some(word), Some(ids)])?;
        let te = self.gb.node(&format!("{e}/token_type"), gather.clone(), vec![Some(tt), Some(types)])?;
        let pe = self.gb.node(&format!("{e}/position"), gather, vec![Some(pos), Some(pos_ids)])?;
        let add = Op::Binary(BinaryOp::Add);
        let x = self.gb.node(&format!("{e}/add"), add.clone(), vec![Some(we), Some(te)])?;
        let x = self.gb.node(&format!("{e}/add_1"), add, vec![Some(x), Some(pe)])?;
        self.layer_norm(x, &format!("{e}.LayerNorm"))
    }

    /// The additive attention mask `[B, 1, 1, S]`: 0 where attended, the
    /// lowest f32 where masked (`(1 - mask) · f32::MIN`, as HuggingFace).
    fn extended_mask(&mut self, mask: ValueId) -> Result<ValueId, LoadError> {
        let m = self.gb.node("mask/cast", Op::Cast { to: DType::F32 }, vec![Some(mask)])?;
        let one = self.constant("mask/one", Tensor::from_f32(vec![], &[1.0]))?;
        let low = self.constant("mask/lowest", Tensor::from_f32(vec![], &[f32::MIN]))?;
        let inv = self.gb.node("mask/invert", Op::Binary(BinaryOp::Sub), vec![Some(one), Some(m)])?;
        let ext = self.gb.node("mask/scale", Op::Binary(BinaryOp::Mul), vec![Some(inv), Some(low)])?;
        self.gb.node("mask/reshape", Op::Reshape { shape: vec![self.batch, 1, 1, self.seq] }, vec![Some(ext)])
    }

    fn layer(&mut self, l: usize, x: ValueId, ext: ValueId, act: UnaryOp) -> Result<ValueId, LoadError> {
        let (h, nh, s, bsz) = (self.cfg.hidden, self.cfg.heads, self.seq, self.batch);
        let hd = h / nh;
        let p = format!("{}encoder.layer.{l}", self.prefix);
        let a = format!("{p}.attention");
        let heads = |b: &mut Self, v: ValueId, name: &str, perm: Vec<usize>| -> Result<ValueId, LoadError> {
            let r =
                b.gb.node(&format!("{name}/Reshape"), Op::Reshape { shape: vec![bsz, s, nh, hd] }, vec![Some(v)])?;
            b.gb.node(&format!("{name}/Transpose"), Op::Transpose { perm }, vec![Some(r)])
        };
        let q = self.linear(x, &format!("{a}.self.query"), h, h)?;
        let q = heads(self, q, &format!("{a}.self.query"), vec![0, 2, 1, 3])?;
        let k = self.linear(x, &format!("{a}.self.key"), h, h)?;
        let k = heads(self, k, &format!("{a}.self.key"), vec![0, 2, 3, 1])?;
        let v = self.linear(x, &format!("{a}.self.value"), h, h)?;
        let v = heads(self, v, &format!("{a}.self.value"), vec![0, 2, 1, 3])?;
        let scores = self.gb.node(&format!("{a}/scores"), Op::MatMul, vec![Some(q), Some(k)])?;
        let scale = self.constant(&format!("{a}/scaling"), Tensor::from_f32(vec![], &[(hd as f32).powf(-0.5)]))?;
        let scores = self.gb.node(&format!("{a}/scale"), Op::Binary(BinaryOp::Mul), vec![Some(scores), Some(scale)])?;
        let scores = self.gb.node(&format!("{a}/mask"), Op::Binary(BinaryOp::Add), vec![Some(scores), Some(ext)])?;
        let probs = self.gb.node(&format!("{a}/softmax"), Op::Softmax { axis: -1 }, vec![Some(scores)])?;
        let ctx = self.gb.node(&format!("{a}/context"), Op::MatMul, vec![Some(probs), Some(v)])?;
        let ctx =
            self.gb.node(&format!("{a}/merge/Transpose"), Op::Transpose { perm: vec![0, 2, 1, 3] }, vec![Some(ctx)])?;
        let ctx =
            self.gb.node(&format!("{a}/merge/Reshape"), Op::Reshape { shape: vec![bsz, s, h] }, vec![Some(ctx)])?;
        let o = self.linear(ctx, &format!("{a}.output.dense"), h, h)?;
        let o = self.gb.node(&format!("{a}.output/residual"), Op::Binary(BinaryOp::Add), vec![Some(o), Some(x)])?;
        let x = self.layer_norm(o, &format!("{a}.output.LayerNorm"))?;
        let i = self.linear(x, &format!("{p}.intermediate.dense"), h, self.cfg.intermediate)?;
        let i = self.gb.node(&format!("{p}.intermediate/act"), Op::Unary(act), vec![Some(i)])?;
        let o = self.linear(i, &format!("{p}.output.dense"), self.cfg.intermediate, h)?;
        let o = self.gb.node(&format!("{p}.output/residual"), Op::Binary(BinaryOp::Add), vec![Some(o), Some(x)])?;
        self.layer_norm(o, &format!("{p}.output.LayerNorm"))
    }

    /// The first token's hidden state through the pooler's dense + tanh.
    fn pooler(&mut self, x: ValueId) -> Result<ValueId, LoadError> {
        let p = format!("{}pooler", self.prefix);
        let zero = self.constant(&format!("{p}/first"), Tensor::from_i64(vec![], &[0]))?;
        let first = self.gb.node(&format!("{p}/first_token"), Op::Gather { axis: 1 }, vec![Some(x), Some(zero)])?;
        let d = self.linear(first, &format!("{p}.dense"), self.cfg.hidden, self.cfg.hidden)?;
        self.gb.node(&format!("{p}/tanh"), Op::Unary(UnaryOp::Tanh), vec![Some(d)])
    }
}
