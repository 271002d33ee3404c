#!/usr/bin/env python
"""Quality benchmark: the best recipe the package trains on MovieLens 100k, chosen by rule and scored over 3 seeds, on two protocols.

  lesson: the random 80/20 split of `CollabDataLoaders.from_df(ratings, item_name='title', valid_pct=0.2, seed=42)`;
          figure: validation MSE (target <= 0.78; fastbook 0.823)
  u1:     train on u1.base, test on u1.test (movies by id); figure: test RMSE
          (target <= 0.889; GC-MC 0.910, IGMC 0.905, GLocal-K 0.889)

For each protocol, from scratch:
  1. `search` compares every recipe in `CANDIDATES` on an 80/20 split of that protocol's *training* ratings only
     (u1: of u1.base; the held-out ratings are not loaded into it);
  2. `pick_best` chooses a recipe by rule (lowest MSE there; ties within 0.001: the cheapest);
  3. `train_best` trains the pick on all the training ratings with seeds 0, 1, 2; the held-out ratings are read once
     per seed, after it returns, to print the figure: mean ± sd over the seeds.

    python benchmarks/collab_quality.py                   # both protocols (about 8 CPU minutes each, one thread)
    python benchmarks/collab_quality.py --protocol u1     # one
    python benchmarks/collab_quality.py --smoke           # tiny sizes: checks the script runs (tests/test_benchmarks.py)

The tables are written as markdown to `benchmarks/results/collab_quality.md`.
"""
import argparse, os, sys, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, torch, torch.nn.functional as F
from paddy_collab.collab_data import load_movielens
from paddy_collab.collab_best import *

RESULTS = Path(__file__).resolve().parent/'results'
ANCHORS = {'lesson': 'fastbook DotProductBias 0.823 MSE (RMSE 0.907)',
           'u1': 'GC-MC 0.910, IGMC 0.905, GLocal-K 0.889 RMSE (GLocal-K chose its epoch on the test set)'}
SMOKE = {'mf': [dict(kind='mf', epochs=2)], 'i-autorec': [dict(kind='i-autorec', n_hidden=20, epochs=10)],
         'mf + i-autorec': [dict(kind='mf', epochs=2), dict(kind='i-autorec', n_hidden=20, epochs=10)]}

def protocol(name, seed=42, smoke=False):
    "(train, held-out, item column) for protocol `name`; `smoke`: only the first 80 users' ratings"
    if name=='lesson': trn,tst,item = (*lesson_split(load_movielens(), 0.2, seed), 'title')
    elif name=='u1': trn,tst,item = (*load_u1(), 'movie')
    else: raise ValueError(f"unknown protocol {name!r}: expected 'lesson' or 'u1'")
    if smoke: trn,tst = trn[trn.user<=80],tst[tst.user<=80]
    return trn,tst,item

def run(name, a):
    "Search, pick and 3-seed figure for protocol `name`, as markdown lines"
    trn,tst,item = protocol(name, a.split_seed, a.smoke)
    cands,seeds = (SMOKE,[0,1]) if a.smoke else (CANDIDATES,a.seeds)
    print(f"== {name}: {len(trn):,} training ratings, {len(tst):,} held out", flush=True)
    tab,(fit,chk) = search(trn, cands, item_name=item)  # the held-out ratings take no part
    pick = pick_best(tab)
    print(tab.to_string(index=False, float_format='%.4f'), f"\npicked: {pick}", flush=True)
    y = torch.tensor(tst.rating.values, dtype=torch.float32)
    mses,cpu = [],[]
    for s in seeds:
        r = train_best(trn, tst, item_name=item, components=cands[pick], seed=s)
        mses.append(F.mse_loss(r['preds'], y).item()); cpu.append(r['times']['cpu'])  # held-out ratings read only now
        print(f"   seed {s}: MSE {mses[-1]:.4f}  RMSE {mses[-1]**0.5:.4f}  CPU {cpu[-1]:.0f}s", flush=True)
    m,r_ = np.array(mses),np.sqrt(mses)
    fig = f"MSE {m.mean():.4f} ± {m.std(ddof=1):.4f}" if name=='lesson' else f"RMSE {r_.mean():.4f} ± {r_.std(ddof=1):.4f}"
    cols = [c for c in tab.columns if c not in ('recipe','mse','cpu_s','components')]
    lines = [f"### {name}: {len(trn):,} training ratings" + (" (u1.base)" if name=='u1' else " (the lesson's 80%, seed 42)"), '',
             f"Search: each recipe trained on {len(fit):,} and scored on {len(chk):,} of these training ratings (`search`, seed 1); "
             "the held-out ratings are not part of it.", '',
             "| recipe | MSE | CPU s | " + ' | '.join(cols) + " |", "|---|---:|---:|" + "---:|"*len(cols)]
    for _,row in tab.iterrows():
        parts = ' | '.join('' if row[c]!=row[c] else f"{row[c]:.4f}" for c in cols)
        lines.append(f"| {row.recipe} | {row.mse:.4f} | {row.cpu_s:.0f} | {parts} |")
    lines += ['', f"picked by `pick_best`: **{pick}**", '',
              f"Held out ({len(tst):,} ratings, read once per seed after training): **{fig}** over seeds {seeds} "
              f"(per seed MSE {', '.join(f'{x:.4f}' for x in mses)}; CPU {np.mean(cpu):.0f} s per seed). Anchors: {ANCHORS[name]}.", '']
    print(lines[-2], flush=True)
    return lines

if __name__=='__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--protocol', choices=['lesson','u1','both'], default='both')
    p.add_argument('--split-seed', type=int, default=42, help="seed of the lesson's 80/20 split")
    p.add_argument('--seeds', type=int, nargs='+', default=[0,1,2], help='seeds of the final runs (train_best seed)')
    p.add_argument('--smoke', action='store_true', help='the first 80 users, tiny recipes: checks the script runs; figures mean nothing')
    p.add_argument('--results', help=f'folder for collab_quality.md (default {RESULTS}; with --smoke: none written)')
    a = p.parse_args()
    torch.set_num_threads(1)
    load0 = ' '.join(f'{x:.2f}' for x in os.getloadavg())
    names = ['lesson','u1'] if a.protocol=='both' else [a.protocol]
    md = [f"`python benchmarks/collab_quality.py{' --smoke' if a.smoke else ''}{'' if a.protocol=='both' else ' --protocol '+a.protocol}`"
          f" (one torch thread; load average at the start {load0})", '']
    for n in names: md += run(n, a)
    md.append(f"Load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}.")
    print('\n'.join(md))
    if a.results or not a.smoke:
        out = Path(a.results or RESULTS); out.mkdir(parents=True, exist_ok=True)
        (out/f"collab_quality{'' if a.protocol=='both' else '_'+a.protocol}.md").write_text('\n'.join(md)+'\n')
