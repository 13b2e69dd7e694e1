// MITRE ATLAS coverage: one column per tactic, one cell per technique, coloured by the highest
// severity of the current findings mapped to it.
import { Empty, ErrorBox, Loading, PageTitle, SeverityBadge, severities, useApi } from '../common.jsx';
import { hrefFor } from '../router.js';

function TechniqueCell({ technique }) {
  const highest = severities.includes(technique.highest) ? technique.highest : 'none';
  const label = `${technique.id} ${technique.name}: ${technique.findings} findings, ${technique.open} open` +
    (technique.highest ? `, highest ${technique.highest}` : '');
  const body = (
    <>
      <span class="technique-id">{technique.id}</span>
      <span class="technique-name">{technique.name}</span>
      {technique.findings ? <span class="technique-count">{technique.findings} ({technique.open} open)</span> : null}
    </>
  );
  if (!technique.findings) {
    return <div class="technique sev-bg-none" title={label} data-testid="atlas-technique" data-technique-id={technique.id}>{body}</div>;
  }
  return (
    <a class={`technique sev-bg-${highest}`} href={hrefFor('/findings', { atlas: technique.id })} title={label}
      aria-label={label} data-testid="atlas-technique" data-technique-id={technique.id}>{body}</a>
  );
}

export function AtlasPage() {
  const { data, error, loading } = useApi('/atlas/coverage');
  const tactics = data?.tactics || [];
  const unmapped = data?.unmapped || [];
  return (
    <section>
      <PageTitle>MITRE ATLAS coverage</PageTitle>
      <ErrorBox error={error} />
      {loading && !data ? <Loading what="the ATLAS matrix" /> : null}
      {data ? (
        <p class="legend" aria-label="Colour legend">
          Colour = highest severity of the current findings: {severities.map((severity) => <SeverityBadge key={severity} severity={severity} />)}
          <span class="badge sev-bg-none">no findings</span>
        </p>
      ) : null}
      {data && !tactics.length ? <Empty>The server sent no ATLAS tactics.</Empty> : null}
      {tactics.length ? (
        <div class="atlas-matrix" data-testid="atlas-matrix" role="list">
          {tactics.map((tactic) => (
            <div class="tactic" key={tactic.id} role="listitem" data-testid="atlas-tactic">
              <h2 class="tactic-name" title={tactic.id}>{tactic.name}</h2>
              {(tactic.techniques || []).map((technique) => <TechniqueCell key={technique.id} technique={technique} />)}
            </div>
          ))}
        </div>
      ) : null}
      {unmapped.length ? (
        <div class="card">
          <h2>Techniques outside the matrix</h2>
          <ul class="refs">
            {unmapped.map((entry) => (
              <li key={entry.id}><a href={hrefFor('/findings', { atlas: entry.id })}>{entry.id}</a> — {entry.findings} findings</li>
            ))}
          </ul>
        </div>
      ) : null}
    </section>
  );
}
