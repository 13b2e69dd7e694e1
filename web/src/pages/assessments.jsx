import { queryString } from '../api.js';
import { Empty, ErrorBox, KeyValues, Loading, PageTitle, Pager, StatusBadge, Time, useApi } from '../common.jsx';
import { hrefFor, navigate } from '../router.js';

const pageSize = 50;

export function AssessmentsPage({ route }) {
  const offset = Math.max(0, Number(route.query.get('offset')) || 0);
  const { data, error, loading } = useApi(`/assessments${queryString({ limit: pageSize, offset })}`);
  const items = data?.items || [];
  return (
    <section>
      <PageTitle>Assessments</PageTitle>
      <ErrorBox error={error} />
      {loading && !data ? <Loading what="assessments" /> : null}
      {data && !items.length ? <Empty>No assessments yet: run <code>aegis assess INVENTORY</code>.</Empty> : null}
      {items.length ? (
        <table class="data" data-testid="assessments-table">
          <thead>
            <tr><th scope="col">ID</th><th scope="col">Inventory</th><th scope="col">Started</th>
              <th scope="col">Finished</th><th scope="col">Status</th><th scope="col">Jobs</th><th scope="col">Failed</th></tr>
          </thead>
          <tbody>
            {items.map((item) => (
              <tr key={item.id} data-testid="assessment-row" data-assessment-id={item.id}>
                <td><a href={`#/assessments/${encodeURIComponent(item.id)}`}>{item.id}</a></td>
                <td>{item.inventory}</td>
                <td><Time value={item.started_at} /></td>
                <td><Time value={item.finished_at} /></td>
                <td><StatusBadge status={item.status} /></td>
                <td>{item.jobs}</td>
                <td class={item.failed_jobs ? 'bad' : ''}>{item.failed_jobs}</td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
      <Pager total={data?.total} limit={pageSize} offset={offset}
        onOffset={(next) => navigate(hrefFor('/assessments', { offset: next || '' }))} />
    </section>
  );
}

export function AssessmentDetailPage({ id }) {
  const { data, error, loading } = useApi(`/assessments/${encodeURIComponent(id)}`);
  const jobs = data?.jobs || [];
  return (
    <section>
      <PageTitle actions={<a class="button" href={hrefFor('/findings', { assessment: id })}>Findings of this assessment</a>}>
        {`Assessment ${id}`}
      </PageTitle>
      <p><a href="#/assessments">← All assessments</a></p>
      <ErrorBox error={error} />
      {loading && !data ? <Loading what="the assessment" /> : null}
      {data ? (
        <>
          <KeyValues entries={[
            ['Inventory', data.inventory],
            ['Status', <StatusBadge status={data.status} />],
            ['Started', <Time value={data.started_at} />],
            ['Finished', <Time value={data.finished_at} />],
          ]} />
          <h2>Jobs</h2>
          {!jobs.length ? <Empty>This assessment has no jobs.</Empty> : (
            <table class="data" data-testid="jobs-table">
              <thead>
                <tr><th scope="col">Asset</th><th scope="col">Check</th><th scope="col">State</th>
                  <th scope="col">Run</th><th scope="col">Worker</th><th scope="col">Finished</th><th scope="col">Error</th></tr>
              </thead>
              <tbody>
                {jobs.map((job, index) => (
                  <tr key={`${job.asset}/${job.check}/${index}`} data-testid="job-row">
                    <td>{job.asset}</td>
                    <td>{job.check}</td>
                    <td><StatusBadge status={job.state} /></td>
                    <td>{job.run_id ? <a href={`#/runs/${encodeURIComponent(job.run_id)}`}>{job.run_id}</a> : '—'}</td>
                    <td>{job.worker || '—'}</td>
                    <td><Time value={job.finished_at} /></td>
                    <td class="wrap">{job.error || ''}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      ) : null}
    </section>
  );
}
