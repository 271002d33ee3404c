"""paddy_collab.kernels end to end (pushing notebooks and the competition kernel, status and output; the install cell): the real `kaggle` 2.x client against the local stand-in server (tests/kaggle_server.py).

Never contacts Kaggle: the `kenv` fixture sets KAGGLE_API_ENVIRONMENT=LOCALHOST, so every call goes to http://localhost/api/v1/...
"""
import json, subprocess, sys, time, types
from pathlib import Path
import pytest

from kaggle_server import KaggleStandIn  # its fixtures come from conftest's `pytest_plugins`
import paddy_collab.kernels as pk, paddy_collab.kaggle as pkc
from paddy_collab.kaggle import KaggleError
from paddy_collab.kernels import push_notebook

COMP = 'paddy-disease-classification'
FAULT_MSG = {401: 'HTTP 401', 404: 'HTTP 404', 500: "problem on Kaggle's side", 'close': 'connection failed or was closed'}


# -- kernels

def _nb_with_outputs(path):
    nb = {'nbformat': 4, 'nbformat_minor': 5, 'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}, 'widgets': {'x': 1}},
          'cells': [{'cell_type': 'markdown', 'metadata': {}, 'source': ['# Paddy: first steps\n', 'Some text']},
                    {'cell_type': 'code', 'metadata': {'scrolled': True}, 'execution_count': 3, 'source': ['print("hi")'],
                     'outputs': [{'output_type': 'stream', 'name': 'stdout', 'text': ['OUTPUT-THAT-MUST-NOT-LEAK\n']}]}]}
    path.write_text(json.dumps(nb))
    return path


def test_push_notebook_request(kenv, tmp_path):
    nb = _nb_with_outputs(tmp_path/'paddy.ipynb')
    assert 'OUTPUT-THAT-MUST-NOT-LEAK' in nb.read_text()
    kenv.datasets['standin-user/paddy-collab-wheels'] = {}
    kenv.dataset_status['standin-user/paddy-collab-wheels'] = ['BLOBS_RECEIVED', 'READY']
    res = push_notebook(nb, comp=COMP, datasets=['someone/extra-data'], wheel_ds='paddy-collab-wheels',  # a bare slug: the user's (README example)
                        private=False, gpu=True, internet=False, wait=5)
    assert [r['op'] for r in kenv.requests if r['op'] in ('GetDatasetStatus', 'SaveKernel')][-3:] == ['GetDatasetStatus', 'GetDatasetStatus', 'SaveKernel']
    req = kenv.ops('SaveKernel')[-1]['json']
    assert res['ref'] == req['slug'] == 'standin-user/paddy-first-steps' and res['url'].endswith('/code/standin-user/paddy-first-steps')
    assert req['newTitle'] == 'Paddy: first steps' and req['language'] == 'python' and req['kernelType'] == 'notebook'
    assert req['isPrivate'] is False and req['enableGpu'] is True and req['enableInternet'] is False
    assert req['competitionDataSources'] == [COMP]  # the documented form: Kaggle/kaggle-api docs/kernels_metadata.md
    assert req['datasetDataSources'] == ['someone/extra-data', 'standin-user/paddy-collab-wheels']
    assert 'OUTPUT-THAT-MUST-NOT-LEAK' not in req['text']
    pushed = json.loads(req['text'])
    code = [c for c in pushed['cells'] if c['cell_type'] == 'code']
    assert all(c.get('outputs') == [] and c.get('execution_count') is None and c['metadata'] == {} for c in code)
    assert 'widgets' not in pushed['metadata']
    first = pushed['cells'][0]['source']
    assert "'--no-index', '--find-links'" in first and "install_wheels('standin-user/paddy-collab-wheels')" in first and "'pip', 'check'" in first
    assert '--no-deps' not in first
    assert pushed['cells'][1]['source'].startswith('# Paddy: first steps')


