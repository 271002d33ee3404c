"Bad input for `paddy_collab.paddy_data`: every broken competition folder gives an error naming what is wrong, or a report of skipped images."
import shutil, subprocess, sys, time
from pathlib import Path
import pandas as pd
import pytest
from paddy_collab.paddy_data import check_paddy, paddy_dls, paddy_test_dl, get_test_files, get_variety

@pytest.fixture
def paddy(paddy_copy): return paddy_copy  # here each test breaks its own copy of conftest's `paddy`

def first_image(p): return sorted((p/'train_images'/'normal').glob('*.jpg'))[0]  # the largest class: removing one leaves others

def test_clean(paddy):
    r = check_paddy(paddy)
    assert len(r.train_files) == 30 and len(r.test_files) == 4 and r.skipped == []
    assert 'skipped' not in repr(r)

def test_not_a_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere is not a folder'): check_paddy(tmp_path/'nowhere')

def test_missing_train_csv(paddy):
    (paddy/'train.csv').unlink()
    with pytest.raises(FileNotFoundError, match=r'train\.csv not found'): check_paddy(paddy)
    with pytest.raises(FileNotFoundError, match=r'train\.csv not found'): paddy_dls(paddy)

def test_missing_train_images(paddy):
    shutil.rmtree(paddy/'train_images')
    with pytest.raises(FileNotFoundError, match='train_images not found'): check_paddy(paddy)

def test_empty_csv(paddy):
    (paddy/'train.csv').write_text('')
    with pytest.raises(ValueError, match=r'train\.csv is empty'): check_paddy(paddy)

def test_missing_columns(paddy):
    pd.read_csv(paddy/'train.csv').drop(columns=['variety', 'age']).to_csv(paddy/'train.csv', index=False)
    with pytest.raises(KeyError, match=r"train\.csv is missing column\(s\) \['variety', 'age'\]"): check_paddy(paddy)

def test_blank_value(paddy):
    df = pd.read_csv(paddy/'train.csv'); df.loc[4, 'variety'] = None; df.to_csv(paddy/'train.csv', index=False)
    with pytest.raises(ValueError, match=r"column 'variety' is empty on line\(s\) \['6'\]"): check_paddy(paddy)

def test_duplicate_id(paddy):
    df = pd.read_csv(paddy/'train.csv'); pd.concat([df, df.iloc[:1]]).to_csv(paddy/'train.csv', index=False)
    with pytest.raises(ValueError, match=f"listed more than once: \\['{df.image_id[0]}'\\]"): check_paddy(paddy)

def test_image_not_in_csv(paddy):
    fn = first_image(paddy)
    shutil.copy(fn, fn.parent/'999999.jpg')
    with pytest.raises(ValueError, match=r'1 image\(s\) in .*train_images are not in .*train\.csv: .*999999\.jpg'): check_paddy(paddy)

def test_csv_row_without_image(paddy):
    fn = first_image(paddy); fn.unlink()
    with pytest.raises(ValueError, match=rf'1 image_id\(s\) in .*train\.csv have no file in .*: \[\'{fn.name}\'\]'): check_paddy(paddy)

def test_label_disagrees_with_folder(paddy):
    fn = first_image(paddy)
    df = pd.read_csv(paddy/'train.csv')
    other = 'tungro' if fn.parent.name != 'tungro' else 'blast'
    df.loc[df.image_id == fn.name, 'label'] = other; df.to_csv(paddy/'train.csv', index=False)
    with pytest.raises(ValueError, match=rf"disagree with the image's folder, e.g. {fn.name}: label '{other}' but it is in .*{fn.parent.name}"):
        check_paddy(paddy)

def test_empty_class_folder(paddy):
    (paddy/'train_images'/'new_disease').mkdir()
    with pytest.raises(ValueError, match=r'empty class folder\(s\) .*new_disease'): check_paddy(paddy)

def test_stray_file(paddy):
    shutil.copy(first_image(paddy), paddy/'train_images'/'loose.jpg')
    with pytest.raises(ValueError, match='should hold only one folder per disease, but holds .*loose.jpg'): check_paddy(paddy)

def test_image_in_two_folders(paddy):
    fn = first_image(paddy)
    other = 'tungro' if fn.parent.name != 'tungro' else 'blast'
    shutil.copy(fn, paddy/'train_images'/other/fn.name)
    with pytest.raises(ValueError, match=f'{fn.name} is in two folders'): check_paddy(paddy)

