"""The on-track checks of Chapter 10 (dmlib.ontrack.check_throughput, check_precision)."""

import pytest

from dmlib import ontrack


def test_throughput_verdict_computes_mfu_and_judges_it():
    # 1e12 FLOPs in 0.5 s = 2 TFLOP/s = 1% of a 200 TFLOP/s peak
    v = ontrack.check_throughput(1e12, 0.5, 200.0, min_mfu=0.005)
    assert v.ok and v.values["mfu"] == pytest.approx(0.01) and v.values["tflops"] == 2.0
    assert "1.00%" in v.message
    bad = ontrack.check_throughput(1e12, 0.5, 200.0, min_mfu=0.02)
    assert not bad.ok and "host read" in bad.message      # the usual causes are listed
    with pytest.raises(ontrack.OffTrack, match="needs >= 2.00%"):
        ontrack.check_throughput(1e12, 0.5, 200.0, min_mfu=0.02, strict=True)


@pytest.mark.parametrize("args,match", [((0, 1.0, 1.0), "flops_per_step"),
                                        ((1.0, -1.0, 1.0), "seconds_per_step"),
                                        ((1.0, 1.0, None), "peak_tflops")])
def test_throughput_refuses_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        ontrack.check_throughput(*args, min_mfu=0.1)
    with pytest.raises(ValueError, match="min_mfu"):
        ontrack.check_throughput(1.0, 1.0, 1.0, min_mfu=2)


def test_precision_verdict():
    assert ontrack.check_precision(0.50, 0.51, rtol=0.05).ok
    far = ontrack.check_precision(0.50, 0.60, rtol=0.05)
    assert not far.ok and far.values["gap"] == pytest.approx(0.2)
    assert "gradient scaler" in far.message
    assert not ontrack.check_precision(0.5, float("nan")).ok
    with pytest.raises(ontrack.OffTrack):
        ontrack.check_precision(0.5, 0.9, strict=True)
    with pytest.raises(ValueError, match="rtol"):
        ontrack.check_precision(0.5, 0.5, rtol=0)
