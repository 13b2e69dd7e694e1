// The findings table. Every filter, the sort and the page live in the hash query, so a filtered
// view is a link that can be shared; the same view, with `fixed` filters, is embedded in a run.
import { useEffect, useState } from 'preact/hooks';
import { queryString } from '../api.js';
import { Empty, ErrorBox, Loading, PageTitle, Pager, SeverityBadge, StatusBadge, severities, statuses, useApi } from '../common.jsx';
import { hrefFor, navigate } from '../router.js';

export const findingsPageSize = 50;
const filterKeys = ['scope', 'run', 'assessment', 'asset', 'command', 'severity', 'status', 'atlas', 'q', 'sort', 'offset'];
const sortableColumns = { id: 'ID', severity: 'Severity', asset: 'Asset', rule: 'Rule' };

export function filtersFromQuery(query) {
  const filters = {};
  for (const key of filterKeys) {
    const value = query.get(key);
    if (value) filters[key] = value;
  }
  return filters;
}

// The API query for the filters: the same names, plus the page size.
export function findingsApiPath(filters) {
  return `/findings${queryString({ ...filters, limit: findingsPageSize })}`;
}

function splitList(value) {
  return (value || '').split(',').map((part) => part.trim()).filter(Boolean);
}

function locationText(location) {
  if (!location) return '';
  const parts = [location.file, location.member].filter(Boolean);
  let text = parts.join(' › ');
  if (location.line != null) text += `:${location.line}${location.column != null ? `:${location.column}` : ''}`;
  else if (location.row != null) text += ` row ${location.row}`;
  else if (location.byte_offset != null) text += ` @${location.byte_offset}`;
  return text;
}

function Filters({ filters, fixed, apply }) {
  const [asset, setAsset] = useState(filters.asset || '');
  const [atlas, setAtlas] = useState(filters.atlas || '');
  const [text, setText] = useState(filters.q || '');
  // Follow the URL when it changes from outside (back button, a link).
  useEffect(() => setAsset(filters.asset || ''), [filters.asset]);
  useEffect(() => setAtlas(filters.atlas || ''), [filters.atlas]);
  useEffect(() => setText(filters.q || ''), [filters.q]);

  const chosenSeverities = splitList(filters.severity);
  const toggleSeverity = (severity, on) => {
    const next = severities.filter((each) => (each === severity ? on : chosenSeverities.includes(each)));
    apply({ severity: next.join(',') });
  };
  const submitText = (event) => {
    event.preventDefault();
    apply({ asset: asset.trim(), atlas: atlas.trim(), q: text.trim() });
  };
  const scopeOverridden = fixed.run || fixed.assessment || filters.run || filters.assessment;

  return (
    <form class="filters card" onSubmit={submitText} data-testid="findings-filters" aria-label="Filter findings">
      <fieldset class="severity-filter">
        <legend>Severity</legend>
        {severities.map((severity) => (
          <label key={severity} class="check">
            <input type="checkbox" checked={chosenSeverities.includes(severity)}
              data-testid={`filter-severity-${severity}`}
              onChange={(event) => toggleSeverity(severity, event.currentTarget.checked)} />
            <SeverityBadge severity={severity} />
          </label>
        ))}
      </fieldset>
      <label>
        Status
        <select value={filters.status || ''} data-testid="filter-status"
          onChange={(event) => apply({ status: event.currentTarget.value })}>
          <option value="">any</option>
          {statuses.map((status) => <option key={status} value={status}>{status}</option>)}
        </select>
      </label>
      {fixed.asset === undefined ? (
        <label>
          Asset
          <input value={asset} data-testid="filter-asset" placeholder="asset name"
            onInput={(event) => setAsset(event.currentTarget.value)} />
        </label>
      ) : null}
      <label>
        ATLAS technique
        <input value={atlas} data-testid="filter-atlas" placeholder="AML.T0010"
          onInput={(event) => setAtlas(event.currentTarget.value)} />
      </label>
      <label class="grow">
        Search
        <input type="search" value={text} data-testid="filter-q" placeholder="rule, title, evidence or file"
          onInput={(event) => setText(event.currentTarget.value)} />
      </label>
      <label>
        Scope
        <select value={filters.scope || 'current'} data-testid="filter-scope" disabled={Boolean(scopeOverridden)}
          title={scopeOverridden ? 'A run or assessment filter chooses the runs itself' : undefined}
          onChange={(event) => apply({ scope: event.currentTarget.value === 'current' ? '' : event.currentTarget.value })}>
          <option value="current">newest runs</option>
          <option value="all">all runs</option>
        </select>
      </label>
      <div class="filter-buttons">
        <button type="submit" data-testid="filter-apply">Apply</button>
        <button type="button" class="secondary" data-testid="filter-clear"
          onClick={() => apply(Object.fromEntries(filterKeys.map((key) => [key, ''])))}>Clear</button>
      </div>
    </form>
  );
}

