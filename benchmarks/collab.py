#!/usr/bin/env python
"""Stock fastai collab training vs the fast path (`paddy_collab.fastcollab`), in one process, on one split.

    python benchmarks/collab.py            # MovieLens 100k: stock vs fast, time to stock's final valid MSE
    python benchmarks/collab.py --scale    # a synthetic set the size of MovieLens 25M: time per epoch, ratings/s, peak RSS

A script that prints figures, not a test. Timings on a shared machine are noisy: compare figures from one run,
and read them next to the load average it prints.
"""
from __future__ import annotations
import argparse, gc, os, platform, resource, sys, threading, time, warnings
warnings.filterwarnings('ignore')
os.environ.setdefault('MPLBACKEND', 'Agg')
import numpy as np, pandas as pd, torch
from fastai.basics import *
from fastai.collab import CollabDataLoaders, collab_learner, EmbeddingDotBias
from paddy_collab.core import ml100k_path
from paddy_collab.fastcollab import *

def rss_mb()->float:
    "Resident set size of this process now, in MB"
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'): return int(line.split()[1])/1024
    return float('nan')

def max_rss_mb()->float: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024  # Linux: KB

class PeakRSS:
    "Sample RSS every `every` seconds in a thread; `peak` is the highest value seen inside the `with` block"
    def __init__(self, every=0.01): self.every,self.peak,self._stop = every,rss_mb(),threading.Event()
    def _run(self):
        while not self._stop.wait(self.every): self.peak = max(self.peak, rss_mb())
    def __enter__(self):
        self.start = rss_mb(); self._t = threading.Thread(target=self._run, daemon=True); self._t.start(); return self
    def __exit__(self, *a): self._stop.set(); self._t.join(); self.peak = max(self.peak, rss_mb())

class EpochClock(Callback):
    "Wall time (and this process's CPU time) since `before_fit` at the end of each epoch's training and of each epoch"
    order = 100
    def before_fit(self): self.t0,self.c0,self.trn,self.ends,self.cpu_trn,self.cpu_s = time.perf_counter(),time.process_time(),[],[],[],[]
    def after_train(self): self.trn.append(time.perf_counter()-self.t0); self.cpu_trn.append(time.process_time()-self.c0)
    def after_epoch(self): self.ends.append(time.perf_counter()-self.t0); self.cpu_s.append(time.process_time()-self.c0)

class StopAfter(Callback):
    "Time training batches `warm`..`n` (after a warm-up), then stop the fit"
    order = 100
    def __init__(self, n, warm=10): self.n,self.warm,self.t = n,warm,None
    def before_batch(self):
        if self.training and self.iter==self.warm: self.t,self.c = time.perf_counter(),time.process_time()
    def after_batch(self):
        if self.training and self.iter==self.n-1:
            self.secs,self.cpu_s = time.perf_counter()-self.t,time.process_time()-self.c
            raise CancelFitException()

def load():
    "The lesson's table: ratings with movie titles as items"
    path = ml100k_path()
    ratings = pd.read_csv(path/'u.data', delimiter='\t', header=None, names=['user','movie','rating','timestamp'])
    movies = pd.read_csv(path/'u.item', delimiter='|', encoding='latin-1', usecols=(0,1), names=('movie','title'), header=None)
    return ratings.merge(movies)[['user','title','rating']]

def run(name, make_dls, make_learn, epochs, lr, wd):
    "Build the `DataLoaders` and a `Learner`, `fit_one_cycle`; return timings, valid MSE per epoch and peak RSS"
    gc.collect()
    with PeakRSS() as mem:
        t = time.perf_counter(); dls = make_dls(); t_dls = time.perf_counter()-t
        learn = make_learn(dls); clock = EpochClock()
        t = time.perf_counter()
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, lr, wd=wd, cbs=clock)
        t_fit = time.perf_counter()-t
    mses = [v[1] for v in learn.recorder.values]
    r = dict(name=name, t_dls=t_dls, t_fit=t_fit, ends=clock.ends, mses=mses, peak=mem.peak, d_peak=mem.peak-mem.start, bs=dls.bs, cpu=clock.cpu_s)
    print(f"{name:<44} bs={dls.bs:<5} dls {t_dls:5.2f}s  fit {t_fit:6.2f}s (CPU {clock.cpu_s[-1]:6.2f}s)  "
          f"peak RSS {mem.peak:6.0f} MB (+{r['d_peak']:.0f})", flush=True)
    print(f"{'':<44} valid MSE per epoch: " + '  '.join(f'{m:.4f}@{s:.2f}s' for m,s in zip(mses, clock.ends)), flush=True)
    return r

def time_to(r, target):
    "Fit time at the end of the first epoch whose valid MSE <= target (None if never)"
    return next((s for m,s in zip(r['mses'], r['ends']) if m<=target), None)

