"Gradient accumulation: 4 accumulated batches of 16 make the same update as one batch of 64 (no BatchNorm), by hand and through fastai."
import copy
from functools import partial
import pytest, torch
from torch import nn
import torch.nn.functional as F
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.learner import Learner
from fastai.optimizer import SGD
from fastai.callback.training import GradientAccumulation
import fastai.callback.progress  # no_bar
from paddy_collab.gradacc import train_accum

TOL = {torch.float64: 1e-6, torch.float32: 1e-5}

def mlp(dtype, bn=False):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 32), *([nn.BatchNorm1d(32)] if bn else []), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3)).to(dtype)

def xy(n, dtype):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 10, generator=g, dtype=dtype), torch.randint(0, 3, (n,), generator=g)

def max_diff(m1, m2): return max((a - b).abs().max().item() for a, b in zip(m1.parameters(), m2.parameters()))

def big_step(m, x, y, lr=0.1):
    m = copy.deepcopy(m); opt = torch.optim.SGD(m.parameters(), lr=lr)
    F.cross_entropy(m(x), y).backward(); opt.step()
    return m

def by_hand(m, x, y, bs, n_acc, lr=0.1, **kw):
    m = copy.deepcopy(m)
    res = train_accum(m, torch.optim.SGD(m.parameters(), lr=lr), F.cross_entropy, zip(x.split(bs), y.split(bs)), n_acc=n_acc, **kw)
    return m, res

def with_fastai(m, x, y, bs, n_acc, lr=0.1, epochs=1):
    m = copy.deepcopy(m)
    dls = DataLoaders(DataLoader(list(zip(x, y)), bs=bs, shuffle=False), DataLoader(list(zip(x[:8], y[:8])), bs=8))
    learn = Learner(dls, m, loss_func=F.cross_entropy, opt_func=partial(SGD, mom=0.), lr=lr, cbs=GradientAccumulation(n_acc))
    if x.dtype == torch.float64: learn.remove_cb(learn.recorder)  # its float32 loss smoothing fails on a float64 loss
    with learn.no_bar(), learn.no_logging(): learn.fit(epochs)
    return m, learn

@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_accumulated_equals_big_batch(dtype):
    x, y = xy(64, dtype); m0 = mlp(dtype)
    big = big_step(m0, x, y)
    assert max_diff(big, m0) > 1e-3  # the step moves the weights: equality below is not trivial
    hand, (steps, left) = by_hand(m0, x, y, bs=16, n_acc=64)
    assert (steps, left) == (1, 0)
    fa, _ = with_fastai(m0, x, y, bs=16, n_acc=64)
    assert max_diff(big, hand) < TOL[dtype]
    assert max_diff(big, fa) < TOL[dtype]
    assert max_diff(hand, fa) < TOL[dtype]

@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_comparison_can_fail(dtype):
    "Stepping every 32 samples instead of 64 gives a different result, well outside the tolerance."
    x, y = xy(64, dtype); m0 = mlp(dtype)
    big = big_step(m0, x, y)
    hand, (steps, _) = by_hand(m0, x, y, bs=16, n_acc=32)
    fa, _ = with_fastai(m0, x, y, bs=16, n_acc=32)
    assert steps == 2
    assert max_diff(big, hand) > 100*TOL[dtype] and max_diff(big, fa) > 100*TOL[dtype]
    assert max_diff(hand, fa) < TOL[dtype]  # but by hand and fastai still agree

def test_n_acc_counts_samples_not_batches():
    "`GradientAccumulation(4)` with batches of 16 (n_acc taken for a number of batches) steps every batch with 4x the gradient."
    x, y = xy(16, torch.float64); m0 = mlp(torch.float64)
    slip, _ = with_fastai(m0, x, y, bs=16, n_acc=4)
    assert max_diff(slip, big_step(m0, x, y, lr=0.4)) < 1e-6
    assert max_diff(slip, big_step(m0, x, y, lr=0.1)) > 1e-3

def test_trailing_partial_accumulation():
    x, y = xy(80, torch.float64); m0 = mlp(torch.float64)
    m, (steps, left) = by_hand(m0, x, y, bs=16, n_acc=64)
    assert (steps, left) == (1, 16) and all(p.grad.abs().sum() > 0 for p in m.parameters())
    # flush: the last 16 samples get a step of their own, with their mean gradient
    f, (steps, left) = by_hand(m0, x, y, bs=16, n_acc=64, flush=True)
    assert (steps, left) == (2, 0)
    expect = big_step(big_step(m0, x[:64], y[:64]), x[64:], y[64:])
    assert max_diff(f, expect) < 1e-6
    # fastai carries the partial accumulation into the next epoch within one fit: 160 samples in 2 epochs = 2 updates, plus 32 left over
    fa, learn = with_fastai(m0, x, y, bs=16, n_acc=64, epochs=2)
    assert learn.gradient_accumulation.count == 32
    # epoch 2's first update holds the 16 samples left from epoch 1 and 48 new ones, all seen with the weights after update 1
    step1 = big_step(m0, x[:64], y[:64])
    g_old = torch.autograd.grad(F.cross_entropy(step1(x[64:]), y[64:]) * 16 / 64, list(step1.parameters()))
    step2 = copy.deepcopy(step1)
    loss_new = F.cross_entropy(step2(x[:48]), y[:48]) * 48 / 64
    g_new = torch.autograd.grad(loss_new, list(step2.parameters()))
    with torch.no_grad():
        for p, a, b in zip(step2.parameters(), g_old, g_new): p -= 0.1 * (a + b)
    assert max_diff(fa, step2) < 1e-6

def test_batchnorm_only_approximates():
    x, y = xy(64, torch.float64); m0 = mlp(torch.float64, bn=True)
    big = big_step(m0, x, y)
    hand, _ = by_hand(m0, x, y, bs=16, n_acc=64)
    fa, _ = with_fastai(m0, x, y, bs=16, n_acc=64)
    assert max_diff(big, hand) > 1e-4  # normalised with the statistics of 16 samples, not 64
    assert max_diff(hand, fa) < 1e-6  # the two accumulations still agree with each other

def test_accum_step_memory_is_a_module_function(paddy):
    "What `accum_memory` runs in each fresh process is a function of the package (imported and linted like the rest), here run in this one."
    from paddy_collab.gradacc import accum_step_memory
    r = accum_step_memory(paddy, accum=2, arch='resnet10t', size=32, bs=8)
    assert r['steps'] == 1 and r['peak_MB'] >= r['base_MB'] > 0, r
