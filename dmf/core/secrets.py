"""Masking secrets out of what dmf stores or reports: block documents, node configuration files,
command lines. Pure functions; a masked value is replaced whole, never shortened or hashed (a hash
of a short password can be brute-forced)."""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any

MASK = "**********"  # what pydantic shows for a SecretStr, so every masked value looks alike

# Field-name words that hold a secret. "token" only in block fields: cassandra.yaml's initial_token
# and num_tokens are topology a restore needs.
_SECRET_WORDS = frozenset({"password", "passwd", "pwd", "passphrase", "secret", "token"})
# A last word that names an identifier or where a secret is, not the secret: aws_access_key_id is
# sent in clear in every request's Authorization header and says which key wrote the backups;
# ssh_private_key_path, keystore_password_file are paths (the files themselves are not copied).
_REFERENCE_WORDS = frozenset({"id", "path", "file", "dir", "name", "type"})

# Names of files that are credentials themselves: never copied.
_SECRET_FILE_SUFFIXES = (".password", ".passwd", ".keystore", ".truststore", ".jks", ".p12", ".pfx", ".pem",
                         ".key", "cqlshrc", "credentials")

# Settings in node files: any name, judged by is_secret_setting (a regex alone cannot tell
# aws_secret_access_key from credentials_validity).
_TEXT_KEY = r"[A-Za-z_][\w.-]*"
# Words that make a setting secret in node files, and the words that may follow one in its name
# (aws_secret_access_key, token_value): any other (credentials_validity, password_file) names a
# setting about the secret, not the secret. "pwd" is left out: $PWD is a shell's working directory.
_SETTING_WORDS = frozenset({"password", "passwd", "passphrase", "secret", "token", "credential", "credentials",
                            "apikey"})
_SECRET_TAIL = frozenset({"access", "key", "keys", "value", "string", "data", "b64", "base64"})
_QUOTED = r"\"(?:[^\"\\]|\\.)*\"|'(?:[^']|'')*'"
# `key: value` at a line's start, perhaps in a list item or commented out (an old password may be real).
_YAML_LINE = re.compile(rf"^(?P<lead>[ \t]*(?:#[ \t]*)?(?:-[ \t]+)?)(?P<key>{_TEXT_KEY})(?P<sep>[ \t]*:)"
                        r"(?P<rest>(?:[ \t].*)?)$", re.I)
