"""paddy_collab.kaggle end to end (credentials, the client, competition data, submissions; `paddy_source.paddy_path`): the real `kaggle` 2.x client against the local stand-in server (tests/kaggle_server.py).

Never contacts Kaggle: the `kenv` fixture sets KAGGLE_API_ENVIRONMENT=LOCALHOST, so every call goes to http://localhost/api/v1/...
"""
import base64, json, os, secrets, shutil, stat, subprocess, sys, time, types, zipfile
from pathlib import Path
import pandas as pd
import pytest

from kaggle_server import KaggleStandIn  # its fixtures come from conftest's `pytest_plugins`
import paddy_collab.kaggle as pk
import paddy_collab.paddy_source as ppd
from paddy_collab.kaggle import KaggleError, KaggleCreds, find_creds, kaggle_creds, save_kaggle_json, comp_path, check_submission, submit
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
    for m in (ppd, ps): monkeypatch.setattr(m, 'fastai_data_path', lambda: tmp_path/'fastai')  # the local copy; `cached_synth`'s set
    # on Kaggle: the attached data
    (tmp_path/'kg'/'input'/COMP).mkdir(parents=True); (tmp_path/'kg'/'working').mkdir()
    monkeypatch.chdir(tmp_path/'kg'/'working'); monkeypatch.setenv('KAGGLE_KERNEL_RUN_TYPE', 'Batch')
    assert ppd.paddy_path() == Path('../input')/COMP
    monkeypatch.delenv('KAGGLE_KERNEL_RUN_TYPE'); monkeypatch.chdir(tmp_path)
    # credentials: downloaded once into fastai's data folder
    p = ppd.paddy_path()
    assert p == tmp_path/'fastai'/COMP and sorted(f.name for f in p.iterdir()) == FILES
    monkeypatch.setenv('PADDY_PATH', str(p)); assert ppd.paddy_path() == p
    monkeypatch.setenv('PADDY_PATH', str(tmp_path))
    with pytest.raises(FileNotFoundError, match='from PADDY_PATH.*no train.csv'): ppd.paddy_path()
    monkeypatch.delenv('PADDY_PATH')
    # no credentials: the synthetic set, made once, with one line why
    monkeypatch.delenv('KAGGLE_USERNAME'); monkeypatch.delenv('KAGGLE_KEY')
    s = ppd.paddy_path(local=tmp_path/'none')
    assert (s/'train.csv').is_file() and s.parent == tmp_path/'fastai' and s.name.startswith('paddy-synth-')
    line, = [l for l in capsys.readouterr().out.splitlines() if l.startswith('paddy_path:')]
    assert 'synthetic' in line and 'no Kaggle credentials' in line
    assert ppd.paddy_path(local=tmp_path/'none') == s and len(made) == 1


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
    import paddy_collab.paddy_source as pso
    d = tmp_path/'fastai-data'; d.mkdir()
    import paddy_collab.synth as ps
    monkeypatch.setattr(pso, 'fastai_data_path', lambda: d); monkeypatch.setattr(ps, 'fastai_data_path', lambda: d)
    for k in ('PADDY_PATH', 'KAGGLE_KERNEL_RUN_TYPE'): monkeypatch.delenv(k, raising=False)
    return d


def test_lesson_path_uses_the_real_data_at_every_scale(paddy, data_home, monkeypatch, capsys):
    from paddy_collab.paddy_source import lesson_path, real_paddy
    assert real_paddy() is None
    monkeypatch.setenv('PADDY_PATH', str(paddy))
    assert real_paddy() == paddy and lesson_path('full') == paddy
    p = lesson_path('tiny')
    assert 'the real data from' in capsys.readouterr().out and p.parent == data_home
    trn = pd.read_csv(p/'train.csv')
    imgs = sorted(p.glob('train_images/*/*.jpg'))
    want = sum(min(3, len(list(d.iterdir()))) for d in (paddy/'train_images').iterdir())  # paddy_subsets['tiny']: 3 a disease, fewer where it has fewer
    assert len(imgs) == len(trn) == want and set(trn.image_id) == {f.name for f in imgs} and all(f.resolve().parent.parent == (paddy/'train_images').resolve() for f in imgs)
    assert sorted(f.name for f in (p/'test_images').iterdir()) == sorted(f.name for f in (paddy/'test_images').iterdir())  # every test image: a whole submission
    assert (p/'sample_submission.csv').read_text() == (paddy/'sample_submission.csv').read_text()
    assert lesson_path('tiny') == p  # made once
    monkeypatch.setenv('PADDY_PATH', str(data_home))  # named, and not the data: an error, not the synthetic set
    with pytest.raises(FileNotFoundError, match='no train.csv'): lesson_path('tiny')


def test_lesson_kernel_finds_attached_data_weights_and_writes_where_kaggle_submits(paddy, data_home, tmp_path, monkeypatch, capsys):
    from paddy_collab.paddy_source import lesson_path, submission_path
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
