//! BERT-style text encoders from a HuggingFace checkpoint: `config.json`
//! beside `model.safetensors`, as `save_pretrained` writes it (sentence-
//! transformers' `CrossEncoder` saves exactly this). `model_type` `bert`
//! (`BertModel`, `BertForSequenceClassification`), `roberta` and
//! `xlm-roberta` (`*Model`, `*ForSequenceClassification`: BGE's rerankers
//! are XLM-RoBERTa) and `electra` (`ElectraModel`,
//! `ElectraForSequenceClassification`): one encoder, three ways in and
//! out ([`Kind`]). The graph is the one HuggingFace's eager attention
//! computes, at a static batch and sequence length.
//!
//! Inputs `input_ids`, `attention_mask` and (BERT, ELECTRA)
//! `token_type_ids`, int64 `[batch, seq]`. Outputs `logits` (with a
//! classifier), else `last_hidden_state` and, with a pooler,
//! `pooler_output`.

use std::path::Path;

use fuse_ir::*;

use super::builder::GraphBuilder;
use super::{ArchOptions, Built};
use crate::safetensors::Checkpoint;
use crate::LoadError;

/// The static sequence length when `--seq-len` does not say.
pub const DEFAULT_SEQ_LEN: usize = 128;

/// Where the encoders differ (everything else, the layers and their
/// weights' names, is BERT's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Positions 0.., token types an input; the classifier reads the
    /// pooler (first token, dense, tanh).
    Bert,
    /// RoBERTa and XLM-RoBERTa: positions count the tokens that are not
    /// padding, from `pad_token_id + 1` (computed from the ids at run
    /// time); no token types (their one embedding row is added to every
    /// token); the classifier reads the first token through its own
    /// dense and tanh (`classifier.dense`, `classifier.out_proj`).
    Roberta,
    /// BERT's positions and token types at `embedding_size`, projected to
    /// the hidden size (`embeddings_project`) when it differs; the
    /// classifier as RoBERTa's with GELU for tanh.
    Electra,
}

impl Kind {
    /// The `model_type`s built, for messages.
    pub const MODEL_TYPES: &'static str = "\"bert\", \"roberta\", \"xlm-roberta\", \"electra\"";

    pub fn from_model_type(t: &str) -> Option<Kind> {
        match t {
            "bert" => Some(Kind::Bert),
            "roberta" | "xlm-roberta" => Some(Kind::Roberta),
            "electra" => Some(Kind::Electra),
            _ => None,
        }
    }

    /// The encoder's prefix in a `*ForSequenceClassification` checkpoint.
    fn prefix(self) -> &'static str {
        match self {
            Kind::Bert => "bert.",
            Kind::Roberta => "roberta.",
            Kind::Electra => "electra.",
        }
    }
}

/// What `config.json` says, the fields the graph needs.
#[derive(Clone, Debug)]
pub struct Config {
    /// `model_type` as written (`xlm-roberta`), and what it builds.
    pub model_type: String,
    pub kind: Kind,
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
    /// The padding id, from which RoBERTa's positions count.
    pub pad_token_id: usize,
    /// ELECTRA's embedding width (the hidden size elsewhere).
    pub embedding_size: usize,
}

