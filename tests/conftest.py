import os

import pytest
import torch

# Two cores: keep intra-op threads predictable and tests reproducible.
torch.set_num_threads(int(os.environ.get("EFFNET_TEST_THREADS", "2")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _threads_kept():
    """No test, and so no effnet API call it makes, leaves torch's thread count changed: a count
    leaked by an in-process train(threads=1) once made a later INT8 export round differently
    (19 instead of 20 of 22 photos agreeing) in CI's slow suite, and nothing said why."""
    before = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    if after != before:
        torch.set_num_threads(before)
        pytest.fail(f"the test left torch's thread count at {after} (it was {before})")
