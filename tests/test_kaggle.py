"""paddy_collab.kaggle end to end: the real `kaggle` 2.x client against the local stand-in server (tests/kaggle_server.py).

Never contacts Kaggle: the `kenv` fixture sets KAGGLE_API_ENVIRONMENT=LOCALHOST, so every call goes to http://localhost/api/v1/...
"""
import base64, json, os, secrets, shutil, stat, subprocess, sys, time, types, zipfile
from pathlib import Path
import pandas as pd
import pytest

from kaggle_server import KaggleStandIn  # its fixtures come from conftest's `pytest_plugins`
import paddy_collab.kaggle as pk
from paddy_collab.kaggle import (KaggleError, KaggleCreds, find_creds, kaggle_creds, save_kaggle_json, comp_path, push_notebook,
                                 push_wheel_dataset, check_submission, submit)
from paddy_collab.synth import diseases, synth_paddy

COMP = 'paddy-disease-classification'
FILES = ['sample_submission.csv', 'test_images', 'train.csv', 'train_images']
FAULT_MSG = {401: 'HTTP 401', 404: 'HTTP 404', 500: "problem on Kaggle's side", 'close': 'connection failed or was closed',
             'truncate': 'connection failed or was closed', 'hang': 'no answer within 2.0 s'}


def leftovers(folder):
    "Everything in `folder` (recursively) that is not a finished dataset: zips, partial markers, temporary folders."
    return [p.name for p in Path(folder).rglob('*') if p.suffix == '.zip' or 'partial' in p.name or p.name.startswith('.')]


# -- import and credentials

def test_import_needs_no_credentials_kaggle_or_torch(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith('KAGGLE_')} | {'HOME': str(tmp_path)}
    code = ("import sys, paddy_collab.kaggle as k; bad = {'kaggle', 'torch', 'fastai'} & set(sys.modules); assert not bad, bad\n"
            "assert k.find_creds() is None\n"
            "try: k.kaggle_creds()\n"
            "except k.KaggleError as e: print(e)")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    for option in ('KAGGLE_API_TOKEN', 'KAGGLE_USERNAME and KAGGLE_KEY', 'kaggle.json', 'kaggle auth login', 'Secrets'): assert option in r.stdout


def test_creds_precedence(kenv, tmp_path, monkeypatch):
    test_eq = lambda a, b: (a == b) or pytest.fail(f'{a!r} != {b!r}')
    test_eq(find_creds().source, 'KAGGLE_USERNAME/KAGGLE_KEY')
    monkeypatch.setenv('KAGGLE_API_TOKEN', 'KGAT_' + secrets.token_hex(8))
    test_eq(find_creds().source, 'KAGGLE_API_TOKEN')  # tokens come first, as in the client
    monkeypatch.delenv('KAGGLE_API_TOKEN')
    (tmp_path/'home'/'.kaggle').mkdir(parents=True)
    (tmp_path/'home'/'.kaggle'/'access_token').write_text('KGAT_' + secrets.token_hex(8))
    test_eq(find_creds().source, 'access_token file')
    (tmp_path/'home'/'.kaggle'/'access_token').unlink()
    monkeypatch.delenv('KAGGLE_USERNAME'); monkeypatch.delenv('KAGGLE_KEY')
    test_eq(find_creds(), None)
    (tmp_path/'home'/'.kaggle'/'credentials.json').write_text(json.dumps({'refresh_token': 'r' * 20, 'username': 'oauth-user'}))
    test_eq(find_creds().source, 'credentials.json (kaggle auth login)')


