//! Local validation of a model on a site's own labelled images: the data set (ImageFolder or CSV
//! manifest), the metrics with their confidence intervals, and the report. It scores images through
//! [`crate::classify::Classifier`], the daemon's own per-image path, so the figures describe the
//! model as the daemon runs it.

pub mod abstention;
pub mod card;
pub mod ci;
pub mod dataset;
pub mod dedup;
pub mod metrics;
pub mod plots;
pub mod report;
pub mod score;
