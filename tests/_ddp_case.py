"""The data-parallel case of tests/test_distributed.py: a class-conditional MLP trained with
label dropout, gradient clipping and EMA. Imported by the test (one process) and run as a
script under torchrun (several processes on the gloo backend):

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/_ddp_case.py OUT

Rank 0 writes the trained weights (``model.*``, ``ema.*``) and the loss history to OUT.
With ``DMLIB_TEST_PLANT=unsharded`` every process draws its times and noise as if it were
alone (the planted bug the test must catch).
"""

import json
import os
import sys

import torch

from dmlib import losses, noise, schedules, toy
from dmlib.nn import MLP
from dmlib.train import TrainConfig, train

CONFIG = dict(steps=12, batch_size=64, lr=3e-3, warmup=3, log_every=4, label_dropout=0.2,
              progress=False, device="cpu")


def fit(**changes):
    gm = toy.GaussianMixture.eight_gaussians()
    x, y = gm.sample(512, generator=torch.Generator().manual_seed(1), return_labels=True)
    torch.manual_seed(123)  # the initial weights
    model = MLP(hidden=32, depth=2, n_classes=8)
    loss = losses.diffusion_loss(schedules.CosineSchedule())
    return train(model, loss, x, TrainConfig(**{**CONFIG, **changes}), labels=y)


def tensors(result) -> dict:
    out = {f"model.{k}": v.detach().clone() for k, v in result.model.state_dict().items()}
    out.update({f"ema.{k}": v.detach().clone() for k, v in result.ema.state_dict().items()})
    return out


if __name__ == "__main__":
    from safetensors.torch import save_file

    torch.set_num_threads(1)
    if os.environ.get("DMLIB_TEST_PLANT") == "unsharded":
        noise.Shard.draw = lambda self, fn, shape, **kw: fn(tuple(shape), generator=self.generator, **kw)
    torch.distributed.init_process_group("gloo")
    result = fit()
    if torch.distributed.get_rank() == 0:
        save_file(tensors(result), sys.argv[1] + ".safetensors")
        with open(sys.argv[1] + ".json", "w") as f:
            json.dump({"history": result.history,
                       "world": torch.distributed.get_world_size()}, f)
    torch.distributed.destroy_process_group()