def test_save_kaggle_json_is_private_and_used_by_the_client(kenv, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv('KAGGLE_USERNAME'); monkeypatch.delenv('KAGGLE_KEY')
    with pytest.raises(KaggleError, match='No Kaggle credentials found'): comp_path(COMP, tmp_path/'nocreds')
    p = save_kaggle_json(kenv.username, ask=lambda prompt: kenv.key)  # KAGGLE_CONFIG_DIR from the fixture
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert str(p) in capsys.readouterr().out  # says where
    assert find_creds() == KaggleCreds('kaggle.json', kenv.username, p)
    with pytest.raises(FileExistsError): save_kaggle_json(kenv.username, ask=lambda prompt: kenv.key)
    n = len(kenv.requests)
    comp_path(COMP, tmp_path/'data')  # authenticates with kaggle.json
    auth = kenv.requests[n]['headers']['Authorization']
    assert base64.b64decode(auth.split()[1]).decode() == f'{kenv.username}:{kenv.key}'


def test_api_token_auth(kenv, tmp_path, monkeypatch):
    kenv.token = 'KGAT_' + secrets.token_hex(16)
    monkeypatch.delenv('KAGGLE_USERNAME'); monkeypatch.delenv('KAGGLE_KEY')
    monkeypatch.setenv('KAGGLE_API_TOKEN', kenv.token)
    n = len(kenv.requests)
    comp_path(COMP, tmp_path/'data')
    ops = [r['op'] for r in kenv.requests[n:]]
    assert ops[0] == 'IntrospectToken' and 'DownloadDataFiles' in ops
    assert kenv.ops('DownloadDataFiles')[-1]['headers']['Authorization'] == f'Bearer {kenv.token}'


def test_wrong_key_is_a_clear_401(kenv, tmp_path, monkeypatch):
    monkeypatch.setenv('KAGGLE_KEY', secrets.token_hex(16))
    with pytest.raises(KaggleError) as e: comp_path(COMP, tmp_path/'data')
    msg = str(e.value)
    assert "Downloading competition 'paddy-disease-classification' failed: HTTP 401" in msg
    assert 'rejected the credentials (KAGGLE_USERNAME/KAGGLE_KEY)' in msg
    assert not (tmp_path/'data').exists() and leftovers(tmp_path) == []


def test_kaggle_secrets_on_kaggle(kenv, tmp_path, monkeypatch):
    class Secrets:
        def get_secret(self, name):
            if name == 'kaggle_api_token': raise KeyError(name)  # as Kaggle does for a secret that is not set
            return {'kaggle_username': kenv.username, 'kaggle_key': kenv.key}[name]
    monkeypatch.setitem(sys.modules, 'kaggle_secrets', types.SimpleNamespace(UserSecretsClient=Secrets))
    monkeypatch.delenv('KAGGLE_USERNAME'); monkeypatch.delenv('KAGGLE_KEY')
    monkeypatch.setenv('KAGGLE_KERNEL_RUN_TYPE', 'Interactive')
    assert find_creds().source == 'Kaggle Secrets (kaggle_username, kaggle_key)'
    # on Kaggle the competition data is attached at ../input/<comp>: no download, no API call
    (tmp_path/'input'/COMP).mkdir(parents=True); (tmp_path/'working').mkdir(); monkeypatch.chdir(tmp_path/'working')
    n = len(kenv.requests)
    assert comp_path(COMP) == Path('../input')/COMP
    with pytest.raises(FileNotFoundError, match='Add Input'): comp_path('another-comp')
    assert len(kenv.requests) == n


# -- competition data

def test_comp_path_downloads_once_and_unzips(kenv, tmp_path, monkeypatch):
    dest = tmp_path/'data'/COMP
    p = comp_path(COMP, dest)
    assert p == dest and sorted(f.name for f in p.iterdir()) == FILES
    assert len(list((p/'train_images').rglob('*.jpg'))) == 20 and len(list((p/'test_images').glob('*.jpg'))) == 4
    assert leftovers(tmp_path/'data') == []
    req = kenv.ops('DownloadDataFiles')[-1]
    assert req['json'] == {'competitionName': COMP} and kenv.ops('blob')[-1]['path'].startswith(f'/blobs/{COMP}.zip')
    # the data is there: no request at all, and no credentials needed
    monkeypatch.delenv('KAGGLE_USERNAME'); monkeypatch.delenv('KAGGLE_KEY')
    n = len(kenv.requests)
    assert comp_path(COMP, dest) == dest and len(kenv.requests) == n
    # default folder: ./<comp>; an empty folder counts as missing
    monkeypatch.setenv('KAGGLE_USERNAME', kenv.username); monkeypatch.setenv('KAGGLE_KEY', kenv.key)
    (tmp_path/COMP).mkdir()
    assert sorted(f.name for f in comp_path(COMP).iterdir()) == FILES


@pytest.mark.parametrize('op,fault', [('DownloadDataFiles', 401), ('DownloadDataFiles', 404), ('DownloadDataFiles', 500),
                                      ('DownloadDataFiles', 'close'), ('blob', 500), ('blob', 'truncate'), ('blob', 'hang')])
def test_comp_path_faults_leave_nothing_and_can_be_retried(kenv, tmp_path, op, fault):
    dest = tmp_path/'data'/COMP
    kenv.fail(op, fault)
    t = time.time()
    with pytest.raises(KaggleError) as e: comp_path(COMP, dest)
    assert time.time() - t < 30  # fails, does not hang or retry for minutes
    msg = str(e.value)
    assert msg.startswith(f"Downloading competition '{COMP}' failed: ") and FAULT_MSG[fault] in msg, msg
    assert 'sig=' not in msg  # signed URLs lose their query string
    assert not dest.exists() and leftovers(tmp_path/'data') == []
    assert sorted(f.name for f in comp_path(COMP, dest).iterdir()) == FILES  # the retry works


def test_comp_path_removes_stale_partial_downloads(kenv, tmp_path):
    "A download killed outright (SIGKILL) leaves a hidden temporary folder; the next download removes it once it is old."
    (tmp_path/'data').mkdir()
    stale, fresh = tmp_path/'data'/f'.{COMP}.old1.partial', tmp_path/'data'/f'.{COMP}.new1.partial'
    for d in (stale, fresh): (d/'zip').mkdir(parents=True); (d/'zip'/f'{COMP}.zip').write_bytes(b'half a zip')
    for f in [stale, *stale.rglob('*')]: os.utime(f, (time.time() - 7200,) * 2)
    comp_path(COMP, tmp_path/'data'/COMP)
    assert not stale.exists() and fresh.exists()  # `fresh` may belong to a download still running


def test_comp_path_unknown_competition(kenv, tmp_path):
    with pytest.raises(KaggleError, match="'no-such-comp' failed: HTTP 404.*check the name"): comp_path('no-such-comp', tmp_path/'x')


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
    assert "'--no-index', '--find-links'" in first and "inp/'paddy-collab-wheels'" in first and "'pip', 'check'" in first
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


def test_429_waits_as_asked_then_gives_up(kenv, tmp_path, monkeypatch):
    kenv.retry_after = 0.2
    kenv.fail('SaveKernel', 429, times=2)
    t = time.time()
    res = push_notebook(_nb_with_outputs(tmp_path/'paddy.ipynb'), wheel_ds='')
    assert time.time() - t >= 0.4 and res['ref'] == 'standin-user/paddy-first-steps'
    monkeypatch.setattr(pk, 'kaggle_429_retries', 1)
    kenv.fail('SaveKernel', 429, times=5)
    with pytest.raises(KaggleError, match=r"HTTP 429.*rate-limiting you \(Retry-After 0.2\)"): push_notebook(_nb_with_outputs(tmp_path/'paddy.ipynb'), wheel_ds='')
    kenv._faults.clear()
    kenv.retry_after = 600  # longer than kaggle_429_max_wait: no point waiting
    kenv.fail('SaveKernel', 429)
    t = time.time()
    with pytest.raises(KaggleError, match='HTTP 429'): push_notebook(_nb_with_outputs(tmp_path/'paddy.ipynb'), wheel_ds='')
    assert time.time() - t < 5
    kenv.retry_after = 1


def test_comp_download_403_names_the_rules_page(kenv, tmp_path):
    kenv.fail('DownloadDataFiles', 403)
    with pytest.raises(KaggleError, match=r"HTTP 403.*accept the competition's rules at https://www.kaggle.com/competitions/paddy-disease-classification/rules"):
        comp_path(COMP, tmp_path/'data')
    assert not (tmp_path/'data').exists() and leftovers(tmp_path) == []


def test_paddy_path_order(kenv, tmp_path, monkeypatch, capsys):
    import paddy_collab.synth as ps
    made = []
    def small(dest): made.append(dest); return synth_paddy(dest, n_per_class=1, n_test=2, size=(32, 40))
    monkeypatch.setattr(ps, 'synth_paddy', small)
    monkeypatch.setattr(pk, 'fastai_data_path', lambda: tmp_path/'fastai')
    # on Kaggle: the attached data
    (tmp_path/'kg'/'input'/COMP).mkdir(parents=True); (tmp_path/'kg'/'working').mkdir()
    monkeypatch.chdir(tmp_path/'kg'/'working'); monkeypatch.setenv('KAGGLE_KERNEL_RUN_TYPE', 'Batch')
    assert pk.paddy_path() == Path('../input')/COMP
    monkeypatch.delenv('KAGGLE_KERNEL_RUN_TYPE'); monkeypatch.chdir(tmp_path)
    # credentials: downloaded once into fastai's data folder
    p = pk.paddy_path()
    assert p == tmp_path/'fastai'/COMP and sorted(f.name for f in p.iterdir()) == FILES
    monkeypatch.setenv('PADDY_PATH', str(p)); assert pk.paddy_path() == p
    monkeypatch.setenv('PADDY_PATH', str(tmp_path))
    with pytest.raises(FileNotFoundError, match='from PADDY_PATH.*no train.csv'): pk.paddy_path()
    monkeypatch.delenv('PADDY_PATH')
    # no credentials: the synthetic set, made once, with one line why
    monkeypatch.delenv('KAGGLE_USERNAME'); monkeypatch.delenv('KAGGLE_KEY')
    s = pk.paddy_path(local=tmp_path/'none')
    assert (s/'train.csv').is_file() and s.parent == tmp_path/'fastai' and s.name.startswith('paddy-synth-')
    line, = [l for l in capsys.readouterr().out.splitlines() if l.startswith('paddy_path:')]
    assert 'synthetic' in line and 'no Kaggle credentials' in line
    assert pk.paddy_path(local=tmp_path/'none') == s and len(made) == 1


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


# -- the wheel dataset

def test_push_wheel_dataset_carries_the_wheel_and_its_missing_dependencies(kenv, fast_wheel, find_links):
    res = push_wheel_dataset(slug='paddy-wheels-test', find_links=find_links)  # the wheel `build_wheel` built for this module
    ref = 'standin-user/paddy-wheels-test'
    assert res['ref'] == ref and res['created'] and res['url'].endswith(ref)
    req = kenv.ops('CreateDataset')[-1]['json']
    assert (req['ownerSlug'], req['slug'], req['title'], req['licenseName'], req['isPrivate']) == ('standin-user', 'paddy-wheels-test', 'paddy_collab wheels', 'apache-2.0', True)
    files = kenv.datasets[ref]
    assert sorted(files) == sorted(res['wheels'] + ['wheels.json']) and 'dataset-metadata.json' not in files
    info = json.loads(files['wheels.json'])
    assert {'fastkaggle', 'plum-dispatch', 'kaggle', 'kagglesdk'} <= set(info['carried']) and info['carried']['plum-dispatch'].startswith('plum_dispatch-2.')
    assert not {'fastcore', 'beartype', 'torch'} & set(info['carried'])  # the image holds them within our ranges
    assert info['target'] == pk.kaggle_target() and info['target']['python'] == pk.kaggle_python  # Kaggle's interpreter, recorded
    assert all(any(t in w for t in ('-py3-none-any', '-py2.py3-none-any', f"-{info['target']['abi']}-")) for w in info['carried'].values()), info['carried']
    assert not any(w.startswith(('torch', 'fastai-', 'timm')) for w in res['wheels'])  # the image has them
    import io
    names = zipfile.ZipFile(io.BytesIO(files[info['package']])).namelist()
    assert 'paddy_collab/kaggle.py' in names and 'paddy_collab/core.py' in names
    res2 = push_wheel_dataset(slug='paddy-wheels-test', notes='second', find_links=find_links)
    assert not res2['created'] and kenv.ops('CreateDatasetVersion')[-1]['json']['body']['versionNotes'] == 'second'


def test_push_wheel_dataset_extra_wheel_and_faults(kenv, tmp_path, fast_wheel, find_links):
    extra = tmp_path/'fastkaggle-0.0.9-py3-none-any.whl'
    with zipfile.ZipFile(extra, 'w') as z: z.writestr('fastkaggle/__init__.py', '# ours')
    res = push_wheel_dataset(slug='paddy-wheels-extra', extra_wheels=[extra], find_links=find_links)
    files = kenv.datasets['standin-user/paddy-wheels-extra']
    assert files[extra.name] == extra.read_bytes()  # the wheel given wins over the downloaded one
    kenv.fail('upload', 'close')
    with pytest.raises(KaggleError, match=r"Pushing dataset 'standin-user/paddy-wheels-f' \(.*paddy_collab-.*\.whl.*\) failed: the connection"):
        push_wheel_dataset(slug='paddy-wheels-f', find_links=find_links)
    kenv.fail('GetDatasetStatus', 500)
    with pytest.raises(KaggleError, match="Checking whether dataset 'standin-user/paddy-wheels-f' exists failed: HTTP 500"):
        push_wheel_dataset(slug='paddy-wheels-f', find_links=find_links)
    with pytest.raises(ValueError, match='6-50'): push_wheel_dataset(slug='abc')
    with pytest.raises(KaggleError, match="Downloading the wheel of '.*' failed.*find_links"): push_wheel_dataset(slug='paddy-wheels-g', find_links=tmp_path/'empty')


def test_weights_dataset_and_kernel_weights(kenv, tmp_path, monkeypatch):
    "Weights made locally in the HF cache layout, pushed, laid out as Kaggle attaches them, and loaded by timm with pretrained=True."
    import timm, torch, huggingface_hub.constants as hc
    from safetensors.torch import save_file
    hub = tmp_path/'hf'/'hub'
    r = hub/'models--timm--test_resnet.r160_in1k'
    (r/'refs').mkdir(parents=True); (r/'snapshots'/'abc').mkdir(parents=True); (r/'refs'/'main').write_text('abc')
    sd = timm.create_model('test_resnet', pretrained=False).state_dict()
    sd['fc.bias'] = torch.arange(len(sd['fc.bias']), dtype=torch.float32)  # recognisable
    save_file(sd, r/'snapshots'/'abc'/'model.safetensors')
    monkeypatch.setattr(hc, 'HF_HUB_CACHE', str(hub))
    with pytest.raises(FileNotFoundError, match="'resnet18' are not in this machine's cache"): pk.push_weights_dataset(['resnet18'])
    res = pk.push_weights_dataset(['test_resnet'])
    assert res['ref'] == 'standin-user/paddy-collab-weights' and res['weights']['test_resnet']['hf_hub_id'] == 'timm/test_resnet.r160_in1k'
    inp = tmp_path/'input'/'paddy-collab-weights'; inp.mkdir(parents=True)
    for n, b in kenv.datasets[res['ref']].items(): (inp/n).write_bytes(b)
    # in the kernel: a fresh process, another (empty) HF cache, offline
    code = f"""import os, torch, timm
from paddy_collab.kaggle import kernel_weights
from paddy_collab.train import pretrained_kwargs
assert kernel_weights({str(inp.parent)!r}, {str(tmp_path/'kcache')!r}) == {{'test_resnet': __import__('pathlib').Path({str(inp/'test-resnet.safetensors')!r})}}
m = timm.create_model('test_resnet', pretrained=True, **pretrained_kwargs('test_resnet'))
assert torch.equal(m.fc.bias, torch.arange(len(m.fc.bias), dtype=torch.float32)), 'not our weights'
print(os.environ['HF_HUB_OFFLINE'])"""
    env = {k: v for k, v in os.environ.items() if not k.startswith('HF_')} | {'HOME': str(tmp_path/'home')}
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env)
    assert p.returncode == 0 and p.stdout.strip() == '1', p.stderr[-2000:]
    assert pk.kernel_weights(tmp_path/'nothing') == {}


