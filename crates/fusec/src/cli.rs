//! The `fusec` command line: parses the arguments, runs the command,
//! and ends stderr with its error (or, with `--json`, one object). Used by
//! the `fusec` binary and by the Python package's `fusec` command.

use std::ffi::OsString;

use clap::{Parser, Subcommand, ValueEnum};

use crate::models::Inputs;
use crate::report;
use crate::{calibration, commands, speed, Failure};

#[derive(Parser)]
#[command(
    name = "fusec",
    version,
    about = "Fuse N fine-tuned models of one architecture into one static model",
    after_help = "Examples:\n  fusec inspect coco.onnx\n  fusec inspect coco.onnx --ir\n  fusec convert coco.onnx -o coco.fusec.onnx\n  fusec run coco.onnx --input input.safetensors -o out.safetensors\n  fusec run coco.onnx --input input.safetensors --runtime ort -o out.safetensors\n  fusec compare out.safetensors coco.outputs.safetensors\n  fusec fuse coco.safetensors aquarium.safetensors vehicles.safetensors -o super.onnx --explain\n  fusec fuse coco.safetensors aquarium.safetensors vehicles.safetensors -o super.mlpackage --precision fp16\n  fusec fuse rerank1/ rerank2/ rerank3/ -o rerankers.onnx --batch 32 --lowering grouped\n  fusec fuse coco.safetensors aquarium.safetensors vehicles.safetensors -o super.onnx --tune --threads 2\n  fusec verify super.onnx --members coco.safetensors aquarium.safetensors vehicles.safetensors --runtime ort\n  fusec bench coco.safetensors aquarium.safetensors vehicles.safetensors --runtime ort --threads 2 --calibrate lowering.json\n  fusec convert bad.onnx -o out.onnx --json   # errors as one JSON object"
)]
struct Cli {
    /// stderr as one JSON object (for scripts): {"notes": [...], "warnings":
    /// [...]} and, on failure, "error": {"exit_code", "kind" (input, internal,
    /// mismatch, interrupted), "message", and "file", "node", "tensor" where
    /// the error is about one}
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Runtime {
    /// tract, pure Rust, needs nothing installed
    Tract,
    /// ONNX Runtime, loaded from ORT_DYLIB_PATH
    Ort,
}

#[derive(Clone, Copy, ValueEnum)]
enum LoweringArg {
    Grouped,
    Separate,
    Regions,
}

#[derive(Clone, Copy, ValueEnum)]
enum PrecisionArg {
    Fp32,
    Fp16,
    /// ONNX: computes in fp16 throughout (for GPUs); Core ML: as fp16
    #[value(name = "fp16-compute")]
    Fp16Compute,
}

/// What every model run computes in.
#[derive(Clone, Copy, ValueEnum)]
enum ComputeArg {
    Fp32,
    Fp16,
}

#[derive(Clone, Copy, ValueEnum)]
enum Device {
    Cpu,
    Cuda,
    Coreml,
}

#[derive(clap::Args, Clone)]
struct RuntimeArgs {
    #[arg(long, value_enum, default_value = "ort")]
    runtime: Runtime,
    /// Where the models run: cpu; cuda or coreml need an ONNX Runtime
    /// library with that execution provider (an error otherwise, never a
    /// silent CPU fallback)
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    /// Intra-op threads for ONNX Runtime (spinning is always off); the
    /// default is the number of CPUs this process may use, as in the
    /// README's measurements
    #[arg(long, default_value_t = default_threads())]
    threads: usize,
    /// With --device cuda: capture each model's run as a CUDA graph and
    /// replay it (ONNX Runtime's CUDA graphs; static shapes, inputs and
    /// outputs bound on the device), members and fused model alike
    #[arg(long)]
    cuda_graph: bool,
}

/// `--threads`' default: the CPUs this process may use.
fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl RuntimeArgs {
    fn config(&self) -> fusec_verify::runtime::SessionConfig {
        session_config(self.runtime, self.device, self.threads, self.cuda_graph)
    }
}

#[derive(clap::Args, Clone)]
struct SpeedArgs {
    /// Untimed rounds first
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed rounds (0: no timing)
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// The timed rounds are split among this many sessions of each model
    /// (members and fused), each made afresh and warmed up: two sessions
    /// of one model can differ by 5-30% for their whole life, so one
    /// session each compares luck as much as models (at most --runs)
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    sessions: u64,
    /// What every model (the members and the fused model) computes in:
    /// fp16 converts each to compute in fp16 (for GPUs, --device cuda;
    /// ONNX Runtime's CPU provider lacks fp16 kernels for most ops),
    /// checked with the fp16 tolerance
    #[arg(long, value_enum, default_value = "fp32")]
    precision: ComputeArg,
}

impl SpeedArgs {
    fn args(&self) -> speed::SpeedArgs {
        speed::SpeedArgs {
            warmup: self.warmup,
            runs: self.runs,
            fp16: matches!(self.precision, ComputeArg::Fp16),
            sessions: self.sessions as usize,
        }
    }
}

fn session_config(
    runtime: Runtime,
    device: Device,
    threads: usize,
    cuda_graph: bool,
) -> fusec_verify::runtime::SessionConfig {
    fusec_verify::runtime::SessionConfig {
        runtime: match runtime {
            Runtime::Tract => fusec_verify::runtime::RuntimeKind::Tract,
            Runtime::Ort => fusec_verify::runtime::RuntimeKind::Ort,
        },
        device: match device {
            Device::Cpu => fusec_verify::runtime::Device::Cpu,
            Device::Cuda => fusec_verify::runtime::Device::Cuda,
            Device::Coreml => fusec_verify::runtime::Device::CoreMl,
        },
        threads: Some(threads),
        cuda_graph,
    }
}

/// Options for safetensors checkpoints, which carry no architecture.
#[derive(clap::Args, Clone, Default)]
struct ArchArgs {
    /// Force the architecture of a safetensors checkpoint, e.g.
    /// efficientdet_d0 or tf_efficientdet_d0 (TensorFlow "same" padding)
    #[arg(long)]
    arch: Option<String>,
    /// Input resolution of a safetensors checkpoint (default: the variant's)
    #[arg(long)]
    image_size: Option<usize>,
    /// Static batch size of a HuggingFace (BERT, RoBERTa, XLM-RoBERTa, ELECTRA) checkpoint [default: 1]
    #[arg(long)]
    batch: Option<usize>,
    /// Static sequence length of a HuggingFace (BERT, RoBERTa, XLM-RoBERTa, ELECTRA) checkpoint [default: 128]
    #[arg(long)]
    seq_len: Option<usize>,
}

impl ArchArgs {
    fn options(&self) -> fusec_frontends::arch::ArchOptions {
        fusec_frontends::arch::ArchOptions {
            arch: self.arch.clone(),
            image_size: self.image_size,
            batch: self.batch,
            seq_len: self.seq_len,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's inputs, outputs, op histogram and parameter count
    /// (ONNX), or its tensors (safetensors)
    #[command(
        after_help = "Examples:\n  fusec inspect coco.onnx\n  fusec inspect coco.onnx --ir > coco.ir\n  fusec inspect coco.safetensors\n  fusec inspect coco.safetensors --ir"
    )]
    Inspect {
        /// An .onnx model or a .safetensors checkpoint
        file: std::path::PathBuf,
        /// Print the imported graph in fusec's IR text form
        #[arg(long)]
        ir: bool,
        #[command(flatten)]
        arch: ArchArgs,
    },
    /// Import a model (ONNX, or a safetensors state_dict) into fusec's IR
    /// and export it as ONNX (opset 17)
    #[command(
        after_help = "Examples:\n  fusec convert coco.onnx -o coco.fusec.onnx\n  fusec convert coco.safetensors -o coco.onnx\n  fusec convert tf_model.safetensors --arch tf_efficientdet_d0 -o tf_model.onnx"
    )]
    Convert {
        file: std::path::PathBuf,
        #[command(flatten)]
        arch: ArchArgs,
        /// Where to write the ONNX model (written atomically)
        #[arg(short, long)]
        output: std::path::PathBuf,
    },
    /// Run a model on inputs from a safetensors file, write its outputs
    #[command(
        after_help = "Examples:\n  fusec run coco.onnx --input input.safetensors -o out.safetensors\n  fusec run coco.safetensors --input input.safetensors -o out.safetensors\n  fusec run coco.onnx --input input.safetensors --runtime ort --threads 2 -o out.safetensors"
    )]
    Run {
        /// The model (.onnx, or a .safetensors state_dict); it goes through
        /// fusec's IR and ONNX exporter
        model: std::path::PathBuf,
        #[command(flatten)]
        arch: ArchArgs,
        /// Input tensors, named as the model's inputs
        #[arg(long)]
        input: std::path::PathBuf,
        #[arg(long, value_enum, default_value = "tract")]
        runtime: Runtime,
        /// Where the model runs: cpu; cuda or coreml need an ONNX Runtime
        /// library with that execution provider (an error otherwise, never a
        /// silent CPU fallback)
        #[arg(long, value_enum, default_value = "cpu")]
        device: Device,
        /// Intra-op threads for ONNX Runtime; the default is the number of
        /// CPUs this process may use
        #[arg(long, default_value_t = default_threads())]
        threads: usize,
        /// With --runtime ort --device cuda: run as a captured CUDA graph
        #[arg(long)]
        cuda_graph: bool,
        /// What the model computes in (fp16: converted to compute in fp16,
        /// for GPUs)
        #[arg(long, value_enum, default_value = "fp32")]
        precision: ComputeArg,
        /// Where to write the outputs (safetensors, written atomically)
        #[arg(short, long)]
        output: std::path::PathBuf,
    },
    /// Fuse N members of one architecture (safetensors checkpoints and/or
    /// ONNX files) into one ONNX model or Core ML package with one input and
    /// every member's outputs, named MEMBER/OUTPUT (MEMBER is the file stem;
    /// MEMBER_OUTPUT in Core ML, whose names are identifiers)
    #[command(
        after_help = "Examples:\n  fusec fuse coco.safetensors aquarium.safetensors vehicles.safetensors -o super.onnx\n  fusec fuse coco.safetensors aquarium.safetensors vehicles.safetensors -o super.mlpackage --precision fp16\n  fusec fuse coco.onnx aquarium.onnx vehicles.onnx -o super.onnx --explain\n  fusec fuse coco.safetensors aquarium.safetensors -o super.onnx --keep-bn\n  fusec fuse rerank1/ rerank2/ rerank3/ -o rerankers.onnx --batch 8 --seq-len 128   # HuggingFace folders (BERT, RoBERTa, XLM-RoBERTa, ELECTRA)\n  fusec fuse rerank1/ rerank2/ rerank3/ -o rerankers.onnx --batch 32 --lowering grouped   # layers on a member axis\n  fusec fuse coco.safetensors aquarium.safetensors vehicles.safetensors -o super.onnx --tune --threads 2   # measured here\n  fusec fuse a.onnx b.onnx c.onnx -o super.onnx --channel-block 0   # no channel padding (not ONNX Runtime on CPU)\n  fusec run super.onnx --input input.safetensors -o out.safetensors   # outputs coco/class_out_0, ..."
    )]
    Fuse {
        /// The members, 2 or more: .safetensors state_dicts, HuggingFace
        /// checkpoint folders (config.json + model.safetensors), or .onnx files
        #[arg(required = true, num_args = 2..)]
        members: Vec<std::path::PathBuf>,
        #[command(flatten)]
        arch: ArchArgs,
        /// Where to write the fused model: *.onnx (ONNX, opset 17) or
        /// *.mlpackage (Core ML ML program, iOS 15+); written atomically
        #[arg(short, long)]
        output: std::path::PathBuf,
        /// fp16: a Core ML package stores fp16 weights and computes in fp16;
        /// an ONNX model stores fp16 weights and computes in fp32 (half the
        /// file, for CPUs). fp16-compute: an ONNX model computes in fp16
        /// throughout (for GPUs). Inputs and outputs stay fp32 either way
        #[arg(long, value_enum, default_value = "fp32")]
        precision: PrecisionArg,
        /// Print the shared trunk, the grouping and every divergence
        #[arg(long)]
        explain: bool,
        /// Keep BatchNormalization nodes (grouped) instead of folding them into convs
        #[arg(long)]
        keep_bn: bool,
        /// How the aligned layers are lowered: grouped (channel-stacked convs
        /// throughout, and what channels cannot take, a transformer's layers,
        /// stacked on a member axis as [N, B, S, H]), separate (each member
        /// keeps its layers; bit-identical ones are shared), or regions
        /// (members keep their own layers for the first --group-from fraction
        /// of the graph, in dataflow order; channel-stacked after). The
        /// default, regions from 0.25, measured fastest with ONNX Runtime on a
        /// 2-core CPU (README); `fusec bench` and --tune measure yours
        /// [default: regions]
        #[arg(long, value_enum)]
        lowering: Option<LoweringArg>,
        /// For --lowering regions: where grouping starts, as a fraction of
        /// the aligned nodes in dataflow order (0 = all grouped, 1 = none);
        /// the cut then moves, by up to 5% of the nodes, to where the least
        /// data crosses it [default: 0.25]
        #[arg(long)]
        group_from: Option<f32>,
        /// Use the lowering `fusec bench --calibrate FILE` (or `fusec fuse
        /// --tune --calibrate FILE`) measured fastest on this machine
        /// (instead of --lowering/--group-from/--keep-bn)
        #[arg(long, value_name = "FILE", conflicts_with_all = ["lowering", "group_from", "keep_bn"])]
        calibration: Option<std::path::PathBuf>,
        /// Write each member's run of per-member layers (8 or more) as a
        /// subgraph of its own (a one-step ONNX Scan), so that ONNX Runtime
        /// plans its memory as for the member alone: in one flat graph it
        /// hands each member's freed buffers to the next member's values of
        /// the same shape and frees none until the last member has run,
        /// which slows members with large activations (DenseNet). --tune
        /// measures it as one more candidate
        #[arg(long, conflicts_with_all = ["calibration", "tune"])]
        member_subgraphs: bool,
        /// Pad each member's conv channel counts to a multiple of N before
        /// fusing (zero filters; the outputs stay the same): ONNX Runtime's
        /// CPU provider runs a grouped conv in its fast blocked layout only
        /// when each group's channels are whole blocks of 16 (AVX-512) or 8
        /// (AVX2), as it pads a plain conv's itself. 0 pads nothing (for
        /// another runtime or device); Core ML output is never padded.
        /// [default: 16, or what --calibration's file says]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=fusec_passes::MAX_CHANNEL_BLOCK as i64))]
        channel_block: Option<u32>,
        /// Choose the lowering by measuring it here: plans that group some
        /// runs of layers and keep the others per member, and (on ONNX
        /// Runtime) a choice per layer from its profiled costs grouped and
        /// per member, each fused and timed against the members one after
        /// another on --runtime, --device and --threads (ONNX Runtime by
        /// default); the fastest is written (tens of seconds, a progress
        /// bar). The plan is kept in a
        /// cache (FUSEC_CACHE_DIR, else ~/.cache/fusec) under the members'
        /// structure, runtime, device and threads: other fine-tunes of the
        /// same architecture reuse it without measuring
        #[arg(long, conflicts_with_all = ["lowering", "group_from", "calibration"])]
        tune: bool,
        /// With --tune: measure even when the cache keeps a plan for these
        /// members
        #[arg(long, requires = "tune")]
        retune: bool,
        /// With --tune: timed rounds per candidate
        #[arg(long, default_value_t = 10, requires = "tune")]
        tune_runs: usize,
        /// With --tune: also write the plan chosen to FILE, for
        /// `fusec fuse --calibration FILE`
        #[arg(long, value_name = "FILE", requires = "tune")]
        calibrate: Option<std::path::PathBuf>,
        #[command(flatten)]
        rt: RuntimeArgs,
    },
    /// Check a fused model against its members: every output pair (max abs,
    /// relative L2, cosine, elements outside atol/rtol) and speed (members
    /// one after another vs fused); exits 1 when an output differs
    #[command(
        after_help = "Examples:\n  fusec verify super.onnx --members coco.safetensors aquarium.safetensors vehicles.safetensors\n  fusec verify super.onnx --members coco.onnx aquarium.onnx vehicles.onnx --input input.safetensors --runtime ort --threads 2\n  fusec verify super.onnx --members a.onnx b.onnx --images 4 --runs 0   # equivalence only"
    )]
    Verify {
        /// The fused ONNX model (from `fusec fuse`)
        model: std::path::PathBuf,
        /// The members it was fused from, in any order; names are file stems
        #[arg(long, required = true, num_args = 1..)]
        members: Vec<std::path::PathBuf>,
        #[command(flatten)]
        arch: ArchArgs,
        /// Inputs (safetensors, named as the model's inputs); default:
        /// --images deterministic random images
        #[arg(long)]
        input: Option<std::path::PathBuf>,
        /// Without --input: how many deterministic random inputs to compare
        /// on (numbered from 1 in the tables; the first is also timed)
        #[arg(long, default_value_t = 2)]
        images: usize,
        #[command(flatten)]
        rt: RuntimeArgs,
        /// Absolute tolerance [default: 1e-4, or 1e-2 for a model with fp16
        /// weights (`fusec fuse --precision fp16`)]
        #[arg(long)]
        atol: Option<f64>,
        /// Relative tolerance, per element: |fused - member| <= atol + rtol *
        /// |member| [default: 1e-4, or 1e-2 for a model with fp16 weights]
        #[arg(long)]
        rtol: Option<f64>,
        #[command(flatten)]
        speed: SpeedArgs,
    },
    /// Benchmark, in one run: the members one after another (the baseline)
    /// against the members with fusec's single-model rewrites (not fused)
    /// and fused models with several lowerings; prints speed (with a 95%
    /// interval per speedup) and output-difference tables
    #[command(
        after_help = "Examples:\n  fusec bench coco.safetensors aquarium.safetensors vehicles.safetensors --runtime ort --threads 2\n  fusec bench a.onnx b.onnx c.onnx --runtime ort --runs 50 --json-out bench.json --markdown-out bench.md\n  fusec bench coco.safetensors aquarium.safetensors vehicles.safetensors --runtime ort --calibrate lowering.json\n  fusec fuse coco.safetensors aquarium.safetensors vehicles.safetensors -o super.onnx --calibration lowering.json"
    )]
    Bench {
        /// The members, 2 or more
        #[arg(required = true, num_args = 2..)]
        members: Vec<std::path::PathBuf>,
        #[command(flatten)]
        arch: ArchArgs,
        /// Input (safetensors); default: a deterministic random image
        #[arg(long)]
        input: Option<std::path::PathBuf>,
        #[command(flatten)]
        rt: RuntimeArgs,
        #[command(flatten)]
        speed: SpeedArgs,
        /// Also write the results as JSON to this file
        #[arg(long, value_name = "FILE")]
        json_out: Option<std::path::PathBuf>,
        /// Also write the tables as Markdown to this file
        #[arg(long, value_name = "FILE")]
        markdown_out: Option<std::path::PathBuf>,
        /// Write the fastest lowering measured here to FILE, for
        /// `fusec fuse --calibration FILE` on this machine
        #[arg(long, value_name = "FILE")]
        calibrate: Option<std::path::PathBuf>,
        /// Also tune a plan first (as `fusec fuse --tune`) and add it as a
        /// row, next to the fixed lowerings
        #[arg(long)]
        tune: bool,
        /// With --tune: timed rounds per candidate
        #[arg(long, default_value_t = 10, requires = "tune")]
        tune_runs: usize,
    },
    /// Compare two tensor files tensor by tensor (max abs, relative L2,
    /// cosine); exits 1 when a shared tensor is outside the tolerances
    #[command(
        after_help = "Examples:\n  fusec compare out.safetensors coco.outputs.safetensors --max-abs 1e-4 --max-rel-l2 1e-5\n  fusec run super.onnx --input input.safetensors -o super.out.safetensors\n  fusec compare super.out.safetensors coco.outputs.safetensors --prefix coco/"
    )]
    Compare {
        /// The tensors to check
        got: std::path::PathBuf,
        /// The reference tensors
        want: std::path::PathBuf,
        /// Put PREFIX before each reference name to find its partner in GOT:
        /// `--prefix coco/` checks a fused model's outputs against member
        /// coco's reference file
        #[arg(long, default_value = "")]
        prefix: String,
        /// Largest absolute difference allowed in any element
        #[arg(long, default_value_t = 1e-4)]
        max_abs: f64,
        /// Largest relative L2 error allowed (|got - want| / |want|)
        #[arg(long, default_value_t = 1e-5)]
        max_rel_l2: f64,
    },
}