_BLOCK_INDICATOR = re.compile(r"[|>][-+0-9]*")
_PEM_KEY = re.compile(r"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S)
_URL_PASSWORD = re.compile(r"(?<=://)([^/\s:@]*):[^/\s@]+@")
_ASSIGNMENT = re.compile(rf"(?P<key>(?<![\w.-])-*{_TEXT_KEY}[\"']?)(?P<sep>[ \t]*=[ \t]*)(?P<value>{_QUOTED}|[^\s\"'<]+)",
                         re.I)
_OPTION = re.compile(rf"(?<![\w-])(?P<key>-pw|-{{1,2}}{_TEXT_KEY})(?P<sep>[ \t]+)(?P<value>{_QUOTED}|[^\s\"']+)",
                     re.I)
_XML_ELEMENT = re.compile(rf"(<(?P<tag>{_TEXT_KEY})>)[^<]*(</(?P=tag)>)", re.I)


def _words(name: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower())


def is_secret_name(name: str) -> bool:
    """Whether a field named `name` holds a secret: a password, secret, token or key material
    (`..._key`), but not an identifier or a path naming one (`..._key_id`, `..._key_path`)."""
    words = _words(name)
    if not words or words[-1] in _REFERENCE_WORDS:
        return False
    return words[-1] in ("key", "keys") or any(word in _SECRET_WORDS for word in words)


def is_secret_setting(name: str) -> bool:
    """Whether a setting in a node's file (YAML, shell, properties, command line) holds a secret:
    its name has a password, secret, token, credential, private or API key word, followed only by
    words such as access/key/value (aws_secret_access_key); initial_token is topology, and a name
    that ends in an identifier or path word (aws_access_key_id, credentials_file) only points to one."""
    words = _words(name)
    if not words or words[-1] in _REFERENCE_WORDS:
        return False
    for i, word in enumerate(words):
        before = words[i - 1] if i else ""
        secret = (word in _SETTING_WORDS and not (word == "token" and before == "initial")) or \
            (word in ("key", "keys") and before in ("private", "api"))
        if secret and all(later in _SECRET_TAIL for later in words[i + 1:]):
            return True
    return False


def is_secret_file(name: str) -> bool:
    """Whether a configuration directory's file is a credential store (JMX password file,
    keystores, private keys, cqlshrc): such a file is never copied, masked or not."""
    return name.lower().endswith(_SECRET_FILE_SUFFIXES)


def mask_document(value: Any) -> Any:
    """A copy of a JSON-like block document with every secret masked: the value of every field
    whose name is secret (whatever its type; None stays None, saying it is unset), and secrets
    inside any other string (see mask_text)."""
    if isinstance(value, dict):
        return {key: (MASK if field is not None else None) if is_secret_name(str(key)) else mask_document(field)
                for key, field in value.items()}
    if isinstance(value, list):
        return [mask_document(item) for item in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


def _quoted_mask(value: str) -> str:
    quote = value[:1] if value[:1] in ("'", '"') else ""
    return f"{quote}{MASK}{quote}"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _eol(line: str) -> str:
    return line[len(line.rstrip("\r\n")):]


def _split_value(rest: str) -> tuple[str, str, str]:
    """A YAML line's text after `key:` as (space, value, tail): tail is the comment, if any."""
    stripped = rest.lstrip(" \t")
    space = rest[:len(rest) - len(stripped)]
    quoted = re.match(_QUOTED, stripped)
    if quoted:
        value = quoted[0]
    else:
        comment = re.search(r"(?:^|[ \t]+)#", stripped)
        value = stripped[:comment.start()] if comment else stripped.rstrip(" \t")
    return space, value, stripped[len(value):]


def _mask_yaml_lines(text: str) -> str:
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        eol = _eol(line)
        body = line[:len(line) - len(eol)]
        match = _YAML_LINE.match(body)
        if match is None or not is_secret_setting(match["key"]):
            out.append(line)
            continue
        space, value, tail = _split_value(match["rest"])
        head = f"{match['lead']}{match['key']}{match['sep']}{space or ' '}"
        if value and not _BLOCK_INDICATOR.fullmatch(value):
            mask = _quoted_mask(value) if value[0] in "'\"" else f"'{MASK}'"  # a bare * starts a YAML alias
            out.append(f"{head}{mask}{tail}{eol}")
            continue
        # The value, if any, is on the following more indented lines: they are dropped and the
        # key holds the mask, so the file stays valid YAML.
        end = i
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > _indent(body)):
            end += 1
        while end > i and not lines[end - 1].strip():
            end -= 1
        if end > i and "#" not in match["lead"]:
            out.append(f"{head}'{MASK}'{' ' if tail[:1] == '#' else ''}{tail}{eol}")
            i = end
        else:
            out.append(line)
    return "".join(out)


def mask_text(text: str) -> str:
    """`text` with the values of password-like settings masked, its layout and comments kept
    (line by line, no YAML or shell parsing, so nothing is reformatted): YAML `*password*: value`
    lines (cassandra.yaml's keystore_password, truststore_password...), `key=value` assignments
    (-Djavax.net.ssl.keyStorePassword=..., .properties, CQL `PASSWORD = '...'`), command options
    (`-pw x`, `--password x`), XML `<password>` elements, URL passwords (`scheme://user:pw@host`)
    and PEM private keys."""
    text = _PEM_KEY.sub(MASK, text)
    text = _mask_yaml_lines(text)
    text = _URL_PASSWORD.sub(lambda m: f"{m[1]}:{MASK}@", text)
    for pattern in (_ASSIGNMENT, _OPTION):
        text = _mask_settings(pattern, text)
    return _XML_ELEMENT.sub(lambda m: f"{m[1]}{MASK}{m[3]}" if is_secret_setting(m["tag"]) else m[0], text)


def _mask_settings(pattern: re.Pattern, text: str) -> str:
    """Masks the value of each secret `key`-`value` match; after any other key the search goes on
    inside its value, which may hold settings of its own (JVM_OPTS="... -D...Password=x")."""
    out, pos = [], 0
    while (match := pattern.search(text, pos)) is not None:
        key = match["key"].rstrip("\"'")
        if key == "-pw" or is_secret_setting(key.lstrip("-")):
            out.append(f"{text[pos:match.start('value')]}{_quoted_mask(match['value'])}")
            pos = match.end()
        else:
            out.append(text[pos:match.end("key")])
            pos = match.end("key")
    return "".join(out) + text[pos:]


def settings_digest(fields: dict) -> str:
    """A SHA-256 of settings, secrets included (settings that differ only in a key must not share
    what was built from them), for an in-memory cache key: the secrets are kept only as the digest."""
    def reveal(value):
        if hasattr(value, "get_secret_value"):
            return value.get_secret_value()
        if hasattr(value, "model_dump"):
            return value.model_dump()
        return repr(value)
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=reveal).encode()).hexdigest()
