"Tests for `paddy_collab.collab_best`: the u1 loader, side features, the recipe on a low-rank set, and that no choice ever sees held-out ratings."
import numpy as np, pandas as pd, pytest, torch
import torch.nn.functional as F
from paddy_collab.core import ml100k_path
import paddy_collab.collab_best as cb
from paddy_collab.collab_best import load_u1, load_side, side_tensors, lesson_split, CollabData, train_best, search, inner_split

pytestmark = pytest.mark.usefixtures('one_thread')
SMALL = [dict(kind='mf', epochs=10, bs=64, n_factors=10), dict(kind='i-autorec', n_hidden=50, epochs=60)]

@pytest.fixture(scope='module')
def split(ratings):
    "conftest's low-rank `ratings` with a row id (to see which rows each step receives), split as the lesson splits"
    return lesson_split(ratings.assign(rid=np.arange(len(ratings))), seed=42)

def test_u1_loader_reads_the_published_folds():
    path = ml100k_path()
    trn,tst = load_u1()
    assert (len(trn), len(tst)) == (80_000, 20_000)
    raw = pd.read_csv(path/'u1.test', sep='\t', header=None)
    assert (tst[['user','movie','rating']].values == raw[[0,1,2]].values).all()  # same rows, same order
    assert trn.title.notna().all() and tst.title.notna().all()
    a_trn,a_tst = load_u1(fold='a')
    assert (len(a_trn), len(a_tst)) == (90_570, 9_430)  # ua: 10 test ratings per user
    with pytest.raises(FileNotFoundError, match='u9.base'): load_u1(fold=9)

def test_side_features_by_movie_id():
    trn,_ = load_u1()
    d = CollabData(trn, trn.iloc[:5], item_name='movie')
    st = side_tensors(*load_side(), d.classes['user'], d.classes['movie'], item_name='movie')
    assert st['item_multi'].shape == (d.n_items, 19) and st['user_cats'].shape == (d.n_users, 3)
    toy = d.classes['movie'].o2i[1]  # Toy Story: Animation, Children's, Comedy, 1995
    assert (st['item_multi'][toy] > 0).sum() == 3 and st['item_cats'][toy, 0] > 0

def _bias_only(trn, tst, n_iter=20, reg=5.):
    "user + item biases by alternating regularised means: the baseline a factor model must beat"
    mu = trn.rating.mean(); bu = pd.Series(0., index=trn.user.unique()); bi = pd.Series(0., index=trn.title.unique())
    for _ in range(n_iter):
        r = trn.rating - mu - trn.user.map(bu)
        bi = r.groupby(trn.title).sum()/(trn.groupby('title').size()+reg)
        r = trn.rating - mu - trn.title.map(bi)
        bu = r.groupby(trn.user).sum()/(trn.groupby('user').size()+reg)
    p = mu + tst.user.map(bu).fillna(0) + tst.title.map(bi).fillna(0)
    return float(((p.clip(1,5)-tst.rating)**2).mean())

def test_recipe_beats_bias_only_on_lowrank(split):
    trn,tst = split
    r = train_best(trn, tst, components=SMALL, side=False)
    mse = F.mse_loss(r['preds'], torch.tensor(tst.rating.values)).item()
    base = _bias_only(trn, tst)
    assert mse < 0.8*base, (mse, base)
    assert r['times']['cpu'] > 0 and r['weights'].shape == (3*len(SMALL)+2+1,)

def test_held_out_ratings_are_never_read(split):
    trn,tst = split
    r1 = train_best(trn, tst, components=SMALL[:1], side=False)
    r2 = train_best(trn, tst.assign(rating=1e6), components=SMALL[:1], side=False)  # absurd held-out ratings
    r3 = train_best(trn, tst.drop(columns='rating'), components=SMALL[:1], side=False)
    assert torch.equal(r1['preds'], r2['preds']) and torch.equal(r1['preds'], r3['preds'])

def test_inner_split_and_search_use_training_rows_only(split, monkeypatch):
    trn,tst = split
    fit,chk = inner_split(len(trn), 0.1, 0)
    assert len(set(fit.tolist()) & set(chk.tolist())) == 0 and len(fit)+len(chk) == len(trn)
    seen = []
    orig = CollabData.__init__
    def spy(self, trn_df, tst_df=None, *args, **kwargs):
        seen.append((set(trn_df.rid), set(tst_df.rid) if tst_df is not None else set()))
        orig(self, trn_df, tst_df, *args, **kwargs)
    monkeypatch.setattr(CollabData, '__init__', spy)
    tab,(sfit,schk) = search(trn, {'mf': SMALL[:1]}, side=False)
    held, train_ids = set(tst.rid), set(trn.rid)
    assert len(seen) == 1  # a one-model recipe: trained on the search's fit rows, scored on its check rows (no blend to fit)
    for a,b in seen: assert a <= train_ids and b <= train_ids and not (a & held) and not (b & held)
    assert seen[0][1] == set(trn.reset_index(drop=True).rid.iloc[schk.numpy()])  # search scores on its own check rows
    assert tab.recipe.tolist() == ['mf'] and tab.mse[0] > 0

def test_u_autorec_member(split):
    "U-AutoRec (one input row per user), the fifth member of `BEST`: it learns the low-rank set, and fills unknown users with the mean"
    trn,tst = split
    d = CollabData(trn, tst)
    p = cb.fit_predict(d, 'u-autorec', n_hidden=50, epochs=60)
    mean_mse = float(((d.yv - d.yt.mean())**2).mean())
    assert p.shape == (len(tst),) and d.mse(p) < 0.8*mean_mse, (d.mse(p), mean_mse)
    unk = CollabData(trn, tst.assign(user=10**6))  # users the model never saw
    torch.testing.assert_close(cb.fit_predict(unk, 'u-autorec', n_hidden=10, epochs=5), torch.full((len(tst),), float(d.yt.mean())))
