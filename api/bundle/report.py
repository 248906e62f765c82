"""The bundle's chain-of-custody report: one PDF, Japanese first and English beside it.

`render_report(members)` reads the inner bundle's own members (docs/evidence-bundle.md),
so the report can only say what the signed files say; it is a reading aid, and says so:
the evidence is the files, checked by verify.py.

- Japanese needs a font with its glyphs: IPA Gothic from the Debian package
  fonts-ipafont-gothic, or whatever COUNTERSIGN_REPORT_FONT names. It is embedded (subset).
- Japanese has no spaces to break lines at, so lines are broken here (`wrap`): between any
  two wide characters, at spaces between Latin words, and inside a word only if it cannot
  fit a line by itself; a closing mark (、。」) never starts a line and an opening one (「)
  never ends one (kinsoku). Every cell is wrapped this way before fpdf2 sees it.
- Everything the database supplied (names, purposes, case references, the notice) is
  untrusted: control, format and bidi characters become visible escapes (evidence.text),
  and so does any character the font cannot draw, so nothing can be hidden or reordered.
  fpdf2's page-count alias is a private-use character for the same reason: escaped text
  can never contain it, where a purpose reading "{nb}" would otherwise become a number.
- The same members give the same bytes: the PDF's dates are the manifest's exported_at.
- An hour's recording is 720 segments: 720 upload entries and 2,160 segment files. So a run of routine
  uploads of consecutive segments by one device is one custody row (seq range, first and last time), and
  the segments are one row each (index, bytes, SHA-256 of the FLAC); the statements', signatures' and
  entries' hashes are counted, not listed (SHA256SUMS lists each). Nothing else is summarised, and the
  report says where every entry is. Tables are drawn here line by line (`grid`), not with fpdf2's
  `table()`, which measured each cell many times over: about 25 s for such a recording, now under 1 s.
"""

# Japanese text is written with full-width punctuation on purpose: it is not a confusable ASCII character.
# ruff: noqa: RUF001
from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from api.bundle.assemble import Listed
from evidence.text import neutral, printable

FONT_ENV = "COUNTERSIGN_REPORT_FONT"
FONT_PACKAGE = "fonts-ipafont-gothic"
DEFAULT_FONTS = (
    Path("/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf"),
    Path("/usr/share/fonts/truetype/fonts-japanese-gothic.ttf"),  # the same font, by Debian's alternative
)
REPORT_MEMBER = "report/custody-report.pdf"
# Members whose hashes the report cannot list: itself, and the files made from its hash.
NOT_LISTED = frozenset({REPORT_MEMBER, "SHA256SUMS", "SHA256SUMS.sig", "SHA256SUMS.tsr"})
HEADER_DOMAIN = b"countersign/recording-header/v1\x00"
STATEMENT_BYTES = 141
FINAL_OFFSET = 44
UPLOAD = "api:segment:upload"
TOKYO = ZoneInfo("Asia/Tokyo")
_FONT_MAGIC = (b"\x00\x01\x00\x00", b"OTTO", b"true", b"ttcf")

_SEGMENT_FILE = re.compile(r"segments/(\d+)\.(flac|statement|sig)")
_ENTRY_FILE = re.compile(r"custody/entries/\d+\.json")
_Colour = tuple[int, int, int]
_FAMILY = "ReportJP"
_PAGES_ALIAS = "\ue000" * 4  # private use, so never in escaped text; 4 characters: room for 4 digits
_NONE = "—"
_MARGIN = 15.0
_BODY = 8.5  # pt
_SMALL = 7.0
_LINE = 4.2  # mm per line of body text
_SMALL_LINE = 3.5
_PAD = (0.9, 1.4, 0.9, 1.4)  # top, right, bottom, left (mm)
_LABEL_FILL = (236, 239, 243)
_HEAD_FILL = (214, 220, 228)
_STRIPE = (247, 248, 250)
_RULE = (60, 60, 60)
_GREY = (90, 90, 90)

# No line may start with these (closing brackets, small kana, punctuation) or end with those.
_NO_START = frozenset(
    "、。，．,.・：；:;？！?!ー―‐）)］]｝}〕〉》」』】〙〗’”»ぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ々〻ゝゞヽヾ〜…‥%％"
)
_NO_END = frozenset("（(［[｛{〔〈《「『【〘〖‘“«")

