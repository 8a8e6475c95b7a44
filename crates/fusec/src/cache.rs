//! Where `--tune` keeps what it measured (its plans, the profiled costs
//! per node), and what names the runtime in their keys.

use std::path::PathBuf;

use fusec_verify::runtime::SessionConfig;

/// The file tuned plans are kept in: `tune.json` in `FUSEC_CACHE_DIR`,
/// else in `$XDG_CACHE_HOME/fusec`, else in `~/.cache/fusec`; none when
/// none of these is set.
pub(crate) fn cache_file() -> Option<PathBuf> {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = var("FUSEC_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("fusec")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("fusec")))?;
    Some(dir.join("tune.json"))
}

/// The runtime's library as keys name it: for ONNX Runtime the file
/// loaded, `tract` for tract.
pub(crate) fn runtime_library(cfg: &SessionConfig) -> String {
    match cfg.runtime {
        fusec_verify::runtime::RuntimeKind::Ort => {
            fusec_verify::runtime::ort_library().map(|p| p.display().to_string()).unwrap_or_default()
        }
        fusec_verify::runtime::RuntimeKind::Tract => "tract".into(),
    }
}