@pytest.mark.parametrize('how', ['truncated', 'garbage', 'empty'])
def test_corrupt_image_is_skipped(paddy, how):
    fn = first_image(paddy)
    data = fn.read_bytes()
    fn.write_bytes({'truncated': data[:len(data)*4//5], 'garbage': b'not a jpeg', 'empty': b''}[how])
    r = check_paddy(paddy)
    assert [f for f,_ in r.skipped] == [fn] and fn not in r.train_files and len(r.train_files) == 29
    assert fn.name in repr(r)
    reason = r.skipped[0][1]
    assert ('truncated' in reason) if how == 'truncated' else ('cannot identify image file' in reason)
    # the DataLoaders leave it out, so training never hits it
    dls = paddy_dls(paddy, size=32, bs=8)
    assert fn not in list(dls.train_ds.items) + list(dls.valid_ds.items)
    assert len(dls.train_ds) + len(dls.valid_ds) == 29

def test_decode_false_misses_truncation(paddy):
    "Only decoding finds a truncated JPEG: its header is intact. (So `decode=True` is the default.)"
    fn = first_image(paddy); data = fn.read_bytes(); fn.write_bytes(data[:len(data)*4//5])  # the header (a third of a small JPEG) intact
    assert check_paddy(paddy, decode=False).skipped == []
    assert len(check_paddy(paddy).skipped) == 1

def test_corrupt_test_image(paddy):
    fn = sorted((paddy/'test_images').glob('*.jpg'))[1]
    fn.write_bytes(fn.read_bytes()[:200])
    with pytest.raises(ValueError, match=f'unreadable test image.*{fn.name}.*a submission needs every test image'): check_paddy(paddy)

def test_test_folder_without_images(paddy):
    for f in (paddy/'test_images').iterdir(): f.unlink()
    (paddy/'test_images'/'notes.txt').write_text('no images here')
    with pytest.raises(ValueError, match='test_images holds no images'): check_paddy(paddy)
    with pytest.raises(ValueError, match='test_images holds no images'): get_test_files(paddy)
    check_paddy(paddy, test=False)  # training alone does not need them

def test_missing_test_folder(paddy):
    shutil.rmtree(paddy/'test_images')
    with pytest.raises(FileNotFoundError, match='test_images not found'): check_paddy(paddy)
    dls = paddy_dls(paddy, size=32, bs=8)
    with pytest.raises(FileNotFoundError, match='test_images not found'): paddy_test_dl(dls, paddy)

def test_get_variety_errors(paddy, tmp_path):
    with pytest.raises(FileNotFoundError, match='no train.csv for'): get_variety(tmp_path/'a'/'b'/'c.jpg')

def test_get_variety_sees_csv_changes(paddy):
    fn = first_image(paddy)
    before = get_variety(fn)
    df = pd.read_csv(paddy/'train.csv'); df.loc[df.image_id == fn.name, 'variety'] = 'NewVariety'
    time.sleep(0.01); df.to_csv(paddy/'train.csv', index=False)
    assert before != 'NewVariety' and get_variety(fn) == 'NewVariety'

def test_dls_check_each_call_or_reuse_a_report(paddy, monkeypatch):
    "`paddy_dls` checks the folder on each call (a file broken since is found); given a `PaddyReport`, as an ensemble passes on, it checks nothing."
    dls = paddy_dls(paddy, size=32, bs=8)
    assert len(dls.report.train_files) == 30
    fn = first_image(paddy); data = fn.read_bytes(); fn.write_bytes(data[:len(data)*4//5])  # the header (a third of a small JPEG) intact
    assert [f for f,_ in paddy_dls(paddy, size=32, bs=8).report.skipped] == [fn]
    import paddy_collab.paddy_data as P
    monkeypatch.setattr(P, 'check_paddy', lambda *a, **k: pytest.fail('the folder was checked again'))
    assert paddy_dls(paddy, size=32, bs=8, check=dls.report).report is dls.report

def test_skipped_image_gets_a_line_or_fails(paddy, capsys):
    "Each unreadable training image is named on stderr; `bad_images='raise'` fails instead (issue 15)."
    bad = paddy
    fn = sorted((bad/'train_images').glob('*/*.jpg'))[0]
    fn.write_bytes(fn.read_bytes()[:200])
    r = check_paddy(bad)
    assert f"skipping unreadable training image {fn}" in capsys.readouterr().err and len(r.skipped) == 1
    with pytest.raises(ValueError, match='unreadable'): paddy_dls(bad, size=32, bs=8, bad_images='raise')

def test_batch_larger_than_training_set(paddy, capsys):
    "A batch larger than the training set would give zero batches and `nan` losses: it shrinks, with a line (issue 15)."
    dls = paddy_dls(paddy, size=32, bs=64)  # 30 images: 24 to train on
    assert dls.train.bs == 24 and len(dls.train) == 1
    assert 'only 24 training images, fewer than bs=64: using batches of 24' in capsys.readouterr().err
    xb, yb = dls.one_batch()
    assert len(yb) == 24