# -- submissions

@pytest.fixture
def comp_dir(kenv, tmp_path):
    return comp_path(COMP, tmp_path/'data'/COMP)


def test_submit_reaches_the_server_with_its_message(kenv, comp_dir, tmp_path):
    sub = pd.read_csv(comp_dir/'sample_submission.csv').assign(label=diseases[3])
    sub.to_csv(tmp_path/'submission.csv', index=False)
    res = submit(tmp_path/'submission.csv', COMP, 'blast everywhere', path=comp_dir)
    assert res['message'] == f'Successfully submitted to {COMP}' and res['ref'] == len(kenv.submissions)
    assert {k: kenv.submissions[-1][k] for k in ('comp', 'message', 'csv')} == dict(comp=COMP, message='blast everywhere', csv=(tmp_path/'submission.csv').read_bytes())
    res = submit(tmp_path/'submission.csv', COMP, 'and wait', path=comp_dir, wait=5, poll=0.05)
    assert (res['status'], res['score']) == ('complete', '0.25') and [r['op'] for r in kenv.requests[-2:]] == ['ListSubmissions'] * 2
    kenv.submission_status = ['PENDING']
    assert submit(tmp_path/'submission.csv', COMP, 'no score yet', path=comp_dir, wait=0.2, poll=0.05)['status'] == 'pending'
    kenv.submission_status = ['PENDING', 'COMPLETE']
    start = kenv.ops('StartSubmissionUpload')[-1]['json']
    assert start['competitionName'] == COMP and start['fileName'] == 'submission.csv'
    # the sample defaults to ./<comp>/sample_submission.csv
    (tmp_path/COMP).symlink_to(comp_dir)
    assert submit(tmp_path/'submission.csv', COMP, 'again')['message'].startswith('Successfully')


