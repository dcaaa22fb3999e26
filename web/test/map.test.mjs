// The plain grid view's geometry (gridLayout in web/src/map.js, pure; the views themselves
// need a browser and are driven by tests/browser).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { gridLayout, niceDistance } from '../src/map.js';

const mark = (id, lat, lng, accuracy = 0) => ({ id, lat, lng, accuracy, colour: '#000', name: id, opacity: 1, title: id });

test('grid steps are 1, 2 or 5 times a power of ten', () => {
  assert.equal(niceDistance(80), 100);
  assert.equal(niceDistance(140), 100);
  assert.equal(niceDistance(160), 200);
  assert.equal(niceDistance(400), 500);
  assert.equal(niceDistance(3000), 2000);
  assert.equal(niceDistance(0.3), 0.2);
});

test('nothing to draw without positions', () => {
  assert.equal(gridLayout([], 320, 260), null);
});

test('one person is drawn in the middle, at least 200 m shown around them', () => {
  const layout = gridLayout([mark('ann', 48.8566, 2.3522)], 400, 300);
  assert.equal(layout.points.length, 1);
  assert.equal(layout.points[0].cx, 200);
  assert.equal(layout.points[0].cy, 150);
  // 200 m across the 120 px from the middle to the margin: the step is 100 m, 60 px.
  assert.equal(layout.bar.label, '100 m');
  assert.equal(layout.bar.length, 60);
  assert.ok(layout.columns.includes(200) && layout.rows.includes(150), 'grid lines through the centre');
});

test('two people far apart are each side of the centre, the scale in km', () => {
  // About 5 km apart east-west at the equator.
  const layout = gridLayout([mark('west', 0, 0), mark('east', 0, 0.045)], 400, 400);
  const [west, east] = layout.points;
  assert.ok(west.cx < 200 && east.cx > 200);
  assert.equal(west.cy, 200);
  assert.ok(Math.abs(west.cx - 200 - (200 - east.cx)) < 1e-9, 'symmetric about the centre');
  assert.ok(west.cx >= 30 && east.cx <= 370, 'within the margin');
  assert.equal(layout.bar.label, '1 km');
});

test('the accuracy circle is scaled with the map and counts in what must fit', () => {
  const layout = gridLayout([mark('ann', 0, 0, 1000)], 400, 400);
  // 1000 m of accuracy from the middle to the margin (170 px).
  assert.equal(layout.points[0].r, 170);
  assert.equal(layout.bar.label, '500 m');
});
