//! `rloc emit {ast,ir,grad,schedule,cuda,clif}` and `rloc explain`.

use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;

use rlo_compiler::ir::display_module;
use rlo_compiler::schedule::StageKind;
use rlo_grammar::SourceMap;

use super::{color, compile_file, read_source, CliError, EmitKind};

pub fn emit(what: EmitKind, path: &Path, objective: Option<String>) -> Result<ExitCode, CliError> {
    if what == EmitKind::Ast {
        let text = read_source(path)?;
        let mut sources = SourceMap::new();
        let id = sources.add(path.display().to_string(), text.as_str());
        return match rlo_grammar::parse(&text, id) {
            Ok(ast) => {
                let json = serde_json::to_string_pretty(&ast).map_err(|e| e.to_string())?;
                outln!("{json}");
                Ok(ExitCode::SUCCESS)
            }
            Err(diags) => Err(CliError::Rendered(rlo_grammar::diagnostic::render_all(
                &diags,
                &sources,
                color(),
            ))),
        };
    }
    let obj = compile_file(path, objective)?;
    let c = &obj.compiled;
    let text = match what {
        EmitKind::Ast => String::new(),
        EmitKind::Ir => display_module(&c.forward),
        EmitKind::Grad => display_module(&c.module),
        EmitKind::Schedule => schedule_text(c),
        EmitKind::Cuda => {
            // The generated kernels; NVRTC compiles them after `runtime/kernels/rlo_common.cuh`.
            let opts = rlo_compiler::back::cuda::CudaOptions {
                sources: Some(c.sources.clone()),
                ..Default::default()
            };
            match rlo_compiler::back::cuda::emit(&c.module, &c.schedule, &opts) {
                Ok(p) => p.source,
                Err(e) => {
                    let d = rlo_grammar::Diagnostic::error("E0801", "CUDA code generation failed")
                        .with_primary(e.span, e.message);
                    return Err(CliError::Rendered(d.render(&c.sources, color())));
                }
            }
        }
        EmitKind::Clif => {
            let opts = rlo_compiler::back::clif::ClifOptions::default();
            match rlo_compiler::back::clif::emit(&c.module, &c.schedule, &opts) {
                Ok(p) => rlo_compiler::back::clif::program_text(&c.module, &p),
                Err(e) => {
                    return Err(CliError::Rendered(
                        e.to_diagnostic().render(&c.sources, color()),
                    ))
                }
            }
        }
    };
    out!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// Stages with their nodes (one line per node, as in `emit grad`) and the number of token passes.
pub fn schedule_text(c: &rlo_compiler::Compiled) -> String {
    let m = &c.module;
    let s = &c.schedule;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "schedule {}: {} stage{}, {} token pass{}",
        m.name,
        s.stages.len(),
        if s.stages.len() == 1 { "" } else { "s" },
        s.token_passes(),
        if s.token_passes() == 1 { "" } else { "es" }
    );
    let mut pass = 0;
    for (i, stage) in s.stages.iter().enumerate() {
        let kind = match stage.kind {
            StageKind::TokenPass => {
                pass += 1;
                format!("token pass {pass}")
            }
            StageKind::Small => "small".to_string(),
        };
        let _ = writeln!(out, "stage {i} ({kind}, {} nodes)", stage.nodes.len());
        for &h in &stage.nodes {
            match m.exprs.get(h) {
                Some(e) => {
                    let _ = writeln!(out, "  {h}: {} = {e:?}", m.ty(h));
                }
                None => {
                    let _ = writeln!(out, "  {h}: <missing>");
                }
            }
        }
    }
    let mat = s.materialized(m);
    if !mat.is_empty() {
        let names: Vec<String> = mat.iter().map(|h| h.to_string()).collect();
        let _ = writeln!(out, "materialized: {}", names.join(" "));
    }
    out
}

pub fn explain(path: &Path, objective: Option<String>) -> Result<ExitCode, CliError> {
    let obj = compile_file(path, objective)?;
    out!("{}", rlo_compiler::explain::explain_compiled(&obj.compiled));
    Ok(ExitCode::SUCCESS)
}
