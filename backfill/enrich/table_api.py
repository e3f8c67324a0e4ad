"""Read a ServiceNow table directly: ``GET <instance>/api/now/table/<table>``, every page.

Credentials come from the environment: basic auth (``user_env`` and
``password_env``) or an OAuth bearer token (``token_env``); they are sent only
over https (or to this machine), and never appear in a message. Pages follow
the ``Link: <...>;rel="next"`` header, else ``sysparm_offset`` until a short
page. The answer is asked for with ``sysparm_display_value=all``, so that a
reference gives both its name and its sys_id; dates are read from their raw
value, which ServiceNow gives in UTC.

Like the forge sources: a 429 (or ``Retry-After``) waits up to
``max_rate_limit_wait`` and then stops saying when to run again; a 5xx, a
timeout or a dropped connection is tried again a few times; 401 and 403 stop
at once (retrying a refused credential cannot help).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx

from backfill.enrich.servicenow_export import Records, records_frame
from backfill.enrich.settings import EnrichBase
from backfill.errors import EnrichError
from backfill.extract.forge.common import rate_limit_wait
from backfill.secrets import is_loopback, redact

ATTEMPTS = 4
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


def read_table(
    config: EnrichBase,
    fields: Sequence[str],
    required: Sequence[str],
    *,
    date_fields: Sequence[str] = (),
    updated_since: datetime | None = None,
    environ: Mapping[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
    sleep: Callable[[float], None] = time.sleep,
    notice: Callable[[str], None] = lambda message: None,
) -> Records:
    """Every record of the entry's table (``table``) that ``query`` selects, as :class:`Records`.

    ``updated_since`` (the earliest deployment the run plans) narrows the query
    to records updated since then, less ``narrow_margin_days``.
    """
    assert config.instance is not None
    table = getattr(config, "table", "")
    url = f"{config.instance}/api/now/table/{table}"
    environ = os.environ if environ is None else environ
    auth, secrets = _auth(config, url, environ)
    query = config.query
    if updated_since is not None and config.narrow_query:
        # A record relevant to a deployment was last updated after it was planned, and so after this.
        since = (updated_since - timedelta(days=config.narrow_margin_days)).astimezone(UTC)
        clause = f"sys_updated_on>={since:%Y-%m-%d %H:%M:%S}"
        query = f"{query}^{clause}" if query else clause
    if "ORDERBY" not in query.upper():
        # A stable order, so that pages neither skip nor repeat records while the table changes.
        query = f"{query}^ORDERBYsys_id" if query else "ORDERBYsys_id"
    first: dict[str, str | int] = {
        "sysparm_query": query,
        "sysparm_fields": ",".join(dict.fromkeys(fields)),
        "sysparm_display_value": "all",
        "sysparm_exclude_reference_link": "true",
        "sysparm_limit": config.page_size,
        "sysparm_offset": 0,
    }
    params: dict[str, str | int] | None = first
    offset = 0
    records: list[Any] = []
    next_url: str | None = url
    with httpx.Client(auth=auth, timeout=config.timeout, transport=transport, follow_redirects=False) as client:
        while next_url is not None:
            response = _get(client, config, next_url, params, secrets, sleep, notice)
            page = _result(config, next_url, response, secrets)
            records.extend(page)
            offset += len(page)
            link = _NEXT.search(response.headers.get("Link", ""))
            # The credentials go to the instance only: a next page on another host is read by offset instead.
            if not page:
                next_url = None
            elif link and urlsplit(link.group(1)).netloc == urlsplit(url).netloc:
                next_url, params = link.group(1), None
            elif link or len(page) >= config.page_size:
                next_url, params = url, {**first, "sysparm_offset": offset}
            else:
                next_url = None
    dates = set(date_fields)
    # Raw values of dates are UTC; display values are in the reading user's zone and format.
    shaped = [
        {
            key: (value.get("value") if key in dates and isinstance(value, dict) else value)
            for key, value in record.items()
        }
        if isinstance(record, dict)
        else record
        for record in records
    ]
    return Records(frame=records_frame(config.name, url, shaped, required, fields), origin=url, utc=True)


def _auth(config: EnrichBase, url: str, environ: Mapping[str, str]) -> tuple[httpx.Auth | None, list[str]]:
    scheme = urlsplit(url).scheme
    if scheme == "http" and not (config.allow_http or is_loopback(url)):
        raise EnrichError(
            config.name,
            f"{url} is plain http on another machine: the credentials would cross the network in clear text; "
            "use https, or set allow_http = true in this entry if you really mean it",
        )

    def variable(name: str) -> str:
        value = environ.get(name, "").strip()
        if not value:
            raise EnrichError(config.name, f"${name} is not set; export it before the run")
        return value

    if config.token_env:
        token = variable(config.token_env)
        return _Bearer(token), [token]
    if config.user_env:
        user, password = variable(config.user_env), variable(config.password_env)
        return httpx.BasicAuth(user, password), [password, user]
    return None, []


class _Bearer(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Any:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


def _get(
    client: httpx.Client,
    config: EnrichBase,
    url: str,
    params: Mapping[str, str | int] | None,
    secrets: list[str],
    sleep: Callable[[float], None],
    notice: Callable[[str], None],
) -> httpx.Response:
    waited = 0.0
    for attempt in range(1, ATTEMPTS + 1):
        try:
            response = client.get(url, params=params, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            if attempt == ATTEMPTS:
                raise EnrichError(
                    config.name,
                    f"{url}: could not be read ({redact(type(exc).__name__ + ': ' + str(exc), secrets)})",
                    transient=True,
                ) from None
            sleep(2.0**attempt)
            continue
        if response.status_code == 429 or (response.status_code == 403 and "Retry-After" in response.headers):
            wait = rate_limit_wait(response.headers)
            if waited + wait > config.max_rate_limit_wait:
                raise EnrichError(
                    config.name,
                    f"{url}: ServiceNow's rate limit asks for a wait of {wait:.0f} s, more than "
                    f"max_rate_limit_wait ({config.max_rate_limit_wait:.0f} s); run again later or raise it",
                    transient=True,
                )
            notice(f"enrich '{config.name}': ServiceNow rate limit reached: waiting {wait:.0f} s")
            sleep(wait)
            waited += wait
            continue
        if response.status_code >= 500 and attempt < ATTEMPTS:
            sleep(2.0**attempt)
            continue
        return response
    raise EnrichError(
        config.name, f"{url}: still rate limited after {ATTEMPTS} attempts; run again later", transient=True
    )


def _result(config: EnrichBase, url: str, response: httpx.Response, secrets: list[str]) -> list[Any]:
    status = response.status_code
    message = redact(_error_message(response), secrets)
    if status in (401, 403):
        which = "token_env" if config.token_env else "user_env and password_env"
        raise EnrichError(
            config.name,
            f"{url}: ServiceNow refused the credentials ({status}{': ' + message if message else ''}); "
            f"check {which} and the user's read access to the table",
        )
    if status != 200:
        raise EnrichError(
            config.name,
            f"{url}: ServiceNow answered {status}{': ' + message if message else ''}",
            transient=status >= 500,
        )
    try:
        body = response.json()
    except ValueError:
        raise EnrichError(config.name, f"{url}: the answer is not JSON; is instance the ServiceNow address?") from None
    if not isinstance(body, dict) or not isinstance(body.get("result"), list):
        raise EnrichError(config.name, f'{url}: the answer has no "result" list; is instance the ServiceNow address?')
    return list(body["result"])


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
    except (ValueError, AttributeError):
        return ""
    if not isinstance(error, dict):
        return ""
    parts = [str(error.get(key)) for key in ("message", "detail") if error.get(key)]
    return " - ".join(parts)[:300]
