//! Whole-pipeline robustness: no input text makes the compiler panic.
//!
//! Inputs: (a) random bytes and random unicode, (b) token soup and random grammatical programs,
//! (c) random mutations of every `stdlib/*.rlo` file (as the user's file, and as an imported
//! module), (d) deep nesting of every kind. Each goes through `rlo_compiler::compile`, through
//! `rlo_grammar::fmt::format_file` when it parses (the formatted text must parse again), renders
//! every diagnostic, and when it compiles runs the interpreter once on a small random batch.
//!
//! Properties: nothing panics; every diagnostic has a primary span inside its file (on UTF-8
//! boundaries) and renders with its code; diagnostics come sorted by position. A failing input is
//! minimized before the test fails, and printed.
//!
//! `RLO_FUZZ_CASES=N` sets the number of random cases (default 2000); the `#[ignore]`d test runs
//! 100,000 (`cargo test --release -p rlo-tests --test robust -- --ignored`). `RLO_FUZZ_SEED`
//! replays another seed.

mod robust_gen;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rlo_compiler::{compile, Failure, Options};
use rlo_grammar::{Diagnostic, FileId, SourceMap};
use rlo_tests::{random_batch, random_layout, LayoutSpec};
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;
use std::time::Instant;

/// One input: the user's file, plus modules injected as `std::<name>` (a mutated stdlib module).
#[derive(Clone, Debug)]
struct Case {
    what: String,
    text: String,
    extra: Vec<(String, String)>,
}

/// Why a case failed: a panic (message and location) or a broken property.
#[derive(Clone, Debug, PartialEq)]
enum Bad {
    Panic(String),
    Property(String),
}

impl Bad {
    /// Two failures are "the same" for minimization when their kind and panic location match.
    fn same(&self, other: &Bad) -> bool {
        match (self, other) {
            (Bad::Panic(a), Bad::Panic(b)) => loc_of(a) == loc_of(b),
            (Bad::Property(a), Bad::Property(b)) => a.split(':').next() == b.split(':').next(),
            _ => false,
        }
    }
}

fn loc_of(msg: &str) -> &str {
    msg.rsplit(" at ").next().unwrap_or(msg)
}

thread_local! {
    static QUIET: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Panics inside [`run_case`] are recorded (message and location) instead of printed; every other
/// panic (the test's own assertion) goes to the default hook.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let quiet = QUIET.with(|q| q.borrow().is_some());
            if quiet {
                let msg = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let loc = info
                    .location()
                    .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
                    .unwrap_or_default();
                QUIET.with(|q| *q.borrow_mut() = Some(format!("{msg} at {loc}")));
            } else {
                default(info);
            }
        }));
    });
}

/// Runs one case through the whole pipeline; `Err` says which property broke.
fn run_case(case: &Case, seed: u64) -> Result<bool, Bad> {
    install_hook();
    QUIET.with(|q| *q.borrow_mut() = Some(String::new()));
    let r = catch_unwind(AssertUnwindSafe(|| pipeline(case, seed)));
    let msg = QUIET.with(|q| q.borrow_mut().take()).unwrap_or_default();
    match r {
        Ok(Ok(compiled)) => Ok(compiled),
        Ok(Err(p)) => Err(Bad::Property(p)),
        Err(_) => Err(Bad::Panic(msg)),
    }
}

