"""Screenshots of the web page for the README: ``docs/web-PAGE-WIDTH.png``.

Starts a throwaway ``loft serve`` on loopback (``tools.localserver``), fills a user's
workspace through the web page's own routes, and photographs the main pages in
headless Chromium at a desktop and a phone width. Needs Debian's ``chromium`` and
``chromium-driver`` (tools/dev/setup.sh) and the test extras (Selenium).

    .venv/bin/python tools/dev/screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import re
import shutil
import tempfile
from pathlib import Path

import httpx
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tools.localserver import PASSWORD, LocalServer, Stores

WIDTHS = {"desktop": (1280, 800), "phone": (390, 844)}
FILES = {
    "/Photos/beach.jpg": b"\xff\xd8\xff" + bytes(300_000),
    "/Photos/summit.png": b"\x89PNG" + bytes(1_200_000),
    "/Reports/2026 budget.pdf": b"%PDF-1.4" + bytes(2_500_000),
    "/Reports/notes.txt": b"first draft\n",
    "/todo.md": b"- ship the web page\n",
}


def _csrf(client: httpx.Client) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/files/").text)
    assert found
    return found[1]


def fill(url: str, user: str) -> None:
    """Sign in over HTTP and upload ``FILES`` (notes.txt twice, for its versions)."""
    with httpx.Client(base_url=url, timeout=60) as client:
        nonce = re.search(r'name="nonce" value="([^"]+)"', client.get("/signin").text)
        assert nonce
        client.post("/signin", data={"nonce": nonce[1], "user": user, "password": PASSWORD})
        headers = {"X-CSRF-Token": _csrf(client), "Accept": "application/json"}
        uploads = [*FILES.items(), ("/Reports/notes.txt", b"second draft, longer\n")]
        for path, data in uploads:
            started = client.post("/upload", json={"path": path, "size": len(data)},
                                  headers=headers).json()
            client.put(f"/upload/{started['id']}?offset=0", content=data, headers=headers)
            client.post(f"/upload/{started['id']}/finish", headers=headers)
        client.post("/links", data={"csrf": headers["X-CSRF-Token"], "path": "/Photos",
                                    "days": "7", "password": ""})


def shoot(url: str, user: str, out: Path) -> list[Path]:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(
        service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
        options=options)
    saved: list[Path] = []
    try:
        for label, (width, height) in WIDTHS.items():
            driver.set_window_size(width, height)
            driver.delete_all_cookies()
            driver.get(f"{url}/signin")
            saved.append(_save(driver, out / f"web-signin-{label}.png"))
            driver.find_element(By.ID, "user").send_keys(user)
            driver.find_element(By.ID, "password").send_keys(PASSWORD)
            driver.find_element(By.CSS_SELECTOR, "form[action='/signin'] button").click()
            for page, path in (("files", "/files/"), ("folder", "/files/Reports/"),
                               ("versions", "/versions/Reports/notes.txt"),
                               ("links", "/links")):
                driver.get(url + path)
                if page == "folder":  # an entry's actions, opened
                    driver.find_elements(By.TAG_NAME, "summary")[0].click()
                saved.append(_save(driver, out / f"web-{page}-{label}.png"))
    finally:
        driver.quit()
    return saved


def _save(driver: webdriver.Chrome, path: Path) -> Path:
    driver.save_screenshot(str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs", help="where the PNG files go (default docs)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        server = LocalServer(Stores(Path(tmp) / "data"))
        server.start()
        try:
            server.add_user("ada")
            fill(server.url, "ada")
            for path in shoot(server.url, "ada", out):
                print(path)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
