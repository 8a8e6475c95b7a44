//! The `fusec` command line.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "fusec",
    version,
    about = "Fuse N fine-tuned models of one architecture into one static model",
    after_help = "Examples:\n  fusec inspect coco.onnx\n  fusec inspect coco.onnx --ir\n  fusec convert coco.onnx -o coco.fusec.onnx\n  fusec run coco.onnx --input input.safetensors -o out.safetensors\n  fusec run coco.onnx --input input.safetensors --runtime ort -o out.safetensors\n  fusec compare out.safetensors coco.outputs.safetensors\n  fusec fuse coco.safetensors aquarium.safetensors vehicles.safetensors -o super.onnx --explain"
)]
struct Cli {
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
}

#[derive(Clone, Copy, ValueEnum)]
enum Device {
    Cpu,
    Cuda,
    Coreml,
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
}

impl ArchArgs {
    fn options(&self) -> fusec_frontends::arch::ArchOptions {
        fusec_frontends::arch::ArchOptions { arch: self.arch.clone(), image_size: self.image_size }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Show a model's inputs, outputs, op histogram and parameter count
    /// (ONNX), or its tensors (safetensors)
    #[command(after_help = "Examples:\n  fusec inspect coco.onnx\n  fusec inspect coco.onnx --ir > coco.ir\n  fusec inspect coco.safetensors\n  fusec inspect coco.safetensors --ir")]
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
    #[command(after_help = "Examples:\n  fusec convert coco.onnx -o coco.fusec.onnx\n  fusec convert coco.safetensors -o coco.onnx\n  fusec convert tf_model.safetensors --arch tf_efficientdet_d0 -o tf_model.onnx")]
    Convert {
        file: std::path::PathBuf,
        #[command(flatten)]
        arch: ArchArgs,
        /// Where to write the ONNX model (written atomically)
        #[arg(short, long)]
        output: std::path::PathBuf,
    },
    /// Run a model on inputs from a safetensors file, write its outputs
    #[command(after_help = "Examples:\n  fusec run coco.onnx --input input.safetensors -o out.safetensors\n  fusec run coco.safetensors --input input.safetensors -o out.safetensors\n  fusec run coco.onnx --input input.safetensors --runtime ort --threads 2 -o out.safetensors")]
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
        #[arg(long, value_enum, default_value = "cpu")]
        device: Device,
        /// Intra-op threads (ONNX Runtime)
        #[arg(long)]
        threads: Option<usize>,
        /// Where to write the outputs (safetensors, written atomically)
        #[arg(short, long)]
        output: std::path::PathBuf,
    },
    /// Fuse N members of one architecture (safetensors checkpoints and/or
    /// ONNX files) into one ONNX model with one input and every member's
    /// outputs, named MEMBER/OUTPUT (MEMBER is the file stem)
    #[command(after_help = "Examples:\n  fusec fuse coco.safetensors aquarium.safetensors vehicles.safetensors -o super.onnx\n  fusec fuse coco.onnx aquarium.onnx vehicles.onnx -o super.onnx --explain\n  fusec fuse coco.safetensors aquarium.safetensors -o super.onnx --keep-bn\n  fusec run super.onnx --input input.safetensors -o out.safetensors   # outputs coco/class_out_0, ...")]
    Fuse {
        /// The members, 2 or more: .safetensors state_dicts or .onnx files
        #[arg(required = true, num_args = 2..)]
        members: Vec<std::path::PathBuf>,
        #[command(flatten)]
        arch: ArchArgs,
        /// Where to write the fused ONNX model (written atomically)
        #[arg(short, long)]
        output: std::path::PathBuf,
        /// Print the shared trunk, the grouping and every divergence
        #[arg(long)]
        explain: bool,
        /// Keep BatchNormalization nodes (grouped) instead of folding them into convs
        #[arg(long)]
        keep_bn: bool,
        /// How the aligned layers are lowered: grouped (channel-stacked convs)
        /// or separate (each member keeps its layers; bit-identical ones are shared)
        #[arg(long, value_enum, default_value = "grouped")]
        lowering: LoweringArg,
    },
    /// Compare two tensor files tensor by tensor (max abs, relative L2,
    /// cosine); exits 1 when a shared tensor is outside the tolerances
    #[command(after_help = "Example:\n  fusec compare out.safetensors coco.outputs.safetensors --max-abs 1e-4 --max-rel-l2 1e-5")]
    Compare {
        /// The tensors to check
        got: std::path::PathBuf,
        /// The reference tensors
        want: std::path::PathBuf,
        #[arg(long, default_value_t = 1e-4)]
        max_abs: f64,
        #[arg(long, default_value_t = 1e-5)]
        max_rel_l2: f64,
    },
}

/// A failure, classified for the exit code: 2 when the input or the
/// request must change, 1 when fusec or a runtime failed.
pub enum Failure {
    Input(String),
    Internal(String),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect { file, ir, arch } => commands::inspect(&file, ir, &arch.options()),
        Command::Convert { file, output, arch } => commands::convert(&file, &arch.options(), &output),
        Command::Fuse { members, arch, output, explain, keep_bn, lowering } => {
            let opts = fusec_passes::FuseOptions {
                keep_bn,
                lowering: match lowering {
                    LoweringArg::Grouped => fusec_passes::Lowering::Grouped,
                    LoweringArg::Separate => fusec_passes::Lowering::Separate,
                },
            };
            commands::fuse(&members, &arch.options(), &output, explain, &opts)
        }
        Command::Compare { got, want, max_abs, max_rel_l2 } => commands::compare(&got, &want, max_abs, max_rel_l2),
        Command::Run { model, arch, input, runtime, device, threads, output } => {
            let cfg = fusec_verify::runtime::SessionConfig {
                runtime: match runtime {
                    Runtime::Tract => fusec_verify::runtime::RuntimeKind::Tract,
                    Runtime::Ort => fusec_verify::runtime::RuntimeKind::Ort,
                },
                device: match device {
                    Device::Cpu => fusec_verify::runtime::Device::Cpu,
                    Device::Cuda => fusec_verify::runtime::Device::Cuda,
                    Device::Coreml => fusec_verify::runtime::Device::CoreMl,
                },
                threads,
            };
            commands::run(&model, &arch.options(), &input, &cfg, &output)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let (code, msg) = match f {
                Failure::Input(m) => (2, m),
                Failure::Internal(m) => (1, m),
            };
            eprintln!("error: {}", msg.replace('\n', " "));
            ExitCode::from(code)
        }
    }
}
