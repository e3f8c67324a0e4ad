"""The DevGrid API key: read from the environment (or a file the user names), never written anywhere.

Every message that quotes text from outside (DevGrid's answers, exception
text) goes through :func:`redact` first.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import quote, quote_plus, urlsplit

from backfill.errors import ConfigError

REDACTED = "[redacted]"


def api_key(variable: str, key_file: Path | None, environ: Mapping[str, str]) -> str:
    """The key from ``key_file`` if one is named, else from the environment variable.

    A key is one word of printable ASCII (an HTTP header carries nothing else):
    surrounding whitespace is stripped, and anything else is refused, in a
    message that names where the key came from but never shows it.
    """
    if key_file is not None:
        try:
            key = key_file.read_text(encoding="utf-8-sig").strip()  # -sig: an editor's BOM is not the key
        except OSError as exc:
            raise ConfigError(f"{key_file}: cannot read the API key file ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{key_file}: the API key file is not UTF-8 text; it must hold the key alone") from None
        if not key:
            raise ConfigError(f"{key_file}: the API key file is empty")
        check_one_word(key, f"{key_file}: the API key file", "must hold the key alone, on one line, with no comment")
        return key
    key = environ.get(variable, "").strip()
    if not key:
        raise ConfigError(
            f"the DevGrid API key is not set: export {variable}=<your key> "
            "(the variable is named by [devgrid] api_key_env)"
        )
    check_one_word(key, f"${variable}: the API key", "must hold the key alone, on one line")
    return key


def optional_api_key(variable: str, key_file: Path | None, environ: Mapping[str, str]) -> str | None:
    """The key where one is given (a dry run needs it only to tell two accounts apart), else None."""
    if key_file is None and not environ.get(variable, "").strip():
        return None
    return api_key(variable, key_file, environ)


def check_one_word(key: str, where: str, what: str) -> None:
    """Refuse a key an HTTP header cannot carry as it is; say what is wrong, never what the key is."""
    for char in key:
        if char in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029":
            problem = f"holds a line break: it {what}"
        elif unicodedata.category(char).startswith("C"):
            problem = f"holds a control character: it {what}"
        elif char.isspace():
            problem = f"holds a space: a key is one word; it {what}"
        elif not (char.isascii() and char.isprintable()):
            problem = "holds a character that is not printable ASCII; check how the key was copied"
        else:
            continue
        raise ConfigError(f"{where} {problem}")


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``[redacted]``, in whatever form it was quoted.

    An error message can hold a secret as written, or as a ``repr()``, JSON,
    a URL or HTML escaped it (once or more), or base64-encoded alone or inside
    something longer (``Basic`` credentials): every one of these is found.
    So is the start of a secret that ends the text: a message cut to length.
    """
    wanted = tuple(sorted({secret for secret in secrets if secret}, key=len, reverse=True))
    if not wanted:
        return text
    text = _pattern(wanted).sub(REDACTED, text)
    cut = max(
        (
            next((length for length in range(len(form) - 1, _MIN_TAIL - 1, -1) if text.endswith(form[:length])), 0)
            for form in _tail_forms(wanted)
        ),
        default=0,
    )
    return text[:-cut] + REDACTED if cut else text


_MIN_TAIL = 4  # the first characters of a secret, cut off at the end of a message


