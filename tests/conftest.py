"Shared pytest set-up: offline, headless, deterministic."
import os
os.environ.setdefault('MPLBACKEND', 'Agg')
os.environ.setdefault('HF_HUB_OFFLINE', '1')  # timm weights cannot be downloaded here: fail fast, never hang
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='session')
def root(): return ROOT

@pytest.fixture(scope='session', autouse=True)
def ml100k_installed():
    "Copy the local MovieLens 100k into fastai's data folder once, as `make test` does."
    from paddy_collab.core import install_ml100k
    install_ml100k(verbose=False)
