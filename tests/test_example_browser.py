"""A real browser: headless Chromium, driven by Selenium, against real servers.

* :func:`test_notes_in_a_browser` (issue 23): the example app (``examples/notes``) served the
  way the README's CLI serves it, ``carboy --app examples.notes run`` (which installs the
  ``flask`` alias first, so Flask-style extensions in the app work), with a SQLite file of its
  own. The browser fills and submits the forms as a person would (so hidden form fields such
  as CSRF tokens travel as they do for a person): first visit, register, wrong password, log
  in, create a note, list it, log out, a second user opening the first user's note, a missing
  page.
* :func:`test_public_note_appears_in_another_users_open_tab` (issue 21's live view of the
  example): a note shared by one user appears in another user's open tab, and a private one
  does not.
* :func:`test_message_crosses_workers_in_a_browser` (issue 21): ``served_apps/realtime_app.py``
  under uvicorn with 2 workers on the machine's Redis (database 15, a key prefix of this run,
  deleted afterwards). Two tabs open its ``/page/<channel>`` page, whose script connects the
  WebSocket helper and shows the pid of the worker that serves the socket; the second tab is
  reloaded until its socket is on the other worker. A message sent from the first tab's form
  must appear in the second tab (and in the first).

Assertions are on page content; a screenshot of each step is saved as a test artefact (they
are not compared with anything), under ``$CARBOY_TEST_ARTIFACTS/browser/<test>/`` if that
variable is set, else ``test-artifacts/browser/<test>/`` in the repository (git-ignored).
Each test empties its own directory first.

Chromium and its driver are Debian's ``chromium`` and ``chromium-driver`` packages
(``.ci/run`` installs them when missing and it runs as root); the tests skip, saying so, when
either binary or the ``selenium`` package is missing. Selenium is pointed at
``/usr/bin/chromedriver`` with ``SE_OFFLINE=true``, so Selenium Manager never downloads a
driver. Chromium runs with ``--headless=new``, ``--no-sandbox`` (required as root),
``--disable-dev-shm-usage`` and ``--disable-gpu``. One Chromium serves the whole module.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from redis_servers import MACHINE_URL, machine_redis_or_skip
from servers import ROOT, Server, free_port, tool

CHROMIUM = os.environ.get("CARBOY_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CARBOY_CHROMEDRIVER", "/usr/bin/chromedriver")
#: Bounds a wait for the page to change; no assertion is made on how long anything took.
WAIT = 15.0

for _binary, _package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
    if not os.access(_binary, os.X_OK):
        pytest.skip(
            f"{_binary} is missing: install Debian's {_package} package"
            " (`apt-get install chromium chromium-driver`; .ci/run does so as root)",
            allow_module_level=True,
        )

webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (it is in carboy's `test` extra)"
)
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.chrome.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402


def artifact_dir(test_name: str) -> Path:
    base = os.environ.get("CARBOY_TEST_ARTIFACTS")
    root = Path(base) if base else ROOT / "test-artifacts"
    path = root / "browser" / test_name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


class Shots:
    """Numbered screenshots of one test, in its artefact directory."""

    def __init__(self, driver: WebDriver, directory: Path) -> None:
        self.driver = driver
        self.directory = directory
        self.count = 0

    def __call__(self, step: str) -> None:
        self.count += 1
        target = self.directory / f"{self.count:02d}-{step}.png"
        assert self.driver.save_screenshot(str(target)), f"no screenshot saved for {step}"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never download a driver or browser
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",  # Chromium refuses to start as root with its sandbox
        "--disable-dev-shm-usage",  # containers' /dev/shm is small
        "--disable-gpu",
        "--window-size=1024,768",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except WebDriverException as e:
        pytest.skip(f"Chromium did not start under {CHROMEDRIVER}: {e.msg}")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def shots(browser: WebDriver, request: pytest.FixtureRequest) -> Iterator[Shots]:
    yield Shots(browser, artifact_dir(request.node.name))
    # Leave nothing open towards the test's servers, in any tab (they stop next).
    for handle in browser.window_handles[1:]:
        browser.switch_to.window(handle)
        browser.close()
    browser.switch_to.window(browser.window_handles[0])
    browser.get("about:blank")


def wait_until(driver: WebDriver, what: str, check: Callable[[WebDriver], object]) -> None:
    WebDriverWait(driver, WAIT).until(check, f"timed out waiting for {what}")


# -- the notes app (issue 23) -----------------------------------------------------------------


def heading(driver: WebDriver) -> str:
    return driver.find_element(By.CSS_SELECTOR, "main h2").text


def flashes(driver: WebDriver) -> list[str]:
    return [p.text for p in driver.find_elements(By.CSS_SELECTOR, "p.flash")]


def mark_page(driver: WebDriver) -> None:
    """Mark the loaded document; a new page load drops the mark (see :func:`same_page`)."""
    driver.execute_script("window.carboyTestMark = true")


def same_page(driver: WebDriver) -> bool:
    return bool(driver.execute_script("return window.carboyTestMark === true"))


def submit(driver: WebDriver, button: WebElement) -> None:
    """Click a form's submit *button* and wait until the next page has replaced this one.

    The page is marked in JavaScript rather than watched with Selenium's ``staleness_of``:
    chromedriver can answer a query on an element of a page being replaced with "Node with
    given id does not belong to the document", which ``staleness_of`` does not expect. While
    the next page loads, a script can fail the same way, so those errors are waited out."""
    mark_page(driver)
    button.click()
    WebDriverWait(driver, WAIT, ignored_exceptions=(WebDriverException,)).until(
        lambda d: d.execute_script("return document.readyState") == "complete" and not same_page(d),
        "timed out waiting for the next page",
    )
    wait_until(driver, "the next page", lambda d: d.find_elements(By.CSS_SELECTOR, "main h2"))


def fill_credentials(driver: WebDriver, username: str, password: str) -> None:
    form = driver.find_element(By.CSS_SELECTOR, "main form")
    name = form.find_element(By.NAME, "username")
    name.clear()
    name.send_keys(username)
    form.find_element(By.NAME, "password").send_keys(password)
    submit(driver, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))


def go(driver: WebDriver, url: str) -> None:
    driver.get(url)
    wait_until(driver, url, lambda d: d.find_elements(By.CSS_SELECTOR, "main h2"))


def log_out(driver: WebDriver) -> None:
    submit(driver, driver.find_element(By.CSS_SELECTOR, "nav form button"))


@pytest.fixture
def notes_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    cmd = [*tool("carboy"), "--app", "examples.notes", "run", "--port", str(port)]
    env = {
        "CARBOY_DATABASE": str(tmp_path / "browser-notes.sqlite"),
        "CARBOY_SECRET_KEY": "browser-test-secret",
    }
    with Server(cmd, port, tmp_path / "notes.log", env) as server:
        server.wait_until_up("/login")
        yield server.base_url


def test_notes_in_a_browser(browser: WebDriver, shots: Shots, notes_url: str) -> None:
    d = browser
    go(d, notes_url + "/")
    shots("first-visit")
    assert heading(d) == "Welcome"
    assert flashes(d) == []  # a first visit is greeted, not scolded
    assert "Create an account" in d.find_element(By.TAG_NAME, "main").text

    d.find_element(By.LINK_TEXT, "Create an account").click()
    wait_until(d, "the register page", lambda d: heading(d) == "Create an account")
    shots("register-form")
    fill_credentials(d, "alice", "alice-pass")
    shots("registered")
    assert heading(d) == "Log in"
    assert flashes(d) == ["Account created. You can log in now."]

    fill_credentials(d, "alice", "not-her-password")
    shots("wrong-password")
    assert heading(d) == "Log in"
    assert flashes(d) == ["Unknown username or wrong password."]
    assert d.find_elements(By.ID, "who") == []  # not signed in

    fill_credentials(d, "alice", "alice-pass")
    shots("logged-in")
    assert heading(d) == "Your notes"
    assert flashes(d) == ["Welcome back, alice."]
    assert d.find_element(By.ID, "who").text == "alice"
    assert d.find_elements(By.CSS_SELECTOR, "ul.notes li") == []

    d.find_element(By.LINK_TEXT, "Write a new note").click()
    wait_until(d, "the new-note form", lambda d: heading(d) == "New note")
    form = d.find_element(By.CSS_SELECTOR, "main form")
    form.find_element(By.NAME, "title").send_keys("Seen by a browser")
    form.find_element(By.NAME, "body").send_keys("Written in headless Chromium.\nLine two.")
    shots("new-note-form")
    submit(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    shots("note-saved")
    assert heading(d) == "Seen by a browser"
    assert flashes(d) == ["Note saved."]
    assert d.find_element(By.CLASS_NAME, "note-body").text == (
        "Written in headless Chromium.\nLine two."
    )
    match = re.fullmatch(re.escape(notes_url) + r"/notes/(\d+)", d.current_url)
    assert match, d.current_url
    alices_note = d.current_url

    d.find_element(By.LINK_TEXT, "Back to all notes").click()
    wait_until(d, "the list", lambda d: heading(d) == "Your notes")
    shots("list")
    links = d.find_elements(By.CSS_SELECTOR, "ul.notes li a")
    assert [a.text for a in links] == ["Seen by a browser"]
    assert links[0].get_attribute("href") == alices_note

    log_out(d)
    shots("logged-out")
    assert heading(d) == "Log in"
    assert flashes(d) == ["You have been logged out."]
    assert d.find_elements(By.ID, "who") == []
    go(d, alices_note)  # signed out: sent to log in, the note not shown
    assert heading(d) == "Log in"
    assert "Written in headless Chromium." not in d.page_source

    go(d, notes_url + "/register")
    fill_credentials(d, "bob", "bob-pass")  # registers, then logs in
    fill_credentials(d, "bob", "bob-pass")
    assert d.find_element(By.ID, "who").text == "bob"
    assert d.find_elements(By.CSS_SELECTOR, "ul.notes li") == []  # Alice's note is not listed
    shots("second-user")
    go(d, alices_note)
    shots("another-users-note")
    assert heading(d) == "Page not found"
    assert "Written in headless Chromium." not in d.page_source
    assert "Seen by a browser" not in d.page_source

    go(d, notes_url + "/no/such/page")
    shots("missing-page")
    assert heading(d) == "Page not found"
    assert "There is nothing at /no/such/page." in d.find_element(By.TAG_NAME, "main").text


def live_titles(driver: WebDriver) -> list[str]:
    return [s.text for s in driver.find_elements(By.CSS_SELECTOR, "#live-notes li span")]


def test_public_note_appears_in_another_users_open_tab(
    browser: WebDriver, shots: Shots, notes_url: str
) -> None:
    """Issue 21's live view of the example: Bob's notes page is open in one tab; Alice, in
    another tab (another origin, ``localhost`` against ``127.0.0.1``, so the two tabs keep
    separate session cookies), writes a shared note and a private one. Bob's tab shows the
    shared title without a reload (Server-Sent Events on the in-process broadcast of the
    embedded default, one worker), and never the private one."""
    d = browser
    bob_tab = d.current_window_handle
    go(d, notes_url + "/register")
    fill_credentials(d, "bob", "bob-pass")
    fill_credentials(d, "bob", "bob-pass")
    assert heading(d) == "Your notes" and live_titles(d) == []
    # The stream is subscribed before its first bytes, and EventSource is OPEN only once they
    # arrived: from then on nothing published can be missed.
    wait_until(d, "Bob's live stream", lambda d: d.execute_script("return source.readyState") == 1)
    mark_page(d)

    d.switch_to.new_window("tab")
    alice_url = notes_url.replace("127.0.0.1", "localhost")
    go(d, alice_url + "/register")
    fill_credentials(d, "alice", "alice-pass")
    fill_credentials(d, "alice", "alice-pass")
    assert d.find_element(By.ID, "who").text == "alice"
    for title, shared in (("Kept to myself", False), ("<b>Shared</b> with everyone", True)):
        go(d, alice_url + "/notes/new")
        form = d.find_element(By.CSS_SELECTOR, "main form")
        form.find_element(By.NAME, "title").send_keys(title)
        form.find_element(By.NAME, "body").send_keys("The body stays with Alice.")
        if shared:
            form.find_element(By.NAME, "public").click()
        submit(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
        assert flashes(d) == ["Note saved."]
    shots("alice-wrote-two-notes")

    d.switch_to.window(bob_tab)
    wait_until(d, "the shared title in Bob's tab", lambda d: live_titles(d) != [])
    shots("bob-sees-the-shared-note")
    assert live_titles(d) == ["<b>Shared</b> with everyone"]  # as text, and only that one
    assert d.find_elements(By.CSS_SELECTOR, "#live-notes b") == []
    assert "by alice" in d.find_element(By.ID, "live-notes").text
    assert "The body stays with Alice." not in d.page_source
    assert same_page(d)  # no reload happened
    assert d.find_element(By.ID, "who").text == "bob"
    d.get("about:blank")  # close the stream while the server runs


# -- realtime across workers (issue 21) -------------------------------------------------------


@contextlib.contextmanager
def realtime_server(log: Path) -> Iterator[Server]:
    """``realtime_app`` under uvicorn with 2 workers, on a key prefix of its own in the machine's
    Redis; the prefix's keys are deleted after the server has stopped."""
    client = machine_redis_or_skip()
    prefix = f"test-browser-{uuid.uuid4().hex[:8]}:"
    port = free_port()
    cmd = [
        *tool("uvicorn"),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "2"),
        *("--log-level", "warning", "realtime_app:app"),
    ]
    env = {"RT_REDIS_URL": MACHINE_URL, "RT_PREFIX": prefix, "RT_BACKEND": "streams"}
    try:
        with Server(cmd, port, log, env) as server:
            server.wait_until_up("/pid")
            yield server
    finally:
        for key in client.scan_iter(prefix + "*"):
            client.delete(key)
        client.close()


