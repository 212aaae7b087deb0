//! Scheduler: pass counts of the catalog objectives compiled from source, and interpreter runs of
//! them (every run also checks that the schedule reads only available values).

use rand::rngs::StdRng;
use rand::SeedableRng;
use rlo_compiler::back::interp::evaluate;
use rlo_compiler::schedule::display_schedule;
use rlo_compiler::{compile, Options};
use rlo_tests::*;

fn compiled(path: &str) -> rlo_compiler::Compiled {
    let text = std::fs::read_to_string(path).unwrap();
    compile(path, &text, &Options::default()).unwrap_or_else(|f| panic!("{}", f.render(false)))
}

#[test]
fn grpo_is_one_pass() {
    let c = compiled("ui/pass/grpo.rlo");
    eprintln!("{}", rlo_compiler::ir::display_module(&c.module));
    eprintln!("{}", display_schedule(&c.module, &c.schedule));
    assert_eq!(c.schedule.token_passes(), 1);
    let mut rng = StdRng::seed_from_u64(1);
    let layout = random_layout(&mut rng, LayoutSpec::default());
    let batch = random_batch(&c.module, &layout, &mut rng);
    let params: Vec<f64> = c.module.params.iter().map(|p| p.default).collect();
    let ev = evaluate(&c.module, &c.schedule, &batch, &params).unwrap();
    assert!(ev.loss.is_finite());
}
