//! What the command line tells the user on stderr: notes (what was
//! loaded, what was written), warnings, and the one error a failure ends
//! with. In text mode each is a line as it happens; with `--json` nothing
//! is printed until the end, and stderr then carries exactly one JSON
//! object: `{"notes": [...], "warnings": [...], "report": {...}}` on
//! success (the command's report, as the Python API returns it), with an
//! `"error"` object beside them on failure. Called from Python (the
//! `fusec` module), notes and warnings are kept for the caller and
//! nothing goes to stdout.
//!
//! Also what every command shares to say what happened: the conversions
//! of each stage's error into a [`Failure`] (its kind, file, node and
//! tensor), a report as JSON ([`to_json`]), command output on stdout
//! (`emit`), and how a runtime configuration is named (`describe_cfg`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use fusec_exporters::ExportError;
use fusec_frontends::LoadError;
use fusec_verify::runtime::SessionConfig;
use fusec_verify::VerifyError;

/// How messages reach the user (read by the interrupt handler too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Lines on stderr as they happen, tables on stdout.
    Text,
    /// `--json`: one object on stderr at the end, tables on stdout.
    Json,
    /// A library call (the Python API): notes and warnings kept for the
    /// caller ([`take_messages`]), nothing on stdout, progress bars only
    /// if `progress`.
    Library { progress: bool },
}

static MODE: AtomicU8 = AtomicU8::new(0);
static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn set_mode(mode: Mode) {
    let m = match mode {
        Mode::Text => 0,
        Mode::Json => 1,
        Mode::Library { progress: false } => 2,
        Mode::Library { progress: true } => 3,
    };
    MODE.store(m, Ordering::Relaxed);
}

pub fn mode() -> Mode {
    match MODE.load(Ordering::Relaxed) {
        0 => Mode::Text,
        1 => Mode::Json,
        m => Mode::Library { progress: m == 3 },
    }
}

/// Whether messages are kept rather than printed as they happen.
fn kept() -> bool {
    mode() != Mode::Text
}

/// Whether command output (tables) goes to stdout.
pub fn stdout_wanted() -> bool {
    !matches!(mode(), Mode::Library { .. })
}

/// The notes and warnings kept so far (emptied).
pub fn take_messages() -> (Vec<String>, Vec<String>) {
    let take = |m: &Mutex<Vec<String>>| std::mem::take(&mut *m.lock().unwrap_or_else(|e| e.into_inner()));
    (take(&NOTES), take(&WARNINGS))
}

/// A line of progress or result on stderr (`wrote super.onnx ...`).
pub fn note(msg: impl Into<String>) {
    let msg = msg.into();
    if kept() {
        NOTES.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
    } else {
        eprintln!("{msg}");
    }
}

/// Something the user should know that does not stop the command.
pub fn warn(msg: impl Into<String>) {
    let msg = msg.into();
    if kept() {
        WARNINGS.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
    } else {
        eprintln!("warning: {msg}");
    }
}

/// A warning said once per command however often it comes up (the same
/// assumption made for every member).
pub fn warn_once(msg: &str) {
    let said = match mode() {
        Mode::Text => {
            let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
            let before = said.iter().any(|s| s == msg);
            if !before {
                said.push(msg.to_string());
            }
            before
        }
        // Kept messages are per command (emptied by take_messages).
        _ => WARNINGS.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|s| s == msg),
    };
    if !said {
        warn(msg);
    }
}

/// What `warn_once` said in text mode.
static SAID: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A progress bar on stderr; hidden with `--json` (stderr is one object)
/// and in library calls made with `progress=False`.
pub fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    if matches!(mode(), Mode::Json | Mode::Library { progress: false }) {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} rounds, {elapsed}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// How a command failed; decides the exit code and the JSON `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The input or the request must change (exit 2).
    Input,
    /// fusec or a runtime failed (exit 1).
    Internal,
    /// A checked output differs beyond the tolerances (exit 1).
    Mismatch,
    /// Ctrl-C or SIGTERM (exit 130).
    Interrupted,
}

impl Kind {
    pub fn exit_code(self) -> u8 {
        match self {
            Kind::Input => 2,
            Kind::Internal | Kind::Mismatch => 1,
            Kind::Interrupted => 130,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Input => "input",
            Kind::Internal => "internal",
            Kind::Mismatch => "mismatch",
            Kind::Interrupted => "interrupted",
        }
    }
}

/// A failure with what it is about, as typed fields: the file, and inside
/// it the node or tensor (the message names them too, for people).
#[derive(Debug)]
pub struct Failure {
    pub kind: Kind,
    pub message: String,
    pub file: Option<PathBuf>,
    pub node: Option<String>,
    pub tensor: Option<String>,
    /// The command's report as far as it got (verify's, when outputs
    /// differ: which ones and by how much).
    pub report: Option<Box<serde_json::Value>>,
}