/// `Ok(true)` when the case compiled (and ran).
fn pipeline(case: &Case, seed: u64) -> Result<bool, String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let text = &case.text;
    let mut opts = Options {
        objective: None,
        extra_modules: case.extra.clone(),
    };
    if let Ok(ast) = rlo_grammar::parse(text, FileId(0)) {
        let formatted = rlo_grammar::fmt::format_file(&ast, text);
        // Known limit: the formatter parenthesizes an `if` in operand position, so text nested
        // close to the 256-level limit may format past it (E0005); anything else is a bug.
        if let Err(d) = rlo_grammar::parse(&formatted, FileId(0)) {
            if !d.iter().all(|d| d.code == "E0005") {
                let first = d.first().map(|d| d.message.clone()).unwrap_or_default();
                return Err(format!(
                    "fmt: formatted text does not parse ({first}):\n{formatted}"
                ));
            }
        }
        let objectives: Vec<String> = ast
            .items
            .iter()
            .filter_map(|i| match i {
                rlo_grammar::ast::Item::Objective(o) => Some(o.name.name.clone()),
                _ => None,
            })
            .collect();
        if objectives.len() > 1 {
            opts.objective = objectives
                .get(rng.random_range(0..objectives.len()))
                .cloned();
        }
    }
    match compile("fuzz.rlo", text, &opts) {
        Err(f) => {
            if f.diagnostics.is_empty() {
                return Err("empty: compile failed without a diagnostic".into());
            }
            if !f.diagnostics.iter().any(Diagnostic::is_error) {
                return Err("no-error: compile failed with warnings only".into());
            }
            check_diagnostics(&f.diagnostics, &f.sources)?;
            check_render(&f).map(|()| false)
        }
        Ok(c) => {
            check_diagnostics(&c.warnings, &c.sources)?;
            let f = Failure {
                sources: c.sources.clone(),
                diagnostics: c.warnings.clone(),
            };
            check_render(&f)?;
            let spec = LayoutSpec {
                max_groups: 3,
                max_group_size: 3,
                max_len: 6,
                turns: rng.random_bool(0.5),
            };
            let layout = random_layout(&mut rng, spec);
            let batch = random_batch(&c.module, &layout, &mut rng);
            let params: Vec<f64> = c.module.params.iter().map(|p| p.default).collect();
            // Errors (none expected on a well-formed batch) are not panics; values may be NaN.
            let _ = rlo_compiler::back::interp::evaluate(&c.module, &c.schedule, &batch, &params);
            Ok(true)
        }
    }
}

/// Primary span inside its file on char boundaries; sorted by (file, start, end).
fn check_diagnostics(diags: &[Diagnostic], sources: &SourceMap) -> Result<(), String> {
    let mut prev = None;
    for d in diags {
        let Some(s) = d.primary_span() else {
            return Err(format!(
                "no-primary: {} {} has no primary span",
                d.code, d.message
            ));
        };
        let Some(f) = sources.get(s.file) else {
            return Err(format!(
                "bad-file: {} {} in file {:?}",
                d.code, d.message, s.file
            ));
        };
        let (a, b) = (s.start as usize, s.end as usize);
        if a > b || b > f.text.len() || !f.text.is_char_boundary(a) || !f.text.is_char_boundary(b) {
            return Err(format!(
                "bad-span: {} {} span {a}..{b} in {} ({} bytes)",
                d.code,
                d.message,
                f.name,
                f.text.len()
            ));
        }
        let key = (s.file, s.start, s.end);
        if prev.is_some_and(|p| p > key) {
            return Err(format!(
                "unsorted: {} {} comes after {:?}",
                d.code, d.message, prev
            ));
        }
        prev = Some(key);
    }
    Ok(())
}

fn check_render(f: &Failure) -> Result<(), String> {
    let text = f.render(false);
    for d in &f.diagnostics {
        if !text.contains(&format!("[{}]", d.code)) {
            return Err(format!(
                "render: {} missing from the rendering:\n{text}",
                d.code
            ));
        }
    }
    Ok(())
}

