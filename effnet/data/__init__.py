"""Data: robust image decoding, datasets and transforms (torchvision.transforms.v2)."""
