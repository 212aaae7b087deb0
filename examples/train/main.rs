//! RL training of a small transformer policy with any `.rlo` objective.
//!
//! ```text
//! cargo run --release -p rlo-examples --bin train -- --objective stdlib/grpo.rlo --param beta=0.02
//! ```
//! See `examples/README.md`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rlo_runtime::Backend;
use rlo_train::loss::{CandleGrpo, PolicyLoss, RloObjective};
use rlo_train::task::RewardKind;
use rlo_train::trainer::{OutPaths, StepLog, TrainConfig, Trainer};
use rlo_train::{plot, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    /// `cuda` when the policy is on a CUDA device, else the Cranelift CPU backend (falling back
    /// to the interpreter where it is unavailable).
    Auto,
    Interp,
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LossArg {
    /// The `.rlo` objective of `--objective`.
    Rlo,
    /// GRPO written directly in candle ops (reference; reads `eps` and `beta` from `--param`).
    CandleGrpo,
}

/// Train a tiny transformer to add numbers with RL, the objective read from a `.rlo` file.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The objective (`.rlo`).
    #[arg(long, default_value = "stdlib/grpo.rlo")]
    objective: PathBuf,
    /// Which objective of the file, if it has several.
    #[arg(long)]
    objective_name: Option<String>,
    /// Parameter override `name=value` (repeatable).
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, f64)>,
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
    #[arg(long, value_enum, default_value_t = LossArg::Rlo)]
    loss: LossArg,
    /// Evaluate the loss as this many data-parallel ranks holding whole groups, simulated in
    /// this process (normalizers all-reduced between ranks, results gathered): the same
    /// training as 1 rank, to float rounding.
    #[arg(long, default_value_t = 1)]
    ranks: usize,
    /// RL steps.
    #[arg(long, default_value_t = 200)]
    steps: usize,
    /// Most supervised warm-up steps before RL (skipped with --resume).
    #[arg(long, default_value_t = 1500)]
    sft_steps: usize,
    /// End the warm-up once greedy accuracy (128 fresh problems, checked every 25 steps) reaches
    /// this, so that RL starts from a policy that sometimes succeeds; 0 = run all --sft-steps.
    #[arg(long, default_value_t = 0.3)]
    sft_target: f64,
    #[arg(long, default_value_t = 64)]
    sft_batch: usize,
    #[arg(long, default_value_t = 3e-3)]
    sft_lr: f64,
    /// Prompts per RL step (groups).
    #[arg(long, default_value_t = 16)]
    prompts: usize,
    /// Samples per prompt (G).
    #[arg(long, default_value_t = 8)]
    group_size: usize,
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    #[arg(long, default_value_t = 3e-4)]
    lr: f64,
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Passes over each batch of rollouts.
    #[arg(long, default_value_t = 2)]
    ppo_epochs: usize,
    /// Minibatches (of whole groups) per pass.
    #[arg(long, default_value_t = 1)]
    minibatches: usize,
    #[arg(long, value_enum, default_value_t = RewardKind::Exact)]
    reward: RewardKind,
    /// Digits per operand.
    #[arg(long, default_value_t = 2)]
    digits: u32,
    #[arg(long, default_value_t = 64)]
    hidden: usize,
    #[arg(long, default_value_t = 2)]
    layers: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory: checkpoint, plot, per-step log, summary.
    #[arg(long, default_value = "out/train")]
    out: PathBuf,
    /// Start from this checkpoint (skips the warm-up; it is also the KL reference).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// A TrueType font for the plot's text (default: a system font if one is found).
    #[arg(long)]
    font: Option<PathBuf>,
    /// Where the policy runs: `cpu`, or `cuda` (needs a build with `--features cuda`:
    /// `examples/build_cuda.sh`). With `cuda`, `--backend auto|cuda` runs the loss kernels on
    /// candle's stream without copying token data to the host.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// CPU threads for candle (sets RAYON_NUM_THREADS unless it is set): the model is tiny, so
    /// more threads mostly add synchronisation, worse still on a shared machine.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// No progress bar (plain per-step lines only).
    #[arg(long)]
    quiet: bool,
}

fn parse_param(s: &str) -> std::result::Result<(String, f64), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected name=value, got `{s}`"))?;
    let v: f64 = v
        .trim()
        .parse()
        .map_err(|e| format!("`{v}` is not a number: {e}"))?;
    Ok((k.trim().to_string(), v))
}

