//! The `rloc` binary end to end: check, fmt, emit, run, explain, and their error exits.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rlo_runtime::tensor::{read_file, write_file, Tensor, Tensors, Values};
use safetensors::Dtype;

const GRPO: &str = "\
objective grpo(eps: f32 = 0.2) {
    input logp: tok diff
    input old_logp: tok
    input reward: seq
    let adv = reward - group_mean(reward)
    let ratio = exp(logp - old_logp)
    loss batch_mean(seq_mean(-min(ratio * adv, clamp(ratio, 1 - eps, 1 + eps) * adv)))
    metric clip_frac = batch_mean(abs(ratio - 1) > eps)
    output adv = adv
}
";

fn rloc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rloc"))
        .args(args)
        .output()
        .expect("rloc runs")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A fresh directory for one test.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rloc-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

fn write(d: &Path, name: &str, content: &str) -> String {
    let p = d.join(name);
    std::fs::write(&p, content).expect("write");
    p.display().to_string()
}

fn t(dtype: Dtype, shape: &[usize], v: &[f64]) -> Tensor {
    Tensor::from_f64(dtype, shape, v).expect("tensor")
}

/// B = 4 (two groups of two), T = 3, lengths 3, 1, 2, 3.
fn batch(d: &Path) -> String {
    let mut ts = Tensors::new();
    let logp = [-1., -2., -0.5, -1., 9., 9., -0.3, -0.2, 9., -1., -1.5, -2.];
    ts.insert("logp".into(), t(Dtype::F32, &[4, 3], &logp));
    let old: Vec<f64> = logp.iter().map(|x| x + 0.1).collect();
    ts.insert("old_logp".into(), t(Dtype::BF16, &[4, 3], &old));
    ts.insert("reward".into(), t(Dtype::F32, &[4], &[1., 0., 0.5, 1.]));
    ts.insert("lengths".into(), t(Dtype::I64, &[4], &[3., 1., 2., 3.]));
    ts.insert("group".into(), t(Dtype::I64, &[4], &[0., 0., 1., 1.]));
    let p = d.join("batch.safetensors");
    write_file(&p, &ts).expect("write batch");
    p.display().to_string()
}

#[test]
fn check_ok_and_error_with_location() {
    let d = dir("check");
    let good = write(&d, "good.rlo", GRPO);
    let o = rloc(&["check", &good]);
    assert!(o.status.success(), "{:?}", text(&o));

    let bad = write(
        &d,
        "bad.rlo",
        &GRPO.replace("reward - group_mean", "rewrd - group_mean"),
    );
    let o = rloc(&["check", &bad]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("bad.rlo:5:"), "no file:line:col in {err}");
    assert!(err.contains("rewrd"), "{err}");
}

#[test]
fn check_prints_warnings_and_succeeds() {
    let d = dir("warn");
    let f = write(
        &d,
        "w.rlo",
        "objective w() {\n    input reward: seq\n    loss batch_mean(reward)\n}\n",
    );
    let o = rloc(&["check", &f]);
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("warning") && err.contains("w.rlo:3:"), "{err}");
}

#[test]
fn check_json_messages() {
    let d = dir("json");
    let bad = write(
        &d,
        "bad.rlo",
        &GRPO.replace("reward - group_mean", "rewrd - group_mean"),
    );
    let o = rloc(&["check", "--message-format", "json", &bad]);
    assert_eq!(o.status.code(), Some(1));
    let (out, _) = text(&o);
    let first = out.lines().next().expect("one json line");
    let v: serde_json::Value = serde_json::from_str(first).expect("json");
    assert_eq!(v["severity"], "error");
    assert_eq!(v["labels"][0]["line"], 5);
}

