"`paddy_collab.train`: architecture and weight checks, the gradient-accumulation wiring `train` uses, precision, memory helpers, bad input."
import copy, time, warnings
from pathlib import Path
import numpy as np, pytest, torch, torch.nn as nn, torch.nn.functional as F
import paddy_collab.train as T
from paddy_collab.train import _one_epoch_update
import paddy_collab.hub as H
from paddy_collab.train import accum_setup, set_precision, HeadInterpretation, train
from paddy_collab.predsets import PredSet
from paddy_collab.hub import check_arch
from paddy_collab.hub import cached_weights, pretrained_kwargs
from paddy_collab.memory import step_mem, fitting_accum, auto_accum
from fastai.learner import Learner, Recorder
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.optimizer import SGD

# --- architectures and weights -------------------------------------------------------------------------------------

def test_check_arch_suggests_close_names():
    assert check_arch('resnet18') == 'resnet18' and check_arch('resnet18', pretrained=False) == 'resnet18'
    with pytest.raises(ValueError, match='see timm.list_models'): check_arch('zzzzzzzzzzzzzzzz')
    with pytest.warns(FutureWarning, match="old name for 'convnext_large.fb_in22k'"): assert check_arch('convnext_large_in22k') == 'convnext_large_in22k'

def test_unreachable_hub_fails_fast(monkeypatch):
    monkeypatch.setattr(H, 'hub_url', 'http://127.0.0.1:9')  # nothing listens on the discard port
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    t = time.time()
    with pytest.raises(RuntimeError, match='cannot be reached within 0.5s.*pretrained=False'): pretrained_kwargs('resnet18.a1_in1k', timeout=0.5)
    assert time.time() - t < 5

def test_train_pretrained_offline_errors_before_reading_data(paddy, monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    called = []
    monkeypatch.setattr(T, 'paddy_dls', lambda *a, **k: called.append(1))
    t = time.time()
    with pytest.raises(RuntimeError, match='not in the cache'): train('test_resnet', 32, path=paddy)
    with pytest.raises(ValueError, match='did you mean'): train('resnet_18', 32, path=paddy)
    assert not called and time.time() - t < 10

def test_cached_weights_load_from_file_without_network(paddy, tmp_path, monkeypatch):
    "Weights in the cache are loaded from their file: `pretrained=True` works offline."
    import timm
    m = timm.create_model('test_resnet', pretrained=False)
    torch.save(m.state_dict(), tmp_path/'w.pth')
    monkeypatch.setattr(H, 'cached_weights', lambda arch: tmp_path/'w.pth')
    monkeypatch.setattr(H, 'can_reach', lambda *a, **k: pytest.fail('the network was checked although the weights are cached'))
    assert pretrained_kwargs('test_resnet') == dict(pretrained_cfg_overlay=dict(file=str(tmp_path/'w.pth')))
    ps, learn = train('test_resnet', 32, path=paddy, pretrained=True, epochs=1, lr=0., bs=8, n_tta=0, show=False, return_learner=True)
    body, ref = dict(learn.model[0].model.named_parameters()), dict(m.named_parameters())
    convs = [k for k in ref if 'conv' in k and k.endswith('weight')]
    assert convs and all(torch.equal(body[k], ref[k]) for k in convs)  # lr=0: the weights are the file's
    assert ps.meta['pretrained'] and len(ps.files) == 4

def test_cached_weights_finds_the_hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as C
    monkeypatch.setattr(C, 'HF_HUB_CACHE', str(tmp_path))
    assert cached_weights('test_resnet') is None
    repo = tmp_path/'models--timm--test_resnet.r160_in1k'  # test_resnet's default weights
    (repo/'refs').mkdir(parents=True); (repo/'refs'/'main').write_text('abc123')
    (repo/'snapshots'/'abc123').mkdir(parents=True); (repo/'snapshots'/'abc123'/'model.safetensors').write_bytes(b'')
    assert cached_weights('test_resnet') == repo/'snapshots'/'abc123'/'model.safetensors'
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')  # cached: no network needed, no error
    assert pretrained_kwargs('test_resnet')['pretrained_cfg_overlay']['file'].endswith('model.safetensors')

# --- gradient accumulation, as `train` wires it -------------------------------------------------------------------

def _update(model, x, y, accum, bs=64, cbs_override=None):
    "Parameter change after one epoch over (x, y) with `accum_setup(accum, bs)`, plain SGD (an update proportional to the gradient)."
    if cbs_override is None: return _one_epoch_update(model, x, y, accum)  # the package's own (it once raised NameError there)
    b, cbs = accum_setup(accum, bs)
    if cbs_override is not None: cbs = cbs_override
    ds = list(zip(x, y))
    dls = DataLoaders(DataLoader(ds, bs=b, shuffle=False), DataLoader(ds[:b], bs=b))
    learn = Learner(dls, model, loss_func=F.cross_entropy, opt_func=SGD, lr=0.1, wd=0, moms=(0, 0, 0), cbs=cbs)
    learn.remove_cb(learn.recorder)
    p0 = [p.detach().clone() for p in model.parameters()]
    with learn.no_bar(), learn.no_logging(): learn.fit(1, lr=0.1)
    return [p.detach() - q for p, q in zip(model.parameters(), p0)]

def _maxdiff(u, v): return max((a - b).abs().max().item() for a, b in zip(u, v))

@pytest.mark.parametrize('dtype,tol', [(torch.float64, 1e-6), (torch.float32, 1e-5)])
def test_accum_equals_big_batch_without_batchnorm(dtype, tol):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5)).to(dtype)
    x, y = torch.randn(64, 8, dtype=dtype), torch.randint(0, 5, (64,))
    u1, u4 = _update(copy.deepcopy(mlp), x, y, 1), _update(copy.deepcopy(mlp), x, y, 4)
    assert max(a.abs().max().item() for a in u1) > 1e-3
    assert _maxdiff(u1, u4) < tol, _maxdiff(u1, u4)
    # the test can fail: four unaccumulated steps of 16 move the parameters differently
    assert _maxdiff(u1, _update(copy.deepcopy(mlp), x, y, 4, cbs_override=[])) > 100*tol

