"""Text from the outside, made safe to show: names in log lines and on a terminal.

Entry names may hold any character but ``/`` and NUL (POSIX allows them), and so may
what a server or a user typed. Written raw, a newline forges a second log line, an
ESC starts a terminal escape sequence (colours, cursor moves, a window title) and a
bidirectional override (U+202E) makes ``txt.exe`` read as ``exe.txt``. ``printable``
shows each such character as a Python-style escape instead (``\\x1b``, ``\\n``,
``\\u202e``); every other character, backslash included, is left as it is, so an
ordinary name reads the same as before.

The characters (``UNSAFE``): C0 controls (U+0000-U+001F), DEL, C1 controls
(U+0080-U+009F), the bidi embeddings and overrides (U+202A-U+202E), the bidi isolates
(U+2066-U+2069) and the line and paragraph separators (U+2028, U+2029), which some
viewers break lines at. A device name may hold none of them
(``protocol.validate_device_name``).
"""

from __future__ import annotations

import logging
import re

UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028-\u202e\u2066-\u2069]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if char in _SHORT:
        return _SHORT[char]
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: object) -> str:
    """``str(text)`` with every ``UNSAFE`` character escaped: one line, no escapes."""
    s = str(text)
    return UNSAFE.sub(_escape, s) if UNSAFE.search(s) else s


class PrintableFormatter(logging.Formatter):
    """A formatter whose every log line is ``printable``: a name in a message cannot
    end the line or drive the terminal. A traceback (``exc_info``) keeps its lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))
