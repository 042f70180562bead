//! Per-operator timing of the optimized plan (`sonoedge bench --profile`): where inference time goes.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use tract_onnx::prelude::*;

/// Accumulated wall time per plan node over one or more runs.
#[derive(Debug, Default)]
pub struct Profile {
    runs: u32,
    /// node id -> (op name, op detail, total seconds).
    nodes: BTreeMap<usize, (String, String, f64)>,
}

/// One row of the by-operator breakdown.
#[derive(Debug, Serialize)]
pub struct OpShare {
    pub op: String,
    pub nodes: usize,
    pub ms_per_run: f64,
    pub share: f64,
    /// The most frequent detail (e.g. the matrix kernel tract picked) among its nodes.
    pub detail: String,
}

impl Profile {
    /// Runs the plan once, timing each node.
    pub(super) fn record(&mut self, state: &mut TypedSimpleState, input: TValue) -> TractResult<TVec<TValue>> {
        self.runs += 1;
        let nodes = &mut self.nodes;
        state.run_plan_with_eval(tvec![input], |ctx, op_state, node, inputs| {
            let t = Instant::now();
            let out = tract_onnx::tract_core::plan::eval(ctx, op_state, node, inputs);
            let dt = t.elapsed().as_secs_f64();
            let entry = nodes.entry(node.id).or_insert_with(|| (op_key(node), detail_of(node), 0.0));
            entry.2 += dt;
            out
        })
    }

    /// Time per op type, largest first.
    pub fn by_op(&self) -> Vec<OpShare> {
        let total: f64 = self.nodes.values().map(|n| n.2).sum();
        let mut groups: BTreeMap<&str, (usize, f64, BTreeMap<&str, usize>)> = BTreeMap::new();
        for (name, detail, secs) in self.nodes.values() {
            let g = groups.entry(name).or_default();
            g.0 += 1;
            g.1 += secs;
            *g.2.entry(detail).or_default() += 1;
        }
        let runs = self.runs.max(1) as f64;
        let mut rows: Vec<OpShare> = groups
            .into_iter()
            .map(|(op, (n, secs, details))| OpShare {
                op: op.to_string(),
                nodes: n,
                ms_per_run: secs * 1e3 / runs,
                share: if total > 0.0 { secs / total } else { 0.0 },
                detail: details.into_iter().max_by_key(|d| d.1).map(|d| d.0.to_string()).unwrap_or_default(),
            })
            .collect();
        rows.sort_by(|a, b| b.ms_per_run.total_cmp(&a.ms_per_run));
        rows
    }

    /// Sum of node times per run, ms (slightly below wall time: excludes the plan's bookkeeping).
    pub fn total_ms(&self) -> f64 {
        self.nodes.values().map(|n| n.2).sum::<f64>() * 1e3 / self.runs.max(1) as f64
    }
}

/// The op's name, with the kernel tract picked for a matrix product (`OptMatMul avx512_mmm_f32_16x12`),
/// so int8 and f32 products are told apart.
fn op_key(node: &TypedNode) -> String {
    let info = node.op.info().unwrap_or_default();
    let kernel = info.iter().find_map(|l| l.split_once("with [").map(|(_, k)| k.trim_end_matches(']').to_string()));
    match kernel {
        Some(k) => format!("{} {k}", node.op.name()),
        None => node.op.name().to_string(),
    }
}

/// The first line of tract's own description of the node (kernel choice for matrix products).
fn detail_of(node: &TypedNode) -> String {
    let info = node.op.info().unwrap_or_default();
    let mut line = info.into_iter().next().unwrap_or_default();
    line.truncate(120);
    line
}
