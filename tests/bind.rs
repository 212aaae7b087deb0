//! Batch binding (`rlo_runtime::bind`): every layout the runtime accepts, every dtype, and one
//! test per malformed batch checking that the error names the tensor at fault.

use rlo_compiler::ir::{Expr, Input, Module};
use rlo_compiler::types::{DType, Level, Ty};
use rlo_compiler::Evaluation;
use rlo_grammar::Span;
use rlo_runtime::bind::{bind, BindOptions, Bound, TokShape};
use rlo_runtime::tensor::{read_bytes, to_bytes, Tensor, Tensors};
use rlo_runtime::write::evaluation_tensors;
use safetensors::Dtype;

const F32: DType = DType::F32;

/// A module with the given inputs (name, level, dtype, diff); `grouped` adds a group-level node.
fn module(inputs: &[(&str, Level, DType, bool)], grouped: bool) -> Module {
    let mut m = Module::new("t");
    for &(name, level, dtype, diff) in inputs {
        m.inputs.push(Input {
            name: name.into(),
            ty: Ty::new(level, dtype),
            diff,
            span: Span::default(),
        });
    }
    let c = m.append(
        Expr::Const(1.0),
        Ty::new(Level::Batch, F32),
        Span::default(),
    );
    m.loss = c;
    if grouped {
        m.append(
            Expr::Broadcast {
                arg: c,
                to: Level::Group,
            },
            Ty::new(Level::Group, F32),
            Span::default(),
        );
    }
    m
}

/// The usual GRPO-like inputs: `logp` tok (diff), `reward` seq.
fn grpo() -> Module {
    module(
        &[
            ("logp", Level::Tok, F32, true),
            ("reward", Level::Seq, F32, false),
        ],
        true,
    )
}

fn t(dtype: Dtype, shape: &[usize], v: &[f64]) -> Tensor {
    Tensor::from_f64(dtype, shape, v).expect("tensor")
}

