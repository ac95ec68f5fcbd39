//! The only unsafe code of the agent: calls into the CUDA driver and cuBLAS through cudarc, both
//! loaded at run time. cudarc panics when a library it needs is missing, so every entry point
//! here checks that the library loads before the first call.
#![allow(unsafe_code)]

use std::time::Instant;

use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, sys as blas_sys};
use cudarc::driver::{CudaContext, result, sys};
use half::bf16;

/// One GPU as the driver reports it.
#[derive(Debug, Clone)]
pub struct Device {
    pub name: String,
    pub memory_bytes: u64,
}

/// Whether libcuda (the NVIDIA driver's user-space library) can be loaded.
#[cfg(not(feature = "cuda"))]
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library under its usual names; calls nothing in it.
    unsafe { sys::is_culib_present() }
}

/// Whether cuBLAS can be loaded (the GPU burn-in needs it).
#[cfg(not(feature = "cuda"))]
pub fn cublas_present() -> bool {
    // SAFETY: as above, a dlopen attempt only.
    unsafe { blas_sys::is_culib_present() }
}

/// Built with the `cuda` feature, the agent is linked to libcuda and cuBLAS (candle's CUDA
/// backend links cudarc to them): running at all means they loaded.
#[cfg(feature = "cuda")]
pub fn driver_present() -> bool {
    true
}

#[cfg(feature = "cuda")]
pub fn cublas_present() -> bool {
    true
}

/// The driver's CUDA version and its devices.
pub fn devices() -> Result<(String, Vec<Device>), String> {
    if !driver_present() {
        return Err("libcuda not found (no NVIDIA driver): CPU only".into());
    }
    result::init().map_err(|e| format!("the CUDA driver is installed but does not start: {e}"))?;
    let mut v: std::ffi::c_int = 0;
    // SAFETY: the library is loaded (checked above); the pointer is to a live local.
    let version = match unsafe { sys::cuDriverGetVersion(&mut v) } {
        sys::CUresult::CUDA_SUCCESS => format!("{}.{}", v / 1000, (v % 1000) / 10),
        e => format!("unknown ({e:?})"),
    };
    let n = result::device::get_count().map_err(|e| format!("cannot count CUDA devices: {e}"))?;
    let mut out = Vec::new();
    for i in 0..n {
        let dev = result::device::get(i).map_err(|e| format!("CUDA device {i}: {e}"))?;
        let name = result::device::get_name(dev).map_err(|e| format!("CUDA device {i}: {e}"))?;
        // SAFETY: `dev` is a handle the driver just returned for this ordinal.
        let mem = unsafe { result::device::total_mem(dev) }.map_err(|e| format!("CUDA device {i}: {e}"))?;
        out.push(Device { name, memory_bytes: mem as u64 });
    }
    Ok((version, out))
}

/// Dense bf16 matrix multiplies (n × n by n × n, fp32 accumulation) on GPU `ordinal` through
/// cuBLAS: returns TFLOP/s over `iters` products after three warm-ups.
pub fn gemm_bf16_tflops(ordinal: usize, n: usize, iters: u32) -> Result<f64, String> {
    if !driver_present() {
        return Err("libcuda not found: no GPU to burn in".into());
    }
    if !cublas_present() {
        return Err("cuBLAS (libcublas) not found: install the CUDA runtime libraries or set LD_LIBRARY_PATH".into());
    }
    fn err(what: &'static str) -> impl Fn(cudarc::driver::DriverError) -> String {
        move |e| format!("{what}: {e}")
    }
    let ctx = CudaContext::new(ordinal).map_err(err("CUDA context"))?;
    let stream = ctx.default_stream();
    // Random-looking data: zeros let the tensor cores idle and overstate the figure.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let host: Vec<bf16> = (0..n * n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            bf16::from_f32(((seed >> 40) as f32 / (1u64 << 24) as f32) - 0.5)
        })
        .collect();
    let a = stream.clone_htod(&host).map_err(err("copy to GPU"))?;
    let b = stream.clone_htod(&host).map_err(err("copy to GPU"))?;
    let mut c = stream.alloc_zeros::<bf16>(n * n).map_err(err("GPU allocation"))?;
    let blas = CudaBlas::new(stream.clone()).map_err(|e| format!("cuBLAS: {e}"))?;
    let n32 = n as std::ffi::c_int;
    let cfg = GemmConfig {
        transa: blas_sys::cublasOperation_t::CUBLAS_OP_N,
        transb: blas_sys::cublasOperation_t::CUBLAS_OP_N,
        m: n32,
        n: n32,
        k: n32,
        alpha: bf16::ONE,
        lda: n32,
        ldb: n32,
        beta: bf16::ZERO,
        ldc: n32,
    };
    let mut run = |count: u32| -> Result<(), String> {
        for _ in 0..count {
            // SAFETY: a, b and c each hold n × n elements and the leading dimensions are n, so
            // cuBLAS reads and writes only inside them.
            unsafe { blas.gemm(cfg, &a, &b, &mut c) }.map_err(|e| format!("cuBLAS gemm: {e}"))?;
        }
        stream.synchronize().map_err(err("synchronize"))
    };
    run(3)?;
    let t = Instant::now();
    run(iters)?;
    let secs = t.elapsed().as_secs_f64();
    Ok(2.0 * (n as f64).powi(3) * iters as f64 / secs / 1e12)
}