def test_push_waits_for_a_processing_dataset_then_gives_up(kenv, tmp_path):
    kenv.datasets['standin-user/slow-wheels'] = {}
    kenv.dataset_status['standin-user/slow-wheels'] = ['BLOBS_RECEIVED']
    n = len(kenv.kernels)
    with pytest.raises(KaggleError, match=r"Dataset 'standin-user/slow-wheels' is still processing on Kaggle \(blobs_received\) after 1 s.*nothing was pushed"):
        push_notebook(_nb_with_outputs(tmp_path/'paddy.ipynb'), wheel_ds='slow-wheels', wait=1)
    assert len(kenv.kernels) == n
    kenv.dataset_status['standin-user/slow-wheels'] = ['FAILED']
    with pytest.raises(KaggleError, match="is failed on Kaggle"): pk.wait_dataset('standin-user/slow-wheels', 5, poll=0.1)


def test_kernel_slug_must_match_title(kenv, tmp_path):
    n = len(kenv.requests)
    with pytest.raises(ValueError, match="does not match title 'Paddy: first steps'.*'paddy-first-steps'"):
        push_notebook(_nb_with_outputs(tmp_path/'paddy.ipynb'), slug='my-paddy-kernel', wheel_ds='')
    assert [r['op'] for r in kenv.requests[n:]] == []  # refused before anything was sent


@pytest.mark.parametrize('fault,msg', [('error', 'Kaggle said Notebook is invalid: code_file is empty'), ('invalid', "invalid_competition_sources"),
                                       (403, "accept the competition's rules at https://www.kaggle.com/competitions/paddy-disease-classification/rules")])
def test_save_kernel_refusals_are_one_line(kenv, tmp_path, fault, msg):
    kenv.fail('SaveKernel', fault)
    n = len(kenv.kernels)
    with pytest.raises(KaggleError) as e: push_notebook(_nb_with_outputs(tmp_path/'paddy.ipynb'), comp=COMP, wheel_ds='', path=tmp_path/'k')
    assert msg in str(e.value) and '\n' not in str(e.value), str(e.value)
    assert len(kenv.kernels) == n


def test_kernel_status_and_output(kenv, tmp_path):
    ref = 'standin-user/paddy-doctor-ensemble'
    kenv.run_kernel(ref, ['QUEUED', 'RUNNING', 'COMPLETE'], files={'submission.csv': b'image_id,label\n', 'model.pkl': b'x'}, log='[{"data": "ok"}]')
    assert pk.kernel_status(ref) == 'queued'
    assert pk.kernel_status(ref, wait=5, poll=0.05) == 'complete'
    out = pk.kernel_output(ref, tmp_path/'out')
    assert sorted(p.name for p in (tmp_path/'out').iterdir()) == ['model.pkl', 'paddy-doctor-ensemble.log', 'submission.csv']
    assert out['submission'].read_bytes() == b'image_id,label\n' and out['log'].read_text() == '[{"data": "ok"}]'
    kenv.run_kernel(ref, ['RUNNING', 'ERROR'], log='...\nFileNotFoundError: ../input/paddy-disease-classification does not exist', failure='Your notebook hit an error')
    with pytest.raises(KaggleError, match=r"(?s)Kernel 'standin-user/paddy-doctor-ensemble' failed: Your notebook hit an error.*end of its log.*does not exist"):
        pk.kernel_status(ref, wait=5, poll=0.05)
    kenv.run_kernel(ref, ['RUNNING'])
    assert pk.kernel_status(ref, wait=0.3, poll=0.1) == 'running'  # gives up waiting, says where it is
    with pytest.raises(KaggleError, match='HTTP 404'): pk.kernel_status('standin-user/no-such-kernel')
    kenv.run_kernel(ref, ['COMPLETE'], files={'submission.csv': b'x'})
    kenv.fail('output', 500)
    with pytest.raises(KaggleError, match='Downloading the output'): pk.kernel_output(ref, tmp_path/'out2')
    assert list((tmp_path/'out2').iterdir()) == []  # nothing half-written


