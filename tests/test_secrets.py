"""The DevGrid key: one line, read once, and in no output, log or file in any form."""

from __future__ import annotations

import base64
import html
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from click.testing import CliRunner, Result
from helpers import WriteFile, source_block
from receivers import KEY

from backfill.cli import main
from backfill.errors import EXIT_AUTH, EXIT_INCOMPLETE, EXIT_USAGE, ConfigError
from backfill.secrets import REDACTED, api_key, redact

HEADER = "id,updated_at,conclusion,environment,head_sha\n"
ROWS = "".join(f"{i},2025-01-01T{i:02d}:00:00Z,success,production,sha{i}\n" for i in range(1, 4))


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    result = CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)
    assert "Traceback" not in result.output
    return result


def config(write: WriteFile, devgrid: str = "") -> Path:
    write("runs.csv", HEADER + ROWS)
    return write("backfill.toml", f"[devgrid]\nmax_attempts = 1\n{devgrid}\n" + source_block("runs", "runs.csv"))


def written_bytes(folder: Path) -> list[tuple[Path, bytes]]:
    return [(file, file.read_bytes()) for file in folder.rglob("*") if file.is_file()]


# --- a key is one line --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        f"{KEY}\n# rotated 2026-11-30\n",
        f"{KEY}\r\n# rotated\r\n",
        f"# the DevGrid key\n{KEY}\n",
        f"{KEY}\nsecond-{KEY}",
        f"{KEY[:6]}\t{KEY[6:]}",
        f"{KEY[:6]}\x00{KEY[6:]}",
        f"{KEY[:6]}\x7f{KEY[6:]}",
        f"{KEY[:6]}\x1b[0m{KEY[6:]}",
        f"{KEY[:6]}\u2028{KEY[6:]}",
    ],
    ids=["comment", "crlf", "comment-first", "two-keys", "tab", "nul", "del", "escape", "line-separator"],
)
def test_a_key_file_with_more_than_one_line_is_refused_without_showing_the_key(
    write: WriteFile, tmp_path: Path, echoing: EchoingServer, content: str
) -> None:
    key_file = write("devgrid.key", content)
    path = config(write, 'api_key_file = "devgrid.key"')
    result = cli("run", "-c", str(path), "--url", echoing.url, "--json")
    assert result.exit_code == EXIT_USAGE, result.output
    # --json still gets its document: the error, as the one line on stderr says it.
    error = json.loads(result.stdout)["error"]
    assert error["exit_code"] == EXIT_USAGE and f"error: {error['message']}" == result.stderr.strip()
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: {key_file}: ")
    assert "one line" in line
    for part in (KEY, KEY[:6], KEY[6:], "rotated"):
        assert part not in result.output
    assert echoing.requests == 0
    assert not (tmp_path / ".backfill").exists(), "refused before the state file is created"


@pytest.mark.parametrize(
    "value",
    [f"{KEY}\n", f"{KEY}\nsecond", f"{KEY[:6]}\r{KEY[6:]}", f"{KEY[:6]}\x00{KEY[6:]}", f"{KEY[:6]}\x85{KEY[6:]}"],
    ids=["trailing-newline-is-stripped", "two-lines", "cr", "nul", "next-line"],
)
def test_a_key_variable_with_a_control_character_is_refused(value: str) -> None:
    environ = {"DEVGRID_API_KEY": value}
    if value.strip() == KEY:
        assert api_key("DEVGRID_API_KEY", None, environ) == KEY
        return
    with pytest.raises(ConfigError) as raised:
        api_key("DEVGRID_API_KEY", None, environ)
    message = str(raised.value)
    assert message.startswith("$DEVGRID_API_KEY: ")
    assert "\n" not in message
    assert KEY[:6] not in message and KEY[6:] not in message


@pytest.mark.parametrize(
    ("content", "why"),
    [(f"{KEY[:6]} {KEY[6:]}", "a space"), (f"{KEY[:6]}é{KEY[6:]}", "printable ASCII"), ("  \n\t\n", "is empty")],
)
def test_a_key_that_is_not_one_word_of_ascii_is_refused(write: WriteFile, content: str, why: str) -> None:
    key_file = write("devgrid.key", content)
    with pytest.raises(ConfigError) as raised:
        api_key("DEVGRID_API_KEY", key_file, {})
    assert str(raised.value).startswith(f"{key_file}: ")
    assert why in str(raised.value)
    assert KEY[:6] not in str(raised.value)


def test_surrounding_whitespace_is_stripped(write: WriteFile) -> None:
    assert api_key("K", write("devgrid.key", f"\n  {KEY}  \r\n\n"), {}) == KEY
    assert api_key("K", None, {"K": f" {KEY}\n"}) == KEY
    assert api_key("K", write("bom.key", f"\ufeff{KEY}\n".encode()), {}) == KEY  # saved by an editor that adds one


