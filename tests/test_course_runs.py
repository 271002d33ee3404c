"""`PADDY_SCALE=full` is the course's configuration: the runs of course22's "Road to the Top" parts 2-4 by name (`course_runs`,
`part3_train`), fastai's default DataLoader workers on a GPU, part 2's optional `resize_images` step (`resize_paddy`), and the data
source chosen apart from the compute scale (`lesson_path`). The expected values are read from fastai/course22
(`09-small-models-road-to-the-top-part-2.ipynb`, `10-scaling-up-road-to-the-top-part-3.ipynb`) and part 4's published notebook."""
import inspect, os
from pathlib import Path
import pandas as pd
import pytest
from PIL import Image
import paddy_collab.paddy_data as pdd, paddy_collab.paddy_source as pso
from paddy_collab.paddy_data import paddy_dls, paddy_workers, resize_paddy, check_paddy
from paddy_collab.paddy_source import lesson_path
from paddy_collab.train import course_runs, lesson_cfg, train, accum_setup
from paddy_collab.ensemble import part3_train, lesson_models, course_names, model_weights
from paddy_collab.synth import synth_paddy


def resize_of(t):
    "(size as `Resize` stores it: (width, height), method, pad_mode) of a `Resize`."
    return tuple(t.size), t.method, t.pad_mode


# -- the course's runs

def test_course_runs_are_named_after_the_course():
    assert set(course_runs) == {'part2_best', 'part4_multitarget'}


def test_full_is_part2_best():
    "Part 2's last run: `train(arch, epochs=12, item=Resize((480, 360), method=ResizeMethod.Pad, pad_mode=PadMode.Zeros), batch=aug_transforms(size=(256,192), min_scale=0.75))`, `fine_tune(epochs, 0.01)`, bs 64, then `learn.tta`: 0.9827."
    cfg = lesson_cfg('full')
    assert cfg == course_runs['part2_best'] and cfg is not course_runs['part2_best']  # a copy: a caller's change stays its own
    assert resize_of(cfg.pop('item_tfms')) == ((360, 480), 'pad', 'zeros')  # Resize((480, 360)): 480 high, 360 wide
    assert cfg == dict(arch='convnext_small.fb_in22k', size=(256, 192), epochs=12, bs=64, lr=0.01, pretrained=True, finetune=True, n_tta=4)
    from timm.models import get_deprecated_models
    assert get_deprecated_models()['convnext_small_in22k'] == 'convnext_small.fb_in22k'  # the course's timm 0.6 name -> today's
    assert inspect.signature(train).parameters['n_tta'].default == 4  # fastai's `tta(n=4)`


def test_part4_multitarget():
    "Part 4: `Resize(192, method='squish')`, `aug_transforms(size=128, min_scale=0.75)`, convnext_small_in22k, `fine_tune(5, lr)` with lr=0.01, no TTA, n_out=20."
    cfg = dict(course_runs['part4_multitarget'])
    assert resize_of(cfg.pop('item_tfms')) == ((192, 192), 'squish', 'reflection')
    assert cfg == dict(arch='convnext_small.fb_in22k', size=128, epochs=5, bs=64, lr=0.01, pretrained=True, finetune=True, n_tta=0, multi_target=True)


def test_cpu_and_tiny_are_not_the_course_runs():
    for s in ('cpu', 'tiny'): assert lesson_cfg(s) not in course_runs.values()


def test_part3_members_and_training():
    "Part 3: `models` trained with `train(arch, size, item=item, accum=2)`: `fine_tune(12, 0.01)`, `bs=64//accum`, `GradientAccumulation(64)`, TTA."
    assert part3_train == dict(accum=2, epochs=12, lr=0.01, bs=64, pretrained=True, finetune=True, n_tta=4)
    bs, cbs = accum_setup(part3_train['accum'], part3_train['bs'])
    assert bs == 32 and cbs[0].n_acc == 64
    res, sq = ((480, 640), 'crop', 'reflection'), ((480, 480), 'squish', 'reflection')  # Resize(res), res = 640,480; Resize(480, method='squish')
    course = {'convnext_large_in22k': [(res, 224), (res, (320, 224))], 'vit_large_patch16_224': [(sq, 224), (res, 224)],
              'swinv2_large_window12_192_22k': [(sq, 192), (res, 192)], 'swin_large_patch4_window7_224': [(sq, 224), (res, 224)]}
    assert {course_names[k]: v for k, v in course.items()} == {a: [(resize_of(i), s) for i, s in d] for a, d in lesson_models.items()}
    assert model_weights == {course_names['vit_large_patch16_224']: 2}  # `tta_prs += tta_prs[2:4]`: the two vit members twice


