//! Golden CLIF text (`rloc emit clif`) of stdlib objectives: any change to planning or emission
//! shows up as a reviewed snapshot diff.

use rlo_compiler::back::clif;

fn compiled(name: &str) -> rlo_compiler::Compiled {
    let text =
        rlo_compiler::stdlib::module_source(name).unwrap_or_else(|| panic!("no stdlib {name}"));
    rlo_compiler::compile(&format!("stdlib/{name}.rlo"), text, &Default::default())
        .unwrap_or_else(|f| panic!("{name}: {}", f.render(false)))
}

#[test]
fn grpo_clif() {
    let text = clif::emit_text(&compiled("grpo")).expect("emits");
    assert!(text.contains("_tokens —"), "grpo has a token pass");
    insta::assert_snapshot!("grpo", text);
}

#[test]
fn gspo_clif() {
    let c = compiled("gspo");
    let text = clif::emit_text(&c).expect("emits");
    assert_eq!(
        c.schedule.token_passes(),
        2,
        "gspo needs two passes over the tokens"
    );
    insta::assert_snapshot!("gspo", text);
}

#[test]
fn f64_mode_uses_f64_everywhere() {
    let c = compiled("grpo");
    let p = clif::emit(&c.module, &c.schedule, &clif::ClifOptions { f64: true }).expect("emits");
    let text = clif::program_text(&c.module, &p);
    assert!(text.contains("rlo_exp_f64") && !text.contains("rlo_exp_f32"));
    assert!(!text.contains(" f32"), "no f32 value in f64 mode");
}
