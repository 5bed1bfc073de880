"""Trains the digits classifier used to judge samples: `image` [B,1,16,16] in [-1,1] ->
`logits` [B,10] and `features` [B,128] (the penultimate layer, for a Frechet distance)."""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F

import digits_data
from common import MODELS, Timer, export_onnx, seed_everything, torch_threads, write_json

FEATURES = 128


class DigitsClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 8x8
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 4x4
        )
        self.fc = nn.Linear(64 * 4 * 4, FEATURES)
        self.head = nn.Linear(FEATURES, 10)
        self.drop = nn.Dropout(0.3)

    def forward(self, image):
        h = self.conv(image).flatten(1)
        features = F.relu(self.fc(h))
        return self.head(self.drop(features)), features


def augment(x, gen):
    """Random shifts of up to one pixel: generated digits are not pixel-aligned like the dataset."""
    b = x.shape[0]
    dx, dy = torch.randint(-1, 2, (2,), generator=gen).tolist()
    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    noise = 0.05 * torch.randn(x.shape, generator=gen)
    return (x + noise).clamp(-1, 1) if b else x


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    threads = torch_threads()
    seed_everything(args.seed + 2)
    xtr, ytr = digits_data.load("train")
    xte, yte = digits_data.load("test")
    model = DigitsClassifier()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    gen = torch.Generator().manual_seed(args.seed)
    timer = Timer()
    for ep in range(args.epochs):
        model.train()
        perm = torch.randperm(xtr.shape[0], generator=gen)
        for i in range(0, len(perm), 64):
            idx = perm[i:i + 64]
            logits, _ = model(augment(xtr[idx], gen))
            loss = F.cross_entropy(logits, ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        acc = (model(xte)[0].argmax(1) == yte).float().mean().item()
    print(f"held-out accuracy {acc:.4f} on {len(yte)} images ({timer.minutes():.1f} min)")
    out = MODELS / "digits-classifier"
    size = export_onnx(model, (torch.zeros(2, 1, 16, 16),), out / "classifier.onnx", ["image"], ["logits", "features"],
                       {"image": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}})
    write_json(out / "training.json", {
        "epochs": args.epochs, "seed": args.seed, "threads": threads, "train_images": len(ytr),
        "test_images": len(yte), "heldout_accuracy": round(acc, 4), "features": FEATURES,
        "parameters": sum(p.numel() for p in model.parameters()), "train_minutes": round(timer.minutes(), 2),
        "onnx_bytes": size,
    })


if __name__ == "__main__":
    main()
