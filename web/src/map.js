// The map: Leaflet when the server carries it (window.L, loaded before this module), else
// an SVG grid of our own. Both draw the marks model.js computes (mapMarks) and say where
// each is drawn (positions(), for the end-to-end tests). The grid's geometry (gridLayout) is
// pure and unit-tested; nothing here touches the DOM until a view is made.

const SVG = 'http://www.w3.org/2000/svg';

/// The view for `element`: Leaflet unless it is missing or `plain` (`?view=grid`) asks for
/// the grid. `onTilesFailed()`: no tile server answered (Leaflet drops the tiles).
export function createMapView(element, config, { plain, onTilesFailed }) {
  return window.L && !plain ? new LeafletView(element, config, onTilesFailed) : new GridView(element);
}

/// Leaflet: tiles when configured and reachable, a grid beneath them, a scale.
class LeafletView {
  constructor(element, config, onTilesFailed) {
    const L = window.L;
    this.kind = 'leaflet';
    this.map = L.map(element, { worldCopyJump: true }).setView([20, 0], 2);
    const Grid = L.GridLayer.extend({
      createTile() {
        const tile = document.createElement('div');
        tile.style.outline = '1px solid rgba(0,0,0,0.12)';
        return tile;
      },
    });
    new Grid().addTo(this.map);
    if (config.tile_url) {
      this.tiles = L.tileLayer(config.tile_url, { maxZoom: 19, attribution: config.tile_attribution });
      this.tiles.once('tileload', () => {
        this.tilesLoaded = true;
      });
      this.tiles.on('tileerror', () => {
        // No tile server at all: stop asking, the grid and the scale still work. (Once
        // tiles have loaded, a failure is a passing network problem: keep them.)
        if (this.tilesLoaded || !this.map.hasLayer(this.tiles)) return;
        this.map.removeLayer(this.tiles);
        onTilesFailed();
      });
      this.tiles.addTo(this.map);
    }
    L.control.scale({ imperial: false }).addTo(this.map);
    this.marks = new Map();
    this.follow = true;
    this.map.on('dragstart zoomstart', () => {
      if (!this.fitting) this.follow = false;
    });
  }

  render(marks) {
    const L = window.L;
    const seen = new Set();
    for (const mark of marks) {
      seen.add(mark.id);
      let drawn = this.marks.get(mark.id);
      if (!drawn) {
        drawn = {
          accuracy: L.circle([mark.lat, mark.lng], { radius: mark.accuracy, weight: 1, interactive: false }),
          dot: L.circleMarker([mark.lat, mark.lng], { radius: 9, weight: 2, color: '#fff', fillOpacity: 1 }),
        };
        // Leaflet inserts string content as HTML: names go in as text nodes only.
        drawn.label = document.createElement('span');
        drawn.dot.bindTooltip(drawn.label, { permanent: true, direction: 'right', className: 'name', offset: [10, 0] });
        drawn.accuracy.addTo(this.map);
        drawn.dot.addTo(this.map);
        this.marks.set(mark.id, drawn);
      }
      drawn.dot.setLatLng([mark.lat, mark.lng]);
      drawn.dot.setStyle({ fillColor: mark.colour, opacity: mark.opacity, fillOpacity: mark.opacity });
      drawn.label.textContent = mark.name;
      drawn.dot.getTooltip()?.setOpacity(Math.max(0.4, mark.opacity));
      drawn.accuracy.setLatLng([mark.lat, mark.lng]).setRadius(mark.accuracy);
      drawn.accuracy.setStyle({ color: mark.colour, fillColor: mark.colour, opacity: 0.4 * mark.opacity, fillOpacity: 0.1 * mark.opacity });
      drawn.dot.getElement()?.setAttribute('aria-label', mark.title);
    }
    for (const [id, drawn] of this.marks) {
      if (seen.has(id)) continue;
      this.map.removeLayer(drawn.dot);
      this.map.removeLayer(drawn.accuracy);
      this.marks.delete(id);
    }
    if (this.follow && marks.length) this.fit(marks);
  }

  /// Each person's trail, faint, in their colour.
  renderTrails(lines) {
    const L = window.L;
    this.trails = this.trails || new Map();
    const seen = new Set();
    for (const line of lines) {
      seen.add(line.id);
      let drawn = this.trails.get(line.id);
      if (!drawn) {
        drawn = L.polyline(line.points, { weight: 3, opacity: 0.35, interactive: false }).addTo(this.map);
        this.trails.set(line.id, drawn);
      }
      drawn.setLatLngs(line.points);
      drawn.setStyle({ color: line.colour });
    }
    for (const [id, drawn] of this.trails) {
      if (seen.has(id)) continue;
      this.map.removeLayer(drawn);
      this.trails.delete(id);
    }
  }

  /// The next tap on the map, as `{lat, lng}`, to `then` (dropping a pin).
  pick(then) {
    this.map.once('click', (event) => then({ lat: event.latlng.lat, lng: event.latlng.lng }));
  }

  fit(marks) {
    const bounds = window.L.latLngBounds(marks.map((m) => [m.lat, m.lng]));
    this.fitting = true;
    this.map.fitBounds(bounds.pad(0.3), { maxZoom: 16, animate: false });
    this.fitting = false;
  }

