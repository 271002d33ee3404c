"""The competition kernel, run offline in a Kaggle-shaped sandbox: exactly the files `push-kernel --train` uploads.

The sandbox is a folder shaped like a Kaggle kernel's `/kaggle`:
- `working/` is the working directory; `input/` (read-only, as on Kaggle) holds the competition data
  (`paddy-disease-classification/`, the synthetic set in Kaggle's layout), the wheel dataset built by the real
  `wheel_files` (`paddy-collab-wheels/`) and the weights dataset built by the real `weights_files` (`paddy-collab-weights/`);
- the interpreter is a fresh venv that sees this project's `.venv` packages (fastai, timm, torch, jupyter: what
  Kaggle's image has) through symlinks, *minus* paddy_collab and every package the wheel dataset carries
  (fastkaggle, plum-dispatch, beartype): the kernel's install cell must bring them;
- `KAGGLE_KERNEL_RUN_TYPE=Batch`, a fresh HOME and temporary folder, no pip configuration, and no network: a
  `sitecustomize` in the venv refuses every socket that is not loopback or a Unix socket (the Jupyter kernel
  talks to its client over loopback; Kaggle's kernels talk to theirs too).
The kernel's parameters cell is replaced by a tiny CPU run (timm's `test_resnet`, 32 px, one epoch).
"""
import importlib.metadata as md, json, os, re, shutil, stat, subprocess, sys, sysconfig, time
from pathlib import Path
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from kaggle_server import find_links  # noqa: F401  (fixture)
import paddy_collab.kaggle as pk

COMP = 'paddy-disease-classification'
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


def _canon(n): return re.sub(r'[-_.]+', '-', n).lower()


def image_dir(dest, hide):
    "A folder of symlinks to this interpreter's site-packages entries, except those of the distributions in `hide`."
    site = Path(sysconfig.get_paths()['purelib'])
    skip = set()
    for d in md.distributions():
        if _canon(d.metadata['Name']) not in hide: continue
        skip.add(Path(d._path).name)  # its .dist-info
        skip |= {Path(str(f)).parts[0] for f in d.files or [] if not str(f).startswith('..')}
    dest.mkdir(parents=True)
    for e in site.iterdir():
        if e.name in skip or 'paddy_collab' in e.name or e.name == '__pycache__': continue
        (dest/e.name).symlink_to(e)
    return dest


def sandbox_python(root, image):
    "A venv at `root/venv` whose packages are its own plus `image`'s, with no network."
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(root/'venv')], check=True)
    py = root/'venv'/'bin'/'python'
    site = Path(subprocess.run([str(py), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], capture_output=True, text=True, check=True).stdout.strip())
    (site/'kaggle_image.pth').write_text(f"import site; site.addsitedir({str(image)!r})\n")
    (site/'sitecustomize.py').write_text(_no_network)
    return py


def fake_hf_cache(hub):
    "timm's `test_resnet` weights in the Hugging Face cache layout: a saved state dict (nothing downloaded)."
    import timm, torch
    from safetensors.torch import save_file
    r = hub/'models--timm--test_resnet.r160_in1k'
    (r/'refs').mkdir(parents=True); (r/'snapshots'/'abc').mkdir(parents=True); (r/'refs'/'main').write_text('abc')
    torch.manual_seed(0)
    save_file(timm.create_model('test_resnet', pretrained=False).state_dict(), r/'snapshots'/'abc'/'model.safetensors')


@pytest.fixture(scope='module')
def kaggle_input(tmp_path_factory, find_links, small_paddy):
    "The read-only `input/` of a Kaggle kernel: the competition data, the wheel dataset and the weights dataset, made by the real code."
    import huggingface_hub.constants as hc
    root = tmp_path_factory.mktemp('kaggle_input')
    inp = root/'input'
    shutil.copytree(small_paddy, inp/COMP)
    info = pk.wheel_files(inp/'paddy-collab-wheels', find_links=find_links)
    fake_hf_cache(root/'hf'/'hub')
    old = hc.HF_HUB_CACHE
    hc.HF_HUB_CACHE = str(root/'hf'/'hub')
    try: pk.weights_files(['test_resnet'], inp/'paddy-collab-weights')
    finally: hc.HF_HUB_CACHE = old
    image = image_dir(root/'image', {'paddy-collab', *info['carried']})
    return inp, image, info


