import { ErrorBox, Loading, PageTitle, SeverityBadge, StatusBadge, severities, statuses, useApi } from '../common.jsx';
import { hrefFor } from '../router.js';

export function OverviewPage() {
  const { data, error, loading } = useApi('/summary');
  return (
    <section>
      <PageTitle>Overview</PageTitle>
      <ErrorBox error={error} />
      {loading && !data ? <Loading what="the summary" /> : null}
      {data ? (
        <>
          <p class="muted">Counts over the current findings: the newest run of each asset and command.</p>
          <div class="totals" data-testid="summary-totals">
            <a class="total card" href="#/inventory"><span class="number">{data.assets}</span> assets</a>
            <a class="total card" href="#/assessments"><span class="number">{data.assessments}</span> assessments</a>
            <a class="total card" href="#/runs"><span class="number">{data.runs}</span> runs</a>
            <a class="total card" href="#/findings"><span class="number">{data.findings}</span> findings</a>
          </div>
          <div class="two-columns">
            <div class="card">
              <h2>By severity</h2>
              <ul class="count-list" data-testid="summary-severity">
                {severities.map((severity) => (
                  <li key={severity}>
                    <a href={hrefFor('/findings', { severity })} data-testid={`summary-severity-${severity}`}>
                      <SeverityBadge severity={severity} />
                      <span class="number">{data.severity?.[severity] ?? 0}</span>
                    </a>
                  </li>
                ))}
              </ul>
            </div>
            <div class="card">
              <h2>By status</h2>
              <ul class="count-list" data-testid="summary-status">
                {statuses.map((status) => (
                  <li key={status}>
                    <a href={hrefFor('/findings', { status })} data-testid={`summary-status-${status}`}>
                      <StatusBadge status={status} />
                      <span class="number">{data.status?.[status] ?? 0}</span>
                    </a>
                  </li>
                ))}
              </ul>
            </div>
          </div>
        </>
      ) : null}
    </section>
  );
}