def test_accum_equals_big_batch_timm_model_without_batchnorm():
    import timm
    torch.manual_seed(0)
    m = timm.create_model('test_convnext', pretrained=False, num_classes=5)
    assert not any(isinstance(l, nn.modules.batchnorm._BatchNorm) for l in m.modules())
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 5, (64,))
    u1, u2, u4 = [_update(copy.deepcopy(m), x, y, a) for a in (1, 2, 4)]
    assert _maxdiff(u1, u4) < 1e-5 and _maxdiff(u1, u2) < 1e-5

def test_accum_setup():
    assert accum_setup(1) == (64, [])
    b, cbs = accum_setup(4)
    assert b == 16 and cbs[0].n_acc == 64  # n_acc counts samples
    assert accum_setup(3)[0] == 21 and accum_setup(3)[1][0].n_acc == 63
    assert accum_setup(2, bs=32)[0] == 16
    for bad in (0, -1, 65, 1.5, '2'):
        with pytest.raises(ValueError, match='accum must be'): accum_setup(bad)

def test_train_uses_accum_setup(paddy):
    ps, learn = train('test_resnet', 32, path=paddy, pretrained=False, finetune=False, epochs=1, bs=16, accum=4, n_tta=0, show=False, return_learner=True)
    ga = [cb for cb in learn.cbs if type(cb).__name__ == 'GradientAccumulation']
    assert len(ga) == 1 and ga[0].n_acc == 16 and learn.dls.train.bs == 4
    assert ps.meta['accum'] == 4

# --- precision -----------------------------------------------------------------------------------------------------

def test_precision_on_cpu_has_no_amp_and_no_warnings(paddy):
    if torch.cuda.is_available(): pytest.skip('checks the CPU path')
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        ps, learn = train('test_resnet', 32, path=paddy, pretrained=False, finetune=False, epochs=1, bs=8, n_tta=1, show=False, return_learner=True)
    assert not any(type(cb).__name__ == 'MixedPrecision' for cb in learn.cbs)
    amp = [str(x.message) for x in w if any(k in str(x.message).lower() for k in ('autocast', 'gradscaler', 'cuda'))]
    assert not amp, amp
    assert ps.meta['precision'] == 'fp32'
    with pytest.raises(ValueError, match='needs a CUDA GPU'): set_precision(learn, 'fp16')
    with pytest.raises(ValueError, match='needs a CUDA GPU'): set_precision(learn, 'bf16')
    with pytest.raises(ValueError, match="precision must be"): set_precision(learn, 'half')

