"""git.clone: URL and ref checks (table-driven), git's error sentences, and real clones over https.

The success path clones from a real smart-HTTP git server started here: `git http-backend` behind a small
threaded TLS server with a throw-away CA made by `cryptography`, trusted through the agent's
`git_extra_ca_bundle` setting (or `GIT_SSL_CAINFO` in its environment) — TLS verification stays on.
Clones in the bubblewrap jail cannot reach the host's loopback (its network is user-mode, see `netns`), so
the server they use listens on this machine's own non-loopback address (`host_address`).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from codegen_mcp.api.errors import InvalidArgument
from codegen_mcp.api.tools import TaskView
from codegen_mcp.sandbox_agent.app import create_app
from codegen_mcp.sandbox_agent.gitcheck import (
    check_clone_url,
    check_ref,
    clone_progress,
    default_clone_dest,
    git_error_sentence,
)

from .conftest import AUTH, AgentClient, MakeClient, make_settings

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed on this machine")


# --- a local https git server ------------------------------------------------------------------------


@dataclass(frozen=True)
class GitServer:
    base_url: str  # https://<host>:<port>
    ca_file: Path  # the CA that signed the server's certificate (PEM)
    repo_url: str  # a repository with a `main` and a `feature` branch and a tag `v1`
    head: str  # main's commit


def host_address() -> str | None:
    """This machine's IPv4 address on its route out, or None when it has none but the loopback.

    A UDP socket `connect`ed to a public address only picks its source address: no packet is sent.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("9.9.9.9", 53))  # any public address: only the route to it matters
            address = str(probe.getsockname()[0])
    except OSError:
        return None
    return None if ipaddress.ip_address(address).is_loopback else address


def _certificates(folder: Path, host: str) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for `host`, 127.0.0.1 and localhost signed by it: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "codegen-mcp test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [*(x509.IPAddress(ipaddress.ip_address(ip)) for ip in {host, "127.0.0.1"}), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    for path in paths[:2]:
        path.chmod(0o644)  # the CA is read by git as the sandbox uid
    return paths


def _git(*args: str, cwd: Path) -> str:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(cwd),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "Test",
        "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "Test",
        "GIT_COMMITTER_EMAIL": "test@example.com",
    }
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def _make_repository(root: Path) -> str:
    work = root / "work"
    work.mkdir()
    _git("init", "-q", "-b", "main", cwd=work)
    (work / "README.md").write_text("# demo\n")
    (work / "pkg").mkdir()
    (work / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    _git("add", "-A", cwd=work)
    _git("commit", "-q", "-m", "first", cwd=work)
    (work / "pkg" / "__init__.py").write_text("VALUE = 2\n")
    _git("commit", "-q", "-am", "second", cwd=work)
    _git("tag", "v1", cwd=work)
    _git("checkout", "-q", "-b", "feature", cwd=work)
    (work / "FEATURE").write_text("yes\n")
    _git("add", "-A", cwd=work)
    _git("commit", "-q", "-m", "feature", cwd=work)
    _git("checkout", "-q", "main", cwd=work)
    head = _git("rev-parse", "HEAD", cwd=work)
    served = root / "served"
    served.mkdir()
    _git("clone", "-q", "--bare", str(work), str(served / "demo.git"), cwd=root)
    return head


class _GitHandler(BaseHTTPRequestHandler):
    """Smart HTTP: every request goes to `git http-backend` as CGI."""

    project_root = ""
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _cgi(self) -> None:
        path, _, query = self.path.partition("?")
        body = self._body()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": self.project_root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "REMOTE_ADDR": self.client_address[0],
        }
        done = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60, check=False
        )
        head, sep, payload = done.stdout.partition(b"\r\n\r\n")
        if not sep:
            head, _, payload = done.stdout.partition(b"\n\n")
        status, headers = 200, []
        for line in head.splitlines():
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@contextlib.contextmanager
def serve_git_over_https(folder: Path, host: str = "127.0.0.1") -> Iterator[GitServer]:
    """A throw-away repository served over https on `host` (an IPv4 address of this machine) until the block ends."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)
    ca_file, cert, key = _certificates(folder, host)
    head = _make_repository(folder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    handler = type("Handler", (_GitHandler,), {"project_root": str(folder / "served")})
    server = ThreadingHTTPServer((host, 0), handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"https://{host}:{server.server_address[1]}"
    try:
        yield GitServer(base_url=base, ca_file=ca_file, repo_url=f"{base}/demo.git", head=head)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def git_server(base_dir: Path) -> Iterator[GitServer]:
    """The server on 127.0.0.1, for agents without the jail (`sandbox=none`): they share the host's network."""
    with serve_git_over_https(base_dir / f"git-server-{os.getpid()}") as server:
        yield server


NO_HOST_ADDRESS = (
    "this machine has no IPv4 address but the loopback, and code in the bubblewrap jail with the network "
    "(slirp4netns, --disable-host-loopback) cannot reach a test git server on the host's loopback"
)


def jailed_git_host() -> str:
    """The address a git server must listen on for clones in the jail, which cannot reach the host's loopback."""
    host = host_address()
    if host is None:
        pytest.skip(reason=NO_HOST_ADDRESS)
    return host


