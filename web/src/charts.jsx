// Two small SVG charts drawn by hand: a line chart (y in [0, 1] against a numeric x) and a grouped
// bar chart (values in [0, 1]). Both scale to their container through the viewBox.

const palette = ['#2563eb', '#dc2626', '#059669', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563'];
export const seriesColour = (index) => palette[index % palette.length];

const width = 720;
const height = 320;
const margin = { top: 16, right: 16, bottom: 44, left: 52 };
const plotWidth = width - margin.left - margin.right;
const plotHeight = height - margin.top - margin.bottom;
const yTicks = [0, 0.25, 0.5, 0.75, 1];

const yPosition = (value) => margin.top + plotHeight * (1 - Math.min(1, Math.max(0, value)));

function YAxis({ label }) {
  return (
    <g class="axis">
      {yTicks.map((tick) => (
        <g key={tick}>
          <line x1={margin.left} x2={width - margin.right} y1={yPosition(tick)} y2={yPosition(tick)} class="grid" />
          <text x={margin.left - 8} y={yPosition(tick) + 4} text-anchor="end">{tick.toFixed(2)}</text>
        </g>
      ))}
      <text transform={`translate(14 ${margin.top + plotHeight / 2}) rotate(-90)`} text-anchor="middle" class="axis-label">{label}</text>
    </g>
  );
}

function niceTicks(min, max, count = 6) {
  if (min === max) return [min];
  const step = (max - min) / (count - 1);
  return Array.from({ length: count }, (_, index) => min + step * index);
}

const shortNumber = (value) => (Math.abs(value) >= 0.01 || value === 0 ? Number(value.toFixed(3)).toString() : value.toExponential(1));

// series: [{name, points: [{x, y}]}]
export function LineChart({ series, xLabel, yLabel, title, testid }) {
  const xs = series.flatMap((line) => line.points.map((point) => point.x));
  const xMin = Math.min(...xs);
  const xMax = Math.max(...xs);
  const xPosition = (value) => margin.left + (xMax === xMin ? plotWidth / 2 : ((value - xMin) / (xMax - xMin)) * plotWidth);
  return (
    <figure class="chart" data-testid={testid}>
      <svg viewBox={`0 0 ${width} ${height}`} role="img" aria-label={title}>
        <title>{title}</title>
        <YAxis label={yLabel} />
        <g class="axis">
          {niceTicks(xMin, xMax).map((tick) => (
            <text key={tick} x={xPosition(tick)} y={height - margin.bottom + 18} text-anchor="middle">{shortNumber(tick)}</text>
          ))}
          <text x={margin.left + plotWidth / 2} y={height - 6} text-anchor="middle" class="axis-label">{xLabel}</text>
        </g>
        {series.map((line, index) => {
          const sorted = [...line.points].sort((a, b) => a.x - b.x);
          const path = sorted.map((point, at) => `${at ? 'L' : 'M'}${xPosition(point.x).toFixed(1)},${yPosition(point.y).toFixed(1)}`).join(' ');
          return (
            <g key={line.name} class="series" data-testid="chart-series">
              <path d={path} fill="none" stroke={seriesColour(index)} stroke-width="2" />
              {sorted.map((point, at) => (
                <circle key={at} cx={xPosition(point.x)} cy={yPosition(point.y)} r="3.5" fill={seriesColour(index)}>
                  <title>{`${line.name}: ${xLabel} ${point.x}, ${yLabel} ${point.y.toFixed(3)}`}</title>
                </circle>
              ))}
            </g>
          );
        })}
      </svg>
      <Legend names={series.map((line) => line.name)} />
    </figure>
  );
}

// groups: [{name, values: [number|null]}], one value per measure in `measures`.
export function BarChart({ groups, measures, yLabel, title, testid }) {
  const groupWidth = plotWidth / Math.max(1, groups.length);
  const barWidth = Math.min(36, (groupWidth * 0.8) / measures.length);
  return (
    <figure class="chart" data-testid={testid}>
      <svg viewBox={`0 0 ${width} ${height}`} role="img" aria-label={title}>
        <title>{title}</title>
        <YAxis label={yLabel} />
        {groups.map((group, groupIndex) => {
          const centre = margin.left + groupWidth * (groupIndex + 0.5);
          const start = centre - (barWidth * measures.length) / 2;
          return (
            <g key={group.name} data-testid="chart-bar-group">
              {group.values.map((value, measureIndex) => (value == null ? null : (
                <rect key={measureIndex} x={start + barWidth * measureIndex} width={barWidth - 2}
                  y={yPosition(value)} height={yPosition(0) - yPosition(value)} fill={seriesColour(measureIndex)}>
                  <title>{`${group.name} — ${measures[measureIndex]}: ${value.toFixed(3)}`}</title>
                </rect>
              )))}
              <text x={centre} y={height - margin.bottom + 16} text-anchor="middle" class="bar-label">
                {group.name.length > 28 ? `${group.name.slice(0, 27)}…` : group.name}
              </text>
            </g>
          );
        })}
      </svg>
      <Legend names={measures} />
    </figure>
  );
}

function Legend({ names }) {
  return (
    <figcaption class="legend">
      {names.map((name, index) => (
        <span key={name} class="legend-item">
          <span class="swatch" style={{ background: seriesColour(index) }} aria-hidden="true" />{name}
        </span>
      ))}
    </figcaption>
  );
}
