"""The web page in a real headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium), against a real server and a real mount of
the same user: sign in (a wrong password first), upload with the progress bar (and
the network dropped half way), the file on the mounted device, download it back,
restore an old version and see it on the device, and an expired session sent back to
sign in.

One long test, because a browser costs seconds to start: the CI budget keeps these few.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.conftest import PASSWORD, NewMount, Server
from tests.polling import wait_for

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def chromium(downloads: Path, width: int = 1280, height: int = 900) -> webdriver.Chrome:
    """A headless Chromium that saves downloads into ``downloads``."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {
        "download.default_directory": str(downloads), "download.prompt_for_download": False})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = chromium(downloads)
    yield driver
    driver.quit()


def sign_in(driver: webdriver.Chrome, url: str, user: str, password: str) -> None:
    driver.find_element(By.ID, "user").clear()
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form[action='/signin'] button").click()


def alert_text(driver: webdriver.Chrome) -> str:
    """The text of the page's ``[role=alert]`` element, "" while there is none (or the
    page is being replaced)."""
    try:
        found = driver.find_elements(By.CSS_SELECTOR, "[role=alert]")
        return found[0].text if found else ""
    except StaleElementReferenceException:
        return ""


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_sign_in_upload_see_on_device_download_restore_and_expire(
    browser: webdriver.Chrome, new_mount: NewMount, mount_server: Server, tmp_path: Path,
) -> None:
    mount = new_mount()
    user, url = mount.device.user, mount_server.url

    # Sign in: a wrong password is refused on the page, the right one lands on the files.
    browser.get(f"{url}/files/")
    assert browser.current_url.startswith(f"{url}/signin?next=")
    sign_in(browser, url, user, "wrong password")
    wait_for(lambda: "Wrong user name or password" in alert_text(browser), 10,
             "the refusal on the page")  # the click returns before the answer is shown
    sign_in(browser, url, user, PASSWORD)
    wait_for(lambda: browser.current_url == f"{url}/files/", 10, "the files page")

    # Upload 40 MiB at a throttled pace, so that the progress bar is seen moving.
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(40 << 20))
    browser.set_network_conditions(offline=False, latency=1, download_throughput=-1,
                                   upload_throughput=8 << 20)
    browser.find_element(By.ID, "upload-files").send_keys(str(local))
    wait_for(lambda: 0 < float(browser.find_element(By.ID, "upload-progress")
                               .get_attribute("value") or 0) < (40 << 20), 20,
             "the progress bar part way")
    # The network drops mid-upload: the page notices, waits, and resumes where the
    # server says it got to.
    browser.set_network_conditions(offline=True, latency=0, download_throughput=-1,
                                   upload_throughput=-1)
    wait_for(lambda: "Connection lost" in browser.find_element(By.ID, "upload-text").text,
             30, "the page to notice the dropped connection")
    browser.delete_network_conditions()
    wait_for(lambda: browser.find_elements(By.LINK_TEXT, "big.bin")
             or browser.find_elements(By.PARTIAL_LINK_TEXT, "big.bin"), 60,
             "big.bin listed after the upload")
    on_device = mount.path / "big.bin"
    wait_for(lambda: on_device.exists() and on_device.stat().st_size == local.stat().st_size,
             30, "big.bin on the mounted device")
    assert digest(on_device) == digest(local)

    # Download it back through its Actions menu.
    row = browser.find_element(By.XPATH, "//tr[.//a[contains(., 'big.bin')]]")
    row.find_element(By.TAG_NAME, "summary").click()
    row.find_element(By.LINK_TEXT, "Download").click()
    saved = tmp_path / "downloads" / "big.bin"
    wait_for(lambda: saved.exists() and saved.stat().st_size == local.stat().st_size, 60,
             "the download")
    assert digest(saved) == digest(local)

    # A new version from the device; the old one restored from the page.
    (mount.path / "notes.txt").write_text("first\n")
    browser.get(f"{url}/files/")
    wait_for(lambda: _listed(browser, url, "notes.txt"), 30, "notes.txt from the device")
    (mount.path / "notes.txt").write_text("second\n")
    browser.get(f"{url}/versions/notes.txt")
    wait_for(lambda: _versions(browser, url) >= 2, 30, "the second version on the server")
    browser.find_element(By.XPATH, "//form[@action='/act/restore']//button").click()
    wait_for(lambda: "Restored." in browser.page_source, 10, "the restore")
    wait_for(lambda: (mount.path / "notes.txt").read_text() == "first\n", 30,
             "the restored version on the device")

    # An expired session is sent back to sign in.
    db = sqlite3.connect(mount_server.stores.data / "metadata.db")
    with db:
        db.execute("UPDATE tokens SET expires = 1 WHERE device LIKE 'web-%' AND user_id ="
                   " (SELECT id FROM users WHERE name = ?)", (user,))
    db.close()
    browser.get(f"{url}/files/")
    assert browser.current_url.startswith(f"{url}/signin?next=")
    assert browser.find_element(By.ID, "password").get_attribute("type") == "password"


def _listed(browser: webdriver.Chrome, url: str, name: str) -> bool:
    browser.get(f"{url}/files/")
    return bool(browser.find_elements(By.PARTIAL_LINK_TEXT, name))


def _versions(browser: webdriver.Chrome, url: str) -> int:
    browser.get(f"{url}/versions/notes.txt")
    return len(browser.find_elements(By.CSS_SELECTOR, "table.versions tbody tr"))