def header(args):
    print(f"# benchmarks/collab.py {' '.join(sys.argv[1:])}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}  host cpus={os.cpu_count()}  torch threads={torch.get_num_threads()}  "
          f"torch {torch.__version__}  python {platform.python_version()}")
    print(f"# load average (1/5/15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}  (shared machine: figures are noisy)", flush=True)

def ml100k(args):
    ratings = load()
    kw = dict(item_name='title', seed=args.seed)
    def stock_dls(bs): return lambda: CollabDataLoaders.from_df(ratings, bs=bs, **kw)
    def fast_dls(bs, **k): return lambda: TensorCollabDataLoaders.from_df(ratings, bs=bs, **kw, **k)
    def learner(f, **k):
        def _inner(dls):
            set_seed(args.seed)
            return f(dls, n_factors=50, y_range=(0,5.5), **k)
        return _inner
    ep,lr,wd = args.epochs,5e-3,0.1
    print(f"## MovieLens 100k ({len(ratings):,} ratings, items = titles, seed={args.seed}), n_factors=50, y_range=(0,5.5), "
          f"fit_one_cycle({ep}, {lr}, wd={wd}) unless stated", flush=True)
    stock = run('stock: CollabDataLoaders + collab_learner', stock_dls(64), learner(collab_learner), ep, lr, wd)
    target = stock['mses'][-1]
    rs = [run('fast: TensorCollabDataLoaders + collab_learner', fast_dls(64), learner(collab_learner), ep, lr, wd),
          run('fast: ... + fast_collab_learner (LeanLearner)', fast_dls(64), learner(fast_collab_learner), ep, lr, wd),
          run("fast: LeanLearner, replace=True (stock's sampling)", fast_dls(64, replace=True), learner(fast_collab_learner), ep, lr, wd)]
    for spec in args.big:
        bs,blr,bep,opt = spec.split(':')
        bs,blr,bep = int(bs),float(blr),int(bep)
        rs.append(run(f'fast: LeanLearner, {opt}, fit_one_cycle({bep}, {blr:g})', fast_dls(bs),
                      learner(fast_collab_learner, opt_func={'adam':Adam, 'fused':adamw_fused}[opt]), bep, blr, wd))
    print(f"\n## Time to stock fastai's final valid MSE ({target:.4f}); stock fit took {stock['t_fit']:.2f}s "
          f"(+{stock['t_dls']:.2f}s to build its DataLoaders)")
    print(f"{'run':<62} {'fit time to target':>18} {'ratio':>7} {'ratio incl. dls':>15} {'CPU-time ratio':>14}")
    best = 0
    for r in rs:
        t = time_to(r, target)
        if t is None: print(f"{r['name']+' bs='+str(r['bs']):<62} {'not reached':>18}"); continue
        ratio,ratio2 = stock['t_fit']/t,(stock['t_fit']+stock['t_dls'])/(t+r['t_dls'])
        cpu_t = r['cpu'][r['ends'].index(t)]
        best = max(best, ratio)
        print(f"{r['name']+' bs='+str(r['bs']):<62} {t:>17.2f}s {ratio:>6.1f}x {ratio2:>14.1f}x {stock['cpu'][-1]/cpu_t:>13.1f}x")
    print(f"\nbest ratio {best:.1f}x (target >= 30x); process peak RSS {max_rss_mb():.0f} MB")
    print(f"# load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

def scale(args):
    n_users,n_items,n = 162_541,62_423,args.n_ratings
    print(f"## Synthetic MovieLens-25M-sized set: {n_users:,} users, {n_items:,} items, {n:,} ratings "
          f"(rank-8 model + noise, half stars), valid_pct=0.2, seed={args.seed}", flush=True)
    t = time.perf_counter()
    df = synth_ratings(n_users, n_items, n, n_factors=8, noise=0.5, seed=args.seed)
    print(f"generated in {time.perf_counter()-t:.1f}s, DataFrame {df.memory_usage().sum()/2**20:.0f} MB, RSS {rss_mb():.0f} MB", flush=True)
    t = time.perf_counter()
    dls = TensorCollabDataLoaders.from_df(df, bs=args.scale_bs[0], seed=args.seed, idx_dtype=torch.int32, y_dtype=torch.bfloat16)
    n_trn,n_val = len(dls.train_ds),len(dls.valid_ds)
    print(f"TensorCollabDataLoaders (int32 indices, bfloat16 ratings) built in {time.perf_counter()-t:.1f}s: "
          f"{n_trn:,} train / {n_val:,} valid ratings, RSS {rss_mb():.0f} MB", flush=True)
    del df; gc.collect()
    print(f"RSS after dropping the DataFrame: {rss_mb():.0f} MB", flush=True)
    for bs,spec in zip(args.scale_bs, args.scale_opt):
        opt,lr = spec.split(':'); lr = float(lr)
        dls.train.bs,dls.valid.bs = bs,max(bs, 65536)
        set_seed(args.seed)
        learn = fast_collab_learner(dls, n_factors=50, y_range=(0,5.5), opt_func={'fused':adamw_fused, 'lazy':lazy_adamw, 'adam':Adam}[opt])
        fast_embeddings(learn.model, sparse=opt=='lazy')
        clock = EpochClock(); gc.collect()
        with PeakRSS() as mem, learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, lr, wd=args.scale_wd, cbs=clock)
        t_trn,t_ep,c_trn,c_ep = clock.trn[0],clock.ends[0],clock.cpu_trn[0],clock.cpu_s[0]
        print(f"fast path, {'fast_embeddings(sparse=True) + lazy_adamw' if opt=='lazy' else 'fast_embeddings + '+('adamw_fused' if opt=='fused' else 'fastai Adam')}, "
              f"bs={bs}, fit_one_cycle(1, {lr:g}, wd={args.scale_wd}): epoch {t_ep:.1f}s wall, {c_ep:.1f}s CPU "
              f"(train {t_trn:.1f}s wall / {c_trn:.1f}s CPU, valid {t_ep-t_trn:.1f}s), "
              f"{n_trn/t_trn:,.0f} train ratings/s ({n_trn/c_trn:,.0f} per CPU-second), valid MSE {learn.recorder.values[-1][1]:.4f}, peak RSS {mem.peak:.0f} MB "
              f"(process max so far {max_rss_mb():.0f} MB)", flush=True)
        del learn; gc.collect()
    print(f"# load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    if args.stock_batches<=0: return
    print(f"\n## Stock fastai: {args.stock_batches} batches only, EXTRAPOLATED to an epoch of the {n_trn:,} training ratings", flush=True)
    # Building stock DataLoaders on all 25M ratings needs far more memory than this shared machine has free (a trial grew past
    # 4 GB RSS within minutes, still inside `from_df`), so they are built on the first `--stock-rows` ratings of the same set.
    # The model has the full-size tables (what `collab_learner` builds on all the data): dense Adam cost per step is the same.
    del dls; gc.collect()
    df = synth_ratings(n_users, n_items, n, n_factors=8, noise=0.5, seed=args.seed).iloc[:args.stock_rows]
    t = time.perf_counter()
    with PeakRSS() as mem: sdls = CollabDataLoaders.from_df(df, bs=64, seed=args.seed)
    print(f"CollabDataLoaders.from_df on {len(df):,} ratings built in {time.perf_counter()-t:.1f}s, peak RSS {mem.peak:.0f} MB", flush=True)
    learn = Learner(sdls, EmbeddingDotBias(50, n_users+1, n_items+1, y_range=(0,5.5)), loss_func=MSELossFlat())
    stop = StopAfter(args.stock_batches)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(1, 5e-3, wd=0.1, cbs=stop)
    per,per_cpu = stop.secs/(args.stock_batches-stop.warm),stop.cpu_s/(args.stock_batches-stop.warm)
    n_b = n_trn//64
    print(f"stock (TabDataLoader + EmbeddingDotBias(50, {n_users+1:,}, {n_items+1:,}) + fastai Adam), bs=64: {per*1000:.1f} ms/batch wall "
          f"({per_cpu*1000:.1f} ms CPU) over {args.stock_batches-stop.warm} batches -> EXTRAPOLATED {per*n_b/3600:.1f} h wall "
          f"({per_cpu*n_b/3600:.1f} h CPU) per epoch of {n_b:,} batches (training only), {64/per:,.0f} ratings/s", flush=True)
    print(f"# load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; process max RSS {max_rss_mb():.0f} MB")

if __name__=='__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--scale', action='store_true', help='the MovieLens-25M-sized synthetic benchmark')
    p.add_argument('--threads', type=int, default=1, help='torch intra-op threads (default 1: faster for small ops on a busy 2-core machine)')
    p.add_argument('--seed', type=int, default=42)
    p.add_argument('--epochs', type=int, default=5, help="ML-100k: epochs of the lesson's schedule")
    p.add_argument('--big', nargs='*', default=['512:1e-2:3:adam', '512:1e-2:3:fused', '1024:1e-2:3:fused'],
                   help='ML-100k larger-batch fast runs, each bs:lr:epochs:opt (opt: adam or fused)')
    p.add_argument('--n-ratings', type=int, default=25_000_000)
    p.add_argument('--scale-bs', type=int, nargs='*', default=[65536, 262144, 16384])
    p.add_argument('--scale-opt', nargs='*', default=['fused:3e-2', 'fused:1e-1', 'lazy:1e-2'], help='one per --scale-bs: fused|lazy|adam:lr')
    p.add_argument('--scale-wd', type=float, default=0.01)
    p.add_argument('--stock-batches', type=int, default=60, help='--scale: stock batches to time, after 10 warm-up ones (0: skip stock)')
    p.add_argument('--stock-rows', type=int, default=1_000_000, help='--scale: ratings the stock DataLoaders are built on')
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    header(args)
    scale(args) if args.scale else ml100k(args)
