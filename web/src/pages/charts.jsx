import { BarChart, LineChart } from '../charts.jsx';
import { Empty, ErrorBox, Loading, PageTitle, useApi } from '../common.jsx';

const isNumber = (value) => typeof value === 'number' && Number.isFinite(value);

// One line per (asset, attack); when several runs measured the same epsilon the newest run wins.
function robustnessSeries(points) {
  const byName = new Map();
  for (const point of points) {
    if (!isNumber(point.epsilon) || !isNumber(point.accuracy)) continue;
    const name = `${point.asset} · ${point.attack}`;
    if (!byName.has(name)) byName.set(name, new Map());
    const line = byName.get(name);
    const previous = line.get(point.epsilon);
    if (!previous || String(point.run_id) > String(previous.run_id)) line.set(point.epsilon, point);
  }
  return [...byName.entries()].map(([name, line]) => ({
    name,
    points: [...line.values()].map((point) => ({ x: point.epsilon, y: point.accuracy })),
  }));
}

// Any list of flat records as a table (the extraction and PII entries carry measure-specific keys).
function RecordTable({ records, testid }) {
  const columns = [...new Set(records.flatMap((record) => Object.keys(record)))];
  const show = (value) => (value === null || value === undefined ? '—'
    : typeof value === 'number' ? (Number.isInteger(value) ? String(value) : value.toFixed(4))
      : typeof value === 'object' ? JSON.stringify(value) : String(value));
  return (
    <table class="data" data-testid={testid}>
      <thead><tr>{columns.map((column) => <th key={column} scope="col">{column}</th>)}</tr></thead>
      <tbody>
        {records.map((record, index) => (
          <tr key={index}>{columns.map((column) => <td key={column}>{show(record[column])}</td>)}</tr>
        ))}
      </tbody>
    </table>
  );
}

function RobustnessChart() {
  const { data, error, loading } = useApi('/charts/robustness');
  const points = data?.points || [];
  const series = robustnessSeries(points);
  return (
    <div class="card">
      <h2>Robustness: accuracy against perturbation budget</h2>
      <ErrorBox error={error} />
      {loading && !data ? <Loading what="robustness results" /> : null}
      {data && !series.length ? <Empty>No robustness results yet: run <code>aegis attack</code> with a store.</Empty> : null}
      {series.length ? (
        <>
          <LineChart series={series} xLabel="epsilon" yLabel="accuracy" testid="chart-robustness"
            title="Accuracy under attack for each epsilon, one line per asset and attack" />
          <details>
            <summary>The numbers</summary>
            <RecordTable records={points} testid="robustness-table" />
          </details>
        </>
      ) : null}
    </div>
  );
}

function PrivacyCharts() {
  const { data, error, loading } = useApi('/charts/privacy');
  const mia = (data?.mia || []).filter((entry) => isNumber(entry.auc) || isNumber(entry.tpr_at_low_fpr));
  const extraction = data?.extraction || [];
  const pii = data?.pii || [];
  const groups = mia.map((entry) => ({
    name: `${entry.asset} · ${entry.attack}`,
    values: [isNumber(entry.auc) ? entry.auc : null, isNumber(entry.tpr_at_low_fpr) ? entry.tpr_at_low_fpr : null],
  }));
  return (
    <div class="card">
      <h2>Privacy: membership inference</h2>
      <ErrorBox error={error} />
      {loading && !data ? <Loading what="privacy results" /> : null}
      {data && !groups.length ? <Empty>No membership-inference results yet: run <code>aegis mia</code> with a store.</Empty> : null}
      {groups.length ? (
        <BarChart groups={groups} measures={['AUC', 'TPR at low FPR']} yLabel="score" testid="chart-privacy"
          title="Membership-inference AUC and true-positive rate at a low false-positive rate, per asset and attack" />
      ) : null}
      {extraction.length ? (<><h3>Model extraction</h3><RecordTable records={extraction} testid="extraction-table" /></>) : null}
      {pii.length ? (<><h3>PII and secrets</h3><RecordTable records={pii} testid="pii-table" /></>) : null}
    </div>
  );
}

export function ChartsPage() {
  return (
    <section>
      <PageTitle>Charts</PageTitle>
      <RobustnessChart />
      <PrivacyCharts />
    </section>
  );
}
