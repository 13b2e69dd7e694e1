// Hash routing: "#/findings?severity=critical&q=pickle" -> { path: "/findings", segments:
// ["findings"], query: URLSearchParams }. The hash keeps every view linkable and needs nothing from
// the server beyond serving index.html at "/".
import { useEffect, useState } from 'preact/hooks';

export function parseHash(hash) {
  const raw = (hash || '').replace(/^#/, '') || '/';
  const questionMark = raw.indexOf('?');
  const path = questionMark === -1 ? raw : raw.slice(0, questionMark);
  const query = new URLSearchParams(questionMark === -1 ? '' : raw.slice(questionMark + 1));
  const segments = path.split('/').filter(Boolean).map((part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part;
    }
  });
  return { path: path.startsWith('/') ? path : `/${path}`, segments, query };
}

export function useRoute() {
  const [route, setRoute] = useState(() => parseHash(window.location.hash));
  useEffect(() => {
    const update = () => setRoute(parseHash(window.location.hash));
    window.addEventListener('hashchange', update);
    return () => window.removeEventListener('hashchange', update);
  }, []);
  return route;
}

// "#/findings" + {severity: "critical"} -> "#/findings?severity=critical" (empty values left out).
export function hrefFor(path, params = {}) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === '') continue;
    search.set(key, String(value));
  }
  const text = search.toString();
  return `#${path}${text ? `?${text}` : ''}`;
}

export function navigate(href) {
  if (window.location.hash !== href) window.location.hash = href;
}
