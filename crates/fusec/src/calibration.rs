//! `fusec bench --calibrate FILE` writes the fastest fp32 lowering measured
//! on this machine; `fusec fuse --calibration FILE` reads it back.

use std::path::Path;

use fusec_passes::{FuseOptions, Lowering};

use crate::Failure;

/// The fastest fp32 lowering `fusec bench --calibrate FILE` measured on
/// this machine, for `fusec fuse --calibration FILE`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    /// The bench row it came from, e.g. `fused, regions from 0.25`.
    pub config: String,
    /// `grouped`, `separate`, `regions`, `plan` or `assigned`.
    pub lowering: String,
    /// For `regions`: where grouping starts.
    pub group_from: f32,
    /// For `plan` (`fusec fuse --tune`): the grouped runs of node groups,
    /// e.g. `00111111` (1 = grouped); for `assigned` (`--tune`'s choice
    /// from costs): one digit per node group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    pub keep_bn: bool,
    pub split_depthwise: bool,
    pub split_pointwise: bool,
    /// Linear layers on the member axis per member (absent in files
    /// written before it existed: false).
    #[serde(default)]
    pub split_linear: bool,
    /// Member-axis stacking where the lowering groups (absent in files
    /// written before it existed: false, so they fuse as they did).
    #[serde(default)]
    pub member_axis: bool,
    /// Each member's block written as a subgraph of its own
    /// (`--member-subgraphs`; absent in older files: false).
    #[serde(default)]
    pub member_subgraphs: bool,
    /// Conv channel counts padded to a multiple of this before fusing (0:
    /// none; absent in files written before padding existed: the default,
    /// 16).
    #[serde(default = "default_channel_block")]
    pub channel_block: usize,
    /// What was measured: speedup over the members one after another (p50),
    /// on this runtime and device.
    pub speedup_p50: f64,
    pub device: String,
    pub members: Vec<String>,
}

fn default_channel_block() -> usize {
    FuseOptions::default().channel_block.unwrap_or(0)
}

impl Calibration {
    /// The bench row `config` (its name) measured with `opts`.
    pub(crate) fn new(
        config: &str,
        opts: &FuseOptions,
        speedup_p50: f64,
        device: &str,
        members: &[String],
    ) -> Calibration {
        let (lowering, group_from) = match opts.lowering {
            _ if opts.assignment.is_some() => ("assigned", 0.0),
            Lowering::Grouped => ("grouped", 0.0),
            Lowering::Separate => ("separate", 1.0),
            Lowering::Regions { from } => ("regions", from),
            Lowering::Plan { .. } => ("plan", 0.0),
        };
        let plan = match (&opts.assignment, opts.lowering) {
            (Some(a), _) => Some(a.iter().map(|on| if *on { '1' } else { '0' }).collect()),
            (None, Lowering::Plan { stacked, chunks }) => Some(Lowering::plan_digits(stacked, chunks)),
            _ => None,
        };
        Calibration {
            config: config.to_string(),
            lowering: lowering.into(),
            group_from,
            plan,
            keep_bn: opts.keep_bn,
            split_depthwise: opts.split_depthwise,
            split_pointwise: opts.split_pointwise,
            split_linear: opts.split_linear,
            member_axis: opts.member_axis,
            member_subgraphs: opts.member_subgraphs,
            channel_block: opts.channel_block.unwrap_or(0),
            speedup_p50,
            device: device.into(),
            members: members.to_vec(),
        }
    }

    /// The lowering fields of `opts` as JSON (a fused model's
    /// `fusec.lowering` metadata: `scripts/bench-torch.py --calibrate` reads
    /// them back into a calibration file).
    pub fn lowering_json(opts: &FuseOptions) -> serde_json::Value {
        let c = Calibration::new("", opts, 0.0, "", &[]);
        serde_json::json!({
            "lowering": c.lowering,
            "group_from": c.group_from,
            "plan": c.plan,
            "keep_bn": c.keep_bn,
            "split_depthwise": c.split_depthwise,
            "split_pointwise": c.split_pointwise,
            "split_linear": c.split_linear,
            "member_axis": c.member_axis,
            "member_subgraphs": c.member_subgraphs,
            "channel_block": c.channel_block,
        })
    }

    /// Writes the file `fusec fuse --calibration FILE` reads (atomically).
    pub(crate) fn write(&self, path: &Path) -> Result<(), Failure> {
        let j = serde_json::to_vec_pretty(self).map_err(|e| Failure::internal(e.to_string()))?;
        Ok(fusec_exporters::write_atomic(path, &j)?)
    }

    /// The fuse options of a calibration file (what was measured goes to
    /// stderr); errors name the file.
    pub fn load(path: &Path) -> Result<FuseOptions, Failure> {
        let bad = |m: String| Failure::input(format!("{}: {m}", path.display())).in_file(path);
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let c: Calibration =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a fusec bench --calibrate file: {e}")))?;
        let opts = c.options().map_err(bad)?;
        crate::report::note(format!(
            "{}: lowering `{}` ({:.2}x measured on {})",
            path.display(),
            c.config,
            c.speedup_p50,
            c.device
        ));
        Ok(opts)
    }

    fn options(&self) -> Result<FuseOptions, String> {
        if self.channel_block > fusec_passes::MAX_CHANNEL_BLOCK {
            return Err(format!(
                "channel_block is 0 (no padding) to {}, not {}",
                fusec_passes::MAX_CHANNEL_BLOCK,
                self.channel_block
            ));
        }
        let mut assignment = None;
        let lowering = match self.lowering.as_str() {
            "grouped" => Lowering::Grouped,
            "separate" => Lowering::Separate,
            "regions" if (0.0..=1.0).contains(&self.group_from) => Lowering::Regions { from: self.group_from },
            "plan" => Lowering::parse_plan(self.plan.as_deref().unwrap_or_default())?,
            "assigned" => {
                let digits = self.plan.as_deref().unwrap_or_default();
                if !digits.chars().all(|c| c == '0' || c == '1') {
                    return Err(format!("an assignment is digits 0 or 1, one per node group, not `{digits}`"));
                }
                assignment = Some(digits.chars().map(|c| c == '1').collect());
                Lowering::Grouped
            }
            other => return Err(format!("unknown lowering `{other}` (group_from {})", self.group_from)),
        };
        Ok(FuseOptions {
            keep_bn: self.keep_bn,
            lowering,
            split_depthwise: self.split_depthwise,
            split_pointwise: self.split_pointwise,
            split_linear: self.split_linear,
            member_axis: self.member_axis,
            assignment,
            member_subgraphs: self.member_subgraphs,
            // Set by the output format, not the calibration.
            max_rank: None,
            channel_block: (self.channel_block > 0).then_some(self.channel_block),
        })
    }
}
