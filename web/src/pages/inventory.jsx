import { Empty, ErrorBox, Loading, PageTitle, SeverityCounts, Time, useApi } from '../common.jsx';
import { hrefFor } from '../router.js';

export function InventoryPage() {
  const { data, error, loading } = useApi('/inventory');
  const assets = data?.assets || [];
  return (
    <section>
      <PageTitle>Inventory</PageTitle>
      <ErrorBox error={error} />
      {loading && !data ? <Loading what="the inventory" /> : null}
      {data && !assets.length ? <Empty>No assets yet: run <code>aegis assess</code> or a scan with a store.</Empty> : null}
      {assets.length ? (
        <table class="data" data-testid="inventory-table">
          <thead>
            <tr><th scope="col">Asset</th><th scope="col">Runs</th><th scope="col">Commands</th>
              <th scope="col">Last run</th><th scope="col">Open findings</th></tr>
          </thead>
          <tbody>
            {assets.map((asset) => (
              <tr key={asset.name} data-testid="asset-row">
                <td><a href={hrefFor('/findings', { asset: asset.name })}>{asset.name}</a></td>
                <td><a href={hrefFor('/runs', { asset: asset.name })}>{asset.runs}</a></td>
                <td>{(asset.commands || []).join(', ')}</td>
                <td><Time value={asset.last_run_at} /></td>
                <td>
                  <SeverityCounts counts={asset.open}
                    hrefOf={(severity) => hrefFor('/findings', { asset: asset.name, severity, status: 'open' })} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      ) : null}
    </section>
  );
}
