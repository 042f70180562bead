//! Tests of the int8 plan rewrites: each replacement against tract's own form, and a whole
//! `quantize_dynamic`-shaped graph run with and without the rewrites, bit for bit.

use super::*;
use crate::infer::test_noise::xorshift;

/// tract 0.23.9's scalar form of the quantizer, the reference the fast form must equal.
fn reference(xs: &[f32]) -> (f32, u8, Vec<u8>) {
    let (min, max) = xs.iter().fold((0f32, 0f32), |(l, h), &v| {
        if v < l {
            (v, h)
        } else if v > h {
            (l, v)
        } else {
            (l, h)
        }
    });
    let scale = (max - min) / 255.0;
    #[allow(clippy::manual_clamp)] // NaN -> 0, as the code under test does
    let zp = (-min / scale).round_ties_even().max(0.0).min(255.0) as u8;
    let q = xs.iter().map(|x| (((x / scale).round_ties_even() as i32) + zp as i32).clamp(0, 255) as u8).collect();
    (scale, zp, q)
}

/// The operator as the plan runs it with 2 threads: inputs past tract's 32768-element threshold are
/// split across the pool (min/max by parts, quantization by chunks), smaller ones run inline.
fn fast(xs: &[f32]) -> (f32, u8, Vec<u8>) {
    let mut model = TypedModel::default();
    let x = model.add_source("x", f32::fact([xs.len()])).unwrap();
    let outs = model.wire_node("q", DynQuantU8, &[x]).unwrap();
    model.select_output_outlets(&outs).unwrap();
    let plan = model.into_runnable().unwrap();
    let input = tract_ndarray::Array1::from_vec(xs.to_vec()).into_tensor().into_tvalue();
    let out = two_threads(|| plan.run(tvec![input])).unwrap();
    let q = out[0].to_plain_array_view::<u8>().unwrap().iter().copied().collect();
    (out[1].cast_to_scalar::<f32>().unwrap(), out[2].cast_to_scalar::<u8>().unwrap(), q)
}

fn two_threads<R>(f: impl FnOnce() -> R) -> R {
    use tract_linalg::multithread::{multithread_tract_scope, Executor};
    multithread_tract_scope(Executor::multithread(2), f)
}

fn noise(n: usize, seed: u32, amp: f32, offset: f32) -> Vec<f32> {
    xorshift(seed).take(n).map(|s| (s as f32 / u32::MAX as f32 - 0.5) * amp + offset).collect()
}

#[test]
fn quantizer_equals_the_scalar_form() {
    let mut cases = vec![
        vec![],
        vec![0.0; 37],
        vec![-0.0, 0.0, -0.0],
        vec![f32::NAN, 1.0, -2.0, f32::NAN],
        vec![0., 2., -3., -2.5, 1.34, 0.5],
        vec![1e-30, -1e-30, 3e-31],
    ];
    for (i, n) in [1usize, 15, 16, 17, 255, 4096, 151_296].into_iter().enumerate() {
        cases.push(noise(n, i as u32 + 7, 8.0, 0.0));
        cases.push(noise(n, i as u32 + 99, 3.0, 5.0));
        cases.push(noise(n, i as u32 + 31, 1e4, -2e4));
    }
    // parts of the parallel min/max where the extremes, NaN and -0.0 sit in different parts
    let mut spread = noise(151_297, 5, 4.0, 1.0);
    spread[3] = f32::NAN;
    spread[70_000] = -0.0;
    spread[151_296] = -9.5;
    spread[4095] = 12.25;
    cases.push(spread);
    // values landing exactly on .5 after division
    cases.push((0..1024).map(|i| (i as f32 - 512.0) * 0.5).collect());
    for xs in &cases {
        let (rs, rz, rq) = reference(xs);
        let (fs, fz, fq) = fast(xs);
        assert_eq!((rs.to_bits(), rz), (fs.to_bits(), fz), "scale/zero point for {} values", xs.len());
        assert_eq!(rq, fq, "quantized values for {} values", xs.len());
    }
    // ONNX's documented example
    let (scale, zp, q) = fast(&[0., 2., -3., -2.5, 1.34, 0.5]);
    assert!((scale - 0.019_607_844).abs() < 1e-8);
    assert_eq!((zp, q), (153, vec![153, 255, 0, 26, 221, 179]));
}

#[test]
fn row_sum_equals_a_plain_sum() {
    for k in [0usize, 1, 63, 64, 65, 768, 3072, 16_384, 16_449, 40_000] {
        let row: Vec<i8> = (0..k).map(|i| if i % 3 == 0 { -128 } else { (i * 37 % 255) as u8 as i8 }).collect();
        assert_eq!(row_sum(&row), row.iter().map(|&x| x as i32).sum::<i32>(), "k = {k}");
        let extreme = vec![-128i8; k];
        assert_eq!(row_sum(&extreme), -128 * k as i32, "k = {k}, all -128");
    }
}

