//! Load-time rewrites of tract's optimized plan for dynamic-int8 models: the work around the int8
//! matrix products (weight sums recomputed per run, activation quantization, zero-point row sums)
//! folded to constants or replaced by vectorised operators that compute exactly the same values. The profile these answer is in docs/speed.md.

use super::heads::ParallelHeads;
use super::pack::ParallelPack;
use super::qlinear::QLinear;
use tract_linalg::multithread::par_chunks_mut;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};

/// What [`rewrite`] replaced.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rewrites {
    pub quantizers: usize,
    pub row_sums: usize,
    pub weight_sums: usize,
    /// int8 activation packings for the dot-product kernels, now [`ParallelPack`].
    pub packs: usize,
    /// batched products (attention heads) split head by head, now [`ParallelHeads`].
    pub heads: usize,
    /// int8 products with their zero-point term and cast to f32, now [`QLinear`] (x86-64 only: on
    /// AVX-512 VNNI CPUs, and on AVX2 CPUs where tract packs the weights for its AVX2 kernel).
    pub linears: usize,
}

/// In an optimized plan: folds `Reduce<Sum>(Cast(Const))` weight sums to constants, and replaces
/// tract's dynamic quantizer and `Cast(i8 -> i32) -> Reduce<Sum>` row sums by [`DynQuantU8`] and
/// [`RowSumI8`], the activations' packing before the matrix kernels by [`ParallelPack`], and
/// batched products by [`ParallelHeads`], and on x86-64 with AVX2 or AVX-512 VNNI the int8
/// products by [`QLinear`]; the row sums, packing and batched products split their
/// work across the plan's thread pool. Outputs are bit-identical.
pub fn rewrite(model: &mut TypedModel) -> TractResult<Rewrites> {
    let mut done = Rewrites::default();
    for id in model.eval_order()? {
        let node = model.node(id);
        if node.op.name() == "DynamicQuantizeLinearU8" && node.outputs.len() == 3 {
            TypedModelPatch::replace_single_op(model, node, &node.inputs, DynQuantU8)?.apply(model)?;
            done.quantizers += 1;
        } else if let Some(patch) = weight_sum_patch(model, node)? {
            patch.apply(model)?;
            done.weight_sums += 1;
        } else if let Some(patch) = row_sum_patch(model, node)? {
            patch.apply(model)?;
            done.row_sums += 1;
        } else if let Some(pack) = ParallelPack::for_node(model, node)? {
            TypedModelPatch::replace_single_op(model, node, &node.inputs, pack)?.apply(model)?;
            done.packs += 1;
        } else if let Some(heads) = ParallelHeads::for_node(node) {
            TypedModelPatch::replace_single_op(model, node, &node.inputs, heads)?.apply(model)?;
            done.heads += 1;
        }
    }
    // After the packing is ParallelPack: QLinear reads the activations that packing reads.
    for id in model.eval_order()? {
        if let Some(patch) = QLinear::patch_for(model, model.node(id))? {
            patch.apply(model)?;
            done.linears += 1;
        }
    }
    if done != Rewrites::default() {
        model.compact()?;
    }
    Ok(done)
}

/// `Reduce<Sum>` of `Cast(Const)`: tract keeps the widened weights and sums them at every run (its
/// constant folding skips a cast that grows the data); the sum is a constant, computed here once.
fn weight_sum_patch(model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
    let Some(reduce) = node.op_as::<Reduce>() else { return Ok(None) };
    let cast_node = model.node(node.inputs[0].node);
    let (Some(cast), Some(weights)) =
        (cast_node.op_as::<Cast>(), cast_node.inputs.first().map(|i| model.outlet_fact(*i)).transpose()?.and_then(|f| f.konst.clone()))
    else {
        return Ok(None);
    };
    if reduce.reducer != Reducer::Sum || cast.to != i32::datum_type() || !weights.datum_type().is_integer() {
        return Ok(None);
    }
    let sums = match (weights.datum_type() == i8::datum_type(), weights.shape(), reduce.axes.as_slice()) {
        (true, &[k, n], [0]) => column_sums(weights.try_as_plain_ram()?.as_slice::<i8>()?, k, n),
        _ => {
            let mut sums = weights.cast_to::<i32>()?.to_plain_array_view::<i32>()?.to_owned();
            for &axis in reduce.axes.iter() {
                sums = sums.sum_axis(tract_ndarray::Axis(axis)).insert_axis(tract_ndarray::Axis(axis));
            }
            sums.into_tensor()
        }
    };
    let mut patch = TypedModelPatch::new("constant weight sum");
    let konst = patch.add_const(&node.name, sums)?;
    patch.shunt_outside(model, node.id.into(), konst)?;
    Ok(Some(patch))
}

