// convoy's web page in two real Chromium pages (Debian's /usr/bin/chromium, driven by
// playwright-core), phone-sized, with faked geolocation. Run by tests/api/web.rs, which
// starts convoy and passes CONVOY_URL, PROXY_URL (the same server through a TCP proxy the
// test can cut: CONTROL_URL/cut and CONTROL_URL/restore), EXPECT_MAP (leaflet or grid),
// TILE_PREFIX (the unreachable tile server the server was given) and ARTIFACTS_DIR.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync } from 'node:fs';
import { join as joinPath } from 'node:path';
import { chromium } from 'playwright-core';

const base = process.env.CONVOY_URL;
const proxied = process.env.PROXY_URL;
const control = process.env.CONTROL_URL;
const expectMap = process.env.EXPECT_MAP;
const tilePrefix = process.env.TILE_PREFIX;
const artifacts = process.env.ARTIFACTS_DIR || 'artifacts';
mkdirSync(artifacts, { recursive: true });

const PARIS = { latitude: 48.8566, longitude: 2.3522, accuracy: 15 };
const LOUVRE = { latitude: 48.8606, longitude: 2.3376, accuracy: 30 };
const MOVED = { latitude: 48.8650, longitude: 2.3210, accuracy: 20 };
const PHONE = { width: 375, height: 740 };
const BOB = 'Bob <img src=x onerror="window.pwned=1">';
/// While a test has cut a page's network, the browser's own reports of failed requests are
/// expected.
let networkCut = false;
const NETWORK_FAILURE = /net::ERR_|WebSocket connection to .* failed/;

function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/// A phone: a page at 375 px with a position, every console error and page error noted
/// (failed requests to the unreachable tile server excepted: that is the point of it).
async function phone(browser, name, geolocation, problems) {
  const context = await browser.newContext({ viewport: PHONE, geolocation, permissions: ['geolocation'] });
  const page = await context.newPage();
  page.on('console', (message) => {
    const from = message.location().url || '';
    const expected = (tilePrefix && from.startsWith(tilePrefix)) || (networkCut && NETWORK_FAILURE.test(message.text()));
    if (message.type() === 'error' && !expected) {
      problems.push(`${name} console: ${message.text()} (${from})`);
    }
  });
  page.on('pageerror', (error) => problems.push(`${name} page error: ${error.message}`));
  page.on('dialog', (dialog) => dialog.accept());
  return { context, page };
}

async function join(page, url, name) {
  await page.goto(url);
  await page.locator('#display-name').fill(name);
  await page.locator('#join-button').click();
  await page.waitForFunction(() => window.convoyDebug.userId());
  return page.evaluate(() => window.convoyDebug.userId());
}

/// Waits until `page` draws `userId`'s marker at `where`.
async function seesAt(page, userId, where) {
  await page.waitForFunction(([id, lat, lng]) => {
    const at = window.convoyDebug.positions()[id];
    return at && Math.abs(at[0] - lat) < 1e-6 && Math.abs(at[1] - lng) < 1e-6;
  }, [userId, where.latitude, where.longitude], { timeout: 20000 });
}

