// Users and the audit log; the server allows both to admins only, and the page says so to others.
import { useState } from 'preact/hooks';
import { apiDelete, apiPatch, apiPost, queryString } from '../api.js';
import { Empty, ErrorBox, Loading, PageTitle, Pager, Time, useApi } from '../common.jsx';
import { hrefFor, navigate } from '../router.js';

const roles = ['viewer', 'analyst', 'admin'];
const auditPageSize = 100;

function AddUserForm({ onAdded }) {
  const [name, setName] = useState('');
  const [role, setRole] = useState('viewer');
  const [password, setPassword] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await apiPost('/users', { name: name.trim(), role, password });
      setName('');
      setPassword('');
      onAdded();
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form class="inline-form" onSubmit={submit} data-testid="user-add-form" aria-label="Add a user">
      <label>Name<input value={name} required data-testid="user-add-name" autoComplete="off"
        onInput={(event) => setName(event.currentTarget.value)} /></label>
      <label>Role
        <select value={role} data-testid="user-add-role" onChange={(event) => setRole(event.currentTarget.value)}>
          {roles.map((each) => <option key={each} value={each}>{each}</option>)}
        </select>
      </label>
      <label>Password<input type="password" value={password} required autoComplete="new-password"
        data-testid="user-add-password" onInput={(event) => setPassword(event.currentTarget.value)} /></label>
      <button type="submit" disabled={busy} data-testid="user-add-submit">Add user</button>
      <ErrorBox error={error} />
    </form>
  );
}

function Users({ currentUser }) {
  const { data, error, loading, reload } = useApi('/users');
  const [actionError, setActionError] = useState(null);
  const act = async (action) => {
    setActionError(null);
    try {
      await action();
    } catch (failure) {
      setActionError(failure);
    }
    reload();
  };
  const items = data?.items || [];
  return (
    <div class="card">
      <h2>Users</h2>
      <ErrorBox error={error} />
      <ErrorBox error={actionError} />
      {loading && !data ? <Loading what="users" /> : null}
      {data && !items.length ? <Empty>No users.</Empty> : null}
      {items.length ? (
        <table class="data" data-testid="users-table">
          <thead>
            <tr><th scope="col">Name</th><th scope="col">Role</th><th scope="col">State</th><th scope="col">Created</th>
              <th scope="col">Last login</th><th scope="col">Actions</th></tr>
          </thead>
          <tbody>
            {items.map((user) => {
              const path = `/users/${encodeURIComponent(user.name)}`;
              const isSelf = user.name === currentUser.name;
              return (
                <tr key={user.name} data-testid="user-row" data-user-name={user.name}>
                  <td>{user.name}{isSelf ? <span class="muted"> (you)</span> : null}</td>
                  <td>
                    <select value={user.role} aria-label={`Role of ${user.name}`} data-testid="user-role"
                      onChange={(event) => {
                        const role = event.currentTarget.value;
                        act(() => apiPatch(path, { role }));
                      }}>
                      {roles.map((each) => <option key={each} value={each}>{each}</option>)}
                    </select>
                  </td>
                  <td>{user.disabled ? <span class="badge status-disabled">disabled</span> : 'active'}</td>
                  <td><Time value={user.created_at} /></td>
                  <td><Time value={user.last_login_at} /></td>
                  <td class="actions">
                    <button type="button" class="secondary" data-testid="user-toggle-disabled"
                      onClick={() => act(() => apiPatch(path, { disabled: !user.disabled }))}>
                      {user.disabled ? 'Enable' : 'Disable'}
                    </button>
                    <button type="button" class="danger" data-testid="user-delete"
                      onClick={() => {
                        if (window.confirm(`Delete the user ${user.name}? This cannot be undone.`)) act(() => apiDelete(path));
                      }}>Delete</button>
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      ) : null}
      {data ? <AddUserForm onAdded={reload} /> : null}
    </div>
  );
}

function AuditLog({ route }) {
  const offset = Math.max(0, Number(route.query.get('audit_offset')) || 0);
  const { data, error, loading } = useApi(`/audit${queryString({ limit: auditPageSize, offset })}`);
  const items = data?.items || [];
  return (
    <div class="card">
      <h2>Audit log</h2>
      <ErrorBox error={error} />
      {loading && !data ? <Loading what="the audit log" /> : null}
      {data && !items.length ? <Empty>The audit log is empty.</Empty> : null}
      {items.length ? (
        <table class="data" data-testid="audit-table">
          <thead>
            <tr><th scope="col">#</th><th scope="col">Time</th><th scope="col">User</th><th scope="col">Action</th>
              <th scope="col">Target</th><th scope="col">Detail</th><th scope="col">Hash</th></tr>
          </thead>
          <tbody>
            {items.map((entry) => (
              <tr key={entry.seq} data-testid="audit-row">
                <td>{entry.seq}</td>
                <td><Time value={entry.time} /></td>
                <td>{entry.user}</td>
                <td><code>{entry.action}</code></td>
                <td class="wrap">{entry.target}</td>
                <td class="wrap">{typeof entry.detail === 'string' ? entry.detail : JSON.stringify(entry.detail)}</td>
                <td><code class="hash" title={entry.hash}>{String(entry.hash || '').slice(0, 12)}</code></td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      <Pager total={data?.total} limit={auditPageSize} offset={offset}
        onOffset={(next) => navigate(hrefFor('/admin', { audit_offset: next || '' }))} />
    </div>
  );
}

export function AdminPage({ user, route }) {
  if (user.role !== 'admin') {
    return (
      <section>
        <PageTitle>Admin</PageTitle>
        <div class="notice notice-forbidden" role="alert" data-testid="forbidden">
          <strong>Not allowed.</strong> Users and the audit log are for admins; you are logged in as {user.role}.
        </div>
      </section>
    );
  }
  return (
    <section>
      <PageTitle>Admin</PageTitle>
      <Users currentUser={user} />
      <AuditLog route={route} />
    </section>
  );
}