@pytest.fixture(scope="module")
def jailed_git_server(base_dir: Path) -> Iterator[GitServer]:
    """The server on this machine's own non-loopback address, which clones in the jail can reach."""
    with serve_git_over_https(base_dir / f"jailed-git-server-{os.getpid()}", jailed_git_host()) as server:
        yield server


# --- pure checks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://github.com/pallets/click.git", "https://github.com/pallets/click.git"),
        ("HTTPS://GitHub.com/pallets/click", "https://github.com/pallets/click"),
        ("https://127.0.0.1:8443/demo.git", "https://127.0.0.1:8443/demo.git"),
        ("https://[::1]/demo.git", "https://[::1]/demo.git"),
        ("https://git.example.com/group/sub/repo", "https://git.example.com/group/sub/repo"),
    ],
)
def test_accepted_clone_urls(url: str, expected: str) -> None:
    assert check_clone_url(url) == expected


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://github.com/a/b.git", "plain http"),
        ("ssh://git@github.com/a/b.git", "ssh"),
        ("git+ssh://github.com/a/b.git", "ssh"),
        ("git@github.com:a/b.git", "ssh"),
        ("github.com:a/b.git", "ssh"),
        ("git://github.com/a/b.git", "git:// protocol"),
        ("file:///etc", "file://"),
        ("FILE:///work/repo", "file://"),
        ("/srv/repos/a.git", "local paths"),
        ("./repo", "local paths"),
        ("../repo", "local paths"),
        ("~/repo", "local paths"),
        ("repo", "local paths"),
        ("ext::sh -c touch% /tmp/pwned", "spaces"),
        ("ext::sh", "remote helpers"),
        ("fd::17", "remote helpers"),
        ("https://user:secret@github.com/a/b.git", "credentials"),
        ("https://ghp_token@github.com/a/b.git", "credentials"),
        ("https://user%40x@github.com/a/b.git", "credentials"),
        ("https://github.com/a/b.git?access_token=x", "query"),
        ("https://github.com/a/b.git#main", "fragment"),
        ("https:///a/b.git", "host"),
        ("https://-oProxyCommand=x/a", "host name"),
        ("https://github.com:99999/a/b", "port"),
        ("https://github.com", "repository path"),
        ("https://github.com/a b", "spaces"),
        ("https://github.com/a\nb", "control characters"),
    ],
)
def test_refused_clone_urls(url: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_clone_url(url)
    assert reason in info.value.message
    assert info.value.message.startswith("`url`")


@pytest.mark.parametrize(
    ("url", "dest"),
    [
        ("https://github.com/pallets/click.git", "click"),
        ("https://github.com/pallets/click/", "click"),
        ("https://host/a/weird name!.git", "weird_name_"),
        ("https://host/a/.git", "repo"),
    ],
)
def test_default_destination(url: str, dest: str) -> None:
    assert default_clone_dest(url) == dest


@pytest.mark.parametrize("ref", ["main", "release/1.2", "v1.0.0", "feature_x-y"])
def test_valid_refs(ref: str) -> None:
    assert check_ref(ref) == ref


@pytest.mark.parametrize(
    "ref",
    ["-b", "--upload-pack=x", "a..b", "a b", "a~1", "a^", "a:b", "x.lock", "a/", "/a", ".a", "@", "a@{1}", "a\\b"],
)
def test_invalid_refs(ref: str) -> None:
    with pytest.raises(InvalidArgument):
        check_ref(ref)


@pytest.mark.parametrize(
    ("stderr", "expected"),
    [
        ("fatal: unable to access 'https://x/': Could not resolve host: x", "could not be resolved"),
        ("fatal: unable to access 'https://x/': Failed to connect to x port 443", "could not be reached"),
        ("fatal: unable to access 'https://x/': server certificate verification failed. CAfile: none", "TLS"),
        ("fatal: could not read Username for 'https://x': terminal prompts disabled", "needs credentials"),
        (
            "warning: Could not find remote branch nope to clone.\n"
            "fatal: Remote branch nope not found in upstream origin",
            "no branch or tag `nope`",
        ),
        ("remote: Not Found\nfatal: repository 'https://x/y/' not found", "no repository was found"),
        ("fatal: something else entirely", "git clone failed: something else entirely"),
    ],
)
def test_git_error_sentences(stderr: str, expected: str) -> None:
    sentence = git_error_sentence(stderr, "git clone")
    assert expected in sentence and "\n" not in sentence


def test_clone_progress_from_git_output() -> None:
    text = "Receiving objects:  12% (1/8)\rReceiving objects:  50% (4/8)\rResolving deltas:  33% (1/3)"
    assert clone_progress(text) == "git clone: resolving deltas 33%"
    assert clone_progress("Cloning into 'x'...") is None


# --- against a real agent ----------------------------------------------------------------------------


async def clone(client: AgentClient, **body: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/v1/git/clone", json={"wait_s": 120, **body})
    return resp.status, await resp.json()


async def test_clone_is_refused_when_egress_is_off(make_client: MakeClient) -> None:
    client = await make_client(network=False)
    status, data = await clone(client, url="https://github.com/pallets/click.git")
    assert status == 403 and data["error"]["code"] == "network_disabled"
    assert "no network egress" in data["error"]["message"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"url": "file:///etc"}, "invalid_argument"),
        ({"url": "git@github.com:a/b.git"}, "invalid_argument"),
        ({"url": "https://tok@github.com/a/b"}, "invalid_argument"),
        ({"url": "https://github.com/a/b", "branch": "--upload-pack=touch"}, "invalid_argument"),
        ({"url": "https://github.com/a/b", "depth": 0}, "invalid_argument"),
        ({"url": "https://github.com/a/b", "dest": "../out"}, "path_outside_workspace"),
        ({"url": "https://github.com/a/b", "dest": ".codegen/x"}, "invalid_argument"),
        ({"url": "https://github.com/a/b", "dest": "."}, "invalid_argument"),
    ],
)
async def test_bad_clone_arguments(make_client: MakeClient, body: dict[str, Any], code: str) -> None:
    client = await make_client(network=True)
    status, data = await clone(client, **body)
    assert status in (400, 403) and data["error"]["code"] == code, data