def test_install_cell_runs_only_on_kaggle(monkeypatch, tmp_path):
    "Outside Kaggle the install cell does nothing; on Kaggle it calls pip with --no-index --find-links, then pip check."
    src = pk.install_cell('u/paddy-collab-wheels')['source']
    calls = []
    fake = types.SimpleNamespace(run=lambda cmd, **kw: calls.append(cmd) or types.SimpleNamespace(returncode=0, stdout='', stderr=''))
    monkeypatch.setitem(sys.modules, 'subprocess', fake)
    monkeypatch.delenv('KAGGLE_KERNEL_RUN_TYPE', raising=False)
    exec(src, {}); assert calls == []
    monkeypatch.setenv('KAGGLE_KERNEL_RUN_TYPE', 'Batch')
    (tmp_path/'input'/'other').mkdir(parents=True); (tmp_path/'working').mkdir(); monkeypatch.chdir(tmp_path/'working')
    with pytest.raises(FileNotFoundError, match=r"attach the dataset u/paddy-collab-wheels.*\['other'\]"): exec(src, {})
    d = tmp_path/'input'/'paddy-collab-wheels'; d.mkdir()
    (d/'wheels.json').write_text(json.dumps(dict(package='paddy_collab-0.0.1-py3-none-any.whl', carried={'fastkaggle': 'fastkaggle-0.0.9-py3-none-any.whl'})))
    exec(src, {})
    assert calls == [[sys.executable, '-m', 'pip', 'install', '-q', '--no-index', '--find-links', '../input/paddy-collab-wheels', '../input/paddy-collab-wheels/paddy_collab-0.0.1-py3-none-any.whl'],
                     [sys.executable, '-m', 'pip', 'check']]
    # a conflict of ours stops the kernel; the image's own conflicts do not
    fake.run = lambda cmd, **kw: types.SimpleNamespace(returncode=0, stderr='', stdout='fastai 2.8.4 has requirement plum-dispatch<2.10, but you have plum-dispatch 2.10.1.\nfoo 1.0 requires bar, which is not installed.')
    (d/'wheels.json').write_text(json.dumps(dict(package='paddy_collab-0.0.1-py3-none-any.whl', carried={'plum-dispatch': 'x.whl'})))
    with pytest.raises(RuntimeError, match=r"(?s)conflict.*plum-dispatch<2.10") as e: exec(src, {})
    assert 'foo' not in str(e.value)
    fake.run = lambda cmd, **kw: types.SimpleNamespace(returncode=1, stdout='', stderr='ERROR: No matching distribution found for beartype>=0.16.2')
    with pytest.raises(RuntimeError, match=r"no wheel of beartype>=0.16.2 in the dataset"): exec(src, {})


def test_push_notebook_bad_input(kenv, tmp_path):
    n = len(kenv.requests)
    with pytest.raises(FileNotFoundError): push_notebook(tmp_path/'missing.ipynb')
    (tmp_path/'bad.ipynb').write_text('{not json')
    with pytest.raises(ValueError, match='not valid notebook JSON'): push_notebook(tmp_path/'bad.ipynb')
    with pytest.raises(ValueError, match="'owner/slug'"): push_notebook(_nb_with_outputs(tmp_path/'a.ipynb'), datasets=['a/b/c'])
    assert [r['op'] for r in kenv.requests[n:]] == []


@pytest.mark.parametrize('fault', [401, 404, 500, 'close'])
def test_push_notebook_faults(kenv, tmp_path, fault):
    kenv.fail('SaveKernel', fault)
    with pytest.raises(KaggleError) as e: push_notebook(_nb_with_outputs(tmp_path/'paddy.ipynb'))
    msg = str(e.value)
    assert msg.startswith("Pushing paddy.ipynb as kernel 'standin-user/paddy-first-steps' failed: ") and FAULT_MSG[fault] in msg, msg


