"""Helpers shared by the training scripts: seeding, EMA, ONNX export, paths."""
import copy
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "models"
OPSET = 17


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Ema:
    """Exponential moving average of weights, with the usual warm-up so early weights fade fast."""

    def __init__(self, model, decay):
        self.model = copy.deepcopy(model).eval()
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for pe, p in zip(self.model.parameters(), model.parameters()):
            pe.mul_(d).add_(p.detach(), alpha=1 - d)
        for be, b in zip(self.model.buffers(), model.buffers()):
            be.copy_(b)


def export_onnx(model, args, path, input_names, output_names, dynamic_axes):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    torch.onnx.export(
        model, args, str(path), input_names=input_names, output_names=output_names,
        dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False, do_constant_folding=True,
    )
    import onnx
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    # Drop the exporter's producer version so re-exports with the same weights are byte-stable.
    m.producer_version = ""
    onnx.save(m, str(path))
    return path.stat().st_size


class Timer:
    def __init__(self):
        self.t0 = time.time()

    def minutes(self):
        return (time.time() - self.t0) / 60.0


def write_json(path, obj):
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")


def torch_threads():
    n = int(os.environ.get("DRT_TRAIN_THREADS", "0")) or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n
