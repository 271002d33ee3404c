"`paddy_collab.ensemble`: model names, weighted averages, saving without pickle, submissions, bad input."
import json, os, zipfile
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
import paddy_collab.ensemble as E
from paddy_collab.ensemble import lesson_models, course_names, model_weights, ensemble, write_submission, train_ensemble
from paddy_collab.predsets import PredSet, check_compatible, save_preds, load_preds
from paddy_collab.synth import synth_paddy, diseases, varieties
from paddy_collab.paddy_data import get_test_files

def _ps(seed, files=('1.jpg', '2.jpg', '3.jpg'), heads=('disease',), arch='a'):
    g = torch.Generator().manual_seed(seed)
    vocabs = [diseases if h == 'disease' else varieties for h in heads]
    return PredSet([torch.randn(len(files), len(v), generator=g).softmax(1) for v in vocabs], vocabs, list(files), list(heads), dict(arch=arch))

pytestmark = pytest.mark.paddy('tiny')

def test_model_names_are_pretrained_timm_models():
    import timm
    names = set(timm.list_models(pretrained=True))
    for arch in [*lesson_models, *course_names.values(), *model_weights]: assert arch in names and timm.is_model(arch), arch
    assert len(lesson_models) == 4 and all(len(v) >= 1 for v in lesson_models.values())
    for arch, details in lesson_models.items():
        for item, size in details: assert type(item).__name__ == 'Resize' and (isinstance(size, int) or len(size) == 2)
    assert set(course_names) == {'convnext_large_in22k', 'vit_large_patch16_224', 'swinv2_large_window12_192_22k', 'swin_large_patch4_window7_224'}
    assert set(course_names.values()) == set(lesson_models)
    assert model_weights == {'vit_large_patch16_224.augreg_in21k_ft_in1k': 2}

def test_weighted_mean_is_the_lessons_duplication():
    a, b, v = _ps(0, arch='c'), _ps(1, arch='s'), _ps(2, arch='v')
    dup = torch.stack([a['disease'], b['disease'], v['disease'], v['disease']]).mean(0)
    torch.testing.assert_close(ensemble([a, b, v], weights={'v': 2})['disease'], dup)
    torch.testing.assert_close(ensemble([a, b, v], weights=[1, 1, 2])['disease'], dup)
    torch.testing.assert_close(ensemble([a, b, v], weights=[0.5, 0.5, 1])['disease'], dup)  # only ratios matter
    torch.testing.assert_close(ensemble([a])['disease'], a['disease'])
    assert ensemble([a, b, v], weights={'v': 2}).meta['weights'] == pytest.approx([0.25, 0.25, 0.5])

def test_multi_target_averaged_per_head():
    a, b = _ps(0, heads=('disease', 'variety')), _ps(1, heads=('disease', 'variety'))
    m = ensemble([a, b], weights=[3, 1])
    for h in ('disease', 'variety'):
        torch.testing.assert_close(m[h], 0.75*a[h] + 0.25*b[h])
        torch.testing.assert_close(m[h].sum(1), torch.ones(3))
    assert m.heads == ['disease', 'variety']

@pytest.mark.parametrize('other,msg', [
    (lambda: _ps(9, files=('1.jpg', '2.jpg')), r"only in set 0: \['3.jpg'\]"),
    (lambda: _ps(9, files=('1.jpg', '2.jpg', '4.jpg')), r"only in set 1: \['4.jpg'\]"),
    (lambda: _ps(9, files=('3.jpg', '2.jpg', '1.jpg')), r'in another order \(row 0: 3.jpg vs 1.jpg\)'),
    (lambda: _ps(9, heads=('disease', 'variety')), r"heads \['disease', 'variety'\] but set 0 has \['disease'\]"),
    (lambda: PredSet([torch.rand(3, 10).softmax(1)], [diseases[::-1]], ['1.jpg', '2.jpg', '3.jpg']), 'same classes in another order'),
    (lambda: PredSet([torch.rand(3, 11).softmax(1)], [diseases + ['rust']], ['1.jpg', '2.jpg', '3.jpg']), r"classes \['rust'\] are in only one"),
])
def test_incompatible_sets_are_refused(other, msg):
    with pytest.raises(ValueError, match=msg): ensemble([_ps(0), other()])

def test_bad_weights_and_inputs():
    a, b = _ps(0), _ps(1)
    with pytest.raises(ValueError, match='got 3 weights for 2'): ensemble([a, b], weights=[1, 2, 3])
    with pytest.raises(ValueError, match='weights must be >= 0'): ensemble([a, b], weights=[0, 0])
    with pytest.raises(TypeError, match='expected PredSets'): ensemble([a, a['disease']])

