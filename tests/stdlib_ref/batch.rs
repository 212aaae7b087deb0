//! Padded reference batches (`[B][T]` with lengths, group ids, turn ids), their seeded random
//! generation, and their packing into the compiler's `Batch`.

use std::collections::BTreeMap;

use rlo_compiler::{Batch, Layout};

use super::dual::D;

/// A tiny deterministic generator (splitmix64), so batches do not depend on any crate's RNG.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// Uniform integer in lo..=hi.
    pub fn int(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

/// Which kind of batch an objective consumes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    /// Groups of rollouts of one prompt (sizes differ; one group of one; one all-equal group).
    Policy,
    /// Groups of exactly two sequences, one of them `chosen`.
    Pairs,
    /// Like `Policy`, with several turns per sequence and a turn-level reward.
    Turns,
    /// Like `Policy` but every group has 4 sequences (pass@k's closed form needs k ≤ group size).
    Groups4,
}

/// A padded batch: every token array is `[B][T]` with `T = max len`; slots past a sequence's
/// length hold NaN, so a reference that reads padding produces NaN and fails.
#[derive(Clone, Debug)]
pub struct Pad {
    pub len: Vec<usize>,
    pub group: Vec<usize>,
    pub n_groups: usize,
    /// Per sequence, the 0-based turn (within the sequence) of each valid token.
    pub tok_turn: Vec<Vec<usize>>,
    pub n_turns: Vec<usize>,
    pub tok: BTreeMap<&'static str, Vec<Vec<f64>>>,
    pub seq: BTreeMap<&'static str, Vec<f64>>,
    pub turn: BTreeMap<&'static str, Vec<Vec<f64>>>,
}

impl Pad {
    pub fn b(&self) -> usize {
        self.len.len()
    }
    /// Sequences of group `g`, in batch order.
    pub fn members(&self, g: usize) -> Vec<usize> {
        (0..self.b()).filter(|&i| self.group[i] == g).collect()
    }
    pub fn n_tokens(&self) -> usize {
        self.len.iter().sum()
    }
    pub fn max_len(&self) -> usize {
        self.len.iter().copied().max().unwrap_or(0)
    }

    /// Packs the batch (valid slots only) into the compiler's layout.
    pub fn to_batch(&self) -> Batch {
        let b = self.b();
        let mut seq_offsets = vec![0];
        let mut turn_offsets = vec![0];
        let mut tok_turn = Vec::new();
        for i in 0..b {
            let t0 = *turn_offsets.last().expect("starts at 0");
            for t in 0..self.len[i] {
                tok_turn.push((t0 + self.tok_turn[i][t]) as u32);
            }
            seq_offsets.push(seq_offsets.last().expect("starts at 0") + self.len[i]);
            turn_offsets.push(t0 + self.n_turns[i]);
        }
        let layout = Layout {
            seq_offsets,
            turn_offsets,
            tok_turn,
            seq_group: self.group.iter().map(|&g| g as u32).collect(),
            n_groups: self.n_groups,
        };
        layout.validate().expect("generated layout is valid");
        let mut values = BTreeMap::new();
        for (name, v) in &self.tok {
            let packed = (0..b).flat_map(|i| v[i][..self.len[i]].to_vec()).collect();
            values.insert(name.to_string(), packed);
        }
        for (name, v) in &self.turn {
            let packed = (0..b)
                .flat_map(|i| v[i][..self.n_turns[i]].to_vec())
                .collect();
            values.insert(name.to_string(), packed);
        }
        for (name, v) in &self.seq {
            values.insert(name.to_string(), v.clone());
        }
        Batch { layout, values }
    }
}

fn shuffle<T>(rng: &mut Rng, v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let j = rng.int(0, i);
        v.swap(i, j);
    }
}

