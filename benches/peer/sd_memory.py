"""Memory and time of one Stable Diffusion export under drt's memory options and under optimum's
ORTStableDiffusionPipeline, each a fresh process run one after another in one go, so all see the
same machine:

  .venv-sd/bin/python benches/peer/sd_memory.py --model SD15_DIR --width 512 --height 512 --steps 20 \
      --threads 2 --configs optimum,default,slices1,low-memory,mapped [--json OUT.json]

SD15_DIR comes from `tests/fixtures/sd-tiny/make.py --sd15 DIR` (random weights, real shapes). For
each process: load time, one generation's time, peak total RSS (the kernel's high-water mark) and
peak anonymous RSS (sampled every 2 ms; file-backed pages such as memory-mapped weights excluded).
Needs a release build of drt and the packages of tests/fixtures/sd-requirements.txt.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Configuration name -> drt bench flags (None: optimum's pipeline).
CONFIGS = {
    "optimum": None,
    "default": [],
    "slices1": ["--attention-slices", "1"],
    "low-memory": ["--low-memory"],
    "mapped": ["--mapped-weights"],
    "mapped+low-memory": ["--mapped-weights", "--low-memory"],
}


def anon_kb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


def peer(a):
    """optimum's pipeline in this process, timed as `drt bench` times drt."""
    peak = [anon_kb()]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], anon_kb())
            time.sleep(0.002)

    threading.Thread(target=watch, daemon=True).start()
    import onnxruntime as ort
    from optimum.onnxruntime import ORTStableDiffusionPipeline

    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    t0 = time.perf_counter()
    pipe = ORTStableDiffusionPipeline.from_pretrained(a.model, session_options=so)
    pipe.set_progress_bar_config(disable=True)
    load_ms = (time.perf_counter() - t0) * 1e3
    t0 = time.perf_counter()
    pipe(prompt=[a.prompt], num_inference_steps=a.steps, guidance_scale=a.guidance, height=a.height, width=a.width,
         output_type="np")
    total_ms = (time.perf_counter() - t0) * 1e3
    done.set()
    return {"load_ms": load_ms, "total_ms_p50": total_ms,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "peak_anon_mb": max(peak[0], anon_kb()) / 1024.0}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, help="an optimum Stable Diffusion export")
    p.add_argument("--prompt", default="a photo of a cat")
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--configs", default="optimum,default,slices1,low-memory,mapped")
    p.add_argument("--drt", default=str(REPO / "target" / "release" / "drt"))
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--peer-once", help=argparse.SUPPRESS)  # internal: run the peer, write JSON here
    a = p.parse_args()
    if a.peer_once:
        Path(a.peer_once).write_text(json.dumps(peer(a)))
        return
    tmp = Path(tempfile.mkdtemp(prefix="drt-sd-memory-"))
    common = ["--model", a.model, "--prompt", a.prompt, "--width", str(a.width), "--height", str(a.height),
              "--steps", str(a.steps), "--guidance", str(a.guidance), "--threads", str(a.threads)]
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
