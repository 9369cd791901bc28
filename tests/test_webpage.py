"""The chat page (GET /) in a real browser against a real server.

Debian's Chromium runs headless, driven by selenium through Debian's chromedriver at /usr/bin/chromedriver (`make
browser` installs both; `make test` depends on it). The Service is given that path, so Selenium Manager never runs
and nothing is downloaded. The server is a real `gguf-runtime serve` on SmolLM2 with an API key; replies are greedy
(temperature 0), so what the page shows can be compared with the server's own non-streaming answer.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from serve_process import ServerProcess, parse_metrics

CHROMEDRIVER = os.environ.get("GGUF_RUNTIME_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM = os.environ.get("GGUF_RUNTIME_CHROMIUM", "/usr/bin/chromium")
API_KEY = "page-test-key"
REPLY_TIMEOUT_S = 120      # generous: CI shares 2 cores between the server and the browser
STORAGE_CONVERSATIONS = "gguf-runtime.conversations"
# A question SmolLM2 answers greedily with "The <script> tag is used to ..." (outside any code span)
SCRIPT_QUESTION = "What does the <script> tag do?"

# Reads of the page's own state, run in the browser (no stale element handles while the view re-renders).
LAST_REPLY_TEXT_JS = """
const bodies = document.querySelectorAll('#messages .msg.assistant .msg-body');
return bodies.length ? bodies[bodies.length - 1].innerText : null;"""
STORED_JS = f"return JSON.parse(localStorage.getItem('{STORAGE_CONVERSATIONS}') || '[]');"
CURRENT_JS = "return JSON.parse(localStorage.getItem('gguf-runtime.current-conversation') || 'null');"


class Server:
    """The page's server, with the two HTTP calls the tests make beside the browser's."""

    def __init__(self, process: ServerProcess):
        self.url, self.log = process.url, process.log

    def get(self, path: str) -> bytes:
        request = urllib.request.Request(self.url + path, headers={"Authorization": f"Bearer {API_KEY}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read()

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Authorization": f"Bearer {API_KEY}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=REPLY_TIMEOUT_S) as response:
            return json.loads(response.read())

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self.get("/metrics").decode())


@pytest.fixture(scope="module")
def server(smollm2_path):
    process = ServerProcess(smollm2_path, "--api-key", API_KEY)
    yield Server(process)
    process.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    for path, what in ((CHROMEDRIVER, "chromedriver"), (CHROMIUM, "Chromium")):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{what} is not at {path}: run `make browser` (Debian: apt-get install chromium "
                        "chromium-driver), or point GGUF_RUNTIME_CHROMEDRIVER / GGUF_RUNTIME_CHROMIUM at yours",
                        pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                     "--disable-extensions", "--disable-background-networking", "--window-size=1200,900",
                     f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(argument)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # Chromium refuses to start as root with its sandbox (CI runs as root)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


class Page:
    """The chat page in the browser, with the few actions and reads the tests need."""

    def __init__(self, driver, server: Server):
        self.driver = driver
        self.server = server

    def open(self, settings: dict | None = None, *, with_key: bool = True, stored: list | None = None) -> None:
        """A fresh page: empty local storage, then the given key, settings and conversations."""
        self.driver.set_window_size(1200, 900)
        self.driver.get(self.server.url + "/")
        self.driver.execute_script(
            "localStorage.clear();"
            "if (arguments[0]) localStorage.setItem('gguf-runtime.api-key', JSON.stringify(arguments[0]));"
            "if (arguments[1]) localStorage.setItem('gguf-runtime.settings', JSON.stringify(arguments[1]));"
            "if (arguments[2]) {"
            f"  localStorage.setItem('{STORAGE_CONVERSATIONS}', JSON.stringify(arguments[2]));"
            "  localStorage.setItem('gguf-runtime.current-conversation', JSON.stringify(arguments[2][0].id)); }",
            API_KEY if with_key else None, settings, stored)
        self.driver.refresh()
        if with_key:
            self.wait_for_model()

    def wait_for_model(self) -> None:
        self.wait(lambda d: d.find_element(By.ID, "model-name").text not in ("", "connecting…"), 30,
                  "the page never showed the model's name")
        assert self.text("model-name") != "not connected", "the page could not reach the server"

    def wait(self, condition, timeout: float, message: str):
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(condition)
        except TimeoutException:
            pytest.fail(f"{message} (server log: {self.server.log})", pytrace=False)

    def text(self, element_id: str) -> str:
        return self.driver.find_element(By.ID, element_id).text

    def prompt(self):
        return self.driver.find_element(By.ID, "prompt")

    def generating(self) -> bool:
        return self.driver.execute_script("return !document.getElementById('stop').hidden")

    def send(self, message: str) -> None:
        self.prompt().send_keys(message, Keys.ENTER)

    def wait_for_reply(self) -> str:
        self.wait(lambda d: not self.generating(), REPLY_TIMEOUT_S, "the reply never finished")
        return self.driver.execute_script(LAST_REPLY_TEXT_JS)

    def stored_current(self) -> dict:
        current = self.driver.execute_script(CURRENT_JS)
        return next(c for c in self.driver.execute_script(STORED_JS) if c["id"] == current)

    def last_stats(self) -> str:
        return self.driver.execute_script(
            "const s = document.querySelectorAll('#messages .msg.assistant .msg-stats');"
            "return s.length ? s[s.length - 1].textContent : null;")

    def message_texts(self) -> list[tuple[str, str]]:
        return self.driver.execute_script(
            "return [...document.querySelectorAll('#messages .msg')].map("
            "m => [m.classList[1], m.querySelector('.msg-body').innerText]);")


@pytest.fixture
def page(browser, server):
    """The page; afterwards, the browser's console must hold no errors (an HTTP error status the page handles,
    a 401 or a 400, is logged as a network entry: those are the tests' business)."""
    browser.get_log("browser")  # drop what earlier tests left
    yield Page(browser, server)
    errors = [entry["message"] for entry in browser.get_log("browser")
              if entry["level"] == "SEVERE" and entry.get("source") != "network"]
    assert errors == [], errors


