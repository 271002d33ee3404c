"Shared pytest set-up: offline, headless, deterministic."
import contextlib, os
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

@contextlib.contextmanager
def one_thread_ctx():
    "One torch thread, restored afterwards: small ops run faster on one thread than on two fighting over a busy 2-core CPU, and each launched process has one (torchrun sets OMP_NUM_THREADS=1)."
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try: yield
    finally: torch.set_num_threads(n)

@pytest.fixture
def one_thread():
    "The test body runs on one torch thread (use `one_thread_ctx` directly for a module-scoped or partial block)."
    with one_thread_ctx(): yield

@pytest.fixture(scope='session')
def small_paddy(tmp_path_factory):
    "A small synthetic Paddy Doctor folder in Kaggle's layout (3 images a disease, 4 test images, 48x64), shared read-only by the session: copy it before breaking it."
    from paddy_collab.synth import synth_paddy
    return synth_paddy(tmp_path_factory.mktemp('small')/'paddy', n_per_class=3, n_test=4, size=(48, 64), seed=0)

@pytest.fixture(scope='session')
def lowrank():
    "A small low-rank ratings table (120 users, 90 titles, rank 3, 40% filled, half stars): structure a model must recover."
    from paddy_collab.collab_data import lowrank_ratings
    return lowrank_ratings(120, 90, n_factors=3, noise=0.3, density=0.4, seed=1)
