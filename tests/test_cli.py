"The `paddy_collab` command line, run as a user runs it: a subprocess per command, on tiny data."
import os, signal, subprocess, sys, time
from pathlib import Path
import pytest

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
    from paddy_collab.cli import build_parser, _commands
    build_parser()
    return list(_commands)


def test_help_lists_commands():
    out = ok('--help')
    for c in commands(): assert c in out


@pytest.mark.parametrize('cmd', commands())
def test_help(cmd):
    "Every option of every command is explained."
    out = ok(cmd, '--help')
    assert 'example:' in out
    from paddy_collab.cli import build_parser
    sub = next(a for a in build_parser()._actions if a.dest == 'command').choices[cmd]
    for a in sub._actions: assert a.help, f"{cmd}: option {a.option_strings or a.dest} has no help"


def test_usage_errors():
    user_error(contains='required: COMMAND')
    user_error('frobnicate', contains="invalid choice: 'frobnicate'")
    user_error('synth', contains='required: path')
    user_error('synth', 'x', '--n-per-class', 'many', contains="invalid int value: 'many'")


# --- synth ----------------------------------------------------------------------------------------------------

def test_synth(paddy, tmp_path):
    assert (paddy/'train.csv').exists() and (paddy/'sample_submission.csv').exists()
    assert len(list((paddy/'train_images').rglob('*.jpg'))) == 40 and len(list((paddy/'test_images').glob('*.jpg'))) == 6
    before = (paddy/'train.csv').stat().st_mtime_ns
    user_error('synth', paddy, contains='already exists; pass --force')
    assert (paddy/'train.csv').stat().st_mtime_ns == before
    (tmp_path/'file').write_text('')
    user_error('synth', tmp_path/'file'/'paddy', contains='is a file, not a folder')
    user_error('synth', tmp_path/'p', '--n-per-class', 0, contains='n_per_class must be >= 1')
    ok('synth', tmp_path/'p', '--n-per-class', 1, '--n-test', 1, '--size', 32, 32)
    ok('synth', tmp_path/'p', '--n-per-class', 1, '--n-test', 2, '--size', 32, 32, '--force')
    assert len(list((tmp_path/'p'/'test_images').glob('*.jpg'))) == 2
    assert leftovers(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason='root can write anywhere')
def test_unwritable(tmp_path):
    ro = tmp_path/'ro'; ro.mkdir(); ro.chmod(0o500)
    try: user_error('synth', ro/'p', contains='is not writable')
    finally: ro.chmod(0o700)


def interrupt(args, folder, timeout=120):
    "Start `paddy_collab ARGS`, send SIGINT once its temporary output appears in `folder`; return the CompletedProcess-like result."
    folder = Path(folder); folder.mkdir(parents=True, exist_ok=True)
    p = subprocess.Popen([sys.executable, '-m', 'paddy_collab.cli', *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=ENV, cwd=ROOT)
    t0 = time.time()
    while not any(folder.glob('.*.tmp')) and p.poll() is None and time.time()-t0 < timeout: time.sleep(0.05)
    assert p.poll() is None, f"finished before it could be interrupted: {p.communicate()}"
    time.sleep(0.3)  # let it write a little
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    return p.returncode, out, err


def test_sigint_synth(tmp_path):
    rc, out, err = interrupt(['synth', tmp_path/'p', '--n-per-class', 50, '--n-test', 50], tmp_path)
    assert rc == 130, (rc, out, err)
    assert 'interrupted' in err and 'Traceback' not in err
    assert list(tmp_path.iterdir()) == []
