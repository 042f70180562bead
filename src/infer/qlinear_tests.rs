//! Tests of the fused int8 linear operator against the integer product it computes, on weights
//! packed by tract's own packers (its AVX2 kernel's layout and its dot-product kernels' quads), for
//! each kernel this CPU runs, at 1 and 2 threads.

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

/// The kernels this CPU has, each with the weight layouts tract packs for its own kernels: k-major
/// panels of 8 (AVX2) and quads of k in panels of 8 and 16 (VNNI 8x8 and 16x16).
fn kernels_and_layouts() -> Vec<(Kernel, Box<dyn MMMInputFormat>)> {
    let mut all: Vec<(Kernel, Box<dyn MMMInputFormat>)> = vec![];
    for (kernel, has) in [(Kernel::Pairs, is_x86_feature_detected!("avx2")), (Kernel::Quads, is_x86_feature_detected!("avx512vnni"))] {
        if has {
            all.push((kernel, Box::new(PackedFormat::new(i8::datum_type(), 8, 4))));
            all.push((kernel, Box::new(PackedI8K4::new(8))));
            all.push((kernel, Box::new(PackedI8K4::new(16))));
        }
    }
    all
}

/// QLinear with `kernel` on `a` `[1, m, k]` and weights `[k, n]` packed by tract in `format`.
fn fused(
    kernel: Kernel,
    format: &dyn MMMInputFormat,
    a: &[i8],
    w: &[i8],
    sub: &[i32],
    (m, k, n): (usize, usize, usize),
    threads: usize,
) -> Vec<f32> {
    let weights = tract_ndarray::Array2::from_shape_vec((k, n), w.to_vec()).unwrap().into_tensor();
    let packed = format.prepare_one(&weights, 0, 1).unwrap();
    let packed = packed.downcast_ref::<EagerPackedInput>().unwrap();
    let panels = Panels::of(packed).unwrap();
    assert!(panels.whole(packed), "{format}: {panels:?}");
    let op = QLinear::new(kernel, packed, panels, &[1, m, n]);
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
    let kernels = kernels_and_layouts();
    if kernels.is_empty() {
        eprintln!("neither AVX2 nor AVX-512 VNNI on this CPU: QLinear is never used here");
        return;
    }
    // ViT-B's two shapes (k = 3072 in four passes); rows not a multiple of 6 or 8; columns ending
    // in a part block (n % 16 = 8, n % 32 = 24) or a part panel (n % 8 != 0); the smallest cases;
    // a last pass of 232 values of k. Pairs take an even k, quads a multiple of 4.
    let shapes = [
        (197, 768, 768),
        (197, 3072, 64),
        (1, 2, 1),
        (1, 4, 1),
        (7, 4, 8),
        (13, 10, 24),
        (6, 72, 36),
        (200, 128, 3),
        (9, 1000, 56),
        (17, 64, 48),
    ];
    for (kernel, format) in &kernels {
        for (i, &(m, k, n)) in shapes.iter().enumerate().filter(|(_, s)| s.1 % kernel.step() == 0) {
            let (a, w) = (bytes(m * k, 11 + i as u32), bytes(k * n, 29 + i as u32));
            let sub: Vec<i32> = xorshift(47 + i as u32).take(n).map(|s| (s as i32) >> 8).collect();
            let want = reference(&a, &w, &sub, m, k, n);
            for threads in [1, 2] {
                let got = fused(*kernel, format.as_ref(), &a, &w, &sub, (m, k, n), threads);
                assert_eq!(got, want, "{kernel:?} on {format}: {m}x{k}x{n}, {threads} thread(s)");
            }
        }
    }
}

#[test]
fn extreme_values_do_not_overflow_the_pairs() {
    // -128 x -128 twice per pair is 32768: one past i16, which vpmaddwd sums in i32 without loss;
    // as u8 for vpdpbusd, -128 is 0 and 127 is 255: 255 x -128 four times stays inside i32.
    let (m, k, n) = (9, 3072, 40);
    for (kernel, format) in &kernels_and_layouts() {
        for (a, w) in [(-128i8, -128i8), (127, -128), (-128, 127), (127, 127)] {
            let (a, w, sub) = (vec![a; m * k], vec![w; k * n], vec![-5i32; n]);
            let got = fused(*kernel, format.as_ref(), &a, &w, &sub, (m, k, n), 2);
            assert_eq!(got, reference(&a, &w, &sub, m, k, n), "{kernel:?} on {format}: a {} w {}", a[0], w[0]);
        }
    }
}
