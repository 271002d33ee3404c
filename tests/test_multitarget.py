"Multi-target learners: export and reload in a fresh process, per-head predictions, and wiring mistakes."
import json, shutil, subprocess, sys, textwrap
from pathlib import Path
import pytest, torch
from fastcore.test import test_close as close  # not `test_close`: pytest would collect it as a test
from paddy_collab.paddy_data import paddy_dls, paddy_test_dl, get_test_files
from paddy_collab.multitarget import MultiTargetLoss, HeadError, head_metrics, multi_tta, multi_predict
from fastai.vision.learner import vision_learner

@pytest.fixture(scope='module')
def learn(paddy):
    torch.manual_seed(0)
    dls = paddy_dls(paddy, size=32, bs=8, multi_target=True)
    loss = MultiTargetLoss.from_dls(dls, weights=(1, 0.5))
    return vision_learner(dls, 'resnet10t', pretrained=False, n_out=sum(loss.n_out), loss_func=loss, metrics=head_metrics(dls))

def test_plum_pickles():
    "plum-dispatch 2.10 cannot pickle its `Function`s, so no fastai `Learner` can be exported (beartype/plum#322)."
    import pickle
    from fastai.data.transforms import parent_label
    from fasttransform.transform import Transform
    try: pickle.dumps(Transform(parent_label))
    except TypeError as e: pytest.fail(f"fastai transforms cannot be pickled ({e}): pin plum-dispatch<2.10 (beartype/plum#322)")

def test_export_and_load_in_fresh_process(learn, paddy, tmp_path):
    fname = tmp_path/'multi.pkl'
    learn.export(fname)
    # the data is gone: a loaded learner needs only the package, not train.csv or the training images
    tst = tmp_path/'img.jpg'; shutil.copy(get_test_files(paddy)[0], tst)
    moved = tmp_path/'moved'; shutil.copytree(paddy, moved); shutil.rmtree(paddy/'train_images'); (paddy/'train.csv').rename(tmp_path/'train.csv')
    try:
        code = textwrap.dedent(f"""
            import json, warnings
            warnings.simplefilter('ignore')
            from fastai.learner import load_learner
            learn = load_learner({str(fname)!r})
            labels, _, _ = learn.predict({str(tst)!r})
            (pd, pv), _ = learn.get_preds(dl=learn.dls.test_dl([{str(tst)!r}]))
            from paddy_collab.multitarget import multi_predict
            import torch
            from fastai.torch_core import TensorImage
            from fastai.data.core import show_results
            sr_file = show_results.resolve_method((TensorImage(torch.zeros(1)), (1, 2), [], []))[0].__code__.co_filename
            print(json.dumps(dict(sr_file=sr_file, labels=list(labels), multi=list(multi_predict(learn, {str(tst)!r})[0]), sums=[float(pd.sum()), float(pv.sum())],
                                  n_out=list(learn.loss_func.n_out), weights=list(learn.loss_func.weights), vocab=[list(v) for v in learn.dls.vocab])))
        """)
        res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        out = json.loads(res.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(paddy); shutil.copytree(moved, paddy)
    assert out['labels'] == out['multi']
    assert out['labels'][0] in out['vocab'][0] and out['labels'][1] in out['vocab'][1]
    assert out['sums'] == pytest.approx([1, 1], abs=1e-5)
    assert out['n_out'] == [10, 10] and out['weights'] == [1, 0.5]
    assert out['sr_file'].endswith('heads.py'), f"show_results for two targets resolves to {out['sr_file']}"

def test_show_results_registration_order():
    "Ours must win over fastai's generic image `show_results` whatever is imported first."
    code = ("import paddy_collab.multitarget, fastai.vision.learner, torch; from fastai.torch_core import TensorImage; from fastai.data.core import show_results; "
            "print(show_results.resolve_method((TensorImage(torch.zeros(1)), (1, 2), [], []))[0].__code__.co_filename)")
    res = subprocess.run([sys.executable, '-W', 'ignore', '-c', code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith('heads.py'), res.stdout

def test_per_head_predictions(learn, paddy):
    (pd, pv), (td, tv), (dd, dv), losses = learn.get_preds(with_decoded=True, with_loss=True)
    n = len(learn.dls.valid_ds)
    assert pd.shape == (n, 10) and pv.shape == (n, 10) and losses.shape == (n,)
    assert torch.allclose(pd.sum(1), torch.ones(n), atol=1e-5) and (dd == pd.argmax(1)).all()
    assert learn.loss_func.reduction == 'mean'  # restored after with_loss
    (ad, av), _ = multi_tta(learn, dl=paddy_test_dl(learn.dls, paddy), n=1)
    assert ad.shape == (4, 10) and torch.allclose(av.sum(1), torch.ones(4), atol=1e-5)
    (ad, av), (bd, bv) = multi_tta(learn, n=1, beta=None)[0]  # beta=None: (augmented, plain), each per head
    assert ad.shape == bd.shape == (n, 10)

def test_head_sizes_come_from_vocab(paddy, tmp_path):
    "Three varieties: a 13-wide output, and head sizes and metrics follow."
    import pandas as pd
    p = Path(shutil.copytree(paddy, tmp_path/'p3'))
    df = pd.read_csv(p/'train.csv'); df['variety'] = ['A', 'B', 'C'] * (len(df)//3) + ['A'] * (len(df) % 3); df.to_csv(p/'train.csv', index=False)
    dls = paddy_dls(p, size=32, bs=8, multi_target=True)
    loss = MultiTargetLoss.from_dls(dls)
    assert loss.n_out == (10, 3)
    ms = head_metrics(dls)
    assert [m.__name__ for m in ms] == ['disease_err', 'variety_err'] and ms[1].n_out == (10, 3)
    x, d, v = dls.one_batch()
    out = torch.randn(len(d), 13)
    assert loss(out, d, v).shape == ()
    # each metric reads its own head's slice of the 13 outputs: the error of that slice's argmax, and of no other slice
    close(float(ms[0](out, d, v)), float((out[:, :10].argmax(1) != d).float().mean()))
    close(float(ms[1](out, d, v)), float((out[:, 10:].argmax(1) != v).float().mean()))
    out[torch.arange(len(v)), 10 + v] = 100.  # the variety head right on every image: its error is 0 whatever the disease head says
    assert float(ms[1](out, d, v)) == 0

def test_wiring_mistakes(paddy):
    single = paddy_dls(paddy, size=32, bs=8)
    with pytest.raises(ValueError, match='multi_target=True'): MultiTargetLoss.from_dls(single)
    multi = paddy_dls(paddy, size=32, bs=8, multi_target=True)
    with pytest.raises(ValueError, match=r"got 1 names \['disease'\] for 2 targets"): head_metrics(multi, names=('disease',))
    loss = MultiTargetLoss.from_dls(multi)
    with pytest.raises(ValueError, match='the model has 10 outputs but the heads \\(10, 10\\) need 20: set n_out=20'):
        loss(torch.randn(2, 10), torch.zeros(2).long(), torch.zeros(2).long())

def test_multi_tta_single_target_is_tta(paddy):
    "With an ordinary loss, `multi_tta` is `learn.tta`."
    torch.manual_seed(0)
    dls = paddy_dls(paddy, size=32, bs=8)
    learn = vision_learner(dls, 'resnet10t', pretrained=False)
    preds, targs = multi_tta(learn, n=1)
    assert preds.shape == (len(dls.valid_ds), 10) and torch.allclose(preds.sum(1), torch.ones(len(preds)), atol=1e-5)
