"""``report.pdf``: the HTML report printed by headless Chromium (Playwright's ``page.pdf()``), so the
PDF attached to a claim is the same page a handler sees in a browser (A4, backgrounds printed).

Chromium: ``$CARCHECK_CHROMIUM``, else ``chromium`` / ``chromium-browser`` on the PATH (Debian's
package; ``.ci/run`` installs it), else the browser ``playwright install chromium`` downloads.
Playwright itself is an optional dependency: ``pip install 'carcheck[pdf]'``.
"""

from __future__ import annotations

import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["PdfError", "find_chromium", "check_pdf_support", "write_pdf"]


class PdfError(RuntimeError):
    """The PDF cannot be made: Playwright or Chromium is missing, or printing failed (the message says
    which and what to install)."""


def find_chromium() -> str | None:
    """The Chromium executable to drive: ``$CARCHECK_CHROMIUM``, else ``chromium`` or
    ``chromium-browser`` on the PATH; None: none found (Playwright's own download may still work)."""
    return os.environ.get("CARCHECK_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def check_pdf_support() -> None:
    """Fail early, before any model loads, when ``--pdf`` cannot work.

    Raises:
        PdfError: Playwright is not installed, or no Chromium is found (neither on the PATH nor
            Playwright's download).
    """
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise PdfError("--pdf needs Playwright: pip install 'carcheck[pdf]' (or pip install playwright)") from None
    if find_chromium() is None:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as pw:
            path = pw.chromium.executable_path
        if not path or not Path(path).exists():
            raise PdfError("--pdf needs Chromium: apt-get install chromium, set CARCHECK_CHROMIUM to a Chromium "
                           "executable, or run `playwright install chromium`")


def write_pdf(html_path: str | Path, pdf_path: str | Path | None = None, timeout_s: float = 60.0) -> Path:
    """Print an HTML report to PDF (A4, backgrounds, the report's own print CSS).

    Args:
        html_path: ``report.html`` (self-contained: images are inline).
        pdf_path: where to write; default ``report.pdf`` beside the HTML.
        timeout_s: limit for loading and printing.
    Returns:
        the PDF's path.
    Raises:
        PdfError: Playwright or Chromium missing, or Chromium failed (the cause included).
        FileNotFoundError: ``html_path`` does not exist.
    """
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise FileNotFoundError(f"{html_path}: no such report file")
    pdf_path = Path(pdf_path) if pdf_path is not None else html_path.with_name("report.pdf")
    check_pdf_support()
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    exe = find_chromium()

    def _print() -> None:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.goto(html_path.as_uri(), wait_until="load", timeout=timeout_s * 1000)
                page.emulate_media(media="print")
                page.pdf(path=str(pdf_path), format="A4", print_background=True,
                         margin={"top": "12mm", "bottom": "12mm", "left": "10mm", "right": "10mm"})
            finally:
                browser.close()

    try:  # in a thread of its own: Playwright's sync API refuses a thread that runs an asyncio loop (a server, a test)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="carcheck-pdf") as pool:
            pool.submit(_print).result()
    except PlaywrightError as e:
        raise PdfError(f"{pdf_path}: Chromium could not print {html_path.name} ({str(e).splitlines()[0]})") from None
    return pdf_path
