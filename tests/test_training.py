"""The training scripts: degradations, a resumable run, batch workers, the QF-head stage."""
import json
import math
import random
from dataclasses import replace

import numpy as np
import pytest
import torch

from core import weights
from core.network import Config, build, config_from_state_dict
from core.weights import COMPACT_CONFIG
from tests.conftest import shared_path
from training import data, deepen, degrade, qf_head, ship, train


def test_double_jpeg_is_shifted_and_labelled_with_the_lower_qf():
    rng = random.Random(3)
    clean = np.random.default_rng(0).integers(0, 256, (72, 72, 3), dtype=np.uint8)
    for _ in range(20):
        lq, gt, qf = degrade.double(clean, rng, 64)
        assert lq.shape == gt.shape == (64, 64, 3)
        assert 5 <= qf <= 95
        # The target is the shifted crop of the clean image, never the (0, 0) one.
        assert any(np.array_equal(gt, clean[dy:dy + 64, dx:dx + 64])
                   for dy in range(8) for dx in range(8) if (dy, dx) != (0, 0))


def test_batch_workers_make_batches_of_the_requested_shape():
    images = [np.random.default_rng(i).integers(0, 256, (80, 90, 3), dtype=np.uint8) for i in range(3)]
    loader = torch.utils.data.DataLoader(train.Batches(images, "t", 4, data.Sampling(32, 0.5)), batch_size=None, num_workers=1)
    lq, gt, qf = next(iter(loader))
    assert lq.shape == gt.shape == (4, 3, 32, 32) and qf.shape == (4, 1)
    assert float(qf.min()) >= 0.05 and float(qf.max()) <= 0.95


