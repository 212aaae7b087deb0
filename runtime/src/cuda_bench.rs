//! `rlo-bench-cuda`: times rlo's CUDA forward+backward of stdlib objectives on padded `[B, T]`
//! batches (f32 or bf16 token inputs + an f32 mask, groups of 8, random lengths), the
//! device-to-device copy bandwidth, the roofline (every input read once + every gradient written
//! once, at copy bandwidth), cold compile (parse → cubin → loaded) and cached load times.
//! Prints one JSON object per line (`bench/gpu.sh` joins them with the PyTorch baselines).
//!
//! `rlo-bench-cuda [--stdlib DIR] [--objectives grpo,dapo,gspo] [--shapes 1024x4096,4096x8192]
//!                 [--dtypes f32,bf16] [--variants fused,plain] [--iters 20]`
//!
//! `--variants plain` times the program with seq-local fusion, recomputation and the batch-rank
//! sort turned off (`CudaOptions::disable_*`), to measure what they save; each line carries the traffic model's
//! bytes per token and its ratio to the model's roofline.
#![allow(unsafe_code)]

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
use rlo_compiler::back::cuda::{emit, CudaOptions, StorageType, TokLayout};
use rlo_compiler::{DType, Level};
use rlo_runtime::cuda::{upload_as, CudaDevice, CudaObjective, DeviceLayout, Workspace};
use rlo_runtime::RuntimeError;

