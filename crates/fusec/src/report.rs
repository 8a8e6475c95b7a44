//! What the command line tells the user on stderr: notes (what was
//! loaded, what was written), warnings, and the one error a failure ends
//! with. In text mode each is a line as it happens; with `--json` nothing
//! is printed until the end, and stderr then carries exactly one JSON
//! object: `{"notes": [...], "warnings": [...]}` on success, with an
//! `"error"` object beside them on failure.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Whether `--json` was given (read by the interrupt handler too).
static JSON: AtomicBool = AtomicBool::new(false);
static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

pub fn set_json(on: bool) {
    JSON.store(on, Ordering::Relaxed);
}

pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// A line of progress or result on stderr (`wrote super.onnx ...`).
pub fn note(msg: impl Into<String>) {
    let msg = msg.into();
    if json() {
        NOTES.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
    } else {
        eprintln!("{msg}");
    }
}

/// Something the user should know that does not stop the command.
pub fn warn(msg: impl Into<String>) {
    let msg = msg.into();
    if json() {
        WARNINGS.lock().unwrap_or_else(|e| e.into_inner()).push(msg);
    } else {
        eprintln!("warning: {msg}");
    }
}

/// A warning said once per command however often it comes up (the same
/// assumption made for every member).
pub fn warn_once(msg: &str) {
    static SAID: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if !said.iter().any(|s| s == msg) {
        said.push(msg.to_string());
        warn(msg);
    }
}

/// A progress bar on stderr; hidden with `--json` (stderr is one object).
pub fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    if json() {
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

    fn name(self) -> &'static str {
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
}

impl Failure {
    fn new(kind: Kind, message: impl Into<String>) -> Failure {
        Failure { kind, message: message.into(), file: None, node: None, tensor: None }
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
/// the one JSON object (notes, warnings, and the error if there is one).
pub fn finish(failure: Option<&Failure>) {
    if json() {
        let take = |m: &Mutex<Vec<String>>| std::mem::take(&mut *m.lock().unwrap_or_else(|e| e.into_inner()));
        let mut o = serde_json::json!({ "notes": take(&NOTES), "warnings": take(&WARNINGS) });
        if let Some(f) = failure {
            o["error"] = f.to_json();
        }
        eprintln!("{o}");
    } else if let Some(f) = failure {
        eprintln!("error: {}", f.message.replace('\n', " "));
    }
}
