"""Trains the digits denoisers and exports them to ONNX.

  python train_denoiser.py --objective epsilon   # models/digits: DDPM, 1000 steps, linear betas
  python train_denoiser.py --objective flow      # models/digits-flow: rectified flow, v = noise - x0

Both take `sample` [B,1,16,16], `timestep` [B] (DDPM index, or flow time t*1000) and `class_labels` [B]
(0..9, 10 = null class learnt by 10% label dropout, for classifier-free guidance).
"""
import argparse

import torch

import digits_data
from common import MODELS, Ema, Timer, export_onnx, seed_everything, torch_threads, write_json
from unet import DigitsUNet, count_params

NUM_TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END = 1e-4, 0.02
NULL_CLASS = 10
LABEL_DROPOUT = 0.1
CHANNELS = (24, 48, 64)


def alphas_cumprod():
    betas = torch.linspace(BETA_START, BETA_END, NUM_TRAIN_TIMESTEPS, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0).float()


def loss_fn(model, x0, y, objective, acp):
    b = x0.shape[0]
    noise = torch.randn_like(x0)
    if objective == "epsilon":
        t = torch.randint(0, NUM_TRAIN_TIMESTEPS, (b,))
        a = acp[t].view(b, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target, tin = noise, t.float()
    else:
        # Logit-normal time sampling (as SD3) puts the effort on mid-range t, where flow is hardest.
        t = torch.sigmoid(torch.randn(b))
        tt = t.view(b, 1, 1, 1)
        xt = (1 - tt) * x0 + tt * noise
        target, tin = noise - x0, t * NUM_TRAIN_TIMESTEPS
    return torch.mean((model(xt, tin, y) - target) ** 2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--objective", choices=["epsilon", "flow"], required=True)
    p.add_argument("--iters", type=int, default=3000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    threads = torch_threads()
    seed_everything(args.seed + (0 if args.objective == "epsilon" else 1))
    x_all, y_all = digits_data.load("all")
    model = DigitsUNet(ch=CHANNELS, num_classes=10)
    ema = Ema(model, 0.999)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    warmup = 100
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + torch.cos(torch.tensor(i / args.iters * 3.14159265)).item()))
    acp = alphas_cumprod()
    timer = Timer()
    gen = torch.Generator().manual_seed(args.seed)
    running = None
    for it in range(args.iters):
        idx = torch.randint(0, x_all.shape[0], (args.batch,), generator=gen)
        x0, y = x_all[idx], y_all[idx].clone()
        y[torch.rand(args.batch, generator=gen) < LABEL_DROPOUT] = NULL_CLASS
        loss = loss_fn(model, x0, y, args.objective, acp)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.update(model)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if it % 250 == 0 or it == args.iters - 1:
            print(f"[{args.objective}] iter {it} loss {running:.4f} ({timer.minutes():.1f} min)", flush=True)

    name = "digits" if args.objective == "epsilon" else "digits-flow"
    out_dir = MODELS / name
    b = 2
    dummy = (torch.zeros(b, 1, 16, 16), torch.full((b,), 500.0), torch.zeros(b, dtype=torch.long))
    size = export_onnx(
        ema.model, dummy, out_dir / "denoiser.onnx",
        ["sample", "timestep", "class_labels"], ["out_sample"],
        {"sample": {0: "batch"}, "timestep": {0: "batch"}, "class_labels": {0: "batch"}, "out_sample": {0: "batch"}},
    )
    torch.save(ema.model.state_dict(), MODELS / "train" / "out" / f"{name}.pt") if (MODELS / "train" / "out").is_dir() else None
    write_json(out_dir / "training.json", {
        "objective": args.objective, "iters": args.iters, "batch": args.batch, "lr": args.lr,
        "seed": args.seed, "threads": threads, "channels": list(CHANNELS),
        "parameters": count_params(model), "final_loss_ema": round(running, 5),
        "train_minutes": round(timer.minutes(), 2), "onnx_bytes": size,
    })
    print(f"wrote {out_dir / 'denoiser.onnx'} ({size} bytes, {count_params(model)} params, {timer.minutes():.1f} min)")


if __name__ == "__main__":
    main()
