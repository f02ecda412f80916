"""The autoencoder of latent diffusion: how much its reconstructions cost in FD and in accuracy.

Loads the shipped `mnist_vae` and reconstructs N random test digits (which neither the
autoencoder nor the evaluation classifier trained on) from their posterior means; scores the
reconstructions with `metrics.image_report` against the other test digits (FD ratio to
the real-vs-real floor with its bootstrap interval, precision, recall) and with the evaluation
classifier's accuracy on the true labels, beside the same numbers for the original digits.
The reconstruction FD ratio is the floor of every latent model (Chapter 11). Also records the
latent statistics (scale factor, shift, per-channel spread) on the training digits.
Targets: reconstruction FD ratio <= 1.5 and classifier accuracy on reconstructions >= 0.98.
Usage: python benchmarks/autoencoder.py [--n 2000] [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch

from dmlib import data, latent, metrics, run, shipped, train

try:
    from _common import write
except ImportError:
    from benchmarks._common import write


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="a smoke test: an untrained autoencoder, 60 digits")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = train.load_config("mnist_vae")
    if args.quick:
        vae, record, n, n_stats = train.build_model(cfg).eval(), {}, 60, 500
    else:
        vae, record = shipped.load("mnist_vae")
        n, n_stats = args.n, None
    classifier, _ = shipped.load("mnist_classifier")
    test = data.load_mnist("test", verbose=False)
    # n random test digits are reconstructed; the others are the real pool, disjoint from
    # them, so that no digit is compared with its own reconstruction. Random, because the
    # test split's two halves come from different writers (MNIST's first 5,000 test
    # digits are from another source than its last 5,000)
    order = torch.randperm(len(test.labels), generator=torch.Generator().manual_seed(0))
    order = order[: 300 if args.quick else None]
    real = metrics.features(classifier, test.images[order[n:]])
    x, y = test.images[order[:n]], test.labels[order[:n]]

    start = time.perf_counter()
    with torch.no_grad():
        means = latent.encode_means(vae, x)
        x_hat = torch.cat([vae.decode(means[i:i + 500]) for i in range(0, n, 500)])
    seconds = time.perf_counter() - start
    rows = {}
    for name, images in (("original", x), ("reconstruction", x_hat)):
        report = metrics.image_report(images, classifier, real, labels=y,
                                      generator=torch.Generator().manual_seed(2))
        rows[name] = report
        print(f"{name}: FD ratio {report['fd_ratio']:.2f} [{report['fd_ratio_lo']:.2f}, "
              f"{report['fd_ratio_hi']:.2f}], accuracy {report['accuracy']:.4f}", flush=True)

    train_images = data.load_mnist("train", verbose=False).images[:n_stats]
    with torch.no_grad():
        train_means = latent.encode_means(vae, train_images)
    scale, shift = latent.latent_stats(train_means)
    per_channel = train_means.transpose(0, 1).flatten(1)  # (C, N * h * w)
    rec = rows["reconstruction"]
    payload = {
        "model": "mnist_vae", "model_step": record.get("step"), "n": n,
        "mse": float(((x_hat - x) ** 2).mean()), "encode_decode_seconds": round(seconds, 2),
        "rows": rows,
        "latent": {"scale": scale, "shift": shift, "channel_std": per_channel.std(1).tolist(),
                   "channel_mean": per_channel.mean(1).tolist(), "n_train": train_means.shape[0]},
        "target": "reconstruction FD ratio <= 1.5 and classifier accuracy on reconstructions >= 0.98",
        "meets_target": rec["fd_ratio"] <= 1.5 and rec["accuracy"] >= 0.98,
        "run_mode": run.run_mode(),
    }
    return write("autoencoder" + ("_quick" if args.quick else ""), payload, args.out)


if __name__ == "__main__":
    main()
