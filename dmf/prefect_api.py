"""The Prefect API read without importing Prefect (~3 s of imports on a loaded machine): how the CLI's
read-only commands load their block and answer in about a second.

It finds the API as Prefect does from the environment and the active profile (profiles.toml). Where
Prefect could read its settings from a source this does not (a `.env`, `prefect.toml` or
`[tool.prefect]` in the working directory, TLS or header settings, test mode) or there is no API
URL (a temporary server), `api()` gives None and the command runs its flow as any other does.
"""
from __future__ import annotations

import base64
import json
import os
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmf.core.errors import DmfError

UNREAD = ("PREFECT_API_SSL_CERT_FILE", "PREFECT_API_TLS_INSECURE_SKIP_VERIFY", "PREFECT_CLIENT_CUSTOM_HEADERS",
          "PREFECT_TESTING_TEST_MODE", "PREFECT_TESTING_UNIT_TEST_MODE")
TIMEOUT_S = 30


class ApiError(DmfError):
    pass


def _profile() -> dict[str, Any] | None:
    """The active profile's settings ({} without a profiles file), or None when they cannot be known here."""
    home = os.environ.get("PREFECT_HOME")
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or (Path(home) if home else Path.home() / ".prefect")
                / "profiles.toml")
    if not path.exists():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    name = os.environ.get("PREFECT_PROFILE") or data.get("active")
    return data.get("profiles", {}).get(name, {}) if name else {}


def _other_sources(cwd: Path) -> bool:
    """Whether Prefect would also read settings from the working directory."""
    def mentions(name: str, text: str) -> bool:
        try:
            return (cwd / name).is_file() and text in (cwd / name).read_text(errors="replace")
        except OSError:
            return True
    return (cwd / "prefect.toml").exists() or mentions(".env", "PREFECT_") or mentions("pyproject.toml",
                                                                                       "[tool.prefect")


@dataclass(frozen=True)
class PrefectApi:
    url: str
    headers: dict[str, str]

    def request(self, method: str, path: str, body: dict | None = None) -> Any:
        request = urllib.request.Request(f"{self.url.rstrip('/')}/{path}", method=method, headers={
            **self.headers, "Accept": "application/json", "Content-Type": "application/json"},
            data=None if body is None else json.dumps(body).encode())
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise ApiError(f"the Prefect API at {self.url} answered {exc.code} {exc.reason} to {method} "
                           f"/{path.split('?')[0]}") from None
        except (OSError, ValueError) as exc:
            raise ApiError(f"cannot reach the Prefect API at {self.url}: {exc}") from None

    def block_data(self, slug: str, name: str) -> dict:
        """A block document's data, secrets included, nested blocks inlined (as Block.load reads it)."""
        document = self.request("GET", f"block_types/slug/{urllib.parse.quote(slug)}/block_documents/name/"
                                       f"{urllib.parse.quote(name)}?include_secrets=true")
        if document is None:
            raise ApiError(f"no {slug} block named {name!r} on {self.url}")
        return document["data"]


def api(cwd: Path | None = None) -> PrefectApi | None:
    """The Prefect API as Prefect's own settings would give it, or None (see the module's docstring)."""
    profile = _profile()
    if profile is None or _other_sources(cwd or Path.cwd()):
        return None
    settings = {**{k: str(v) for k, v in profile.items()}, **{k: v for k, v in os.environ.items()
                                                              if k.startswith("PREFECT_")}}
    if not settings.get("PREFECT_API_URL") or any(settings.get(name) for name in UNREAD):
        return None
    headers = {}
    if settings.get("PREFECT_API_KEY"):
        headers["Authorization"] = f"Bearer {settings['PREFECT_API_KEY']}"
    elif settings.get("PREFECT_API_AUTH_STRING"):
        headers["Authorization"] = "Basic " + base64.b64encode(settings["PREFECT_API_AUTH_STRING"].encode()).decode()
    return PrefectApi(settings["PREFECT_API_URL"], headers)
