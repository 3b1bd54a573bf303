"""Fashion-MNIST as tensors in memory: the IDX files, splits, loaders, the datamodule, augmentation, image files.

Nothing is imported here: ``data.image_files`` and ``data.fashion_mnist`` serve commands that run
without torch (``fmnist-predict model=<file.onnx>``).
"""
