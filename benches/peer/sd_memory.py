"""Memory and time of one Stable Diffusion export under drt's memory options and under optimum's
ORTStableDiffusionPipeline, each a fresh process run one after another in one go, so all see the
same machine:

  .venv-sd/bin/python benches/peer/sd_memory.py --model SD15_DIR --width 512 --height 512 --steps 20 \
      --threads 2 --configs optimum,default,slices1,low-memory,mapped [--json OUT.json]

SD15_DIR comes from `tests/fixtures/sd-tiny/make.py --sd15 DIR` (random weights, real shapes). For
each process: load time, one generation's time, peak total RSS (the kernel's high-water mark) and
peak anonymous RSS (sampled every 2 ms; file-backed pages such as memory-mapped weights excluded).
optimum's process is sd_compare.py's peer, with no warm-up, as drt runs here.
Needs a release build of drt and the packages of tests/fixtures/sd-requirements.txt.
"""
import argparse
import json
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
}


def main():
    p = argparse.ArgumentParser()
    request_args(p, size=512, steps=20)
    p.add_argument("--configs", default="optimum,default,slices1,low-memory,mapped")
    p.add_argument("--json", help="write the figures here")
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
            cmd = [a.drt, "bench", "--backend", "ort", "--runs", "1", "--warmup", "0", "--json", str(out), *common,
                   *CONFIGS[name]]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       env={**os.environ, "TQDM_DISABLE": "1"})
        rows[name] = json.loads(out.read_text())
        r = rows[name]
        print(f"| {name} | {r['peak_rss_mb']:,.0f} MB | {r['peak_anon_mb']:,.0f} MB | {r['load_ms'] / 1e3:.1f} s "
              f"| {r['total_ms_p50'] / 1e3:.1f} s |", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"settings": vars(a), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