fn main() {
    let args = Args::parse();
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", args.threads.max(1).to_string());
    }
    if let Err(e) = run(args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn make_loss(args: &Args) -> Result<Box<dyn PolicyLoss>> {
    match args.loss {
        LossArg::CandleGrpo => {
            let get = |name: &str, default: f64| {
                args.params
                    .iter()
                    .find(|(k, _)| k == name)
                    .map_or(default, |(_, v)| *v)
            };
            Ok(Box::new(CandleGrpo {
                eps: get("eps", 0.2),
                beta: get("beta", 0.04),
            }))
        }
        LossArg::Rlo => {
            let text = std::fs::read_to_string(&args.objective)
                .map_err(|e| format!("{}: {e}", args.objective.display()))?;
            let backend = match args.backend {
                BackendArg::Auto if args.device == "cuda" => Backend::Cuda,
                BackendArg::Auto | BackendArg::Cpu => Backend::Cpu,
                BackendArg::Interp => Backend::Interp,
                BackendArg::Cuda => Backend::Cuda,
            };
            let name = args.objective.display().to_string();
            let obj = RloObjective::new(
                &name,
                &text,
                args.objective_name.clone(),
                &args.params,
                backend,
            )?
            .with_ranks(args.ranks)?;
            for w in &obj.objective.compiled.warnings {
                eprintln!("warning: {}", w.message);
            }
            Ok(Box::new(obj))
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda_device() -> Result<Device> {
    Ok(rlo_runtime::candle::cuda::cuda_device(0)?)
}

#[cfg(not(feature = "cuda"))]
fn cuda_device() -> Result<Device> {
    Err(
        "this binary was built without the `cuda` feature: build it with examples/build_cuda.sh"
            .into(),
    )
}

fn bar(n: usize, quiet: bool, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(n as u64);
    let style = ProgressStyle::with_template(&format!(
        "{what} {{bar:30}} {{pos}}/{{len}} [{{elapsed_precise}}<{{eta_precise}}] {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb
}

fn run(args: Args) -> Result<()> {
    let t_start = Instant::now();
    let mut loss = make_loss(&args)?;
    let cfg = TrainConfig {
        seed: args.seed,
        digits: args.digits,
        hidden: args.hidden,
        layers: args.layers,
        heads: args.heads,
        sft_steps: args.sft_steps,
        sft_batch: args.sft_batch,
        sft_lr: args.sft_lr,
        steps: args.steps,
        prompts_per_step: args.prompts,
        group_size: args.group_size,
        temperature: args.temperature,
        lr: args.lr,
        weight_decay: args.weight_decay,
        max_grad_norm: args.max_grad_norm,
        ppo_epochs: args.ppo_epochs,
        minibatches: args.minibatches,
        reward: args.reward,
    };
    if cfg.prompts_per_step == 0 || cfg.group_size == 0 || cfg.sft_batch == 0 {
        return Err("--prompts, --group-size and --sft-batch must be positive".into());
    }
    let out = OutPaths {
        dir: args.out.clone(),
    };
    std::fs::create_dir_all(&out.dir)?;
    let device = match args.device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" => cuda_device()?,
        other => return Err(format!("unknown device `{other}` (cpu, cuda)").into()),
    };
    let mut tr = Trainer::new(cfg.clone(), args.resume.as_deref(), device)?;
    eprintln!("loss: {}", loss.describe());

    let mut sft_done = 0;
    if args.resume.is_none() && cfg.sft_steps > 0 {
        let pb = bar(cfg.sft_steps, args.quiet, "warm-up");
        let mut last = 0.0;
        let mut done = 0;
        for i in 1..=cfg.sft_steps {
            last = tr.sft_step()?;
            done = i;
            pb.set_message(format!("nll {last:.3}"));
            pb.inc(1);
            if args.sft_target > 0.0 && i % 25 == 0 {
                let acc = tr.greedy_accuracy(128)?;
                pb.set_message(format!("nll {last:.3} greedy accuracy {acc:.2}"));
                if acc >= args.sft_target {
                    break;
                }
            }
        }
        pb.finish_and_clear();
        sft_done = done;
        eprintln!(
            "warm-up: {done} steps, final nll/token {last:.3}, {:.1}s",
            t_start.elapsed().as_secs_f64()
        );
    }
    tr.start_rl()?;
    let acc_before = tr.greedy_accuracy(256)?;
    eprintln!("greedy accuracy before RL: {acc_before:.3}");

    let mut log_file = std::fs::File::create(out.log())?;
    let mut logs: Vec<StepLog> = Vec::with_capacity(cfg.steps);
    let pb = bar(cfg.steps, args.quiet, "rl");
    let t_rl = Instant::now();
    for step in 0..cfg.steps {
        let l = tr.rl_step(step, loss.as_mut())?;
        let extra: Vec<String> = l
            .metrics
            .iter()
            .map(|(k, v)| format!("{k}={v:.4}"))
            .collect();
        let loss_time = match l.loss_kernel_s {
            Some(k) => format!("loss kernels {:.3}ms", k * 1e3),
            None => format!("loss {:.1}ms", l.loss_s * 1e3),
        };
        let line = format!(
            "step {:3} reward {:.3} kl {:.4} clip {:.3} entropy {:.3} loss {:+.4} |g| {:.3} {:.0} tok/s {:.3}s {loss_time} ({:.2}% of step) [{}]",
            l.step,
            l.reward,
            l.kl,
            l.clip_frac,
            l.entropy,
            l.loss,
            l.grad_norm,
            l.tokens_per_s,
            l.step_s,
            100.0 * l.loss_share,
            extra.join(" ")
        );
        if args.quiet {
            eprintln!("{line}");
        } else {
            pb.println(line);
        }
        pb.set_message(format!("reward {:.3}", l.reward));
        pb.inc(1);
        writeln!(log_file, "{}", serde_json::to_string(&l)?)?;
        logs.push(l);
    }
    pb.finish_and_clear();
    let rl_s = t_rl.elapsed().as_secs_f64();
    let (acc_after, texts) = tr.greedy_eval(256)?;
    for t in texts.iter().take(4) {
        eprintln!("  {t}");
    }

    tr.save(&out.checkpoint())?;
    let rewards: Vec<f64> = logs.iter().map(|l| l.reward).collect();
    let kls: Vec<f64> = logs.iter().map(|l| l.kl).collect();
    let with_text = plot::load_font(args.font.as_deref());
    if !with_text {
        eprintln!("note: no TrueType font found (--font); the plot has no text");
    }
    let title = args
        .objective
        .file_name()
        .map_or("candle".into(), |f| f.to_string_lossy().into_owned());
    plot::plot_reward_kl(&out.plot(), &title, &rewards, &kls, with_text)?;

    let k = 10.min(rewards.len());
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len().max(1) as f64;
    let first = mean(&rewards[..k]);
    let last = mean(&rewards[rewards.len() - k..]);
    let total_s = t_start.elapsed().as_secs_f64();
    // Throughput and loss share over the RL steps (the first step, which compiles the loss
    // program, included; `log.jsonl` has every step).
    let step_sum: f64 = logs.iter().map(|l| l.step_s).sum();
    let steps_per_s = logs.len() as f64 / step_sum.max(1e-12);
    let loss_sum: f64 = logs
        .iter()
        .map(|l| l.loss_kernel_s.unwrap_or(l.loss_s))
        .sum();
    let loss_share = loss_sum / step_sum.max(1e-12);
    let timing_what = if logs.iter().any(|l| l.loss_kernel_s.is_some()) {
        "loss kernels (GPU time)"
    } else {
        "loss calls (wall time)"
    };
    let summary = serde_json::json!({
        "objective": args.objective.display().to_string(),
        "loss": loss.describe(),
        "config": cfg,
        "sft_steps_run": sft_done,
        "reward_first10": first,
        "reward_last10": last,
        "greedy_acc_before_rl": acc_before,
        "greedy_acc_after_rl": acc_after,
        "rl_seconds": rl_s,
        "device": args.device,
        "rl_steps_per_s": steps_per_s,
        "loss_share": loss_share,
        "loss_share_of": timing_what,
        "total_seconds": total_s,
        "checkpoint": out.checkpoint(),
        "plot": out.plot(),
    });
    std::fs::write(
        out.dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    println!(
        "mean reward: first {k} steps {first:.3} -> last {k} steps {last:.3}; greedy accuracy {acc_before:.3} -> {acc_after:.3}; RL {rl_s:.1}s, total {total_s:.1}s"
    );
    println!(
        "RL: {:.2} steps/s on {} ({} steps, {step_sum:.1}s in steps); {timing_what}: {:.2}% of step time ({:.3} ms per step)",
        steps_per_s,
        args.device,
        logs.len(),
        100.0 * loss_share,
        1e3 * loss_sum / logs.len().max(1) as f64
    );
    println!(
        "checkpoint {}  plot {}  log {}",
        out.checkpoint().display(),
        out.plot().display(),
        out.log().display()
    );
    Ok(())
}
