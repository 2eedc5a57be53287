"""pytest set-up: offline hub, no wandb, tests/ on sys.path for the oracle module."""

from __future__ import annotations

import os
import sys

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture
def gen() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
