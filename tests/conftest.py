import os

import pytest
import torch

# Two cores: keep intra-op threads predictable and tests reproducible.
torch.set_num_threads(int(os.environ.get("EFFNET_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
