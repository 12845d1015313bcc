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


def pytest_addoption(parser):
    # tests/test_methods_contract.py runs on these too (and on APBENCH_METHOD_FILES)
    group = parser.getgroup("method contract")
    group.addoption("--method-file", action="append", default=[], metavar="PATH",
                    help="a method file whose methods the contract tests run on (repeatable)")
    group.addoption("--method-preset", default=None, metavar="PRESET",
                    help="run the contract tests on the method_files of this preset")
