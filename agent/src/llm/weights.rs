//! A model's weights read from its safetensors shards straight into candle's tensors: each
//! tensor's bytes read once, by the kernel, into the buffer the tensor then owns, on as many
//! threads as the machine has.
//!
//! Why not `candle_core::safetensors::load`: it reads a whole shard into one buffer and then
//! copies every tensor out of it (every byte copied twice, one shard's size of extra memory,
//! on one thread). Why not a memory map: on the CPU candle's tensors own their memory anyway, so
//! a map saves nothing over one read into that memory, and it needs `unsafe` (a file changed
//! under a map is undefined behaviour). Why threads: several reads in flight keep a fast disk
//! busy, and the copy out of the page cache is the CPU's work; the tensors are taken in the order
//! they lie in the files, by every thread from one counter, so they move through the files
//! together, just behind the read-ahead (`cache::warm`).
//!
//! The format (safetensors): an 8-byte little-endian header length, a JSON header naming each
//! tensor's dtype, shape and byte range in the data that follows, tensors little-endian.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device, Tensor, WithDType};
use serde::Deserialize;

use super::LlmError;

// Tensors are read as the bytes lie in the file; safetensors is little-endian.
#[cfg(target_endian = "big")]
compile_error!("the safetensors reader assumes a little-endian machine");

/// A header larger than this is not a model's (a 405B model's is under 2 MB).
const MAX_HEADER: u64 = 100 << 20;

#[derive(Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

struct Job {
    name: String,
    file: usize,
    dtype: DType,
    shape: Vec<usize>,
    at: u64,
}

/// Every tensor of the shards `files`, keyed by name (a name in several shards: the last one's).
pub(crate) fn load(files: &[PathBuf], device: &Device) -> Result<HashMap<String, Tensor>, LlmError> {
    let mut opened = Vec::with_capacity(files.len());
    let mut jobs = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let bad = |why: String| LlmError::Read { path: path.display().to_string(), why };
        let mut f = File::open(path).map_err(|e| bad(e.to_string()))?;
        let len = f.metadata().map_err(|e| bad(e.to_string()))?.len();
        let mut n = [0u8; 8];
        f.read_exact(&mut n).map_err(|e| bad(format!("no safetensors header: {e}")))?;
        let n = u64::from_le_bytes(n);
        if n > MAX_HEADER || 8 + n > len {
            return Err(bad(format!("not a safetensors file: a header of {n} bytes in a file of {len}")));
        }
        let mut header = vec![0u8; n as usize];
        f.read_exact(&mut header).map_err(|e| bad(e.to_string()))?;
        let header: HashMap<String, serde_json::Value> =
            serde_json::from_slice(&header).map_err(|e| bad(format!("safetensors header is not JSON: {e}")))?;
        let data = 8 + n;
        for (name, v) in header {
            if name == "__metadata__" {
                continue;
            }
            let e: Entry = serde_json::from_value(v).map_err(|e| bad(format!("tensor {name}: {e}")))?;
            let dtype = match e.dtype.as_str() {
                "F32" => DType::F32,
                "BF16" => DType::BF16,
                "F16" => DType::F16,
                "F64" => DType::F64,
                "I64" => DType::I64,
                "U32" => DType::U32,
                "U8" => DType::U8,
                other => return Err(bad(format!("tensor {name}: dtype {other} is not supported"))),
            };
            let [from, to] = e.data_offsets;
            let want = e.shape.iter().try_fold(dtype.size_in_bytes() as u64, |a, &d| a.checked_mul(d as u64));
            if from > to || data + to > len || want != Some(to - from) {
                return Err(bad(format!(
                    "tensor {name}: bytes {from}..{to} do not hold a {:?} {:?} in a file of {len} bytes",
                    e.shape, dtype
                )));
            }
            jobs.push(Job { name, file: i, dtype, shape: e.shape, at: data + from });
        }
        opened.push(f);
    }
    // In file order: the order the read-ahead brings the bytes in.
    jobs.sort_by_key(|j| (j.file, j.at));
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, jobs.len().max(1));
    let loaded: Vec<Result<Vec<(usize, Tensor)>, LlmError>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(j) = jobs.get(i) else { break };
                        let t = read(&opened[j.file], j, device).map_err(|why| LlmError::Read {
                            path: files[j.file].display().to_string(),
                            why: format!("tensor {}: {why}", j.name),
                        })?;
                        mine.push((i, t));
                    }
                    Ok(mine)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a weight-reading thread panicked")).collect()
    });
    let mut out: Vec<Option<Tensor>> = vec![None; jobs.len()];
    for r in loaded {
        for (i, t) in r? {
            out[i] = Some(t);
        }
    }
    Ok(jobs.into_iter().zip(out).map(|(j, t)| (j.name, t.expect("every tensor read"))).collect())
}