METHODS = {
    "displayed": "画面表示 / displayed",
    "spoken": "口頭 / spoken",
    "displayed+spoken": "画面表示と口頭 / displayed and spoken",
    "ivr": "自動音声 / automated voice (IVR)",
}
OUTCOMES = {"given": "同意 / given", "objected": "拒否 / objected"}
EVENT_OUTCOMES = {"allowed": "許可 allowed", "denied": "拒否 denied", "failed": "失敗 failed"}
ACTIONS = {
    "api:device:create": "端末登録申請",
    "api:device:enrol": "端末登録",
    "api:recording:create": "録音開始",
    "api:consent:objected": "録音拒否",
    "api:segment:upload": "区間受信",
    "api:recording:interrupted": "録音中断",
    "api:evidence:list": "一覧閲覧",
    "api:evidence:show": "詳細閲覧",
    "api:evidence:read": "音声取得",
    "api:evidence:integrity": "完全性確認",
    "api:evidence:no-audio": "音声なし",
    "api:evidence:custody": "保管記録閲覧",
    "api:evidence:export": "証拠出力の請求",
    "api:evidence:exported": "証拠出力",
    "api:recording:flag": "事案指定",
    "api:recording:extend": "保存延長",
    "api:recording:delete": "早期削除",
    "api:deletion:request": "削除申請",
    "api:deletion:approve": "削除承認",
    "api:deletion:cancel": "削除取消",
    "api:hold:create": "保全措置",
    "api:hold:release": "保全解除",
    "api:device:disable": "端末停止",
    "api:device:enable": "端末再開",
    "api:token:rotate": "トークン更新",
    "api:access:denied": "アクセス拒否",
    "retention:recording:shred": "鍵の消去",
    "retention:recording:purge": "録音の消去",
}


class ReportError(ValueError):
    """The report cannot be made: a member is missing or malformed, or there is no Japanese font."""


# --- the font ---------------------------------------------------------------------------------------------


def find_font(path: str | os.PathLike[str] | None = None) -> Path:
    """The TrueType font to embed: `path`, else $COUNTERSIGN_REPORT_FONT, else IPA Gothic where Debian puts it."""
    chosen = path if path is not None else os.environ.get(FONT_ENV) or None
    if chosen is not None:
        font = Path(chosen)
        if not font.is_file():
            source = "the report font" if path is not None else FONT_ENV
            raise ReportError(
                f"{source} {str(font)!r} is not a file: point it at a TrueType font with Japanese glyphs "
                f"(for instance {DEFAULT_FONTS[0]} from the Debian package {FONT_PACKAGE})"
            )
        return font
    for font in DEFAULT_FONTS:
        if font.is_file():
            return font
    raise ReportError(
        f"no Japanese font for the custody report: install the Debian package {FONT_PACKAGE} "
        f"(apt-get install {FONT_PACKAGE}; it provides {DEFAULT_FONTS[0]}) "
        f"or set {FONT_ENV} to a TrueType font with Japanese glyphs"
    )


# --- reading the members ----------------------------------------------------------------------------------


def _member(members: Mapping[str, bytes], path: str) -> bytes:
    try:
        return members[path]
    except KeyError:
        raise ReportError(f"the bundle has no {path}") from None