# --- memory --------------------------------------------------------------------------------------------------------

def test_fitting_accum_halves_on_out_of_memory():
    "accelerate's `find_executable_batch_size`, halving: the smallest power-of-two accum whose batch runs; other errors propagate."
    seen = []
    def step(b):
        seen.append(b)
        if b > 16: raise torch.cuda.OutOfMemoryError('CUDA out of memory. Tried to allocate (pretend)')
    assert fitting_accum(step) == 4 and seen == [64, 32, 16]
    assert fitting_accum(step, bs=8) == 1
    with pytest.raises(ZeroDivisionError): fitting_accum(lambda b: 1/0)
    with pytest.raises(RuntimeError, match='No executable batch size'): fitting_accum(lambda b: step(99))

def test_step_mem_cpu_scales_with_batch():
    m16, m32 = step_mem('test_resnet', 32, 16, device='cpu'), step_mem('test_resnet', 32, 32, device='cpu')
    assert m16['params'] == m32['params'] > 0
    assert 1.8 < m32['activations']/m16['activations'] < 2.2
    assert m32['total'] == 4*m32['params'] + m32['activations']

def test_auto_accum_cpu_is_one():
    if torch.cuda.is_available(): pytest.skip('CPU path')
    assert auto_accum('convnext_large', 224) == 1

# --- outputs and bad input ---------------------------------------------------------------------------------------

def test_predset_checks_shapes():
    with pytest.raises(ValueError, match='one probability tensor and one vocabulary per head'): PredSet([torch.rand(2, 3)], [['a', 'b', 'c']], ['1', '2'], ['d', 'v'])
    ps = PredSet([torch.tensor([[.1, .9], [.8, .2]]), torch.tensor([[1., 0.], [0., 1.]])], [['x', 'y'], ['p', 'q']], ['1', '2'], ['disease', 'variety'])
    assert ps.labels() == ['y', 'x'] and ps.labels('variety') == ['p', 'q'] and ps.labels(1) == ['p', 'q']
    with pytest.raises(KeyError, match="no head 'age'"): ps['age']

def test_train_bad_input(paddy, tmp_path):
    with pytest.raises(FileNotFoundError, match='not a folder|not found'): train('test_resnet', 32, path=tmp_path/'nope', pretrained=False)
    import shutil
    p = tmp_path/'p'; shutil.copytree(paddy, p); shutil.rmtree(p/'test_images')
    t = time.time()
    with pytest.raises(FileNotFoundError, match='test_images'): train('test_resnet', 32, path=p, pretrained=False)
    assert time.time() - t < 10  # before any training

def test_single_target_train_and_interpretation(paddy):
    ps, learn = train('test_resnet', 32, path=paddy, pretrained=False, epochs=1, bs=8, n_tta=2, show=False, return_learner=True)
    assert ps.heads == ['disease'] and ps.vocabs == [list(learn.dls.vocab)] and ps.files == sorted(ps.files)
    torch.testing.assert_close(ps['disease'].sum(1), torch.ones(4))
    assert set(ps.meta['valid']) == {'train_loss', 'valid_loss', 'error_rate'}
    cm = HeadInterpretation.from_learner(learn).confusion_matrix()
    assert cm.shape == (10, 10) and cm.sum() == len(learn.dls.valid_ds)


def test_test_predictions_are_normalised_like_training(tmp_path):
    "A pretrained model's test predictions go through the `Normalize` that `vision_learner` adds to the loaders (they once came from a test loader made before it: 0.23 test error where the model's own was 0.13)."
    from paddy_collab.synth import synth_paddy
    from paddy_collab.paddy_data import paddy_test_dl
    from fastai.vision.augment import Resize
    p = synth_paddy(tmp_path/'p', n_per_class=2, n_test=6, size=(48, 64))
    ps, learn = train('tf_efficientnet_lite0', 32, item_tfms=Resize(40), path=p, epochs=1, bs=8, n_tta=0, pretrained=True, finetune=False,
                      show=False, check=False, return_learner=True)
    assert any(type(t).__name__ == 'Normalize' for t in learn.dls.after_batch.fs)
    with learn.no_bar(): again = learn.get_preds(dl=paddy_test_dl(learn.dls, p))[0]  # a test loader made after training
    torch.testing.assert_close(ps['disease'], again)