def test_kernel_ref_without_owner_is_a_usage_error(kenv):
    n = len(kenv.requests)
    for f in (lambda: pk.kernel_status('paddy-doctor-ensemble'), lambda: pk.kernel_output('paddy-doctor-ensemble', '.')):
        with pytest.raises(ValueError, match=r"must be written OWNER/SLUG.*'your-kaggle-user/paddy-doctor-ensemble'"): f()
    assert len(kenv.requests) == n  # said before asking Kaggle, which would answer as if the network had failed
    from paddy_collab.cli import main
    r = subprocess.run([sys.executable, '-m', 'paddy_collab.cli', 'kernel-status', 'paddy-doctor-ensemble'], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and 'OWNER/SLUG' in r.stderr and 'network' not in r.stderr.lower(), r.stderr


def test_install_cell_names_a_wrong_python_and_the_fix(monkeypatch, tmp_path):
    "Wheels downloaded for another interpreter: the install cell stops before pip, naming both Pythons and the command that fixes it."
    src = pk.install_cell('u/paddy-collab-wheels')['source']
    calls = []
    monkeypatch.setitem(sys.modules, 'subprocess', types.SimpleNamespace(run=lambda cmd, **kw: calls.append(cmd) or types.SimpleNamespace(returncode=0, stdout='', stderr='')))
    monkeypatch.setenv('KAGGLE_KERNEL_RUN_TYPE', 'Batch')
    d = tmp_path/'input'/'paddy-collab-wheels'; d.mkdir(parents=True); (tmp_path/'working').mkdir(); monkeypatch.chdir(tmp_path/'working')
    here, other = '%d.%d' % sys.version_info[:2], '3.%d' % (sys.version_info[1] + 1)
    info = dict(package='paddy_collab-0.0.1-py3-none-any.whl', carried={'plum-dispatch': f"plum_dispatch-2.9.0-cp{other.replace('.', '')}-cp{other.replace('.', '')}-manylinux_2_17_x86_64.whl"})
    (d/'wheels.json').write_text(json.dumps(dict(info, target=dict(python=other))))
    with pytest.raises(RuntimeError, match=rf"downloaded for Python {other}, but this kernel runs Python {here}.*PADDY_KAGGLE_PYTHON={here} paddy_collab push-wheels"): exec(src, {})
    (d/'wheels.json').write_text(json.dumps(info))  # a dataset from before wheels.json named its target: the wheel's tags tell
    with pytest.raises(RuntimeError, match=rf"cannot install: plum_dispatch-2.9.0-cp{other.replace('.', '')}.*PADDY_KAGGLE_PYTHON={here}"): exec(src, {})
    assert calls == []  # stopped before pip


def test_429_waits_as_asked_then_gives_up(kenv, tmp_path, monkeypatch):
    kenv.retry_after = 0.2
    kenv.fail('SaveKernel', 429, times=2)
    t = time.time()
    res = push_notebook(_nb_with_outputs(tmp_path/'paddy.ipynb'), wheel_ds='')
    assert time.time() - t >= 0.4 and res['ref'] == 'standin-user/paddy-first-steps'
    monkeypatch.setattr(pkc, 'kaggle_429_retries', 1)  # the client's setting
    kenv.fail('SaveKernel', 429, times=5)
    with pytest.raises(KaggleError, match=r"HTTP 429.*rate-limiting you \(Retry-After 0.2\)"): push_notebook(_nb_with_outputs(tmp_path/'paddy.ipynb'), wheel_ds='')
    kenv._faults.clear()
    kenv.retry_after = 600  # longer than kaggle_429_max_wait: no point waiting
    kenv.fail('SaveKernel', 429)
    t = time.time()
    with pytest.raises(KaggleError, match='HTTP 429'): push_notebook(_nb_with_outputs(tmp_path/'paddy.ipynb'), wheel_ds='')
    assert time.time() - t < 5
    kenv.retry_after = 1


def test_competition_template_imports_what_exists_and_takes_its_parameters():
    "The competition kernel is a template notebook shipped with the package: its code parses, every name it imports from paddy_collab exists, and `train_notebook` replaces only its parameters."
    import ast, importlib
    tpl = pk.competition_template()
    for c in tpl['cells']:
        if c['cell_type'] != 'code': continue
        for node in ast.walk(ast.parse(c['source'])):
            if isinstance(node, ast.ImportFrom) and node.module.startswith('paddy_collab'):
                for a in node.names: assert hasattr(importlib.import_module(node.module), a.name), f"{node.module}.{a.name}"
    nb = pk.train_notebook(archs=['resnet18'], epochs=3, size=(64, 80), submit=True, message="it's new")
    params, = [c for c in nb['cells'] if 'parameters' in c['metadata'].get('tags', [])]
    ns = {}; exec(params['source'], ns)
    assert (ns['archs'], ns['epochs'], ns['size'], ns['submit'], ns['message'], ns['bs']) == (['resnet18'], 3, (64, 80), True, "it's new", 64)
    assert [c['source'] for c in nb['cells'] if c is not params] == [c['source'] for c in tpl['cells'] if 'parameters' not in c['metadata'].get('tags', [])]
