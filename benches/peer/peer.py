"""The peer: the same model, sampler, steps, guidance and threads run the way a Python user would,
with a diffusers scheduler driving the ONNX graph through onnxruntime's Python API and batched
classifier-free guidance. Reports the keys of `drt bench --json` that apply to it.

  python peer.py bench    --model models/digits [--sampler dpmpp-2m] [--steps 20] [--guidance 3]
                          [--batch 1] [--threads 1] [--runs 10] [--warmup 1] [--json FILE]
  python peer.py generate --model models/digits ... --out SAMPLE.npy   # one generation, then exit

Needs torch, diffusers, onnxruntime and numpy (models/train/requirements.txt).
"""
import argparse
import json
import platform
import resource
import time
from pathlib import Path

T_START = time.perf_counter()

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
import diffusers  # noqa: E402

# drt sampler name -> (diffusers scheduler class, extra config); betas come from model.json.
SCHEDULERS = {
    "ddim": ("DDIMScheduler", dict(clip_sample=False, set_alpha_to_one=False)),
    "ddpm": ("DDPMScheduler", dict(clip_sample=False, variance_type="fixed_small")),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp-2m": ("DPMSolverMultistepScheduler", dict(algorithm_type="dpmsolver++", solver_order=2)),
    "dpmpp-2m-sde": ("DPMSolverMultistepScheduler", dict(algorithm_type="sde-dpmsolver++", solver_order=2)),
    "lcm": ("LCMScheduler", {}),
    "flow-euler": ("FlowMatchEulerDiscreteScheduler", {}),
}
DISCRETE_KEYS = ("num_train_timesteps", "beta_schedule", "beta_start", "beta_end", "timestep_spacing",
                 "steps_offset", "set_alpha_to_one")


class Peer:
    def __init__(self, model_dir, sampler, threads):
        self.dir = Path(model_dir)
        self.manifest = json.loads((self.dir / "model.json").read_text())
        d = self.manifest["denoiser"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        self.sess = ort.InferenceSession(str(self.dir / d["onnx"]), opts, providers=["CPUExecutionProvider"])
        self.d = d
        name = sampler or self.manifest.get("defaults", {}).get("sampler", "dpmpp-2m")
        cls, extra = SCHEDULERS[name]
        ns = self.manifest["noise_schedule"]
        config = {k: v for k, v in ns.items() if k in DISCRETE_KEYS or (ns["type"] == "flow" and k == "shift")}
        self.sampler = name
        self.scheduler = getattr(diffusers, cls)(**config, **extra)

    def generate(self, classes, steps, guidance, seed, timing=None):
        """One generation; `timing` (a dict) receives per-step times and the time inside sess.run."""
        d, sched = self.d, self.scheduler
        sched.set_timesteps(steps)
        b = len(classes)
        shape = (b, *self.manifest["sample_shape"])
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(shape, generator=gen, dtype=torch.float32) * getattr(sched, "init_noise_sigma", 1.0)
        guided = guidance != 1.0
        cls_in = d.get("class_input")
        labels = np.asarray(classes, np.int64)
        if guided:
            labels = np.concatenate([labels, np.full(b, cls_in["null_class"], np.int64)])
        steps_s, backend_s = [], 0.0
        for t in sched.timesteps:
            t0 = time.perf_counter()
            xin = sched.scale_model_input(x, t) if hasattr(sched, "scale_model_input") else x
            xin = xin.numpy().astype(np.float32)
            feed = {d["sample_input"]: np.concatenate([xin, xin]) if guided else xin}
            n = 2 * b if guided else b
            if d.get("time_input"):
                feed[d["time_input"]["name"]] = np.full(n, float(t) * d["time_input"].get("scale", 1.0), np.float32)
            if cls_in:
                feed[cls_in["name"]] = labels
            tb = time.perf_counter()
            out = self.sess.run([d["output"]], feed)[0]
            backend_s += time.perf_counter() - tb
            if guided:
                cond, uncond = out[:b], out[b:]
                out = uncond + guidance * (cond - uncond)
            x = sched.step(torch.from_numpy(out), t, x).prev_sample
            steps_s.append(time.perf_counter() - t0)
        if timing is not None:
            timing["steps"] = steps_s
            timing["backend"] = backend_s
        return x.numpy()


def classes_for(args, peer):
    if args.class_:
        c = [int(v) for v in args.class_.split(",")]
        return c if len(c) == args.batch else c[:1] * args.batch
    num = (peer.d.get("class_input") or {}).get("num_classes", 1)
    return [i % num for i in range(args.batch)]


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench(args):
    t0 = time.perf_counter()
    peer = Peer(args.model, args.sampler, args.threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    classes = classes_for(args, peer)
    steps_ms, totals, backends, first_step_ms = [], [], [], None
    for k in range(args.warmup + args.runs):
        timing = {}
        t0 = time.perf_counter()
        peer.generate(classes, args.steps, args.guidance, args.seed + k, timing)
        total = time.perf_counter() - t0
        if first_step_ms is None:
            first_step_ms = timing["steps"][0] * 1e3
        if k >= args.warmup:
            steps_ms += [s * 1e3 for s in timing["steps"]]
            totals.append(total * 1e3)
            backends.append(timing["backend"] * 1e3)
    ratios = [t / b for t, b in zip(totals, backends)]
    report = {
        "device": {"cpu": platform.processor() or platform.machine(), "os": platform.platform()},
        "version": f"diffusers {diffusers.__version__}, onnxruntime {ort.__version__}, torch {torch.__version__}",
        "backend": "onnxruntime-python", "execution_provider": "cpu", "model": peer.manifest["name"],
        "precision": "fp32", "batch": args.batch, "sampler": peer.sampler, "steps": args.steps,
        "guidance": args.guidance, "threads": args.threads, "nfe": (2 if args.guidance != 1.0 else 1) * args.steps,
        "runs": args.runs, "warmup": args.warmup, "load_ms": load_ms, "first_step_ms": first_step_ms,
        "step_ms_p50": float(np.percentile(steps_ms, 50)), "step_ms_p90": float(np.percentile(steps_ms, 90)),
        "total_ms_p50": float(np.median(totals)), "backend_ms_p50": float(np.median(backends)),
        "overhead_ratio": float(np.median(ratios)), "peak_rss_mb": peak_rss_mb(),
        "import_ms": (t_imported - T_START) * 1e3,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


def generate(args):
    peer = Peer(args.model, args.sampler, args.threads)
    x = peer.generate(classes_for(args, peer), args.steps, args.guidance, args.seed)
    np.save(args.out, x.astype(np.float32))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["bench", "generate"])
    p.add_argument("--model", required=True)
    p.add_argument("--sampler")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--class", dest="class_")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--json")
    p.add_argument("--out", default="peer_sample.npy")
    args = p.parse_args()
    bench(args) if args.mode == "bench" else generate(args)


t_imported = time.perf_counter()

if __name__ == "__main__":
    main()
