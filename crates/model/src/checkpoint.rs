//! Model checkpoints: every parameter of a `VarMap` in one safetensors file,
//! with the run's config hash in its metadata, written atomically. Loading
//! can take a subset by name prefix (`base.`), which is how a frozen
//! backbone is loaded from a run trained without retention.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;

const FORMAT: &str = "retbench-checkpoint";
const VERSION: &str = "1";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn file_error(path: &Path, message: impl std::fmt::Display) -> CheckpointError {
    CheckpointError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Writes every parameter of `varmap` to `path`, with `config_hash` (the run
/// that trained it) in the metadata.
pub fn save(varmap: &VarMap, path: &Path, config_hash: &str) -> Result<(), CheckpointError> {
    let tensors: Vec<(String, Tensor)> = {
        let data = varmap.data().lock().expect("varmap lock");
        let mut named: Vec<(String, Tensor)> = data
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    };
    let metadata: HashMap<String, String> = [
        ("format".to_string(), FORMAT.to_string()),
        ("version".to_string(), VERSION.to_string()),
        ("config_hash".to_string(), config_hash.to_string()),
    ]
    .into();
    let bytes =
        safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
            .map_err(|e| file_error(path, format!("serializing checkpoint: {e}")))?;
    retbench_core::fsutil::write_atomic(path, &bytes).map_err(|e| file_error(path, e))
}

/// Sets every parameter of `varmap` whose name starts with `prefix` from the
/// checkpoint at `path`; returns how many were set. A parameter the file
/// lacks, or holds with another shape, is an error naming the file and the
/// parameter (nothing is set then).
pub fn load_into(varmap: &VarMap, path: &Path, prefix: &str) -> Result<usize, CheckpointError> {
    let updates = matching(varmap, path, prefix)?;
    for (var, t) in &updates {
        var.set(t)?;
    }
    Ok(updates.len())
}

/// Checks that the checkpoint at `path` could set every parameter of
/// `varmap` under `prefix` (what [`load_into`] would refuse), setting none.
pub fn check(varmap: &VarMap, path: &Path, prefix: &str) -> Result<usize, CheckpointError> {
    Ok(matching(varmap, path, prefix)?.len())
}

/// The (parameter, stored value) pairs a load would set.
fn matching(
    varmap: &VarMap,
    path: &Path,
    prefix: &str,
) -> Result<Vec<(candle_core::Var, candle_core::Tensor)>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| file_error(path, format!("not a safetensors file: {e}")))?;
    let format = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("format").cloned());
    if format.as_deref() != Some(FORMAT) {
        return Err(file_error(path, "not a retbench model checkpoint"));
    }
    let stored = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| file_error(path, e))?;
    let data = varmap.data().lock().expect("varmap lock");
    let mut updates = Vec::new();
    for (name, var) in data.iter().filter(|(n, _)| n.starts_with(prefix)) {
        let t = stored
            .get(name)
            .ok_or_else(|| file_error(path, format!("no parameter {name}")))?;
        if t.shape() != var.shape() {
            return Err(file_error(
                path,
                format!(
                    "parameter {name} has shape {:?}, the model wants {:?}",
                    t.dims(),
                    var.dims()
                ),
            ));
        }
        updates.push((var.clone(), t.to_dtype(var.dtype())?));
    }
    Ok(updates)
}
