import { useEffect, useState } from 'preact/hooks';
import { queryString } from '../api.js';
import { Empty, ErrorBox, KeyValues, Loading, PageTitle, Pager, SeverityCounts, Time, useApi } from '../common.jsx';
import { hrefFor, navigate } from '../router.js';
import { FindingsView } from './findings.jsx';

const pageSize = 50;

function exitText(code) {
  if (code === null || code === undefined) return '—';
  return code === 0 ? '0 (clean)' : code === 1 ? '1 (findings)' : String(code);
}

export function RunsPage({ route }) {
  const asset = route.query.get('asset') || '';
  const command = route.query.get('command') || '';
  const assessment = route.query.get('assessment') || '';
  const offset = Math.max(0, Number(route.query.get('offset')) || 0);
  const { data, error, loading } = useApi(`/runs${queryString({ asset, command, assessment, limit: pageSize, offset })}`);
  const [assetText, setAssetText] = useState(asset);
  const [commandText, setCommandText] = useState(command);
  useEffect(() => setAssetText(asset), [asset]);
  useEffect(() => setCommandText(command), [command]);
  const go = (changes) => navigate(hrefFor('/runs', { asset, command, assessment, ...changes }));
  const items = data?.items || [];

  return (
    <section>
      <PageTitle>Runs</PageTitle>
      <form class="filters card" aria-label="Filter runs"
        onSubmit={(event) => { event.preventDefault(); go({ asset: assetText.trim(), command: commandText.trim(), offset: '' }); }}>
        <label>Asset<input value={assetText} data-testid="runs-filter-asset" onInput={(event) => setAssetText(event.currentTarget.value)} /></label>
        <label>Command<input value={commandText} data-testid="runs-filter-command" placeholder="scan, attack, mia…" onInput={(event) => setCommandText(event.currentTarget.value)} /></label>
        <div class="filter-buttons"><button type="submit">Apply</button></div>
      </form>
      {assessment ? <p class="chip">Assessment {assessment} <a href="#/runs" aria-label="Remove the assessment filter">×</a></p> : null}
      <ErrorBox error={error} />
      {data ? <p class="result-count"><span data-testid="runs-total">{data.total}</span> runs</p> : null}
      {loading && !data ? <Loading what="runs" /> : null}
      {data && !items.length ? <Empty>No runs match. Commands run with a store record their runs there.</Empty> : null}
      {items.length ? (
        <table class="data" data-testid="runs-table">
          <thead>
            <tr><th scope="col">ID</th><th scope="col">Command</th><th scope="col">Asset</th><th scope="col">Started</th>
              <th scope="col">Finished</th><th scope="col">Exit</th><th scope="col">Findings</th></tr>
          </thead>
          <tbody>
            {items.map((run) => {
              const href = `#/runs/${encodeURIComponent(run.id)}`;
              return (
                <tr key={run.id} class="clickable" data-testid="run-row" data-run-id={run.id}
                  onClick={(event) => { if (!event.target.closest('a')) navigate(href); }}>
                  <td><a href={href}>{run.id}</a></td>
                  <td>{run.command}</td>
                  <td>{run.asset}</td>
                  <td><Time value={run.started_at} /></td>
                  <td><Time value={run.finished_at} /></td>
                  <td>{exitText(run.exit_code)}</td>
                  <td><SeverityCounts counts={run.counts} /></td>
                </tr>
              );
            })}
          </tbody>
        </table>
      ) : null}
      <Pager total={data?.total} limit={pageSize} offset={offset} onOffset={(next) => go({ offset: next || '' })} />
    </section>
  );
}

export function RunDetailPage({ id, route }) {
  const { data, error, loading } = useApi(`/runs/${encodeURIComponent(id)}`);
  return (
    <section>
      <PageTitle>{`Run ${id}`}</PageTitle>
      <p><a href="#/runs">← All runs</a></p>
      <ErrorBox error={error} />
      {loading && !data ? <Loading what="the run" /> : null}
      {data ? (
        <div class="card" data-testid="run-detail">
          <KeyValues entries={[
            ['Command', data.command],
            ['Asset', data.asset],
            ['Inputs', (data.inputs || []).join(', ')],
            ['Started', <Time value={data.started_at} />],
            ['Finished', <Time value={data.finished_at} />],
            ['Exit code', exitText(data.exit_code)],
            ['Aegis version', data.aegis_version],
            ['Findings', <span data-testid="run-counts"><SeverityCounts counts={data.counts}
              hrefOf={(severity) => hrefFor(`/runs/${id}`, { severity })} /></span>],
          ]} />
          {data.summary ? (
            <details>
              <summary>Run summary (JSON)</summary>
              <pre class="json">{JSON.stringify(data.summary, null, 2)}</pre>
            </details>
          ) : null}
        </div>
      ) : null}
      {data || !error ? (
        <>
          <h2>Findings of this run</h2>
          <FindingsView route={route} basePath={`/runs/${id}`} fixed={{ run: id }} />
        </>
      ) : null}
    </section>
  );
}
