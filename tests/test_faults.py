"""Fault suite (issue 24): bad options, bad data, corrupt saved files, diverging runs, concurrent and killed writers.
Each case asserts the exit status, the key words of its one-line message, and that nothing else on disk changed.
Small sets, one epoch: the whole file runs in about a minute on two CPU cores."""
import contextlib, io, json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import numpy as np, pandas as pd, pytest

ENV = {**os.environ, 'MPLBACKEND': 'Agg', 'HF_HUB_OFFLINE': '1', 'PYTHONUNBUFFERED': '1', 'PYTHONWARNINGS': 'ignore', 'OMP_NUM_THREADS': '1'}
TINY = ['--arch', 'test_resnet', '--no-pretrained', '--no-finetune', '--size', '32', '--epochs', '1', '--bs', '8', '--n-tta', '0', '--quiet']


def snap(folder)->dict:
    "Every path under `folder` with its size and modification time: equal snapshots mean nothing changed."
    return {str(p.relative_to(folder)): (p.is_dir(), p.lstat().st_size if p.is_file() else 0, p.lstat().st_mtime_ns) for p in Path(folder).rglob('*')}

SUBPROCESS = float(os.environ.get('FAULTS_SUBPROCESS_TIMEOUT', 0))  # > 0: each `cli` case in its own process, stopped after that many seconds (to run the suite against old code)

def cli(*args)->tuple:
    "`paddy_collab ARGS` in this process: (exit status, stdout, stderr)."
    if SUBPROCESS:
        try: r = subprocess.run([sys.executable, '-m', 'paddy_collab.cli', *map(str, args)], capture_output=True, text=True, env=ENV, timeout=SUBPROCESS)
        except subprocess.TimeoutExpired: return 124, '', f'still running after {SUBPROCESS:.0f}s: not refused'
        return r.returncode, r.stdout, r.stderr
    from paddy_collab.cli import main
    with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()) as out:
        try: r = main([str(a) for a in args])
        except SystemExit as e: r = e.code
    return r, out.getvalue(), err.getvalue()

def user_error(args, contains, where)->str:
    "`args` exits 2 with one line on stderr holding each of `contains`, no traceback, and nothing under `where` changed; the line."
    before = snap(where)
    r, out, err = cli(*args)
    lines = err.strip().splitlines()
    assert r == 2 and len(lines) == 1 and lines[0].startswith('paddy_collab: error: '), (r, err[-3000:])
    for c in ([contains] if isinstance(contains, str) else contains): assert c in lines[0], (c, lines[0])
    assert snap(where) == before, 'a failed command changed files'
    return lines[0]

def popen(*args, cwd):
    return subprocess.Popen([sys.executable, '-m', 'paddy_collab.cli', *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=cwd)

def hidden(folder)->list: return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith('.'))

@pytest.fixture
def paddy(paddy_copy): return paddy_copy  # here each test breaks its own copy of conftest's `paddy`

@pytest.fixture(scope='module')
def ratings_csv(tmp_path_factory, ratings):
    f = tmp_path_factory.mktemp('ratings')/'r.csv'
    ratings.to_csv(f, index=False)
    return f


# --- options: range-checked when parsed, before any import, data or output ------------------------------------

BAD_OPTIONS = [
    (['train-paddy', '--size', '0'], 'argument --size: must be at least 1'),
    (['train-paddy', '--size', '-5'], 'argument --size: must be at least 1'),
    (['train-paddy', '--bs', '0'], 'argument --bs: must be at least 1'),
    (['train-paddy', '--lr', 'nan'], 'argument --lr: must be a finite number above 0, got nan'),
    (['train-paddy', '--lr', '-0.01'], 'argument --lr: must be a finite number above 0'),
    (['train-paddy', '--lr', 'inf'], 'argument --lr: must be a finite number above 0'),
    (['train-paddy', '--lr', '1e300'], 'argument --lr: must be a finite number above 0'),  # beyond float32: torch would overflow
    (['train-paddy', '--n-tta', '-1'], 'argument --n-tta: must be at least 0'),
    (['train-paddy', '--threads', '0'], 'argument --threads: must be at least 1'),
    (['train-collab', '--valid-pct', '0'], 'argument --valid-pct: must be a number between 0 and 1'),
    (['train-collab', '--valid-pct', '1'], 'argument --valid-pct: must be a number between 0 and 1'),
    (['train-collab', '--n-factors', '0'], 'argument --n-factors: must be at least 1'),
    (['train-collab', '--lr', 'nan'], 'argument --lr: must be a finite number above 0'),
    (['train-collab', '--lr=-1e-3'], 'argument --lr: must be a finite number above 0'),
    (['train-collab', '--bs', '0'], 'argument --bs: must be at least 1'),
    (['train-collab', '--wd', '-1'], 'argument --wd: must be a finite number, 0 or more'),
    (['train-collab', '--sep', ''], 'argument --sep: must not be empty'),
    (['synth', 'P', '--size', '0', '64'], 'argument --size: must be at least 1'),
    (['synth', 'P', '--size', '64', '99999'], 'argument --size: must be at most 4096'),
    (['synth', 'P', '--n-per-class', '0'], 'argument --n-per-class: must be at least 1'),
    (['synth', 'P', '--n-test', '0'], 'argument --n-test: must be at least 1'),
    (['recommend', 'M', '--user', '1', '-n', '0'], 'argument -n: must be at least 1, got 0'),
    (['recommend', 'M', '--user', '1', '-n', '-3'], 'argument -n: must be at least 1, got -3'),
    (['predict', 'M', '--weights', 'nan'], 'argument --weights: must be a finite number, 0 or more'),
]

