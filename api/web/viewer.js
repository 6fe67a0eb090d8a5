// The image viewer: the analysed image, the saliency map (from its grid) with adjustable opacity,
// ROI contours with their labels, and the clinician's corrections: prompt points and a box for the
// ROI correction endpoint, and two painted masks (missed lesions, regions to ignore) for feedback.
// Every canvas has the analysed image's size in pixels; CSS scales them together.

const LABEL_COLOURS = { malignant: "#ff4d4d", benign: "#ffd23f", normal: "#3ddc84" };
const PAINT_COLOURS = { missed: "rgba(255, 64, 160, 0.55)", ignore: "rgba(64, 160, 255, 0.55)" };

// A perceptual-ish ramp (dark blue -> cyan -> yellow -> red); alpha grows with the value so that
// low saliency leaves the image visible.
function heatColour(v) {
  const stops = [
    [0.0, [20, 30, 140]],
    [0.35, [0, 190, 220]],
    [0.65, [255, 220, 0]],
    [1.0, [230, 20, 20]],
  ];
  let i = 1;
  while (i < stops.length - 1 && v > stops[i][0]) i += 1;
  const [p0, c0] = stops[i - 1];
  const [p1, c1] = stops[i];
  const f = Math.min(1, Math.max(0, (v - p0) / (p1 - p0)));
  return c0.map((c, k) => Math.round(c + f * (c1[k] - c)));
}

function offscreen(width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  return canvas;
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("the image could not be decoded"));
    image.src = url;
  });
}

export class Viewer {
  constructor(root, onChange) {
    this.root = root;
    this.onChange = onChange;
    this.base = root.querySelector("[data-layer=base]");
    this.heat = root.querySelector("[data-layer=heat]");
    this.contours = root.querySelector("[data-layer=contours]");
    this.paint = root.querySelector("[data-layer=paint]");
    this.prompt = root.querySelector("[data-layer=prompt]");
    this.labels = root.querySelector("[data-layer=labels]");
    this.layers = [this.base, this.heat, this.contours, this.paint, this.prompt];
    this.tool = "none";
    this.brush = 20;
    this.reset(1, 1);
    this.prompt.addEventListener("pointerdown", (event) => this.pointerDown(event));
    this.prompt.addEventListener("pointermove", (event) => this.pointerMove(event));
    this.prompt.addEventListener("pointerup", (event) => this.pointerUp(event));
    this.prompt.addEventListener("pointercancel", () => { this.drag = null; this.drawPrompt(); });
    this.prompt.addEventListener("keydown", (event) => this.keyDown(event));
    this.prompt.addEventListener("focus", () => this.drawPrompt());
    this.prompt.addEventListener("blur", () => this.drawPrompt());
  }

  reset(width, height) {
    this.width = width;
    this.height = height;
    for (const canvas of this.layers) {
      canvas.width = width;
      canvas.height = height;
    }
    this.masks = { missed: offscreen(width, height), ignore: offscreen(width, height) };
    this.painted = { missed: false, ignore: false };
    this.points = [];
    this.box = null;
    this.drag = null;
    this.cursor = { x: Math.round(width / 2), y: Math.round(height / 2) };
    this.labels.replaceChildren();
    this.root.style.aspectRatio = `${width} / ${height}`;
  }

  async show(imageUrl, analysis) {
    const image = await loadImage(imageUrl);
    this.reset(image.naturalWidth, image.naturalHeight);
    this.brush = Math.max(4, Math.round(Math.max(this.width, this.height) / 40));
    this.base.getContext("2d").drawImage(image, 0, 0);
    this.drawSaliency(analysis.saliency);
    this.drawPrompt();
    this.root.dataset.loaded = "true";
    return image;
  }

