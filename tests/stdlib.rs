//! The stdlib against independent references: every objective of `stdlib/` is compiled, run by the
//! reference interpreter on seeded random batches, and its loss, every gradient element, every
//! metric and every output compared with a plain-loop f64 implementation of the catalog formula
//! (`stdlib_ref/`), relative agreement 1e-10. Also: every stdlib file parses and checks.

mod stdlib_ref;

use std::collections::BTreeMap;
use std::path::PathBuf;

use rlo_compiler::{back::interp, compile, Batch, Compiled, Options};

use stdlib_ref::batch::{generate, Ctx, Pad};
use stdlib_ref::Ref;

const TOL: f64 = 1e-10;
const SEEDS: [u64; 3] = [1, 2, 3];

fn stdlib_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../stdlib")
}

fn source(name: &str) -> String {
    let p = stdlib_dir().join(format!("{name}.rlo"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `|a − b| ≤ TOL·max(1, |a|, |b|)`; equal infinities agree; NaN never does.
fn close(a: f64, b: f64) -> bool {
    if a == b {
        return true;
    }
    (a - b).abs() <= TOL * 1f64.max(a.abs()).max(b.abs())
}

/// Largest scaled difference seen, for the report.
fn scaled(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / 1f64.max(a.abs()).max(b.abs())
    }
}

struct Check {
    errors: Vec<String>,
    worst: f64,
    compared: usize,
}

impl Check {
    fn cmp(&mut self, what: &str, got: f64, want: f64) {
        self.compared += 1;
        let s = scaled(got, want);
        if s.is_nan() || !close(got, want) {
            self.errors
                .push(format!("{what}: interpreter {got:e}, reference {want:e}"));
        } else {
            self.worst = self.worst.max(s);
        }
    }
}

fn find(name: &str) -> Ref {
    stdlib_ref::all()
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no reference for {name}"))
}

/// The batch restricted to the inputs the module declares.
fn bind(pad: &Pad, c: &Compiled) -> Batch {
    let mut batch = pad.to_batch();
    let names: Vec<&str> = c.module.inputs.iter().map(|i| i.name.as_str()).collect();
    batch.values.retain(|k, _| names.contains(&k.as_str()));
    for n in names {
        assert!(
            batch.values.contains_key(n),
            "the generator has no input {n}"
        );
    }
    batch
}

fn check_objective(name: &str) {
    check_source(name, &source(name));
}

fn check_source(name: &str, text: &str) {
    let r = find(name);
    let c = compile(&format!("{name}.rlo"), text, &Options::default())
        .unwrap_or_else(|f| panic!("{name}.rlo does not compile:\n{}", f.render(false)));
    let m = &c.module;

    // Parameters: same names, and the .rlo defaults are the frameworks' (the reference's).
    let mut errors = Vec::new();
    let declared: BTreeMap<&str, f64> = m
        .params
        .iter()
        .map(|p| (p.name.as_str(), p.default))
        .collect();
    let expected: BTreeMap<&str, f64> = r.params.iter().copied().collect();
    if declared.keys().collect::<Vec<_>>() != expected.keys().collect::<Vec<_>>() {
        errors.push(format!(
            "parameters: .rlo {:?}, reference {:?}",
            declared.keys(),
            expected.keys()
        ));
    }
    for (k, v) in &expected {
        if let Some(d) = declared.get(k) {
            if d != v {
                errors.push(format!("default of {k}: .rlo {d}, reference {v}"));
            }
        }
    }
    let diff_inputs: Vec<String> = m
        .grads
        .iter()
        .map(|g| m.inputs[g.input as usize].name.clone())
        .collect();
    let mut want_diff: Vec<String> = r.diff.iter().map(|s| s.to_string()).collect();
    want_diff.sort();
    let mut got_diff = diff_inputs.clone();
    got_diff.sort();
    if got_diff != want_diff {
        errors.push(format!(
            "diff inputs: .rlo {got_diff:?}, reference {want_diff:?}"
        ));
    }
    assert!(errors.is_empty(), "{name}:\n{}", errors.join("\n"));

    let mut chk = Check {
        errors: Vec::new(),
        worst: 0.0,
        compared: 0,
    };
    let cases: Vec<&[(&str, f64)]> = std::iter::once(&[][..])
        .chain(r.cases.iter().copied())
        .collect();
    for seed in SEEDS {
        let pad = generate(seed, r.shape);
        let batch = bind(&pad, &c);
        for (ci, case) in cases.iter().enumerate() {
            let mut params: BTreeMap<String, f64> =
                r.params.iter().map(|&(k, v)| (k.to_string(), v)).collect();
            for &(k, v) in case.iter() {
                assert!(
                    params.insert(k.to_string(), v).is_some(),
                    "{name}: case sets unknown {k}"
                );
            }
            let pvec: Vec<f64> = m.params.iter().map(|p| params[&p.name]).collect();
            let at = format!("{name} seed {seed} case {ci} {case:?}");
            let ev = match interp::evaluate(m, &c.schedule, &batch, &pvec) {
                Ok(ev) => ev,
                Err(e) => {
                    chk.errors.push(format!("{at}: interpreter error {e:?}"));
                    continue;
                }
            };
            if seed == SEEDS[0] && ci == 0 {
                // The runtime's entry point (what the CLI and the training loop call) gives the
                // interpreter's result.
                let obj = rlo_runtime::Objective {
                    compiled: c.clone(),
                };
                match obj.evaluate(&batch, &pvec, rlo_runtime::Backend::Interp) {
                    Ok(rt) if rt == ev => {}
                    Ok(_) => chk
                        .errors
                        .push(format!("{at}: runtime result differs from interp")),
                    Err(e) => chk.errors.push(format!("{at}: runtime error {e}")),
                }
            }
            let ctx = |seed_at| Ctx {
                b: &pad,
                params: &params,
                seed: seed_at,
            };
            let out = (r.f)(&ctx(None));
            chk.cmp(&format!("{at}: loss"), ev.loss, out.loss.v);
            for (gi, g) in m.grads.iter().enumerate() {
                let input = m.inputs[g.input as usize].name.as_str();
                let mut k = 0;
                for i in 0..pad.b() {
                    for t in 0..pad.len[i] {
                        let d = (r.f)(&ctx(Some((input, i, t)))).loss.d;
                        chk.cmp(
                            &format!("{at}: d loss/d {input}[{i}][{t}]"),
                            ev.grads[gi][k],
                            d,
                        );
                        k += 1;
                    }
                }
                if ev.grads[gi].len() != k {
                    chk.errors.push(format!(
                        "{at}: gradient of {input} has {} values, {k} tokens",
                        ev.grads[gi].len()
                    ));
                }
            }
            let ref_metrics: BTreeMap<&str, f64> = out.metrics.iter().copied().collect();
            let mod_metrics: Vec<&str> = m.metrics.iter().map(|x| x.name.as_str()).collect();
            let mut a = mod_metrics.clone();
            a.sort();
            if a != ref_metrics.keys().copied().collect::<Vec<_>>() {
                chk.errors.push(format!(
                    "{at}: metrics .rlo {a:?}, reference {:?}",
                    ref_metrics.keys()
                ));
            }
            for (mi, mname) in mod_metrics.iter().enumerate() {
                if let Some(&want) = ref_metrics.get(mname) {
                    chk.cmp(&format!("{at}: metric {mname}"), ev.metrics[mi], want);
                }
            }
            for (oname, want) in &out.outputs {
                match m.outputs.iter().position(|o| o.name == *oname) {
                    Some(oi) if ev.outputs[oi].len() == want.len() => {
                        for (k, (&g, &w)) in ev.outputs[oi].iter().zip(want).enumerate() {
                            chk.cmp(&format!("{at}: output {oname}[{k}]"), g, w);
                        }
                    }
                    Some(oi) => chk.errors.push(format!(
                        "{at}: output {oname} has {} values, reference {}",
                        ev.outputs[oi].len(),
                        want.len()
                    )),
                    None => chk.errors.push(format!("{at}: no output {oname}")),
                }
            }
        }
    }
    eprintln!(
        "{name}: {} values compared, worst scaled difference {:.2e}",
        chk.compared, chk.worst
    );
    let shown: Vec<&String> = chk.errors.iter().take(25).collect();
    assert!(
        chk.errors.is_empty(),
        "{name}: {} of {} comparisons disagree:\n{}",
        chk.errors.len(),
        chk.compared,
        shown
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

macro_rules! objective_tests {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            check_objective(stringify!($name));
        }
    )*};
}

objective_tests!(
    grpo,
    dapo,
    gspo,
    gspo_token,
    ppo,
    dr_grpo,
    bnpo,
    gmpo,
    cispo,
    sapo,
    gpg,
    luspo,
    vespo,
    grpo_entropy,
    rloo,
    reinforce_pp,
    opo,
    passk,
    riskpo,
    cvar_pg,
    rs_grpo,
    clip_cov,
    kl_cov,
    dph_rl,
    igpo,
    dpo,
    ipo,
    simpo,
    kto,
    orpo,
    f_dpo,
    rover,
);

/// The library functions no objective uses, through one test objective.
#[test]
fn library_functions() {
    check_source("libfns", stdlib_ref::lib_fns::SOURCE);
}

/// Every `.rlo` of stdlib/: objectives compile (parse, check, lower, differentiate, schedule);
/// library modules parse. Every objective has a reference.
#[test]
fn every_stdlib_file_checks() {
    let mut errors = Vec::new();
    let mut objectives = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(stdlib_dir())
        .expect("stdlib/ exists")
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.extension().and_then(|x| x.to_str()) != Some("rlo") {
            continue;
        }
        let stem = p
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let text = std::fs::read_to_string(&p).expect("readable");
        let mut sources = rlo_grammar::SourceMap::new();
        let file = sources.add(format!("stdlib/{stem}.rlo"), &text);
        match rlo_grammar::parse(&text, file) {
            Err(d) => errors.push(rlo_grammar::diagnostic::render_all(&d, &sources, false)),
            Ok(ast) => {
                let is_objective = ast
                    .items
                    .iter()
                    .any(|i| matches!(i, rlo_grammar::ast::Item::Objective(_)));
                let result = compile(&format!("stdlib/{stem}.rlo"), &text, &Options::default());
                if is_objective {
                    objectives.push(stem.clone());
                    if let Err(f) = result {
                        errors.push(f.render(false));
                    }
                } else {
                    // A library module resolves and checks except for having no objective (its
                    // functions are level-polymorphic: their bodies are checked at each call,
                    // which the objectives and `library_functions` exercise).
                    match result {
                        Ok(_) => {
                            errors.push(format!("stdlib/{stem}.rlo compiled without an objective"))
                        }
                        Err(f) if f.diagnostics.iter().all(|d| d.code == "E0303") => {}
                        Err(f) => errors.push(f.render(false)),
                    }
                }
            }
        }
    }
    let refs: Vec<&str> = stdlib_ref::all().iter().map(|r| r.name).collect();
    for o in &objectives {
        if !refs.contains(&o.as_str()) {
            errors.push(format!(
                "objective {o} has no reference in tests/stdlib_ref"
            ));
        }
    }
    assert!(
        objectives.len() >= 31,
        "only {} objectives found",
        objectives.len()
    );
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// The objective files stay short: at most 25 lines of code each (comments and blank lines aside).
#[test]
fn objectives_are_short() {
    for r in stdlib_ref::all().into_iter().filter(|r| r.name != "libfns") {
        let code = source(r.name)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("//"))
            .count();
        assert!(code <= 25, "stdlib/{}.rlo has {code} lines of code", r.name);
    }
}