#[test]
fn check_missing_file() {
    let o = rloc(&["check", "/nonexistent/x.rlo"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("/nonexistent/x.rlo"));
}

#[test]
fn fmt_check_lists_unformatted_files_and_fmt_fixes_them() {
    let d = dir("fmt");
    let ugly = "objective   o ( ) {\n  input  logp : tok diff\n loss batch_mean( logp )\n}\n";
    let f = write(&d, "ugly.rlo", ugly);
    let o = rloc(&["fmt", "--check", &f]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).0.contains("ugly.rlo"));
    assert_eq!(
        std::fs::read_to_string(&f).expect("read"),
        ugly,
        "--check changed the file"
    );

    let o = rloc(&["fmt", &f]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_ne!(std::fs::read_to_string(&f).expect("read"), ugly);
    let o = rloc(&["fmt", "--check", &f]);
    assert!(
        o.status.success(),
        "formatting is not idempotent: {:?}",
        text(&o)
    );
}

#[test]
fn fmt_syntax_error_exits_1() {
    let d = dir("fmtbad");
    let f = write(&d, "bad.rlo", "objective o( {\n");
    let o = rloc(&["fmt", &f]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("bad.rlo:1:"), "{:?}", text(&o));
}

#[test]
fn emit_each_form() {
    let d = dir("emit");
    let f = write(&d, "grpo.rlo", GRPO);
    let o = rloc(&["emit", "ast", &f]);
    assert!(o.status.success(), "{:?}", text(&o));
    let ast: serde_json::Value = serde_json::from_str(&text(&o).0).expect("ast is json");
    assert!(ast["items"].is_array());

    let o = rloc(&["emit", "ir", &f]);
    assert!(o.status.success(), "{:?}", text(&o));
    let ir = text(&o).0;
    assert!(
        ir.contains("objective grpo") && ir.contains("input i0 logp: tok f32 diff"),
        "{ir}"
    );
    assert!(!ir.contains("grad logp"), "forward IR has gradients: {ir}");

    let o = rloc(&["emit", "grad", &f]);
    assert!(text(&o).0.contains("grad logp"), "{:?}", text(&o));

    let o = rloc(&["emit", "cuda", &f]);
    let cu = text(&o).0;
    assert!(
        o.status.success() && cu.contains("__global__"),
        "{:?}",
        text(&o)
    );
    assert!(
        cu.contains("grpo.rlo:"),
        "no source locations in the CUDA C"
    );

    let o = rloc(&["emit", "clif", &f]);
    let clif = text(&o).0;
    assert!(
        o.status.success() && clif.contains("function"),
        "{:?}",
        text(&o)
    );

    let o = rloc(&["emit", "schedule", &f]);
    let s = text(&o).0;
    assert!(o.status.success() && s.contains("token pass"), "{s}");
}

#[test]
fn emit_unknown_form_is_a_usage_error() {
    let o = rloc(&["emit", "llvm", "x.rlo"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn run_writes_results_in_input_shapes() {
    let d = dir("run");
    let f = write(&d, "grpo.rlo", GRPO);
    let b = batch(&d);
    let out = d.join("out.safetensors").display().to_string();
    let o = rloc(&[
        "run", &f, "--batch", &b, "--out", &out, "--param", "eps=0.1",
    ]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stdout.contains("loss = ") && stdout.contains("metric.clip_frac = "),
        "{stdout}"
    );
    let r = read_file(Path::new(&out)).expect("out file");
    let g = &r["grad.logp"];
    assert_eq!(g.shape, vec![4, 3]);
    assert_eq!(g.dtype, Dtype::F32);
    let Some(Values::Float(v)) = g.values() else {
        panic!("grad not float")
    };
    // Padding (seq 1 positions 1, 2; seq 2 position 2) gets exactly 0.
    assert_eq!((v[4], v[5], v[8]), (0.0, 0.0, 0.0));
    assert!(v[0] != 0.0, "valid token got no gradient: {v:?}");
    assert_eq!(r["output.adv"].shape, vec![4]);
    assert_eq!(r["loss"].shape, Vec::<usize>::new());
    assert!(r.contains_key("metric.clip_frac"));
}

/// `rloc run --backend cpu` agrees with the interpreter (cpu: f32 math, so 1e-5 relative).
#[test]
fn run_on_cpu_matches_the_interpreter() {
    let d = dir("runcpu");
    let f = write(&d, "grpo.rlo", GRPO);
    let b = batch(&d);
    let (oi, oc) = (d.join("i.safetensors"), d.join("c.safetensors"));
    for (backend, o) in [("interp", &oi), ("cpu", &oc)] {
        let out = o.display().to_string();
        let r = rloc(&[
            "run",
            &f,
            "--batch",
            &b,
            "--out",
            &out,
            "--backend",
            backend,
        ]);
        assert!(r.status.success(), "{backend}: {:?}", text(&r));
    }
    let (a, c) = (read_file(&oi).expect("i"), read_file(&oc).expect("c"));
    for name in ["loss", "grad.logp", "metric.clip_frac", "output.adv"] {
        let (Some(Values::Float(x)), Some(Values::Float(y))) = (a[name].values(), c[name].values())
        else {
            panic!("{name} not float")
        };
        assert_eq!(x.len(), y.len());
        for (p, q) in x.iter().zip(&y) {
            assert!(
                (p - q).abs() <= 1e-5 * p.abs().max(1e-3),
                "{name}: {p} vs {q}"
            );
        }
    }
}

#[test]
fn run_bad_batch_names_the_tensor() {
    let d = dir("runbad");
    let f = write(&d, "grpo.rlo", GRPO);
    let mut ts = read_file(Path::new(&batch(&d))).expect("batch");
    ts.remove("old_logp");
    let b = d.join("b.safetensors");
    write_file(&b, &ts).expect("write");
    let out = d.join("o.safetensors").display().to_string();
    let o = rloc(&[
        "run",
        &f,
        "--batch",
        &b.display().to_string(),
        "--out",
        &out,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("`old_logp`"), "{:?}", text(&o));
}

#[test]
fn run_unknown_param_and_bad_group_size() {
    let d = dir("runparam");
    let f = write(&d, "grpo.rlo", GRPO);
    let b = batch(&d);
    let out = d.join("o.safetensors").display().to_string();
    let o = rloc(&["run", &f, "--batch", &b, "--out", &out, "--param", "epz=1"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("epz"), "{:?}", text(&o));
    let mut ts = read_file(Path::new(&b)).expect("batch");
    ts.remove("group");
    let b2 = d.join("b2.safetensors");
    write_file(&b2, &ts).expect("write");
    let b2 = b2.display().to_string();
    let o = rloc(&[
        "run",
        &f,
        "--batch",
        &b2,
        "--out",
        &out,
        "--group-size",
        "3",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("group-size 3"), "{:?}", text(&o));
    let o = rloc(&[
        "run",
        &f,
        "--batch",
        &b2,
        "--out",
        &out,
        "--group-size",
        "2",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
}

#[test]
fn run_compile_error_exits_1() {
    let d = dir("runcompile");
    let f = write(
        &d,
        "bad.rlo",
        "objective o() {\n    loss batch_mean(nope)\n}\n",
    );
    let b = batch(&d);
    let out = d.join("o.safetensors").display().to_string();
    let o = rloc(&["run", &f, "--batch", &b, "--out", &out]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("bad.rlo:2:"), "{:?}", text(&o));
}

/// A realistic batch: B = 64 sequences (8 groups of 8), T = 512, lengths 200..=512, bf16 inputs.
/// Prints the wall time of `rloc run` (interpreter; the README's figure is a release build).
#[test]
fn run_64x512_batch() {
    let d = dir("big");
    let f = write(&d, "grpo.rlo", GRPO);
    let (b, tt) = (64usize, 512usize);
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut rnd = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let lengths: Vec<f64> = (0..b).map(|_| (200.0 + 313.0 * rnd()).floor()).collect();
    let logp: Vec<f64> = (0..b * tt).map(|_| -3.0 * rnd()).collect();
    let old: Vec<f64> = logp.iter().map(|x| x + 0.2 * (rnd() - 0.5)).collect();
    let reward: Vec<f64> = (0..b).map(|_| rnd().round()).collect();
    let group: Vec<f64> = (0..b).map(|i| (i / 8) as f64).collect();
    let mut ts = Tensors::new();
    ts.insert("logp".into(), t(Dtype::BF16, &[b, tt], &logp));
    ts.insert("old_logp".into(), t(Dtype::BF16, &[b, tt], &old));
    ts.insert("reward".into(), t(Dtype::F32, &[b], &reward));
    ts.insert("lengths".into(), t(Dtype::I64, &[b], &lengths));
    ts.insert("group".into(), t(Dtype::I64, &[b], &group));
    let bp = d.join("big.safetensors");
    write_file(&bp, &ts).expect("write");
    let out = d.join("out.safetensors").display().to_string();
    let start = std::time::Instant::now();
    let o = rloc(&[
        "run",
        &f,
        "--batch",
        &bp.display().to_string(),
        "--out",
        &out,
    ]);
    let secs = start.elapsed().as_secs_f64();
    assert!(o.status.success(), "{:?}", text(&o));
    eprintln!("rloc run 64x512 (interp): {secs:.3} s");
    let r = read_file(Path::new(&out)).expect("out");
    assert_eq!(r["grad.logp"].shape, vec![b, tt]);
    let Some(Values::Float(g)) = r["grad.logp"].values() else {
        panic!("grad not float")
    };
    // Exactly 0 past each sequence's length.
    for (s, &l) in lengths.iter().enumerate() {
        assert!(g[s * tt + l as usize..(s + 1) * tt]
            .iter()
            .all(|&x| x == 0.0));
    }
}

#[test]
fn explain_prints_the_gradient_formula() {
    let d = dir("explain");
    let f = write(&d, "grpo.rlo", GRPO);
    let o = rloc(&["explain", &f]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("d loss / d logp"), "{out}");
    let bad = write(&d, "bad.rlo", "objective o( {\n");
    let o = rloc(&["explain", &bad]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn run_with_micro_batches_matches_and_refusals_explain() {
    let d = dir("micro");
    let f = write(&d, "grpo.rlo", GRPO);
    let b = batch(&d);
    let (o1, o2) = (d.join("1.safetensors"), d.join("2.safetensors"));
    for (k, o) in [("1", &o1), ("3", &o2)] {
        let out = o.display().to_string();
        let r = rloc(&[
            "run",
            &f,
            "--batch",
            &b,
            "--out",
            &out,
            "--micro-batches",
            k,
            "--f64",
        ]);
        assert!(r.status.success(), "{:?}", text(&r));
    }
    same_results(&o1, &o2);
    let g = write(
        &d,
        "g.rlo",
        "objective g() {\n    input logp: tok diff\n    input reward: seq\n    let s = seq_sum(logp)\n    loss batch_mean(reward * (s - group_mean(s)))\n}\n",
    );
    let out = o1.display().to_string();
    let r = rloc(&[
        "run",
        &g,
        "--batch",
        &b,
        "--out",
        &out,
        "--micro-batches",
        "2",
    ]);
    assert_eq!(r.status.code(), Some(1));
    let err = text(&r).1;
    assert!(
        err.contains("cannot be split") && err.contains("g.rlo:5:"),
        "{err}"
    );
    let r = rloc(&[
        "run",
        &f,
        "--batch",
        &b,
        "--out",
        &out,
        "--micro-batches",
        "9",
    ]);
    assert_eq!(r.status.code(), Some(1));
    assert!(text(&r).1.contains("micro-batches"), "{:?}", text(&r));
}

#[test]
fn run_with_ranks_matches_the_whole_batch() {
    let d = dir("ranks");
    let f = write(&d, "grpo.rlo", GRPO);
    let b = batch(&d);
    let (o1, o2) = (d.join("1.safetensors"), d.join("3.safetensors"));
    for (k, o) in [("1", &o1), ("3", &o2)] {
        let out = o.display().to_string();
        let r = rloc(&[
            "run", &f, "--batch", &b, "--out", &out, "--ranks", k, "--f64",
        ]);
        assert!(r.status.success(), "{:?}", text(&r));
    }
    same_results(&o1, &o2);
    let out = o1.display().to_string();
    let r = rloc(&[
        "run",
        &f,
        "--batch",
        &b,
        "--out",
        &out,
        "--ranks",
        "2",
        "--micro-batches",
        "2",
    ]);
    assert_eq!(r.status.code(), Some(1));
    let q = write(
        &d,
        "q.rlo",
        "objective q() {\n    input logp: tok diff\n    input reward: seq\n    loss batch_mean(-logp * (reward > batch_quantile(reward, 0.5)))\n}\n",
    );
    let r = rloc(&["run", &q, "--batch", &b, "--out", &out, "--ranks", "2"]);
    assert_eq!(r.status.code(), Some(1));
    let err = text(&r).1;
    assert!(
        err.contains("data-parallel") && err.contains("q.rlo:4:"),
        "{err}"
    );
}

/// The loss, gradient, a metric and an output of two `rloc run` result files agree to 1e-12.
fn same_results(a: &std::path::Path, b: &std::path::Path) {
    let (a, c) = (read_file(a).expect("first"), read_file(b).expect("second"));
    for name in ["loss", "grad.logp", "metric.clip_frac", "output.adv"] {
        let (Some(Values::Float(x)), Some(Values::Float(y))) = (a[name].values(), c[name].values())
        else {
            panic!("{name} not float")
        };
        assert_eq!(x.len(), y.len(), "{name}");
        for (p, q) in x.iter().zip(&y) {
            assert!(
                (p - q).abs() <= 1e-12 * p.abs().max(1.0),
                "{name}: {p} vs {q}"
            );
        }
    }
}