/// A seeded random batch of the given shape. Every batch has: a group whose rewards are all equal
/// (not Pairs), an empty sequence (seed 3, Policy),
/// a group of one (Policy/Turns), a length-1 sequence, and tokens whose log-ratio
/// |logp − old_logp| lies in 5..20.
pub fn generate(seed: u64, shape: Shape) -> Pad {
    let mut rng = Rng::new(seed);
    let mut sizes: Vec<usize> = match shape {
        Shape::Pairs => vec![2; 4 + (seed as usize % 2)],
        Shape::Policy | Shape::Turns => vec![4, 1, 3, 2, rng.int(2, 5)],
        Shape::Groups4 => vec![4; 4],
    };
    shuffle(&mut rng, &mut sizes);
    let mut group = Vec::new();
    for (g, &s) in sizes.iter().enumerate() {
        group.extend(std::iter::repeat_n(g, s));
    }
    let b = group.len();
    let mut len: Vec<usize> = (0..b).map(|_| rng.int(1, 7)).collect();
    let short = rng.int(0, b - 1);
    len[short] = 1;
    // Seed 3 (Policy shape) also has an empty sequence (in a group of several).
    if seed == 3 && shape == Shape::Policy {
        if let Some(e) = (0..b).find(|&i| i != short && sizes[group[i]] > 1) {
            len[e] = 0;
        }
    }
    let t_max = len.iter().copied().max().unwrap_or(0);
    let pad_tok = |rng: &mut Rng, f: &mut dyn FnMut(&mut Rng) -> f64| -> Vec<Vec<f64>> {
        (0..b)
            .map(|i| {
                (0..t_max)
                    .map(|t| if t < len[i] { f(rng) } else { f64::NAN })
                    .collect()
            })
            .collect()
    };
    let logp = pad_tok(&mut rng, &mut |r| -r.range(0.02, 3.0));
    let mut old_logp = logp.clone();
    let mut ref_logp = logp.clone();
    let mut rollout_logp = logp.clone();
    for i in 0..b {
        for t in 0..len[i] {
            old_logp[i][t] = logp[i][t] + rng.range(-0.35, 0.35);
            ref_logp[i][t] = logp[i][t] + rng.range(-0.6, 0.6);
            rollout_logp[i][t] = logp[i][t] + rng.range(-0.2, 0.2);
        }
    }
    // Large log-ratios on a few tokens (both signs).
    for k in 0..3 {
        let nonempty: Vec<usize> = (0..b).filter(|&i| len[i] > 0).collect();
        let i = nonempty[rng.int(0, nonempty.len() - 1)];
        let t = rng.int(0, len[i] - 1);
        let m = rng.range(5.0, 20.0);
        old_logp[i][t] = logp[i][t] + if k % 2 == 0 { m } else { -m };
    }
    let entropy = pad_tok(&mut rng, &mut |r| r.range(0.05, 3.0));
    let value = pad_tok(&mut rng, &mut |r| r.range(-1.0, 1.0));
    let adv = pad_tok(&mut rng, &mut |r| r.range(-2.0, 2.0));

    // Rewards: binary for even seeds, quarter steps (with ties) for odd; one all-equal group.
    let multi: Vec<usize> = (0..sizes.len()).filter(|&g| sizes[g] > 1).collect();
    let equal_group = multi[rng.int(0, multi.len() - 1)];
    let mut reward: Vec<f64> = (0..b)
        .map(|_| {
            if seed.is_multiple_of(2) {
                f64::from(rng.unit() < 0.5)
            } else {
                (rng.range(-1.0, 1.0) * 4.0).round() / 4.0
            }
        })
        .collect();
    for i in 0..b {
        if group[i] == equal_group && shape != Shape::Pairs {
            reward[i] = 1.0;
        }
    }
    let correct: Vec<f64> = reward.iter().map(|&r| f64::from(r > 0.4)).collect();
    let mut chosen = vec![0.0; b];
    for g in 0..sizes.len() {
        let m: Vec<usize> = (0..b).filter(|&i| group[i] == g).collect();
        chosen[m[rng.int(0, m.len() - 1)]] = 1.0;
    }
    let desirable: Vec<f64> = (0..b).map(|_| f64::from(rng.unit() < 0.5)).collect();
    let pef: Vec<f64> = (0..b).map(|i| f64::from(group[i] % 2 == 1)).collect();
    let kl_logp: Vec<f64> = (0..b).map(|_| -rng.range(1.0, 20.0)).collect();
    let kl_ref_logp: Vec<f64> = kl_logp.iter().map(|&x| x + rng.range(-2.0, 1.0)).collect();

    // Turns: split each sequence into 1..=3 non-empty turns (Turns shape), else one turn.
    let mut tok_turn = Vec::new();
    let mut n_turns = Vec::new();
    for &l in &len {
        let k = if shape == Shape::Turns {
            rng.int(1, 3).min(l.max(1))
        } else {
            1
        };
        // k − 1 distinct cut points in 1..l.
        let mut cuts: Vec<usize> = (1..l).collect();
        shuffle(&mut rng, &mut cuts);
        let mut cuts: Vec<usize> = cuts.into_iter().take(k - 1).collect();
        cuts.sort_unstable();
        let tt = (0..l)
            .map(|t| cuts.iter().filter(|&&c| c <= t).count())
            .collect();
        tok_turn.push(tt);
        n_turns.push(k);
    }
    let k_max = n_turns.iter().copied().max().unwrap_or(1);
    let turn_reward: Vec<Vec<f64>> = (0..b)
        .map(|i| {
            (0..k_max)
                .map(|k| {
                    if k < n_turns[i] {
                        rng.range(-1.0, 1.0)
                    } else {
                        f64::NAN
                    }
                })
                .collect()
        })
        .collect();

    // V^old for ROVER: the value moved by a deterministic amount (no draw, so the other
    // inputs of a seed stay as they were)
    let old_value: Vec<Vec<f64>> = value
        .iter()
        .enumerate()
        .map(|(i, row)| {
            row.iter()
                .enumerate()
                .map(|(t, &v)| v + 0.3 * ((i * 7 + t * 3) as f64).sin())
                .collect()
        })
        .collect();
    let mut tok = BTreeMap::new();
    for (n, v) in [
        ("logp", logp),
        ("old_logp", old_logp),
        ("ref_logp", ref_logp),
        ("rollout_logp", rollout_logp),
        ("entropy", entropy),
        ("value", value),
        ("old_value", old_value),
        ("adv", adv),
    ] {
        tok.insert(n, v);
    }
    let mut seqv = BTreeMap::new();
    for (n, v) in [
        ("reward", reward),
        ("correct", correct),
        ("chosen", chosen),
        ("desirable", desirable),
        ("pef", pef),
        ("kl_logp", kl_logp),
        ("kl_ref_logp", kl_ref_logp),
    ] {
        seqv.insert(n, v);
    }
    let mut turn = BTreeMap::new();
    turn.insert("turn_reward", turn_reward);
    Pad {
        len,
        group,
        n_groups: sizes.len(),
        tok_turn,
        n_turns,
        tok,
        seq: seqv,
        turn,
    }
}

