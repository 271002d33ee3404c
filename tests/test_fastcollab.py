"End-to-end checks of `paddy_collab.fastcollab` against stock fastai: split, vocab, loss, training, bad input."
import random, warnings
import numpy as np, pandas as pd, pytest, torch
from fastai.basics import set_seed, RandomSplitter, range_of, Learner, MSELossFlat, load_learner, Adam
from fastai.callback.training import GradientAccumulation
from fastai.collab import CollabDataLoaders, collab_learner, EmbeddingDotBias
from paddy_collab.collab_data import load_movielens, lowrank_ratings
from paddy_collab.fastcollab import (TensorCollabDataLoaders, fast_collab_dls, fast_collab_learner, LeanLearner, collab_split,
                                     adamw_fused, lazy_adamw, fast_embeddings, FastEmbedding)

pytestmark = [pytest.mark.usefixtures('one_thread'), pytest.mark.ratings('ml100k')]  # one thread: small ops on a shared 2-core machine
IDS = dict(item_name='item', item_fmt=None)  # int32 user and item ids

def same_split(df, torch_seed=None, **kw):
    "Assert stock and fast `DataLoaders` agree on vocab, rows (in order), indices and ratings"
    if torch_seed is not None: torch.manual_seed(torch_seed)
    dls = CollabDataLoaders.from_df(df, **kw)
    if torch_seed is not None: torch.manual_seed(torch_seed)
    fdls = TensorCollabDataLoaders.from_df(df, **kw)
    for n in dls.classes: assert list(fdls.classes[n].items)==list(dls.classes[n].items), n
    assert list(fdls.classes)==list(dls.classes)
    for s,f in [(dls.train_ds,fdls.train_ds),(dls.valid_ds,fdls.valid_ds)]:
        np.testing.assert_array_equal(f.x.numpy(), s.cats.values)
        np.testing.assert_array_equal(f.y[:,0].numpy(), s.targ.values[:,0].astype(np.float32))
    assert len(fdls.train)==len(dls.train) and fdls.n_inp==dls.n_inp==1
    return dls,fdls

@pytest.mark.parametrize('item', ['movie','title'])
def test_same_split_ml100k(ratings, item):
    dls,fdls = same_split(ratings, item_name=item, rating_name='rating', seed=42)
    assert fdls.classes[item][0]=='#na#'
    # users/items seen only in the valid set map to '#na#' exactly when stock's do (fastai 2.8.7 builds the vocab on training rows)
    assert bool((fdls.valid_ds.x==0).any()) == bool((dls.valid_ds.cats.values==0).any())

def test_same_split_unseeded_and_odd_columns():
    rng = np.random.default_rng(0)
    n = 3000
    df = pd.DataFrame({'u': rng.choice([f'user{i}' for i in range(80)], n),                # strings
                       'i': pd.Categorical(rng.choice(list('abcdefghijklmnopqrstuvwxyz'), n)),  # categorical: vocab from all rows
                       'r': rng.integers(1, 6, n).astype(np.int64), 'extra': 1})
    same_split(df, valid_pct=0.3, torch_seed=7)   # seed=None: both draw from torch's global generator
    same_split(df.assign(u=rng.integers(0, 50, n).astype(float)), seed=1)    # float ids
    same_split(df[['extra','u','i','r']], user_name='u', item_name='i', rating_name='r', seed=3)  # named columns

def test_split_matches_random_splitter():
    for n,pct,seed in [(10,0.2,0),(1001,0.1,5),(5,0.5,None)]:
        if seed is None: torch.manual_seed(1)
        a = RandomSplitter(pct, seed)(range_of(n))
        if seed is None: torch.manual_seed(1)
        b = collab_split(n, pct, seed)
        assert list(a[0])==b[0].tolist() and list(a[1])==b[1].tolist()

def test_same_loss_same_weights(ratings):
    dls,fdls = same_split(ratings, item_name='title', rating_name='rating', seed=42, bs=512)  # bs: fewer slow stock batches
    set_seed(0)
    learn = collab_learner(dls, n_factors=50, y_range=(0,5.5))
    with learn.no_bar(): p,t,loss = learn.get_preds(with_loss=True)
    for f in (collab_learner, fast_collab_learner):
        flearn = f(fdls, n_factors=50, y_range=(0,5.5))
        flearn.model.load_state_dict(learn.model.state_dict())
        with flearn.no_bar(): fp,ft = flearn.get_preds(); fval = flearn.validate()[0]
        assert abs(fval-loss.mean().item()) < 1e-5
        torch.testing.assert_close(fp, p); torch.testing.assert_close(ft.float(), t.float())
    # one training step on the same batch gives the same loss and the same new weights
    xb,yb = dls.valid.one_batch()
    for l in (learn, flearn):
        l.create_opt(); l.opt.set_hyper('lr', 1e-2)
        l.model.train(); loss = l.loss_func(l.model(xb), yb); loss.backward(); l.opt.step(); l.opt.zero_grad()
    torch.testing.assert_close(flearn.model.u_weight.weight, learn.model.u_weight.weight)

