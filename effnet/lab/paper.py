"""Numbers printed in the EfficientNet paper (arXiv:1905.11946 v5), kept as data for comparisons.

"FLOPs" in the paper are multiply-accumulates (MACs); B0's 0.39B equals a conv + linear MAC count.
"""

from __future__ import annotations

# Table 2: model -> (params in millions, MACs in billions, top-1 %).
TABLE2 = {
    "efficientnet_b0": (5.3, 0.39, 77.1),
    "efficientnet_b1": (7.8, 0.70, 79.1),
    "efficientnet_b2": (9.2, 1.0, 80.1),
    "efficientnet_b3": (12.0, 1.8, 81.6),
    "efficientnet_b4": (19.0, 4.2, 82.9),
    "efficientnet_b5": (30.0, 9.9, 83.6),
    "efficientnet_b6": (43.0, 19.0, 84.0),
    "efficientnet_b7": (66.0, 37.0, 84.3),
}

# Table 3: (base, depth, width, resolution) -> (MACs in billions, top-1 %). Only rows with
# stated coefficients; the paper gives no (d, w, r) for the MobileNetV2 and ResNet-50 compound rows.
TABLE3 = {
    ("mobilenetv1", 1.0, 1.0, 1.0): (0.6, 70.6),
    ("mobilenetv1", 1.0, 2.0, 1.0): (2.2, 74.2),
    ("mobilenetv1", 1.0, 1.0, 2.0): (2.2, 72.7),
    ("mobilenetv1", 1.4, 1.2, 1.3): (2.3, 75.6),
    ("mobilenetv2", 1.0, 1.0, 1.0): (0.3, 72.0),
    ("mobilenetv2", 4.0, 1.0, 1.0): (1.2, 76.8),
    ("mobilenetv2", 1.0, 2.0, 1.0): (1.1, 76.4),
    ("mobilenetv2", 1.0, 1.0, 2.0): (1.2, 74.8),
    ("resnet50", 1.0, 1.0, 1.0): (4.1, 76.0),
    ("resnet50", 4.0, 1.0, 1.0): (16.2, 78.1),
    ("resnet50", 1.0, 2.0, 1.0): (14.7, 77.7),
    ("resnet50", 1.0, 1.0, 2.0): (16.4, 77.5),
}

# Table 7: scaling B0 by one dimension vs compound (the models of Figure 7): MACs (B), top-1 %.
TABLE7 = {
    (1.0, 1.0, 1.0): (0.4, 77.3),
    (4.0, 1.0, 1.0): (1.8, 79.0),
    (1.0, 2.0, 1.0): (1.8, 78.9),
    (1.0, 1.0, 2.0): (1.9, 79.1),
    (1.4, 1.2, 1.3): (1.8, 81.1),
}
