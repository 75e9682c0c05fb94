"""Writes small ONNX models with PyTorch and the onnx package for the Go tests.

usage: export_torch.py OUT_DIR
  OUT_DIR/mlp.onnx          torch.onnx.export of a tiny MLP with LayerNorm (inline weights)
  OUT_DIR/ext/model.onnx    the same model saved by onnx with external data
  OUT_DIR/io.json           a fixed input and the model's ORT output
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up = torch.nn.Linear(16, 48)
        self.norm = torch.nn.LayerNorm(48)
        self.down = torch.nn.Linear(48, 8, bias=False)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, x):  # x: [batch, seq, 16]
        h = self.norm(torch.nn.functional.gelu(self.up(x)))
        h = self.down(h)
        return self.head(h[:, 0, :])  # 2-D input: exported as Gemm


def main(out):
    torch.manual_seed(0)
    model = MLP().eval()
    x = torch.randn(2, 3, 16)
    path = os.path.join(out, "mlp.onnx")
    torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch", 1: "seq"}, "y": {0: "batch"}},
                      opset_version=17)
    m = onnx.load(path)
    os.makedirs(os.path.join(out, "ext"), exist_ok=True)
    onnx.save_model(m, os.path.join(out, "ext", "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=64)
    xs = np.random.default_rng(1).standard_normal((4, 5, 16)).astype(np.float32)
    y = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": xs})[0]
    with open(os.path.join(out, "io.json"), "w") as f:
        json.dump({"x": xs.ravel().tolist(), "x_shape": list(xs.shape), "y": y.ravel().tolist()}, f)


if __name__ == "__main__":
    main(sys.argv[1])
