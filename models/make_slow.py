"""Writes models/slow/: a small ONNX file whose inference is slow on purpose, for the VM test's
repeated Disconnect (a result still in inference when the grabber is reopened must be withheld).

logits = 10 * mean over the image of each channel after LAYERS residual steps
x <- x + 0.1 * tanh(x @ W) on the image's rows (3 x 224 rows of 224 values per image; one 224x224
weight shared by every step, so the file stays small while each inference does LAYERS x 11.2 M
multiply-adds per channel). The output depends on the input (the load-time check passes), and the
labels are those of the target model. Needs only the `onnx` and `numpy` packages:

    python3 -m pip install onnx==1.23.2 numpy && python3 models/make_slow.py
"""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from make_tint import write_folder

LAYERS = 10
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slow")


def model():
    pixels = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch_size", 3, 224, 224])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", 3])
    w = (np.random.default_rng(7).standard_normal((224, 224)) / np.sqrt(224)).astype(np.float32)
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array([-1, 224], dtype=np.int64), "rows"),
        numpy_helper.from_array(np.array([-1, 3, 224, 224], dtype=np.int64), "image"),
        numpy_helper.from_array(np.array(0.1, dtype=np.float32), "step"),
        numpy_helper.from_array(np.array([10.0, 10.0, 10.5], dtype=np.float32), "gain"),
    ]
    nodes = [helper.make_node("Reshape", ["pixel_values", "rows"], ["x0"])]
    for i in range(LAYERS):
        nodes += [
            helper.make_node("MatMul", [f"x{i}", "w"], [f"m{i}"]),
            helper.make_node("Tanh", [f"m{i}"], [f"t{i}"]),
            helper.make_node("Mul", [f"t{i}", "step"], [f"s{i}"]),
            helper.make_node("Add", [f"x{i}", f"s{i}"], [f"x{i + 1}"]),
        ]
    nodes += [
        helper.make_node("Reshape", [f"x{LAYERS}", "image"], ["y"]),
        helper.make_node("ReduceMean", ["y"], ["means"], axes=[2, 3], keepdims=0),
        helper.make_node("Mul", ["means", "gain"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "slow", [pixels], [logits], initializer=inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="sonoedge make_slow.py")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def main():
    write_folder(OUT, model())

if __name__ == "__main__":
    main()