def test_skip_gray_leaves_out_only_images_without_colour(tmp_path):
    from PIL import Image
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (40, 40), dtype=np.uint8)).save(tmp_path / "gray.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "colour.png")
    # A colour file whose channels happen to be equal is gray too.
    Image.fromarray(np.repeat(rng.integers(0, 256, (40, 40, 1), dtype=np.uint8), 3, axis=2)).save(tmp_path / "rgb-gray.png")
    assert len(data.load_images(tmp_path, 32)) == 3
    kept = data.load_images(tmp_path, 32, skip_gray=True)
    assert len(kept) == 1 and not data.is_gray(kept[0])


def test_min_scale_zooms_crops_out_and_off_leaves_them_unscaled():
    ramp = np.broadcast_to(np.arange(200, dtype=np.uint8)[None, :, None], (200, 200, 3)).copy()

    def slopes(min_scale, seed=4):
        rng = random.Random(seed)
        out = []
        for _ in range(30):
            gt = data.sample([ramp], rng, data.Sampling(32, 0.0, min_scale))[1].astype(float)
            out.append(max(np.abs(np.diff(gt, axis=0)).mean(), np.abs(np.diff(gt, axis=1)).mean()))
        return np.array(out)

    # Off, every crop is the image's own pixels, not resampled.
    assert np.allclose(slopes(1.0), 1.0)
    zoomed = slopes(0.5)
    # A crop zoomed out by s has a ramp 1/s as steep: between 1 and 2 here, and spread.
    assert zoomed.min() > 0.95 and zoomed.max() < 2.1 and zoomed.max() > 1.6 and np.median(zoomed) > 1.2


def test_permute_channels_shows_every_order_of_rgb_and_off_keeps_it():
    flat = np.broadcast_to(np.array([10, 120, 240], dtype=np.uint8), (60, 60, 3)).copy()

    def orders(permute):
        rng = random.Random(5)
        return {tuple(data.sample([flat], rng, data.Sampling(32, 0.3, permute_channels=permute))[1][0, 0])
                for _ in range(60)}

    assert orders(False) == {(10, 120, 240)}
    assert len(orders(True)) == 6 and all(sorted(o) == [10, 120, 240] for o in orders(True))


def test_qf_grid_sets_where_three_quarters_of_the_qfs_fall():
    rng = random.Random(2)
    qfs = [degrade.draw_qf(rng, (10, 20)) for _ in range(2000)]
    on_grid = sum(q in (10, 20) for q in qfs) / len(qfs)
    assert 0.72 < on_grid < 0.82 and all(5 <= q <= 95 for q in qfs)
    gt_qf = [data.sample([np.zeros((60, 60, 3), np.uint8)], rng, data.Sampling(32, 0.0, qf_grid=(15,)))[2]
             for _ in range(200)]
    assert 0.6 < gt_qf.count(15) / len(gt_qf) < 0.9


@pytest.mark.parametrize("grid", ["10,x", "0,20", "10,101"])
def test_a_bad_qf_grid_is_a_usage_error(tmp_path, grid):
    with pytest.raises(SystemExit) as e:
        train.main(["--qf-grid", grid, "--out", str(tmp_path / "run")])
    assert e.value.code == 2


@pytest.mark.parametrize("folder", ["missing", "empty", "jpegs"])
def test_an_extra_folder_without_lossless_images_is_a_usage_error(tmp_path, folder):
    from PIL import Image
    (tmp_path / "empty").mkdir()
    (tmp_path / "jpegs").mkdir()
    im = Image.fromarray(np.zeros((40, 40, 3), dtype=np.uint8))
    im.save(tmp_path / "jpegs" / "a.png")
    im.save(tmp_path / "jpegs" / "b.jpg")
    with pytest.raises(SystemExit) as e:
        train.main(["--extra", str(tmp_path / folder), "--out", str(tmp_path / "run")])
    assert e.value.code == 2


def test_min_scale_outside_zero_to_one_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as e:
        train.main(["--min-scale", "1.5", "--out", str(tmp_path / "run")])
    assert e.value.code == 2


@pytest.fixture(scope="module")
def datasets():
    shared_path("datasets/train")  # skips loudly without ../shared


def test_a_run_resumes_and_writes_loadable_weights(tmp_path, datasets):
    out = tmp_path / "run"
    args = ["--patch", "32", "--batch", "2", "--threads", "1", "--val-every", "2", "--out", str(out)]
    train.main(["--iters", "2", *args])
    train.main(["--iters", "3", "--workers", "1", *args])
    log = (out / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["iter"] for line in log] == [2, 3]
    sd = torch.load(out / "compact_best.pth", weights_only=True)
    assert config_from_state_dict(sd) == COMPACT_CONFIG
    assert all(v.is_contiguous() for v in sd.values())


def test_qf_head_stage_changes_only_the_predicted_qf(tmp_path, datasets):
    torch.manual_seed(0)
    start = build(COMPACT_CONFIG)
    src, dst = tmp_path / "in.pth", tmp_path / "out.pth"
    torch.save(start.state_dict(), src)
    qf_head.main([str(src), str(dst), "--iters", "3", "--batch", "2", "--patch", "32", "--lr", "1e-2",
                  "--val-every", "3"])
    after = torch.load(dst, weights_only=True)
    before = start.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("qf_pred.") for k in changed)
    tuned = build(COMPACT_CONFIG).eval()
    tuned.load_state_dict(after)
    x, q = torch.rand(1, 3, 64, 64), torch.tensor([[0.7]])
    with torch.no_grad():
        assert torch.equal(start.eval()(x, qf_input=q)[0], tuned(x, qf_input=q)[0])


SMALL = Config(in_nc=3, out_nc=3, nc=(8, 8, 16, 16), nb=1, qf_nc=8, residual=True)


def _outputs(model, x, q):
    with torch.no_grad():
        return model.eval()(x)[0], model(x, qf_input=q)[0], model.predict_qf(x)


