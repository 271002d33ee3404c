"`paddy_collab.xent` against PyTorch: values, gradients, extreme inputs and bad input."
import pytest, torch
import torch.nn.functional as F
from torch.autograd import gradcheck
from torch.testing import assert_close
from paddy_collab.xent import softmax, log_softmax, cross_entropy, binary_cross_entropy, binary_cross_entropy_with_logits, xent_table

f64 = torch.float64
SHAPES = [(7,), (3, 5), (2, 3, 4), (2, 1, 3, 5)]
REDUCTIONS = ['none', 'mean', 'sum']

def close(a, b): assert_close(a, b, atol=1e-6, rtol=0)  # absolute 1e-6, float64; inf/nan must sit in the same places

def same_finite(a, b): assert torch.equal(torch.isfinite(a), torch.isfinite(b))

def extreme_logits(shape, seed):
    "Logits near -1e4, 0 and +1e4 mixed, so that most probabilities underflow."
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-1, 2, shape, generator=g).to(f64)*1e4 + torch.randn(shape, generator=g, dtype=f64)

def all_dims(shape): return [d for d in range(-len(shape), len(shape))]

def _cases(): return [(s, d) for s in SHAPES for d in all_dims(s)]

# ---- softmax, log_softmax -----------------------------------------------------------------------------------------

@pytest.mark.parametrize('shape,dim', _cases())
def test_softmax_matches_torch(shape, dim):
    torch.manual_seed(0)
    for x in (torch.randn(shape, dtype=f64)*10, extreme_logits(shape, 1)):
        for ours, theirs in ((softmax(x, dim), F.softmax(x, dim=dim)), (log_softmax(x, dim), F.log_softmax(x, dim=dim))):
            close(ours, theirs); same_finite(ours, theirs)
        close(softmax(x, dim).sum(dim), torch.ones(()).to(f64).expand_as(x.sum(dim)))

def test_softmax_edge_cases():
    x = torch.tensor([[1e4, -1e4, 0.], [5., 5., 5.], [-1e4, -1e4, -1e4]], dtype=f64)
    close(softmax(x), F.softmax(x, -1)); close(log_softmax(x), F.log_softmax(x, -1))
    assert torch.isfinite(log_softmax(x)).all()
    m = torch.tensor([0., -float('inf'), 1.], dtype=f64)  # masked entries (-inf) get probability 0
    close(softmax(m), F.softmax(m, -1)); close(log_softmax(m), F.log_softmax(m, -1))
    close(softmax(torch.empty(0, 4, dtype=f64)), F.softmax(torch.empty(0, 4, dtype=f64), -1))
    close(softmax(torch.tensor(3., dtype=f64)), F.softmax(torch.tensor(3., dtype=f64), 0))
    x32 = torch.randn(4, 6)*30
    assert_close(softmax(x32), F.softmax(x32, -1)); assert softmax(x32).dtype == torch.float32

@pytest.mark.parametrize('fn,tfn', [(softmax, F.softmax), (log_softmax, F.log_softmax)])
def test_softmax_gradients(fn, tfn):
    torch.manual_seed(0)
    for shape, dim in [((3, 5), 1), ((2, 3, 4), 0), ((2, 3, 4), -1)]:
        x = torch.randn(shape, dtype=f64, requires_grad=True)
        assert gradcheck(lambda t: fn(t, dim), (x,))
    # .grad against torch's on extreme logits, with a random upstream gradient
    x = extreme_logits((4, 6), 2).requires_grad_()
    g = torch.randn(4, 6, dtype=f64)
    ours, = torch.autograd.grad(fn(x, 1), x, g); theirs, = torch.autograd.grad(tfn(x, dim=1), x, g)
    close(ours, theirs)

# ---- cross_entropy --------------------------------------------------------------------------------------------------

def _ce_cases():
    "(logits shape, dim) with at least 2 dims; a 1-D case is tested on its own."
    return [((4, 5), 1), ((4, 5), 0), ((4, 5), -1), ((2, 3, 4), 1), ((2, 3, 4), 2), ((2, 3, 4), 0), ((2, 5, 3, 2), 1), ((2, 5, 3, 2), -1), ((1, 2), 1)]