def test_check_submission_catches_mistakes(kenv, comp_dir, tmp_path):
    smp = pd.read_csv(comp_dir/'sample_submission.csv')
    good = smp.assign(label=diseases[0])
    bad = {'renamed column': (good.rename(columns={'label': 'disease'}), 'has columns'),
           'missing id': (good.iloc[1:], 'lacks 1 image_id'),
           'duplicate id': (pd.concat([good, good.iloc[:1]]), 'more than once'),
           'extra id': (pd.concat([good, pd.DataFrame({'image_id': ['999.jpg'], 'label': [diseases[0]]})]), 'not in sample_submission.csv'),
           'unknown label': (good.assign(label='blst'), "unknown label(s) ['blst']"),
           'empty label': (good.assign(label=None), 'empty value')}
    n = len(kenv.requests)
    for what, (df, msg) in bad.items():
        df.to_csv(tmp_path/'bad.csv', index=False)
        with pytest.raises(ValueError, match=msg.replace('(', r'\(').replace(')', r'\)').replace('[', r'\[').replace(']', r'\]')): submit(tmp_path/'bad.csv', COMP, what, path=comp_dir)
    good.to_csv(tmp_path/'good.csv', index=False)
    check_submission(tmp_path/'good.csv', comp_dir/'sample_submission.csv')
    with pytest.raises(ValueError, match='unknown label'): check_submission(tmp_path/'good.csv', comp_dir/'sample_submission.csv', labels={'label': ['normal']})
    (tmp_path/'empty.csv').write_text('')
    with pytest.raises(ValueError, match=r'empty\.csv is empty: expected a CSV'): submit(tmp_path/'empty.csv', COMP, 'x', path=comp_dir)  # not pandas' 'No columns to parse'
    with pytest.raises(ValueError, match='message'): submit(tmp_path/'good.csv', COMP, '  ', path=comp_dir)
    with pytest.raises(FileNotFoundError, match='sample_submission.csv not found'): submit(tmp_path/'good.csv', 'other-comp', 'x')
    assert len(kenv.requests) == n  # nothing was sent