def test_the_lessons_use_the_course_runs_at_full(root):
    "The lesson cells that pick the configuration (04 through `lesson_cfg`, 05 and 06 by name)."
    import json
    def code(nb): return '\n'.join(''.join(c['source']) for c in json.loads((root/'nbs'/nb).read_text())['cells'] if c['cell_type'] == 'code')
    assert 'cfg = lesson_cfg()' in code('04_train.ipynb')
    assert 'by_scale(full=part3_train,' in code('05_ensemble.ipynb') and 'run_models = by_scale(full=lesson_models,' in code('05_ensemble.ipynb')
    assert "cfg = course_runs['part4_multitarget'] if scale == 'full' else lesson_cfg()" in code('06_multitarget.ipynb')


def test_part2_sizes_are_height_width(tmp_path):
    "480x640 portrait photos: `Resize((480, 360))` makes them 480 high and 360 wide, and `aug_transforms(size=(256, 192))` batches of 256x192."
    cfg, real_size = lesson_cfg('full'), synth_paddy(tmp_path/'paddy', n_per_class=1, n_test=1, size=(480, 640))
    dls = paddy_dls(real_size, size=cfg['size'], item_tfms=cfg['item_tfms'], bs=4, num_workers=0)
    assert Image.open(dls.train_ds.items[0]).size == (480, 640)
    assert dls.train.after_item(dls.train_ds[0])[0].shape == (3, 480, 360)
    assert dls.one_batch()[0].shape == (4, 3, 256, 192)


# -- DataLoader workers

def test_workers_fastai_default_on_a_gpu(monkeypatch, paddy):
    import torch
    from fastai.data.core import TfmdDL
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    fastai_default = TfmdDL(list(range(4)), bs=2).fake_l.num_workers  # what `DataBlock.dataloaders` picks when not given
    assert paddy_workers() == fastai_default and fastai_default >= 1
    dls = paddy_dls(paddy, size=32, bs=4, device='cpu')  # built, not iterated: there is no GPU here
    assert dls.train.fake_l.num_workers == dls.valid.fake_l.num_workers == fastai_default
    assert paddy_workers(3) == 3 and paddy_workers(0) == 0


def test_no_workers_on_a_cpu(monkeypatch, paddy):
    import torch
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert paddy_workers() == 0
    assert paddy_dls(paddy, size=32, bs=4).train.fake_l.num_workers == 0
    for f in (paddy_dls, train): assert inspect.signature(f).parameters['num_workers'].default is None  # so both choose


def test_worker_processes_load_both_targets(paddy):
    "What a GPU run does with fastai's default workers, here with 2 on the CPU: `get_variety` and the transforms work in worker processes."
    dls = paddy_dls(paddy, size=32, bs=4, num_workers=2, multi_target=True)
    x, d, v = dls.one_batch()
    assert dls.train.fake_l.num_workers == 2 and x.shape == (4, 3, 32, 32) and d.shape == v.shape == (4,)


# -- part 2's resize_images step

@pytest.fixture
def data_home(tmp_path, monkeypatch):
    "fastai's data folder in `tmp_path`, off Kaggle, no PADDY_PATH, no Kaggle credentials."
    import paddy_collab.synth as ps
    d = tmp_path/'fastai-data'; d.mkdir()
    for m in (pdd, pso, ps): monkeypatch.setattr(m, 'fastai_data_path', lambda: d)  # resize_paddy's, paddy_subset's and cached_synth's folder
    for k in ('PADDY_PATH', 'KAGGLE_KERNEL_RUN_TYPE', 'KAGGLE_USERNAME', 'KAGGLE_KEY', 'KAGGLE_API_TOKEN'): monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv('KAGGLE_CONFIG_DIR', str(tmp_path/'no-kaggle'))
    return d


