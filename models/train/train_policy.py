"""Trains the point-robot diffusion policy and its regression baseline, and exports both to ONNX.

  python train_policy.py   # models/point-policy and models/point-policy-regression

The task (models/point-policy/task.json, simulated in Rust by src/policy/task.rs): a point robot
starts near the origin and must reach a goal straight ahead with a disk-shaped obstacle in between,
passing it on the left or on the right. The demonstrations do both, half each, whatever the start,
so the best action at the start is two-valued: a policy that predicts the mean action chunk heads
into the obstacle. Both networks see the robot's position (`obs`, [2]) and output an action chunk
[horizon, 2] of velocities in units of the task's `max_speed`.

- point-policy: epsilon prediction on Song et al.'s continuous VP schedule (beta 0.1 … 20, t from 1
  down to 1e-3), fed t × 1000; an MLP over the noisy chunk, the observation and a sinusoidal time
  embedding.
- point-policy-regression: the same MLP trunk on the observation alone, trained to predict the
  chunk by mean squared error (the mean of the demonstrations), exported as a model.json whose
  network returns its chunk whatever the noise, so `drt policy-eval` runs it with one DDIM step.
"""
import argparse
import hashlib
import json
import math

import numpy as np
import torch
from torch import nn

from common import MODELS, Ema, Timer, export_onnx, seed_everything, torch_threads, write_json

TASK_FILE = MODELS / "point-policy" / "task.json"
TASK = json.loads(TASK_FILE.read_text())
H, A = TASK["horizon"], 2
BETA_MIN, BETA_MAX, T_MIN, T_SCALE = 0.1, 20.0, 1e-3, 1000.0
WIDTH, EMB, OBS_OCTAVES, OBS_EMB = 256, 32, 4, 64


def demonstrations(n, rng):
    """`n` expert runs: straight to a waypoint beside the obstacle (left or right, at random),
    then to the goal, at 85–100 % of the top speed. Returns (observation, action chunk) pairs."""
    (ox, oy), r = TASK["obstacle"], TASK["obstacle_radius"]
    goal, speed = np.array(TASK["goal"]), TASK["max_speed"]
    obs, chunks, sides = [], [], []
    for _ in range(n):
        side = rng.choice([-1.0, 1.0])
        p = np.array([rng.uniform(*TASK["start"]["x"]), rng.uniform(*TASK["start"]["y"])])
        way = np.array([ox + side * rng.uniform(r + 0.1, r + 0.2), oy + rng.uniform(-0.05, 0.05)])
        v = speed * rng.uniform(0.85, 1.0)
        path, actions = [p.copy()], []
        for target in (way, goal):
            while np.linalg.norm(target - p) > 1e-9 and np.linalg.norm(goal - p) > TASK["goal_radius"] / 2:
                step = target - p
                step *= min(1.0, v / np.linalg.norm(step))
                p = p + step
                actions.append(step / speed)
                path.append(p.copy())
        actions = np.array(actions + [np.zeros(2)] * H)  # at rest once there
        for k in range(len(path) - 1):
            obs.append(path[k])
            chunks.append(actions[k:k + H])
        sides.append(side)
    return np.array(obs, np.float32), np.array(chunks, np.float32), np.array(sides)


CENTRE = TASK["obstacle"]


def normalise(obs):
    """Positions to roughly [-1, 1] (centred on the obstacle, scaled by half the start-goal
    distance), with Fourier features that let the MLP draw the sharp line between the sides."""
    o = torch.stack([obs[:, 0] - CENTRE[0], obs[:, 1] - CENTRE[1]], dim=1) / 0.5
    phase = torch.cat([o * (math.pi * 2 ** k) for k in range(OBS_OCTAVES)], dim=1)
    return torch.cat([o, torch.sin(phase), torch.cos(phase)], dim=1)


class Trunk(nn.Module):
    def __init__(self, inputs):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(inputs, WIDTH), nn.Mish(), nn.Linear(WIDTH, WIDTH), nn.Mish(),
                                 nn.Linear(WIDTH, WIDTH), nn.Mish(), nn.Linear(WIDTH, H * A))

    def forward(self, x):
        return self.net(x)


class ObsEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 + 4 * OBS_OCTAVES, OBS_EMB), nn.Mish())

    def forward(self, obs):
        return self.net(normalise(obs))