/// A failed write never leaves a partial file: exceeding a file size limit
/// is an error (not SIGXFSZ), and Ctrl-C/SIGTERM remove the temporaries
/// of any export under way before exiting.
fn install_signal_handlers() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to "ignore" has no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let _ = ctrlc::set_handler(|| {
        fusec_exporters::remove_pending();
        report::finish(None, Some(&Failure::interrupted("interrupted; any output being written was removed")));
        std::process::exit(130);
    });
}

/// Runs the command line `args` (the program name first, as
/// `std::env::args_os` gives it) and returns the exit code.
pub fn main(args: Vec<OsString>) -> u8 {
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        // Usage errors are bad input too: one JSON object under --json.
        Err(e) if e.use_stderr() && args.iter().any(|a| a == "--json") => {
            let text = e.to_string();
            let first: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let first = first.join(" ");
            let first = first.trim_start_matches("error: ");
            report::set_mode(report::Mode::Json);
            report::finish(None, Some(&Failure::input(format!("{first} (see fusec --help)"))));
            return 2;
        }
        Err(e) => {
            let _ = e.print();
            return e.exit_code().clamp(0, 255) as u8;
        }
    };
    report::set_mode(if cli.json { report::Mode::Json } else { report::Mode::Text });
    install_signal_handlers();
    let result = run(cli.command);
    match result {
        Ok(r) => {
            report::finish(Some(&r), None);
            0
        }
        Err(f) => {
            report::finish(None, Some(&f));
            f.kind.exit_code()
        }
    }
}