@pytest.mark.parametrize('op,fault', [('StartSubmissionUpload', 401), ('StartSubmissionUpload', 404), ('CreateSubmission', 500),
                                      ('CreateSubmission', 'close'), ('upload', 500), ('upload', 'close'), ('StartSubmissionUpload', 'hang')])
def test_submit_faults(kenv, comp_dir, tmp_path, op, fault):
    pd.read_csv(comp_dir/'sample_submission.csv').to_csv(tmp_path/'submission.csv', index=False)
    n = len(kenv.submissions)
    kenv.fail(op, fault)
    t = time.time()
    with pytest.raises(KaggleError) as e: submit(tmp_path/'submission.csv', COMP, 'fault', path=comp_dir)
    assert time.time() - t < 30
    msg = str(e.value)
    assert msg.startswith(f"Submitting submission.csv to '{COMP}' failed: ") and FAULT_MSG[fault] in msg, msg
    assert len(kenv.submissions) == n


def test_port_taken_is_a_clear_error(standin):
    with pytest.raises(RuntimeError, match='cannot listen on 127.0.0.1:80'): KaggleStandIn(port=80).start()


# -- the data source, apart from the compute scale; lesson kernels on Kaggle

@pytest.fixture
def data_home(tmp_path, monkeypatch):
    "fastai's data folder in `tmp_path` (no local copy of the competition), off Kaggle, no PADDY_PATH."
    import paddy_collab.paddy_data as pdd
    d = tmp_path/'fastai-data'; d.mkdir()
    monkeypatch.setattr(pdd, 'fastai_data_path', lambda: d); monkeypatch.setattr(pk, 'fastai_data_path', lambda: d)
    for k in ('PADDY_PATH', 'KAGGLE_KERNEL_RUN_TYPE'): monkeypatch.delenv(k, raising=False)
    return d


