"""Synthetic scanner screenshots: an ultrasound scan pasted into a screen of menus, text and rulers,
with a sonographer's calipers and measurement on its lesion. They test screen cropping
(tests/test_screen.py) and measure what it buys (`python -m ml.evaluate out-of-fold --as-screenshot`).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PASTE_AT = (212, 96)  # x, y of the scan's top-left corner in the screenshot
MENU = ["Gain 54", "Depth 4.0 cm", "Freq 12 MHz", "Focus 1", "DR 66", "Map C", "Persist 3", "Frame rate 31",
        "Patient: ANON", "Breast L 2 o'clock"]


def scanner_screenshot(scan: np.ndarray, at: tuple[int, int] = PASTE_AT,
                       size: tuple[int, int] | None = None) -> np.ndarray:
    """A scanner screen: black, a grey menu panel full of text on the left, a title bar with a
    logo, a grey-scale bar and a depth ruler beside the scan, text above and under it, and the scan
    itself at `at`. `size` (height, width) defaults to 640 x 860, grown to fit the scan."""
    x, y = at
    scan_h, scan_w = scan.shape
    height, width = size or (max(640, y + scan_h + 40, y + 266), max(860, x + scan_w + 70))
    screen = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(screen)
    font = ImageFont.load_default()
    draw.rectangle((0, 0, width - 1, 40), fill=50)  # title bar
    draw.text((12, 12), "ACME SONO 9000   GEN  B-MODE  12L-RS  MI 1.1  TIs 0.4", fill=255, font=font)
    draw.ellipse((width - 60, 5, width - 30, 35), fill=200)  # logo
    draw.text((width - 52, 14), "AC", fill=0, font=font)
    draw.rectangle((0, 41, 170, height - 1), fill=35)  # menu panel
    for row, line in enumerate(MENU * ((height - 55) // (18 * len(MENU)) + 1)):
        draw.text((10, 55 + row * 18), line, fill=230, font=font)
    for row in range(256):  # grey-scale bar right of the scan
        draw.line((x + scan_w + 40, y + row, x + scan_w + 52, y + row), fill=row)
    for tick in range(0, scan_h, 10):  # depth ruler, 6 px from the scan's right edge
        length = 10 if tick % 50 == 0 else 5
        draw.line((x + scan_w + 6, y + tick, x + scan_w + 6 + length, y + tick), fill=255)
    draw.text((x, y + scan_h + 12), "L BREAST  RADIAL  2:00  3 CM FN", fill=255, font=font)
    draw.text((x, y - 20), "DEPTH 4.0cm   27 Hz", fill=220, font=font)
    pixels = np.array(screen)
    pixels[y : y + scan_h, x : x + scan_w] = scan
    return pixels


def draw_calipers(gray: np.ndarray, points: list[tuple[int, int]], arm: int = 5, value: int = 255) -> np.ndarray:
    """Bright "+" marks of half-width `arm` centred on each (x, y), clipped to the image."""
    marked = gray.copy()
    for x, y in points:
        marked[max(y - arm, 0) : y + arm + 1, x] = value
        marked[y, max(x - arm, 0) : x + arm + 1] = value
    return marked


def measured_scan(scan: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """The scan as a sonographer leaves it: calipers at the two ends of the lesion's widest row
    and its measurement written in the scan's lower left corner; unchanged without a lesion."""
    rows = np.flatnonzero(lesion.any(axis=1))
    if not rows.size:
        return scan
    widths = [np.ptp(np.flatnonzero(lesion[row])) for row in rows]
    row = int(rows[int(np.argmax(widths))])
    columns = np.flatnonzero(lesion[row])
    marked = draw_calipers(scan, [(int(columns[0]), row), (int(columns[-1]), row)])
    picture = Image.fromarray(marked)
    ImageDraw.Draw(picture).text((8, scan.shape[0] - 16), f"D1 {np.ptp(columns) / 50:.2f} cm", fill=255,
                                 font=ImageFont.load_default())
    return np.array(picture)