# --- redact: every form a secret can be quoted in ----------------------------------------------

# Printable ASCII with the characters each escaping treats differently: quotes, a backslash, URL syntax.
SPECIAL = "dg_\"q\\u/+&%='x~7Z!<>"


def _forms(secret: str) -> dict[str, str]:
    data = secret.encode()
    percent_lower = re.sub("%[0-9A-F]{2}", lambda match: match.group().lower(), quote(secret, safe=""))
    return {
        "raw": secret,
        "repr": repr(secret),
        "repr-bytes": repr(data),
        "ascii": ascii(secret),
        "json": json.dumps(secret),
        "json-unicode": json.dumps(secret, ensure_ascii=False),
        "json-slashes": json.dumps(secret).replace("/", "\\/"),
        "json-of-repr": json.dumps(repr(secret)),
        "repr-of-json": repr(json.dumps(secret)),
        "json-of-json": json.dumps(json.dumps(secret)),
        "quote": quote(secret),
        "quote-all": quote(secret, safe=""),
        "quote-plus": quote_plus(secret),
        "quote-lowercase": percent_lower,
        "quote-of-json": quote(json.dumps(secret)),
        "json-of-quote": json.dumps(quote_plus(secret)),
        "base64": base64.b64encode(data).decode(),
        "base64-unpadded": base64.b64encode(data).decode().rstrip("="),
        "base64-urlsafe": base64.urlsafe_b64encode(data).decode(),
        "base64-basic-auth": base64.b64encode(b"user:" + data).decode(),
        "base64-inside": base64.b64encode(b"xy" + data + b"!").decode(),
        "base64-quoted": quote(base64.b64encode(data).decode(), safe=""),
        "html": f"&#x{ord(secret[0]):x};&#{ord(secret[1])};{html.escape(secret[2:])}",
    }


SECRETS = {
    "special": SPECIAL,
    "plain": KEY,
    "unicode": "clé-secrète-😀-ß",
    "with-space": "two words here",
    "with-newline": "line one\nline two",
}


@pytest.mark.parametrize("secret", SECRETS.values(), ids=SECRETS.keys())
@pytest.mark.parametrize("form", _forms(SPECIAL).keys())
def test_redact_removes_every_form_of_a_secret(secret: str, form: str) -> None:
    quoted = _forms(secret)[form]
    text = f"DevGrid answered 500: bad key {quoted}; twice: {quoted}."
    redacted = redact(text, [secret])
    assert redacted.count(REDACTED) == 2, redacted
    for shown in _forms(secret).values():
        assert shown not in redacted
    assert redacted.startswith("DevGrid answered 500: bad key ") and redacted.endswith(".")


def test_redact_takes_a_token_that_is_not_valid_unicode() -> None:
    token = "ghp_abc\udcff1234567"  # how Python reads an environment variable holding a stray byte
    assert redact(f"GitHub said: bad credentials {token!r}", [token]) == f"GitHub said: bad credentials '{REDACTED}'"


def test_redact_leaves_other_text_alone() -> None:
    text = "DevGrid answered 500 at https://api.example/events: test-key, key-4f9c, dGVzdC1r, %74est, 4f9c2a"
    assert redact(text, [KEY, "", "x" * 3]) == text.replace("x" * 3, REDACTED)
    assert redact(text, []) == text
    assert redact(f"{KEY} and ghp_token1234", [KEY, "ghp_token1234"]) == f"{REDACTED} and {REDACTED}"


def test_redact_removes_a_secret_cut_short_at_the_end() -> None:
    for secret in SECRETS.values():
        for form in (secret, json.dumps(secret)[1:-1], quote_plus(secret)):
            for length in range(4, len(form)):
                text = f"DevGrid answered 500: echo {form[:length]}"
                assert redact(text, [secret]) == f"DevGrid answered 500: echo {REDACTED}", (form, length)
    assert redact(f"answer: {KEY[:3]}", [KEY]) == f"answer: {KEY[:3]}"  # too short to tell from a word
    assert redact(f"{KEY[:8]} is where it starts", [KEY]) == f"{KEY[:8]} is where it starts"


# --- through a real run: DevGrid (or a proxy in front of it) echoing the key -------------------


def _echo_groups(limit: int = 280) -> list[list[str]]:
    """The forms, a few to an answer: DevGrid's message is quoted up to 300 characters."""
    groups: list[list[str]] = [[]]
    for name, quoted in _forms(SPECIAL).items():
        if len(" | ".join([*(_forms(SPECIAL)[form] for form in groups[-1]), quoted])) > limit:
            groups.append([])
        groups[-1].append(name)
    return groups


