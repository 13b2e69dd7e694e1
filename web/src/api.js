// The one place that talks to the REST API (/api/v1, see docs of `aegis serve`). It keeps the CSRF
// token in memory only (never in storage, so another tab's script cannot read it from there) and
// sends it on every request that changes something.

const apiBase = '/api/v1';
let csrfToken = null;
let unauthorizedListener = null;

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function setCsrfToken(token) {
  csrfToken = token || null;
}

// Called when any request answers 401 (the session expired or was revoked), so the app can show
// the login page instead of a pile of errors.
export function onUnauthorized(listener) {
  unauthorizedListener = listener;
}

async function readBody(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { error: 'not_json', message: text.slice(0, 300) };
  }
}

export async function apiRequest(method, path, body, { quietUnauthorized = false } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  let response;
  try {
    response = await fetch(apiBase + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
  } catch (networkError) {
    throw new ApiError(0, 'network_error',
      `Could not reach the Aegis server (${networkError.message}). Check that \`aegis serve\` is running.`);
  }
  const data = response.status === 204 ? null : await readBody(response);
  if (!response.ok) {
    const error = new ApiError(response.status, data?.error || `http_${response.status}`,
      data?.message || `${method} ${path} failed with HTTP ${response.status}.`);
    if (response.status === 401 && !quietUnauthorized && unauthorizedListener) unauthorizedListener(error);
    throw error;
  }
  return data;
}

export const apiGet = (path, options) => apiRequest('GET', path, undefined, options);
export const apiPost = (path, body, options) => apiRequest('POST', path, body ?? {}, options);
export const apiPatch = (path, body) => apiRequest('PATCH', path, body);
export const apiDelete = (path) => apiRequest('DELETE', path);

// Builds "?a=1&b=2" from an object, leaving out empty values.
export function queryString(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === '') continue;
    search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}
