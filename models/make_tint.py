"""Writes models/tint/: a tiny ONNX classifier whose outputs the tests control through the image.

logits = GAINS * mean over the image of each normalised channel (R -> benign, G -> malignant,
B -> normal; pixels normalised to [-1, 1]). A grey image gives benign = malignant, with normal a
little lower on dark images (so the load-time check sees the output depend on the input): at
most 0.42, uncertain under the default thresholds. A red tint gives benign with a probability set
by the tint. Used by tests/it/clinical.rs to exercise abstention
through the daemon with a real model. Needs only the `onnx` package (no torch):

    python3 -m pip install onnx==1.23.2 && python3 models/make_tint.py
"""
import json
import os

import onnx
from onnx import TensorProto, helper

GAINS = [10.0, 10.0, 11.0]
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tint")
LABELS = ["benign", "malignant", "normal"]


def model():
    pixels = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch_size", 3, 224, 224])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", 3])
    gain = helper.make_tensor("gain", TensorProto.FLOAT, [3], GAINS)
    nodes = [
        helper.make_node("ReduceMean", ["pixel_values"], ["means"], axes=[2, 3], keepdims=0),
        helper.make_node("Mul", ["means", "gain"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "tint", [pixels], [logits], initializer=[gain])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="sonoedge make_tint.py")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def write_folder(out, m):
    """Writes `m` as `out`/model.onnx with the config.json and preprocessor_config.json of an
    optimum export of the target model (its labels, ViTImageProcessor's numbers)."""
    os.makedirs(out, exist_ok=True)
    onnx.save(m, os.path.join(out, "model.onnx"))
    config = {"architectures": ["ViTForImageClassification"], "model_type": "vit", "image_size": 224,
              "id2label": {str(i): l for i, l in enumerate(LABELS)}, "label2id": {l: i for i, l in enumerate(LABELS)}}
    pre = {"do_normalize": True, "do_rescale": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
           "image_processor_type": "ViTImageProcessor", "image_std": [0.5, 0.5, 0.5], "resample": 2,
           "rescale_factor": 0.00392156862745098, "size": {"height": 224, "width": 224}}
    for name, doc in [("config.json", config), ("preprocessor_config.json", pre)]:
        with open(os.path.join(out, name), "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")


def main():
    write_folder(OUT, model())


if __name__ == "__main__":
    main()
