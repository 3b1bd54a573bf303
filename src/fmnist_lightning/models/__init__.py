"""Backbones: plain ``nn.Module``s with no training logic, no Lightning and no data, one file each.

``models.registry`` holds the registry (``register_model``, ``create_model``); nothing is imported
here, so importing a sibling package never pulls in torch.
"""