def test_deepen_adds_a_block_per_stage_and_keeps_the_trained_function():
    torch.manual_seed(0)
    src = build(SMALL)
    # With beta = tanh(0) = 0 every new block is exactly the identity, so any
    # misplaced tensor would show in the output.
    for k in (1, 2, 3):
        torch.nn.init.zeros_(getattr(src, f"to_beta_{k}")[0].weight)
        torch.nn.init.zeros_(getattr(src, f"to_beta_{k}")[0].bias)
    sd = deepen.deepen(src.state_dict())
    deeper = build(config_from_state_dict(sd))
    assert deeper.config.nb == 2
    deeper.load_state_dict(sd, strict=True)
    x, q = torch.rand(1, 3, 40, 48), torch.tensor([[0.6]])
    for a, b in zip(_outputs(src, x, q), _outputs(deeper, x, q)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_deepen_chosen_stages_of_a_model_with_qf_experts_keeps_its_function():
    torch.manual_seed(0)
    src = build(replace(SMALL, qf_experts=2))
    for k in (1, 2, 3):
        torch.nn.init.zeros_(getattr(src, f"to_beta_{k}")[0].weight)
        torch.nn.init.zeros_(getattr(src, f"to_beta_{k}")[0].bias)
    for d in src.qf_delta:  # trained experts: non-zero deltas that must land on their convs
        torch.nn.init.normal_(d, std=0.05)
    sd = deepen.deepen(src.state_dict(), {"scale3": 2, "body": 1})
    deeper = build(config_from_state_dict(sd))
    assert deeper.config.nb == (1, 1, 3, 2, 1) and deeper.config.qf_experts == 2
    deeper.load_state_dict(sd, strict=True)
    x, q = torch.rand(1, 3, 40, 48), torch.tensor([[0.6]])
    for a, b in zip(_outputs(src, x, q), _outputs(deeper, x, q)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # A new conv's deltas start at zero but learn: its mixing rows are not zero (the first
    # conv of a new block gets gradients once the zero second conv has moved).
    loss = deeper.train()(x, qf_input=q)[0].square().mean()
    loss.backward()
    new = [i for i, c in enumerate(deeper._expert_convs()) if c is deeper.m_up3[3].res[2]]
    assert deeper.qf_delta[new[0]].grad.abs().sum() > 0


def test_ship_writes_half_precision_that_loads_as_the_same_model(tmp_path):
    torch.manual_seed(0)
    src = build(SMALL)
    torch.save(src.state_dict(), tmp_path / "in.pth")
    ship.main([str(tmp_path / "in.pth"), str(tmp_path / "out.pth")])
    sd = torch.load(tmp_path / "out.pth", weights_only=True)
    assert all(v.dtype == torch.float16 for v in sd.values())
    loaded = weights.load_model(tmp_path / "out.pth")
    assert loaded.config == SMALL and next(loaded.parameters()).dtype == torch.float32
    x, q = torch.rand(1, 3, 32, 32), torch.tensor([[0.6]])
    for a, b in zip(_outputs(src, x, q), _outputs(loaded, x, q)):
        torch.testing.assert_close(a, b, rtol=1e-2, atol=2e-3)


def test_calibrate_finds_a_best_offset_per_qf_on_training_crops(monkeypatch, datasets):
    from training import calibrate
    if weights.status("compact") != "bundled":
        pytest.skip("no bundled compact model")
    monkeypatch.setattr(calibrate, "QFS", (10, 60))
    monkeypatch.setattr(calibrate, "OFFSETS", (0, 4, 40))
    samples = calibrate.crops(2, 64)
    assert [s.shape for s in samples] == [(64, 64, 3)] * 2
    rows = calibrate.best_offsets(str(weights.model_path("compact")), samples)
    assert [r[0] for r in rows] == [10, 60]
    # Telling the decoder QF 50 or 100 for a QF-10 or QF-60 image is never the best.
    assert all(off in (0, 4) and gain >= 0 for _, off, gain in rows)


def test_shipped_qf_offsets_are_small_and_on_increasing_knots():
    knots = [q for q, _ in weights.COMPACT_QF_OFFSETS]
    assert knots == sorted(set(knots))
    assert all(0 <= off <= 10 for _, off in weights.COMPACT_QF_OFFSETS)


def test_init_gives_a_model_without_experts_zero_experts(tmp_path, datasets):
    torch.manual_seed(0)
    start = build(SMALL)
    src, out = tmp_path / "in.pth", tmp_path / "run"
    torch.save(start.state_dict(), src)
    train.main(["--init", str(src), "--experts", "2", "--iters", "1", "--lr", "0", "--patch", "32", "--batch", "2",
                "--threads", "1", "--val-every", "1", "--ema", "0", "--loss-power", "0.5", "--out", str(out)])
    sd = torch.load(out / "compact_latest.pth", weights_only=True)
    assert config_from_state_dict(sd).qf_experts == 2
    assert all(not sd[k].any() for k in sd if k.startswith("qf_delta."))
    assert all(torch.equal(sd[k], v) for k, v in start.state_dict().items())


def test_loss_power_weights_samples_by_their_jpeg_error():
    gt = torch.zeros(2, 3, 8, 8)
    lq = torch.stack([torch.full((3, 8, 8), 0.04), torch.full((3, 8, 8), 0.16)])
    y = torch.stack([torch.full((3, 8, 8), 0.02), torch.full((3, 8, 8), 0.02)])
    assert train.image_loss(y, gt, lq) == pytest.approx(0.02)
    # Weights 1/sqrt(0.04) and 1/sqrt(0.16) = 5 and 2.5, normalised to mean 1.
    w = torch.tensor([5.0, 2.5]) / 3.75
    assert train.image_loss(y, gt, lq, 0.5) == pytest.approx(float((w * 0.02).mean()))
    y2 = torch.stack([torch.full((3, 8, 8), 0.0), torch.full((3, 8, 8), 0.04)])
    # The same total L1 costs more on the lightly compressed sample.
    assert train.image_loss(y2[[1, 0]], gt, lq, 0.5) > train.image_loss(y2, gt, lq, 0.5)


def test_psnr_loss_falls_exactly_as_the_mean_psnr_rises():
    gt = torch.zeros(2, 3, 8, 8)

    def mean_psnr(y):
        return float((-10 * torch.log10(y.square().mean(dim=(1, 2, 3)))).mean())

    a = torch.stack([torch.full((3, 8, 8), 0.01), torch.full((3, 8, 8), 0.10)])
    # Halving the error of the already good sample gains as much PSNR as halving the bad one's.
    b, c = a * torch.tensor([0.5, 1.0])[:, None, None, None], a * torch.tensor([1.0, 0.5])[:, None, None, None]
    assert mean_psnr(b) == pytest.approx(mean_psnr(c))
    assert float(train.psnr_loss(b, gt, eps=0)) == pytest.approx(float(train.psnr_loss(c, gt, eps=0)))
    # And the loss is an affine function of the mean PSNR, falling as it rises.
    slope = (float(train.psnr_loss(b, gt, eps=0)) - float(train.psnr_loss(a, gt, eps=0))) / (mean_psnr(b) - mean_psnr(a))
    assert slope == pytest.approx(-train.PSNR_LOSS_SCALE * math.log(10) / 10)


def test_psnr_loss_refuses_an_l1_weighting_it_would_ignore():
    with pytest.raises(SystemExit) as e:
        train.main(["--loss", "psnr", "--loss-power", "1.0", "--iters", "0"])
    assert e.value.code == 2


def test_experiments_stand_apart_from_the_product_and_the_tests():
    """bench/ measures the product; training/ may use bench/'s measures, never the other
    way, and neither reaches into tests/ (issue #19)."""
    import ast
    import pathlib
    root = pathlib.Path(__file__).resolve().parent.parent
    for folder, banned in (("bench", ("training", "tests")), ("training", ("tests",)), ("core", ("bench", "training", "tests"))):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                bad = [n for n in names if n.split(".")[0] in banned]
                assert not bad, f"{path.relative_to(root)} imports {bad}"
