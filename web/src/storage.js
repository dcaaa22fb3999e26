// What the page remembers per trip in localStorage: `me` (this participant and its token,
// so a reload rejoins as the same participant, and tabs share the newest token) and
// `creator` (the creator token).

/// Load and save for one trip's keys (`convoy:<kind>:<session id>`).
export function sessionStore(sessionId) {
  const key = (kind) => `convoy:${kind}:${sessionId}`;
  return {
    load(kind) {
      try {
        return JSON.parse(localStorage.getItem(key(kind)));
      } catch {
        return null;
      }
    },
    /// null forgets.
    save(kind, value) {
      try {
        if (value === null) localStorage.removeItem(key(kind));
        else localStorage.setItem(key(kind), JSON.stringify(value));
      } catch {
        // Private browsing: the page still works, it just forgets on reload.
      }
    },
  };
}