struct Args {
    stdlib: String,
    objectives: Vec<String>,
    shapes: Vec<(usize, usize)>,
    dtypes: Vec<StorageType>,
    iters: usize,
    /// `false`: fused (the default plan); `true`: plain (fusion and recomputation off).
    variants: Vec<bool>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        stdlib: "stdlib".into(),
        objectives: vec!["grpo".into(), "dapo".into(), "gspo".into()],
        shapes: vec![(1024, 4096), (4096, 8192)],
        dtypes: vec![StorageType::F32, StorageType::Bf16],
        iters: 20,
        variants: vec![false],
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--stdlib" => a.stdlib = v,
            "--objectives" => a.objectives = v.split(',').map(str::to_string).collect(),
            "--iters" => a.iters = v.parse().map_err(|e| format!("--iters: {e}"))?,
            "--shapes" => {
                a.shapes = v
                    .split(',')
                    .map(|s| {
                        let (b, t) = s.split_once('x').ok_or("shape is BxT")?;
                        Ok((
                            b.parse().map_err(|_| "bad B")?,
                            t.parse().map_err(|_| "bad T")?,
                        ))
                    })
                    .collect::<Result<_, &str>>()?
            }
            "--dtypes" => {
                a.dtypes = v
                    .split(',')
                    .map(|d| match d {
                        "f32" => Ok(StorageType::F32),
                        "bf16" => Ok(StorageType::Bf16),
                        "f16" => Ok(StorageType::F16),
                        _ => Err(format!("unknown dtype {d}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--variants" => {
                a.variants = v
                    .split(',')
                    .map(|d| match d {
                        "fused" => Ok(false),
                        "plain" => Ok(true),
                        _ => Err(format!("unknown variant {d} (fused, plain)")),
                    })
                    .collect::<Result<_, _>>()?
            }
            _ => return Err(format!("unknown option {k}")),
        }
    }
    Ok(a)
}

/// xorshift: deterministic data without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Cuda(e.to_string())
}

/// Copy bandwidth in bytes/s (read + write counted), 1 GiB device-to-device.
fn copy_bandwidth(stream: &Arc<CudaStream>) -> Result<f64, RuntimeError> {
    let n = 1usize << 28;
    let src = stream.alloc_zeros::<f32>(n).map_err(err)?;
    let mut dst = stream.alloc_zeros::<f32>(n).map_err(err)?;
    stream.memcpy_dtod(&src, &mut dst).map_err(err)?;
    stream.synchronize().map_err(err)?;
    let reps = 10;
    let t = Instant::now();
    for _ in 0..reps {
        stream.memcpy_dtod(&src, &mut dst).map_err(err)?;
    }
    stream.synchronize().map_err(err)?;
    Ok((2 * n * 4 * reps) as f64 / t.elapsed().as_secs_f64())
}

fn run() -> Result<(), RuntimeError> {
    let args = parse_args().map_err(RuntimeError::Unsupported)?;
    let dev = CudaDevice::global()?;
    let stream = dev.stream.clone();
    // a fresh cubin cache so the first load is a cold compile
    let cache = std::env::temp_dir().join(format!("rlo-bench-ptx-{}", std::process::id()));
    std::env::set_var("RLO_CACHE_DIR", &cache);
    let bw = copy_bandwidth(&stream)?;
    println!(
        "{{\"kind\":\"copy\",\"device\":\"{}\",\"gbps\":{:.1}}}",
        dev.arch,
        bw / 1e9
    );
    for name in &args.objectives {
        let path = format!("{}/{name}.rlo", args.stdlib);
        let text = std::fs::read_to_string(&path).map_err(|e| RuntimeError::Io {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let configs = args
            .dtypes
            .iter()
            .flat_map(|&d| args.variants.iter().map(move |&plain| (d, plain)));
        for (dtype, plain) in configs {
            let opts = CudaOptions {
                layout: TokLayout::Padded,
                tok_dtype: dtype,
                sources: None,
                disable_fusion: plain,
                disable_remat: plain,
                disable_sort: plain,
            };
            // cold: parse -> IR -> schedule -> CUDA -> NVRTC -> loaded module
            dev.clear_modules();
            let _ = std::fs::remove_dir_all(&cache);
            let t0 = Instant::now();
            let c = rlo_compiler::compile(&format!("{name}.rlo"), &text, &Default::default())
                .map_err(|f| RuntimeError::Unsupported(f.render(false)))?;
            let program =
                emit(&c.module, &c.schedule, &opts).map_err(|e| RuntimeError::CudaCodegen {
                    location: c.sources.location(e.span),
                    message: e.message,
                })?;
            let obj = CudaObjective::load(dev, program.clone())?;
            let cold_ms = t0.elapsed().as_secs_f64() * 1e3;
            dev.clear_modules();
            let t1 = Instant::now();
            let obj2 = CudaObjective::load(dev, program)?;
            let cached_ms = t1.elapsed().as_secs_f64() * 1e3;
            if obj2.compiled_now {
                return Err(RuntimeError::Cuda("the cubin cache was not used".into()));
            }
            let module = &c.module;
            let params: Vec<f64> = module.params.iter().map(|p| p.default).collect();
            for &(b, t) in &args.shapes {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (b * t) as u64);
                let lengths: Vec<usize> = (0..b)
                    .map(|_| 1 + (rng.next() * (t - 1) as f32) as usize)
                    .collect();
                let groups: Vec<u32> = (0..b).map(|s| (s / 8) as u32).collect();
                let n_groups = b.div_ceil(8);
                let mut mask = vec![0f32; b * t];
                for (s, &l) in lengths.iter().enumerate() {
                    for x in &mut mask[s * t..s * t + l] {
                        *x = 1.0;
                    }
                }
                let mask_d = stream.clone_htod(&mask).map_err(err)?;
                let mut len_d = stream.alloc_zeros::<i32>(b).map_err(err)?;
                let mut err_d = stream.alloc_zeros::<i32>(1).map_err(err)?;
                let lay = DeviceLayout::new(&stream, &lengths, &groups, n_groups, t)?;
                let mut bytes_in = b * t * 4; // the mask
                let mut inputs: Vec<CudaSlice<u8>> = Vec::new();
                for inp in &module.inputs {
                    let n = lay.count(inp.ty.level);
                    let ty = if inp.ty.level == Level::Tok && inp.ty.dtype == DType::F32 {
                        dtype
                    } else {
                        StorageType::F32
                    };
                    let v: Vec<f32> = (0..n)
                        .map(|_| match inp.ty.dtype {
                            DType::Bool => f32::from(u8::from(rng.next() < 0.5)),
                            DType::F32 => -3.0 * rng.next(),
                        })
                        .collect();
                    let (buf, nbytes) = upload_as(&stream, &v, ty)?;
                    bytes_in += nbytes;
                    inputs.push(buf);
                }
                let bytes_out: usize = module
                    .grads
                    .iter()
                    .map(|g| {
                        let level = module
                            .inputs
                            .get(g.input as usize)
                            .map_or(Level::Batch, |i| i.ty.level);
                        lay.count(level) * 4
                    })
                    .sum();
                let mut ws = Workspace::new(&stream, &obj.program, &lay)?;
                let ptrs: Vec<u64> = inputs.iter().map(|x| x.device_ptr(&stream).0).collect();
                let mask_fn = dev.mask_to_len()?;
                let mut step = || -> Result<(), RuntimeError> {
                    let cfg = LaunchConfig {
                        grid_dim: (b.min(1 << 20) as u32, 1, 1),
                        block_dim: (256, 1, 1),
                        shared_mem_bytes: 0,
                    };
                    let (bb, tt) = (b as i64, t as i64);
                    let mut l = stream.launch_builder(&mask_fn);
                    l.arg(&mask_d)
                        .arg(&bb)
                        .arg(&tt)
                        .arg(&mut len_d)
                        .arg(&mut err_d);
                    // SAFETY: rlo_mask_to_len(const float*, long long, long long, int*, int*)
                    // with a B*T mask and B lengths, all allocated above.
                    unsafe { l.launch(cfg) }.map_err(err)?;
                    // SAFETY: `ptrs` are the uploaded inputs, one per module input, at their
                    // level's padded count and storage type; they outlive the launches.
                    unsafe { obj.launch(&stream, &lay, &ptrs, &mut ws, &params) }
                };
                step()?;
                stream.synchronize().map_err(err)?;
                let t2 = Instant::now();
                for _ in 0..args.iters {
                    step()?;
                }
                stream.synchronize().map_err(err)?;
                let ms = t2.elapsed().as_secs_f64() * 1e3 / args.iters as f64;
                let roof_ms = (bytes_in + bytes_out) as f64 / bw * 1e3;
                println!(
                    "{{\"kind\":\"rlo\",\"objective\":\"{name}\",\"B\":{b},\"T\":{t},\"dtype\":\"{}\",\"variant\":\"{}\",\"fast_compile\":{},\"model_bytes_per_token\":{},\"model_ratio\":{:.3},\"ms\":{ms:.4},\"roofline_ms\":{roof_ms:.4},\"bytes\":{},\"cold_compile_ms\":{cold_ms:.1},\"cached_load_ms\":{cached_ms:.2},\"passes\":{},\"kernels\":{}}}",
                    dtype.c_type(),
                    if plain { "plain" } else { "fused" },
                    rlo_runtime::cuda::fast_compile(),
                    obj.program.traffic.dram_read() + obj.program.traffic.written(),
                    obj.program.traffic.ratio(),
                    bytes_in + bytes_out,
                    c.schedule.token_passes(),
                    obj.program.launches.len()
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("rlo-bench-cuda: {e}");
        std::process::exit(1);
    }
}
