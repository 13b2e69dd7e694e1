// The gateway's live metrics (polled every 5 s while this page is open) and the alerts it sent.
import { useEffect } from 'preact/hooks';
import { Empty, ErrorBox, Loading, PageTitle, SeverityBadge, Time, useApi } from '../common.jsx';

const pollMilliseconds = 5000;

function labelText(labels) {
  return Object.entries(labels || {}).map(([key, value]) => `${key}="${value}"`).join(', ');
}

function formatValue(value) {
  if (typeof value !== 'number') return String(value ?? '—');
  return Number.isInteger(value) ? value.toLocaleString() : value.toPrecision(4);
}

function Metrics() {
  const { data, error, loading, reload } = useApi('/gateway/metrics');
  useEffect(() => {
    const timer = setInterval(reload, pollMilliseconds);
    return () => clearInterval(timer);
  }, [reload]);
  if (loading && !data && !error) return <Loading what="gateway metrics" />;
  if (error) return <ErrorBox error={error} />;
  if (!data) return null;
  if (!data.configured) {
    return (
      <div class="notice" data-testid="gateway-not-configured">
        The gateway is <strong>not configured</strong>: start <code>aegis serve</code> with
        <code> --gateway-url http://GATEWAY:PORT</code> to see its metrics here.
      </div>
    );
  }
  const series = data.series || [];
  return (
    <>
      <p class="muted">
        From <code>{data.url}</code>, fetched <Time value={data.fetched_at} />; refreshed every {pollMilliseconds / 1000} s.
      </p>
      {data.error ? <div class="notice notice-error" role="alert">The last fetch failed: {data.error}</div> : null}
      {!series.length ? <Empty>The gateway reported no metrics.</Empty> : (
        <table class="data" data-testid="gateway-metrics">
          <thead><tr><th scope="col">Metric</th><th scope="col">Labels</th><th scope="col" class="numeric">Value</th></tr></thead>
          <tbody>
            {series.map((entry, index) => (
              <tr key={`${entry.name}{${labelText(entry.labels)}}#${index}`}>
                <td><code>{entry.name}</code></td>
                <td class="wrap"><code>{labelText(entry.labels)}</code></td>
                <td class="numeric">{formatValue(entry.value)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </>
  );
}

function Alerts() {
  const { data, error, loading } = useApi('/gateway/alerts?limit=100');
  const items = data?.items || [];
  if (loading && !data) return <Loading what="alerts" />;
  return (
    <>
      <ErrorBox error={error} />
      {data && !items.length ? <Empty>No alerts received.</Empty> : null}
      {items.length ? (
        <ul class="alerts" data-testid="gateway-alerts">
          {items.map((alert, index) => {
            const { received_at: receivedAt, severity, title, message, rule, kind, type, ...rest } = alert;
            const heading = title || message || rule || kind || type || 'alert';
            return (
              <li key={index} class="card alert">
                <div class="alert-head">
                  {severity ? <SeverityBadge severity={String(severity).toLowerCase()} /> : null}
                  <strong>{String(heading)}</strong>
                  <span class="muted"><Time value={receivedAt} /></span>
                </div>
                {message && message !== heading ? <p>{String(message)}</p> : null}
                <details>
                  <summary>Details</summary>
                  <pre class="json">{JSON.stringify({ rule, kind, type, ...rest }, null, 2)}</pre>
                </details>
              </li>
            );
          })}
        </ul>
      ) : null}
    </>
  );
}

export function GatewayPage() {
  return (
    <section>
      <PageTitle>Gateway</PageTitle>
      <div class="card"><h2>Live metrics</h2><Metrics /></div>
      <div class="card"><h2>Alerts</h2><Alerts /></div>
    </section>
  );
}
