#!/usr/bin/env python
"""Every CUDA path of the lesson run once, with figures: `make gpu-check` (or `python3 benchmarks/gpu_check.py`).

On a CUDA machine, in about 8 minutes and without network, it
- trains a timm convnext and a resnet from scratch on the synthetic Paddy set (480x640 JPEGs) at the lesson's size,
  with fp16 and with bf16 (fastai's `MixedPrecision`, through `paddy_collab.train.train`), checks that the loss falls
  and stays finite, and scores each member's TTA predictions and their `ensemble` on the test images;
- runs `step_mem`/`auto_accum` on CUDA (the lesson's memory per `accum` table, and the accum picked for the whole GPU
  and for a 16 GB Kaggle GPU);
- runs every `#| cuda` cell of the notebooks (found by scanning `nbs/**/*.ipynb`) through nbdev's own `test_nb`
  (benchmarks/run_lessons.py's `test_notebook`), with
  `PADDY_SCALE=tiny` so that the lesson's GPU-sized cells run at reduced size;
- times stock `collab_learner` and the fast path (`paddy_collab.fastcollab`) on MovieLens 100k with benchmarks/collab.py's
  `stock_run` and `fast_run` (both on the GPU), and one epoch of the 25M-rating synthetic set on the GPU;
- measures training images/s through the lesson's DataBlock at 480x640, as is and pre-resized once with fastai's
  `resize_images`, next to the loader alone and the GPU alone, and says which one is the bottleneck;
- writes `report.json` and `report.md` (GPU, torch/CUDA versions, times, memory) after every section.

Without CUDA it prints one line and exits 0. `GPU_CHECK_DRY=1` runs the same sections end to end at tiny size on the
CPU (CPU figures, fp32 where the GPU run uses fp16/bf16; the notebooks are scanned, and run only if `GPU_CHECK_NBS`
names them), in under 3 minutes on 2 cores.

The GPU machine's own python3 has torch, torchvision, timm, accelerate, pandas and matplotlib but no fastai, fastcore,
nbdev, ... and no registry: `make gpu-wheels` downloads the missing wheels into `.whl/` (about 60 MB), and
`bootstrap()` below installs those this python lacks with `pip install --no-index --no-deps --target` (or unzips them)
into a temporary folder put on `sys.path`. The working tree's `paddy_collab` is imported, not the wheel's copy.

The lead's one prepared command (device `run` tool, <= 8 minutes; first, here: `make gpu-wheels` and
`mkdir -p data/ml-100k && cp ../shared/data/ml-100k/u.data ../shared/data/ml-100k/u.item data/ml-100k/`, both
git-ignored; together about 58 MB of the 64 MiB a run may carry):

    run(command="python3 benchmarks/gpu_check.py --out $OUT 2>&1 | tail -c 11000",
        carry=[".whl", "data/ml-100k"], timeout_s=540)

then copy the returned `report.json`/`report.md` into `benchmarks/gpu/` and commit them. The report is rewritten
after every section, so a run cut short still returns what it measured. Options: `--budget` (seconds after which
the remaining sections are skipped, default 420), `--sections` (a subset), `--ml100k DIR`.
"""
from __future__ import annotations
import argparse, contextlib, importlib.metadata as md, json, math, os, platform, shutil, subprocess, sys
import tempfile, time, traceback, zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'benchmarks'))  # the sibling scripts it reuses: run_lessons (notebook runner), collab (collab timings, imported with fastai)
from run_lessons import flagged_notebooks, test_notebook
SECTIONS = ('env', 'train', 'accum', 'notebooks', 'collab', 'collab_25m', 'images')

# --- bootstrap: stdlib only, before anything imports fastai ----------------------------------------------------------

def wheel_dist(whl:Path)->str: return whl.name.split('-')[0]  # PEP 427: {distribution}-{version}-...

def is_installed(dist:str)->bool:
    "Whether this python already has distribution `dist` (names compare normalised)."
    try: md.distribution(dist); return True
    except md.PackageNotFoundError: return False

def _unzip_wheel(whl:Path, target:Path):
    "Install a wheel by unzipping it (what pip does for a pure-Python wheel, less scripts): the fallback without pip."
    with zipfile.ZipFile(whl) as z:
        for n in z.namelist():
            parts = n.split('/')
            if parts[0].endswith('.data'):  # {dist}.data/purelib|platlib/... goes to the top; scripts/headers/data are skipped
                if len(parts) < 3 or parts[1] not in ('purelib', 'platlib'): continue
                dest = target.joinpath(*parts[2:])
            else: dest = target/n
            if n.endswith('/'): continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(z.read(n))

