import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    # the suite's models are tiny and CI has 2 shared cores: intra-op threads only add contention
    # (25x slower for the AutoAttack tests here)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
