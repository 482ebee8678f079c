"""bf16 autocast on CPU: each model family's forward/backward gives finite, non-zero gradients."""

import pytest
import torch
import torch.nn.functional as F

import effnet

# One representative per block family: MBConv+SE (V1), MBConv without SE + ReLU6 (Lite),
# Fused-MBConv stages (V2), and V2's larger layout.
# bf16 convolutions are slow on CPUs without bf16 units, hence 32 px and V2-S marked slow.
FAMILIES = [
    "efficientnet_b0",
    "efficientnet_lite0",
    "efficientnetv2_b0",
    pytest.param("efficientnetv2_s", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_bf16_autocast_gradients_are_finite(name, scale, figures):
    model = effnet.create_model(name, num_classes=10, drop_path_rate=0.2).train()
    x = torch.randn(2, 3, 32, 32) * scale  # scale 30: far outside normalised input, stresses SE/BN
    y = torch.arange(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=0.1)
    assert logits.dtype == torch.bfloat16  # autocast really ran in bf16
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients in {bad[:3]}"
    assert sum(float(g.abs().sum()) for g in grads) > 0
    figures("bad_input", f"bf16 autocast {name} x{scale}")
