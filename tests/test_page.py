"""The page's keyboard in a real headless Chromium: ghost text at the cursor, arrow keys to
choose, Tab with an automatic space that punctuation replaces, and a page that loads clean
(no 404, no console error) and reads at phone width. The server and browser come from test_web."""

from __future__ import annotations

from tests.test_web import DOTS, browser, chips, server, type_words  # noqa: F401 - fixtures

GHOST = "document.querySelector('#ghost .completion')?.textContent"


def open_page(server, browser, **options):  # noqa: F811
    page = browser.new_page(**options)
    problems = []
    page.on("console", lambda m: m.type in ("error", "warning") and problems.append(f"console {m.type}: {m.text}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status} {r.url}"))
    page.goto(server.url)
    page.wait_for_selector("text=this tab has its own copy")
    page.click("#text")
    return page, problems


def suggested(page, completion: str) -> None:
    page.wait_for_function(f"document.querySelector('.suggestion')?.dataset.completion === {completion!r}")


def test_ghost_text_shows_the_chosen_suggestion_and_arrows_choose(server, browser):  # noqa: F811
    page, problems = open_page(server, browser)
    assert page.evaluate(GHOST) is None, "an empty box shows its placeholder, not a ghost"
    page.keyboard.type("the qu")
    suggested(page, "ick")
    page.wait_for_function(f"{GHOST} === 'ick'")
    assert page.inner_text("#ghost").startswith("the quick"), "the ghost follows the typed text"
    options = chips(page)
    assert len(options) >= 2
    page.keyboard.press("ArrowDown")
    assert page.evaluate(GHOST) == options[1]
    assert page.eval_on_selector_all(".suggestion.selected", "els => els.map(e => e.dataset.completion)") == [options[1]]
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")  # wraps around to the last
    assert page.evaluate(GHOST) == options[-1]
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Tab")
    assert page.input_value("#text") == f"the qu{options[1]} ", "Tab accepts the chosen one"
    page.keyboard.press("Escape")
    assert page.evaluate(GHOST) is None, "Esc hides the suggestions"
    page.keyboard.press("ArrowUp")  # now the arrows move the cursor again
    assert page.evaluate("document.getElementById('text').selectionStart") == 0
    assert problems == []
    page.close()


def test_tab_adds_a_space_that_punctuation_replaces_and_a_space_joins(server, browser):  # noqa: F811
    page, problems = open_page(server, browser)
    page.keyboard.type("the qu")
    suggested(page, "ick")
    page.keyboard.press("Tab")
    assert page.input_value("#text") == "the quick "
    page.keyboard.type(".")
    assert page.input_value("#text") == "the quick.", "the period took the automatic space's place"
    page.keyboard.type(" over the la")
    suggested(page, "zy")
    page.keyboard.press("Tab")
    page.keyboard.type(" dog")
    assert page.input_value("#text") == "the quick. over the lazy dog", "the typed space was absorbed"
    page.keyboard.type(" ")
    page.keyboard.type(" ,")
    assert page.input_value("#text") == "the quick. over the lazy dog  ,", "typed spaces are the user's own"
    assert problems == []
    page.close()


def test_page_loads_clean_with_a_favicon_and_labelled_chart_axes(server, browser):  # noqa: F811
    page, problems = open_page(server, browser)
    assert page.get_attribute("link[rel=icon]", "href").startswith("data:image/svg+xml")
    labels = lambda: page.eval_on_selector_all("#chart text.label", "els => els.map(e => e.textContent)")  # noqa: E731
    assert labels() == ["characters learned", "bits/char"], "the empty chart has its axes named too"
    type_words(page, "the quick brown fox jumps over the lazy dog ")
    assert page.evaluate(DOTS) >= 3
    assert labels() == ["characters learned", "bits/char"]
    ticks = page.eval_on_selector_all("#chart text.axis:not(.label)", "els => els.map(e => e.textContent)")
    assert "0" in ticks and any(t.isdigit() and int(t) > 10 for t in ticks), ticks
    page.wait_for_timeout(300)
    assert problems == [], problems
    page.close()


def test_page_reads_at_phone_width(server, browser):  # noqa: F811
    page, problems = open_page(server, browser, viewport={"width": 420, "height": 800})
    box = page.evaluate("""() => {
        const t = document.getElementById('text'), r = t.getBoundingClientRect();
        return {width: r.width, font: parseFloat(getComputedStyle(t).fontSize), scroll: t.scrollWidth - t.clientWidth,
                page: document.documentElement.scrollWidth}
    }""")
    assert box["width"] >= 380 and box["font"] >= 14 and box["scroll"] == 0 and box["page"] <= 420, box
    placeholder = page.evaluate("getComputedStyle(document.getElementById('text'), '::placeholder').color")
    assert placeholder == "rgb(107, 115, 133)", "the placeholder in the page's muted ink, not the faint default"
    empty = page.evaluate("""() => {
        const el = [...document.querySelectorAll('#chart text')].map(e => e.getBoundingClientRect());
        return el.map(r => [r.height, r.left, r.right, r.top, r.bottom]);
    }""")
    chart = page.evaluate("(() => { const r = document.getElementById('chart').getBoundingClientRect(); return [r.left, r.right, r.top, r.bottom]; })()")
    for height, left, right, top, bottom in empty:
        assert height >= 10, "chart text at least 10 px tall at phone width"
        assert left >= chart[0] - 1 and right <= chart[1] + 1 and top >= chart[2] - 1 and bottom <= chart[3] + 1, "inside the chart"
    assert problems == []
    page.close()