/// Sums over the rows of a `[k, n]` i8 matrix as a `[1, n]` i32 tensor, row by row (vectorises).
fn column_sums(w: &[i8], k: usize, n: usize) -> Tensor {
    let mut sums = vec![0i32; n];
    for row in w.chunks_exact(n.max(1)).take(k) {
        sums.iter_mut().zip(row).for_each(|(s, &x)| *s += x as i32);
    }
    tract_ndarray::Array2::from_shape_vec((1, n), sums).expect("n sums").into_tensor()
}

/// `Reduce<Sum>` over the last axis of `Cast(i8 -> i32)` becomes one [`RowSumI8`] on the i8 tensor.
fn row_sum_patch(model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
    let Some(reduce) = node.op_as::<Reduce>() else { return Ok(None) };
    let input = model.outlet_fact(node.inputs[0])?;
    let last = input.rank().saturating_sub(1);
    if reduce.reducer != Reducer::Sum || reduce.axes.as_slice() != [last] || input.datum_type != i32::datum_type() {
        return Ok(None);
    }
    let cast_node = model.node(node.inputs[0].node);
    let Some(cast) = cast_node.op_as::<Cast>() else { return Ok(None) };
    if cast.to != i32::datum_type() || model.outlet_fact(cast_node.inputs[0])?.datum_type != i8::datum_type() {
        return Ok(None);
    }
    let mut patch = TypedModelPatch::new("i8 row sum");
    let tap = patch.tap_model(model, cast_node.inputs[0])?;
    let out = patch.wire_node(&node.name, RowSumI8, &[tap])?;
    patch.shunt_outside(model, node.id.into(), out[0])?;
    Ok(Some(patch))
}

/// Sum of each row (last axis) of an i8 tensor, as i32, keeping the axis with length 1.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct RowSumI8;

impl Op for RowSumI8 {
    fn name(&self) -> StaticName {
        "RowSumI8".into()
    }
    op_as_typed_op!();
}

impl EvalOp for RowSumI8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let shape = input.shape();
        let k = *shape.last().context("row sum of a scalar")?;
        let mut out_shape: TVec<usize> = shape.into();
        *out_shape.last_mut().unwrap() = 1;
        let mut out = Tensor::zero::<i32>(&out_shape)?;
        let xs = input.try_as_plain_ram()?.as_slice::<i8>()?;
        let mut plain = out.try_as_plain_ram_mut()?;
        let sums = plain.as_slice_mut::<i32>()?;
        if k > 0 {
            // Rows split across the plan's thread pool; each row is summed whole, in the same order.
            par_chunks_mut(sums, 1, xs.len(), |first, sums| {
                for (row, sum) in xs[first * k..].chunks_exact(k).zip(sums.iter_mut()) {
                    *sum = row_sum(row);
                }
                Ok(())
            })?;
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

/// Sum of i8 values: 64 i16 lanes per block of 256 x 64 values (|sum| <= 32768 per lane), widened per block.
fn row_sum(row: &[i8]) -> i32 {
    let mut total = 0i32;
    for block in row.chunks(256 * 64) {
        let mut lanes = [0i16; 64];
        let mut chunks = block.chunks_exact(64);
        for chunk in chunks.by_ref() {
            for (l, &x) in lanes.iter_mut().zip(chunk) {
                *l += x as i16;
            }
        }
        total += lanes.iter().map(|&l| l as i32).sum::<i32>();
        total += chunks.remainder().iter().map(|&x| x as i32).sum::<i32>();
    }
    total
}

impl TypedOp for RowSumI8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.to_tvec();
        let last = shape.last_mut().context("row sum of a scalar")?;
        *last = 1.to_dim();
        Ok(tvec!(i32::fact(shape)))
    }
    as_op!();
}

/// ONNX `DynamicQuantizeLinear` (u8, range widened to include 0, `round_half_even(x / scale) + zp`
/// clamped), the same arithmetic as tract's operator it replaces, in vectorisable passes.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct DynQuantU8;

impl Op for DynQuantU8 {
    fn name(&self) -> StaticName {
        "DynQuantU8".into()
    }
    op_as_typed_op!();
}

impl EvalOp for DynQuantU8 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let xs = input.try_as_plain_ram()?.as_slice::<f32>()?;
        // One thread: split across two (min/max per part, then quantize by chunks) it measured
        // slower on this 2-vCPU machine (5.7 against 4.6 ms per frame at 2 threads, docs/speed.md).
        let (scale, zero_point) = scale_and_zero_point(min_max(xs));
        // SAFETY: u8 has no invalid bit patterns, and `quantize` writes every element before it is read.
        let mut out = unsafe { Tensor::uninitialized_dt(u8::datum_type(), input.shape())? };
        quantize(xs, scale, zero_point, out.try_as_plain_ram_mut()?.as_slice_mut::<u8>()?);
        Ok(tvec!(out.into_tvalue(), tensor0(scale).into_tvalue(), tensor0(zero_point).into_tvalue()))
    }
}

impl TypedOp for DynQuantU8 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let q = u8::datum_type().fact(inputs[0].shape.clone());
        Ok(tvec!(q, f32::scalar_fact(), u8::scalar_fact()))
    }
    as_op!();
}