@functools.lru_cache(maxsize=16)
def _tail_forms(secrets: tuple[str, ...]) -> tuple[str, ...]:
    """The secrets as written and as the common escapes write them, for spotting one cut short."""
    forms = set()
    for secret in secrets:
        data = secret.encode("utf-8", "surrogatepass")  # a variable may hold bytes that are not UTF-8
        forms |= {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
        forms |= {quote(data, safe=""), quote(data), quote_plus(data)}
    return tuple(sorted(forms, key=len, reverse=True))


@functools.lru_cache(maxsize=16)
def _pattern(secrets: tuple[str, ...]) -> re.Pattern[str]:
    spellings = [*secrets, *(core for secret in secrets for core in _base64_cores(secret))]
    return re.compile("|".join(_spelled(text) for text in sorted(set(spellings), key=len, reverse=True)))


def _spelled(text: str) -> str:
    """A regex for ``text`` with each character as written, escaped or percent-encoded."""
    return "".join(_character(char) for char in text)


# repr() and JSON escape with one backslash; text escaped again has more, a URL encodes them.
_BACKSLASH = r"(?:\\|%5[cC])"
_BACKSLASHES = _BACKSLASH + "+"
_SHORT_ESCAPES = {"\n": "n", "\r": "r", "\t": "t", "\b": "b", "\f": "f", "\v": "v", "\a": "a", "\0": "0"}
_HTML_NAMES = {"&": "amp", "<": "lt", ">": "gt", '"': "quot", "'": "apos"}


def _character(char: str) -> str:
    code = ord(char)
    utf8 = char.encode("utf-8", "surrogatepass")
    # Forms that may follow backslashes (repr() and JSON put one before \\ " ' and /).
    spelled = [
        re.escape(char),
        "".join(f"%{_hex(byte, 2)}" for byte in utf8),  # a URL, in either case
        f"&#0*{code};",  # HTML
        f"&#[xX]0*{_hex(code, 1)};",
    ]
    if char == " ":
        spelled.append(r"\+")  # quote_plus(), a form body
    if char in _HTML_NAMES:
        spelled.append(f"&{_HTML_NAMES[char]};")
    # Escape sequences, which start with a backslash.
    escapes = [_BACKSLASHES.join(f"x{_hex(byte, 2)}" for byte in utf8)]  # repr() of bytes
    if 0x80 <= code < 0x100:
        escapes.append(f"x{_hex(code, 2)}")  # repr() of text
    if code < 0x10000:
        escapes.append(f"u{_hex(code, 4)}")  # JSON, and repr() of text
    else:
        high, low = divmod(code - 0x10000, 0x400)
        escapes.append(f"u{_hex(0xD800 + high, 4)}{_BACKSLASHES}u{_hex(0xDC00 + low, 4)}")  # JSON
        escapes.append(f"U{_hex(code, 8)}")  # repr() of text
    if char in _SHORT_ESCAPES:
        escapes.append(_SHORT_ESCAPES[char])
    return f"(?:{_BACKSLASH}*(?:{'|'.join(spelled)})|{_BACKSLASHES}(?:{'|'.join(escapes)}))"


def _hex(value: int, digits: int) -> str:
    """Hex digits as a regex matching either case: escapes are written both ways."""
    return "".join(f"[{digit}{digit.upper()}]" if digit.isalpha() else digit for digit in f"{value:0{digits}x}")


_MIN_BASE64_CORE = 8  # shorter runs of base64 would match ordinary words


def _base64_cores(secret: str) -> list[str]:
    """The base64 characters that encode ``secret`` alone, whatever bytes come before or after it.

    Base64 writes 3 bytes as 4 characters, so the same secret encodes three
    ways depending on where it starts in the encoded bytes; the characters its
    neighbours also feed into differ, the ones between do not. The encoding
    of the secret alone, padded or not, is listed too, so that it goes whole.
    """
    data = secret.encode("utf-8", "surrogatepass")
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + data).decode("ascii")
        core = encoded[-(-8 * offset // 6) : 8 * (offset + len(data)) // 6]
        if len(core) >= _MIN_BASE64_CORE:
            cores.append(core)
    if cores:
        alone = base64.b64encode(data).decode("ascii")
        cores += [alone, alone.rstrip("=")]
    return list(dict.fromkeys(variant for core in cores for variant in (core, core.translate(_URLSAFE))))


_URLSAFE = str.maketrans("+/", "-_")


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_http: bool) -> None:
    """Refuse to send a key in clear text to anything but this machine, unless told to."""
    scheme = urlsplit(url).scheme
    if scheme == "https" or (scheme == "http" and (allow_http or is_loopback(url))):
        return
    if scheme == "http":
        raise ConfigError(
            f"{url} is plain http on another machine: the API key would cross the network in clear text; "
            "use https, or pass --allow-http if you really mean it"
        )
    raise ConfigError(f"{url} is not an http(s) URL")