def test_lesson_path_uses_the_real_data_at_every_scale(paddy, data_home, monkeypatch, capsys):
    from paddy_collab.paddy_data import lesson_path, real_paddy
    assert real_paddy() is None
    monkeypatch.setenv('PADDY_PATH', str(paddy))
    assert real_paddy() == paddy and lesson_path('full') == paddy
    p = lesson_path('tiny')
    assert 'the real data from' in capsys.readouterr().out and p.parent == data_home
    trn = pd.read_csv(p/'train.csv')
    imgs = sorted(p.glob('train_images/*/*.jpg'))
    assert len(imgs) == len(trn) == 30 and set(trn.image_id) == {f.name for f in imgs} and all(f.resolve().parent.parent == (paddy/'train_images').resolve() for f in imgs)
    assert sorted(f.name for f in (p/'test_images').iterdir()) == sorted(f.name for f in (paddy/'test_images').iterdir())  # every test image: a whole submission
    assert (p/'sample_submission.csv').read_text() == (paddy/'sample_submission.csv').read_text()
    assert lesson_path('tiny') == p  # made once
    monkeypatch.setenv('PADDY_PATH', str(data_home))  # named, and not the data: an error, not the synthetic set
    with pytest.raises(FileNotFoundError, match='no train.csv'): lesson_path('tiny')