@pytest.mark.parametrize('shape,dim', _ce_cases())
@pytest.mark.parametrize('reduction', REDUCTIONS)
def test_cross_entropy_matches_torch(shape, dim, reduction):
    torch.manual_seed(0)
    n = shape[dim]
    tshape = shape[:dim % len(shape)] + shape[dim % len(shape)+1:]
    for x in (torch.randn(shape, dtype=f64)*5, extreme_logits(shape, 3)):
        y = torch.randint(0, n, tshape)
        # torch's class dim is always 1: move ours there to compare
        theirs = F.cross_entropy(x.movedim(dim, 1), y, reduction=reduction)
        ours = cross_entropy(x, y, reduction, dim=dim)
        close(ours, theirs); same_finite(ours, theirs)
        p = softmax(torch.randn(shape, dtype=f64), dim)  # soft labels
        close(cross_entropy(x, p, reduction, dim=dim), F.cross_entropy(x.movedim(dim, 1), p.movedim(dim, 1), reduction=reduction))
        oh = F.one_hot(y, n).movedim(-1, dim).to(f64)  # one-hot probabilities give the index loss
        close(cross_entropy(x, oh, reduction, dim=dim), theirs)

def test_cross_entropy_default_dim_and_1d():
    torch.manual_seed(0)
    x, y = torch.randn(3, 4, 5, dtype=f64), torch.randint(0, 4, (3, 5))
    close(cross_entropy(x, y), F.cross_entropy(x, y))  # default dim 1, as torch
    v = torch.randn(6, dtype=f64)
    for t in (2, torch.tensor(2)): close(cross_entropy(v, t, 'none'), F.cross_entropy(v, torch.tensor(2), reduction='none'))
    close(cross_entropy(x, y.tolist()), F.cross_entropy(x, y))  # a nested list of indices works too
    e = torch.tensor([[1e4, -1e4], [-1e4, 1e4]], dtype=f64)
    close(cross_entropy(e, torch.tensor([1, 1]), 'none'), torch.tensor([2e4, 0.], dtype=f64))

def test_cross_entropy_gradients():
    torch.manual_seed(0)
    x = torch.randn(4, 5, 3, dtype=f64, requires_grad=True)
    y = torch.randint(0, 5, (4, 3))
    for red in REDUCTIONS: assert gradcheck(lambda t: cross_entropy(t, y, red), (x,))
    y2 = torch.randint(0, 3, (4, 5))  # classes along the last dim
    assert gradcheck(lambda t: cross_entropy(t, y2, dim=2), (x,))
    p = softmax(torch.randn(4, 5, 3, dtype=f64), 1).requires_grad_()  # soft labels: gradients for both inputs
    assert gradcheck(lambda a, b: cross_entropy(a, b, 'sum'), (x, p))
    xe = extreme_logits((6, 4), 4).requires_grad_(); ye = torch.randint(0, 4, (6,))
    ours, = torch.autograd.grad(cross_entropy(xe, ye), xe); theirs, = torch.autograd.grad(F.cross_entropy(xe, ye), xe)
    close(ours, theirs)

# ---- binary cross-entropy -----------------------------------------------------------------------------------------

def _probs_targets(shape, seed):
    "Probabilities with exact 0s and 1s mixed in, and targets that are 0, 1 or soft."
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(shape, generator=g, dtype=f64)
    pick = torch.randint(0, 3, shape, generator=g)
    p = torch.where(pick==0, 0., torch.where(pick==1, 1., p))
    y = torch.randint(0, 2, shape, generator=g).to(f64)
    y = torch.where(torch.rand(shape, generator=g) < 0.2, torch.rand(shape, generator=g, dtype=f64), y)
    return p, y

@pytest.mark.parametrize('shape', SHAPES + [(1,), ()])
@pytest.mark.parametrize('reduction', REDUCTIONS)
def test_bce_matches_torch(shape, reduction):
    p, y = _probs_targets(shape, 5)
    ours, theirs = binary_cross_entropy(p, y, reduction), F.binary_cross_entropy(p, y, reduction=reduction)
    close(ours, theirs); same_finite(ours, theirs)
    assert torch.isfinite(ours).all()  # the -100 clamp: exact 0s and 1s give at most 100, never inf

def test_bce_clamp_and_gradients_at_extremes():
    p = torch.tensor([0., 0., 1., 1., 0.3, 1e-50, 1-1e-16], dtype=f64, requires_grad=True)
    y = torch.tensor([0., 1., 0., 1., 0.6, 1., 0.], dtype=f64, requires_grad=True)
    ours = binary_cross_entropy(p, y, 'none')
    close(ours.detach(), torch.tensor([0., 100., 100., 0., F.binary_cross_entropy(p[4:5], y[4:5]).item(), 100., 36.7368005696771], dtype=f64))
    g = torch.randn(7, dtype=f64)
    gp, gy = torch.autograd.grad(ours, (p, y), g)
    tp, ty = torch.autograd.grad(F.binary_cross_entropy(p, y, reduction='none'), (p, y), g)
    close(gp, tp); close(gy, ty)  # includes torch's +-1e12 gradient (denominator clamped at 1e-12) and +-inf target gradients

