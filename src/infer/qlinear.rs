//! Dynamic-int8 linear layers on x86-64 CPUs with AVX2 but no int8 dot-product instructions (no
//! VNNI: Zen 2 and 3, Haswell to Comet Lake), where tract's `avx2_mmm_i32_8x8` runs ViT-B's int8
//! products ~3x slower than its own fp32 ones. One operator takes the offset activations, tract's
//! zero-point term and the weights (repacked once at load from tract's panels, which the plan then
//! drops) and writes the f32 products the plan's `OptMatMul` + `Cast` wrote, exactly: i16 pairs
//! through `vpmaddwd`, split by output columns across the plan's thread pool.

#[cfg(target_arch = "x86_64")]
use std::ops::Range;
use std::sync::Arc;

use tract_linalg::mmm::{EagerPackedInput, OutputStoreSpec};
#[cfg(target_arch = "x86_64")]
use tract_linalg::multithread::par_chunks_mut;
use tract_linalg::pack::PackedFormat;
use tract_linalg::BinOp;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::matmul::optimized::{MatMulOperand, OptMatMul, ProtoFusedSpec};

use super::pack::ParallelPack;

/// Output columns per block: two of tract's 8-column weight panels.
#[cfg(target_arch = "x86_64")]
const BLOCK: usize = 16;
/// Rows (tokens) per kernel tile.
#[cfg(target_arch = "x86_64")]
const ROWS: usize = 6;
/// Pairs of k per pass over all the columns: 768 values of k, so that a pass's activations (197
/// tokens x 768 x 2 bytes) stay in a core's L2 while every column block reads them; a longer k
/// (ViT's MLP output, 3072) takes several passes, the i32 sums kept in the output in between.
#[cfg(target_arch = "x86_64")]
const PASS_PAIRS: usize = 384;

/// `c[i, j] = (Σ_k a[i, k] · w[k, j] - sub[j]) as f32` for i8 activations `a` (tract's `q - 128`),
/// i8 weights `w` and tract's i32 zero-point term. The weights are stored by blocks of 16 columns,
/// each block by pairs of k: `(w[2p, j], w[2p + 1, j])` for j = 0..16, 32 bytes a pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QLinear {
    weights: Arc<Vec<i8>>,
    k: usize,
    /// Output features (the weights' columns).
    n: usize,
    c_shape: TVec<usize>,
}

impl QLinear {
    /// The patch that replaces `node` (an int8 `OptMatMul`) and the `Cast` to f32 after it, when the
    /// product has the shape this kernel computes and the CPU has AVX2.
    pub fn patch_for(model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
        if !cpu_supported() {
            return Ok(None);
        }
        let Some(op) = node.op_as::<OptMatMul>() else { return Ok(None) };
        let Some((op, cast)) = Self::for_matmul(model, node, op)? else { return Ok(None) };
        let Some(activations) = activations_of(model, node, op.k)? else { return Ok(None) };
        let mut patch = TypedModelPatch::new("fused int8 linear");
        let a = patch.tap_model(model, activations)?;
        let sub = patch.tap_model(model, node.inputs[1])?;
        let out = patch.wire_node(&node.name, op, &[a, sub])?;
        patch.shunt_outside(model, cast.id.into(), out[0])?;
        Ok(Some(patch))
    }

    /// The operator for weights packed by tract in 8-column i8 panels (k outer, even k), writing
    /// `c_shape`; columns past n are zero.
    fn new(w: &EagerPackedInput, c_shape: &[usize]) -> QLinear {
        debug_assert!(whole_panels(w));
        let (k, n, panels) = (w.fact.k, w.mn, w.mn.div_ceil(8));
        let mut weights = vec![0i8; n.div_ceil(16) * 16 * k];
        // SAFETY: tract's blob holds `panels` panels of `panel_bytes`, each k rows of 8 bytes.
        let packed = unsafe { std::slice::from_raw_parts(w.packed.as_ptr() as *const i8, panels * w.panel_bytes) };
        for (panel, src) in packed.chunks_exact(w.panel_bytes).enumerate() {
            let (block, half) = (panel / 2, panel % 2);
            let block = &mut weights[block * 16 * k..(block + 1) * 16 * k];
            for (pair, dst) in block.chunks_exact_mut(32).enumerate() {
                let (even, odd) = (&src[16 * pair..16 * pair + 8], &src[16 * pair + 8..16 * pair + 16]);
                for j in 0..8 {
                    dst[16 * half + 2 * j] = even[j];
                    dst[16 * half + 2 * j + 1] = odd[j];
                }
            }
        }
        QLinear { weights: Arc::new(weights), k, n, c_shape: c_shape.into() }
    }