FORCE = {'setuptools': 'pkg_resources'}  # installed from the wheels even if present, when this module is missing (setuptools >= 81 dropped it; nbdev imports it)

def _lacks(whl:Path)->bool:
    "Whether this python lacks the distribution of `whl` (or, for those in `FORCE`, the module it must provide)."
    import importlib.util
    d = wheel_dist(whl)
    return not is_installed(d) or (d in FORCE and importlib.util.find_spec(FORCE[d]) is None)

def bootstrap(wheels=ROOT/'.whl', # folder of wheels (`make gpu-wheels`)
              target=None, # where to install them; default a folder in the temp dir
             )->dict: # what was installed where
    "Install the wheels of `wheels` whose distributions this python lacks into `target`; put `target` and the tree on `sys.path`."
    wheels, target = Path(wheels), Path(target or Path(tempfile.gettempdir())/f'gpu_check_site_py{sys.version_info[0]}{sys.version_info[1]}')
    need = [w for w in sorted(wheels.glob('*.whl')) if _lacks(w)] if wheels.is_dir() else []
    stamp, how = target/'.installed', 'nothing to install'
    if need and not (stamp.exists() and stamp.read_text() == '\n'.join(w.name for w in need)):
        shutil.rmtree(target, ignore_errors=True); target.mkdir(parents=True)
        r = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--disable-pip-version-check', '--no-index', '--no-deps',
                            '--target', str(target), *map(str, need)], capture_output=True, text=True)
        if r.returncode == 0: how = 'pip install --no-index --no-deps --target'
        else:
            for w in need: _unzip_wheel(w, target)
            how = f'unzipped (pip failed: {(r.stderr or r.stdout).strip().splitlines()[-1:]})'
        stamp.write_text('\n'.join(w.name for w in need))
    elif need: how = 'already installed by an earlier run'
    for p in ([str(target)] if need else []) + [str(ROOT)]:
        if p in sys.path: sys.path.remove(p)
        sys.path.insert(0, p)
    os.environ['PYTHONPATH'] = os.pathsep.join(([str(target)] if need else []) + [str(ROOT)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])
    return dict(wheels_dir=str(wheels), installed=[w.name for w in need], target=str(target) if need else None, how=how)

# --- small helpers --------------------------------------------------------------------------------------------------

def cpu_s()->float: t = os.times(); return t.user + t.system + t.children_user + t.children_system
def loadavg()->str:
    try: return ' '.join(f'{x:.2f}' for x in os.getloadavg())
    except OSError: return 'n/a'
def gib(b)->float: return round(b/2**30, 3)

class Clock:
    "Wall and CPU seconds of a `with` block: `.wall`, `.cpu`."
    def __enter__(self): self.t, self.c = time.perf_counter(), cpu_s(); return self
    def __exit__(self, *a): self.wall, self.cpu = round(time.perf_counter()-self.t, 2), round(cpu_s()-self.c, 2)

def cuda_sync():
    import torch
    if torch.cuda.is_available(): torch.cuda.synchronize()

def peak_reset():
    import torch
    if torch.cuda.is_available(): torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()

