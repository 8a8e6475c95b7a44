//! The architecture registry: turns a PyTorch `state_dict` (safetensors,
//! no architecture inside) into a graph by recognizing the family from
//! tensor names and shapes.
//!
//! Families: [`efficientdet`] (the `effdet` package's EfficientDet D0 to D7
//! and tf_ variants), recognized from tensor names and shapes; [`bert`]
//! (HuggingFace BERT, RoBERTa, XLM-RoBERTa and ELECTRA encoders and their
//! `*ForSequenceClassification`), from the `config.json` beside the
//! checkpoint.

pub mod bert;
mod builder;
pub mod efficientdet;

use fuse_ir::Graph;

use crate::safetensors::Checkpoint;
use crate::LoadError;

/// What the user may force; everything else is inferred.
#[derive(Clone, Debug, Default)]
pub struct ArchOptions {
    /// `--arch NAME`, e.g. `efficientdet_d0` or `tf_efficientdet_d3`.
    pub arch: Option<String>,
    /// Input resolution; defaults to the variant's own.
    pub image_size: Option<usize>,
    /// Static batch size of a sequence model (default 1).
    pub batch: Option<usize>,
    /// Static sequence length of a sequence model (default
    /// [`bert::DEFAULT_SEQ_LEN`]).
    pub seq_len: Option<usize>,
}

/// A graph plus what was recognized, for messages and `inspect`.
pub struct Built {
    pub graph: Graph,
    /// e.g. `efficientdet_d0 (efficientnet_b0 backbone, BiFPN 64x3, ...)`.
    pub description: String,
    /// Things the user should know about this file (an ignored metadata
    /// hint, ...).
    pub warnings: Vec<String>,
    /// A choice made because the checkpoint cannot tell (which variant of
    /// the family it is), with the flag that changes it; the same for every
    /// member of one family, so the CLI says it once.
    pub assumed: Option<String>,
}

/// Recognizes the checkpoint's family and builds its graph.
pub fn build(ck: &Checkpoint, opts: &ArchOptions) -> Result<Built, LoadError> {
    if let Some(config) = hf_config(&ck.path)? {
        let file = ck.path.with_file_name("config.json");
        return bert::build(ck, &bert::Config::from_json(&config, &file)?, opts);
    }
    let score = efficientdet::marker_score(ck);
    if score.present == score.total {
        return efficientdet::build(ck, opts);
    }
    // Every missing marker (there are few), so the counts add up.
    let missing: Vec<String> = score.missing.iter().map(|m| format!("`{m}`")).collect();
    let unexpected: Vec<String> = ck
        .tensors
        .iter()
        .filter(|t| !efficientdet::is_family_name(&t.name))
        .take(3)
        .map(|t| format!("`{}` {:?}", t.name, t.shape))
        .collect();
    let mut msg = format!(
        "unrecognized checkpoint: closest family is efficientdet ({} of {} marker tensors present); missing {}: {}",
        score.present,
        score.total,
        missing.len(),
        missing.join(", ")
    );
    if !unexpected.is_empty() {
        msg.push_str(&format!("; unexpected {}", unexpected.join(", ")));
    }
    Err(LoadError::new(&ck.path, msg))
}

/// The HuggingFace `config.json` beside a checkpoint, parsed, if there is one.
fn hf_config(checkpoint: &std::path::Path) -> Result<Option<serde_json::Value>, LoadError> {
    let file = checkpoint.with_file_name("config.json");
    if !file.is_file() {
        return Ok(None);
    }
    let bytes = crate::read_file(&file)?;
    let j: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| LoadError::new(&file, format!("not valid JSON: {e}")))?;
    Ok(Some(j))
}