def test_save_load_roundtrip_without_pickle(tmp_path):
    a = _ps(0, heads=('disease', 'variety'))
    a.meta.update(size=(320, 224), valid={'disease_err': 0.1})
    fn = save_preds(a, tmp_path/'a.npz')
    with np.load(fn, allow_pickle=False) as z:  # every array is plain data
        assert sorted(z.files) == ['info', 'probs_0', 'probs_1'] and all(z[k].dtype != object for k in z.files)
    b = load_preds(fn)
    for h in a.heads: assert torch.equal(a[h], b[h])
    assert (b.files, b.vocabs, b.heads) == (a.files, a.vocabs, a.heads)
    assert b.meta['size'] == [320, 224] and b.meta['valid'] == {'disease_err': 0.1}

def test_load_refuses_pickles_and_junk(tmp_path):
    np.savez(tmp_path/'obj.npz', info=np.array([{'evil': 1}], dtype=object), probs_0=np.zeros((1, 1)))
    with pytest.raises(ValueError, match='not a prediction set'): load_preds(tmp_path/'obj.npz')
    np.savez(tmp_path/'other.npz', x=np.zeros(3))
    with pytest.raises(ValueError, match='not a prediction set'): load_preds(tmp_path/'other.npz')
    with pytest.raises(FileNotFoundError): load_preds(tmp_path/'missing.npz')

def test_save_never_clobbers_and_is_atomic(tmp_path, monkeypatch):
    a, b = _ps(0), _ps(1)
    fn = save_preds(a, tmp_path/'a.npz')
    with pytest.raises(FileExistsError, match='already exists'): save_preds(b, fn)
    def boom(*args, **kwargs): raise KeyboardInterrupt
    monkeypatch.setattr(np, "savez", boom)  # save_preds (predsets) calls np.savez
    with pytest.raises(KeyboardInterrupt): save_preds(b, fn, overwrite=True)
    monkeypatch.undo()
    assert torch.equal(load_preds(fn)['disease'], a['disease'])
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.npz']  # no temporary left behind
    save_preds(b, fn, overwrite=True)
    assert torch.equal(load_preds(fn)['disease'], b['disease'])

def test_submission_follows_sample_order(paddy, tmp_path):
    tst = [f.name for f in get_test_files(paddy)]
    ss = pd.read_csv(paddy/'sample_submission.csv').sample(frac=1, random_state=1)  # a sample in another order than the sorted files
    ss.to_csv(tmp_path/'sample_submission.csv', index=False)
    ps = _ps(3, files=tst, heads=('disease', 'variety'))
    out = pd.read_csv(write_submission(ps, tmp_path/'sample_submission.csv', tmp_path/'sub.csv'))
    assert list(out.columns) == ['image_id', 'label'] and out.image_id.tolist() == ss.image_id.tolist()
    want = dict(zip(tst, ps.labels('disease')))
    assert out.label.tolist() == [want[i] for i in out.image_id] and set(out.label) <= set(diseases)
    assert out.image_id.is_unique and sorted(out.image_id) == sorted(tst)
    var = pd.read_csv(write_submission(ps, tmp_path/'sample_submission.csv', tmp_path/'var.csv', head='variety'))
    assert set(var.label) <= set(varieties)

def test_submission_never_clobbers_and_is_atomic(paddy, tmp_path, monkeypatch):
    tst = [f.name for f in get_test_files(paddy)]
    fn = tmp_path/'sub.csv'
    fn.write_text('previous submission\n')
    with pytest.raises(FileExistsError, match='already exists'): write_submission(_ps(0, files=tst), paddy, fn)
    assert fn.read_text() == 'previous submission\n'
    def boom(self, *a, **k): raise RuntimeError('disk full')
    monkeypatch.setattr(pd.DataFrame, 'to_csv', boom)
    with pytest.raises(RuntimeError, match='disk full'): write_submission(_ps(0, files=tst), paddy, fn, overwrite=True)
    monkeypatch.undo()
    assert fn.read_text() == 'previous submission\n' and [p.name for p in tmp_path.iterdir()] == ['sub.csv']
    write_submission(_ps(0, files=tst), paddy, fn, overwrite=True)
    assert len(pd.read_csv(fn)) == 6

