"""Quality benchmark (issue 6, point 3): the best recipe the package trains on MovieLens 100k, on two protocols.

  lesson: the random 80/20 split of `CollabDataLoaders.from_df(ratings, item_name='title', valid_pct=0.2, seed=42)`;
          figure: validation MSE (target <= 0.78; fastbook 0.823)
  u1:     train on u1.base, test on u1.test (movies by id); figure: test RMSE
          (target <= 0.889; GC-MC 0.910, IGMC 0.905, GLocal-K 0.889)

Every choice (components, sizes, epochs, blend weights) is made on splits of the training ratings only; the
held-out ratings are read once, after `train_best` returns, to print the figure.

    python benchmarks/collab_quality.py                 # both protocols
    python benchmarks/collab_quality.py --protocol u1   # one
    python benchmarks/collab_quality.py --search u1     # re-run the recipe comparison on u1.base only (slow)
"""
import argparse, os, time, warnings
warnings.filterwarnings('ignore')
import torch, torch.nn.functional as F
from paddy_collab.collab import load_movielens
from paddy_collab.collab_best import *

ANCHORS = {'lesson': 'fastbook DotProductBias 0.823 MSE (RMSE 0.907)', 'u1': 'GC-MC 0.910, IGMC 0.905, GLocal-K 0.889 RMSE (GLocal-K chose its epoch on the test set)'}

def protocol(name, seed=42):
    "(train, held-out, item column) for protocol `name`"
    if name=='lesson': return (*lesson_split(load_movielens(), 0.2, seed), 'title')
    if name=='u1': return (*load_u1(), 'movie')
    raise ValueError(f"unknown protocol {name!r}: expected 'lesson' or 'u1'")

def run(name, seed=42):
    trn,tst,item = protocol(name, seed)
    print(f"== {name}: {len(trn)} training ratings, {len(tst)} held out; components: {', '.join(map(str, BEST))}", flush=True)
    r = train_best(trn, tst, item_name=item, verbose=True)
    y = torch.tensor(tst.rating.values, dtype=torch.float32)  # read only now
    mse = F.mse_loss(r['preds'], y).item()
    print("inner split of the training ratings (what the blend weights were fitted on):")
    for k,v in r['inner_mse'].items(): print(f"   {k:40} MSE {v:.4f}")
    print("held out, each component alone (retrained on all the training ratings):")
    for k,n in enumerate(r['names']):
        m = F.mse_loss(r['component_preds'][:,k].clamp(1,5), y).item()
        print(f"   {n:40} MSE {m:.4f}  RMSE {m**0.5:.4f}")
    print(f"RESULT {name}: blend MSE {mse:.4f}  RMSE {mse**0.5:.4f}   wall {r['times']['total']:.1f}s  CPU {r['times']['cpu']:.1f}s"
          f"  (torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f})")
    print(f"   anchors: {ANCHORS[name]}", flush=True)
    return mse

CANDIDATES = {
    'hybrid': [dict(kind='hybrid')],
    'hybrid+i-autorec+u-autorec': [dict(kind='hybrid'), dict(kind='i-autorec'), dict(kind='u-autorec')],
    'best': BEST,
}

if __name__=='__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--protocol', choices=['lesson','u1','both'], default='both')
    p.add_argument('--seed', type=int, default=42, help="seed of the lesson's 80/20 split")
    p.add_argument('--threads', type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)")
    p.add_argument('--search', choices=['lesson','u1'], help="compare CANDIDATES on a split of this protocol's training ratings; no held-out figure")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.search:
        trn,_,item = protocol(a.search, a.seed)
        tab,(fit,chk) = search(trn, CANDIDATES, item_name=item)
        print(f"search on {a.search}'s training ratings only: fit on {len(fit)}, score on {len(chk)}")
        print(tab.to_string(index=False, float_format='%.4f'))
    else:
        for n in (['lesson','u1'] if a.protocol=='both' else [a.protocol]): run(n, a.seed)
