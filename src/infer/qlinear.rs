//! Dynamic-int8 linear layers on x86-64, where tract's int8 kernels leave much of the CPU unused:
//! on AVX2 CPUs without VNNI (Zen 2 and 3, Haswell to Comet Lake) its `avx2_mmm_i32_8x8` runs
//! ViT-B's int8 products ~3x slower than its fp32 ones; on AVX-512 VNNI CPUs its 8x8 ymm tile took
//! 117 ms of a frame where this one's 8x32 zmm tile takes 81 (docs/speed.md). One operator takes
//! the offset activations, tract's zero-point term and the weights (repacked once at load from
//! tract's panels, which the plan then drops) and writes the f32 products the plan's `OptMatMul` +
//! `Cast` wrote, exactly: i16 pairs through `vpmaddwd` (AVX2) or u8 x i8 quads through `vpdpbusd`
//! (VNNI), split by output columns across the plan's thread pool.

#[cfg(target_arch = "x86_64")]
use std::ops::Range;
use std::sync::Arc;

use tract_linalg::mmm::{EagerPackedInput, OutputStoreSpec};
#[cfg(target_arch = "x86_64")]
use tract_linalg::multithread::par_chunks_mut;
use tract_linalg::pack::{PackedFormat, PackedI8K4};
use tract_linalg::BinOp;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cast::Cast;
use tract_onnx::tract_core::ops::matmul::optimized::{MatMulOperand, OptMatMul, ProtoFusedSpec};

use super::pack::ParallelPack;

#[cfg(target_arch = "x86_64")]
#[path = "qlinear_avx2.rs"]
mod avx2;
#[cfg(target_arch = "x86_64")]
#[path = "qlinear_vnni.rs"]
mod vnni;

/// Values of k per pass over all the columns: 768, so that a pass's activations (197 tokens x 768
/// x 2 bytes at most) stay in a core's L2 while every column block reads them; a longer k (ViT's
/// MLP output, 3072) takes several passes, the i32 sums kept in the output in between.
#[cfg(target_arch = "x86_64")]
const PASS_K: usize = 768;

/// The instruction that sums the int8 products, which sets how the weights are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // never chosen off x86-64
enum Kernel {
    /// AVX2 `vpmaddwd` on i16 pairs of k: blocks of 16 columns, each by pairs of k,
    /// `(w[2p, j], w[2p + 1, j])` for j = 0..16, 32 bytes a pair.
    Pairs,
    /// AVX-512 VNNI `vpdpbusd` on quads of k, u8 activations x i8 weights: blocks of 32 columns,
    /// each by quads of k, `w[4q..4q + 4, j]` for j = 0..32, 128 bytes a quad.
    Quads,
}

impl Kernel {
    /// The kernel for weights tract packed as `panels` on this CPU: VNNI's wherever the CPU has
    /// AVX-512 VNNI; AVX2's only where tract chose its own AVX2 kernel, never in place of one of
    /// its dot-product kernels (AVX-VNNI without AVX-512).
    fn for_panels(panels: Panels) -> Option<Kernel> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vnni") {
                return Some(Kernel::Quads);
            }
            if std::is_x86_feature_detected!("avx2") && panels == (Panels::KOuter { r: 8 }) {
                return Some(Kernel::Pairs);
            }
        }
        let _ = panels;
        None
    }

    /// Output columns per block.
    const fn block(self) -> usize {
        match self {
            Kernel::Pairs => 16,
            Kernel::Quads => 32,
        }
    }

    /// Values of k one instruction sums into each column's lane.
    const fn step(self) -> usize {
        match self {
            Kernel::Pairs => 2,
            Kernel::Quads => 4,
        }
    }
}

/// How tract laid out the weights it packed: panels of `r` columns, each k-major (its AVX2
/// kernel's `PackedFormat`) or by quads of k (`PackedI8K4`, its dot-product kernels').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Panels {
    KOuter { r: usize },
    Quads { r: usize },
}

impl Panels {
    fn of(w: &EagerPackedInput) -> Option<Panels> {
        let format = &w.fact.format;
        if let Some(f) = format.downcast_ref::<PackedFormat>() {
            return (f.dt == i8::datum_type()).then_some(Panels::KOuter { r: f.r });
        }
        format.downcast_ref::<PackedI8K4>().map(|f| Panels::Quads { r: f.r })
    }

    fn r(self) -> usize {
        match self {
            Panels::KOuter { r } | Panels::Quads { r } => r,
        }
    }

    /// Bytes one panel's k rows take.
    fn panel_len(self, k: usize) -> usize {
        match self {
            Panels::KOuter { r } => r * k,
            Panels::Quads { r } => r * k.div_ceil(4) * 4,
        }
    }

