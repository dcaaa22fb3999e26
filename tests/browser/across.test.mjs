// A participant who shares only through tracker apps, each app in turn reporting to the
// instance the page is connected to and then to another (two instances on one PostgreSQL
// and one Redis), seen moving on the web page. Every app's request is built from the recorded fixtures
// (tests/fixtures/tracker) or from the set-up answer's templates, filled in as the app
// fills them. Run by tests/api/web.rs, which starts both instances and passes CONVOY_URL
// (the page's instance), OTHER_URL (the apps' instance), TILE_PREFIX (the unreachable tile
// server) and ARTIFACTS_DIR.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join as joinPath } from 'node:path';
import { chromium } from 'playwright-core';

const base = process.env.CONVOY_URL;
const other = process.env.OTHER_URL;
const artifacts = process.env.ARTIFACTS_DIR || 'artifacts';
mkdirSync(artifacts, { recursive: true });

const PARIS = { latitude: 48.8566, longitude: 2.3522, accuracy: 15 };
/// The fixtures' position, which each step moves north.
const FIXTURE_LAT = '48.85833';

/// A recorded request of an app, its times set to `at` and its latitude to `lat`.
function fixture(name, at, lat) {
  const text = readFileSync(new URL(`../fixtures/tracker/${name}`, import.meta.url), 'utf8').trim();
  return text
    .replaceAll('{TST_MS}', String(at.getTime()))
    .replaceAll('{TST}', String(Math.floor(at.getTime() / 1000)))
    .replaceAll('{ISO}', at.toISOString())
    .replaceAll(FIXTURE_LAT, String(lat));
}

/// A template's placeholders filled in.
function fill(template, values) {
  return Object.entries(values).reduce((url, [placeholder, value]) => url.replaceAll(placeholder, String(value)), template);
}

async function seesAt(page, userId, lat, lng) {
  await page.waitForFunction(([id, lat, lng]) => {
    const at = window.convoyDebug.positions()[id];
    return at && Math.abs(at[0] - lat) < 1e-6 && Math.abs(at[1] - lng) < 1e-6;
  }, [userId, lat, lng], { timeout: 20000 });
}

test('a phone sharing only through each app, on the same instance and on another, is seen moving on the page', async () => {
  const created = await fetch(`${base}/api/sessions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'Two instances', expires_in_minutes: 60 }),
  }).then((r) => r.json());
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
  });
  const problems = [];
  try {
    const context = await browser.newContext({ viewport: { width: 375, height: 740 }, geolocation: PARIS, permissions: ['geolocation'] });
    const page = await context.newPage();
    page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
    // The map's tiles come from a server that is not there (TILE_PREFIX): expected failures.
    page.on('console', (m) => {
      if (m.type() === 'error' && !(m.location().url || '').startsWith(process.env.TILE_PREFIX)) problems.push(m.text());
    });
    await page.goto(`${base}/join/${created.session_id}`);
    await page.locator('#display-name').fill('Ann');
    await page.locator('#join-button').click();
    await page.waitForFunction(() => window.convoyDebug.userId());

    // Dan joins through the other instance and sets his apps up from its answer.
    const dan = await fetch(`${other}/api/sessions/${created.session_id}/join`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ display_name: 'Dan' }),
    }).then((r) => r.json());
    const trackerPath = new URL(dan.tracker_url).pathname;
    const setup = await fetch(`${other}${trackerPath}/setup`).then((r) => r.json());
    const lng = 2.29513;
    // Each fix newer than the last and well within LOCATION_TTL_SECONDS (taken when sent:
    // a slow step must not age the later ones out).
    const at = (step) => new Date(Date.now() - 10_000 + step * 1000);

    // Each app in turn, reporting first to the page's own instance, then to the other.
    let step = 0;
    for (const [where, server] of [['the same instance', base], ['the other instance', other]]) {
      const to = (url) => url.replace(/^https?:\/\/[^/]+/, server);
      const apps = {
        OwnTracks: (lat, when) => fetch(to(setup.tracker_url), {
          method: 'POST', headers: { 'Content-Type': 'application/json' },
          body: fixture('owntracks_location.json', when, lat),
        }),
        'Traccar Client': (lat, when) => fetch(to(setup.tracker_url), {
          method: 'POST', headers: { 'Content-Type': 'application/json' },
          body: fixture('traccar_client.json', when, lat),
        }),
        OsmAnd: (lat, when) => fetch(to(fill(setup.osmand_url, {
          '{0}': lat, '{1}': lng, '{2}': when.getTime(), '{3}': 10, '{4}': 36, '{5}': 1.2, '{6}': 180,
        }))),
        GPSLogger: (lat, when) => fetch(to(fill(setup.gpslogger_url, {
          '%LAT': lat, '%LON': lng, '%TIMESTAMP': when.toISOString(), '%ACC': 6, '%ALT': 36,
          '%SPD': 1.1, '%DIR': 90, '%BATT': 64, '%ISCHARGING': false,
        }))),
      };
      for (const [app, send] of Object.entries(apps)) {
        step += 1;
        const lat = 48.86 + step / 1000;
        const response = await send(lat, at(step));
        assert.equal(response.status, 200, `${app} on ${where}: ${await response.text()}`);
        await seesAt(page, dan.user_id, lat, lng).catch((error) => {
          throw new Error(`${app}'s position, sent to ${where}, never reached the page: ${error.message}`);
        });
      }
    }
    await page.screenshot({ path: joinPath(artifacts, 'app-across-instances.png'), fullPage: true });
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
  }
});