async def test_clone_into_a_folder_that_is_not_empty_is_a_conflict(make_client: MakeClient) -> None:
    client = await make_client(network=True)
    await client.post("/v1/fs/write", json={"path": "taken/file.txt", "content": "x"})
    status, data = await clone(client, url="https://github.com/a/b.git", dest="taken")
    assert status == 409 and data["error"]["code"] == "conflict"


async def test_clone_over_https_in_both_sandbox_modes(
    make_client: MakeClient, sandbox_mode: str, request: pytest.FixtureRequest
) -> None:
    git_server: GitServer = request.getfixturevalue("jailed_git_server" if sandbox_mode == "bwrap" else "git_server")
    client = await make_client(sandbox=sandbox_mode, network=True, git_extra_ca_bundle=git_server.ca_file)
    status, data = await clone(client, url=git_server.repo_url)
    assert status == 200, data
    view = TaskView.model_validate(data)
    assert view.kind == "git.clone" and view.state == "succeeded", view
    assert view.clone is not None
    assert (view.clone.dest, view.clone.commit, view.clone.branch) == ("demo", git_server.head, "main")
    read = await (await client.post("/v1/fs/read", json={"path": "demo/pkg/__init__.py"})).json()
    assert read["content"] == "VALUE = 2\n"


async def test_clone_a_branch_shallow_into_a_chosen_folder(make_client: MakeClient, git_server: GitServer) -> None:
    client = await make_client(network=True, git_extra_ca_bundle=git_server.ca_file)
    status, data = await clone(client, url=git_server.repo_url, branch="feature", depth=1, dest="src/feat")
    assert status == 200, data
    view = TaskView.model_validate(data)
    assert view.clone is not None and view.clone.branch == "feature" and view.clone.dest == "src/feat"
    code = (
        "import subprocess\n"
        "argv = ['git', '-C', 'src/feat', 'rev-list', '--count', 'HEAD']\n"
        "out = subprocess.run(argv, capture_output=True, text=True)\n"
        "print(out.stdout.strip())"
    )
    run = await (await client.post("/v1/run/python", json={"code": code})).json()
    assert run["run"]["stdout"] == "1\n"  # depth 1
    tag = await clone(client, url=git_server.repo_url, branch="v1", dest="tagged")
    assert tag[0] == 200 and tag[1]["clone"]["branch"] is None and tag[1]["clone"]["commit"]


async def test_tls_is_verified_and_failures_are_one_sentence(make_client: MakeClient, git_server: GitServer) -> None:
    client = await make_client(network=True)  # the test CA is not trusted
    status, data = await clone(client, url=git_server.repo_url)
    view = TaskView.model_validate(data)
    assert status == 200 and view.state == "failed" and view.clone is not None
    assert view.error is not None and "TLS certificate could not be verified" in view.error
    trusted = await make_client(network=True, git_extra_ca_bundle=git_server.ca_file)
    missing = TaskView.model_validate((await clone(trusted, url=f"{git_server.base_url}/nope.git"))[1])
    assert missing.state == "failed" and "no repository was found" in (missing.error or "")
    branch = TaskView.model_validate((await clone(trusted, url=git_server.repo_url, branch="nope", dest="x"))[1])
    assert branch.state == "failed" and "no branch or tag `nope`" in (branch.error or "")


async def test_the_agents_git_ssl_cainfo_is_passed_to_git(
    aiohttp_client: Any, workspace: Path, shared_venv: Path, git_server: GitServer
) -> None:
    # How a local backend hands a CA to git: the agent's environment (never run code's).
    settings = make_settings(workspace, shared_venv, network=True)
    app = create_app(settings, environ={"PATH": os.environ["PATH"], "GIT_SSL_CAINFO": str(git_server.ca_file)})
    client = await aiohttp_client(app, headers=AUTH)
    status, data = await clone(client, url=git_server.repo_url)
    assert status == 200 and data["state"] == "succeeded", data