    /// Where weight `(kk, c)`, `c` its column within the panel, sits in the panel.
    fn offset(self, kk: usize, c: usize) -> usize {
        match self {
            Panels::KOuter { r } => kk * r + c,
            Panels::Quads { r } => (kk >> 2) * 4 * r + 4 * c + (kk & 3),
        }
    }

    /// tract's blob holds every panel of `w` whole.
    fn whole(self, w: &EagerPackedInput) -> bool {
        self.r() > 0 && w.panel_bytes >= self.panel_len(w.fact.k) && w.packed.len() >= w.mn.div_ceil(self.r()) * w.panel_bytes
    }
}

/// `c[i, j] = (Σ_k a[i, k] · w[k, j] - sub[j]) as f32` for i8 activations `a` (tract's `q - 128`),
/// i8 weights `w` and tract's i32 zero-point term, the weights stored as `kernel` reads them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // never built off x86-64
pub struct QLinear {
    kernel: Kernel,
    weights: Arc<Vec<i8>>,
    /// Added to tract's zero-point term: `Quads` reads the activations as `a + 128` (u8), which
    /// adds 128 times each column's weight sum; empty for `Pairs`.
    offset_sums: Arc<Vec<i32>>,
    k: usize,
    /// Output features (the weights' columns).
    n: usize,
    c_shape: TVec<usize>,
}

impl QLinear {
    /// The patch that replaces `node` (an int8 `OptMatMul`) and the `Cast` to f32 after it, when the
    /// product has the shape these kernels compute and the CPU has one of them.
    pub fn patch_for(model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
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

    /// The operator for weights tract packed as `panels` (whole panels, k a multiple of the
    /// kernel's step), writing `c_shape`; columns past n are zero.
    fn new(kernel: Kernel, w: &EagerPackedInput, panels: Panels, c_shape: &[usize]) -> QLinear {
        debug_assert!(panels.whole(w) && w.fact.k.is_multiple_of(kernel.step()));
        let (k, n, r) = (w.fact.k, w.mn, panels.r());
        let (block, step) = (kernel.block(), kernel.step());
        let mut weights = vec![0i8; n.div_ceil(block) * block * k];
        let mut sums = vec![0i32; n];
        // SAFETY: tract's blob holds n / r panels (rounded up) of `panel_bytes` (`panels.whole`).
        let packed = unsafe { std::slice::from_raw_parts(w.packed.as_ptr() as *const i8, n.div_ceil(r) * w.panel_bytes) };
        // step is 2 or 4: shifts and masks, not divisions, in the 86 M iterations of a ViT-B.
        let shift = step.trailing_zeros();
        for (p, src) in packed.chunks_exact(w.panel_bytes).enumerate() {
            for (c, j) in (p * r..n.min(p * r + r)).enumerate() {
                let dst = &mut weights[j / block * block * k..][..block * k];
                let col = step * (j % block);
                for kk in 0..k {
                    let v = src[panels.offset(kk, c)];
                    dst[((kk >> shift) << shift) * block + col + (kk & (step - 1))] = v;
                    sums[j] += v as i32;
                }
            }
        }
        let offset_sums = match kernel {
            Kernel::Pairs => vec![],
            Kernel::Quads => sums.iter().map(|s| s * 128).collect(),
        };
        QLinear { kernel, weights: Arc::new(weights), offset_sums: Arc::new(offset_sums), k, n, c_shape: c_shape.into() }
    }

    /// The operator for `op` and the `Cast` it feeds, when `op` is `[weights · activations] - row
    /// term`, stored as `[.., tokens, features]` with i8 weights whole in tract's panels and a k
    /// this CPU's kernel takes.
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
        let Some(panels) = Panels::of(w) else { return Ok(None) };
        let Some(kernel) = Kernel::for_panels(panels) else { return Ok(None) };
        let stored_as_c =
            matches!(stores.as_slice(), [OutputStoreSpec::View { m_axis, n_axis, .. }] if *m_axis == op.c_m_axis && *n_axis == op.c_n_axis);
        let n = c_shape[rank - 1];
        if !shaped || !oriented || !stored_as_c || w.mn != n || w.fact.k == 0 || w.fact.k % kernel.step() != 0 || !panels.whole(w) {
            return Ok(None);
        }
        let Some(cast) = single_successor(model, node).filter(|s| s.op_as::<Cast>().is_some_and(|c| c.to == f32::datum_type())) else {
            return Ok(None);
        };
        let sub = model.outlet_fact(node.inputs[1])?;
        if sub.datum_type != i32::datum_type() || sub.shape.as_concrete().map(|s| s.iter().product::<usize>()) != Some(n) {
            return Ok(None);
        }
        Ok(Some((QLinear::new(kernel, w, panels, c_shape), cast)))
    }
}

