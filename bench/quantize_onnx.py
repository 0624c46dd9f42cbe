"""The int8 ONNX peer: onnxruntime's own dynamic quantization of the bench model's ONNX export,
written where transformers.js looks for its "q8" model (onnx/model_quantized.onnx).

    python bench/quantize_onnx.py ONNX_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from onnxruntime.quantization import QuantType, quantize_dynamic


def main() -> None:
    onnx = Path(sys.argv[1]) / "onnx"
    # Signed int8 weights, per tensor: what onnxruntime recommends for x86 CPUs, and the same
    # scheme as torch's dynamic quantization of bertgate's int8 bundles.
    quantize_dynamic(onnx / "model.onnx", onnx / "model_quantized.onnx", weight_type=QuantType.QInt8)
    print(onnx / "model_quantized.onnx")


if __name__ == "__main__":
    main()
