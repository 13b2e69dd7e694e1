import { useState } from 'preact/hooks';
import { apiPost } from '../api.js';
import { ErrorBox, KeyValues, Loading, PageTitle, SeverityBadge, StatusBadge, Time, statuses, useApi } from '../common.jsx';
import { hrefFor } from '../router.js';

const maxCommentLength = 4000;
const canChangeStatus = (role) => role === 'analyst' || role === 'admin';

function locationEntries(location) {
  if (!location) return [];
  return [
    ['File', location.file ? <code>{location.file}</code> : null],
    location.member ? ['Member', <code>{location.member}</code>] : null,
    location.byte_offset != null ? ['Byte offset', String(location.byte_offset)] : null,
    location.row != null ? ['Row', String(location.row)] : null,
    location.line != null ? ['Line', `${location.line}${location.column != null ? `, column ${location.column}` : ''}`] : null,
  ];
}

function RefList({ refs, hrefOf, testid }) {
  if (!refs?.length) return <span class="muted">none</span>;
  return (
    <ul class="refs" data-testid={testid}>
      {refs.map((ref) => <li key={ref}>{hrefOf ? <a href={hrefOf(ref)}>{ref}</a> : <code>{ref}</code>}</li>)}
    </ul>
  );
}

function History({ history }) {
  if (!history?.length) return <p class="muted" data-testid="finding-history-empty">No status changes yet.</p>;
  return (
    <table class="data" data-testid="finding-history">
      <thead>
        <tr><th scope="col">When</th><th scope="col">Who</th><th scope="col">From</th><th scope="col">To</th><th scope="col">Comment</th></tr>
      </thead>
      <tbody>
        {history.map((entry, index) => (
          <tr key={index} data-testid="history-row">
            <td><Time value={entry.time} /></td>
            <td>{entry.user}</td>
            <td>{entry.from ? <StatusBadge status={entry.from} /> : '—'}</td>
            <td><StatusBadge status={entry.to} /></td>
            <td class="wrap comment" data-testid="history-comment">{entry.comment}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function StatusForm({ finding, onSaved }) {
  const [status, setStatus] = useState(finding.status);
  const [comment, setComment] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const [saved, setSaved] = useState(false);

  const save = async (event) => {
    event.preventDefault();
    if (!comment.trim()) {
      setError({ message: 'Write a comment that says why the status changes.' });
      return;
    }
    setBusy(true);
    setError(null);
    setSaved(false);
    try {
      const updated = await apiPost(`/findings/${encodeURIComponent(finding.id)}/status`, { status, comment: comment.trim() });
      setComment('');
      setSaved(true);
      onSaved(updated);
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form class="card status-form" onSubmit={save} data-testid="status-form" aria-labelledby="status-form-title">
      <h2 id="status-form-title">Change the status</h2>
      <label>
        New status
        <select value={status} data-testid="status-select" onChange={(event) => setStatus(event.currentTarget.value)}>
          {statuses.map((each) => <option key={each} value={each}>{each}</option>)}
        </select>
      </label>
      <label>
        Comment (required)
        <textarea rows={3} maxLength={maxCommentLength} value={comment} data-testid="status-comment" required
          placeholder="Why: the ticket, the compensating control, the fix…"
          onInput={(event) => setComment(event.currentTarget.value)} />
      </label>
      <ErrorBox error={error} />
      {saved ? <p class="notice notice-ok" role="status" data-testid="status-saved">Saved.</p> : null}
      <button type="submit" disabled={busy} data-testid="status-save">{busy ? 'Saving…' : 'Save'}</button>
    </form>
  );
}

export function FindingDetailPage({ id, user }) {
  const { data: finding, error, loading, setData } = useApi(`/findings/${encodeURIComponent(id)}`);
  return (
    <section>
      <PageTitle>{`Finding ${id}`}</PageTitle>
      <p><a href="#/findings" onClick={(event) => {
        if (window.history.length > 1) { event.preventDefault(); window.history.back(); }
      }}>← Back to findings</a></p>
      <ErrorBox error={error} />
      {loading && !finding ? <Loading what="the finding" /> : null}
      {finding ? (
        <div class="finding-detail" data-testid="finding-detail" data-finding-id={finding.id}>
          <div class="card">
            <h2 class="finding-title">
              <SeverityBadge severity={finding.severity} /> {finding.title}
            </h2>
            <KeyValues entries={[
              ['Status', <StatusBadge status={finding.status} testid="finding-status" />],
              ['Rule', <code>{finding.rule_id}</code>],
              ['Asset', <a href={hrefFor('/findings', { asset: finding.asset })}>{finding.asset}</a>],
              ['Command', finding.command],
              ['Run', <a href={`#/runs/${encodeURIComponent(finding.run_id)}`}>{finding.run_id}</a>],
              ['Run started', <Time value={finding.started_at} />],
              ...locationEntries(finding.location),
              ['Fingerprint', <code class="wrap">{finding.fingerprint}</code>],
            ]} />
          </div>
          <div class="card">
            <h2>Evidence</h2>
            <pre class="evidence" data-testid="finding-evidence">{finding.evidence || '—'}</pre>
            <h2>Remediation</h2>
            <p class="remediation" data-testid="finding-remediation">{finding.remediation || '—'}</p>
            <div class="two-columns">
              <div>
                <h3>MITRE ATLAS</h3>
                <RefList refs={finding.atlas} testid="finding-atlas"
                  hrefOf={(technique) => hrefFor('/findings', { atlas: technique })} />
              </div>
              <div>
                <h3>NIST AI RMF</h3>
                <RefList refs={finding.nist_ai_rmf} testid="finding-nist" />
              </div>
            </div>
          </div>
          <div class={canChangeStatus(user.role) ? 'status-and-history' : ''} data-testid="status-and-history">
            {canChangeStatus(user.role) ? <StatusForm key={finding.id} finding={finding} onSaved={setData} /> : null}
            <div class="card">
              <h2>History</h2>
              <History history={finding.history} />
            </div>
          </div>
        </div>
      ) : null}
    </section>
  );
}