/// Runs a kernel over every block of columns and every pass of k: `eval`'s body once the
/// activations are in the kernel's form.
#[cfg(target_arch = "x86_64")]
impl QLinear {
    /// `c` (m rows of n f32) from the activations `a` (m rows of k, as the kernel reads them) and
    /// the zero-point term `sub`: the column blocks split across the plan's threads, pass by pass.
    fn run<A: Sync>(&self, a: &[A], sub: &[i32], c: &mut [f32]) -> TractResult<()> {
        let (m, out) = (a.len() / self.k, Columns(c.as_mut_ptr()));
        let mut blocks: Vec<usize> = (0..self.n.div_ceil(self.kernel.block())).collect();
        let (steps, per_pass) = (self.k / self.kernel.step(), PASS_K / self.kernel.step());
        for start in (0..steps).step_by(per_pass) {
            let pass = start..(start + per_pass).min(steps);
            par_chunks_mut(&mut blocks, 1, usize::MAX, |_, blocks| {
                for &block in blocks.iter() {
                    let tile = self.tile(sub, block, pass.clone());
                    // SAFETY: the CPU has the kernel (detected when the plan was rewritten); `a`
                    // is m rows of k; blocks are disjoint across threads, so is every column they
                    // write; the passes run one after another, each after the sums of the one before.
                    unsafe { self.run_tile(&tile, a.as_ptr() as *const u8, m, out.ptr()) };
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    fn tile<'s>(&'s self, sub: &'s [i32], block: usize, pass: Range<usize>) -> Tile<'s> {
        let size = self.kernel.block() * self.k;
        let (first, last) = (pass.start == 0, pass.end == self.k / self.kernel.step());
        Tile {
            k: self.k,
            n: self.n,
            w: self.weights[block * size..][..size].as_ptr(),
            col: block * self.kernel.block(),
            sub,
            pass,
            first,
            last,
        }
    }

    /// The block's columns of every row, `rows` at a time.
    ///
    /// # Safety
    /// As [`Self::run`]: the CPU has the kernel; `a` points at m rows of k activations (i16 for
    /// `Pairs`, u8 for `Quads`); `out` at m x n f32 whose block columns only this thread writes.
    unsafe fn run_tile(&self, tile: &Tile, a: *const u8, m: usize, out: *mut f32) {
        let rows = match self.kernel {
            Kernel::Pairs => avx2::PAIRS_ROWS,
            Kernel::Quads => vnni::QUADS_ROWS,
        };
        for row in (0..m).step_by(rows) {
            // SAFETY: rows `row..row + rows` (or to m) exist in `a` and `out`; the caller's contract.
            unsafe {
                let out = out.add(row * self.n);
                match self.kernel {
                    Kernel::Pairs => tile.pairs_rows((a as *const i16).add(row * self.k), out, (m - row).min(rows)),
                    Kernel::Quads => tile.quads_rows(a.add(row * self.k), out, (m - row).min(rows)),
                }
            }
        }
    }
}

/// One block of output columns over one pass of k: its weights, the row term, where it starts.
#[cfg(target_arch = "x86_64")]
struct Tile<'s> {
    k: usize,
    n: usize,
    w: *const i8,
    col: usize,
    sub: &'s [i32],
    /// The steps (pairs or quads) of k this pass sums, and whether it is the first (sums start at
    /// 0) or the last (the f32 result is written) of the passes.
    pass: Range<usize>,
    first: bool,
    last: bool,
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

// SAFETY: the threads write disjoint columns (see `QLinear::run`), and the tensor outlives the scope.
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
        let kernel = match self.kernel {
            Kernel::Pairs => "AVX2 i16 pairs",
            Kernel::Quads => "AVX-512 VNNI u8 x i8 quads",
        };
        Ok(vec![format!("k {} n {}, {kernel}", self.k, self.n)])
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
        // SAFETY: every element is written by `run` (each block writes its columns of every row).
        let mut c = unsafe { Tensor::uninitialized_dt(f32::datum_type(), &self.c_shape)? };
        ensure!(c.len() == a8.len() / self.k * self.n, "QLinear: output shape {:?} for {} rows", self.c_shape, a8.len() / self.k);
        let mut plain = c.try_as_plain_ram_mut()?;
        let out = plain.as_slice_mut::<f32>()?;
        match self.kernel {
            Kernel::Pairs => self.run(&a8.iter().map(|&x| x as i16).collect::<Vec<i16>>(), sub, out)?,
            Kernel::Quads => {
                let a: Vec<u8> = a8.iter().map(|&x| x as u8 ^ 0x80).collect();
                let sub: Vec<i32> = sub.iter().zip(self.offset_sums.iter()).map(|(s, o)| s.wrapping_add(*o)).collect();
                self.run(&a, &sub, out)?
            }
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