def test_submission_bad_input(paddy, tmp_path):
    tst = [f.name for f in get_test_files(paddy)]
    with pytest.raises(ValueError, match=r"1 image_id\(s\) in .* have no prediction: \['200006.jpg'\]"): write_submission(_ps(0, files=tst[:-1]), paddy, tmp_path/'s.csv')
    with pytest.raises(ValueError, match=r"1 predicted image\(s\) are not in .*\['9.jpg'\]"): write_submission(_ps(0, files=tst + ['9.jpg']), paddy, tmp_path/'s.csv')
    with pytest.raises(FileNotFoundError, match='sample_submission.csv not found'): write_submission(_ps(0, files=tst), tmp_path, tmp_path/'s.csv')
    pd.DataFrame({'id': tst, 'label': 'normal'}).to_csv(tmp_path/'bad.csv', index=False)
    with pytest.raises(KeyError, match=r"missing column\(s\) \['image_id'\]"): write_submission(_ps(0, files=tst), tmp_path/'bad.csv', tmp_path/'s.csv')
    pd.DataFrame({'image_id': tst + tst[:1], 'label': 'normal'}).to_csv(tmp_path/'dup.csv', index=False)
    with pytest.raises(ValueError, match='more than once'): write_submission(_ps(0, files=tst), tmp_path/'dup.csv', tmp_path/'s.csv')
    with pytest.raises(KeyError, match="no head 'variety'"): write_submission(_ps(0, files=tst), paddy, tmp_path/'s.csv', head='variety')
    assert not (tmp_path/'s.csv').exists()

def test_train_ensemble_order_resume_and_early_name_check(tmp_path, monkeypatch):
    calls = []
    def fake_train(arch, size, item_tfms=None, path=None, return_learner=False, check=True, **kw):
        assert check == 'report'; calls.append((arch, size)); p = _ps(len(calls), arch=arch)
        return (p, f'learner {len(calls)}') if return_learner else p
    monkeypatch.setattr(E, 'train', fake_train)
    checked = []
    monkeypatch.setattr(E, 'check_paddy', lambda path, **kw: checked.append(path) or 'report')  # the folder is checked once, not once per member
    from fastai.vision.augment import Resize
    ms = {'resnet18': [(Resize(40), 32), (Resize(40, method='squish'), (48, 32))], 'test_resnet': [(Resize(40), 32)]}
    saved = []
    ps = train_ensemble(tmp_path, ms, preds_dir=tmp_path/'preds', pretrained=False, on_member=lambda name, p, learn: saved.append((name, p.meta['arch'], learn)))
    assert saved == [('resnet18-Resize40_40crop-32', 'resnet18', 'learner 1'), ('resnet18-Resize40_40squish-48x32', 'resnet18', 'learner 2'),
                     ('test_resnet-Resize40_40crop-32', 'test_resnet', 'learner 3')]  # the hook sees each member once, after its training
    assert calls == [('resnet18', 32), ('resnet18', (48, 32)), ('test_resnet', 32)]
    assert checked == [tmp_path]
    assert [p.meta['arch'] for p in ps] == ['resnet18', 'resnet18', 'test_resnet'] and len(list((tmp_path/'preds').glob('*.npz'))) == 3
    again = train_ensemble(tmp_path, ms, preds_dir=tmp_path/'preds', pretrained=False)
    assert len(calls) == 3 and all(torch.equal(a['disease'], b['disease']) for a, b in zip(ps, again))  # loaded, not retrained
    with pytest.raises(ValueError, match='did you mean'): train_ensemble(tmp_path, {**ms, 'convnext_larg': [(Resize(40), 32)]}, pretrained=False)
    assert len(calls) == 3  # the bad name was caught before any training

def test_named_ensembles():
    "`train-paddy --ensemble NAME` and `train_ensemble` read the same named ensembles; member names are file names"
    from paddy_collab.ensemble import named_ensemble, ensemble_names, member_name
    from paddy_collab.core import UsageError
    assert named_ensemble('lesson') is lesson_models and set(ensemble_names) == {'lesson', 'small', 'tiny'}
    tiny = named_ensemble('tiny', 32)['test_resnet']
    assert [member_name('test_resnet', i, s) for i, s in tiny] == ['test_resnet-Resize69_69squish-32', 'test_resnet-Resize69_69crop-32']
    assert member_name('resnet18', None, (64, 48)) == 'resnet18-default-64x48'
    with pytest.raises(UsageError, match="no ensemble 'big'"): named_ensemble('big')

def test_plan_and_load_members(tmp_path):
    "`plan_members` checks names and free folders before training; `load_members` says what is wrong with a folder given to `predict`."
    from paddy_collab.core import UsageError
    members, names = E.plan_members(['test_resnet'], size=32, pretrained=False, out=tmp_path)
    assert list(members) == ['test_resnet'] and names == [E.member_name('test_resnet', None, 32)]
    (tmp_path/names[0]).mkdir()
    with pytest.raises(FileExistsError, match='overwrite=True'): E.plan_members(['test_resnet'], size=32, pretrained=False, out=tmp_path)
    assert E.plan_members(['test_resnet'], size=32, pretrained=False, out=tmp_path, overwrite=True)[1] == names