@pytest.fixture(scope='module')
def collab_model(tmp_path_factory, ratings_csv):
    "A collab model trained for one epoch on the small low-rank ratings."
    out = tmp_path_factory.mktemp('collab')/'m'
    r, so, err = cli('train-collab', '--ratings', ratings_csv, '--epochs', 1, '--out', out, '--quiet')
    assert r == 0, err
    return out

@pytest.mark.parametrize('args,msg', BAD_OPTIONS, ids=[' '.join(a) for a, _ in BAD_OPTIONS])
def test_option_out_of_range(args, msg, tmp_path, paddy, ratings_csv, collab_model, member):
    "Each option's bad value is refused when parsed; the rest of the command line is one that runs (so that old code shows what it did)."
    cmd, *rest = [str(tmp_path/'P') if a == 'P' else str(collab_model if args[0] == 'recommend' else member) if a == 'M' else a for a in args]
    base = dict(synth=[], recommend=[], predict=['--data', paddy], **{'train-paddy': ['--data', paddy, *TINY], 'train-collab': ['--ratings', ratings_csv, '--epochs', '1', '--quiet']})
    user_error([cmd, *base[cmd], *rest] + (['--out', tmp_path/'out'] if cmd in ('train-paddy', 'train-collab', 'predict') else []), msg, tmp_path)

def test_accum_more_than_bs(paddy, tmp_path):
    user_error(['train-paddy', '--data', paddy, *TINY, '--accum', '16', '--out', tmp_path/'m'], '--accum 16 is more than --bs 8', tmp_path)

def test_y_range_reversed(ratings_csv, tmp_path):
    user_error(['train-collab', '--ratings', ratings_csv, '--y-range', '5.5', '0', '--out', tmp_path/'c'], 'must be (low, high) with low < high', tmp_path)

def test_data_is_a_file(paddy, tmp_path):
    user_error(['train-paddy', '--data', paddy/'train.csv', *TINY, '--out', tmp_path/'m'], ['train.csv is a file', 'give the competition folder'], tmp_path)


# --- data: every mistake in the competition folder is one line, before training -----------------------------------

def _drop_column(p): pd.read_csv(p/'train.csv').drop(columns='variety').to_csv(p/'train.csv', index=False)
def _stray_label(p): shutil.copy(next((p/'train_images'/'normal').glob('*.jpg')), p/'train_images'/'normal'/'999999.jpg')
def _missing_image(p): next((p/'train_images'/'normal').glob('*.jpg')).unlink()
def _empty_test(p): [f.unlink() for f in (p/'test_images').iterdir()]
def _truncated_test(p):
    f = sorted((p/'test_images').glob('*.jpg'))[1]
    f.write_bytes(f.read_bytes()[:200])

BAD_DATA = [(_drop_column, ["is missing column(s) ['variety']"]), (_stray_label, ['999999.jpg', 'are not in']),
            (_missing_image, ['have no file in']), (_empty_test, ['test_images holds no images']),
            (_truncated_test, ['1 unreadable test image(s)', 'checked before any training'])]

