"""Our FBCNN reproduces the official network's reference outputs (../shared/reference/fbcnn)."""
import json

import numpy as np
import pytest
import torch

from core.network import FBCNN, Config, config_from_state_dict
from tests.conftest import shared_path
from bench.det_init import det_init_v1, det_init_v2


SPECS = {"det-init-v1": (det_init_v1, 3.0, "", 1e-4), "det-init-v2": (det_init_v2, 1.0, "det-init-v2/", 2e-5)}


@pytest.fixture(scope="module")
def manifest():
    return json.loads(shared_path("reference", "fbcnn", "manifest.json").read_text())


@pytest.mark.parametrize("cfg", ["color", "gray"])
def test_state_dict_keys_and_shapes_equal_official(manifest, cfg):
    n = manifest["configs"][cfg]["in_nc"]
    sd = FBCNN(in_nc=n, out_nc=n).state_dict()
    ours = [[k, list(v.shape)] for k, v in sd.items()]
    assert ours == manifest["configs"][cfg]["state_dict"]
    assert config_from_state_dict(sd) == Config(n, n)


@pytest.mark.parametrize("spec", list(SPECS))
@pytest.mark.parametrize("cfg", ["color", "gray"])
def test_reproduces_reference_outputs(manifest, spec, cfg):
    fill, S, sub, rtol = SPECS[spec]
    ref = shared_path("reference", "fbcnn")
    n = manifest["configs"][cfg]["in_nc"]
    model = FBCNN(in_nc=n, out_nc=n).eval()
    sd = {k: torch.from_numpy(fill(k, tuple(v.shape), S)) for k, v in model.state_dict().items()}
    model.load_state_dict(sd, strict=True)
    x = torch.from_numpy(np.load(ref / f"{cfg}_input.npy"))
    with torch.no_grad():
        cases = {"auto": model(x), "qfinput0p70_QF30": model(x, qf_input=torch.tensor([[0.7]]))}
    for case, (img, qf) in cases.items():
        ref_img = np.load(ref / f"{sub}{cfg}_{case}_image.npy")
        ref_qf = np.load(ref / f"{sub}{cfg}_{case}_qf.npy")
        assert img.shape == ref_img.shape and qf.shape == ref_qf.shape == (1, 1)
        err = np.abs(img.numpy() - ref_img).max()
        assert err <= rtol * np.abs(ref_img).max(), (spec, cfg, case, err)
        assert np.abs(qf.numpy() - ref_qf).max() <= 2e-6, (spec, cfg, case)
    # The engine's path: the QF head skipped, gamma and beta folded into the convs.
    with torch.inference_mode():
        img = model.restore(x, torch.tensor([[0.7]]))
    ref_img = np.load(ref / f"{sub}{cfg}_qfinput0p70_QF30_image.npy")
    assert np.abs(img.numpy() - ref_img).max() <= rtol * np.abs(ref_img).max(), (spec, cfg)


def test_inference_fast_path_equals_the_training_path():
    """Folding the QF attention into the convs (batch 1, no grad) changes nothing but rounding."""
    torch.manual_seed(0)
    model = FBCNN(nc=(16, 32, 64, 128), nb=2, qf_nc=64, residual=True).eval()
    for p in model.parameters():  # away from the zero-initialised last convs of deepened blocks
        p.data.normal_(0, 0.05)
    x = torch.rand(2, 3, 40, 48)
    q = torch.tensor([[0.9], [0.3]])
    slow, _ = model(x, qf_input=q)  # grad enabled and batch 2: the plain expression
    with torch.inference_mode():
        for i in range(2):
            fast = model.restore(x[i:i + 1], q[i:i + 1])
            assert torch.allclose(fast, slow[i:i + 1], rtol=1e-4, atol=1e-5)
            assert torch.equal(fast, model(x[i:i + 1], qf_input=q[i:i + 1])[0])


def test_qf_experts_start_as_the_identity_and_mix_per_image():
    """Zero deltas change nothing; trained deltas give each image its QF's own weights, at no FLOP cost."""
    from dataclasses import replace
    from core.network import build, flops_per_pixel
    torch.manual_seed(0)
    plain_cfg = Config(nc=(8, 16, 16, 16), nb=1, qf_nc=8, residual=True)
    cfg = replace(plain_cfg, qf_experts=2)
    plain, experts = build(plain_cfg).eval(), build(cfg).eval()
    for p in plain.parameters():
        p.data.normal_(0, 0.1)
    missing, unexpected = experts.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith(("qf_delta.", "qf_mix.")) for k in missing)
    assert config_from_state_dict(experts.state_dict()) == cfg
    x, q = torch.rand(2, 3, 24, 32), torch.tensor([[0.9], [0.3]])
    with torch.inference_mode():
        assert torch.allclose(experts(x, qf_input=q)[0], plain(x, qf_input=q)[0], atol=1e-6)
    for d in experts.qf_delta:
        d.data.normal_(0, 0.1)
    batch, _ = experts(x, qf_input=q)  # grad path: one grouped conv over the two images' weights
    with torch.inference_mode():
        for i in range(2):
            single = experts.restore(x[i:i + 1], q[i:i + 1])
            assert torch.allclose(single, batch[i:i + 1], rtol=1e-4, atol=1e-5)
        assert not torch.allclose(experts.restore(x[:1], q[:1]), plain.restore(x[:1], q[:1]), atol=1e-3)
        # Another QF runs through other weights.
        w9, w3 = (experts._expert_weights(experts.qf_embed(q[i:i + 1])) for i in range(2))
        assert all(not torch.allclose(a, b) for a, b in zip(w9, w3))
        assert all(w is None for w in plain._expert_weights(plain.qf_embed(q[:1])))
        # Under bf16 autocast (the engine's CPU and GPU mode) the mixing stays in fp32.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = experts.restore(x[:1], q[:1])
        assert low.dtype == torch.float32
        assert torch.allclose(low, experts.restore(x[:1], q[:1]), atol=0.1)
    # Only the once-per-call weight mixing is added (0.1% here, at 64 x 64).
    assert flops_per_pixel(cfg, 64) == pytest.approx(flops_per_pixel(plain_cfg, 64), rel=1e-2)


@pytest.mark.parametrize("spec", list(SPECS))
@pytest.mark.parametrize("cfg", ["color", "gray"])
def test_openvino_reproduces_reference_outputs(manifest, spec, cfg, tmp_path):
    """The OpenVINO runtime's conversion of the official-size network, at fp32."""
    ovr = pytest.importorskip("core.openvino_runtime")
    if not ovr.installed():
        pytest.skip("OpenVINO is not installed (pip install openvino)")
    fill, S, sub, rtol = SPECS[spec]
    ref = shared_path("reference", "fbcnn")
    n = manifest["configs"][cfg]["in_nc"]
    model = FBCNN(in_nc=n, out_nc=n).eval()
    model.load_state_dict({k: torch.from_numpy(fill(k, tuple(v.shape), S))
                           for k, v in model.state_dict().items()}, strict=True)
    x = np.load(ref / f"{cfg}_input.npy")
    out = ovr.CompiledNet(model, cache=tmp_path).restore(x, 0.7)
    with torch.inference_mode():
        ours = model.restore(torch.from_numpy(x), torch.tensor([[0.7]])).numpy()
    ref_img = np.load(ref / f"{sub}{cfg}_qfinput0p70_QF30_image.npy")
    assert np.abs(out - ours).max() <= 1e-4 * max(1.0, np.abs(ref_img).max()), (spec, cfg)
    assert np.abs(out - ref_img).max() <= rtol * np.abs(ref_img).max(), (spec, cfg)