/// What a reference evaluation sees: the batch, the parameters, and which scalar input (if any)
/// carries the derivative seed.
pub struct Ctx<'a> {
    pub b: &'a Pad,
    pub params: &'a BTreeMap<String, f64>,
    /// `(input, sequence, position)`: the input element whose derivative is taken.
    pub seed: Option<(&'a str, usize, usize)>,
}

impl Ctx<'_> {
    pub fn p(&self, name: &str) -> f64 {
        *self
            .params
            .get(name)
            .unwrap_or_else(|| panic!("reference has no parameter {name}"))
    }
    pub fn flag(&self, name: &str) -> bool {
        self.p(name) != 0.0
    }
    /// Token input `name` as `[B][len_i]` duals (seeded where asked).
    pub fn tok(&self, name: &str) -> Vec<Vec<D>> {
        let v = &self.b.tok[name];
        (0..self.b.b())
            .map(|i| {
                (0..self.b.len[i])
                    .map(|t| D::var(v[i][t], self.seed == Some((name, i, t))))
                    .collect()
            })
            .collect()
    }
    /// Token input as plain values.
    pub fn tokv(&self, name: &str) -> Vec<Vec<f64>> {
        let v = &self.b.tok[name];
        (0..self.b.b())
            .map(|i| v[i][..self.b.len[i]].to_vec())
            .collect()
    }
    pub fn seq(&self, name: &str) -> Vec<f64> {
        self.b.seq[name].clone()
    }
    pub fn seqb(&self, name: &str) -> Vec<bool> {
        self.b.seq[name].iter().map(|&x| x != 0.0).collect()
    }
    pub fn turn(&self, name: &str) -> Vec<Vec<f64>> {
        let v = &self.b.turn[name];
        (0..self.b.b())
            .map(|i| v[i][..self.b.n_turns[i]].to_vec())
            .collect()
    }
}
