//! The verifiable task: multi-digit addition, `BOS 07+35=` → `42 EOS`, with its own tokenizer.
//!
//! Operands are zero-padded to `digits` digits, so every prompt has the same length (no left
//! padding is needed for batched generation); the answer is written without leading zeros.

use rand::Rng;

pub const PAD: u32 = 0;
pub const BOS: u32 = 1;
pub const EOS: u32 = 2;
const DIGIT0: u32 = 3;
const PLUS: u32 = 13;
const EQUALS: u32 = 14;
pub const VOCAB: usize = 15;

/// Token id of one character of the task's alphabet (`0-9 + =`).
pub fn encode_char(c: char) -> Option<u32> {
    match c {
        '0'..='9' => Some(DIGIT0 + (c as u32 - '0' as u32)),
        '+' => Some(PLUS),
        '=' => Some(EQUALS),
        _ => None,
    }
}

/// Text of token ids, special tokens as `<s>`, `</s>`, `_`.
pub fn decode(ids: &[u32]) -> String {
    ids.iter()
        .map(|&t| match t {
            PAD => "_".to_string(),
            BOS => "<s>".to_string(),
            EOS => "</s>".to_string(),
            PLUS => "+".to_string(),
            EQUALS => "=".to_string(),
            d if (DIGIT0..DIGIT0 + 10).contains(&d) => {
                char::from((d - DIGIT0) as u8 + b'0').to_string()
            }
            _ => "?".to_string(),
        })
        .collect()
}

/// How a completion is scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
pub enum RewardKind {
    /// 1 if the answer (up to EOS) is exactly the sum, else 0.
    Exact,
    /// Fraction of answer characters right at their position (an answer without EOS scores 0).
    Partial,
}

#[derive(Clone, Debug)]
pub struct Problem {
    pub a: u64,
    pub b: u64,
}

#[derive(Clone, Debug)]
pub struct Addition {
    pub digits: u32,
}

impl Addition {
    pub fn new(digits: u32) -> Addition {
        Addition {
            digits: digits.clamp(1, 9),
        }
    }

    pub fn sample(&self, rng: &mut impl Rng) -> Problem {
        let hi = 10u64.pow(self.digits);
        Problem {
            a: rng.random_range(0..hi),
            b: rng.random_range(0..hi),
        }
    }

    /// Prompt length in tokens: `BOS`, two operands, `+`, `=`.
    pub fn prompt_len(&self) -> usize {
        2 * self.digits as usize + 3
    }

    /// Longest answer plus EOS.
    pub fn max_answer_len(&self) -> usize {
        self.digits as usize + 2
    }

    pub fn prompt(&self, p: &Problem) -> Vec<u32> {
        let w = self.digits as usize;
        let text = format!("{:0w$}+{:0w$}=", p.a, p.b);
        std::iter::once(BOS)
            .chain(text.chars().filter_map(encode_char))
            .collect()
    }

    /// The reference answer followed by EOS.
    pub fn answer(&self, p: &Problem) -> Vec<u32> {
        (p.a + p.b)
            .to_string()
            .chars()
            .filter_map(encode_char)
            .chain(std::iter::once(EOS))
            .collect()
    }

    /// Reward of a completion (token ids, possibly padded after EOS).
    pub fn reward(&self, p: &Problem, completion: &[u32], kind: RewardKind) -> f64 {
        let want = self.answer(p);
        let end = completion.iter().position(|&t| t == EOS);
        let Some(end) = end else { return 0.0 };
        let got = &completion[..=end];
        match kind {
            RewardKind::Exact => f64::from(u8::from(got == want.as_slice())),
            RewardKind::Partial => {
                let right = got.iter().zip(&want).filter(|(g, w)| g == w).count();
                right as f64 / got.len().max(want.len()) as f64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_answers_and_rewards() {
        let t = Addition::new(2);
        let p = Problem { a: 7, b: 95 };
        assert_eq!(decode(&t.prompt(&p)), "<s>07+95=");
        assert_eq!(t.prompt(&p).len(), t.prompt_len());
        assert_eq!(decode(&t.answer(&p)), "102</s>");
        let ans = t.answer(&p);
        assert_eq!(t.reward(&p, &ans, RewardKind::Exact), 1.0);
        let mut padded = ans.clone();
        padded.push(PAD);
        assert_eq!(t.reward(&p, &padded, RewardKind::Exact), 1.0);
        let wrong: Vec<u32> = "103".chars().filter_map(encode_char).chain([EOS]).collect();
        assert_eq!(t.reward(&p, &wrong, RewardKind::Exact), 0.0);
        assert_eq!(t.reward(&p, &wrong, RewardKind::Partial), 0.75);
        assert_eq!(t.reward(&p, &ans[..3], RewardKind::Partial), 0.0);
        assert!(t.max_answer_len() >= ans.len());
    }
}
