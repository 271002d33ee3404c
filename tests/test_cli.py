"The `paddy_collab` command line, run as a user runs it: a subprocess per command, on tiny data."
import os, signal, subprocess, sys, time
from pathlib import Path
import pandas as pd, pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'MPLBACKEND': 'Agg', 'HF_HUB_OFFLINE': '1', 'PYTHONUNBUFFERED': '1', 'PYTHONWARNINGS': 'ignore'}


def cli(*args, cwd=None, timeout=300):
    "Run `python -m paddy_collab.cli ARGS`; return the CompletedProcess (text)."
    return subprocess.run([sys.executable, '-m', 'paddy_collab.cli', *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd or ROOT, timeout=timeout)


def ok(*args, **kw):
    r = cli(*args, **kw)
    assert r.returncode == 0, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r.stdout


def user_error(*args, contains=''):
    "The command fails with status 2 and exactly one line on stderr, containing `contains`, and no traceback."
    r = cli(*args)
    assert r.returncode == 2, f"exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('paddy_collab: error: '), r.stderr
    assert 'Traceback' not in r.stderr + r.stdout
    assert contains in lines[0], f"{contains!r} not in {lines[0]!r}"
    return lines[0]


def leftovers(folder):
    "Hidden temporary files or folders left in `folder` by an interrupted write."
    return [p.name for p in Path(folder).iterdir() if p.name.startswith('.') and ('.tmp' in p.name or '.old' in p.name)]


@pytest.fixture(scope='module')
def paddy(tmp_path_factory):
    "A tiny synthetic Paddy set, written by the `synth` command."
    p = tmp_path_factory.mktemp('data')/'paddy'
    out = ok('synth', p, '--n-per-class', 4, '--n-test', 6, '--size', 64, 96, '--seed', 1)
    assert str(p) in out
    return p


# --- help and usage -------------------------------------------------------------------------------------------

def test_console_script():
    exe = Path(sys.executable).parent/'paddy_collab'
    if not exe.exists(): pytest.skip('console script not installed (pip install -e .)')
    r = subprocess.run([exe, '--version'], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0 and r.stdout.startswith('paddy_collab ')


def commands():
    from paddy_collab.cli import commands
    return list(commands.jobs)


def test_help_lists_commands():
    out = ok('--help')
    for c in commands(): assert c in out


@pytest.mark.parametrize('cmd', commands())
def test_help(cmd):
    "Every option of every command is explained."
    out = ok(cmd, '--help')
    assert 'example:' in out
    from paddy_collab.cli import commands
    sub = next(a for a in commands.parser()._actions if a.dest == 'command').choices[cmd]
    for a in sub._actions: assert a.help, f"{cmd}: option {a.option_strings or a.dest} has no help"


def test_usage_errors():
    user_error(contains='required: COMMAND')
    user_error('frobnicate', contains="invalid choice: 'frobnicate'")
    user_error('synth', contains='required: path')
    user_error('synth', 'x', '--n-per-class', 'many', contains="argument --n-per-class: must be a whole number, got 'many'")


# --- synth ----------------------------------------------------------------------------------------------------

def test_synth(paddy, tmp_path):
    assert (paddy/'train.csv').exists() and (paddy/'sample_submission.csv').exists()
    assert len(list((paddy/'train_images').rglob('*.jpg'))) == 40 and len(list((paddy/'test_images').glob('*.jpg'))) == 6
    before = (paddy/'train.csv').stat().st_mtime_ns
    user_error('synth', paddy, contains='already exists; pass --force')
    assert (paddy/'train.csv').stat().st_mtime_ns == before
    (tmp_path/'file').write_text('')
    user_error('synth', tmp_path/'file'/'paddy', contains='is a file, not a folder')
    user_error('synth', tmp_path/'p', '--n-per-class', 0, contains='argument --n-per-class: must be at least 1')
    ok('synth', tmp_path/'p', '--n-per-class', 1, '--n-test', 1, '--size', 32, 32)
    ok('synth', tmp_path/'p', '--n-per-class', 1, '--n-test', 2, '--size', 32, 32, '--force')
    assert len(list((tmp_path/'p'/'test_images').glob('*.jpg'))) == 2
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason='root can write anywhere')
def test_unwritable(tmp_path):
    ro = tmp_path/'ro'; ro.mkdir(); ro.chmod(0o500)
    try: user_error('synth', ro/'p', contains='is not writable')
    finally: ro.chmod(0o700)


def interrupt(args, folder, started=None, timeout=120):
    "Start `paddy_collab ARGS`, send SIGINT once its temporary output appears in `folder` (or it prints a line containing `started`)."
    folder = Path(folder); folder.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen([sys.executable, '-m', 'paddy_collab.cli', *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=ENV, cwd=ROOT, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as from a terminal: a test
                         # run started in the background (`cmd &` without job control) ignores SIGINT, and its children would inherit that
    t0, seen = time.time(), ''
    if started:
        while started not in seen and p.poll() is None and time.time()-t0 < timeout: seen += p.stdout.readline()
    else:
        while not any(folder.glob('.*.tmp')) and p.poll() is None and time.time()-t0 < timeout: time.sleep(0.05)
    assert p.poll() is None, f"finished before it could be interrupted: {p.communicate()}"
    time.sleep(0.3)  # let it write (or train) a little
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    return p.returncode, seen + out, err


def test_sigint_synth(tmp_path):
    rc, out, err = interrupt(['synth', tmp_path/'p', '--n-per-class', 50, '--n-test', 50], tmp_path)
    assert rc == 130, (rc, out, err)
    assert 'interrupted' in err and 'Traceback' not in err
    assert list(tmp_path.iterdir()) == []


# --- collaborative filtering ----------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def ratings_csv(tmp_path_factory):
    "A small ratings CSV from known low-rank factors, with its own column names and a ';' separator."
    from paddy_collab.collab_data import lowrank_ratings
    f = tmp_path_factory.mktemp('ratings')/'stars.csv'
    lowrank_ratings(n_users=50, n_items=30, density=0.7, seed=0).rename(columns={'user': 'uid', 'title': 'movie', 'rating': 'stars'}).to_csv(f, index=False, sep=';')
    return f


def biases_only_mse(csv, sep=';', iters=20)->float:
    "In-sample MSE of the mean plus a bias per user and per item, fitted to all of `csv` by alternating least squares."
    df = pd.read_csv(csv, sep=sep)
    r = df.stars - df.stars.mean()
    bi = pd.Series(0., index=df.movie.unique())
    for _ in range(iters):
        bu = (r - df.movie.map(bi)).groupby(df.uid).mean()
        bi = (r - df.uid.map(bu)).groupby(df.movie).mean()
    return float(((r - df.uid.map(bu) - df.movie.map(bi))**2).mean())


@pytest.fixture(scope='module')
def collab_model(ratings_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp('collab')/'model'
    so = ok('train-collab', '--ratings', ratings_csv, '--sep', ';', '--user-col', 'uid', '--item-col', 'movie', '--rating-col', 'stars',
            '--epochs', 5, '--lr', 0.02, '--bs', 32, '--out', out)
    return out, so


def test_train_collab(collab_model, ratings_csv):
    out, so = collab_model
    assert sorted(p.name for p in out.iterdir()) == ['biases.png', 'loss.png', 'model.pkl', 'paddy_collab.json', 'pca.png']
    for f in ('model.pkl', 'loss.png', 'pca.png', 'biases.png'): assert f"wrote {out/f}" in so or f"saved the model to {out/f}" in so
    mse = float(so.split('valid MSE ')[1].split()[0])
    # the noise variance is 0.09, the ratings' variance 1.02; measured 0.27. A model of user and item biases alone, fitted
    # on all the ratings (valid included, so its MSE is a lower bound on what it could score), stays above the bound.
    assert mse < 0.45 < biases_only_mse(ratings_csv)
    assert leftovers(out.parent) == []


def test_recommend(collab_model):
    out, _ = collab_model
    so = ok('recommend', out, '--user', 3, '--like', 'movie 7', '-n', 4)
    top = so.split('top 4 for user 3')[1].split('nearest')[0]
    import re
    assert len([l for l in top.splitlines() if re.match(r'\s*movie \d+\s', l)]) == 4
    near = so.split("nearest to 'movie 7'")[1]
    names = [' '.join(l.split()[:2]) for l in near.splitlines() if re.match(r'\s*movie \d+\s', l)]
    assert len(names) == 4 and 'movie 7' not in names
    user_error('recommend', out, '--like', 'movie 700', contains="item 'movie 700' is not in the model")
    user_error('recommend', out, contains='give --user ID and/or --like ITEM')


def test_collab_bad_input(ratings_csv, tmp_path):
    user_error('train-collab', '--ratings', ratings_csv, '--sep', ';', '--out', tmp_path/'m', contains="is missing column(s) ['user', 'title', 'rating']")
    bad = tmp_path/'bad.csv'; bad.write_text('user,title,rating\n1,a,3\n2,b,"oops\n')
    user_error('train-collab', '--ratings', bad, '--out', tmp_path/'m', contains='is not a readable CSV')
    txt = tmp_path/'txt.csv'; txt.write_text('user,title,rating\n1,a,three\n2,b,4\n')
    user_error('train-collab', '--ratings', txt, '--out', tmp_path/'m', contains="must be numeric")
    user_error('train-collab', '--ratings', tmp_path/'none.csv', '--out', tmp_path/'m', contains='none.csv not found')
    assert not (tmp_path/'m').exists()


# --- Paddy: train, predict, submit ----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def paddy_models(paddy, tmp_path_factory):
    out = tmp_path_factory.mktemp('paddy')/'models'
    so = ok('train-paddy', '--data', paddy, '--ensemble', 'tiny', '--size', 32, '--epochs', 1, '--bs', 16, '--multi-target',
            '--no-pretrained', '--n-tta', 1, '--out', out)
    return out, so


def test_train_paddy(paddy_models):
    out, so = paddy_models
    members = sorted(p.name for p in out.iterdir())
    assert members == ['test_resnet-Resize69_69crop-32', 'test_resnet-Resize69_69squish-32']
    for m in members:
        assert sorted(p.name for p in (out/m).iterdir()) == ['confusion.png', 'loss.png', 'model.pkl', 'paddy_collab.json', 'preds.npz']
        for f in ('model.pkl', 'preds.npz', 'loss.png', 'confusion.png'): assert f"wrote {out/m/f}" in so
        from PIL import Image
        w, h = Image.open(out/m/'confusion.png').size
        assert w == 2*h  # fastai's confusion matrix of each head (disease, variety), side by side
    errs = [l for l in so.splitlines() if ': validation error disease ' in l]
    assert len(errs) == 2 and all('variety' in l for l in errs)
    assert leftovers(out) == []


def test_train_paddy_reloads(paddy_models, paddy):
    "The exported learner loads in a fresh process and predicts both heads."
    out, _ = paddy_models
    code = ("from fastai.learner import load_learner; from paddy_collab.multitarget import multi_predict; import sys; "
            "l = load_learner(sys.argv[1]); print(multi_predict(l, sys.argv[2])[0])")
    img = sorted((paddy/'test_images').glob('*.jpg'))[0]
    r = subprocess.run([sys.executable, '-c', code, out/'test_resnet-Resize69_69squish-32'/'model.pkl', img], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("'") == 4  # (disease, variety)


def test_train_paddy_errors(paddy, paddy_models, tmp_path):
    out, _ = paddy_models
    user_error('train-paddy', '--data', paddy, '--arch', 'resnet81', '--out', tmp_path, contains="did you mean 'resnet18'")
    user_error('train-paddy', '--data', tmp_path/'nowhere', '--arch', 'test_resnet', '--out', tmp_path, contains='nowhere not found')
    user_error('train-paddy', '--data', paddy, '--ensemble', 'tiny', '--no-pretrained', '--size', 32, '--out', out, contains='already exists; pass --force')
    user_error('train-paddy', '--data', paddy, '--arch', 'test_resnet', '--out', tmp_path, contains='pass --no-pretrained')  # HF_HUB_OFFLINE=1
    assert list(tmp_path.iterdir()) == []


def test_predict(paddy_models, paddy, collab_model, tmp_path):
    out, _ = paddy_models
    sub = tmp_path/'submission.csv'
    so = ok('predict', out, '--data', paddy, '--out', sub)
    import pandas as pd
    from paddy_collab.synth import diseases
    df, smp = pd.read_csv(sub), pd.read_csv(paddy/'sample_submission.csv')
    assert list(df.image_id) == list(smp.image_id) and df.label.isin(diseases).all()
    assert f'wrote {sub}' in so and 'weight 0.50' in so
    before = sub.read_bytes()
    user_error('predict', out, '--data', paddy, '--out', sub, contains='already exists; pass --force')
    assert sub.read_bytes() == before
    ok('predict', out/'test_resnet-Resize69_69squish-32', '--data', paddy, '--out', sub, '--head', 'variety', '--force')
    user_error('predict', out, '--data', paddy, '--out', tmp_path/'s2.csv', '--weights', 1, contains='got 1 weights for 2 prediction sets')
    user_error('predict', collab_model[0], '--data', paddy, '--out', tmp_path/'s2.csv', contains='holds a collab model (`train-collab`)')
    user_error('recommend', out/'test_resnet-Resize69_69squish-32', '--user', 1, contains='holds a Paddy model (`train-paddy`)')
    user_error('predict', tmp_path, '--data', paddy, '--out', tmp_path/'s2.csv', contains='holds no model saved by')


# --- Kaggle, through the stand-in server ----------------------------------------------------------------------

@pytest.fixture(scope='module')
def kaggle_env(tmp_path_factory):
    "Environment variables sending the real kaggle client to a local stand-in server (see tests/kaggle_server.py)."
    from kaggle_server import KaggleStandIn, standin_env
    import secrets
    d = tmp_path_factory.mktemp('kaggle')
    s = KaggleStandIn(username='standin-user', key=secrets.token_hex(16), port=80)
    with s:
        env = {k: v for k, v in ENV.items() if not k.startswith('KAGGLE_')}
        yield s, {**env, 'HOME': str(d), **standin_env(s, d/'cfg')}


def test_submit(paddy_models, paddy, kaggle_env, tmp_path):
    s, env = kaggle_env
    out, _ = paddy_models
    ENV_, sub = dict(ENV), tmp_path/'submission.csv'
    try:
        ENV.clear(); ENV.update(env)
        so = ok('submit', out, '--data', paddy, '--out', sub, '-m', 'tiny ensemble', '--dry-run')
        assert 'not submitted' in so and not s.submissions
        so = ok('submit', out, '--data', paddy, '--out', sub, '-m', 'tiny ensemble', '--force')
        assert 'submitted' in so and s.submissions[-1]['message'] == 'tiny ensemble' and s.submissions[-1]['csv'] == sub.read_bytes()
        s.fail('StartSubmissionUpload', 500)
        user_error('submit', out, '--data', paddy, '--out', sub, '-m', 'again', '--force', contains='500')
    finally: ENV.clear(); ENV.update(ENV_)


def test_push_kernel(kaggle_env, tmp_path):
    import json
    s, env = kaggle_env
    nb = ROOT/'nbs'/'05_ensemble.ipynb'
    so = ok('push-kernel', nb, '--dry-run', tmp_path/'k', '--gpu')
    meta = json.loads((tmp_path/'k'/'kernel-metadata.json').read_text())
    assert meta['enable_gpu'] is True and 'not pushed' in so
    assert meta['competition_sources'] == ['paddy-disease-classification']  # the documented form
    assert meta['dataset_sources'] == ['your-kaggle-user/paddy-collab-wheels']  # the notebook uses paddy_collab: the wheels are attached
    pushed = json.loads((tmp_path/'k'/'05_ensemble.ipynb').read_text())
    assert "'--no-index', '--find-links'" in ''.join(pushed['cells'][0]['source'])  # the wheels dataset is installed offline, first
    user_error('push-kernel', nb, '--slug', 'my-ensemble', '--dry-run', tmp_path/'k2', contains='does not match title')
    user_error('push-kernel', '--dry-run', tmp_path/'k3', contains='give a notebook to push, or --train')
    ENV_ = dict(ENV)
    try:
        ENV.clear(); ENV.update(env)
        user_error('push-kernel', nb, contains="Checking dataset 'standin-user/paddy-collab-wheels' failed: HTTP 404")  # no wheels pushed yet
        assert not s.ops('SaveKernel')
        so = ok('push-kernel', ROOT/'nbs'/'app'/'04_cli.ipynb', '--title', 'paddy_collab command line', '--wheel-ds', '')
        req = s.ops('SaveKernel')[-1]['json']
        assert req['slug'] == 'standin-user/paddy-collab-command-line' and req['isPrivate'] is True and 'pushed' in so
        user_error('push-kernel', tmp_path/'none.ipynb', contains='is not a notebook')
        s.fail('SaveKernel', 403)
        user_error('push-kernel', ROOT/'nbs'/'app'/'04_cli.ipynb', '--wheel-ds', '', contains="accept the competition's rules at https://www.kaggle.com/competitions/paddy-disease-classification/rules")
    finally: ENV.clear(); ENV.update(ENV_)

def _kernel_params(dest):
    "The values of the parameters cell of the competition kernel that `push-kernel --train --dry-run` wrote into `dest`."
    import json
    meta = json.loads((dest/'kernel-metadata.json').read_text())
    nb = json.loads((dest/meta['code_file']).read_text())
    src, = [''.join(c['source']) for c in nb['cells'] if 'parameters' in c['metadata'].get('tags', [])]
    exec(src, vals := {})
    return vals

def test_push_kernel_train_accum(kaggle_env, tmp_path):
    "The lesson's ensemble trains as part 3 did, with `accum=2`, unless told otherwise; one architecture with 1."
    ok('push-kernel', '--train', '--ensemble', 'lesson', '--dry-run', tmp_path/'lesson')
    assert _kernel_params(tmp_path/'lesson')['accum'] == 2
    ok('push-kernel', '--train', '--ensemble', 'lesson', '--accum', '4', '--dry-run', tmp_path/'four')
    assert _kernel_params(tmp_path/'four')['accum'] == 4
    ok('push-kernel', '--train', '--dry-run', tmp_path/'one')
    assert _kernel_params(tmp_path/'one')['accum'] == 1


# The README's Kaggle cycle, run as written (YOU -> the stand-in's user, PADDY_PATH -> a synthetic set; the weights pushed are
# timm's tiny test_resnet, saved locally in the HF cache layout, instead of convnext_small's: nothing is downloaded)
README_CYCLE = """paddy_collab push-wheels
paddy_collab push-weights convnext_small.fb_in22k
paddy_collab push-kernel --train --arch convnext_small.fb_in22k --epochs 12 --weights-ds paddy-collab-weights
paddy_collab kernel-status YOU/paddy-doctor-ensemble --wait 10800
paddy_collab kernel-output YOU/paddy-doctor-ensemble --out kernel-output
paddy_collab submit kernel-output/submission.csv -m "convnext_small, 12 epochs, TTA" --wait 600"""


def test_readme_kaggle_cycle(kaggle_env, paddy, tmp_path):
    "Every step of the Kaggle cycle, as the README shows it, against the stand-in: wheels, weights, push, status, output, submit."
    import json, shlex, timm, torch
    from safetensors.torch import save_file
    from kaggle_server import dep_wheels
    s, env = kaggle_env
    wheels = dep_wheels()
    if wheels is None: pytest.skip('PyPI unreachable: cannot fetch the dependency wheels once')
    hub = tmp_path/'hf'/'hub'; r = hub/'models--timm--test_resnet.r160_in1k'
    (r/'refs').mkdir(parents=True); (r/'snapshots'/'abc').mkdir(parents=True); (r/'refs'/'main').write_text('abc')
    save_file(timm.create_model('test_resnet', pretrained=False).state_dict(), r/'snapshots'/'abc'/'model.safetensors')
    ref = 'standin-user/paddy-doctor-ensemble'
    s.run_kernel(ref, ['RUNNING', 'COMPLETE'], files={'submission.csv': (paddy/'sample_submission.csv').read_bytes()}, log='[{"data": "done"}]')
    ENV_ = dict(ENV)
    try:
        ENV.clear(); ENV.update(env, HF_HUB_CACHE=str(hub), PIP_FIND_LINKS='', PADDY_PATH=str(paddy))
        steps = [shlex.split(l.replace('YOU', 'standin-user').replace('convnext_small.fb_in22k', 'test_resnet'))[1:]
                 for l in README_CYCLE.splitlines()]
        steps[0] += ['--find-links', str(wheels)]  # offline: the dependencies' wheels from the local copy instead of PyPI
        outs = [ok(*st, '--poll', '0.1') if st[0] == 'kernel-status' else ok(*st, cwd=tmp_path) for st in steps]
    finally: ENV.clear(); ENV.update(ENV_)
    assert 'created standin-user/paddy-collab-wheels' in outs[0] and 'fastkaggle' in outs[0]
    assert 'created standin-user/paddy-collab-weights' in outs[1] and 'test-resnet.safetensors' in outs[1]
    req = s.ops('SaveKernel')[-1]['json']
    assert req['slug'] == ref and req['competitionDataSources'] == ['paddy-disease-classification'] and req['enableInternet'] is False
    assert req['datasetDataSources'] == ['standin-user/paddy-collab-weights', 'standin-user/paddy-collab-wheels']
    assert f'{ref}: complete' in outs[3]
    assert (tmp_path/'kernel-output'/'submission.csv').read_bytes() == (paddy/'sample_submission.csv').read_bytes()
    assert 'public score 0.25' in outs[5] and s.submissions[-1]['message'] == 'convnext_small, 12 epochs, TTA'
    s.run_kernel(ref, ['ERROR'], log='RuntimeError: no wheel of beartype', failure='Your notebook hit an error')
    try:
        ENV.clear(); ENV.update(env)
        r = cli('kernel-status', ref, '--wait', '5', '--poll', '0.1')
    finally: ENV.clear(); ENV.update(ENV_)
    assert r.returncode == 2 and 'no wheel of beartype' in r.stderr and 'Traceback' not in r.stderr


def injected(module, name, exc, args):
    "Run `main(args)` in a fresh process with `module.name` replaced by a function raising `exc` (a bug): the CompletedProcess."
    code = (f"import sys, paddy_collab.cli as c, {module} as m\n"
            f"def bug(*a, **kw): raise {exc}('an internal bug, not the user\\'s fault')\n"
            f"m.{name} = bug\n"
            f"sys.exit(c.main({[str(a) for a in args]!r}))")
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=ENV, timeout=300)

def test_internal_errors_show_their_traceback(tmp_path):
    "A bug (any exception the boundary did not turn into a UsageError) is not passed off as a user error: traceback, exit 1."
    r = injected('paddy_collab.core', 'check_writable', 'ValueError', ['synth', tmp_path/'p', '--n-per-class', 1, '--n-test', 1, '--size', 8, 8])
    assert r.returncode == 1 and 'Traceback' in r.stderr and 'an internal bug' in r.stderr, r.stderr
    user_error('synth', tmp_path/'q', '--n-per-class', '0', contains='argument --n-per-class: must be at least 1')  # the library's check of user input: one line

def test_internal_errors_in_the_library(ratings_csv, tmp_path):
    "A `KeyError` or `ValueError` from inside a library function the job calls (not a check of the user's input) shows its traceback."
    args = ['train-collab', '--ratings', ratings_csv, '--sep', ';', '--user-col', 'uid', '--item-col', 'movie', '--rating-col', 'stars', '--epochs', 1, '--out', tmp_path/'m']
    for exc in ('KeyError', 'ValueError'):
        r = injected('paddy_collab.collab', 'collab_model_learner', exc, args)
        assert r.returncode == 1 and 'Traceback' in r.stderr and f"{exc}: " in r.stderr and 'paddy_collab: error' not in r.stderr, r.stderr
    assert not (tmp_path/'m').exists()
    user_error(*args[:-2], '--rating-col', 'nope', '--out', tmp_path/'m', contains="is missing column(s) ['nope']")  # a user error: one line


def test_bugs_inside_a_user_input_block_show_their_traceback(tmp_path):
    "`user_input` turns only the errors about the user's input (ValueError, LookupError, KaggleError) into one line: a TypeError or RuntimeError there is a bug."
    for exc in ('TypeError', 'RuntimeError'):
        r = injected('paddy_collab.synth', 'synth_paddy', exc, ['synth', tmp_path/exc, '--n-per-class', 1, '--n-test', 1, '--size', 8, 8])
        assert r.returncode == 1 and 'Traceback' in r.stderr and f"{exc}: an internal bug" in r.stderr and 'paddy_collab: error' not in r.stderr, r.stderr
        assert not (tmp_path/exc).exists()


def test_piped_log_has_no_progress_bars(collab_model, paddy_models):
    "Output that is not a terminal (a pipe, a log file) gets fastai's table of losses, one line per epoch, and no progress-bar fragments."
    for so in (collab_model[1], paddy_models[1]):
        assert 'epoch' in so and '\r' not in so and '\u2588' not in so, repr(so[:500])


def test_atomic_dir_has_mkdir_permissions(tmp_path):
    import stat
    from paddy_collab.core import atomic_dir
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path/'out') as t: (t/'a').write_text('a')
        (tmp_path/'plain').mkdir()
    finally: os.umask(old)
    assert stat.S_IMODE((tmp_path/'out').stat().st_mode) == stat.S_IMODE((tmp_path/'plain').stat().st_mode) == 0o755


# --- interrupting a training run ------------------------------------------------------------------------------

def test_sigint_train_paddy(paddy, tmp_path):
    out = tmp_path/'models'
    rc, so, err = interrupt(['train-paddy', '--data', paddy, '--arch', 'test_resnet', '--size', 32, '--epochs', 30, '--bs', 8,
                             '--no-pretrained', '--out', out], out, started='train_loss')  # inside the training loop
    assert rc == 130, (rc, so, err)
    assert 'interrupted' in err and 'Traceback' not in err
    assert list(out.iterdir()) == []


def test_demo_quick(tmp_path):
    so = ok('demo', '--quick', '--out', tmp_path/'demo', timeout=600)
    for f in ['collab/model.pkl', 'collab/pca.png', 'collab/biases.png', 'paddy_data/train.csv', 'submission.csv',
              'paddy/test_resnet-Resize69_69squish-32/confusion.png']:
        assert (tmp_path/'demo'/f).exists(), f
    assert 'demo done' in so and "nearest to 'Star Wars (1977)'" in so and 'test error against' in so
    user_error('demo', '--quick', '--out', tmp_path/'demo', contains='already exists')


def test_readme_shows_the_kaggle_cycle():
    "README.md shows the Kaggle cycle that `test_readme_kaggle_cycle` runs, line for line."
    readme = (ROOT/'README.md').read_text()
    missing = [l for l in README_CYCLE.splitlines() if l not in readme]
    assert not missing, f"README.md lacks {missing}: paste the Kaggle section (tests/test_cli.py README_CYCLE) into nbs/index.ipynb and run `make readme`"