def kernel(dest):
    "The files `push-kernel --train` would upload (its --dry-run), with the parameters cell shrunk to a tiny CPU run."
    from paddy_collab.cli import main
    assert main(['push-kernel', '--train', '--user', 'sandbox-user', '--weights-ds', 'paddy-collab-weights', '--dry-run', str(dest)]) == 0
    meta = json.loads((dest/'kernel-metadata.json').read_text())
    nb = json.loads((dest/meta['code_file']).read_text())
    (i, c), = [(i, c) for i, c in enumerate(nb['cells']) if 'parameters' in c['metadata'].get('tags', [])]
    nb['cells'][i]['source'] = TINY
    (dest/meta['code_file']).write_text(json.dumps(nb))
    return meta, dest/meta['code_file']


def run_in_sandbox(root, inp, image, nb_file, monkeypatch, timeout=600):
    "Run notebook `nb_file` as Kaggle would: in `root/working`, with `root/input` read-only, the sandbox interpreter, no network."
    import nbformat
    from nbclient import NotebookClient
    shutil.copytree(inp, root/'input', symlinks=True)
    for p in [root/'input', *(root/'input').rglob('*')]:
        if not p.is_symlink(): p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    (root/'working').mkdir(); (root/'tmp').mkdir(); (root/'home').mkdir()
    py = sandbox_python(root, image)
    spec = root/'jupyter'/'kernels'/'kaggle-sandbox'
    spec.mkdir(parents=True)
    (spec/'kernel.json').write_text(json.dumps(dict(argv=[str(py), '-m', 'ipykernel_launcher', '-f', '{connection_file}'], display_name='Kaggle sandbox', language='python')))
    for k in list(os.environ):
        if k.startswith(('KAGGLE_', 'PADDY_', 'HF_', 'PIP_', 'PYTHON', 'VIRTUAL_ENV', 'TORCH_HOME', 'XDG_')): monkeypatch.delenv(k)
    env = dict(KAGGLE_KERNEL_RUN_TYPE='Batch', HOME=str(root/'home'), TMPDIR=str(root/'tmp'), PIP_CONFIG_FILE=os.devnull,
               PIP_DISABLE_PIP_VERSION_CHECK='1', JUPYTER_PATH=str(root/'jupyter'), OMP_NUM_THREADS='2', MPLBACKEND='Agg')
    for k, v in env.items(): monkeypatch.setenv(k, v)
    nb = nbformat.read(nb_file, as_version=4)
    client = NotebookClient(nb, kernel_name='kaggle-sandbox', timeout=timeout, resources={'metadata': {'path': str(root/'working')}})
    try: client.execute()
    finally:
        for p in [root/'input', *(root/'input').rglob('*')]:
            if not p.is_symlink(): p.chmod(p.stat().st_mode | stat.S_IWUSR)
    return nb


def test_kernel_runs_offline_and_writes_the_submission(kaggle_input, tmp_path, monkeypatch):
    inp, image, info = kaggle_input
    meta, nb_file = kernel(tmp_path/'kernel')
    assert meta['competition_sources'] == [COMP] and meta['enable_internet'] is False
    assert sorted(meta['dataset_sources']) == ['sandbox-user/paddy-collab-weights', 'sandbox-user/paddy-collab-wheels']
    t0 = time.time()
    nb = run_in_sandbox(tmp_path/'kaggle', inp, image, nb_file, monkeypatch)
    secs = time.time() - t0
    out = '\n'.join(o.get('text', '') + o.get('data', {}).get('text/plain', '') for c in nb.cells if c.cell_type == 'code' for o in c.outputs)
    assert 'installed paddy_collab-' in out and f"{len(info['carried'])} dependencies" in out, out
    assert 'test_resnet' in out  # kernel_weights found the weights dataset
    sub = tmp_path/'kaggle'/'working'/'submission.csv'
    df = pk.check_submission(sub, inp/COMP/'sample_submission.csv')
    assert len(df) == len(list((inp/COMP/'test_images').iterdir()))
    print(f'sandbox kernel: {secs:.0f}s')


def test_missing_dependency_wheel_stops_the_kernel(kaggle_input, tmp_path, monkeypatch):
    from nbclient.exceptions import CellExecutionError
    inp, image, info = kaggle_input
    broken = tmp_path/'input'
    shutil.copytree(inp, broken)
    (broken/'paddy-collab-wheels'/info['carried']['beartype']).unlink()
    _, nb_file = kernel(tmp_path/'kernel')
    with pytest.raises(CellExecutionError) as e: run_in_sandbox(tmp_path/'kaggle', broken, image, nb_file, monkeypatch, timeout=300)
    msg = str(e.value)
    assert 'no wheel of beartype' in msg and 'push-wheels' in msg, msg[-2000:]
    assert not (tmp_path/'kaggle'/'working'/'submission.csv').exists()
