//! The packing of activations before tract's matrix kernels, split across the plan's threads: a
//! batch (attention heads) matrix by matrix with tract's own packing, and one int8 matrix for the
//! dot-product kernels (VNNI, `sdot`) panel by panel, in `PackedI8K4`'s layout, four bytes at a time.

use std::sync::Arc;

use tract_linalg::mmm::{EagerPackedInput, MMMInputFormat, MMMInputValue, PackedExoticFact, PackedMatrixStorage};
use tract_linalg::multithread::par_chunks_mut;
use tract_linalg::pack::PackedI8K4;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::matmul::pack::{DynPackedExoticFact, OptMatMulPack};

/// Replaces tract's `OptMatMulPack` where it has one packing format. Its results are the values
/// tract's operator computes (tests compare them byte for byte); what it does not split, it hands
/// to the `OptMatMulPack` it keeps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ParallelPack {
    inner: OptMatMulPack,
    format: Box<dyn MMMInputFormat>,
    k_axis: usize,
    mn_axis: usize,
}

impl ParallelPack {
    /// The replacement for `node`, when it is an `OptMatMulPack` with a single format.
    pub fn for_node(model: &TypedModel, node: &TypedNode) -> TractResult<Option<ParallelPack>> {
        let Some(inner) = node.op_as::<OptMatMulPack>() else { return Ok(None) };
        let input = model.outlet_fact(node.inputs[0])?;
        let output = model.outlet_fact(node.id.into())?;
        let Some(packed) = output.exotic_fact.as_ref().and_then(|f| f.downcast_ref::<DynPackedExoticFact>()) else {
            return Ok(None);
        };
        let [format] = packed.packers.as_slice() else { return Ok(None) };
        // tract shares the activations' memory with this format instead of packing them.
        if format.downcast_ref::<tract_linalg::strided_panel::StridedKMajor>().is_some() {
            return Ok(None);
        }
        let mapping = inner.axes_mapping(&[input], &[output])?;
        let (k_axis, mn_axis) = (mapping.axis('K')?.inputs[0][0], mapping.axis('M')?.inputs[0][0]);
        Ok(Some(ParallelPack { inner: inner.clone(), format: format.clone(), k_axis, mn_axis }))
    }

    /// The packed input's k and mn axes.
    pub fn axes(&self) -> (usize, usize) {
        (self.k_axis, self.mn_axis)
    }

    /// Each matrix of a batch packed by tract's own format, matrices split across the threads;
    /// `None` for a single matrix.
    fn pack_batch(&self, input: &Tensor) -> TractResult<Option<TVec<Box<dyn MMMInputValue>>>> {
        let mut batch: TVec<usize> = input.shape().into();
        batch[self.k_axis] = 1;
        batch[self.mn_axis] = 1;
        let count: usize = batch.iter().product();
        if count < 2 {
            return Ok(None);
        }
        let mut values: Vec<Option<Box<dyn MMMInputValue>>> = (0..count).map(|_| None).collect();
        par_chunks_mut(&mut values, 1, input.len(), |first, values| {
            for (i, value) in values.iter_mut().enumerate() {
                let offset = byte_offset(input, &batch, first + i);
                // SAFETY: `offset` is the start of one matrix of `input`, whose shape and strides the
                // view keeps, as tract's operator builds it.
                let view = unsafe { TensorView::from_bytes(input, offset, input.shape(), input.strides()) };
                *value = Some(self.format.prepare_one_view(&view, self.k_axis, self.mn_axis)?);
            }
            Ok(())
        })?;
        Ok(Some(values.into_iter().map(|v| v.expect("every matrix packed")).collect()))
    }
}

/// Byte offset in `input` of the `index`-th matrix, in row-major order over `batch`.
fn byte_offset(input: &Tensor, batch: &[usize], mut index: usize) -> isize {
    let mut offset = 0isize;
    for (&dim, &stride) in batch.iter().zip(input.strides()).rev() {
        offset += (index % dim) as isize * stride;
        index /= dim;
    }
    offset * input.datum_type().size_of() as isize
}