@pytest.mark.parametrize('shape', SHAPES + [()])
@pytest.mark.parametrize('reduction', REDUCTIONS)
def test_bce_with_logits_matches_torch(shape, reduction):
    torch.manual_seed(0)
    _, y = _probs_targets(shape, 6)
    for x in (torch.randn(shape, dtype=f64)*10, extreme_logits(shape, 7), torch.zeros(shape, dtype=f64)):
        ours, theirs = binary_cross_entropy_with_logits(x, y, reduction), F.binary_cross_entropy_with_logits(x, y, reduction=reduction)
        close(ours, theirs); same_finite(ours, theirs)
        assert torch.isfinite(ours).all()

def test_bce_gradients():
    torch.manual_seed(0)
    p = (torch.rand(3, 4, dtype=f64)*0.9 + 0.05).requires_grad_()
    y = torch.rand(3, 4, dtype=f64).requires_grad_()
    x = (torch.randn(3, 4, dtype=f64)*3).requires_grad_()
    for red in REDUCTIONS:
        assert gradcheck(lambda a, b: binary_cross_entropy(a, b, red), (p, y))
        assert gradcheck(lambda a, b: binary_cross_entropy_with_logits(a, b, red), (x, y))
    # with logits: gradient sigmoid(x) - y everywhere, including x = 0 exactly and +-1e4
    xe = torch.tensor([0., 1e4, -1e4, 3., -30.], dtype=f64, requires_grad=True)
    ye = torch.tensor([0.3, 0.5, 0.2, 1., 0.], dtype=f64, requires_grad=True)
    g = torch.randn(5, dtype=f64)
    ours = torch.autograd.grad(binary_cross_entropy_with_logits(xe, ye, 'none'), (xe, ye), g)
    theirs = torch.autograd.grad(F.binary_cross_entropy_with_logits(xe, ye, reduction='none'), (xe, ye), g)
    for a, b in zip(ours, theirs): close(a, b)

def test_bce_with_logits_beats_sigmoid_then_bce():
    x, y = torch.tensor([-200.]), torch.tensor([1.])  # float32: sigmoid(-200) is 0
    assert binary_cross_entropy(torch.sigmoid(x), y).item() == 100.
    assert binary_cross_entropy_with_logits(x, y).item() == 200.

# ---- xent_table ---------------------------------------------------------------------------------------------------

def test_xent_table():
    torch.manual_seed(0)
    x, names = torch.randn(6, dtype=f64)*3, list('abcdef')
    t = xent_table(x, 'c', names)
    assert list(t.index) == names and t.index.name == 'class'
    close(torch.tensor(t.probability.values), F.softmax(x, -1))
    close(torch.tensor(t.log_prob.values), F.log_softmax(x, -1))
    close(torch.tensor(t['exp'].values), x.exp())
    close(torch.tensor(t['sum'].values), x.exp().sum().expand(6))
    assert list(t.one_hot) == [0, 0, 1, 0, 0, 0]
    close(torch.tensor(t.contribution.sum()), F.cross_entropy(x[None], torch.tensor([2])))
    assert xent_table(x.tolist(), 2, names).equals(t)  # a list of outputs and a class index work too
    t32 = xent_table(torch.tensor([1000., 0.]), 0, ['x', 'y'])  # naive exp overflows, probabilities do not
    assert t32['exp'].iloc[0] == float('inf') and t32.probability.tolist() == [1., 0.] and t32.contribution.sum() == 0

# ---- bad input ----------------------------------------------------------------------------------------------------