fn read(f: &File, j: &Job, device: &Device) -> Result<Tensor, String> {
    match j.dtype {
        DType::F32 => read_as::<f32>(f, j, device),
        DType::BF16 => read_as::<half::bf16>(f, j, device),
        DType::F16 => read_as::<half::f16>(f, j, device),
        DType::F64 => read_as::<f64>(f, j, device),
        DType::I64 => read_as::<i64>(f, j, device),
        DType::U32 => read_as::<u32>(f, j, device),
        DType::U8 => read_as::<u8>(f, j, device),
        other => Err(format!("dtype {other:?} is not supported")),
    }
}

/// One read from the file into the memory the tensor keeps (on the CPU; a GPU's tensor is
/// copied from it to the device).
fn read_as<T: WithDType + bytemuck::Pod>(f: &File, j: &Job, device: &Device) -> Result<Tensor, String> {
    let n: usize = j.shape.iter().product();
    let mut v: Vec<T> = vec![T::zeroed(); n];
    f.read_exact_at(bytemuck::cast_slice_mut(&mut v), j.at).map_err(|e| e.to_string())?;
    Tensor::from_vec(v, j.shape.as_slice(), device).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::Family;
    use crate::llm::testmodel::{self, Shape};

    /// Every tensor as candle's own reader gives it: same names, dtypes, shapes and values,
    /// across shards and in each dtype a model comes in.
    #[test]
    fn reads_every_tensor_as_candle_does() {
        let dir = tempfile::tempdir().unwrap();
        testmodel::write(dir.path(), Family::Qwen2, Shape::default(), 2, 3).unwrap();
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        let mixed = dir.path().join("mixed.safetensors");
        let dev = Device::Cpu;
        let base = Tensor::arange(0f32, 24., &dev).unwrap().reshape((2, 3, 4)).unwrap();
        let extra: HashMap<String, Tensor> = [
            ("bf16".to_string(), base.to_dtype(DType::BF16).unwrap()),
            ("f16".to_string(), base.to_dtype(DType::F16).unwrap()),
            ("u8".to_string(), base.to_dtype(DType::U8).unwrap()),
            ("i64".to_string(), base.to_dtype(DType::I64).unwrap()),
            ("scalar".to_string(), Tensor::new(7f32, &dev).unwrap()),
        ]
        .into();
        candle_core::safetensors::save(&extra, &mixed).unwrap();
        files.push(mixed);
        files.sort();
        let ours = load(&files, &dev).unwrap();
        let mut theirs = HashMap::new();
        for f in &files {
            theirs.extend(candle_core::safetensors::load(f, &dev).unwrap());
        }
        assert_eq!(ours.len(), theirs.len());
        assert!(ours.len() > 10, "{} tensors", ours.len());
        for (name, t) in &theirs {
            let o = &ours[name];
            assert_eq!((o.dtype(), o.dims()), (t.dtype(), t.dims()), "{name}");
            let (a, b) = (
                o.to_dtype(DType::F64).unwrap().flatten_all().unwrap(),
                t.to_dtype(DType::F64).unwrap().flatten_all().unwrap(),
            );
            assert_eq!(a.to_vec1::<f64>().unwrap(), b.to_vec1::<f64>().unwrap(), "{name}");
        }
    }
}
