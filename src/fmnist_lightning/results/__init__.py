"""What a run shows: metrics on a split, figures, the per-run report, TensorBoard images, the sweep summary."""
