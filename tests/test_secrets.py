"""No Kaggle key in the repository, and none in what paddy_collab.kaggle, .kernels and .datasets print or log.

1. Every tracked file, every notebook and every test file is scanned for strings shaped like Kaggle credentials:
   32 hex characters after a key-ish name, a `"key": "..."` JSON value, or a `KGAT_...` API token.
2. The public functions of `paddy_collab.kaggle`, `.kernels` and `.datasets` run against the stand-in server with made-up credentials,
   on success and failure paths, while stdout, stderr, logging (DEBUG, every logger) and exception messages
   are captured; the key, the token and the Basic-auth form of the key must appear in none of them.
The made-up credentials are generated at run time, so this file holds none either.
"""
import base64, json, logging, os, re, secrets, subprocess, sys, traceback
from pathlib import Path
import pandas as pd
import pytest

import paddy_collab.kaggle as pk, paddy_collab.kernels as pkn, paddy_collab.datasets as pds

ROOT = Path(__file__).resolve().parents[1]
COMP = 'paddy-disease-classification'

# what a leaked credential looks like
KEYISH = r'(?:key|token|secret|password|passwd|api_?key|credential)s?'
PATTERNS = {
    'hex key after a key-ish name': re.compile(KEYISH + r'''["']?\s*[:=]\s*(?:\\?["'])?([0-9a-fA-F]{32})\b''', re.I),
    '"key": "..." in JSON': re.compile(r'''\\?["']key\\?["']\s*:\s*\\?["']([^"'\\<>{}\s.$*][^"'\\]{7,})\\?["']''', re.I),
    'KGAT_ API token': re.compile(r'KGAT_[0-9A-Za-z]{8,}'),
}
PLACEHOLDER = re.compile(r'^(x+|X+|\*+|your[-_ ]?key.*|\.\.\.)$', re.I)


def find_keys(text: str):
    "The (pattern name, match) pairs in `text` that look like real credentials."
    found = []
    for name, pat in PATTERNS.items():
        for m in pat.finditer(text):
            val = m.group(1) if m.groups() else m.group(0)
            if not PLACEHOLDER.match(val): found.append((name, m.group(0)[:60]))
    return found


def test_patterns_catch_what_they_should():
    "The scanner finds made-up keys in the shapes people paste them, and leaves placeholders alone."
    k = secrets.token_hex(16)
    leaks = ['{"username": "jo", "ke' + f'y": "{k}"}}', f'KAGGLE_KEY={k}', f"creds = '{{\\\"username\\\":\\\"jo\\\",\\\"ke" + f"y\\\":\\\"{k}\\\"}}'",
             f"api_ke" + f"y = '{k}'", 'KGA' + 'T_' + secrets.token_hex(10), f'"ke' + f'y": "{k[:20]}"']
    for s in leaks: assert find_keys(s), s
    for s in ['{"username": "<you>", "ke' + 'y": "<your key>"}', '"ke' + 'y": "xxxxxxxxxxxxxxxx"', 'KAGGLE_KEY and KAGGLE_USERNAME',
              'key_fn = sha256(x).hexdigest()', "cv.get('key')", '"ke' + 'y": ""']:
        assert not find_keys(s), s


def scanned_files():
    out = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    files = {ROOT/f for f in out.split('\0') if f}
    files |= set((ROOT/'nbs').rglob('*.ipynb')) | set((ROOT/'tests').glob('*.py'))
    return sorted(f for f in files if f.is_file())


def test_no_keys_in_tracked_files_or_notebooks():
    files = scanned_files()
    assert any(f.suffix == '.ipynb' for f in files) and any(f.name == 'test_secrets.py' for f in files)
    hits = {}
    for f in files:
        if f.stat().st_size > 20_000_000: continue
        found = find_keys(f.read_bytes().decode('utf-8', errors='ignore'))
        if found: hits[str(f.relative_to(ROOT))] = found
    assert not hits, f"Strings shaped like Kaggle credentials (remove them, and rotate the key): {hits}"


# -- nothing printed or logged