GREEDY = {"temperature": "0", "topP": "1", "maxTokens": "16"}


def _reference_reply(server: Server, messages: list[dict], max_tokens: int) -> dict:
    model = json.loads(server.get("/v1/models"))["data"][0]["id"]
    return server.post("/v1/chat/completions", {"model": model, "messages": messages, "temperature": 0,
                                                "top_p": 1, "max_tokens": max_tokens})


def test_api_key_prompt(page):
    """The server needs a key: the page asks for it (focus in the field), refuses a wrong one, keeps the right one."""
    page.open(with_key=False)
    dialog_open = "return document.getElementById('key-dialog').open"
    page.wait(lambda d: d.execute_script(dialog_open), 30, "no API-key prompt after the server's 401")
    active = page.driver.switch_to.active_element
    assert active.get_attribute("id") == "api-key-input"
    active.send_keys("wrong-key", Keys.ENTER)
    page.wait(lambda d: "refused" in d.find_element(By.ID, "key-error").text, 30,
              "a refused key was not reported")
    assert page.driver.execute_script(dialog_open)
    page.driver.switch_to.active_element.send_keys(API_KEY, Keys.ENTER)
    page.wait_for_model()
    assert page.text("model-name") == json.loads(page.server.get("/v1/models"))["data"][0]["id"]
    assert page.driver.execute_script("return JSON.parse(localStorage.getItem('gguf-runtime.api-key'))") == API_KEY
    assert page.driver.switch_to.active_element.get_attribute("id") == "prompt"  # focus back where it was


def test_streamed_reply_with_enter_and_shift_enter(page):
    page.open({**GREEDY, "maxTokens": "300"})
    max_tokens = page.driver.find_element(By.ID, "max-tokens")  # the settings form feeds the request
    max_tokens.clear()
    max_tokens.send_keys("16", Keys.TAB)
    assert json.loads(page.driver.execute_script("return localStorage.getItem('gguf-runtime.settings')"))[
        "maxTokens"] == "16"
    box = page.prompt()
    box.send_keys("Name a colour.")
    box.send_keys(Keys.SHIFT, Keys.ENTER, Keys.NULL)  # Shift+Enter: a newline, nothing sent
    box.send_keys("Answer in one word.")
    assert box.get_attribute("value") == "Name a colour.\nAnswer in one word."
    assert page.message_texts() == []
    # Record every length the reply's text takes on the way, to see it arrive in pieces.
    page.driver.execute_script("""
        window.__lengths = [];
        new MutationObserver(() => {
          const bodies = document.querySelectorAll('#messages .msg.assistant .msg-body');
          if (bodies.length) window.__lengths.push(bodies[bodies.length - 1].textContent.length);
        }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});""")
    box.send_keys(Keys.ENTER)
    assert page.generating(), "Enter did not send"
    shown = page.wait_for_reply()

    question = "Name a colour.\nAnswer in one word."
    assert page.message_texts()[0] == ["user", question]
    reference = _reference_reply(page.server, [{"role": "user", "content": question}], 16)
    stored = page.stored_current()["messages"]
    assert stored[-1]["content"] == reference["choices"][0]["message"]["content"]
    assert shown.strip(), "the reply is empty"
    lengths = [n for n in page.driver.execute_script("return window.__lengths") if n > 0]
    assert len(set(lengths)) >= 3, f"the reply did not arrive in pieces: {lengths}"  # (Markdown may shrink it)

    stats = page.last_stats()
    usage = reference["usage"]
    match = re.fullmatch(r"(\d+) tokens? · ([\d.]+) tokens/s · first token ([\d.]+) s(?: · reached max tokens)?", stats)
    assert match, stats
    assert int(match[1]) == usage["completion_tokens"] and float(match[2]) > 0 and float(match[3]) > 0
    n_ctx = json.loads(page.server.get("/v1/models"))["data"][0]["max_model_len"]
    assert page.text("context-text") == f"{usage['prompt_tokens'] + usage['completion_tokens']} / {n_ctx} tokens"
    assert page.driver.switch_to.active_element.get_attribute("id") == "prompt"