def _json_object(data: bytes, path: str) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReportError(f"{path} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ReportError(f"{path} is not a JSON object")
    return value


def _read_json(members: Mapping[str, bytes], path: str) -> dict[str, Any]:
    return _json_object(_member(members, path), path)


def _header(members: Mapping[str, bytes]) -> dict[str, Any]:
    data = _member(members, "recording/header.bin")
    if not data.startswith(HEADER_DOMAIN):
        raise ReportError("recording/header.bin does not start with countersign/recording-header/v1")
    return _json_object(data[len(HEADER_DOMAIN) :], "recording/header.bin")


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --- text -------------------------------------------------------------------------------------------------


def _text(value: Any, limit: int = 600) -> str:
    """One line of untrusted text, escaped and bounded; None and "" are a dash."""
    if value is None or value == "":
        return _NONE
    if isinstance(value, bool):
        return "true" if value else "false"
    return neutral(str(value), limit)


def _paragraphs(value: str) -> str:
    """Untrusted multi-line text (the notice): line breaks kept, everything else invisible escaped."""
    return printable(value.replace("\r\n", "\n")).replace("\t", "    ")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _when(value: Any) -> str:
    """A time in Tokyo time with UTC beside it; anything unparseable shown as it is."""
    moment = _parse_time(value)
    if moment is None:
        return _text(value)
    tokyo = moment.astimezone(TOKYO).strftime("%Y-%m-%d %H:%M:%S")
    utc = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{tokyo} 日本時間 (JST)\n{utc} UTC"


def _wide(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in ("W", "F")


def _units(line: str) -> list[tuple[bool, str]]:
    """(space before?, unbreakable unit): Latin words, single wide characters, kinsoku glued on."""
    units: list[tuple[bool, str]] = []
    space = False
    word = ""
    for ch in line:
        if ch == " ":
            if word:
                units.append((space, word))
                word = ""
            space = True
            continue
        if _wide(ch):
            if word:
                units.append((space, word))
                word, space = "", False
            units.append((space, ch))
            space = False
        else:
            word += ch
    if word:
        units.append((space, word))
    glued: list[tuple[bool, str]] = []
    for space_before, unit in units:
        previous = glued[-1][1] if glued else ""
        if glued and not space_before and (unit[0] in _NO_START or previous[-1] in _NO_END):
            glued[-1] = (glued[-1][0], previous + unit)
        else:
            glued.append((space_before, unit))
    return glued


def wrap(pdf: FPDF, text: str, width: float) -> list[str]:
    """`text` broken into lines no wider than `width` (mm) in the current font, Japanese-aware."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        current, current_width = "", 0.0
        for space_before, unit in _units(paragraph):
            gap = " " if space_before and current else ""
            unit_width = pdf.get_string_width(unit)
            extra = pdf.get_string_width(gap) + unit_width
            if current and current_width + extra <= width:
                current, current_width = current + gap + unit, current_width + extra
                continue
            if current:
                lines.append(current)
            current, current_width = "", 0.0
            if unit_width <= width:
                current, current_width = unit, unit_width
                continue
            for ch in unit:  # a word longer than the line (a hash, a path): break it anywhere
                ch_width = pdf.get_string_width(ch)
                if current and current_width + ch_width > width:
                    lines.append(current)
                    current, current_width = "", 0.0
                current, current_width = current + ch, current_width + ch_width
        lines.append(current)
    return lines


# --- the document -----------------------------------------------------------------------------------------


class _Document(FPDF):
    def __init__(self, font: Path, recording_id: str, exported_at: str) -> None:
        super().__init__(orientation="P", unit="mm", format="A4")
        with font.open("rb") as file:
            magic = file.read(4)
        if magic not in _FONT_MAGIC:
            raise ReportError(f"cannot load the report font {str(font)!r}: not a TrueType or OpenType file")
        try:
            self.add_font(_FAMILY, "", str(font))
        except Exception as exc:  # fpdf2 / fontTools raise many kinds for a file that is not a font
            raise ReportError(f"cannot load the report font {str(font)!r}: {exc}") from None
        self.set_font(_FAMILY, size=_BODY)
        cmap = getattr(self.current_font, "cmap", None)
        self._glyphs: frozenset[int] = frozenset(cmap) if isinstance(cmap, dict) else frozenset()
        if not {ord("録"), ord("A")} <= self._glyphs:
            self.close_fonts()
            raise ReportError(f"the report font {str(font)!r} has no Japanese glyphs (use {FONT_PACKAGE})")
        self.recording_id = recording_id
        self._exported_at = exported_at
        self.alias_nb_pages(_PAGES_ALIAS)
        self.set_margins(_MARGIN, _MARGIN + 4, _MARGIN)
        self.set_auto_page_break(True, margin=_MARGIN + 3)
        self.set_draw_color(*_RULE)
        self.set_line_width(0.2)

    def close_fonts(self) -> None:
        """Let go of the font files (output() does; a report abandoned half-way must too)."""
        for loaded in self.fonts.values():
            close = getattr(loaded, "close", None)
            if callable(close):
                close()

    # Every string reaches the page through here: characters the font lacks are escaped, not dropped.
    def shown(self, text: str) -> str:
        return "".join(
            ch
            if ch == "\n" or ord(ch) in self._glyphs
            else f"\\u{ord(ch):04x}"
            if ord(ch) < 0x10000
            else f"\\U{ord(ch):08x}"
            for ch in text
        )

    def wrapped(self, text: str, width: float) -> str:
        return "\n".join(wrap(self, self.shown(text), width * 0.97))

    def header(self) -> None:
        self.set_font(_FAMILY, size=_SMALL)
        self.set_text_color(*_GREY)
        self.set_xy(_MARGIN, 9)
        self.cell(
            self.epw / 2, 4, self.shown("保管の連鎖報告書  Chain-of-custody report"), new_x=XPos.RIGHT, new_y=YPos.TOP
        )
        self.cell(self.epw / 2, 4, self.shown(f"録音 Recording {self.recording_id}"), align="R")
        self.line(_MARGIN, 14, self.w - _MARGIN, 14)
        self.set_text_color(0)
        self.set_font(_FAMILY, size=_BODY)
        self.set_xy(_MARGIN, _MARGIN + 4)

    def footer(self) -> None:
        self.set_font(_FAMILY, size=_SMALL)
        self.set_text_color(*_GREY)
        y = self.h - 12
        self.line(_MARGIN, y - 1, self.w - _MARGIN, y - 1)
        self.set_xy(_MARGIN, y)
        self.cell(
            self.epw / 2,
            4,
            self.shown(f"Countersign  出力 exported {self._exported_at}"),
            new_x=XPos.RIGHT,
            new_y=YPos.TOP,
        )
        self.cell(
            self.epw / 2,
            4,
            f"{self.page_no()} / {_PAGES_ALIAS} ページ  page {self.page_no()} of {_PAGES_ALIAS}",
            align="R",
        )
        self.set_text_color(0)

    # --- building blocks ---

    def title_block(self, ja: str, en: str, lead: Sequence[str]) -> None:
        self.set_font(_FAMILY, size=17)
        self.cell(0, 9, self.shown(ja), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_font(_FAMILY, size=12)
        self.set_text_color(*_GREY)
        self.cell(0, 6, self.shown(en), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_text_color(0)
        self.set_line_width(0.6)
        self.line(_MARGIN, self.y + 1.5, self.w - _MARGIN, self.y + 1.5)
        self.set_line_width(0.2)
        self.ln(4)
        self.paragraph(lead)

    def paragraph(self, texts: Iterable[str], size: float = _BODY) -> None:
        self.set_font(_FAMILY, size=size)
        for text in texts:
            self.multi_cell(0, _LINE, self.wrapped(text, self.epw), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            self.ln(1)

    def heading(self, number: int, ja: str, en: str) -> None:
        if self.y > self.h - 50:  # a heading never sits alone at the foot of a page
            self.add_page()
        self.ln(3)
        self.set_font(_FAMILY, size=12)
        label = self.shown(f"{number}. {ja}")
        self.cell(self.get_string_width(label) + 2, 7, label, new_x=XPos.RIGHT, new_y=YPos.TOP)
        self.set_font(_FAMILY, size=9.5)
        self.set_text_color(*_GREY)
        self.cell(0, 7.4, self.shown(en), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.set_text_color(0)
        self.line(_MARGIN, self.y, self.w - _MARGIN, self.y)
        self.ln(2)
        self.set_font(_FAMILY, size=_BODY)

    def pairs(self, rows: Sequence[tuple[str, str, str]], label_width: float = 46) -> None:
        """A two-column table: a bilingual label on grey, its value."""
        self.grid(
            None,
            (label_width, self.epw - label_width),
            [(f"{ja}\n{en}", value) for ja, en, value in rows],
            _BODY,
            line=_LINE,
            fills=(_LABEL_FILL, None),
        )

    def lines(self, text: str, width: float) -> list[str]:
        return wrap(self, self.shown(text), width * 0.97)

    def grid(
        self,
        headings: Sequence[str] | None,
        widths: Sequence[float],
        rows: Iterable[Sequence[str]],
        size: float,
        *,
        fixed: Sequence[int] = (),
        line: float | None = None,
        fills: Sequence[_Colour | None] | None = None,
    ) -> None:
        """A bordered table, its rows striped and a grey heading row repeated on every page it runs onto
        (or, given `fills`, each column in its own colour, with no heading row).

        Drawn line by line with plain text operations, not fpdf2's table (which measures every cell again and
        again: the custody table of a long recording took seconds). Every cell is wrapped here (`wrap`) except
        the columns in `fixed`, whose values are known to fit (hashes, sizes, numbers) and are only split at
        line breaks. A row moves whole to the next page unless it is taller than a page; then it continues there.
        """
        self.set_font(_FAMILY, size=size)
        scale = self.epw / sum(widths)
        widths = [w * scale for w in widths]
        inner = [w - _PAD[1] - _PAD[3] for w in widths]
        line = line if line is not None else size * 0.3528 * 1.25
        head = [self.lines(text, width) for text, width in zip(headings, inner, strict=True)] if headings else None
        room = self.page_break_trigger - self.t_margin - _PAD[0] - _PAD[2]  # for one row on a fresh page
        head_height = max(map(len, head)) * line + _PAD[0] + _PAD[2] if head else 0.0
        room -= head_height
        if self.y + head_height + line + _PAD[0] + _PAD[2] > self.page_break_trigger:
            self.add_page()  # a heading row never sits alone at the foot of a page
            self.set_font(_FAMILY, size=size)
        if head:
            self._row(head, widths, line, [_HEAD_FILL] * len(widths))
        saved_break = self.auto_page_break
        self.set_auto_page_break(False, margin=self.b_margin)  # pages are broken here, a row at a time
        for number, values in enumerate(rows):
            cells = [
                [self.shown(part) for part in text.split("\n")] if column in fixed else self.lines(text, width)
                for column, (text, width) in enumerate(zip(values, inner, strict=True))
            ]
            colours = fills if fills is not None else [_STRIPE if number % 2 == 0 else None] * len(widths)
            start, count = 0, max(map(len, cells))
            while True:
                fits = int((self.page_break_trigger - self.y - _PAD[0] - _PAD[2]) / line + 1e-6)
                if count - start <= fits:
                    self._row([cell[start:] for cell in cells], widths, line, colours, count - start)
                    break
                if (count - start) * line > room and fits > 0:  # taller than a page: fill this one, go on
                    self._row([cell[start : start + fits] for cell in cells], widths, line, colours, fits)
                    start += fits
                self.add_page()
                self.set_font(_FAMILY, size=size)
                if head:
                    self._row(head, widths, line, [_HEAD_FILL] * len(widths))
        self.set_auto_page_break(saved_break, margin=self.b_margin)
        self.ln(2)
        self.set_font(_FAMILY, size=_BODY)

    def _row(
        self,
        cells: Sequence[Sequence[str]],
        widths: Sequence[float],
        line: float,
        fills: Sequence[_Colour | None],
        count: int | None = None,
    ) -> None:
        """One table row of `count` lines (else the tallest cell's) at the current y; y moves below it.

        Each line is placed as fpdf2's cell() would place it (baseline half a line down, plus 0.3 em)."""
        y = self.y
        height = (count if count is not None else max(map(len, cells))) * line + _PAD[0] + _PAD[2]
        baseline = y + _PAD[0] + 0.5 * line + 0.3 * self.font_size
        x = self.l_margin
        for texts, width, fill in zip(cells, widths, fills, strict=True):
            if fill is not None:
                self.set_fill_color(*fill)
            self.rect(x, y, width, height, style="DF" if fill is not None else "D")
            for number, text in enumerate(texts):
                if text:
                    self.text(x + _PAD[3], baseline + number * line, text)
            x += width
        self.set_xy(self.l_margin, y + height)

    def boxed(self, text: str) -> None:
        """Text in a frame (the notice exactly as shown), across pages if it must."""
        self.set_font(_FAMILY, size=10)
        inner = self.epw - 8
        self.set_x(_MARGIN)
        saved = self.c_margin
        self.c_margin = 4
        self.set_fill_color(252, 252, 250)
        self.multi_cell(
            0, 5.6, "\n" + self.wrapped(text, inner) + "\n", border=1, fill=True, new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )
        self.c_margin = saved
        self.ln(2)
        self.set_font(_FAMILY, size=_BODY)


# --- the report -------------------------------------------------------------------------------------------


def _segments(members: Mapping[str, bytes]) -> tuple[int, bool]:
    """How many segment statements, and whether the last one says final."""
    statements = [
        members[path] for path in sorted(members) if path.startswith("segments/") and path.endswith(".statement")
    ]
    final = bool(statements) and len(statements[-1]) == STATEMENT_BYTES and statements[-1][FINAL_OFFSET] == 1
    return len(statements), final


def _entries(members: Mapping[str, bytes]) -> list[dict[str, Any]]:
    entries = [
        _read_json(members, path)
        for path in sorted(members)
        if path.startswith("custody/entries/") and path.endswith(".json")
    ]
    return sorted(entries, key=lambda entry: entry["seq"] if isinstance(entry.get("seq"), int) else 0)


def _event_time(value: Any) -> tuple[str, str]:
    moment = _parse_time(value)
    if moment is None:
        return _text(value), ""
    return moment.astimezone(TOKYO).strftime("%Y-%m-%d\n%H:%M:%S"), moment.astimezone(UTC).strftime(
        "%Y-%m-%d\n%H:%M:%S"
    )


def _action(value: Any) -> str:
    tag = _text(value, 120)
    label = ACTIONS.get(str(value))
    return f"{label}\n{tag}" if label else tag


def _holds(status: Mapping[str, Any]) -> str:
    holds = status.get("holds")
    if not isinstance(holds, list) or not holds:
        return "なし / none"
    lines = []
    for hold in holds:
        hold = _object(hold)
        placed = _parse_time(hold.get("placed_at"))
        when = placed.astimezone(TOKYO).strftime("%Y-%m-%d %H:%M JST") if placed else _text(hold.get("placed_at"))
        lines.append(f"{_text(hold.get('case_ref'))} — {_text(hold.get('reason'))} ({when})")
    return "\n".join(lines)


def _retention(value: Any) -> str:
    moment = _parse_time(value)
    return _when(value) if moment is not None else _text(value)


def _upload_index(entry: Mapping[str, Any]) -> int | None:
    """The segment index of a routine upload entry (allowed, no purpose), else None: it is shown on its own."""
    if entry.get("action") != UPLOAD or entry.get("outcome") != "allowed" or entry.get("purpose") not in (None, ""):
        return None
    index = _object(entry.get("detail")).get("index")
    return index if isinstance(index, int) and not isinstance(index, bool) else None


def _event_row(entry: Mapping[str, Any], actors: Mapping[str, Any]) -> list[str]:
    tokyo, utc = _event_time(entry.get("at"))
    actor = entry.get("actor")
    return [
        _text(entry.get("seq"), 20),
        tokyo,
        utc,
        _text(actors.get(str(actor)) or actor),
        _action(entry.get("action")),
        EVENT_OUTCOMES.get(str(entry.get("outcome")), _text(entry.get("outcome"))),
        _text(entry.get("purpose")),
    ]


def _span(first: str, last: str) -> str:
    """Two of _event_time's "date\ntime" as a range; the date once if it is the same."""
    if first == last:
        return first
    first_date, _, _ = first.partition("\n")
    last_date, _, last_time = last.partition("\n")
    return f"{first}\n– {last_time}" if last_time and last_date == first_date else f"{first}\n– {last}"


def _uploads_row(run: Sequence[Mapping[str, Any]], actors: Mapping[str, Any]) -> list[str]:
    """One row for a run of consecutive uploads of segments i, i+1, ... by one actor."""
    first, last = _event_row(run[0], actors), _event_row(run[-1], actors)
    low, high = _upload_index(run[0]), _upload_index(run[-1])
    count = len(run)
    segments = f"{low}" if count == 1 else f"{low}–{high}"
    en = f"segment {segments} received (1 entry)" if count == 1 else f"segments {segments} received ({count} entries)"
    return [
        first[0] if count == 1 else f"{first[0]}–\n{last[0]}",
        _span(first[1], last[1]),
        _span(first[2], last[2]),
        first[3],
        f"{ACTIONS[UPLOAD]}\n{UPLOAD}\n区間 {segments} を受信（{count} 件）\n{en}",
        first[5],
        first[6],
    ]


def _custody_rows(entries: Sequence[Mapping[str, Any]], actors: Mapping[str, Any]) -> list[list[str]]:
    """A row per entry, except that each run of routine uploads of consecutive segments by one actor is one row."""
    rows: list[list[str]] = []
    run: list[Mapping[str, Any]] = []
    previous: int | None = None
    for entry in entries:
        index = _upload_index(entry)
        joins = index is not None and previous is not None and index == previous + 1
        if run and not (joins and entry.get("actor") == run[-1].get("actor")):
            rows.append(_uploads_row(run, actors))
            run = []
        if index is None:
            rows.append(_event_row(entry, actors))
        else:
            run.append(entry)
        previous = index
    if run:
        rows.append(_uploads_row(run, actors))
    return rows


def _file_rows(files: Sequence[tuple[str, int, str]]) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """The files table (each file a person checks by hand, then a summary row per group of many small files)
    and the segment audio table (index, bytes, SHA-256 of each segment's FLAC). `files`: (path, size, SHA-256)."""
    listed: list[list[str]] = []
    grouped: dict[str, list[tuple[str, int]]] = {}
    flac: list[tuple[int, int, str]] = []
    for path, size, digest in files:
        segment = _SEGMENT_FILE.fullmatch(path)
        if segment and segment.group(2) == "flac":
            flac.append((int(segment.group(1)), size, digest))
        if segment:
            grouped.setdefault(f"segments/*.{segment.group(2)}", []).append((path, size))
        elif _ENTRY_FILE.fullmatch(path):
            grouped.setdefault("custody/entries/*.json", []).append((path, size))
        else:
            listed.append([_text(path, 200), f"{size:,}", digest])
    groups = []
    for pattern, members in sorted(grouped.items()):
        where = (
            "区間ごとに下の表 / each in the table below"
            if pattern == "segments/*.flac"
            else "各ファイルは SHA256SUMS に記載 / each one is in SHA256SUMS"
        )
        first, last = members[0][0].rpartition("/")[2], members[-1][0].rpartition("/")[2]
        names = first if len(members) == 1 else f"{first} … {last}"
        groups.append(
            [
                _text(pattern),
                f"{sum(size for _, size in members):,}",
                f"{len(members)} 件 files: {_text(names, 200)}\n{where}",
            ]
        )
    audio = [[str(index), f"{size:,}", digest] for index, size, digest in sorted(flac)]
    return listed, groups, audio


def render_report(
    members: Mapping[str, bytes],
    added: Mapping[str, Listed] | None = None,
    *,
    font: str | os.PathLike[str] | None = None,
) -> bytes:
    """The chain-of-custody report (PDF bytes) for the inner bundle `members` (path -> bytes), and
    `added`: members listed by hash that the officer's client adds later (zero-knowledge mode).

    `font` (else $COUNTERSIGN_REPORT_FONT, else IPA Gothic) is the TrueType font to embed.
    Raises ReportError if a member the report reads is missing or malformed, or there is no font.
    """
    font_path = find_font(font)
    manifest = _read_json(members, "manifest.json")
    status = _read_json(members, "recording/status.json")
    header = _header(members)
    enrolment = _read_json(members, "device/enrolment.json")
    actors = _read_json(members, "custody/actors.json")
    tree_head = _read_json(members, "custody/tree_head.json")
    notice_bytes = _member(members, "consent/notice.txt")
    entries = _entries(members)

    recording_id = _text(manifest.get("recording_id"), 80)
    exported = _parse_time(manifest.get("exported_at"))
    if exported is None:
        raise ReportError("manifest.json: exported_at is not an ISO 8601 time with a zone")
    exported_label = exported.astimezone(TOKYO).strftime("%Y-%m-%d %H:%M JST")

    pdf = _Document(font_path, recording_id, exported_label)
    try:
        return _compose(
            pdf,
            manifest=manifest,
            status=status,
            header=header,
            enrolment=enrolment,
            actors=actors,
            tree_head=tree_head,
            notice_bytes=notice_bytes,
            entries=entries,
            segments=_segments(members),
            files=sorted(
                [(p, len(data), hashlib.sha256(data).hexdigest()) for p, data in members.items() if p not in NOT_LISTED]
                + [(p, listed.size, listed.sha256.hex()) for p, listed in (added or {}).items()]
            ),
            exported=exported,
        )
    except BaseException:
        pdf.close_fonts()
        raise


def _compose(
    pdf: _Document,
    *,
    manifest: dict[str, Any],
    status: dict[str, Any],
    header: dict[str, Any],
    enrolment: dict[str, Any],
    actors: dict[str, Any],
    tree_head: dict[str, Any],
    notice_bytes: bytes,
    entries: list[dict[str, Any]],
    segments: tuple[int, bool],
    files: list[tuple[str, int, str]],
    exported: datetime,
) -> bytes:
    """The report's pages, in order; returns the PDF."""
    consent = _object(header.get("consent"))
    service = _object(manifest.get("service"))
    notice = notice_bytes.decode("utf-8", errors="replace")
    segment_count, final = segments
    recording_id = pdf.recording_id
    pdf.set_creation_date(exported.astimezone(UTC))
    pdf.set_title(f"保管の連鎖報告書 Chain-of-custody report {recording_id}")
    pdf.set_subject(f"Recording {recording_id}, case {_text(manifest.get('case_ref'), 120)}")
    pdf.set_creator("Countersign")
    pdf.set_lang("ja")
    pdf.add_page()

    pdf.title_block(
        "保管の連鎖（証拠管理）報告書",
        "Chain-of-Custody Report",
        [
            "本報告書は、この証拠バンドルの内容を読みやすくまとめたものです。証拠そのものはバンドル内の署名済み"
            "ファイルであり、同梱の verify.py（または README に記載の sha256sum・openssl の手順）で誰でも検証できます。"
            "本報告書と署名済みファイルが食い違う場合は、署名済みファイルが優先します。"
            "記録された文字のうち制御文字や表示できない文字は、\\u202e のような符号で示しています"
            "（日本語フォントでは \\ が ¥ と表示されます）。",
            "This report summarises the contents of this evidence bundle for readers. The evidence itself is the "
            "signed files in the bundle, which anyone can check with the enclosed verify.py (or by hand with sha256sum "
            "and openssl, as the README describes). Where this report and the signed files differ, the signed files "
            "prevail. Control and undisplayable characters in recorded text are shown as codes such as \\u202e "
            "(Japanese fonts draw the backslash as ¥).",
        ],
    )

    # 1. the export
    recipient = manifest.get("recipient")
    pdf.heading(1, "出力の概要", "The export")
    pdf.pairs(
        [
            ("録音ID", "Recording ID", recording_id),
            ("事案番号", "Case reference", _text(manifest.get("case_ref"))),
            ("出力の目的", "Purpose", _text(manifest.get("purpose"))),
            ("提供先", "Recipient", _text(recipient) if recipient else "指定なし / not named"),
            (
                "出力者",
                "Exported by",
                f"{_text(manifest.get('exported_by'))} ({_text(manifest.get('exported_by_id'), 120)})",
            ),
            ("出力日時", "Exported at", _when(manifest.get("exported_at"))),
            ("出力の監査記録", "Export audit entry", f"seq {_text(manifest.get('export_audit_seq'))}"),
        ]
    )

    # 2. the recording
    complete = manifest.get("complete")
    partial_reason = manifest.get("partial_reason") or status.get("partial_reason")
    if final:
        completeness = "完全（最終区間まで揃っています） / complete (the final segment is present)"
    else:
        completeness = "一部のみ（最終区間がありません） / partial (no final segment)"
        completeness += f"\n理由 reason: {_text(partial_reason) if partial_reason else '記録なし / not recorded'}"
    if isinstance(complete, bool) and complete != final:
        completeness += (
            "\n注意: マニフェストの complete 値が区間の連鎖と一致しません"
            f" / warning: the manifest says complete={str(complete).lower()}, the segment chain does not"
        )
    device_name = status.get("device_name") or enrolment.get("device_name")
    device_id = status.get("device_id") or enrolment.get("device_id") or header.get("device_id")
    site_id = status.get("site_id") or enrolment.get("site_id")
    pdf.heading(2, "録音", "The recording")
    pdf.pairs(
        [
            ("録音端末", "Device", f"{_text(device_name)}\nID: {_text(device_id, 120)}"),
            ("端末の登録", "Device enrolled", _when(enrolment.get("enrolled_at"))),
            ("拠点", "Site", f"{_text(status.get('site_name'))}\nID: {_text(site_id, 120)}"),
            ("事案区分", "Incident category", _text(status.get("incident_category"))),
            ("状態", "Status", _text(status.get("status"))),
            ("録音開始", "Started", _when(status.get("started_at"))),
            ("録音終了", "Ended", _when(status.get("ended_at"))),
            ("区間数", "Segments", str(segment_count)),
            ("完全性", "Completeness", completeness),
            ("保存期限", "Retain until", _retention(status.get("retain_until"))),
            ("保存の理由", "Retention reason", _text(status.get("retain_reason"))),
            ("保全措置", "Holds", _holds(status)),
        ]
    )

    # 3. consent
    named_hash = str(consent.get("notice_sha256", ""))
    actual_hash = hashlib.sha256(notice_bytes).hexdigest()
    agreement = (
        "consent/notice.txt と一致 / matches consent/notice.txt"
        if named_hash == actual_hash
        else f"不一致 / DOES NOT MATCH consent/notice.txt ({actual_hash})"
    )
    method = consent.get("method")
    outcome = consent.get("outcome")
    pdf.heading(3, "同意の記録", "Consent")
    pdf.pairs(
        [
            (
                "告知文",
                "Notice",
                f"{_text(consent.get('notice_id'))}  第 {_text(consent.get('notice_version'))} 版 / version",
            ),
            ("告知文の言語", "Language", _text(consent.get("language"))),
            ("提示方法", "Method", METHODS.get(str(method), _text(method))),
            ("提示日時", "Presented at", _when(consent.get("presented_at"))),
            ("回答日時", "Decided at", _when(consent.get("decided_at"))),
            ("回答", "Outcome", OUTCOMES.get(str(outcome), _text(outcome))),
            ("職員コード", "Staff code", _text(consent.get("staff_code"))),
            ("告知文の SHA-256", "Notice SHA-256", f"{_text(named_hash)}\n{agreement}"),
        ]
    )
    pdf.paragraph(["提示された告知文（原文のまま） / The notice exactly as shown:"])
    pdf.boxed(_paragraphs(notice))

    # 4. custody events
    rows = _custody_rows(entries, actors)
    pdf.heading(4, "保管の記録（監査ログ）", f"Custody events (audit log): {len(entries)} entries, in {len(rows)} rows")
    pdf.grid(
        [
            "番号\nSeq",
            "日時（日本時間）\nTime (JST)",
            "日時（UTC）\nTime (UTC)",
            "実行者\nActor",
            "操作\nAction",
            "結果\nOutcome",
            "目的\nPurpose",
        ],
        [11, 25, 25, 27, 40, 16, 36],
        rows,
        size=_SMALL,
    )
    note = (
        "すべての記録が 1 件ずつ custody/entries/ に、その包含証明が custody/proofs.json にあります。 / Every entry "
        "is in custody/entries/, one file each, with its inclusion proof in custody/proofs.json."
    )
    if len(rows) < len(entries):
        note = (
            "同じ端末からの連続した区間の受信記録は 1 行にまとめ、最初と最後の日時と番号の範囲を示しています。"
            "まとめたものを含め、すべての記録が 1 件ずつ custody/entries/ に、その包含証明が custody/proofs.json "
            "にあります。 / Consecutive segment uploads by the same device are shown as one row, with the first and "
            "last time and the range of sequence numbers. Every entry, these included, is in custody/entries/, one "
            "file each, with its inclusion proof in custody/proofs.json."
        )
    pdf.paragraph([note], size=_SMALL)
    pdf.paragraph(["実行者 / Actors:"])
    pdf.grid(
        ["実行者ID\nActor ID", "名前\nName"],
        [90, 90],
        [[_text(actor_id, 120), _text(name)] for actor_id, name in sorted(actors.items())],
        size=_SMALL,
    )

    # 5. the signed log and the service key
    pdf.heading(5, "監査ログの署名とサービス鍵", "The signed audit log and the service key")
    pdf.pairs(
        [
            ("ツリーヘッドの件数", "Tree head size", _text(tree_head.get("size"))),
            ("ルートハッシュ", "Merkle root", _text(tree_head.get("root"))),
            ("チェーンハッシュ", "Chain hash", _text(tree_head.get("chain_hash"))),
            ("署名日時", "Signed at", _when(tree_head.get("at"))),
            ("サービス鍵の指紋", "Service key fingerprint", f"SHA-256 {_text(service.get('fingerprint'))}"),
            ("サービス公開鍵", "Service public key", _text(service.get("public_key"))),
            ("公開場所", "Published at", _text(service.get("published_at"))),
        ]
    )
    pdf.paragraph(
        [
            "サービス鍵の指紋は、組織が公開している値と照合してください。 / Compare the service key fingerprint "
            "with the one the organisation publishes.",
        ]
    )

    # 6. the files
    listed, groups, audio = _file_rows(files)
    pdf.heading(6, "証拠ファイルの SHA-256", "SHA-256 of the evidence files")
    pdf.grid(
        ["ファイル\nFile", "バイト数\nBytes", "SHA-256"],
        [58, 18, 104],
        [*listed, *groups],
        size=_SMALL,
        fixed=(1,),
    )
    pdf.paragraph(
        [
            "SHA256SUMS（サービス鍵で署名）が、すべてのファイル（区間の .statement・.sig、custody/entries/ の各記録を"
            "含む）と本報告書自体の SHA-256 を含みます。 / SHA256SUMS, signed by the service key, lists every file "
            "(each segment's .statement and .sig and each custody/entries/ file included) and this report's own "
            "SHA-256.",
        ],
        size=_SMALL,
    )
    if audio:
        pdf.paragraph([f"区間の音声 / Segment audio (segments/NNNNNN.flac): {len(audio)}"])
        pdf.grid(
            ["区間\nSegment", "バイト数\nBytes", "FLAC の SHA-256\nSHA-256 of the FLAC"],
            [16, 20, 144],
            audio,
            size=_SMALL,
            fixed=(0, 1, 2),
        )
    return bytes(pdf.output())