    /// The operator for `op` and the `Cast` it feeds, when `op` is `[weights · activations] - row
    /// term`, stored as `[.., tokens, features]` with i8 weights in 8-column panels and an even k.
    fn for_matmul<'m>(model: &'m TypedModel, node: &TypedNode, op: &OptMatMul) -> TractResult<Option<(QLinear, &'m TypedNode)>> {
        let Some(c_shape) = op.c_fact.shape.as_concrete() else { return Ok(None) };
        let rank = c_shape.len();
        if rank < 2 {
            return Ok(None);
        }
        let (last, before) = (Some(rank - 1), Some(rank - 2));
        let shaped = op.c_fact.datum_type == i32::datum_type() && op.mmm.len() == 1 && c_shape[..rank - 2].iter().all(|&d| d == 1);
        // tract puts the weights on either side of its kernel: as A, the features are its m axis
        // and the zero-point term is per row; as B, they are its n axis and the term is per column.
        let (w, stores, oriented) = match op.micro_ops.as_slice() {
            [ProtoFusedSpec::AddMatMul { a: MatMulOperand::Const(w), b: MatMulOperand::Input(0), .. }, ProtoFusedSpec::BinPerRow(1, BinOp::SubF, _), ProtoFusedSpec::Store(stores)] => {
                (w, stores, op.c_m_axis == last && op.c_n_axis == before)
            }
            [ProtoFusedSpec::AddMatMul { a: MatMulOperand::Input(0), b: MatMulOperand::Const(w), .. }, ProtoFusedSpec::BinPerCol(1, BinOp::SubF, _), ProtoFusedSpec::Store(stores)] => {
                (w, stores, op.c_m_axis == before && op.c_n_axis == last)
            }
            _ => return Ok(None),
        };
        let Some(w) = w.downcast_ref::<EagerPackedInput>() else { return Ok(None) };
        let Some(format) = w.fact.format.downcast_ref::<PackedFormat>() else { return Ok(None) };
        let stored_as_c =
            matches!(stores.as_slice(), [OutputStoreSpec::View { m_axis, n_axis, .. }] if *m_axis == op.c_m_axis && *n_axis == op.c_n_axis);
        let n = c_shape[rank - 1];
        if !shaped
            || !oriented
            || !stored_as_c
            || format.dt != i8::datum_type()
            || format.r != 8
            || w.mn != n
            || w.fact.k % 2 != 0
            || !whole_panels(w)
        {
            return Ok(None);
        }
        let Some(cast) = single_successor(model, node).filter(|s| s.op_as::<Cast>().is_some_and(|c| c.to == f32::datum_type())) else {
            return Ok(None);
        };
        let sub = model.outlet_fact(node.inputs[1])?;
        if sub.datum_type != i32::datum_type() || sub.shape.as_concrete().map(|s| s.iter().product::<usize>()) != Some(n) {
            return Ok(None);
        }
        Ok(Some((QLinear::new(w, c_shape), cast)))
    }

    /// Columns `[block * 16, block * 16 + 16)` of `c` for every row and the pairs of `pass`, into
    /// `out` (row-major `[m, n]`): i32 sums between passes, f32 after the last.
    ///
    /// # Safety
    /// The CPU has AVX2; `a` holds `m` rows of `k` i16; `out` points at `m * n` f32 of which no
    /// other thread writes these columns, holding the earlier passes' sums unless `pass` is the first.
    #[cfg(target_arch = "x86_64")]
    unsafe fn run_block(&self, a: &[i16], m: usize, sub: &[i32], out: *mut f32, block: usize, pass: Range<usize>) {
        let w = &self.weights[block * BLOCK * self.k..(block + 1) * BLOCK * self.k];
        let (first, last) = (pass.start == 0, pass.end == self.k / 2);
        let tile = Tile { k: self.k, n: self.n, w: w.as_ptr(), col: block * BLOCK, sub, pass, first, last };
        let mut row = 0;
        while row < m {
            let rows = (m - row).min(ROWS);
            // SAFETY: rows `row..row + rows` of `a` exist and their outputs are inside `out`, in
            // columns this thread owns; `w` is the block's k / 2 pairs; AVX2 per the caller.
            unsafe {
                let (a, out) = (a.as_ptr().add(row * self.k), out.add(row * self.n));
                match rows {
                    6 => tile.run::<6>(a, out),
                    5 => tile.run::<5>(a, out),
                    4 => tile.run::<4>(a, out),
                    3 => tile.run::<3>(a, out),
                    2 => tile.run::<2>(a, out),
                    _ => tile.run::<1>(a, out),
                }
            }
            row += rows;
        }
    }
}

