//! CPU backend (Cranelift JIT) against the reference interpreter.
//! (scratch: smoke run over the stdlib until the interpreter lands)

use rlo_compiler::back::clif::{self, ClifOptions};
use rlo_compiler::{compile, Batch, Compiled, DType, Layout, Level, Options, Schedule};
use rlo_runtime::cpu::CpuKernel;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn stdlib_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../stdlib")
}

fn objectives() -> Vec<(String, String)> {
    let mut v = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(stdlib_dir())
        .expect("stdlib dir")
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        let text = std::fs::read_to_string(&p).expect("read");
        if p.extension().is_some_and(|x| x == "rlo")
            && text.lines().any(|l| l.starts_with("objective"))
        {
            v.push((
                p.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                text,
            ));
        }
    }
    v
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn int(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn schedule_of(c: &Compiled) -> Schedule {
    if c.schedule.stages.is_empty() {
        clif::one_pass_schedule(&c.module)
    } else {
        c.schedule.clone()
    }
}

fn random_batch(c: &Compiled, seed: u64) -> Batch {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let n_groups = 1 + r.int(4);
    let mut seq_group = Vec::new();
    let mut lengths = Vec::new();
    for g in 0..n_groups {
        for _ in 0..1 + r.int(4) {
            seq_group.push(g as u32);
            lengths.push(if r.int(6) == 0 { 0 } else { 1 + r.int(9) });
        }
    }
    let mut layout = Layout::single_turn(&lengths, seq_group);
    // Random turns: split each sequence's tokens into 1..3 turns.
    let mut turn_offsets = vec![0];
    let mut tok_turn = Vec::new();
    for &l in &lengths {
        let k = if l == 0 { 1 } else { 1 + r.int(3.min(l)) };
        let base = *turn_offsets.last().unwrap_or(&0);
        for t in 0..l {
            tok_turn.push((base + (t * k / l.max(1))) as u32);
        }
        turn_offsets.push(base + k);
    }
    layout.turn_offsets = turn_offsets;
    layout.tok_turn = tok_turn;
    layout.validate().expect("valid layout");
    let mut values = BTreeMap::new();
    for inp in &c.module.inputs {
        let n = layout.count(inp.ty.level);
        let v = (0..n)
            .map(|_| match inp.ty.dtype {
                DType::Bool => f64::from(r.int(2) == 1),
                DType::F32 if inp.ty.level <= Level::Turn && !inp.name.contains("entropy") => {
                    -0.05 - 2.0 * r.unit()
                }
                DType::F32 => 0.1 + r.unit(),
            })
            .collect();
        values.insert(inp.name.clone(), v);
    }
    Batch { layout, values }
}

#[test]
fn stdlib_smoke() {
    let mut failures = Vec::new();
    for (name, text) in objectives() {
        let c = match compile(&format!("stdlib/{name}.rlo"), &text, &Options::default()) {
            Ok(c) => c,
            Err(f) => {
                eprintln!(
                    "{name}: does not compile: {}",
                    f.render(false).lines().next().unwrap_or("")
                );
                continue;
            }
        };
        let s = schedule_of(&c);
        let params: Vec<f64> = c.module.params.iter().map(|p| p.default).collect();
        for f64 in [true, false] {
            let k = match CpuKernel::compile(&c.module, &s, ClifOptions { f64 }) {
                Ok(k) => k,
                Err(e) => {
                    failures.push(format!("{name}: {e}"));
                    continue;
                }
            };
            for seed in 0..5 {
                let b = random_batch(&c, seed);
                match (
                    k.evaluate(&c.module, &b, &params, 1),
                    k.evaluate(&c.module, &b, &params, 2),
                ) {
                    (Ok(a), Ok(bb)) => {
                        if format!("{a:?}") != format!("{bb:?}") {
                            failures.push(format!("{name}: thread count changed results"));
                        }
                        eprintln!("{name} f64={f64} seed {seed}: loss {}", a.loss);
                    }
                    (Err(e), _) | (_, Err(e)) => failures.push(format!("{name}: {e}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