class Denoiser(nn.Module):
    def __init__(self):
        super().__init__()
        self.obs = ObsEncoder()
        self.trunk = Trunk(H * A + OBS_EMB + EMB)
        self.register_buffer("freqs", torch.exp(-math.log(10000.0) * torch.arange(EMB // 2) / (EMB // 2)))

    def forward(self, sample, t, obs):
        phase = t[:, None] * self.freqs[None, :]
        emb = torch.cat([torch.sin(phase), torch.cos(phase)], dim=1)
        x = torch.cat([sample.flatten(1), self.obs(obs), emb], dim=1)
        return self.trunk(x).view(-1, H, A)


class Regression(nn.Module):
    def __init__(self):
        super().__init__()
        self.obs = ObsEncoder()
        self.trunk = Trunk(OBS_EMB)

    def forward(self, sample, t, obs):
        # The sample and time change nothing (times zero keeps them graph inputs): the chunk is a
        # function of the observation alone.
        ignored = 0.0 * (sample.flatten(1).sum(1, keepdim=True) + t[:, None])
        return (self.trunk(self.obs(obs)) + ignored).view(-1, H, A)


def vp(t):
    log_abar = -0.5 * t ** 2 * (BETA_MAX - BETA_MIN) - t * BETA_MIN
    return torch.exp(0.5 * log_abar), torch.sqrt(-torch.expm1(log_abar))


def train(model, loss_of, obs, chunks, iters, batch, lr, seed):
    gen = torch.Generator().manual_seed(seed)
    ema = Ema(model, 0.999)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-6)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=iters, pct_start=0.05)
    running = None
    for it in range(iters):
        idx = torch.randint(0, len(obs), (batch,), generator=gen)
        loss = loss_of(model, obs[idx], chunks[idx], gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        ema.update(model)
        running = loss.item() if running is None else 0.99 * running + 0.01 * loss.item()
        if it % 1000 == 0 or it == iters - 1:
            print(f"iter {it}: loss {running:.5f}", flush=True)
    return ema.model, running


def diffusion_loss(model, obs, x0, gen):
    b = x0.shape[0]
    t = T_MIN + (1 - T_MIN) * torch.rand(b, generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    a, s = vp(t)
    xt = a[:, None, None] * x0 + s[:, None, None] * noise
    return torch.mean((model(xt, t * T_SCALE, obs) - noise) ** 2)


def regression_loss(model, obs, x0, gen):
    return torch.mean((model(torch.zeros_like(x0), torch.zeros(len(x0)), obs) - x0) ** 2)


def manifest(name, prediction, defaults):
    return {
        "schema": "diffusion-rt.model/1",
        "name": name,
        "sample_shape": [H, A],
        "denoiser": {"onnx": "denoiser.onnx", "sample_input": "sample",
                     "time_input": {"name": "t", "kind": "t", "scale": T_SCALE},
                     "tensor_inputs": [{"name": "obs"}],
                     "output": "out", "prediction": prediction},
        "noise_schedule": {"type": "vp", "beta_min": BETA_MIN, "beta_max": BETA_MAX, "t_min": T_MIN},
        "defaults": defaults,
        "output": {"kind": "tensor", "value_range": [-1.0, 1.0]},
    }


def export(model, name, prediction, defaults, record):
    out = MODELS / name
    args = (torch.zeros(1, H, A), torch.zeros(1), torch.zeros(1, 2))
    size = export_onnx(model, args, out / "denoiser.onnx", ["sample", "t", "obs"], ["out"],
                       {"sample": {0: "batch"}, "t": {0: "batch"}, "obs": {0: "batch"}, "out": {0: "batch"}})
    write_json(out / "model.json", manifest(name, prediction, defaults))
    write_json(out / "training.json", {**record, "onnx_bytes": size})
    print(f"{name}: {size / 1e3:.0f} kB")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--demos", type=int, default=1000)
    p.add_argument("--iters", type=int, default=50000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=["point-policy", "point-policy-regression"], help="train one of the two")
    a = p.parse_args()
    threads = torch_threads()
    seed_everything(a.seed)
    obs, chunks, sides = demonstrations(a.demos, np.random.default_rng(a.seed))
    print(f"{a.demos} demonstrations ({(sides < 0).mean():.0%} left), {len(obs)} (observation, chunk) pairs")
    obs, chunks = torch.from_numpy(obs), torch.from_numpy(chunks)
    # tests/policy.rs checks that task.json is still the task the policies were trained on.
    common = {"task_sha256": hashlib.sha256(TASK_FILE.read_bytes()).hexdigest(), "demos": a.demos, "pairs": len(obs), "iters": a.iters, "batch": a.batch, "lr": a.lr,
              "seed": a.seed, "threads": threads}
    for name, net, loss, prediction, defaults in [
        ("point-policy", Denoiser(), diffusion_loss, "epsilon", {"sampler": "dpmpp-2m", "steps": 10}),
        ("point-policy-regression", Regression(), regression_loss, "sample", {"sampler": "ddim", "steps": 1}),
    ]:
        if a.only not in (None, name):
            continue
        timer = Timer()
        trained, final = train(net, loss, obs, chunks, a.iters, a.batch, a.lr, a.seed)
        params = sum(p.numel() for p in trained.parameters())
        export(trained, name, prediction, defaults,
               {**common, "objective": prediction, "parameters": params, "final_loss_ema": round(final, 6),
                "train_minutes": round(timer.minutes(), 2)})


if __name__ == "__main__":
    main()
