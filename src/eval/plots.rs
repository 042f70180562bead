//! `eval --out DIR`: confusion.png, reliability.png, roc.png and a report.md linking them. The
//! plots carry no text (no font library to cross-build); report.md says how to read each. Only
//! figures are drawn, never anything from the evaluated images.

use std::fmt::Write;
use std::path::Path;

use plotters::prelude::*;

use super::metrics::{ece_bin, Metrics, Sample, ECE_BINS};
use super::report::fmt;

const SIZE: (u32, u32) = (480, 480);
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

type Draw<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Writes the three plots and report.md into `dir` (created if missing).
pub fn write_all(dir: &Path, labels: &[String], m: &Metrics, samples: &[Sample]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create --out {}: {e}", dir.display()))?;
    png(&dir.join("confusion.png"), |area| confusion(area, m))?;
    png(&dir.join("reliability.png"), |area| reliability(area, samples))?;
    png(&dir.join("roc.png"), |area| roc(area, labels.len(), samples))?;
    std::fs::write(dir.join("report.md"), report_md(labels, m))
        .map_err(|e| anyhow::anyhow!("cannot write {}/report.md: {e}", dir.display()))
}

fn png(path: &Path, draw: impl FnOnce(&Draw) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let area = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
        area.fill(&WHITE).map_err(plot_error)?;
        draw(&area)?;
        area.present().map_err(plot_error)?;
    }
    image::RgbImage::from_raw(SIZE.0, SIZE.1, rgb)
        .expect("buffer sized above")
        .save(path)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

fn plot_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("plotting failed: {e}")
}

type UnitChart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>;

/// Runs `draw` on the unit square (with a margin, y up), then frames it (last, so filled cells
/// do not cover the frame).
fn with_unit_chart(area: &Draw, draw: impl FnOnce(&mut UnitChart) -> anyhow::Result<()>) -> anyhow::Result<()> {
    let mut chart = ChartBuilder::on(area).margin(24).build_cartesian_2d(0f64..1f64, 0f64..1f64).map_err(plot_error)?;
    draw(&mut chart)?;
    let frame = [(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0), (0.0, 0.0)];
    chart.draw_series([PathElement::new(frame, BLACK.stroke_width(1))]).map_err(plot_error)?;
    Ok(())
}

/// Rows = true labels top to bottom, columns = predicted; shade = share of the row.
fn confusion(area: &Draw, m: &Metrics) -> anyhow::Result<()> {
    let k = m.confusion.classes();
    with_unit_chart(area, |chart| {
        let cell = 1.0 / k as f64;
        for t in 0..k {
            let support = m.confusion.support(t).max(1) as f64;
            for p in 0..k {
                let share = m.confusion.get(t, p) as f64 / support;
                let shade = (255.0 * (1.0 - share)) as u8;
                let (x0, y1) = (p as f64 * cell, 1.0 - t as f64 * cell);
                let rect = Rectangle::new([(x0, y1 - cell), (x0 + cell, y1)], RGBColor(shade, shade, 255).filled());
                chart.draw_series([rect]).map_err(plot_error)?;
            }
        }
        Ok(())
    })
}

/// Bars: accuracy per confidence bin (width = bin); the diagonal is perfect calibration.
fn reliability(area: &Draw, samples: &[Sample]) -> anyhow::Result<()> {
    let mut bins = [(0.0f64, 0u64); ECE_BINS];
    for s in samples {
        let b = &mut bins[ece_bin(s.confidence())];
        b.0 += f64::from(u8::from(s.predicted() == s.truth));
        b.1 += 1;
    }
    let width = 1.0 / ECE_BINS as f64;
    let bars = bins.iter().enumerate().filter(|(_, b)| b.1 > 0).map(|(i, (hits, n))| {
        Rectangle::new([(i as f64 * width, 0.0), ((i + 1) as f64 * width, hits / *n as f64)], PALETTE[0].mix(0.7).filled())
    });
    let bars: Vec<_> = bars.collect();
    with_unit_chart(area, |chart| {
        chart.draw_series(bars).map_err(plot_error)?;
        chart.draw_series([PathElement::new([(0.0, 0.0), (1.0, 1.0)], BLACK.stroke_width(1))]).map_err(plot_error)?;
        Ok(())
    })
}