/// Min and max of `xs` with 0 included (NaN ignored).
fn min_max(xs: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: SSE2 is part of the x86-64 baseline.
        unsafe { min_max_sse2(xs) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    min_max_lanes(xs)
}

/// `minps(x, m)` is `x < m ? x : m`: the scalar comparison below, four lanes at a time.
#[cfg(target_arch = "x86_64")]
unsafe fn min_max_sse2(xs: &[f32]) -> (f32, f32) {
    use std::arch::x86_64::*;
    // SAFETY: register-only SSE2 (x86-64 baseline).
    let (mut lo, mut hi) = unsafe { ([_mm_setzero_ps(); 4], [_mm_setzero_ps(); 4]) };
    let mut chunks = xs.chunks_exact(16);
    for chunk in chunks.by_ref() {
        for j in 0..4 {
            // SAFETY: `chunk` holds 16 floats, lanes 4j..4j+4 are inside it (unaligned load);
            // min/max are register-only SSE2 (x86-64 baseline).
            unsafe {
                let x = _mm_loadu_ps(chunk.as_ptr().add(4 * j));
                lo[j] = _mm_min_ps(x, lo[j]);
                hi[j] = _mm_max_ps(x, hi[j]);
            }
        }
    }
    let (mut l, mut h) = ([0f32; 16], [0f32; 16]);
    for j in 0..4 {
        // SAFETY: `l` and `h` hold 16 floats; lanes 4j..4j+4 are inside them (unaligned store).
        unsafe {
            _mm_storeu_ps(l.as_mut_ptr().add(4 * j), lo[j]);
            _mm_storeu_ps(h.as_mut_ptr().add(4 * j), hi[j]);
        }
    }
    fold_min_max(l.iter().copied().chain(chunks.remainder().iter().copied()), h.iter().copied().chain(chunks.remainder().iter().copied()))
}

#[cfg(not(target_arch = "x86_64"))]
fn min_max_lanes(xs: &[f32]) -> (f32, f32) {
    let (mut lo, mut hi) = ([0f32; 16], [0f32; 16]);
    let mut chunks = xs.chunks_exact(16);
    for chunk in chunks.by_ref() {
        for i in 0..16 {
            lo[i] = if chunk[i] < lo[i] { chunk[i] } else { lo[i] };
            hi[i] = if chunk[i] > hi[i] { chunk[i] } else { hi[i] };
        }
    }
    fold_min_max(lo.iter().copied().chain(chunks.remainder().iter().copied()), hi.iter().copied().chain(chunks.remainder().iter().copied()))
}

/// The scalar form: starts from 0, a value replaces the bound only when strictly beyond it.
fn fold_min_max(lows: impl Iterator<Item = f32>, highs: impl Iterator<Item = f32>) -> (f32, f32) {
    (lows.fold(0f32, |m, x| if x < m { x } else { m }), highs.fold(0f32, |m, x| if x > m { x } else { m }))
}

/// The scale and zero point ONNX defines (and tract and onnxruntime compute) for u8.
fn scale_and_zero_point((min, max): (f32, f32)) -> (f32, u8) {
    let scale = (max - min) / 255.0;
    // Not `clamp`: `max` turns a NaN into 0 as tract's scalar form does; `clamp` would keep it.
    #[allow(clippy::manual_clamp)]
    let zero_point = (-min / scale).round_ties_even().max(0.0).min(255.0);
    (scale, zero_point as u8)
}

/// `clamp(round_half_even(x / scale) + zp, 0, 255)`. Rounding adds and removes 1.5 * 2^23, which
/// rounds half to even for |v| < 2^22: |x / scale| <= 255 here, as every x lies in [min, max].
/// NaN counts as 0 before the zero point is added, as `NaN as i32` does in the scalar form.
fn quantize(xs: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { quantize_avx2(xs, scale, zero_point, out) };
    }
    quantize_scalar(xs, scale, zero_point, out)
}

/// [`quantize_scalar`] compiled for AVX2: the divisions run eight at a time.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_avx2(xs: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    quantize_scalar(xs, scale, zero_point, out)
}

#[inline(always)]
fn quantize_scalar(xs: &[f32], scale: f32, zero_point: u8, out: &mut [u8]) {
    const MAGIC: f32 = 12_582_912.0;
    let zp = zero_point as f32;
    for (x, y) in xs.iter().zip(out.iter_mut()) {
        let q = x / scale;
        let r = (q + MAGIC) - MAGIC;
        let r = if r.is_nan() { 0.0 } else { r };
        let v = r + zp;
        let v = if v > 0.0 { v } else { 0.0 };
        let v = if v < 255.0 { v } else { 255.0 };
        // SAFETY: v is in [0, 255] (NaN became 0 above), so the conversion is exact.
        *y = unsafe { v.to_int_unchecked::<i32>() } as u8;
    }
}

#[cfg(test)]
#[path = "rewrite_tests.rs"]
mod tests;