/// One block of 16 output columns: two weight panels, the row term, where the block starts.
#[cfg(target_arch = "x86_64")]
struct Tile<'s> {
    k: usize,
    n: usize,
    w: *const i8,
    col: usize,
    sub: &'s [i32],
    /// The pairs of k this pass sums, and whether it is the first (sums start at 0) or the last
    /// (the f32 result is written) of the passes.
    pass: Range<usize>,
    first: bool,
    last: bool,
}

#[cfg(target_arch = "x86_64")]
impl Tile<'_> {
    /// `out[r, col + j] = (Σ_k a[r, k] w[k, j] - sub[col + j]) as f32` for `R` rows and the block's
    /// columns, over k pairs (32 bytes of interleaved weights each), this pass's share of them.
    ///
    /// # Safety
    /// AVX2; `a` holds `R` rows of `k` i16 (stride `k`); `out` holds `R` rows of stride `n` with
    /// the block's columns inside (the earlier passes' i32 sums unless first); `w` holds the block's
    /// k / 2 pairs.
    #[target_feature(enable = "avx2")]
    unsafe fn run<const R: usize>(&self, a: *const i16, out: *mut f32) {
        use std::arch::x86_64::*;
        let k = self.k;
        let cols = (self.n - self.col).min(BLOCK);
        let mut c = [[_mm256_setzero_si256(); 2]; R];
        if !self.first {
            for (r, c) in c.iter_mut().enumerate() {
                let mut lanes = [0i32; BLOCK];
                // SAFETY: row r of `out` has the block's `cols` columns, holding i32 sums.
                unsafe { std::ptr::copy_nonoverlapping(out.add(r * self.n + self.col) as *const i32, lanes.as_mut_ptr(), cols) };
                // SAFETY: `lanes` holds 16 i32: two unaligned 8-lane loads.
                unsafe {
                    *c = [_mm256_loadu_si256(lanes.as_ptr() as *const __m256i), _mm256_loadu_si256(lanes.as_ptr().add(8) as *const __m256i)]
                };
            }
        }
        for p in self.pass.clone() {
            // SAFETY: pair p is bytes 32p..32p+32 of the block; each half, widened, is 8 i16 pairs.
            let (y0, y1) = unsafe {
                let x = self.w.add(32 * p) as *const __m128i;
                (_mm256_cvtepi8_epi16(_mm_loadu_si128(x)), _mm256_cvtepi8_epi16(_mm_loadu_si128(x.add(1))))
            };
            for (r, c) in c.iter_mut().enumerate() {
                // SAFETY: row r has k i16; elements 2p and 2p + 1 are read as one i32.
                let pair = unsafe { (a.add(r * k + 2 * p) as *const i32).read_unaligned() };
                let b = _mm256_set1_epi32(pair);
                c[0] = _mm256_add_epi32(c[0], _mm256_madd_epi16(y0, b));
                c[1] = _mm256_add_epi32(c[1], _mm256_madd_epi16(y1, b));
            }
        }
        for (r, c) in c.iter().enumerate() {
            // SAFETY: row r of `out` has the block's columns (checked by the caller's shape).
            let row = unsafe { out.add(r * self.n + self.col) };
            if !self.last {
                let mut lanes = [0i32; BLOCK];
                // SAFETY: `lanes` holds 16 i32; row r of `out` has `cols` columns for the sums.
                unsafe {
                    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, c[0]);
                    _mm256_storeu_si256(lanes.as_mut_ptr().add(8) as *mut __m256i, c[1]);
                    std::ptr::copy_nonoverlapping(lanes.as_ptr(), row as *mut i32, cols);
                }
            } else if cols == BLOCK {
                for (half, c) in c.iter().enumerate() {
                    // SAFETY: `sub` has n values and col + 16 <= n; 8 f32 stored inside the row.
                    unsafe {
                        let s = _mm256_loadu_si256(self.sub.as_ptr().add(self.col + 8 * half) as *const __m256i);
                        _mm256_storeu_ps(row.add(8 * half), _mm256_cvtepi32_ps(_mm256_sub_epi32(*c, s)));
                    }
                }
            } else {
                let mut lanes = [0i32; BLOCK];
                // SAFETY: `lanes` holds 16 i32: two unaligned 8-lane stores.
                unsafe {
                    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, c[0]);
                    _mm256_storeu_si256(lanes.as_mut_ptr().add(8) as *mut __m256i, c[1]);
                }
                for (j, &v) in lanes.iter().enumerate().take(cols) {
                    // SAFETY: col + j < n: inside the row.
                    unsafe { *row.add(j) = v.wrapping_sub(self.sub[self.col + j]) as f32 };
                }
            }
        }
    }
}

