"""Recipe knobs from the speedrun literature: optimizer settings by kind of parameter, multi-view TTA.

Each composes with the real config and runs through a real Trainer; the numerics are checked against
an independent computation.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from fmnist_lightning.models.registry import count_parameters, create_model, list_models
from fmnist_lightning.train import train
from fmnist_lightning.training.builders import build
from fmnist_lightning.training.classifier import ImageClassifier
from fmnist_lightning.training.param_groups import NORM_LAYERS, param_groups


@pytest.mark.parametrize("name", list_models())
def test_every_parameter_of_every_backbone_is_in_exactly_one_group(make_cfg, name: str) -> None:
    # Each from its own config option (conf/model/<name>.yaml): an ensemble's member comes from there.
    net = instantiate(make_cfg(f"model={name}").model)
    groups = param_groups(net, norm_bias_weight_decay=0.0, norm_bias_lr_scale=4.0)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in net.parameters() if p.requires_grad)
    assert len(grouped) == len(set(grouped))
    by_name = {g["name"]: g for g in groups}
    norm_biases = {id(m.bias) for m in net.modules() if isinstance(m, NORM_LAYERS) and m.bias is not None}
    assert {id(p) for p in by_name.get("norm_biases", {"params": []})["params"]} == norm_biases
    for group in groups:
        if group["name"] == "weights":
            assert "weight_decay" not in group and group["lr_scale"] == 1.0
            assert all(p.dim() > 1 for p in group["params"])  # conv and linear weights only
        else:
            assert group["weight_decay"] == 0.0
    if norm_biases:
        assert by_name["norm_biases"]["lr_scale"] == 4.0


def _logged(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_param_groups_reach_the_optimizer_and_keep_their_ratio_under_onecycle(make_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = make_cfg(
        "model=compact",
        "optim=sgd",
        "optim.lr=0.05",
        "optim.weight_decay=5e-4",
        "sched=onecycle",
        "debug=limit_batches",
        "logger=csv",
        "trainer.log_every_n_steps=1",
        "module.param_groups.norm_bias_weight_decay=0.0",
        "module.param_groups.norm_bias_lr_scale=4.0",
        output_dir=run_dir,
    )
    train(cfg)
    rows = [r for r in _logged(run_dir) if r.get("lr/weights")]
    assert len(rows) == 20  # every step of 2 epochs x 10 batches
    for row in rows:
        assert float(row["lr/norm_biases"]) == pytest.approx(4 * float(row["lr/weights"]), rel=1e-6)
        assert float(row["lr/norm_scales_and_biases"]) == pytest.approx(float(row["lr/weights"]), rel=1e-6)
    assert max(float(r["lr/weights"]) for r in rows) == pytest.approx(0.05, rel=1e-3)


def test_default_knobs_keep_one_group_and_the_lr_tag(make_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    train(
        make_cfg(
            "model=linear",
            "sched=onecycle",
            "debug=limit_batches",
            "trainer.max_epochs=1",
            "logger=csv",
            "trainer.log_every_n_steps=1",
            output_dir=run_dir,
        )
    )
    assert "lr" in _logged(run_dir)[0] and not any(k.startswith("lr/") for k in _logged(run_dir)[0])


def _shift_by_index(x: torch.Tensor, d: int) -> torch.Tensor:
    """Diagonal translation by ``d`` pixels, edge pixels repeated: out[i, j] = x[clamp(i - d), clamp(j - d)]."""
    h, w = x.shape[-2:]
    rows = (torch.arange(h) - d).clamp(0, h - 1)
    cols = (torch.arange(w) - d).clamp(0, w - 1)
    return x[..., rows, :][..., cols]


@pytest.mark.parametrize("shift", [0, 1, 2])
def test_multi_view_tta_is_the_average_of_the_views_by_hand(shift: int) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    module = ImageClassifier(net, optimizer=torch.optim.SGD, tta=True, tta_shift=shift).eval()
    x = torch.randn(5, 1, 28, 28)
    views = [x, x.flip(-1)]
    if shift:
        views += [_shift_by_index(v, d) for v in (x, x.flip(-1)) for d in (-shift, shift)]
    expected = sum(net(v).softmax(-1) for v in views) / len(views)
    with torch.no_grad():
        assert torch.allclose(module.predict_proba(x), expected, atol=1e-6)


def test_multi_view_tta_runs_in_the_final_test(make_cfg, tmp_path: Path) -> None:
    from fmnist_lightning.training.checkpoint_files import restore_run

    metrics = train(
        make_cfg(
            "model=linear",
            "debug=limit_batches",
            "trainer.max_epochs=1",
            "module.tta=true",
            "module.tta_shift=1",
            output_dir=tmp_path / "run",
        )
    )
    assert metrics["test_tta"] and 0.0 <= metrics["test/acc"] <= 1.0
    # The run's module, as evaluate and predict restore it, tests the same six views (the views: the test above).
    module = restore_run(metrics["best_model_path"]).module
    assert module.tta and module.tta_shift == 1


def test_whitening_filters_decorrelate_the_training_patches(data_root: Path) -> None:
    from fmnist_lightning.data.datamodule import normalize
    from fmnist_lightning.data.idx_files import load_split
    from fmnist_lightning.training.callbacks.data_init import image_patches, whitening_filters

    images = normalize(load_split(data_root, "train")[0][:1200], 0.2860, 0.3530)  # more than one chunk of 500
    filters = whitening_filters(images, (3, 3), eps=1e-8)
    assert filters.shape == (18, 1, 3, 3)
    assert torch.equal(filters[9:], -filters[:9])
    # The positive filters applied to every patch: outputs with the identity as their second moment.
    out = image_patches(images, (3, 3)) @ filters[:9].reshape(9, -1).double().T
    moment = out.T @ out / out.shape[0]
    assert torch.allclose(moment, torch.eye(9, dtype=moment.dtype), atol=1e-4)


def test_dirac_makes_later_convolutions_identities_on_their_first_filters() -> None:
    from fmnist_lightning.training.callbacks.data_init import convolutions, dirac_later_convs

    net = create_model("compact")
    assert dirac_later_convs(net) > 0
    for conv in convolutions(net)[1:]:
        if conv.groups == 1 and conv.kernel_size[0] % 2:
            x = torch.randn(2, conv.in_channels, 9, 9)
            n = min(conv.in_channels, conv.out_channels)
            y = nn.functional.conv2d(x, conv.weight[:n], padding=conv.kernel_size[0] // 2)
            assert torch.allclose(y, x[:, :n], atol=1e-6)


def _is_identity_on_its_first_filters(conv: nn.Conv2d) -> bool:
    x = torch.randn(2, conv.in_channels, 9, 9)
    n = min(conv.in_channels, conv.out_channels)
    y = nn.functional.conv2d(x, conv.weight[:n].detach().float(), padding=conv.kernel_size[0] // 2)
    return torch.allclose(y, x[:, :n], atol=1e-4)


@pytest.mark.parametrize("init", ["whiten", "dirac", "whiten_dirac"])
def test_each_init_composes_trains_and_leaves_its_filters_in_the_checkpoint(
    make_cfg, tmp_path: Path, init: str
) -> None:
    from fmnist_lightning.training.callbacks.data_init import convolutions
    from fmnist_lightning.training.checkpoint_files import restore_run

    # A vanishing lr and no schedule: the checkpoint holds the weights as the initialisation left them.
    metrics = train(
        make_cfg(
            "model=compact",
            f"init={init}",
            "optim.lr=1e-12",
            "sched=none",
            "debug=limit_batches",
            "trainer.max_epochs=1",
            output_dir=tmp_path / "run",
        )
    )
    convs = convolutions(restore_run(metrics["best_model_path"]).module.net)
    stem = convs[0].weight.detach().float()
    # Whitening: 9 filters of the 3x3 patches and their negatives; dirac: later convolutions pass their input on.
    assert torch.allclose(stem[:9], -stem[9:18]) is ("whiten" in init)
    later = [conv for conv in convs[1:] if conv.groups == 1 and conv.kernel_size[0] % 2]
    assert later and all(_is_identity_on_its_first_filters(conv) for conv in later) is ("dirac" in init)


def test_muon_and_the_rest_hold_every_parameter_once(make_cfg, tmp_path: Path) -> None:
    from fmnist_lightning.training.optimizers import MuonFilters

    net = create_model("compact")
    optimizer = MuonFilters(
        param_groups(net, norm_bias_weight_decay=0.0),
        rest=lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
    )
    muon_params = [p for g in optimizer.filters.param_groups for p in g["params"]]
    rest_params = [p for g in optimizer.rest.param_groups for p in g["params"]]
    assert all(p.dim() == 4 for p in muon_params) and all(p.dim() != 4 for p in rest_params)
    every = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(every) == sorted(id(p) for p in net.parameters()) and len(every) == len(set(every))
    # The per-group settings travel with each part.
    assert all(g.get("weight_decay") == 0.0 for g in optimizer.rest.param_groups if g["name"] != "weights")


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_filter_muon_is_torchs_muon_on_the_filter_matrix(memory_format: torch.memory_format) -> None:
    from fmnist_lightning.training.optimizers import FilterMuon

    torch.manual_seed(0)
    weight = nn.Parameter(torch.randn(8, 4, 3, 3).contiguous(memory_format=memory_format))
    # The reference: torch's own Muon on the same filters as a matrix, rows = filters, columns in memory order.
    as_matrix = (
        (lambda t: t.permute(0, 2, 3, 1).reshape(8, -1))
        if memory_format == torch.channels_last
        else (lambda t: t.reshape(8, -1))
    )
    reference = nn.Parameter(as_matrix(weight.detach()).clone())
    ours, theirs = (
        FilterMuon([weight], lr=0.02, weight_decay=0.01),
        torch.optim.Muon([reference], lr=0.02, weight_decay=0.01),
    )
    for _ in range(3):
        grad = torch.randn(8, 4, 3, 3).contiguous(memory_format=memory_format)
        weight.grad, reference.grad = grad, as_matrix(grad).clone()
        ours.step(), theirs.step()
    assert torch.allclose(as_matrix(weight.detach()), reference.detach(), atol=1e-6)


def test_optim_muon_trains_under_onecycle_and_resumes(make_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = make_cfg(
        "model=compact",
        "optim=muon",
        "sched=onecycle",
        "debug=limit_batches",
        "logger=csv",
        "trainer.log_every_n_steps=1",
        output_dir=run_dir,
    )
    metrics = train(cfg)
    assert metrics["test/acc"] >= 0.0
    rows = [r for r in _logged(run_dir) if r.get("lr/pg1")]
    # Muon's filters (pg1) and SGD's rest (pg2) follow one cycle at their own ratio, 0.02 : 0.05.
    assert rows and all(float(r["lr/pg2"]) == pytest.approx(2.5 * float(r["lr/pg1"]), rel=1e-6) for r in rows)
    # The optimizer's state travels in the checkpoint and loads back.
    resumed = train(
        make_cfg(
            "model=compact",
            "optim=muon",
            "sched=onecycle",
            "debug=limit_batches",
            "trainer.max_epochs=3",
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
            output_dir=tmp_path / "resumed",
        )
    )
    assert resumed["epochs"] == 3


def test_alternating_flip_mirrors_each_image_in_exactly_one_of_two_epochs(data_root: Path) -> None:
    from fmnist_lightning.data.idx_files import load_split
    from fmnist_lightning.data.transforms import AlternatingFlip

    x = load_split(data_root, "train")[0][:400].float().div(255)
    op = AlternatingFlip()
    seen = []
    for epoch in range(4):
        op.epoch = epoch
        out = op(x)
        flipped = (out != x).flatten(1).any(1) & (out == x.flip(-1)).flatten(1).all(1)
        assert torch.equal(flipped | (out == x).flatten(1).all(1), torch.ones(len(x), dtype=torch.bool))
        seen.append(flipped)
    assert torch.equal(seen[0], ~seen[1]) and torch.equal(seen[0], seen[2]) and torch.equal(seen[1], seen[3])
    assert 0.4 < seen[0].float().mean() < 0.6  # about half each epoch
    # The same images in another order are the same halves: the choice is the image's, not its place.
    order = torch.randperm(len(x))
    op.epoch = 0
    assert torch.equal((op(x[order]) != x[order]).flatten(1).any(1), seen[0][order])


def test_alternating_flip_trains_and_counts_as_a_flip_for_tta(
    make_cfg, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = train(
        make_cfg(
            "model=linear", "aug=shift_alt_flip", "module.tta=true", "debug=limit_batches", output_dir=tmp_path / "run"
        )
    )
    # The mirror-image test runs, unwarned: the training images were flipped (test_config has the warning).
    assert metrics["test_tta"] and 0.0 <= metrics["test/acc"] <= 1.0
    assert "never flips images horizontally" not in caplog.text


def test_bn_momentum_reaches_every_batchnorm_and_is_refused_without_one(make_cfg, tmp_path: Path) -> None:
    from fmnist_lightning.errors import ConfigError

    net = create_model("compact", bn_momentum=0.4)
    norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.4 for m in norms)
    with pytest.raises(ConfigError, match="no BatchNorm layer"):
        create_model("linear", bn_momentum=0.4)
    cfg = make_cfg(
        "model=compact", "model.bn_momentum=0.6", "ema=default", "debug=fast_dev_run", output_dir=tmp_path / "run"
    )
    # From the command line to the network a run builds (the builder train() uses), then a run of it.
    norms = [m for m in build(cfg.model, "model").modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.momentum == 0.6 for m in norms)
    assert 0.0 <= train(cfg)["test/acc"] <= 1.0


def test_optim_lookahead_trains_under_onecycle(make_cfg, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    metrics = train(
        make_cfg(
            "model=compact",
            "optim=lookahead",
            "sched=onecycle",
            "debug=limit_batches",
            "logger=csv",
            "trainer.log_every_n_steps=1",
            output_dir=run_dir,
        )
    )
    assert metrics["test/acc"] >= 0.0
    rates = [float(r["lr"]) for r in _logged(run_dir) if r.get("lr")]
    assert max(rates) == pytest.approx(0.1, rel=1e-3)  # the cycle reaches the base optimizer's rate


def test_lookahead_pulls_the_weights_back_every_k_steps() -> None:
    from fmnist_lightning.training.optimizers import lookahead

    weight = nn.Parameter(torch.zeros(3))
    optimizer = lookahead([weight], base=torch.optim.SGD, lr=1.0, k=2, alpha=0.5)
    for _ in range(2):
        weight.grad = -torch.ones(3)  # each fast step moves +1
        optimizer.step()
    # After k=2 fast steps (at 2.0), the weights sit halfway between the slow copy (0) and the fast ones.
    assert torch.allclose(weight.detach(), torch.full((3,), 1.0))


def test_muon_groups_stay_the_parts_own_after_a_state_load() -> None:
    from fmnist_lightning.training.optimizers import MuonFilters

    def make() -> MuonFilters:
        torch.manual_seed(0)
        return MuonFilters(
            param_groups(create_model("compact"), norm_bias_weight_decay=0.0),
            rest=lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
        )

    saved = make().state_dict()
    optimizer = make()
    optimizer.load_state_dict(saved)
    parts_groups = [g for part in optimizer.parts for g in part.param_groups]
    assert all(a is b for a, b in zip(optimizer.param_groups, parts_groups, strict=True)) and len(parts_groups) == len(
        optimizer.param_groups
    )
    # A scheduler writes the rate through the combined optimizer's groups: the parts must see it.
    optimizer.param_groups[0]["lr"] = 0.123
    assert optimizer.parts[0].param_groups[0]["lr"] == 0.123
    names = [g["name"] for g in optimizer.param_groups]
    assert len(names) == len(set(names))


def test_muon_with_param_groups_trains(make_cfg, tmp_path: Path) -> None:
    metrics = train(
        make_cfg(
            "model=compact",
            "optim=muon",
            "sched=onecycle",
            "debug=limit_batches",
            "module.param_groups.norm_bias_weight_decay=0.0",
            output_dir=tmp_path / "run",
        )
    )
    assert 0.0 <= metrics["test/acc"] <= 1.0
    # The run's optimizer, as its checkpoint keeps it: the norm scales' and biases' groups without weight decay,
    # in the part for the rest (Muon takes only the filters), beside a decayed group of the other weights.
    (state,) = torch.load(metrics["best_model_path"], weights_only=True)["optimizer_states"]
    groups = [group for part in state["parts"] for group in part["param_groups"]]
    decay = {group["name"]: group["weight_decay"] for group in groups if group.get("name") and group["params"]}
    assert decay["norm_scales_and_biases"] == 0.0 and decay["weights"] > 0.0, decay


def test_pool_first_is_the_same_function_with_the_pool_moved(make_cfg, tmp_path: Path) -> None:
    torch.manual_seed(0)
    default, pooled_first = create_model("compact"), create_model("compact", pool_first=True)
    for norm in (m for m in default.modules() if isinstance(m, nn.BatchNorm2d)):
        nn.init.uniform_(norm.weight, 0.5, 2.0)  # positive scales: max-pool commutes with BN and ReLU
        nn.init.normal_(norm.running_mean)
    # Module order, and so the order of tensors, is shared; only the indices in the names moved.
    pooled_first.load_state_dict(dict(zip(pooled_first.state_dict(), default.state_dict().values(), strict=True)))
    x = torch.randn(8, 1, 28, 28)
    torch.testing.assert_close(pooled_first.eval()(x), default.eval()(x), rtol=1e-4, atol=1e-5)
    pools = [i for i, m in enumerate(pooled_first.features) if isinstance(m, nn.MaxPool2d)]
    assert all(isinstance(pooled_first.features[i - 1], nn.Conv2d) for i in pools)
    cfg = make_cfg("model=compact", "model.pool_first=true", "debug=fast_dev_run", output_dir=tmp_path / "run")
    built = build(cfg.model, "model")
    assert all(
        isinstance(built.features[i - 1], nn.Conv2d)
        for i, m in enumerate(built.features)
        if isinstance(m, nn.MaxPool2d)
    )
    assert 0.0 <= train(cfg)["test/acc"] <= 1.0


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_ceil_mode_keeps_the_row_the_7x7_pool_drops(ceil_mode: bool, make_cfg, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = create_model("compact", widths=[32, 64, 128, 256], pool_first=True, ceil_mode=ceil_mode).eval()
    last_pool = max(i for i, m in enumerate(net.features) if isinstance(m, nn.MaxPool2d))
    seven = net.features[:last_pool](torch.randn(2, 1, 28, 28)).detach().requires_grad_()
    assert seven.shape[-2:] == (7, 7)
    out = net.classifier(net.features[last_pool:](seven))
    out.sum().backward()
    assert seven.grad is not None
    # Without ceil_mode the 2x2 windows cover rows and columns 0-5 only: the 7th never reaches the output.
    edge = seven.grad[..., 6, :].abs().sum() + seven.grad[..., :, 6].abs().sum()
    assert (edge.item() > 0) == ceil_mode
    assert net.features(torch.zeros(1, 1, 28, 28)).shape[-2:] == ((4, 4) if ceil_mode else (3, 3))
    if ceil_mode:
        cfg = make_cfg("model=compact_deep", "model.ceil_mode=true", "debug=fast_dev_run", output_dir=tmp_path / "run")
        pools = [m for m in build(cfg.model, "model").modules() if isinstance(m, nn.MaxPool2d)]
        assert pools and all(m.ceil_mode for m in pools)
        assert 0.0 <= train(cfg)["test/acc"] <= 1.0


def test_stem_stride_replaces_the_first_pool_and_trains_whitened(make_cfg, tmp_path: Path) -> None:
    from fmnist_lightning.errors import ConfigError
    from fmnist_lightning.training.callbacks.data_init import whiten_first_conv

    torch.manual_seed(0)
    pooled = create_model("compact", widths=[32, 40, 64], pool_first=True)
    strided = create_model("compact", widths=[32, 40, 64], pool_first=True, stem_stride=2)
    assert count_parameters(strided) == count_parameters(pooled)
    # The stem writes 14x14 maps and only the second stage pools; the rest of the network sees the same shapes.
    assert strided.features[0].stride == (2, 2)
    assert strided.features[0](torch.zeros(1, 1, 28, 28)).shape[-2:] == (14, 14)
    assert sum(isinstance(m, nn.MaxPool2d) for m in strided.features) == 1
    assert strided.features(torch.zeros(1, 1, 28, 28)).shape == pooled.features(torch.zeros(1, 1, 28, 28)).shape

    with pytest.raises(ConfigError, match="stem_stride must be 1 or 2"):
        create_model("compact", stem_stride=3)
    with pytest.raises(ConfigError, match="at least one stage"):
        create_model("compact", widths=[32], stem_stride=2)
    # Whitening is the same for a strided stem: 9 filters of the 3x3 patches and their negatives.
    assert whiten_first_conv(strided, torch.randn(64, 1, 28, 28)) == 18
    stem = strided.features[0].weight.detach()
    assert torch.allclose(stem[:9], -stem[9:18])
    # speedrun's network is the strided one; its whitened run trains, validates and tests a batch.
    cfg = make_cfg("experiment=speedrun", "debug=fast_dev_run", output_dir=tmp_path / "run")
    assert build(cfg.model, "model").features[0].stride == (2, 2)
    assert 0.0 <= train(cfg)["test/acc"] <= 1.0


@pytest.mark.parametrize("shape", [(8, 36), (36, 8)])
def test_our_newton_schulz_in_bfloat16_is_torchs_own(shape: tuple[int, int]) -> None:
    # optim.ns_dtype=float32 runs this copy of torch's orthogonalisation: in torch's bf16 it must match it exactly.
    from torch.optim import _muon

    from fmnist_lightning.training.optimizers import newton_schulz

    torch.manual_seed(0)
    grad = torch.randn(*shape)
    theirs = _muon._zeropower_via_newtonschulz(grad, (3.4445, -4.7750, 2.0315), 5, 1e-7)
    assert torch.equal(newton_schulz(grad, (3.4445, -4.7750, 2.0315), 5, 1e-7, torch.bfloat16), theirs)


def test_muon_orthogonalises_in_float32_when_asked_and_torch_is_left_as_it_was() -> None:
    from torch.optim import _muon

    from fmnist_lightning.training.optimizers import FilterMuon

    original = _muon._zeropower_via_newtonschulz
    torch.manual_seed(0)
    start, grads = torch.randn(8, 4, 3, 3), [torch.randn(8, 4, 3, 3) for _ in range(3)]
    weights = {}
    for dtype in ("bfloat16", "float32"):
        weight = nn.Parameter(start.clone())
        optimizer = FilterMuon([weight], lr=0.02, ns_dtype=dtype)
        for grad in grads:
            weight.grad = grad.clone()
            optimizer.step()
        weights[dtype] = weight.detach()
    assert _muon._zeropower_via_newtonschulz is original
    # The same update up to bf16's rounding, but not the same numbers: the float32 path ran.
    assert torch.allclose(weights["float32"], weights["bfloat16"], atol=0.02)
    assert not torch.equal(weights["float32"], weights["bfloat16"])


def test_ns_dtype_auto_follows_the_device() -> None:
    from fmnist_lightning.training.optimizers import ns_dtype_for

    cpu = torch.device("cpu")
    assert ns_dtype_for("auto", cpu, frozenset({"avx2", "amx_bf16"})) == torch.bfloat16
    assert ns_dtype_for("auto", cpu, frozenset({"avx2", "fma"})) == torch.float32
    assert ns_dtype_for("auto", torch.device("cuda")) == torch.bfloat16
    assert ns_dtype_for("float32", torch.device("cuda")) == torch.float32


def test_an_unknown_ns_dtype_is_refused() -> None:
    from fmnist_lightning.errors import ConfigError
    from fmnist_lightning.training.optimizers import FilterMuon

    with pytest.raises(ConfigError, match="ns_dtype"):
        FilterMuon([nn.Parameter(torch.randn(4, 2, 3, 3))], ns_dtype="float16")