/// `input` as one `PackedI8K4` matrix, or `None` unless it is one `[mn, k]` matrix of i8 rows (every
/// other axis of length 1, k the last).
fn pack_rows_i8(format: &PackedI8K4, k_axis: usize, mn_axis: usize, input: &Tensor) -> TractResult<Option<Box<dyn MMMInputValue>>> {
    let shape = input.shape();
    let batch = shape.iter().enumerate().filter(|(ax, _)| *ax != k_axis && *ax != mn_axis);
    if batch.map(|(_, d)| d).product::<usize>() != 1 || k_axis + 1 != shape.len() || input.datum_type() != i8::datum_type() {
        return Ok(None);
    }
    let (k, mn) = (shape[k_axis], shape[mn_axis]);
    let r = format.r;
    let panel = k.div_ceil(4) * 4 * r;
    let rows = input.try_as_plain_ram()?.as_slice::<i8>()?;
    // SAFETY: a byte blob of the format's size and alignment; every byte is written below.
    let mut blob = unsafe { Blob::new_for_size_and_align(mn.div_ceil(r) * panel, format.align) };
    if panel > 0 {
        par_chunks_mut(blob.as_bytes_mut(), panel, k * mn, |first, panels| {
            for (p, dst) in panels.chunks_exact_mut(panel).enumerate() {
                let start = (first + p) * r;
                pack_panel(&rows[start * k..(start + r).min(mn) * k], k, r, dst);
            }
            Ok(())
        })?;
    }
    let fact = PackedExoticFact { format: Box::new(format.clone()), mn: mn.to_dim(), k };
    Ok(Some(Box::new(EagerPackedInput { fact, packed: Arc::new(blob), panel_bytes: panel, mn })))
}

/// One panel of `r` rows (fewer at the end, the rest zero): for each group of four k, each row's
/// four bytes side by side, `dst[(k / 4) * 4r + row * 4 + k % 4] = rows[row][k]`, k padded with 0.
fn pack_panel(rows: &[i8], k: usize, r: usize, dst: &mut [u8]) {
    dst.fill(0);
    let blocks = k / 4;
    for (row, src) in rows.chunks_exact(k.max(1)).enumerate() {
        for (b, four) in src.chunks_exact(4).enumerate() {
            let at = b * 4 * r + row * 4;
            dst[at..at + 4].copy_from_slice(&[four[0] as u8, four[1] as u8, four[2] as u8, four[3] as u8]);
        }
        for (i, &x) in src[blocks * 4..].iter().enumerate() {
            dst[blocks * 4 * r + row * 4 + i] = x as u8;
        }
    }
}

impl Op for ParallelPack {
    fn name(&self) -> StaticName {
        "ParallelPack".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("{:?}, k axis {}, mn axis {}", self.format, self.k_axis, self.mn_axis)])
    }

    op_as_typed_op!();
}

impl EvalOp for ParallelPack {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = &inputs[0];
        let values = match self.format.downcast_ref::<PackedI8K4>() {
            Some(i8k4) => pack_rows_i8(i8k4, self.k_axis, self.mn_axis, input)?.map(|v| tvec![v]),
            None => None,
        };
        let Some(values) = values.map(Ok).or_else(|| self.pack_batch(input).transpose()).transpose()? else {
            return self.inner.eval(ctx, inputs);
        };
        let storage = PackedMatrixStorage::new_batched(&self.inner.output_shape(input.shape()), values);
        Ok(tvec!(storage.into_tensor(input.datum_type()).into_tvalue()))
    }
}

impl TypedOp for ParallelPack {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.inner.output_facts(inputs)
    }

    fn axes_mapping(&self, inputs: &[&TypedFact], outputs: &[&TypedFact]) -> TractResult<AxesMapping> {
        self.inner.axes_mapping(inputs, outputs)
    }

    as_op!();
}

#[cfg(test)]
#[path = "pack_tests.rs"]
mod tests;
