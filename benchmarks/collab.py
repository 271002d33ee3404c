#!/usr/bin/env python
"""Stock fastai collab training vs the fast path (`paddy_collab.fastcollab`), like for like, in one process on one thread.

    python benchmarks/collab.py            # MovieLens 100k: both over a grid of batch sizes and learning rates
    python benchmarks/collab.py --scale    # 25M synthetic ratings: the fast path's epoch at a quality bar; stock, full epochs at large bs on a 1M subset
    python benchmarks/collab.py --profile  # where a batch of ML-100k spends its CPU time at bs 1024: stock, fast before/after
    python benchmarks/collab.py --smoke    # tiny synthetic sizes: checks the script runs (tests/test_benchmarks.py)

ML-100k: every setting of a grid (bs 64..4096, lr 2e-3..2e-2, 3..5 epochs) is trained by stock fastai and by the fast
path, under one sampling at a time: with replacement (stock's default) and as a permutation (stock given a permutation
loader); each setting runs 3 times and the median counts. The time of a run is the CPU time (user+sys of this one-thread
process) from the call to `fit_one_cycle` to the end of the first epoch whose valid MSE reaches 07_collab's stock figure
(0.8445; epoch-end checks, validation included; the fit stops there). The headline, for each sampling, is stock's best
median time against the fast path's best under the same sampling.
The tables are also written as markdown to `benchmarks/results/collab.md` (`collab_scale.md` for `--scale`).
"""
from __future__ import annotations
import argparse, gc, os, platform, resource, sys, threading, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
os.environ.setdefault('MPLBACKEND', 'Agg')
import numpy as np, pandas as pd, torch
from fastai.basics import *
from fastai.collab import CollabDataLoaders, collab_learner, EmbeddingDotBias
from fastai.tabular.core import TabDataLoader
from paddy_collab.collab_data import load_movielens, lowrank_ratings
from paddy_collab.fastcollab import *

RESULTS = Path(__file__).resolve().parent/'results'

def rss_mb()->float:
    "Resident set size of this process now, in MB"
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith('VmRSS:'): return int(line.split()[1])/1024
    return float('nan')

def max_rss_mb()->float: return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024  # Linux: KB

def cpu_s()->float:
    "User+system CPU seconds of this process (all its threads: one torch thread here)"
    t = os.times()
    return t.user+t.system

def load_avg()->str: return ' '.join(f'{x:.2f}' for x in os.getloadavg())

class PeakRSS:
    "Sample RSS every `every` seconds in a thread; `peak` is the highest value seen inside the `with` block"
    def __init__(self, every=0.05): self.every,self.peak,self._stop = every,rss_mb(),threading.Event()
    def _run(self):
        while not self._stop.wait(self.every): self.peak = max(self.peak, rss_mb())
    def __enter__(self):
        self.start = rss_mb(); self._t = threading.Thread(target=self._run, daemon=True); self._t.start(); return self
    def __exit__(self, *a): self._stop.set(); self._t.join(); self.peak = max(self.peak, rss_mb())

class EpochClock(Callback):
    "CPU and wall seconds since `start` at the end of each epoch's training and of each epoch (validation included)"
    order = 100  # after the Recorder has the epoch's valid MSE
    def __init__(self): self.start()
    def start(self): self.c0,self.t0,self.trn,self.cpu_trn,self.ends,self.cpu = cpu_s(),time.perf_counter(),[],[],[],[]
    def after_train(self): self.trn.append(time.perf_counter()-self.t0); self.cpu_trn.append(cpu_s()-self.c0)
    def after_epoch(self): self.ends.append(time.perf_counter()-self.t0); self.cpu.append(cpu_s()-self.c0)

# --- MovieLens 100k: the grid ---------------------------------------------------------------------------------------

# Every combination of these, for both paths and both samplings; each setting runs `--runs` times (training seeds
# seed, seed+1, ...; the split is always `--seed`'s) and the median counts.
BS,LRS,EPOCHS = [64, 128, 256, 512, 1024, 2048, 4096],[2e-3, 5e-3, 1e-2, 2e-2],[3, 4, 5]
TARGET = 0.8445  # 07_collab's stock `collab_learner` figure: bs 64, fit_one_cycle(5, 5e-3, wd=0.1), seed 42
SAMPLINGS = {'replace': "with replacement (stock fastai's `TabWeightedDL`; the fast path with `replace=True`)",
             'perm': "a permutation each epoch (stock given `dl_type=TabDataLoader`; the fast path's default)"}