def open_page(driver: WebDriver, url: str) -> str:
    """Load the channel page; return the pid of the worker serving its WebSocket, once the
    socket is subscribed (the ``hello`` frame)."""
    driver.get(url)
    wait_until(
        driver,
        "the page's WebSocket hello",
        lambda d: d.find_element(By.ID, "worker").text.isdigit(),
    )
    return driver.find_element(By.ID, "worker").text


def test_message_crosses_workers_in_a_browser(
    browser: WebDriver, shots: Shots, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = browser
    with realtime_server(tmp_path / "uvicorn.log") as server:
        channel = f"room-{uuid.uuid4().hex[:8]}"
        url = f"{server.base_url}/page/{channel}"
        first_tab = d.current_window_handle
        first_pid = open_page(d, url)

        d.switch_to.new_window("tab")
        second_tab = d.current_window_handle
        # The kernel hands each new connection to either worker: reload until the second
        # page's socket is on the other one (each try is a new WebSocket; bounded in count and
        # time).
        tries = 0
        deadline = time.monotonic() + 20.0
        second_pid = open_page(d, url)
        while second_pid == first_pid and tries < 60 and time.monotonic() < deadline:
            tries += 1
            second_pid = open_page(d, url)
        assert second_pid != first_pid, f"{tries + 1} loads all reached worker {first_pid}"
        with capsys.disabled():
            print(f"\n  [browser] the second page reached the other worker on load {tries + 1}")
        shots("second-page-on-other-worker")

        d.switch_to.window(first_tab)
        text = f"from worker {first_pid}: {uuid.uuid4().hex}"
        box = d.find_element(By.ID, "text")
        box.send_keys(text)
        shots("first-page-sending")
        d.find_element(By.CSS_SELECTOR, "#send button").click()

        def received(driver: WebDriver) -> list[str]:
            return [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#messages li")]

        wait_until(d, "the message on the sending page", lambda d: text in received(d))
        shots("first-page-received")
        d.switch_to.window(second_tab)
        wait_until(d, "the message on the other worker's page", lambda d: text in received(d))
        shots("second-page-received")
        assert received(d) == [text]  # once, and nothing else
        assert d.find_element(By.ID, "worker").text == second_pid  # still on the other worker
        d.switch_to.window(first_tab)
        assert received(d) == [text]
        # Close the sockets while the server runs, so its handlers finish before it stops.
        for handle in (second_tab, first_tab):
            d.switch_to.window(handle)
            d.get("about:blank")