/// Runs one command; its report as JSON.
fn run(command: Command) -> Result<serde_json::Value, Failure> {
    use crate::report::to_json;
    match command {
        Command::Inspect { file, ir, arch } => to_json(&commands::inspect(&file, ir, &arch.options())?),
        Command::Convert { file, output, arch } => {
            commands::convert(&file, &arch.options(), &output).map(|()| serde_json::json!({}))
        }
        Command::Fuse {
            members,
            arch,
            output,
            precision,
            explain,
            keep_bn,
            lowering,
            group_from,
            calibration,
            member_subgraphs,
            channel_block,
            tune,
            retune,
            tune_runs,
            calibrate,
            rt,
        } => {
            // Nothing chosen: the default lowering, unmeasured for these members.
            let default_lowering =
                calibration.is_none() && lowering.is_none() && group_from.is_none() && !member_subgraphs;
            let mut opts = match &calibration {
                Some(path) => calibration::Calibration::load(path)?,
                None => fusec_passes::FuseOptions {
                    keep_bn,
                    lowering: match lowering.unwrap_or(LoweringArg::Regions) {
                        LoweringArg::Grouped => fusec_passes::Lowering::Grouped,
                        LoweringArg::Separate => fusec_passes::Lowering::Separate,
                        LoweringArg::Regions => fusec_passes::Lowering::Regions {
                            from: group_from.unwrap_or(fusec_passes::fuse::DEFAULT_GROUP_FROM),
                        },
                    },
                    member_subgraphs,
                    ..Default::default()
                },
            };
            if let Some(n) = channel_block {
                opts.channel_block = (n > 0).then_some(n as usize);
            }
            let precision = match precision {
                PrecisionArg::Fp32 => commands::FusePrecision::Fp32,
                PrecisionArg::Fp16 => commands::FusePrecision::Fp16,
                PrecisionArg::Fp16Compute => commands::FusePrecision::Fp16Compute,
            };
            let tune =
                tune.then(|| commands::TuneArgs { cfg: rt.config(), warmup: 2, runs: tune_runs, calibrate, retune });
            let choice = commands::LoweringChoice::new(tune.as_ref(), default_lowering);
            to_json(&commands::fuse(&members, &arch.options(), &output, explain, &opts, precision, choice)?)
        }
        Command::Compare { got, want, prefix, max_abs, max_rel_l2 } => {
            to_json(&commands::compare(&got, &want, &prefix, max_abs, max_rel_l2)?)
        }
        Command::Run { model, arch, input, runtime, device, threads, cuda_graph, precision, output } => {
            let cfg = session_config(runtime, device, threads, cuda_graph);
            let fp16 = matches!(precision, ComputeArg::Fp16);
            commands::run(&model, &arch.options(), &input, &cfg, fp16, &output).map(|()| serde_json::json!({}))
        }
        Command::Verify { model, members, arch, input, images, rt, atol, rtol, speed } => to_json(&speed::verify(
            &model,
            &members,
            &arch.options(),
            &input.map_or(Inputs::Generated(images), Inputs::File),
            &rt.config(),
            atol,
            rtol,
            &speed.args(),
        )?),
        Command::Bench { members, arch, input, rt, speed, json_out, markdown_out, calibrate, tune, tune_runs } => {
            to_json(&speed::bench(
                &members,
                &arch.options(),
                &input.map_or(Inputs::Generated(1), Inputs::File),
                &rt.config(),
                &speed.args(),
                json_out.as_deref(),
                markdown_out.as_deref(),
                calibrate.as_deref(),
                tune.then_some(tune_runs),
            )?)
        }
    }
}