  drawSaliency(saliency) {
    const context = this.heat.getContext("2d");
    context.clearRect(0, 0, this.width, this.height);
    if (!saliency || !saliency.grid || !saliency.grid.length) return false;
    const rows = saliency.grid.length;
    const cols = saliency.grid[0].length;
    const small = offscreen(cols, rows);
    const pixels = small.getContext("2d").createImageData(cols, rows);
    saliency.grid.forEach((row, y) => row.forEach((value, x) => {
      const v = Math.min(1, Math.max(0, Number(value) || 0));
      const [r, g, b] = heatColour(v);
      const at = (y * cols + x) * 4;
      pixels.data.set([r, g, b, Math.round(255 * Math.min(1, 0.15 + v))], at);
    }));
    small.getContext("2d").putImageData(pixels, 0, 0);
    context.imageSmoothingEnabled = true;
    context.imageSmoothingQuality = "high";
    context.drawImage(small, 0, 0, this.width, this.height);
    return true;
  }

  setOpacity(value) {
    this.heat.style.opacity = String(value);
  }

  setContoursVisible(visible) {
    this.contours.hidden = !visible;
    this.labels.hidden = !visible;
  }

  // ROI outlines from each ROI's mask (image-sized), or its box when the mask is unavailable.
  async drawRois(rois, maskUrl, describe) {
    const context = this.contours.getContext("2d");
    context.clearRect(0, 0, this.width, this.height);
    this.labels.replaceChildren();
    const thickness = Math.max(2, Math.round(Math.max(this.width, this.height) / 250));
    for (const roi of rois || []) {
      const colour = LABEL_COLOURS[roi.label] || "#ffffff";
      let drawn = false;
      const url = await maskUrl(roi).catch(() => null);
      if (url) {
        const mask = await loadImage(url).catch(() => null);
        URL.revokeObjectURL(url);
        if (mask && mask.naturalWidth === this.width && mask.naturalHeight === this.height) {
          this.traceMask(context, mask, colour, thickness);
          drawn = true;
        }
      }
      const { x0, y0, x1, y1 } = roi.box;
      if (!drawn) {
        context.strokeStyle = colour;
        context.lineWidth = thickness;
        context.strokeRect(x0, y0, x1 - x0 + 1, y1 - y0 + 1);
      }
      const chip = document.createElement("span");
      chip.className = `roi-chip roi-${roi.label}`;
      chip.textContent = describe(roi);
      chip.style.left = `${(100 * x0) / this.width}%`;
      if (roi.source === "correction") {
        // Below its box: a correction usually overlaps the automatic ROI it corrects.
        chip.classList.add("below");
        chip.style.top = `${(100 * (y1 + 1)) / this.height}%`;
      } else chip.style.top = `${(100 * y0) / this.height}%`;
      this.labels.append(chip);
    }
  }

  traceMask(context, mask, colour, thickness) {
    const scratch = offscreen(this.width, this.height);
    const scratchContext = scratch.getContext("2d", { willReadFrequently: true });
    scratchContext.drawImage(mask, 0, 0);
    const { data } = scratchContext.getImageData(0, 0, this.width, this.height);
    const inside = (x, y) => x >= 0 && y >= 0 && x < this.width && y < this.height && data[(y * this.width + x) * 4] > 127;
    context.fillStyle = colour;
    const half = Math.floor(thickness / 2);
    for (let y = 0; y < this.height; y += 1) {
      for (let x = 0; x < this.width; x += 1) {
        if (inside(x, y) && !(inside(x - 1, y) && inside(x + 1, y) && inside(x, y - 1) && inside(x, y + 1))) {
          context.fillRect(x - half, y - half, thickness, thickness);
        }
      }
    }
  }

  setTool(tool) {
    this.tool = tool;
    this.drag = null;
    this.prompt.dataset.tool = tool;
    this.drawPrompt();
  }

  setBrush(size) {
    this.brush = Number(size);
  }

  imagePoint(event) {
    const rect = this.prompt.getBoundingClientRect();
    const x = ((event.clientX - rect.left) / rect.width) * this.width;
    const y = ((event.clientY - rect.top) / rect.height) * this.height;
    return { x: Math.min(this.width - 1, Math.max(0, Math.round(x))), y: Math.min(this.height - 1, Math.max(0, Math.round(y))) };
  }

