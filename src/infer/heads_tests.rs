//! Tests of [`ParallelHeads`]: batched products split head by head give tract's bits, on one thread
//! and on two, and single products are left to tract.

use super::*;
use crate::infer::test_noise::xorshift;
use tract_onnx::tract_core::ops::einsum::EinSum;

fn noise(n: usize, seed: u32) -> Vec<f32> {
    xorshift(seed).take(n).map(|s| ((s >> 24) as u8 as i8) as f32 / 37.0).collect()
}

/// An optimized plan of one einsum over sources of `shapes`.
fn product(expr: &str, shapes: [&[usize]; 2]) -> TypedModel {
    let mut model = TypedModel::default();
    let a = model.add_source("a", f32::fact(shapes[0])).unwrap();
    let b = model.add_source("b", f32::fact(shapes[1])).unwrap();
    let out = model.wire_node("product", EinSum::new(expr.parse().unwrap(), f32::datum_type()), &[a, b]).unwrap();
    model.select_output_outlets(&out).unwrap();
    model.into_optimized().unwrap()
}

/// `model` with every batched `OptMatMul` replaced; how many were.
fn split(model: &TypedModel) -> (TypedModel, usize) {
    let mut split = model.clone();
    let ids: Vec<usize> = split.nodes.iter().filter(|n| ParallelHeads::for_node(n).is_some()).map(|n| n.id).collect();
    for &id in &ids {
        let node = split.node(id);
        let op = ParallelHeads::for_node(node).unwrap();
        TypedModelPatch::replace_single_op(&split, node, &node.inputs, op).unwrap().apply(&mut split).unwrap();
    }
    (split, ids.len())
}

fn run(model: &TypedModel, shapes: [&[usize]; 2], executor: Executor) -> Vec<u32> {
    let inputs: TVec<TValue> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| Tensor::from_shape(s, &noise(s.iter().product(), 3 + i as u32)).unwrap().into_tvalue())
        .collect();
    let plan = model.clone().into_runnable().unwrap();
    let out = multithread_tract_scope(executor, || plan.run(inputs)).unwrap();
    out[0].to_plain_array_view::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn heads_split_across_threads_give_tracts_bits() {
    // Attention's Q·Kᵀ and A·V as ViT-B/16 has them (12 heads, 197 tokens, 64 per head), with the
    // batch axis of the ONNX graph, and odd sizes whose tiles are partial.
    let cases: [(&str, [&[usize]; 2]); 4] = [
        ("abmk,abkn->abmn", [&[1, 12, 197, 64], &[1, 12, 64, 197]]),
        ("abmk,abkn->abmn", [&[1, 12, 197, 197], &[1, 12, 197, 64]]),
        ("bmk,bkn->bmn", [&[3, 5, 7], &[3, 7, 9]]),
        ("bmk,bkn->bmn", [&[7, 33, 17], &[7, 17, 29]]),
    ];
    for (expr, shapes) in cases {
        let plain = product(expr, shapes);
        let (ours, count) = split(&plain);
        assert_eq!(count, 1, "{shapes:?}: tract plans one batched product");
        let reference = run(&plain, shapes, Executor::SingleThread);
        assert!(reference.iter().any(|v| *v != reference[0]), "degenerate output");
        for executor in [Executor::SingleThread, Executor::multithread(2)] {
            assert_eq!(run(&ours, shapes, executor.clone()), reference, "{shapes:?} on {executor:?}");
            assert_eq!(run(&plain, shapes, executor), reference, "{shapes:?}: tract's own threads");
        }
    }
}

#[test]
fn single_products_are_left_to_tract() {
    let plain = product("mk,kn->mn", [&[197, 768], &[768, 64]]);
    assert_eq!(split(&plain).1, 0);
    let plain = product("bmk,bkn->bmn", [&[1, 197, 64], &[1, 64, 197]]);
    assert_eq!(split(&plain).1, 0, "a batch of one");
}