def stock_run(ratings, bs, lr, epochs, seed, wd=0.1, run=0, sampling='replace', target=None, bound=None):
    "Stock fastai: `CollabDataLoaders.from_df` + `collab_learner`; `sampling='perm'` swaps its `TabWeightedDL` for a permutation loader"
    kw = dict(dl_type=TabDataLoader) if sampling=='perm' else {}
    c = cpu_s(); dls = CollabDataLoaders.from_df(ratings, item_name='title', bs=bs, seed=seed, **kw); c_dls = cpu_s()-c
    set_seed(seed+run)
    learn = collab_learner(dls, n_factors=50, y_range=(0,5.5))
    return fit(learn, lr, epochs, wd, c_dls, target, bound)

def fast_run(ratings, bs, lr, epochs, seed, wd=0.1, run=0, sampling='replace', target=None, bound=None, device='cpu'):
    "The fast path: `TensorCollabDataLoaders` + `fast_collab_learner` (`LeanLearner`, plain loss) + `adamw_fused` + `fast_embeddings`"
    c = cpu_s()
    dls = TensorCollabDataLoaders.from_df(ratings, item_name='title', bs=bs, seed=seed, device=device, replace=sampling=='replace')
    c_dls = cpu_s()-c
    set_seed(seed+run)
    learn = fast_collab_learner(dls, n_factors=50, y_range=(0,5.5), opt_func=adamw_fused)
    fast_embeddings(learn.model)
    return fit(learn, lr, epochs, wd, c_dls, target, bound)

class StopAtTarget(Callback):
    "Stop the fit at the end of the first epoch whose valid MSE is at or below `target` (the time to it is all that counts)"
    order = 101
    def __init__(self, target): self.target = target
    def after_epoch(self):
        if self.recorder.values and self.recorder.values[-1][1]<=self.target+1e-9: raise CancelFitException()

class StopAbove(Callback):
    "Stop the fit at the end of an epoch whose CPU time (since the fit began) passes `bound` without the target reached: the run's time to it is above `bound`"
    order = 102  # after `StopAtTarget`: an epoch that reaches the target counts
    def __init__(self, clock, bound): self.clock,self.bound,self.cut = clock,bound,False
    def after_epoch(self):
        if self.clock.cpu[-1]>self.bound: self.cut = True; raise CancelFitException()

def fit(learn, lr, epochs, wd, c_dls, target=None, bound=None):
    "`fit_one_cycle` with an `EpochClock`: CPU and wall time at each epoch's end, with its valid MSE (stopped at `target` if given, cut past `bound` CPU-s)"
    gc.collect()
    clock = EpochClock()
    cbs = [clock] if target is None else [clock, StopAtTarget(target)]
    if bound is not None and np.isfinite(bound): cbs.append(above := StopAbove(clock, bound))
    with learn.no_bar(), learn.no_logging():
        clock.start()
        learn.fit_one_cycle(epochs, lr, wd=wd, cbs=cbs)
    cut = bound is not None and np.isfinite(bound) and above.cut
    return dict(mses=[float(v[1]) for v in learn.recorder.values], cpu=clock.cpu, wall=clock.ends, trn=clock.trn, cpu_trn=clock.cpu_trn, c_dls=c_dls, cut=cut, bound=bound)

def time_to(r, target):
    "(CPU s, wall s, epoch) at the end of the first epoch whose valid MSE <= target, or None"
    return next(((c,w,e+1) for e,(m,c,w) in enumerate(zip(r['mses'], r['cpu'], r['wall'])) if m<=target+1e-9), None)

def median_time(runs, target):
    "Median over `runs` of the CPU seconds to `target` (a run that never reaches it counts as infinite), and the median epoch"
    ts = [time_to(r, target) for r in runs]
    cpu = float(np.median([t[0] if t else np.inf for t in ts]))
    ep = float(np.median([t[2] if t else np.inf for t in ts]))
    return cpu,ep,sum(t is not None for t in ts)

def ml100k_table(ratings, grid, seed, runs, samplings, target, cut=True):
    "{(sampling, setting, path): [result of each run]} over the whole grid, largest batch size first; with `cut`, a run stops once its CPU time passes its path's best median so far"
    rows = {}
    for f in (stock_run, fast_run): f(ratings.iloc[:5000], 256, 1e-2, 1, seed)  # warm-up, untimed: first-call costs (kernels, imports)
    for smp in samplings:
        best = dict(stock=np.inf, fast=np.inf)
        for s in sorted(grid, key=lambda s: (-s[0], s[1], s[2])):
            for name,f in (('stock',stock_run),('fast',fast_run)):
                bound = best[name] if cut else None
                rows[smp,s,name] = rs = [f(ratings, *s, seed, run=i, sampling=smp, target=target, bound=bound) for i in range(runs)]
                cpu,ep,n = median_time(rs, target)
                best[name] = min(best[name], cpu)
                print(f"  {smp:7} {name:5} bs={s[0]:<5} lr={s[1]:<6g} epochs={s[2]}: to target {cpu:7.3f} CPU-s (median of {runs}, "
                      f"{n} reached, {sum(r['cut'] for r in rs)} cut at {bound}), valid MSE of each run "
                      + '; '.join(' '.join(f'{m:.4f}' for m in r['mses']) for r in rs), flush=True)
    return rows