/// One-vs-rest ROC curve per class (colours in label order, see report.md) and the chance diagonal.
fn roc(area: &Draw, k: usize, samples: &[Sample]) -> anyhow::Result<()> {
    with_unit_chart(area, |chart| {
        chart.draw_series([PathElement::new([(0.0, 0.0), (1.0, 1.0)], BLACK.stroke_width(1))]).map_err(plot_error)?;
        for c in 0..k {
            if let Some(points) = roc_curve(samples, c) {
                chart.draw_series([PathElement::new(points, PALETTE[c % PALETTE.len()].stroke_width(2))]).map_err(plot_error)?;
            }
        }
        Ok(())
    })
}

/// (false positive rate, true positive rate) at every distinct threshold, high to low; `None`
/// without positives or negatives.
pub fn roc_curve(samples: &[Sample], c: usize) -> Option<Vec<(f64, f64)>> {
    let mut scored: Vec<(f64, bool)> = samples.iter().map(|s| (s.probs[c], s.truth == c)).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let pos = scored.iter().filter(|s| s.1).count() as f64;
    let neg = scored.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    let (mut tp, mut fp, mut points) = (0.0, 0.0, vec![(0.0, 0.0)]);
    for (i, (score, positive)) in scored.iter().enumerate() {
        if *positive {
            tp += 1.0
        } else {
            fp += 1.0
        }
        if scored.get(i + 1).is_none_or(|next| next.0 != *score) {
            points.push((fp / neg, tp / pos));
        }
    }
    Some(points)
}

fn report_md(labels: &[String], m: &Metrics) -> String {
    let colours = ["blue", "red", "green", "purple", "orange", "cyan"];
    let mut md = String::from(
        "# sonoedge eval\n\nAssistive only, never a diagnosis. Figures with 95 % intervals; the full set is in the `--json` output.\n\n",
    );
    let _ = writeln!(
        md,
        "- images scored: {}\n- accuracy: {}\n- balanced accuracy: {}\n- macro ROC AUC: {}\n- ECE (15 bins): {}\n",
        m.n,
        fmt(&m.accuracy),
        fmt(&m.balanced_accuracy),
        fmt(&m.macro_roc_auc),
        fmt(&m.ece)
    );
    let _ = writeln!(md, "## Confusion matrix\n\n![confusion](confusion.png)\n\nRows are true labels top to bottom, columns predicted labels left to right, both in the order {labels:?}; the darker the cell, the larger its share of the row.\n");
    let _ = writeln!(md, "## Reliability\n\n![reliability](reliability.png)\n\nOne bar per confidence bin (0 to 1, 15 bins, left to right): the accuracy of the images whose top-1 probability falls in it. Bars below the diagonal: the model is over-confident there.\n");
    let key: Vec<String> = labels.iter().enumerate().map(|(i, l)| format!("{l}: {}", colours[i % colours.len()])).collect();
    let _ = writeln!(md, "## ROC, one class against the rest\n\n![roc](roc.png)\n\nFalse positive rate left to right, true positive rate bottom to top; the diagonal is chance. Curves: {}.", key.join(", "));
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_curve_runs_from_origin_to_one_one_and_merges_tied_scores() {
        let s = |truth, p1: f64| Sample { truth, probs: vec![1.0 - p1, p1] };
        let samples = [s(1, 0.9), s(1, 0.4), s(0, 0.4), s(0, 0.1)];
        assert_eq!(roc_curve(&samples, 1).unwrap(), [(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
        assert_eq!(roc_curve(&samples[..2], 1), None);
    }

    #[test]
    fn out_dir_gets_three_pngs_and_a_report_that_links_them() {
        let samples: Vec<Sample> = (0..12)
            .map(|i| Sample { truth: i % 3, probs: vec![0.5, 0.3, 0.2].into_iter().cycle().skip(i % 2).take(3).collect() })
            .collect();
        let labels = ["a", "b", "c"].map(String::from);
        let m = super::super::metrics::evaluate(3, &samples, &super::super::ci::Bootstrap { resamples: 100, seed: 1 });
        let dir = std::env::temp_dir().join(format!("sonoedge-plots-{}", std::process::id()));
        write_all(&dir, &labels, &m, &samples).unwrap();
        for f in ["confusion.png", "reliability.png", "roc.png"] {
            let img = image::open(dir.join(f)).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), SIZE);
            assert!(img.pixels().any(|p| p.0 != [255, 255, 255]), "{f} is blank");
        }
        let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(md.contains("(confusion.png)") && md.contains("(reliability.png)") && md.contains("(roc.png)"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