  pointerDown(event) {
    if (this.tool === "none" || event.button > 0) return;
    event.preventDefault();
    this.prompt.setPointerCapture(event.pointerId);
    const point = this.imagePoint(event);
    this.cursor = point;
    if (this.tool === "box") this.drag = { start: point, end: point };
    else if (this.isPaintTool()) {
      this.drag = { last: point };
      this.stroke(point, point);
    } else this.drag = { click: point };
    this.drawPrompt();
  }

  pointerMove(event) {
    if (!this.drag) return;
    const point = this.imagePoint(event);
    this.cursor = point;
    if (this.drag.start) this.drag.end = point;
    else if (this.drag.last) {
      this.stroke(this.drag.last, point);
      this.drag.last = point;
    }
    this.drawPrompt();
  }

  pointerUp(event) {
    if (!this.drag) return;
    const point = this.imagePoint(event);
    if (this.drag.start) this.setBox(this.drag.start, point);
    else if (this.drag.click) this.addPoint(point);
    this.drag = null;
    this.drawPrompt();
    this.onChange();
  }

  keyDown(event) {
    const step = Math.max(1, Math.round(Math.max(this.width, this.height) / (event.shiftKey ? 20 : 100)));
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (moves[event.key]) {
      event.preventDefault();
      const [dx, dy] = moves[event.key];
      const previous = { ...this.cursor };
      this.cursor = {
        x: Math.min(this.width - 1, Math.max(0, this.cursor.x + dx)),
        y: Math.min(this.height - 1, Math.max(0, this.cursor.y + dy)),
      };
      if (this.drag?.keyboardPaint) this.stroke(previous, this.cursor);
      if (this.drag?.start) this.drag.end = { ...this.cursor };
      this.drawPrompt();
      return;
    }
    if (event.key === "Escape") {
      if (this.drag) {
        event.preventDefault();
        this.drag = null;
        this.drawPrompt();
      }
      return;
    }
    if (event.key !== "Enter" && event.key !== " ") return;
    if (this.tool === "none") return;
    event.preventDefault();
    const point = { ...this.cursor };
    if (this.tool === "box") {
      // First press: one corner; second press: the opposite corner.
      if (this.drag?.start) {
        this.setBox(this.drag.start, point);
        this.drag = null;
      } else this.drag = { start: point, end: point };
    } else if (this.isPaintTool()) {
      // Enter or Space toggles painting while the arrow keys move the brush.
      if (this.drag?.keyboardPaint) this.drag = null;
      else {
        this.drag = { keyboardPaint: true };
        this.stroke(point, point);
      }
    } else this.addPoint(point);
    this.drawPrompt();
    this.onChange();
  }

  isPaintTool() {
    return this.tool === "missed" || this.tool === "ignore" || this.tool === "erase";
  }

  addPoint(point) {
    if (this.points.length >= 20) this.points.shift(); // the endpoint takes at most 20 clicks
    this.points.push({ x: point.x, y: point.y, positive: this.tool !== "negative" });
  }

  setBox(a, b) {
    const box = { x0: Math.min(a.x, b.x), y0: Math.min(a.y, b.y), x1: Math.max(a.x, b.x), y1: Math.max(a.y, b.y) };
    if (box.x1 - box.x0 < 3 || box.y1 - box.y0 < 3) return; // a click, not a box
    this.box = box;
  }

  stroke(from, to) {
    const width = this.brush;
    const draw = (context, style, erase) => {
      context.save();
      context.globalCompositeOperation = erase ? "destination-out" : "source-over";
      context.strokeStyle = style;
      context.lineWidth = width;
      context.lineCap = "round";
      context.lineJoin = "round";
      context.beginPath();
      context.moveTo(from.x, from.y);
      context.lineTo(to.x + 0.01, to.y);
      context.stroke();
      context.restore();
    };
    if (this.tool === "erase") {
      draw(this.masks.missed.getContext("2d"), "#fff", true);
      draw(this.masks.ignore.getContext("2d"), "#fff", true);
    } else {
      const other = this.tool === "missed" ? "ignore" : "missed";
      draw(this.masks[this.tool].getContext("2d"), "#fff", false);
      draw(this.masks[other].getContext("2d"), "#fff", true); // a pixel is one kind or the other
      this.painted[this.tool] = true;
    }
    this.drawPaint();
  }

