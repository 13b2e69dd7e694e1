// Small pieces every page uses: data loading, error boxes, severity badges, paging and formatting.
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import { apiGet } from './api.js';

export const severities = ['critical', 'high', 'medium', 'low', 'info'];
export const statuses = ['open', 'acknowledged', 'accepted-risk', 'false-positive', 'fixed'];

// Loads `path` (relative to /api/v1) whenever it changes. A response that arrives after the path
// changed again is dropped, so a slow answer never overwrites a newer one.
export function useApi(path) {
  const [state, setState] = useState({ data: null, error: null, loading: Boolean(path) });
  const generation = useRef(0);
  const load = useCallback(() => {
    if (!path) return;
    const mine = ++generation.current;
    setState((previous) => ({ data: previous.data, error: null, loading: true }));
    apiGet(path).then(
      (data) => mine === generation.current && setState({ data, error: null, loading: false }),
      (error) => mine === generation.current && setState({ data: null, error, loading: false }),
    );
  }, [path]);
  useEffect(load, [load]);
  return { ...state, reload: load, setData: (data) => setState({ data, error: null, loading: false }) };
}

export function ErrorBox({ error }) {
  if (!error) return null;
  if (error.status === 403) {
    return (
      <div class="notice notice-forbidden" role="alert" data-testid="forbidden">
        <strong>Not allowed.</strong> Your role may not do this. {error.message}
      </div>
    );
  }
  return (
    <div class="notice notice-error" role="alert" data-testid="error">
      <strong>Error{error.status ? ` ${error.status}` : ''}:</strong> {error.message}
    </div>
  );
}

export function Loading({ what }) {
  return <p class="muted" aria-live="polite">Loading {what}…</p>;
}

export function Empty({ children }) {
  return <p class="empty" data-testid="empty">{children}</p>;
}

export function SeverityBadge({ severity }) {
  const known = severities.includes(severity) ? severity : 'unknown';
  return <span class={`badge sev-${known}`}>{severity || 'none'}</span>;
}

export function StatusBadge({ status, testid }) {
  return <span class={`badge status-${status}`} data-testid={testid}>{status}</span>;
}

// "critical 2 · high 5" with each count linked to the findings it counts, when `hrefOf` is given.
export function SeverityCounts({ counts, hrefOf }) {
  const shown = severities.filter((severity) => (counts?.[severity] || 0) > 0);
  if (!shown.length) return <span class="muted">none</span>;
  return (
    <span class="sev-counts">
      {shown.map((severity) => {
        const label = <><SeverityBadge severity={severity} /> {counts[severity]}</>;
        return hrefOf
          ? <a key={severity} href={hrefOf(severity)} class="sev-count">{label}</a>
          : <span key={severity} class="sev-count">{label}</span>;
      })}
    </span>
  );
}

export function formatTime(value) {
  if (!value) return '—';
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) return String(value);
  return date.toLocaleString(undefined, {
    year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
}

export function Time({ value }) {
  return <time dateTime={value || undefined} title={value || undefined}>{formatTime(value)}</time>;
}

// Previous/next paging over a list the server pages with limit and offset.
export function Pager({ total, limit, offset, onOffset, testid = 'pager' }) {
  if (!total) return null;
  const first = offset + 1;
  const last = Math.min(offset + limit, total);
  return (
    <nav class="pager" aria-label="Pages" data-testid={testid}>
      <button type="button" disabled={offset <= 0} onClick={() => onOffset(Math.max(0, offset - limit))}>
        ← Previous
      </button>
      <span>{first}–{last} of {total}</span>
      <button type="button" disabled={last >= total} onClick={() => onOffset(offset + limit)}>
        Next →
      </button>
    </nav>
  );
}

export function PageTitle({ children, actions }) {
  useEffect(() => {
    if (typeof children === 'string') document.title = `${children} · Aegis`;
  }, [children]);
  return (
    <div class="page-title">
      <h1>{children}</h1>
      {actions ? <div class="page-actions">{actions}</div> : null}
    </div>
  );
}

export function KeyValues({ entries }) {
  return (
    <dl class="kv">
      {entries.filter(Boolean).map(([key, value]) => (
        <div key={key} class="kv-row">
          <dt>{key}</dt>
          <dd>{value === null || value === undefined || value === '' ? '—' : value}</dd>
        </div>
      ))}
    </dl>
  );
}
