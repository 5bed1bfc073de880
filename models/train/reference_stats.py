"""Reference statistics for Frechet distances of generated digits, and the held-out fixture that checks
the runtime's classifier and Frechet code against scipy.

Writes
  models/digits-classifier/reference_mean.npy, reference_cov.npy  (float64; the classifier's features
      over the whole dataset: what `drt bench --classifier` compares generated samples with)
  models/digits-classifier/reference.json                          (the classifier's sha256: tests
      fail when the classifier changes and these files do not)
  tests/fixtures/quality/heldout_images.npy, heldout_labels.npy    (the 355 held-out images)
  tests/fixtures/quality/expected.json                             (their accuracy and Frechet distance
      to the reference, computed here with numpy/scipy)

  python reference_stats.py
"""
import hashlib
import json

import numpy as np

import digits_data
from common import MODELS, REPO
from evaluate import classify, frechet_distance

CLASSIFIER = MODELS / "digits-classifier"
FIXTURE = REPO / "tests" / "fixtures" / "quality"


def main():
    data_x, _ = digits_data.load("all")
    _, feats = classify(data_x.numpy())
    feats = feats.astype(np.float64)
    mean, cov = feats.mean(0), np.cov(feats, rowvar=False)
    np.save(CLASSIFIER / "reference_mean.npy", mean)
    np.save(CLASSIFIER / "reference_cov.npy", cov)
    sha = hashlib.sha256((CLASSIFIER / "classifier.onnx").read_bytes()).hexdigest()
    (CLASSIFIER / "reference.json").write_text(json.dumps(
        {"classifier_sha256": sha, "images": len(feats),
         "what": "mean and covariance of the classifier's features over scikit-learn's digits at 16x16"},
        indent=2) + "\n")

    test_x, test_y = digits_data.load("test")
    images, labels = test_x.numpy().astype(np.float32), test_y.numpy().astype(np.int64)
    logits, test_feats = classify(images)
    FIXTURE.mkdir(parents=True, exist_ok=True)
    np.save(FIXTURE / "heldout_images.npy", images)
    np.save(FIXTURE / "heldout_labels.npy", labels)
    expected = {"classifier_sha256": sha, "images": len(images),
                "class_accuracy": float((logits.argmax(1) == labels).mean()),
                "frechet_distance": frechet_distance(test_feats.astype(np.float64), feats)}
    (FIXTURE / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(json.dumps(expected))


if __name__ == "__main__":
    main()
