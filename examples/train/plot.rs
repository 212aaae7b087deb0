//! Reward and KL over the RL steps, as a PNG (plotters, bitmap backend).
//!
//! plotters' `ab_glyph` text needs a TrueType font registered at run time. The font is read from
//! `--font`, `$RLO_FONT`, or a few usual system paths (DejaVu, Liberation, Arial); without one the
//! plot is drawn without any text (curves and grid only) and a note says so.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::Result;

const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// Registers the first readable font as `sans-serif`; returns whether text can be drawn.
pub fn load_font(explicit: Option<&Path>) -> bool {
    let env = std::env::var_os("RLO_FONT");
    let candidates = explicit
        .map(Path::to_path_buf)
        .into_iter()
        .chain(env.map(Into::into))
        .chain(FONT_PATHS.iter().map(Into::into));
    for p in candidates {
        if let Ok(bytes) = std::fs::read(&p) {
            // plotters keeps fonts for the whole process; leaking one font once is intended.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// Two panels: mean reward per step (with a 10-step moving average) and KL to the reference.
pub fn plot_reward_kl(
    path: &Path,
    title: &str,
    reward: &[f64],
    kl: &[f64],
    with_text: bool,
) -> Result<()> {
    let root = BitMapBackend::new(path, (900, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(340);
    let n = reward.len().max(2) as f64;
    let ma = moving_average(reward, 10);
    let panel = |area: &DrawingArea<BitMapBackend, _>,
                 name: &str,
                 series: &[(&[f64], RGBColor)],
                 y_max: f64|
     -> Result<()> {
        let mut b = ChartBuilder::on(area);
        b.margin(12);
        if with_text {
            b.caption(name, ("sans-serif", 20))
                .x_label_area_size(30)
                .y_label_area_size(50);
        }
        let mut chart = b.build_cartesian_2d(0f64..n - 1.0, 0f64..y_max)?;
        let mut mesh = chart.configure_mesh();
        if with_text {
            mesh.x_desc("RL step");
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw()?;
        for (data, color) in series {
            chart.draw_series(LineSeries::new(
                data.iter().enumerate().map(|(i, &v)| (i as f64, v)),
                color.stroke_width(2),
            ))?;
        }
        Ok(())
    };
    let r_title = format!("{title}: mean reward (thin) and 10-step average");
    panel(
        &top,
        &r_title,
        &[(reward, RGBColor(150, 170, 230)), (&ma, BLUE)],
        reward.iter().copied().fold(1.0, f64::max) * 1.05,
    )?;
    let kl_max = kl
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(1e-6, f64::max)
        * 1.1;
    panel(
        &bottom,
        "KL(policy || reference), k3 per token",
        &[(kl, RED)],
        kl_max,
    )?;
    root.present()?;
    Ok(())
}

pub fn moving_average(x: &[f64], w: usize) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let lo = (i + 1).saturating_sub(w.max(1));
            let s = &x[lo..=i];
            s.iter().sum::<f64>() / s.len() as f64
        })
        .collect()
}