  drawPaint() {
    const context = this.paint.getContext("2d");
    context.clearRect(0, 0, this.width, this.height);
    for (const kind of ["missed", "ignore"]) {
      const tinted = offscreen(this.width, this.height);
      const tintContext = tinted.getContext("2d");
      tintContext.drawImage(this.masks[kind], 0, 0);
      tintContext.globalCompositeOperation = "source-in";
      tintContext.fillStyle = PAINT_COLOURS[kind];
      tintContext.fillRect(0, 0, this.width, this.height);
      context.drawImage(tinted, 0, 0);
    }
  }

  drawPrompt() {
    const context = this.prompt.getContext("2d");
    context.clearRect(0, 0, this.width, this.height);
    const unit = Math.max(2, Math.round(Math.max(this.width, this.height) / 200));
    const box = this.drag?.start ? this.normalised(this.drag.start, this.drag.end) : this.box;
    if (box) {
      context.setLineDash([unit * 3, unit * 2]);
      context.lineWidth = unit;
      context.strokeStyle = "#00e5ff";
      context.strokeRect(box.x0, box.y0, box.x1 - box.x0, box.y1 - box.y0);
      context.setLineDash([]);
    }
    for (const point of this.points) {
      context.beginPath();
      context.arc(point.x, point.y, unit * 3, 0, 2 * Math.PI);
      context.fillStyle = point.positive ? "#00c853" : "#ff1744";
      context.fill();
      context.lineWidth = unit;
      context.strokeStyle = "#ffffff";
      context.stroke();
      context.fillStyle = "#ffffff";
      context.fillRect(point.x - unit * 2, point.y - unit / 2, unit * 4, unit);
      if (point.positive) context.fillRect(point.x - unit / 2, point.y - unit * 2, unit, unit * 4);
    }
    // The keyboard cursor, while the image has the focus and a tool is selected.
    if (document.activeElement === this.prompt && this.tool !== "none") {
      const { x, y } = this.cursor;
      context.lineWidth = unit;
      context.strokeStyle = "#ffffff";
      if (this.isPaintTool()) {
        context.beginPath();
        context.arc(x, y, this.brush / 2, 0, 2 * Math.PI);
        context.stroke();
      } else {
        context.beginPath();
        context.moveTo(x - unit * 6, y);
        context.lineTo(x + unit * 6, y);
        context.moveTo(x, y - unit * 6);
        context.lineTo(x, y + unit * 6);
        context.stroke();
      }
    }
  }

  normalised(a, b) {
    return { x0: Math.min(a.x, b.x), y0: Math.min(a.y, b.y), x1: Math.max(a.x, b.x), y1: Math.max(a.y, b.y) };
  }

  promptBody() {
    const body = {};
    if (this.points.length) body.points = this.points.map((p) => ({ ...p }));
    if (this.box) body.box = { ...this.box };
    return Object.keys(body).length ? body : null;
  }

  clearPrompt() {
    this.points = [];
    this.box = null;
    this.drag = null;
    this.drawPrompt();
    this.onChange();
  }

  clearPaint() {
    for (const kind of ["missed", "ignore"]) {
      this.masks[kind].getContext("2d").clearRect(0, 0, this.width, this.height);
      this.painted[kind] = false;
    }
    this.drawPaint();
    this.onChange();
  }

  // A painted mask as a base64 PNG of the image's size: white where painted, black elsewhere.
  maskPng(kind) {
    const canvas = offscreen(this.width, this.height);
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.fillStyle = "#000";
    context.fillRect(0, 0, this.width, this.height);
    context.drawImage(this.masks[kind], 0, 0);
    const pixels = context.getImageData(0, 0, this.width, this.height).data;
    let any = false;
    for (let i = 0; i < pixels.length; i += 4) {
      if (pixels[i] > 0) {
        any = true;
        break;
      }
    }
    return any ? canvas.toDataURL("image/png").split(",")[1] : null;
  }
}
