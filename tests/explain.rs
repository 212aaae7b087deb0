//! `rloc explain` of every stdlib objective, snapshotted: the gradient each token receives, as a
//! formula, with its normalizers. A change in lowering, autodiff or simplification that changes
//! what any objective's gradient *is* shows up here as a reviewed diff.

use rlo_compiler::{compile, explain, stdlib, Options};

#[test]
fn explain_every_stdlib_objective() {
    let mut seen = 0;
    for name in stdlib::module_names() {
        let Some(src) = stdlib::module_source(name) else {
            continue;
        };
        if !src
            .lines()
            .any(|l| l.trim_start().starts_with("objective "))
        {
            continue; // a library module: functions only
        }
        let c = compile(&format!("stdlib/{name}.rlo"), src, &Options::default())
            .unwrap_or_else(|f| panic!("{name}: {}", f.render(false)));
        let text = explain::explain_compiled(&c);
        assert!(
            text.contains("d loss") || text.contains("no diff input"),
            "{name}: explain text does not state a gradient:\n{text}"
        );
        insta::assert_snapshot!(format!("explain_{name}"), text);
        seen += 1;
    }
    assert!(seen >= 31, "only {seen} stdlib objectives found");
}
