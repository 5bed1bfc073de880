"""Memory and time of one Stable Diffusion export under drt's memory options and under optimum's
ORTStableDiffusionPipeline, each a fresh process run one after another in one go, so all see the
same machine:

  .venv-sd/bin/python benches/peer/sd_memory.py --model SD15_DIR --width 512 --height 512 --steps 20 \
      --threads 2 --configs optimum,default,low-memory,budget-1500,budget-1000 [--json OUT.json]

(`tract` is a further configuration: drt default on the tract backend.)

SD15_DIR comes from `tests/fixtures/sd-tiny/make.py --sd15 DIR` (random weights, real shapes). For
each process: load time, one generation's time, peak total RSS (the kernel's high-water mark) and
peak anonymous RSS (sampled every 2 ms; file-backed pages such as memory-mapped weights excluded).
optimum's process is sd_compare.py's peer, with no warm-up, as drt runs here.

With --images STEPS, each drt configuration then generates the same image (seed 0, STEPS steps)
with `drt generate --save-raw`, and its relative L2 distance to the default configuration's image
is printed: the memory options must not change the numbers (tiled VAE decoding aside).
Needs a release build of drt and the packages of tests/fixtures/sd-requirements.txt.
"""
import argparse
import json

import numpy as np
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from sd_compare import peer, request_args, request_flags

# Configuration name -> drt bench flags (None: optimum's pipeline).
CONFIGS = {
    "optimum": None,
    "default": [],
    "slices1": ["--attention-slices", "1"],
    "low-memory": ["--low-memory"],
    "mapped": ["--mapped-weights"],
    "mapped+low-memory": ["--mapped-weights", "--low-memory"],
    "budget-1500": ["--memory-budget", "1500"],
    "budget-1000": ["--memory-budget", "1000"],
    # tract runs on one thread whatever --threads says.
    "tract": ["--backend", "tract"],
}


def backend(flags):
    """ONNX Runtime unless the configuration names a backend."""
    return [] if "--backend" in flags else ["--backend", "ort"]


def main():
    p = argparse.ArgumentParser()
    request_args(p, size=512, steps=20)
    p.add_argument("--configs", default="optimum,default,low-memory,budget-1500,budget-1000")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--images", type=int, metavar="STEPS", help="compare the configurations' images at STEPS steps")
    p.add_argument("--peer-once", help=argparse.SUPPRESS)  # internal: run the peer, write JSON here
    a = p.parse_args()
    if a.peer_once:
        a.runs = 1
        Path(a.peer_once).write_text(json.dumps(peer(a, warmup=0)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="drt-sd-memory-"))
    common = request_flags(a)
    rows = {}
    for name in a.configs.split(","):
        out = tmp / f"{name}.json"
        if CONFIGS[name] is None:
            cmd = [sys.executable, __file__, "--peer-once", str(out), *common]
        else:
            cmd = [a.drt, "bench", *backend(CONFIGS[name]), "--runs", "1", "--warmup", "0", "--json", str(out),
                   *common, *CONFIGS[name]]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "TQDM_DISABLE": "1"})
        rows[name] = json.loads(out.read_text())
        r = rows[name]
        print(f"| {name} | {r['peak_rss_mb']:,.0f} MB | {r['peak_anon_mb']:,.0f} MB | {r['load_ms'] / 1e3:.1f} s "
              f"| {r['total_ms_p50'] / 1e3:.1f} s |", flush=True)
    if a.images:
        a.steps = a.images
        raw = {}
        for name in ["default"] + [n for n in a.configs.split(",") if CONFIGS[n] and n != "default"]:
            raw[name] = tmp / f"{name}.npy"
            subprocess.run([a.drt, "generate", *backend(CONFIGS[name]), "--quiet", "--seed", "0", "--save-raw",
                            str(raw[name]), *request_flags(a), *CONFIGS[name]], check=True)
        base = np.load(raw["default"]).astype(np.float64)
        for name, path in raw.items():
            d = float(np.linalg.norm(np.load(path) - base) / np.linalg.norm(base))
            rows.setdefault(name, {})["image_rel_l2"] = d
            print(f"{name}: relative L2 {d:.2e} to the default's image at {a.images} steps", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"settings": vars(a), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
