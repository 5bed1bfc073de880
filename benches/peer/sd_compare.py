"""Side-by-side comparison of diffusion-rt with optimum's ORTStableDiffusionPipeline on one Stable
Diffusion ONNX export, alternating the two as fresh processes in one run so both see the same
machine state, and printing medians and ratios:

  .venv-sd/bin/python benches/peer/sd_compare.py --model EXPORT_DIR --width 256 --height 256 \
      --steps 4 --guidance 7.5 --threads 2 --rounds 3

Both run ONNX Runtime on the CPU with the same threads, prompt, size, steps, guidance and the
export's own scheduler. Each process loads the pipeline (timed), generates once to warm up, then
`--runs` times (median); its peak RSS is read at exit. Needs a release build of drt and the packages
of tests/fixtures/sd-requirements.txt.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compare import report

REPO = Path(__file__).resolve().parents[2]


def anon_kb() -> int:
    """This process's anonymous resident memory (RssAnon), in kB; 0 where Linux does not say."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def peer(a, warmup: int = 1) -> dict:
    """One peer process: optimum's pipeline, timed as `drt bench` times drt (`warmup` generations
    first, then `a.runs`), with its peak total and anonymous memory (the latter sampled every 2 ms,
    as drt samples its own)."""
    import threading

    import onnxruntime as ort
    from optimum.onnxruntime import ORTStableDiffusionPipeline

    peak = [anon_kb()]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], anon_kb())
            time.sleep(0.002)

    threading.Thread(target=watch, daemon=True).start()

    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    t0 = time.perf_counter()
    pipe = ORTStableDiffusionPipeline.from_pretrained(a.model, session_options=so)
    pipe.set_progress_bar_config(disable=True)
    load_ms = (time.perf_counter() - t0) * 1e3
    times = []
    for _ in range(warmup + a.runs):
        t0 = time.perf_counter()
        pipe(prompt=[a.prompt], num_inference_steps=a.steps, guidance_scale=a.guidance, height=a.height,
             width=a.width, output_type="np")
        times.append((time.perf_counter() - t0) * 1e3)
    done.set()
    return {"load_ms": load_ms, "total_ms_p50": statistics.median(times[warmup:]),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "peak_anon_mb": max(peak[0], anon_kb()) / 1024.0}


def request_args(p, size: int, steps: int):
    """The request both drt and the peer run (defaults: `size` pixels square, `steps` steps), and
    where drt is."""
    p.add_argument("--model", required=True, help="an optimum Stable Diffusion export")
    p.add_argument("--prompt", default="a photo of a cat")
    p.add_argument("--width", type=int, default=size)
    p.add_argument("--height", type=int, default=size)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--drt", default=str(REPO / "target" / "release" / "drt"))


def request_flags(a) -> list:
    """The request of `request_args` as flags for `drt bench` and the peer process."""
    return ["--model", a.model, "--prompt", a.prompt, "--width", str(a.width), "--height", str(a.height),
            "--steps", str(a.steps), "--guidance", str(a.guidance), "--threads", str(a.threads)]


def main():
    p = argparse.ArgumentParser()
    request_args(p, size=256, steps=4)
    p.add_argument("--runs", type=int, default=3, help="measured generations per process")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", help="write the medians and ratios here")
    p.add_argument("--peer-once", help=argparse.SUPPRESS)  # internal: run the peer, write JSON here
    a = p.parse_args()
    if a.peer_once:
        Path(a.peer_once).write_text(json.dumps(peer(a)))
        return

    tmp = Path(tempfile.mkdtemp(prefix="drt-sd-compare-"))
    common = [*request_flags(a), "--runs", str(a.runs)]
    cmds = {
        "ours": ([a.drt, "bench", "--backend", "ort", "--warmup", "1", "--json", str(tmp / "ours.json"), *common],
                 tmp / "ours.json"),
        "peer": ([sys.executable, __file__, "--peer-once", str(tmp / "peer.json"), *common], tmp / "peer.json"),
    }
    keys = ("load_ms", "total_ms_p50", "peak_rss_mb")
    rows = {k: {"ours": [], "peer": []} for k in keys}
    for r in range(a.rounds):
        for who in (["ours", "peer"] if r % 2 == 0 else ["peer", "ours"]):
            cmd, out = cmds[who]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**os.environ, "TQDM_DISABLE": "1"})
            rep = json.loads(out.read_text())
            for k in keys:
                rows[k][who].append(rep[k])
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)

    report(rows, f"{Path(a.model).name}: {a.width}x{a.height}, {a.steps} steps, guidance {a.guidance}, "
                 f"{a.threads} thread(s), ONNX Runtime CPU; medians of {a.rounds} rounds", "optimum", vars(a), a.json)

if __name__ == "__main__":
    main()
