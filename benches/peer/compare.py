"""Side-by-side comparison of diffusion-rt with the Python peer (peer.py), alternating the two in one
run so both see the same machine state, and printing medians and ratios:

  python benches/peer/compare.py --model models/digits --backend ort --threads 1 --batch 1 --rounds 5

Each round runs, in alternating order: `drt bench` and `peer.py bench` (per-step and whole-generation
times, overhead ratio), then `drt generate` and `peer.py generate` as fresh processes (process start
to first sample written, and the process's peak RSS). Needs a release build of drt
(`cargo build --release`) and the Python packages of models/train/requirements.txt.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PEER = Path(__file__).resolve().parent / "peer.py"


def timed_process(cmd, out_file):
    """Wall time from spawn to exit with `out_file` written, and the child's peak RSS (MB)."""
    if out_file.exists():
        out_file.unlink()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = (time.perf_counter() - t0) * 1e3
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not out_file.exists():
        sys.exit(f"{' '.join(map(str, cmd))} failed: {proc.stderr.read().decode()}")
    return elapsed, usage.ru_maxrss / 1024.0


def run_json(cmd, json_file):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(Path(json_file).read_text())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="models/digits")
    p.add_argument("--backend", default="ort", help="drt's backend (the peer always runs onnxruntime)")
    p.add_argument("--sampler", default="dpmpp-2m")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=int, default=10, help="measured generations per bench")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--drt", default=str(REPO / "target" / "release" / "drt"))
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--json", help="write the medians and ratios here")
    a = p.parse_args()
    model = str(Path(a.model).resolve())
    common = ["--sampler", a.sampler, "--steps", str(a.steps), "--guidance", str(a.guidance),
              "--batch", str(a.batch), "--threads", str(a.threads)]
    tmp = Path(tempfile.mkdtemp(prefix="drt-compare-"))
    ours_bench = [a.drt, "bench", "--model", model, "--backend", a.backend, "--runs", str(a.runs),
                  "--json", str(tmp / "ours.json"), *common]
    peer_bench = [a.python, str(PEER), "bench", "--model", model, "--runs", str(a.runs),
                  "--json", str(tmp / "peer.json"), *common]
    ours_gen = [a.drt, "generate", "--model", model, "--backend", a.backend, "--quiet",
                "--save-raw", str(tmp / "ours.npy"), *common]
    peer_gen = [a.python, str(PEER), "generate", "--model", model, "--out", str(tmp / "peer.npy"), *common]

    rows = {k: {"ours": [], "peer": []} for k in
            ("step_ms_p50", "total_ms_p50", "overhead_ratio", "start_to_sample_ms", "peak_rss_mb")}
    for r in range(a.rounds):
        order = ["ours", "peer"] if r % 2 == 0 else ["peer", "ours"]
        for who in order:
            cmd, js = (ours_bench, tmp / "ours.json") if who == "ours" else (peer_bench, tmp / "peer.json")
            rep = run_json(cmd, js)
            for k in ("step_ms_p50", "total_ms_p50", "overhead_ratio"):
                rows[k][who].append(rep[k])
        for who in order:
            cmd, out = (ours_gen, tmp / "ours.npy") if who == "ours" else (peer_gen, tmp / "peer.npy")
            ms, rss = timed_process(cmd, out)
            rows["start_to_sample_ms"][who].append(ms)
            rows["peak_rss_mb"][who].append(rss)
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)

    report(rows, f"{a.sampler}, {a.steps} steps, guidance {a.guidance}, batch {a.batch}, {a.threads} thread(s); "
                 f"drt on {a.backend}; medians of {a.rounds} rounds", "Python peer", vars(a), a.json)


def report(rows, heading, peer_name, settings, json_path=None):
    """Prints the medians of `rows` ({metric: {"ours": [...], "peer": [...]}}) and their ratios as a
    Markdown table, and writes them with every measurement to `json_path` if given."""
    summary = {"settings": settings, "metrics": {}}
    print(f"\n{heading}\n")
    print(f"| metric | diffusion-rt | {peer_name} | peer / drt |")
    print("|---|---|---|---|")
    for k, v in rows.items():
        ours, peer = statistics.median(v["ours"]), statistics.median(v["peer"])
        ratio = peer / ours if ours else float("nan")
        summary["metrics"][k] = {"ours": ours, "peer": peer, "peer_over_ours": ratio, "all": v}
        print(f"| {k} | {ours:.5g} | {peer:.5g} | {ratio:.2f}× |")
    if json_path:
        Path(json_path).write_text(json.dumps(summary, indent=2) + "\n")

if __name__ == "__main__":
    main()