def test_lesson_kernel_finds_attached_data_weights_and_writes_where_kaggle_submits(paddy, data_home, tmp_path, monkeypatch, capsys):
    from paddy_collab.paddy_data import lesson_path, submission_path
    inp = tmp_path/'kaggle'/'input'
    shutil.copytree(paddy, inp/'competitions'/COMP)  # Kaggle's newer layout
    w = inp/'datasets'/'someone'/'paddy-collab-weights'; w.mkdir(parents=True)
    (w/'test-resnet.safetensors').write_bytes(b'x')
    (w/'weights.json').write_text(json.dumps({'test_resnet': dict(file='test-resnet.safetensors', hf_hub_id='timm/test_resnet.r160_in1k', hf_hub_filename='model.safetensors')}))
    (tmp_path/'kaggle'/'working').mkdir()
    monkeypatch.chdir(tmp_path/'kaggle'/'working')
    monkeypatch.setenv('KAGGLE_KERNEL_RUN_TYPE', 'Batch')
    monkeypatch.setattr(pk.tempfile, 'gettempdir', lambda: str(tmp_path/'tmp'))
    import huggingface_hub.constants as hc  # `kernel_weights` points the imported hub at its cache: restore it afterwards, for the tests that follow
    for k in ('HF_HUB_CACHE', 'HF_HUB_OFFLINE'): monkeypatch.setattr(hc, k, getattr(hc, k)); monkeypatch.setenv(k, ''); monkeypatch.delenv(k)
    p = lesson_path('cpu')
    out = capsys.readouterr().out
    assert 'pretrained weights from the attached dataset(s): test_resnet' in out and 'the real data from ../input/competitions/' + COMP in out
    assert os.environ['HF_HUB_OFFLINE'] == '1' and (Path(os.environ['HF_HUB_CACHE'])/'models--timm--test_resnet.r160_in1k').is_dir()
    assert len(pd.read_csv(p/'train.csv')) == 30  # 125 a disease at 'cpu', and this set has 3
    assert lesson_path('full') == Path('../input/competitions')/COMP
    assert submission_path(tmp_path/'elsewhere') == (Path('/kaggle/working') if Path('/kaggle/working').is_dir() else Path.cwd())/'submission.csv'
    monkeypatch.delenv('KAGGLE_KERNEL_RUN_TYPE')
    assert submission_path(tmp_path/'elsewhere', 'sub.csv') == tmp_path/'elsewhere'/'sub.csv'


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
