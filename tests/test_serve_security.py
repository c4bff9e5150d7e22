"""`llm serve` safe to leave running: a real server process, tried as a web page and as another user would.

One `llm serve --model tiny` on 127.0.0.1 and a free port answers most tests (module-scoped); the
signal and descriptor tests start their own. Requests go through http.client or a raw socket, so
each test sets exactly the headers a browser or an attacker would. The registry's tests plant
files in a data directory of their own; the other-user cases need root (to chown to an unused
uid) and skip cleanly elsewhere.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from lookinside.core.model.spec import LoadSpec
from lookinside.serve import registry

PROMPT = "The capital of France is"
ALLOWED_PAGE = "http://allowed.example:3000"
OTHER_UID = 65534  # nobody: a user that is not us, for the files another user could have written


@dataclass
class Server:
    """A running `llm serve`: its process, port, data directory and the stderr it wrote so far."""

    process: subprocess.Popen
    port: int
    data: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


def start(data: Path, *args: str, env: dict[str, str] | None = None, limit_fds: int | None = None) -> Server:
    """`llm serve --model tiny --port 0 ARGS`, recording itself in `data`; returned once its record and /health are up."""
    environment = {**os.environ, "LOOKINSIDE_DATA_DIR": str(data), **(env or {})}
    environment.pop("LOOKINSIDE_NO_SERVER", None)
    environment.pop("LOOKINSIDE_SERVE_KEY", None)
    log = data.parent / f"{data.name}-server.log"

    def limit() -> None:
        if limit_fds is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit_fds, limit_fds))

    with open(log, "w") as err:
        process = subprocess.Popen([sys.executable, "-m", "lookinside", "serve", "--model", "tiny", "--dtype",
                                    "float32", "--port", "0", *args], env=environment, stdout=subprocess.DEVNULL,
                                   stderr=err, preexec_fn=limit)
    deadline = time.monotonic() + 300
    records = data / "servers"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"llm serve exited with {process.returncode}: {log.read_text()}")
        found = list(records.glob("*.json")) if records.is_dir() else []
        if found:
            port = int(json.loads(found[0].read_text())["url"].rsplit(":", 1)[1].split("/")[0])
            server = Server(process, port, data, log)
            if request(server, "GET", "/health")[0] == 200:
                return server
        time.sleep(0.1)
    process.kill()
    raise AssertionError("llm serve did not come up in 300 s")


def stop(server: Server, sig: int = signal.SIGTERM) -> int:
    """Signal the server and wait for its exit status."""
    if server.process.poll() is None:
        server.process.send_signal(sig)
    try:
        return server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.process.kill()
        return server.process.wait()


def request(server: Server, method: str, path: str, body: bytes | str | dict | None = None,
            headers: dict[str, str] | None = None, timeout: float = 120) -> tuple[int, dict, dict[str, str]]:
    """(status, JSON answer or {}, lower-cased headers) of one request with exactly these headers."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    if isinstance(body, dict):
        body = json.dumps(body)
        headers = {"Content-Type": "application/json", **(headers or {})}
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
    except ConnectionError:
        return 0, {}, {}
    finally:
        connection.close()
    try:
        answer = json.loads(data) if data else {}
    except ValueError:
        answer = {"raw": data.decode(errors="replace")}
    return response.status, answer, {k.lower(): v for k, v in response.getheaders()}


def one_line(answer: dict) -> str:
    message = answer["error"]["message"]
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("security") / "data"
    running = start(data, "--max-tokens", "64", "--read-timeout", "2", "--max-connections", "24",
                    env={"LOOKINSIDE_ORIGINS": ALLOWED_PAGE})
    yield running
    stop(running)


# ---- 1. browsers: Host, Origin, preflight, content type


