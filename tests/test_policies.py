"""Batched auto-augment policies: every op equals torchvision's, image by image, and draws follow the policy."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torchvision.transforms import v2

from fmnist_lightning.data.idx_files import load_split
from fmnist_lightning.data.policies import BatchedPolicy

POLICIES = {"randaugment": v2.RandAugment, "trivialaugment": v2.TrivialAugmentWide, "autoaugment": v2.AutoAugment}


@pytest.fixture(scope="module")
def images(data_root) -> torch.Tensor:
    x, _ = load_split(data_root, "test")
    return x[:40].float().div(255).reshape(-1, 1, 28, 28)


def _ops(policy: v2.Transform) -> list[str]:
    return [name for name in BatchedPolicy(policy).names if name != "Identity"]


@pytest.mark.parametrize("name", sorted({op for p in POLICIES.values() for op in _ops(p())}))
def test_every_op_matches_torchvision_per_image(name: str, images: torch.Tensor) -> None:
    policy = v2.AutoAugment() if name == "Invert" else v2.TrivialAugmentWide()
    batched = BatchedPolicy(policy)
    table = batched._magnitudes(policy.num_magnitude_bins if hasattr(policy, "num_magnitude_bins") else 10, 28, 28)
    row = table[batched.names.index(name)]
    # Every image gets its own magnitude (both signs, for signed ops): the batch mixes all of them at once.
    values = torch.cat([row, -row]) if batched.signed[batched.names.index(name)] else row
    magnitude = values[torch.arange(len(images)) % len(values)]
    op = torch.full((len(images),), batched.names.index(name))
    out = batched.apply_step(images, op, magnitude)
    for i in range(len(images)):
        expected = policy._apply_image_or_video_transform(
            images[i], name, float(magnitude[i]), interpolation=policy.interpolation, fill=policy._fill
        )
        # Nearest-neighbour sampling at a pixel edge may round either way: allow a stray pixel, not a different op.
        mismatched = (out[i] - expected).abs() > 1e-5
        assert mismatched.sum() <= 1, (
            f"{name} magnitude {float(magnitude[i]):.3f}: {int(mismatched.sum())} pixels differ"
        )


@pytest.mark.parametrize("key", sorted(POLICIES))
def test_draws_match_torchvision_op_frequencies(key: str) -> None:
    """Op frequencies of our batched sampling vs a recording of the policy's own forward, one image at a time."""
    policy = POLICIES[key]()
    recorded: list[str] = []
    recorder = POLICIES[key]()
    recorder._apply_image_or_video_transform = lambda img, op, *a, **k: recorded.append(op) or img
    torch.manual_seed(0)
    probe = torch.zeros(1, 28, 28, dtype=torch.uint8)
    n = 3000
    for _ in range(n):
        recorder(probe)
    draws = BatchedPolicy(policy).draw(n, 28, 28)
    ours = Counter(op for d in draws for op, _ in d if op != "Identity")
    theirs = Counter(op for op in recorded if op != "Identity")
    assert set(ours) == set(theirs)
    for op, count in theirs.items():
        assert abs(ours[op] - count) < 5 * count**0.5 + 10, f"{op}: {ours[op]} draws vs torchvision's {count}"


def test_signed_magnitudes_take_both_signs_per_image() -> None:
    op, magnitude = BatchedPolicy(v2.RandAugment(num_ops=2, magnitude=9)).sample(4000, 28, 28)
    rotated = magnitude[op == BatchedPolicy(v2.RandAugment()).names.index("Rotate")]
    assert set(rotated.abs().round().tolist()) == {9.0}  # bin 9 of 31 over 0..30 degrees
    assert 0.4 < (rotated > 0).float().mean() < 0.6


def test_batched_policy_refuses_other_transforms() -> None:
    from fmnist_lightning.errors import ConfigError

    with pytest.raises(ConfigError, match="RandAugment"):
        BatchedPolicy(v2.RandomHorizontalFlip())
