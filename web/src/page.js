// The page's own elements (index.html): which section shows, the status line, the colour
// picker, the people list and the chat. Everything other people typed goes in as text.

export const $ = (id) => document.getElementById(id);

/// The colours a person can pick when joining.
export const COLOURS = ['#d7263d', '#1b998b', '#2e86de', '#f46036', '#7b2cbf', '#2f4858', '#c2185b', '#6a994e'];

export function setStatus(text, isError = false) {
  const status = $('status');
  status.textContent = text;
  status.classList.toggle('error', isError);
}

/// Shows one of the sections (start, join, live, ended) and hides the others.
export function show(id) {
  for (const section of ['start', 'join', 'live', 'ended']) {
    $(section).hidden = section !== id;
  }
}

export function showEnded(title, text) {
  $('ended-title').textContent = title;
  $('ended-text').textContent = text;
  $('session-actions').hidden = true;
  setStatus('');
  show('ended');
}

/// The line under the map: why there is no map (none built in, no tiles configured), or
/// `extra` when given.
export function noteMap(config, extra) {
  const note = $('map-note');
  let text = '';
  if (!config.map_library) {
    text = `Plain grid view: this server was built without the map library. To get the map, build it with: ${config.build_hint}.`;
  } else if (!config.tile_url) {
    text = 'No map tiles are configured (TILE_URL): positions are shown on a grid.';
  }
  if (extra) text = extra;
  note.textContent = text;
  note.hidden = !text;
}

/// The join form's colour picker, with COLOURS[picked] chosen.
export function drawColours(picked) {
  const colours = $('colours');
  COLOURS.forEach((colour, i) => {
    const label = document.createElement('label');
    label.style.background = colour;
    label.title = colour;
    const input = document.createElement('input');
    input.type = 'radio';
    input.name = 'avatar_color';
    input.value = colour;
    input.checked = i === picked;
    input.setAttribute('aria-label', `colour ${i + 1} (${colour})`);
    label.append(input);
    colours.append(label);
  });
}

export function pickedColour() {
  return (document.querySelector('input[name=avatar_color]:checked') || {}).value || COLOURS[0];
}

/// The people list, from model.js's peopleRows.
export function drawPeople(rows) {
  const items = rows.map((row) => {
    const item = document.createElement('li');
    item.dataset.userId = row.userId;
    const dot = document.createElement('span');
    dot.className = `dot${row.online ? '' : ' offline'}`;
    dot.style.background = row.colour;
    const name = document.createElement('span');
    name.textContent = row.name;
    const seen = document.createElement('span');
    seen.className = 'seen';
    seen.textContent = row.seen;
    item.append(dot, name, seen);
    if (row.meetup) {
      const meetup = document.createElement('span');
      meetup.className = `meetup${row.arrived ? ' arrived' : ''}`;
      meetup.textContent = row.meetup;
      item.append(meetup);
    }
    return item;
  });
  $('people').replaceChildren(...items);
}

/// One more chat message at the bottom, scrolled into view.
export function appendMessage(message) {
  const item = document.createElement('li');
  const who = document.createElement('span');
  who.className = 'who';
  who.style.color = message.avatar_color;
  who.textContent = message.display_name;
  const time = document.createElement('time');
  time.dateTime = message.timestamp;
  time.textContent = new Date(message.timestamp).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = ` ${message.content}`;
  item.append(who, time, text);
  const list = $('messages');
  list.append(item);
  list.scrollTop = list.scrollHeight;
}

/// The whole chat again (after a snapshot).
export function drawMessages(messages) {
  $('messages').replaceChildren();
  messages.forEach(appendMessage);
}