class EchoingServer:
    """Answers every POST with ``status`` and a text body quoting the x-api-key it received in ``forms``.

    With ``refusing``, a 201 instead, refusing every event with that quote as the reason.
    """

    def __init__(self) -> None:
        self.status = 500
        self.forms: list[str] = ["raw"]
        self.requests = 0
        self.padding = ""
        self.refusing = False
        echoing = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = self.rfile.read(int(self.headers.get("content-length", "0")))
                echoing.requests += 1
                forms = _forms(self.headers["x-api-key"])
                quote = f"echo: {echoing.padding}{' | '.join(forms[form] for form in echoing.forms)}"
                status, body, kind = echoing.status, quote.encode(), "text/plain; charset=utf-8"
                if echoing.refusing:
                    events = json.loads(request)["events"]
                    failures = [{"index": index, "reason": quote} for index in range(len(events))]
                    status, kind = 201, "application/json"
                    body = json.dumps({"success": [], "failures": failures}).encode()
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"


@pytest.fixture
def echoing() -> Iterator[EchoingServer]:
    server = EchoingServer()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.server.shutdown()
        server.server.server_close()
        thread.join(timeout=10)


@pytest.mark.parametrize("status", [400, 401, 500])
@pytest.mark.parametrize("forms", _echo_groups(), ids="+".join)
def test_a_key_echoed_back_in_any_form_is_in_no_output_and_no_file(
    write: WriteFile, tmp_path: Path, echoing: EchoingServer, status: int, forms: list[str]
) -> None:
    echoing.status, echoing.forms = status, forms
    path = config(write)
    env = {"DEVGRID_API_KEY": SPECIAL}
    # A 400 refuses events, not the key: the second run must offer them again to be refused again.
    runs = [
        cli("run", "-c", str(path), "--url", echoing.url, *extra, env=env)
        for extra in (["--json"], ["--retry-rejected"])
    ]
    assert all(result.exit_code == (EXIT_AUTH if status == 401 else EXIT_INCOMPLETE) for result in runs)
    results = [*runs, cli("status", "-c", str(path), "--json", env=env)]
    assert results[0].stdout.count(REDACTED) >= len(forms), "DevGrid's answer is quoted, redacted"
    everything = _forms(SPECIAL).values()
    for result in results:
        for quoted in everything:
            assert quoted not in result.output
    files = written_bytes(tmp_path)
    assert any(file.name == "state.db" for file, _ in files)
    for file, data in files:
        for quoted in everything:
            assert quoted.encode() not in data, (file, quoted)


@pytest.mark.parametrize("forms", _echo_groups(), ids="+".join)
def test_a_key_echoed_back_as_the_reason_devgrid_refused_an_event_is_in_no_output_and_no_file(
    write: WriteFile, tmp_path: Path, echoing: EchoingServer, forms: list[str]
) -> None:
    """The reasons inside a 201 go to the state file, the summary, status and --retry-rejected's run."""
    echoing.refusing, echoing.forms = True, forms
    path = config(write)
    env = {"DEVGRID_API_KEY": SPECIAL}
    runs = [
        cli("run", "-c", str(path), "--url", echoing.url, *extra, env=env)
        for extra in (["--json"], ["--retry-rejected"])
    ]
    assert all(result.exit_code == EXIT_INCOMPLETE for result in runs)
    results = [*runs, cli("status", "-c", str(path), "--json", env=env)]
    refused = json.loads(results[-1].stdout)["destinations"][0]["refused_events"]
    assert refused and all(event["message"].count(REDACTED) == len(forms) for event in refused)
    everything = _forms(SPECIAL).values()
    for result in results:
        for quoted in everything:
            assert quoted not in result.output
    for file, data in written_bytes(tmp_path):
        for quoted in everything:
            assert quoted.encode() not in data, (file, quoted)


@pytest.mark.parametrize("cut", [4, 10, len(SPECIAL) - 1])
def test_a_key_cut_short_by_the_length_limit_is_not_shown(
    write: WriteFile, tmp_path: Path, echoing: EchoingServer, cut: int
) -> None:
    """DevGrid's message is quoted up to 300 characters; the key may straddle the cut."""
    echoing.status, echoing.forms = 401, ["raw"]
    echoing.padding = "x" * (300 - len("echo: ") - cut)
    result = cli("run", "-c", str(config(write)), "--url", echoing.url, "--json", env={"DEVGRID_API_KEY": SPECIAL})
    assert result.exit_code == EXIT_AUTH
    stopped = json.loads(result.stdout)["delivery"]["stopped"]
    assert f"x{REDACTED})" in stopped
    for file, data in [(Path("stdout"), result.stdout.encode()), *written_bytes(tmp_path)]:
        assert SPECIAL[:cut].encode() not in data, file
