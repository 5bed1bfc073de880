"""Measures a shipped denoiser the way a Python user would run it: diffusers' scheduler driving the
exported ONNX graph through onnxruntime, with batched classifier-free guidance; the shipped classifier
then judges the samples (class accuracy) and gives features for a Frechet distance to the dataset.

  python evaluate.py --model digits        # DPMSolverMultistep, 20 steps, guidance 3
  python evaluate.py --model digits-flow   # FlowMatchEulerDiscrete, 20 steps, guidance 3
"""
import argparse
import json

import numpy as np
import onnxruntime as ort
import scipy.linalg
import torch
from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler

import digits_data
from common import MODELS

NULL_CLASS = 10


def scheduler_for(model):
    if model == "digits-flow":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    return DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                                       beta_end=0.02, algorithm_type="dpmsolver++", solver_order=2)


def scale_model_input(sched, x, t):
    """Flow-matching schedulers feed the sample as it is and have no scale_model_input."""
    if hasattr(sched, "scale_model_input"):
        x = sched.scale_model_input(x, t)
    return x.numpy().astype(np.float32)


def session(path, threads=2):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def sample(model, classes, steps, guidance, seed):
    sess = session(MODELS / model / "denoiser.onnx")
    sched = scheduler_for(model)
    sched.set_timesteps(steps)
    b = len(classes)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((b, 1, 16, 16), generator=gen, dtype=torch.float32) * getattr(sched, "init_noise_sigma", 1.0)
    labels = np.concatenate([np.asarray(classes, np.int64), np.full(b, NULL_CLASS, np.int64)])
    for t in sched.timesteps:
        xin = scale_model_input(sched, x, t)
        tt = np.full(2 * b, float(t), np.float32)
        out = sess.run(["out_sample"], {"sample": np.concatenate([xin, xin]), "timestep": tt, "class_labels": labels})[0]
        cond, uncond = out[:b], out[b:]
        pred = uncond + guidance * (cond - uncond)
        x = sched.step(torch.from_numpy(pred), t, x).prev_sample
    return x.numpy()


def classify(images):
    sess = session(MODELS / "digits-classifier" / "classifier.onnx")
    logits, feats = sess.run(["logits", "features"], {"image": np.clip(images, -1, 1).astype(np.float32)})
    return logits, feats


def frechet_distance(f1, f2):
    mu1, mu2 = f1.mean(0), f2.mean(0)
    c1, c2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(c1 @ c2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean.real))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="digits")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", help="write a PNG grid of the first sample of each class here")
    args = p.parse_args()
    classes = np.repeat(np.arange(10), args.per_class)
    x = sample(args.model, classes, args.steps, args.guidance, args.seed)
    logits, feats = classify(x)
    acc = float((logits.argmax(1) == classes).mean())
    data_x, _ = digits_data.load("all")
    _, data_feats = classify(data_x.numpy())
    fd = frechet_distance(feats, data_feats)
    # Reference point: the held-out real images against the whole dataset (the floor a model could reach).
    test_x, _ = digits_data.load("test")
    _, test_feats = classify(test_x.numpy())
    fd_real = frechet_distance(test_feats, data_feats)
    result = {"model": args.model, "scheduler": type(scheduler_for(args.model)).__name__, "steps": args.steps,
              "guidance": args.guidance, "samples": len(classes), "class_accuracy": round(acc, 4),
              "frechet_distance": round(fd, 3), "frechet_distance_heldout_real": round(fd_real, 3)}
    print(json.dumps(result))
    (MODELS / args.model / "quality.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
