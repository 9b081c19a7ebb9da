import pytest
import torch

import viny  # noqa: F401  (registers the timm models)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
