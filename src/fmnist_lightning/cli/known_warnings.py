"""Warnings known to be harmless in this project, filtered by every entry point and by the test suite alike.

Each is matched by its message (and category), so any other warning still reaches the user.
"""

from __future__ import annotations

import warnings

# (message regex, category, why it is harmless here)
KNOWN_HARMLESS: tuple[tuple[str, type[Warning], str], ...] = (
    (r"The '.*_dataloader' does not have many workers", UserWarning,
     "Lightning suggests workers for every loader; the in-memory loaders only slow down with them on 2 cores"),
    (r".*isinstance\(treespec, LeafSpec\)` is deprecated", Warning,
     "Lightning 2.6 against torch 2.14's pytree API; fixed upstream"),
    (r"The number of training batches .* is smaller than the logging interval", UserWarning,
     "tiny runs (limits, debug presets) log once per epoch anyway"),
    (r"Checkpoint directory .* exists and is not empty", UserWarning,
     "only a resumed run checkpoints into a directory that has files: a new run never shares one"),
    (r"Precision bf16-mixed is not supported by the model summary", UserWarning,
     "only the summary's size-in-MB estimate assumes float32; the weights are float32 under autocast anyway"),
)


def filter_known_warnings() -> None:
    """Silence exactly the known-harmless warnings for this process."""
    for message, category, _ in KNOWN_HARMLESS:
        warnings.filterwarnings("ignore", message=message, category=category)


def as_pytest_filters() -> list[str]:
    """The same filters in pytest's ``filterwarnings`` syntax."""
    return [f"ignore:{message}:{category.__name__}" for message, category, _ in KNOWN_HARMLESS]
