//! Tests of the fused int8 linear operator against the integer product it computes, on weights
//! packed by tract's own packer, at 1 and 2 threads.

use super::*;
use crate::infer::test_noise::xorshift;
use tract_linalg::mmm::MMMInputFormat;

/// `(Σ_k a[i, k] w[k, j] - sub[j]) as f32`, row-major `[m, n]`, in i64 then i32 as the kernel wraps.
fn reference(a: &[i8], w: &[i8], sub: &[i32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let dot: i64 = (0..k).map(|p| a[i * k + p] as i64 * w[p * n + j] as i64).sum();
            c[i * n + j] = (dot as i32).wrapping_sub(sub[j]) as f32;
        }
    }
    c
}

fn bytes(count: usize, seed: u32) -> Vec<i8> {
    xorshift(seed).take(count).map(|s| (s >> 24) as u8 as i8).collect()
}

/// QLinear on `a` `[1, m, k]` and weights `[k, n]` packed as tract packs them for its AVX2 kernel.
fn fused(a: &[i8], w: &[i8], sub: &[i32], m: usize, k: usize, n: usize, threads: usize) -> Vec<f32> {
    let weights = tract_ndarray::Array2::from_shape_vec((k, n), w.to_vec()).unwrap().into_tensor();
    let packed = PackedFormat::new(i8::datum_type(), 8, 4).prepare_one(&weights, 0, 1).unwrap();
    let op = QLinear::new(packed.downcast_ref::<EagerPackedInput>().unwrap(), &[1, m, n]);
    let mut model = TypedModel::default();
    let x = model.add_source("a", i8::fact([1, m, k])).unwrap();
    let s = model.add_source("sub", i32::fact([1, n])).unwrap();
    let out = model.wire_node("q", op, &[x, s]).unwrap();
    model.select_output_outlets(&out).unwrap();
    let plan = model.into_runnable().unwrap();
    let a = tract_ndarray::Array3::from_shape_vec((1, m, k), a.to_vec()).unwrap().into_tensor();
    let sub = tract_ndarray::Array2::from_shape_vec((1, n), sub.to_vec()).unwrap().into_tensor();
    let run = || plan.run(tvec![a.clone().into_tvalue(), sub.clone().into_tvalue()]).unwrap();
    let out = if threads > 1 {
        use tract_linalg::multithread::{multithread_tract_scope, Executor};
        multithread_tract_scope(Executor::multithread(threads), run)
    } else {
        run()
    };
    out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
}

#[test]
fn fused_product_equals_the_integer_product() {
    if !std::is_x86_feature_detected!("avx2") {
        eprintln!("no AVX2 on this CPU: QLinear is never used here");
        return;
    }
    // ViT-B's two shapes (k = 3072 in four passes); rows not a multiple of 6; columns ending in a
    // part block (n % 16 = 8) or a part panel (n % 8 != 0); the smallest case; a last pass of 116 pairs.
    for (i, (m, k, n)) in [(197, 768, 768), (197, 3072, 64), (1, 2, 1), (7, 4, 8), (13, 10, 24), (6, 70, 36), (200, 128, 3), (9, 1000, 40)]
        .into_iter()
        .enumerate()
    {
        let (a, w) = (bytes(m * k, 11 + i as u32), bytes(k * n, 29 + i as u32));
        let sub: Vec<i32> = xorshift(47 + i as u32).take(n).map(|s| (s as i32) >> 8).collect();
        let want = reference(&a, &w, &sub, m, k, n);
        for threads in [1, 2] {
            assert_eq!(fused(&a, &w, &sub, m, k, n, threads), want, "{m}x{k}x{n}, {threads} thread(s)");
        }
    }
}

#[test]
fn extreme_values_do_not_overflow_the_pairs() {
    if !std::is_x86_feature_detected!("avx2") {
        eprintln!("no AVX2 on this CPU: QLinear is never used here");
        return;
    }
    // -128 x -128 twice per pair is 32768: one past i16, which vpmaddwd sums in i32 without loss.
    let (m, k, n) = (7, 3072, 16);
    for (a, w) in [(-128i8, -128i8), (127, -128), (-128, 127)] {
        let (a, w, sub) = (vec![a; m * k], vec![w; k * n], vec![-5i32; n]);
        assert_eq!(fused(&a, &w, &sub, m, k, n, 2), reference(&a, &w, &sub, m, k, n));
    }
}
