"""A local stand-in for the Kaggle API, for tests and the `ref/10_kaggle` notebook.

kaggle 2.x sends every call as `POST http://localhost/api/v1/<service>/<Method>` (JSON in, JSON out) when
`KAGGLE_API_ENVIRONMENT=LOCALHOST`. `KaggleStandIn` answers the calls `paddy_collab.kaggle` makes the way Kaggle
does (competition downloads redirect to a blob URL; uploads go to a `createUrl` by PUT), records every request
in `.requests`, checks credentials, and can be told to fail: `fail('SaveKernel', 500)`, `fail('blob', 'truncate')`, `fail('SaveKernel', 429)` (with
`retry_after`), `fail('SaveKernel', 'error')` (Kaggle's 200 answer with an error), `fail('SaveKernel', 'invalid')`
(sources it does not know). Kernels run by `run_kernel`: their status, output files and log are what the test sets.
It never talks to anything but its own clients.
"""
from __future__ import annotations
import base64, errno, json, os, socket, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

__all__ = ['KaggleStandIn', 'standin_env']

_errors = {401: 'Unauthenticated', 403: 'Permission denied', 404: 'Not found', 429: 'Too many requests', 500: 'Internal server error'}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def log_message(self, *args): pass  # keep test output clean

    # -- plumbing
    def _send(self, code, body=b'', ctype='application/json', headers=None):
        if isinstance(body, (dict, list)): body = json.dumps(body).encode()
        self.send_response(code)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        for k, v in (headers or {}).items(): self.send_header(k, v)
        self.end_headers()
        if self.command != 'HEAD': self.wfile.write(body)

    def _error(self, code):
        hdr = {'Retry-After': str(self.server.standin.retry_after)} if code == 429 else None
        self._send(code, {'code': code, 'message': _errors.get(code, 'Error')}, headers=hdr)

    def _close(self):
        "Drop the connection without answering, as a crashed proxy would."
        self.close_connection = True
        try: self.connection.shutdown(socket.SHUT_RDWR)
        except OSError: pass

    def _fault(self, op):
        "Apply a fault set with `fail` to `op`; return True if the request was answered (or dropped)."
        f = self.server.standin._take_fault(op)
        if f is None or f in ('truncate', 'error', 'invalid'): return False
        if f == 'close': self._close()
        elif f == 'hang':
            time.sleep(self.server.standin.hang_s)
            self._close()
        else: self._error(int(f))
        return True

    def _authorized(self):
        s, auth = self.server.standin, self.headers.get('Authorization', '')
        if auth.startswith('Basic '):
            try: user, key = base64.b64decode(auth[6:]).decode().split(':', 1)
            except Exception: return False
            return (user, key) == (s.username, s.key)
        if auth.startswith('Bearer '): return s.token is not None and auth[7:] == s.token
        return False

    def _record(self, op, data=None, body=b''):
        self.server.standin.requests.append(dict(method=self.command, path=self.path, op=op, json=data, body=body,
                                                 headers=dict(self.headers)))

    # -- routes
    def do_POST(self):
        n = int(self.headers.get('Content-Length') or 0)
        raw = self.rfile.read(n) if n else b''
        parts = urlparse(self.path).path.strip('/').split('/')
        if len(parts) != 4 or parts[:2] != ['api', 'v1']: return self._error(404)
        op = parts[3]
        try: data = json.loads(raw or b'{}')
        except ValueError: data = None
        self._record(op, data, raw)
        if self._fault(op): return
        s = self.server.standin
        if op == 'IntrospectToken':
            ok = s.token is not None and data.get('token') == s.token
            return self._send(200, {'active': ok, 'username': s.username if ok else ''})
        if not self._authorized(): return self._error(401)
        handler = getattr(self, f'_op_{op}', None)
        if handler is None: return self._error(404)
        return handler(data)

    def _op_DownloadDataFiles(self, d):
        comp = d.get('competitionName', '')
        if comp not in self.server.standin.comps: return self._error(404)
        # Kaggle answers with a redirect to a signed blob URL; the client follows it and streams the zip
        self._send(302, b'', headers={'Location': f'{self.server.standin.url}/blobs/{comp}.zip?sig=standin'})

    def _op_StartSubmissionUpload(self, d):
        tok = self.server.standin._new_token('sub')
        self._send(200, {'token': tok, 'createUrl': f'{self.server.standin.url}/upload/{tok}'})

    def _op_CreateSubmission(self, d):
        s = self.server.standin
        tok = d.get('blobFileTokens', '')
        if tok not in s.uploads: return self._send(400, {'code': 400, 'message': f'unknown upload token {tok!r}'})
        s.submissions.append(dict(comp=d.get('competitionName'), message=d.get('submissionDescription', ''), csv=s.uploads[tok],
                                  status=list(s.submission_status), score=s.score))
        self._send(200, {'message': 'Successfully submitted to ' + d.get('competitionName', ''), 'ref': len(s.submissions)})

    def _op_StartBlobUpload(self, d):
        tok = self.server.standin._new_token('blob')
        self.server.standin.blob_names[tok] = d.get('name', '')
        self._send(200, {'token': tok, 'createUrl': f'{self.server.standin.url}/upload/{tok}'})

    def _op_GetDatasetStatus(self, d):
        ref = f"{d.get('ownerSlug')}/{d.get('datasetSlug')}"
        s = self.server.standin
        if ref not in s.datasets: return self._error(404)
        seq = s.dataset_status.get(ref) or ['READY']  # statuses to answer in turn; the last one stays
        self._send(200, {'status': seq.pop(0) if len(seq) > 1 else seq[0]})

    def _dataset_files(self, toks):
        s = self.server.standin
        return {s.blob_names.get(t, t): s.uploads.get(t) for t in toks}

    def _op_CreateDataset(self, d):
        s = self.server.standin
        ref = f"{d.get('ownerSlug')}/{d.get('slug')}"
        s.datasets[ref] = self._dataset_files([f.get('token') for f in d.get('files', [])])
        self._send(200, {'ref': ref, 'url': f'{s.url}/datasets/{ref}', 'status': 'Ok'})

    def _op_CreateDatasetVersion(self, d):
        s = self.server.standin
        ref = f"{d.get('ownerSlug')}/{d.get('datasetSlug')}"
        if ref not in s.datasets: return self._error(404)
        s.datasets[ref] = self._dataset_files([f.get('token') for f in d.get('body', {}).get('files', [])])
        self._send(200, {'ref': ref, 'url': f'{s.url}/datasets/{ref}', 'status': 'Ok'})

    def _op_SaveKernel(self, d):
        s = self.server.standin
        f = s._take_fault('SaveKernel!')
        if f == 'error': return self._send(200, {'error': 'Notebook is invalid: code_file is empty'})
        if f == 'invalid': return self._send(200, {'ref': '', 'url': '', 'invalidCompetitionSources': d.get('competitionDataSources', []),
                                                   'invalidDatasetSources': d.get('datasetDataSources', [])})
        s.kernels.append(d)
        slug = d.get('slug', '')
        self._send(200, {'ref': f'/code/{slug}', 'url': f'{s.url}/code/{slug}', 'versionNumber': len(s.kernels)})

    def _kernel(self, d):
        return self.server.standin.runs.get(f"{d.get('userName')}/{d.get('kernelSlug')}")

    def _op_GetKernelSessionStatus(self, d):
        k = self._kernel(d)
        if k is None: return self._error(404)
        seq = k['status']
        self._send(200, {'status': seq.pop(0) if len(seq) > 1 else seq[0], 'failureMessage': k.get('failure', '')})

    def _op_ListKernelSessionOutput(self, d):
        k, s = self._kernel(d), self.server.standin
        if k is None: return self._error(404)
        ref = f"{d.get('userName')}/{d.get('kernelSlug')}"
        self._send(200, {'files': [{'fileName': n, 'url': f'{s.url}/outputs/{ref}/{n}?sig=standin'} for n in k['files']], 'log': k.get('log', '')})

    def _op_ListSubmissions(self, d):
        s = self.server.standin
        subs = [dict(ref=i+1, description=x['message'], status=x['status'].pop(0) if len(x['status']) > 1 else x['status'][0],
                     publicScore=x.get('score', ''), fileName='submission.csv')
                for i, x in enumerate(s.submissions) if x['comp'] == d.get('competitionName')]
        self._send(200, {'submissions': subs[::-1]})

    def do_PUT(self):
        n = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(n) if n else b''
        self._record('upload', None, body)
        if self._fault('upload'): return
        tok = urlparse(self.path).path.rsplit('/', 1)[-1]
        self.server.standin.uploads[tok] = body
        self._send(200, {})

    def do_GET(self):
        path = urlparse(self.path).path
        self._record('blob' if path.startswith('/blobs/') else 'output' if path.startswith('/outputs/') else 'get')
        if path.startswith('/outputs/'):
            ref, _, name = path[len('/outputs/'):].rpartition('/')
            k, f = self.server.standin.runs.get(ref), self.server.standin._take_fault('output')
            if f is not None: return self._close() if f == 'close' else self._error(int(f))
            if k is None or name not in k['files']: return self._error(404)
            return self._send(200, k['files'][name], ctype='application/octet-stream')
        if not path.startswith('/blobs/'): return self._error(404)
        f = self.server.standin._take_fault('blob')
        if f not in (None, 'truncate'):
            if f == 'close': return self._close()
            if f == 'hang': time.sleep(self.server.standin.hang_s); return self._close()
            return self._error(int(f))
        comp = path[len('/blobs/'):].removesuffix('.zip')
        data = self.server.standin.comps.get(comp)
        if data is None: return self._error(404)
        self.send_response(200)
        self.send_header('Content-Type', 'application/zip')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        if f == 'truncate':  # half the promised bytes, then hang up: a download that fails midway
            self.wfile.write(data[:len(data)//2]); self.wfile.flush()
            return self._close()
        self.wfile.write(data)


class KaggleStandIn:
    "A local HTTP server answering the kaggle client's calls like Kaggle; records requests; injects faults."
    def __init__(self, username='standin-user', key=None, token=None, port=80, host='127.0.0.1', hang_s=5.0):
        self.username, self.key, self.token, self.port, self.host, self.hang_s = username, key, token, port, host, hang_s
        self.url = 'http://localhost' + ('' if port == 80 else f':{port}')
        self.requests, self.kernels, self.submissions = [], [], []
        self.comps, self.datasets, self.uploads, self.blob_names = {}, {}, {}, {}
        self.dataset_status, self.runs, self.retry_after = {}, {}, 1  # {ref: statuses in turn}, {kernel ref: run}, 429's Retry-After (s)
        self.submission_status, self.score = ['PENDING', 'COMPLETE'], '0.25'  # what ListSubmissions says of a new submission, in turn
        self._faults, self._n, self._lock, self._srv = {}, 0, threading.Lock(), None

    def _new_token(self, kind):
        with self._lock:
            self._n += 1
            return f'{kind}-{self._n}'

    def fail(self, op, fault, times=1):
        "Make the next `times` calls to `op` (a method name like 'SaveKernel', or 'blob'/'upload') answer `fault`: 401, 403, 404, 429, 500, 'close', 'hang', 'truncate'; SaveKernel also 'error', 'invalid'."
        self._faults[op + ('!' if fault in ('error', 'invalid') else '')] = [fault, times]
        return self

    def run_kernel(self, ref, status=('RUNNING', 'COMPLETE'), files=None, log='', failure=''):
        "Make kernel `ref` answer `status` in turn (the last stays), with output `files` ({name: bytes}), `log` and `failure` message."
        self.runs[ref] = dict(status=list(status), files=dict(files or {}), log=log, failure=failure)
        return self

    def _take_fault(self, op):
        with self._lock:
            f = self._faults.get(op)
            if not f: return None
            f[1] -= 1
            if f[1] <= 0: del self._faults[op]
            return f[0]

    def ops(self, op=None):
        "The recorded requests (all, or those for `op`)."
        return [r for r in self.requests if op is None or r['op'] == op]

    def start(self):
        try: self._srv = _Server((self.host, self.port), _Handler)
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                raise RuntimeError(f"The Kaggle stand-in cannot listen on {self.host}:{self.port} ({e.strerror}). kaggle 2.x with "
                    f"KAGGLE_API_ENVIRONMENT=LOCALHOST calls http://localhost/api/v1/..., so port {self.port} must be free "
                    "(and binding port 80 needs root). Find what holds it with `ss -ltnp 'sport = :80'`.") from None
            raise
        self._srv.standin = self
        threading.Thread(target=self._srv.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True).start()
        return self

    def stop(self):
        if self._srv is not None:
            self._srv.shutdown(); self._srv.server_close(); self._srv = None

    def __enter__(self): return self.start()
    def __exit__(self, *exc): self.stop()


def standin_env(standin, config_dir):
    "Environment variables that send the real client to `standin` (port 80: LOCALHOST; 7777: TEST) with its user and key."
    env = {80: 'LOCALHOST', 7777: 'TEST'}.get(standin.port)
    if env is None: raise ValueError(f"kaggle's client only knows localhost ports 80 (LOCALHOST) and 7777 (TEST), not {standin.port}")
    d = dict(KAGGLE_API_ENVIRONMENT=env, KAGGLE_CONFIG_DIR=str(config_dir), KAGGLE_USERNAME=standin.username)
    if standin.key: d['KAGGLE_KEY'] = standin.key
    return d


# -- pytest fixtures shared by tests/test_kaggle.py and tests/test_secrets.py (import them by name)
import secrets, zipfile
from pathlib import Path
try: import pytest
except ImportError: pytest = None

def zip_folder(src, dest):
    "Zip folder `src` into `dest`, as Kaggle zips a competition's files (paths relative to `src`)."
    with zipfile.ZipFile(dest, 'w') as z:
        for f in sorted(Path(src).rglob('*')): z.write(f, f.relative_to(src))
    return dest

if pytest is not None:
    @pytest.fixture(scope='module')
    def standin(tmp_path_factory):
        "A running stand-in on port 80 with a made-up key, serving a zip of the small synthetic Paddy set."
        from paddy_collab.synth import synth_paddy
        d = tmp_path_factory.mktemp('standin')
        s = KaggleStandIn(username='standin-user', key=secrets.token_hex(16), port=80, hang_s=4)
        s.comps['paddy-disease-classification'] = zip_folder(synth_paddy(d/'src', n_per_class=2, n_test=4, size=(64, 80)), d/'paddy.zip').read_bytes()
        with s: yield s

    @pytest.fixture
    def kenv(standin, tmp_path, monkeypatch):
        "The stand-in, with this process's environment pointing the client at it: its credentials only, a fresh HOME, 2 s timeouts."
        import paddy_collab.kaggle as pk
        for k in list(os.environ):
            if k.startswith('KAGGLE_') or k in ('VERBOSE', 'VERBOSE_OUTPUT'): monkeypatch.delenv(k)
        monkeypatch.setenv('HOME', str(tmp_path/'home'))
        monkeypatch.delenv('XDG_CONFIG_HOME', raising=False)
        for k, v in standin_env(standin, tmp_path/'cfg').items(): monkeypatch.setenv(k, v)
        monkeypatch.setattr(pk, 'kaggle_timeout', 2.)
        monkeypatch.chdir(tmp_path)
        standin._faults.clear()
        standin.token = None
        return standin

    @pytest.fixture(scope='module')
    def built_wheel(tmp_path_factory):
        "paddy_collab's wheel, built once per test module (a build takes seconds)."
        import paddy_collab.datasets as pk
        return pk.build_wheel(tmp_path_factory.mktemp('wheel'))

    @pytest.fixture
    def fast_wheel(built_wheel, monkeypatch):
        "Make `build_wheel` copy the module's wheel instead of building it again."
        import shutil, paddy_collab.datasets as pk
        def copy(dest, root=None):
            Path(dest).mkdir(parents=True, exist_ok=True)
            return Path(shutil.copy2(built_wheel, dest))
        monkeypatch.setattr(pk, 'build_wheel', copy)


def dep_wheels(python=None):
    """A folder holding the wheels `wheel_files` carries (paddy_collab's dependencies Kaggle's image lacks) for Kaggle's Python
    (or `python`), for `find_links=`. Made once per machine and target with the real `wheel_files` from PyPI (a few small wheels),
    in a folder named after the target, `kaggle_image` and settings.ini; `None` when PyPI cannot be reached."""
    import hashlib, tempfile, paddy_collab.datasets as pk
    t = pk.kaggle_target(python)
    key = hashlib.md5(repr((t, sorted(pk.kaggle_image.items()), (pk.project_root()/'settings.ini').read_text())).encode()).hexdigest()[:8]
    d = Path(tempfile.gettempdir())/f"paddy_collab-dep-wheels-py{t['python']}-{key}"
    if (d/'wheels.json').is_file(): return d
    tmp = Path(tempfile.mkdtemp(prefix='.dep-wheels.', dir=d.parent))
    try: pk.wheel_files(tmp, python=t['python'])
    except pk.KaggleError: return None
    for w in tmp.glob('paddy_collab-*.whl'): w.unlink()  # the package itself is built fresh each time
    try: os.replace(tmp, d)
    except OSError: pass  # another process made it meanwhile
    return d

if pytest is not None:
    @pytest.fixture(scope='session')
    def find_links():
        "The dependency wheels (`dep_wheels`); the test is skipped when PyPI cannot be reached to get them once."
        d = dep_wheels()
        if d is None: pytest.skip('PyPI unreachable: cannot fetch the dependency wheels once')
        return d