def peak_gib():
    import torch
    return gib(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None

def bars_on_terminal_only():
    "No progress bar unless stdout is a terminal: a piped log gets fastai's lines, never fastprogress's `\\r` bar fragments."
    if sys.stdout.isatty(): return
    import fastprogress.fastprogress as fp
    from fastai.learner import defaults
    from fastai.callback.progress import ProgressCallback
    fp.NO_BAR = True  # fastprogress 1.1's `printing()` tests `stdout.isatty` without calling it, so it draws bars into pipes
    defaults.callbacks = [c for c in defaults.callbacks if c is not ProgressCallback]  # a console bar writes '█\r' as soon as it is made

_FAILS = []  # the current section's failed checks
def check(cond, msg):
    "Record a figure outside its expected range: the section is marked failed, its figures are kept."
    if not cond: _FAILS.append(msg)

# --- sizes: the GPU run and the CPU dry run ---------------------------------------------------------------------------

def config(dry:bool)->dict:
    "Every size the sections use; the dry run's are tiny."
    W = 0 if dry else min(8, os.cpu_count() or 1)
    if dry: return dict(dry=True, workers=W, synth=dict(n_per_class=6, n_test=10, size=(48, 64)),
                        archs=['convnext_atto', 'resnet10t'], size=32, epochs=3, lr=3e-3, bs=16, n_tta=2, precisions=['fp32'],
                        accum_arch='resnet10t', accum_size=32, kaggle_gib=16,
                        collab=dict(top=150, epochs=2, bs=64), big=dict(n_users=2_000, n_items=1_500, n=200_000, bs=8_192, lr=1e-1),
                        images=dict(n=64, bs=8, size=32, arch='resnet10t', small=48, gpu_iters=3), nb_timeout=170)
    return dict(dry=False, workers=W, synth=dict(n_per_class=50, n_test=100, size=(480, 640)),
                archs=['convnext_small', 'resnet26d'], size=224, epochs=4, lr=2e-3, bs=64, n_tta=4, precisions=['fp16', 'bf16'],
                accum_arch='convnext_large', accum_size=224, kaggle_gib=16,
                collab=dict(top=None, epochs=5, bs=64), big=dict(n_users=162_541, n_items=59_047, n=25_000_000, bs=262_144, lr=1e-1),
                images=dict(n=4096, bs=64, size=224, arch='resnet26d', small=256, gpu_iters=20), nb_timeout=240)

# --- sections ---------------------------------------------------------------------------------------------------------

def sec_env(cfg, state)->dict:
    "Machine, GPU and library versions."
    import torch, timm, fastai, fastcore, paddy_collab
    r = dict(python=platform.python_version(), platform=platform.platform(), cpus=os.cpu_count(), torch=torch.__version__,
             cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
             timm=timm.__version__, fastai=fastai.__version__, fastcore=fastcore.__version__, paddy_collab=paddy_collab.__version__,
             paddy_collab_from=str(Path(paddy_collab.__file__).parent), cuda_available=torch.cuda.is_available(), bootstrap=state['bootstrap'])
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        r.update(gpu=p.name, gpu_count=torch.cuda.device_count(), gpu_mem_gib=gib(p.total_memory), capability=f'{p.major}.{p.minor}',
                 bf16_supported=torch.cuda.is_bf16_supported())
    else: r.update(gpu=None, gpu_count=0)
    return r

def synth_set(cfg, state)->Path:
    "The synthetic competition folder every Paddy section shares (with the test labels in `solution.csv`)."
    if 'paddy' not in state:
        from paddy_collab.synth import synth_paddy
        with Clock() as c: state['paddy'] = synth_paddy(state['work']/'paddy', **cfg['synth'], solution=True)
        state['synth_s'] = c.wall
    return state['paddy']

def _test_error(ps, path)->float:
    import pandas as pd
    sol = pd.read_csv(path/'solution.csv', dtype=str).set_index('image_id').label
    return round(float((pd.Series(ps.labels('disease'), index=ps.files) != sol[ps.files]).mean()), 4)

def sec_train(cfg, state)->dict:
    "convnext and resnet from scratch in each precision: loss falls and is finite; TTA, and the ensemble of the two."
    import torch
    from paddy_collab.train import train
    from paddy_collab.ensemble import ensemble
    path = synth_set(cfg, state)
    runs, ens, chance = [], [], 0.9
    for prec in cfg['precisions']:
        members = []
        for arch in cfg['archs']:
            peak_reset()
            with Clock() as c:
                ps, learn = train(arch, cfg['size'], path=path, epochs=cfg['epochs'], lr=cfg['lr'], bs=cfg['bs'], pretrained=False,
                                  finetune=False, precision=prec, num_workers=cfg['workers'], n_tta=cfg['n_tta'], return_learner=True, show=False)
            losses = [float(l) for l in learn.recorder.losses]
            vals = [[None if v is None else float(v) for v in row] for row in learn.recorder.values]
            r = dict(arch=arch, precision=ps.meta['precision'], requested=prec, size=cfg['size'], epochs=cfg['epochs'], secs=c.wall, cpu_s=c.cpu,
                     peak_gib=peak_gib(), train_loss_first=round(losses[0], 4), train_loss_last=round(losses[-1], 4),
                     valid_loss=[round(v[1], 4) for v in vals], valid_error=[round(v[2], 4) for v in vals],
                     finite=all(map(math.isfinite, losses)) and all(math.isfinite(v[1]) for v in vals), tta_test_error=_test_error(ps, path))
            r['loss_falls'] = r['finite'] and r['train_loss_last'] < r['train_loss_first']
            runs.append(r); members.append(ps)
            print(f"  train {arch} {r['precision']}: {c.wall:.1f}s, loss {r['train_loss_first']:.3f} -> {r['train_loss_last']:.3f}, "
                  f"valid error {r['valid_error'][-1]:.3f}, TTA test error {r['tta_test_error']:.3f}, peak {r['peak_gib']} GiB", flush=True)
            del learn; torch.cuda.empty_cache() if torch.cuda.is_available() else None
        e = ensemble(members)
        check(all(torch.allclose(p.sum(1), torch.ones(len(p)), atol=1e-4) for p in e.probs), 'ensemble probabilities do not sum to 1')
        ens.append(dict(precision=prec, members=[_test_error(m, path) for m in members], ensemble=_test_error(e, path)))
    res = dict(data=dict(path_images=sum(1 for _ in (path/'train_images').rglob('*.jpg')), image_size=list(cfg['synth']['size']),
                         synth_s=state.get('synth_s')), runs=runs, ensemble=ens, chance_error=chance)
    bad = [f"{r['arch']} {r['precision']}" for r in runs if not r['loss_falls']]
    check(not bad, f"loss did not fall (or is not finite) for {bad}")
    return res

def sec_accum(cfg, state)->dict:
    "The lesson's memory per `accum` table on this device, and the accum `auto_accum` picks (whole GPU, and a 16 GB Kaggle GPU)."
    import torch
    from paddy_collab.memory import step_mem, auto_accum, fitting_accum
    arch, size, bs = cfg['accum_arch'], cfg['accum_size'], 64
    table = {}
    for a in (1, 2, 4):
        with Clock() as c: m = step_mem(arch, size, bs//a)
        table[a] = dict(batch=bs//a, total_gib=gib(m['total']), activations_gib=gib(m['activations']), params_gib=gib(m['params']), secs=c.wall)
        print(f"  step_mem {arch} {size}px accum={a} (batch {bs//a}): {table[a]['total_gib']:.2f} GiB", flush=True)
    check(table[1]['total_gib'] > table[2]['total_gib'] > table[4]['total_gib'] > 0, f'memory does not shrink with accum: {table}')
    r = dict(arch=arch, size=size, bs=bs, measured='CUDA peak' if torch.cuda.is_available() else 'counted (CPU)', per_accum=table)
    with Clock() as c: r['auto_accum'] = auto_accum(arch, size, bs=bs)
    r['auto_accum_s'] = c.wall
    if torch.cuda.is_available(): r['free_gib'] = gib(torch.cuda.mem_get_info()[0])
    budget = 0.9*cfg['kaggle_gib']*2**30
    if not torch.cuda.is_available(): budget = (table[1]['total_gib'] + table[2]['total_gib'])/2*2**30  # dry run: a budget that needs accum 2
    def within_budget(b):  # a step that runs out of memory, as on a GPU of that size, when it needs more than the budget
        if step_mem(arch, size, b)['total'] > budget: raise RuntimeError(f'CUDA out of memory. (over the {gib(budget):.1f} GiB budget)')
    r['budget_gib'], r['accum_for_budget'] = gib(budget), fitting_accum(within_budget, bs)
    print(f"  auto_accum({arch!r}, {size}) on this device: {r['auto_accum']}; within {r['budget_gib']:.1f} GiB: {r['accum_for_budget']}", flush=True)
    return r

def sec_notebooks(cfg, state)->dict:
    "Every notebook with `#| cuda` or `#| slow` cells (the lessons' training runs) through nbdev's `test_nb`, those cells forced, `PADDY_SCALE=tiny`."
    found = {n: flagged_notebooks('cuda').get(n, 0) + flagged_notebooks('slow').get(n, 0) for n in {**flagged_notebooks('cuda'), **flagged_notebooks('slow')}}
    found = dict(sorted(found.items()))
    check(found, 'no notebook has a #| cuda or #| slow cell: the scan is broken')
    want = os.environ.get('GPU_CHECK_NBS')
    todo = [n for n in found if (want is None and not cfg['dry']) or (want and any(Path(n).match(w) or n == w for w in want.split(',')))]
    r = dict(found=found, scale='tiny', runs={})
    if cfg['dry'] and not todo: r['note'] = 'dry run: notebooks scanned, not run (GPU_CHECK_NBS=nbs/04_train.ipynb,... runs them on the CPU)'
    for nb in todo:
        left = state['deadline'] - time.monotonic() - 20
        if left < 30: r['runs'][nb] = dict(ok=None, skipped='time budget spent'); continue
        r['runs'][nb] = res = test_notebook(nb, min(cfg['nb_timeout'], left), force_flags=('cuda', 'slow'), PADDY_SCALE='tiny', HF_HUB_OFFLINE='1', MPLBACKEND='Agg')
        print(f"  {nb}: {'ok' if res['ok'] else 'FAILED'} in {res.get('wall')}s", flush=True)
    bad = [n for n, x in r['runs'].items() if x.get('ok') is False]
    check(not bad, f'notebooks failed: {bad}')
    return r

def ml100k_ratings(args):
    "MovieLens 100k (user, title, rating) from `--ml100k`, `$ML100K_SRC`, `data/ml-100k` in the tree or `../shared`; else None."
    from paddy_collab.core import find_ml100k_src
    for p in [args.ml100k, os.environ.get('ML100K_SRC'), ROOT/'data'/'ml-100k', find_ml100k_src()]:
        if p and (Path(p)/'u.data').exists():
            from paddy_collab.collab_data import load_movielens
            return load_movielens(Path(p))[['user', 'title', 'rating']], str(p)
    return None, None

def _collab_fit(res:dict)->dict:
    "The figures of one of benchmarks/collab.py's runs: seconds and CPU seconds to the last epoch's end, its valid MSE."
    return dict(secs=round(res['wall'][-1], 2), cpu_s=round(res['cpu'][-1], 2), valid_mse=round(res['mses'][-1], 4), dls_cpu_s=round(res['c_dls'], 2))

def sec_collab(cfg, state)->dict:
    "benchmarks/collab.py's `stock_run` (`CollabDataLoaders` + `collab_learner`) and `fast_run` (the fast path), the lesson's settings, on MovieLens 100k."
    import torch
    from fastai.torch_core import default_device
    from collab import stock_run, fast_run  # benchmarks/collab.py
    from paddy_collab.collab_data import lowrank_ratings
    ratings, src = ml100k_ratings(state['args'])
    if ratings is None:
        df = lowrank_ratings(seed=0, n_factors=8, noise=0.5, item_name='item', item_fmt=None); ratings = df.rename(columns={'item': 'title'})
        src = 'synthetic (paddy_collab.collab_data.lowrank_ratings, MovieLens 100k-sized): no ml-100k folder found'
        print(f'  collab: {src}', flush=True)
    if cfg['collab']['top']:  # dry run: the densest corner (most active users, most rated movies), which a short fit learns
        top = lambda col: ratings[col].value_counts().index[:cfg['collab']['top']]
        ratings = ratings[ratings.user.isin(top('user')) & ratings.title.isin(top('title'))].reset_index(drop=True)
    c, r = cfg['collab'], dict(data=src, n_ratings=len(ratings))
    r.update(settings=dict(bs=c['bs'], epochs=c['epochs'], lr=5e-3, wd=0.1, n_factors=50, y_range=[0, 5.5], sampling='replace'))
    y = torch.tensor(ratings.rating.values, dtype=torch.float32)
    mean_mse = float(((y - y.mean())**2).mean())
    dev = str(default_device())
    for name, run, kw in (('stock', stock_run, {}), ('fast', fast_run, dict(device=dev))):  # both on this device
        r[name] = dict(device=dev, **_collab_fit(run(ratings, c['bs'], 5e-3, c['epochs'], 42, **kw)))
        print(f"  collab {name} ({dev}): {r[name]['secs']:.1f}s fit, valid MSE {r[name]['valid_mse']:.4f}", flush=True)
    r['predict_mean_mse'] = round(mean_mse, 4)
    r['speedup'] = round(r['stock']['secs']/r['fast']['secs'], 2)
    for k in ('stock', 'fast'): check(r[k]['valid_mse'] < mean_mse, f"{k}: valid MSE {r[k]['valid_mse']} is not below predicting the mean ({mean_mse:.4f})")
    return r

def sec_collab_25m(cfg, state)->dict:
    "One epoch of the MovieLens-25M-sized synthetic set (benchmarks/collab.py's `scale_set`) with the fast path on this device."
    import gc, torch
    from fastai.torch_core import set_seed
    from paddy_collab.fastcollab import TensorCollabDataLoaders, fast_collab_learner, fast_embeddings, adamw_fused
    from collab import scale_set, fit  # benchmarks/collab.py
    b = cfg['big']
    with Clock() as cg: df = scale_set(b['n_users'], b['n_items'], b['n'], seed=0)
    with Clock() as cd: dls = TensorCollabDataLoaders.from_df(df, bs=b['bs'], seed=42, idx_dtype=torch.int32, y_dtype=torch.bfloat16)
    del df; gc.collect()
    y = dls.valid_ds.y.float(); base = float(((y - dls.train_ds.y.float().mean())**2).mean())
    set_seed(42); peak_reset()
    learn = fast_collab_learner(dls, n_factors=50, y_range=(0, 5.5), opt_func=adamw_fused)
    fast_embeddings(learn.model)
    f = _collab_fit(fit(learn, b['lr'], 1, 0.01, cd.cpu))
    r = dict(n_ratings=b['n'], n_users=b['n_users'], n_items=b['n_items'], bs=b['bs'], lr=b['lr'], device=str(dls.device),
             generate_s=cg.wall, dls_s=cd.wall, epoch_s=f['secs'], epoch_cpu_s=f['cpu_s'], valid_mse=f['valid_mse'],
             predict_mean_mse=round(base, 4), ratings_per_s=round(len(dls.train_ds)/f['secs']), peak_gib=peak_gib())
    print(f"  25M-sized: one epoch {r['epoch_s']:.1f}s ({r['ratings_per_s']:,} ratings/s), valid MSE {r['valid_mse']} vs mean {r['predict_mean_mse']}", flush=True)
    check(r['valid_mse'] < base, f"valid MSE {r['valid_mse']} not below predicting the mean {base:.4f}")
    return r

def _replicate(src:Path, dest:Path, n:int)->Path:
    "A competition folder of `n` training images made of hard links to `src`'s (same JPEGs, so the same decode cost)."
    import pandas as pd
    df = pd.read_csv(src/'train.csv', dtype=str)
    rows = []
    for k in range(math.ceil(n/len(df))):
        for t in df.itertuples():
            if len(rows) == n: break
            fn = f'{k}_{t.image_id}'
            d = dest/'train_images'/t.label/fn; d.parent.mkdir(parents=True, exist_ok=True)
            s = src/'train_images'/t.label/t.image_id
            try: os.link(s, d)
            except OSError: shutil.copy(s, d)
            rows.append((fn, t.label, t.variety, t.age))
    pd.DataFrame(rows, columns=['image_id', 'label', 'variety', 'age']).to_csv(dest/'train.csv', index=False)
    return dest

def _warm(dl)->int: return 3 if len(dl) >= 8 else 1  # batches left out of a rate: worker start-up, cuDNN autotuning

def _loader_rate(dl)->float:
    "Images/s of iterating `dl` alone (decode, item and batch transforms), after the first batches."
    n, t, warm = 0, None, _warm(dl)
    for i, (xb, *_) in enumerate(dl):
        if i == warm: cuda_sync(); t = time.perf_counter()
        if i >= warm: n += len(xb)
    cuda_sync()
    return round(n/(time.perf_counter()-t), 1)

def _train_rate(dls, arch, prec)->float:
    "Images/s of one training epoch (loader + forward + backward + step), after the first batches."
    warm = _warm(dls.train)
    from fastai.callback.core import Callback
    from fastai.vision.learner import vision_learner
    from paddy_collab.train import set_precision
    class Rate(Callback):
        def before_batch(self):
            if self.training and self.iter == warm: cuda_sync(); self.t0, self.n = time.perf_counter(), 0
        def after_batch(self):
            if self.training and self.iter >= warm: self.n += len(self.xb[0])
        def after_train(self): cuda_sync(); self.rate = self.n/(time.perf_counter()-self.t0)
    learn = vision_learner(dls, arch, pretrained=False, cbs=Rate())
    set_precision(learn, prec)
    with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    return round(learn.rate.rate, 1)

def _gpu_rate(arch, size, bs, prec, iters)->float:
    "Images/s of training steps on one batch already on the device: the model alone, no loading."
    import torch, timm, torch.nn.functional as F
    dev = 'cuda' if torch.cuda.is_available() else 'cpu'
    m = timm.create_model(arch, pretrained=False, num_classes=10).to(dev).train()
    opt = torch.optim.AdamW(m.parameters(), 1e-3)
    x, y = torch.randn(bs, 3, size, size, device=dev), torch.randint(0, 10, (bs,), device=dev)
    dt = {'fp16': torch.float16, 'bf16': torch.bfloat16}.get(prec)
    scaler = torch.amp.GradScaler(dev, enabled=prec == 'fp16')
    def step():
        with torch.autocast(dev, dtype=dt or torch.float32, enabled=dt is not None): loss = F.cross_entropy(m(x), y)
        opt.zero_grad(); scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
    for _ in range(2): step()
    cuda_sync(); t = time.perf_counter()
    for _ in range(iters): step()
    cuda_sync()
    return round(iters*bs/(time.perf_counter()-t), 1)

def sec_images(cfg, state)->dict:
    "Training images/s through the lesson's DataBlock at 480x640, as is and pre-resized once (`resize_images`): which is the bottleneck?"
    from fastai.vision.augment import Resize
    from fastai.vision.utils import resize_images
    from paddy_collab.paddy_data import paddy_dls
    c = cfg['images']; prec = cfg['precisions'][0]
    rep = _replicate(synth_set(cfg, state), state['work']/'rep', c['n'])
    small = state['work']/'small'; small.mkdir()
    with Clock() as cr: resize_images(rep/'train_images', max_size=c['small'], recurse=True, dest=small/'train_images', max_workers=max(1, cfg['workers']))
    shutil.copy(rep/'train.csv', small/'train.csv')
    r = dict(images=c['n'], bs=c['bs'], size=c['size'], arch=c['arch'], precision=prec, workers=cfg['workers'], resize_images_s=cr.wall,
             resized_to=f"max_size={c['small']}", gpu_only=_gpu_rate(c['arch'], c['size'], c['bs'], prec, c['gpu_iters']))
    for name, path, item in (('as_is', rep, None), ('resized', small, Resize(c['small'], method='squish'))):
        dls = paddy_dls(path, size=c['size'], item_tfms=item, bs=c['bs'], num_workers=cfg['workers'], valid_pct=0.05, check=False)
        rs = dls.after_item.fs.filter(lambda t: t.name.startswith('Resize'))
        r[name] = dict(item_tfms=', '.join(f"Resize({t.size}, {t.method})" for t in rs), loader=_loader_rate(dls.train),
                       train=_train_rate(dls, c['arch'], prec))
        print(f"  images/s {name}: loader {r[name]['loader']}, training {r[name]['train']} (GPU alone {r['gpu_only']})", flush=True)
    if cfg['workers'] != 4 and (os.cpu_count() or 1) >= 4 and not cfg['dry']:  # Kaggle's GPU kernels have 4 CPUs
        dls = paddy_dls(rep, size=c['size'], bs=c['bs'], num_workers=4, valid_pct=0.05, check=False)
        r['as_is']['loader_4_workers'] = _loader_rate(dls.train)
    ai = r['as_is']
    r['bottleneck'] = ('CPU: decoding and resizing the 480x640 JPEGs' if ai['loader'] < 0.9*r['gpu_only'] else 'GPU: the model')
    r['resize_speedup'] = round(r['resized']['train']/ai['train'], 2)
    check(min(ai['loader'], ai['train'], r['resized']['train'], r['gpu_only']) > 0, 'a rate is not positive')
    return r

FUNCS = dict(env=sec_env, train=sec_train, accum=sec_accum, notebooks=sec_notebooks, collab=sec_collab, collab_25m=sec_collab_25m, images=sec_images)

# --- report ---------------------------------------------------------------------------------------------------------

def _fmt(v):
    if isinstance(v, float): return f'{v:g}'
    if isinstance(v, (dict, list)): return '`' + json.dumps(v, default=str)[:300] + '`'
    return str(v)

def markdown(rep:dict)->str:
    "The report as markdown: a header line, then one table per section."
    m, e = rep['meta'], rep.get('env', {})
    out = [f"# GPU check{' (DRY RUN on the CPU: tiny sizes, CPU figures)' if m['dry'] else ''}", '',
           f"`{m['command']}`: {m['started']}, {m['wall_s']} s wall, {m['cpu_s']} s CPU, load average {m['load_start']} -> {m['load_end']}. "
           f"GPU: {e.get('gpu')} ({e.get('gpu_mem_gib')} GiB); torch {e.get('torch')}, CUDA {e.get('cuda')}, cuDNN {e.get('cudnn')}, "
           f"timm {e.get('timm')}, fastai {e.get('fastai')}, python {e.get('python')}, {e.get('cpus')} CPUs.", '']
    for s in SECTIONS:
        if s == 'env' or s not in rep: continue
        x = rep[s]
        out += [f"## {s}: {x.get('status')} ({x.get('secs')} s)", '']
        if x.get('error'): out += ['```', x['error'][-1500:], '```', '']
        if s == 'train' and x.get('runs'):
            out += ['| arch | precision | size | epochs | s | peak GiB | train loss first -> last | valid error | TTA test error |', '|---|---|---:|---:|---:|---:|---|---:|---:|']
            out += [f"| {r['arch']} | {r['precision']} | {r['size']} | {r['epochs']} | {r['secs']} | {r['peak_gib']} | {r['train_loss_first']} -> {r['train_loss_last']} | "
                    f"{r['valid_error'][-1]} | {r['tta_test_error']} |" for r in x['runs']]
            out += ['', *(f"ensemble ({z['precision']}): members' TTA test errors {z['members']}, ensemble {z['ensemble']} (chance 0.9)" for z in x.get('ensemble', [])), '']
            continue
        if s == 'accum' and x.get('per_accum'):
            out += [f"{x['arch']} at {x['size']} px, effective batch {x['bs']}, {x['measured']}:", '', '| accum | batch | total GiB | activations GiB |', '|---:|---:|---:|---:|']
            out += [f"| {a} | {t['batch']} | {t['total_gib']} | {t['activations_gib']} |" for a, t in x['per_accum'].items()]
            out += ['', f"auto_accum on this device: {x.get('auto_accum')}; within {x.get('budget_gib')} GiB: {x.get('accum_for_budget')}", '']
            continue
        out += ['| figure | value |', '|---|---|'] + [f"| {k} | {_fmt(v)} |" for k, v in x.items() if k not in ('status', 'secs', 'error')] + ['']
    return '\n'.join(out)

def write_report(rep, out:Path):
    out.mkdir(parents=True, exist_ok=True)
    (out/'report.json').write_text(json.dumps(rep, indent=1, default=str))
    (out/'report.md').write_text(markdown(rep))

# --- main -------------------------------------------------------------------------------------------------------------

def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', help='report folder (default benchmarks/gpu, or outputs/gpu_check_dry for a dry run)')
    p.add_argument('--dry', action='store_true', default=os.environ.get('GPU_CHECK_DRY', '') not in ('', '0'), help='tiny sizes on the CPU ($GPU_CHECK_DRY=1)')
    p.add_argument('--budget', type=float, help='seconds after which the remaining sections are skipped (default 420; dry run 900)')
    p.add_argument('--sections', default=','.join(SECTIONS), help=f'comma-separated subset of {",".join(SECTIONS)}')
    p.add_argument('--ml100k', help='the grouplens ml-100k folder (default $ML100K_SRC, data/ml-100k, ../shared/data/ml-100k)')
    p.add_argument('--wheels', default=str(ROOT/'.whl'), help='wheels to install where missing (make gpu-wheels)')
    return p.parse_args(argv)

def main(argv=None)->int:
    args = parse(argv)
    try:
        import torch
        cuda = torch.cuda.is_available()
    except ImportError: torch, cuda = None, False
    if not cuda and not args.dry:
        print(f"gpu-check: no CUDA GPU here ({'no torch' if torch is None else f'torch {torch.__version__}: torch.cuda.is_available() is False'}); "
              "nothing measured. GPU_CHECK_DRY=1 make gpu-check runs the same check at tiny size on the CPU.")
        return 0
    t0, c0 = time.perf_counter(), cpu_s()
    boot = bootstrap(args.wheels)
    os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('MPLBACKEND', 'Agg')
    import warnings; warnings.filterwarnings('ignore')
    bars_on_terminal_only()
    if args.dry: torch.set_num_threads(min(2, os.cpu_count() or 1))
    cfg = config(args.dry)
    out = Path(args.out or (ROOT/'outputs'/'gpu_check_dry' if args.dry else ROOT/'benchmarks'/'gpu'))
    budget = args.budget or (900 if args.dry else 420)  # the dry run checks every section: it skips none unless very slow
    cmd = ' '.join(['GPU_CHECK_DRY=1' if args.dry and os.environ.get('GPU_CHECK_DRY') else '', 'python', 'benchmarks/gpu_check.py', *(argv if argv is not None else sys.argv[1:])]).strip()
    rep = dict(meta=dict(dry=args.dry, command=cmd, started=time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()), budget_s=budget,
                         load_start=loadavg(), config={k: v for k, v in cfg.items()}))
    work = Path(tempfile.mkdtemp(prefix='gpu_check_'))
    state = dict(args=args, work=work, bootstrap=boot, deadline=time.monotonic() + budget)
    want, failed = args.sections.split(','), []
    try:
        for s in SECTIONS:
            if s not in want: continue
            t = time.perf_counter()
            if time.monotonic() > state['deadline'] and s != 'env': res, status, err = {}, 'skipped', f'time budget of {budget:g}s spent'
            else:
                print(f'gpu-check: {s} ...', flush=True)
                _FAILS.clear()
                try:
                    res = FUNCS[s](cfg, state)
                    status, err = ('failed', 'check failed: ' + '; '.join(_FAILS)) if _FAILS else ('ok', None)
                except Exception as e: res, status, err = {}, 'failed', ''.join(traceback.format_exception(type(e), e, e.__traceback__))[-3000:]
            rep[s] = dict(status=status, secs=round(time.perf_counter()-t, 1), **({} if err is None else dict(error=err)), **res)
            if status != 'ok': failed.append(f'{s} ({status})'); print(f'gpu-check: {s} {status.upper()}: {err[-600:]}', flush=True)
            rep['meta'].update(wall_s=round(time.perf_counter()-t0, 1), cpu_s=round(cpu_s()-c0, 1), load_end=loadavg())
            write_report(rep, out)
    finally: shutil.rmtree(work, ignore_errors=True)
    print(f"gpu-check: {'all sections ok' if not failed else 'FAILED: ' + ', '.join(failed)} in {rep['meta']['wall_s']} s; report in {out}/report.md")
    return 1 if failed else 0

if __name__ == '__main__': sys.exit(main())