impl Failure {
    fn new(kind: Kind, message: impl Into<String>) -> Failure {
        Failure { kind, message: message.into(), file: None, node: None, tensor: None, report: None }
    }

    pub fn input(message: impl Into<String>) -> Failure {
        Failure::new(Kind::Input, message)
    }

    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::new(Kind::Internal, message)
    }

    pub fn mismatch(message: impl Into<String>) -> Failure {
        Failure::new(Kind::Mismatch, message)
    }

    pub fn interrupted(message: impl Into<String>) -> Failure {
        Failure::new(Kind::Interrupted, message)
    }

    /// The file the failure is about (kept if already set: the innermost
    /// error knows best).
    pub fn in_file(mut self, file: &Path) -> Failure {
        self.file.get_or_insert_with(|| file.to_path_buf());
        self
    }

    pub fn at_node(mut self, node: Option<String>) -> Failure {
        if self.node.is_none() {
            self.node = node;
        }
        self
    }

    pub fn at_tensor(mut self, tensor: Option<String>) -> Failure {
        if self.tensor.is_none() {
            self.tensor = tensor;
        }
        self
    }

    /// The command's report, kept with the failure.
    pub fn with_report(mut self, report: serde_json::Value) -> Failure {
        self.report = Some(Box::new(report));
        self
    }

    /// The `"error"` object of `--json`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut e = serde_json::json!({
            "exit_code": self.kind.exit_code(),
            "kind": self.kind.name(),
            "message": self.message.replace('\n', " "),
        });
        if let Some(f) = &self.file {
            e["file"] = f.display().to_string().into();
        }
        if let Some(n) = &self.node {
            e["node"] = n.clone().into();
        }
        if let Some(t) = &self.tensor {
            e["tensor"] = t.clone().into();
        }
        e
    }
}

/// Ends the command's stderr: the error line in text mode; with `--json`,
/// the one JSON object (notes, warnings, the command's report, and the
/// error if there is one).
pub fn finish(report: Option<&serde_json::Value>, failure: Option<&Failure>) {
    if mode() == Mode::Json {
        let (notes, warnings) = take_messages();
        let mut o = serde_json::json!({ "notes": notes, "warnings": warnings });
        if let Some(r) = report.or(failure.and_then(|f| f.report.as_deref())) {
            o["report"] = r.clone();
        }
        if let Some(f) = failure {
            o["error"] = f.to_json();
        }
        eprintln!("{o}");
    } else if let Some(f) = failure {
        eprintln!("error: {}", f.message.replace('\n', " "));
    }
}

impl From<LoadError> for Failure {
    fn from(e: LoadError) -> Self {
        Failure::input(e.to_string()).in_file(&e.file).at_node(e.node).at_tensor(e.tensor)
    }
}

impl From<ExportError> for Failure {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::Io { ref path, .. } => Failure::input(e.to_string()).in_file(path),
            ExportError::Unsupported(m) => Failure::internal(format!("export failed: {m}")),
            ExportError::Unmapped(m) => Failure::input(format!("Core ML export: {m}")),
        }
    }
}

impl From<fusec_passes::PassError> for Failure {
    fn from(e: fusec_passes::PassError) -> Self {
        let f = match e {
            fusec_passes::PassError::Incompatible(_) => Failure::input(e.to_string()),
            _ => Failure::internal(e.to_string()),
        };
        let node = e.ir().and_then(|i| i.node()).map(str::to_string);
        let tensor = e.ir().and_then(|i| i.tensor()).map(str::to_string);
        f.at_node(node).at_tensor(tensor)
    }
}

impl From<VerifyError> for Failure {
    fn from(e: VerifyError) -> Self {
        match e {
            VerifyError::Input(_) | VerifyError::Unavailable(_) => Failure::input(e.to_string()),
            VerifyError::Runtime(_) => Failure::internal(e.to_string()),
        }
    }
}

/// A report as JSON (for `--json`, and the Python API).
pub fn to_json(report: &impl serde::Serialize) -> Result<serde_json::Value, Failure> {
    serde_json::to_value(report).map_err(|e| Failure::internal(format!("report to JSON: {e}")))
}

/// Writes command output to stdout; a reader that went away (`| head`) is
/// not an error.
pub(crate) fn emit(text: &str) -> Result<(), Failure> {
    if !crate::report::stdout_wanted() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::internal(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// Where models run, as reports name it: `ort (cpu, 2 threads)`.
pub(crate) fn describe_cfg(cfg: &SessionConfig) -> String {
    let threads = cfg.threads.map(|t| format!(", {t} threads")).unwrap_or_default();
    format!("{} ({}{threads})", cfg.runtime, cfg.device)
}
