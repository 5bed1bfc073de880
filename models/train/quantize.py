"""Derives the reduced-precision variants of models/digits:

  models/digits-int8  static int8 QDQ quantization (onnxruntime.quantization), calibrated on the
                      denoiser inputs of real sampling runs across every timestep (timestep-aware
                      calibration as in PTQ4DM / Q-Diffusion), recorded by `drt generate --dump-inputs`
  models/digits-fp16  float16 weights and float16 graph inputs/outputs (the runtime converts at the
                      boundary); the class labels stay int64
  models/digits-int4  weight-only 4-bit matrix products (ONNX Runtime's MatMulNBits, blocks of 32
                      weights with one float32 scale each); convolutions stay float32

  cargo build --release && python quantize.py

`python quantize.py --export SRC DEST [--bits 4|8|none]` writes a Stable Diffusion export (as optimum
writes it) with the matrix products of its text encoder and UNet in 4- or 8-bit weight-only form,
the other parts copied. Either way the UNet's weights go to external data (`model.onnx_data`), which
is what lets the runtime cut it into segments under a memory budget; `--bits none` does only that,
for exports such as optimum's float16 one, whose UNet (1.7 GB) fits inside its graph file.

Each directory gets the digits model.json under a new name and a derived.json recording the source
graph's sha256, so tests notice when digits is retrained and these are not.
"""
import argparse
import hashlib
import json
import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
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


# Weights per quantization block: one float32 scale per 32 weights, the granularity 4-bit LLM
# formats settled on (GPTQ, llama.cpp's Q4_0); larger blocks lose accuracy on the small layers.
BLOCK = 32


def gemm_to_matmul(model):
    """Rewrites each Gemm with a constant weight into MatMul (+ Add of its bias), which is what
    MatMulNBits replaces: a transposed weight is stored transposed."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    nodes = []
    for n in g.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if n.op_type != "Gemm" or not plain or n.input[1] not in inits:
            nodes.append(n)
            continue
        w = numpy_helper.to_array(inits[n.input[1]])
        if attrs.get("transB", 0):
            w = w.T
        name = n.input[1] + "_matmul"
        g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w), name))
        bias = len(n.input) > 2 and n.input[2]
        product = n.output[0] + "_product" if bias else n.output[0]
        nodes.append(onnx.helper.make_node("MatMul", [n.input[0], name], [product], name=n.name + "_matmul"))
        if bias:
            nodes.append(onnx.helper.make_node("Add", [product, n.input[2]], [n.output[0]], name=n.name + "_bias"))
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return model


def weight_only(model, bits):
    """The model's matrix products with `bits`-bit weights (symmetric, blocks of BLOCK)."""
    q = MatMulNBitsQuantizer(gemm_to_matmul(model), bits=bits, block_size=BLOCK, is_symmetric=True)
    q.process()
    return q.model.model


def int4():
    model = weight_only(onnx.load(str(SOURCE / "denoiser.onnx")), 4)
    dest = MODELS / "digits-int4"
    dest.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dest / "denoiser.onnx"))
    write_model_dir(dest, "digits-int4", f"Gemm rewritten as MatMul, then onnxruntime.quantization "
                    f"MatMulNBitsQuantizer: 4-bit symmetric weights in blocks of {BLOCK}", {})


def export(src, dest, bits):
    """An optimum Stable Diffusion export with its text encoder's and UNet's matrix products in
    `bits`-bit weights (as they are for `bits=None`), the UNet's weights in external data."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("text_encoder", "unet"))
    for part in ("text_encoder", "unet"):
        (dest / part).mkdir()
        for f in (src / part).glob("*.json"):
            shutil.copy(f, dest / part)
        model = onnx.load(str(src / part / "model.onnx"))
        if bits:
            model = weight_only(model, bits)
        # External data when the weights pass protobuf's 2 GB, or for the UNet, so it can run in
        # segments under a memory budget.
        onnx.save(model, str(dest / part / "model.onnx"), save_as_external_data=part == "unet",
                  location="model.onnx_data", size_threshold=1024)
        files = sorted((dest / part).glob("model.onnx*"))
        print(f"{part}: {sum(f.stat().st_size for f in files) / 1e6:.0f} MB")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--export", nargs=2, metavar=("SRC", "DEST"), type=Path,
                   help="quantize a Stable Diffusion export instead of models/digits")
    p.add_argument("--bits", choices=("4", "8", "none"), default="4",
                   help="with --export: the weights' bits, or none to only move the UNet's to external data")
    a = p.parse_args()
    if a.export:
        export(*a.export, None if a.bits == "none" else int(a.bits))
        return
    with tempfile.TemporaryDirectory() as tmp:
        int8(Path(tmp))
    fp16()
    int4()
    for d in ("digits-int8", "digits-fp16", "digits-int4"):
        size = (MODELS / d / "denoiser.onnx").stat().st_size
        print(f"{d}: {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
