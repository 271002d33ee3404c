"End to end on the synthetic Paddy set, CPU only: two members fine-tuned from ImageNet weights, multi-target, TTA, ensemble, submission."
import time, resource
import pandas as pd, pytest, torch
from fastai.vision.augment import Resize
from paddy_collab.synth import synth_paddy, diseases, varieties
from paddy_collab.paddy_data import get_test_files
from paddy_collab.train import train
from paddy_collab.ensemble import ensemble, train_ensemble, write_submission
from paddy_collab.predsets import save_preds, load_preds

# Small images keep this within the CI budget on 2 cores. The synthetic diseases are patterns a model from random weights does not
# learn from 240 images (benchmarks/results/paddy_synth.md), so the members start from the ImageNet weights a pip package ships, as
# the lesson's CPU configuration does (`lesson_cfg('cpu')`: unfreeze + fit_one_cycle).
SYNTH = dict(n_per_class=30, n_test=40, size=(64, 85), seed=0, solution=True)
TRAIN = dict(pretrained=True, finetune=False, epochs=10, lr=0.01, bs=32, multi_target=True, n_tta=2, show=False)
# two members as in the lesson's `models`: one architecture, the item transform squishing or cropping to a square
MODELS = {'tf_efficientnet_lite0': [(Resize(69, method='squish'), 64), (Resize(69), 64)]}
CHANCE = 0.9

def _cpu(): r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime

pytestmark = pytest.mark.paddy('e2e')  # conftest's PADDY_SIZES['e2e']: 30 images a disease, 40 test images with the answers

@pytest.fixture(scope='module')
def members(paddy, tmp_path_factory):
    t, c = time.time(), _cpu()
    ps = train_ensemble(paddy, MODELS, preds_dir=tmp_path_factory.mktemp('preds'), **TRAIN)
    print(f'trained {len(ps)} models: {time.time()-t:.0f}s wall, {_cpu()-c:.0f}s CPU')
    return ps

def _test_error(ps, paddy, head):
    sol = pd.read_csv(paddy/'solution.csv').set_index('image_id')
    col = 'label' if head == 'disease' else head
    return (pd.Series(ps.labels(head), index=ps.files) != sol.loc[ps.files, col]).mean()

def test_each_model_learns_both_heads(members, paddy):
    for p in members:
        v = p.meta['valid']
        print(p.meta['arch'], {k: round(x, 3) for k, x in v.items()}, 'test errors', _test_error(p, paddy, 'disease'), _test_error(p, paddy, 'variety'))
        # measured (issue 21's generator, 60 validation images): disease 0.38 (squish), 0.47 (crop); the bound is the worst plus about
        # two binomial standard deviations (0.13); the majority class (0.83) and an untrained model (0.9) fail it. The variety bound checks
        # the wiring of the second head only: an untrained head (0.9) fails it, but answering ADT45, two thirds of the images, passes it
        # (measured 0.35-0.38: in 10 epochs on 240 images the variety head learns little beyond that)
        assert v['disease_err'] < 0.6 and v['variety_err'] < 0.5, v

def test_tta_probabilities_per_head(members, paddy):
    files = [f.name for f in get_test_files(paddy)]
    for p in members:
        assert p.heads == ['disease', 'variety'] and p.files == files
        assert p.vocabs == [sorted(diseases), sorted(varieties)]
        for h in p.heads:
            assert p[h].shape == (40, 10) and (p[h] >= 0).all()
            torch.testing.assert_close(p[h].sum(1), torch.ones(40))

def test_ensemble_writes_valid_submission(members, paddy, tmp_path):
    avg = ensemble(members, weights=[1, 2])
    err_d, err_v = _test_error(avg, paddy, 'disease'), _test_error(avg, paddy, 'variety')
    print(f'ensemble test error: disease {err_d:.2f}, variety {err_v:.2f} (chance {CHANCE})')
    # measured 0.28 and 0.35 on the 40 test images; bounds: each plus about two binomial standard deviations (0.14, 0.15);
    # the majority disease (0.83) and an untrained ensemble fail the first
    assert err_d < 0.45 and err_v < 0.5
    sub = pd.read_csv(write_submission(avg, paddy, tmp_path/'submission.csv'))
    ss = pd.read_csv(paddy/'sample_submission.csv')
    assert list(sub.columns) == ['image_id', 'label']
    assert sub.image_id.tolist() == ss.image_id.tolist()  # the sample's order
    assert sub.image_id.is_unique and sorted(sub.image_id) == sorted(f.name for f in get_test_files(paddy))  # every test image once
    assert set(sub.label) <= set(diseases)
    # the saved members give the same ensemble
    back = [load_preds(save_preds(p, tmp_path/f'{i}.npz')) for i, p in enumerate(members)]
    torch.testing.assert_close(ensemble(back, weights=[1, 2])['disease'], avg['disease'])