fn set(items: Vec<(&str, Tensor)>) -> Tensors {
    items.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// A good padded batch: B = 3, T = 4, lengths 2, 4, 0; groups [5, 5, 2].
fn padded() -> Tensors {
    set(vec![
        (
            "logp",
            t(
                Dtype::F32,
                &[3, 4],
                &[
                    1.,
                    2.,
                    f64::NAN,
                    f64::INFINITY,
                    3.,
                    4.,
                    5.,
                    6.,
                    0.,
                    0.,
                    0.,
                    0.,
                ],
            ),
        ),
        (
            "mask",
            t(
                Dtype::BOOL,
                &[3, 4],
                &[1., 1., 0., 0., 1., 1., 1., 1., 0., 0., 0., 0.],
            ),
        ),
        ("reward", t(Dtype::F32, &[3], &[1., 0., 1.])),
        ("group", t(Dtype::I64, &[3], &[5., 5., 2.])),
    ])
}

fn ok(ts: &Tensors, m: &Module) -> Bound {
    bind(ts, m, &BindOptions::default()).expect("binds")
}

/// Binding must fail, and the message must name `tensor` and contain every word of `also`.
fn fails(ts: &Tensors, m: &Module, opts: &BindOptions, tensor: &str, also: &[&str]) {
    let err = bind(ts, m, opts).expect_err("must fail").to_string();
    assert!(
        err.contains(&format!("`{tensor}`")),
        "error does not name `{tensor}`: {err}"
    );
    for w in also {
        assert!(err.contains(w), "error lacks {w:?}: {err}");
    }
}

fn fails_default(ts: &Tensors, m: &Module, tensor: &str, also: &[&str]) {
    fails(ts, m, &BindOptions::default(), tensor, also)
}

// ---------------------------------------------------------------- good layouts

#[test]
fn padded_mask_packs_valid_tokens_and_ignores_padding() {
    let b = ok(&padded(), &grpo());
    let l = &b.batch.layout;
    assert_eq!(l.seq_offsets, vec![0, 2, 6, 6]);
    assert_eq!(b.batch.values["logp"], vec![1., 2., 3., 4., 5., 6.]);
    assert_eq!(b.batch.values["reward"], vec![1., 0., 1.]);
    // ids 5, 5, 2: sorted distinct ids [2, 5] → groups 1, 1, 0.
    assert_eq!(l.seq_group, vec![1, 1, 0]);
    assert_eq!(l.n_groups, 2);
    assert_eq!(l.turn_offsets, vec![0, 1, 2, 3]);
}

#[test]
fn mask_with_holes_packs_masked_positions_in_order() {
    let mut ts = padded();
    ts.insert(
        "mask".into(),
        t(
            Dtype::U8,
            &[3, 4],
            &[0., 1., 0., 0., 0., 1., 0., 1., 0., 0., 1., 0.],
        ),
    );
    let b = ok(&ts, &grpo());
    assert_eq!(b.batch.layout.seq_offsets, vec![0, 1, 3, 4]);
    assert_eq!(b.batch.values["logp"], vec![2., 4., 6., 0.]);
}

#[test]
fn float_mask_is_accepted() {
    let mut ts = padded();
    ts.insert(
        "mask".into(),
        t(
            Dtype::F32,
            &[3, 4],
            &[1., 1., 0., 0., 1., 1., 1., 1., 0., 0., 0., 0.],
        ),
    );
    assert_eq!(ok(&ts, &grpo()).batch.layout.seq_offsets, vec![0, 2, 6, 6]);
}

#[test]
fn lengths_layout_takes_a_prefix() {
    let mut ts = padded();
    ts.remove("mask");
    ts.insert("lengths".into(), t(Dtype::I32, &[3], &[1., 4., 0.]));
    let b = ok(&ts, &grpo());
    assert_eq!(b.batch.layout.seq_offsets, vec![0, 1, 5, 5]);
    assert_eq!(b.batch.values["logp"], vec![1., 3., 4., 5., 6.]);
    assert!(matches!(b.shapes.tok, TokShape::Padded { t: 4, .. }));
}

#[test]
fn packed_layout_with_offsets() {
    let ts = set(vec![
        ("logp", t(Dtype::F64, &[5], &[0.5, 1.5, 2.5, 3.5, 4.5])),
        ("seq_offsets", t(Dtype::I64, &[4], &[0., 3., 3., 5.])),
        ("reward", t(Dtype::F32, &[3], &[1., 2., 3.])),
        ("group", t(Dtype::I64, &[3], &[0., 1., 0.])),
    ]);
    let b = ok(&ts, &grpo());
    assert_eq!(b.batch.layout.seq_offsets, vec![0, 3, 3, 5]);
    assert_eq!(b.batch.values["logp"], vec![0.5, 1.5, 2.5, 3.5, 4.5]);
    assert_eq!(b.batch.layout.seq_group, vec![0, 1, 0]);
    assert_eq!(b.shapes.tok, TokShape::Packed { n: 5 });
}

#[test]
fn unordered_group_ids_map_to_sorted_indices_and_group_inputs_follow() {
    let m = module(
        &[
            ("reward", Level::Seq, F32, false),
            ("w", Level::Group, F32, false),
        ],
        true,
    );
    let ts = set(vec![
        ("lengths", t(Dtype::I64, &[5], &[0.; 5])),
        ("reward", t(Dtype::F32, &[5], &[1., 2., 3., 4., 5.])),
        ("group", t(Dtype::I64, &[5], &[70., -3., 70., 9., -3.])),
        ("w", t(Dtype::F32, &[3], &[10., 20., 30.])),
    ]);
    let b = ok(&ts, &m);
    // Distinct ids sorted: -3 → 0, 9 → 1, 70 → 2.
    assert_eq!(b.batch.layout.seq_group, vec![2, 0, 2, 1, 0]);
    assert_eq!(b.batch.values["w"], vec![10., 20., 30.]);
}

#[test]
fn group_size_option_makes_consecutive_groups() {
    let m = module(&[("reward", Level::Seq, F32, false)], true);
    let ts = set(vec![
        ("lengths", t(Dtype::I64, &[6], &[0.; 6])),
        ("reward", t(Dtype::F32, &[6], &[0.; 6])),
    ]);
    let opts = BindOptions {
        group_size: Some(3),
    };
    let b = bind(&ts, &m, &opts).expect("binds");
    assert_eq!(b.batch.layout.seq_group, vec![0, 0, 0, 1, 1, 1]);
    assert_eq!(b.batch.layout.n_groups, 2);
}

#[test]
fn without_group_ops_each_sequence_is_its_own_group() {
    let m = module(&[("logp", Level::Tok, F32, true)], false);
    let ts = set(vec![
        ("logp", t(Dtype::F32, &[2, 2], &[1., 2., 3., 4.])),
        ("lengths", t(Dtype::U8, &[2], &[2., 1.])),
    ]);
    let b = ok(&ts, &m);
    assert_eq!(b.batch.layout.seq_group, vec![0, 1]);
}

#[test]
fn turns_and_turn_level_inputs() {
    let m = module(
        &[
            ("logp", Level::Tok, F32, true),
            ("r", Level::Turn, F32, false),
        ],
        false,
    );
    // Seq 0: tokens with turns 0 0 2 (turn 1 empty) → 3 turns; seq 1: 0 1 → 2 turns.
    let ts = set(vec![
        (
            "logp",
            t(Dtype::F32, &[2, 4], &[1., 2., 3., 9., 4., 5., 9., 9.]),
        ),
        (
            "mask",
            t(Dtype::BOOL, &[2, 4], &[1., 1., 1., 0., 1., 1., 0., 0.]),
        ),
        (
            "turn",
            t(Dtype::I64, &[2, 4], &[0., 0., 2., 9., 0., 1., 0., 0.]),
        ),
        ("r", t(Dtype::F32, &[2, 3], &[10., 11., 12., 20., 21., 99.])),
    ]);
    let b = ok(&ts, &m);
    let l = &b.batch.layout;
    assert_eq!(l.turn_offsets, vec![0, 3, 5]);
    assert_eq!(l.tok_turn, vec![0, 0, 2, 3, 4]);
    assert_eq!(b.batch.values["r"], vec![10., 11., 12., 20., 21.]);
}

#[test]
fn half_precision_and_f64_inputs_decode_exactly() {
    for dt in [Dtype::BF16, Dtype::F16, Dtype::F64, Dtype::F32] {
        let mut ts = padded();
        ts.insert(
            "logp".into(),
            t(
                dt,
                &[3, 4],
                &[0.5, -1.25, 0., 0., 2., 3., -4., 0.75, 0., 0., 0., 0.],
            ),
        );
        let b = ok(&ts, &grpo());
        assert_eq!(
            b.batch.values["logp"],
            vec![0.5, -1.25, 2., 3., -4., 0.75],
            "{dt:?}"
        );
    }
}

#[test]
fn file_round_trip_and_results_in_input_shape() {
    let mut m = grpo();
    m.outputs.push(rlo_compiler::ir::Named {
        name: "adv".into(),
        value: m.loss,
        span: Span::default(),
    });
    m.grads.push(rlo_compiler::ir::Grad {
        input: 0,
        value: m.loss,
    });
    let ts = read_bytes(&to_bytes(&padded()).expect("bytes"), "mem").expect("reads");
    let b = ok(&ts, &m);
    let eval = Evaluation {
        loss: 0.25,
        grads: vec![vec![1., 2., 3., 4., 5., 6.]],
        metrics: vec![],
        outputs: vec![vec![7.]],
    };
    let out =
        evaluation_tensors(&m, &b.batch.layout, &b.shapes, &eval, Dtype::F64).expect("writes");
    let g = &out["grad.logp"];
    assert_eq!(g.shape, vec![3, 4]);
    let want = [1., 2., 0., 0., 3., 4., 5., 6., 0., 0., 0., 0.];
    assert_eq!(
        g.values(),
        Some(rlo_runtime::tensor::Values::Float(want.to_vec()))
    );
    assert_eq!(out["loss"].shape, Vec::<usize>::new());
    assert_eq!(out["output.adv"].shape, Vec::<usize>::new());
    assert_eq!(out["output.adv"].dtype, Dtype::F64);
}

// ---------------------------------------------------------------- bad batches

#[test]
fn missing_input_tensor() {
    let mut ts = padded();
    ts.remove("reward");
    fails_default(&ts, &grpo(), "reward", &["missing", "[3]"]);
}

#[test]
fn token_input_wrong_shape() {
    let mut ts = padded();
    ts.insert("logp".into(), t(Dtype::F32, &[3, 5], &[0.; 15]));
    fails_default(&ts, &grpo(), "logp", &["[3, 5]", "[3, 4]"]);
}

#[test]
fn seq_input_wrong_shape() {
    let mut ts = padded();
    ts.insert("reward".into(), t(Dtype::F32, &[3, 1], &[0.; 3]));
    fails_default(&ts, &grpo(), "reward", &["[B] = [3]"]);
}

#[test]
fn group_input_wrong_shape() {
    let m = module(&[("w", Level::Group, F32, false)], true);
    let ts = set(vec![
        ("lengths", t(Dtype::I64, &[2], &[0., 0.])),
        ("group", t(Dtype::I64, &[2], &[0., 1.])),
        ("w", t(Dtype::F32, &[3], &[0.; 3])),
    ]);
    fails_default(&ts, &m, "w", &["[G] = [2]"]);
}

#[test]
fn packed_token_input_wrong_length() {
    let ts = set(vec![
        ("logp", t(Dtype::F32, &[4], &[0.; 4])),
        ("seq_offsets", t(Dtype::I64, &[3], &[0., 2., 5.])),
        ("reward", t(Dtype::F32, &[2], &[0.; 2])),
        ("group", t(Dtype::I64, &[2], &[0., 0.])),
    ]);
    fails_default(&ts, &grpo(), "logp", &["[N] = [5]"]);
}

#[test]
fn wrong_dtype_for_float_input() {
    let mut ts = padded();
    ts.insert("reward".into(), t(Dtype::BOOL, &[3], &[1., 0., 1.]));
    fails_default(&ts, &grpo(), "reward", &["dtype bool"]);
}

#[test]
fn float_given_for_bool_input() {
    let m = module(&[("ok", Level::Seq, DType::Bool, false)], false);
    let ts = set(vec![
        ("lengths", t(Dtype::I64, &[2], &[0., 0.])),
        ("ok", t(Dtype::F32, &[2], &[1., 0.])),
    ]);
    fails_default(&ts, &m, "ok", &["dtype f32"]);
}

#[test]
fn bool_input_holding_two() {
    let m = module(&[("ok", Level::Seq, DType::Bool, false)], false);
    let ts = set(vec![
        ("lengths", t(Dtype::I64, &[2], &[0., 0.])),
        ("ok", t(Dtype::U8, &[2], &[1., 2.])),
    ]);
    fails_default(&ts, &m, "ok", &["[1]", "0 or 1"]);
}

#[test]
fn nan_at_valid_position_is_reported_with_its_index() {
    let mut ts = padded();
    let mut v = vec![0.; 12];
    v[6] = f64::NAN; // [1, 2], valid
    ts.insert("logp".into(), t(Dtype::F32, &[3, 4], &v));
    fails_default(&ts, &grpo(), "logp", &["NaN", "[1, 2]"]);
}

#[test]
fn inf_in_seq_input() {
    let mut ts = padded();
    ts.insert(
        "reward".into(),
        t(Dtype::F64, &[3], &[0., f64::NEG_INFINITY, 0.]),
    );
    fails_default(&ts, &grpo(), "reward", &["-inf", "[1]"]);
}

#[test]
fn length_longer_than_t() {
    let mut ts = padded();
    ts.remove("mask");
    ts.insert("lengths".into(), t(Dtype::I64, &[3], &[1., 5., 0.]));
    fails_default(&ts, &grpo(), "lengths", &["[1]", "5", "T = 4"]);
}

#[test]
fn negative_length() {
    let mut ts = padded();
    ts.remove("mask");
    ts.insert("lengths".into(), t(Dtype::I64, &[3], &[1., -1., 0.]));
    fails_default(&ts, &grpo(), "lengths", &["-1"]);
}

#[test]
fn float_lengths() {
    let mut ts = padded();
    ts.remove("mask");
    ts.insert("lengths".into(), t(Dtype::F32, &[3], &[1., 1., 0.]));
    fails_default(&ts, &grpo(), "lengths", &["integer"]);
}

#[test]
fn mask_value_not_zero_or_one() {
    let mut ts = padded();
    ts.insert(
        "mask".into(),
        t(
            Dtype::U8,
            &[3, 4],
            &[1., 2., 0., 0., 1., 1., 1., 1., 0., 0., 0., 0.],
        ),
    );
    fails_default(&ts, &grpo(), "mask", &["[0, 1]", "0 or 1"]);
}

#[test]
fn mask_of_wrong_rank() {
    let mut ts = padded();
    ts.insert("mask".into(), t(Dtype::BOOL, &[12], &[1.; 12]));
    fails_default(&ts, &grpo(), "mask", &["[B, T]"]);
}

#[test]
fn empty_batch() {
    let ts = set(vec![
        ("logp", t(Dtype::F32, &[0, 4], &[])),
        ("mask", t(Dtype::BOOL, &[0, 4], &[])),
        ("reward", t(Dtype::F32, &[0], &[])),
        ("group", t(Dtype::I64, &[0], &[])),
    ]);
    fails_default(&ts, &grpo(), "mask", &["B = 0"]);
}

#[test]
fn seq_offsets_not_monotone() {
    let ts = set(vec![
        ("logp", t(Dtype::F32, &[3], &[0.; 3])),
        ("seq_offsets", t(Dtype::I64, &[4], &[0., 2., 1., 3.])),
        ("reward", t(Dtype::F32, &[3], &[0.; 3])),
        ("group", t(Dtype::I64, &[3], &[0.; 3])),
    ]);
    fails_default(&ts, &grpo(), "seq_offsets", &["[2]", "non-decreasing"]);
}

#[test]
fn seq_offsets_not_starting_at_zero() {
    let ts = set(vec![
        ("logp", t(Dtype::F32, &[3], &[0.; 3])),
        ("seq_offsets", t(Dtype::I64, &[3], &[1., 2., 3.])),
        ("reward", t(Dtype::F32, &[2], &[0.; 2])),
        ("group", t(Dtype::I64, &[2], &[0.; 2])),
    ]);
    fails_default(&ts, &grpo(), "seq_offsets", &["start at 0"]);
}

#[test]
fn two_token_layouts_at_once() {
    let mut ts = padded();
    ts.insert("lengths".into(), t(Dtype::I64, &[3], &[1., 1., 1.]));
    fails_default(&ts, &grpo(), "mask", &["`lengths`", "exactly one"]);
}

#[test]
fn token_input_without_any_layout() {
    let mut ts = padded();
    ts.remove("mask");
    fails_default(&ts, &grpo(), "mask", &["`logp`", "seq_offsets"]);
}

#[test]
fn turn_ids_decreasing() {
    let m = module(&[("logp", Level::Tok, F32, true)], false);
    let ts = set(vec![
        ("logp", t(Dtype::F32, &[1, 3], &[0.; 3])),
        ("lengths", t(Dtype::I64, &[1], &[3.])),
        ("turn", t(Dtype::I64, &[1, 3], &[0., 1., 0.])),
    ]);
    fails_default(&ts, &m, "turn", &["[0, 2]", "non-decreasing"]);
}

#[test]
fn turn_ids_negative() {
    let m = module(&[("logp", Level::Tok, F32, true)], false);
    let ts = set(vec![
        ("logp", t(Dtype::F32, &[1, 3], &[0.; 3])),
        ("lengths", t(Dtype::I64, &[1], &[3.])),
        ("turn", t(Dtype::I32, &[1, 3], &[-1., 0., 0.])),
    ]);
    fails_default(&ts, &m, "turn", &["[0, 0]", "-1"]);
}

#[test]
fn turn_level_input_with_too_few_turns() {
    let m = module(
        &[
            ("logp", Level::Tok, F32, true),
            ("r", Level::Turn, F32, false),
        ],
        false,
    );
    let ts = set(vec![
        ("logp", t(Dtype::F32, &[1, 3], &[0.; 3])),
        ("lengths", t(Dtype::I64, &[1], &[3.])),
        ("turn", t(Dtype::I64, &[1, 3], &[0., 1., 2.])),
        ("r", t(Dtype::F32, &[1, 2], &[0.; 2])),
    ]);
    fails_default(&ts, &m, "r", &["K ≥ 3"]);
}

#[test]
fn float_group_ids() {
    let mut ts = padded();
    ts.insert("group".into(), t(Dtype::F32, &[3], &[0., 0., 1.]));
    fails_default(&ts, &grpo(), "group", &["integer"]);
}

#[test]
fn group_ids_of_wrong_length() {
    let mut ts = padded();
    ts.insert("group".into(), t(Dtype::I64, &[4], &[0., 0., 1., 1.]));
    fails_default(&ts, &grpo(), "group", &["[B] = [3]"]);
}

#[test]
fn groups_missing_for_an_objective_with_group_ops() {
    let mut ts = padded();
    ts.remove("group");
    fails_default(&ts, &grpo(), "group", &["--group-size"]);
}

#[test]
fn group_size_not_dividing_the_batch() {
    let mut ts = padded();
    ts.remove("group");
    let err = bind(
        &ts,
        &grpo(),
        &BindOptions {
            group_size: Some(2),
        },
    )
    .expect_err("must fail")
    .to_string();
    assert!(
        err.contains("group-size 2") && err.contains("B = 3"),
        "{err}"
    );
}

#[test]
fn group_tensor_and_group_size_together() {
    let err = bind(
        &padded(),
        &grpo(),
        &BindOptions {
            group_size: Some(3),
        },
    )
    .expect_err("must fail")
    .to_string();
    assert!(err.contains("`group`"), "{err}");
}

#[test]
fn input_named_like_a_layout_tensor() {
    let m = module(&[("mask", Level::Tok, DType::Bool, false)], false);
    fails_default(&padded(), &m, "mask", &["reserved"]);
}

#[test]
fn corrupt_file() {
    let err = read_bytes(
        b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage",
        "batch.safetensors",
    )
    .expect_err("must fail")
    .to_string();
    assert!(err.contains("batch.safetensors"), "{err}");
}

#[test]
fn absurd_token_count_without_token_tensors() {
    let m = module(&[("reward", Level::Seq, F32, false)], false);
    let ts = set(vec![
        ("seq_offsets", t(Dtype::I64, &[2], &[0., 1e15])),
        ("reward", t(Dtype::F32, &[1], &[0.])),
    ]);
    fails_default(&ts, &m, "seq_offsets", &["tokens in all"]);
}

/// Random tensor sets (names, dtypes, ranks, sizes, values all random): binding returns a batch
/// that passes `Layout::validate`, or an error; it never panics.
#[test]
fn random_tensor_sets_never_panic() {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let names = [
        "mask",
        "lengths",
        "seq_offsets",
        "group",
        "turn",
        "logp",
        "reward",
        "r",
    ];
    let dtypes = [
        Dtype::BOOL,
        Dtype::U8,
        Dtype::I32,
        Dtype::I64,
        Dtype::F32,
        Dtype::BF16,
        Dtype::F64,
    ];
    let m = module(
        &[
            ("logp", Level::Tok, F32, true),
            ("reward", Level::Seq, F32, false),
            ("r", Level::Turn, F32, false),
        ],
        true,
    );
    let mut bound = 0;
    for _ in 0..3000 {
        let mut ts = Tensors::new();
        for name in names {
            if next(4) == 0 {
                continue;
            }
            let rank = next(3);
            let shape: Vec<usize> = (0..rank).map(|_| next(4)).collect();
            let n: usize = shape.iter().product();
            let v: Vec<f64> = (0..n).map(|_| next(6) as f64 - 1.0).collect();
            ts.insert(name.into(), t(dtypes[next(dtypes.len())], &shape, &v));
        }
        let opts = BindOptions {
            group_size: (next(3) == 0).then(|| next(3)),
        };
        if let Ok(b) = bind(&ts, &m, &opts) {
            b.batch.layout.validate().expect("bound layouts are valid");
            bound += 1;
        }
    }
    // Mutations of a good batch reach the deeper checks: one tensor replaced or removed.
    for _ in 0..3000 {
        let mut ts = padded();
        let name = names[next(names.len())];
        if next(5) == 0 {
            ts.remove(name);
        } else {
            let rank = 1 + next(2);
            let shape: Vec<usize> = (0..rank)
                .map(|d| if d == 0 { 3 } else { next(6) })
                .collect();
            let n: usize = shape.iter().product();
            let v: Vec<f64> = (0..n).map(|_| next(5) as f64 - 1.0).collect();
            ts.insert(name.into(), t(dtypes[next(dtypes.len())], &shape, &v));
        }
        if let Ok(b) = bind(&ts, &grpo(), &BindOptions::default()) {
            b.batch.layout.validate().expect("bound layouts are valid");
            bound += 1;
        }
    }
    assert!(bound > 0 && bound < 6000, "{bound}");
}

#[test]
fn evaluate_checks_hand_built_batches() {
    use rlo_runtime::{Backend, Objective};
    let src = "objective o() {\n    input logp: tok diff\n    input reward: seq\n    loss batch_mean(logp * reward)\n}\n";
    let obj = Objective::compile("o.rlo", src, &Default::default()).expect("compiles");
    let b = bind(&padded(), &obj.compiled.module, &BindOptions::default()).expect("binds");
    let ev = obj
        .evaluate(&b.batch, &[], Backend::Interp)
        .expect("evaluates");
    // batch_mean of a tok value is over the 6 valid tokens: (1 + 2)·1 + (3 + 4 + 5 + 6)·0 = 3.
    assert!((ev.loss - 0.5).abs() < 1e-12, "{}", ev.loss);
    let mut short = b.batch.clone();
    short.values.insert("reward".into(), vec![1.0]);
    let e = obj
        .evaluate(&short, &[], Backend::Interp)
        .expect_err("short");
    assert!(
        e.to_string().contains("`reward`") && e.to_string().contains("3 elements"),
        "{e}"
    );
    let mut missing = b.batch.clone();
    missing.values.remove("logp");
    let e = obj
        .evaluate(&missing, &[], Backend::Interp)
        .expect_err("missing");
    assert!(e.to_string().contains("`logp`"), "{e}");
    let e = obj
        .evaluate(&b.batch, &[1.0], Backend::Interp)
        .expect_err("params");
    assert!(e.to_string().contains("0 parameter values, got 1"), "{e}");
}

#[test]
fn turn_results_are_written_b_by_k_with_zeros_past_each_sequence() {
    let mut m = module(
        &[
            ("logp", Level::Tok, F32, false),
            ("r", Level::Turn, F32, true),
        ],
        false,
    );
    let r = m.append(Expr::Input(1), Ty::new(Level::Turn, F32), Span::default());
    m.grads.push(rlo_compiler::ir::Grad { input: 1, value: r });
    m.outputs.push(rlo_compiler::ir::Named {
        name: "r2".into(),
        value: r,
        span: Span::default(),
    });
    // Seq 0 has 3 turns, seq 1 has 1; `r` is given with K = 4.
    let ts = set(vec![
        ("logp", t(Dtype::F32, &[2, 3], &[0.; 6])),
        ("lengths", t(Dtype::I64, &[2], &[3., 1.])),
        ("turn", t(Dtype::I64, &[2, 3], &[0., 1., 2., 0., 0., 0.])),
        (
            "r",
            t(Dtype::F32, &[2, 4], &[1., 2., 3., 9., 4., 9., 9., 9.]),
        ),
    ]);
    let b = ok(&ts, &m);
    assert_eq!(b.batch.values["r"], vec![1., 2., 3., 4.]);
    let eval = Evaluation {
        loss: 0.0,
        grads: vec![vec![10., 20., 30., 40.]],
        metrics: vec![],
        outputs: vec![vec![1., 2., 3., 4.]],
    };
    let out = evaluation_tensors(&m, &b.batch.layout, &b.shapes, &eval, Dtype::F32).expect("out");
    let g = &out["grad.r"];
    assert_eq!(g.shape, vec![2, 4]);
    let want = [10., 20., 30., 0., 40., 0., 0., 0.];
    assert_eq!(
        g.values(),
        Some(rlo_runtime::tensor::Values::Float(want.to_vec()))
    );
    assert_eq!(out["output.r2"].shape, vec![2, 4]);
}