def test_stop_frees_the_request(page):
    max_tokens = 400
    page.open({**GREEDY, "maxTokens": str(max_tokens)})
    before = page.server.metrics()
    page.send("Write a long story about a dragon who learns to bake bread.")
    page.wait(lambda d: len(d.execute_script(LAST_REPLY_TEXT_JS) or "") > 20, REPLY_TIMEOUT_S,
              "the reply never started")
    assert page.generating()
    page.driver.find_element(By.ID, "stop").click()
    page.wait(lambda d: not page.generating(), 10, "Stop did not end the reply")

    deadline = time.monotonic() + 15
    while True:
        after = page.server.metrics()
        if after["requests_running"] == 0 and after["kv_blocks_used"] == before["kv_blocks_used"]:
            break
        assert time.monotonic() < deadline, f"the server still holds the request: {after}"
        time.sleep(0.1)
    assert after["requests_aborted_total"] == before["requests_aborted_total"] + 1
    assert after["generation_tokens_total"] - before["generation_tokens_total"] < max_tokens
    assert page.last_stats().endswith("· stopped")
    kept = page.stored_current()["messages"][-1]["content"]
    assert kept and page.driver.execute_script(LAST_REPLY_TEXT_JS).strip() != ""
    assert page.driver.switch_to.active_element.get_attribute("id") == "prompt"


def test_script_in_a_reply_is_text(page, tmp_path):
    page.open(GREEDY)
    page.send(SCRIPT_QUESTION)
    shown = page.wait_for_reply()
    raw = page.stored_current()["messages"][-1]["content"]
    assert "<script>" in raw, f"the model no longer answers with a <script> tag, pick another question: {raw!r}"
    assert "<script>" in shown
    assert page.message_texts()[0] == ["user", SCRIPT_QUESTION]
    assert page.driver.find_elements(By.CSS_SELECTOR, "#messages script") == []
    page.driver.refresh()  # the stored conversation renders the same way
    page.wait_for_model()
    assert "<script>" in page.driver.execute_script(LAST_REPLY_TEXT_JS)
    assert page.driver.find_elements(By.CSS_SELECTOR, "#messages script") == []
    page.driver.save_screenshot(str(tmp_path / "chat-script-reply.png"))


def test_reload_keeps_conversations(page):
    page.open({**GREEDY, "maxTokens": "6"})
    page.send("Say hello.")
    page.wait_for_reply()
    first = page.message_texts()
    page.driver.find_element(By.ID, "new-chat").click()
    assert page.message_texts() == []
    page.send("Say goodbye.")
    page.wait_for_reply()
    second = page.message_texts()

    page.driver.refresh()
    page.wait_for_model()
    assert page.message_texts() == second
    titles = [b.text for b in page.driver.find_elements(By.CSS_SELECTOR, "#conversation-list .open-conversation")]
    assert titles == ["Say goodbye.", "Say hello."]
    page.driver.find_elements(By.CSS_SELECTOR, "#conversation-list .open-conversation")[1].click()
    assert page.message_texts() == first
    assert re.search(r"\d+ tokens? · ", page.last_stats())  # the reply's numbers are kept too

    page.driver.execute_cdp_cmd("Browser.grantPermissions", {
        "origin": page.server.url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]})
    copy = page.driver.find_elements(By.CSS_SELECTOR, "#messages .msg.assistant .copy")[-1]
    copy.click()
    page.wait(lambda d: copy.text == "Copied", 5, "the copy button did not copy")
    copied = page.driver.execute_async_script(
        "navigator.clipboard.readText().then(arguments[0], e => arguments[0]('error: ' + e))")
    assert copied == page.stored_current()["messages"][-1]["content"]


