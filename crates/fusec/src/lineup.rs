//! The models of `verify`, `bench` and `--tune` timed side by side:
//! groups of them run in interleaved rounds, sessions made afresh block
//! by block.

use std::path::{Path, PathBuf};

use fuse_ir::Graph;
use fusec_verify::runtime::{Model, Session, SessionConfig};
use fusec_verify::timing::{interleaved, Stats};
use fusec_verify::{Tensors, VerifyError};

use crate::models::OnnxModel;
use crate::Failure;

/// Models to time side by side (groups of them: the members are a group
/// of N run one after another, a fused model a group of one), kept as
/// ONNX files in a temporary folder so that sessions can be made of them
/// afresh, block by block, without every model's bytes held in memory.
///
/// Why afresh: two sessions of one graph made in one process can differ
/// by 5-30% for their whole life (ONNX Runtime on this project's CPU:
/// where their weights and arenas landed), so one session per model
/// decides between models by luck. [`Lineup::time`] splits the rounds
/// among several sessions of each model and pools them.
pub(crate) struct Lineup {
    /// Removed if the command is interrupted (the folder holds every model).
    _pending: fusec_exporters::Pending,
    dir: tempfile::TempDir,
    /// Each group's model files (with any weights beside them).
    groups: Vec<Vec<PathBuf>>,
    /// Models past 2 GiB, kept in their own temporary folders.
    kept: Vec<OnnxModel>,
}

impl Lineup {
    pub(crate) fn new() -> Result<Lineup, Failure> {
        let dir = tempfile::Builder::new()
            .prefix("fusec-timing-")
            .tempdir()
            .map_err(|e| Failure::internal(format!("a temporary folder for the models to time: {e}")))?;
        Ok(Lineup { _pending: fusec_exporters::Pending::new(dir.path()), dir, groups: vec![], kept: vec![] })
    }

    /// Adds a group of models run one after another (each written to the
    /// lineup's folder, a model past 2 GiB kept as the file it is); its
    /// stats come back at this index.
    pub(crate) fn push_models(&mut self, models: Vec<OnnxModel>) -> Result<usize, Failure> {
        let mut files = vec![];
        for m in models {
            match &m {
                OnnxModel::Bytes(bytes) => {
                    let file = self.dir.path().join(format!("{}-{}.onnx", self.groups.len(), files.len()));
                    std::fs::write(&file, bytes).map_err(|e| Failure::internal(format!("{}: {e}", file.display())))?;
                    files.push(file);
                }
                OnnxModel::File { path, .. } => {
                    files.push(path.clone());
                    self.kept.push(m);
                }
            }
        }
        self.groups.push(files);
        Ok(self.groups.len() - 1)
    }

    /// Adds one model file as it is (with any weights beside it).
    pub(crate) fn push_file(&mut self, path: &Path) -> usize {
        self.groups.push(vec![path.to_path_buf()]);
        self.groups.len() - 1
    }

    /// Adds the graphs as one group (see [`Lineup::push_models`]); with `fp16`,
    /// each computes in f16 (members and fused models alike:
    /// `--precision fp16`).
    pub(crate) fn push_graphs(&mut self, graphs: &[Graph], fp16: bool) -> Result<usize, Failure> {
        let models = graphs.iter().map(|g| OnnxModel::of(g, fp16)).collect::<Result<_, _>>()?;
        self.push_models(models)
    }

    /// A session of each model of group `group`, made afresh from its file.
    pub(crate) fn sessions(&self, group: usize, cfg: &SessionConfig) -> Result<Vec<Box<dyn Session>>, Failure> {
        let mut made = vec![];
        for f in &self.groups[group] {
            made.push(fusec_verify::runtime::load(Model::File(f), cfg)?);
        }
        Ok(made)
    }

    /// Times every group side by side on `x` in `runs` interleaved rounds,
    /// split among `sessions` blocks (at most one per round): each block
    /// makes every model's session afresh, warms them up (`warmup`
    /// rounds) and times its share of the rounds. Stats per group, the
    /// blocks' rounds in order (still paired round by round across groups).
    pub(crate) fn time(
        &self,
        cfg: &SessionConfig,
        x: &Tensors,
        warmup: usize,
        runs: usize,
        sessions: usize,
        tick: &mut dyn FnMut(),
    ) -> Result<Vec<Stats>, Failure> {
        let blocks = blocks(sessions, runs);
        let mut samples = vec![Vec::with_capacity(runs); self.groups.len()];
        for b in 0..blocks {
            let (from, to) = (runs * b / blocks, runs * (b + 1) / blocks);
            // Made in an order that rotates block by block: the models
            // whose sessions are made first (their memory placed first)
            // differ from block to block.
            let n = self.groups.len();
            let mut made: Vec<Option<Vec<Box<dyn Session>>>> = (0..n).map(|_| None).collect();
            for g in (0..n).map(|i| (i + b) % n) {
                made[g] = Some(self.sessions(g, cfg)?);
            }
            let mut made: Vec<Vec<Box<dyn Session>>> = made.into_iter().flatten().collect();
            let mut runners: Vec<Box<dyn FnMut() -> Result<(), VerifyError> + '_>> = made
                .iter_mut()
                .map(|g| Box::new(move || one_after_another(g, x)) as Box<dyn FnMut() -> Result<(), VerifyError>>)
                .collect();
            let mut refs: Vec<&mut dyn FnMut() -> Result<(), VerifyError>> =
                runners.iter_mut().map(|r| r.as_mut() as &mut dyn FnMut() -> Result<(), VerifyError>).collect();
            let stats = interleaved(&mut refs, warmup, to - from, from, tick)?;
            for (all, s) in samples.iter_mut().zip(stats) {
                all.extend(s.samples_ms);
            }
        }
        Ok(samples.iter().map(|s| Stats::from_ms(s)).collect())
    }
}

/// The sessions of each model `runs` rounds are split among: as asked, at
/// least one and at most one per round.
pub(crate) fn blocks(sessions: usize, runs: usize) -> usize {
    sessions.clamp(1, runs.max(1))
}

/// The baseline: each member's session in turn, on the same input.
fn one_after_another(sessions: &mut [Box<dyn Session>], x: &Tensors) -> Result<(), VerifyError> {
    for s in sessions {
        s.run_only(x)?;
    }
    Ok(())
}
