"""What users push, run offline in a Kaggle-shaped sandbox on *Kaggle's* Python, not ours.

The test's interpreter (this project's .venv, 3.11 here) builds the wheel dataset with the real `wheel_files` (for Kaggle's
Python, as `push-wheels` does) and writes the kernels with the real `push-kernel --dry-run`. The kernels then run on another
Python (3.12, as Kaggle's image):
- the interpreter is a copy (hard links, about 2 s) of a Kaggle-like venv built once per machine and cached
  (`python tests/test_sandbox.py --build`, `make kaggle-venv`): `fastcore<2`, then torch, fastai, timm, kaggle, nbdev,
  `plum-dispatch` 2.10 (what the image holds), ipykernel, as pip resolves them; not paddy_collab, not fastkaggle. The
  kernel's install cell must bring those from the wheel dataset, and downgrade plum-dispatch, as it does on Kaggle;
- the filesystem is Kaggle's: where we may (root, `unshare`), the kernel runs in a private mount namespace with the test's
  folder bound on `/kaggle`, `/kaggle/input` read-only (a read-only mount: even root cannot write), working folder
  `/kaggle/working`; elsewhere `input/` and `working/` side by side in a temporary folder (`../input`);
- `KAGGLE_KERNEL_RUN_TYPE=Batch`, a fresh HOME and temporary folder, no pip configuration, and no network: a
  `sitecustomize` refuses every socket that is not loopback or a Unix socket (the Jupyter kernel talks to its client over loopback).
Runs: the competition kernel (Kaggle's classic layout, `/kaggle/input/<comp>`), the lesson notebook 05_ensemble at
`PADDY_SCALE=tiny` (Kaggle's newer layout, `/kaggle/input/competitions/<comp>` and `/kaggle/input/datasets/<owner>/<slug>`),
each leaving `/kaggle/working/submission.csv`; a missing wheel; a dataset built for the wrong Python.
Skipped, with the reason, where no second Python exists.
"""
import fcntl, hashlib, json, os, re, shutil, stat, subprocess, sys, time
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
COMP = 'paddy-disease-classification'
KERNEL_PYTHON = '3.12'  # Kaggle's image (paddy_collab.datasets.kaggle_python)
# what Kaggle/docker-python installs that paddy_collab touches: fastcore pinned below 2, the rest as pip resolves them
IMAGE_REQS = ['fastcore<2', 'torch', 'torchvision', 'fastai', 'timm', 'kaggle', 'nbdev', 'plum-dispatch>=2.10,<2.11', 'accelerate',
              'pandas', 'matplotlib', 'scikit-learn', 'ipykernel']
TINY = """# parameters
archs = ['test_resnet']
epochs, size, accum, bs, n_tta = 1, 32, 2, 8, 1
multi_target, pretrained = False, True
submit, message = False, 'sandbox'"""

_no_network = '''# paddy_collab sandbox: no network. Loopback (the Jupyter kernel's own sockets) and Unix sockets only.
import socket as _s
_real_connect, _real_connect_ex, _real_gai = _s.socket.connect, _s.socket.connect_ex, _s.getaddrinfo
def _local(addr):
    return not isinstance(addr, tuple) or str(addr[0]) in ('127.0.0.1', '::1', 'localhost') or str(addr[0]).startswith('127.')
def _check(addr):
    if not _local(addr): raise OSError(101, f'Network is unreachable (Kaggle sandbox: no internet): {addr}')
def connect(self, addr): _check(addr); return _real_connect(self, addr)
def connect_ex(self, addr): _check(addr); return _real_connect_ex(self, addr)
def getaddrinfo(host, *a, **kw):
    if host not in (None, '', 'localhost', '127.0.0.1', '::1') and not str(host).startswith('127.'): raise _s.gaierror(-3, f'no DNS in the Kaggle sandbox: {host}')
    return _real_gai(host, *a, **kw)
_s.socket.connect, _s.socket.connect_ex, _s.getaddrinfo = connect, connect_ex, getaddrinfo
'''


def _ver(py)->str|None:
    try: return subprocess.run([str(py), '-c', 'import sys; print("%d.%d" % sys.version_info[:2])'], capture_output=True, text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.SubprocessError): return None


