"""Per-source filters (language, keywords) and PII redaction, applied before publishing."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from functools import lru_cache

# E-mail addresses: RFC 5322 atext in the local part, a dotted domain with a letter TLD. In URLs the
# local part is narrower (letters, digits, ._%+-) so query parameter names around it survive.
_ATEXT = r"A-Za-z0-9.!#$%&'*+/=?^_`{|}~-"
_EMAIL = re.compile(rf"[{_ATEXT}]+@[A-Za-z0-9.-]+\.[A-Za-z]{{2,}}")
# First pass: whole local parts only, and not the user@instance part of a fediverse @user@instance
# handle (the handle pass masks those as handles).
_EMAIL_WHOLE = re.compile(rf"(?<![@{_ATEXT}])" + _EMAIL.pattern)
_URL_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_URL = re.compile(r"\b(?:https?|wss?|ftp)://[^\s<>\"']+", re.I)
_HANDLE = re.compile(
    r"(?<![\w@/])@[A-Za-z0-9_](?:[A-Za-z0-9_.]*[A-Za-z0-9_])?(?:@[A-Za-z0-9.-]+\.[A-Za-z]{2,})?"
)
_USERINFO = re.compile(r"(?<=://)[^/@\s:]+(?::[^/@\s]*)?@")
_SECRET_PARAM = re.compile(
    r"([?&#;](?:[\w.-]*?(?:token|key|secret|sig|signature|password|passwd|pwd|auth|session|code|credential)[\w.-]*)=)[^&#\s]*",
    re.I,
)
_DIGITS = re.compile(r"\d(?:[\s().-]{0,2}\d){6,}")  # the fallback when the phone matcher fails

# Phone numbers: Google's libphonenumber rules (the ``phonenumbers`` port). International numbers
# (+CC or 00CC) are found whatever the region; national formats are read as this region's.
# Leniency POSSIBLE: a number of a possible length for its region, valid or not (fictional 555
# numbers are masked too); dates, times, versions and IP addresses are not numbers there.
PHONE_REGION = "US"

EMAIL_MASK, PHONE_MASK, HANDLE_MASK, TOKEN_MASK = "[EMAIL]", "[PHONE]", "@[USER]", "[REDACTED]"


def _redact_url(url: str) -> str:
    url = _USERINFO.sub(TOKEN_MASK + "@", url)
    url = _SECRET_PARAM.sub(lambda p: p.group(1) + TOKEN_MASK, url)
    return _URL_EMAIL.sub(EMAIL_MASK, url)


_DATE = re.compile(r"(\d{1,4})([./-])(\d{1,2})\2(\d{2}|\d{4})")


def _is_date(raw: str) -> bool:
    """2024-01-15, 15.01.2024, 01/15/24: the matcher reads some as a national prefix and a number."""
    m = _DATE.fullmatch(raw.strip())
    if m is None:
        return False
    a, b, c = int(m.group(1)), int(m.group(3)), int(m.group(4))
    if len(m.group(1)) == 4:
        return 1 <= b <= 12 and 1 <= c <= 31
    return len(m.group(1)) <= 2 and 1 <= a <= 31 and 1 <= b <= 31 and min(a, b) <= 12


def _redact_phones(text: str) -> str:
    import phonenumbers

    try:
        spans = [
            (m.start, m.end)
            for m in phonenumbers.PhoneNumberMatcher(
                text, PHONE_REGION, leniency=phonenumbers.Leniency.POSSIBLE
            )
            if not _is_date(m.raw_string)
        ]
    except Exception:  # never let a library error crash a producer: mask every long digit run
        return _DIGITS.sub(PHONE_MASK, text)
    for start, end in reversed(spans):
        text = text[:start] + PHONE_MASK + text[end:]
    return text


def _redact_text(text: str) -> str:
    text = _EMAIL_WHOLE.sub(EMAIL_MASK, text)
    text = _HANDLE.sub(HANDLE_MASK, text)
    text = _EMAIL.sub(EMAIL_MASK, text)
    return _redact_phones(text)


def redact_pii(text: str) -> str:
    """Mask e-mail addresses, phone numbers, @handles and credentials in URLs (user:pass@, ?token=...).

    URLs are kept (their credentials and e-mail addresses masked) and the text between them is
    redacted piece by piece, so no character of the input (NUL included) can confuse the two.
    Any text gives a str; no e-mail address is left anywhere.
    """
    out: list[str] = []
    pos = 0
    for m in _URL.finditer(text):
        out.append(_redact_text(text[pos : m.start()]))
        out.append(_redact_url(m.group(0)))
        pos = m.end()
    out.append(_redact_text(text[pos:]))
    # A last pass over the whole result: an address split across a URL's edge is masked too.
    return _EMAIL.sub(EMAIL_MASK, "".join(out))


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


def normalise_lang(code: object) -> str | None:
    if not code or not isinstance(code, str):
        return None
    return code.split("-")[0].split("_")[0].lower()[:16] or None
