//! Batched matrix products (attention's Q·Kᵀ and A·V, one small product per head) split across the
//! plan's threads head by head, each head run by tract's own kernel on one thread exactly as tract's
//! `OptMatMul` runs it, instead of every head's few tiles being spread over all threads in turn.

use tract_linalg::mmm::FusedSpec;
use tract_linalg::multithread::{current_tract_executor, multithread_tract_scope, par_chunks_mut, Executor};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::matmul::optimized::OptMatMul;

/// Wraps an `OptMatMul` that loops over a batch of products (its non-trivial path). One thread, or
/// a single product, runs the inner operator unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParallelHeads {
    inner: OptMatMul,
}

impl ParallelHeads {
    /// The replacement for `node`, when it is an `OptMatMul` looping over more than one product.
    pub fn for_node(node: &TypedNode) -> Option<ParallelHeads> {
        let inner = node.op_as::<OptMatMul>()?;
        let shape = inner.c_fact.shape.as_concrete()?;
        (!inner.trivial_path && looping_shape(inner, shape).iter().product::<usize>() > 1).then(|| ParallelHeads { inner: inner.clone() })
    }

    /// Runs the products of `heads` (flat indices over the looping shape) into `c` on this thread.
    ///
    /// # Safety
    /// As tract's own loop: `c` is the output the micro-ops were built for, and no other thread
    /// writes the products of `heads`.
    unsafe fn run_heads(&self, inputs: &[TValue], c: &Tensor, mode: usize, heads: &[usize]) -> TractResult<()> {
        let mmm = &*self.inner.mmm[mode];
        let looping = looping_shape(&self.inner, c.shape());
        let (m, n) = (axis_len(c, self.inner.c_m_axis), axis_len(c, self.inner.c_n_axis));
        // SAFETY: a fresh scratch space of the kernel that uses it below, owned by this thread.
        let mut space = unsafe { mmm.allocate_scratch_space() };
        let mut uops = vec![FusedSpec::ShiftLeft(0); self.inner.micro_ops.len()];
        let mut coords: TVec<usize> = looping.clone();
        for &head in heads {
            coords_of(head, &looping, &mut coords);
            for (uop, proto) in uops.iter_mut().zip(&self.inner.micro_ops) {
                *uop = proto.resolve(inputs, &coords, c, mmm, mode);
            }
            // SAFETY: the micro-ops were resolved for this product's coordinates in `c`, which the
            // caller guarantees no other thread writes, and `space` is this kernel's.
            unsafe { mmm.run_with_scratch_space(m, n, space.as_mut(), &uops) }.context("In mmm.run_with_scratch_space")?;
        }
        Ok(())
    }
}

/// The output's shape with its m and n axes set to 1: one coordinate per product.
fn looping_shape(op: &OptMatMul, c_shape: &[usize]) -> TVec<usize> {
    let mut shape: TVec<usize> = c_shape.into();
    for axis in [op.c_m_axis, op.c_n_axis].into_iter().flatten() {
        shape[axis] = 1;
    }
    shape
}

fn axis_len(c: &Tensor, axis: Option<usize>) -> usize {
    axis.map(|ax| c.shape()[ax]).unwrap_or(1)
}

/// The row-major coordinates of the `index`-th product over `shape`.
fn coords_of(mut index: usize, shape: &[usize], coords: &mut [usize]) {
    for (coord, &dim) in coords.iter_mut().zip(shape).rev() {
        *coord = index % dim;
        index /= dim;
    }
}

impl Op for ParallelHeads {
    fn name(&self) -> StaticName {
        "ParallelHeads".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        self.inner.info()
    }

    op_as_typed_op!();
}

impl EvalOp for ParallelHeads {
    not_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let threaded = matches!(current_tract_executor(), Executor::MultiThread(pool) if pool.current_num_threads() > 1);
        let c_shape = self.inner.c_fact.shape.eval_to_usize(ctx.symbols)?;
        let count: usize = looping_shape(&self.inner, &c_shape).iter().product();
        if !threaded || count < 2 {
            return self.inner.eval(ctx, inputs);
        }
        // SAFETY: every element of `c` is written by the product it belongs to, before it is read.
        let c = unsafe { Tensor::uninitialized_dt(self.inner.c_fact.datum_type, &c_shape)? };
        let mode = self.inner.mode_picker.pick(axis_len(&c, self.inner.c_n_axis))?;
        let mut heads: Vec<usize> = (0..count).collect();
        par_chunks_mut(&mut heads, 1, usize::MAX, |_, heads| {
            // Each head on one thread: tract's kernel must not fan out again from a worker.
            // SAFETY: the chunks of `heads` are disjoint, so no two threads write one product.
            multithread_tract_scope(Executor::SingleThread, || unsafe { self.run_heads(&inputs, &c, mode, heads) })
        })?;
        Ok(tvec!(c.into_tvalue()))
    }

    fn drop_session(&self, session: SessionId, node_id: usize) {
        self.inner.drop_session(session, node_id)
    }
}

impl TypedOp for ParallelHeads {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.inner.output_facts(inputs)
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        self.inner.cost(inputs)
    }

    as_op!();
}

#[cfg(test)]
#[path = "heads_tests.rs"]
mod tests;