/// Shrinks the failing input (user text, or the module text when one was injected) while it fails
/// the same way: drops chunks of lines, then chunks of characters, then single characters.
fn minimize(case: &Case, seed: u64, bad: &Bad) -> Case {
    let module = !case.extra.is_empty();
    let get = |c: &Case| {
        if module {
            c.extra.first().map(|m| m.1.clone()).unwrap_or_default()
        } else {
            c.text.clone()
        }
    };
    let set = |c: &Case, t: String| {
        let mut c = c.clone();
        if module {
            if let Some(m) = c.extra.first_mut() {
                m.1 = t;
            }
        } else {
            c.text = t;
        }
        c
    };
    let still = |c: &Case| run_case(c, seed).err().is_some_and(|b| b.same(bad));
    let mut best = case.clone();
    let mut budget = 4000usize;
    // Lines, then chars, as units.
    for by_char in [false, true] {
        let units = |t: &str| -> Vec<String> {
            if by_char {
                t.chars().map(String::from).collect()
            } else {
                t.split_inclusive('\n').map(String::from).collect()
            }
        };
        let mut chunk = units(&get(&best)).len().div_ceil(2).max(1);
        loop {
            let mut i = 0;
            let mut changed = false;
            loop {
                let u = units(&get(&best));
                if i >= u.len() || budget == 0 {
                    break;
                }
                let end = (i + chunk).min(u.len());
                let cand: String = u[..i].concat() + &u[end..].concat();
                budget -= 1;
                let c = set(&best, cand);
                if still(&c) {
                    best = c;
                    changed = true;
                } else {
                    i += chunk;
                }
            }
            if budget == 0 || (chunk == 1 && !changed) {
                break;
            }
            if !changed {
                chunk = chunk.div_ceil(2);
            }
        }
    }
    best
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `n` random cases; panics with the minimized first failure.
fn fuzz(n: usize) {
    let seed0 = env_usize("RLO_FUZZ_SEED", 0x0510) as u64;
    let gen = robust_gen::Generators::load();
    let t0 = Instant::now();
    let mut compiled = 0usize;
    let mut failures: Vec<(Case, u64, Bad)> = Vec::new();
    for i in 0..n {
        let seed = seed0.wrapping_mul(1_000_003).wrapping_add(i as u64);
        let mut rng = StdRng::seed_from_u64(seed);
        let case = gen.random_case(&mut rng, i);
        match run_case(&case, seed) {
            Ok(ok) => compiled += usize::from(ok),
            Err(bad) => {
                if !failures.iter().any(|(_, _, b)| b.same(&bad)) {
                    failures.push((case, seed, bad));
                }
            }
        }
    }
    eprintln!(
        "robust: {n} cases in {:.2?} ({} distinct failures; {compiled} compiled and ran)",
        t0.elapsed(),
        failures.len(),
    );
    report(failures);
}

fn report(failures: Vec<(Case, u64, Bad)>) {
    if failures.is_empty() {
        return;
    }
    let mut msg = String::new();
    for (case, seed, bad) in &failures {
        let small = minimize(case, *seed, bad);
        msg += &format!(
            "\n=== {} (seed {seed}): {bad:?}\n--- minimized user file:\n{}\n",
            case.what, small.text
        );
        for (name, text) in &small.extra {
            msg += &format!("--- minimized module std::{name}:\n{text}\n");
        }
    }
    panic!("{} distinct failure(s):{msg}", failures.len());
}

#[test]
fn random_inputs_never_panic() {
    fuzz(env_usize("RLO_FUZZ_CASES", 2000));
}

#[test]
#[ignore = "big run (100,000 cases): cargo test --release -p rlo-tests --test robust -- --ignored"]
fn random_inputs_never_panic_100k() {
    fuzz(env_usize("RLO_FUZZ_CASES", 100_000));
}

#[test]
fn deep_nesting_never_panics() {
    deep(10_000);
}

#[test]
#[ignore = "big run: depths to 100,000 (cargo test --release -p rlo-tests --test robust -- --ignored)"]
fn deep_nesting_never_panics_100k() {
    deep(100_000);
}

fn deep(max: usize) {
    let t0 = Instant::now();
    let cases = robust_gen::deep_cases(max);
    let n = cases.len();
    let mut failures: Vec<(Case, u64, Bad)> = Vec::new();
    let trace = std::env::var_os("RLO_FUZZ_TRACE").is_some();
    for (i, case) in cases.into_iter().enumerate() {
        if trace {
            // Straight to stderr, not captured: names the case if a stack overflow aborts.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "deep: {}", case.what);
        }
        let t = Instant::now();
        let r = run_case(&case, i as u64);
        if trace {
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "  {:.2?}", t.elapsed());
        }
        if let Err(bad) = r {
            if !failures.iter().any(|(_, _, b)| b.same(&bad)) {
                failures.push((case, i as u64, bad));
            }
        }
    }
    eprintln!("robust: {n} deep cases in {:.2?}", t0.elapsed());
    // Deep inputs are generated, not random: report the generator's description, unminimized.
    if let Some((case, _, bad)) = failures.first() {
        panic!(
            "{} deep case(s) fail; first: {} -> {bad:?}\n{}",
            failures.len(),
            case.what,
            case.text.chars().take(600).collect::<String>()
        );
    }
}

#[test]
fn every_stdlib_file_passes_unmutated() {
    let gen = robust_gen::Generators::load();
    assert!(gen.stdlib.len() >= 20, "stdlib not found");
    for (name, text) in &gen.stdlib {
        let case = Case {
            what: format!("stdlib/{name}.rlo"),
            text: text.clone(),
            extra: vec![],
        };
        assert!(
            run_case(&case, 1).is_ok(),
            "{name}: {:?}",
            run_case(&case, 1)
        );
    }
}
