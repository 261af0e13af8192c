"""Per-source filters (language, keywords) and PII redaction, applied before publishing."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from functools import lru_cache

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_URL = re.compile(r"\b(?:https?|wss?|ftp)://[^\s<>\"']+", re.I)
_HANDLE = re.compile(
    r"(?<![\w@/])@[A-Za-z0-9_](?:[A-Za-z0-9_.]*[A-Za-z0-9_])?(?:@[A-Za-z0-9.-]+\.[A-Za-z]{2,})?"
)
# International or national phone numbers: 7 to 15 digits with usual separators.
_PHONE = re.compile(r"(?<![\w+])(?:\+|00)?\d(?:[\s().-]{0,2}\d){6,14}(?!\w)")
_USERINFO = re.compile(r"(?<=://)[^/@\s:]+(?::[^/@\s]*)?@")
_SECRET_PARAM = re.compile(
    r"([?&#;](?:[\w.-]*?(?:token|key|secret|sig|signature|password|passwd|pwd|auth|session|code|credential)[\w.-]*)=)[^&#\s]*",
    re.I,
)

EMAIL_MASK, PHONE_MASK, HANDLE_MASK, TOKEN_MASK = "[EMAIL]", "[PHONE]", "@[USER]", "[REDACTED]"


def _redact_url(m: re.Match) -> str:
    url = _USERINFO.sub(TOKEN_MASK + "@", m.group(0))
    return _SECRET_PARAM.sub(lambda p: p.group(1) + TOKEN_MASK, url)


def redact_pii(text: str) -> str:
    """Mask e-mail addresses, phone numbers, @handles and credentials in URLs (user:pass@, ?token=...)."""
    # URLs first so their parts are not mistaken for handles, e-mails or numbers.
    urls: list[str] = []

    def keep(m: re.Match) -> str:
        urls.append(_redact_url(m))
        return f"\x00{len(urls) - 1}\x00"

    text = _URL.sub(keep, text)
    text = _HANDLE.sub(HANDLE_MASK, text)
    text = _EMAIL.sub(EMAIL_MASK, text)
    text = _PHONE.sub(PHONE_MASK, text)
    return re.sub(r"\x00(\d+)\x00", lambda m: urls[int(m.group(1))], text)


def keyword_matcher(keywords: Iterable[str]):
    """A predicate: does the text contain one of the keywords as a whole word/phrase (case-insensitive)?"""
    words = [k.strip() for k in keywords if k.strip()]
    if not words:
        return None
    pattern = re.compile(
        "|".join(rf"(?<!\w){re.escape(w)}(?!\w)" for w in sorted(words, key=len, reverse=True)), re.I
    )
    return lambda text: pattern.search(text) is not None


_detector_lock = threading.Lock()


@lru_cache(maxsize=1)
def _detector():
    """Lingua over all its languages, low-accuracy mode (fast, small, offline)."""
    from lingua import LanguageDetectorBuilder

    return LanguageDetectorBuilder.from_all_languages().with_low_accuracy_mode().build()


def detect_language(text: str) -> str | None:
    """ISO 639-1 code of the text's language, or None when unsure."""
    with _detector_lock:
        lang = _detector().detect_language_of(text)
    if lang is None:
        return None
    return lang.iso_code_639_1.name.lower()


def normalise_lang(code: str | None) -> str | None:
    if not code:
        return None
    return code.split("-")[0].split("_")[0].lower()[:16] or None
