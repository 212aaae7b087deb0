//! Diagnostics and lowering golden files.
//!
//! - `tests/ui/*.rlo`: invalid programs, one topic per file. The rendered diagnostics (parse errors,
//!   or every front-end error and warning, sorted by position) must equal `<name>.stderr`.
//! - `tests/ui/pass/*.rlo`: valid programs. `ir::display_module` of the lowered forward IR, plus
//!   any warnings, must equal `<name>.ir`.
//! - A folder `<name>.modules/` beside a test holds extra modules (`a.rlo` is `std::a`), injected
//!   through `Options::extra_modules` (import cycles, unknown imports).
//!
//! Bless (rewrite the goldens from the current output): `RLO_BLESS=1 cargo test -p rlo-tests --test ui`.

use std::path::{Path, PathBuf};

use rlo_compiler::{front, ir, Options};
use rlo_grammar::{diagnostic::render_all, SourceMap};

fn ui_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("ui")
}

fn rlo_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "rlo"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn extra_modules(test: &Path) -> Vec<(String, String)> {
    let dir = test.with_extension("modules");
    rlo_files(&dir)
        .into_iter()
        .filter_map(|p| {
            let name = p.file_stem()?.to_str()?.to_string();
            Some((name, std::fs::read_to_string(&p).ok()?))
        })
        .collect()
}

/// Parses and analyzes one file; `Ok((ir text, warnings))` or `Err(rendered diagnostics)`.
fn run(path: &Path) -> Result<(String, String), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("?")
        .to_string();
    let mut sources = SourceMap::new();
    let id = sources.add(name, text.clone());
    let ast = rlo_grammar::parse(&text, id).map_err(|d| render_all(&d, &sources, false))?;
    let opts = Options {
        objective: None,
        extra_modules: extra_modules(path),
    };
    match front::analyze(&ast, &mut sources, &opts) {
        Ok(c) => Ok((
            ir::display_module(&c.module),
            render_all(&c.warnings, &sources, false),
        )),
        Err(d) => Err(render_all(&d, &sources, false)),
    }
}

/// Compares `actual` with the golden file (or rewrites it under `RLO_BLESS=1`).
fn check_golden(golden: &Path, actual: &str, failures: &mut Vec<String>) {
    if std::env::var_os("RLO_BLESS").is_some() {
        if let Err(e) = std::fs::write(golden, actual) {
            failures.push(format!("{}: cannot write: {e}", golden.display()));
        }
        return;
    }
    let expected = std::fs::read_to_string(golden).unwrap_or_default();
    if expected != actual {
        failures.push(format!(
            "{} differs (RLO_BLESS=1 to update)\n--- expected\n{expected}\n--- actual\n{actual}",
            golden.display()
        ));
    }
}

#[test]
fn invalid_programs_match_their_stderr() {
    let files = rlo_files(&ui_dir());
    assert!(files.len() >= 40, "only {} ui tests", files.len());
    let mut failures = Vec::new();
    for path in &files {
        match run(path) {
            Ok((ir, _)) => failures.push(format!(
                "{}: expected errors, but it compiled:\n{ir}",
                path.display()
            )),
            Err(rendered) => {
                // Every invalid program reports at least one coded error.
                if !rendered.contains("error[E") {
                    failures.push(format!("{}: no error code:\n{rendered}", path.display()));
                }
                check_golden(&path.with_extension("stderr"), &rendered, &mut failures);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn valid_programs_match_their_ir() {
    let files = rlo_files(&ui_dir().join("pass"));
    assert!(!files.is_empty());
    let mut failures = Vec::new();
    for path in &files {
        match run(path) {
            Ok((ir, warnings)) => {
                let text = if warnings.is_empty() {
                    ir
                } else {
                    format!("{ir}\n{warnings}")
                };
                check_golden(&path.with_extension("ir"), &text, &mut failures);
            }
            Err(rendered) => failures.push(format!("{}: failed:\n{rendered}", path.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Mutated valid programs (words swapped for other names, builtins, levels or literals; lines
/// dropped): the front end never panics, and whatever it accepts is valid IR.
#[test]
fn mutated_programs_never_panic_and_accepted_ones_validate() {
    use rand::{rngs::StdRng, Rng, SeedableRng};
    let vocab = [
        "x",
        "logp",
        "reward",
        "tok",
        "seq",
        "group",
        "batch",
        "bool",
        "f32",
        "true",
        "0",
        "1e-4",
        "inf",
        "pos",
        "seq_len",
        "group_mean",
        "seq_sum",
        "batch_mean",
        "clamp",
        "where",
        "exp",
        "detach",
        "group_rank",
        "seq_cumsum",
        "group_quantile",
        "k3",
        "diff",
        "float",
    ];
    let mut sources_text: Vec<String> = rlo_files(&ui_dir().join("pass"))
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .chain(
            rlo_compiler::stdlib::module_names()
                .filter_map(rlo_compiler::stdlib::module_source)
                .map(str::to_string),
        )
        .collect();
    sources_text.sort();
    let mut rng = StdRng::seed_from_u64(42);
    let mut accepted = 0;
    for round in 0..300 {
        let Some(base) = sources_text.get(round % sources_text.len()) else {
            continue;
        };
        let mut words: Vec<String> = base.split(' ').map(str::to_string).collect();
        for _ in 0..rng.random_range(0..2) {
            let i = rng.random_range(0..words.len());
            let w = vocab[rng.random_range(0..vocab.len())];
            if let Some(slot) = words.get_mut(i) {
                let trailing: String = slot.chars().filter(|c| *c == '\n').collect();
                *slot = format!("{w}{trailing}");
            }
        }
        let mut text = words.join(" ");
        if rng.random_bool(0.3) {
            let lines: Vec<&str> = text.lines().collect();
            let drop = rng.random_range(0..lines.len());
            text = lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != drop)
                .map(|(_, l)| *l)
                .collect::<Vec<_>>()
                .join("\n");
        }
        let mut sources = SourceMap::new();
        let id = sources.add("m.rlo", text.clone());
        let Ok(ast) = rlo_grammar::parse(&text, id) else {
            continue;
        };
        let opts = Options::default();
        if let Ok(c) = front::analyze(&ast, &mut sources, &opts) {
            accepted += 1;
            if let Err(e) = rlo_compiler::valid::validate(&c.module) {
                panic!("invalid IR ({e}) for:\n{text}");
            }
        }
    }
    // Some mutants must survive, or the test checks nothing about accepted programs.
    assert!(accepted > 10, "only {accepted} mutants accepted");
}
