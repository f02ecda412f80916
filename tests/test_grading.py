"""dmlib.grading: the autograder's switch-off of the functions an exercise rebuilds."""

import pytest
import torch

import dmlib
from dmlib import diffusion, grading, guidance, losses, schedules
from dmlib.diffusion import convert as convert_alias


@pytest.fixture(autouse=True)
def _restore():
    yield
    grading.restore()


def test_a_switched_off_function_raises_through_its_module_and_an_earlier_alias():
    ns = {"convert_alias": convert_alias, "other": 3}
    grading.make_unavailable(["diffusion.convert"], ns, exercise="8.1")
    s = schedules.CosineSchedule()
    x, t = torch.zeros(2, 3), torch.full((2,), 0.5)
    with pytest.raises(grading.ExerciseUnavailable, match=r"diffusion\.convert.*Exercise 8\.1"):
        diffusion.convert(x, x, t, s, src="eps", dst="x0")
    with pytest.raises(grading.ExerciseUnavailable):
        ns["convert_alias"](x, x, t, s, src="eps", dst="x0")
    assert ns["other"] == 3
    grading.restore()
    assert diffusion.convert is convert_alias and ns["convert_alias"] is convert_alias
    diffusion.convert(x, x, t, s, src="eps", dst="x0")          # back on


def test_calls_from_inside_dmlib_go_through():
    grading.make_unavailable("diffusion.q_sample", exercise="2.1")
    s = schedules.CosineSchedule()
    # the training loss noises its batch by calling diffusion.q_sample
    net = _Net()
    loss = losses.diffusion_loss(s)
    value = loss(net, torch.zeros(4, 2), generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(value)
    with pytest.raises(grading.ExerciseUnavailable):
        diffusion.q_sample(torch.zeros(4, 2), torch.full((4,), 0.3), s)


def test_a_class_cannot_be_built_from_outside_dmlib():
    grading.make_unavailable(["guidance.ClassifierFreeGuidance"], exercise="8.1")
    with pytest.raises(grading.ExerciseUnavailable):
        guidance.ClassifierFreeGuidance(_Net(), 2.0)
    grading.restore()
    guidance.ClassifierFreeGuidance(_Net(), 2.0)


class _Net(torch.nn.Module):
    prediction = "eps"

    def forward(self, x, t, y=None):
        return torch.zeros_like(x)


@pytest.mark.parametrize("name", ["flow", "nope.f", "diffusion.nothing", "run.MODE_ENV"])
def test_names_that_are_not_dmlib_functions_are_refused(name):
    with pytest.raises(ValueError, match="dmlib|module.function"):
        grading.make_unavailable([name])


def test_nothing_in_dmlib_imports_the_grading_module():
    import pathlib
    src = pathlib.Path(dmlib.__file__).parent
    users = [p.name for p in src.rglob("*.py")
             if p.name not in ("grading.py", "__init__.py") and "grading" in p.read_text()]
    assert users == []


def test_a_switched_off_class_cannot_be_built_through_an_instance_either():
    from dmlib import toy

    eight = toy.GaussianMixture(torch.zeros(2, 2), stds=torch.ones(2))
    grading.make_unavailable(["toy.GaussianMixture"], exercise="3.4")
    with pytest.raises(grading.ExerciseUnavailable):
        type(eight)(torch.zeros(2, 2), stds=torch.ones(2))
    eight.log_prob(torch.zeros(3, 2))          # existing instances keep working
    grading.restore()
    assert "__init__" in toy.GaussianMixture.__dict__
    type(eight)(torch.zeros(2, 2), stds=torch.ones(2))


def test_a_function_is_switched_off_under_every_dmlib_name_that_imported_it():
    from dmlib import flow, likelihood, samplers
    assert flow.sample is samplers.sample and likelihood._predict is samplers._predict
    original = samplers._predict
    grading.make_unavailable(["samplers.sample", "samplers._predict"], {}, exercise="5.1")
    for reexported in (flow.sample, likelihood._predict):
        with pytest.raises(grading.ExerciseUnavailable, match="Exercise 5.1"):
            reexported()
    grading.restore()
    assert flow.sample is samplers.sample and likelihood._predict is original


def test_a_guard_left_in_a_module_imported_meanwhile_is_harmless_after_restore():
    grading.make_unavailable(["diffusion.convert"], {}, exercise="8.1")
    held_meanwhile = diffusion.convert               # what a later import would bind
    grading.restore()
    s = schedules.CosineSchedule()
    x, t = torch.zeros(2, 3), torch.full((2,), 0.5)
    held_meanwhile(x, x, t, s, src="eps", dst="x0")  # switched back on everywhere