def run_everything(kenv, tmp_path):
    "Call the public functions of paddy_collab.kaggle, .kernels and .datasets, on success and failure paths; return the messages of the errors raised."
    errors = []
    def expect_fail(f, *args, **kw):
        try: f(*args, **kw)
        except Exception as e: errors.append(''.join(traceback.format_exception(e)))
        else: raise AssertionError(f'{f.__name__} should have failed')
    print(pk.find_creds(), pk.kaggle_creds(), pk.kaggle_config_dir(), pk.on_kaggle())
    api = pk.kaggle_api()
    print(api.config_values.get('username'), vars(api).get('_paddy_creds'))
    p = pk.comp_path(COMP, tmp_path/'data'/COMP)
    kenv.fail('blob', 'truncate'); expect_fail(pk.comp_path, COMP, tmp_path/'d2'/COMP)
    kenv.fail('DownloadDataFiles', 401); expect_fail(pk.comp_path, COMP, tmp_path/'d2'/COMP)
    nb = tmp_path/'nb.ipynb'
    nb.write_text(json.dumps({'nbformat': 4, 'nbformat_minor': 5, 'metadata': {}, 'cells': [{'cell_type': 'markdown', 'metadata': {}, 'source': '# A notebook title'}]}))
    print(pkn.kernel_files(nb, tmp_path/'k', 'standin-user', comp=COMP), pkn.clean_nb(json.loads(nb.read_text())), pkn.nb_title(json.loads(nb.read_text())))
    kenv.datasets['standin-user/paddy-collab-wheels'] = {}  # pushed before: push_notebook waits for it to be ready
    print(pkn.push_notebook(nb, comp=COMP, wheel_ds='standin-user/paddy-collab-wheels'))
    kenv.fail('SaveKernel', 500); expect_fail(pkn.push_notebook, nb, wheel_ds='')
    print(pds.push_wheel_dataset(slug='secret-scan-wheels'))
    kenv.fail('upload', 'close'); expect_fail(pds.push_wheel_dataset, slug='secret-scan-other')
    pd.read_csv(p/'sample_submission.csv').to_csv(tmp_path/'sub.csv', index=False)
    print(pk.check_submission(tmp_path/'sub.csv', p/'sample_submission.csv'))
    print(pk.submit(tmp_path/'sub.csv', COMP, 'scan', path=p))
    for fault in (401, 'close'):
        kenv.fail('CreateSubmission', fault); expect_fail(pk.submit, tmp_path/'sub.csv', COMP, 'scan', path=p)
    print(pk.save_kaggle_json('standin-user', config_dir=tmp_path/'cfg2', ask=lambda prompt: kenv.key))
    # wrong credentials: the error messages must show neither the right nor the wrong one
    var, wrong = ('KAGGLE_API_TOKEN', 'KGAT_' + secrets.token_hex(16)) if os.environ.get('KAGGLE_API_TOKEN') else ('KAGGLE_KEY', secrets.token_hex(16))
    os.environ[var] = wrong  # restored by the fixture's monkeypatch
    expect_fail(pk.submit, tmp_path/'sub.csv', COMP, 'scan', path=p)
    expect_fail(pk.comp_path, COMP, tmp_path/'d3'/COMP)
    return errors, wrong


@pytest.mark.parametrize('auth', ['key', 'token'])
def test_no_key_in_output_or_logs(kenv, tmp_path, monkeypatch, capfd, caplog, fast_wheel, auth):
    monkeypatch.setenv('VERBOSE', '1')  # the client's verbose mode prints request headers; ours must stay quiet anyway
    secret_strings = [kenv.key, base64.b64encode(f'{kenv.username}:{kenv.key}'.encode()).decode()]
    if auth == 'token':
        kenv.token = 'KGAT_' + secrets.token_hex(16)
        monkeypatch.delenv('KAGGLE_KEY'); monkeypatch.delenv('KAGGLE_USERNAME')
        monkeypatch.setenv('KAGGLE_API_TOKEN', kenv.token)
        secret_strings.append(kenv.token)
    caplog.set_level(logging.DEBUG)
    for name in ('kaggle', 'kagglesdk', 'urllib3', 'requests'): logging.getLogger(name).setLevel(logging.DEBUG)
    n = len(kenv.requests)
    errors, wrong = run_everything(kenv, tmp_path)
    out, err = capfd.readouterr()
    # the credentials were really used, so the scan below is meaningful
    sent = [r['headers'].get('Authorization', '') for r in kenv.requests[n:]]
    assert any(s.endswith(secret_strings[-1] if auth == 'token' else secret_strings[1]) for s in sent)
    assert len(errors) == 8 and all('failed' in e for e in errors)
    secret_strings += [wrong, base64.b64encode(f'{kenv.username}:{wrong}'.encode()).decode()]
    logs = '\n'.join(r.getMessage() + str(r.args) for r in caplog.records)
    written = '\n'.join(p.read_text(errors='ignore') for p in tmp_path.rglob('*') if p.is_file() and p.suffix in ('.json', '.ipynb', '.log', '.txt') and p.name != 'kaggle.json')
    for where, text in [('stdout', out), ('stderr', err), ('logs', logs), ('errors', '\n'.join(errors)), ('files written', written)]:
        for s in secret_strings: assert s not in text, f'a credential appeared in {where}'
        assert not find_keys(text), f'something shaped like a key appeared in {where}: {find_keys(text)}'