/// tract's blob holds every panel whole: k rows of 8 bytes each.
fn whole_panels(w: &EagerPackedInput) -> bool {
    w.panel_bytes >= 8 * w.fact.k && w.packed.len() >= w.mn.div_ceil(8) * w.panel_bytes
}

fn cpu_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The one node reading `node`'s only output, if there is exactly one.
fn single_successor<'m>(model: &'m TypedModel, node: &TypedNode) -> Option<&'m TypedNode> {
    match (node.outputs.as_slice(), model.outputs.iter().any(|o| o.node == node.id)) {
        ([out], false) if out.successors.len() == 1 => Some(model.node(out.successors[0].node)),
        _ => None,
    }
}

/// The i8 `[.., tokens, k]` tensor (k last, other leading axes 1) that `node`'s packing reads.
fn activations_of(model: &TypedModel, node: &TypedNode, k: usize) -> TractResult<Option<OutletId>> {
    let pack_node = model.node(node.inputs[0].node);
    let Some(pack) = pack_node.op_as::<ParallelPack>() else { return Ok(None) };
    let source = pack_node.inputs[0];
    let fact = model.outlet_fact(source)?;
    let Some(shape) = fact.shape.as_concrete() else { return Ok(None) };
    let rank = shape.len();
    let plain = fact.datum_type == i8::datum_type()
        && rank >= 2
        && pack.axes() == (rank - 1, rank - 2)
        && shape[rank - 1] == k
        && shape[..rank - 2].iter().all(|&d| d == 1);
    Ok(plain.then_some(source))
}

/// The output pointer, shared by the threads that each write their own columns.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Columns(*mut f32);
#[cfg(target_arch = "x86_64")]
impl Columns {
    /// A method, not the field: a closure would capture the bare pointer, which is not `Sync`.
    fn ptr(&self) -> *mut f32 {
        self.0
    }
}

// SAFETY: the threads write disjoint columns (see `run_block`), and the tensor outlives the scope.
#[cfg(target_arch = "x86_64")]
unsafe impl Send for Columns {}
// SAFETY: as above.
#[cfg(target_arch = "x86_64")]
unsafe impl Sync for Columns {}

impl Op for QLinear {
    fn name(&self) -> StaticName {
        "QLinear".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("k {} n {}, AVX2 i16 pairs", self.k, self.n)])
    }

    op_as_typed_op!();
}

impl EvalOp for QLinear {
    op_out_of_plan!();

    #[cfg(target_arch = "x86_64")]
    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let a8 = inputs[0].try_as_plain_ram()?.as_slice::<i8>()?;
        let sub = inputs[1].try_as_plain_ram()?.as_slice::<i32>()?;
        ensure!(a8.len() % self.k == 0 && sub.len() == self.n, "QLinear: inputs do not match k {} n {}", self.k, self.n);
        let m = a8.len() / self.k;
        let a: Vec<i16> = a8.iter().map(|&x| x as i16).collect();
        // SAFETY: every element is written below (each block writes its columns of every row).
        let mut c = unsafe { Tensor::uninitialized_dt(f32::datum_type(), &self.c_shape)? };
        ensure!(c.len() == m * self.n, "QLinear: output shape {:?} for {m} rows", self.c_shape);
        let out = Columns(c.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?.as_mut_ptr());
        let mut blocks: Vec<usize> = (0..self.n.div_ceil(BLOCK)).collect();
        let pairs = self.k / 2;
        for start in (0..pairs).step_by(PASS_PAIRS) {
            let pass = start..(start + PASS_PAIRS).min(pairs);
            par_chunks_mut(&mut blocks, 1, usize::MAX, |_, blocks| {
                for &block in blocks.iter() {
                    // SAFETY: AVX2 was detected when the plan was rewritten; `a` is m rows of k;
                    // blocks are disjoint across threads, so is every column they write; the
                    // passes run one after another, each after the sums of the one before.
                    unsafe { self.run_block(&a, m, sub, out.ptr(), block, pass.clone()) };
                }
                Ok(())
            })?;
        }
        Ok(tvec!(c.into_tvalue()))
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn eval(&self, _ctx: &EvalContext, _inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        bail!("QLinear runs on x86-64 only (the rewrite does not use it elsewhere)")
    }
}

impl TypedOp for QLinear {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&*self.c_shape)))
    }

    as_op!();
}

#[cfg(all(test, target_arch = "x86_64"))]
#[path = "qlinear_tests.rs"]
mod tests;