impl Config {
    /// Reads the fields of a parsed `config.json`; errors name the field.
    pub fn from_json(j: &serde_json::Value, file: &Path) -> Result<Config, LoadError> {
        let err = |m: String| LoadError::new(file, m);
        let model_type = j.get("model_type").and_then(|v| v.as_str()).map(str::to_string);
        let Some((model_type, kind)) = model_type.and_then(|t| Kind::from_model_type(&t).map(|k| (t, k))) else {
            let said = j.get("model_type").map(|v| v.to_string()).unwrap_or_else(|| "none".into());
            return Err(err(format!(
                "model_type {said}: fusec builds HuggingFace checkpoints of model_type {} (others: export them with torch.onnx and fuse the .onnx files)",
                Kind::MODEL_TYPES
            )));
        };
        let num = |k: &str| -> Result<usize, LoadError> {
            j.get(k)
                .and_then(|v| v.as_u64())
                .filter(|&v| v > 0 && v <= u32::MAX as u64)
                .map(|v| v as usize)
                .ok_or_else(|| err(format!("`{k}` must be a positive integer")))
        };
        let hidden = num("hidden_size")?;
        let cfg = Config {
            model_type,
            kind,
            hidden,
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
            pad_token_id: match j.get("pad_token_id") {
                None | Some(serde_json::Value::Null) => {
                    if kind == Kind::Roberta {
                        1
                    } else {
                        0
                    }
                }
                Some(v) => v
                    .as_u64()
                    .filter(|&v| v <= u32::MAX as u64)
                    .map(|v| v as usize)
                    .ok_or_else(|| err("`pad_token_id` must be a non-negative integer".into()))?,
            },
            embedding_size: if kind == Kind::Electra && j.get("embedding_size").is_some() {
                num("embedding_size")?
            } else {
                hidden
            },
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
    // RoBERTa's last position is `pad_token_id + seq`.
    let longest = match cfg.kind {
        Kind::Roberta => cfg.max_positions.saturating_sub(cfg.pad_token_id + 1),
        Kind::Bert | Kind::Electra => cfg.max_positions,
    };
    if batch == 0 || seq == 0 || seq > longest {
        let limit = match cfg.kind {
            Kind::Roberta => format!(
                "max_position_embeddings {} less pad_token_id {} and 1 ({longest})",
                cfg.max_positions, cfg.pad_token_id
            ),
            Kind::Bert | Kind::Electra => format!("max_position_embeddings {}", cfg.max_positions),
        };
        return Err(LoadError::new(
            &ck.path,
            format!("--batch {batch} --seq-len {seq}: both must be positive and seq-len at most {limit}"),
        ));
    }
    let act = match cfg.hidden_act.as_str() {
        "gelu" => UnaryOp::Gelu,
        "relu" => UnaryOp::Relu,
        other => {
            return Err(LoadError::new(&ck.path, format!("hidden_act `{other}` is not supported (gelu, relu)")));
        }
    };
    let kind = cfg.kind;
    let prefix = if ck.info(&format!("{}embeddings.word_embeddings.weight", kind.prefix())).is_some() {
        kind.prefix()
    } else {
        ""
    };
    let mut b = Bert { gb: GraphBuilder::new(ck, &cfg.model_type), cfg, prefix, batch, seq };
    b.gb.g.metadata.push(("fusec.arch".into(), cfg.model_type.clone()));
    let tokens = TensorType::new(DType::I64, vec![batch, seq]);
    let ids = b.gb.g.add_input("input_ids", tokens.clone());
    let mask = b.gb.g.add_input("attention_mask", tokens.clone());
    let types = match kind {
        Kind::Bert | Kind::Electra => Some(b.gb.g.add_input("token_type_ids", tokens)),
        Kind::Roberta => None,
    };
    let mut x = b.embeddings(ids, types)?;
    let ext = b.extended_mask(mask)?;
    for l in 0..cfg.layers {
        x = b.layer(l, x, ext, act)?;
    }
    let mut outputs = vec![];
    let pooled = if b.gb.has(&format!("{prefix}pooler.dense.weight")) { Some(b.pooler(x)?) } else { None };
    // BERT's classifier reads the pooler; RoBERTa's and ELECTRA's have a
    // dense layer of their own and an output projection.
    let head = match kind {
        Kind::Bert => "classifier",
        Kind::Roberta | Kind::Electra => "classifier.out_proj",
    };
    let classifier = b.gb.has(&format!("{head}.weight"));
    let model = match kind {
        Kind::Bert => "Bert",
        Kind::Roberta if cfg.model_type == "xlm-roberta" => "XLMRoberta",
        Kind::Roberta => "Roberta",
        Kind::Electra => "Electra",
    };
    let description = match (classifier, pooled) {
        (true, pooled) => {
            let weight = format!("{head}.weight");
            let labels = b.gb.ck.info(&weight).map(|t| t.shape[0]).unwrap_or(0);
            if let Some(n) = cfg.num_labels.filter(|&n| n != labels) {
                return Err(LoadError::tensor(
                    &ck.path,
                    &weight,
                    format!("tensor `{weight}` has {labels} labels but config.json's id2label has {n}"),
                ));
            }
            let features = match (kind, pooled) {
                (Kind::Bert, Some(p)) => p,
                (Kind::Bert, None) => {
                    return Err(b.gb.err("a classifier without a pooler is not a BertForSequenceClassification".into()))
                }
                (Kind::Roberta, _) => b.first_token_dense("classifier", UnaryOp::Tanh, x)?,
                (Kind::Electra, _) => b.first_token_dense("classifier", UnaryOp::Gelu, x)?,
            };
            let logits = b.linear(features, head, cfg.hidden, labels)?;
            b.gb.g.value_mut(logits).name = "logits".into();
            outputs.push(logits);
            format!("{model}ForSequenceClassification, {labels} label{}", if labels == 1 { "" } else { "s" })
        }
        (false, pooled) => {
            b.gb.g.value_mut(x).name = "last_hidden_state".into();
            outputs.push(x);
            if let Some(p) = pooled {
                b.gb.g.value_mut(p).name = "pooler_output".into();
                outputs.push(p);
            }
            format!("{model}Model")
        }
    };
    let embedding =
        if cfg.embedding_size != cfg.hidden { format!(", embedding {}", cfg.embedding_size) } else { String::new() };
    let description = format!(
        "{} ({description}; {} layers, hidden {}, {} heads, intermediate {}, vocab {}{embedding}; inputs int64 [{batch}, {seq}])",
        cfg.model_type, cfg.layers, cfg.hidden, cfg.heads, cfg.intermediate, cfg.vocab
    );
    let graph = b.gb.finish(outputs, |t| t.ends_with("position_ids") || t.ends_with("embeddings.token_type_ids"))?;
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

    fn layer_norm(&mut self, x: ValueId, name: &str, h: usize) -> Result<ValueId, LoadError> {
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

    fn embeddings(&mut self, ids: ValueId, types: Option<ValueId>) -> Result<ValueId, LoadError> {
        let (p, e_size, s) = (self.prefix, self.cfg.embedding_size, self.seq);
        let e = format!("{p}embeddings");
        let word = self.gb.weight(&format!("{e}.word_embeddings.weight"), Some(&[self.cfg.vocab, e_size]))?;
        let pos =
            self.gb.weight(&format!("{e}.position_embeddings.weight"), Some(&[self.cfg.max_positions, e_size]))?;
        let tt = self.gb.weight(&format!("{e}.token_type_embeddings.weight"), Some(&[self.cfg.type_vocab, e_size]))?;
        let pos_ids = match self.cfg.kind {
            Kind::Roberta => self.roberta_positions(ids, &e)?,
            Kind::Bert | Kind::Electra => {
                let positions: Vec<i64> = (0..s as i64).collect();
                self.constant(&format!("{e}.position_ids"), Tensor::from_i64(vec![1, s], &positions))?
            }
        };
        // Without a token-type input every token is of type 0.
        let types = match types {
            Some(t) => t,
            None => self.constant(&format!("{e}.token_type_ids"), Tensor::from_i64(vec![1, s], &vec![0; s]))?,
        };
        let gather = Op::Gather { axis: 0 };
        let we = self.gb.node(&format!("{e}/word"), gather.clone(), vec![Some(word), Some(ids)])?;
        let te = self.gb.node(&format!("{e}/token_type"), gather.clone(), vec![Some(tt), Some(types)])?;
        let pe = self.gb.node(&format!("{e}/position"), gather, vec![Some(pos), Some(pos_ids)])?;
        let add = Op::Binary(BinaryOp::Add);
        let x = self.gb.node(&format!("{e}/add"), add.clone(), vec![Some(we), Some(te)])?;
        let x = self.gb.node(&format!("{e}/add_1"), add, vec![Some(x), Some(pe)])?;
        let x = self.layer_norm(x, &format!("{e}.LayerNorm"), e_size)?;
        if e_size == self.cfg.hidden {
            return Ok(x);
        }
        self.linear(x, &format!("{p}embeddings_project"), e_size, self.cfg.hidden)
    }

    /// RoBERTa's positions, as HuggingFace's
    /// `create_position_ids_from_input_ids`: `pad + cumsum(m) · m` with
    /// `m = ids != pad` (in i32, as torch computes them).
    fn roberta_positions(&mut self, ids: ValueId, e: &str) -> Result<ValueId, LoadError> {
        let pad = self.cfg.pad_token_id as i64;
        let n = format!("{e}/positions");
        let pad_id = self.constant(&format!("{n}/pad"), Tensor::from_i64(vec![], &[pad]))?;
        let is_pad =
            self.gb.node(&format!("{n}/is_pad"), Op::Compare(CompareOp::Equal), vec![Some(ids), Some(pad_id)])?;
        let kept = self.gb.node(&format!("{n}/kept"), Op::Not, vec![Some(is_pad)])?;
        let kept = self.gb.node(&format!("{n}/kept_i32"), Op::Cast { to: DType::I32 }, vec![Some(kept)])?;
        let cumsum = Op::CumSum { axis: 1, exclusive: false, reverse: false };
        let count = self.gb.node(&format!("{n}/count"), cumsum, vec![Some(kept)])?;
        let count =
            self.gb.node(&format!("{n}/count_kept"), Op::Binary(BinaryOp::Mul), vec![Some(count), Some(kept)])?;
        let count = self.gb.node(&format!("{n}/count_i64"), Op::Cast { to: DType::I64 }, vec![Some(count)])?;
        self.gb.node(&format!("{n}/from_pad"), Op::Binary(BinaryOp::Add), vec![Some(count), Some(pad_id)])
    }

    /// The first token's hidden state through `NAME.dense` and `act`
    /// (RoBERTa's and ELECTRA's classification heads).
    fn first_token_dense(&mut self, name: &str, act: UnaryOp, x: ValueId) -> Result<ValueId, LoadError> {
        let zero = self.constant(&format!("{name}/first"), Tensor::from_i64(vec![], &[0]))?;
        let first = self.gb.node(&format!("{name}/first_token"), Op::Gather { axis: 1 }, vec![Some(x), Some(zero)])?;
        let d = self.linear(first, &format!("{name}.dense"), self.cfg.hidden, self.cfg.hidden)?;
        self.gb.node(&format!("{name}/act"), Op::Unary(act), vec![Some(d)])
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
        let x = self.layer_norm(o, &format!("{a}.output.LayerNorm"), h)?;
        let i = self.linear(x, &format!("{p}.intermediate.dense"), h, self.cfg.intermediate)?;
        let i = self.gb.node(&format!("{p}.intermediate/act"), Op::Unary(act), vec![Some(i)])?;
        let o = self.linear(i, &format!("{p}.output.dense"), self.cfg.intermediate, h)?;
        let o = self.gb.node(&format!("{p}.output/residual"), Op::Binary(BinaryOp::Add), vec![Some(o), Some(x)])?;
        self.layer_norm(o, &format!("{p}.output.LayerNorm"), h)
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