def ml100k_markdown(rows, target, runs, samplings):
    "One table per sampling, each with its headline: stock's best median time against the fast path's, under that sampling"
    out = []
    for smp in samplings:
        lines = [f"**Sampling: {SAMPLINGS[smp]}.**", '',
                 f"| bs | lr | epochs | path | valid MSE per epoch (run 1; stopped at the target or the cut) | CPU-s to MSE ≤ {target:.4f}, median of {runs} (epoch) | runs reaching it | DataLoaders, CPU-s |",
                 "|---:|---:|---:|---|---|---:|---:|---:|"]
        best = {}
        for (sm,s,name),rs in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][2]=='fast')):
            if sm!=smp: continue
            cpu,ep,n = median_time(rs, target)
            if np.isfinite(cpu) and (name not in best or cpu<best[name][1]): best[name] = (s,cpu,ep)
            n_cut,bound = sum(r['cut'] for r in rs),rs[0]['bound']
            reach = f"> {bound:.3f} (cut)" if n_cut and not cpu<=bound else f"{cpu:.3f} ({ep:g})" if np.isfinite(cpu) else 'not reached'
            lines.append(f"| {s[0]} | {s[1]:g} | {s[2]} | {name} | {' '.join(f'{m:.4f}' for m in rs[0]['mses'])} | {reach} | {n}/{runs}"
                         f"{f' ({n_cut} cut)' if n_cut else ''} | {np.median([r['c_dls'] for r in rs]):.3f} |")
        if {'stock','fast'} <= set(best):
            (sb,tb,eb),(fb,tf,ef) = best['stock'],best['fast']
            lines += ['', f"stock's best: bs={sb[0]}, lr={sb[1]:g}, {sb[2]} epochs, {tb:.3f} CPU-s (epoch {eb:g}); "
                          f"fast path's best: bs={fb[0]}, lr={fb[1]:g}, {fb[2]} epochs, {tf:.3f} CPU-s (epoch {ef:g})", '',
                      f"ratio, {smp}: {tb/tf:.1f}×"]
        else: lines += ['', f"ratio, {smp}: not measured (a path never reached the target)"]
        out.append('\n'.join(lines))
    return '\n\n'.join(out)

LESSON = (64, 5e-3, 5)  # 07_collab's setting: bs 64, fit_one_cycle(5, 5e-3, wd=0.1)

def lesson_markdown(ratings, seed, runs, samplings):
    "07_collab's setting trained to the end (no target, no cut) under each sampling, both paths: valid MSE after the last epoch"
    lines = [f"**07_collab's setting trained to the end** (bs {LESSON[0]}, `fit_one_cycle({LESSON[2]}, {LESSON[1]:g}, wd=0.1)`, "
             f"training seeds {seed}..{seed+runs-1}): the valid MSE after the last epoch under each sampling.", '',
             "| sampling | path | valid MSE after epoch 5, each run | median | epoch CPU-s, median |", "|---|---|---|---:|---:|"]
    for smp in samplings:
        for name,f in (('stock',stock_run),('fast',fast_run)):
            rs = [f(ratings, *LESSON, seed, run=i, sampling=smp) for i in range(runs)]
            fin = [r['mses'][-1] for r in rs]
            ep_cpu = np.median([r['cpu'][-1]/len(r['cpu']) for r in rs])
            print(f"  lesson {smp:7} {name:5}: valid MSE after the last epoch " + ' '.join(f'{m:.4f}' for m in fin), flush=True)
            lines.append(f"| {smp} | {name} | {' '.join(f'{m:.4f}' for m in fin)} | {np.median(fin):.4f} | {ep_cpu:.2f} |")
    return '\n'.join(lines)

