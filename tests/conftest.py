"""Shared test set-up."""
import pytest
from accelerate.state import AcceleratorState


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """accelerate keeps one process-wide state whose mixed precision cannot change once set; tests
    that train in bf16 and in fp32 in the same process each start from a fresh one."""
    yield
    AcceleratorState._reset_state(True)
