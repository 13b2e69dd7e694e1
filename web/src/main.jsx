// Entry point: session handling (login, reload via /me, logout, 401 -> login), the header with the
// navigation, and the page chosen by the hash route.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import './app.css';
import { apiGet, apiPost, onUnauthorized, setCsrfToken } from './api.js';
import { ErrorBox } from './common.jsx';
import { useRoute } from './router.js';
import { LoginPage } from './pages/login.jsx';
import { OverviewPage } from './pages/overview.jsx';
import { InventoryPage } from './pages/inventory.jsx';
import { AssessmentDetailPage, AssessmentsPage } from './pages/assessments.jsx';
import { RunDetailPage, RunsPage } from './pages/runs.jsx';
import { FindingsPage } from './pages/findings.jsx';
import { FindingDetailPage } from './pages/finding_detail.jsx';
import { AtlasPage } from './pages/atlas.jsx';
import { ChartsPage } from './pages/charts.jsx';
import { GatewayPage } from './pages/gateway.jsx';
import { AdminPage } from './pages/admin.jsx';

const navigation = [
  { section: '', label: 'Overview' },
  { section: 'inventory', label: 'Inventory' },
  { section: 'assessments', label: 'Assessments' },
  { section: 'runs', label: 'Runs' },
  { section: 'findings', label: 'Findings' },
  { section: 'atlas', label: 'ATLAS' },
  { section: 'charts', label: 'Charts' },
  { section: 'gateway', label: 'Gateway' },
  { section: 'admin', label: 'Admin', adminOnly: true },
];

function Header({ user, section, onLogout }) {
  return (
    <header class="app-header">
      <a class="brand" href="#/">Aegis</a>
      <nav aria-label="Main">
        <ul class="nav">
          {navigation
            .filter((item) => !item.adminOnly || user.role === 'admin')
            .map((item) => (
              <li key={item.section}>
                <a href={`#/${item.section}`} data-testid={`nav-${item.section || 'overview'}`}
                  aria-current={section === item.section ? 'page' : undefined}>{item.label}</a>
              </li>
            ))}
        </ul>
      </nav>
      <div class="who">
        <span data-testid="current-user">{user.name}</span>
        <span class={`badge role-${user.role}`} data-testid="current-role">{user.role}</span>
        <button type="button" class="secondary" data-testid="logout" onClick={onLogout}>Log out</button>
      </div>
    </header>
  );
}

function NotFound({ path }) {
  return (
    <div class="notice notice-error" role="alert">
      There is no page at <code>{path}</code>. Use the navigation above.
    </div>
  );
}

function Page({ route, user }) {
  const [section, id] = route.segments;
  switch (section) {
    case undefined: return <OverviewPage />;
    case 'inventory': return <InventoryPage />;
    case 'assessments': return id ? <AssessmentDetailPage id={id} /> : <AssessmentsPage route={route} />;
    case 'runs': return id ? <RunDetailPage id={id} route={route} /> : <RunsPage route={route} />;
    case 'findings': return id ? <FindingDetailPage id={id} user={user} /> : <FindingsPage route={route} />;
    case 'atlas': return <AtlasPage />;
    case 'charts': return <ChartsPage />;
    case 'gateway': return <GatewayPage />;
    case 'admin': return <AdminPage user={user} route={route} />;
    default: return <NotFound path={route.path} />;
  }
}

function App() {
  const route = useRoute();
  // undefined: still asking /me; null: logged out; object: the logged-in user.
  const [user, setUser] = useState(undefined);
  const [sessionError, setSessionError] = useState(null);

  useEffect(() => {
    onUnauthorized(() => {
      setCsrfToken(null);
      setUser(null);
    });
    apiGet('/me', { quietUnauthorized: true }).then(
      (session) => {
        setCsrfToken(session.csrf_token);
        setUser(session.user);
      },
      (error) => {
        if (error.status !== 401) setSessionError(error);
        setUser(null);
      },
    );
  }, []);

  const loggedIn = (session) => {
    setCsrfToken(session.csrf_token);
    setSessionError(null);
    setUser(session.user);
  };

  const logout = async () => {
    try {
      await apiPost('/logout', {}, { quietUnauthorized: true });
    } catch {
      // The session is gone either way; the server forgets it when it expires.
    }
    setCsrfToken(null);
    setUser(null);
  };

  if (user === undefined) return <p class="boot">Checking your session…</p>;
  if (user === null) {
    return (
      <main class="login-main">
        <ErrorBox error={sessionError} />
        <LoginPage onLoggedIn={loggedIn} />
      </main>
    );
  }
  return (
    <>
      <a class="skip-link" href="#main-content" onClick={(event) => {
        event.preventDefault();
        document.getElementById('main-content')?.focus();
      }}>Skip to content</a>
      <Header user={user} section={route.segments[0] || ''} onLogout={logout} />
      <main id="main-content" tabIndex={-1}>
        <Page route={route} user={user} />
      </main>
    </>
  );
}

render(<App />, document.getElementById('app'));
