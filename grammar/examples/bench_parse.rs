//! Times `parse` and `format_file` on a generated ~500-line file (or on the file given).
//!
//! `cargo run --release -p rlo-grammar --example bench_parse [FILE]`

use rlo_grammar::{fmt::format_file, parse, FileId};
use std::time::Instant;

/// About `lines` lines: helper fns (each 6 lines) and one objective with many lets.
fn generate(lines: usize) -> String {
    let mut s = String::from("// generated benchmark input\nuse std::kl::{k1, k3}\n\n");
    let fns = lines / 4 / 6;
    for i in 0..fns {
        s.push_str(&format!(
            "/// helper {i}\nfn h{i}(x, y: tok, eps: f32 = 0.2) {{\n    let d = y - x * {i}.5\n    let r = clamp(exp(d), 1 - eps, 1 + eps)\n    if d > 0 then r * d else -r ^ 2\n}}\n\n"
        ));
    }
    s.push_str("objective big(eps: f32 = 0.2, beta: f32 = 0.04) {\n    input logp: tok diff\n    input old_logp: tok\n    input reward: seq\n");
    let mut n = s.lines().count();
    let mut i = 0;
    while n < lines - 3 {
        s.push_str(&format!(
            "    let v{i} = (reward - group_mean(reward, where: reward > {i})) / (group_std(reward) + 1e-4) * h{}(logp, old_logp) // note {i}\n",
            i % fns.max(1)
        ));
        i += 1;
        n += 1;
    }
    s.push_str(&format!(
        "    loss batch_mean(seq_mean(v{}))\n}}\n",
        i.saturating_sub(1)
    ));
    s
}

fn main() {
    let src = match std::env::args().nth(1) {
        Some(p) => std::fs::read_to_string(p).unwrap_or_default(),
        None => generate(500),
    };
    let lines = src.lines().count();
    let reps = 50;
    let mut best_parse = f64::MAX;
    let mut best_fmt = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        let ast = parse(&src, FileId(0));
        best_parse = best_parse.min(t.elapsed().as_secs_f64());
        let Ok(ast) = ast else {
            eprintln!("input does not parse");
            std::process::exit(1);
        };
        let t = Instant::now();
        let out = format_file(&ast, &src);
        best_fmt = best_fmt.min(t.elapsed().as_secs_f64());
        std::hint::black_box(out);
    }
    println!(
        "{lines} lines, {} bytes: parse {:.3} ms, format {:.3} ms (best of {reps})",
        src.len(),
        best_parse * 1e3,
        best_fmt * 1e3
    );
}
