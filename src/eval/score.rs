//! Scores a data set through the daemon's per-image path ([`Classifier::run_file`] with the
//! config's region); an image that cannot be read or decoded is listed with its error, not scored.

use std::path::PathBuf;

use super::dataset::Item;
use super::metrics::Sample;
use crate::capture::region::Region;
use crate::classify::Classifier;
use crate::infer::Model;

/// The scored images and the ones that failed, both in data-set order.
#[derive(Debug, Default)]
pub struct Scores {
    pub scored: Vec<(PathBuf, Sample)>,
    pub failed: Vec<(PathBuf, String)>,
}

/// Classifies every item; `progress(done, total)` is called after each image.
pub fn score(model: &Model, region: &mut Region, items: &[Item], mut progress: impl FnMut(usize, usize)) -> anyhow::Result<Scores> {
    let mut classifier = Classifier::new(model)?;
    let mut scores = Scores::default();
    for (i, item) in items.iter().enumerate() {
        match classifier.run_file(&item.path, region) {
            Ok((_, probs)) => scores.scored.push((item.path.clone(), Sample { truth: item.label, probs: probs.to_vec() })),
            Err(e) => scores.failed.push((item.path.clone(), format!("{e:#}"))),
        }
        progress(i + 1, items.len());
    }
    Ok(scores)
}