def test_bad_input_messages():
    x, y = torch.randn(3, 5), torch.tensor([0, 4, 1])
    with pytest.raises(IndexError, match='target -1 is out of range'): cross_entropy(x, torch.tensor([0, -1, 1]))
    with pytest.raises(IndexError, match='target 9 is out of range for 5 classes'): xent_table(x[0], 9, 'abcde')
    with pytest.raises(ValueError, match=r'targets of shape \(4,\) do not match logits of shape \(3, 5\): class indices need shape \(3,\)'):
        cross_entropy(x, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r'need shape \(5,\) \(logits without class dim 0\)'): cross_entropy(x, y, dim=0)
    with pytest.raises(ValueError, match=r'need logits\' shape \(3, 5\); got \(3,\)'): cross_entropy(x, y.float())
    with pytest.raises(ValueError, match=r'targets \(probabilities\) must be between 0 and 1; got 2.0'): cross_entropy(x, torch.full((3, 5), 2.))
    with pytest.raises(ValueError, match='logits must have a class dimension'): cross_entropy(torch.tensor(1.), torch.tensor(0))
    with pytest.raises(IndexError, match=r'dim=2 is out of range for logits of shape \(3, 5\)'): cross_entropy(x, y, dim=2)
    with pytest.raises(IndexError, match=r'dim=-3 is out of range for x of shape \(3, 5\)'): log_softmax(x, -3)
    for fn in (softmax, log_softmax):
        with pytest.raises(TypeError, match='x must be a floating-point tensor; got dtype torch.int64'): fn(torch.tensor([1, 2]))
    with pytest.raises(TypeError, match='logits must be a floating-point tensor; got dtype torch.int64'): cross_entropy(torch.tensor([[1, 2]]), torch.tensor([0]))
    with pytest.raises(TypeError, match='logits must be a floating-point tensor; got dtype torch.bool'): binary_cross_entropy_with_logits(torch.tensor([True]), [1.])
    with pytest.raises(TypeError, match='probs must be a floating-point tensor; got dtype torch.int64'): binary_cross_entropy(torch.tensor([1]), [1.])
    with pytest.raises(TypeError, match='logits must be a floating-point tensor'): xent_table([1, 2], 0, 'ab')
    p = torch.tensor([[0.2, 0.5], [1.5, 0.1]])
    with pytest.raises(ValueError, match=r'probs must be between 0 and 1; got 1.5 at index \(1, 0\)'): binary_cross_entropy(p, torch.ones(2, 2))
    with pytest.raises(ValueError, match='probs must be between 0 and 1; got -0.25'): binary_cross_entropy(torch.tensor([-0.25]), [0.])
    with pytest.raises(ValueError, match='probs must be between 0 and 1; got nan'): binary_cross_entropy(torch.tensor([float('nan')]), [0.])
    with pytest.raises(ValueError, match='targets must be between 0 and 1; got 2.0'): binary_cross_entropy(torch.tensor([0.5]), torch.tensor([2.]))
    with pytest.raises(ValueError, match='targets must be between 0 and 1; got -1.0'): binary_cross_entropy_with_logits(torch.tensor([0.5]), torch.tensor([-1.]))
    with pytest.raises(ValueError, match=r'targets of shape \(2,\) do not match probs of shape \(2, 2\)'): binary_cross_entropy(p.clamp(0, 1), torch.ones(2))
    with pytest.raises(ValueError, match=r'targets of shape \(3,\) do not match logits of shape \(2,\)'): binary_cross_entropy_with_logits(torch.zeros(2), torch.ones(3))
    with pytest.raises(ValueError, match="reduction='avg' is not one of"): binary_cross_entropy(torch.tensor([0.5]), [1.], 'avg')
    with pytest.raises(ValueError, match=r'one prediction \(1-D'): xent_table(x, 'a', 'abcde')

# ---- from scratch, light import -----------------------------------------------------------------------------------

def test_no_call_to_the_reimplemented_torch_functions(monkeypatch):
    def boom(*a, **k): raise AssertionError('called a PyTorch function that paddy_collab.xent re-implements')
    for mod, names in ((F, ['softmax', 'log_softmax', 'cross_entropy', 'nll_loss', 'binary_cross_entropy', 'binary_cross_entropy_with_logits', 'logsigmoid', 'softplus']),
                       (torch, ['softmax', 'log_softmax', 'logsumexp', 'sigmoid', 'binary_cross_entropy_with_logits', 'logit']),
                       (torch.Tensor, ['softmax', 'log_softmax', 'logsumexp', 'sigmoid', 'logit'])):
        for n in names: monkeypatch.setattr(mod, n, boom)
    x, y = torch.randn(3, 5, dtype=f64), torch.tensor([0, 4, 1])
    softmax(x); log_softmax(x); cross_entropy(x, y); cross_entropy(x, softmax(x, 1)); xent_table(x[0], 1, 'abcde')
    p = torch.rand(3, 5, dtype=f64, requires_grad=True)
    binary_cross_entropy(p, p.detach().round()).backward(); binary_cross_entropy_with_logits(x, p.detach())

def test_import_is_light():
    "The module imports only torch and pandas (and the standard library): no matplotlib, fastai or fastcore."
    import ast, paddy_collab.xent as m
    tree = ast.parse(open(m.__file__).read())
    mods = {a.name.split('.')[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module.split('.')[0] for n in tree.body if isinstance(n, ast.ImportFrom)}
    assert mods <= {'__future__', 'math', 'torch', 'pandas'}, mods