/// A graph shaped like one `quantize_dynamic` linear layer: DynamicQuantizeLinear -> MatMulInteger
/// (weights above tract's 4 MB fold budget once widened) -> Cast -> Mul by the two scales -> Add.
fn linear_layer_model(m: usize, k: usize, n: usize) -> TypedModel {
    use tract_onnx::pb::*;
    let node = |op: &str, ins: &[&str], outs: &[&str]| NodeProto {
        op_type: op.into(),
        name: format!("{op}_{}", outs[0]),
        input: ins.iter().map(|s| s.to_string()).collect(),
        output: outs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let tensor = |name: &str, dt: i32, dims: &[i64], raw: Vec<u8>| TensorProto {
        name: name.into(),
        data_type: dt,
        dims: dims.to_vec(),
        raw_data: raw,
        ..Default::default()
    };
    let value = |name: &str, dims: &[i64]| ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: 1,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| tensor_shape_proto::Dimension {
                            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let weights: Vec<u8> = (0..k * n).map(|i| ((i as u64 * 2_654_435_761) >> 13) as u8).map(|b| if b == 0x80 { 0x81 } else { b }).collect();
    let bias: Vec<u8> = (0..n).flat_map(|i| (i as f32 * 0.01 - 1.0).to_le_bytes()).collect();
    let mut cast = node("Cast", &["acc"], &["accf"]);
    cast.attribute.push(AttributeProto { name: "to".into(), r#type: 2, i: 1, ..Default::default() });
    let graph = GraphProto {
        name: "linear".into(),
        node: vec![
            node("DynamicQuantizeLinear", &["x"], &["xq", "xs", "xzp"]),
            node("MatMulInteger", &["xq", "w", "xzp", "wzp"], &["acc"]),
            cast,
            node("Mul", &["xs", "ws"], &["s"]),
            node("Mul", &["accf", "s"], &["yf"]),
            node("Add", &["yf", "b"], &["y"]),
        ],
        initializer: vec![
            tensor("w", 3, &[k as i64, n as i64], weights),
            tensor("wzp", 3, &[], vec![0]),
            tensor("ws", 1, &[], 0.0123f32.to_le_bytes().to_vec()),
            tensor("b", 1, &[n as i64], bias),
        ],
        input: vec![value("x", &[1, m as i64, k as i64])],
        output: vec![value("y", &[1, m as i64, n as i64])],
        ..Default::default()
    };
    let proto = ModelProto {
        ir_version: 8,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
        graph: Some(graph),
        ..Default::default()
    };
    tract_onnx::onnx().model_for_proto_model(&proto).unwrap().into_optimized().unwrap()
}

fn run(model: TypedModel, input: &Tensor) -> Tensor {
    let plan = model.into_runnable().unwrap();
    plan.run(tvec![input.clone().into_tvalue()]).unwrap().remove(0).into_tensor()
}

#[test]
fn rewritten_linear_layer_is_bit_identical_to_tract() {
    // m * k past tract's 32768-element threshold, so the 2-thread run splits the rewritten operators.
    linear_layer_is_bit_identical(61, 640, 3000);
}

#[test]
fn rewritten_linear_layers_of_other_shapes_are_bit_identical() {
    // Partial weight panels (n = 36, 12), a single row, ViT's 197 tokens, an odd k (not fused).
    for (m, k, n) in [(197, 64, 36), (1, 8, 12), (7, 33, 40), (13, 768, 64)] {
        linear_layer_is_bit_identical(m, k, n);
    }
}

fn linear_layer_is_bit_identical(m: usize, k: usize, n: usize) {
    let plain = linear_layer_model(m, k, n);
    let mut fast = plain.clone();
    let done = rewrite(&mut fast).unwrap();
    assert_eq!(done.quantizers, 1, "{done:?}");
    if k * n * 4 > 4 << 20 {
        assert_eq!(done.weight_sums, 1, "tract left the widened weight sum in the plan: {done:?}");
    }
    // QLinear takes the products tract gives its AVX2 kernel (k even) and, on AVX-512 VNNI CPUs,
    // its VNNI kernels (k a multiple of 4).
    let kernel = |name: &str| plain.nodes.iter().any(|n| format!("{:?}", n.op).contains(name));
    let fused = (kernel("avx2_mmm_i32") && k.is_multiple_of(2)) || (kernel("avx512vnni_mmm_i32") && k.is_multiple_of(4));
    assert_eq!(done.linears, fused as usize, "{m}x{k}x{n}: {done:?}");
    let names: Vec<String> = fast.nodes.iter().map(|n| n.op.name().to_string()).collect();
    assert!(!names.iter().any(|n| n == "DynamicQuantizeLinearU8"), "{names:?}");
    for (seed, amp, offset) in [(1u32, 2.0f32, 0.0f32), (2, 50.0, 10.0), (3, 0.01, -0.2)] {
        let input = tract_ndarray::Array3::from_shape_vec((1, m, k), noise(m * k, seed, amp, offset)).unwrap().into_tensor();
        let bits = |t: &Tensor| t.to_plain_array_view::<f32>().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let a = bits(&run(plain.clone(), &input));
        assert!(a.iter().any(|v| *v != a[0]), "degenerate output");
        assert_eq!(a, bits(&run(fast.clone(), &input)), "{m}x{k}x{n} seed {seed}, 1 thread");
        assert_eq!(a, bits(&two_threads(|| run(fast.clone(), &input))), "{m}x{k}x{n} seed {seed}, 2 threads");
    }
}
