//! Finding a model and reading its weights: a local directory in Hugging Face layout, or a hub
//! id resolved through the Hugging Face cache (downloaded when online); single or sharded
//! safetensors, memory-mapped; an optional dtype override. (Names and shapes are checked as the
//! model takes its tensors: [`crate::weights::WeightMap`].)

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use ferrox::{self as fx, Array, Dtype};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::Cache;
use serde_json::Value;

use crate::error::{Error, Result};

/// Files a model directory may need; everything else in a hub repo (other formats, images,
/// READMEs) is not downloaded.
fn wanted(name: &str) -> bool {
    name.ends_with(".json")
        || name.ends_with(".safetensors")
        || name.ends_with(".jinja")
        || name.ends_with(".txt")
        || name == "tokenizer.model"
}

/// Resolves `model` to a local directory: an existing directory as it is, otherwise a hub id
/// (`owner/name`) looked up in the Hugging Face cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`). Unless `HF_HUB_OFFLINE` is set, missing files are downloaded
/// with a progress bar; offline, or when the hub cannot be reached, a complete cached snapshot
/// is used.
pub fn resolve_model_dir(model: &str) -> Result<PathBuf> {
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if path.exists() {
        return Err(Error::file(path, "is a file but not a GGUF file; give the model's directory (with config.json and *.safetensors) or a .gguf file"));
    }
    let looks_like_id = model.split('/').count() == 2
        && !model.starts_with(['.', '/', '~'])
        && model.split('/').all(|p| !p.is_empty() && p != "..");
    if !looks_like_id {
        return Err(Error::file(path, "no such directory (and not a Hugging Face hub id like owner/name)"));
    }
    let cache = match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) => Cache::new(dir.into()),
        None => Cache::from_env(),
    };
    let cached = || cache.model(model.to_string()).get("config.json").and_then(|p| p.parent().map(Path::to_path_buf));
    if offline() {
        return cached().ok_or_else(|| {
            Error::Hub(format!(
                "{model} is not in the Hugging Face cache at {} and HF_HUB_OFFLINE is set",
                cache.path().display()
            ))
        });
    }
    match download(&cache, model) {
        Ok(dir) => Ok(dir),
        Err(e) => cached().ok_or(e),
    }
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

fn download(cache: &Cache, model: &str) -> Result<PathBuf> {
    let hub_err = |e: hf_hub::api::sync::ApiError| Error::Hub(format!("{model}: {e}"));
    let api = ApiBuilder::from_cache(cache.clone()).with_progress(true).build().map_err(hub_err)?;
    let repo = api.model(model.to_string());
    let info = repo.info().map_err(hub_err)?;
    let mut config = None;
    for file in info.siblings.iter().map(|s| s.rfilename.as_str()).filter(|n| wanted(n)) {
        let local = repo.get(file).map_err(hub_err)?;
        if file == "config.json" {
            config = local.parent().map(Path::to_path_buf);
        }
    }
    config.ok_or_else(|| Error::Hub(format!("{model} has no config.json; is it a model repository?")))
}

/// The safetensors files holding a model's weights: those named by
/// `model.safetensors.index.json` if present, else `model.safetensors`, else every
/// `*.safetensors` in the directory (sorted).
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::file(&index, e))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| Error::config(&index, format!("not valid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::config(&index, "no \"weight_map\" object"))?;
        let mut files = BTreeSet::new();
        for (name, file) in map {
            let file =
                file.as_str().ok_or_else(|| Error::config(&index, format!("weight_map[{name:?}] is not a string")))?;
            files.insert(dir.join(file));
        }
        return Ok(files.into_iter().collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::file(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::file(dir, "no *.safetensors weights in this directory"));
    }
    Ok(files)
}

/// Loads every tensor of the model in `dir` (memory-mapped, lazy). With `dtype`, floating-point
/// tensors are cast to it (lazily, as they are first used).
pub fn load_weights(dir: &Path, dtype: Option<Dtype>) -> Result<HashMap<String, Array>> {
    let mut all = HashMap::new();
    for file in weight_files(dir)? {
        if !file.is_file() {
            return Err(Error::file(&file, "listed in model.safetensors.index.json but missing"));
        }
        let (arrays, _) = fx::load_safetensors(&file)?;
        for (name, a) in arrays {
            let a = match dtype {
                Some(d) if a.dtype().is_float() && a.dtype() != d => fx::astype(&a, d)?,
                _ => a,
            };
            if all.insert(name.clone(), a).is_some() {
                return Err(Error::file(&file, format!("tensor {name:?} appears in more than one file")));
            }
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ferrox-lm-loader-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn sharded_single_and_truncated() {
        let d = tmp("shards");
        let a = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
        let b = Array::from_slice(&[3.0f32], &[1]).unwrap();
        fx::save_safetensors(d.join("m-1.safetensors"), [("a", &a)], None).unwrap();
        fx::save_safetensors(d.join("m-2.safetensors"), [("b", &b)], None).unwrap();
        std::fs::write(
            d.join("model.safetensors.index.json"),
            r#"{"metadata":{},"weight_map":{"a":"m-1.safetensors","b":"m-2.safetensors"}}"#,
        )
        .unwrap();
        let w = load_weights(&d, Some(Dtype::Bf16)).unwrap();
        assert_eq!(w["a"].dtype(), Dtype::Bf16);
        assert_eq!(fx::astype(&w["b"], Dtype::F32).unwrap().to_vec::<f32>().unwrap(), vec![3.0]);
        assert_eq!(w.len(), 2);

        // A truncated shard is an error naming the file.
        let bytes = std::fs::read(d.join("m-2.safetensors")).unwrap();
        std::fs::write(d.join("m-2.safetensors"), &bytes[..bytes.len() - 2]).unwrap();
        let e = load_weights(&d, None).unwrap_err().to_string();
        assert!(e.contains("m-2.safetensors"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn bad_paths() {
        let e = resolve_model_dir("./no/such/dir").unwrap_err().to_string();
        assert!(e.contains("no such directory"), "{e}");
        let d = tmp("empty");
        let e = weight_files(&d).unwrap_err().to_string();
        assert!(e.contains("no *.safetensors"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn offline_hub_id_not_cached() {
        std::env::set_var("HF_HUB_OFFLINE", "1");
        let hub = tmp("hub");
        std::env::set_var("HF_HUB_CACHE", &hub);
        let e = resolve_model_dir("nobody/nothing").unwrap_err().to_string();
        assert!(e.contains("HF_HUB_OFFLINE") && e.contains("nobody/nothing"), "{e}");
        std::fs::remove_dir_all(&hub).ok();
    }
}