def test_learner_features(tmp_path):
    df = lowrank_ratings(120, 80, 6000, n_factors=3, noise=0.3, seed=3, **IDS)
    dls = fast_collab_dls(df, bs=128, seed=0)
    assert dls.show_batch(show=False, max_n=4).shape==(4,3)
    learn = fast_collab_learner(dls, n_factors=8, y_range=(0,5.5), path=tmp_path)
    with learn.no_bar():
        r = learn.lr_find(num_it=20, show_plot=False)
        learn.fit_one_cycle(1, 1e-2)
    assert r.valley>0 and len(learn.recorder.losses)==len(dls.train)
    learn.recorder.plot_loss(); learn.recorder.plot_sched()
    # get_preds follows the valid order; with a shuffled loader, reorder=True restores it
    p,_ = learn.get_preds()
    p2,_ = learn.get_preds(dl=dls.valid.new(shuffle=True))
    torch.testing.assert_close(p2, p)
    # test_dl: unknown users/items map to '#na#' (index 0), as in stock
    tdf = pd.DataFrame({'user':[df.user[0], 10**6], 'item':[df.item[0], df.item[1]]})
    tdl = dls.test_dl(tdf)
    assert tdl.dataset.x[1,0].item()==0 and tdl.dataset.x[0,0].item()>0
    tp,targ = learn.get_preds(dl=tdl)
    assert tp.shape==(2,) and targ is None
    test_y = dls.test_dl(df.head(5), with_labels=True)
    assert test_y.dataset.y.shape==(5,1)
    # export / load_learner round trip (everything the pickle refers to lives in the package)
    learn.export('m.pkl')
    l2 = load_learner(tmp_path/'m.pkl')
    torch.testing.assert_close(l2.get_preds(dl=l2.dls.test_dl(tdf))[0], tp)

def test_plain_learner_and_custom_model():
    df = lowrank_ratings(60, 40, 3000, n_factors=2, noise=0.5, seed=4, **IDS)
    dls = fast_collab_dls(df, bs=64, seed=1)
    m = EmbeddingDotBias(5, len(dls.classes['user']), len(dls.classes['item']), y_range=(0,5.5))
    learn = Learner(dls, m, loss_func=MSELossFlat(), cbs=[GradientAccumulation(128)])
    with learn.no_bar(): learn.fit(1, 1e-2)
    assert len(learn.recorder.values)==1

def test_lean_learner_same_as_learner():
    df = lowrank_ratings(100, 60, 5000, n_factors=3, noise=0.5, seed=5, **IDS)
    res = []
    for f in (collab_learner, fast_collab_learner):
        dls = fast_collab_dls(df, bs=100, seed=0)
        dls.train.rng = random.Random(0)
        set_seed(0)
        learn = f(dls, n_factors=6, y_range=(0,5.5))
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(2, 1e-2, wd=0.1)
        res.append((learn.recorder.values, learn.recorder.losses[-1].item()))
    assert type(learn) is LeanLearner
    np.testing.assert_allclose(res[0][0], res[1][0], rtol=1e-6); assert abs(res[0][1]-res[1][1])<1e-6

@pytest.mark.parametrize('variant', ['adam_lean_dtypes', 'fused_fast_emb', 'sparse_lazy'])
def test_learns_synthetic_low_rank(variant):
    "Short runs reach near the noise floor (0.3**2=0.09) from a rating variance near 1"
    df = lowrank_ratings(300, 200, 40_000, n_factors=4, noise=0.3, half_stars=False, clip=None, seed=2, **IDS)
    kw = dict(idx_dtype=torch.int32, y_dtype=torch.bfloat16) if variant=='adam_lean_dtypes' else {}
    dls = TensorCollabDataLoaders.from_df(df, bs=512, seed=0, **kw)
    set_seed(0)
    opt = {'fused_fast_emb':adamw_fused, 'sparse_lazy':lazy_adamw}.get(variant, Adam)
    learn = fast_collab_learner(dls, n_factors=8, y_range=(0,6), opt_func=opt)
    if variant!='adam_lean_dtypes': fast_embeddings(learn.model, sparse=variant=='sparse_lazy')
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(6, 3e-2, wd=0.01 if variant!='sparse_lazy' else 0.)
    mse = learn.recorder.values[-1][1]
    assert df.rating.var() > 0.8
    assert mse < 0.15, f'{variant}: valid MSE {mse:.3f}'
    if variant=='sparse_lazy': assert isinstance(learn.model.u_weight, FastEmbedding) and learn.model.u_weight.sparse

def test_from_dfs_fixed_split():
    "u1.base/u1.test style: vocab from the train table, unknown valid users/items map to '#na#'"
    tr = pd.DataFrame({'u':[1,2,3,1], 'i':['a','b','a','c'], 'r':[1.,2.,3.,4.]})
    va = pd.DataFrame({'u':[3,9], 'i':['c','a'], 'r':[5.,1.]})
    dls = TensorCollabDataLoaders.from_dfs(tr, va, bs=2)
    assert list(dls.classes['u'].items)==['#na#',1,2,3] and list(dls.classes['i'].items)==['#na#','a','b','c']
    assert dls.valid_ds.x.tolist()==[[3,3],[0,1]] and dls.valid_ds.y[:,0].tolist()==[5.,1.]
