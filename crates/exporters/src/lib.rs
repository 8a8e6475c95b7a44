//! fusec exporters: [`fuse_ir::Graph`] in, deployable model files out.
//!
//! - [`onnx`]: ONNX, opset 17, IR version 8.
//! - [`coreml`]: Core ML ML program packages (`.mlpackage`), fp32 or fp16.
//! - [`onnx_builder`]: small ONNX models in any opset, for fixtures and tests.
//!
//! Files are written atomically ([`write_atomic`]): a temporary file in the
//! target's directory, renamed over the target only once complete, so a
//! failed export never leaves a partial file or breaks an existing one.

pub mod coreml;
pub mod onnx;
pub mod onnx_builder;
mod onnx_proto;
mod onnx_subgraphs;

use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The graph holds something the format cannot express.
    #[error("{0}")]
    Unsupported(String),
    /// The target format has no mapping for something in the input model
    /// (a Core ML op, a dtype); the message names the node or tensor.
    #[error("{0}")]
    Unmapped(String),
    #[error("{}: {msg}", path.display())]
    Io { path: PathBuf, msg: String },
}

/// Temporary files and directories being written, removed by
/// [`remove_pending`] when the process is interrupted.
static PENDING: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Registers `path` as pending until the guard drops: an interrupted
/// command removes it ([`remove_pending`]). For exports, and for any
/// temporary file or folder a command fills with gigabytes.
pub struct Pending(PathBuf);

impl Pending {
    pub fn new(path: &Path) -> Pending {
        PENDING.lock().unwrap_or_else(|e| e.into_inner()).push(path.to_path_buf());
        Pending(path.to_path_buf())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        PENDING.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| p != &self.0);
    }
}

/// Removes every temporary file or directory an export is writing (for a
/// signal handler: the CLI calls it on Ctrl-C/SIGTERM before exiting, so an
/// interrupted export leaves neither a partial output nor its temporary).
pub fn remove_pending() {
    let pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    for p in pending.iter() {
        if p.is_dir() {
            let _ = std::fs::remove_dir_all(p);
        } else {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// The directory `path` is in (`.` for a bare file name): where its
/// temporary file or directory is made, so the final rename stays on one
/// filesystem.
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// A builder for the temporary file or directory an output is written to
/// before the rename: created with `mode` less the umask (0666 for files,
/// 0777 for directories, as any tool creates them), so the output, which
/// keeps its temporary's mode, can be read by whoever may read the
/// directory (a temporary file's own default, 0600, would survive the
/// rename).
pub(crate) fn temp_builder(mode: u32) -> tempfile::Builder<'static, 'static> {
    let mut b = tempfile::Builder::new();
    b.prefix(".fusec-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(mode));
    }
    #[cfg(not(unix))]
    let _ = mode;
    b
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    write_atomic_with(path, |w| w.write_all(bytes).map(|_| bytes.len() as u64)).map(|_| ())
}

/// Like [`write_atomic`], with the content produced by `write` (buffered);
/// returns what `write` returns (the byte count). On any error the
/// temporary file is removed and `path` is left as it was.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<u64>,
) -> Result<u64, ExportError> {
    let io = |e: std::io::Error| ExportError::Io { path: path.to_path_buf(), msg: e.to_string() };
    let dir = parent_dir(path);
    let tmp = temp_builder(0o666).tempfile_in(dir).map_err(io)?;
    let _pending = Pending::new(tmp.path());
    let mut buf = std::io::BufWriter::with_capacity(1 << 20, tmp);
    let n = write(&mut buf).map_err(io)?;
    let tmp = buf.into_inner().map_err(|e| io(e.into_error()))?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(n)
}

/// Like [`write_atomic_with`] for two files written together (a model
/// and the weights beside it): `write` fills both; both are synced, then
/// `second` is renamed into place and `first` after it, so a new `first`
/// never names a `second` that is not there. On an error before the
/// renames both temporaries are removed and both paths are left as they
/// were; should the second rename fail, the new `second` stays beside the
/// old `first` (the error says which file).
pub fn write_atomic_pair(
    first: &Path,
    second: &Path,
    write: impl FnOnce(&mut dyn Write, &mut dyn Write) -> std::io::Result<u64>,
) -> Result<u64, ExportError> {
    let io = |p: &Path, e: std::io::Error| ExportError::Io { path: p.to_path_buf(), msg: e.to_string() };
    let a = temp_builder(0o666).tempfile_in(parent_dir(first)).map_err(|e| io(first, e))?;
    let _pending_a = Pending::new(a.path());
    let b = temp_builder(0o666).tempfile_in(parent_dir(second)).map_err(|e| io(second, e))?;
    let _pending_b = Pending::new(b.path());
    let mut wa = std::io::BufWriter::with_capacity(1 << 20, a);
    // A write error names the file it happened in (a full disk is most
    // likely met in the big one).
    let second_failed = std::cell::Cell::new(false);
    let mut wb = Flagged { w: std::io::BufWriter::with_capacity(1 << 20, b), failed: &second_failed };
    let n = write(&mut wa, &mut wb).map_err(|e| io(if second_failed.get() { second } else { first }, e))?;
    let wb = wb.w;
    let a = wa.into_inner().map_err(|e| io(first, e.into_error()))?;
    let b = wb.into_inner().map_err(|e| io(second, e.into_error()))?;
    a.as_file().sync_all().map_err(|e| io(first, e))?;
    b.as_file().sync_all().map_err(|e| io(second, e))?;
    b.persist(second).map_err(|e| io(second, e.error))?;
    a.persist(first).map_err(|e| io(first, e.error))?;
    Ok(n)
}

/// A writer that remembers whether one of its writes failed.
struct Flagged<'a, W: Write> {
    w: W,
    failed: &'a std::cell::Cell<bool>,
}

impl<W: Write> Write for Flagged<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.w.write(buf).inspect_err(|_| self.failed.set(true))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush().inspect_err(|_| self.failed.set(true))
    }
}

#[cfg(test)]
mod tests {
    /// Outputs get the usual mode (0666 less the umask), not a temporary
    /// file's 0600, so a model fused by one user can be served by another.
    #[cfg(unix)]
    #[test]
    fn written_files_get_the_usual_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.bin");
        super::write_atomic(&p, b"x").unwrap();
        // SAFETY: umask only swaps the process's mask; restored at once.
        let umask = unsafe {
            let m = libc_umask(0);
            libc_umask(m);
            m
        };
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o666 & !umask);
    }

    extern "C" {
        #[link_name = "umask"]
        fn libc_umask(mask: u32) -> u32;
    }
}
