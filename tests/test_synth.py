"The synthetic Paddy set: Kaggle's layout, the real competition's frequencies, variety depending on disease, one set per seed, checked arguments."
import numpy as np, pandas as pd, pytest
from PIL import Image
from paddy_collab.synth import synth_paddy, cached_synth, diseases, varieties, disease_counts, variety_counts
import paddy_collab.synth as ps

@pytest.fixture(scope='module')
def paddy(tmp_path_factory): return synth_paddy(tmp_path_factory.mktemp('s')/'paddy', n_per_class=40, n_test=6, size=(24, 32), seed=0, solution=True)

def test_layout(paddy):
    assert sorted(p.name for p in (paddy/'train_images').iterdir()) == sorted(diseases)
    df = pd.read_csv(paddy/'train.csv')
    assert list(df.columns) == ['image_id', 'label', 'variety', 'age'] and len(df) == 400 and df.image_id.is_unique
    assert sorted((p.parent.name, p.name) for p in (paddy/'train_images').glob('*/*.jpg')) == sorted(zip(df.label, df.image_id))
    assert set(df.variety) <= set(varieties) and df.age.between(45, 82).all()
    sub = pd.read_csv(paddy/'sample_submission.csv')
    assert list(sub.columns) == ['image_id', 'label'] and sorted(sub.image_id) == sorted(p.name for p in (paddy/'test_images').glob('*.jpg'))
    sol = pd.read_csv(paddy/'solution.csv')
    assert sol.image_id.tolist() == sub.image_id.tolist() and set(sol.label) <= set(diseases) and set(sol.variety) <= set(varieties)
    for fn in list((paddy/'train_images').glob('*/*.jpg'))[:20]:
        with Image.open(fn) as im: assert im.format == 'JPEG' and im.size == (24, 32) and im.mode == 'RGB'

def test_real_frequencies(paddy):
    df = pd.read_csv(paddy/'train.csv')
    real = pd.Series(disease_counts)/sum(disease_counts.values())
    n = df.label.value_counts()
    assert (abs(n/len(df) - real[n.index]) <= 1/len(df) + 0.01).all(), n  # exact up to rounding and the one image each class gets
    assert n.idxmax() == 'normal' and n.idxmin() == 'bacterial_panicle_blight'
    assert sum(disease_counts.values()) == sum(variety_counts.values()) == 10407
    v = df.variety.value_counts(normalize=True)
    assert v.index[0] == 'ADT45' and 0.55 < v['ADT45'] < 0.8  # 67% in the real data (drawn at random here)

def test_full_size_counts():
    "At the real set's size (10,407 images) the per-disease counts are the competition's."
    assert ps._counts(10407, [disease_counts[d] for d in diseases]).tolist() == [disease_counts[d] for d in diseases]

def test_variety_depends_on_disease():
    p = ps._pjoint
    assert np.allclose(p.sum(1), np.array([disease_counts[d] for d in diseases])/10407)
    assert np.allclose(p.sum(0), np.array([variety_counts[v] for v in varieties])/10407)
    indep = np.outer(p.sum(1), p.sum(0))
    assert np.abs(p - indep).sum() > 0.1  # far from the product of the marginals

def test_deterministic_per_seed(paddy, tmp_path):
    kw = dict(n_per_class=40, n_test=6, size=(24, 32), solution=True)
    same, other = synth_paddy(tmp_path/'a', seed=0, **kw), synth_paddy(tmp_path/'b', seed=1, **kw)
    files = sorted(p.relative_to(paddy) for p in paddy.rglob('*') if p.is_file())
    assert files == sorted(p.relative_to(same) for p in same.rglob('*') if p.is_file())
    for f in files: assert (paddy/f).read_bytes() == (same/f).read_bytes(), f
    assert (paddy/'train.csv').read_text() != (other/'train.csv').read_text()

@pytest.mark.parametrize('kw,msg', [(dict(n_per_class=0), 'n_per_class'), (dict(n_test=-1), 'n_test'), (dict(size=96), 'size must be (width, height)'),
                                    (dict(size=(8, 8)), '>= 16'), (dict(size=(96.5, 128)), 'two integers'), (dict(quality=5), 'quality')])
def test_bad_args(tmp_path, kw, msg):
    with pytest.raises(ValueError, match=msg.replace('(', r'\(').replace(')', r'\)')): synth_paddy(tmp_path/'x', **kw)
    assert not (tmp_path/'x'/'train.csv').exists()

def test_existing_folder(tmp_path):
    synth_paddy(tmp_path/'y', n_per_class=1, n_test=1, size=(32, 40))
    with pytest.raises(FileExistsError, match='already holds'): synth_paddy(tmp_path/'y', n_per_class=1)

def test_cache_key_changes_with_generator(tmp_path, monkeypatch):
    "`cached_synth`'s folder name depends on the generator's code, so a set written by an older `synth.py` is not reused."
    import paddy_collab.core as core
    monkeypatch.setattr(ps, 'fastai_data_path', lambda: tmp_path)
    a = cached_synth(n_per_class=1, n_test=1, size=(16, 16))
    assert a.parent == tmp_path and a.name.startswith('paddy-synth-v2-')
    assert cached_synth(n_per_class=1, n_test=1, size=(16, 16)) == a
