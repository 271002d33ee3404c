"Shared pytest set-up: offline, headless, deterministic."
import contextlib, os
os.environ.setdefault('MPLBACKEND', 'Agg')
os.environ.setdefault('HF_HUB_OFFLINE', '1')  # timm weights cannot be downloaded here: fail fast, never hang
from pathlib import Path
import pytest

pytest_plugins = ['kaggle_server']  # the local Kaggle stand-in's fixtures: standin, kenv, built_wheel, fast_wheel, find_links

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
    "The test body runs on one torch thread."
    with one_thread_ctx(): yield

@pytest.fixture(scope='module')
def one_thread_module():
    "The whole module, its module-scoped fixtures included, runs on one torch thread (`pytestmark = pytest.mark.usefixtures('one_thread_module')`)."
    with one_thread_ctx(): yield

# Synthetic Paddy Doctor folders in Kaggle's layout, by name: `synth_paddy`'s arguments (seed 0). A test module picks one with
# `pytestmark = pytest.mark.paddy('tiny')`; the default is 'small'.
PADDY_SIZES = {'tiny': dict(n_per_class=1, n_test=6, size=(32, 42)),   # one image a disease: predictions and ensembles of untrained members
               'small': dict(n_per_class=3, n_test=4, size=(48, 64)),  # a few training batches
               'full': dict(n_per_class=3, n_test=5, size=(480, 640)),  # Paddy Doctor's own image size
               'e2e': dict(n_per_class=30, n_test=40, size=(64, 85), solution=True),  # enough to learn something, with the answers
               'claims': dict(n_per_class=60, n_test=4, size=(96, 128))}  # the lesson's CPU images, half as many: its claims, small

# Ratings tables by name: `lowrank_ratings`' arguments (known low-rank structure a model must recover), or MovieLens 100k.
# A test module picks one with `pytestmark = pytest.mark.ratings('ml100k')`; the default is 'lowrank'.
RATINGS = {'lowrank': dict(n_users=120, n_items=90, n_factors=3, noise=0.3, density=0.4, seed=1),  # 40% filled, half stars
           'dense': dict(n_users=60, n_items=40, density=0.8, seed=0),
           'ml100k': None}

def pytest_configure(config):
    config.addinivalue_line('markers', f"paddy(size): the size of the `paddy` fixture, one of {list(PADDY_SIZES)}")
    config.addinivalue_line('markers', f"ratings(name): the table the `ratings` fixture gives, one of {list(RATINGS)}")

def _marked(request, name, default):
    m = request.node.get_closest_marker(name)
    return m.args[0] if m else default

_paddy_sets = {}

def _paddy_set(request, tmp_path_factory)->Path:
    "The synthetic Paddy folder of the size the requesting module names (`PADDY_SIZES`), made once a session."
    size = _marked(request, 'paddy', 'small')
    if size not in _paddy_sets:
        from paddy_collab.synth import synth_paddy
        _paddy_sets[size] = synth_paddy(tmp_path_factory.mktemp(f'paddy_{size}')/'paddy', seed=0, **PADDY_SIZES[size])
    return _paddy_sets[size]

@pytest.fixture(scope='module')
def paddy(request, tmp_path_factory):
    "A synthetic Paddy Doctor folder of the module's size (`PADDY_SIZES`), made once a session and shared read-only: use `paddy_copy` to break one."
    return _paddy_set(request, tmp_path_factory)

@pytest.fixture
def paddy_copy(request, tmp_path_factory):
    "A fresh copy of the module's `paddy` folder, for one test to break (a module that breaks every one names it `paddy`: `def paddy(paddy_copy)`)."
    import shutil  # the copy has its own folder: a test that checks what it left in `tmp_path` does not see it
    return Path(shutil.copytree(_paddy_set(request, tmp_path_factory), tmp_path_factory.mktemp('paddy_copy')/'paddy'))

@pytest.fixture(scope='module')
def ratings(request):
    "A ratings table (user, title, rating) by the module's name for it (`RATINGS`); a fresh copy for each module, so changing it is safe."
    name = _marked(request, 'ratings', 'lowrank')
    if name == 'ml100k':
        from paddy_collab.collab_data import load_movielens
        return load_movielens()
    from paddy_collab.collab_data import lowrank_ratings
    return lowrank_ratings(**RATINGS[name])
