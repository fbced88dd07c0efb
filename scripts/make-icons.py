"""Draw the web app's icons (static/icons/*.png) from the logo's SVG, with Debian's Chromium.

The PNGs are committed; run this again only when the logo changes:
    scripts/loopback-only .venv/bin/python scripts/make-icons.py
`icon-*.png` is the logo as the page shows it (a rounded square, transparent corners); `maskable-512.png` fills
the whole square with the logo's blue and keeps the handset inside the middle 60% (the safe zone of a maskable
icon is the circle of 80%), so that a launcher may cut any shape out of it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import async_playwright

ICONS = Path(__file__).resolve().parent.parent / "src/peercall/server/static/icons"
BLUE = "#2563eb"
HANDSET = (
    "M8.2 5.5c.4 0 .8.3.9.7l.7 2.6c.1.4 0 .8-.3 1l-1.2 1a9.6 9.6 0 0 0 4.9 4.9l1-1.2c.3-.3.7-.4 1-.3l2.6.7"
    "c.4.1.7.5.7.9V18c0 .6-.4 1-1 1A13.5 13.5 0 0 1 5 6.5c0-.6.4-1 1-1z"
)


def svg(size: int, maskable: bool) -> str:
    if maskable:  # full bleed; the 24-unit handset scaled to 60% of the square, centred
        body = f'<rect width="24" height="24" fill="{BLUE}"/><g transform="translate(4.8 4.8) scale(.6)">'
        body += f'<path d="{HANDSET}" fill="white"/></g>'
    else:
        body = f'<rect width="24" height="24" rx="6" fill="{BLUE}"/><path d="{HANDSET}" fill="white"/>'
    return f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="{size}" height="{size}">{body}</svg>'


async def main() -> None:
    ICONS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        for name, size, maskable in (
            ("icon-192.png", 192, False),
            ("icon-512.png", 512, False),
            ("maskable-512.png", 512, True),
            ("apple-touch-icon.png", 180, True),  # iOS rounds the corners itself and shows no transparency
        ):
            page = await browser.new_page(viewport={"width": size, "height": size})
            await page.set_content(f'<body style="margin:0">{svg(size, maskable)}</body>')
            out = ICONS / name
            await page.locator("svg").screenshot(path=str(out), omit_background=True)
            await page.close()
            print(out, out.stat().st_size)
        await browser.close()


if __name__ == "__main__":
    asyncio.run(main())