HOSTILE_MARKDOWN = """\
## A reply with **bold**, *em*, `code` and a [link](https://example.com/docs)

Not links: [js](javascript:window.__pwned=1) and [data](data:text/html,hi).

<script>window.__pwned = 2</script> <img src=x onerror="window.__pwned = 3"> <b>not bold</b>

```python
print("<b>hi</b>")  # a long line that has to scroll inside its own box on a narrow screen, not the page
```

| option | meaning |
|---|---|
| `--api-key` | a key every /v1 route needs |

1. one
2. two
   - nested

> quoted *text*
"""


def test_markdown_is_rendered_safely_and_fits_400_px(page, tmp_path):
    conversation = {"id": "seeded", "title": "Markdown", "updated": 1, "contextTokens": 120,
                    "messages": [{"role": "user", "content": "Show me <b>markdown</b>"},
                                 {"role": "assistant", "content": HOSTILE_MARKDOWN,
                                  "stats": {"tokens": 96, "approximate": False, "tokensPerSecond": 51.3,
                                            "firstTokenSeconds": 0.21, "finish": "stop"}}]}
    page.open(stored=[conversation])
    driver = page.driver
    messages = driver.find_element(By.ID, "messages")
    assert driver.execute_script("return window.__pwned") is None
    assert messages.find_elements(By.CSS_SELECTOR, "script, img, b, iframe") == []
    assert [a.get_attribute("href") for a in messages.find_elements(By.TAG_NAME, "a")] == ["https://example.com/docs"]
    assert [e.text for e in messages.find_elements(By.CSS_SELECTOR, ".md strong")] == ["bold"]
    assert messages.find_element(By.CSS_SELECTOR, ".code-block pre").text.startswith('print("<b>hi</b>")')
    assert messages.find_element(By.CSS_SELECTOR, ".md table td code").text == "--api-key"
    assert messages.find_element(By.CSS_SELECTOR, ".md ol li ul li").text == "nested"
    shown = driver.execute_script(LAST_REPLY_TEXT_JS)
    assert '<script>window.__pwned = 2</script> <img src=x onerror="window.__pwned = 3"> <b>not bold</b>' in shown
    driver.save_screenshot(str(tmp_path / "chat-1200px.png"))

    driver.set_window_size(400, 860)
    page.wait(lambda d: d.execute_script("return innerWidth") <= 400, 10, "the window did not narrow")
    width = driver.execute_script("return innerWidth")
    assert driver.execute_script("return document.documentElement.scrollWidth") <= width, "the page scrolls sideways"
    for element_id in ("prompt", "send", "menu-toggle", "model-name", "context-text"):
        rect = driver.execute_script("return arguments[0].getBoundingClientRect().toJSON()",
                                     driver.find_element(By.ID, element_id))
        assert rect["width"] > 0 and rect["left"] >= 0 and rect["right"] <= width, (element_id, rect)
    assert driver.find_element(By.ID, "prompt").size["width"] >= 250
    for block in messages.find_elements(By.CSS_SELECTOR, ".msg, .code-block, .table-wrap"):
        assert block.rect["x"] >= 0 and block.rect["x"] + block.rect["width"] <= width
    assert not driver.find_element(By.ID, "sidebar").is_displayed()  # the drawer is closed
    driver.save_screenshot(str(tmp_path / "chat-400px.png"))

    toggle = driver.find_element(By.ID, "menu-toggle")
    toggle.click()
    page.wait(lambda d: d.find_element(By.ID, "sidebar").is_displayed()
              and d.find_element(By.ID, "sidebar").rect["x"] == 0, 5, "the drawer did not open")
    assert toggle.get_attribute("aria-expanded") == "true"
    assert driver.switch_to.active_element.get_attribute("id") == "new-chat"
    driver.save_screenshot(str(tmp_path / "chat-400px-menu.png"))
    driver.switch_to.active_element.send_keys(Keys.ESCAPE)
    page.wait(lambda d: not d.find_element(By.ID, "sidebar").is_displayed(), 5, "Escape did not close the drawer")
    assert driver.switch_to.active_element.get_attribute("id") == "menu-toggle"
    print(f"screenshots: {tmp_path}")


def test_server_error_is_shown(page):
    """A request the server refuses (a system prompt longer than the context) shows the server's message."""
    n_ctx = json.loads(page.server.get("/v1/models"))["data"][0]["max_model_len"]
    page.open({**GREEDY, "systemPrompt": "word " * (2 * n_ctx)})
    page.send("Hello?")
    page.wait(lambda d: not page.generating(), 30, "the refused request never ended")
    assert [role for role, _ in page.message_texts()] == ["user", "error"]
    error = page.message_texts()[1][1]
    assert "context" in error and str(n_ctx) in error, error
    assert page.stored_current()["messages"][-1] == {"role": "error", "content": error}
