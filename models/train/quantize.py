"""Derives the reduced-precision variants of models/digits:

  models/digits-int8  static int8 QDQ quantization (onnxruntime.quantization), calibrated on the
                      denoiser inputs of real sampling runs across every timestep (timestep-aware
                      calibration as in PTQ4DM / Q-Diffusion), recorded by `drt generate --dump-inputs`
  models/digits-fp16  float16 weights and float16 graph inputs/outputs (the runtime converts at the
                      boundary); the class labels stay int64

  cargo build --release && python quantize.py

Each directory gets the digits model.json under a new name and a derived.json recording the source
graph's sha256, so tests notice when digits is retrained and these are not.
"""
import hashlib
import json
import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16

from common import MODELS, REPO

SOURCE = MODELS / "digits"
DRT = REPO / "target" / "release" / "drt"
# Real sampling runs whose network inputs calibrate the int8 ranges: two samplers with different
# timestep grids, every class twice, guided (so the null class and the doubled batch are included).
CALIBRATION_RUNS = [
    ["--sampler", "dpmpp-2m", "--steps", "20", "--seed", "0"],
    ["--sampler", "euler-a", "--steps", "25", "--seed", "1"],
]
CLASSES = ",".join(str(c % 10) for c in range(20))


def record_inputs(dump_root):
    """Runs drt over the calibration runs; returns one feed dict per network call."""
    feeds = []
    for k, args in enumerate(CALIBRATION_RUNS):
        d = dump_root / f"run{k}"
        subprocess.run([str(DRT), "generate", "--model", str(SOURCE), "--backend", "ort", "--class", CLASSES,
                        "--guidance", "3", "--quiet", "--save-raw", str(dump_root / f"run{k}.npy"),
                        "--dump-inputs", str(d), *args], check=True)
        calls = defaultdict(dict)
        for f in sorted(d.glob("*.npy")):
            call, name = f.stem.split("_", 1)
            calls[call][name] = np.load(f)
        feeds += [calls[c] for c in sorted(calls)]
    return feeds


class Feeds(CalibrationDataReader):
    def __init__(self, feeds):
        self.it = iter(feeds)

    def get_next(self):
        return next(self.it, None)


def write_model_dir(dest, name, what, extra):
    dest.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((SOURCE / "model.json").read_text())
    manifest["name"] = name
    text = json.dumps(manifest, indent=2)
    (dest / "model.json").write_text(text + "\n")
    sha = hashlib.sha256((SOURCE / "denoiser.onnx").read_bytes()).hexdigest()
    (dest / "derived.json").write_text(json.dumps(
        {"source": "models/digits/denoiser.onnx", "source_sha256": sha, "how": what, **extra}, indent=2) + "\n")


def int8(tmp):
    feeds = record_inputs(tmp)
    pre = tmp / "pre.onnx"
    quant_pre_process(str(SOURCE / "denoiser.onnx"), str(pre), skip_symbolic_shape=True)
    dest = MODELS / "digits-int8"
    dest.mkdir(parents=True, exist_ok=True)
    # Only the matrix products are quantized: QDQ pairs around every Add/Mul/Concat/Resize cost
    # both time and accuracy here (measured: 9.5 ms/step and FD 367 quantizing all ops, against
    # 7.9 ms/step and FD 172 for these three; float32 gives 17.2 ms and FD 176 at batch 20).
    quantize_static(str(pre), str(dest / "denoiser.onnx"), Feeds(feeds), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    op_types_to_quantize=["Conv", "MatMul", "Gemm"])
    write_model_dir(dest, "digits-int8", "onnxruntime.quantization.quantize_static, QDQ, Conv/MatMul/Gemm, "
                    "per-channel int8 weights, uint8 activations, MinMax calibration",
                    {"calibration_calls": len(feeds), "calibration_runs": [" ".join(r) for r in CALIBRATION_RUNS]})


def fp16():
    model = convert_float_to_float16(onnx.load(str(SOURCE / "denoiser.onnx")), keep_io_types=False)
    dest = MODELS / "digits-fp16"
    dest.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dest / "denoiser.onnx"))
    write_model_dir(dest, "digits-fp16", "onnxruntime.transformers.float16.convert_float_to_float16, "
                    "keep_io_types=False", {})


def main():
    with tempfile.TemporaryDirectory() as tmp:
        int8(Path(tmp))
    fp16()
    for d in ("digits-int8", "digits-fp16"):
        size = (MODELS / d / "denoiser.onnx").stat().st_size
        print(f"{d}: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
