"CLI paths no other test runs: stock loaders, every collab model, the small Paddy ensemble, --accum auto on a CPU; run as a user runs them."
import json, os, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'MPLBACKEND': 'Agg', 'HF_HUB_OFFLINE': '1', 'PYTHONUNBUFFERED': '1', 'PYTHONWARNINGS': 'ignore', 'OMP_NUM_THREADS': '1'}

def ok(*args, timeout=600):
    "Run `python -m paddy_collab.cli ARGS`; return stdout after checking it succeeded"
    r = subprocess.run([sys.executable, '-m', 'paddy_collab.cli', *map(str, args)], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=timeout)
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout[-3000:]}\nstderr:\n{r.stderr[-3000:]}"
    return r.stdout

pytestmark = pytest.mark.ratings('dense')

@pytest.fixture(scope='module')
def ratings(ratings, tmp_path_factory):
    "conftest's dense low-rank ratings (noise variance 0.09) as a CSV, and their variance: predicting their mean gives an MSE of about it"
    df = ratings
    f = tmp_path_factory.mktemp('ratings')/'r.csv'
    df.to_csv(f, index=False)
    return f, float(df.rating.var())

@pytest.fixture(scope='module')
def stars(ratings, tmp_path_factory):
    "The same model's ratings rounded to whole stars 1 to 5, as the 5-class `ce` model needs"
    import pandas as pd
    df = pd.read_csv(ratings[0])
    df['rating'] = df.rating.clip(1, 5).round()
    f = tmp_path_factory.mktemp('stars')/'r.csv'
    df.to_csv(f, index=False)
    return f, float(df.rating.var())

def train_collab(ratings, out, *extra):
    f, var = ratings
    so = ok('train-collab', '--ratings', f, '--epochs', 4, '--lr', 0.05, '--bs', 32, '--out', out, '--quiet', *extra)
    return float(so.split('valid MSE ')[1].split()[0]), var, so

def test_no_fast(ratings, tmp_path):
    "`--no-fast`: fastai's own CollabDataLoaders, the same split and model: it learns as the fast loader does"
    mse, var, so = train_collab(ratings, tmp_path/'stock', '--no-fast')
    fmse, _, _ = train_collab(ratings, tmp_path/'fast')
    print(f'--no-fast {mse:.4f}, --fast {fmse:.4f}, variance {var:.4f}')
    assert '(stock DataLoaders)' in so and json.loads((tmp_path/'stock'/'paddy_collab.json').read_text())['fast'] is False
    assert mse < 0.6*var and fmse < 0.6*var  # predicting the mean gives `var`; an untrained model more
    assert abs(mse - fmse) < 0.25*var        # two samplings of the same split, same model: about the same result

@pytest.mark.parametrize('model', ['dot', 'fastai', 'nn', 'fastai_nn', 'ce'])
def test_models(ratings, stars, tmp_path, model):
    "Every `--model` trains, saves and reports a valid MSE below what the mean predicts (`ce`, five classes, on whole stars)"
    mse, var, so = train_collab(stars if model == 'ce' else ratings, tmp_path/model, '--model', model)
    print(f'{model}: valid MSE {mse:.4f} (variance {var:.4f})')
    m = json.loads((tmp_path/model/'paddy_collab.json').read_text())
    assert m['model'] == model and (tmp_path/model/'model.pkl').exists()
    assert mse < 0.9*var

def test_ce_needs_whole_stars(ratings, tmp_path):
    "`--model ce` on half stars is a user error, said in one line, not a traceback from inside the loss"
    r = subprocess.run([sys.executable, '-m', 'paddy_collab.cli', 'train-collab', '--ratings', str(ratings[0]), '--model', 'ce', '--out', str(tmp_path/'ce')],
                       capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and 'whole stars 1 to 5' in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]
    assert not (tmp_path/'ce').exists()

def test_ensemble_small(paddy, tmp_path):
    "`--ensemble small`: resnet18 and convnext_atto, one member folder each (random weights: no download here)"
    so = ok('train-paddy', '--data', paddy, '--ensemble', 'small', '--size', 32, '--epochs', 1, '--no-pretrained', '--no-finetune',
            '--n-tta', 0, '--bs', 8, '--out', tmp_path/'ens', '--quiet')
    members = sorted(p.name for p in (tmp_path/'ens').iterdir())
    assert len(members) == 2 and members[0].startswith('convnext_atto') and members[1].startswith('resnet18'), members
    for m in members: assert (tmp_path/'ens'/m/'preds.npz').exists() and (tmp_path/'ens'/m/'model.pkl').exists()
    assert 'training 2 model(s)' in so

def test_accum_auto_on_cpu(paddy, tmp_path):
    "`--accum auto` without a GPU: `auto_accum` answers 1 (no GPU memory to fit), so the run is `--accum 1`'s"
    from paddy_collab.train import auto_accum
    assert auto_accum('test_resnet', 32) == 1
    so = ok('train-paddy', '--data', paddy, '--arch', 'test_resnet', '--size', 32, '--epochs', 1, '--no-pretrained', '--no-finetune',
            '--n-tta', 0, '--bs', 8, '--accum', 'auto', '--out', tmp_path/'auto', '--quiet')
    assert 'accum auto' in so
    (member,) = (tmp_path/'auto').iterdir()
    assert json.loads((member/'paddy_collab.json').read_text())['args']['accum'] == 'auto'