@pytest.mark.parametrize("path", ["/v1/completions", "/lookinside/v1/views/next-token"])
def test_a_foreign_page_is_refused_before_its_body_is_read(server, path):
    body = json.dumps({"prompt": PROMPT, "max_tokens": 1})  # text/plain: what a page sends without a preflight
    status, answer, _ = request(server, "POST", path, body,
                                {"Content-Type": "text/plain", "Origin": "http://evil.example"})
    assert status == 403 and "http://evil.example" in one_line(answer)
    status, answer, _ = request(server, "POST", path, body, {"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in one_line(answer)


def test_a_rebound_host_is_refused_everywhere(server):
    for path in ("/health", "/lookinside/v1/info", "/v1/models"):
        status, answer, _ = request(server, "GET", path, headers={"Host": f"evil.example:{server.port}"})
        assert status == 403 and answer["error"]["type"] == "forbidden_host"
        assert "source" not in json.dumps(answer)
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", f"[::1]:{server.port}"):
        assert request(server, "GET", "/lookinside/v1/info", headers={"Host": host})[0] == 200


def test_preflight_is_answered_only_for_allowed_origins(server):
    asked = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    status, _, _ = request(server, "OPTIONS", "/v1/completions", headers={"Origin": "http://evil.example", **asked})
    assert status == 403
    for page in (f"http://127.0.0.1:{server.port}", f"http://localhost:{server.port}", ALLOWED_PAGE):
        status, _, headers = request(server, "OPTIONS", "/v1/completions", headers={"Origin": page, **asked})
        assert status == 204 and headers["access-control-allow-origin"] == page


def test_the_servers_own_page_and_allowed_origins_get_their_answer(server):
    for page in (f"http://127.0.0.1:{server.port}", ALLOWED_PAGE):
        status, answer, headers = request(server, "POST", "/v1/completions",
                                          {"prompt": PROMPT, "max_tokens": 1, "temperature": 0}, {"Origin": page})
        assert status == 200 and answer["choices"][0]["text"] == " Paris"
        assert headers["access-control-allow-origin"] == page


def test_curl_the_openai_client_and_llm_work_as_before(server):
    status, answer, _ = request(server, "POST", "/v1/completions", {"prompt": PROMPT, "max_tokens": 1})
    assert status == 200
    openai = pytest.importorskip("openai")
    out = openai.OpenAI(base_url=server.url, api_key="none", max_retries=0).completions.create(
        model="tiny", prompt=PROMPT, max_tokens=1, temperature=0)
    assert out.choices[0].text == " Paris"
    env = {**os.environ, "LOOKINSIDE_DATA_DIR": str(server.data)}
    env.pop("LOOKINSIDE_NO_SERVER", None)
    command = subprocess.run([sys.executable, "-m", "lookinside", "next-token", PROMPT, "--model", "tiny", "--dtype",
                              "float32", "-k", "1", "--json"], capture_output=True, text=True, env=env, timeout=300,
                             check=False)
    assert command.returncode == 0, command.stderr
    assert f"using the server at {server.url}" in command.stderr and "note:" not in command.stderr
    assert json.loads(command.stdout)["top"][0]["token"] == " Paris"


def test_the_door_on_every_address_same_origin_and_allowed_hosts(tiny):
    """Bound to 0.0.0.0 (with a key) any Host is let in and a page the server served (Origin = http://Host) too;
    --allow-host lets a proxy's name in on loopback; a preflight carries no key."""
    from starlette.testclient import TestClient

    from lookinside.serve.app import create_app
    from lookinside.serve.settings import ServeSettings

    spec = LoadSpec(model="tiny", device="cpu")
    wide = ServeSettings(spec=spec, host="0.0.0.0", api_key="k", port=8765)
    with TestClient(create_app(tiny, wide), base_url="http://10.0.0.5:8765") as client:
        keyed = {"Authorization": "Bearer k"}
        assert client.get("/lookinside/v1/info", headers=keyed).status_code == 200
        assert client.get("/lookinside/v1/info").status_code == 401
        assert client.get("/v1/models", headers={**keyed, "Origin": "http://10.0.0.5:8765"}).status_code == 200
        assert client.get("/v1/models", headers={**keyed, "Origin": "http://evil.example"}).status_code == 403
        preflight = {"Origin": "http://10.0.0.5:8765", "Access-Control-Request-Method": "POST"}
        assert client.options("/v1/completions", headers=preflight).status_code == 204
    proxied = ServeSettings(spec=spec, allow_hosts=("proxy.lan",), allow_origins=("*",))
    with TestClient(create_app(tiny, proxied), base_url="http://proxy.lan") as client:
        assert client.get("/health").status_code == 200
        assert client.get("/health", headers={"Origin": "http://anything.example"}).status_code == 200
        assert client.get("/health", headers={"Host": "other.lan"}).status_code == 403


def test_allowed_origins_are_checked_once_in_settings():
    from lookinside.core.errors import BadInput
    from lookinside.serve.settings import ServeSettings, origin

    assert origin(" HTTP://LocalHost:3000/ ") == "http://localhost:3000" and origin("*") == "*"
    for bad in ("localhost:3000", "ftp://x", "http://x/path", "http://user@x"):
        with pytest.raises(BadInput, match="scheme://host"):
            ServeSettings(allow_origins=(bad,))


# ---- 3. every route under the server's limits


@pytest.mark.parametrize("view, body", [
    ("compare", {"prompt": PROMPT, "samples": 16, "settings": {"max_new_tokens": 400}}),
    ("steer", {"prompt": PROMPT, "add": "love", "max_new_tokens": 200}),
])
def test_a_view_over_max_tokens_is_a_400_naming_the_limit(server, view, body):
    status, answer, _ = request(server, "POST", f"/lookinside/v1/views/{view}", body)
    assert status == 400 and "--max-tokens" in one_line(answer) and "64" in one_line(answer)


def busy(server: Server) -> bool:
    return request(server, "GET", "/lookinside/v1/info")[1]["queue"]["busy"]


def test_a_client_that_leaves_a_compare_stops_it_at_its_next_step(server):
    body = json.dumps({"prompt": PROMPT, "samples": 16, "settings": {"max_new_tokens": 64, "ignore_eos": True}})
    with socket.create_connection(("127.0.0.1", server.port)) as client:
        client.sendall(f"POST /lookinside/v1/views/compare HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
        deadline = time.monotonic() + 60
        while not busy(server) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert busy(server)
    left = time.monotonic()
    while busy(server) and time.monotonic() - left < 60:
        time.sleep(0.01)
    assert time.monotonic() - left < 2.0  # 17 runs x 64 tokens take far longer on this model


# ---- 4. no 500 on input


@pytest.mark.parametrize("label, path, body", [
    ("deep nesting", "/v1/completions", b'{"prompt":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("a lone surrogate", "/v1/completions", b'{"prompt":"\\ud800","max_tokens":1}'),
    ("invalid UTF-8", "/v1/completions", b'{"prompt":"\xff\xfe","max_tokens":1}'),
    ("NaN", "/v1/completions", b'{"prompt":"x","temperature":NaN}'),
    ("an overflowing float", "/v1/completions", b'{"prompt":"x","temperature":1e400}'),
    ("a 70-bit integer", "/v1/completions", b'{"prompt":"x","seed":1180591620717411303424}'),
    ("a huge top_k", "/lookinside/v1/views/next-token", b'{"prompt":"x","top_k":9223372036854775807}'),
    ("alpha 1e308", "/lookinside/v1/views/steer", b'{"prompt":"x","add":"love","alpha":1e308,"max_new_tokens":2}'),
    ("deep in a view", "/lookinside/v1/views/tokens", b'{"text":' + b"{\"a\":" * 5000 + b"1" + b"}" * 5000 + b"}"),
    ("a surrogate in a view", "/lookinside/v1/views/tokens", b'{"text":"\\udfff"}'),
])
def test_a_malformed_body_is_a_4xx_in_one_line(server, label, path, body):
    before = server.stderr()
    status, answer, _ = request(server, "POST", path, body, {"Content-Type": "application/json"})
    assert 400 <= status < 500, (label, status, answer)
    one_line(answer)
    assert "Traceback" not in server.stderr()[len(before):]


def test_extreme_values_in_every_field_of_every_view_are_never_a_500(server):
    from dataclasses import fields

    from lookinside.core.request import GenerationSettings
    from lookinside.core.sampling_params import SamplingParams
    from lookinside.views import VIEWS

    base = {"prompt": "hi", "text": "hi", "add": "love", "clean": "The capital of France",
            "corrupt": "The capital of Spain", "layer": 0}
    extremes = [2**63 - 1, -(2**63), 1e308, -1e308, 5e-324, -1, 0, "", [], {}, None, True]
    statuses: dict[int, int] = {}
    for name, view in VIEWS.items():
        names = {f.name for f in fields(view.request)}
        start_body = {k: v for k, v in base.items() if k in names}
        if "max_new_tokens" in names:
            start_body["max_new_tokens"] = 2
        nested = {"params": SamplingParams, "settings": GenerationSettings}
        paths = [(f.name,) for f in fields(view.request)]
        paths += [(outer, f.name) for outer, kind in nested.items() if outer in names for f in fields(kind)]
        for path in paths:
            for value in extremes:
                body = json.loads(json.dumps(start_body))
                target = body
                for key in path[:-1]:
                    target = target.setdefault(key, {})
                target[path[-1]] = value
                if path == ("settings", "max_new_tokens") or path[-1] == "samples":
                    body.setdefault("settings", {}).setdefault("max_new_tokens", 2)
                status, answer, _ = request(server, "POST", f"/lookinside/v1/views/{name}", body)
                statuses[status] = statuses.get(status, 0) + 1
                assert status < 500, (name, path, value, answer)
    assert statuses.get(400, 0) > 100, statuses


def test_an_unexpected_error_is_one_line_with_an_id(tiny):
    """A bug (here: a route that raises) is a 500 naming an id, logged in one line; the traceback only under --debug."""
    import logging

    from starlette.routing import Route
    from starlette.testclient import TestClient

    from lookinside.serve.app import create_app
    from lookinside.serve.settings import ServeSettings

    async def broken(request):
        raise ZeroDivisionError("a bug")

    routes = [Route("/broken", broken, methods=["GET"])]
    for debug in (False, True):
        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append  # type: ignore[method-assign]
        logging.getLogger("lookinside.serve").addHandler(handler)
        try:
            settings = ServeSettings(spec=LoadSpec(model="tiny", device="cpu"), debug=debug)
            with TestClient(create_app(tiny, settings, extra_routes=routes), raise_server_exceptions=False) as client:
                response = client.get("/broken")
        finally:
            logging.getLogger("lookinside.serve").removeHandler(handler)
        assert response.status_code == 500
        error_id = response.json()["error"]["message"].split()[2]
        assert len(records) == 1 and error_id in records[0].getMessage()
        assert (records[0].exc_info is not None) == debug


# ---- 5. connections


def half_sent(server: Server, count: int) -> list[socket.socket]:
    """`count` connections that send half a request's headers and then wait."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Le" % server.port)
        sockets.append(sock)
    return sockets


def closed_by_server(sock: socket.socket, within_s: float) -> bool:
    sock.settimeout(within_s)
    try:
        return sock.recv(1024) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def test_a_slow_client_is_closed_at_the_read_deadline(server):
    sock, = half_sent(server, 1)
    opened = time.monotonic()
    with sock:
        assert closed_by_server(sock, within_s=30)
    assert 1.5 < time.monotonic() - opened < 10  # --read-timeout 2
    body = json.dumps({"prompt": PROMPT, "max_tokens": 1}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as dribble:  # a body sent a byte a second
        dribble.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\n\r\n" % (server.port, len(body)))
        closed = False
        for byte in body:
            try:
                dribble.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            if closed_by_server(dribble, within_s=1.0):
                closed = True
                break
        assert closed


def test_health_answers_while_the_connection_cap_is_reached(server):
    before = server.stderr()
    held = half_sent(server, 60)  # --max-connections 24
    try:
        started = time.monotonic()
        status, answer, _ = request(server, "GET", "/health", timeout=10)
        assert status == 200 and answer == {"status": "ok"}
        assert time.monotonic() - started < 5
        assert sum(closed_by_server(s, 0.2) for s in held) >= 30  # the oldest half-sent ones were closed
    finally:
        for sock in held:
            sock.close()
    assert len(server.stderr()) - len(before) < 2000


def test_requests_that_are_not_http_do_not_fill_the_log(server):
    before = len(server.stderr())
    for _ in range(50):
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
            with contextlib.suppress(OSError):
                assert sock.recv(1024).startswith(b"HTTP/1.1 400")
    assert request(server, "GET", "/health")[0] == 200
    assert len(server.stderr()) - before < 200, server.stderr()[before:]


@pytest.mark.slow
def test_a_descriptor_limit_is_never_reached_and_nothing_floods_the_log(tmp_path):
    server = start(tmp_path / "data", "--read-timeout", "30", limit_fds=256)
    held: list[socket.socket] = []
    try:
        held = half_sent(server, 300)
        status, _, _ = request(server, "GET", "/health", timeout=10)
        assert status == 200
    finally:
        for sock in held:
            sock.close()
        code = stop(server)
    assert code == 0 and len(server.stderr()) < 2000 and "Traceback" not in server.stderr()


# ---- 3. signals cut any job within a second, end streams with an error and [DONE], remove the record, exit 0


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_cuts_every_job_ends_streams_and_exits_0(tmp_path, sig):
    server = start(tmp_path / "data")
    stream_lines: list[str] = []
    view_answer: list[tuple[int, dict]] = []

    def stream() -> None:
        body = json.dumps({"prompt": "Once", "max_tokens": 400, "ignore_eos": True, "stream": True})
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        connection.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        for raw in response:
            if raw.strip():
                stream_lines.append(raw.decode().strip())

    def compare() -> None:
        body = {"prompt": PROMPT, "samples": 16, "settings": {"max_new_tokens": 400, "ignore_eos": True}}
        status, answer, _ = request(server, "POST", "/lookinside/v1/views/compare", body, timeout=60)
        view_answer.append((status, answer))

    threads = [threading.Thread(target=stream), threading.Thread(target=compare)]
    threads[0].start()
    deadline = time.monotonic() + 60
    while len(stream_lines) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    threads[1].start()
    time.sleep(0.3)  # the compare waits in the queue behind the stream
    signalled = time.monotonic()
    code = stop(server, sig)
    took = time.monotonic() - signalled
    for thread in threads:
        thread.join(60)
    assert code == 0, server.stderr()
    assert took < 2.0, took  # jobs cut within a second (0.2 to 0.3 s measured), with room for a loaded machine
    assert stream_lines[-1] == "data: [DONE]" and "server_shutting_down" in stream_lines[-2], stream_lines[-3:]
    assert view_answer and view_answer[0][0] in (0, 503), view_answer
    assert not list((server.data / "servers").glob("*.json"))
    assert "Traceback" not in server.stderr() and "terminate called" not in server.stderr()


# ---- 2. discovery: records in a data directory of the test's own


@pytest.fixture
def records(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("LOOKINSIDE_NO_SERVER", raising=False)
    folder = tmp_path / "servers"
    folder.mkdir(mode=0o700)
    return folder


SPEC = LoadSpec(model="tiny", device="cpu", dtype="float32")


def record_json(url: str, pid: int | None = None, nonce: str = "ab" * 16, key: str | None = "the-key") -> dict:
    return {"url": url, "pid": pid or os.getpid(), "model": "tiny", "spec": registry.spec_identity(SPEC),
            "key": key, "nonce": nonce}


def plant(folder: Path, name: str, data: dict | str, mode: int = 0o600) -> Path:
    path = folder / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    path.chmod(mode)
    return path


class Listener:
    """A program that is not llm serve, listening on a port: it keeps every request's headers."""

    def __init__(self, reply: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}") -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.seen: list[bytes] = []
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    self.seen.append(conn.recv(65536))
                    conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()


def test_a_program_on_the_recorded_port_never_receives_the_key(records):
    listener = Listener()
    try:
        plant(records, f"{os.getpid()}.json", record_json(f"http://127.0.0.1:{listener.port}/v1"))
        record, notes = registry.find_server(SPEC)
        assert record is None and any("not the llm serve that wrote it" in note for note in notes)
        assert listener.seen and not any(b"the-key" in request for request in listener.seen)
    finally:
        listener.close()


def test_a_record_of_a_real_server_is_found_only_with_its_nonce(server, records):
    real = json.loads(next((server.data / "servers").glob("*.json")).read_text())
    served = LoadSpec(model="tiny", dtype="float32")  # as the server was started
    plant(records, f"{real['pid']}.json", {**real, "nonce": "cd" * 16})
    record, notes = registry.find_server(served)
    assert record is None and any("not the llm serve" in note for note in notes)
    plant(records, f"{real['pid']}.json", real)
    record, notes = registry.find_server(served)
    assert record is not None and record.url == server.url and not notes


@pytest.mark.parametrize("data, why", [
    (lambda: record_json("http://127.0.0.1:99999/v1"), "Port out of range"),
    (lambda: record_json("http://10.1.2.3:8765/v1"), "not http on a loopback"),
    (lambda: record_json("http://evil.example:8765/v1"), "not http on a loopback"),
    (lambda: record_json("http://local host:8765/v1"), "not"),
    (lambda: record_json("http://127.0.0.1:8765/v1", nonce=""), "no nonce"),
    (lambda: record_json("http://127.0.0.1:8765/v1", pid=1), "names pid 1"),
    (lambda: "{not json", "Expecting"),
    (lambda: json.dumps([1, 2]), "not a server record"),
])
def test_a_bad_record_is_removed_in_one_note(records, data, why):
    path = plant(records, f"{os.getpid()}.json", data())
    record, notes = registry.find_server(SPEC)
    assert record is None and len(notes) == 1 and why in notes[0] and "\n" not in notes[0]
    assert not path.exists()


def test_a_record_others_may_read_is_removed(records):
    path = plant(records, f"{os.getpid()}.json", record_json("http://127.0.0.1:8765/v1"), mode=0o644)
    assert "others may read it" in registry.find_server(SPEC)[1][0] and not path.exists()


def test_a_fifo_and_a_link_are_passed_over_without_hanging(records, tmp_path):
    os.mkfifo(records / "0.json")
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps(record_json("http://127.0.0.1:8765/v1")))
    target.chmod(0o600)
    (records / f"{os.getpid()}.json").symlink_to(target)
    started = time.monotonic()
    record, notes = registry.find_server(SPEC)
    assert record is None and time.monotonic() - started < 2
    assert len(notes) == 2 and any("not a regular file" in n for n in notes) and any("link" in n for n in notes)


def test_a_record_is_written_without_following_a_planted_link(records, tmp_path):
    bait = tmp_path / "bait"
    pid = os.getpid()
    (records / f"{pid}.tmp").symlink_to(bait)  # the old writer's fixed temporary name
    (records / f".{pid}.tmp").symlink_to(bait)
    (records / f"{pid}.json").symlink_to(bait)  # a link where the record goes is replaced, not followed
    path = registry.write_record(registry.ServerRecord("http://127.0.0.1:8765/v1", pid, "tiny", {}, "secret",
                                                       "ab" * 16))
    assert not bait.exists()
    assert stat.S_ISREG(path.lstat().st_mode) and path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["key"] == "secret"


def test_a_folder_others_can_write_is_not_used(records, tmp_path):
    listener = Listener()
    try:
        plant(records, f"{os.getpid()}.json", record_json(f"http://127.0.0.1:{listener.port}/v1"))
        records.chmod(0o777)
        record, notes = registry.find_server(SPEC)
        assert record is None and notes == [f"the server records in {records} are not used: others can write to it "
                                            "(mode 777); chmod 700 it"]
        assert not listener.seen  # not even asked who it is
        with pytest.raises(registry.RegistryError):
            registry.write_record(registry.ServerRecord("http://127.0.0.1:8765/v1", os.getpid(), "tiny", {}, None,
                                                        "ab" * 16))
    finally:
        records.chmod(0o700)
        listener.close()


def test_a_world_writable_data_dir_makes_llm_run_here(tmp_path):
    """The whole command: a record planted in a world-writable folder is not used, said in one line."""
    listener = Listener()
    try:
        folder = tmp_path / "servers"
        folder.mkdir()
        plant(folder, f"{os.getpid()}.json", record_json(f"http://127.0.0.1:{listener.port}/v1"))
        folder.chmod(0o777)
        env = {**os.environ, "LOOKINSIDE_DATA_DIR": str(tmp_path)}
        env.pop("LOOKINSIDE_NO_SERVER", None)
        out = subprocess.run([sys.executable, "-m", "lookinside", "next-token", PROMPT, "--model", "tiny", "-k", "1",
                              "--json"], capture_output=True, text=True, env=env, timeout=300, check=False)
        assert out.returncode == 0 and json.loads(out.stdout)["top"][0]["token"] == " Paris", out.stderr
        assert "are not used: others can write to it" in out.stderr and not listener.seen
    finally:
        listener.close()


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="making files another user owns needs root")


@needs_root
def test_a_record_another_user_wrote_is_ignored(records):
    listener = Listener()
    try:
        path = plant(records, f"{os.getpid()}.json", record_json(f"http://127.0.0.1:{listener.port}/v1"))
        os.chown(path, OTHER_UID, OTHER_UID)
        record, notes = registry.find_server(SPEC)
        assert record is None and notes == [f"ignored the server record {path}: it belongs to uid {OTHER_UID}, "
                                            "not to you"]
        assert path.exists() and not listener.seen
    finally:
        listener.close()


@needs_root
def test_a_folder_another_user_owns_is_not_used(records):
    os.chown(records, OTHER_UID, OTHER_UID)
    record, notes = registry.find_server(SPEC)
    assert record is None and notes == [f"the server records in {records} are not used: it belongs to uid "
                                        f"{OTHER_UID}, not to you"]


@needs_root
def test_another_user_planting_in_a_shared_folder_cannot_redirect_us(monkeypatch):
    """As the other user (a forked child with its uid), plant a record in a world-writable data dir: we ignore it."""
    import shutil
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="lookinside-shared-", dir="/tmp"))  # a folder the other user can reach
    shared.chmod(0o1777)
    pid = os.fork()
    if pid == 0:  # the other user
        try:
            os.setgid(OTHER_UID)
            os.setuid(OTHER_UID)
            folder = shared / "servers"
            folder.mkdir(mode=0o777)
            folder.chmod(0o777)
            plant(folder, f"{os.getppid()}.json", record_json("http://127.0.0.1:9/v1", pid=os.getppid()))
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    monkeypatch.setenv("LOOKINSIDE_DATA_DIR", str(shared))
    monkeypatch.delenv("LOOKINSIDE_NO_SERVER", raising=False)
    try:
        record, notes = registry.find_server(SPEC)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
    assert record is None and len(notes) == 1 and f"uid {OTHER_UID}" in notes[0]


# ---- 6. the CLI's last two tracebacks


def test_bytes_that_are_not_http_and_a_url_with_a_space_are_one_line_each(tmp_path):
    listener = Listener(reply=b"garbage, not HTTP\r\n\r\n")
    try:
        env = {**os.environ, "LOOKINSIDE_DATA_DIR": str(tmp_path)}
        cases = [(["--endpoint", f"http://127.0.0.1:{listener.port}/v1"], {}, "does not answer in HTTP"),
                 ([], {"LOOKINSIDE_ENDPOINT": "http://local host:8000/v1"}, "is not a valid URL")]
        for args, extra, said in cases:
            out = subprocess.run([sys.executable, "-m", "lookinside", "next-token", "hi", *args], capture_output=True,
                                 text=True, env={**env, **extra}, timeout=120, check=False)
            assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
            assert said in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    finally:
        listener.close()
