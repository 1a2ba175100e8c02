"""Checks the browser tests make of agenthost's pages: accessible names for every control,
text contrast, and how the answer bubble grew (recorded in the page by a MutationObserver,
so a loaded machine's timing cannot hide a step)."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

# The machine is loaded and a fleet takes a while to start or roll: assertions on a page
# wait up to a minute (playwright's default is 5 s).
expect.set_options(timeout=60_000)

UNLABELLED_CONTROLS = """
() => [...document.querySelectorAll('input, textarea, select, button')]
  .filter((el) => el.type !== 'hidden' && !el.hidden)
  .filter((el) => {
    if (el.tagName === 'BUTTON') return !el.textContent.trim() && !el.getAttribute('aria-label');
    if (el.type === 'radio' || el.type === 'checkbox') return !(el.labels && el.labels.length);
    return !(el.labels && el.labels.length) && !el.getAttribute('aria-label');
  })
  .map((el) => el.outerHTML)
"""

# The WCAG contrast of every visible text element against the background it is drawn on.
LOW_CONTRAST = """
() => {
  const channel = (c) => {
    c /= 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  };
  const parse = (text) => (text.match(/[\\d.]+/g) || []).map(Number);
  const luminance = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const parts = parse(getComputedStyle(node).backgroundColor);
      if (parts.length === 3 || (parts.length === 4 && parts[3] > 0)) return parts.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  for (const el of document.querySelectorAll('body *')) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length) continue;
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden' || style.display === 'none') continue;
    const fg = luminance(parse(style.color).slice(0, 3));
    const bg = luminance(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    const text = el.textContent.trim().slice(0, 30);
    if (ratio < 4.5) low.push(el.tagName + ' "' + text + '" ' + ratio.toFixed(2));
  }
  return low;
}
"""

RECORD_GROWTH = """
() => {
  window.__answerLengths = [];
  new MutationObserver(() => {
    const answers = document.querySelectorAll('#messages li.assistant .text');
    if (!answers.length) return;
    const length = answers[answers.length - 1].textContent.length;
    const seen = window.__answerLengths;
    if (!seen.length || seen[seen.length - 1] !== length) seen.push(length);
  }).observe(document.getElementById('messages'),
             {childList: true, subtree: true, characterData: true});
}
"""


def assert_accessible(page: Page) -> None:
    """Every control has an accessible name and all text meets WCAG AA contrast (4.5:1)."""
    assert page.evaluate(UNLABELLED_CONTROLS) == []
    assert page.evaluate(LOW_CONTRAST) == []


def assert_fits_width(page: Page) -> None:
    """Nothing makes the page scroll sideways (tables scroll inside their own box)."""
    width: Any = page.evaluate("() => [document.documentElement.scrollWidth, innerWidth]")
    assert width[0] <= width[1], f"the page is {width[0]} px wide in a {width[1]} px viewport"