def ml100k(args):
    ratings = (load_movielens() if not args.smoke else _smoke_ratings())[['user','title','rating']]
    if args.smoke: args.bs,args.lr,args.epochs,args.runs = args.bs or [64, 256],args.lr or [1e-2],args.epochs or [2],min(args.runs, 2)
    bss,lrs,eps = args.bs or BS,args.lr or LRS,args.epochs or EPOCHS
    grid = [(b,l,e) for b in bss for l in lrs for e in eps]
    target = args.target if not args.smoke else 10.
    print(f"## {'MovieLens 100k' if not args.smoke else 'SMOKE (tiny synthetic set)'}: {len(ratings):,} ratings; target valid MSE {target:.4f}; "
          f"{len(grid)} settings x 2 paths x {len(args.sampling)} samplings x {args.runs} runs", flush=True)
    rows = ml100k_table(ratings, grid, args.seed, args.runs, args.sampling, target, cut=not args.no_cut)
    md = ml100k_markdown(rows, target, args.runs, args.sampling)
    if args.lesson_runs: md += '\n\n' + lesson_markdown(ratings, args.seed, args.lesson_runs if not args.smoke else 1, args.sampling)
    head = (f"`python benchmarks/collab.py {' '.join(sys.argv[1:])}`: one process, one torch thread, {len(ratings):,} ratings, n_factors=50, "
            f"y_range=(0, 5.5), wd=0.1, `fit_one_cycle`, split seed {args.seed}; grid bs {bss}, lr {[f'{l:g}' for l in lrs]}, epochs {eps}; "
            f"each setting run {args.runs} times (training seeds {args.seed}..{args.seed+args.runs-1}). Times are CPU seconds (user+sys) from "
            f"`fit_one_cycle` to the end of the first epoch whose valid MSE reaches {target:.4f} (07_collab's stock `collab_learner` figure, "
            f"bs 64, 5 epochs at 5e-3), validation included; the median of the runs counts (a run that never reaches it counts as infinite). "
            + ("" if args.no_cut else "Settings run from the largest batch size down; a run is cut at the end of the first epoch at which its CPU time "
               "passes the best median found so far for its path and sampling (the `bound`): it could reach the target only later than that best, so "
               "the cut changes neither best nor the ratio; a setting whose median is above its bound shows `> bound (cut)`. ")
            + 
            f"Load average at the start {args.load0}, at the end {load_avg()}.")
    return head+'\n\n'+md

def _smoke_ratings():
    "A small low-rank set shaped like the lesson's (user, title, rating)"
    return lowrank_ratings(120, 90, density=0.5, seed=0)

# --- where a batch's time goes ---------------------------------------------------------------------------------------

PHASES = ['loader and Learner between batches', 'before_batch callbacks + forward', 'loss', 'backward', 'optimizer step',
          'zero_grad + after_step/after_batch callbacks']

class PhaseClock(Callback):
    "CPU seconds of each phase of the training batches (see `PHASES`), summed over the fit"
    order = -1000  # first at every event: a phase runs from this callback's call at one event to its call at the next
    def before_fit(self): self.t,self.last = dict.fromkeys(PHASES, 0.),None
    def _tick(self, phase):
        now = time.process_time()
        if phase is not None and self.last is not None and self.training: self.t[phase] += now-self.last
        self.last = now
    def before_batch(self): self._tick(PHASES[0])
    def after_pred(self): self._tick(PHASES[1])
    def after_loss(self): self._tick(PHASES[2])
    def before_step(self): self._tick(PHASES[3])
    def after_step(self): self._tick(PHASES[4])
    def after_batch(self): self._tick(PHASES[5])
    def before_validate(self): self.last = None
    def before_train(self): self.last = None

def profile(args):
    "Per training batch at `--profile-bs`, CPU ms in each phase: stock, the fast path with fastai's `MSELossFlat`, and the fast path as it is"
    ratings = load_movielens()[['user','title','rating']]
    bs,ep = args.profile_bs,args.profile_epochs
    def stock(): return collab_learner(CollabDataLoaders.from_df(ratings, item_name='title', bs=bs, seed=args.seed), n_factors=50, y_range=(0,5.5))
    def fast(**kw):
        dls = TensorCollabDataLoaders.from_df(ratings, item_name='title', bs=bs, seed=args.seed, device='cpu', replace=True)
        return fast_embeddings_learner(dls, **kw)
    paths = {'stock (CollabDataLoaders + collab_learner + fastai Adam)': stock,
             'fast path, with MSELossFlat (before)': lambda: fast(loss_func=MSELossFlat()), 'fast path (after: PlainLoss)': fast}
    lines = [f"`python benchmarks/collab.py --profile`: MovieLens 100k, bs {bs}, `fit_one_cycle({ep}, 5e-3, wd=0.1)` sampling with replacement, "
             f"one torch thread; CPU ms per training batch in each phase (validation not counted), best of 3 fits. Load average at the start {args.load0}.", '',
             '| phase | ' + ' | '.join(paths) + ' |', '|---|' + '---:|'*len(paths)]
    res = {}
    for name,mk in paths.items():
        best = None
        for _ in range(3):
            learn = mk(); clock = PhaseClock(); set_seed(args.seed)
            with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(ep, 5e-3, wd=0.1, cbs=clock)
            nb = ep*len(learn.dls.train)
            t = {k:v/nb*1e3 for k,v in clock.t.items()}
            if best is None or sum(t.values())<sum(best.values()): best = t
        res[name] = best
        print(f"{name}: " + ', '.join(f'{k} {v:.3f}' for k,v in best.items()) + f"; total {sum(best.values()):.3f} ms", flush=True)
    for ph in PHASES: lines.append(f"| {ph} | " + ' | '.join(f'{res[n][ph]:.3f}' for n in paths) + ' |')
    lines.append('| **total per batch** | ' + ' | '.join(f'**{sum(res[n].values()):.3f}**' for n in paths) + ' |')
    lines += ['', f"Load average at the end {load_avg()}."]
    return '\n'.join(lines)

