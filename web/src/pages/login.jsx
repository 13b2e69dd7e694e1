import { useState } from 'preact/hooks';
import { apiPost } from '../api.js';

export function LoginPage({ onLoggedIn }) {
  const [username, setUsername] = useState('');
  const [password, setPassword] = useState('');
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  const submit = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const session = await apiPost('/login', { username, password }, { quietUnauthorized: true });
      setPassword('');
      onLoggedIn(session);
    } catch (failure) {
      if (failure.status === 401) setError('Wrong user name or password.');
      else if (failure.status === 429) setError(`Too many failed attempts: ${failure.message}`);
      else setError(failure.message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form class="login card" onSubmit={submit} data-testid="login-form" aria-labelledby="login-title">
      <h1 id="login-title">Aegis dashboard</h1>
      <p class="muted">Log in with an account created by <code>aegis users add</code>.</p>
      <label>
        User name
        <input name="username" autoComplete="username" required autoFocus value={username}
          data-testid="login-username" onInput={(event) => setUsername(event.currentTarget.value)} />
      </label>
      <label>
        Password
        <input name="password" type="password" autoComplete="current-password" required value={password}
          data-testid="login-password" onInput={(event) => setPassword(event.currentTarget.value)} />
      </label>
      {error ? <div class="notice notice-error" role="alert" data-testid="login-error">{error}</div> : null}
      <button type="submit" disabled={busy} data-testid="login-submit">{busy ? 'Logging in…' : 'Log in'}</button>
    </form>
  );
}