function SortHeader({ column, sort, onSort }) {
  const current = sort || '-severity';
  const ascending = current === column;
  const descending = current === `-${column}`;
  const next = ascending ? `-${column}` : column;
  return (
    <th scope="col" aria-sort={ascending ? 'ascending' : descending ? 'descending' : 'none'}>
      <button type="button" class="sort" data-testid={`sort-${column}`} onClick={() => onSort(next)}>
        {sortableColumns[column]} <span aria-hidden="true">{ascending ? '▲' : descending ? '▼' : '↕'}</span>
      </button>
    </th>
  );
}

export function FindingsTable({ items, sort, onSort }) {
  return (
    <table class="data findings" data-testid="findings-table">
      <thead>
        <tr>
          <SortHeader column="id" sort={sort} onSort={onSort} />
          <SortHeader column="severity" sort={sort} onSort={onSort} />
          <th scope="col">Status</th>
          <SortHeader column="asset" sort={sort} onSort={onSort} />
          <SortHeader column="rule" sort={sort} onSort={onSort} />
          <th scope="col">Title</th>
          <th scope="col">ATLAS</th>
          <th scope="col">Location</th>
        </tr>
      </thead>
      <tbody>
        {items.map((finding) => {
          const href = `#/findings/${encodeURIComponent(finding.id)}`;
          return (
            <tr key={finding.id} class="clickable" data-testid="finding-row" data-finding-id={finding.id} data-run-id={finding.run_id}
              data-severity={finding.severity} data-status={finding.status}
              onClick={(event) => { if (!event.target.closest('a')) navigate(href); }}>
              <td><a href={href}>{finding.id}</a></td>
              <td><SeverityBadge severity={finding.severity} /></td>
              <td><StatusBadge status={finding.status} /></td>
              <td>{finding.asset}</td>
              <td><code>{finding.rule_id}</code></td>
              <td class="wrap">{finding.title}</td>
              <td>{(finding.atlas || []).join(', ')}</td>
              <td class="wrap location">{locationText(finding.location)}</td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

// The filters, table and pager. `basePath` is where filter changes navigate to, `fixed` holds the
// filters the embedding page decides (e.g. {run: "12"} on a run's page).
export function FindingsView({ route, basePath = '/findings', fixed = {} }) {
  const filters = { ...filtersFromQuery(route.query), ...fixed };
  const offset = Math.max(0, Number(filters.offset) || 0);
  const { data, error, loading } = useApi(findingsApiPath(filters));

  const apply = (changes) => {
    const next = { ...filtersFromQuery(route.query), ...changes };
    if (!('offset' in changes)) delete next.offset; // a new filter starts on the first page
    for (const key of Object.keys(fixed)) delete next[key];
    navigate(hrefFor(basePath, next));
  };
  const items = data?.items || [];

  return (
    <div class="findings-view">
      <Filters filters={filters} fixed={fixed} apply={apply} />
      {!fixed.run && filters.run ? <p class="chip">Run {filters.run} <a href="#" aria-label="Remove the run filter" onClick={(event) => { event.preventDefault(); apply({ run: '' }); }}>×</a></p> : null}
      {!fixed.assessment && filters.assessment ? <p class="chip">Assessment {filters.assessment} <a href="#" aria-label="Remove the assessment filter" onClick={(event) => { event.preventDefault(); apply({ assessment: '' }); }}>×</a></p> : null}
      {filters.command ? <p class="chip">Command {filters.command} <a href="#" aria-label="Remove the command filter" onClick={(event) => { event.preventDefault(); apply({ command: '' }); }}>×</a></p> : null}
      <ErrorBox error={error} />
      <p class="result-count" aria-live="polite">
        {data ? <><span data-testid="findings-total">{data.total}</span> {data.total === 1 ? 'finding' : 'findings'}</> : null}
        {loading ? <span class="muted"> (loading…)</span> : null}
      </p>
      {loading && !data ? <Loading what="findings" /> : null}
      {data && !items.length ? <Empty>No findings match these filters.</Empty> : null}
      {items.length ? <FindingsTable items={items} sort={filters.sort} onSort={(sort) => apply({ sort })} /> : null}
      <Pager total={data?.total} limit={findingsPageSize} offset={offset} testid="findings-pager"
        onOffset={(next) => apply({ offset: next || '' })} />
    </div>
  );
}

export function FindingsPage({ route }) {
  return (
    <section>
      <PageTitle>Findings</PageTitle>
      <FindingsView route={route} />
    </section>
  );
}
