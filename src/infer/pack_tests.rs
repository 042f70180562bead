//! Tests of [`ParallelPack`]: byte for byte the layout tract's own packing writes, and the same
//! products from a batch packed across threads.

use super::*;
use crate::infer::test_noise::xorshift;
use tract_linalg::multithread::{multithread_tract_scope, Executor};

fn rows(mn: usize, k: usize, seed: u32) -> Tensor {
    let bytes: Vec<i8> = xorshift(seed).take(mn * k).map(|s| (s >> 24) as u8 as i8).collect();
    tract_ndarray::Array3::from_shape_vec((1, mn, k), bytes).unwrap().into_tensor()
}

fn bytes_of(packed: &dyn MMMInputValue) -> (Vec<u8>, usize, usize) {
    let eager = packed.downcast_ref::<EagerPackedInput>().expect("an eager packed input");
    (eager.packed.as_bytes().to_vec(), eager.panel_bytes, eager.mn)
}

#[test]
fn packing_is_byte_for_byte_tracts() {
    // tract's kernels use r = 16 (x86-64 VNNI) and 8 or 12 (aarch64 sdot); k and mn off the
    // multiples of 4 and r; sizes past tract's 32768-element threshold split across 2 threads.
    for r in [4usize, 8, 12, 16] {
        for (mn, k) in [(1, 1), (1, 7), (3, 4), (16, 64), (17, 5), (197, 768), (197, 3072), (50, 1023), (203, 130)] {
            let format = PackedI8K4::new(r);
            let t = rows(mn, k, (mn * 31 + k + r) as u32);
            let theirs = bytes_of(&*format.pack_view(&t.view(), 2, 1).unwrap());
            for executor in [Executor::SingleThread, Executor::multithread(2)] {
                let ours = multithread_tract_scope(executor, || pack_rows_i8(&format, 2, 1, &t)).unwrap().expect("packed");
                assert_eq!(bytes_of(&*ours), theirs, "r {r}, mn {mn}, k {k}");
            }
        }
    }
}

#[test]
fn other_inputs_are_left_to_tract() {
    let format = PackedI8K4::new(16);
    let batched = tract_ndarray::Array3::<i8>::zeros((2, 5, 8)).into_tensor();
    assert!(pack_rows_i8(&format, 2, 1, &batched).unwrap().is_none(), "two matrices");
    assert!(pack_rows_i8(&format, 1, 2, &rows(5, 8, 1)).unwrap().is_none(), "k not the last axis");
    let bytes = tract_ndarray::Array3::<u8>::zeros((1, 5, 8)).into_tensor();
    assert!(pack_rows_i8(&format, 2, 1, &bytes).unwrap().is_none(), "u8");
}

/// Attention's two products as tract plans them (12 heads, 197 tokens, 64 per head), with and
/// without the packing replaced, run on 2 threads: the same bits.
#[test]
fn a_batch_packed_across_threads_gives_the_same_products() {
    use tract_onnx::tract_core::ops::einsum::EinSum;
    let mut model = TypedModel::default();
    let q = model.add_source("q", f32::fact([12, 197, 64])).unwrap();
    let k = model.add_source("k", f32::fact([12, 64, 197])).unwrap();
    let op = EinSum::new("bmk,bkn->bmn".parse().unwrap(), f32::datum_type());
    let scores = model.wire_node("scores", op, &[q, k]).unwrap();
    model.select_output_outlets(&scores).unwrap();
    let plain = model.into_optimized().unwrap();
    let mut split = plain.clone();
    let packs: Vec<usize> = split.nodes.iter().filter(|n| n.op_is::<OptMatMulPack>()).map(|n| n.id).collect();
    assert!(!packs.is_empty(), "tract packs a batched product");
    for id in packs {
        let node = split.node(id);
        let op = ParallelPack::for_node(&split, node).unwrap().expect("one format");
        TypedModelPatch::replace_single_op(&split, node, &node.inputs, op).unwrap().apply(&mut split).unwrap();
    }
    let noise = |n: usize, seed: u32| -> Vec<f32> {
        rows(1, n, seed).try_as_plain_ram().unwrap().as_slice::<i8>().unwrap().iter().map(|&x| x as f32 / 37.0).collect()
    };
    let inputs = tvec![
        tract_ndarray::Array3::from_shape_vec((12, 197, 64), noise(12 * 197 * 64, 3)).unwrap().into_tensor().into_tvalue(),
        tract_ndarray::Array3::from_shape_vec((12, 64, 197), noise(12 * 64 * 197, 4)).unwrap().into_tensor().into_tvalue(),
    ];
    let run = |m: &TypedModel| {
        let plan = m.clone().into_runnable().unwrap();
        let out = multithread_tract_scope(Executor::multithread(2), || plan.run(inputs.clone())).unwrap();
        out[0].to_plain_array_view::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    let (a, b) = (run(&plain), run(&split));
    assert!(a.iter().any(|v| *v != a[0]), "degenerate output");
    assert_eq!(a, b);
}