@pytest.mark.parametrize('breaks,msg', BAD_DATA, ids=[f.__name__[1:] for f, _ in BAD_DATA])
def test_bad_paddy_folder(paddy, tmp_path, breaks, msg):
    "A broken competition folder: one line naming the file or column, before the first epoch (no 'training' line), nothing written."
    breaks(paddy)
    if breaks is _truncated_test: msg = msg + [sorted((paddy/'test_images').glob('*.jpg'))[1].name]
    before = snap(tmp_path)
    r, out, err = cli('train-paddy', '--data', paddy, *TINY, '--out', tmp_path/'m')
    assert r == 2 and len(err.strip().splitlines()) == 1 and 'Traceback' not in err, err[-3000:]
    for m in msg: assert m in err, (m, err)
    assert 'training 1 model' not in out and 'epoch' not in out, out
    assert snap(tmp_path) == before


BAD_RATINGS = [('one_row', pd.DataFrame(dict(user=[1], title=['a'], rating=[4.])), 'has 1 rating(s)'),
               ('conflicting_duplicates', None, 'rated more than once with different ratings'),
               ('infinite', None, 'infinite rating(s)')]

@pytest.mark.parametrize('name,df,msg', BAD_RATINGS, ids=[n for n, *_ in BAD_RATINGS])
def test_bad_ratings(ratings, tmp_path, name, df, msg):
    if df is None:
        df = ratings.copy()
        if name == 'infinite': df.loc[5, 'rating'] = np.inf
        else: df = pd.concat([df, df.head(3).assign(rating=df.rating.head(3) + 1)])
    f = tmp_path/'r.csv'; df.to_csv(f, index=False)
    user_error(['train-collab', '--ratings', f, '--epochs', '1', '--out', tmp_path/'c'], msg, tmp_path)

def test_check_ratings_refuses_complex_and_inf(ratings):
    from paddy_collab.collab_data import check_ratings
    with pytest.raises(TypeError, match='holds complex numbers'): check_ratings(ratings.head(3).assign(rating=[1+2j, 2, 3]))
    with pytest.raises(ValueError, match='infinite rating'): check_ratings(ratings.head(3).assign(rating=[1., -np.inf, 3.]))

def test_bs_zero_refused():
    from paddy_collab.train import accum_setup
    with pytest.raises(ValueError, match='bs must be a whole number, at least 1, got 0'): accum_setup(1, 0)


# --- numbers that are not numbers stop the run ---------------------------------------------------------------

def test_nan_loss_stops_training(paddy, tmp_path, one_thread):
    "A loss that becomes NaN stops `train` with one clear error; `train_ensemble` saves nothing (fastai's TerminateOnNaN would only cancel, quietly)."
    from paddy_collab.train import NonFiniteLoss
    from paddy_collab.ensemble import train_ensemble
    saved = []
    with pytest.raises(NonFiniteLoss, match=r'^the training loss is nan at epoch 0, batch \d+: training diverged, so nothing was saved'):
        train_ensemble(paddy, {'test_resnet': [(None, 32)]}, on_member=lambda *a: saved.append(a), pretrained=False, finetune=False,
                       epochs=1, bs=8, n_tta=0, lr=float('nan'), show=False)
    assert saved == []