test('two phones see each other move, chat, and both see the end', async () => {
  const created = await fetch(`${base}/api/sessions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'Browser trip', expires_in_minutes: 60 }),
  }).then((r) => r.json());
  const link = `${base}/join/${created.session_id}`;
  const browser = await launch();
  const problems = [];
  try {
    const ann = await phone(browser, 'Ann', PARIS, problems);
    const bob = await phone(browser, 'Bob', LOUVRE, problems);

    // Ann created the trip: she arrives with the creator token in the fragment.
    const annId = await join(ann.page, `${link}#creator=${created.creator_token}`, 'Ann');
    assert.equal(await ann.page.locator('#session-name').textContent(), 'Browser trip');
    assert.match(await ann.page.locator('#time-left').textContent(), /min left/);
    assert.ok(await ann.page.locator('#end-session').isVisible(), 'the creator can end the trip');
    // Bob's network is the proxy, so the test can cut it.
    // His name is hostile: it must show as text everywhere, never run (and the page's CSP
    // would report a blocked inline handler as a console error).
    await bob.page.goto(`${proxied}/join/${created.session_id}`);
    assert.ok(!(await bob.page.locator('#live').isVisible()), 'the live view waits for the join');
    assert.ok(!(await bob.page.locator('#toggle-sharing').isVisible()));
    assert.ok(!(await bob.page.locator('#start').isVisible()));
    const bobId = await join(bob.page, `${proxied}/join/${created.session_id}`, BOB);
    assert.ok(!(await bob.page.locator('#end-session').isVisible()), 'only the creator can end it');
    assert.equal(await ann.page.evaluate(() => window.convoyDebug.mapKind()), expectMap);

    // Each sees the other's marker where the other is, then moving.
    await seesAt(ann.page, bobId, LOUVRE);
    await seesAt(bob.page, annId, PARIS);
    await seesAt(ann.page, annId, PARIS);
    await bob.context.setGeolocation(MOVED);
    await seesAt(ann.page, bobId, MOVED);
    await ann.page.locator(`#people li[data-user-id="${bobId}"]`).filter({ hasText: 'online' }).waitFor();
    assert.equal(await ann.page.locator(`#people li[data-user-id="${bobId}"] span`).nth(1).textContent(), BOB);
    if (expectMap === 'leaflet') {
      await ann.page.locator('.leaflet-tooltip').filter({ hasText: BOB }).waitFor();
    }
    assert.equal(await ann.page.evaluate(() => window.pwned), undefined);
    await bob.page.locator(`#people li[data-user-id="${annId}"]`).filter({ hasText: 'Ann' }).waitFor();

    // Chat, typed and sent from the keyboard.
    await bob.page.locator('#chat-input').fill('Coffee at the Louvre?');
    await bob.page.locator('#chat-input').press('Enter');
    await ann.page.locator('#messages li').filter({ hasText: 'Coffee at the Louvre?' }).waitFor();
    await bob.page.locator('#messages li').filter({ hasText: 'Coffee at the Louvre?' }).waitFor();

    // A dropped connection: the page reconnects by itself and resynchronises.
    networkCut = true;
    await fetch(`${control}/cut`);
    await bob.page.locator('#status').filter({ hasText: 'reconnecting' }).waitFor({ timeout: 15000 });
    // His last position ages past the TTL (3 s here): his marker fades on Ann's map.
    await ann.page.waitForFunction((id) => window.convoyDebug.positions()[id]?.[2] <= 0.25, bobId, { timeout: 20000 });
    await ann.page.locator('#chat-input').fill('Are you there?');
    await ann.page.locator('#chat-send').click();
    await fetch(`${control}/restore`);
    await bob.page.waitForFunction(() => document.getElementById('status').textContent === '', null, { timeout: 20000 })
      .catch(async (error) => {
        throw new Error(`Bob's page still says: ${await bob.page.locator('#status').textContent()} (${error.message})`);
      });
    networkCut = false;
    await ann.page.locator('#chat-input').fill('Yes, see you there');
    await ann.page.locator('#chat-send').click();
    await bob.page.locator('#messages li').filter({ hasText: 'see you there' }).waitFor({ timeout: 20000 });
    // What was said while Bob was cut off came with the snapshot.
    await bob.page.locator('#messages li').filter({ hasText: 'Are you there?' }).waitFor();
    await bob.context.setGeolocation(LOUVRE);
    await seesAt(ann.page, bobId, LOUVRE);

    // Bob stops sharing: his marker leaves Ann's map at once (share_settings paused), he
    // stays in the list, marked as not sharing; then he shares again.
    await bob.page.locator('#toggle-sharing').click();
    assert.equal(await bob.page.locator('#toggle-sharing').textContent(), 'Share my position');
    await ann.page.waitForFunction((id) => !(id in window.convoyDebug.positions()), bobId, { timeout: 20000 });
    await ann.page.locator(`#people li[data-user-id="${bobId}"]`).filter({ hasText: 'not sharing' }).waitFor();
    await bob.page.locator('#toggle-sharing').click();
    await ann.page.waitForFunction((id) => window.convoyDebug.positions()[id]?.[2] === 1, bobId, { timeout: 20000 });

    // Phone-sized: nothing wider than the screen; every control reachable by keyboard.
    for (const page of [ann.page, bob.page]) {
      const width = await page.evaluate(() => document.documentElement.scrollWidth);
      assert.ok(width <= PHONE.width, `the page is ${width} px wide on a ${PHONE.width} px screen`);
    }
    const reached = new Set();
    await ann.page.locator('body').focus();
    for (let i = 0; i < 40; i += 1) {
      await ann.page.keyboard.press('Tab');
      reached.add(await ann.page.evaluate(() => document.activeElement?.id));
    }
    for (const id of ['copy-link', 'toggle-sharing', 'leave', 'end-session', 'chat-input', 'chat-send']) {
      assert.ok(reached.has(id), `#${id} is not reachable with Tab (reached: ${[...reached].join(', ')})`);
    }
    if (expectMap === 'leaflet' && tilePrefix) {
      await ann.page.locator('#map-note').filter({ hasText: 'could not be loaded' }).waitFor();
    }
    await ann.page.screenshot({ path: joinPath(artifacts, 'ann-live.png'), fullPage: true });
    await bob.page.screenshot({ path: joinPath(artifacts, 'bob-live.png'), fullPage: true });

    // The creator ends the trip: both pages say so.
    await ann.page.locator('#end-session').click();
    for (const page of [ann.page, bob.page]) {
      await page.locator('#ended').filter({ hasText: 'Its creator ended it' }).waitFor();
    }
    await ann.page.screenshot({ path: joinPath(artifacts, 'ann-ended.png'), fullPage: true });
    await bob.page.screenshot({ path: joinPath(artifacts, 'bob-ended.png'), fullPage: true });
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
  }
});