/// The references check themselves: every dual-number derivative agrees with a central finite
/// difference of the reference's own loss (relative 1e-5; the step never crosses a kink of the
/// random data with this seed). Skipped: the objectives whose gradient is by design not the
/// derivative of their value (detached weights, straight-through estimators).
#[test]
fn reference_gradients_match_finite_differences() {
    let mut errors = Vec::new();
    let by_design = ["cispo", "gspo_token", "vespo", "libfns"];
    for r in stdlib_ref::all()
        .into_iter()
        .filter(|r| !by_design.contains(&r.name))
    {
        let mut params: BTreeMap<String, f64> =
            r.params.iter().map(|&(k, v)| (k.to_string(), v)).collect();
        for case in std::iter::once(&[][..]).chain(r.cases.iter().copied()) {
            for &(k, v) in case {
                params.insert(k.to_string(), v);
            }
            let pad = generate(7, r.shape);
            for &input in r.diff {
                for i in 0..pad.b() {
                    for t in 0..pad.len[i] {
                        let ctx = Ctx {
                            b: &pad,
                            params: &params,
                            seed: Some((input, i, t)),
                        };
                        let d = (r.f)(&ctx).loss.d;
                        let h = 1e-6;
                        let at = |delta: f64| {
                            let mut p = pad.clone();
                            p.tok.get_mut(input).expect("input")[i][t] += delta;
                            (r.f)(&Ctx {
                                b: &p,
                                params: &params,
                                seed: None,
                            })
                            .loss
                            .v
                        };
                        let fd = (at(h) - at(-h)) / (2.0 * h);
                        if (fd - d).abs() > 1e-5 * 1f64.max(d.abs()) {
                            errors.push(format!(
                                "{} {case:?} d/d {input}[{i}][{t}]: dual {d:e}, fd {fd:e}",
                                r.name
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(
        errors.is_empty(),
        "{} mismatches:\n{}",
        errors.len(),
        errors.join("\n")
    );
}

/// Token passes each objective needs, as reasoned in stdlib/README.md: 1 when θ-dependent
/// reductions only feed the loss linearly, 2 when a sequence/group/batch reduction of θ-dependent
/// tokens feeds a per-token gradient coefficient, one more for each chained token statistic
/// (a batch variance over tokens needs their mean first: PPO/REINFORCE++ whitening, IGPO's turn
/// z-scores; Clip-/KL-Cov rank a covariance that needs batch means). The scheduler must not need
/// more, and every objective reads its tokens at least once. No objective compiles with warnings.
const REASONED_PASSES: &[(&str, usize)] = &[
    ("ppo", 3),
    ("grpo", 1),
    ("dr_grpo", 1),
    ("dapo", 1),
    ("bnpo", 1),
    ("gspo", 2),
    ("gspo_token", 2),
    ("gmpo", 2),
    ("cispo", 1),
    ("sapo", 1),
    ("gpg", 1),
    ("rloo", 2),
    ("reinforce_pp", 3),
    ("opo", 1),
    ("passk", 1),
    ("riskpo", 1),
    ("cvar_pg", 1),
    ("rs_grpo", 1),
    ("clip_cov", 3),
    ("kl_cov", 3),
    ("luspo", 2),
    ("vespo", 2),
    ("dph_rl", 1),
    ("igpo", 1),
    ("grpo_entropy", 1),
    ("dpo", 2),
    ("ipo", 2),
    ("simpo", 2),
    ("kto", 2),
    ("orpo", 2),
    ("f_dpo", 2),
    ("rover", 1),
];

#[test]
fn schedules_need_no_more_passes_than_reasoned() {
    let mut errors = Vec::new();
    for &(name, want) in REASONED_PASSES {
        let c = compile(&format!("{name}.rlo"), &source(name), &Options::default())
            .unwrap_or_else(|f| panic!("{name}: {}", f.render(false)));
        for w in &c.warnings {
            errors.push(format!("{name}: warning {} {}", w.code, w.message));
        }
        let got = c.schedule.token_passes();
        eprintln!("{name}: {got} token passes");
        if got == 0 || got > want {
            errors.push(format!("{name}: {got} token passes, reasoned {want}"));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// stdlib/README.md's table states, for every objective, the token passes of its schedule and
/// whether a step splits into micro-batches exactly (`split::analyze`): keep it in step.
#[test]
fn readme_table_matches_the_compiler() {
    let readme = std::fs::read_to_string(stdlib_dir().join("README.md")).expect("README");
    let mut errors = Vec::new();
    for &(name, _) in REASONED_PASSES {
        let c = compile(&format!("{name}.rlo"), &source(name), &Options::default())
            .unwrap_or_else(|f| panic!("{name}: {}", f.render(false)));
        let passes = c.schedule.token_passes();
        let sp = rlo_compiler::split::analyze(&c.module);
        let split = if sp.splittable {
            "yes".to_string()
        } else {
            "no".to_string()
        };
        let why = sp
            .reason
            .as_ref()
            .map(|(_, r)| r.clone())
            .unwrap_or_default();
        eprintln!("| `{name}` | {passes} | {split} | {why}");
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}` |")))
            .unwrap_or_else(|| panic!("README has no row for {name}"));
        let cells: Vec<&str> = row.split(" | ").collect();
        let n = cells.len();
        let (p, s) = (
            cells[n - 2].trim(),
            cells[n - 1].trim_end_matches('|').trim(),
        );
        if !p.starts_with(&passes.to_string()) || !s.starts_with(&split) {
            errors.push(format!(
                "{name}: README says {p} / {s}, compiler {passes} / {split}"
            ));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// The generated batches hold the cases the references are meant to exercise.
#[test]
fn batches_cover_the_edge_cases() {
    use stdlib_ref::batch::Shape;
    for shape in [Shape::Policy, Shape::Turns, Shape::Groups4, Shape::Pairs] {
        for seed in SEEDS {
            let p = generate(seed, shape);
            let at = format!("{shape:?} seed {seed}");
            assert!(p.len.contains(&1), "{at}: no length-1 sequence");
            let (lp, old) = (&p.tok["logp"], &p.tok["old_logp"]);
            let big =
                (0..p.b()).any(|i| (0..p.len[i]).any(|t| (lp[i][t] - old[i][t]).abs() >= 5.0));
            assert!(big, "{at}: no large log-ratio");
            let sizes: Vec<usize> = (0..p.n_groups).map(|g| p.members(g).len()).collect();
            let r = &p.seq["reward"];
            match shape {
                Shape::Pairs => assert!(sizes.iter().all(|&s| s == 2), "{at}: not pairs"),
                Shape::Policy | Shape::Turns | Shape::Groups4 => {
                    let equal = (0..p.n_groups).any(|g| {
                        let m = p.members(g);
                        m.len() > 1 && m.iter().all(|&i| r[i] == r[m[0]])
                    });
                    assert!(equal, "{at}: no group of equal rewards");
                    if shape != Shape::Groups4 {
                        assert!(sizes.contains(&1), "{at}: no group of one");
                    }
                }
            }
            if shape == Shape::Policy && seed == 3 {
                assert!(p.len.contains(&0), "{at}: no empty sequence");
            }
            if shape == Shape::Turns {
                assert!(
                    p.n_turns.iter().any(|&k| k > 1),
                    "{at}: no multi-turn sequence"
                );
            }
        }
    }
}