def test_cli_lr_nan_leaves_no_model(paddy, tmp_path):
    "The issue's case, as a user runs it: `train-paddy --lr nan` exits non-zero with one line and leaves no model."
    r = subprocess.run([sys.executable, '-m', 'paddy_collab.cli', 'train-paddy', '--data', str(paddy), *TINY, '--lr', 'nan', '--out', str(tmp_path/'m')],
                       capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and '--lr' in r.stderr, r.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []

def test_cli_diverging_runs_save_nothing(paddy, ratings_csv, tmp_path, one_thread):
    "A learning rate that makes the loss NaN: one line, exit 2, no model saved (before: exit 0 and a saved model, NaN in its manifest)."
    user_error(['train-paddy', '--data', paddy, *TINY, '--lr', '1e30', '--out', tmp_path/'m'], ['the training loss is nan at epoch 0', 'training diverged, so nothing was saved'], tmp_path)
    user_error(['train-collab', '--ratings', ratings_csv, '--epochs', '1', '--lr', '1e30', '--out', tmp_path/'c'], 'the validation MSE is nan: training diverged', tmp_path)

def _preds(probs, vocab=('normal', 'blast'), files=('a.jpg', 'b.jpg'), heads=('disease',)):
    from paddy_collab.predsets import PredSet
    import torch
    return PredSet([torch.tensor(probs)], [list(vocab)], list(files), list(heads))

def test_predset_refuses_nan():
    with pytest.raises(ValueError, match=r"head 'disease': 1 of 2 rows hold NaN or infinite probabilities \(first: b.jpg\)"): _preds([[0.5, 0.5], [np.nan, 0.5]])

def test_submission_refuses_other_vocabulary_and_mixed_heads(paddy, tmp_path):
    from paddy_collab.ensemble import write_submission
    from paddy_collab.paddy_checks import get_test_files
    (tmp_path/'sample_submission.csv').write_text('')  # zero bytes
    files, before = [f.name for f in get_test_files(paddy)], snap(tmp_path)
    p = np.full((len(files), 2), 0.5).tolist()
    with pytest.raises(ValueError, match=r"head 'disease' predicts \['rust'\], which are not in column 'label' of .*train.csv"):
        write_submission(_preds(p, ('normal', 'rust'), files), paddy, tmp_path/'s.csv')
    with pytest.raises(ValueError, match=r"head 'variety' predicts \['blast', 'normal'\], which are not in column 'variety'"):  # heads mixed up
        write_submission(_preds(p, ('normal', 'blast'), files, ('variety',)), paddy, tmp_path/'s.csv', head='variety')
    with pytest.raises(ValueError, match=r'sample_submission.csv is empty'): write_submission(_preds(p, ('normal', 'blast'), files), tmp_path/'sample_submission.csv', tmp_path/'s.csv')
    assert snap(tmp_path) == before


# --- corrupt saved files: which file, and what to do ---------------------------------------------------------------

@pytest.fixture
def member(paddy, tmp_path):
    "A saved Paddy member without training: a prediction set on the test images and a manifest, as `save_member` writes them."
    from paddy_collab.core import write_manifest
    from paddy_collab.ensemble import member_files
    from paddy_collab.predsets import save_preds
    from paddy_collab.paddy_checks import get_test_files, check_paddy
    files, vocab = [f.name for f in get_test_files(paddy)], check_paddy(paddy, decode=False, test=False).diseases
    m = tmp_path/'models'/'m1'; m.mkdir(parents=True)
    save_preds(_preds(np.full((len(files), len(vocab)), 1/len(vocab)).tolist(), vocab, files), m/'preds.npz')
    write_manifest(m, 'train-paddy', 'paddy-model', arch='test_resnet', files=member_files)
    return m

def test_predict_works_on_the_fake_member(member, paddy, tmp_path):
    r, out, err = cli('predict', member, '--data', paddy, '--out', tmp_path/'s.csv')
    assert r == 0 and (tmp_path/'s.csv').exists(), err

@pytest.mark.parametrize('damage', ['truncate', 'garbage', 'nan'])
def test_corrupt_preds(member, paddy, tmp_path, damage):
    f = member/'preds.npz'
    if damage == 'truncate': f.write_bytes(f.read_bytes()[:100])
    elif damage == 'garbage': f.write_bytes(b'not a zip file at all')
    else:  # a well-formed file whose probabilities are NaN (a diverged run saved by an older version)
        with np.load(f) as z: info, probs = z['info'], z['probs_0'].copy()
        probs[0, 0] = np.nan; np.savez(f, info=info, probs_0=probs)
    user_error(['predict', member, '--data', paddy, '--out', tmp_path/'s.csv'], ['preds.npz is not a prediction set written by save_preds, or is damaged', 'train that member again'], tmp_path)

def test_submit_refuses_the_variety_head(member, paddy, tmp_path):
    user_error(['submit', member, '--data', paddy, '--out', tmp_path/'s.csv', '-m', 'x', '--dry-run', '--head', 'variety'], 'Kaggle scores disease labels', tmp_path)

def test_corrupt_manifest(member, paddy, tmp_path):
    (member/'paddy_collab.json').write_text('{"kind": "paddy-mo')
    user_error(['predict', member, '--data', paddy, '--out', tmp_path/'s.csv'], ['paddy_collab.json is damaged', 'with --force'], tmp_path)

def test_corrupt_collab_model(tmp_path):
    from paddy_collab.core import write_manifest
    m = tmp_path/'collab'; m.mkdir()
    (m/'model.pkl').write_bytes(b'\x80\x04garbage')
    write_manifest(m, 'train-collab', 'collab-model', ratings='movielens-100k', files=dict(model='model.pkl'))
    user_error(['recommend', m, '--user', '1'], ['model.pkl cannot be loaded', 'train it again (train-collab --force)'], tmp_path)


# --- outputs that cannot clobber ---------------------------------------------------------------------------------

def test_force_refuses_what_the_tool_did_not_make(tmp_path):
    code = tmp_path/'code'; code.mkdir(); (code/'train.py').write_text('print(1)')
    (tmp_path/'notes.txt').write_text('mine')
    user_error(['synth', code, '--n-per-class', 1, '--n-test', 1, '--size', 16, 16, '--force'], ['refusing to replace', 'no paddy_collab.json', '--force replaces only'], tmp_path)
    user_error(['synth', tmp_path/'notes.txt', '--n-per-class', 1, '--n-test', 1, '--force'], ['refusing to replace', 'it is a file, not a folder'], tmp_path)
    cwd = os.getcwd(); os.chdir(code)
    try: user_error(['synth', '.', '--n-per-class', 1, '--n-test', 1, '--force'], 'it is the current folder', tmp_path)
    finally: os.chdir(cwd)

def test_force_replaces_its_own_folder_and_an_empty_one(tmp_path):
    for args in [(), ('--force',)]: assert cli('synth', tmp_path/'p', '--n-per-class', 1, '--n-test', 1, '--size', 16, 16, *args)[0] == 0
    (tmp_path/'empty').mkdir()
    assert cli('synth', tmp_path/'empty', '--n-per-class', 1, '--n-test', 1, '--size', 16, 16, '--force')[0] == 0
    assert json.loads((tmp_path/'p'/'paddy_collab.json').read_text())['command'] == 'synth' and hidden(tmp_path) == []

def _n_train(p): return len(list((Path(p)/'train_images').rglob('*.jpg')))

def test_two_concurrent_writers(tmp_path):
    "Two `synth` runs into one --out: the second to finish keeps its result under a name it prints; nothing is lost."
    big = popen('synth', tmp_path/'out', '--n-per-class', 60, '--n-test', 60, '--size', 320, 240, cwd=tmp_path)  # some seconds: long enough to overlap
    t0 = time.time()
    while not any(tmp_path.glob('.out.*.tmp')) and big.poll() is None and time.time() - t0 < 120: time.sleep(0.02)
    small = popen('synth', tmp_path/'out', '--n-per-class', 1, '--n-test', 1, '--size', 16, 16, cwd=tmp_path)
    (so_s, se_s), (so_b, se_b) = small.communicate(timeout=300), big.communicate(timeout=300)
    rcs = {'small': small.returncode, 'big': big.returncode}
    assert sorted(rcs.values()) == [0, 2], (rcs, se_s, se_b)
    loser_err = se_b if rcs['big'] == 2 else se_s
    assert len(loser_err.strip().splitlines()) == 1 and 'Traceback' not in loser_err, loser_err
    if 'already exists' in loser_err: results = {_n_train(tmp_path/'out')}  # the loser started after the winner had finished: refused at once
    else:
        assert "was written by another run while this one worked" in loser_err and str(tmp_path/'out-2') in loser_err, loser_err
        results = {_n_train(tmp_path/'out'), _n_train(tmp_path/'out-2')}
        assert results == {10, 600}, results  # both complete: nothing lost
    print(rcs, loser_err)
    assert hidden(tmp_path) == []

def test_sigkill_leaves_no_permanent_temp(tmp_path):
    "A run killed mid-write leaves its hidden temporary; the next run into the same --out removes it (its PID is dead) and says so."
    p = popen('synth', tmp_path/'out', '--n-per-class', 50, '--n-test', 50, '--size', 160, 120, cwd=tmp_path)
    t0 = time.time()
    while not any(tmp_path.glob('.out.*.tmp')) and p.poll() is None and time.time() - t0 < 120: time.sleep(0.02)
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL); p.communicate(timeout=60)
    (left,) = hidden(tmp_path)
    assert left.startswith(f'.out.{p.pid}-') and not (tmp_path/'out').exists()
    r = subprocess.run([sys.executable, '-m', 'paddy_collab.cli', 'synth', str(tmp_path/'out'), '--n-per-class', '1', '--n-test', '1', '--size', '16', '16'],
                       capture_output=True, text=True, env=ENV, cwd=tmp_path, timeout=300)
    assert r.returncode == 0 and f'removed {tmp_path/left}, left unfinished by a run that ended (pid {p.pid})' in r.stderr, r.stderr
    assert hidden(tmp_path) == [] and _n_train(tmp_path/'out') == 10
