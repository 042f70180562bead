"""Dynamic int8 quantization of an optimum ONNX export: the int8 format sonoedge supports.

Owns only this step. IN is an export folder (from `optimum-cli export onnx`) or its model.onnx;
OUT is a new folder that receives model.onnx (onnxruntime quantize_dynamic, QInt8 weights,
activations quantized at run time) plus config.json and preprocessor_config.json copied from
beside IN, so that OUT is itself a complete model folder for `sonoedge --model OUT`.

    python models/quantize.py out/ out-int8/
    python models/quantize.py out/model.onnx out-int8/ --per-channel

The equivalent one-liner:
    python -c "from onnxruntime.quantization import quantize_dynamic, QuantType; \
quantize_dynamic('out/model.onnx', 'out-int8/model.onnx', weight_type=QuantType.QInt8)"

Static quantization (quantize_static, QDQ or QOperator format) is deliberately not offered:
sonoedge refuses those files (see models/README.md).
"""
import argparse
import shutil
import sys
from collections import Counter
from pathlib import Path

DESCRIPTION_FILES = ("config.json", "preprocessor_config.json")
# Operators that only a statically quantized graph contains; their presence means a wrong input.
STATIC_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearMatMul", "QLinearConv", "QLinearAdd",
              "QLinearMul", "QLinearSoftmax", "QGemm", "QAttention"}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input", type=Path, help="export folder or its model.onnx (fp32)")
    ap.add_argument("output", type=Path, help="new folder for the int8 model")
    ap.add_argument("--per-channel", action="store_true",
                    help="per-channel weight scales (same operators; default: per tensor, as users get)")
    args = ap.parse_args()

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = args.input / "model.onnx" if args.input.is_dir() else args.input
    if not src.is_file():
        sys.exit(f"{src}: no such ONNX file")
    ops = Counter(n.op_type for n in onnx.load(str(src), load_external_data=False).graph.node)
    if STATIC_OPS & ops.keys() or "MatMulInteger" in ops:
        sys.exit(f"{src} is already quantized ({sorted((STATIC_OPS | {'MatMulInteger'}) & ops.keys())}); give the fp32 export")

    args.output.mkdir(parents=True, exist_ok=True)
    dst = args.output / "model.onnx"
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=args.per_channel)
    for name in DESCRIPTION_FILES:
        if (src.parent / name).exists():
            shutil.copy(src.parent / name, args.output / name)
        else:
            print(f"warning: no {name} beside {src}; sonoedge will need --labels / defaults", file=sys.stderr)

    out_ops = Counter(n.op_type for n in onnx.load(str(dst), load_external_data=False).graph.node)
    if STATIC_OPS & out_ops.keys():
        sys.exit(f"{dst}: unexpected static quantization operators {sorted(STATIC_OPS & out_ops.keys())}")
    print(f"{dst}: {dst.stat().st_size} bytes (from {src.stat().st_size}); "
          f"MatMulInteger x{out_ops['MatMulInteger']}, DynamicQuantizeLinear x{out_ops['DynamicQuantizeLinear']}")


if __name__ == "__main__":
    main()