def kernel_python(version=KERNEL_PYTHON)->Path|None:
    "An interpreter of `version`: `$PADDY_KERNEL_PYTHON`, else `pythonX.Y` on PATH, else pyenv's; None if there is none."
    cands = [os.environ.get('PADDY_KERNEL_PYTHON'), shutil.which(f'python{version}'),
             *sorted(Path(os.environ.get('PYENV_ROOT', Path.home()/'.pyenv')).glob(f'versions/{version}*/bin/python{version}'), reverse=True)]
    return next((Path(c) for c in cands if c and _ver(c) == version), None)


def venv_cache()->Path: return Path(os.environ.get('PADDY_KAGGLE_VENV_CACHE') or Path.home()/'.cache'/'paddy_collab')


def image_venv(py:Path, build:bool=True)->Path|None:
    "The Kaggle-like venv of interpreter `py` (IMAGE_REQS), built once per machine into `venv_cache()`, named after its requirements."
    cons = Path('/etc/xdg/pip/constraints.txt')
    key = hashlib.md5(repr((_ver(py), IMAGE_REQS, cons.read_text() if cons.is_file() else '')).encode()).hexdigest()[:8]
    d = venv_cache()/f'kaggle-image-py{_ver(py)}-{key}'
    if (d/'.complete').is_file() or not build: return d if (d/'.complete').is_file() else None
    d.parent.mkdir(parents=True, exist_ok=True)
    with open(d.parent/f'.{d.name}.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build per machine at a time; the others wait and reuse it
        if (d/'.complete').is_file(): return d
        t0, tmp = time.time(), d.with_name(f'{d.name}.partial')
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run([str(py), '-m', 'venv', str(tmp)], check=True)
        subprocess.run([str(tmp/'bin'/'python'), '-m', 'pip', 'install', '-q', '--progress-bar', 'off', *IMAGE_REQS], check=True)
        # import once: the bytecode is cached in the venv, so the kernels do not compile torch and fastai each time
        subprocess.run([str(tmp/'bin'/'python'), '-c', 'import torch, torchvision, fastai.vision.all, timm, ipykernel, plum, nbdev'], check=True, capture_output=True)
        (tmp/'.complete').write_text(json.dumps(dict(requirements=IMAGE_REQS, seconds=round(time.time()-t0))))
        os.replace(tmp, d)
        print(f'built {d} in {time.time()-t0:.0f} s', flush=True)
    return d


def kernel_venv(image:Path, dest:Path)->Path:
    "A copy of `image` at `dest` (hard links: seconds, no disk), with no network; its python, which the kernel may pip-install into."
    subprocess.run(['cp', '-al', str(image), str(dest)], check=True)
    py = dest/'bin'/'python'
    site = Path(subprocess.run([str(py), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], capture_output=True, text=True, check=True).stdout.strip())
    (site/'sitecustomize.py').write_text(_no_network)
    return py


def _mount_ok()->bool:
    "Whether kernels can see the sandbox at /kaggle: root, `unshare`, and a bind mount that works (PADDY_SANDBOX_MOUNT=0: use ../input)."
    if os.environ.get('PADDY_SANDBOX_MOUNT') == '0' or os.geteuid() != 0 or not shutil.which('unshare'): return False
    try: Path('/kaggle').mkdir(exist_ok=True)  # an empty folder to mount on; each kernel mounts its own sandbox there, privately
    except OSError: return False
    r = subprocess.run(['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'mount --bind /tmp /kaggle'], capture_output=True, timeout=30)
    return r.returncode == 0


@pytest.fixture(scope='module')
def kpy():
    py = kernel_python()
    if py is None: pytest.skip(f'no Python {KERNEL_PYTHON} (Kaggle\'s) on this machine: set PADDY_KERNEL_PYTHON or install one (pyenv install {KERNEL_PYTHON})')
    if _ver(sys.executable) == KERNEL_PYTHON: pytest.skip(f'the test runs on Python {KERNEL_PYTHON} itself: no second interpreter to build the wheels with')
    return py


@pytest.fixture(scope='module')
def image(kpy):
    return image_venv(kpy)


@pytest.fixture(scope='module')
def kaggle_input(tmp_path_factory, paddy):
    "What Kaggle attaches, made by the real code on this interpreter: the competition data, the wheel dataset (for Kaggle's Python) and the weights dataset."
    import huggingface_hub.constants as hc, paddy_collab.datasets as pk
    from kaggle_server import dep_wheels
    links = dep_wheels(KERNEL_PYTHON)
    if links is None: pytest.skip('PyPI unreachable: cannot fetch the dependency wheels for Python 3.12 once')
    root = tmp_path_factory.mktemp('kaggle_input')
    comp, wheels, weights = root/'competition', root/'paddy-collab-wheels', root/'paddy-collab-weights'
    shutil.copytree(paddy, comp)
    info = pk.wheel_files(wheels, find_links=links)  # the default target: Kaggle's Python
    assert info['target']['python'] == KERNEL_PYTHON != _ver(sys.executable)
    r = root/'hf'/'hub'/'models--timm--test_resnet.r160_in1k'  # timm's test_resnet weights in the HF cache layout (nothing downloaded)
    (r/'refs').mkdir(parents=True); (r/'snapshots'/'abc').mkdir(parents=True); (r/'refs'/'main').write_text('abc')
    import timm, torch
    from safetensors.torch import save_file
    torch.manual_seed(0)
    save_file(timm.create_model('test_resnet', pretrained=False).state_dict(), r/'snapshots'/'abc'/'model.safetensors')
    old, hc.HF_HUB_CACHE = hc.HF_HUB_CACHE, str(root/'hf'/'hub')
    try: pk.weights_files(['test_resnet'], weights)
    finally: hc.HF_HUB_CACHE = old
    return dict(comp=comp, wheels=wheels, weights=weights, info=info)


def layout(root:Path, inp:dict, newer:bool=False)->Path:
    "`root/input` as Kaggle attaches it: `<slug>/` (classic) or `competitions/<comp>/`, `datasets/<owner>/<slug>/` (newer); `root/working`, `root/tmp`, `root/home`."
    i = root/'input'
    if newer: dst = {'comp': i/'competitions'/COMP, 'wheels': i/'datasets'/'sandbox-user'/'paddy-collab-wheels', 'weights': i/'datasets'/'sandbox-user'/'paddy-collab-weights'}
    else: dst = {'comp': i/COMP, 'wheels': i/'paddy-collab-wheels', 'weights': i/'paddy-collab-weights'}
    for k, d in dst.items(): shutil.copytree(inp[k], d)
    for d in ('working', 'tmp', 'home'): (root/d).mkdir()
    return root


def kernel_env(root:Path, monkeypatch, **extra):
    "Kaggle's environment for the kernel (nbclient passes ours on): Batch, a fresh HOME and TMPDIR, no pip configuration, nothing of ours."
    for k in list(os.environ):
        if k.startswith(('KAGGLE_', 'PADDY_', 'HF_', 'PIP_', 'PYTHON', 'VIRTUAL_ENV', 'TORCH_HOME', 'XDG_', 'JUPYTER')): monkeypatch.delenv(k)
    env = dict(KAGGLE_KERNEL_RUN_TYPE='Batch', HOME=str(root/'home'), TMPDIR=str(root/'tmp'), PIP_CONFIG_FILE=os.devnull,
               PIP_DISABLE_PIP_VERSION_CHECK='1', JUPYTER_PATH=str(root/'jupyter'), OMP_NUM_THREADS='2', MPLBACKEND='Agg', **extra)
    for k, v in env.items(): monkeypatch.setenv(k, v)
    return env


def run_kernel(root:Path, py:Path, nb_file:Path, monkeypatch, absolute:bool, timeout=600, **env):
    "Run notebook `nb_file` as Kaggle would, on interpreter `py`: at /kaggle (a private mount) if `absolute`, else in `root/working` beside `root/input`."
    import nbformat
    from nbclient import NotebookClient
    spec = root/'jupyter'/'kernels'/'kaggle-sandbox'
    spec.mkdir(parents=True)
    if absolute:
        mount = (f'mount --bind {root} /kaggle && mount --bind /kaggle/input /kaggle/input && mount -o remount,bind,ro /kaggle/input && '
                 f'cd /kaggle/working && exec {py} -m ipykernel_launcher -f "$0"')
        argv = ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', mount, '{connection_file}']
    else:
        argv = [str(py), '-m', 'ipykernel_launcher', '-f', '{connection_file}']
        for p in [root/'input', *(root/'input').rglob('*')]: p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    (spec/'kernel.json').write_text(json.dumps(dict(argv=argv, display_name='Kaggle sandbox', language='python')))
    kernel_env(root, monkeypatch, **env)
    nb = nbformat.read(nb_file, as_version=4)
    client = NotebookClient(nb, kernel_name='kaggle-sandbox', timeout=timeout, resources={'metadata': {'path': str(root/'working')}})
    try: client.execute()
    finally:
        if not absolute:
            for p in [root/'input', *(root/'input').rglob('*')]: p.chmod(p.stat().st_mode | stat.S_IWUSR)
    return nb


def outputs(nb)->str: return '\n'.join(o.get('text', '') + o.get('data', {}).get('text/plain', '') for c in nb.cells if c.cell_type == 'code' for o in c.outputs)


def check_kernel_submission(root:Path, nb):
    "`working/submission.csv` is a valid submission for the attached competition: its sample's ids, which are the attached test images."
    import paddy_collab.kaggle as pk
    comp = next(p for p in (root/'input'/COMP, root/'input'/'competitions'/COMP) if p.is_dir())
    df = pk.check_submission(root/'working'/'submission.csv', comp/'sample_submission.csv')
    assert sorted(df.image_id) == sorted(p.name for p in (comp/'test_images').iterdir())
    return df


def test_competition_kernel_on_kaggles_python(kpy, image, kaggle_input, tmp_path, monkeypatch):
    "`push-kernel --train`, pushed from this Python, installs and runs on Kaggle's (3.12), offline, and leaves /kaggle/working/submission.csv."
    from paddy_collab.cli import main
    dest = tmp_path/'kernel'
    assert main(['push-kernel', '--train', '--user', 'sandbox-user', '--weights-ds', 'paddy-collab-weights', '--dry-run', str(dest)]) == 0
    meta = json.loads((dest/'kernel-metadata.json').read_text())
    assert meta['competition_sources'] == [COMP] and meta['enable_internet'] is False and meta['enable_gpu'] is True
    assert sorted(meta['dataset_sources']) == ['sandbox-user/paddy-collab-weights', 'sandbox-user/paddy-collab-wheels']
    nb = json.loads((dest/meta['code_file']).read_text())
    (i, c), = [(i, c) for i, c in enumerate(nb['cells']) if 'parameters' in c['metadata'].get('tags', [])]
    nb['cells'][i]['source'] = TINY
    (dest/meta['code_file']).write_text(json.dumps(nb))
    root = layout(tmp_path/'kaggle', kaggle_input)
    kernel_venv(image, root/'venv')
    absolute = _mount_ok()
    t0 = time.time()
    nb = run_kernel(root, root/'venv'/'bin'/'python', dest/meta['code_file'], monkeypatch, absolute)
    out = outputs(nb)
    assert f'on Python {KERNEL_PYTHON}' in out and 'installed paddy_collab-' in out and f"{len(kaggle_input['info']['carried'])} dependencies" in out, out[-3000:]
    assert f'../input/{COMP}' in out, out[-3000:]  # the attached data (../input is /kaggle/input from /kaggle/working)
    assert 'test_resnet' in out  # kernel_weights found the weights dataset
    check_kernel_submission(root, nb)
    r = subprocess.run([str(root/'venv'/'bin'/'python'), '-c', 'import plum, fastkaggle; from importlib.metadata import version; print(version("plum-dispatch"))'],
                       capture_output=True, text=True)
    assert r.stdout.strip().startswith('2.9'), r  # the image's 2.10 downgraded to what fastai's Learner.export needs
    print(f"competition kernel on Python {KERNEL_PYTHON} ({'at /kaggle' if absolute else '../input'}): {time.time()-t0:.0f} s")


def test_lesson_kernel_on_kaggles_python(kpy, image, kaggle_input, tmp_path, monkeypatch):
    "The lesson notebook 05_ensemble, pushed as a GPU kernel, at PADDY_SCALE=tiny: it trains on the attached competition data, writes /kaggle/working/submission.csv."
    from paddy_collab.cli import main
    dest = tmp_path/'kernel'
    assert main(['push-kernel', str(ROOT/'nbs'/'05_ensemble.ipynb'), '--user', 'sandbox-user', '--no-internet', '--dataset', 'paddy-collab-weights', '--dry-run', str(dest)]) == 0
    meta = json.loads((dest/'kernel-metadata.json').read_text())
    assert meta['enable_gpu'] is True and meta['competition_sources'] == [COMP]  # a Paddy lesson: a GPU kernel by default
    root = layout(tmp_path/'kaggle', kaggle_input, newer=True)
    kernel_venv(image, root/'venv')
    absolute = _mount_ok()
    t0 = time.time()
    nb = run_kernel(root, root/'venv'/'bin'/'python', dest/meta['code_file'], monkeypatch, absolute, PADDY_SCALE='tiny')
    out = outputs(nb)
    assert f'on Python {KERNEL_PYTHON}' in out and f'the real data from ../input/competitions/{COMP}' in out, out[-3000:]
    assert 'pretrained weights from the attached dataset(s): test_resnet' in out, out[-3000:]
    check_kernel_submission(root, nb)
    assert not list((root/'working').glob('ensemble_preds/submission.csv'))
    print(f"05_ensemble kernel on Python {KERNEL_PYTHON} ({'at /kaggle' if absolute else '../input'}): {time.time()-t0:.0f} s")


def install_cell_run(py:Path, root:Path, monkeypatch):
    "Run the install cell `push-kernel` writes, alone, with `py` in `root/working`: its exit status and error output."
    import paddy_collab.kernels as pk
    env = kernel_env(root, monkeypatch)
    return subprocess.run([str(py), '-c', pk.install_cell('sandbox-user/paddy-collab-wheels')['source']], cwd=root/'working',
                          capture_output=True, text=True, timeout=300, env={**os.environ, **env})


def test_missing_dependency_wheel_stops_the_kernel(kpy, image, kaggle_input, tmp_path, monkeypatch):
    inp = dict(kaggle_input)
    inp['wheels'] = tmp_path/'wheels'
    shutil.copytree(kaggle_input['wheels'], inp['wheels'])
    (inp['wheels']/kaggle_input['info']['carried']['fastkaggle']).unlink()  # the image has no fastkaggle
    root = layout(tmp_path/'kaggle', inp)
    r = install_cell_run(kernel_venv(image, root/'venv'), root, monkeypatch)
    assert r.returncode and "no wheel of fastkaggle" in r.stderr and "paddy_collab push-wheels --extra 'fastkaggle" in r.stderr, r.stderr[-2000:]


def test_wheels_for_another_python_stop_with_the_fix(kpy, kaggle_input, tmp_path, monkeypatch):
    "A dataset pushed with wheels for this interpreter (the old default): the kernel on Kaggle's Python names both Pythons and the command that fixes it."
    import paddy_collab.datasets as pk
    from kaggle_server import dep_wheels
    here = _ver(sys.executable)
    links = dep_wheels(here)
    if links is None: pytest.skip(f'PyPI unreachable: cannot fetch the dependency wheels for Python {here} once')
    inp = dict(kaggle_input, wheels=tmp_path/'wheels')
    info = pk.wheel_files(inp['wheels'], find_links=links, python=here)
    assert info['target']['python'] == here
    root = layout(tmp_path/'kaggle', inp)
    r = install_cell_run(kpy, root, monkeypatch)  # Kaggle's interpreter, bare: the check comes before pip
    assert r.returncode, r
    msg = r.stderr.strip().splitlines()[-1]
    assert f'downloaded for Python {here}, but this kernel runs Python {KERNEL_PYTHON}' in msg and f'PADDY_KAGGLE_PYTHON={KERNEL_PYTHON} paddy_collab push-wheels' in msg, msg


if __name__ == '__main__':
    # `python tests/test_sandbox.py --build`: the Kaggle-like venv, once per machine (make kaggle-venv; .ci/run calls it before the tests)
    import argparse
    p = argparse.ArgumentParser(description='build the cached Kaggle-like venv the sandbox test runs kernels on')
    p.add_argument('--build', action='store_true', help='build it if missing (else only say where it is)')
    a = p.parse_args()
    py = kernel_python()
    if py is None: sys.exit(print(f'no Python {KERNEL_PYTHON} found (PADDY_KERNEL_PYTHON, python{KERNEL_PYTHON} on PATH, pyenv): the sandbox test will skip') or 0)
    t0 = time.time()
    d = image_venv(py, build=a.build)
    print(f'Kaggle-like venv for {py}: {d or "not built (use --build)"} ({time.time()-t0:.0f} s)')