def test_resize_paddy(tmp_path, data_home, monkeypatch):
    import fastai.vision.utils as fvu
    src = synth_paddy(tmp_path/'paddy', n_per_class=3, n_test=4, size=(48, 64))
    calls, orig = [], fvu.resize_images
    monkeypatch.setattr(fvu, 'resize_images', lambda *a, **k: calls.append(k) or orig(*a, **k))
    p = resize_paddy(src, max_size=32)
    assert [(k['max_size'], k['recurse']) for k in calls] == [(32, True)]*2  # fastai's function, on train_images and test_images
    assert p.parent == data_home and [f.name for f in data_home.iterdir()] == [p.name]  # no temporary folder left
    assert sorted(f.name for f in p.iterdir()) == ['sample_submission.csv', 'test_images', 'train.csv', 'train_images']
    trn, tst = sorted(p.glob('train_images/*/*.jpg')), sorted(p.glob('test_images/*.jpg'))
    assert [f.relative_to(p) for f in trn] == [f.relative_to(src) for f in sorted(src.glob('train_images/*/*.jpg'))] and len(trn) == 30
    assert [f.name for f in tst] == sorted(f.name for f in (src/'test_images').glob('*.jpg')) and len(tst) == 4
    assert {Image.open(f).size for f in trn + tst} == {(24, 32)}  # longest side 32, the aspect kept
    assert {Image.open(f).size for f in src.glob('*_images/**/*.jpg')} == {(48, 64)}  # the original untouched
    pd.testing.assert_frame_equal(pd.read_csv(p/'train.csv'), pd.read_csv(src/'train.csv'))
    assert (p/'sample_submission.csv').read_bytes() == (src/'sample_submission.csv').read_bytes()
    assert len(check_paddy(p).train_files) == 30 and paddy_dls(p, size=16, bs=4).one_batch()[0].shape == (4, 3, 16, 16)
    t = (p/'train.csv').stat().st_mtime_ns
    assert resize_paddy(src, max_size=32) == p and len(calls) == 2 and (p/'train.csv').stat().st_mtime_ns == t  # made once: reused
    assert resize_paddy(src, max_size=16) != p and len(calls) == 4  # another size, another copy
    with pytest.raises(FileNotFoundError, match='has no train.csv'): resize_paddy(src/'train_images')


def test_resize_paddy_leaves_out_unreadable_images(tmp_path, data_home, capsys):
    src = synth_paddy(tmp_path/'paddy', n_per_class=3, n_test=4, size=(48, 64))
    bad = sorted(src.glob('train_images/normal/*.jpg'))[0]  # the largest class: the others keep an image
    bad.write_bytes(b'not a jpeg')
    p = resize_paddy(src, max_size=32)
    assert '1 unreadable training image(s)' in capsys.readouterr().err
    assert len(pd.read_csv(p/'train.csv')) == 29 and bad.name not in set(pd.read_csv(p/'train.csv').image_id)
    assert len(check_paddy(p).train_files) == 29


# -- the data source, apart from the compute scale (issue 21, point 5)

def test_cpu_scale_uses_the_real_data_when_there_is_some(tmp_path, data_home, monkeypatch, capsys):
    real = synth_paddy(tmp_path/'competition', n_per_class=3, n_test=4, size=(48, 64))  # stands in for the real competition folder
    made = []
    monkeypatch.setattr(pso, 'cached_synth', lambda **k: made.append(k) or data_home/'synthetic')
    monkeypatch.setenv('PADDY_PATH', str(real))
    p = lesson_path('cpu')
    out = capsys.readouterr().out
    assert made == [] and p.parent == data_home and p != real  # a subset of the real data, not the synthetic set
    assert f'PADDY_SCALE=cpu: the real data from {real}, cut to 30 training images (125 per disease)' in out  # and it says so
    imgs = sorted(p.glob('train_images/*/*.jpg'))
    assert len(imgs) == 30 and all(f.resolve().is_relative_to(real.resolve()) for f in imgs)
    assert lesson_path('full') == real
    monkeypatch.delenv('PADDY_PATH')
    assert lesson_path('cpu') == data_home/'synthetic' and made == [dict(solution=True)]  # no real data: the synthetic set