  positions() {
    return Object.fromEntries([...this.marks].map(([id, d]) => {
      const at = d.dot.getLatLng();
      return [id, [at.lat, at.lng, d.dot.options.fillOpacity]];
    }));
  }
}

/// No map library: an SVG with everyone around their centre, a metric grid and a scale.
class GridView {
  constructor(element) {
    this.kind = 'grid';
    element.classList.add('grid-map');
    this.element = element;
    this.svg = document.createElementNS(SVG, 'svg');
    element.append(this.svg);
    this.marks = [];
  }

  render(marks) {
    this.marks = marks;
    const width = this.element.clientWidth || 320;
    const height = this.element.clientHeight || 260;
    this.svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
    const parts = [];
    const add = (name, attributes, text) => {
      const node = svgNode(name, attributes, text);
      parts.push(node);
      return node;
    };
    const layout = gridLayout(marks, width, height);
    if (!layout) {
      add('text', { x: 12, y: 24 }, 'Waiting for positions…');
      this.svg.replaceChildren(...parts);
      return;
    }
    for (const x of layout.columns) {
      add('line', { x1: x, y1: 0, x2: x, y2: height, stroke: '#c9d0d6', 'stroke-width': 1 });
    }
    for (const y of layout.rows) {
      add('line', { x1: 0, y1: y, x2: width, y2: y, stroke: '#c9d0d6', 'stroke-width': 1 });
    }
    for (const p of layout.points) {
      const group = add('g', { opacity: p.opacity, 'data-user-id': p.id });
      group.append(
        svgNode('title', {}, p.title),
        svgNode('circle', { cx: p.cx, cy: p.cy, r: p.r, fill: p.colour, 'fill-opacity': 0.12, stroke: p.colour, 'stroke-opacity': 0.5 }),
        svgNode('circle', { cx: p.cx, cy: p.cy, r: 9, fill: p.colour, stroke: '#fff', 'stroke-width': 2 }),
        svgNode('text', { x: p.cx + 13, y: p.cy + 4 }, p.name),
      );
    }
    // The scale: one grid step.
    const barY = height - 14;
    add('line', { x1: 12, y1: barY, x2: 12 + layout.bar.length, y2: barY, stroke: '#1d2327', 'stroke-width': 3 });
    add('text', { x: 12, y: barY - 6 }, layout.bar.label);
    this.svg.replaceChildren(...parts);
  }

  positions() {
    return Object.fromEntries(this.marks.map((m) => [m.id, [m.lat, m.lng, m.opacity]]));
  }

  /// The grid draws no trails (Leaflet does).
  renderTrails() {}
}

/// An SVG element with its attributes and, if given, its text (always as text).
function svgNode(name, attributes, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

/// Where the grid view draws `marks` in a `width` x `height` picture: everyone around
/// their centre, at least 200 m out from it, with a margin; grid lines every "nice"
/// distance, about five across (`columns`' x and `rows`' y); each mark's centre (`cx`,
/// `cy`) and accuracy radius (`r`) in pixels; the scale bar (one grid step). Null when
/// there is nothing to draw.
export function gridLayout(marks, width, height) {
  if (!marks.length) return null;
  // Metres east and north of the centre of everyone.
  const lat0 = marks.reduce((s, m) => s + m.lat, 0) / marks.length;
  const lng0 = marks.reduce((s, m) => s + m.lng, 0) / marks.length;
  const perDegreeLat = 110540;
  const perDegreeLng = 111320 * Math.cos((lat0 * Math.PI) / 180);
  const metres = marks.map((m) => ({ ...m, x: (m.lng - lng0) * perDegreeLng, y: (m.lat - lat0) * perDegreeLat }));
  const extent = Math.max(200, ...metres.map((p) => Math.max(Math.abs(p.x), Math.abs(p.y)) + p.accuracy));
  const scale = (Math.min(width, height) / 2 - 30) / extent; // pixels per metre
  const toX = (x) => width / 2 + x * scale;
  const toY = (y) => height / 2 - y * scale;
  const step = niceDistance(extent / 2.5);
  const columns = [];
  for (let d = -Math.ceil(width / 2 / scale / step) * step; d * scale <= width / 2; d += step) columns.push(toX(d));
  const rows = [];
  for (let d = -Math.ceil(height / 2 / scale / step) * step; d * scale <= height / 2; d += step) rows.push(toY(d));
  const points = metres.map((p) => ({ ...p, cx: toX(p.x), cy: toY(p.y), r: Math.max(0, p.accuracy * scale) }));
  const bar = { length: step * scale, label: step >= 1000 ? `${step / 1000} km` : `${step} m` };
  return { columns, rows, points, bar };
}

/// 1, 2 or 5 times a power of ten, nearest `metres`.
export function niceDistance(metres) {
  const power = 10 ** Math.floor(Math.log10(metres));
  const scaled = metres / power;
  return (scaled < 1.5 ? 1 : scaled < 3.5 ? 2 : scaled < 7.5 ? 5 : 10) * power;
}