test('the start page creates a trip and opens it as its creator', async () => {
  const browser = await launch();
  const problems = [];
  try {
    const { page } = await phone(browser, 'Cat', PARIS, problems);
    await page.goto(`${base}/`);
    await page.locator('#trip-name').fill('Picnic');
    await page.locator('#start-button').click();
    await page.waitForURL(/\/join\//);
    // The page fills in the trip once the API answered.
    await page.locator('#session-name').filter({ hasText: 'Picnic' }).waitFor();
    assert.ok(await page.locator('#end-session').isVisible());
    // The plain view, asked for: Cat's own marker on the grid.
    await join(page, `${page.url()}?view=grid`, 'Cat');
    assert.equal(await page.evaluate(() => window.convoyDebug.mapKind()), 'grid');
    const catId = await page.evaluate(() => window.convoyDebug.userId());
    await seesAt(page, catId, PARIS);
    await page.locator(`#map g[data-user-id="${catId}"]`).waitFor();
    await page.screenshot({ path: joinPath(artifacts, 'start-joined-grid.png'), fullPage: true });
    assert.deepEqual(problems, []);
    // A link to no trip says so (the browser also logs the API's 404 itself).
    const unknown = `${base}/join/00000000-0000-4000-8000-000000000000`;
    await page.goto(unknown);
    await page.locator('#ended').filter({ hasText: 'does not lead to a trip' }).waitFor();
  } finally {
    await browser.close();
  }
});

test('"Share from an app" sets up OwnTracks, and a phone sharing only through an app is seen moving', async () => {
  const created = await fetch(`${base}/api/sessions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'App trip', expires_in_minutes: 60 }),
  }).then((r) => r.json());
  const browser = await launch();
  const problems = [];
  try {
    const { page } = await phone(browser, 'Ann', PARIS, problems);
    await join(page, `${base}/join/${created.session_id}`, 'Ann');

    // The panel: an OwnTracks link that sets HTTP mode to Ann's tracker address, OsmAnd's
    // and GPSLogger's addresses to copy, and three QR codes the server drew.
    await page.locator('#apps summary').click();
    await page.locator('#apps-setup').waitFor();
    const trackerUrl = await page.locator('#tracker-url').inputValue();
    assert.match(trackerUrl, /\/t\/[A-Za-z0-9_-]{64}$/);
    const href = await page.locator('#owntracks-link').getAttribute('href');
    assert.ok(href.startsWith('owntracks:///config?inline='), href);
    const inline = new URLSearchParams(href.slice('owntracks:///config?'.length)).get('inline');
    const configuration = JSON.parse(Buffer.from(inline, 'base64').toString('utf8'));
    assert.equal(configuration._type, 'configuration');
    assert.equal(configuration.mode, 3, 'HTTP mode');
    assert.equal(configuration.url, trackerUrl);
    assert.ok((await page.locator('#osmand-url').inputValue()).startsWith(`${trackerUrl}?lat={0}&lon={1}&`));
    assert.ok((await page.locator('#gpslogger-url').inputValue()).startsWith(`${trackerUrl}?lat=%LAT&lon=%LON&`));
    for (const qr of ['#owntracks-qr', '#traccar-qr', '#tracker-qr']) {
      await page.waitForFunction((selector) => {
        const image = document.querySelector(selector);
        return image.complete && image.naturalWidth > 100;
      }, qr);
    }
    await page.screenshot({ path: joinPath(artifacts, 'share-from-an-app.png'), fullPage: true });

    // "Get a new address": the panel shows a new one, and the old one is refused.
    await page.locator('#new-tracker').click();
    await page.waitForFunction((old) => document.querySelector('#tracker-url').value !== old, trackerUrl);
    const newUrl = await page.locator('#tracker-url').inputValue();
    assert.match(newUrl, /\/t\/[A-Za-z0-9_-]{70}$/);
    assert.ok((await page.locator('#osmand-url').inputValue()).startsWith(`${newUrl}?`));
    const oldPath = new URL(trackerUrl).pathname;
    assert.equal((await fetch(`${base}${oldPath}/setup`)).status, 401);
    assert.equal((await fetch(`${base}${new URL(newUrl).pathname}/setup`)).status, 200);

    // Dan shares only through an app: OwnTracks, then Traccar Client. Ann sees him move.
    const dan = await fetch(`${base}/api/sessions/${created.session_id}/join`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ display_name: 'Dan' }),
    }).then((r) => r.json());
    const owntracks = { _type: 'location', lat: LOUVRE.latitude, lon: LOUVRE.longitude, acc: 12, tst: Math.floor(Date.now() / 1000) };
    const posted = await fetch(dan.tracker_url.replace(/^https?:\/\/[^/]+/, base), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(owntracks),
    });
    assert.equal(posted.status, 200);
    await seesAt(page, dan.user_id, LOUVRE);
    const query = `lat=${MOVED.latitude}&lon=${MOVED.longitude}&timestamp=${Date.now()}&accuracy=8&id=dan`;
    const traccar = await fetch(`${dan.tracker_url.replace(/^https?:\/\/[^/]+/, base)}?${query}`);
    assert.equal(traccar.status, 200);
    await seesAt(page, dan.user_id, MOVED);
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
  }
});

test('the creator sets a meeting point at their position; an app moving in is seen arriving, with a notice, its trail and GPX', async () => {
  const created = await fetch(`${base}/api/sessions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'Meet-up', expires_in_minutes: 60 }),
  }).then((r) => r.json());
  const browser = await launch();
  const problems = [];
  try {
    const { context, page } = await phone(browser, 'Ann', PARIS, problems);
    await context.grantPermissions(['geolocation', 'notifications']);
    // The browser's notifications, recorded (headless Chromium shows none).
    await page.addInitScript(() => {
      window.notified = [];
      window.Notification = class {
        static permission = 'granted';
        static requestPermission() { return Promise.resolve('granted'); }
        constructor(title, options) { window.notified.push(options.body); }
      };
    });
    await page.goto(`${base}/join/${created.session_id}#creator=${created.creator_token}`);
    await page.locator('#display-name').fill('Ann');
    await page.locator('#join-button').click();
    await page.waitForFunction(() => window.convoyDebug.userId());
    const annId = await page.evaluate(() => window.convoyDebug.userId());
    await seesAt(page, annId, PARIS);

    await page.locator('#meet-notify').click();
    await page.locator('#meet-here').click();
    await page.locator('#meet-text').filter({ hasText: 'Meeting at the pin (within 50 m)' }).waitFor();
    await seesAt(page, 'meeting-point', PARIS);

    // Dan shares through an app: 1 km north, then at the point (fixes younger than this
    // server's LOCATION_TTL_SECONDS of 3 s).
    const dan = await fetch(`${base}/api/sessions/${created.session_id}/join`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ display_name: 'Dan' }),
    }).then((r) => r.json());
    const report = (lat, secondsAgo) => fetch(dan.tracker_url.replace(/^https?:\/\/[^/]+/, base), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ _type: 'location', lat, lon: PARIS.longitude, acc: 8, tst: Math.floor(Date.now() / 1000) - secondsAgo }),
    });
    assert.equal((await report(PARIS.latitude + 0.009, 1)).status, 200);
    const danRow = page.locator(`#people li[data-user-id="${dan.user_id}"] .meetup`);
    await danRow.filter({ hasText: 'away as the crow flies' }).waitFor({ timeout: 20000 });
    assert.equal((await report(PARIS.latitude + 0.0001, 0)).status, 200);
    await danRow.filter({ hasText: '✓ arrived' }).waitFor({ timeout: 20000 });
    await page.waitForFunction(() => window.notified.some((body) => body.startsWith('Dan has arrived')));
    // His way in is drawn as a trail, and the trails download as GPX with his track.
    await page.waitForFunction((id) => (window.convoyDebug.trails()[id] || []).length >= 2, dan.user_id);
    const [download] = await Promise.all([page.waitForEvent('download'), page.locator('#download-gpx').click()]);
    assert.match(download.suggestedFilename(), /^convoy-.*\.gpx$/);
    const gpx = readFileSync(await download.path(), 'utf8');
    assert.match(gpx, /<gpx[^>]*version="1.1"/);
    assert.match(gpx, /<name>Dan<\/name>/);
    await page.screenshot({ path: joinPath(artifacts, 'meeting-point.png'), fullPage: true });
    assert.deepEqual(problems, []);
  } finally {
    await browser.close();
  }
});