# --- 25M ratings ----------------------------------------------------------------------------------------------------

def scale_ratings(args):
    "The synthetic MovieLens-25M-sized set (or a tiny one with --smoke)"
    if args.smoke: return 2_000, 1_500, 200_000
    return 162_541, 62_423, args.n_ratings

def scale_set(n_users, n_items, n, seed):
    "The scale benchmark's ratings: rank-8 model, noise 0.5, half stars, int32 ids"
    return lowrank_ratings(n_users, n_items, n, n_factors=8, noise=0.5, seed=seed, item_name='item', item_fmt=None)

def scale(args):
    n_users,n_items,n = scale_ratings(args)
    if args.smoke: args.scale_bs = [min(b, 16_384) for b in args.scale_bs]  # batches the tiny set can fill
    out = [f"`python benchmarks/collab.py --scale{' --smoke' if args.smoke else ''}`: synthetic set, {n_users:,} users, {n_items:,} items, "
           f"{n:,} ratings (rank-8 model + noise, half stars; valid_pct 0.2), n_factors=50, one process; one torch thread except in the fast rows "
           f"with `threads` 2 (both cores). "
           f"Load average at the start {args.load0}.", '']
    print(out[0], flush=True)
    t = time.perf_counter()
    df = scale_set(n_users, n_items, n, args.seed)
    print(f"generated in {time.perf_counter()-t:.1f}s, RSS {rss_mb():.0f} MB", flush=True)
    kept = keep_freed_memory()  # no page faults for each step's 50 MB tensors
    dls = TensorCollabDataLoaders.from_df(df, bs=args.scale_bs[0], seed=args.seed, idx_dtype=torch.int32, y_dtype=torch.bfloat16, device='cpu')
    dls.train.sort_by = 0  # each batch's rows in user order: sequential access to the larger table
    n_trn,n_val = len(dls.train_ds),len(dls.valid_ds)
    mean = float(dls.train_ds.y.float().mean()); base = float(((dls.valid_ds.y.float()-mean)**2).mean())
    del df; gc.collect()
    print(f"{n_trn:,} train / {n_val:,} valid; RSS {rss_mb():.0f} MB; predicting the training mean gives valid MSE {base:.4f}", flush=True)
    bw = mem_bandwidth()
    out += [f"Fast path: int32 indices, bfloat16 ratings, each batch sorted by user (`sort_by=0`), `keep_freed_memory()` ({kept}). "
            f"Memory bandwidth measured here (one thread, 256 MB copy): {bw:.1f} GB/s. Predicting the training mean: valid MSE {base:.4f}.", '',
            "| path | bs | optimizer, lr | threads | epochs | epoch, wall s | epoch, CPU s | train ratings/s (CPU) | valid MSE | peak RSS, MB | bytes moved / bandwidth, s | ratio of wall time to that limit |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    best = None
    for bs,spec,th in [(b,o,t) for b,o in zip(args.scale_bs, args.scale_opt) for t in args.scale_threads]:
        opt,lr = spec.split(':'); lr = float(lr)
        torch.set_num_threads(th)
        dls.train.bs,dls.valid.bs = bs,max(bs, 65536)
        set_seed(args.seed)
        learn = fast_collab_learner(dls, n_factors=50, y_range=(0,5.5), opt_func={'fused':adamw_fused, 'lazy':lazy_adamw}[opt])
        fast_embeddings(learn.model, sparse=opt=='lazy')
        clock = EpochClock(); gc.collect()
        with PeakRSS() as mem, learn.no_bar(), learn.no_logging():
            clock.start(); learn.fit_one_cycle(args.scale_epochs, lr, wd=args.scale_wd, cbs=clock)
        ep_w,ep_c = clock.ends[0],clock.cpu[0]
        mse = float(learn.recorder.values[-1][1])
        lim = epoch_bytes(n_trn, n_val, bs, n_users, n_items, 50, opt)/bw/1e9
        torch.set_num_threads(1)
        print(f"fast {opt} bs={bs} lr={lr:g} threads={th}: first epoch {ep_w:.1f}s wall / {ep_c:.1f}s CPU; valid MSE per epoch "
              + ' '.join(f'{v[1]:.4f}' for v in learn.recorder.values) + f"; peak RSS {mem.peak:.0f} MB; limit {lim:.1f}s", flush=True)
        out.append(f"| fast: TensorCollabDataLoaders + LeanLearner + fast_embeddings{'(sparse)' if opt=='lazy' else ''} | {bs:,} | "
                   f"{'lazy_adamw' if opt=='lazy' else 'adamw_fused'}, {lr:g} | {th} | {args.scale_epochs} | {ep_w:.1f} | {ep_c:.1f} | "
                   f"{n_trn/max(clock.cpu_trn[0], 1e-6):,.0f} | {mse:.4f} | {mem.peak:.0f} | {lim:.1f} | {ep_w/lim:.1f}× |")
        if mse<=args.scale_mse and (best is None or ep_w<best[0]): best = (ep_w,ep_c,bs,opt,mse,th,lr)
        del learn; gc.collect()
    if best is None: best = (float('nan'),float('nan'),0,'none',float('nan'),0,float('nan'))
    out += ['', f"The fast path's best setting at the quality bar (valid MSE ≤ {args.scale_mse} after the epoch; the fastest of the rows that reach it): "
            f"bs={best[2]:,}, {best[3]}, {best[5]} thread(s): {best[0]:.1f} s wall ({best[1]:.1f} CPU-s), valid MSE {best[4]:.4f}."]
    if not args.no_stock: out += stock_scale(args, n_users, n_items, n, n_trn, best)
    out += ['', f"Process peak RSS {max_rss_mb():.0f} MB. Load average at the end {load_avg()}.", '',
            f"25M epoch: {best[0]:.1f} s" if not args.smoke else f"smoke epoch: {best[0]:.2f} s"]
    return '\n'.join(out)

def epoch_bytes(n_trn, n_val, bs, n_users, n_items, nf, opt):
    "A lower bound on the bytes one epoch moves: each rating's two factor rows read (forward) and their gradients written and "
    "read again (backward scatter), plus, per step, the optimizer's pass over the parameters (dense: every row; lazy: the batch's)"
    row = (nf+1)*4
    per_rating = 2*row*3 + 12  # gather, grad write, scatter-add read; indices and rating
    steps = n_trn//bs
    if opt=='lazy': opt_b = steps*min(2*bs, n_users+n_items)*row*7
    else: opt_b = steps*(n_users+n_items)*row*7  # AdamW reads p, g, m, v and writes p, m, v
    return n_trn*per_rating + n_val*(2*row+12) + opt_b

def mem_bandwidth(mb=256, reps=5)->float:
    "GB/s of one `copy_` of `mb` MB (read + write counted), best of `reps`"
    a,b = torch.empty(mb*2**20//4),torch.empty(mb*2**20//4)
    a.fill_(1.); b.copy_(a)
    best = min(_timed(lambda: b.copy_(a)) for _ in range(reps))
    return 2*mb*2**20/best/1e9

def _timed(f):
    t = time.perf_counter(); f(); return time.perf_counter()-t

def stock_scale(args, n_users, n_items, n, n_trn, fast_best):
    "Stock fastai, one full epoch at each `--stock-bs` and thread count on the first `--stock-rows` ratings, with 25M-sized tables; its 25M epoch at the measured rate"
    df = scale_set(n_users, n_items, n, args.seed).iloc[:args.stock_rows]
    # `CollabDataLoaders.from_df` on all 25M ratings needs far more memory than this machine has free (it passed 4 GB RSS within
    # minutes), so stock's DataLoaders are built on the first `--stock-rows` ratings of the same set; its model has the
    # full-size tables, as `collab_learner` on all the data would build, so each optimizer step costs what it would on 25M.
    c = cpu_s()
    with PeakRSS() as mem: sdls = CollabDataLoaders.from_df(df, bs=args.stock_bs[0], seed=args.seed)
    c_dls,n_sub = cpu_s()-c,len(sdls.train_ds)
    lines = ['', f"Stock fastai (`CollabDataLoaders` + `EmbeddingDotBias` + fastai Adam, sampling with replacement) on the first {len(df):,} ratings "
             f"of the same set ({n_sub:,} train; on all 25M its `from_df` outgrows this machine's memory; building them took {c_dls:.1f} CPU-s, "
             f"peak RSS {mem.peak:.0f} MB), with tables of the full 25M size (each optimizer step costs what it would on 25M): one full epoch, "
             f"`fit_one_cycle(1, lr, wd=0.1)`, timed; its 25M epoch is that measured training rate applied to {n_trn:,} training ratings.", '',
             "| path | bs | lr | threads | epoch on the subset (training), CPU s | wall s | train ratings/s (CPU) | valid MSE on the subset | 25M epoch at that rate, CPU s | wall s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    best,rows = None,{}
    for bs,lr in zip(args.stock_bs, args.stock_lr):
        for th in args.scale_threads:
            torch.set_num_threads(th); sdls.train.bs = sdls.valid.bs = bs
            set_seed(args.seed)
            learn = Learner(sdls, EmbeddingDotBias(50, n_users+1, n_items+1, y_range=(0,5.5)), loss_func=MSELossFlat())
            r = fit(learn, lr, 1, 0.1, c_dls)
            torch.set_num_threads(1)
            cw,cc = r['trn'][0],r['cpu_trn'][0]
            ep_c,ep_w = cc*n_trn/n_sub,cw*n_trn/n_sub
            print(f"stock bs={bs} lr={lr:g} threads={th}: {cc:.1f} CPU-s / {cw:.1f} s wall training on {n_sub:,} ratings -> 25M epoch "
                  f"{ep_c:,.0f} CPU-s / {ep_w:,.0f} s wall; valid MSE {r['mses'][-1]:.4f}", flush=True)
            lines.append(f"| stock | {bs:,} | {lr:g} | {th} | {cc:.1f} | {cw:.1f} | {n_sub/cc:,.0f} | {r['mses'][-1]:.4f} | {ep_c:,.0f} | {ep_w:,.0f} |")
            if best is None or ep_w<best[0]: best = (ep_w,ep_c,bs,th)
            rows[bs,th] = (ep_w,ep_c,lr)
            del learn; gc.collect()
    lines += ['', f"Stock's fastest here: bs={best[2]:,}, {best[3]} thread(s): a 25M epoch at its measured rate takes {best[0]:,.0f} s wall "
              f"({best[1]:,.0f} CPU-s). Its valid MSE on the subset reflects the subset's few steps ({n_sub:,} training ratings make {n_sub//best[2]} steps of {best[2]:,}), "
              f"not the setting: at equal batch size and learning rate the two paths reach the same valid MSE (the quality table above)."]
    same = rows.get((fast_best[2], fast_best[5]))
    if same is not None:
        lines += ['', f"At the fast path's best setting (bs={fast_best[2]:,}, lr {fast_best[6]:g}, {fast_best[5]} thread(s)), stock's 25M epoch takes "
                  f"{same[0]:,.0f} s wall (lr {same[2]:g}) against the fast path's {fast_best[0]:.1f} s: **{same[0]/fast_best[0]:.1f}×** wall, "
                  f"{same[1]/fast_best[1]:.1f}× CPU."]
    return quality_1m(args, df, sdls)+lines

def quality_1m(args, df, sdls):
    "Valid MSE and CPU time of stock and fast at equal batch size and learning rate, on the first `--stock-rows` ratings (stock cannot train on 25M here)"
    lines = ['', f"Quality at equal batch size and learning rate, on the first {len(df):,} ratings of the same set (stock's DataLoaders cannot be built "
             f"on all 25M here): `fit_one_cycle({args.q_epochs}, lr, wd=0.1)`, n_factors=50, tables sized to the subset, one thread, sampling with replacement for both.", '',
             "| bs | lr | path | valid MSE per epoch | fit, CPU s | stock / fast, CPU |", "|---:|---:|---|---|---:|---:|"]
    for bs,lr in zip(args.q_bs, args.q_lr):
        cpu = {}
        for name in ('stock', 'fast'):
            if name=='stock': sdls.train.bs = sdls.valid.bs = bs; learn = collab_learner(sdls, n_factors=50, y_range=(0,5.5))
            else:
                d = TensorCollabDataLoaders.from_df(df, bs=bs, seed=args.seed, device='cpu', replace=True); d.train.sort_by = 0
                learn = fast_embeddings_learner(d)
            set_seed(args.seed)
            r = fit(learn, lr, args.q_epochs, 0.1, 0.)
            cpu[name] = r['cpu'][-1]
            ratio = f"{cpu['stock']/cpu['fast']:.1f}×" if name=='fast' else ''
            print(f"1M quality {name} bs={bs} lr={lr:g}: " + ' '.join(f'{m:.4f}' for m in r['mses']) + f" in {r['cpu'][-1]:.1f} CPU-s", flush=True)
            lines.append(f"| {bs:,} | {lr:g} | {name} | {' '.join(f'{m:.4f}' for m in r['mses'])} | {r['cpu'][-1]:.1f} | "
                         f"{ratio} |")
    return lines

def fast_embeddings_learner(dls, **kwargs):
    learn = fast_collab_learner(dls, n_factors=50, y_range=(0,5.5), opt_func=adamw_fused, **kwargs)
    fast_embeddings(learn.model)
    return learn

# --- main -----------------------------------------------------------------------------------------------------------

def wait_for_quiet(below:float, timeout:float=600):
    "Sleep until the 1-minute load average is below `below` (run under `flock -x /work/heavy.lock`, it falls as other jobs finish)"
    t = time.time()
    while os.getloadavg()[0]>=below and time.time()-t<timeout: time.sleep(5)
    print(f"# waited {time.time()-t:.0f} s for a 1-minute load average below {below}: now {load_avg()}", flush=True)

def header():
    print(f"# benchmarks/collab.py {' '.join(sys.argv[1:])}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}  host cpus={os.cpu_count()}  torch threads={torch.get_num_threads()}  "
          f"torch {torch.__version__}  python {platform.python_version()}")
    print(f"# load average (1/5/15 min): {load_avg()}  (shared machine: CPU time is the figure; wall time is noisy)", flush=True)

def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--scale', action='store_true', help='the MovieLens-25M-sized synthetic benchmark')
    p.add_argument('--profile', action='store_true', help='where a training batch of ML-100k spends its CPU time, stock and fast')
    p.add_argument('--profile-bs', type=int, default=1024)
    p.add_argument('--profile-epochs', type=int, default=2)
    p.add_argument('--smoke', action='store_true', help='tiny sizes: checks that the script runs; figures mean nothing')
    p.add_argument('--results', help=f'folder for the markdown tables, collab.md or collab_scale.md (default {RESULTS}; with --smoke: none written)')
    p.add_argument('--seed', type=int, default=42)
    p.add_argument('--bs', type=int, nargs='*', help=f'ML-100k batch sizes (default {BS})')
    p.add_argument('--lr', type=float, nargs='*', help=f'ML-100k learning rates (default {LRS})')
    p.add_argument('--epochs', type=int, nargs='*', help=f'ML-100k epochs of the one-cycle schedule (default {EPOCHS})')
    p.add_argument('--runs', type=int, default=3, help='runs of each setting; the median counts')
    p.add_argument('--sampling', nargs='*', default=list(SAMPLINGS), choices=list(SAMPLINGS), help='the samplings to compare (one table each)')
    p.add_argument('--target', type=float, default=TARGET, help='ML-100k: the valid MSE to reach')
    p.add_argument('--no-cut', action='store_true', help='ML-100k: run every setting to its target or its last epoch (no cut at the best time so far)')
    p.add_argument('--lesson-runs', type=int, default=3, help="ML-100k: runs of 07_collab's setting trained to the end under each sampling (0: skip)")
    p.add_argument('--quiet-load', type=float, default=1.5, help='wait (up to 10 minutes) for the 1-minute load average to fall below this before starting (0: no wait)')
    p.add_argument('--n-ratings', type=int, default=25_000_000)
    p.add_argument('--scale-bs', type=int, nargs='*', default=[262144, 131072, 65536])
    p.add_argument('--scale-opt', nargs='*', default=['fused:1e-1', 'fused:5e-2', 'fused:3e-2'], help='one per --scale-bs: fused|lazy:lr')
    p.add_argument('--scale-threads', type=int, nargs='*', default=[1, 2], help='--scale: torch threads of the fast runs (each bs is run with each)')
    p.add_argument('--scale-epochs', type=int, default=1, help='--scale: epochs of each fast run (the MSE is after the last)')
    p.add_argument('--scale-wd', type=float, default=0.01)
    p.add_argument('--scale-mse', type=float, default=0.43, help="--scale: the quality bar: the fast path's best setting is the fastest whose valid MSE is at or below it")
    p.add_argument('--stock-bs', type=int, nargs='*', default=[4096, 16384, 65536], help='--scale: stock batch sizes, one full epoch each on the subset')
    p.add_argument('--stock-lr', type=float, nargs='*', default=[2e-2, 3e-2, 3e-2], help='--scale: one per --stock-bs')
    p.add_argument('--no-stock', action='store_true', help='--scale: skip stock')
    p.add_argument('--q-epochs', type=int, default=3, help='--scale: epochs of the stock-vs-fast quality comparison')
    p.add_argument('--q-bs', type=int, nargs='*', default=[4096, 65536], help='--scale: batch sizes of the quality comparison (both paths at each)')
    p.add_argument('--q-lr', type=float, nargs='*', default=[2e-2, 3e-2], help='--scale: one per --q-bs')
    p.add_argument('--stock-rows', type=int, default=1_000_000, help='--scale: ratings the stock DataLoaders are built on')
    a = p.parse_args(argv)
    if a.smoke and a.stock_rows==1_000_000: a.stock_rows,a.stock_bs,a.q_bs,a.scale_mse = 50_000,[1024, 4096],[1024, 4096],10.
    return a

if __name__=='__main__':
    args = parse()
    torch.set_num_threads(1)
    header()
    if args.quiet_load and not args.smoke: wait_for_quiet(args.quiet_load)
    args.load0 = load_avg()
    md = scale(args) if args.scale else profile(args) if args.profile else ml100k(args)
    print('\n'+md)
    if args.results or not args.smoke:
        out = Path(args.results or RESULTS); out.mkdir(parents=True, exist_ok=True)
        (out/('collab_scale.md' if args.scale else 'collab_profile.md' if args.profile else 'collab.md')).write_text(md+'\n')
