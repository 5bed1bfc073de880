"""scikit-learn's bundled 8x8 digits (no download), upsampled to 16x16 and scaled to [-1, 1]."""
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

SIZE = 16
NUM_CLASSES = 10
SPLIT_SEED = 1234


def load(split="all"):
    """Returns (images [N,1,16,16] float32 in [-1,1], labels [N] int64).

    split: "all", "train" (80%) or "test" (20%): a fixed stratified split, so the classifier's held-out
    accuracy is measured on images it never saw.
    """
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)  # [N,1,8,8] in [0,1]
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    x = (x * 2.0 - 1.0).clamp(-1.0, 1.0)
    y = torch.from_numpy(d.target.astype(np.int64))
    if split == "all":
        return x, y
    rng = np.random.default_rng(SPLIT_SEED)
    test_idx = []
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(d.target == c)
        test_idx.extend(rng.choice(idx, size=len(idx) // 5, replace=False).tolist())
    mask = np.zeros(len(y), dtype=bool)
    mask[test_idx] = True
    sel = torch.from_numpy(mask if split == "test" else ~mask)
    return x[sel], y[sel]
