"""A GCS API server on this machine, reached by TensorFlow's own `gs://` filesystem and by
Beam's GCS IO exactly as they reach Google: https://www.googleapis.com and friends.

TensorFlow's GCS client has fixed endpoints and no variable to move them, so the server cannot
simply listen on a free port. Instead a command runs inside a private mount + network namespace
(`unshare --mount --net`, which needs root): there a hosts file bind-mounted over /etc/hosts maps
Google's API host names to 127.0.0.1, the loopback device is brought up, and
`gcp-storage-emulator` serves TLS on 127.0.0.1:443 with a throw-away certificate that the
clients are told to trust. Nothing can leave the machine (the namespace has no other network
device) and the machine's own /etc/hosts is untouched.

    python tests/gcs_emulator.py -- COMMAND ARGS...     # (under unshare: see `run_in_gcs`)

runs COMMAND with the bucket `BUCKET` created and the environment (`ENV_BUCKET`, CA bundle,
credentials, short retries) set, and exits with COMMAND's status. Tests call `run_in_gcs` or
`run_pytest_in_gcs` from the host side and assert on the result; `skip_reason()` says why the
namespace cannot be made (not root, no `unshare`), so callers skip with that reason.

The emulator is fixed in this process for what TensorFlow sends (see `patch_emulator`); the
facts behind each fix are in ../shared/GCS_EMULATOR.md.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.request
from functools import lru_cache, partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUCKET = "finetower-test"
PROJECT = "finetower-test-project"
ENV_BUCKET = "FINETOWER_GCS_TEST_BUCKET"  # set inside the namespace only
API_HOSTS = (
    "www.googleapis.com",
    "storage.googleapis.com",
    "oauth2.googleapis.com",
    "metadata.google.internal",
)
TOKEN = {"access_token": "emulated-token", "expires_in": 3600, "token_type": "Bearer"}


# -- the host side --------------------------------------------------------------------------


@lru_cache(maxsize=1)
def skip_reason() -> str | None:
    """None where a private mount + network namespace can be made here, else why not."""
    if shutil.which("unshare") is None:
        return "`unshare` (util-linux) is not installed"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed (the namespace's loopback)"
    if shutil.which("openssl") is None:
        return "`openssl` is not installed (the server's TLS certificate)"
    if os.geteuid() != 0:
        return "a private mount + network namespace needs root (unshare --mount --net)"
    try:
        import gcp_storage_emulator  # noqa: F401
    except ImportError:
        return "gcp-storage-emulator is not installed (requirements.txt)"
    probe = subprocess.run(
        ["unshare", "--mount", "--net", "true"], capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        return f"unshare --mount --net failed here: {probe.stderr.strip()}"
    return None


def run_in_gcs(
    argv: list[str], *, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`argv` run in the repository root inside the namespace, beside the GCS server."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    full_env.pop("STORAGE_EMULATOR_HOST", None)  # the clients reach the real host names
    return subprocess.run(
        ["unshare", "--mount", "--net", sys.executable, str(Path(__file__)), "--", *argv],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_pytest_in_gcs(*node_ids: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """pytest on `node_ids` (files under tests/gcs_inside/, which pytest never collects on its
    own) inside the namespace."""
    argv = [sys.executable, "-m", "pytest", "-q", "-ra", "--tb=short", "-p", "no:cacheprovider"]
    argv += list(node_ids)
    return run_in_gcs(argv, timeout=timeout)


# -- inside the namespace -------------------------------------------------------------------


def patch_emulator() -> None:
    """Make gcp-storage-emulator (2026.7.19) answer what TensorFlow and google-auth send.
    Idempotent; changes the imported module in memory only."""
    from gcp_storage_emulator import server

    if getattr(server, "_finetower_patched", False):
        return
    original_read_data = server._read_data
    original_request_init = server.Request.__init__

    def read_raw_data(handler):
        # 1. TF's upload PUT sends both Transfer-Encoding: chunked and Content-Length; the
        # chunked framing is the body's (RFC 7230 3.3.3), so it wins
        if (handler.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            data = b""
            while True:
                size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    handler.rfile.readline()  # the blank line after the last chunk
                    return data
                data += handler.rfile.read(size)
                handler.rfile.readline()
        length = handler.headers.get("Content-Length")
        return handler.rfile.read(int(length)) if length else None

    def read_data(handler, query):
        data = original_read_data(handler, query)
        # 2. an empty media upload (TF's `dir/` markers) is an empty object, not "no body"
        if data is None and query.get("uploadType") in (["media"], ["resumable"]):
            content_type = handler.headers.get("Content-Type") or ""
            if not content_type.startswith("application/json"):
                return b""
        return data

    def request_init(self, handler, method):
        original_request_init(self, handler, method)
        # 3. the server is behind TLS: resumable-upload Location URLs must say https
        self._base_url = self._base_url.replace("http://", "https://", 1)
        self._full_url = self._full_url.replace("http://", "https://", 1)

    def storage_layout(request, response, storage):
        # 4. TF 2.21 asks before renaming a directory; a flat bucket
        response.json(
            {
                "kind": "storage#storageLayout",
                "bucket": request.params["bucket_name"],
                "location": "US",
                "locationType": "multi-region",
                "hierarchicalNamespace": {"enabled": False},
            }
        )

    def token(request, response, storage):
        # 5. OAuth: google-auth posts to /token, TensorFlow to /oauth2/v3 or v4/token
        request.data  # noqa: B018 (drain the body so the connection stays in step)
        response.json(TOKEN)

    server._read_raw_data = read_raw_data
    server._read_data = read_data
    server.Request.__init__ = request_init
    server.HANDLERS = (
        (r"^/token$", {server.POST: token}),
        (r"^/oauth2/v[34]/token$", {server.POST: token}),
        (
            rf"^{server.settings.API_ENDPOINT}/b/(?P<bucket_name>[-.\w]+)/storageLayout$",
            {server.GET: storage_layout},
        ),
        *server.HANDLERS,
    )
    server._finetower_patched = True


def _handler_class():
    from gcp_storage_emulator import server

    class Handler(server.RequestHandler):
        # 6. HTTP/1.1 so that `Expect: 100-continue` gets its 100 at once (HTTP/1.0 makes
        # curl wait ~1 s per upload); one request per connection keeps the single-threaded
        # server from blocking on an idle keep-alive connection
        protocol_version = "HTTP/1.1"

        def end_headers(self):
            self.send_header("Connection", "close")
            super().end_headers()

    return Handler


class TlsServer:
    """gcp-storage-emulator on https://127.0.0.1:443, objects in memory (its disk store keeps
    an object `a/` as a folder, so TF's directory markers `a/` and `a/b/` collide there)."""

    def __init__(self, certificate: Path, key: Path):
        from http import server as http_server

        from gcp_storage_emulator.storage import Storage

        patch_emulator()
        storage = Storage(use_memory_fs=True)
        self._httpd = http_server.HTTPServer(("127.0.0.1", 443), partial(_handler_class(), storage))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(certificate), str(key))
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> TlsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _isolate_network(workdir: Path) -> None:
    """Loopback up; Google's API host names resolve to it (in this mount namespace only)."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    hosts = workdir / "hosts"
    names = " ".join(API_HOSTS)
    hosts.write_text(f"127.0.0.1 localhost {names}\n::1 localhost\n")
    subprocess.run(["mount", "--bind", str(hosts), "/etc/hosts"], check=True)


def _certificate(workdir: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the API host names and 127.0.0.1."""
    cert, key = workdir / "ca.pem", workdir / "key.pem"
    names = ",".join(f"DNS:{host}" for host in API_HOSTS)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=www.googleapis.com"]
        + ["-addext", f"subjectAltName={names},IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    return cert, key


def client_environment(workdir: Path, certificate: Path) -> dict[str, str]:
    """What TF's and Beam's clients need: trust the certificate, any user credentials (the
    server answers the token routes), few and short retries (defaults retry ~195 s)."""
    credentials = workdir / "credentials.json"
    credentials.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "finetower-test",
                "client_secret": "finetower-test",
                "refresh_token": "finetower-test",
            }
        )
    )
    return {
        "CURL_CA_BUNDLE": str(certificate),
        "REQUESTS_CA_BUNDLE": str(certificate),
        "SSL_CERT_FILE": str(certificate),
        "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "GCS_RETRY_CONFIG_MAX_RETRIES": "2",
        "GCS_RETRY_CONFIG_INIT_DELAY_TIME_US": "100000",
        ENV_BUCKET: BUCKET,
    }


def _create_bucket(certificate: Path, name: str) -> None:
    """Through the API, as a client would: also proves TLS and name resolution work."""
    request = urllib.request.Request(
        f"https://www.googleapis.com/storage/v1/b?project={PROJECT}",
        data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    context = ssl.create_default_context(cafile=str(certificate))
    with urllib.request.urlopen(request, context=context, timeout=30) as answer:
        created = json.loads(answer.read())
    if created.get("name") != name:
        raise RuntimeError(f"bucket {name} not created: {created}")


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "--":
        raise SystemExit("usage: unshare --mount --net python tests/gcs_emulator.py -- CMD ...")
    command = argv[1:]
    # the emulator logs each string response and each 404 (TF probes for absent objects often)
    logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)
    workdir = Path(tempfile.mkdtemp(prefix="finetower-gcs-"))
    try:
        _isolate_network(workdir)
        certificate, key = _certificate(workdir)
        with TlsServer(certificate, key):
            _create_bucket(certificate, BUCKET)
            env = {**os.environ, **client_environment(workdir, certificate)}
            return subprocess.run(command, env=env).returncode
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
